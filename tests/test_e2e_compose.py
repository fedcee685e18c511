"""The compose window end to end, over both transports, against the real Asterisk.

`/sip` with no text, the global shortcut and the message shortcut open the modal (views.open
with the action's trigger_id); the picker's type-ahead is answered from the directory; Send
goes through the /sip gate: the phone receives exactly the typed text, a refusal stays in the
modal as an error on its field. Every payload is signed (HTTP) or enveloped (Socket Mode) as
Slack does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asterisk.harness import AsteriskSandbox
from bridge_runner import BridgeProcess, EndpointSpec
from conftest import ALICE_CHANNEL, BOB_CHANNEL, directory_endpoints, start_bridge
from fake_slack import FakeSlack
from sip_ua import SipPhone
from slack_view import shown_echoes

from bridge.slack.compose import (
    COMPOSE_SHORTCUT,
    MESSAGE_SHORTCUT,
    RECIPIENT_ACTION,
    RECIPIENT_BLOCK,
    TEXT_ACTION,
    TEXT_BLOCK,
)
from bridge.slack.home import HOME_COMPOSE_ACTION, REFRESH_SECONDS

pytestmark = pytest.mark.asterisk

SENDER = "U0USER1"
OUTSIDER = "U0OTHER9"


@dataclass
class Via:
    """One running bridge and how Slack reaches it (events_url None: Socket Mode)."""

    bridge: BridgeProcess
    events_url: str | None
    slack: FakeSlack

    async def interact(self, payload: dict[str, Any]) -> dict[str, Any]:
        answer, _took = await self.slack.interact(payload, events_url=self.events_url)
        return answer

    async def command(self, text: str, *, expired: bool = False, **fields: Any) -> str:
        payload = self.slack.slash_command_payload(text=text, **fields)
        if expired:
            self.slack.expire_trigger(payload["trigger_id"])
        if self.events_url is None:
            ack = await self.slack.send_socket_envelope("slash_commands", payload)
            return str((ack.get("payload") or {}).get("text", ""))
        status, body = await self.bridge.post_signed(*self.slack.signed_slash_command(payload))
        assert status == 200, body
        return str(json.loads(body).get("text", "")) if body.startswith("{") else body


def _endpoints() -> list[EndpointSpec]:
    return [*directory_endpoints(),
            EndpointSpec("vault", "pjsip:carol", BOB_CHANNEL, extra={"allow_users": [OUTSIDER]})]


@pytest.fixture(scope="module", params=["http", "socket"])
async def via(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              slack: FakeSlack, asterisk: AsteriskSandbox) -> AsyncIterator[Via]:
    socket = request.param == "socket"
    tmp: Path = tmp_path_factory.mktemp(f"compose-{request.param}")
    process = await start_bridge(tmp, slack, asterisk.ami_port, socket_mode=socket,
                                 endpoints=_endpoints())
    if socket:
        await slack.wait_socket_connected()
    yield Via(process, None if socket else process.events_url, slack)
    assert await process.stop() == 0, process.log


def _values(recipient: str | None, text: str) -> dict[str, dict[str, Any]]:
    picked = {"type": "external_select", "selected_option": None}
    if recipient is not None:
        picked["selected_option"] = {"text": {"type": "plain_text", "text": recipient},
                                     "value": recipient}
    return {RECIPIENT_BLOCK: {RECIPIENT_ACTION: picked},
            TEXT_BLOCK: {TEXT_ACTION: {"type": "plain_text_input", "value": text}}}


def _option_values(answer: dict[str, Any]) -> list[str]:
    return [o["value"] for o in answer["options"]]


async def test_sip_without_text_opens_the_modal_and_send_reaches_the_phone(
        via: Via, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    assert await via.command("") == ""  # the window opened; nothing to say in the channel
    modal = await slack.wait_for_view(1)
    assert modal["title"]["text"] == "Text a phone"

    everyone = await via.interact(slack.block_suggestion_payload(
        view=modal, block_id=RECIPIENT_BLOCK, action_id=RECIPIENT_ACTION, value=""))
    assert _option_values(everyone) == ["alice", "bob", "ghost", "vault"]
    assert everyone["options"][1]["text"]["text"] == "bob (front-desk) · unknown"
    typed = await via.interact(slack.block_suggestion_payload(
        view=modal, block_id=RECIPIENT_BLOCK, action_id=RECIPIENT_ACTION, value="FRONT"))
    assert _option_values(typed) == ["bob"]

    text = "Fish & chips <3\nsecond line, as typed 🧦"
    answer = await via.interact(slack.view_submission_payload(
        view=modal, values=_values("alice", text)))
    assert answer == {}  # an empty 200: Slack closes the modal
    [message] = await phones["alice"].wait_for_messages(1)
    assert message.body == text
    [reply] = await slack.wait_for_responses(1)  # to the /sip command's response_url
    assert "Sent to *alice*" in reply["text"]
    posts = await slack.wait_for_posts(1)
    assert shown_echoes([p for p in posts if p["channel"] == ALICE_CHANNEL]) == [text]


async def test_refusals_are_errors_on_their_field_and_nothing_is_sent(
        via: Via, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    await via.interact(slack.shortcut_payload(callback_id=COMPOSE_SHORTCUT))
    modal = await slack.wait_for_view(1)

    not_allowed = await via.interact(slack.view_submission_payload(
        view=modal, values=_values("vault", "let me in")))
    assert not_allowed["response_action"] == "errors"
    assert "you may not text vault" in not_allowed["errors"][RECIPIENT_BLOCK]
    unknown = await via.interact(slack.view_submission_payload(
        view=modal, values=_values("nobody", "hi")))
    assert "no endpoint called 'nobody'" in unknown["errors"][RECIPIENT_BLOCK]
    blank = await via.interact(slack.view_submission_payload(
        view=modal, values=_values("alice", "   ")))
    assert blank["errors"] == {TEXT_BLOCK: "there is no text to send"}
    unpicked = await via.interact(slack.view_submission_payload(
        view=modal, values=_values(None, "hi")))
    assert RECIPIENT_BLOCK in unpicked["errors"]

    # The same rules let the listed user through.
    allowed = await via.interact(slack.view_submission_payload(
        view=modal, values=_values("vault", "the listed user"), user_id=OUTSIDER))
    assert allowed == {}
    [message] = await phones["carol"].wait_for_messages(1)
    assert message.body == "the listed user"
    assert not phones["alice"].received


async def test_message_shortcut_prefills_the_message_as_a_phone_shows_it(
        via: Via, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    wire = "<@U0USER2> fish &amp; chips :thumbsup: see <https://x.io|this>"
    await via.interact(slack.message_action_payload(callback_id=MESSAGE_SHORTCUT, text=wire,
                                                    escaped=True))
    modal = await slack.wait_for_view(1)
    [_, text_block] = [b for b in modal["blocks"] if b["type"] == "input"]
    prefill = text_block["element"]["initial_value"]
    assert prefill == "@U0USER2-name fish & chips 👍 see this (https://x.io)"

    assert await via.interact(slack.view_submission_payload(
        view=modal, values=_values("front-desk", prefill))) == {}
    [message] = await phones["bob"].wait_for_messages(1)
    assert message.body == prefill
    [reply] = await slack.wait_for_responses(1)  # the shortcut's response_url
    assert "Sent to *bob*" in reply["text"]


async def test_a_trigger_opens_one_modal_only(via: Via, slack: FakeSlack) -> None:
    payload = slack.shortcut_payload(callback_id=COMPOSE_SHORTCUT)
    await via.interact(payload)
    await slack.wait_for_view(1)
    await via.interact(payload)  # Slack delivers it again (a retry): the trigger is spent
    await via.bridge.wait_for_log("could not open the compose window \\(exchanged_trigger_id")
    assert len(slack.opened_views) == 1


async def test_sip_without_text_answers_with_help_when_the_window_cannot_open(
        via: Via, slack: FakeSlack) -> None:
    ack = await via.command("", expired=True)
    assert "/sip <recipient> <text>" in ack
    assert not slack.opened_views
    assert slack.calls_of("views.open")  # it tried, and Slack said expired_trigger_id


def home_text(view: dict[str, Any]) -> str:
    return "\n".join(block["text"]["text"] for block in view["blocks"]
                     if block["type"] in ("section", "header"))


async def test_the_home_tab_shows_phones_your_texts_and_the_bridge(
        via: Via, slack: FakeSlack, phones: dict[str, SipPhone]) -> None:
    user = "U0HOME001"
    assert await via.interact(slack.app_home_opened_payload(user_id=user)) == {}
    home = await slack.wait_for_home(user, 1)
    text = home_text(home)
    assert "*alice* · unknown · texts in <#C0ALICE00>" in text
    assert "*bob* (also: front-desk) · unknown" in text
    assert "None yet." in text and "connected" in text and "not connected" not in text

    # Its button opens the compose window; a text sent there shows on the Home, with its state.
    [button] = [e for b in home["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert button["action_id"] == HOME_COMPOSE_ACTION
    await via.interact(slack.view_block_actions_payload(view=home, action=button, user_id=user))
    modal = await slack.wait_for_view(1)
    await via.interact(slack.view_submission_payload(
        view=modal, values=_values("alice", "from the Home <3"), user_id=user))
    await phones["alice"].wait_for_messages(1)
    for _ in range(int(REFRESH_SECONDS * 20) + 40):
        latest = home_text(slack.home_views[user][-1])
        if ":white_check_mark: sent" in latest:
            break
        await asyncio.sleep(0.05)
    assert "*alice*" in latest and ":white_check_mark: sent\n>from the Home &lt;3" in latest


async def test_the_home_is_published_at_most_once_per_refresh_window(
        via: Via, slack: FakeSlack) -> None:
    user = "U0HOME002"
    await via.interact(slack.app_home_opened_payload(user_id=user))
    await slack.wait_for_home(user, 1)
    first = asyncio.get_running_loop().time()
    for _ in range(3):  # opened again and again within the window
        await via.interact(slack.app_home_opened_payload(user_id=user))
    await slack.wait_for_home(user, 2, timeout=REFRESH_SECONDS + 2)
    assert asyncio.get_running_loop().time() - first >= REFRESH_SECONDS - 0.2
    await asyncio.sleep(REFRESH_SECONDS + 0.5)
    assert len(slack.home_views[user]) == 2  # the three opens made one publish


async def test_an_unsigned_interaction_is_refused_and_opens_nothing(
        bridge: BridgeProcess, slack: FakeSlack) -> None:
    # HTTP only: in Socket Mode the app token authenticates the connection instead.
    body, headers = slack.signed_interaction(slack.shortcut_payload(callback_id=COMPOSE_SHORTCUT))
    headers["X-Slack-Signature"] = "v0=" + "0" * 64
    status, _ = await bridge.post_signed(body, headers)
    assert status == 401
    assert not slack.calls_of("views.open")
