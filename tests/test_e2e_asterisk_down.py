"""Asterisk stopped under a running bridge: users are told, nothing is sent, and the bridge
reconnects by itself when Asterisk comes back. Also: Asterisk down when the bridge starts."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asterisk.harness import AsteriskSandbox, SipPeer, free_port, require_sandbox
from bridge_runner import BridgeConfig, BridgeProcess, ack_text, write_config
from conftest import (
    ALICE_CHANNEL,
    AMI_SECRET,
    DEFAULT_CHANNEL,
    bridge_env,
    directory_endpoints,
    start_bridge,
)
from fake_slack import FakeSlack
from sip_ua import SipPhone

pytestmark = pytest.mark.asterisk


@pytest.fixture
async def own_asterisk() -> AsyncIterator[tuple[AsteriskSandbox, SipPhone]]:
    """An Asterisk of this test's own, since the test stops it."""
    require_sandbox()
    sip_port = free_port("udp")
    phone = SipPhone("alice", asterisk_port=sip_port)
    await phone.start()
    sandbox = AsteriskSandbox(peers=[SipPeer("alice", phone.port)], sip_port=sip_port,
                              ami_secret=AMI_SECRET)
    await sandbox.start()
    yield sandbox, phone
    await sandbox.stop()
    await phone.stop()


async def slash(bridge: BridgeProcess, slack: FakeSlack, text: str) -> str:
    body, headers = slack.signed_slash_command(slack.slash_command_payload(text=text))
    status, answer = await bridge.post_signed(body, headers)
    assert status == 200
    return ack_text(answer)


async def test_stopped_asterisk_is_explained_and_reconnect_is_automatic(
        tmp_path: Path, slack: FakeSlack,
        own_asterisk: tuple[AsteriskSandbox, SipPhone]) -> None:
    asterisk, phone = own_asterisk
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port)
    try:
        await asterisk.stop()
        await bridge.wait_for_log("AMI: disconnected")
        answer = await slash(bridge, slack, "alice are you there?")
        assert "Not sent" in answer and "Asterisk is unreachable" in answer

        mark = len(bridge.lines)
        await asterisk.restart()
        await bridge.wait_for_log("AMI: connected", after=mark, timeout=40)
        answer = await slash(bridge, slack, "alice back again")
        assert "Sending to *alice*" in answer
        [message] = await phone.wait_for_messages(1)
        assert message.body == "back again"  # and the refused text was never sent

        await phone.send_message("inbound after the restart")
        [post] = await slack.wait_for_posts(1)
        assert post["channel"] == ALICE_CHANNEL
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_bridge_started_before_asterisk_connects_when_it_appears(
        tmp_path: Path, slack: FakeSlack) -> None:
    require_sandbox()
    ami_port = free_port()
    bridge = await start_bridge_without_asterisk(tmp_path, slack, ami_port)
    try:
        await bridge.wait_for_log(rf"AMI: cannot connect to 127\.0\.0\.1:{ami_port}")
        answer = await slash(bridge, slack, "alice hi")
        assert "Asterisk is unreachable" in answer
        sip_port = free_port("udp")
        async with SipPhone("alice", asterisk_port=sip_port) as phone:
            sandbox = AsteriskSandbox(peers=[SipPeer("alice", phone.port)], sip_port=sip_port,
                                      ami_port=ami_port, ami_secret=AMI_SECRET)
            async with sandbox:
                await bridge.wait_for_log("AMI: connected", timeout=40)
                assert "Sending" in await slash(bridge, slack, "alice now it works")
                [message] = await phone.wait_for_messages(1)
                assert message.body == "now it works"
    finally:
        assert await bridge.stop() == 0, bridge.log


async def start_bridge_without_asterisk(tmp: Path, slack: FakeSlack, ami_port: int,
                                        **ami: object) -> BridgeProcess:
    config = write_config(tmp, BridgeConfig(ami_port=ami_port, endpoints=directory_endpoints(),
                                            default_channel=DEFAULT_CHANNEL, extra_ami=ami))
    process = BridgeProcess(config, bridge_env(slack), port=free_port())
    await process.start()
    return process


async def test_frozen_asterisk_times_out_clearly_and_is_reconnected(
        tmp_path: Path, slack: FakeSlack,
        own_asterisk: tuple[AsteriskSandbox, SipPhone]) -> None:
    """A hung Asterisk (half-open: TCP up, nothing answers): the user hears the outcome is
    unknown, the bridge notices by its own pings, and recovers when Asterisk does."""
    asterisk, phone = own_asterisk
    bridge = await start_bridge_without_asterisk(tmp_path, slack, asterisk.ami_port,
                                                 action_timeout=2)
    await bridge.wait_for_log("AMI: connected")
    assert asterisk.pid is not None
    os.kill(asterisk.pid, signal.SIGSTOP)
    try:
        assert "Sending" in await slash(bridge, slack, "alice anyone?")
        [reply] = await slack.wait_for_responses(1, timeout=10)
        assert "did not answer in time" in reply["text"]
        await bridge.wait_for_log("AMI: disconnected", timeout=20)
    finally:
        os.kill(asterisk.pid, signal.SIGCONT)
    try:
        mark = len(bridge.lines)
        await bridge.wait_for_log("AMI: connected", after=mark, timeout=30)
        assert "Sending" in await slash(bridge, slack, "alice recovered")
        messages = await phone.wait_for_messages(1)
        assert messages[-1].body == "recovered"
    finally:
        assert await bridge.stop() == 0, bridge.log
