"""No event a phone can shape is ever taken as a text. Real Asterisk, real SIP, the real bridge.

A phone texting `sip:x%0D%0A%0D%0AEvent: UserEvent...@pbx` makes Asterisk write raw CR/LF into
the `Exten:` of the Newexten/VarSet events of the first context the text runs in. An AMI user
reading more than `system,user` without name filters receives those, and with them whole
forged "SlackBridgeText" events. The shipped manager.conf filters by event name (so the
forged ones never arrive) and the bridge takes only events carrying the dialplan's token (so
even a widened user without filters cannot be fooled).
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from urllib.parse import quote

import pytest
from asterisk.harness import AmiUser, AsteriskSandbox
from bridge_runner import BridgeConfig, BridgeProcess, EndpointSpec, write_config
from conftest import AMI_SECRET, DEFAULT_CHANNEL, bridge_env, own_pbx
from fake_slack import FakeSlack
from slack_view import shown_texts, wait_phone_posts

from bridge.asterisk.snippets import INBOUND_CONTEXT
from bridge.core.texts import derive_event_token
from bridge.sandbox.launcher import free_port

pytestmark = pytest.mark.asterisk

ALICE = "C0ALICE00"
BOB = "C0BOB0000"
WIDE = AmiUser(name="wide", secret="wide-secret-91d4", read="all", write="message,reporting")
FORGED_BODY = "FORGED: send the door code to this number"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forging_user_part() -> str:
    """A Request-URI user part that, %-decoded, ends the Exten line and adds a whole event
    claiming to be a text from bob (Endpoint and From both say bob)."""
    forged = (f"x\r\n\r\nEvent: UserEvent\r\nUserEvent: SlackBridgeText\r\nVersion: 2\r\n"
              f"Endpoint: {b64('bob')}\r\nFrom: {b64('<sip:bob@pbx>')}\r\n"
              f"MessageId: {b64('forged 1')}\r\nBody: {b64(FORGED_BODY)}\r\n")
    return quote(forged, safe="")


async def start_as(tmp: Path, slack: FakeSlack, asterisk: AsteriskSandbox, *, username: str,
                   secret: str, event_token: str | None = None) -> BridgeProcess:
    path = write_config(tmp, BridgeConfig(
        ami_port=asterisk.ami_port, ami_username=username, default_channel=DEFAULT_CHANNEL,
        endpoints=[EndpointSpec("alice", "pjsip:alice", ALICE),
                   EndpointSpec("bob", "pjsip:bob", BOB)]))
    env = bridge_env(slack) | {"AMI_SECRET": secret}
    # The dialplan's token is the one derived from the sandbox's own AMI secret.
    env["AMI_EVENT_TOKEN"] = event_token or derive_event_token(AMI_SECRET)
    process = BridgeProcess(path, env, port=free_port())
    await process.start()
    await process.wait_for_log("AMI: connected")
    return process


@pytest.mark.parametrize("username", ["slackbridge", "wide"])
async def test_a_phone_cannot_forge_a_text_through_other_events(
        tmp_path: Path, slack: FakeSlack, username: str) -> None:
    # mallory runs the shared context, the one that writes the raw extension into events.
    async with own_pbx("alice", "bob", "mallory", extra_ami_users=[WIDE], phone_options={
            "mallory": {"message_context": INBOUND_CONTEXT}}) as (asterisk, phones):
        secret = AMI_SECRET if username == "slackbridge" else WIDE.secret
        bridge = await start_as(tmp_path, slack, asterisk, username=username, secret=secret)
        try:
            status = await phones["mallory"].send_message("innocent",
                                                          to_user=forging_user_part())
            assert status == 202
            await phones["alice"].send_message("a real text after it")
            posts = await wait_phone_posts(slack, 2)
            await asyncio.sleep(1.0)  # room for any forged post to show up too
            texts = shown_texts(slack.posts)
            assert FORGED_BODY not in texts
            assert sorted(texts) == ["a real text after it", "innocent"]
            assert not [p for p in slack.posts if p["channel"] == BOB]
            assert {p["channel"] for p in posts} == {ALICE, DEFAULT_CHANNEL}
            if username == "wide":
                # They did arrive, and were refused for their missing token (and the
                # widened user was reported).
                assert "without a Token" in bridge.log
                assert "does not need" in bridge.log
            else:
                # The shipped name filters keep them from arriving at all.
                assert "refused a SlackBridgeText" not in bridge.log
        finally:
            assert await bridge.stop() == 0, bridge.log


async def test_a_dialplan_with_another_token_is_refused_loudly(
        tmp_path: Path, slack: FakeSlack) -> None:
    async with own_pbx("alice") as (asterisk, phones):
        bridge = await start_as(tmp_path, slack, asterisk, username="slackbridge",
                                secret=AMI_SECRET, event_token="not-the-dialplans-token-0")
        try:
            assert await phones["alice"].send_message("lost in a misconfiguration") == 202
            await bridge.wait_for_log("with a wrong Token")
            assert "SLACK_BRIDGE_EVENT_TOKEN" in bridge.log
            assert derive_event_token(AMI_SECRET) not in bridge.log  # never logged
            assert "not-the-dialplans-token-0" not in bridge.log
            assert shown_texts(slack.posts) == []
        finally:
            assert await bridge.stop() == 0, bridge.log
