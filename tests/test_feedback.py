"""What a sender sees of their text's fate (bridge/delivery/feedback.py), with a real store.

Slack is faked at the level of what a user sees: `SlackView` keeps the reactions each message
carries and the notes posted in threads, `Told` keeps what each user was told about their
`/sip` text. The store's rows are set up through its API as the outbox and relay leave them;
the feedback then gets the outcomes and the echoes' posts the way they hand them over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridge.core.errors import AmiActionFailed
from bridge.core.model import OutboundRow, Outcome, Source
from bridge.delivery.feedback import DeliveryFeedback
from bridge.store.sqlite import Store

ALICE = "C0ALICE00"
PARENT_TS = "1700000000.000100"  # alice's conversation thread
ECHO_TS = "1700000050.000300"  # the echo of a /sip text, posted in that thread
REPLY_TS = "1700000100.000200"  # a person's reply in that thread
USER = "U0HUMAN01"
RESPONSE_URL = "https://hooks.slack.com/commands/T0/1/abc"
QUEUED, SENT, FAILED = "hourglass_flowing_sand", "white_check_mark", "x"
REFUSED = AmiActionFailed("MessageSend", "Endpoint not found")
REFUSED_REASON = "Asterisk refused it (Endpoint not found); the phone may not exist in Asterisk"


class SlackView:
    """The Slack side of `Reactions`: which reactions each message carries, the thread notes.

    Like Slack, adding a reaction a message has, or removing one it lacks, changes nothing."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.reactions: dict[tuple[str, str], set[str]] = {}
        self.notes: list[tuple[str, str, str]] = []  # (channel, thread_ts, text)
        self.buttons: list[list[str]] = []  # the buttons under each note, in order
        self._delay = delay  # each call's round trip, to let concurrent callers interleave

    async def react(self, channel: str, ts: str, name: str, *, remove: bool = False) -> None:
        await asyncio.sleep(self._delay)
        shown = self.reactions.setdefault((channel, ts), set())
        if remove:
            shown.discard(name)
        else:
            shown.add(name)

    async def note_in_thread(self, channel: str, thread_ts: str, text: str,
                             blocks: list[dict[str, Any]] | None = None) -> bool:
        await asyncio.sleep(self._delay)
        self.notes.append((channel, thread_ts, text))
        buttons = [e for b in blocks or [] if b.get("type") == "actions" for e in b["elements"]]
        self.buttons.append([e["text"]["text"] for e in buttons])
        return True

    def on(self, channel: str, ts: str) -> set[str]:
        return self.reactions.get((channel, ts), set())


@dataclass
class Told:
    """The `Teller`: what each user was told (response_url, else the fallback)."""

    told: list[tuple[str, str | None, str]] = field(default_factory=list)  # user, url, text
    reachable: bool = True
    hold: asyncio.Event | None = None  # while set-up and not set, telling hangs
    telling: int = 0  # calls started
    answered: int = 0  # calls returned

    async def tell(self, *, user: str, channel: str, response_url: str | None,
                   created_at: float, text: str) -> bool:
        self.telling += 1
        try:
            if self.hold is not None:
                await self.hold.wait()
            if not self.reachable:
                return False
            self.told.append((user, response_url, text))
            return True
        finally:
            self.answered += 1


@dataclass
class Ami:
    ready: bool = True

    def ready_for(self, pbx: str) -> bool:
        return self.ready


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "store.sqlite3")
    yield opened
    await opened.close()


@pytest.fixture
def view() -> SlackView:
    return SlackView()


@pytest.fixture
def teller() -> Told:
    return Told()


@pytest.fixture
def ami() -> Ami:
    return Ami()


@pytest.fixture
async def feedback(store: Store, view: SlackView, teller: Told,
                   ami: Ami) -> AsyncIterator[DeliveryFeedback]:
    running = DeliveryFeedback(store=store, reactions=view, teller=teller, ami=ami,
                               command="/sip")
    running.start()
    yield running
    await running.stop(1)


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def until_notified(store: Store, row_id: int) -> None:
    """Until the store records that the sender has heard (what a restart relies on)."""
    deadline = time.monotonic() + 2.0
    while True:
        row = await store.get_outbound(row_id)
        assert row is not None
        if row.notified:
            return
        assert time.monotonic() < deadline, "the sender was never told"
        await asyncio.sleep(0.005)


async def slash_text(store: Store, body: str = "running late") -> OutboundRow:
    """A /sip text as the Slack frontend stores it (its echo is posted later)."""
    return await store.add_outbound(slack_user=USER, slack_channel="C0RANDOM0", endpoint="alice",
                                    destination="pjsip:alice", body=body,
                                    response_url=RESPONSE_URL, segments_total=1)


async def reply_text(store: Store, source: Source = "reply") -> OutboundRow:
    """A reply in alice's thread as the Slack frontend stores it: the reply shows its state."""
    return await store.add_outbound(slack_user=USER, slack_channel=ALICE, endpoint="alice",
                                    destination="pjsip:alice", body="on my way",
                                    response_url=None, segments_total=1, source=source,
                                    feedback_ts=REPLY_TS, thread_ts=PARENT_TS)


async def finish(store: Store, row: OutboundRow, *, sent: bool = True) -> Outcome:
    """What the outbox does when Asterisk answered: record the outcome, then hand it over."""
    if sent:
        await store.finish_outbound(row.id, "sent", segments_sent=1)
        return Outcome(row=row, endpoint="alice", sent=True, segments_sent=1, reason=None)
    await store.finish_outbound(row.id, "failed", str(REFUSED))
    return Outcome(row=row, endpoint="alice", sent=False, segments_sent=0, reason=REFUSED)


SENT_TOLD = ":white_check_mark: Sent to *alice*. Asterisk accepted it for delivery."
FAILED_TOLD = f":x: Not sent to *alice*: {REFUSED_REASON}."
FAILED_NOTE = f":x: Not sent to *alice*: {REFUSED_REASON}"


async def test_an_outcome_known_before_the_echo_is_posted_is_written_in_the_echo(
        store: Store, view: SlackView, teller: Told, feedback: DeliveryFeedback) -> None:
    row = await slash_text(store)
    assert feedback.state_of(row.id) is None  # still on its way: the echo shows no state
    feedback.outcome(await finish(store, row))
    await until_notified(store, row.id)
    assert teller.told == [(USER, RESPONSE_URL, SENT_TOLD)]
    # The relay now posts the echo with this line in it...
    assert feedback.state_of(row.id) == ":white_check_mark: sent"
    await feedback.posted(row.id, ALICE, ECHO_TS, shown_final=True)
    # ...so it needs no reaction, and nothing is added to it later.
    assert view.reactions == {} and view.notes == []
    assert feedback.state_of(row.id) is None
    stored = await store.get_outbound(row.id)
    assert stored is not None and stored.feedback_done
    assert (stored.feedback_channel, stored.feedback_ts) == (ALICE, ECHO_TS)


async def test_a_failure_known_before_the_echo_is_posted_is_written_in_the_echo(
        store: Store, view: SlackView, teller: Told, feedback: DeliveryFeedback) -> None:
    row = await slash_text(store)
    feedback.outcome(await finish(store, row, sent=False))
    await until_notified(store, row.id)
    assert teller.told == [(USER, RESPONSE_URL, FAILED_TOLD)]
    assert feedback.state_of(row.id) == f":x: not sent: {REFUSED_REASON}"
    await feedback.posted(row.id, ALICE, ECHO_TS, shown_final=True)
    # No reaction (the echo says it), but the notice with the Retry button below it.
    assert view.reactions == {}
    assert [note[2] for note in view.notes] == [
        f":x: Not sent to *alice*: {REFUSED_REASON}"]


async def test_an_outcome_after_the_echo_is_posted_is_a_reaction_on_the_echo(
        store: Store, view: SlackView, teller: Told, feedback: DeliveryFeedback) -> None:
    row = await slash_text(store)
    await feedback.posted(row.id, ALICE, ECHO_TS, shown_final=False)
    assert view.on(ALICE, ECHO_TS) == set()  # Asterisk is up: no ⏳ while it is sent
    feedback.outcome(await finish(store, row))
    await until_notified(store, row.id)
    assert view.on(ALICE, ECHO_TS) == {SENT}
    assert view.notes == []
    assert teller.told == [(USER, RESPONSE_URL, SENT_TOLD)]


async def test_an_echo_posted_without_the_outcome_it_raced_gets_the_reaction(
        store: Store, view: SlackView, feedback: DeliveryFeedback) -> None:
    # The relay asked state_of (not known yet) and posted; the outcome came in between.
    row = await slash_text(store)
    feedback.outcome(await finish(store, row))
    await until_notified(store, row.id)
    await feedback.posted(row.id, ALICE, ECHO_TS, shown_final=False)
    assert view.on(ALICE, ECHO_TS) == {SENT}


async def test_a_failure_is_a_cross_and_a_note_with_the_reason_in_the_thread(
        store: Store, view: SlackView, teller: Told, feedback: DeliveryFeedback) -> None:
    await store.start_conversation(key="alice", channel=ALICE, thread_ts=PARENT_TS,
                                   endpoint="alice", now=time.time())
    row = await slash_text(store)
    await feedback.posted(row.id, ALICE, ECHO_TS, shown_final=False)
    feedback.outcome(await finish(store, row, sent=False))
    await until_notified(store, row.id)
    assert view.on(ALICE, ECHO_TS) == {FAILED}
    # The note goes in the conversation's thread, where everyone following it reads it.
    assert view.notes == [(ALICE, PARENT_TS, FAILED_NOTE)]
    assert view.buttons == [["Retry"]]  # its sender may try again from the notice
    assert teller.told == [(USER, RESPONSE_URL, FAILED_TOLD)]


async def test_a_failed_reply_is_a_cross_on_it_and_its_author_is_not_told_apart(
        store: Store, view: SlackView, teller: Told, feedback: DeliveryFeedback) -> None:
    row = await reply_text(store)
    feedback.outcome(await finish(store, row, sent=False))
    await until_notified(store, row.id)
    assert view.on(ALICE, REPLY_TS) == {FAILED}
    assert view.notes == [(ALICE, PARENT_TS, FAILED_NOTE)]
    assert teller.told == []  # the reaction and the note are the answer


async def test_a_reply_queued_while_asterisk_is_down_shows_the_hourglass_then_the_tick(
        store: Store, view: SlackView, teller: Told, ami: Ami,
        feedback: DeliveryFeedback) -> None:
    ami.ready = False
    row = await reply_text(store)
    await feedback.show_queued(ALICE, REPLY_TS)  # what the frontend does when AMI is down
    assert view.on(ALICE, REPLY_TS) == {QUEUED}
    ami.ready = True
    feedback.outcome(await finish(store, row))
    await until_notified(store, row.id)
    assert view.on(ALICE, REPLY_TS) == {SENT}
    assert teller.told == []  # a reply's author is not told through the teller
    assert view.notes == []


async def test_an_echo_posted_while_asterisk_is_down_shows_the_hourglass_then_the_tick(
        store: Store, view: SlackView, teller: Told, ami: Ami,
        feedback: DeliveryFeedback) -> None:
    ami.ready = False
    row = await slash_text(store)
    await feedback.posted(row.id, ALICE, ECHO_TS, shown_final=False)
    assert view.on(ALICE, ECHO_TS) == {QUEUED}
    ami.ready = True
    feedback.outcome(await finish(store, row))
    await until_notified(store, row.id)
    assert view.on(ALICE, ECHO_TS) == {SENT}
    assert teller.told == [(USER, RESPONSE_URL, SENT_TOLD)]


async def test_a_text_from_before_a_restart_loses_its_hourglass(
        store: Store, teller: Told) -> None:
    # The previous run showed ⏳ on the reply and stopped; the text is sent after the restart.
    row = await reply_text(store)
    view = SlackView()
    view.reactions[(ALICE, REPLY_TS)] = {QUEUED}
    restarted = DeliveryFeedback(store=store, reactions=view, teller=teller, ami=Ami(),
                                 command="/sip")
    restarted.start()
    try:
        restarted.outcome(await finish(store, row))
        await until_notified(store, row.id)
    finally:
        await restarted.stop(1)
    assert view.on(ALICE, REPLY_TS) == {SENT}


async def test_the_sender_of_a_slash_text_is_told_once(
        store: Store, view: SlackView, teller: Told, feedback: DeliveryFeedback) -> None:
    row = await slash_text(store)
    feedback.outcome(await finish(store, row))
    await until_notified(store, row.id)
    # The outbox re-reads unfinished_outbound for outcomes nobody has heard yet (also after a
    # restart): this one is no longer there, so it is not told again.
    assert [r.id for r in await store.unfinished_outbound()] == []
    assert teller.told == [(USER, RESPONSE_URL, SENT_TOLD)]


async def test_a_sender_who_could_not_be_told_is_told_at_the_next_try_and_only_then(
        store: Store, view: SlackView, teller: Told, feedback: DeliveryFeedback) -> None:
    await store.start_conversation(key="alice", channel=ALICE, thread_ts=PARENT_TS,
                                   endpoint="alice", now=time.time())
    row = await slash_text(store)
    await feedback.posted(row.id, ALICE, ECHO_TS, shown_final=False)
    teller.reachable = False  # Slack unreachable, response_url expired, ...
    outcome = await finish(store, row, sent=False)
    feedback.outcome(outcome)
    await until(lambda: teller.answered == 1)
    await asyncio.sleep(0.05)
    # Still untold: the outbox hands it over again later.
    assert [r.id for r in await store.unfinished_outbound()] == [row.id]
    teller.reachable = True
    feedback.outcome(outcome)
    await until_notified(store, row.id)
    assert teller.told == [(USER, RESPONSE_URL, FAILED_TOLD)]
    # The echo's reaction and the thread's note were shown once, not once per try.
    assert view.on(ALICE, ECHO_TS) == {FAILED}
    assert view.notes == [(ALICE, PARENT_TS, FAILED_NOTE)]


async def test_an_outcome_handed_over_again_while_it_is_being_told_is_told_once(
        store: Store, teller: Told, feedback: DeliveryFeedback) -> None:
    teller.hold = asyncio.Event()
    row = await slash_text(store)
    outcome = await finish(store, row)
    feedback.outcome(outcome)
    await until(lambda: teller.telling == 1)
    feedback.outcome(outcome)  # e.g. the outbox's re-tell loop, while Slack is slow
    await asyncio.sleep(0.05)
    teller.hold.set()
    await until_notified(store, row.id)
    await asyncio.sleep(0.05)
    assert teller.telling == 1
    assert teller.told == [(USER, RESPONSE_URL, SENT_TOLD)]


async def test_senders_told_together_are_recorded_in_one_write_and_never_told_twice(
        store: Store, teller: Told, feedback: DeliveryFeedback,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Who has heard is recorded a moment later, for everyone told meanwhile in one write;
    until then the outbox, finding such a text untold in the store, does not tell it again;
    a stop records what is waiting, so the next start tells nobody twice."""
    writes: list[tuple[int, ...]] = []
    notified = store.outbound_notified

    async def counted(*row_ids: int) -> None:
        writes.append(row_ids)
        await notified(*row_ids)

    monkeypatch.setattr(store, "outbound_notified", counted)
    rows = [await slash_text(store, f"text {i}") for i in range(5)]
    outcomes = [await finish(store, row) for row in rows]
    for outcome in outcomes:
        feedback.outcome(outcome)
    await until(lambda: len(teller.told) == 5)
    for outcome in outcomes:  # the outbox's re-tell, before the record is written
        feedback.outcome(outcome)
    for row in rows:
        await until_notified(store, row.id)
    assert writes == [tuple(row.id for row in rows)]
    assert len(teller.told) == 5
    # One more told, then a stop at once: recorded before the stop ends.
    late = await slash_text(store, "late")
    feedback.outcome(await finish(store, late))
    await until(lambda: len(teller.told) == 6)
    await feedback.stop(1)
    assert (await store.get_outbound(late.id)).notified  # type: ignore[union-attr]
    assert await store.unfinished_outbound() == []


async def test_a_refused_reply_shows_a_cross(store: Store, view: SlackView,
                                             feedback: DeliveryFeedback) -> None:
    await feedback.show_refused(ALICE, REPLY_TS)
    assert view.on(ALICE, REPLY_TS) == {FAILED}


@pytest.mark.parametrize("first", ["outcome", "echo"])
async def test_an_echo_posted_while_its_failure_is_being_shown_gets_one_note(
        store: Store, teller: Told, ami: Ami, first: str) -> None:
    # Asterisk refuses the text while the relay is posting its echo: the teller and the
    # echo's post both come to show the failure. The thread gets the note once.
    await store.start_conversation(key="alice", channel=ALICE, thread_ts=PARENT_TS,
                                   endpoint="alice", now=time.time())
    view = SlackView(delay=0.02)  # Slack's round trips, so the two overlap
    racing = DeliveryFeedback(store=store, reactions=view, teller=teller, ami=ami,
                              command="/sip")
    racing.start()
    try:
        row = await slash_text(store)
        outcome = await finish(store, row, sent=False)
        if first == "outcome":
            racing.outcome(outcome)
            await racing.posted(row.id, ALICE, ECHO_TS, shown_final=False)
        else:
            echo = asyncio.create_task(racing.posted(row.id, ALICE, ECHO_TS,
                                                     shown_final=False))
            await until(lambda: bool(view.reactions))  # its ❌ is on the way to Slack
            racing.outcome(outcome)
            await echo
        await until_notified(store, row.id)
        await asyncio.sleep(0.1)  # anything still on its way to Slack lands
    finally:
        await racing.stop(1)
    assert view.on(ALICE, ECHO_TS) == {FAILED}
    # When the echo's post shows it first, the note has the reason as stored with the row
    # (as after a restart) rather than the sender's wording; either says why.
    [(channel, thread, note)] = view.notes
    assert (channel, thread) == (ALICE, PARENT_TS)
    assert note.startswith(":x: Not sent to *alice*: ") and "Endpoint not found" in note
    assert teller.told == [(USER, RESPONSE_URL, FAILED_TOLD)]
