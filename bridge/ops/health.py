"""Is the bridge healthy? AMI logged in, Slack answering, and the store taking texts.

"Slack answered recently" is `SlackReachability`: every HTTP answer from the Slack Web API
(status below 500; a 429 is an answer too) on the bridge's shared aiohttp session counts,
seen through an aiohttp trace hook, so a busy bridge needs no extra calls. An idle bridge
makes none, so `probe_loop` calls `auth.test` (cheap, any token may call it) whenever
nothing has answered for `interval` seconds (60): an idle bridge stays healthy as long as
Slack is reachable. Slack counts as unreachable when nothing answered for `window` seconds
(180: three missed probes in a row), or when `auth.test` itself is refused (e.g. a revoked
token: Slack answers, but the bridge cannot work).

`health_report` turns the state into the `/healthz` answer; it never shows a secret (AMI
errors and Slack errors are our own messages and Slack's error codes).
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from bridge.core.errors import SlackError
from bridge.core.model import Backlog
from bridge.ops import metrics

log = logging.getLogger(__name__)

PROBE_INTERVAL = 60.0
ANSWER_WINDOW = 180.0


class LeaseView(Protocol):
    """What a replica holds (bridge.delivery.leases.Leases)."""

    holder: str
    ttl: float
    shared: bool

    def held(self) -> list[str]: ...


class AmiHealth(Protocol):
    """What health reads from one PBX's AMI link (implemented by AmiLink)."""

    @property
    def ready(self) -> bool: ...

    @property
    def address(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def required(self) -> bool: ...

    last_error: str
    reconnects: int
    connected_since: float | None  # time.monotonic() of the current login
    events: str  # the login's event mask: "on", or "system" standing by ("": logged out)
    text_events: int  # text events Asterisk sent since the start


class SlackReachability:
    """When the Slack Web API last answered, and what went wrong since."""

    def __init__(self, api_url: str = "https://slack.com/api/", *,
                 interval: float = PROBE_INTERVAL, window: float = ANSWER_WINDOW) -> None:
        self.api_url = api_url  # answers from under this URL count
        self.interval = interval
        self.window = window
        self._answered_at: float | None = None  # time.monotonic()
        self.last_problem = ""  # the latest failed call, for the report
        self.refused = ""  # auth.test refused: Slack answers, but not to this token
        # Why Slack cannot reach the bridge's command handler ("" when it can): Socket Mode
        # not connected yet (set by the Slack frontend).
        self.transport_problem = ""

    # -- evidence ---------------------------------------------------------------------

    def transport_state(self, problem: str) -> None:
        """The Slack frontend says whether Slack can reach it ("" when it can)."""
        self.transport_problem = problem

    def answered_age(self) -> float | None:
        """Seconds since Slack last answered; None if it never has."""
        if self._answered_at is None:
            return None
        return max(0.0, time.monotonic() - self._answered_at)

    def answered(self, method: str, status: int) -> None:
        """Slack answered `method` with HTTP `status`."""
        metrics.slack_api_answer(method, status)
        if status < 500:
            self._answered_at = time.monotonic()
        else:
            self.last_problem = f"HTTP {status} from {method}"

    def failed(self, method: str, exc: BaseException) -> None:
        """A call to `method` got no answer (connection refused, timeout, ...)."""
        metrics.slack_api_answer(method, None)
        self.last_problem = f"{method}: {type(exc).__name__}: {exc}".rstrip(": ")

    def problem(self) -> str | None:
        """Why Slack counts as unreachable right now; None when it answers."""
        if self.refused:
            return f"Slack refused auth.test: {self.refused}"
        if self.transport_problem:
            return self.transport_problem
        age = self.answered_age()
        if age is None:
            return "Slack has not answered yet" + (f" ({self.last_problem})"
                                                   if self.last_problem else "")
        if age > self.window:
            return f"Slack has not answered for {age:.0f} s" + (
                f" (last problem: {self.last_problem})" if self.last_problem else "")
        return None

    def report(self) -> dict[str, Any]:
        age = self.answered_age()
        return {"ok": self.problem() is None,
                "last_answer_age_s": None if age is None else round(age, 1),
                "window_s": self.window, "last_problem": self.last_problem or None,
                "auth_refused": self.refused or None}

    # -- the aiohttp hook ---------------------------------------------------------------

    def trace_config(self) -> aiohttp.TraceConfig:
        """A trace hook for the shared Slack session: records every Web API answer."""
        config = aiohttp.TraceConfig()

        async def on_end(_session: aiohttp.ClientSession, _ctx: types.SimpleNamespace,
                         params: aiohttp.TraceRequestEndParams) -> None:
            method = self._method(str(params.url))
            if method is not None:
                self.answered(method, params.response.status)

        async def on_exception(_session: aiohttp.ClientSession, _ctx: types.SimpleNamespace,
                               params: aiohttp.TraceRequestExceptionParams) -> None:
            method = self._method(str(params.url))
            if method is not None:
                self.failed(method, params.exception)

        config.on_request_end.append(on_end)
        config.on_request_exception.append(on_exception)
        return config

    def _method(self, url: str) -> str | None:
        """The Web API method of a request URL; None for other URLs (response_url)."""
        if not url.startswith(self.api_url):
            return None
        return url[len(self.api_url):].split("?", 1)[0].strip("/") or None

    # -- the idle probe -----------------------------------------------------------------

    async def probe_loop(self, probe: Callable[[], Awaitable[object]]) -> None:
        """Call `probe` (auth.test) whenever Slack has been quiet for `interval`, forever."""
        while True:
            age = self.answered_age()
            if age is None or age >= self.interval or self.refused:
                await self.probe_once(probe)
                age = self.answered_age()
            quiet = 0.0 if age is None or self.refused else age
            await asyncio.sleep(max(self.interval / 10, self.interval - quiet))

    async def probe_once(self, probe: Callable[[], Awaitable[object]]) -> None:
        before = self._answered_at
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the call completes, and the bridge would not stop.
            async with asyncio.timeout(self.interval):
                await probe()
        except SlackError as exc:
            if exc.status == 429 or exc.error == "ratelimited":
                # Slack answered: it is there, only busy. A liveness probe must not restart
                # the bridge during a Slack incident.
                log.debug("Slack: health probe rate limited (HTTP 429): Slack answers")
            elif (exc.status or 200) < 500 and self._answered_at != before:
                # Slack answered, and said no (invalid_auth, token_revoked, ...).
                if self.refused != exc.error:
                    log.error("Slack: auth.test refused (%s): the bridge cannot use Slack; "
                              "check SLACK_BOT_TOKEN", exc.error)
                self.refused = exc.error
            return
        except Exception as exc:  # noqa: BLE001 - any failure is a health fact, not a crash
            if isinstance(exc, TimeoutError):  # the trace hook saw no end to it
                self.last_problem = f"auth.test: no answer within {self.interval:g} s"
            log.debug("Slack: health probe failed: %s", self.last_problem)
            return
        if self.refused:
            log.info("Slack: auth.test accepted again")
        self.refused = ""


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    body: dict[str, Any]


def health_report(*, ami: AmiHealth | Sequence[AmiHealth], slack: SlackReachability,
                  backlog: Backlog, now: float | None = None,
                  store_problem: str | None = None,
                  leases: LeaseView | None = None) -> HealthReport:
    """The `/healthz` answer: healthy when every required PBX's AMI is logged in (`ami`: one
    link, or every PBX's), Slack answers and the store takes writes (`store_problem` says
    why it does not). `ami` in the answer is the first PBX; `pbxs` has each, by name."""
    now = time.time() if now is None else now
    links = [ami] if not isinstance(ami, Sequence) else list(ami)
    several = len(links) > 1
    reasons = []
    if store_problem:
        reasons.append(store_problem)
    for link in links:
        if not link.ready and link.required:
            reasons.append(f"{f'PBX {link.name}: ' if several else ''}AMI not connected: "
                           f"{link.last_error or 'connecting'}")
    slack_problem = slack.problem()
    if slack_problem is not None:
        reasons.append(slack_problem)
    pbxs = {link.name: _link_report(link) for link in links}
    body: dict[str, Any] = {
        "status": "unhealthy" if reasons else "ok",
        "ami": pbxs[links[0].name],
        "pbxs": pbxs,
        "slack": slack.report(),
        "store": {"ok": not store_problem, "problem": store_problem or None},
        "backlog": {
            "inbound_waiting": backlog.inbound_waiting,
            "inbound_oldest_age_s": _age(backlog.inbound_oldest, now),
            "outbound_waiting": backlog.outbound_waiting,
            "outbound_oldest_age_s": _age(backlog.outbound_oldest, now),
            "outbound_untold": backlog.outbound_unnotified,
        },
    }
    if leases is not None and leases.shared:
        # Several replicas: which one this is, and what it works (channels, PBX streams).
        body["replica"] = {"name": leases.holder, "lease_seconds": leases.ttl,
                           "leases": leases.held()}
    if reasons:
        body["reasons"] = reasons
    return HealthReport(healthy=not reasons, body=body)


def _link_report(link: AmiHealth) -> dict[str, Any]:
    since = link.connected_since
    return {"connected": link.ready, "address": link.address, "required": link.required,
            "connected_for_s": None if since is None or not link.ready
            else round(time.monotonic() - since, 1),
            "reconnects": link.reconnects, "last_error": link.last_error or None,
            # "on" while this bridge takes the PBX's texts; "system" while another replica
            # does (Asterisk sends this one no text events then).
            "events": link.events or None, "text_events": link.text_events}


def _age(oldest: float | None, now: float) -> float | None:
    return None if oldest is None else round(max(0.0, now - oldest), 1)
