"""Secrets stay out of every log line: a whole bridge session at LOG_LEVEL=DEBUG (a /sip text,
a phone's text, a forged request, /sip status, an AMI reconnect), in HTTP and in Socket Mode,
and a config file holding the AMI secret that others can read is warned about at start-up."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asterisk.harness import AsteriskSandbox, free_port
from bridge_runner import BridgeConfig, BridgeProcess, ack_text, taken, write_config
from conftest import (
    AMI_SECRET,
    APP_TOKEN,
    BOT_TOKEN,
    DEFAULT_CHANNEL,
    SIGNING_SECRET,
    directory_endpoints,
    own_pbx,
    start_bridge,
)
from fake_slack import FakeSlack
from sip_ua import SipPhone
from slack_view import wait_phone_posts

pytestmark = pytest.mark.asterisk

SECRETS = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "SLACK_APP_TOKEN": APP_TOKEN, "AMI_SECRET": AMI_SECRET}


def leaked(text: str) -> list[str]:
    """The names of the secrets found in `text` (whole, or a distinctive part of one)."""
    return [name for name, value in SECRETS.items()
            if value in text or value.split("-", 1)[1] in text]


@pytest.fixture
async def own_asterisk() -> AsyncIterator[tuple[AsteriskSandbox, SipPhone]]:
    async with own_pbx("alice") as (sandbox, phones):
        yield sandbox, phones["alice"]


async def session(bridge: BridgeProcess, slack: FakeSlack, asterisk: AsteriskSandbox,
                  phone: SipPhone, *, socket_mode: bool) -> None:
    async def command(text: str) -> str:
        payload = slack.slash_command_payload(text=text)
        if socket_mode:
            ack = await slack.send_socket_envelope("slash_commands", payload)
            return str(ack["payload"]["text"])
        status, answer = await bridge.post_signed(*slack.signed_slash_command(payload))
        assert status == 200
        return ack_text(answer)

    assert taken(await command("alice a secret-free text"))
    await phone.wait_for_messages(1)
    await phone.send_message("a phone's text")
    await wait_phone_posts(slack, 1)
    if not socket_mode:
        forged = slack.signed_slash_command(slack.slash_command_payload(text="alice x"),
                                            secret="not-the-secret")
        assert (await bridge.post_signed(*forged))[0] == 401
    status = await command("status")
    assert "connected" in status and leaked(status) == []

    mark = len(bridge.lines)
    await asterisk.restart()
    await bridge.wait_for_log("AMI: connected", after=mark, timeout=30)
    assert taken(await command("alice after the reconnect"))
    await phone.wait_for_messages(2)


@pytest.mark.parametrize("socket_mode", [False, True], ids=["http", "socket"])
async def test_no_secret_in_any_log_line_of_a_whole_session(
        tmp_path: Path, slack: FakeSlack, own_asterisk: tuple[AsteriskSandbox, SipPhone],
        socket_mode: bool) -> None:
    asterisk, phone = own_asterisk
    phone.received.clear()
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port, socket_mode=socket_mode)
    try:
        assert bridge.env.get("LOG_LEVEL", "DEBUG") == "DEBUG"
        if socket_mode:
            await slack.wait_socket_connected()
        await session(bridge, slack, asterisk, phone, socket_mode=socket_mode)
    finally:
        assert await bridge.stop() == 0, bridge.log
    assert any(" DEBUG " in line for line in bridge.lines)  # the verbose run really happened
    assert any("slack_sdk" in line for line in bridge.lines)
    bad = [line for line in bridge.lines if leaked(line)]
    assert bad == [], "\n".join(bad)


def file_secret_env(slack: FakeSlack) -> dict[str, str]:
    return {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url}


@pytest.mark.parametrize("mode,warned", [(0o644, True), (0o640, True), (0o600, False)])
async def test_a_readable_config_holding_the_ami_secret_is_warned_about(
        tmp_path: Path, slack: FakeSlack, mode: int, warned: bool) -> None:
    config = BridgeConfig(ami_port=free_port(), endpoints=directory_endpoints(),
                          default_channel=DEFAULT_CHANNEL, extra_ami={"secret": AMI_SECRET})
    path = write_config(tmp_path, config)
    os.chmod(path, mode)
    bridge = BridgeProcess(path, file_secret_env(slack), port=free_port())
    await bridge.start()
    try:
        if warned:
            line = await bridge.wait_for_log(r"chmod 600")
            assert "WARNING" in line and str(path) in line and "ami.secret" in line
            assert f"{mode:03o}" in line
    finally:
        assert await bridge.stop() == 0, bridge.log
    assert sum("chmod 600" in line for line in bridge.lines) == (1 if warned else 0)
    assert [line for line in bridge.lines if AMI_SECRET in line] == []
