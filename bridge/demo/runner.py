"""`bridge demo`: a real Asterisk, two simulated phones, a Slack stand-in, and the real bridge.

`Demo.start()` brings everything up in order:
1. two phones ("alice", "bob"): SIP user agents on UDP 127.0.0.1 (`phone.py`);
2. Asterisk 22 from the sandbox chroot, configured with the shipped snippets and one endpoint
   per phone, each learning its phone's contact by REGISTER (`bridge.sandbox.launcher`);
3. one local web server: the page (`page.html` with `page.css`, `page.js` and the Block Kit
   renderer `blockkit.js`, polling `/state`), the page's actions (`/command`,
   `/phones/<name>/send`, `/phones/<name>/power`, and `/ui/...` for the modal, the Home tab and
   buttons) and the Slack stand-in (`/api/...`, `/response/...`);
4. the real bridge, `python -m bridge run --mode http`, with a generated config mapping alice
   and bob to two channels, SLACK_API_URL pointing at the stand-in, in a temporary folder;
5. the phones REGISTER (after the bridge listens to AMI, so it sees them come online) and keep
   their registrations fresh; a phone switched off on the page unregisters.

`stop()` stops them in reverse; nothing is left behind (Asterisk dies with us even on SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.demo.phone import SipPhone
from bridge.demo.slack_standin import SlackStandIn
from bridge.demo.slack_web_api import SlackRefusal
from bridge.sandbox.launcher import AsteriskSandbox, SipPeer, free_port

log = logging.getLogger(__name__)

COMMAND = "/sip"
# Small enough that a long text in the compose window shows the bridge's refusal in the modal.
MAX_PARTS = 3
REGISTER_SECONDS = 600
STATIC_FILES = {"page.css": "text/css", "page.js": "text/javascript",
                "blockkit.js": "text/javascript"}


@dataclass(frozen=True)
class DemoEndpoint:
    name: str
    channel_id: str
    channel_name: str


ENDPOINTS = (DemoEndpoint("alice", "C0ALICE01", "#alice-texts"),
             DemoEndpoint("bob", "C0BOB0001", "#bob-texts"))
DEFAULT_CHANNEL = DemoEndpoint("", "C0PHONES1", "#phones")


class DemoError(Exception):
    """The demo could not start; the message says why and what to do."""


@dataclass
class SentText:
    body: str
    at: float
    status: str  # "sending", "202 Accepted", or what went wrong


def _term_with_parent() -> None:
    """Runs in the bridge's child process before exec: SIGTERM it when the demo dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class Demo:
    """Everything `bridge demo` runs. `start()`, then open `url`; `stop()` ends it all."""

    def __init__(self, *, port: int = 0, sandbox_dir: str | None = None,
                 on_bridge_line: Callable[[str], None] | None = None) -> None:
        self.port = port
        self.sandbox_dir = sandbox_dir
        self.on_bridge_line = on_bridge_line
        self.bot_token = "xoxb-demo-" + secrets.token_hex(12)
        self.signing_secret = secrets.token_hex(16)
        self.ami_secret = secrets.token_hex(16)
        self.version = 0  # bumped on every change the page should show
        self.slack = SlackStandIn(bot_token=self.bot_token, signing_secret=self.signing_secret,
                                  command=COMMAND, on_change=self._changed)
        for endpoint in ENDPOINTS:
            self.slack.add_channel(endpoint.channel_id, endpoint.channel_name,
                                   f"texts from {endpoint.name}'s phone")
        self.slack.add_channel(DEFAULT_CHANNEL.channel_id, DEFAULT_CHANNEL.channel_name,
                               "texts from phones not in the directory")
        self.phones: dict[str, SipPhone] = {}
        self.phone_on: dict[str, bool] = {e.name: False for e in ENDPOINTS}  # registered
        self._keep_registered: asyncio.Task[None] | None = None
        self.sent: dict[str, list[SentText]] = {e.name: [] for e in ENDPOINTS}
        self.asterisk: AsteriskSandbox | None = None
        self.bridge_log: list[str] = []
        self._bridge: asyncio.subprocess.Process | None = None
        self._bridge_reader: asyncio.Task[None] | None = None
        self._bridge_line = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._folder: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def bridge_running(self) -> bool:
        return self._bridge is not None and self._bridge.returncode is None

    def _changed(self) -> None:
        self.version += 1

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start phones, Asterisk, the page and the bridge; raise DemoError if one fails."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="bridge-demo-"))
        sip_port = free_port("udp")
        for endpoint in ENDPOINTS:
            phone = SipPhone(endpoint.name, asterisk_port=sip_port)
            await phone.start()
            phone.on_message = lambda _message: self._changed()
            self.phones[endpoint.name] = phone
        self.asterisk = AsteriskSandbox(
            peers=[SipPeer(p.name, p.port, registers=True) for p in self.phones.values()],
            ami_secret=self.ami_secret, sandbox_dir=self.sandbox_dir, sip_port=sip_port,
            ami_port=free_port("tcp"))  # known now: the page's state() may ask while it boots
        try:
            await self.asterisk.start()
        except RuntimeError as exc:
            raise DemoError(f"Asterisk did not start: {exc}") from exc
        await self._start_web()
        await self._start_bridge()
        for name in self.phones:
            await self.set_phone_power(name, on=True)
        self._keep_registered = asyncio.create_task(self._refresh_registrations())

    async def set_phone_power(self, name: str, *, on: bool) -> bool:
        """Register a phone with Asterisk (on) or unregister it (off); True if Asterisk took it."""
        try:
            status = await self.phones[name].register(expires=REGISTER_SECONDS if on else 0)
        except TimeoutError as exc:
            log.warning("demo: %s", exc)
            return False
        if status != 200:
            log.warning("demo: Asterisk answered %s to %s's REGISTER", status, name)
            return False
        self.phone_on[name] = on
        self._changed()
        return True

    async def _refresh_registrations(self) -> None:
        """Re-register the phones that are on before their registration lapses."""
        while True:
            await asyncio.sleep(REGISTER_SECONDS / 2)
            for name, on in list(self.phone_on.items()):
                if on:
                    try:
                        await self.set_phone_power(name, on=True)
                    except Exception:  # one failed refresh must not end the demo
                        log.exception("demo: could not refresh %s's registration", name)

    async def stop(self) -> None:
        """Stop the bridge (SIGTERM, as a service manager would), Asterisk, page, phones."""
        if self._keep_registered is not None:
            self._keep_registered.cancel()
            await asyncio.gather(self._keep_registered, return_exceptions=True)
            self._keep_registered = None
        await self._stop_bridge()
        if self.asterisk is not None:
            await self.asterisk.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for phone in self.phones.values():
            await phone.stop()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    async def wait_stopped(self) -> int | None:
        """Wait until the bridge exits by itself (e.g. it crashed); return its exit status."""
        if self._bridge is None:
            return None
        return await self._bridge.wait()

    async def _start_web(self) -> None:
        app = web.Application()
        app.add_routes([web.get("/", self._page), web.get("/state", self._state),
                        web.get("/static/{name}", self._static),
                        web.post("/command", self._command),
                        web.post("/phones/{name}/send", self._phone_send),
                        web.post("/phones/{name}/power", self._phone_power),
                        web.post("/ui/{action}", self._ui),
                        *self.slack.routes()])
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        try:
            await site.start()
        except OSError as exc:
            raise DemoError(f"cannot serve the page on 127.0.0.1:{self.port}: {exc.strerror}; "
                            "pick another with --port") from exc
        self.port = int(self._runner.addresses[0][1])
        self.slack.base_url = f"http://127.0.0.1:{self.port}"

    def _config_text(self, ami_port: int) -> str:
        assert self._folder is not None
        lines = ["# Written by `bridge demo`: the bridge between the demo's phones and the",
                 "# Slack stand-in. Same format as config/bridge.example.toml.",
                 "[ami]", 'host = "127.0.0.1"', f"port = {ami_port}",
                 'username = "slackbridge"', "", "[slack]", f'command = "{COMMAND}"',
                 f'default_channel = "{DEFAULT_CHANNEL.channel_id}"', "",
                 "[delivery]", f"max_parts = {MAX_PARTS}", "", "[store]",
                 f"path = {str(self._folder / 'bridge-store.sqlite3')!r}", ""]
        for endpoint in ENDPOINTS:
            lines += ["[[endpoints]]", f'name = "{endpoint.name}"',
                      f'destination = "pjsip:{endpoint.name}"',
                      f'channel = "{endpoint.channel_id}"', ""]
        return "\n".join(lines)

    async def _start_bridge(self) -> None:
        assert self._folder is not None and self.asterisk is not None
        config = self._folder / "bridge.toml"
        config.write_text(self._config_text(self.asterisk.ami_port))
        bridge_port = free_port("tcp")
        self.slack.events_url = f"http://127.0.0.1:{bridge_port}/slack/events"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLACK_", "AMI_", "BRIDGE_"))}
        env.update(SLACK_BOT_TOKEN=self.bot_token, SLACK_SIGNING_SECRET=self.signing_secret,
                   SLACK_API_URL=self.slack.api_url, AMI_SECRET=self.ami_secret,
                   PORT=str(bridge_port), PYTHONUNBUFFERED="1")
        env.setdefault("LOG_LEVEL", "INFO")
        self._bridge = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--mode", "http", "--config", str(config),
            cwd=self._folder, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_term_with_parent,
            start_new_session=True)  # Ctrl-C reaches only us; we stop it first, cleanly
        self._bridge_reader = asyncio.create_task(self._read_bridge(self._bridge))
        for line in ("bridge running", "AMI: connected"):
            await self._wait_for_bridge_line(line, timeout=30)

    async def _read_bridge(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.bridge_log.append(line)
            if self.on_bridge_line is not None:
                self.on_bridge_line(line)
            self._bridge_line.set()
        await process.wait()
        self._bridge_line.set()
        self._changed()

    async def _wait_for_bridge_line(self, text: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.bridge_log):
            if not self.bridge_running:
                tail = "\n".join(self.bridge_log[-30:])
                raise DemoError(f"the bridge exited before logging {text!r}:\n{tail}")
            if time.monotonic() > deadline:
                raise DemoError(f"the bridge did not log {text!r} within {timeout} s")
            self._bridge_line.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._bridge_line.wait(), 1.0)

    async def _stop_bridge(self) -> None:
        process, self._bridge = self._bridge, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                log.warning("the bridge did not stop within 20 s of SIGTERM; killing it")
                process.kill()
                await process.wait()
        if self._bridge_reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._bridge_reader, 5)
            self._bridge_reader = None

    # ----------------------------------------------------------------- the page

    async def _page(self, request: web.Request) -> web.Response:
        html = resources.files("bridge.demo").joinpath("page.html").read_text("utf-8")
        return web.Response(text=html, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        text = resources.files("bridge.demo").joinpath(name).read_text("utf-8")
        return web.Response(text=text, content_type=STATIC_FILES[name], charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    def state(self) -> dict[str, Any]:
        """Everything the page shows, as JSON-ready values."""
        asterisk = self.asterisk
        phones: list[dict[str, Any]] = []
        for endpoint in ENDPOINTS:
            phone = self.phones.get(endpoint.name)
            received: list[dict[str, Any]] = [
                {"direction": "in", "body": m.body, "at": m.at, "from": m.from_header}
                for m in (phone.received if phone else [])]
            sent: list[dict[str, Any]] = [
                {"direction": "out", "body": s.body, "at": s.at, "status": s.status}
                for s in self.sent[endpoint.name]]
            phones.append({
                "name": endpoint.name, "channel": endpoint.channel_name,
                "address": f"sip:{endpoint.name}@127.0.0.1:{phone.port}" if phone else "",
                "on": self.phone_on[endpoint.name],
                "texts": sorted(received + sent, key=lambda t: float(t["at"]))})
        return {
            "version": self.version,
            "command": COMMAND,
            "bridge": {"running": self.bridge_running,
                       "pid": self._bridge.pid if self._bridge else None},
            "asterisk": {"running": bool(asterisk and asterisk.running),
                         "pid": asterisk.pid if asterisk else None,
                         "ami_port": asterisk.ami_port if asterisk else None,
                         "sip_port": asterisk.sip_port if asterisk else None},
            "channels": self.slack.state(),
            "views": self.slack.views_state(),
            "phones": phones,
        }

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state(), headers={"Cache-Control": "no-store"})

    async def _command(self, request: web.Request) -> web.Response:
        data = await request.json()
        result = await self.slack.send_command(channel_id=str(data.get("channel", "")),
                                               typed=str(data.get("text", "")),
                                               thread_ts=data.get("thread_ts") or None)
        return web.json_response(result)

    async def _ui(self, request: web.Request) -> web.Response:
        """What the user does in the page's Slack beyond typing: shortcuts, the modal, buttons,
        the Home tab. Each becomes what Slack would send the app."""
        data = await request.json()
        action = request.match_info["action"]
        slack = self.slack
        try:
            if action == "shortcut":
                result = await slack.open_shortcut()
            elif action == "message-shortcut":
                result = await slack.message_shortcut(channel_id=str(data.get("channel", "")),
                                                      ts=str(data.get("ts", "")))
            elif action == "suggest":
                result = await slack.suggest(block_id=str(data.get("block_id", "")),
                                             action_id=str(data.get("action_id", "")),
                                             value=str(data.get("value", "")))
            elif action == "submit":
                values = data.get("values")
                result = await slack.submit(values if isinstance(values, dict) else {})
            elif action == "cancel":
                slack.cancel_modal()
                result = {"ok": True}
            elif action == "press":
                pressed = data.get("action")
                result = await slack.press(where=str(data.get("where", "")),
                                           action=pressed if isinstance(pressed, dict) else {},
                                           channel_id=str(data.get("channel", "")),
                                           ts=str(data.get("ts", "")))
            elif action == "home":
                result = await slack.open_home()
            else:
                raise web.HTTPNotFound(text="no such action")
        except SlackRefusal as refusal:
            result = {"ok": False, "error": refusal.error}
        return web.json_response(result)

    async def _phone_power(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.phones:
            raise web.HTTPNotFound(text="no such phone")
        on = bool((await request.json()).get("on"))
        return web.json_response({"ok": await self.set_phone_power(name, on=on)})

    async def _phone_send(self, request: web.Request) -> web.Response:
        phone = self.phones.get(request.match_info["name"])
        if phone is None:
            raise web.HTTPNotFound(text="no such phone")
        body = str((await request.json()).get("text", ""))
        if not body:
            return web.json_response({"ok": False, "error": "empty"})
        sent = SentText(body=body, at=time.time(), status="sending")
        self.sent[phone.name].append(sent)
        self._changed()
        try:
            code = await phone.send_message(body)
            sent.status = {202: "202 Accepted", 200: "200 OK"}.get(code, f"SIP {code}")
        except TimeoutError:
            sent.status = "no answer from Asterisk"
        self._changed()
        return web.json_response({"ok": sent.status.startswith("20"), "status": sent.status})
