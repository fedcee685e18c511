"""What the bridge writes to AMI for any text, byte for byte (property-based, hypothesis).

The real `AmiLink` (and, for a few texts, the whole `Outbox` with a store file) talks to a
fake AMI server that records the raw bytes and parses them the way Asterisk does. For any
text a Slack user could type, the bridge either refuses it with a reason (empty, NUL, lone
surrogates) and writes nothing, or writes exactly one `MessageSend` per segment, every line
within Asterisk's line limit, no CR or LF except the CRLF line ends, and the segments'
`Base64Body` decode back, concatenated, to the text exactly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_ami import FakeAmi
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.asterisk.ami import AmiLink
from bridge.core.directory import Endpoint
from bridge.core.errors import TextRejected
from bridge.core.model import Outcome
from bridge.core.segments import MAX_SEGMENT_BYTES, segment_body
from bridge.delivery.outbound import OutboundText, Outbox, check_text
from bridge.settings.config import AmiSettings, Secret
from bridge.store.sqlite import Store

AMI_LINE_LIMIT = 1022  # characters per AMI line, header name included (measured ~1,022)
DESTINATION = "pjsip:alice"
FROM = '"Slack" <sip:slack@pbx.example.com>'
SEND_KEYS = {"Action", "ActionID", "Destination", "Base64Body", "From"}

INJECTION = ("\r\n\r\nAction: Originate\r\nChannel: PJSIP/alice\r\nApplication: System\r\n"
             "Data: touch /tmp/pwned\r\nActionID: evil\r\n\r\n")
HOSTILE = [
    "\r", "\n", "\r\n", "\n\n", "\r\r", INJECTION, "Action: Originate", "ActionID: 1", ": ",
    "\x00", "\x01", "\x08", "\t", "\x0b", "\x0c", "\x1b[31m", "\x7f", "\x85", "\u2028", "\u2029",
    "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u202e", "\u2066", "\ufeff", "\ufffd",
    "e\u0301", "a\u0308\u0301\u0323", "\U0001f469\U0001f3fd\u200d\U0001f4bb", "\U0001f1e8\U0001f1ed",
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", "\u2764\ufe0f",
    "\ud800", "\udfff", "\udbff\udc00", " ", "\u3000", "é", "€", "𝄞", "=", "+/", "%0d%0a",
]
texts = st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=8)), max_size=60).map(
        "".join),
    st.text(min_size=700, max_size=3000),
    st.lists(st.sampled_from(HOSTILE), min_size=200, max_size=1200).map("".join),
)


def ami_settings(port: int) -> AmiSettings:
    return AmiSettings(host="127.0.0.1", port=port, username="slackbridge",
                       secret=Secret("fake-ami-secret"), from_=FROM, action_timeout=5,
                       connect_timeout=5)


@pytest.fixture(scope="module")
async def fake_ami() -> AsyncIterator[FakeAmi]:
    server = FakeAmi()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def link(fake_ami: FakeAmi) -> AsyncIterator[AmiLink]:
    ami = AmiLink(ami_settings(fake_ami.port), on_text=lambda _text: None)
    await ami.start()
    assert await ami.wait_ready(5), ami.last_error
    yield ami
    await ami.stop()


def refusal_expected(text: str) -> str | None:
    """The reason the bridge must refuse `text`, or None when it must send it."""
    if not text.strip():
        return "no text"
    if "\0" in text:
        return "NUL"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return "invalid characters"
    return None


def check_wire(fake: FakeAmi, text: str) -> None:
    """The bytes on the wire carry `text` as exactly its segments and nothing else."""
    raw = bytes(fake.raw)
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    assert raw.endswith(b"\r\n\r\n")
    for line in raw.split(b"\r\n"):
        assert len(line) <= AMI_LINE_LIMIT, f"AMI line of {len(line)} bytes: {line[:60]!r}"
        assert line.isascii()
    others = [dict(a)["Action"] for a in fake.actions
              if dict(a).get("Action", "").lower() not in ("messagesend", "ping")]
    assert others == []
    sends = fake.actions_named("MessageSend")
    segments = segment_body(text)
    assert len(sends) == len(segments)
    for action, raw_action in zip(sends, [a for a in fake.actions
                                          if dict(a).get("Action") == "MessageSend"],
                                  strict=True):
        assert {key for key, _ in raw_action} == SEND_KEYS  # each header once, none injected
        assert len(raw_action) == len(SEND_KEYS)
        assert action["Destination"] == DESTINATION and action["From"] == FROM
    bodies = [base64.b64decode(a["Base64Body"], validate=True) for a in sends]
    assert all(len(body) <= MAX_SEGMENT_BYTES for body in bodies)
    assert b"".join(bodies).decode("utf-8") == text
    assert [body.decode("utf-8") for body in bodies] == segments


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=texts)
@example(text="x" * 40_000)
@example(text="é🐟 " * 10_000)
@example(text=INJECTION)
@example(text="hello" + INJECTION + "world")
@example(text="a\0b")
@example(text="\ud83d")  # half of an emoji
@example(text="\u200e\u200f\u202eabc\u202c")
@example(text="\r\n")
@example(text="\x00")
async def test_any_text_is_one_messagesend_per_segment_and_decodes_exactly(
        link: AmiLink, fake_ami: FakeAmi, text: str) -> None:
    fake_ami.clear()
    expected = refusal_expected(text)
    try:
        check_text(text)
    except TextRejected as exc:
        assert expected is not None and expected in str(exc), (text, str(exc))
        assert fake_ami.actions_named("MessageSend") == []
        return
    assert expected is None, f"{text!r} should have been refused ({expected})"
    for segment in segment_body(text):
        await link.message_send(destination=DESTINATION, body=segment, from_=FROM)
    check_wire(fake_ami, text)


# -- the whole Outbox: store file, worker, segments, outcome ------------------------------

FULL_PATH_TEXTS = [
    "Fish & chips <3 at 5? 🐟",
    INJECTION,
    "line one\r\nline two\rline three\nline four\n\n\nAction: Originate",
    "\x01\x02\x1b[2J\x7f\x85\u2028\u2029 control characters",
    "\u200b\u200d\u200e\u200f\u202e reversed \u202c\ufeff",
    "e\u0301" * 400 + "👩🏽‍💻" * 100 + "🏴󠁧󠁢󠁳󠁣󠁴󠁿" * 50,
    ("The quick brown fox 🦊 jumps over the lazy dog. " * 900)[:40_000],
]


ALICE = Endpoint("alice", DESTINATION, "C0ALICE00")


@pytest.fixture
async def outbox(tmp_path: Path, link: AmiLink) -> AsyncIterator[tuple[Outbox, list[Outcome]]]:
    store = await Store.open(tmp_path / "store.sqlite3")
    outcomes: list[Outcome] = []

    class Feedback:
        """Records each text's outcome once (the outbox tells again until someone records
        that the sender heard, which the real feedback does)."""

        def outcome(self, outcome: Outcome) -> None:
            if all(told.row.id != outcome.row.id for told in outcomes):
                outcomes.append(outcome)

    box = Outbox(store=store, sender=link, feedback=Feedback(), from_=FROM, max_wait=60)
    worker = asyncio.create_task(box.run())
    yield box, outcomes
    await box.stop(5)
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker
    await store.close()


@pytest.mark.parametrize("text", FULL_PATH_TEXTS, ids=range(len(FULL_PATH_TEXTS)))
async def test_texts_through_the_outbox_reach_ami_exactly(
        outbox: tuple[Outbox, list[Outcome]], fake_ami: FakeAmi, text: str) -> None:
    box, outcomes = outbox
    fake_ami.clear()
    await box.accept(OutboundText(recipient="alice", text=text, slack_user="U0USER1",
                                  slack_channel="C0CHAN1"), ALICE)
    async with asyncio.timeout(20):
        while not outcomes:
            await asyncio.sleep(0.02)
    [outcome] = outcomes
    assert outcome.sent and outcome.segments_sent == len(segment_body(text))
    check_wire(fake_ami, text)


@pytest.mark.parametrize("text,reason", [
    ("a\0b", "NUL"), ("\0", "NUL"), ("hi \ud83d", "invalid characters"), (" \r\n\t ", "no text"),
])
async def test_refused_texts_are_not_stored_or_sent(
        outbox: tuple[Outbox, list[Outcome]], fake_ami: FakeAmi, text: str,
        reason: str) -> None:
    box, outcomes = outbox
    fake_ami.clear()
    with pytest.raises(TextRejected, match=reason):
        await box.accept(OutboundText(recipient="alice", text=text, slack_user="U0USER1",
                                      slack_channel="C0CHAN1"), ALICE)
    await asyncio.sleep(0.3)
    assert outcomes == [] and fake_ami.actions_named("MessageSend") == []
