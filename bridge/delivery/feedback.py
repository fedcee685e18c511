"""Delivery feedback: the one owner of what a sender sees of their text's fate.

A text sent from Slack shows its state in three places, and this object keeps them consistent:

* the Slack message that caused the send (a reply in a phone's thread, or the echo of a `/sip`
  text the relay posts there) gets a reaction: ⏳ queued while Asterisk is unreachable, ✅ sent,
  ❌ failed, with the reason as a note in the thread;
* an echo posted after the outcome is known shows it in its own line instead (the relay asks
  `state_of` before posting, and reports the post through `posted`);
* the sender of a `/sip` text is told the outcome: in the command's own answer when it comes
  within a second (the usual case: one message instead of "Sending…" and then "Sent", and no
  response_url call), else through the response_url while valid, else the fallback.

The outbox hands every outcome to `outcome()` and never waits for Slack: a few teller tasks
tell them concurrently, each outcome once at a time, and the store records who has been told,
so a restart tells whoever had not heard yet. Built first, it is given to the outbox, the relay
and the Slack frontend, so none of them holds a piece of this state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from bridge.core.errors import StoreError
from bridge.core.model import OutboundRow, Outcome
from bridge.slack.messages import failure_notice_blocks, failure_reason, not_sent_text, sent_text
from bridge.slack.text import escape
from bridge.store.backend import StoreBackend

log = logging.getLogger(__name__)

# Reactions that show a text's state on the Slack message that caused it.
QUEUED = "hourglass_flowing_sand"
SENT = "white_check_mark"
FAILED = "x"

_TELLERS = 4  # outcomes told to Slack concurrently, apart from the send loop
# A sender told is recorded in the store this long after, with everyone told meanwhile: one
# write for many texts (at 50 texts/s, for about ten). A crash in between tells them once more.
_NOTIFIED_DELAY = 0.2


class Reactions(Protocol):
    """The Slack calls feedback makes (implemented by `bridge.slack.client.SlackActions`)."""

    async def react(self, channel: str, ts: str, name: str, *, remove: bool = False) -> None: ...

    async def note_in_thread(self, channel: str, thread_ts: str, text: str,
                             blocks: list[dict[str, Any]] | None = None) -> bool: ...


class Teller(Protocol):
    """Tells a user something about their text (implemented by `bridge.slack.client.Notifier`)."""

    async def tell(self, *, user: str, channel: str, response_url: str | None,
                   created_at: float, text: str) -> bool: ...


class LinkState(Protocol):
    """Whether a PBX is reachable (implemented by `bridge.asterisk.links.PbxLinks`)."""

    def ready_for(self, pbx: str) -> bool: ...


class DeliveryFeedback:
    def __init__(self, *, store: StoreBackend, reactions: Reactions, teller: Teller, ami: LinkState,
                 command: str, on_change: Callable[[str], None] = lambda _user: None) -> None:
        self._store = store
        self._reactions = reactions
        self._teller = teller
        self._ami = ami
        self._command = command
        self._on_change = on_change  # a sender's text changed state (their App Home shows it)
        # Outcomes of /sip texts whose echo is not posted yet: (sent, reason).
        self._outcomes: dict[int, tuple[bool, str]] = {}
        self._shown_queued: set[tuple[str, str]] = set()  # messages showing ⏳ (this run)
        self._showing: set[int] = set()  # rows whose outcome is being shown right now
        self._started = time.time()
        self._tells: asyncio.Queue[Outcome] = asyncio.Queue()
        # Outcomes a slash command waits for, to answer with them (`expect`, `wait_for`).
        self._expected: dict[int, asyncio.Future[Outcome]] = {}
        # Rows whose outcome is being told right now, or was told and is not recorded yet.
        self._telling: set[int] = set()
        self._tellers: list[asyncio.Task[None]] = []
        self._told: list[int] = []  # told, to record (`_record_told`)
        self._recorder: asyncio.Task[None] | None = None
        self._record_now = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if not self._tellers:
            self._tellers = [asyncio.create_task(self._run_teller(), name=f"teller-{i}")
                             for i in range(_TELLERS)]

    async def stop(self, timeout: float) -> None:
        """Finish telling what is being told (bounded); the rest is told at the next start."""
        deadline = time.monotonic() + timeout
        self._record_now.set()
        while (self._telling or not self._tells.empty()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        tasks = [*self._tellers, *([self._recorder] if self._recorder else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tellers = []

    # -- from the outbox --------------------------------------------------------------------

    def outcome(self, outcome: Outcome) -> None:
        """A stored text was sent or failed: tell its sender (the outbox does not wait)."""
        if outcome.row.id in self._telling:
            return
        self._telling.add(outcome.row.id)
        waiting = self._expected.pop(outcome.row.id, None)
        if waiting is not None and not waiting.done():
            # The command's own answer tells it (`answered`), or, if that cannot happen
            # after all, the tellers do (`forget`).
            waiting.set_result(outcome)
            return
        self._tells.put_nowait(outcome)

    # -- from the Slack frontend: a slash command answered with its outcome --------------------

    def expect(self, row_id: int) -> None:
        """A slash command will wait for this text's outcome (the outbox calls this when it
        stores the text, before it can be sent)."""
        self._expected[row_id] = asyncio.get_running_loop().create_future()

    async def wait_for(self, row_id: int, timeout: float) -> Outcome | None:
        """The outcome of an expected text if it comes within `timeout` seconds; else None,
        and it is told the usual way (response_url) when it comes."""
        future = self._expected.get(row_id)
        if future is None:
            return None
        # A waiter woken by the outcome or the timeout, whichever comes first: what
        # asyncio.wait does, without its task set (a few percent of a /sip text's CPU).
        waiter = asyncio.get_running_loop().create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        future.add_done_callback(wake)
        timer = asyncio.get_running_loop().call_later(timeout, wake)
        try:
            await waiter
        except BaseException:  # the request was abandoned: nobody will answer with it
            self.forget(row_id)
            raise
        finally:
            timer.cancel()
            future.remove_done_callback(wake)
        if not future.done():
            self.forget(row_id)
            return None
        return future.result()

    def forget(self, row_id: int) -> None:
        """Nobody waits for this text's outcome any more: it is told the usual way."""
        future = self._expected.pop(row_id, None)
        if future is None:
            return
        if future.done() and not future.cancelled():
            self._tells.put_nowait(future.result())  # it came meanwhile; still telling
        else:
            future.cancel()

    def answer(self, outcome: Outcome, row: OutboundRow) -> str:
        """What the sender of `row` is told of `outcome`."""
        if outcome.sent:
            return sent_text(outcome.endpoint, outcome.segments_sent,
                             time.time() - row.created_at)
        return not_sent_text(outcome.reason or Exception("not sent"), self._command,
                             outcome.endpoint)

    async def answered(self, outcome: Outcome) -> None:
        """The command's answer told the sender `outcome`: record that (so nobody tells it
        again, also after a restart) and keep it for the text's echo, posted next."""
        row = outcome.row
        reason = _failure(outcome)
        self._outcomes[row.id] = (outcome.sent, reason)
        self._on_change(row.slack_user)
        self._record(row.id)

    async def _run_teller(self) -> None:
        while True:
            outcome = await self._tells.get()
            told = False
            try:
                told = await self.tell(outcome)
            except Exception:  # one failed notice must not stop the others
                log.exception("text out: id=%d could not tell the sender", outcome.row.id)
            if told:
                self._record(outcome.row.id)
            else:
                self._telling.discard(outcome.row.id)

    def _record(self, row_id: int) -> None:
        """`row_id`'s sender has heard: record it soon (it stays in `_telling` until then, so
        the outbox, finding it untold in the store meanwhile, does not tell it again)."""
        self._told.append(row_id)
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_told(), name="record-told")

    async def _record_told(self) -> None:
        while self._told:
            if not self._record_now.is_set():
                try:
                    await asyncio.wait_for(self._record_now.wait(), _NOTIFIED_DELAY)
                except TimeoutError:
                    pass
            told, self._told = self._told, []
            try:
                await self._store.outbound_notified(*told)
            except StoreError as exc:  # then they are told once more, later: better than never
                log.warning("text out: cannot record that the senders of %d text(s) were "
                            "told (ids %s): %s", len(told), told[:10], exc)
            finally:
                self._telling.difference_update(told)

    async def tell(self, outcome: Outcome) -> bool:
        """Show a text's outcome; True once its sender has heard (or cannot be told)."""
        row = await self._store.get_outbound(outcome.row.id) or outcome.row
        if row.notified:  # told meanwhile (in its command's answer; the outbox saw it before)
            return True
        reason = _failure(outcome)
        if not row.feedback_ts and row.source != "reply":  # /sip, the compose window, Retry
            self._outcomes[row.id] = (outcome.sent, reason)  # for its echo, once posted
        if not row.feedback_done:
            await self._show_outcome(row, sent=outcome.sent, reason=reason)
        self._on_change(row.slack_user)
        if row.source == "reply":
            return True  # the reaction on their message is how they hear it
        return await self._teller.tell(user=row.slack_user, channel=row.slack_channel,
                                       response_url=row.response_url,
                                       created_at=row.created_at,
                                       text=self.answer(outcome, row))

    # -- from the relay -----------------------------------------------------------------------

    def state_of(self, outbound_id: int) -> str | None:
        """The final state to print in a text's echo (escaped mrkdwn), once it is known."""
        outcome = self._outcomes.get(outbound_id)
        if outcome is None:
            return None
        sent, reason = outcome
        return f":{SENT}: sent" if sent else f":{FAILED}: not sent: {escape(reason)}"

    async def posted(self, outbound_id: int, channel: str, ts: str, *,
                     shown_final: bool, stored: bool = False) -> None:
        """The echo of a /sip text is in Slack at `ts`; from now on it carries the state.
        `shown_final`: it was posted already showing the outcome; `stored`: and the relay
        stored it as the text's feedback target, done (with the echo's "posted" mark)."""
        if shown_final:
            sent, reason = self._outcomes.pop(outbound_id, (True, ""))
            if not stored:
                await self._store.set_feedback_target(outbound_id, channel, ts, done=True)
            if not sent:  # the echo says why; the notice below it carries the Retry button
                row = await self._store.get_outbound(outbound_id)
                if row is not None:
                    await self._failure_notice(row, channel, ts, reason or row.last_error or "")
            return
        await self._store.set_feedback_target(outbound_id, channel, ts)
        row = await self._store.get_outbound(outbound_id)
        if row is None:
            return
        if row.state == "queued":
            if not self._ami.ready_for(row.pbx):
                await self.show_queued(channel, ts)
            return
        if not row.feedback_done:
            _, reason = self._outcomes.pop(row.id, (True, ""))
            await self._show_outcome(row, sent=row.state == "sent",
                                     reason=reason or row.last_error or "")

    # -- from the Slack frontend --------------------------------------------------------------

    async def show_queued(self, channel: str, ts: str) -> None:
        """The message's text waits for Asterisk."""
        self._shown_queued.add((channel, ts))
        await self._reactions.react(channel, ts, QUEUED)

    async def show_refused(self, channel: str, ts: str) -> None:
        """The message was refused before it was stored (its author was told why)."""
        await self._reactions.react(channel, ts, FAILED)

    # -- the reactions --------------------------------------------------------------------------

    async def _show_outcome(self, row: OutboundRow, *, sent: bool, reason: str) -> None:
        channel, ts = row.feedback_channel, row.feedback_ts
        if not channel or not ts:
            return  # the echo is not posted yet; posted() shows it then
        # The echo's post (posted) and the teller can both get here for one text when the
        # outcome comes while the echo is being posted: one shows it, the other finds it shown
        # (else a failure's note appears twice in the thread).
        if row.id in self._showing:
            return
        self._showing.add(row.id)
        try:
            current = await self._store.get_outbound(row.id)
            if current is None or current.feedback_done:
                return
            await self._show(row, channel, ts, sent=sent, reason=reason)
            await self._store.feedback_done(row.id)
        finally:
            self._showing.discard(row.id)

    async def _show(self, row: OutboundRow, channel: str, ts: str, *, sent: bool,
                    reason: str) -> None:
        # Only a message that showed ⏳ has one to take off; for texts from before a restart
        # the bridge cannot know, so it tries.
        if (channel, ts) in self._shown_queued or row.created_at < self._started:
            self._shown_queued.discard((channel, ts))
            await self._reactions.react(channel, ts, QUEUED, remove=True)
        await self._reactions.react(channel, ts, SENT if sent else FAILED)
        if not sent:
            await self._failure_notice(row, channel, ts, reason)

    async def _failure_notice(self, row: OutboundRow, channel: str, ts: str,
                              reason: str) -> None:
        """Why the text was not sent, in its conversation's thread, with a Retry button only
        its sender may press (bridge.slack.retry)."""
        thread = row.thread_ts
        if not thread:
            conversation = await self._store.conversation(row.endpoint)
            thread = conversation.thread_ts if conversation else ts
        note = (f":x: Not sent to *{escape(row.endpoint)}*: "
                f"{escape(reason or 'unknown reason')}")
        await self._reactions.note_in_thread(channel, thread, note,
                                             blocks=failure_notice_blocks(note, row.id))


def _failure(outcome: Outcome) -> str:
    """Why a text was not sent, for its echo and notice ("" when it was sent)."""
    return "" if outcome.sent else failure_reason(outcome.reason or Exception("not sent"))
