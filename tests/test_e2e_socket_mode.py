"""Socket Mode end to end: the bridge connects out to the (fake) Slack WebSocket, receives a
`slash_commands` envelope, acks it with the answer, and the text reaches the phone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from asterisk.harness import AsteriskSandbox
from bridge_runner import BridgeProcess
from conftest import start_bridge
from fake_slack import FakeSlack
from sip_ua import SipPhone

pytestmark = pytest.mark.asterisk


@pytest.fixture
async def socket_bridge(tmp_path: pytest.TempPathFactory, slack: FakeSlack,
                        asterisk: AsteriskSandbox) -> AsyncIterator[BridgeProcess]:
    process = await start_bridge(tmp_path, slack, asterisk.ami_port,  # type: ignore[arg-type]
                                 socket_mode=True)
    await slack.wait_socket_connected()
    yield process
    assert await process.stop() == 0, process.log


async def test_slash_command_over_socket_mode_reaches_the_phone(
        socket_bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    assert "Socket Mode" in socket_bridge.log
    payload = slack.slash_command_payload(text="alice hello over a socket 🧦")
    ack = await slack.send_socket_envelope("slash_commands", payload)
    assert "Sent to *alice*" in ack["payload"]["text"]  # the outcome, in the ack itself
    [message] = await phones["alice"].wait_for_messages(1)
    assert message.body == "hello over a socket 🧦"
    await asyncio.sleep(0.5)
    assert slack.responses == []


async def test_refusals_are_answered_in_the_socket_ack(
        socket_bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    ack = await slack.send_socket_envelope(
        "slash_commands", slack.slash_command_payload(text="nobody hi"))
    assert "no phone called `nobody`" in ack["payload"]["text"]
    ack = await slack.send_socket_envelope("slash_commands", slack.slash_command_payload(text="help"))
    assert "/sip <recipient> <text>" in ack["payload"]["text"]
    assert all(not p.received for p in phones.values())


async def test_a_redelivered_command_is_sent_once(
        socket_bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    payload = slack.slash_command_payload(text="alice only once please")
    first = await slack.send_socket_envelope("slash_commands", payload)
    again = await slack.send_socket_envelope("slash_commands", payload)  # Slack redelivers
    assert "Sent to *alice*" in first["payload"]["text"]
    assert "payload" not in again or not again["payload"]  # acked, nothing said or sent
    [message] = await phones["alice"].wait_for_messages(1)
    assert message.body == "only once please"
    await asyncio.sleep(1.0)
    assert [m.body for m in phones["alice"].received] == ["only once please"]
