"""The Retry button on a failed text's notice, over both transports, against the real Asterisk.

A text fails for real (Asterisk is stopped longer than the text may wait); its notice in the
phone's thread carries a Retry button. Someone else's press sends nothing and tells them why;
the sender's presses (two at once, then one more) send the text exactly once, through the gate.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asterisk.harness import AsteriskSandbox
from bridge_runner import BridgeProcess
from conftest import ALICE_CHANNEL, own_pbx, start_bridge
from fake_slack import FakeSlack
from sip_ua import SipPhone

from bridge.slack.messages import RETRY_ACTION

pytestmark = pytest.mark.asterisk

SENDER = "U0USER1"


@pytest.fixture
async def own_asterisk() -> AsyncIterator[tuple[AsteriskSandbox, SipPhone]]:
    async with own_pbx("alice") as (sandbox, phones):
        yield sandbox, phones["alice"]


def retry_notices(slack: FakeSlack) -> list[dict[str, Any]]:
    """The bot's posts that carry a Retry button."""
    return [post for post in slack.posts if any(
        element.get("action_id") == RETRY_ACTION
        for block in post.get("blocks") or [] if block.get("type") == "actions"
        for element in block.get("elements", []))]


async def wait_retry_notices(slack: FakeSlack, n: int, timeout: float = 15) -> list[
        dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(retry_notices(slack)) < n:
        assert loop.time() < deadline, f"no Retry notice; posts: {slack.posts}"
        await asyncio.sleep(0.05)
    return retry_notices(slack)


@pytest.mark.parametrize("transport", ["http", "socket"])
async def test_retry_by_the_sender_sends_once_and_by_anyone_else_nothing(
        transport: str, tmp_path: Path, slack: FakeSlack,
        own_asterisk: tuple[AsteriskSandbox, SipPhone]) -> None:
    asterisk, phone = own_asterisk
    socket = transport == "socket"
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port, socket_mode=socket,
                                delivery={"outbound_max_wait": 3})
    if socket:
        await slack.wait_socket_connected()
    events_url = None if socket else bridge.events_url

    async def press(notice: dict[str, Any], user: str) -> str:
        [element] = [e for b in notice["blocks"] if b["type"] == "actions"
                     for e in b["elements"]]
        payload = slack.block_actions_payload(message=notice, action=element, user_id=user)
        answer, _ = await slack.interact(payload, events_url=events_url)
        assert answer == {}
        url = payload["response_url"]
        for _ in range(100):  # the answer to the presser comes on the action's response_url
            said = [r for r in slack.responses if r["response_url"] == url]
            if said:
                assert said[0]["response_type"] == "ephemeral"
                return str(said[0]["text"])
            await asyncio.sleep(0.05)
        raise AssertionError(f"nothing said to {user} after pressing Retry")

    try:
        await asterisk.stop()
        await bridge.wait_for_log("AMI: disconnected")
        text = "Retry me, exactly once ✅"
        await slash(bridge, slack, f"alice {text}", socket=socket)
        [notice] = await wait_retry_notices(slack, 1)
        assert notice["channel"] == ALICE_CHANNEL
        assert "Not sent to *alice*" in notice["text"]

        mark = len(bridge.lines)
        await asterisk.restart()
        await bridge.wait_for_log("AMI: connected", after=mark, timeout=40)

        said = await press(notice, "U0SOMEONE")
        assert said == "Only the sender can retry this text."
        await asyncio.sleep(0.5)
        assert phone.received == []

        first, second = await asyncio.gather(press(notice, SENDER), press(notice, SENDER))
        # One press retries, the other is told it already was. The winner's first answer is
        # "Retrying…", or the outcome itself when the text went out before that was posted
        # (both go to the press's response_url).
        answers = sorted([first, second], key=lambda a: "already retried" in a)
        assert answers[1] == "That text to *alice* was already retried."
        assert answers[0] == "Retrying the text to *alice*…" or "Sent to *alice*" in answers[0]
        [message] = await phone.wait_for_messages(1)
        assert message.body == text
        assert "already retried" in await press(notice, SENDER)
    finally:
        assert await bridge.stop() == 0, bridge.log
    await asyncio.sleep(0.5)
    assert len(phone.received) == 1, "a retried text was sent twice"


async def slash(bridge: BridgeProcess, slack: FakeSlack, text: str, *, socket: bool) -> str:
    payload = slack.slash_command_payload(text=text)
    if socket:
        ack = await slack.send_socket_envelope("slash_commands", payload)
        return str((ack.get("payload") or {}).get("text", ""))
    status, body = await bridge.post_signed(*slack.signed_slash_command(payload))
    assert status == 200
    return str(json.loads(body)["text"]) if body.startswith("{") else body


async def test_a_text_asterisk_refuses_at_once_is_answered_so_and_its_notice_has_retry(
        tmp_path: Path, slack: FakeSlack,
        own_asterisk: tuple[AsteriskSandbox, SipPhone]) -> None:
    """The /sip answer carries the refusal, so the echo is posted already showing it: the
    notice with the Retry button must still follow in the thread."""
    asterisk, _ = own_asterisk
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port)
    try:
        answer = await slash(bridge, slack, "ghost are you there?", socket=False)
        assert "Not sent" in answer and "Asterisk refused it" in answer, answer
        [notice] = await wait_retry_notices(slack, 1)
        assert "Not sent to *ghost*" in notice["text"]
        echo = [p for p in slack.posts if "are you there?" in json.dumps(p.get("blocks"))]
        assert echo and notice.get("thread_ts") in {echo[0]["ts"], echo[0].get("thread_ts")}
        await asyncio.sleep(1.0)
        assert len(retry_notices(slack)) == 1 and slack.responses == []  # told once, in the answer
    finally:
        assert await bridge.stop() == 0, bridge.log
