"""Who sent a text, end to end: the endpoint real Asterisk identified and authenticated, never
the From header. Phones that lie in From (identify_by = auth_username with a password, and
identify_by = ip from their own address), a phone outside the directory claiming a directory
alias, and a phone Asterisk runs through the shared (unidentified) context. Each checks the
channel, the sender Slack shows, and which phone a reply in the thread reaches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bridge_runner import BridgeProcess, EndpointSpec
from conftest import DEFAULT_CHANNEL, own_pbx, start_bridge
from fake_slack import FakeSlack
from sip_ua import SipPhone
from slack_view import shown_senders, shown_texts, wait_phone_posts

from bridge.asterisk.snippets import INBOUND_CONTEXT

pytestmark = pytest.mark.asterisk

ALICE = "C0ALICE00"
BOB = "C0BOB0000"


def directory() -> list[EndpointSpec]:
    return [EndpointSpec("alice", "pjsip:alice", ALICE),
            EndpointSpec("bob", "pjsip:bob", BOB, aliases=("front-desk",))]


async def reply_in_thread(bridge: BridgeProcess, slack: FakeSlack, channel: str,
                          thread_ts: str, text: str) -> None:
    payload = slack.message_event_payload(text=text, user_id="U0HUMAN1", channel_id=channel,
                                          thread_ts=thread_ts, escaped=True)
    status, _ = await bridge.post_signed(*slack.signed_event(payload))
    assert status == 200


async def nothing_arrives(phone: SipPhone, seconds: float = 1.5) -> None:
    await asyncio.sleep(seconds)
    assert phone.received == [], [m.body for m in phone.received]


@pytest.mark.parametrize("identify_by", ["auth_username", "ip"])
async def test_a_phone_that_writes_another_phone_in_from_is_still_itself(
        tmp_path: Path, slack: FakeSlack, identify_by: str) -> None:
    # auth_username: alice signs in with her own password; ip: a desk phone on its own address.
    alice = ({"identify_by": "auth_username", "password": "alice-pw-7d2"}
             if identify_by == "auth_username"
             else {"identify_by": "ip", "host": "127.0.0.2"})
    async with own_pbx("alice", "bob", phone_options={"alice": alice}) as (asterisk, phones):
        bridge = await start_bridge(tmp_path, slack, asterisk.ami_port, endpoints=directory())
        try:
            status = await phones["alice"].send_message("it is really alice", from_user="BOB",
                                                        display_name="bob")
            assert status == 202  # Asterisk accepts it: the From is hers to write
            [post] = await wait_phone_posts(slack, 1)
            assert post["channel"] == ALICE
            [sender] = shown_senders([post])
            assert sender.startswith(":iphone: *alice* (calls itself “bob”)"), sender
            assert "*bob*" not in sender
            # verbatim: Slack does not auto-link or parse the names in that line
            assert post["blocks"][0]["elements"][0]["verbatim"] is True
            assert shown_texts([post]) == ["it is really alice"]

            await reply_in_thread(bridge, slack, ALICE, post["ts"], "answer for the sender")
            [got] = await phones["alice"].wait_for_messages(1)
            assert got.body == "answer for the sender"
            await nothing_arrives(phones["bob"])
        finally:
            assert await bridge.stop() == 0, bridge.log


async def test_a_phone_outside_the_directory_claiming_an_alias_gets_the_reply_itself(
        tmp_path: Path, slack: FakeSlack) -> None:
    # carol is an Asterisk endpoint (identified by its address) that the directory lacks.
    async with own_pbx("bob", "carol", phone_options={
            "carol": {"identify_by": "ip", "host": "127.0.0.3"}}) as (asterisk, phones):
        bridge = await start_bridge(tmp_path, slack, asterisk.ami_port, endpoints=directory())
        try:
            assert await phones["carol"].send_message("hello from the lobby",
                                                      from_user="front-desk") == 202
            [post] = await wait_phone_posts(slack, 1)
            assert post["channel"] == DEFAULT_CHANNEL
            [sender] = shown_senders([post])
            assert sender.startswith(":iphone: *carol*") and "not in the directory" in sender
            assert "From: sip:front-desk@" in sender  # shown, as what the phone claimed

            await reply_in_thread(bridge, slack, DEFAULT_CHANNEL, post["ts"], "we are coming")
            [got] = await phones["carol"].wait_for_messages(1)
            assert got.body == "we are coming"
            await nothing_arrives(phones["bob"])
        finally:
            assert await bridge.stop() == 0, bridge.log


async def test_a_text_nobody_identified_is_marked_and_cannot_be_replied_to(
        tmp_path: Path, slack: FakeSlack) -> None:
    # mallory's endpoint runs the shared context: Asterisk knows who it is, the bridge does not.
    async with own_pbx("bob", "mallory", phone_options={
            "mallory": {"message_context": INBOUND_CONTEXT}}) as (asterisk, phones):
        bridge = await start_bridge(tmp_path, slack, asterisk.ami_port, endpoints=directory())
        try:
            assert await phones["mallory"].send_message("send the code to me",
                                                        display_name="Bob") == 202
            [post] = await wait_phone_posts(slack, 1)
            assert post["channel"] == DEFAULT_CHANNEL  # not bob's channel
            [sender] = shown_senders([post])
            assert sender.startswith(":iphone: *unverified: Bob*"), sender
            assert "*bob*" not in sender
            assert "not identified by Asterisk" in sender

            await reply_in_thread(bridge, slack, DEFAULT_CHANNEL, post["ts"], "here it is")
            deadline = asyncio.get_running_loop().time() + 10
            while not slack.calls_of("chat.postEphemeral"):
                assert asyncio.get_running_loop().time() < deadline, "no refusal shown"
                await asyncio.sleep(0.05)
            [refusal] = slack.calls_of("chat.postEphemeral")
            assert "cannot tell which phone sent this text" in refusal["text"]
            await nothing_arrives(phones["bob"])
            assert phones["mallory"].received == []
        finally:
            assert await bridge.stop() == 0, bridge.log


async def test_one_phone_cannot_suppress_another_by_reusing_its_call_id(
        tmp_path: Path, slack: FakeSlack) -> None:
    async with own_pbx("alice", "bob") as (asterisk, phones):
        bridge = await start_bridge(tmp_path, slack, asterisk.ami_port, endpoints=directory())
        try:
            await phones["bob"].send_message("bob's own text", call_id="shared-1@x", cseq=7)
            await phones["alice"].send_message("alice, same Call-ID", call_id="shared-1@x",
                                               cseq=7)
            posts = await wait_phone_posts(slack, 2)
            by_channel = {p["channel"]: shown_texts([p]) for p in posts}
            assert by_channel == {BOB: ["bob's own text"], ALICE: ["alice, same Call-ID"]}
        finally:
            assert await bridge.stop() == 0, bridge.log
        # While the bridge is away, the same again: both wait in Asterisk's spool, neither
        # overwrites the other's entry, and both arrive when it is back.
        slack.reset()
        await phones["bob"].send_message("bob while away", call_id="shared-2@x", cseq=1)
        await phones["alice"].send_message("alice while away", call_id="shared-2@x", cseq=1)
        bridge = await start_bridge(tmp_path, slack, asterisk.ami_port, endpoints=directory())
        try:
            posts = await wait_phone_posts(slack, 2)
            by_channel = {p["channel"]: shown_texts([p]) for p in posts}
            assert by_channel == {BOB: ["bob while away"], ALICE: ["alice while away"]}
        finally:
            assert await bridge.stop() == 0, bridge.log
