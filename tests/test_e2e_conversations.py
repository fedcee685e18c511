"""Conversations end to end: one Slack thread per phone, replies in the thread text the
phone, delivery state on the Slack message, no echoes or doubles. Real Asterisk, real SIP,
the real bridge, message events over signed HTTP and over Socket Mode."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asterisk.harness import AsteriskSandbox
from bridge_runner import BridgeProcess, EndpointSpec
from conftest import BOB_CHANNEL, own_pbx, start_bridge
from fake_slack import BOT_ID, BOT_USER_ID, TEAM_ID, FakeSlack
from sip_ua import SipPhone
from slack_view import phone_posts, shown_echoes, shown_texts, wait_phone_posts

pytestmark = pytest.mark.asterisk

ALICE = "C0ALICE00"
CAROL = "C0CAROL00"  # carol's channel takes top-level messages (reply_mode = "channel")
DAVE = "C0DAVE000"  # read-only (reply_mode = "off")


@pytest.fixture
async def pbx() -> AsyncIterator[tuple[AsteriskSandbox, dict[str, SipPhone]]]:
    async with own_pbx("alice", "bob", "carol", "dave") as pbx:
        yield pbx


def endpoints() -> list[EndpointSpec]:
    return [EndpointSpec("alice", "pjsip:alice", ALICE),
            EndpointSpec("bob", "pjsip:bob", BOB_CHANNEL),
            EndpointSpec("carol", "pjsip:carol", CAROL, reply_mode="channel"),
            EndpointSpec("dave", "pjsip:dave", DAVE, reply_mode="off"),
            EndpointSpec("ghost", "pjsip:ghost", "C0GHOST00")]


async def conversation_bridge(tmp: Path, slack: FakeSlack, asterisk: AsteriskSandbox, *,
                              socket_mode: bool = False, **slack_extra: Any) -> BridgeProcess:
    return await start_bridge(tmp, slack, asterisk.ami_port, endpoints=endpoints(),
                              socket_mode=socket_mode, slack_extra=slack_extra)


async def reply(bridge: BridgeProcess, slack: FakeSlack, channel: str, text: str, *,
                thread_ts: str | None, user: str = "U0HUMAN1", retry_num: int | None = None,
                payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """A person's message in Slack, delivered to the bridge as Slack does (signed HTTP)."""
    payload = payload or slack.message_event_payload(
        text=text, user_id=user, channel_id=channel, thread_ts=thread_ts, escaped=True)
    status, _ = await bridge.post_signed(*slack.signed_event(payload, retry_num=retry_num))
    assert status == 200
    return payload


async def wait_reaction(slack: FakeSlack, channel: str, ts: str, name: str,
                        timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while name not in slack.reactions_on(channel, ts):
        assert loop.time() < deadline, f"no :{name}: on {ts}: {slack.reactions_on(channel, ts)}"
        await asyncio.sleep(0.05)


async def wait_echo_state(slack: FakeSlack, channel: str, echo: dict[str, Any],
                          name: str) -> str:
    """Wait until an echo shows its text's state: "inline" when printed in the echo's own
    line (the outcome was known when it was posted), else "reaction" once it has :name:."""
    if f":{name}:" in echo["blocks"][0]["elements"][0]["text"]:
        return "inline"
    await wait_reaction(slack, channel, echo["ts"], name)
    return "reaction"


async def test_a_reply_in_the_thread_texts_the_phone_and_the_answer_stays_in_the_thread(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    bridge = await conversation_bridge(tmp_path, slack, asterisk)
    try:
        await phones["alice"].send_message("Is the order ready?")
        [parent] = await wait_phone_posts(slack, 1)
        assert "thread_ts" not in parent  # the first text starts the conversation
        event = await reply(
            bridge, slack, ALICE, "Yes &amp; packed :thumbsup: ask <@U0BOSS> or see "
            "<https://shop.example/o/7|order 7>", thread_ts=parent["ts"])
        [message] = await phones["alice"].wait_for_messages(1)
        assert message.body == "Yes & packed 👍 ask @U0BOSS-name or see order 7 " \
                               "(https://shop.example/o/7)"
        await wait_reaction(slack, ALICE, event["event"]["ts"], "white_check_mark")

        await phones["alice"].send_message("Great, on my way")
        await wait_phone_posts(slack, 2)
        second = phone_posts(slack.posts)[1]
        assert second["thread_ts"] == parent["ts"]
        assert shown_texts([second]) == ["Great, on my way"]
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_a_reply_that_comes_before_slack_answers_the_post_still_texts_the_phone(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    """Slack shows a post to the channel before the bridge hears its ts back; a quick reply
    (a bot's, or one sent to another replica) must not be taken for a stranger's thread."""
    asterisk, phones = pbx
    bridge = await conversation_bridge(tmp_path, slack, asterisk)
    try:
        slack.fail_next("chat.postMessage", status=200, processed=True, delay=0.6)
        await phones["alice"].send_message("Is the order ready?")
        [parent] = await wait_phone_posts(slack, 1)
        await reply(bridge, slack, ALICE, "yes, at the desk", thread_ts=parent["ts"])
        [message] = await phones["alice"].wait_for_messages(1)
        assert message.body == "yes, at the desk"
        # A reply in a thread the bridge never started is still ignored (after the wait).
        await reply(bridge, slack, ALICE, "not for a phone", thread_ts=f"{time.time():.6f}")
        await asyncio.sleep(1.0)
        assert [m.body for m in phones["alice"].received] == ["yes, at the desk"]
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_the_thread_survives_a_restart_and_sip_texts_appear_in_it(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    bridge = await conversation_bridge(tmp_path, slack, asterisk)
    await phones["bob"].send_message("first, before the restart")
    [parent] = await wait_phone_posts(slack, 1)
    assert await bridge.stop() == 0
    bridge = await conversation_bridge(tmp_path, slack, asterisk)
    try:
        await phones["bob"].send_message("second, after the restart")
        await wait_phone_posts(slack, 2)
        assert phone_posts(slack.posts)[1]["thread_ts"] == parent["ts"]

        body, headers = slack.signed_slash_command(slack.slash_command_payload(
            text="bob Coming at 5", user_name="alice.smith"))
        assert (await bridge.post_signed(body, headers))[0] == 200
        await phones["bob"].wait_for_messages(1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not shown_echoes(slack.posts):
            assert loop.time() < deadline, slack.posts
            await asyncio.sleep(0.05)
        [echo] = [p for p in slack.posts if shown_echoes([p])]
        assert shown_echoes([echo]) == ["Coming at 5"]
        assert echo["thread_ts"] == parent["ts"] and "alice.smith" in str(echo["blocks"][0])
        await wait_echo_state(slack, BOB_CHANNEL, echo, "white_check_mark")
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_retries_bots_edits_deletions_and_own_posts_send_nothing(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    bridge = await conversation_bridge(tmp_path, slack, asterisk)
    try:
        await phones["alice"].send_message("hello?")
        [parent] = await wait_phone_posts(slack, 1)
        event = await reply(bridge, slack, ALICE, "only once", thread_ts=parent["ts"])
        await reply(bridge, slack, ALICE, "", thread_ts=None, payload=event, retry_num=1)
        await reply(bridge, slack, ALICE, "", thread_ts=None, payload=event, retry_num=2)

        def in_thread(**extra: Any) -> dict[str, Any]:
            payload = slack.message_event_payload(text="x", channel_id=ALICE,
                                                  thread_ts=parent["ts"])
            payload["event"].update(extra)
            return payload

        await reply(bridge, slack, ALICE, "", thread_ts=None, payload=in_thread(
            user=BOT_USER_ID, bot_id=BOT_ID, text="the bridge's own post"))
        await reply(bridge, slack, ALICE, "", thread_ts=None, payload=in_thread(
            user="U0OTHERBOT", bot_id="B0OTHER", text="another bot"))
        await reply(bridge, slack, ALICE, "", thread_ts=None, payload=in_thread(
            subtype="message_changed", message={"text": "edited", "user": "U0HUMAN1"},
            user=None))
        await reply(bridge, slack, ALICE, "", thread_ts=None, payload=in_thread(
            subtype="message_deleted", previous_message={"text": "x"}, user=None))
        await asyncio.sleep(1.5)
        assert [m.body for m in phones["alice"].received] == ["only once"]
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_read_only_channel_refuses_with_a_reason_and_channel_mode_takes_top_level(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    bridge = await conversation_bridge(tmp_path, slack, asterisk)
    try:
        await phones["dave"].send_message("read-only channel text")
        [parent] = await wait_phone_posts(slack, 1)
        await reply(bridge, slack, DAVE, "trying anyway", thread_ts=parent["ts"],
                    user="U0HUMAN2")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not slack.calls_of("chat.postEphemeral"):
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        [ephemeral] = slack.calls_of("chat.postEphemeral")
        assert ephemeral["user"] == "U0HUMAN2" and "read-only" in ephemeral["text"]

        await reply(bridge, slack, CAROL, "top-level is a text here", thread_ts=None)
        [message] = await phones["carol"].wait_for_messages(1)
        assert message.body == "top-level is a text here"
        await reply(bridge, slack, ALICE, "top-level chatter in a thread-mode channel",
                    thread_ts=None)
        await asyncio.sleep(1)
        assert phones["dave"].received == [] and phones["alice"].received == []
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_the_default_off_holds_for_a_phone_without_its_own_mode(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    # [slack] reply_mode = "off"; alice overrides it with "thread", bob (same channel) does not.
    asterisk, phones = pbx
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port, endpoints=[
        EndpointSpec("alice", "pjsip:alice", ALICE, reply_mode="thread"),
        EndpointSpec("bob", "pjsip:bob", ALICE)], slack_extra={"reply_mode": "off"})
    try:
        await phones["bob"].send_message("bob's text")
        [bob_parent] = await wait_phone_posts(slack, 1)
        await phones["alice"].send_message("alice's text")
        await wait_phone_posts(slack, 2)
        alice_parent = phone_posts(slack.posts)[1]
        await reply(bridge, slack, ALICE, "to bob", thread_ts=bob_parent["ts"])
        await reply(bridge, slack, ALICE, "to alice", thread_ts=alice_parent["ts"])
        [message] = await phones["alice"].wait_for_messages(1)
        assert message.body == "to alice"
        await asyncio.sleep(1)
        assert phones["bob"].received == []
        [ephemeral] = slack.calls_of("chat.postEphemeral")
        assert "read-only" in ephemeral["text"]
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_a_member_of_another_organisation_needs_an_explicit_rule(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    # default = "everyone" (the default): this workspace's members, not Slack Connect guests.
    asterisk, phones = pbx
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port, endpoints=endpoints(),
                                tail='[access]\nusers = ["U0PARTNER2"]\n')
    try:
        await phones["alice"].send_message("who can answer me?")
        [parent] = await wait_phone_posts(slack, 1)

        def from_team(user: str, team: str, text: str) -> dict[str, Any]:
            payload = slack.message_event_payload(text=text, user_id=user, channel_id=ALICE,
                                                  thread_ts=parent["ts"], escaped=True)
            payload["event"]["user_team"] = team
            payload["is_ext_shared_channel"] = True
            return payload

        await reply(bridge, slack, ALICE, "", thread_ts=None,
                    payload=from_team("U0PARTNER1", "T0OTHERORG", "from outside"))
        await reply(bridge, slack, ALICE, "", thread_ts=None,
                    payload=from_team("U0PARTNER2", "T0OTHERORG", "outside, but listed"))
        await reply(bridge, slack, ALICE, "", thread_ts=None,
                    payload=from_team("U0HUMAN1", TEAM_ID, "from a colleague"))
        await phones["alice"].wait_for_messages(2)
        await asyncio.sleep(1)
        assert [m.body for m in phones["alice"].received] == ["outside, but listed",
                                                              "from a colleague"]
        [ephemeral] = slack.calls_of("chat.postEphemeral")
        assert ephemeral["user"] == "U0PARTNER1" and "Slack Connect" in ephemeral["text"]
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_a_send_asterisk_refuses_marks_the_message_failed_with_the_reason(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, _ = pbx
    bridge = await conversation_bridge(tmp_path, slack, asterisk)
    try:
        body, headers = slack.signed_slash_command(slack.slash_command_payload(
            text="ghost are you there"))
        assert (await bridge.post_signed(body, headers))[0] == 200
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not [p for p in slack.posts if shown_echoes([p])]:
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        [echo] = [p for p in slack.posts if shown_echoes([p])]
        if await wait_echo_state(slack, "C0GHOST00", echo, "x") == "inline":
            # The outcome was known when the echo was posted: its own line says why.
            assert ":x: not sent: Asterisk refused it" in str(echo["blocks"][0])
            return
        while not [p for p in slack.posts if "Not sent to *ghost*" in p.get("text", "")]:
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        [note] = [p for p in slack.posts if "Not sent to *ghost*" in p.get("text", "")]
        assert note["thread_ts"] == echo["ts"] and "Asterisk refused it" in note["text"]
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_an_idle_conversation_starts_a_new_thread(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    bridge = await conversation_bridge(tmp_path, slack, asterisk, thread_idle=2)
    try:
        await phones["alice"].send_message("morning")
        [first] = await wait_phone_posts(slack, 1)
        await asyncio.sleep(3)
        await phones["alice"].send_message("next day")
        second = (await wait_phone_posts(slack, 2))[1]
        assert "thread_ts" not in second and second["ts"] != first["ts"]
        # A late reply in the old thread still reaches the phone.
        await reply(bridge, slack, ALICE, "answer in the old thread", thread_ts=first["ts"])
        [message] = await phones["alice"].wait_for_messages(1)
        assert message.body == "answer in the old thread"
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_a_reply_over_socket_mode_texts_the_phone(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    bridge = await conversation_bridge(tmp_path, slack, asterisk, socket_mode=True)
    try:
        await slack.wait_socket_connected()
        await phones["alice"].send_message("socket hello")
        [parent] = await wait_phone_posts(slack, 1)
        payload = slack.message_event_payload(text="socket reply", channel_id=ALICE,
                                              thread_ts=parent["ts"], user_id="U0HUMAN1")
        await slack.send_socket_envelope("events_api", payload)
        [message] = await phones["alice"].wait_for_messages(1)
        assert message.body == "socket reply"
    finally:
        assert await bridge.stop() == 0, bridge.log
