"""The compose modal: texting a phone from a Slack window instead of a typed command.

Three ways open it: `/sip` with no text, the global shortcut "Text a phone"
(`COMPOSE_SHORTCUT`) and the message shortcut "Text this to a phone…" (`MESSAGE_SHORTCUT`,
prefilled with that message's text, converted as thread replies are). The modal has a
recipient picker (an `external_select` whose options the bridge answers, type-ahead over the
directory and the `[[numbers]]` patterns, each option with its phone's presence) and a
multi-line text box.

A submission goes through the very same gate as `/sip` (the frontend's `admit`): a refusal
comes back as Slack's `response_action: errors` on the field it concerns, so the modal stays
open and says why; an accepted text closes it, its echo is posted in the phone's thread and
its outcome reaches the sender as `/sip` outcomes do (the command's response_url when the
modal came from `/sip` or a message shortcut, else the configured fallback).

Slack limits met here: a modal title at most 24 characters, at most 100 blocks, a text input
at most 3,000 characters, private_metadata at most 3,000 characters; an options answer at
most 100 options of at most 75 characters (value at most 150), all answered well within 3 s
(pure, in memory).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bridge.core.directory import Directory, Endpoint
from bridge.core.errors import (
    NotAllowed,
    RateLimited,
    SlackError,
    TextRejected,
    UnknownRecipient,
)
from bridge.core.policy import AccessPolicy, normalize_number, number_endpoint
from bridge.delivery.outbound import OutboundText
from bridge.slack.client import slack_call
from bridge.slack.text import slack_to_plain, user_ids

log = logging.getLogger(__name__)

COMPOSE_SHORTCUT = "text_a_phone"  # global shortcut callback ID (manifest)
MESSAGE_SHORTCUT = "text_this_to_a_phone"  # message shortcut callback ID (manifest)
COMPOSE_VIEW = "compose_text"  # the modal's callback ID
RECIPIENT_BLOCK = "recipient"
RECIPIENT_ACTION = "recipient_pick"
TEXT_BLOCK = "text"
TEXT_ACTION = "text_input"

MAX_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_INPUT = 3000  # a plain_text_input holds at most 3,000 characters
MAX_ERROR = 150  # keep a field error to a readable line

# A phone's presence, as shown: "online" / "offline" / "unknown".
PresenceOf = Callable[[str], str]
Admit = Callable[[OutboundText, str], Awaitable[Endpoint]]
DisplayNames = Callable[[list[str]], Awaitable[dict[str, str]]]


@dataclass(frozen=True)
class ComposeOrigin:
    """Where a modal was opened from, carried in its private_metadata to the submission."""

    channel: str = ""
    response_url: str = ""

    def dump(self) -> str:
        return json.dumps({"channel": self.channel, "response_url": self.response_url})

    @classmethod
    def load(cls, text: str) -> ComposeOrigin:
        try:
            data = json.loads(text or "{}")
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        return cls(channel=str(data.get("channel") or ""),
                   response_url=str(data.get("response_url") or ""))


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def compose_view(*, origin: ComposeOrigin, prefill: str = "", note: str = "") -> dict[str, Any]:
    """The modal: recipient picker, multi-line text box, Send."""
    text_element: dict[str, Any] = {
        "type": "plain_text_input", "action_id": TEXT_ACTION, "multiline": True,
        "max_length": MAX_INPUT,
        "placeholder": _plain("What the phone should get"),
    }
    if prefill:
        text_element["initial_value"] = prefill[:MAX_INPUT]
    blocks: list[dict[str, Any]] = [
        {"type": "input", "block_id": RECIPIENT_BLOCK, "label": _plain("To"),
         "element": {"type": "external_select", "action_id": RECIPIENT_ACTION,
                     "min_query_length": 0,
                     "placeholder": _plain("A name, an alias or a number")}},
        {"type": "input", "block_id": TEXT_BLOCK, "label": _plain("Text"),
         "element": text_element},
    ]
    if note:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    return {
        "type": "modal", "callback_id": COMPOSE_VIEW,
        "title": _plain("Text a phone"), "submit": _plain("Send"), "close": _plain("Cancel"),
        "private_metadata": origin.dump(), "blocks": blocks,
    }


def recipient_options(query: str, *, directory: Directory, policy: AccessPolicy,
                      presence: PresenceOf) -> list[dict[str, Any]]:
    """The picker's options for what the user typed so far (names, aliases, a number)."""
    wanted = query.strip().casefold()
    options: list[dict[str, Any]] = []
    for endpoint in directory.endpoints:
        if len(options) >= MAX_OPTIONS:
            break
        if len(endpoint.name) > MAX_OPTION_VALUE:
            continue  # cannot be a value; /sip still reaches it by name
        if wanted and not any(wanted in name.casefold() for name in endpoint.names):
            continue
        options.append(_option(endpoint, presence(endpoint.name)))
    if wanted and len(options) < MAX_OPTIONS and directory.lookup(query.strip()) is None:
        # A typed number is offered only when a [[numbers]] pattern would take it.
        found = number_endpoint(query.strip(), policy)
        number = normalize_number(query.strip(), policy.default_country_code)
        if found is not None and number is not None:
            options.append({"text": _plain(_cut(f"{number} (a number)", MAX_OPTION_TEXT)),
                            "value": number})
    return options


def _option(endpoint: Endpoint, presence: str) -> dict[str, Any]:
    aliases = f" ({', '.join(endpoint.aliases)})" if endpoint.aliases else ""
    label = f"{endpoint.name}{aliases} · {presence}"
    return {"text": _plain(_cut(label, MAX_OPTION_TEXT)), "value": endpoint.name}


def read_submission(view: dict[str, Any]) -> tuple[str, str]:
    """The recipient and the text of a submitted modal (as typed: inputs are not escaped)."""
    values = (view.get("state") or {}).get("values") or {}
    picked = ((values.get(RECIPIENT_BLOCK) or {}).get(RECIPIENT_ACTION) or {})
    option = picked.get("selected_option") or {}
    text = ((values.get(TEXT_BLOCK) or {}).get(TEXT_ACTION) or {}).get("value") or ""
    return str(option.get("value") or ""), str(text)


def field_error(exc: TextRejected) -> str:
    """A refusal as the line under a field (plain text: no Slack markup)."""
    return _cut(str(exc).replace("*", "").replace("`", "'"), MAX_ERROR)


class ComposeFlow:
    """The Slack handlers of the modal; the frontend registers them and gives `admit`."""

    def __init__(self, *, client: AsyncWebClient, directory: Directory, policy: AccessPolicy,
                 admit: Admit, display_names: DisplayNames, presence: PresenceOf) -> None:
        self._client = client
        self._directory = directory
        self._policy = policy
        self._admit = admit
        self._display_names = display_names
        self._presence = presence

    async def open(self, trigger_id: str, origin: ComposeOrigin, prefill: str = "",
                   note: str = "") -> bool:
        """Open the modal (the trigger is valid for 3 s and once); False if Slack refused."""
        if not trigger_id:
            return False
        try:
            await slack_call(self._client.views_open(
                trigger_id=trigger_id, view=compose_view(origin=origin, prefill=prefill,
                                                         note=note)))
        except SlackError as exc:
            log.warning("Slack: could not open the compose window (%s)", exc.error)
            return False
        return True

    async def on_shortcut(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """The global shortcut "Text a phone"."""
        await ack()
        await self.open(str(body.get("trigger_id") or ""), ComposeOrigin())

    async def on_message_shortcut(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """The message shortcut: the modal, prefilled with that message as a phone shows it."""
        await ack()
        message = body.get("message") or {}
        raw = str(message.get("text") or "")
        names = await self._display_names(user_ids(raw))
        text = slack_to_plain(raw, names)
        note = ""
        if len(text) > MAX_INPUT:
            note = (f"The message has {len(text):,} characters; the first {MAX_INPUT:,} are "
                    f"here (Slack's limit for a text box).")
        origin = ComposeOrigin(channel=str((body.get("channel") or {}).get("id") or ""),
                               response_url=str(body.get("response_url") or ""))
        await self.open(str(body.get("trigger_id") or ""), origin, prefill=text, note=note)

    async def on_options(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """Type-ahead in the recipient picker (block_suggestion)."""
        await ack(options=recipient_options(
            str(body.get("value") or ""), directory=self._directory, policy=self._policy,
            presence=self._presence))

    async def on_submit(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """Send: the gate's refusal stays in the modal as a field error."""
        view = body.get("view") or {}
        recipient, text = read_submission(view)
        origin = ComposeOrigin.load(str(view.get("private_metadata") or ""))
        user = body.get("user") or {}
        user_id = str(user.get("id") or "")
        if not recipient:
            await ack(response_action="errors",
                      errors={RECIPIENT_BLOCK: "Pick who should get the text."})
            return
        request = OutboundText(recipient=recipient, text=text, slack_user=user_id,
                               slack_channel=origin.channel,
                               response_url=origin.response_url or None, source="modal")
        name = str(user.get("username") or user.get("name") or user_id)
        try:
            await self._admit(request, name)
        except TextRejected as exc:
            block = RECIPIENT_BLOCK if _about_recipient(exc) else TEXT_BLOCK
            await ack(response_action="errors", errors={block: field_error(exc)})
            return
        await ack()


def _about_recipient(exc: TextRejected) -> bool:
    # The gate's refusals concern who was picked; text checks (blank, NUL) the text box.
    return isinstance(exc, NotAllowed | RateLimited | UnknownRecipient)
