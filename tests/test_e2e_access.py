"""Access control end to end, real Asterisk and SIP phones: only the right people text the
right phones; every refusal sends nothing, tells the user why, and is in the audit trail."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asterisk.harness import AsteriskSandbox
from bridge_runner import BridgeProcess, EndpointSpec, ack_text, taken
from conftest import own_pbx, start_bridge
from fake_slack import FakeSlack
from sip_ua import SipPhone
from slack_view import phone_posts, shown_senders, shown_texts, wait_phone_posts

pytestmark = pytest.mark.asterisk


@pytest.fixture
async def pbx() -> AsyncIterator[tuple[AsteriskSandbox, dict[str, SipPhone]]]:
    async with own_pbx("alice", "bob", "trunk") as pbx:
        yield pbx


def access_toml(trunk_port: int) -> str:
    # Numbers +1555xxxxxxx go out through the "trunk" endpoint, to the trunk phone's UA
    # with the number as the user part (as a SIP provider would receive them).
    return f"""
[access]
default = "listed"
users = ["U0ALLOWED", "U0LIMITED"]
channels = ["C0OPS0000"]
user_rate = "3/minute"
default_country_code = "1"

[[numbers]]
name = "us-555"
match = '^\\+1555\\d{{7}}$'
destination = "pjsip:trunk/sip:{{digits}}@127.0.0.1:{trunk_port}"
channel = "C0NUMBERS"
"""


async def access_bridge(tmp: Path, slack: FakeSlack, asterisk: AsteriskSandbox,
                        phones: dict[str, SipPhone]) -> BridgeProcess:
    endpoints = [EndpointSpec("alice", "pjsip:alice", "C0ALICE00"),
                 EndpointSpec("bob", "pjsip:bob", "C0BOB0000",
                              extra={"allow_usergroups": ["S0BOBTEAM"]})]
    return await start_bridge(tmp, slack, asterisk.ami_port, endpoints=endpoints,
                              tail=access_toml(phones["trunk"].port))


async def slash(bridge: BridgeProcess, slack: FakeSlack, text: str, *, user: str,
                channel: str = "C0CHAN1") -> str:
    payload = slack.slash_command_payload(text=text, user_id=user, channel_id=channel)
    status, body = await bridge.post_signed(*slack.signed_slash_command(payload))
    assert status == 200
    return ack_text(body)


def audit(store: Path) -> list[tuple[str, str, str, str | None]]:
    with sqlite3.connect(store) as db:
        return db.execute("SELECT slack_user, recipient, result, text FROM audit"
                          " ORDER BY id").fetchall()


async def test_who_may_text_whom_is_enforced_and_audited(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    slack.usergroups["S0BOBTEAM"] = {"U0BOBFAN"}
    bridge = await access_bridge(tmp_path, slack, asterisk, phones)
    try:
        assert taken(await slash(bridge, slack, "alice listed user", user="U0ALLOWED"))
        assert taken(await slash(bridge, slack, "alice from the ops channel",
                                        user="U0NOBODY", channel="C0OPS0000"))
        refused = await slash(bridge, slack, "alice not listed", user="U0NOBODY")
        assert "Not sent" in refused and "you may not text *alice*" in refused
        # bob's own rule (a user group) replaces the default list.
        assert taken(await slash(bridge, slack, "bob team member", user="U0BOBFAN"))
        refused = await slash(bridge, slack, "bob listed but not in bob's team",
                              user="U0ALLOWED")
        assert "you may not text *bob*" in refused

        alice = await phones["alice"].wait_for_messages(2)
        [bob] = await phones["bob"].wait_for_messages(1)
        await asyncio.sleep(1)
        assert [m.body for m in alice] == ["listed user", "from the ops channel"]
        assert bob.body == "team member" and len(phones["bob"].received) == 1
        assert "audit:" in bridge.log and "result=refused" in bridge.log
    finally:
        assert await bridge.stop() == 0, bridge.log
    entries = audit(tmp_path / "bridge-store.sqlite3")
    assert ("U0NOBODY", "alice", "refused", None) in entries
    assert ("U0ALLOWED", "alice", "sent", None) in entries  # texts not kept by default


async def test_numbers_only_by_pattern_and_rate_limits(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    bridge = await access_bridge(tmp_path, slack, asterisk, phones)
    try:
        assert taken(await slash(bridge, slack, "555-123-4567 hello number",
                                        user="U0ALLOWED"))
        [message] = await phones["trunk"].wait_for_messages(1)
        assert message.body == "hello number"
        assert "sip:15551234567@" in message.to_header

        refused = await slash(bridge, slack, "+442079460000 abroad", user="U0ALLOWED")
        assert "not in the directory" in refused and "[[numbers]]" in refused

        answers = [await slash(bridge, slack, f"alice burst {i}", user="U0LIMITED")
                   for i in range(4)]
        assert all(taken(a) for a in answers[:3])
        assert "limit of 3 texts per minute" in answers[3]
        await phones["alice"].wait_for_messages(3)
        await asyncio.sleep(1)
        assert [m.body for m in phones["alice"].received] == [
            "burst 0", "burst 1", "burst 2"]
        assert len(phones["trunk"].received) == 1
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_a_hostile_sender_cannot_ping_forge_or_pick_its_channel(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    bridge = await access_bridge(tmp_path, slack, asterisk, phones)
    try:
        # bob pretends to be alice in the display name and tries to mention everyone.
        body = "<!channel> urgent: <https://evil.example|bank login> from <@U0CEO> *really*"
        await phones["bob"].send_message(body, display_name='alice <!here> "C0ALICE00"')
        [post] = await wait_phone_posts(slack, 1)
        assert post["channel"] == "C0BOB0000"
        assert shown_texts([post]) == [body]  # plain_text: shown literally, no links/pings
        [sender] = shown_senders([post])
        assert sender.startswith(":iphone: *bob*")
        raw_context = post["blocks"][0]["elements"][0]["text"]
        assert "<!here>" not in raw_context and "&lt;!here&gt;" in raw_context
        assert "<!channel>" not in post["text"] and "<https://" not in post["text"]
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_long_texts_are_capped_and_their_parts_count_against_the_phone(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    bridge = await start_bridge(
        tmp_path, slack, asterisk.ami_port,
        endpoints=[EndpointSpec("alice", "pjsip:alice", "C0ALICE00")],
        delivery={"max_parts": 4}, tail='[access]\nendpoint_rate = "5/minute"\n')
    try:
        refused = await slash(bridge, slack, "alice " + "x" * 40_000, user="U0ANY")
        assert "Not sent" in refused and "53 messages" in refused and "max_parts" in refused
        three_parts = "y" * 1513  # 756 + 756 + 1 bytes
        assert taken(await slash(bridge, slack, f"alice {three_parts}", user="U0ANY"))
        # 3 parts sent, 3 more would be 6 messages to alice within the minute: over 5.
        again = await slash(bridge, slack, f"alice {three_parts}", user="U0ANY")
        assert "limit of 5 texts per minute" in again and "3 parts" in again
        assert taken(await slash(bridge, slack, "alice one more", user="U0ANY"))
        await phones["alice"].wait_for_messages(4)
        await asyncio.sleep(1)
        assert [len(m.body) for m in phones["alice"].received] == [756, 756, 1, 8]
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_a_number_a_trunk_carries_is_one_conversation_and_replies_go_back_to_it(
        tmp_path: Path, slack: FakeSlack) -> None:
    # The trunk is an Asterisk endpoint outside the directory, identified by its address; a
    # [[numbers]] pattern sends +1555... through it. A text it carries from +15551234567 is
    # the conversation with that number, in the pattern's channel, and a reply reaches it.
    async with own_pbx("alice", "trunk", phone_options={
            "trunk": {"identify_by": "ip", "host": "127.0.0.4"},
            "alice": {"identify_by": "ip", "host": "127.0.0.5"}}) as (asterisk, phones):
        tail = f"""
[access]
default_country_code = "1"

[[numbers]]
name = "us-555"
match = '^\\+1555\\d{{7}}$'
destination = "pjsip:trunk/sip:{{digits}}@127.0.0.4:{phones['trunk'].port}"
channel = "C0NUMBERS"
"""
        bridge = await start_bridge(
            tmp_path, slack, asterisk.ami_port,
            endpoints=[EndpointSpec("alice", "pjsip:alice", "C0ALICE00")], tail=tail)
        try:
            assert await phones["trunk"].send_message("hi from a mobile",
                                                      from_user="+15551234567") == 202
            [post] = await wait_phone_posts(slack, 1)
            assert post["channel"] == "C0NUMBERS"
            [sender] = shown_senders([post])
            assert sender.startswith(":iphone: *+15551234567*"), sender
            payload = slack.message_event_payload(text="we got it", user_id="U0HUMAN1",
                                                  channel_id="C0NUMBERS",
                                                  thread_ts=post["ts"], escaped=True)
            assert (await bridge.post_signed(*slack.signed_event(payload)))[0] == 200
            [message] = await phones["trunk"].wait_for_messages(1)
            assert message.body == "we got it"
            assert "sip:15551234567@" in message.to_header
            # alice naming a number in From is only a phone's claim: her own conversation.
            assert await phones["alice"].send_message("me again",
                                                      from_user="+15551234567") == 202
            await wait_phone_posts(slack, 2)
            assert phone_posts(slack.posts)[1]["channel"] == "C0ALICE00"
        finally:
            assert await bridge.stop() == 0, bridge.log
