"""Texts from phones to Slack: decide the channel, post in arrival order, retry, dedupe.

`InboundRelay.submit` is called synchronously for every decoded AMI text event; one
worker posts them in order. A transient Slack failure (429, 5xx, timeouts) is retried with
backoff until it succeeds; a permanent one (bot not in the channel, channel gone) moves the
text to the default channel with a note, so a text is never silently dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.directory import Directory
from bridge.replies import inbound_post, malformed_post, sender_label
from bridge.slack_client import PostFailed
from bridge.slack_text import escape
from bridge.texts import InboundText, MalformedEvent

log = logging.getLogger(__name__)

_SEEN_LIMIT = 10_000
_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 30.0


class Poster(Protocol):
    async def post(self, *, channel: str, text: str, blocks: list[dict[str, Any]]) -> str: ...


@dataclass(frozen=True)
class _Pending:
    channel: str
    text: str
    blocks: list[dict[str, Any]]
    summary: str  # for logs: who, which endpoint
    received: float


class InboundRelay:
    def __init__(self, *, directory: Directory, default_channel: str, poster: Poster) -> None:
        self._directory = directory
        self._default_channel = default_channel
        self._poster = poster
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.delivered = 0

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def submit(self, item: InboundText | MalformedEvent) -> None:
        """Queue one text event for posting (duplicates of an Asterisk Uniqueid are dropped)."""
        if item.event_id:
            if item.event_id in self._seen:
                log.info("text in: duplicate event %s ignored", item.event_id)
                return
            self._seen[item.event_id] = None
            if len(self._seen) > _SEEN_LIMIT:
                self._seen.popitem(last=False)
        if isinstance(item, MalformedEvent):
            text, blocks = malformed_post(item)
            log.warning("text in: malformed event %s: %s", item.event_id, item.problem)
            pending = _Pending(self._default_channel, text, blocks,
                               f"malformed event {item.event_id}", time.monotonic())
        else:
            endpoint = self._directory.sender(item.sender_uri)
            channel = endpoint.channel if endpoint else self._default_channel
            text, blocks = inbound_post(item, endpoint)
            summary = (f"endpoint={endpoint.name if endpoint else '-'} "
                       f"from={sender_label(item, endpoint)!r} chars={len(item.body)}")
            pending = _Pending(channel, text, blocks, summary, time.monotonic())
        self._queue.put_nowait(pending)

    async def run(self) -> None:
        """Post queued texts forever, in order."""
        while True:
            pending = await self._queue.get()
            try:
                await self._deliver(pending)
            finally:
                self._queue.task_done()

    async def drain(self, timeout: float) -> bool:
        """Wait until everything queued is posted; False if time ran out."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            return False
        return True

    async def _deliver(self, pending: _Pending) -> None:
        backoff = _BACKOFF_FIRST
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._poster.post(channel=pending.channel, text=pending.text,
                                        blocks=pending.blocks)
            except PostFailed as exc:
                if exc.permanent:
                    redirected = self._redirect(pending, exc)
                    if redirected is None:
                        return
                    pending = redirected
                    continue
                log.warning("text in: %s channel=%s result=retrying attempt=%d reason=%s "
                            "next_try_s=%.0f", pending.summary, pending.channel, attempt,
                            exc.error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            self.delivered += 1
            log.info("text in: %s channel=%s result=posted latency_ms=%.0f", pending.summary,
                     pending.channel, (time.monotonic() - pending.received) * 1000)
            return

    def _redirect(self, pending: _Pending, exc: PostFailed) -> _Pending | None:
        if pending.channel == self._default_channel:
            log.error("text in: %s channel=%s result=LOST reason=%s: fix the default channel "
                      "(invite the bot there). Text was: %s", pending.summary, pending.channel,
                      exc.error, pending.text)
            return None
        log.error("text in: %s channel=%s result=redirected reason=%s: invite the bot to "
                  "that channel or fix its ID in the config", pending.summary,
                  pending.channel, exc.error)
        note = (f":warning: This text belongs in <#{pending.channel}> but Slack refused the "
                f"post there ({escape(exc.error)}). Invite the bridge's bot to that channel.")
        blocks = [*pending.blocks, {"type": "context",
                                    "elements": [{"type": "mrkdwn", "text": note}]}]
        return _Pending(self._default_channel, pending.text, blocks, pending.summary,
                        pending.received)
