"""Texts from phones to Slack: store first, then post per channel, in order, paced, retried.

The path of one text:
1. `submit()` (called for every AMI text event) queues it for the intake task, which writes
   whatever has arrived into the store in one transaction (duplicates of one SIP MESSAGE of
   one sender are dropped there) and hands the stored rows to their channel's queue. The
   channel and conversation come from the endpoint Asterisk identified, never from From.
   A channel's queue holds at most `_QUEUE_MAX` texts, and a sender over
   `[delivery] inbound_rate` has its further texts held back; either way they wait in the
   store only and are read back, in order, as the queue drains.
2. One worker per channel with waiting texts posts them in arrival order, paced by a token
   bucket per channel (Slack allows about one post per second per channel, short bursts).
   When texts pile up, consecutive ones of one conversation (or of any senders not in the
   directory) are combined into one post (bounded in count and size), so a burst of 100
   texts reaches Slack in a handful of posts. Every post is built within Slack's limits
   (`replies.inbound_posts`); a text too long for one continues in the next.
3. A post is marked `posting` in the store before it is sent and `posted` after. A 429
   pauses the channel for Retry-After; 5xx, timeouts and connection errors are retried with
   backoff, forever. After a timeout or an `internal_error` (the post may have arrived) and
   after a crash, the conversation's thread and the channel history are checked for the
   post's marker before posting again.
4. A post Slack refuses for its content is built again, tighter, one text at a time; a text
   no rendering fits is set aside (kept in the store, announced) so the channel goes on.
5. A channel Slack refuses for good (bot not in it, archived) sends its texts to the default
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

from bridge.core.directory import DEFAULT_PBX, Directory, Endpoint, normalize_uri, sip_user
from bridge.core.errors import PostFailed, StoreError
from bridge.core.model import Conversation, InboundRow, InboundState, NewInbound
from bridge.core.policy import AccessPolicy, normalize_number, number_from_trunk
from bridge.core.tasks import TaskSet
from bridge.core.texts import EchoText, InboundText, MalformedEvent
from bridge.core.thread_replies import CLAIMED_PREFIX, IDENTIFIED_PREFIX
from bridge.delivery.leases import Leases, channel_lease
from bridge.ops import metrics
from bridge.settings.config import DeliverySettings
from bridge.slack.messages import (
    FITS,
    POST_BLOCKS_MAX,
    PostItem,
    inbound_posts,
    item_blocks,
    item_size,
    late_note,
    pbx_note,
    set_aside_notice,
)
from bridge.store.backend import StoreBackend

log = logging.getLogger(__name__)

_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 60.0
_STORE_RETRY_MAX = 5.0  # a store that could not write is tried this often: resume soon
_DEAD_CHANNEL_RETRY = 300.0
_INTAKE_BATCH = 500
_TOUCH_STORE_INTERVAL = 60.0
_LINGER_SECONDS = 0.01
_BUSY_GAP = _LINGER_SECONDS / 3  # at least three more texts expected while lingering
# Texts of one channel held in memory (about 1.2 KB each); the store holds the rest, read
# back a few posts' worth at a time as the channel's queue drains.
_QUEUE_MAX = 2000
_RATES_MAX = 10000  # senders whose inbound rate is tracked before the oldest are forgotten
# Several replicas: a channel lease held this long with nothing to post is given back, so the
# replica taking the PBX's texts (which claims their channels as it stores them) posts them.
_IDLE_RELEASE = 30.0


class Poster(Protocol):
    async def post(self, *, channel: str, text: str, blocks: list[dict[str, Any]],
                   marker: str = "", thread_ts: str | None = None) -> str: ...

    async def find_posted(self, *, channel: str, first: int, since: float,
                          thread_ts: str | None = None) -> tuple[str, int] | None: ...


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

    def cautious(self, channel: str) -> None:
        """Post this channel one per interval for a while, without a burst: another replica
        posted it until a moment ago and may have spent Slack's burst."""
        now = time.monotonic()
        self._cautious_until[channel] = now + self._CAUTIOUS_SECONDS
        self._tokens[channel] = min(self._tokens.get(channel, 1.0), 1.0)
        self._stamp[channel] = now

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
    """What the relay tells about the echoes it posts (implemented by DeliveryFeedback)."""

    def state_of(self, outbound_id: int) -> str | None:
        """The text's final state as a note for its echo (escaped), if it is known yet."""

    async def posted(self, outbound_id: int, channel: str, ts: str, *,
                     shown_final: bool, stored: bool = False) -> None:
        """The echo is in Slack at `ts`; `shown_final`: it already shows the final state;
        `stored`: and that is stored already (the echo's feedback target, done)."""


def conversation_key(endpoint: str | None, sender_uri: str, asterisk_endpoint: str = "",
                     pbx: str = DEFAULT_PBX) -> str:
    """Which conversation (Slack thread) a text belongs to: its phone.

    A directory phone's is its name; an endpoint Asterisk identified that is not in the
    directory is `pjsip:<endpoint>` (replies go back to it), `pjsip:<endpoint>@<pbx>` on a
    PBX other than the default one (`@` cannot occur in an endpoint name); a text nobody
    identified (the shared dialplan context) is `uri:<the From it claims>` (`@<pbx>` added
    likewise), and cannot be replied to.
    """
    if endpoint:
        return endpoint
    site = "" if pbx == DEFAULT_PBX else f"@{pbx}"
    if asterisk_endpoint:
        return f"{IDENTIFIED_PREFIX}{asterisk_endpoint}{site}"
    return f"{CLAIMED_PREFIX}{normalize_uri(sender_uri)}{site}"


# The thread of a post combining texts of several senders not in the directory: a reply in
# it cannot go to one of them (thread_replies refuses it with the reason).
MIXED_CONVERSATION = "mixed:"


def _combinable(first: InboundRow, row: InboundRow) -> bool:
    """Whether `row` may share a post with `first`: the same conversation, or both from
    senders not in the directory (each of whom would otherwise cost a post of its own, so a
    flood from many addresses took one post per text)."""
    if row.conversation == first.conversation:
        return True
    return all(r.endpoint is None and isinstance(r.text, InboundText)
               and r.conversation.startswith("uri:") for r in (first, row))


@dataclass
class _ChannelState:
    queue: deque[InboundRow]
    worker: asyncio.Task[None] | None = None
    in_flight: int = 0
    arrived: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    last_arrival: float = 0.0
    gap: float = 1.0  # moving average of the seconds between texts arriving
    ids: set[int] = dataclasses.field(default_factory=set)  # the ids in `queue`
    # Texts in the store but not in `queue`: every newer text of a `held` conversation (its
    # sender went over the inbound rate), or, when `full`, of every conversation. Whatever
    # the reason, each conversation's texts in memory are its oldest waiting ones, so
    # reading the rest back in id order keeps every conversation in order.
    held: set[str] = dataclasses.field(default_factory=set)
    full: bool = False
    skipped: int = 0  # texts left in the store so far (tells a reload whether it saw all)

    @property
    def spilled(self) -> bool:
        return self.full or bool(self.held)

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


class Inbox:
    """Texts from phones as the AMI link hands them over, until the relay's intake stores them.

    Built before both (the AMI link puts, the relay takes), so neither needs the other.
    """

    def __init__(self) -> None:
        self.queue: asyncio.Queue[InboundText | MalformedEvent] = asyncio.Queue()
        self.accepting = True

    def submit(self, item: InboundText | MalformedEvent) -> None:
        """Take one text event (called from the AMI event callback)."""
        if not self.accepting:
            log.warning("text in: arrived while stopping; Asterisk has it, the bridge does not")
            return
        self.queue.put_nowait(item)


@dataclass(frozen=True)
class _Partial:
    """A text continued over several posts, of which Slack has taken the first `posted`."""

    ids: tuple[int, ...]
    posted: int
    thread_ts: str
    first_ts: str


@dataclass(frozen=True)
class _Posted:
    """A post whose "posted" mark is still to be written: its texts, its ts, and the /sip
    texts whose echoes it carries showing their final state (`mark_inbound` echoes_done)."""

    ids: list[int]
    ts: str
    echoes_done: list[int]


class _SenderRate:
    """A token bucket per sender (conversation): `rate` texts a second, bursts of `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, stamp)

    def take(self, key: str) -> bool:
        now = time.monotonic()
        tokens, stamp = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - stamp) * self._rate)
        if len(self._buckets) >= _RATES_MAX and key not in self._buckets:
            self._buckets.clear()  # a sender forgotten starts with a full burst again
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True


class InboundRelay:
    def __init__(self, *, store: StoreBackend, directory: Directory, default_channel: str,
                 poster: Poster, delivery: DeliverySettings, tasks: TaskSet,
                 inbox: Inbox | None = None, feedback: EchoListener | None = None,
                 thread_idle: float = 86400.0, show_pbx: bool = False,
                 access: AccessPolicy | None = None, leases: Leases | None = None) -> None:
        """`show_pbx`: name the PBX (site) a text came through in its post (several PBXs);
        `access`: the [[numbers]] patterns, which say which trunk carries which numbers;
        `leases`: with several replicas, which channels this one posts (None: all)."""
        self._store = store
        self._leases = leases
        self._shared = leases is not None and leases.shared  # other replicas use the store
        self._refused: dict[str, float] = {}  # channel -> until when not to claim it again
        # Channels gained, or with texts other replicas stored: queues not yet taken up.
        self._fresh: set[str] = set()
        # Channels with texts waiting that this replica does not post -> since when it knows
        self._unclaimed: dict[str, float] = {}
        self._idle: dict[str, float] = {}  # held channel -> since when it has had nothing
        self._show_pbx = show_pbx
        self._access = access or AccessPolicy()
        self._thread_idle = thread_idle
        self._echoes = feedback
        self._inbox = inbox if inbox is not None else Inbox()
        self._directory = directory
        self._default_channel = default_channel
        self._poster = poster
        self._delivery = delivery
        self._tasks = tasks
        self._pacer = ChannelPacer(delivery.channel_rate, delivery.channel_burst)
        self._intake = self._inbox.queue
        self._intake_task: asyncio.Task[None] | None = None
        self._channels: dict[str, _ChannelState] = {}
        self._conversations: dict[str, Conversation] = {}
        # Per channel: the head text Slack refused for its content, and how tightly it is
        # rendered now (an index into FITS); a post continued over several, partly in Slack.
        self._refits: dict[str, tuple[int, int]] = {}
        self._partials: dict[str, _Partial] = {}
        # Per channel: the last post's texts and ts, whose "posted" mark waits to be written
        # with the next post's "posting" mark (one store trip per post, not two).
        self._unmarked: dict[str, _Posted] = {}
        self._rates = _SenderRate(delivery.inbound_rate, delivery.inbound_burst)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume everything the store holds, then start taking new texts."""
        resumed = 0
        for channel in await self._store.waiting_channels():
            resumed += await self._resume(channel)
        if resumed:
            log.info("text in: resuming %s texts from the store",
                     f"{resumed - 1}+" if resumed > _QUEUE_MAX else resumed)
        self._intake_task = self._tasks.spawn(self._run_intake(), name="inbound-intake")
        if self._shared:
            self._tasks.spawn(self._run_scan(), name="inbound-scan")

    async def _resume(self, channel: str) -> int:
        """Queue a channel's texts waiting in the store (the oldest first); how many."""
        waiting = await self._store.waiting_inbound(channel=channel, limit=_QUEUE_MAX + 1)
        for row in waiting[:_QUEUE_MAX]:
            self._enqueue(row, resumed=True)
        if len(waiting) > _QUEUE_MAX:
            self._channels[channel].full = True  # the rest is read as the queue drains
        return len(waiting)

    # -- several replicas ------------------------------------------------------------------

    def _holds(self, channel: str) -> bool:
        return self._leases is None or self._leases.holds(channel_lease(channel))

    async def _own(self, channel: str) -> bool:
        """Whether this replica posts `channel` now, taking its lease if it is free."""
        if self._holds(channel):
            return True
        assert self._leases is not None
        if self._refused.get(channel, 0.0) > time.monotonic():
            return False
        if await self._leases.claim([channel_lease(channel)]):
            self._gained(channel)
            return True
        self._refused[channel] = time.monotonic() + self._leases.renew_interval
        return False

    def _gained(self, channel: str) -> None:
        """A channel this replica did not post a moment ago: another replica may have
        started threads and refitted texts meanwhile, so nothing remembered of it holds,
        and the store has texts of it this replica has not queued (`_take_up`)."""
        self._refused.pop(channel, None)
        self._fresh.add(channel)
        self._pacer.cautious(channel)
        self._refits.pop(channel, None)
        self._partials.pop(channel, None)
        # Still "posting" in the store if it was not written: looked for in Slack again.
        self._unmarked.pop(channel, None)
        for key, conversation in list(self._conversations.items()):
            if conversation.channel == channel:
                del self._conversations[key]

    def _wake(self, channel: str) -> None:
        """Make sure a worker runs for `channel` (it takes the channel up as it starts)."""
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _ChannelState(queue=deque())
        if state.worker is None or state.worker.done():
            state.worker = self._tasks.spawn(self._run_channel(channel),
                                             name=f"post-{channel}")

    async def _take_up(self, channel: str, state: _ChannelState) -> None:
        """A channel this replica has just taken (or one with texts other replicas stored):
        its queue becomes what the store has waiting for it, oldest first. The texts its
        last holder left come ahead of those this replica queued meanwhile, and the one
        that holder was posting when it died is at the head, where it is looked for in
        Slack before it is posted again: appended behind newer texts, it would be out of
        order and posted a second time. Only the channel's worker calls this, between
        posts: rebuilt under a post in flight, the queue would lose track of what that
        post carried."""
        self._fresh.discard(channel)
        rows = await self._store.waiting_inbound(channel=channel, limit=_QUEUE_MAX + 1)
        known = {row.id for row in rows}
        if len(rows) > _QUEUE_MAX:
            rows, newer = rows[:_QUEUE_MAX], []  # the rest, newer ones too, is read back
            state.full = True
        else:
            newer = [row for row in state.queue if row.id not in known]
        merged = sorted([*rows, *newer], key=lambda row: row.id)
        state.queue.clear()
        state.queue.extend(merged)
        state.ids = {row.id for row in merged}

    def _let_go(self, channel: str, state: _ChannelState) -> None:
        """Another replica posts `channel`: forget its queue (its texts stay in the store)."""
        if self._channels.get(channel) is state:
            del self._channels[channel]
        if state.queue:
            log.info("text in: channel=%s is posted by another replica now; %d texts are left "
                     "to it in the store", channel, len(state.queue))

    async def _run_scan(self) -> None:
        """Several replicas: every half renewal, take the channels with texts waiting that
        no replica posts (their poster died, or another replica stored them), pick up texts
        other replicas stored for the channels this one posts, and give back idle ones."""
        assert self._leases is not None
        leases = self._leases
        while True:
            await asyncio.sleep(leases.renew_interval / 2)
            try:
                waiting = await self._store.waiting_channels()
            except StoreError:
                continue  # /healthz says why; the leases lapse by themselves
            free = []
            now = time.monotonic()
            for channel in list(self._unclaimed):
                if channel not in waiting or self._holds(channel):
                    del self._unclaimed[channel]
            for channel in waiting:
                self._idle.pop(channel, None)
                state = self._channels.get(channel)
                if not self._holds(channel):
                    # Only a channel seen waiting at an earlier scan too: the replica taking
                    # the PBX's texts claims each channel as it stores its first text, and
                    # taking it from under that claim would leave this replica posting texts
                    # it only learns of at each scan (half a second late, every one).
                    if self._unclaimed.setdefault(channel, now) < now:
                        free.append(channel)
                elif state is None or state.worker is None or state.worker.done():
                    await self._resume(channel)
                elif not state.spilled and waiting[channel] > len(state.queue) + len(
                        self._unmarked[channel].ids if channel in self._unmarked else ()):
                    # More waiting in the store than queued here: texts another replica
                    # stored (an echo of a /sip it took, or a text from phones it stored
                    # just before it lost the PBX's stream). Merged in order between two
                    # posts. Counting first spares a read of the queue at every scan,
                    # and new texts keep being queued as they come meanwhile.
                    self._fresh.add(channel)
            if free:
                got = await leases.claim(channel_lease(channel) for channel in free)
                for channel in free:
                    if channel_lease(channel) in got:
                        self._unclaimed.pop(channel, None)
                        self._gained(channel)
                        self._wake(channel)
            await self._release_idle(set(waiting))

    async def _release_idle(self, waiting: set[str]) -> None:
        assert self._leases is not None
        now = time.monotonic()
        idle = []
        for name in self._leases.held():
            if not name.startswith("channel:"):
                continue
            channel = name.removeprefix("channel:")
            state = self._channels.get(channel)
            if channel in waiting or (state is not None and state.worker is not None
                                      and not state.worker.done()):
                continue
            if now - self._idle.setdefault(channel, now) >= _IDLE_RELEASE:
                idle.append(name)
                del self._idle[channel]
        if idle:
            await self._leases.release(idle)

    async def stop(self, timeout: float) -> None:
        """Stop intake, store what was received, let in-flight posts finish (bounded)."""
        self._inbox.accepting = False
        deadline = time.monotonic() + timeout
        while not self._intake.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._intake_task is not None:
            self._intake_task.cancel()
        while any(state.in_flight for state in self._channels.values()) and \
                time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for channel in list(self._unmarked):
            try:
                await self._write_posted(channel)
            except StoreError as exc:  # left "posting": looked for in Slack at the next start
                log.warning("text in: channel=%s could not mark its last post posted: %s",
                            channel, exc)
        for state in self._channels.values():
            if state.worker is not None:
                state.worker.cancel()
        left = sum(len(s.queue) for s in self._channels.values()) + self._intake.qsize()
        if left:
            log.info("text in: %d texts stay in the store for the next start", left)

    @property
    def texts_in_memory(self) -> int:
        """Texts held in memory: waiting to be stored, or queued for their channel."""
        return self._intake.qsize() + sum(len(s.queue) for s in self._channels.values())

    # -- intake ----------------------------------------------------------------------------

    def submit(self, item: InboundText | MalformedEvent) -> None:
        """Take one text event, as the AMI link does through the inbox."""
        self._inbox.submit(item)

    async def _run_intake(self) -> None:
        while True:
            batch = [await self._intake.get()]
            while len(batch) < _INTAKE_BATCH and not self._intake.empty():
                batch.append(self._intake.get_nowait())
            now = time.time()
            new = [self._placed(item, now) for item in batch]
            rows = await self._store_received(new)
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

    async def _store_received(self, new: list[NewInbound]) -> list[InboundRow | None]:
        """Store received texts, waiting out a store that cannot take writes (disk full):
        nothing later is stored ahead of them, and they are safe in Asterisk's spool."""
        delay = _BACKOFF_FIRST
        while True:
            try:
                return await self._store.add_inbound(new)
            except StoreError as exc:
                log.warning("text in: %d texts wait for the store (%s); retrying in %.0f s",
                            len(new), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _STORE_RETRY_MAX)

    def _placed(self, item: InboundText | MalformedEvent, now: float) -> NewInbound:
        if isinstance(item, MalformedEvent):
            log.warning("text in: unreadable event: %s", item.problem)
            return NewInbound(channel=self._default_channel, endpoint=None,
                              text=item.as_notice(), received_at=now,
                              conversation="unreadable")
        # Who sent it is the endpoint Asterisk identified, never what From claims.
        # With several PBXs, only among the endpoints of the PBX the text came through.
        endpoint = (self._directory.by_asterisk_endpoint(item.asterisk_endpoint, item.pbx)
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
                                                        item.asterisk_endpoint, item.pbx))

    @staticmethod
    def echo_to_store(echo: EchoText, channel: str) -> NewInbound:
        """The echo of a text from Slack as it is stored (with the text itself, in one
        transaction: `StoreBackend.accept_outbound`), to be queued with `queue_echo`."""
        return NewInbound(channel=channel, endpoint=echo.endpoint, text=echo,
                          received_at=time.time(),
                          conversation=conversation_key(echo.endpoint, ""))

    def queue_echo(self, row: InboundRow) -> None:
        """Post a stored echo in its phone's conversation (after the ones before it)."""
        self._enqueue(row)

    def _enqueue(self, row: InboundRow, *, resumed: bool = False) -> None:
        """Queue a stored text for its channel, or leave it in the store to be read back
        later: when the channel's queue is full, or its sender is over the inbound rate."""
        if not self._holds(row.channel) and \
                self._refused.get(row.channel, 0.0) > time.monotonic():
            return  # another replica posts this channel: it finds the text in the store
        state = self._channels.get(row.channel)
        if state is None:
            state = self._channels[row.channel] = _ChannelState(queue=deque())
        if row.id in state.ids:
            return
        over_rate = not (resumed or isinstance(row.text, EchoText)
                         or row.conversation in state.held
                         or self._rates.take(row.conversation))
        if over_rate:
            log.warning("text in: endpoint=%s channel=%s over the inbound rate (%g a second, "
                        "bursts of %d): its texts wait in the store and are posted combined",
                        row.endpoint or row.conversation, row.channel,
                        self._delivery.inbound_rate, self._delivery.inbound_burst)
            state.held.add(row.conversation)
        elif not state.full and len(state.queue) >= _QUEUE_MAX:
            log.warning("text in: channel=%s has %d texts waiting in memory; the next ones "
                        "wait in the store", row.channel, len(state.queue))
            state.full = True
        if state.full or row.conversation in state.held:
            state.skipped += 1
        else:
            state.queue.append(row)
            state.ids.add(row.id)
        state.note_arrival()
        self._wake(row.channel)

    # -- posting ---------------------------------------------------------------------------

    async def _run_channel(self, channel: str) -> None:
        state = self._channels[channel]
        try:
            mine = await self._own(channel)
        except StoreError:
            mine = False
        if not mine:
            self._let_go(channel, state)
            return
        backoff = _BACKOFF_FIRST
        while True:
            # Not in the middle of a text continued over several posts: that post's texts
            # must stay the head of the queue.
            if channel in self._fresh and channel not in self._partials:
                try:
                    await self._write_posted(channel)  # read back as waiting otherwise
                    await self._take_up(channel, state)
                except StoreError as exc:
                    self._fresh.add(channel)
                    if not self._holds(channel):
                        self._let_go(channel, state)
                        return
                    log.warning("text in: channel=%s waiting for the store: %s", channel, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                    continue
            if not (state.queue or state.spilled):
                if channel not in self._unmarked:
                    break
                try:  # the last post's mark, before the worker ends (nothing follows it)
                    await self._write_posted(channel)
                except StoreError as exc:
                    # Left "posting": written with the next post, or looked for in Slack.
                    log.warning("text in: channel=%s could not mark its last post posted: "
                                "%s", channel, exc)
                    break
                continue  # texts may have come meanwhile
            if not self._holds(channel):  # the lease lapsed (the store unreachable) or moved
                self._let_go(channel, state)
                return
            if state.spilled and len(state.queue) < self._delivery.max_texts_per_post:
                try:
                    await self._write_posted(channel)  # read back as waiting otherwise
                except StoreError as exc:
                    log.warning("text in: channel=%s waiting for the store: %s", channel, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                    continue
                await self._read_back(channel, state)
                if not state.queue:
                    continue
            await self._pacer.wait(channel)
            if state.busy:
                await self._linger(state)
            if not self._holds(channel):  # lapsed while waiting for the channel's pace
                self._let_go(channel, state)
                return
            state.in_flight = 1
            try:
                outcome = await self._step(channel, state.queue)
            except StoreError as exc:
                # The store cannot take writes (disk full): the texts stay queued, try again.
                log.warning("text in: channel=%s waiting for the store: %s", channel, exc)
                outcome = "backoff"
            finally:
                state.in_flight = 0
            if outcome == "backoff":
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            else:
                backoff = _BACKOFF_FIRST

    async def _read_back(self, channel: str, state: _ChannelState) -> None:
        """Queue the next few posts' worth of the channel's texts that wait in the store
        only; once none is left, every new text is queued again as it comes."""
        chunk = 2 * self._delivery.max_texts_per_post
        skipped = state.skipped
        limit = len(state.queue) + chunk + 1
        rows = await self._store.waiting_inbound(channel=channel, limit=limit)
        fresh = [row for row in rows if row.id not in state.ids]
        for row in fresh[:chunk]:
            state.queue.append(row)
            state.ids.add(row.id)
        # All seen only if the store had fewer than asked for and nothing was left there
        # while the query ran.
        if len(rows) < limit and len(fresh) <= chunk and state.skipped == skipped:
            state.full = False
            state.held.clear()

    def _popped(self, channel: str, queue: deque[InboundRow], count: int = 1) -> None:
        ids = self._channels[channel].ids
        for _ in range(count):
            ids.discard(queue.popleft().id)

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
                found = await self._poster.find_posted(
                    channel=channel, first=head.id, since=head.received_at,
                    thread_ts=await self._current_thread(head.conversation, channel))
            except PostFailed as exc:
                log.warning("text in: channel=%s cannot check for an earlier post (%s)",
                            channel, exc.error)
                if exc.retry_after is not None:
                    self._pacer.pause(channel, exc.retry_after)
                    return "paced"
                return "backoff"
            if found is not None:
                ts, last = found
                done = [row for row in queue if row.id <= last]
                thread = await self._current_thread(head.conversation, channel)
                await self._threaded(head, channel, thread or ts, started=thread is None)
                await self._delivered(channel, done, ts, recovered=True)
                self._popped(channel, queue, len(done))
                self._partials.pop(channel, None)
                self._refits.pop(channel, None)
                return "ok"
        refit = self._refits.get(channel)
        level = refit[1] if refit is not None and refit[0] == head.id else 0
        partial = self._partials.get(channel)
        if partial is not None and partial.ids[0] != head.id:
            partial = None
        batch = self._take_batch(queue, only=partial.ids if partial else None,
                                 single=level > 0)
        ids = [row.id for row in batch]
        # An echo whose text's outcome is already known shows it in its own line, which
        # saves a reaction call per text when Slack texts flow fast.
        states = {row.text.outbound_id: state for row in batch
                  if isinstance(row.text, EchoText) and self._echoes is not None
                  and (state := self._echoes.state_of(row.text.outbound_id))}
        posts = inbound_posts(self._items(batch, channel, states), FITS[level])
        await self._mark_posting(channel, ids)
        for index, row in enumerate(batch):
            queue[index] = _with_state(row, "posting")
        mixed = any(row.conversation != batch[0].conversation for row in batch)
        # A post of several strangers' texts is not in any one of their threads.
        thread_ts = None if mixed else await self._current_thread(batch[0].conversation,
                                                                  channel)
        first_ts = partial.first_ts if partial else ""
        thread = partial.thread_ts if partial else thread_ts
        started = time.monotonic()
        for number in range(partial.posted if partial else 0, len(posts)):
            post = posts[number]
            last = number == len(posts) - 1
            # Only the last part carries the marker the history check looks for: a text
            # found in Slack is then found whole.
            marker = f"{ids[0]}-{ids[-1]}" if last else f"{ids[0]}-{ids[-1]}.{number + 1}"
            try:
                ts = await self._poster.post(channel=channel, text=post.text,
                                             blocks=post.blocks, marker=marker,
                                             thread_ts=thread)
            except PostFailed as exc:
                return await self._failed(channel, queue, batch, exc)
            if number == 0:
                first_ts, thread = ts, thread_ts or ts
                if mixed:
                    await self._store.start_conversation(
                        key=MIXED_CONVERSATION, channel=channel, thread_ts=ts, endpoint=None,
                        now=time.time())
                else:
                    await self._threaded(batch[0], channel, thread,
                                         started=thread_ts is None)
            if not last:
                # A text continued over several posts resumes after the last one Slack took.
                self._partials[channel] = _Partial(tuple(ids), number + 1, thread or "",
                                                   first_ts)
        self._partials.pop(channel, None)
        self._refits.pop(channel, None)
        # More texts queued behind: their post is next, and its "posting" mark carries this
        # one's "posted" (a crash in between leaves these "posting": looked for in Slack).
        # Not with several replicas: a replica taking over a channel would have two posts to
        # look for instead of one, and a failover is slow enough already.
        defer = len(queue) > len(batch) and not self._shared
        await self._delivered(channel, batch, first_ts, latency=time.monotonic() - started,
                              shown_final=set(states), defer=defer)
        self._popped(channel, queue, len(batch))
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

    def _take_batch(self, queue: deque[InboundRow], *, only: tuple[int, ...] | None = None,
                    single: bool = False) -> list[InboundRow]:
        """The texts of the next post: `only` these (a post already partly in Slack), one
        (`single`, after Slack refused a post's content), or as many as fit in one post."""
        if only is not None:
            return [row for row, _ in zip(queue, only, strict=False) if row.id in only]
        if single:
            return [queue[0]]
        batch: list[InboundRow] = []
        size = 0
        blocks = 0
        for row in queue:
            chars = item_size(row.text)
            more = item_blocks(row.text)
            if batch and (len(batch) >= self._delivery.max_texts_per_post
                          or size + chars > self._delivery.max_chars_per_post
                          or blocks + more > POST_BLOCKS_MAX
                          or not _combinable(batch[0], row)):
                break
            batch.append(row)
            size += chars
            blocks += more
        return batch

    def _items(self, batch: list[InboundRow], channel: str,
               states: Mapping[int, str]) -> list[PostItem]:
        now = time.time()
        items = []
        for row in batch:
            notes = []
            if self._show_pbx and isinstance(row.text, InboundText) and not row.text.problem:
                notes.append(pbx_note(row.text.pbx))
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

    async def _mark_posting(self, channel: str, ids: list[int]) -> None:
        """Mark a post's texts "posting" (before it goes), with the last post's "posted"."""
        if channel in self._unmarked:
            await self._write_posted(channel, then_posting=ids)
        else:
            await self._store.mark_inbound(ids, "posting")

    async def _write_posted(self, channel: str, *, then_posting: list[int] | None = None
                            ) -> None:
        """Write the last post's "posted" mark now, if it waits for a next post (with
        `then_posting` marked "posting" in the same transaction); kept if it fails."""
        done = self._unmarked.pop(channel, None)
        if done is None:
            return
        try:
            await self._write(channel, done, then_posting)
        except StoreError:
            self._unmarked[channel] = done  # nothing was written
            raise

    async def _write(self, channel: str, posted: _Posted,
                     then_posting: list[int] | None = None) -> None:
        await self._store.mark_inbound(posted.ids, "posted", slack_ts=posted.ts,
                                       then_posting=then_posting or [], channel=channel,
                                       echoes_done=posted.echoes_done)

    async def _delivered(self, channel: str, batch: list[InboundRow], ts: str, *,
                         latency: float = 0.0, recovered: bool = False,
                         shown_final: set[int] | None = None, defer: bool = False) -> None:
        """The texts are in Slack at `ts`. `defer`: the "posted" mark is written with the
        next post's "posting" mark (`_mark_posting`) or when the channel stops posting."""
        # Echoes posted showing their text's final state: that state is theirs for good,
        # stored with the "posted" mark (a store trip per echo less).
        shown = shown_final or set()
        done = [row.text.outbound_id for row in batch if isinstance(row.text, EchoText)
                and row.text.outbound_id in shown]
        posted = _Posted([row.id for row in batch], ts, done)
        if defer:
            self._unmarked[channel] = posted
        else:
            await self._write_posted(channel)
            await self._write(channel, posted)
        for row in batch:
            if isinstance(row.text, EchoText) and self._echoes is not None:
                final = row.text.outbound_id in shown
                await self._echoes.posted(row.text.outbound_id, channel, ts,
                                          shown_final=final, stored=final)
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
        if exc.content:
            return await self._refit(channel, queue, batch, exc)
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

    async def _refit(self, channel: str, queue: deque[InboundRow], batch: list[InboundRow],
                     exc: PostFailed) -> str:
        """Slack refused the post itself (not the channel): build it smaller, one text at a
        time; a text no rendering fits is set aside so the texts behind it go on."""
        head = batch[0]
        refit = self._refits.get(channel)
        level = (refit[1] if refit is not None and refit[0] == head.id else 0) + 1
        self._partials.pop(channel, None)
        await self._store.mark_inbound([row.id for row in batch], "pending", error=exc.error)
        for index, row in enumerate(batch):
            queue[index] = _with_state(row, "pending")
        if level < len(FITS):
            log.warning("text in: channel=%s texts=%d result=refitting reason=%s: Slack "
                        "refused the post's content; posting it smaller", channel,
                        len(batch), exc.error)
            self._refits[channel] = (head.id, level)
            return "ok"
        self._refits.pop(channel, None)
        await self._set_aside(channel, queue, head, exc)
        return "ok"

    async def _set_aside(self, channel: str, queue: deque[InboundRow], row: InboundRow,
                         exc: PostFailed) -> None:
        log.error("text in: id=%d endpoint=%s channel=%s result=set-aside reason=%s: Slack "
                  "refuses every rendering of this text; it is kept in the store (state "
                  "set_aside) and the texts behind it go on", row.id, row.endpoint or "-",
                  channel, exc.error)
        await self._store.mark_inbound([row.id], "set_aside", error=exc.error)
        self._popped(channel, queue)
        [item] = self._items([row], channel, {})
        notice = set_aside_notice(item, row_id=row.id, error=exc.error)
        try:
            await self._poster.post(
                channel=channel, text=notice,
                blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": notice}}],
                thread_ts=await self._current_thread(row.conversation, channel))
        except PostFailed as failure:
            log.error("text in: id=%d channel=%s: the notice that it was set aside could not "
                      "be posted either (%s)", row.id, channel, failure.error)

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
            self._popped(channel, queue)
            self._enqueue(_moved(row, self._default_channel), resumed=True)
        return "ok"


def _with_state(row: InboundRow, state: InboundState) -> InboundRow:
    # replace(), not a rebuilt row: every other field (the conversation above all, which
    # decides the thread a retried post goes into) must survive a retry.
    return dataclasses.replace(row, state=state)


def _moved(row: InboundRow, channel: str) -> InboundRow:
    # Reset to pending: the refused post certainly did not arrive. Everything else (the
    # conversation above all) stays as it was.
    return dataclasses.replace(row, channel=channel, state="pending")
