"""One bad text or one odd Slack answer never stops a channel, end to end: real Asterisk, real
phones, the real bridge process, the fake Slack refusing what Slack refuses and answering
what proxies in front of Slack answer (HTML 502/405, JSON of the wrong shape)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asterisk.harness import AsteriskSandbox
from bridge_runner import ack_text, told_outcome
from conftest import ALICE_CHANNEL, own_pbx, start_bridge
from fake_slack import FakeSlack
from sip_ua import SipPhone
from slack_view import shown_echoes, shown_senders, shown_texts

pytestmark = pytest.mark.asterisk

HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


@pytest.fixture
async def pbx() -> AsyncIterator[tuple[AsteriskSandbox, dict[str, SipPhone]]]:
    async with own_pbx("alice") as pbx:
        yield pbx


async def wait_texts(slack: FakeSlack, wanted: list[str], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while shown_texts(slack.posts) != wanted:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"shown {shown_texts(slack.posts)}, wanted {wanted}; "
                                 f"calls: {[c[0] for c in slack.calls[-8:]]}")
        await asyncio.sleep(0.1)


async def test_html_and_odd_json_from_slack_never_crash_the_bridge_and_the_text_arrives(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    # The post hangs past the bridge's 2 s timeout (the history is checked next); the
    # history answers an HTML page labelled JSON, then a JSON array (each crashed the bridge
    # before); the next post gets a proxy's HTML 502 before Slack is back.
    slack.fail_next("chat.postMessage", status=500, delay=3)
    slack.fail_next("conversations.history", status=200, body=HTML_502,
                    content_type="application/json")
    slack.fail_next("conversations.history", status=200, body="[]",
                    content_type="application/json")
    slack.fail_next("chat.postMessage", status=502, body=HTML_502)
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port, slack_extra={"timeout": 2})
    try:
        assert await phones["alice"].send_message("through the proxy") == 202
        await wait_texts(slack, ["through the proxy"], timeout=60)
        await asyncio.sleep(1.5)  # a double would show up now
        assert shown_texts(slack.posts) == ["through the proxy"]
        assert bridge.returncode is None, "the bridge exited"
        assert "crashed" not in bridge.log and "Traceback" not in bridge.log, bridge.log
        # Still serving: the next text goes straight through.
        assert await phones["alice"].send_message("and the next") == 202
        await wait_texts(slack, ["through the proxy", "and the next"], timeout=10)
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_a_name_of_2500_ampersands_and_a_14000_character_echo_block_nothing(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    # The 14,000 characters are 19 MessageSends: more than the default [delivery] max_parts.
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port,
                                delivery={"max_parts": 30})
    try:
        # Escaped, 2,500 "&" are 12,500 characters: over the 3,000 of a text object.
        assert await phones["alice"].send_message("poisoned?", display_name="&" * 2500) == 202
        await wait_texts(slack, ["poisoned?"], timeout=10)
        [sender] = shown_senders(slack.posts)
        assert "&&&&&" in sender and "…" in sender
        long_text = "".join(f"line {i:05d} & more!! " for i in range(700))[:-1] + "!"
        body, headers = slack.signed_slash_command(slack.slash_command_payload(
            text=f"alice {long_text}", channel_id=ALICE_CHANNEL))
        status, answer = await bridge.post_signed(body, headers)
        assert status == 200
        outcome = await told_outcome(slack, ack_text(answer), timeout=30)
        assert "Sent to *alice*" in outcome, outcome
        parts = int(outcome.split(" in ")[1].split()[0])
        received = await phones["alice"].wait_for_messages(parts, timeout=10)
        assert "".join(m.body for m in received) == long_text
        assert await phones["alice"].send_message("after both") == 202
        await wait_texts(slack, ["poisoned?", "after both"], timeout=20)
        deadline = asyncio.get_running_loop().time() + 10
        while shown_echoes(slack.posts) != [long_text]:
            assert asyncio.get_running_loop().time() < deadline, "the /sip text was cut"
            await asyncio.sleep(0.1)
        in_thread = [p for p in slack.posts if p.get("thread_ts")]
        assert len(in_thread) == len(slack.posts) - 1  # one thread: alice's conversation
        refused = len(slack.calls_of("chat.postMessage")) - len(slack.posts)
        assert refused == 0, "a post over Slack's limits was sent"
    finally:
        assert await bridge.stop() == 0, bridge.log
