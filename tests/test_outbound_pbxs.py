"""The outbox with several PBXs: each text goes out through its endpoint's PBX, one lane per
PBX, so a PBX that is down holds up only its own phones' texts; a text whose PBX left the
config fails with the reason. Fakes the PBXs' links (what Asterisk accepted), the store is
the real one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bridge.core.directory import Endpoint
from bridge.core.model import Outcome
from bridge.delivery.outbound import OutboundText, Outbox, Route
from bridge.store.sqlite import Store


class Link:
    """A PBX's AMI link as the outbox sees it: up or down, and what Asterisk accepted."""

    def __init__(self, *, ready: bool) -> None:
        self._up = asyncio.Event()
        if ready:
            self._up.set()
        self.sent: list[tuple[str, str, str | None]] = []

    @property
    def ready(self) -> bool:
        return self._up.is_set()

    def come_back(self) -> None:
        self._up.set()

    async def wait_ready(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), timeout)
        return self.ready

    async def message_send(self, *, destination: str, body: str, from_: str | None) -> None:
        self.sent.append((destination, body, from_))


class Feedback:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def outcome(self, outcome: Outcome) -> None:
        if all(told.row.id != outcome.row.id for told in self.outcomes):
            self.outcomes.append(outcome)


HQ_ALICE = Endpoint(name="alice-hq", destination="pjsip:alice", channel="C1", pbx="hq")
BRANCH_ALICE = Endpoint(name="alice-branch", destination="pjsip:alice", channel="C2",
                        pbx="branch")


def request(text: str) -> OutboundText:
    return OutboundText(recipient="x", text=text, slack_user="U0USER1", slack_channel="C9")


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
        await box.stop(2)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


async def until(condition: Callable[[], object], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_pbx_that_is_down_holds_up_only_its_own_texts(store: Store) -> None:
    hq, branch = Link(ready=True), Link(ready=False)
    feedback = Feedback()
    box = Outbox(store=store, feedback=feedback, max_wait=60,
                 routes={"hq": Route(hq, "sip:slack@hq"), "branch": Route(branch, None)})
    async with running(box):
        await box.accept(request("to branch first"), BRANCH_ALICE)
        await box.accept(request("to hq after it"), HQ_ALICE)
        await until(lambda: hq.sent)
        assert hq.sent == [("pjsip:alice", "to hq after it", "sip:slack@hq")]
        assert branch.sent == [] and box.waiting == 1
        branch.come_back()
        await until(lambda: branch.sent)
        assert branch.sent == [("pjsip:alice", "to branch first", None)]
        await until(lambda: len(feedback.outcomes) == 2)
        assert all(o.sent for o in feedback.outcomes)
    assert len(hq.sent) == 1 and len(branch.sent) == 1


async def test_a_text_whose_pbx_left_the_config_fails_with_the_reason(store: Store) -> None:
    row = await store.add_outbound(slack_user="U0USER1", slack_channel="C9",
                                   endpoint="alice-old", destination="pjsip:alice",
                                   body="to a PBX since removed", response_url=None,
                                   segments_total=1, pbx="old")
    hq, branch = Link(ready=True), Link(ready=True)
    feedback = Feedback()
    box = Outbox(store=store, feedback=feedback, max_wait=60,
                 routes={"hq": Route(hq), "branch": Route(branch)})
    async with running(box):
        await until(lambda: feedback.outcomes)
    [outcome] = feedback.outcomes
    assert outcome.row.id == row.id and not outcome.sent
    assert "PBX 'old' is no longer in the bridge's config" in str(outcome.reason)
    assert hq.sent == [] == branch.sent
    stored = await store.get_outbound(row.id)
    assert stored is not None and stored.state == "failed"


async def test_with_one_pbx_every_stored_text_is_its_own(store: Store) -> None:
    """Texts stored before the PBX was renamed (or before PBXs had names) still go out."""
    await store.add_outbound(slack_user="U0USER1", slack_channel="C9", endpoint="alice",
                             destination="pjsip:alice", body="from before", response_url=None,
                             segments_total=1)
    hq = Link(ready=True)
    async with running(Outbox(store=store, feedback=Feedback(), max_wait=60,
                              routes={"hq": Route(hq)})):
        await until(lambda: hq.sent)
    assert hq.sent == [("pjsip:alice", "from before", None)]
