"""Texts from Slack to phones: validate, store, then send in order whenever Asterisk is there.

`Outbox.accept` checks a request (known recipient, sendable text) and stores it; nothing is
sent from the request handler. `Outbox.run` sends stored texts in order, segment by segment,
recording each segment Asterisk accepted, so a restart resumes after the last one; a few
one-segment texts are in flight at once (their MessageSends leave in order).
While AMI is down texts wait; a text that waited longer than `outbound_max_wait` fails. Each
outcome goes to the delivery feedback (`bridge/delivery/feedback.py`), which tells the sender.

Several PBXs: a text is stored with its endpoint's PBX and sent through that PBX's link. Each
PBX has its own lane (one worker, in order, within the one Outbox): a PBX that is down holds
up only the texts to its own phones, never those to another PBX's.

At-least-once window: a crash or a lost AMI connection between Asterisk accepting a segment
and the store recording it sends that segment again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.core.directory import DEFAULT_PBX, Endpoint
from bridge.core.errors import (
    AmiActionFailed,
    AmiError,
    AsteriskShuttingDown,
    GaveUp,
    PartlySent,
    StoreError,
    TextRejected,
)
from bridge.core.model import (
    Accepted,
    AuditEntry,
    NewInbound,
    NewOutbound,
    OutboundRow,
    Outcome,
    Source,
)
from bridge.core.segments import segment_body
from bridge.delivery.leases import Leases, outbox_lease
from bridge.ops import metrics
from bridge.store.backend import StoreBackend

log = logging.getLogger(__name__)

_EXPIRY_CHECK = 1.0
_RETELL_INTERVAL = 30.0
_STORE_RETRY = 2.0  # seconds between tries of a store that cannot take writes (disk full)
# A command's answer waits for its text's outcome only with fewer texts than this ahead of it
# in its lane: behind a backlog (a burst, an overload) it answers "Sending" at once, as the
# wait would only hold the answer up (measured: at 1000 commands/s the answers took seconds).
_ANSWER_AHEAD_MAX = 8
# One-segment texts of one lane in flight at once (`Outbox._send_in_order`).
_SEND_WINDOW = 8


class MessageSender(Protocol):
    @property
    def ready(self) -> bool: ...

    async def wait_ready(self, timeout: float) -> bool: ...

    async def message_send(self, *, destination: str, body: str, from_: str | None) -> None: ...


@dataclass(frozen=True)
class Route:
    """How texts to one PBX's phones go out: its link, and the From its texts carry."""

    sender: MessageSender
    from_: str | None = None


class _Lane:
    """One PBX's worker state."""

    def __init__(self, name: str, route: Route) -> None:
        self.name = name
        self.route = route
        self.wakeup = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.waiting = 0
        # Texts this replica stored since the lane last read the store (`Outbox.accept`; only
        # when it is alone on its store, so they are all it has to send): once the lane has
        # read the store, it takes them from here instead of reading it again for each.
        self.fresh: list[OutboundRow] = []
        self.read_max = 0  # the newest row id the last store read could see
        self.read_at: float | None = None  # when the last store read began (monotonic)


@dataclass(frozen=True)
class OutboundText:
    """A text a Slack user asked to send."""

    recipient: str  # as typed
    text: str
    slack_user: str  # user ID
    slack_channel: str
    response_url: str | None = None
    source: Source = "slash"  # slash: /sip; modal: the compose window; reply: in a thread
    feedback_ts: str | None = None  # the Slack message that shows the state (replies)
    thread_ts: str | None = None
    # A reply to a phone outside the directory: the PJSIP endpoint its text came from. Only
    # the thread sets this; what someone types after /sip never does.
    reply_endpoint: str | None = None
    external: bool = False  # the sender is from another organisation (Slack Connect)


class OutcomeSink(Protocol):
    """Where outcomes go (implemented by `bridge.delivery.feedback.DeliveryFeedback`)."""

    def outcome(self, outcome: Outcome) -> None: ...

    def expect(self, row_id: int) -> None:
        """Someone waits for this text's outcome to tell its sender themselves."""


def check_text(text: str) -> None:
    """Refuse texts that cannot reach a phone exactly as typed."""
    if not text.strip():
        raise TextRejected("there is no text to send")
    if "\0" in text:
        # Asterisk ends the text at a NUL: the phone would get a silently cut text.
        raise TextRejected("the text contains a NUL character, which would cut it short")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise TextRejected("the text contains invalid characters (unpaired surrogates)") from None


class Outbox:
    """The durable queue of texts to phones, and the one worker that sends them."""

    def __init__(self, *, store: StoreBackend, feedback: OutcomeSink, max_wait: float,
                 sender: MessageSender | None = None, from_: str | None = None,
                 routes: Mapping[str, Route] | None = None,
                 leases: Leases | None = None) -> None:
        """One PBX: `sender` (and `from_`); several: `routes` by PBX name, in config order.
        `leases`: with several replicas, which PBXs' texts this one sends (None: all)."""
        self._store = store
        self._leases = leases
        self._feedback = feedback
        self._max_wait = max_wait
        if routes is None:
            if sender is None:
                raise ValueError("an Outbox needs a sender or routes")
            routes = {DEFAULT_PBX: Route(sender, from_)}
        self._lanes = {name: _Lane(name, route) for name, route in routes.items()}
        self._stopping = False
        # One replica (no other writes to its store): what a lane read, sent and was handed
        # since is all there is (`_Lane.fresh`).
        self._alone = leases is None or not leases.shared

    @property
    def waiting(self) -> int:
        """Texts waiting to be sent, through every PBX."""
        return sum(lane.waiting for lane in self._lanes.values())

    def _lane_of(self, row: OutboundRow) -> _Lane | None:
        """The lane a row goes out through; None for a PBX no longer configured. With one
        PBX every row is its (rows from before it was renamed in the config included)."""
        if len(self._lanes) == 1:
            return next(iter(self._lanes.values()))
        return self._lanes.get(row.pbx)

    async def accept(self, request: OutboundText, endpoint: Endpoint, *,
                     awaited: bool = False, request_id: str | None = None,
                     audit: AuditEntry | None = None,
                     echo: NewInbound | None = None) -> Accepted | None:
        """Store a text for `endpoint` (resolved and admitted by the gate); raise
        TextRejected if it cannot be sent as typed. `awaited`: the caller waits a moment
        for the outcome (`DeliveryFeedback.wait_for`) to tell the sender in its own answer;
        registered here, before the lane can run, when this bridge sends the text now and
        few texts are ahead of it. `request_id`, `audit`, `echo`: stored with the text in
        one transaction (`StoreBackend.accept_outbound`); None if the request was seen
        before, and then nothing is stored or sent."""
        check_text(request.text)
        accepted = await self._store.accept_outbound(NewOutbound(
            slack_user=request.slack_user, slack_channel=request.slack_channel,
            endpoint=endpoint.name, destination=endpoint.destination, body=request.text,
            response_url=request.response_url,
            segments_total=len(segment_body(request.text)), source=request.source,
            feedback_ts=request.feedback_ts, thread_ts=request.thread_ts, pbx=endpoint.pbx),
            request_id=request_id, audit=audit, echo=echo)
        if accepted is None:
            return None
        row = accepted.row
        lane = self._lane_of(row)
        if (awaited and lane is not None and lane.waiting < _ANSWER_AHEAD_MAX
                and self._holds(lane) and lane.route.sender.ready):
            self._feedback.expect(row.id)
        if lane is not None and self._alone:  # (with several replicas the store is read)
            lane.fresh.append(row)
        for woken in [lane] if lane is not None else self._lanes.values():
            woken.waiting += 1
            woken.wakeup.set()
        return accepted

    async def run(self) -> None:
        """Send stored texts in order, forever (resumes what the store holds): one lane per
        PBX, each sending its own texts in order."""
        async with asyncio.TaskGroup() as lanes:
            for lane in self._lanes.values():
                lanes.create_task(self._run_lane(lane), name=f"outbox-{lane.name}")

    def _holds(self, lane: _Lane) -> bool:
        return self._leases is None or self._leases.holds(outbox_lease(lane.name))

    async def _run_lane(self, lane: _Lane) -> None:
        first = next(iter(self._lanes.values()))
        # Several replicas: texts another replica stored are found by asking the store this
        # often, and a lane whose lease another replica holds waits for it.
        poll = self._leases.renew_interval / 2 if self._leases and self._leases.shared else None
        while not self._stopping:
            lane.wakeup.clear()
            if not self._holds(lane):
                await asyncio.sleep(poll or _EXPIRY_CHECK)
                continue
            # Alone, the store is read at start, when no text was handed over, and every
            # `_RETELL_INTERVAL` (outcomes not told yet); with several replicas, every time.
            if (lane.fresh and lane.read_at is not None
                    and time.monotonic() - lane.read_at < _RETELL_INTERVAL):
                rows = queued = [row for row in lane.fresh if row.id > lane.read_max]
                lane.fresh = []
            else:
                began = time.monotonic()
                try:
                    every = await self._store.unfinished_outbound()
                except StoreError as exc:  # an unusable store file: the texts wait, in it
                    log.warning("text out: cannot read the store (%s); retrying", exc)
                    await asyncio.sleep(_STORE_RETRY)
                    continue
                # Rows handed meanwhile that this read saw already (ids only grow).
                lane.read_max = max([lane.read_max, *(row.id for row in every)])
                lane.fresh = [row for row in lane.fresh if row.id > lane.read_max]
                lane.read_at = began
                rows = []
                for row in every:
                    owner = self._lane_of(row)
                    if owner is lane:
                        rows.append(row)
                    elif owner is None and lane is first and row.state == "queued":
                        # Its PBX was removed from the config: it cannot go anywhere.
                        await self._fail(row, row.segments_sent, TextRejected(
                            f"its PBX {row.pbx!r} is no longer in the bridge's config"))
                queued = [row for row in rows if row.state == "queued"]
                lane.waiting = len(queued)
            await self._send_rows(rows, lane)
            if self._stopping:
                return
            if not queued or not lane.wakeup.is_set():
                # Only untold outcomes (Slack unreachable?) or nothing, or every text that
                # was waiting went out and none was stored since (no wakeup): wait for news
                # instead of reading the store again for nothing (one read per text saved).
                timeout = _RETELL_INTERVAL if rows else None
                if poll is not None:
                    timeout = poll if timeout is None else min(timeout, poll)
                try:  # (asyncio.timeout: wait_for made a task of the wait, once per text)
                    async with asyncio.timeout(timeout):
                        await lane.wakeup.wait()
                except TimeoutError:
                    pass

    async def _send_rows(self, rows: list[OutboundRow], lane: _Lane) -> None:
        lane.idle.clear()
        try:
            await self._send_in_order(rows, lane)
        finally:
            lane.idle.set()

    async def _send_in_order(self, rows: list[OutboundRow], lane: _Lane) -> None:
        """Send a lane's unfinished texts in order, and tell the outcomes not told yet.

        Up to `_SEND_WINDOW` one-segment texts are in flight at once: each starts by writing
        its MessageSend, in order, on the lane's one AMI connection, whose actions Asterisk
        takes one after another, so the phones get them in order without the lane waiting
        for each answer (one at a time, a lane sent about 220 texts/s, its time spent
        waiting). A text of several segments goes alone, so no other text comes between its
        segments. Returns when all it started are finished: only then is the store read
        again, which would otherwise hand out a text still in flight a second time. (When
        the connection is lost or Asterisk restarts under a window, the texts in it are sent
        again as each finds the link back: their order may change then.)"""
        if len(rows) == 1 and rows[0].state == "queued":  # the usual case: no window needed
            if self._holds(lane) and not self._stopping:
                await self._deliver(rows[0], lane)
                lane.waiting = max(0, lane.waiting - 1)
            return
        window = asyncio.Semaphore(_SEND_WINDOW)
        in_flight: set[asyncio.Task[None]] = set()

        async def send(row: OutboundRow) -> None:
            try:
                await self._deliver(row, lane)
            finally:
                window.release()
                lane.waiting = max(0, lane.waiting - 1)

        async with asyncio.TaskGroup() as sending:
            for row in rows:
                if self._stopping or not self._holds(lane):
                    break  # stopping, or another replica sends them now, from the store
                if row.state != "queued":  # finished earlier; its sender has not heard yet
                    await self._tell(row, sent=row.state == "sent",
                                     segments_sent=row.segments_sent,
                                     reason=TextRejected(row.last_error or "not sent"))
                elif row.segments_total - row.segments_sent > 1:
                    if in_flight:
                        await asyncio.wait(in_flight)
                    await self._deliver(row, lane)
                    lane.waiting = max(0, lane.waiting - 1)
                else:
                    await window.acquire()
                    task = sending.create_task(send(row), name=f"send-{row.id}")
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)

    async def stop(self, timeout: float) -> None:
        """Finish the text being sent (bounded); everything else stays stored."""
        self._stopping = True
        for lane in self._lanes.values():
            lane.wakeup.set()
        try:
            await asyncio.wait_for(asyncio.gather(
                *(lane.idle.wait() for lane in self._lanes.values())), timeout)
        except TimeoutError:
            log.warning("text out: stopped in the middle of a text; it resumes at the next "
                        "start after its last accepted segment")

    async def _deliver(self, row: OutboundRow, lane: _Lane) -> None:
        segments = segment_body(row.body)
        sent = row.segments_sent
        started = time.monotonic()
        told_waiting = False
        sender = lane.route.sender
        while sent < len(segments):
            if not self._holds(lane):  # the rest is sent by the lease's next holder
                return
            if time.time() - row.created_at > self._max_wait:
                where = f" (PBX {lane.name})" if len(self._lanes) > 1 else ""
                await self._fail(row, sent, GaveUp(
                    f"Asterisk{where} was unreachable for {self._max_wait / 60:.0f} min, so "
                    f"the bridge gave up"))
                return
            if not sender.ready:
                await sender.wait_ready(_EXPIRY_CHECK)
                if self._stopping:
                    return
                continue
            try:
                await sender.message_send(destination=row.destination,
                                          body=segments[sent], from_=lane.route.from_)
            except AmiActionFailed as exc:
                await self._fail(row, sent, exc)
                return
            except AsteriskShuttingDown as exc:  # nothing was sent; Asterisk is restarting
                (log.info if not told_waiting else log.debug)(
                    "text out: id=%d endpoint=%s waits for Asterisk: %s", row.id,
                    row.endpoint, exc)
                told_waiting = True
                if sender.ready:  # still connected: try again in a moment
                    await asyncio.sleep(_EXPIRY_CHECK)
                continue
            except AmiError as exc:
                # Lost connection or no answer: the segment may or may not have gone out.
                # Wait for AMI and send it again (the documented at-least-once window).
                log.warning("text out: id=%d endpoint=%s segment %d/%d unconfirmed (%s); "
                            "will resend when Asterisk answers", row.id, row.endpoint,
                            sent + 1, len(segments), exc)
                metrics.outbound_unconfirmed()
                await asyncio.sleep(0.5)
                continue
            sent += 1
            if sent < len(segments):  # the last one is recorded with the outcome
                await self._recorded(self._store.outbound_progress, row.id, sent)
        await self._recorded(self._store.finish_outbound, row.id, "sent", segments_sent=sent)
        waited = time.time() - row.created_at
        metrics.outbound_sent(waited)
        log.info("text out: id=%d slack_user=%s channel=%s endpoint=%s destination=%s "
                 "result=sent segments=%d chars=%d waited_s=%.1f send_ms=%.0f latency_ms=%.0f",
                 row.id, row.slack_user, row.slack_channel, row.endpoint, row.destination,
                 len(segments), len(row.body), waited, (time.monotonic() - started) * 1000,
                 waited * 1000)
        await self._tell(row, sent=True, segments_sent=len(segments))

    async def _fail(self, row: OutboundRow, sent: int, reason: Exception) -> None:
        if sent:
            reason = PartlySent(sent, row.segments_total, reason)
        await self._recorded(self._store.finish_outbound, row.id, "failed", str(reason))
        metrics.outbound_failed(reason)
        log.warning("text out: id=%d slack_user=%s channel=%s endpoint=%s result=failed "
                    "sent=%d/%d latency_ms=%.0f reason=%s", row.id, row.slack_user,
                    row.slack_channel, row.endpoint, sent, row.segments_total,
                    (time.time() - row.created_at) * 1000, reason)
        await self._tell(row, sent=False, segments_sent=sent, reason=reason)

    async def _recorded(self, write: Callable[..., Awaitable[None]], *args: Any,
                        **kwargs: Any) -> None:
        """Record what Asterisk did, waiting out a store that cannot take writes (disk
        full): sending the segment again instead would text the phone twice."""
        while True:
            try:
                await write(*args, **kwargs)
                return
            except StoreError as exc:
                log.warning("text out: cannot record progress yet (%s); retrying in %.0f s",
                            exc, _STORE_RETRY)
                await asyncio.sleep(_STORE_RETRY)

    async def _tell(self, row: OutboundRow, *, sent: bool, segments_sent: int = 0,
                    reason: Exception | None = None) -> None:
        """Hand an outcome to the feedback; the send loop does not wait for Slack."""
        self._feedback.outcome(Outcome(row=row, endpoint=row.endpoint, sent=sent,
                                       segments_sent=segments_sent, reason=reason))
