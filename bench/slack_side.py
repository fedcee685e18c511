"""The Slack end of the bench: what arrived, when, and how many texts it carried.

* `TimedFakeSlack` is the tests' FakeSlack, stamping every accepted `chat.postMessage` with the
  wall-clock time it arrived (the body already read), so latency can be measured against the
  send time sipp wrote into each text.
* `texts_in_post` reads the texts a post carries from its blocks, so a batched post (several
  texts, each a context block naming the sender followed by its plain_text sections) counts
  every text, and today's one-text posts count one.
* `markers` finds the bench markers ("bench <run> #<seq> ... <epoch.micros>") in a text.
* `WebhookReceiver` is a Slack incoming webhook for the dialplan-only alternative: it answers
  every POST after a fixed delay (Slack's webhooks take ~100 ms) and stamps each arrival.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from fake_slack import FakeSlack, Params

# sipp writes [timestamp] as "YYYY-MM-DD\tHH:MM:SS.micros\tepoch.micros".
MARKER = re.compile(r"bench (\w+) #(\d+) \S+\s+\S+\s+(\d{9,}\.\d+)")


@dataclass(frozen=True)
class Marker:
    run: str
    seq: int
    sent_ns: int  # when sipp built the request (wall clock)


def markers(text: str) -> Iterator[Marker]:
    for match in MARKER.finditer(text):
        seconds, _, micros = match.group(3).partition(".")
        sent_ns = int(seconds) * 1_000_000_000 + int(micros.ljust(6, "0")[:6]) * 1000
        yield Marker(match.group(1), int(match.group(2)), sent_ns)


def texts_in_post(post: dict[str, Any]) -> list[str]:
    """The texts one post carries, in order.

    Each context block starts a text; the plain_text sections after it are that text (a body
    over 3,000 characters spans several sections). Sections before any context block form a
    text of their own. A post without such blocks carries its top-level `text`.
    """
    texts: list[list[str]] = []
    current: list[str] | None = None
    for block in post.get("blocks") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "context":
            current = None
            continue
        text = block.get("text")
        if block.get("type") == "section" and isinstance(text, dict) \
                and text.get("type") == "plain_text":
            if current is None:
                current = []
                texts.append(current)
            current.append(str(text.get("text", "")))
    if texts:
        return ["".join(parts) for parts in texts]
    fallback = post.get("text")
    return [fallback] if isinstance(fallback, str) and fallback else []


@dataclass(frozen=True)
class Arrival:
    """One bench text seen at the Slack end."""

    marker: Marker
    received_ns: int
    post_index: int  # which post (in arrival order) carried it


# The sequence number of the first bench text in the post this request handler is answering.
_first_seq: contextvars.ContextVar[int | None] = contextvars.ContextVar("first_seq",
                                                                        default=None)


def answer_share(seq: int) -> float:
    """Where in the answer-time range a post starting with text `seq` is answered: a fixed
    function of `seq` that looks random (splitmix64's finaliser).

    It used to be Knuth's multiplicative hash, whose values over one phone's texts (every
    20th sequence number) step by 0.36 round the range: slow, fast, middling, slow...
    Answers that alternate like that drain a channel's queue as soon as it forms, and a
    relay that sends each text a millisecond or two later than another falls off the
    pattern: simulated (periodic texts every 100 ms, answers in 50-150 ms), 2 ms more before
    each post added 16 ms to the p99 under that hash and 3 ms under random answers.
    """
    z = (seq + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) / 2**64


class TimedFakeSlack(FakeSlack):
    """FakeSlack that records when each bench text arrived, and in which post."""

    def __init__(self, *, answer_ms: tuple[float, float] = (50.0, 150.0),
                 **kwargs: Any) -> None:
        """`answer_ms`: every Web API call is answered after a time in this range (Slack's
        own answers take about that long); a text counts as arrived when its post's request
        comes in, before the answer. A post's answer time is a function of its first text's
        sequence number, so two systems compared on the same load meet the same slow answers
        at the same texts (a random draw per call put them at different texts, and the p99s
        of turns of one system differed by 50 ms); other calls draw at random."""
        super().__init__(**kwargs)
        self.answer_ms = answer_ms
        self.accepted = 0  # chat.postMessage calls that became posts
        self._arrivals: dict[str, dict[int, Arrival]] = {}
        self._duplicates: dict[str, int] = {}
        self._posts_by_run: dict[str, int] = {}
        self.post_times: list[tuple[str, int]] = []  # (channel, received_ns) of each post
        self._random = random.Random(7)

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        token = _first_seq.set(None)
        try:
            response = await super()._handle_api(request)
            seq = _first_seq.get()
        finally:
            _first_seq.reset(token)
        low, high = self.answer_ms
        if high > 0:
            share = answer_share(seq) if seq is not None else self._random.random()
            await asyncio.sleep((low + share * (high - low)) / 1000)
        return response

    async def _chat_post_message(self, params: Params) -> Params:
        received_ns = time.time_ns()
        result = await super()._chat_post_message(params)  # raises when Slack would refuse
        index = self.accepted
        self.accepted += 1
        self.post_times.append((str(params.get("channel", "")), received_ns))
        runs: set[str] = set()
        for text in texts_in_post(params):
            for marker in markers(text):
                runs.add(marker.run)
                seen = self._arrivals.setdefault(marker.run, {})
                if marker.seq in seen:
                    self._duplicates[marker.run] = self._duplicates.get(marker.run, 0) + 1
                    continue
                seen[marker.seq] = Arrival(marker, received_ns, index)
                if _first_seq.get() is None:
                    _first_seq.set(marker.seq)
        for run in runs:
            self._posts_by_run[run] = self._posts_by_run.get(run, 0) + 1
        return result

    def arrivals(self, run: str) -> dict[int, Arrival]:
        """First arrival of every text of `run`, by sequence number."""
        return self._arrivals.get(run, {})

    def duplicates(self, run: str) -> int:
        """How many texts of `run` arrived again after their first arrival."""
        return self._duplicates.get(run, 0)

    def posts_for(self, run: str) -> int:
        """How many posts carried at least one text of `run`."""
        return self._posts_by_run.get(run, 0)

    def post_calls(self) -> int:
        """chat.postMessage calls made, accepted or not (429s included)."""
        return len(self.calls_of("chat.postMessage"))


class WebhookReceiver:
    """A Slack incoming webhook at POST /hook that answers "ok" after `delay` seconds."""

    def __init__(self, *, delay: float = 0.1) -> None:
        self.delay = delay
        self.received: list[tuple[int, bytes]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._arrivals: dict[str, dict[int, Arrival]] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        assert self._port is not None, "start() the receiver first"
        return f"http://127.0.0.1:{self._port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        received_ns = time.time_ns()
        index = len(self.received)
        self.received.append((received_ns, body))
        for marker in markers(body.decode("utf-8", "replace")):
            self._arrivals.setdefault(marker.run, {}).setdefault(
                marker.seq, Arrival(marker, received_ns, index))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return web.Response(text="ok")

    def arrivals(self, run: str) -> dict[int, Arrival]:
        return self._arrivals.get(run, {})
