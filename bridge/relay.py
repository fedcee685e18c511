"""Texts from phones to Slack: store first, then post per channel, in order, paced, retried.

The path of one text:
1. `submit()` (called for every AMI text event) queues it for the intake task, which writes
   whatever has arrived into the store in one transaction (duplicates of one SIP MESSAGE of
   one sender are dropped there) and hands the stored rows to their channel's queue. The
   channel and conversation come from the endpoint Asterisk identified, never from From.
2. One worker per channel with waiting texts posts them in arrival order, paced by a token
   bucket per channel (Slack allows about one post per second per channel, short bursts).
   When texts pile up, consecutive ones are combined into one post (bounded in count and
   size), so a burst of 100 texts reaches Slack in a handful of posts.
3. A post is marked `posting` in the store before it is sent and `posted` after. A 429
   pauses the channel for Retry-After; 5xx, timeouts and connection errors are retried with
   backoff, forever. After a timeout (the post may have arrived) and after a crash, the
   channel history is checked for the post's marker before posting again.
4. A channel Slack refuses for good (bot not in it, archived) sends its texts to the default
   channel with a note; if even that is refused, they wait in the store and are retried
   every few minutes, with an error in the log each time. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bridge import metrics
from bridge.config import DeliverySettings
from bridge.directory import Directory, Endpoint, normalize_uri, sip_user
from bridge.policy import AccessPolicy, normalize_number, number_from_trunk
from bridge.replies import PostItem, inbound_post, item_size, late_note
from bridge.slack_client import PostFailed
from bridge.store import Conversation, InboundRow, NewInbound, Store
from bridge.tasks import TaskSet
from bridge.texts import EchoText, InboundText, MalformedEvent
from bridge.thread_replies import CLAIMED_PREFIX, IDENTIFIED_PREFIX

log = logging.getLogger(__name__)

_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 60.0
_DEAD_CHANNEL_RETRY = 300.0
_INTAKE_BATCH = 500
_TOUCH_STORE_INTERVAL = 60.0
_LINGER_SECONDS = 0.01
_BUSY_GAP = _LINGER_SECONDS / 3  # at least three more texts expected while lingering


class Poster(Protocol):
    async def post(self, *, channel: str, text: str, blocks: list[dict[str, Any]],
                   marker: str = "", thread_ts: str | None = None) -> str: ...

    async def find_posted(self, *, channel: str, first: int,
                          since: float) -> tuple[str, int] | None: ...


class ChannelPacer:
    """A token bucket per channel: `rate` posts per second, bursts of `burst`; 0 = no pacing.

    A 429 pauses the channel for Retry-After and shrinks its burst to 1 for a while: Slack
    just said this channel has no burst left, so posts go out one per interval instead of
    meeting another 429 each time.
    """

    _CAUTIOUS_SECONDS = 60.0

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = max(1, burst)
        self._tokens: dict[str, float] = {}
        self._stamp: dict[str, float] = {}
        self._paused_until: dict[str, float] = {}
        self._cautious_until: dict[str, float] = {}

    async def wait(self, channel: str) -> None:
        while True:
            now = time.monotonic()
            paused = self._paused_until.get(channel, 0.0)
            if paused > now:
                await asyncio.sleep(paused - now)
                continue
            if self._rate <= 0:
                return
            burst = 1 if self._cautious_until.get(channel, 0.0) > now else self._burst
            tokens = min(burst, self._tokens.get(channel, burst)
                         + (now - self._stamp.get(channel, now)) * self._rate)
            self._stamp[channel] = now
            if tokens >= 1:
                self._tokens[channel] = tokens - 1
                return
            self._tokens[channel] = tokens
            await asyncio.sleep((1 - tokens) / self._rate)

    def pause(self, channel: str, seconds: float) -> None:
        now = time.monotonic()
        until = now + seconds
        self._paused_until[channel] = max(self._paused_until.get(channel, 0.0), until)
        self._cautious_until[channel] = until + self._CAUTIOUS_SECONDS
        # The bucket refills from the end of the pause: the first post after it goes at
        # once, the next one an interval later.
        self._tokens[channel] = 0.0
        self._stamp[channel] = until - 1 / self._rate if self._rate > 0 else until


class EchoListener(Protocol):
    """The Slack side's view of the texts whose echoes the relay posts."""

    def state_of(self, outbound_id: int) -> str | None:
        """The text's final state as a note for its echo (escaped), if it is known yet."""

    async def posted(self, outbound_id: int, channel: str, ts: str, *,
                     shown_final: bool) -> None:
        """The echo is in Slack at `ts`; `shown_final`: it already shows the final state."""


def conversation_key(endpoint: str | None, sender_uri: str, asterisk_endpoint: str = "") -> str:
    """Which conversation (Slack thread) a text belongs to: its phone.

    A directory phone's is its name; an endpoint Asterisk identified that is not in the
    directory is `pjsip:<endpoint>` (replies go back to it); a text nobody identified (the
    shared dialplan context) is `uri:<the From it claims>`, and cannot be replied to.
    """
    if endpoint:
        return endpoint
    if asterisk_endpoint:
        return f"{IDENTIFIED_PREFIX}{asterisk_endpoint}"
    return f"{CLAIMED_PREFIX}{normalize_uri(sender_uri)}"


@dataclass
class _ChannelState:
    queue: deque[InboundRow]
    worker: asyncio.Task[None] | None = None
    in_flight: int = 0
    arrived: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    last_arrival: float = 0.0
    gap: float = 1.0  # moving average of the seconds between texts arriving

    def note_arrival(self) -> None:
        now = time.monotonic()
        if self.last_arrival:
            self.gap = 0.9 * self.gap + 0.1 * min(now - self.last_arrival, 1.0)
        self.last_arrival = now
        self.arrived.set()

    @property
    def busy(self) -> bool:
        """Texts are arriving so fast (300 a second or more in this channel) that a post is
        worth holding a few milliseconds for more; slower, every text goes out at once."""
        return self.gap < _BUSY_GAP


class InboundRelay:
    def __init__(self, *, store: Store, directory: Directory, default_channel: str,
                 poster: Poster, delivery: DeliverySettings, tasks: TaskSet,
                 thread_idle: float = 86400.0, access: AccessPolicy | None = None) -> None:
        self._store = store
        self._access = access or AccessPolicy()
        self._thread_idle = thread_idle
        self._echoes: EchoListener | None = None
        self._directory = directory
        self._default_channel = default_channel
        self._poster = poster
        self._delivery = delivery
        self._tasks = tasks
        self._pacer = ChannelPacer(delivery.channel_rate, delivery.channel_burst)
        self._intake: asyncio.Queue[InboundText | MalformedEvent] = asyncio.Queue()
        self._intake_task: asyncio.Task[None] | None = None
        self._channels: dict[str, _ChannelState] = {}
        self._conversations: dict[str, Conversation] = {}
        self._accepting = True

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume everything the store holds, then start taking new texts."""
        waiting = await self._store.waiting_inbound()
        for row in waiting:
            self._enqueue(row)
        if waiting:
            log.info("text in: resuming %d texts from the store", len(waiting))
        self._intake_task = self._tasks.spawn(self._run_intake(), name="inbound-intake")

    async def stop(self, timeout: float) -> None:
        """Stop intake, store what was received, let in-flight posts finish (bounded)."""
        self._accepting = False
        deadline = time.monotonic() + timeout
        while not self._intake.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._intake_task is not None:
            self._intake_task.cancel()
        while any(state.in_flight for state in self._channels.values()) and \
                time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for state in self._channels.values():
            if state.worker is not None:
                state.worker.cancel()
        left = sum(len(s.queue) for s in self._channels.values()) + self._intake.qsize()
        if left:
            log.info("text in: %d texts stay in the store for the next start", left)

    # -- intake ----------------------------------------------------------------------------

    def submit(self, item: InboundText | MalformedEvent) -> None:
        """Take one text event (called from the AMI event callback)."""
        if not self._accepting:
            log.warning("text in: arrived while stopping; Asterisk has it, the bridge does not")
            return
        self._intake.put_nowait(item)

    async def _run_intake(self) -> None:
        while True:
            batch = [await self._intake.get()]
            while len(batch) < _INTAKE_BATCH and not self._intake.empty():
                batch.append(self._intake.get_nowait())
            now = time.time()
            new = [self._placed(item, now) for item in batch]
            rows = await self._store.add_inbound(new)
            duplicates = 0
            for item, row in zip(new, rows, strict=True):
                if row is None:
                    # Normal after a reconnect: the spool repeats texts already relayed.
                    duplicates += 1
                    continue
                log.debug("text in: stored id=%d endpoint=%s channel=%s", row.id,
                          item.endpoint or "-", item.channel)
                self._enqueue(row)
            if duplicates:
                log.debug("text in: %d already-relayed texts skipped", duplicates)

    def _placed(self, item: InboundText | MalformedEvent, now: float) -> NewInbound:
        if isinstance(item, MalformedEvent):
            log.warning("text in: unreadable event: %s", item.problem)
            return NewInbound(channel=self._default_channel, endpoint=None,
                              text=item.as_notice(), received_at=now,
                              conversation="unreadable")
        # Who sent it is the endpoint Asterisk identified, never what From claims.
        endpoint = (self._directory.by_asterisk_endpoint(item.asterisk_endpoint)
                    if item.asterisk_endpoint else None)
        if endpoint is None and item.asterisk_endpoint:
            # A trunk Asterisk identified, carrying a number a [[numbers]] pattern sends to
            # through that same trunk: the conversation with that number (its own channel).
            pattern = number_from_trunk(sip_user(item.sender_uri), item.asterisk_endpoint,
                                        self._access)
            if pattern is not None:
                number = normalize_number(sip_user(item.sender_uri),
                                          self._access.default_country_code)
                assert number is not None
                return NewInbound(channel=pattern.channel, endpoint=number, text=item,
                                  received_at=min(item.asterisk_time or now, now),
                                  conversation=number)
        name = endpoint.name if endpoint else None
        return NewInbound(channel=endpoint.channel if endpoint else self._default_channel,
                          endpoint=name, text=item,
                          received_at=min(item.asterisk_time or now, now),
                          conversation=conversation_key(name, item.sender_uri,
                                                        item.asterisk_endpoint))

    def set_echo_listener(self, listener: EchoListener) -> None:
        self._echoes = listener

    async def post_echo(self, echo: EchoText, channel: str) -> None:
        """Show a text sent from Slack with /sip in its phone's conversation."""
        [row] = await self._store.add_inbound([NewInbound(
            channel=channel, endpoint=echo.endpoint, text=echo, received_at=time.time(),
            conversation=conversation_key(echo.endpoint, ""))])
        assert row is not None
        self._enqueue(row)

    def _enqueue(self, row: InboundRow) -> None:
        state = self._channels.get(row.channel)
        if state is None:
            state = self._channels[row.channel] = _ChannelState(queue=deque())
        state.queue.append(row)
        state.note_arrival()
        if state.worker is None or state.worker.done():
            state.worker = self._tasks.spawn(self._run_channel(row.channel),
                                             name=f"post-{row.channel}")

    # -- posting ---------------------------------------------------------------------------

    async def _run_channel(self, channel: str) -> None:
        state = self._channels[channel]
        backoff = _BACKOFF_FIRST
        while state.queue:
            await self._pacer.wait(channel)
            if state.busy:
                await self._linger(state)
            state.in_flight = 1
            try:
                outcome = await self._step(channel, state.queue)
            finally:
                state.in_flight = 0
            if outcome == "backoff":
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            else:
                backoff = _BACKOFF_FIRST

    async def _linger(self, state: _ChannelState) -> None:
        """Under heavy load, wait a moment for a fuller post: one post of 20 texts costs
        Slack, the store and the bridge far less than ten posts of two."""
        deadline = time.monotonic() + _LINGER_SECONDS
        while len(state.queue) < self._delivery.max_texts_per_post:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            state.arrived.clear()
            try:
                await asyncio.wait_for(state.arrived.wait(), remaining)
            except TimeoutError:
                return

    async def _step(self, channel: str, queue: deque[InboundRow]) -> str:
        """Move the head of a channel's queue one step; "ok", "paced" or "backoff"."""
        head = queue[0]
        if head.state == "posting":
            # Sent before a crash or a timeout: Slack may have it already.
            try:
                found = await self._poster.find_posted(channel=channel, first=head.id,
                                                       since=head.received_at)
            except PostFailed as exc:
                log.warning("text in: channel=%s cannot check for an earlier post (%s)",
                            channel, exc.error)
                return "backoff"
            if found is not None:
                ts, last = found
                done = [row for row in queue if row.id <= last]
                thread = await self._current_thread(head.conversation, channel)
                await self._threaded(head, channel, thread or ts, started=thread is None)
                await self._delivered(channel, done, ts, recovered=True)
                for _ in done:
                    queue.popleft()
                return "ok"
        batch = self._take_batch(queue)
        ids = [row.id for row in batch]
        # An echo whose text's outcome is already known shows it in its own line, which
        # saves a reaction call per text when Slack texts flow fast.
        states = {row.text.outbound_id: state for row in batch
                  if isinstance(row.text, EchoText) and self._echoes is not None
                  and (state := self._echoes.state_of(row.text.outbound_id))}
        text, blocks = inbound_post(self._items(batch, channel, states))
        await self._store.mark_inbound(ids, "posting")
        for index, row in enumerate(batch):
            queue[index] = _with_state(row, "posting")
        thread_ts = await self._current_thread(batch[0].conversation, channel)
        started = time.monotonic()
        try:
            ts = await self._poster.post(channel=channel, text=text, blocks=blocks,
                                         marker=f"{ids[0]}-{ids[-1]}", thread_ts=thread_ts)
        except PostFailed as exc:
            return await self._failed(channel, queue, batch, exc)
        await self._threaded(batch[0], channel, thread_ts or ts, started=thread_ts is None)
        await self._delivered(channel, batch, ts, latency=time.monotonic() - started,
                              shown_final=set(states))
        for _ in batch:
            queue.popleft()
        return "ok"

    async def _current_thread(self, conversation: str, channel: str) -> str | None:
        """The thread a conversation's next post goes into; None starts a new one."""
        if not conversation:
            return None
        current = await self._conversation(conversation)
        if current is None or current.channel != channel or \
                time.time() - current.last_activity > self._thread_idle:
            return None
        return current.thread_ts

    async def _conversation(self, key: str) -> Conversation | None:
        # The relay writes conversations (the Slack side's touches come through touch()),
        # so a cache of what it read or wrote is exact and saves a store trip per post.
        if key not in self._conversations:
            found = await self._store.conversation(key)
            if found is None:
                return None
            self._conversations[key] = found
        return self._conversations[key]

    async def touch(self, key: str) -> None:
        """A text in this conversation just happened (the idle clock restarts)."""
        now = time.time()
        current = await self._conversation(key)
        if current is None:
            return
        self._conversations[key] = dataclasses.replace(current, last_activity=now)
        # Stored at most once a minute: after a restart the idle clock may be that much off.
        if now - current.last_activity >= _TOUCH_STORE_INTERVAL:
            await self._store.touch_conversation(key, now)

    async def _threaded(self, row: InboundRow, channel: str, thread_ts: str, *,
                        started: bool) -> None:
        if not row.conversation:
            return
        if started:
            now = time.time()
            await self._store.start_conversation(key=row.conversation, channel=channel,
                                                 thread_ts=thread_ts, endpoint=row.endpoint,
                                                 now=now)
            self._conversations[row.conversation] = Conversation(
                key=row.conversation, channel=channel, thread_ts=thread_ts, last_activity=now)
        else:
            await self.touch(row.conversation)

    def _take_batch(self, queue: deque[InboundRow]) -> list[InboundRow]:
        batch: list[InboundRow] = []
        size = 0
        for row in queue:
            chars = item_size(row.text)
            if batch and (len(batch) >= self._delivery.max_texts_per_post
                          or size + chars > self._delivery.max_chars_per_post
                          or row.conversation != batch[0].conversation):
                break
            batch.append(row)
            size += chars
        return batch

    def _items(self, batch: list[InboundRow], channel: str,
               states: Mapping[int, str]) -> list[PostItem]:
        now = time.time()
        items = []
        for row in batch:
            notes = []
            if isinstance(row.text, EchoText) and row.text.outbound_id in states:
                notes.append(states[row.text.outbound_id])
            endpoint = self._directory.lookup(row.endpoint) if row.endpoint else None
            if endpoint is None and row.endpoint and isinstance(row.text, InboundText):
                # A number a trunk vouched for (see _placed): shown by its number.
                endpoint = Endpoint(name=row.endpoint, destination="", channel=channel)
            if endpoint is not None and endpoint.channel != channel:
                notes.append(f":warning: belongs in <#{endpoint.channel}>, where Slack refused "
                             f"the post: invite the bridge's bot there")
            if now - row.received_at > self._delivery.late_after:
                notes.append(late_note(row.received_at, now))
            items.append(PostItem(text=row.text, endpoint=endpoint,
                                  received_at=row.received_at, note=" · ".join(notes)))
        return items

    async def _delivered(self, channel: str, batch: list[InboundRow], ts: str, *,
                         latency: float = 0.0, recovered: bool = False,
                         shown_final: set[int] | None = None) -> None:
        await self._store.mark_inbound([row.id for row in batch], "posted", slack_ts=ts)
        for row in batch:
            if isinstance(row.text, EchoText) and self._echoes is not None:
                await self._echoes.posted(row.text.outbound_id, channel, ts,
                                          shown_final=row.text.outbound_id in (shown_final or ()))
        now = time.time()
        metrics.inbound_posted([now - row.received_at for row in batch
                                if not isinstance(row.text, EchoText)], recovered=recovered)
        for row in batch:
            log.info("text in: endpoint=%s channel=%s result=%s texts_in_post=%d "
                     "latency_ms=%.0f post_ms=%.0f", row.endpoint or "-", channel,
                     "found-already-posted" if recovered else "posted", len(batch),
                     (now - row.received_at) * 1000, latency * 1000)

    async def _failed(self, channel: str, queue: deque[InboundRow], batch: list[InboundRow],
                      exc: PostFailed) -> str:
        metrics.inbound_failed(exc)
        if exc.permanent:
            return await self._redirect(channel, queue, batch, exc)
        if not exc.ambiguous:
            # Slack answered, so the post certainly did not arrive.
            await self._store.mark_inbound([row.id for row in batch], "pending",
                                           error=exc.error)
            for index, row in enumerate(batch):
                queue[index] = _with_state(row, "pending")
        log.warning("text in: channel=%s texts=%d result=retrying reason=%s%s", channel,
                    len(batch), exc.error,
                    f" retry_after_s={exc.retry_after:g}" if exc.retry_after else "")
        if exc.retry_after is not None:
            self._pacer.pause(channel, exc.retry_after)
            return "paced"
        return "backoff"

    async def _redirect(self, channel: str, queue: deque[InboundRow], batch: list[InboundRow],
                        exc: PostFailed) -> str:
        ids = [row.id for row in batch]
        if channel == self._default_channel:
            log.error("text in: the default channel %s refuses posts (%s): %d texts wait in "
                      "the store; invite the bot there or fix [slack] default_channel. "
                      "Retrying in %.0f s", channel, exc.error, len(batch),
                      _DEAD_CHANNEL_RETRY)
            await self._store.mark_inbound(ids, "pending", error=exc.error)
            for index, row in enumerate(batch):
                queue[index] = _with_state(row, "pending")
            self._pacer.pause(channel, _DEAD_CHANNEL_RETRY)
            return "paced"
        log.error("text in: channel=%s refuses posts (%s): moving %d texts to the default "
                  "channel %s; invite the bot to %s or fix its ID in the config", channel,
                  exc.error, len(batch), self._default_channel, channel)
        await self._store.move_inbound(ids, self._default_channel)
        await self._store.mark_inbound(ids, "pending", error=exc.error)
        for row in batch:
            queue.popleft()
            self._enqueue(_moved(row, self._default_channel))
        return "ok"


def _with_state(row: InboundRow, state: str) -> InboundRow:
    return InboundRow(id=row.id, channel=row.channel, endpoint=row.endpoint, text=row.text,
                      received_at=row.received_at, state=state, attempts=row.attempts)


def _moved(row: InboundRow, channel: str) -> InboundRow:
    # Reset to pending: the refused post certainly did not arrive.
    return InboundRow(id=row.id, channel=channel, endpoint=row.endpoint, text=row.text,
                      received_at=row.received_at, state="pending", attempts=row.attempts)

