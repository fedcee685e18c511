"""Start a real Asterisk from the Debian sid chroot, configured with the snippets we ship.

`build.sh` (beside this module) builds the chroot once (Debian 12 has no asterisk package).
`AsteriskSandbox` writes a fresh configuration folder inside that chroot for every start
(`<chroot>/run/bridge-sandbox-XXXX/`) and runs `chroot DIR /usr/sbin/asterisk -f -C ...` as a
child process. The configuration is what an admin would have:

* `manager.conf`: a `[general]` section, then the shipped `manager.conf` snippet pulled in with
  `#include`, with its placeholder secret replaced;
* `extensions.conf`: a `[general]` section, then the shipped dialplan verbatim;
* `pjsip.conf`: one UDP transport and, per phone (`Peer`), an endpoint using
  `message_context = slack-bridge-inbound`, without auth and with a static contact, so a phone
  can text Asterisk and be texted without REGISTER.

Needs root (chroot). `sandbox_problem()` says what is missing and how to get it.
(tests/asterisk/harness.py holds the test suite's copy of this launcher.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from bridge.asterisk_config import template

log = logging.getLogger(__name__)

DEFAULT_SANDBOX_DIR = "/var/cache/slack-asterisk-bridge/sid"
ASTERISK_BINARY = "/usr/sbin/asterisk"
# The line Asterisk prints once every module is loaded and it is fully booted.
READY_LINE = "Asterisk Ready."
STOP_GRACE_SECONDS = 5.0
TAIL_LINES = 40

# Loaded explicitly (modules.conf has autoload = no): booting all ~350 modules takes far longer
# and logs pages of warnings about configs we do not write.
MODULES: tuple[str, ...] = (
    "res_pjproject.so", "res_sorcery_config.so", "res_sorcery_memory.so",
    "res_sorcery_memory_cache.so", "res_sorcery_astdb.so", "res_pjsip.so",
    "res_pjsip_session.so", "res_pjsip_pubsub.so", "res_pjsip_endpoint_identifier_user.so",
    "res_pjsip_authenticator_digest.so", "res_pjsip_outbound_authenticator_digest.so",
    "res_pjsip_nat.so", "res_pjsip_acl.so", "res_pjsip_messaging.so", "chan_pjsip.so",
    # The shipped dialplan: UserEvent, BASE64_ENCODE, LEN, the AstDB spool and friends.
    "pbx_config.so", "app_userevent.so", "func_base64.so", "func_strings.so", "func_logic.so",
    "func_cut.so", "func_callerid.so", "func_db.so", "app_db.so", "func_sha1.so",
    "func_math.so",
)


class Peer(Protocol):
    """A phone Asterisk should know: endpoint `name`, reachable on UDP 127.0.0.1:`port`."""

    @property
    def name(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass(frozen=True)
class SipPeer:
    name: str
    port: int


def build_script() -> Path:
    """Where the packaged chroot builder is (run it as root)."""
    return Path(str(resources.files("bridge.sandbox").joinpath("build.sh")))


def default_sandbox_dir() -> str:
    """The chroot to use: $ASTERISK_SANDBOX, else where build.sh builds it by default."""
    return os.environ.get("ASTERISK_SANDBOX", DEFAULT_SANDBOX_DIR)


def sandbox_exists(sandbox_dir: str | Path) -> bool:
    return (Path(sandbox_dir) / ASTERISK_BINARY.lstrip("/")).is_file()


def sandbox_problem(sandbox_dir: str | Path | None = None) -> str | None:
    """What stops Asterisk from starting here and how to fix it; None when nothing does."""
    directory = Path(sandbox_dir or default_sandbox_dir())
    root = os.geteuid() == 0
    if not sandbox_exists(directory):
        how = f"sudo bash {build_script()} {directory}"
        return (f"no Asterisk sandbox at {directory} (a Debian sid chroot with Asterisk 22, "
                f"~640 MB, about a minute to build).\n  Build it as root: {how}\n"
                "  (or point ASTERISK_SANDBOX at an existing one)"
                + ("" if root else "\n  and then run this again as root"))
    if not root:
        return ("Asterisk runs in the sandbox through chroot, which needs root.\n"
                "  Run this again as root, e.g. sudo $(which bridge) demo")
    if shutil.which("chroot") is None:
        return "the chroot command is missing (apt-get install coreutils)"
    return None


def free_port(kind: str = "tcp") -> int:
    """A port on 127.0.0.1 that is free right now ("tcp" or "udp")."""
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel SIGKILLs Asterisk if we die without stopping it."""
    with contextlib.suppress(Exception):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))


def _modules_dir(sandbox_dir: Path) -> str:
    for candidate in sorted(sandbox_dir.glob("usr/lib/*/asterisk/modules")) + [
            sandbox_dir / "usr/lib/asterisk/modules"]:
        if (candidate / "res_pjsip.so").is_file():
            return "/" + str(candidate.relative_to(sandbox_dir))
    raise RuntimeError(f"no Asterisk modules folder with res_pjsip.so under {sandbox_dir}/usr/lib")


class AsteriskSandbox:
    """One Asterisk process from the chroot, configured with our shipped snippets."""

    ami_host = "127.0.0.1"
    ami_username = "slackbridge"

    def __init__(self, *, peers: Sequence[Peer], ami_secret: str,
                 sandbox_dir: str | Path | None = None, ami_port: int | None = None,
                 sip_port: int | None = None) -> None:
        self.sandbox_dir = Path(sandbox_dir or default_sandbox_dir())
        self.peers = tuple(peers)
        self.ami_secret = ami_secret
        self.ami_port = ami_port or free_port("tcp")
        self.sip_port = sip_port or free_port("udp")
        self.start_seconds: float | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._log_lines: list[str] = []
        self._run_dir: Path | None = None
        for name in [peer.name for peer in self.peers]:
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
                raise ValueError(f"unsafe name for a config section: {name!r}")
        if any(c in ami_secret for c in "\r\n;"):
            raise ValueError("the AMI secret must be one line without ';'")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    def log_text(self) -> str:
        """Asterisk's console output since the last start."""
        return "".join(self._log_lines)

    def _in_chroot(self, path: Path) -> str:
        return "/" + str(path.relative_to(self.sandbox_dir))

    async def start(self, timeout: float = 30.0) -> None:
        """Write a fresh configuration, start Asterisk, return once it is fully booted.

        Raises RuntimeError with the last console lines when it exits or never gets ready.
        """
        problem = sandbox_problem(self.sandbox_dir)
        if problem is not None:
            raise RuntimeError(problem)
        began = time.monotonic()
        self._ready = asyncio.Event()
        self._log_lines = []
        (self.sandbox_dir / "run").mkdir(exist_ok=True)
        self._run_dir = Path(tempfile.mkdtemp(prefix="bridge-sandbox-",
                                              dir=self.sandbox_dir / "run"))
        self._write_config(self._run_dir)
        self._process = await asyncio.create_subprocess_exec(
            "chroot", str(self.sandbox_dir), ASTERISK_BINARY, "-f", "-n",
            "-C", self._in_chroot(self._run_dir / "etc" / "asterisk.conf"),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, preexec_fn=_die_with_parent,
            start_new_session=True)  # Ctrl-C reaches us, and we stop Asterisk in order
        self._reader = asyncio.create_task(self._read_console(self._process))
        try:
            await self._wait_ready(timeout)
        except asyncio.CancelledError:  # e.g. Ctrl-C while booting: nothing to look at
            await self.stop()
            raise
        except BaseException:
            await self.stop(keep=True)
            raise
        self.start_seconds = time.monotonic() - began
        log.info("Asterisk ready in %.1f s (AMI 127.0.0.1:%d, SIP udp 127.0.0.1:%d)",
                 self.start_seconds, self.ami_port, self.sip_port)

    async def stop(self, *, keep: bool = False) -> None:
        """SIGTERM, SIGKILL after a grace period; wait until it is gone; remove the folder."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None and not self._ready.is_set():
            # Still booting: Asterisk ignores SIGTERM until it is up, and holds nothing yet.
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
            except TimeoutError:
                log.warning("Asterisk ignored SIGTERM for %s s; killing it", STOP_GRACE_SECONDS)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._reader, 5.0)
            self._reader = None
        if self._run_dir is not None:
            if keep:
                log.warning("kept the Asterisk config folder for a look: %s", self._run_dir)
            else:
                shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    async def _read_console(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            text = line.decode("utf-8", errors="replace")
            self._log_lines.append(text)
            if READY_LINE in text:
                self._ready.set()

    async def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        ready = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(self._process.wait())
        try:
            done, _ = await asyncio.wait({ready, exited}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ready, exited):
                task.cancel()
            await asyncio.gather(ready, exited, return_exceptions=True)
        if ready in done and not ready.cancelled():
            return
        tail = "".join(self._log_lines[-TAIL_LINES:])
        if exited in done:
            raise RuntimeError(f"Asterisk exited with code {self._process.returncode} before "
                               f"it was ready:\n{tail}")
        raise RuntimeError(f"Asterisk was not ready after {timeout} s:\n{tail}")

    # ----------------------------------------------------------------- configuration

    def _write_config(self, run: Path) -> None:
        etc = run / "etc"
        for sub in ("etc", "run", "log", "spool", "db"):
            (run / sub).mkdir()
        files = {
            "asterisk.conf": self._asterisk_conf(run),
            "modules.conf": "[modules]\nautoload = no\n"
                            + "".join(f"load => {m}\n" for m in MODULES),
            "logger.conf": LOGGER_CONF,
            "manager.conf": self._manager_conf(),
            "slack-bridge-manager.conf": self._shipped_manager_conf(),
            "extensions.conf": EXTENSIONS_CONF,
            "slack-bridge-extensions.conf": template("extensions.conf"),
            "pjsip.conf": self._pjsip_conf(),
            **QUIETING_CONFS,
        }
        for name, text in files.items():
            (etc / name).write_text(text)

    def _asterisk_conf(self, run: Path) -> str:
        inside = self._in_chroot(run)
        return f"""\
; Written by bridge/sandbox/launcher.py for one run.
[directories]
astetcdir => {inside}/etc
astrundir => {inside}/run
astlogdir => {inside}/log
astspooldir => {inside}/spool
astdbdir => {inside}/db
astmoddir => {_modules_dir(self.sandbox_dir)}
astvarlibdir => /var/lib/asterisk
astdatadir => /usr/share/asterisk
astagidir => /usr/share/asterisk/agi-bin
astkeydir => /var/lib/asterisk
astsbindir => /usr/sbin

[options]
verbose = 0
debug = 0
hideconnect = yes
"""

    def _manager_conf(self) -> str:
        return f"""\
[general]
enabled = yes
port = {self.ami_port}
bindaddr = 127.0.0.1
webenabled = no

; The shipped snippet, as an admin would add it (placeholder secret replaced).
#include "slack-bridge-manager.conf"
"""

    def _shipped_manager_conf(self) -> str:
        text, count = re.subn(r"^secret\s*=.*$", f"secret = {self.ami_secret}",
                              template("manager.conf"), flags=re.MULTILINE)
        if count != 1 or f"[{self.ami_username}]" not in text:
            raise RuntimeError("the shipped manager.conf snippet changed shape: expected one "
                               f"[{self.ami_username}] user with one `secret =` line")
        return text

    def _pjsip_conf(self) -> str:
        parts = ["[transport-udp]\ntype = transport\nprotocol = udp\n"
                 + f"bind = 127.0.0.1:{self.sip_port}\n"]
        for peer in self.peers:
            parts.append(f"""\
[{peer.name}]
type = endpoint
transport = transport-udp
context = slack-bridge-inbound
message_context = slack-bridge-inbound
disallow = all
allow = ulaw
aors = {peer.name}

[{peer.name}]
type = aor
contact = sip:{peer.name}@127.0.0.1:{peer.port}
""")
        return "\n".join(parts)


LOGGER_CONF = """\
[general]
dateformat = %F %T.%3q

[logfiles]
console => notice,warning,error,verbose
"""

# Core subsystems complain at boot when their config file is missing.
QUIETING_CONFS = {
    "stasis.conf": "[threadpool]\n",
    "ccss.conf": "[general]\n",
    "cdr.conf": "[general]\nenable = no\n",
    "cel.conf": "[general]\nenable = no\n",
    "features.conf": "[general]\n",
    "indications.conf": "[general]\ncountry = us\n\n[us]\ndescription = United States\n"
    "ringcadence = 2000,4000\ndial = 350+440\nring = 440+480/2000,0/4000\n",
    "acl.conf": "",
    "udptl.conf": "[general]\n",
    "pjproject.conf": "",
}

EXTENSIONS_CONF = """\
[general]
static = yes
writeprotect = yes

; The shipped dialplan, included as an admin would.
#include "slack-bridge-extensions.conf"
"""
