"""Phone presence from AMI against the real Asterisk, with the shipped least-privilege AMI user.

A phone whose endpoint learns its contact by REGISTER (no static contact) registers, then
unregisters, then registers briefly and lets it expire: `/sip list` and the compose window's
picker show unknown, online, offline, online, offline; a text to it while it is offline comes
back saying the phone is not registered (Asterisk refuses MessageSend at once then).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asterisk.harness import AsteriskSandbox, SipPeer, free_port, require_sandbox
from bridge_runner import BridgeProcess, ack_text, told_outcome
from conftest import AMI_SECRET, start_bridge
from fake_slack import FakeSlack
from sip_ua import SipPhone

from bridge.slack.compose import COMPOSE_SHORTCUT, RECIPIENT_ACTION, RECIPIENT_BLOCK

pytestmark = pytest.mark.asterisk


@pytest.fixture
async def registering_pbx() -> AsyncIterator[tuple[AsteriskSandbox, SipPhone]]:
    require_sandbox()
    sip_port = free_port("udp")
    async with SipPhone("alice", asterisk_port=sip_port) as phone, AsteriskSandbox(
            peers=[SipPeer("alice", phone.port, registers=True)], sip_port=sip_port,
            ami_secret=AMI_SECRET) as sandbox:
        yield sandbox, phone


async def listed(bridge: BridgeProcess, slack: FakeSlack) -> str:
    status, body = await bridge.post_signed(*slack.signed_slash_command(
        slack.slash_command_payload(text="list")))
    assert status == 200
    text = ack_text(body)
    [line] = [line for line in text.splitlines() if "`alice`" in line]
    return line


def home_text(view: dict[str, Any]) -> str:
    return "\n".join(b["text"]["text"] for b in view["blocks"] if b["type"] == "section")


async def picked(bridge: BridgeProcess, slack: FakeSlack) -> list[str]:
    opened = len(slack.opened_views)
    await slack.interact(slack.shortcut_payload(callback_id=COMPOSE_SHORTCUT),
                         events_url=bridge.events_url)
    modal = await slack.wait_for_view(opened + 1)
    answer, _ = await slack.interact(slack.block_suggestion_payload(
        view=modal, block_id=RECIPIENT_BLOCK, action_id=RECIPIENT_ACTION, value="ali"),
        events_url=bridge.events_url)
    return [o["text"]["text"] for o in answer["options"]]


async def test_register_unregister_and_expiry_show_as_online_and_offline(
        tmp_path: Path, slack: FakeSlack,
        registering_pbx: tuple[AsteriskSandbox, SipPhone]) -> None:
    asterisk, phone = registering_pbx
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port)
    try:
        # The shipped AMI user may not list contacts: nothing is known until a change.
        await bridge.wait_for_log("cannot list registered phones \\(Permission denied\\)")
        assert "· unknown" in await listed(bridge, slack)
        await slack.interact(slack.app_home_opened_payload(user_id="U0HOME003"),
                             events_url=bridge.events_url)
        assert "*alice* · unknown" in home_text(await slack.wait_for_home("U0HOME003", 1))

        mark = len(bridge.lines)
        assert await phone.register(expires=60) == 200
        await bridge.wait_for_log("contact sip:alice@.* of alice: NonQualified", after=mark)
        assert "`alice` · online" in await listed(bridge, slack)
        # An open Home is republished when a phone's presence changes.
        assert "*alice* · online" in home_text(await slack.wait_for_home("U0HOME003", 2))
        assert await picked(bridge, slack) == ["alice · online"]

        mark = len(bridge.lines)
        assert await phone.register(expires=0) == 200  # unregister
        await bridge.wait_for_log("of alice: Removed", after=mark)
        assert "`alice` · offline" in await listed(bridge, slack)
        assert await picked(bridge, slack) == ["alice · offline"]

        # A text to it now: Asterisk refuses at once, and the sender hears why.
        status, answer = await bridge.post_signed(*slack.signed_slash_command(
            slack.slash_command_payload(text="alice are you there?")))
        assert status == 200
        told = await told_outcome(slack, ack_text(answer))
        assert "alice's phone is not registered (offline), so Asterisk refused it" in told
        assert phone.received == []

        mark = len(bridge.lines)
        assert await phone.register(expires=2) == 200
        await bridge.wait_for_log("of alice: NonQualified", after=mark)
        assert "`alice` · online" in await listed(bridge, slack)
        await bridge.wait_for_log("of alice: Removed", after=mark, timeout=20)  # expired
        assert "`alice` · offline" in await listed(bridge, slack)
    finally:
        assert await bridge.stop() == 0, bridge.log
