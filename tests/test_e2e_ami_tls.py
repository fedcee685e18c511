"""AMI over TLS against the real Asterisk (manager.conf tlsenable, a throwaway CA): with the
right CA the bridge connects and texts flow both ways; with a wrong CA it says why in its log,
never logs in, and keeps retrying."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asterisk.harness import AsteriskSandbox, make_test_pki
from bridge_runner import ack_text, told_outcome
from conftest import ALICE_CHANNEL, own_pbx, start_bridge
from fake_slack import FakeSlack
from sip_ua import SipPhone
from slack_view import shown_texts, wait_phone_posts

pytestmark = pytest.mark.asterisk


@pytest.fixture(scope="module")
async def tls_asterisk() -> AsyncIterator[tuple[AsteriskSandbox, SipPhone]]:
    async with own_pbx("alice", ami_tls=True) as (sandbox, phones):
        yield sandbox, phones["alice"]


async def test_texts_flow_both_ways_over_ami_tls(
        tmp_path: Path, slack: FakeSlack,
        tls_asterisk: tuple[AsteriskSandbox, SipPhone]) -> None:
    asterisk, phone = tls_asterisk
    phone.received.clear()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(asterisk.tls_ca_pem)
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_tls_port, wait_for_ami=False,
                                extra_ami={"tls": True, "ca_file": str(ca_file)})
    try:
        await bridge.wait_for_log(rf"AMI: connected to 127\.0\.0\.1:{asterisk.ami_tls_port} "
                                  r"over TLS")
        body, headers = slack.signed_slash_command(
            slack.slash_command_payload(text="alice hello over TLS 🔒"))
        status, answer = await bridge.post_signed(body, headers)
        assert status == 200
        assert "Sent to *alice*" in await told_outcome(slack, ack_text(answer))
        [message] = await phone.wait_for_messages(1)
        assert message.body == "hello over TLS 🔒"

        assert await phone.send_message("and back over TLS") == 202
        posts = await wait_phone_posts(slack, 1)
        assert posts[0]["channel"] == ALICE_CHANNEL
        assert shown_texts(posts) == ["and back over TLS"], posts
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_a_wrong_ca_is_reported_and_retried_never_connected(
        tmp_path: Path, slack: FakeSlack,
        tls_asterisk: tuple[AsteriskSandbox, SipPhone]) -> None:
    asterisk, phone = tls_asterisk
    phone.received.clear()
    ca_file = tmp_path / "other-ca.pem"
    ca_file.write_bytes(make_test_pki(ca_name="some other CA").ca_pem)
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_tls_port, wait_for_ami=False,
                                extra_ami={"tls": True, "ca_file": str(ca_file)})
    try:
        first = await bridge.wait_for_log(r"AMI: TLS: .*certificate")
        assert "was not accepted" in first and "ca_file" in first, first
        assert "WARNING" in first
        # Still trying: the same error again after the backoff (logged at DEBUG).
        await bridge.wait_for_log(r"AMI: TLS: .*certificate.*retrying in 2 s", timeout=10)
        assert "AMI: connected" not in bridge.log

        body, headers = slack.signed_slash_command(
            slack.slash_command_payload(text="alice are you there?"))
        _, answer = await bridge.post_signed(body, headers)
        assert "Queued for *alice*" in ack_text(answer)
        assert phone.received == []
    finally:
        assert await bridge.stop() == 0, bridge.log
