"""Start a real Asterisk from the Debian sid chroot, configured with the snippets we ship.

`build.sh` (beside this module) builds the chroot once (Debian 12 has no asterisk package).
`AsteriskSandbox` writes a fresh configuration folder inside that chroot for every start
(`<chroot>/run/bridge-sandbox-XXXX/`) and runs `chroot DIR /usr/sbin/asterisk -f -C ...` as a
child process. The configuration is what an admin would have:

* `manager.conf`: a `[general]` section, then the shipped `manager.conf` snippet pulled in with
  `#include`, with its placeholder secret replaced (plus any extra `AmiUser`s);
* `extensions.conf`: a `[general]` section, then the shipped dialplan verbatim;
* `pjsip.conf`: one UDP transport and, per phone (`Peer`), an endpoint with its own
  `message_context = slack-bridge-from-<name>` (and that context, as `bridge asterisk-config`
  prints it), without auth unless the peer has a password, and with a static contact, so a
  phone can text Asterisk and be texted without REGISTER;
* the shipped dialplan's placeholder event token replaced with the one the bridge derives
  from the AMI secret (or `event_token`).

Ports are picked free at the first start and kept across `restart()`, so a bridge can reconnect
to "the same" Asterisk after it was killed (`kill()` plays a crash). With `ami_tls=True` AMI also
listens with TLS (`ami_tls_port`), with a certificate for 127.0.0.1/localhost signed by a
throwaway CA made with the `openssl` command at the first start (`tls_ca_pem`, kept across
restarts). `cli()` runs an Asterisk CLI command.

This is the one launcher: `bridge demo` uses it as it is, the test suite through a thin subclass
(tests/asterisk/harness.py) and the bench through another (bench/sandbox.py).
Needs root (chroot). `sandbox_problem()` says what is missing and how to get it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from bridge.asterisk.snippets import endpoint_context, render_endpoint_contexts, template
from bridge.core.texts import EVENT_TOKEN_GLOBAL, derive_event_token

log = logging.getLogger(__name__)

DEFAULT_SANDBOX_DIR = "/var/cache/slack-asterisk-bridge/sid"
ASTERISK_BINARY = "/usr/sbin/asterisk"
# The line Asterisk prints once every module is loaded and it is fully booted.
READY_LINE = "Asterisk Ready."
# How long stop() lets Asterisk shut down on SIGTERM before it sends SIGKILL.
STOP_GRACE_SECONDS = 5.0
# How many console lines a failure message shows.
TAIL_LINES = 40

# Loaded explicitly (modules.conf has autoload = no): booting all ~350 modules takes far longer
# and logs pages of warnings about configs we do not write. Order does not matter; Asterisk
# resolves the dependencies among the listed ones.
MODULES: tuple[str, ...] = (
    # PJSIP and what it is built on.
    "res_pjproject.so",
    "res_sorcery_config.so",
    "res_sorcery_memory.so",
    "res_sorcery_memory_cache.so",
    "res_sorcery_astdb.so",
    "res_pjsip.so",
    "res_pjsip_session.so",
    "res_pjsip_pubsub.so",
    "res_pjsip_endpoint_identifier_user.so",  # identify_by = username, auth_username
    "res_pjsip_endpoint_identifier_ip.so",  # identify_by = ip (type = identify sections)
    "res_pjsip_authenticator_digest.so",
    "res_pjsip_outbound_authenticator_digest.so",
    "res_pjsip_nat.so",
    "res_pjsip_acl.so",
    "res_pjsip_messaging.so",  # SIP MESSAGE in (message_context) and out (MessageSend pjsip:)
    "res_pjsip_registrar.so",  # REGISTER: phones that tell Asterisk where they are
    "chan_pjsip.so",
    # Dialplan: the shipped extensions.conf uses UserEvent, BASE64_ENCODE, LEN and friends.
    # MESSAGE() / MESSAGE_DATA() and MessageSend are core (main/message.c), like the manager.
    "pbx_config.so",
    "app_userevent.so",
    "func_base64.so",
    "func_strings.so",
    "func_logic.so",
    "func_cut.so",
    "func_callerid.so",
    # The spool: a copy of each text in AstDB (DB(), DBdeltree, SHA1, MATH, STRFTIME).
    "func_db.so",
    "app_db.so",
    "func_sha1.so",
    "func_math.so",
    "app_stack.so",  # GosubIf: the spool's hourly expiry
)

# Sandboxes whose Asterisk is still running: killed at interpreter exit, as a last resort
# (a run interrupted between start() and stop() must not leave Asterisk behind).
_RUNNING: set[AsteriskSandbox] = set()


class Peer(Protocol):
    """A phone Asterisk should know: endpoint `name`, reachable on UDP 127.0.0.1:`port`."""

    @property
    def name(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass(frozen=True)
class SipPeer:
    """An endpoint whose phone (a SIP UA) listens on UDP `host`:`port`.

    `identify_by` is the endpoint's pjsip.conf setting: "username" (the default: the From
    user part names the endpoint), "auth_username" (the digest username does; needs
    `password`) or "ip" (the source address `host` does, through a `type = identify`
    section). By default the endpoint uses its own context `slack-bridge-from-<name>`, as
    `bridge asterisk-config` renders it (the sandbox writes those contexts too), so its texts
    reach the bridge identified; `message_context` replaces it, e.g. with the shared
    `slack-bridge-inbound`, through which texts arrive unidentified.

    With `registers`, Asterisk has no static contact for it: it is reachable (and shows as
    registered) only while the phone has REGISTERed, as real phones are.
    """

    name: str
    port: int
    host: str = "127.0.0.1"
    identify_by: str = "username"
    password: str = ""
    message_context: str = ""
    registers: bool = False


@dataclass(frozen=True)
class AmiUser:
    """An extra AMI user, e.g. one with other permissions.

    `read`/`write` are manager.conf permission lists ("system,user", "all", "" for none);
    `eventfilters` are written as `eventfilter = ...` lines (none: every event it may read).
    """

    name: str
    secret: str
    read: str = ""
    write: str = ""
    eventfilters: tuple[str, ...] = ()


@dataclass(frozen=True)
class ThrowawayPki:
    """A throwaway CA and a server certificate it signed (PEM bytes)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def make_throwaway_pki(names: Sequence[str] = ("127.0.0.1", "localhost"),
                       ca_name: str = "bridge sandbox CA") -> ThrowawayPki:
    """A new CA and a server certificate for `names` (IPs and DNS names), via `openssl`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make certificates")
    alt = ",".join(f"IP:{n}" if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+:[0-9a-fA-F:]*", n)
                   else f"DNS:{n}" for n in names)
    with tempfile.TemporaryDirectory(prefix="bridge-pki-") as tmp:
        d = Path(tmp)

        def run(*args: str) -> None:
            done = subprocess.run([openssl, *args], cwd=d, capture_output=True, text=True,
                                  check=False)
            if done.returncode != 0:
                raise RuntimeError(f"openssl {' '.join(args)} failed:\n{done.stderr}")

        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", f"/CN={ca_name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj",
            f"/CN={names[0]}")
        (d / "ext.cnf").write_text(
            f"subjectAltName = {alt}\nbasicConstraints = critical,CA:FALSE\n"
            "keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n"
            "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
        return ThrowawayPki(ca_pem=(d / "ca.pem").read_bytes(),
                            cert_pem=(d / "server.pem").read_bytes(),
                            key_pem=(d / "server.key").read_bytes())


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
    """A port on 127.0.0.1 that is free right now ("tcp" or "udp").

    The OS picks it; the socket is closed again, so another process could take it before we
    use it. Good enough on one machine.
    """
    if kind not in ("tcp", "udp"):
        raise ValueError(f"kind must be 'tcp' or 'udp', not {kind!r}")
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel SIGKILLs Asterisk if we die without stopping it.

    atexit does not run when we are SIGKILLed ourselves (e.g. by a CI timeout).
    """
    with contextlib.suppress(Exception):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))


def _modules_dir(sandbox_dir: Path) -> str:
    """Where the chroot's Asterisk keeps its modules, as a path inside the chroot."""
    for candidate in sorted(sandbox_dir.glob("usr/lib/*/asterisk/modules")) + [
            sandbox_dir / "usr/lib/asterisk/modules"]:
        if (candidate / "res_pjsip.so").is_file():
            return "/" + str(candidate.relative_to(sandbox_dir))
    raise RuntimeError(f"no Asterisk modules folder with res_pjsip.so under {sandbox_dir}/usr/lib")


class AsteriskSandbox:
    """One Asterisk process from the chroot, configured with our shipped snippets.

    Use as `async with AsteriskSandbox(peers=[...], ami_secret=...) as asterisk:` or call
    start()/stop().
    """

    ami_host = "127.0.0.1"
    ami_username = "slackbridge"
    # The run folder's name prefix, under <chroot>/run/.
    run_prefix = "bridge-sandbox-"
    # Whether a start() cancelled while Asterisk boots (a Ctrl-C) keeps the run folder.
    keep_cancelled_start = False

    def __init__(self, *, peers: Sequence[Peer], ami_secret: str,
                 sandbox_dir: str | Path | None = None, ami_port: int | None = None,
                 sip_port: int | None = None, extra_ami_users: Sequence[AmiUser] = (),
                 ami_tls: bool = False, dialplan: str = "", event_token: str = "") -> None:
        self.sandbox_dir = Path(sandbox_dir or default_sandbox_dir())
        # More dialplan after the shipped one, e.g. the per-endpoint contexts that
        # `bridge asterisk-config` prints (they carry the event token).
        self.dialplan = dialplan
        # The dialplan's event token; default: the one the bridge derives from the AMI secret.
        self.event_token = event_token
        self.peers = tuple(peers)
        self.ami_secret = ami_secret
        self.extra_ami_users = tuple(extra_ami_users)
        self.ami_tls = ami_tls
        # None until start() picks one; then kept, so restart() comes back on the same ports.
        self._ami_port = ami_port
        self._sip_port = sip_port
        self._ami_tls_port: int | None = None
        self._pki: ThrowawayPki | None = None  # made at the first start, kept across restarts
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._log_lines: list[str] = []
        self._run_dir: Path | None = None  # path on the host: <chroot>/run/<run_prefix>XXXX
        self._failed = False  # keep the run folder for debugging
        self._killed = False  # kill() was called: an exit we asked for, not a failure
        self.start_seconds: float | None = None  # how long the last start() took

        names = [peer.name for peer in self.peers]
        if len(set(names)) != len(names):
            raise ValueError(f"peer names must be unique: {names}")
        for name in names + [user.name for user in self.extra_ami_users]:
            # These names become config section names and SIP user parts.
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
                raise ValueError(f"unsafe name for a config section: {name!r}")
        if any(c in ami_secret for c in "\r\n;"):
            raise ValueError("the AMI secret must be one line without ';'")

    # ----------------------------------------------------------------- properties

    @property
    def ami_port(self) -> int:
        if self._ami_port is None:
            raise RuntimeError("ami_port is picked by start(); start the sandbox first")
        return self._ami_port

    @property
    def ami_tls_port(self) -> int:
        """AMI's TLS port (only with ami_tls=True)."""
        if self._ami_tls_port is None:
            raise RuntimeError("ami_tls_port exists with ami_tls=True, once start() ran")
        return self._ami_tls_port

    @property
    def tls_ca_pem(self) -> bytes:
        """The CA that signed AMI's TLS certificate (only with ami_tls=True)."""
        if self._pki is None:
            raise RuntimeError("tls_ca_pem exists with ami_tls=True, once start() ran")
        return self._pki.ca_pem

    @property
    def sip_port(self) -> int:
        if self._sip_port is None:
            raise RuntimeError("sip_port is picked by start(); start the sandbox first")
        return self._sip_port

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        """Asterisk's process id while it runs (e.g. to SIGKILL it in a crash test)."""
        return self._process.pid if self.running and self._process else None

    @property
    def run_dir(self) -> Path | None:
        """This run's configuration folder, as a path on the host (None when not started)."""
        return self._run_dir

    def _in_chroot(self, path: Path) -> str:
        return "/" + str(path.relative_to(self.sandbox_dir))

    @property
    def _conf_path(self) -> str:
        assert self._run_dir is not None
        return self._in_chroot(self._run_dir / "etc" / "asterisk.conf")

    # ----------------------------------------------------------------- what subclasses adjust

    def _sandbox_problem(self) -> str | None:
        """What stops this sandbox from starting (start() raises it), or None."""
        return sandbox_problem(self.sandbox_dir)

    def _shipped_snippet(self, name: str) -> str:
        """The text of a shipped snippet (`manager.conf`, `extensions.conf`)."""
        return template(name)

    def modules(self) -> tuple[str, ...]:
        """The modules modules.conf loads."""
        return MODULES

    def _message_context(self, peer: Peer) -> str:
        """The dialplan context a peer's texts (and calls) go to: by default its own."""
        return getattr(peer, "message_context", "") or endpoint_context(peer.name)

    def _endpoint_dialplan(self) -> str:
        """The per-endpoint contexts `bridge asterisk-config` would print for these peers,
        then any extra dialplan."""
        own = [peer.name for peer in self.peers
               if self._message_context(peer) == endpoint_context(peer.name)]
        return render_endpoint_contexts(own) + "\n" + self.dialplan

    def _extensions_conf(self) -> str:
        return EXTENSIONS_CONF

    # ----------------------------------------------------------------- lifecycle

    async def start(self, timeout: float = 30.0) -> None:
        """Write a fresh configuration and start Asterisk; return once it is fully booted.

        Raises RuntimeError with the last console lines if Asterisk exits, never gets ready, or
        does not listen where it should.
        """
        if self._process is not None:
            raise RuntimeError("this sandbox is already started")
        problem = self._sandbox_problem()
        if problem is not None:
            raise RuntimeError(problem)
        began = time.monotonic()
        if self._ami_port is None:
            self._ami_port = free_port("tcp")
        if self._sip_port is None:
            self._sip_port = free_port("udp")
        if self.ami_tls and self._ami_tls_port is None:
            self._ami_tls_port = free_port("tcp")
        if self.ami_tls and self._pki is None:
            self._pki = await asyncio.to_thread(make_throwaway_pki)
        self._failed = False
        self._killed = False
        self._ready = asyncio.Event()
        self._log_lines = []
        (self.sandbox_dir / "run").mkdir(exist_ok=True)
        self._run_dir = Path(tempfile.mkdtemp(prefix=self.run_prefix,
                                              dir=self.sandbox_dir / "run"))
        self._write_config()
        self._process = await asyncio.create_subprocess_exec(
            "chroot", str(self.sandbox_dir), ASTERISK_BINARY,
            "-f",  # foreground: stays our child, so we can signal and wait for it
            "-n",  # no ANSI colours in the console output we search and show
            "-C", self._conf_path,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, preexec_fn=_die_with_parent,
            start_new_session=True)  # a Ctrl-C reaches us first, and we stop Asterisk in order
        _RUNNING.add(self)
        self._reader = asyncio.create_task(self._read_console(self._process))
        try:
            await self._wait_ready(timeout)
            await self._check_listening()
        except asyncio.CancelledError:
            self._failed = self.keep_cancelled_start
            await self.stop()
            raise
        except BaseException:
            self._failed = True  # keep the folder; stop() names it
            await self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        log.info("Asterisk ready in %.2f s (AMI 127.0.0.1:%d, SIP udp 127.0.0.1:%d, config %s)",
                 self.start_seconds, self.ami_port, self.sip_port, self._run_dir)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; wait for the process to be gone.

        The run folder is removed, unless start() failed, Asterisk died on its own or had to be
        killed, or $ASTERISK_SANDBOX_KEEP is set: then it stays for debugging and is logged.
        """
        process, self._process = self._process, None
        if process is not None:
            if process.returncode is not None:
                # It died before we asked it to (unless kill() was called).
                self._failed = self._failed or not self._killed
            elif not self._ready.is_set():
                # Still booting: Asterisk ignores SIGTERM until it is up, and holds nothing yet.
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            else:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
                except TimeoutError:
                    self._failed = True
                    log.warning("Asterisk ignored SIGTERM for %s s; killing it",
                                STOP_GRACE_SECONDS)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
            _RUNNING.discard(self)
        if self._reader is not None:
            # The pipe reaches EOF once Asterisk is gone; the reader then ends by itself.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._reader, 5.0)
            self._reader = None
        if self._run_dir is not None:
            if self._failed or os.environ.get("ASTERISK_SANDBOX_KEEP"):
                log.warning("kept Asterisk sandbox folder for debugging: %s", self._run_dir)
            else:
                shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    async def kill(self) -> None:
        """SIGKILL Asterisk, like a crash: AMI and SIP sockets just close, nothing is said.

        The sandbox stays "started" (ports, folder) until stop() or restart(), which brings
        it back on the same ports.
        """
        process = self._process
        if process is None or process.returncode is not None:
            return
        self._killed = True
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()

    async def restart(self, timeout: float = 30.0) -> None:
        """Stop, then start again on the same AMI and SIP ports with a fresh configuration."""
        await self.stop()
        await self.start(timeout)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:
            self._failed = True  # something went wrong inside: keep the folder to look at
        await self.stop()

    # ----------------------------------------------------------------- inspection

    def log_text(self) -> str:
        """Asterisk's console output since the last start."""
        return "".join(self._log_lines)

    async def cli(self, command: str, timeout: float = 10.0) -> str:
        """Run an Asterisk CLI command like `asterisk -rx`, e.g. "pjsip show endpoints".

        Returns what it printed; raises RuntimeError if it could not reach Asterisk.
        """
        if not self.running:
            raise RuntimeError("Asterisk is not running")
        process = await asyncio.create_subprocess_exec(
            "chroot", str(self.sandbox_dir), ASTERISK_BINARY, "-C", self._conf_path,
            "-rx", command,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(f"asterisk -rx {command!r} took over {timeout} s") from None
        text = output.decode("utf-8", errors="replace")
        if process.returncode != 0:
            raise RuntimeError(f"asterisk -rx {command!r} exited {process.returncode}: {text}")
        return text

    # ----------------------------------------------------------------- internals

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
        if exited in done:
            if self._reader is not None:  # let it collect the last lines
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(self._reader), 2.0)
            raise RuntimeError(f"Asterisk exited with code {self._process.returncode} before "
                               f"it was ready\n{self._tail()}")
        raise RuntimeError(f"Asterisk was not ready after {timeout} s\n{self._tail()}")

    async def _check_listening(self) -> None:
        """Fail start() early when a port was taken, instead of a client timing out later."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.ami_host, self.ami_port), 5.0)
            banner = await asyncio.wait_for(reader.readline(), 5.0)
            writer.close()
            await writer.wait_closed()
        except (OSError, TimeoutError) as exc:
            raise RuntimeError(
                f"Asterisk is up but AMI does not answer on {self.ami_host}:{self.ami_port}: "
                f"{exc!r}\n{self._tail()}") from exc
        if not banner.startswith(b"Asterisk Call Manager/"):
            raise RuntimeError(f"unexpected AMI banner {banner!r} on port {self.ami_port}")
        if self._pki is not None and self._ami_tls_port is not None:
            context = ssl.create_default_context(cadata=self._pki.ca_pem.decode("ascii"))
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.ami_host, self._ami_tls_port, ssl=context),
                    5.0)
                banner = await asyncio.wait_for(reader.readline(), 5.0)
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
            except (OSError, TimeoutError) as exc:
                raise RuntimeError(
                    f"Asterisk is up but AMI over TLS does not answer on "
                    f"{self.ami_host}:{self._ami_tls_port}: {exc!r}\n{self._tail()}") from exc
            if not banner.startswith(b"Asterisk Call Manager/"):
                raise RuntimeError(f"unexpected AMI TLS banner {banner!r}")
        # PJSIP binds its UDP socket without SO_REUSEADDR on our side: if we can bind the port,
        # Asterisk does not hold it (the transport failed, e.g. someone else took the port).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", self.sip_port))
            except OSError:
                return
        raise RuntimeError(f"Asterisk is up but does not listen on SIP udp "
                           f"127.0.0.1:{self.sip_port}\n{self._tail()}")

    def _tail(self) -> str:
        lines = self._log_lines[-TAIL_LINES:]
        where = f"config folder: {self._run_dir}" if self._run_dir else ""
        return f"--- last {len(lines)} console lines ({where}) ---\n" + "".join(lines)

    # ----------------------------------------------------------------- configuration

    def _write_config(self) -> None:
        assert self._run_dir is not None
        run = self._run_dir
        etc = run / "etc"
        for sub in ("etc", "run", "log", "spool", "db"):
            (run / sub).mkdir()
        files = {
            "asterisk.conf": self._asterisk_conf(run),
            "modules.conf": self._modules_conf(),
            "logger.conf": LOGGER_CONF,
            "manager.conf": self._manager_conf(),
            "slack-bridge-manager.conf": self._shipped_manager_conf(),
            "extensions.conf": self._extensions_conf(),
            # Verbatim: the dialplan is exactly what an admin pastes in.
            "slack-bridge-extensions.conf": self._shipped_extensions_conf(),
            "slack-bridge-endpoints.conf": self._endpoint_dialplan(),
            "pjsip.conf": self._pjsip_conf(),
            **QUIETING_CONFS,
        }
        if self._pki is not None:
            files["ami-tls-cert.pem"] = self._pki.cert_pem.decode("ascii")
            files["ami-tls-key.pem"] = self._pki.key_pem.decode("ascii")
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
; remote consoles (cli()) connect and leave without a line in the log each time
hideconnect = yes
"""

    def _modules_conf(self) -> str:
        loads = "".join(f"load => {module}\n" for module in self.modules())
        return f"[modules]\nautoload = no\n{loads}"

    def _manager_conf(self) -> str:
        extra = []
        for user in self.extra_ami_users:
            lines = [
                f"[{user.name}]",
                f"secret = {user.secret}",
                "deny = 0.0.0.0/0.0.0.0",
                "permit = 127.0.0.1/255.255.255.255",
                f"read = {user.read}",
                f"write = {user.write}",
            ]
            lines += [f"eventfilter = {line}" for line in user.eventfilters]
            extra.append("\n".join(lines) + "\n")
        extra_users = "\n".join(extra)
        tls = ""
        if self._pki is not None:
            assert self._run_dir is not None
            etc = self._in_chroot(self._run_dir / "etc")
            tls = (f"tlsenable = yes\ntlsbindaddr = 127.0.0.1:{self.ami_tls_port}\n"
                   f"tlscertfile = {etc}/ami-tls-cert.pem\n"
                   f"tlsprivatekey = {etc}/ami-tls-key.pem\n")
        return f"""\
[general]
enabled = yes
port = {self.ami_port}
bindaddr = 127.0.0.1
webenabled = no
{tls}
; The shipped snippet, as an admin would add it (placeholder secret replaced).
#include "slack-bridge-manager.conf"

{extra_users}"""

    def _shipped_manager_conf(self) -> str:
        text, count = re.subn(r"^secret\s*=.*$", f"secret = {self.ami_secret}",
                              self._shipped_snippet("manager.conf"), flags=re.MULTILINE)
        if count != 1 or f"[{self.ami_username}]" not in text:
            raise RuntimeError("the shipped manager.conf snippet changed shape: expected one "
                               f"[{self.ami_username}] user with one `secret =` line")
        return text

    def _shipped_extensions_conf(self) -> str:
        """The shipped dialplan with its placeholder event token replaced, as an admin does."""
        text = self._shipped_snippet("extensions.conf")
        token = self.event_token or derive_event_token(self.ami_secret)
        text, count = re.subn(rf"^{EVENT_TOKEN_GLOBAL}\s*=.*$", f"{EVENT_TOKEN_GLOBAL} = {token}",
                              text, flags=re.MULTILINE)
        if count != 1:
            raise RuntimeError("the shipped extensions.conf changed shape: expected one "
                               f"`{EVENT_TOKEN_GLOBAL} =` line")
        return text

    def _pjsip_conf(self) -> str:
        parts = ["[transport-udp]\ntype = transport\nprotocol = udp\n"
                 + f"bind = 127.0.0.1:{self.sip_port}\n"]
        if any(getattr(peer, "registers", False) for peer in self.peers):
            # Asterisk looks for lapsed registrations every 30 s by default; a test watching
            # one expire should not wait that long.
            parts.append("[global]\ntype = global\ncontact_expiration_check_interval = 1\n")
        for peer in self.peers:
            # Without a password: no auth, the phones need not answer digest challenges, and
            # PJSIP identifies the sender by the From user part (identify_by = username).
            context = self._message_context(peer)
            identify_by = getattr(peer, "identify_by", "username")
            password = getattr(peer, "password", "")
            host = getattr(peer, "host", "127.0.0.1")
            auth = f"auth = {peer.name}\n" if password else ""
            parts.append(f"""\
[{peer.name}]
type = endpoint
transport = transport-udp
context = {context}
message_context = {context}
identify_by = {identify_by}
disallow = all
allow = ulaw
{auth}aors = {peer.name}

[{peer.name}]
type = aor
{self._aor_contact(peer)}
""")
            if password:
                parts.append(f"[{peer.name}]\ntype = auth\nauth_type = userpass\n"
                             f"username = {peer.name}\npassword = {password}\n")
            if identify_by == "ip":
                parts.append(f"[{peer.name}-ip]\ntype = identify\nendpoint = {peer.name}\n"
                             f"match = {host}\n")
        return "\n".join(parts)

    @staticmethod
    def _aor_contact(peer: Peer) -> str:
        if getattr(peer, "registers", False):
            # Learnt from REGISTER; short expiries allowed so a test can watch one lapse.
            return "max_contacts = 1\nremove_existing = yes\nminimum_expiration = 1"
        host = getattr(peer, "host", "127.0.0.1")
        return f"contact = sip:{peer.name}@{host}:{peer.port}"


LOGGER_CONF = """\
; Quiet but useful: problems, plus the verbose level-0 lines such as "Asterisk Ready."
; (Asterisk runs with verbose = 0). The same goes to log/messages.log in the run folder.
[general]
dateformat = %F %T.%3q

[logfiles]
console => notice,warning,error,verbose
messages.log => notice,warning,error,verbose
"""

# Core subsystems complain at boot (some with ERROR lines) when their config file is missing;
# these minimal files keep the console down to what matters.
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

; The shipped dialplan, included as an admin would, then the rendered per-endpoint part.
#include "slack-bridge-extensions.conf"
#include "slack-bridge-endpoints.conf"
"""


@atexit.register
def _kill_leftovers() -> None:
    for sandbox in list(_RUNNING):
        process = sandbox._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
