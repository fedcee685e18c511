"""Starting the real bridge the way a user does (`python -m bridge run --config ...`), for tests.

`BridgeProcess` runs it as a subprocess with its own config file and environment, collects
its log, and sends it signed slash commands over HTTP exactly as Slack would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    destination: str
    channel: str
    aliases: tuple[str, ...] = ()
    reply_mode: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # more keys, e.g. allow_users


@dataclass
class BridgeConfig:
    ami_port: int
    endpoints: list[EndpointSpec]
    default_channel: str = "C0DEFAULT0"
    command: str = "/sip"
    ami_username: str = "slackbridge"
    extra_ami: dict[str, Any] = field(default_factory=dict)
    store_path: str = ""  # default: bridge-store.sqlite3 beside the config file
    store_url: str = ""  # a PostgreSQL URL: the store is there instead of the SQLite file
    delivery: dict[str, Any] = field(default_factory=dict)
    store_extra: dict[str, Any] = field(default_factory=dict)  # e.g. lease_seconds
    slack_extra: dict[str, Any] = field(default_factory=dict)
    tail: str = ""  # more TOML after everything else, e.g. [access] or [[numbers]]

    def toml(self) -> str:
        lines = [
            "[ami]",
            'host = "127.0.0.1"',
            f"port = {self.ami_port}",
            f'username = "{self.ami_username}"',
            *(f"{k} = {_toml(v)}" for k, v in self.extra_ami.items()),
            "",
            "[slack]",
            f'command = "{self.command}"',
            f'default_channel = "{self.default_channel}"',
            *(f"{k} = {_toml(v)}" for k, v in self.slack_extra.items()),
        ]
        lines += ["", "[store]", f"url = {_toml(self.store_url)}" if self.store_url
                  else f'path = "{self.store_path}"',
                  *(f"{k} = {_toml(v)}" for k, v in self.store_extra.items())]
        if self.delivery:
            lines += ["", "[delivery]", *(f"{k} = {_toml(v)}" for k, v in self.delivery.items())]
        for endpoint in self.endpoints:
            aliases = ", ".join(f'"{a}"' for a in endpoint.aliases)
            lines += ["", "[[endpoints]]", f'name = "{endpoint.name}"',
                      f'destination = "{endpoint.destination}"',
                      f'channel = "{endpoint.channel}"', f"aliases = [{aliases}]"]
            if endpoint.reply_mode:
                lines.append(f'reply_mode = "{endpoint.reply_mode}"')
            lines += [f"{k} = {_toml(v)}" for k, v in endpoint.extra.items()]
        return "\n".join(lines) + "\n" + (self.tail + "\n" if self.tail else "")


class BridgeProcess:
    def __init__(self, config_path: Path, env: dict[str, str], *, port: int) -> None:
        self.config_path = config_path
        self.env = env
        self.port = port
        self.lines: list[str] = []
        self.returncode: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def start(self, *, wait_for: str | None = "bridge running", timeout: float = 20,
                    args: tuple[str, ...] = ()) -> None:
        """Start `bridge run --config ...` (plus `args`); wait for a log line `wait_for`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "AMI_"))}
        env.update(self.env)
        env["PORT"] = str(self.port)
        env.setdefault("LOG_LEVEL", "DEBUG")
        env["PYTHONUNBUFFERED"] = "1"
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(self.config_path), *args,
            env=env, cwd=REPO, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())
        if wait_for:
            await self.wait_for_log(wait_for, timeout=timeout)

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for raw in self._process.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            self._new_line.set()
        self.returncode = await self._process.wait()
        self._new_line.set()

    async def wait_for_log(self, pattern: str, *, timeout: float = 15, after: int = 0) -> str:
        """Wait for a log line matching regex `pattern` (searching from line `after`)."""
        regex = re.compile(pattern)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for line in self.lines[after:]:
                if regex.search(line):
                    return line
            if self.returncode is not None:
                raise AssertionError(f"bridge exited ({self.returncode}) before logging "
                                     f"{pattern!r}; its log:\n{self._tail()}")
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"bridge did not log {pattern!r} within {timeout} s; "
                                     f"its log:\n{self._tail()}")
            self._new_line.clear()
            try:
                await asyncio.wait_for(self._new_line.wait(), remaining)
            except TimeoutError:
                pass

    def _tail(self, n: int = 40) -> str:
        return textwrap.indent("\n".join(self.lines[-n:]), "    ")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self._process is None:
            return 0
        if self._process.returncode is None:
            self._process.send_signal(sig)
        try:
            await asyncio.wait_for(self._process.wait(), timeout)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
            raise AssertionError(f"bridge did not stop within {timeout} s:\n{self._tail()}")
        if self._reader is not None:
            await self._reader
        assert self._process.returncode is not None
        self.returncode = self._process.returncode
        return self._process.returncode

    async def post_signed(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """POST a (signed) request to /slack/events; return status and body text."""
        async with aiohttp.ClientSession() as session, session.post(
                self.events_url, data=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=10)) as response:
            return response.status, await response.text()


def _toml(value: Any) -> str:
    return json.dumps(value)  # JSON strings, numbers and booleans are valid TOML values


def write_config(directory: Path, config: BridgeConfig) -> Path:
    if not config.store_path:
        config.store_path = str(directory / "bridge-store.sqlite3")
    path = directory / "bridge.toml"
    path.write_text(config.toml())
    return path


def ack_text(body: str) -> str:
    """What Slack shows the user from a slash command's HTTP answer (JSON or plain text)."""
    if body.startswith("{"):
        return str(json.loads(body).get("text", ""))
    return body


_OUTCOMES = ("Sent to", "Not sent", "Only part of the text")


async def told_outcome(slack: Any, answer: str, *, timeout: float = 10.0) -> str:
    """What the sender of one /sip text hears of its outcome: the command's answer itself when
    Asterisk answered within the second the bridge waits for it, else the response_url reply
    that follows the answer's "Sending to …" (wait for it)."""
    if any(marker in answer for marker in _OUTCOMES):
        return answer
    replies = await slack.wait_for_responses(1, timeout=timeout)
    return str(replies[-1]["text"])


def taken(answer: str) -> bool:
    """A /sip answer saying the text was taken to send: sent already ("Sent to", the usual
    case) or going out ("Sending to", when Asterisk has not answered within the second)."""
    return "Sent to" in answer or "Sending to" in answer


def outcomes_told(slack: Any, answers: list[str]) -> list[str]:
    """Every outcome the senders heard: those in the commands' answers, then the
    response_url replies."""
    return ([a for a in answers if any(marker in a for marker in _OUTCOMES)]
            + [str(r.get("text", "")) for r in slack.responses])
