"""Hostile text from Slack, end to end against the real Asterisk: CR, LF, a whole injected
AMI action, control, zero-width, RTL and combining characters reach the phone exactly as
typed (one message, or segments that concatenate to it), nothing else happens anywhere, and
a NUL is refused with a reason the user sees."""

from __future__ import annotations

import asyncio

import pytest
from asterisk.harness import AsteriskSandbox
from bridge_runner import BridgeProcess, ack_text, told_outcome
from fake_slack import FakeSlack
from sip_ua import SipPhone
from slack_view import phone_posts

pytestmark = pytest.mark.asterisk

INJECTION = ("\r\n\r\nAction: Originate\r\nChannel: PJSIP/bob\r\nApplication: Playback\r\n"
             "Data: tt-monkeys\r\nActionID: evil\r\n\r\nAction: MessageSend\r\n"
             "Destination: pjsip:bob\r\nBody: injected\r\n\r\n")
HOSTILE = [
    "before" + INJECTION + "after",
    "one\rtwo\nthree\r\nfour\n\nfive",
    "ctl \x01\x02\x07\x08\x0b\x0c\x1b[31mred\x1b[0m \x7f \x85 \u2028 \u2029 end",
    "zw\u200b\u200c\u200dj \u200eLRM \u200fRLM \u202eevil.exe\u202c \ufeffBOM",
    "combining e\u0301 a\u0308\u0301\u0323 👩🏽‍💻 🇨🇭 🏴󠁧󠁢󠁳󠁣󠁴󠁿 ❤️",
    # (the command's text is trimmed at both ends, like any /sip text, so these end in "end")
    "Action: Originate" + "\r\n" * 300 + "x" * 1200 + "\nAction: Logoff\n\nend",
]


async def slash(bridge: BridgeProcess, slack: FakeSlack, text: str) -> str:
    body, headers = slack.signed_slash_command(slack.slash_command_payload(text=text))
    status, answer = await bridge.post_signed(body, headers)
    assert status == 200
    return ack_text(answer)


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
async def test_hostile_text_reaches_the_phone_exactly_and_nothing_else_happens(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone],
        asterisk: AsteriskSandbox, text: str) -> None:
    console_before = len(asterisk.log_text())
    outcome = await told_outcome(slack, await slash(bridge, slack, f"alice {text}"))
    assert "Sent to *alice*" in outcome, outcome
    parts = 1 if " in " not in outcome else int(outcome.split(" in ")[1].split()[0])
    received = await phones["alice"].wait_for_messages(parts)
    assert "".join(m.body for m in received) == text
    assert all(len(m.raw_body) <= 756 for m in received)
    await asyncio.sleep(0.5)
    assert len(phones["alice"].received) == parts
    assert phones["bob"].received == [] and phones["carol"].received == []
    assert phone_posts(slack.posts) == []
    console = asterisk.log_text()[console_before:]
    assert "Originate" not in console and "tt-monkeys" not in console, console


async def test_nul_is_refused_with_a_reason_and_nothing_is_sent(
        bridge: BridgeProcess, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    answer = await slash(bridge, slack, "alice cut\x00here")
    assert "Not sent" in answer and "NUL" in answer, answer
    await asyncio.sleep(1.0)
    assert all(p.received == [] for p in phones.values())
    assert slack.responses == []
