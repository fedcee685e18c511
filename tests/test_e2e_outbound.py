"""Slack to phone, end to end: signed slash commands over HTTP to the running bridge, real
Asterisk, real SIP phones. Each test checks what the Slack user and the phone would see."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import pytest
from bridge_runner import BridgeProcess, ack_text
from conftest import SIGNING_SECRET
from fake_slack import FakeSlack
from sip_ua import SipPhone

pytestmark = pytest.mark.asterisk


async def slash(bridge: BridgeProcess, slack: FakeSlack, text: str,
                **signing: object) -> tuple[int, str]:
    payload = slack.slash_command_payload(text=text)
    body, headers = slack.signed_slash_command(payload, **signing)  # type: ignore[arg-type]
    return await bridge.post_signed(body, headers)


async def assert_nothing_sent(phones: dict[str, SipPhone], wait: float = 1.0) -> None:
    await asyncio.sleep(wait)
    assert {n: p.received for n, p in phones.items() if p.received} == {}


async def test_text_reaches_the_phone_and_the_user_is_told(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    started = time.monotonic()
    status, body = await slash(bridge, slack, "alice Fish & chips <3 at 5? 🐟")
    acked = time.monotonic() - started
    assert status == 200
    # Asterisk answered within the second the answer waits: the answer is the outcome, one
    # message instead of "Sending…" and then "Sent" through the response_url.
    assert "Sent to *alice*" in ack_text(body)
    assert acked < 3.0, f"ack took {acked:.2f} s, over Slack's 3 s limit"

    [message] = await phones["alice"].wait_for_messages(1)
    assert message.body == "Fish & chips <3 at 5? 🐟"
    assert message.content_type.startswith("text/plain")
    assert phones["bob"].received == []
    await asyncio.sleep(1.0)
    assert slack.responses == []  # told once, in the answer


async def test_a_replayed_signed_command_sends_once(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    body, headers = slack.signed_slash_command(slack.slash_command_payload(
        text="alice pay the invoice"))
    first = await bridge.post_signed(body, headers)
    replayed = await bridge.post_signed(body, headers)  # the same bytes, within 5 minutes
    assert first[0] == 200 and "Sent to *alice*" in ack_text(first[1])
    assert replayed[0] == 200 and "Sent" not in replayed[1]
    [message] = await phones["alice"].wait_for_messages(1)
    assert message.body == "pay the invoice"
    await asyncio.sleep(1.0)
    assert [m.body for m in phones["alice"].received] == ["pay the invoice"]


async def test_long_multiline_text_arrives_whole_in_order(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    lines = [f"Line {i:03d}: the quick brown fox 🦊 jumps over the lazy dog ✓" for i in range(60)]
    text = "\n".join(lines)[:3000]
    assert len(text) == 3000
    status, body = await slash(bridge, slack, f"alice {text}")
    assert status == 200
    parts = int(ack_text(body).split(" in ")[1].split(" parts")[0])
    assert parts >= 4
    received = await phones["alice"].wait_for_messages(parts)
    assert len(received) == parts
    assert "".join(m.body for m in received) == text
    assert all(len(m.raw_body) <= 756 for m in received)


async def test_alias_reaches_the_right_phone(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    status, _ = await slash(bridge, slack, "FRONT-DESK are you there?")
    assert status == 200
    [message] = await phones["bob"].wait_for_messages(1)
    assert message.body == "are you there?"


async def test_unknown_recipient_is_explained_with_suggestions_and_nothing_is_sent(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    status, body = await slash(bridge, slack, "alcie hello")
    assert status == 200
    text = ack_text(body)
    assert "no phone called `alcie`" in text and "`alice`" in text
    await assert_nothing_sent(phones)


async def test_empty_text_is_refused(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    status, body = await slash(bridge, slack, "alice   ")
    assert status == 200
    assert "there is no text to send" in ack_text(body)
    await assert_nothing_sent(phones)


async def test_refused_by_asterisk_is_reported(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    status, body = await slash(bridge, slack, "ghost hello")  # no such PJSIP endpoint
    assert status == 200
    assert "Not sent" in ack_text(body) and "Asterisk refused it" in ack_text(body)
    await assert_nothing_sent(phones, wait=0.2)


async def test_help_and_list(bridge: BridgeProcess, slack: FakeSlack) -> None:
    _, body = await slash(bridge, slack, "help")
    assert "/sip <recipient> <text>" in ack_text(body)
    _, body = await slash(bridge, slack, "list")
    listing = ack_text(body)
    assert "`alice`" in listing and "front-desk" in listing and "<#C0ALICE00>" in listing


async def test_bad_or_stale_signature_gets_401_and_sends_nothing(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    status, _ = await slash(bridge, slack, "alice forged", secret="not-the-secret")
    assert status == 401
    status, _ = await slash(bridge, slack, "alice replayed", timestamp=int(time.time()) - 600)
    assert status == 401
    payload = slack.slash_command_payload(text="alice unsigned")
    body, headers = slack.signed_slash_command(payload)
    del headers["X-Slack-Signature"]
    status, _ = await bridge.post_signed(body, headers)
    assert status == 401
    await assert_nothing_sent(phones)
    assert slack.responses == []


async def test_malformed_requests_get_400_or_401_and_no_traceback(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    body, headers = slack.signed_slash_command(slack.slash_command_payload(text="alice hi"))
    status, _ = await bridge.post_signed(body, headers | {"X-Slack-Request-Timestamp": "abc"})
    assert status == 401
    # Signed exactly as Slack signs, but the body is not UTF-8.
    raw = b"text=alice+caf\xe9&command=%2Fsip&user_id=U0USER1"
    stamp = str(int(time.time()))
    signature = "v0=" + hmac.new(SIGNING_SECRET.encode(), b"v0:" + stamp.encode() + b":" + raw,
                                 hashlib.sha256).hexdigest()
    status, _ = await bridge.post_signed(raw, headers | {"X-Slack-Request-Timestamp": stamp,
                                                         "X-Slack-Signature": signature})
    assert status == 400
    await asyncio.sleep(0.5)
    assert "Traceback" not in bridge.log
    assert phones["alice"].received == []
