"""The outbox keeps a few one-segment texts in flight on a PBX's link instead of waiting for
each answer: the texts still leave in the order they were stored, a long text's segments
are never split by another text, and none is sent twice when the lane reads the store again.
The link is a fake that answers each MessageSend after a random delay (as Asterisk does under
load); the store is the real one."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bridge.core.directory import Endpoint
from bridge.core.model import OutboundRow, Outcome
from bridge.core.segments import MAX_SEGMENT_BYTES
from bridge.delivery import outbound
from bridge.delivery.outbound import OutboundText, Outbox, Route
from bridge.store.sqlite import Store

ALICE = Endpoint(name="alice", destination="pjsip:alice", channel="C1")


class SlowLink:
    """Records each MessageSend as it is written (the wire order), answers it later."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self.wire: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    @property
    def ready(self) -> bool:
        return True

    async def wait_ready(self, timeout: float) -> bool:
        return True

    async def message_send(self, *, destination: str, body: str, from_: str | None) -> None:
        self.wire.append(body)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self._random.uniform(0, 0.02))
        finally:
            self.in_flight -= 1


class Feedback:
    def __init__(self) -> None:
        self.outcomes: dict[int, Outcome] = {}

    def outcome(self, outcome: Outcome) -> None:
        self.outcomes.setdefault(outcome.row.id, outcome)

    def expect(self, row_id: int) -> None:
        pass


def request(text: str) -> OutboundText:
    return OutboundText(recipient="alice", text=text, slack_user="U0USER1", slack_channel="C9")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "store.sqlite3")
    yield opened
    await opened.close()


@contextlib.asynccontextmanager
async def running(box: Outbox) -> AsyncIterator[Outbox]:
    worker = asyncio.create_task(box.run())
    try:
        yield box
    finally:
        await box.stop(5)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_texts_in_flight_together_leave_in_order_and_once(store: Store) -> None:
    link, feedback = SlowLink(seed=1), Feedback()
    box = Outbox(store=store, feedback=feedback, max_wait=60, routes={"hq": Route(link)})
    # A long text (three segments) among short ones, stored while the lane is busy, so the
    # lane reads the store again between texts still in flight.
    long = " ".join(f"word{i:04d}" for i in range(MAX_SEGMENT_BYTES * 3 // 9))
    texts = [f"short #{i}" for i in range(60)]
    texts.insert(30, long)
    async with running(box):
        for i, text in enumerate(texts):
            await box.accept(request(text), ALICE)
            if i % 7 == 0:
                await asyncio.sleep(0.005)
        await until(lambda: len(feedback.outcomes) == len(texts))
    assert all(o.sent for o in feedback.outcomes.values())
    # Each text once, in the order stored, the long one's segments one after another.
    joined: list[str] = []
    for body in link.wire:
        if joined and joined[-1].startswith("word") and not joined[-1].endswith(
                long[-8:]):
            joined[-1] += body
        else:
            joined.append(body)
    assert joined == texts
    assert link.most_in_flight > 1  # the window was used: not one answer at a time
    for row_id in feedback.outcomes:
        row = await store.get_outbound(row_id)
        assert row is not None and row.state == "sent"


async def test_stop_waits_for_every_text_in_flight(store: Store) -> None:
    link, feedback = SlowLink(seed=2), Feedback()
    box = Outbox(store=store, feedback=feedback, max_wait=60, routes={"hq": Route(link)})
    worker = asyncio.create_task(box.run())
    for i in range(20):
        await box.accept(request(f"text #{i}"), ALICE)
    await until(lambda: link.in_flight > 1)
    await box.stop(5)
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker
    # Whatever was written to Asterisk is recorded as sent; the rest is still queued.
    assert link.in_flight == 0
    states = [row.state for row in await store.unfinished_outbound()]  # none told yet
    sent = len(link.wire)
    assert 1 < sent < 20
    assert states == ["sent"] * sent + ["queued"] * (20 - sent)


async def test_texts_sent_one_at_a_time_cost_no_read_of_the_store(store: Store) -> None:
    """Texts sent one at a time (a person typing /sip) on a bridge alone on its store: the
    lane reads the store once, at start, and takes each text as it is stored, not by reading
    the store again for it."""
    link, feedback = SlowLink(seed=3), Feedback()
    reads = 0
    unfinished = store.unfinished_outbound

    async def counted() -> list[OutboundRow]:
        nonlocal reads
        reads += 1
        return await unfinished()

    store.unfinished_outbound = counted  # type: ignore[method-assign]
    box = Outbox(store=store, feedback=feedback, max_wait=60, routes={"hq": Route(link)})
    async with running(box):
        await until(lambda: reads == 1)  # the read at start
        for i in range(10):
            await box.accept(request(f"text #{i}"), ALICE)
            await until(lambda sent=i + 1: len(feedback.outcomes) == sent)
            await asyncio.sleep(0.05)  # the lane is idle again before the next text
        assert link.wire == [f"text #{i}" for i in range(10)]
    assert reads == 1


@pytest.mark.parametrize("seed", range(5))
async def test_texts_stored_while_the_lane_reads_the_store_go_out_once_in_order(
        store: Store, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """The lane still reads the store now and then (at start, and every `_RETELL_INTERVAL`,
    here 20 ms): a text stored while a (slow) read runs is in that read or handed to the lane
    after it, or both, and goes out once, in order."""
    monkeypatch.setattr(outbound, "_RETELL_INTERVAL", 0.02)
    rng = random.Random(seed)
    link, feedback = SlowLink(seed=seed), Feedback()
    reads = 0
    unfinished = store.unfinished_outbound

    async def slow() -> list[OutboundRow]:
        nonlocal reads
        reads += 1
        await asyncio.sleep(rng.uniform(0, 0.01))
        rows = await unfinished()
        await asyncio.sleep(rng.uniform(0, 0.01))
        return rows

    store.unfinished_outbound = slow  # type: ignore[method-assign]
    box = Outbox(store=store, feedback=feedback, max_wait=60, routes={"hq": Route(link)})
    texts = [f"text #{i}" for i in range(150)]
    async with running(box):
        for text in texts:
            await box.accept(request(text), ALICE)
            await asyncio.sleep(rng.choice((0, 0, 0.001, 0.004)))
        await until(lambda: len(feedback.outcomes) == len(texts))
        await asyncio.sleep(0.1)  # a text sent twice would be on the wire now
    assert link.wire == texts
    assert reads > 5  # the reads did come between the texts
