"""What the bench watches besides Slack: the bare AMI baseline and processes' CPU and memory.

* `AmiCounter` is the baseline: a bare panoramisk client, logged in as the bridge's AMI user,
  that only stamps and counts `UserEvent: SlackBridgeText` events. What it sees is Asterisk's
  own ceiling (plus one minimal consumer), the bar the bridge is compared against.
* `ReferencePoster` is the latency run's reference: the same events, posted to a fake Slack
  in order per phone, one post at a time per channel, each post carrying every text waiting
  when it goes (the least any relay that keeps a channel's order can do with Slack
  answering in 50-150 ms); no store, no formatting, no threads.
* `ProcStats` reads /proc/PID: CPU seconds (utime + stime) and peak RSS (VmHWM).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import panoramisk

from bench.slack_side import Arrival, markers

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class AmiCounter:
    """Counts and stamps the dialplan's SlackBridgeText events, nothing else."""

    def __init__(self, *, port: int, username: str, secret: str) -> None:
        self._config = {"host": "127.0.0.1", "port": port, "username": username,
                        "secret": secret}
        self._manager: Any = None
        self.events = 0
        self._arrivals: dict[str, dict[int, Arrival]] = {}
        self._duplicates: dict[str, int] = {}

    async def start(self, timeout: float = 10.0) -> None:
        manager = panoramisk.Manager(loop=asyncio.get_running_loop(), ping_delay=10**6,
                                     reconnect_timeout=10**6, **self._config)
        manager.register_event("UserEvent", self._on_event)
        self._manager = manager
        await asyncio.wait_for(manager.connect(), timeout)
        deadline = time.monotonic() + timeout
        while not manager.authenticated:
            if time.monotonic() > deadline:
                raise RuntimeError("the baseline AMI client could not log in")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._manager is not None:
            self._manager.callbacks.clear()
            self._manager.close()
            self._manager = None

    def _on_event(self, _manager: object, event: Mapping[str, str]) -> None:
        received_ns = time.time_ns()
        if event.get("UserEvent") != "SlackBridgeText":
            return
        self.events += 1
        try:
            body = base64.b64decode(str(event.get("Body", "")), validate=True).decode()
        except (binascii.Error, ValueError):
            return
        for marker in markers(body):
            seen = self._arrivals.setdefault(marker.run, {})
            if marker.seq in seen:
                self._duplicates[marker.run] = self._duplicates.get(marker.run, 0) + 1
            else:
                seen[marker.seq] = Arrival(marker, received_ns, self.events - 1)

    def arrivals(self, run: str) -> dict[int, Arrival]:
        return self._arrivals.get(run, {})

    def duplicates(self, run: str) -> int:
        return self._duplicates.get(run, 0)


class ReferencePoster(AmiCounter):
    """The dialplan's events posted to Slack as simply as order allows (see the module)."""

    def __init__(self, *, api_url: str, token: str, **login: Any) -> None:
        super().__init__(**login)
        self._url = api_url.rstrip("/") + "/chat.postMessage"
        self._token = token
        self._waiting: dict[str, list[str]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._posters: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self, timeout: float = 10.0) -> None:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self._token}"})
        await super().start(timeout)

    async def stop(self) -> None:
        await super().stop()
        for task in self._posters:
            task.cancel()
        await asyncio.gather(*self._posters, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _on_event(self, _manager: object, event: Mapping[str, str]) -> None:
        if event.get("UserEvent") != "SlackBridgeText":
            return
        try:
            body = base64.b64decode(str(event.get("Body", "")), validate=True).decode()
        except (binascii.Error, ValueError):
            return
        channel = f"C0REF{event.get('Endpoint', '')}"
        self._waiting.setdefault(channel, []).append(body)
        if channel not in self._wake:
            self._wake[channel] = asyncio.Event()
            self._posters.append(asyncio.ensure_future(self._post(channel)))
        self._wake[channel].set()

    async def _post(self, channel: str) -> None:
        assert self._session is not None
        wake = self._wake[channel]
        while True:
            await wake.wait()
            wake.clear()
            while self._waiting[channel]:
                texts, self._waiting[channel] = self._waiting[channel], []
                async with self._session.post(self._url, json={
                        "channel": channel, "text": "\n".join(texts)}) as response:
                    await response.read()


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float
    peak_rss_mb: float
    rss_mb: float
    sys_s: float = 0.0  # the part of cpu_s spent in the kernel (sockets, pipes, futexes)


class ProcStats:
    """CPU time and memory of one process, from /proc (no psutil)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def sample(self) -> ProcSample:
        with open(f"/proc/{self.pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
        # After "pid (comm)": state is fields[0], utime fields[11], stime fields[12].
        cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        status: dict[str, str] = {}
        with open(f"/proc/{self.pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                status[key] = value.strip()

        def mb(key: str) -> float:
            return int(status.get(key, "0 kB").split()[0]) / 1024

        return ProcSample(cpu_s=cpu, peak_rss_mb=mb("VmHWM"), rss_mb=mb("VmRSS"),
                          sys_s=int(fields[12]) / _CLOCK_TICKS)
