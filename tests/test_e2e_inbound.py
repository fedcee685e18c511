"""Phone to Slack, end to end: SIP MESSAGE from a real UA through the real Asterisk and the
running bridge, to the fake Slack. Checks the channel and the exact text a reader sees."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bridge_runner import BridgeProcess
from conftest import ALICE_CHANNEL, BOB_CHANNEL, DEFAULT_CHANNEL
from fake_slack import FakeSlack
from sip_ua import SipPhone
from slack_view import shown_senders, shown_texts, wait_phone_posts

from bridge.slack.text import unescape

pytestmark = pytest.mark.asterisk


def shown_body(post: dict[str, Any]) -> str:
    [text] = shown_texts([post])
    return text


def shown_sender(post: dict[str, Any]) -> str:
    [sender] = shown_senders([post])
    return sender


async def test_text_from_a_phone_lands_in_its_channel_exactly(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    body = "Grüße from the lobby 👋🏽\nline two: <b>bold?</b> & <!channel> *not bold*\n\tend"
    status = await phones["alice"].send_message(body, display_name="Alice, Front Desk")
    assert status == 202
    [post] = await wait_phone_posts(slack, 1)
    assert post["channel"] == ALICE_CHANNEL
    assert shown_body(post) == body
    assert "*alice*" in shown_sender(post) and "Alice, Front Desk" in shown_sender(post)
    # The notification fallback cannot mention anyone and reads as the text once unescaped.
    assert "<!channel>" not in post["text"]
    assert unescape(post["text"]).endswith(body)


async def test_each_phone_goes_to_its_own_channel_unknown_to_default(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    await phones["bob"].send_message("from bob")
    await phones["carol"].send_message("from carol, not in the directory")
    posts = await wait_phone_posts(slack, 2)
    by_body = {shown_body(p): p for p in posts}
    assert by_body["from bob"]["channel"] == BOB_CHANNEL
    carol = by_body["from carol, not in the directory"]
    assert carol["channel"] == DEFAULT_CHANNEL
    assert "not in the directory" in shown_sender(carol)


async def test_oversize_text_is_reported_not_posted_empty(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    await phones["alice"].send_message("x" * 1500)
    [post] = await wait_phone_posts(slack, 1)
    assert post["channel"] == ALICE_CHANNEL
    assert "1,500 bytes" in shown_body(post) and "lost" in shown_body(post)


async def test_largest_text_asterisk_relays_arrives_whole(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    body = ("é" * 511) + "!"  # 1,023 bytes
    assert len(body.encode()) == 1023
    await phones["alice"].send_message(body)
    [post] = await wait_phone_posts(slack, 1)
    assert shown_body(post) == body


async def test_texts_are_posted_in_the_order_sent(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    for i in range(10):
        await phones["alice"].send_message(f"message {i}")
    deadline = asyncio.get_running_loop().time() + 10
    while len(shown_texts(slack.posts)) < 10 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert shown_texts(slack.posts) == [f"message {i}" for i in range(10)]
