"""Asterisk stopped under a running bridge: users are told, nothing is sent, and the bridge
reconnects by itself when Asterisk comes back. Also: Asterisk down when the bridge starts."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asterisk.harness import AsteriskSandbox, free_port, require_sandbox
from bridge_runner import (
    BridgeConfig,
    BridgeProcess,
    ack_text,
    outcomes_told,
    taken,
    told_outcome,
    write_config,
)
from conftest import (
    ALICE_CHANNEL,
    DEFAULT_CHANNEL,
    bridge_env,
    directory_endpoints,
    own_pbx,
    start_bridge,
)
from fake_slack import FakeSlack
from sip_ua import SipPhone
from slack_view import wait_phone_posts

pytestmark = pytest.mark.asterisk


@pytest.fixture
async def own_asterisk() -> AsyncIterator[tuple[AsteriskSandbox, SipPhone]]:
    """An Asterisk of this test's own, since the test stops it."""
    async with own_pbx("alice") as (sandbox, phones):
        yield sandbox, phones["alice"]


async def slash(bridge: BridgeProcess, slack: FakeSlack, text: str) -> str:
    body, headers = slack.signed_slash_command(slack.slash_command_payload(text=text))
    status, answer = await bridge.post_signed(body, headers)
    assert status == 200
    return ack_text(answer)


async def test_texts_wait_for_a_stopped_asterisk_and_go_out_in_order_once(
        tmp_path: Path, slack: FakeSlack,
        own_asterisk: tuple[AsteriskSandbox, SipPhone]) -> None:
    asterisk, phone = own_asterisk
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port)
    try:
        before = await slash(bridge, slack, "alice before")
        assert taken(before)
        await phone.wait_for_messages(1)
        await told_outcome(slack, before)

        await asterisk.stop()
        await bridge.wait_for_log("AMI: disconnected")
        for i in range(3):
            answer = await slash(bridge, slack, f"alice during {i}")
            assert "Queued for *alice*" in answer and "Asterisk is unreachable" in answer
        _, status = await bridge.post_signed(*slack.signed_slash_command(
            slack.slash_command_payload(text="status")))
        assert "not connected" in status and "waiting for Asterisk:* 3" in status

        mark = len(bridge.lines)
        await asterisk.restart()
        await bridge.wait_for_log("AMI: connected", after=mark, timeout=40)
        after = await slash(bridge, slack, "alice after")
        assert taken(after)
        received = await phone.wait_for_messages(5)
        assert [m.body for m in received] == [
            "before", "during 0", "during 1", "during 2", "after"]
        # The three queued texts' senders hear it through the response_url; the others in
        # the command's answer when Asterisk answered within its second, else that way too.
        deadline = asyncio.get_running_loop().time() + 10
        while len(outcomes_told(slack, [before, after])) < 5:
            assert asyncio.get_running_loop().time() < deadline, slack.responses
            await asyncio.sleep(0.1)
        told = outcomes_told(slack, [before, after])
        assert sum("Sent to *alice*" in t for t in told) == 5, told

        await phone.send_message("inbound after the restart")
        [post] = await wait_phone_posts(slack, 1)
        assert post["channel"] == ALICE_CHANNEL
    finally:
        assert await bridge.stop() == 0, bridge.log
    await asyncio.sleep(0.5)
    assert len(phone.received) == 5, "a text was sent twice"


async def test_bridge_started_before_asterisk_connects_when_it_appears(
        tmp_path: Path, slack: FakeSlack) -> None:
    require_sandbox()
    ami_port = free_port()
    bridge = await start_bridge_without_asterisk(tmp_path, slack, ami_port)
    try:
        await bridge.wait_for_log(rf"AMI: cannot connect to 127\.0\.0\.1:{ami_port}")
        answer = await slash(bridge, slack, "alice queued before Asterisk ever ran")
        assert "Queued for *alice*" in answer
        async with own_pbx("alice", ami_port=ami_port) as (_, phones):
            await bridge.wait_for_log("AMI: connected", timeout=40)
            assert taken(await slash(bridge, slack, "alice now it works"))
            messages = await phones["alice"].wait_for_messages(2)
            assert [m.body for m in messages] == [
                "queued before Asterisk ever ran", "now it works"]
    finally:
        assert await bridge.stop() == 0, bridge.log


async def start_bridge_without_asterisk(tmp: Path, slack: FakeSlack, ami_port: int,
                                        **ami: object) -> BridgeProcess:
    config = write_config(tmp, BridgeConfig(ami_port=ami_port, endpoints=directory_endpoints(),
                                            default_channel=DEFAULT_CHANNEL, extra_ami=ami))
    process = BridgeProcess(config, bridge_env(slack), port=free_port())
    await process.start()
    return process


async def test_frozen_asterisk_is_detected_and_the_text_goes_out_after_it_recovers(
        tmp_path: Path, slack: FakeSlack,
        own_asterisk: tuple[AsteriskSandbox, SipPhone]) -> None:
    """A hung Asterisk (half-open: TCP up, nothing answers): the bridge notices by its own
    pings, and the text goes out when Asterisk recovers. The text was written to a frozen
    Asterisk that may act on it when it wakes: the one at-least-once case on this side."""
    asterisk, phone = own_asterisk
    bridge = await start_bridge_without_asterisk(tmp_path, slack, asterisk.ami_port,
                                                 action_timeout=2)
    await bridge.wait_for_log("AMI: connected")
    assert asterisk.pid is not None
    os.kill(asterisk.pid, signal.SIGSTOP)
    try:
        assert taken(await slash(bridge, slack, "alice anyone?"))
        await bridge.wait_for_log("unconfirmed", timeout=10)
        await bridge.wait_for_log("AMI: disconnected", timeout=20)
    finally:
        os.kill(asterisk.pid, signal.SIGCONT)
    try:
        [reply] = await slack.wait_for_responses(1, timeout=40)
        assert "Sent to *alice*" in reply["text"]
        messages = await phone.wait_for_messages(1)
        assert {m.body for m in messages} == {"anyone?"}
        await asyncio.sleep(1)
        print(f"frozen Asterisk: the phone got the text {len(phone.received)} time(s)")
    finally:
        assert await bridge.stop() == 0, bridge.log
