"""The demo's local stand-in for Slack: a workspace the page shows, and the Web API the bridge calls.

It answers the Web API calls the bridge makes (under `/api/<method>`, in Slack's wire format,
checking the bot token) and the slash commands' `response_url`s (under `/response/<id>`), and
keeps what a Slack user would see: each channel's messages (thread replies under their
parent) and the answers only the user sees (ephemeral). `send_command` plays Slack delivering
a slash command to the app: it builds the payload Slack sends, signs it with the signing
secret exactly as Slack does, POSTs it to the bridge's Request URL and shows the answer.
Modals, the App Home and the interactivity payloads (shortcuts, the picker's type-ahead, Send,
buttons) are kept and built by `slack_views.py`; this module posts them, signed the same way.

Not Slack: no rate limits, no pagination beyond one page of history, one user ("you").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bridge.demo.slack_views import SlackViews, check_options
from bridge.demo.slack_web_api import MessageClock, Params, SlackRefusal, read_params, slack_escape

log = logging.getLogger(__name__)

TEAM_ID = "T0DEMO001"
BOT_USER_ID = "U0DEMOBOT"
BOT_ID = "B0DEMOBOT"
APP_ID = "A0DEMOAPP"
USER_ID = "U0DEMOYOU"
USER_NAME = "you"
BOT_SCOPES = ("commands,chat:write,chat:write.public,channels:history,groups:history,"
              "channels:read,groups:read,users:read")
# The bridge's callback IDs, as in config/slack-app-manifest.yml (bridge/slack/compose.py).
COMPOSE_SHORTCUT = "text_a_phone"
MESSAGE_SHORTCUT = "text_this_to_a_phone"
HOME_DM = "D0DEMOAPP"  # the user's DM with the app, whose Home tab the page shows


@dataclass
class Message:
    """One message as the page shows it."""

    ts: str
    channel: str
    author: str  # "bridge" (the bot), "you", or "Slackbot" for Slack's own notices
    text: str
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None
    ephemeral: bool = False  # "Only visible to you"
    reactions: list[str] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    edited: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"ts": self.ts, "author": self.author, "text": self.text,
                "blocks": self.blocks or [], "thread_ts": self.thread_ts,
                "ephemeral": self.ephemeral, "reactions": self.reactions,
                "edited": self.edited}


@dataclass
class Channel:
    id: str
    name: str
    purpose: str = ""
    messages: list[Message] = field(default_factory=list)


def sign(secret: str, timestamp: str, body: str) -> str:
    """Slack's request signature: v0= + HMAC-SHA256(secret, "v0:{timestamp}:{body}")."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class SlackStandIn:
    """The workspace and its Web API. Add `routes()` to an aiohttp app, then set `base_url`."""

    def __init__(self, *, bot_token: str, signing_secret: str, command: str = "/sip",
                 on_change: Callable[[], None] | None = None) -> None:
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.command = command
        self.base_url = ""  # http://127.0.0.1:<port>, known once the server listens
        self.events_url = ""  # the bridge's Request URL
        self.channels: dict[str, Channel] = {}
        self.calls: list[str] = []  # Web API methods called, in order
        self._on_change = on_change or (lambda: None)
        self._clock = MessageClock()
        self._response_urls: dict[str, str] = {}  # id -> channel the command was typed in
        self.views = SlackViews(user_id=USER_ID, team_id=TEAM_ID, app_id=APP_ID)
        self._handlers: dict[str, Callable[[Params], Awaitable[Params]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.update": self._chat_update,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "conversations.info": self._conversations_info,
            "conversations.members": self._conversations_members,
            "users.info": self._users_info,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "views.open": self._views_call(self.views.views_open, "views.open"),
            "views.update": self._views_call(self.views.views_update, "views.update"),
            "views.publish": self._views_call(self.views.views_publish, "views.publish"),
        }

    def add_channel(self, channel_id: str, name: str, purpose: str = "") -> None:
        self.channels[channel_id] = Channel(channel_id, name, purpose)

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", "/api/{method}", self._handle_api),
                web.post("/response/{id}", self._handle_response_url)]

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    # ----------------------------------------------------------------- what the page shows

    def state(self) -> list[dict[str, Any]]:
        """Every channel with its messages, thread replies nested under their parent."""
        shown = []
        for channel in self.channels.values():
            top: list[dict[str, Any]] = []
            by_ts: dict[str, dict[str, Any]] = {}
            for message in channel.messages:
                item = {**message.to_json(), "replies": []}
                parent = by_ts.get(message.thread_ts or "")
                if message.thread_ts and message.thread_ts != message.ts and parent:
                    parent["replies"].append(item)
                else:
                    top.append(item)
                    by_ts[message.ts] = item
            shown.append({"id": channel.id, "name": channel.name, "purpose": channel.purpose,
                          "messages": top})
        return shown

    def texts_in(self, channel_id: str) -> list[str]:
        """The plain_text sections and fallback texts of a channel's messages (for tests)."""
        found: list[str] = []
        for message in self.channels[channel_id].messages:
            sections = [b["text"]["text"] for b in message.blocks or []
                        if b.get("type") == "section" and isinstance(b.get("text"), dict)]
            found.extend(sections or [message.text])
        return found

    def _next_ts(self) -> str:
        return self._clock.next_ts()

    def _conversation(self, channel_id: str) -> Channel:
        """The channel, or the bot's DM with a user (Slack opens one on a post to a user ID)."""
        if channel_id in self.channels:
            return self.channels[channel_id]
        if channel_id == USER_ID:
            self.add_channel(channel_id, "DM from the bridge", "direct messages to you")
            return self.channels[channel_id]
        raise SlackRefusal("channel_not_found")

    def _add(self, message: Message) -> Message:
        messages = self._conversation(message.channel).messages
        # In ts order: an ack whose ts was taken before the request shows before answers
        # the app sent through response_url while Slack was still waiting for that ack.
        at = len(messages)
        while at and float(messages[at - 1].ts) > float(message.ts):
            at -= 1
        messages.insert(at, message)
        self._on_change()
        return message

    # ----------------------------------------------------------------- slash commands

    async def send_command(self, *, channel_id: str, typed: str,
                           thread_ts: str | None = None) -> dict[str, Any]:
        """What happens when the user types `typed` into `channel_id` (or a thread there) and
        presses Enter: a slash command goes to the app; a message is posted, and the app gets
        it as a `message` event, as it would subscribed to `message.channels`."""
        channel = self._conversation(channel_id)
        typed = typed.strip()
        if not typed:
            return {"ok": False, "error": "empty"}
        if thread_ts:  # a reply to a reply belongs to the same thread, as in Slack
            parent = next((m for m in channel.messages if m.ts == thread_ts), None)
            thread_ts = parent.thread_ts or thread_ts if parent else thread_ts
        if not typed.startswith("/"):
            message = self._add(Message(self._next_ts(), channel.id, USER_NAME,
                                        slack_escape(typed), thread_ts=thread_ts or None))
            return await self._deliver_event(message)
        if thread_ts:
            self._add(Message(self._next_ts(), channel.id, "Slackbot", "Slash commands are "
                              "not supported in threads. Type it in the channel instead.",
                              thread_ts=thread_ts, ephemeral=True))
            return {"ok": False, "error": "not_in_threads"}
        command, _, text = typed.partition(" ")
        self._add(Message(self._next_ts(), channel.id, USER_NAME, slack_escape(typed),
                          ephemeral=True))
        if command != self.command:
            self._add(Message(self._next_ts(), channel.id, "Slackbot",
                              f"`{command}` is not a valid command. Try `{self.command} help`.",
                              ephemeral=True))
            return {"ok": False, "error": "unknown_command"}
        response_id = secrets.token_hex(8)
        self._response_urls[response_id] = channel.id
        payload = {
            "token": "demo-verification-token", "team_id": TEAM_ID, "team_domain": "demo",
            "channel_id": channel.id, "channel_name": channel.name.lstrip("#"),
            "user_id": USER_ID, "user_name": USER_NAME, "command": command,
            "text": slack_escape(text.strip()), "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": f"{self.base_url}/response/{response_id}",
            "trigger_id": self.views.new_trigger(),
        }
        ack_ts = self._next_ts()
        try:
            status, answer = await self._post_to_app(urllib.parse.urlencode(payload),
                                                     "application/x-www-form-urlencoded")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # What Slack shows when the app does not answer in 3 s.
            self._add(Message(self._next_ts(), channel.id, "Slackbot",
                              f"{command} failed with the error \"operation_timeout\" ({exc!r})",
                              ephemeral=True))
            return {"ok": False, "error": "operation_timeout"}
        if status != 200:
            self._add(Message(self._next_ts(), channel.id, "Slackbot",
                              f"{command} failed with the error \"http_{status}\"",
                              ephemeral=True))
            return {"ok": False, "error": f"http_{status}", "status": status}
        if answer.strip():
            self._show_reply(channel.id, _reply_body(answer), ts=ack_ts)
        return {"ok": True, "status": status, "ack": _reply_body(answer).get("text", "")}

    async def _post_to_app(self, body: str, content_type: str) -> tuple[int, str]:
        """POST to the app's Request URL, signed with the signing secret as Slack signs."""
        timestamp = str(int(time.time()))
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": timestamp,
                   "X-Slack-Signature": sign(self.signing_secret, timestamp, body)}
        async with aiohttp.ClientSession() as session, session.post(
                self.events_url, data=body.encode(), headers=headers,
                timeout=aiohttp.ClientTimeout(total=3)) as response:
            return response.status, await response.text()

    async def _deliver_event(self, message: Message) -> dict[str, Any]:
        """Send the app the `message` event for a message the user posted."""
        event: dict[str, Any] = {
            "type": "message", "client_msg_id": secrets.token_hex(16), "user": USER_ID,
            "text": message.text, "ts": message.ts, "team": TEAM_ID,
            "channel": message.channel, "event_ts": message.ts, "channel_type": "channel"}
        if message.thread_ts:
            event["thread_ts"] = message.thread_ts
            event["parent_user_id"] = BOT_USER_ID
        return await self._deliver(event)

    async def _deliver(self, event: dict[str, Any]) -> dict[str, Any]:
        """Send the app one Events API delivery of `event`."""
        payload = {
            "token": "demo-verification-token", "team_id": TEAM_ID, "api_app_id": APP_ID,
            "event": event, "type": "event_callback",
            "event_id": "Ev" + secrets.token_hex(5).upper(), "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True,
                                "is_enterprise_install": False}]}
        try:
            status, _ = await self._post_to_app(json.dumps(payload), "application/json")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("Slack stand-in: the app did not take the %s event: %r",
                        event.get("type"), exc)
            return {"ok": False, "error": "event_not_delivered"}
        return {"ok": status == 200, "status": status}

    def _show_reply(self, channel_id: str, body: dict[str, Any], *, ts: str = "") -> None:
        blocks = body.get("blocks") if isinstance(body.get("blocks"), list) else None
        self._add(Message(ts or self._next_ts(), channel_id, "bridge", str(body.get("text", "")),
                          blocks=blocks, ephemeral=body.get("response_type") != "in_channel"))

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        channel_id = self._response_urls.get(request.match_info["id"])
        if channel_id is None:
            return web.Response(status=404, text="expired_url")
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return web.Response(status=400, text="no_text")
        self._show_reply(channel_id, body)
        return web.Response(text="ok")

    # ----------------------------------------------------------------- modals, Home, buttons

    def views_state(self) -> dict[str, Any]:
        """The open modal (with its field errors) and the user's Home, for the page."""
        modal = self.views.modal
        return {"modal": modal.to_json() if modal else None,
                "home": self.views.homes.get(USER_ID),
                "refusals": self.views.refusals[-5:]}

    async def _interact(self, payload: dict[str, Any]) -> tuple[int, str] | None:
        """POST an interactivity payload as Slack does: a form body `payload=<json>`, signed;
        None when the app did not answer within 3 s."""
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        try:
            return await self._post_to_app(body, "application/x-www-form-urlencoded")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("Slack stand-in: the app did not answer the %s in time: %r",
                        payload.get("type"), exc)
            return None

    def _answered(self, what: str, answer: tuple[int, str] | None) -> dict[str, Any]:
        if answer is None:
            self.views.refuse(what, "the app did not answer within 3 s")
            return {"ok": False, "error": "operation_timeout"}
        if answer[0] != 200:
            self.views.refuse(what, f"the app answered HTTP {answer[0]}")
            return {"ok": False, "error": f"http_{answer[0]}"}
        return {"ok": True}

    async def open_shortcut(self) -> dict[str, Any]:
        """The user picks the global shortcut "Text a phone" from the shortcuts menu."""
        payload = self.views.shortcut_payload(COMPOSE_SHORTCUT, USER_NAME)
        result = self._answered("shortcut", await self._interact(payload))
        self._on_change()
        return result

    async def message_shortcut(self, *, channel_id: str, ts: str) -> dict[str, Any]:
        """The user picks "Text this to a phone…" in a message's "More actions" menu."""
        channel = self._conversation(channel_id)
        message = next((m for m in channel.messages if m.ts == ts and not m.ephemeral), None)
        if message is None:
            raise SlackRefusal("message_not_found")
        if message.author == USER_NAME:
            shown: Params = {"type": "message", "user": USER_ID, "text": message.text,
                             "ts": message.ts, "team": TEAM_ID}
        else:
            shown = self._bot_message(message)
        response_id = secrets.token_hex(8)
        self._response_urls[response_id] = channel.id
        payload = self.views.message_shortcut_payload(
            MESSAGE_SHORTCUT, USER_NAME, channel={"id": channel.id,
                                                  "name": channel.name.lstrip("#")},
            message=shown, response_url=f"{self.base_url}/response/{response_id}")
        result = self._answered("message shortcut", await self._interact(payload))
        self._on_change()
        return result

    async def suggest(self, *, block_id: str, action_id: str, value: str) -> dict[str, Any]:
        """Type-ahead in the open modal's external_select: the app's options, as Slack shows
        them (none when the answer breaks Slack's limits or comes too late)."""
        if self.views.modal is None:
            return {"ok": False, "error": "no_modal", "options": []}
        payload = self.views.suggestion_payload(block_id=block_id, action_id=action_id,
                                                value=value, user_name=USER_NAME)
        answer = await self._interact(payload)
        result = self._answered("block_suggestion", answer)
        if not result["ok"] or answer is None:
            return {**result, "options": []}
        try:
            options = check_options(json.loads(answer[1] or "{}"))
        except ValueError:
            options = None
        if options is None:
            self.views.refuse("block_suggestion", "the options break Slack's limits")
            return {"ok": False, "error": "invalid_options", "options": []}
        return {"ok": True, "options": options}

    async def submit(self, values: dict[str, Any]) -> dict[str, Any]:
        """Send pressed in the open modal; `values` as Slack puts them in `view.state`."""
        if self.views.modal is None:
            return {"ok": False, "error": "no_modal"}
        missing = self.views.missing_inputs(values)
        if missing:
            self.views.modal.errors = missing
            self._on_change()
            return {"ok": True, "closed": False, "errors": missing}
        self.views.modal.errors = {}
        payload = self.views.submission_payload(values, USER_NAME)
        answer = await self._interact(payload)
        if answer is None:
            self.views.refuse("view_submission", "the app did not answer within 3 s")
            result: dict[str, Any] = {"ok": False, "error": "operation_timeout"}
        else:
            result = self.views.read_submission_answer(*answer)
        self._on_change()
        return result

    def cancel_modal(self) -> None:
        """Cancel (or the ×) in the modal: Slack closes it; the bridge asks for no view_closed."""
        self.views.close_modal()
        self._on_change()

    async def press(self, *, where: str, action: dict[str, Any], channel_id: str = "",
                    ts: str = "") -> dict[str, Any]:
        """A button pressed in a message (`where="message"`) or in the Home ("home")."""
        if where == "home":
            home = self.views.homes.get(USER_ID)
            if home is None:
                raise SlackRefusal("no_home")
            container = {"type": "view", "view_id": home["id"]}
            extra: dict[str, Any] = {"view": home}
        else:
            channel = self._conversation(channel_id)
            message = next((m for m in channel.messages if m.ts == ts), None)
            if message is None:
                raise SlackRefusal("message_not_found")
            response_id = secrets.token_hex(8)
            self._response_urls[response_id] = channel.id
            container = {"type": "message", "message_ts": ts, "channel_id": channel.id,
                         "is_ephemeral": message.ephemeral}
            extra = {"channel": {"id": channel.id, "name": channel.name.lstrip("#")},
                     "message": self._bot_message(message),
                     "response_url": f"{self.base_url}/response/{response_id}"}
        payload = self.views.actions_payload(action={"type": "button", **action},
                                             user_name=USER_NAME, container=container,
                                             extra=extra)
        result = self._answered("block_actions", await self._interact(payload))
        self._on_change()
        return result

    async def open_home(self) -> dict[str, Any]:
        """The user opens the app's Home tab: Slack sends `app_home_opened`."""
        event: dict[str, Any] = {"type": "app_home_opened", "user": USER_ID, "channel": HOME_DM,
                                 "tab": "home", "event_ts": f"{time.time():.6f}"}
        if USER_ID in self.views.homes:
            event["view"] = self.views.homes[USER_ID]
        return await self._deliver(event)

    def _views_call(self, method: Callable[[Params], Params],
                    name: str) -> Callable[[Params], Awaitable[Params]]:
        async def call(params: Params) -> Params:
            try:
                answer = method(params)
            except SlackRefusal as refusal:
                self.views.refuse(name, refusal.error)
                raise
            self._on_change()
            return answer
        return call

    # ----------------------------------------------------------------- the Web API

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self.calls.append(method)
        headers = {"x-oauth-scopes": BOT_SCOPES}
        try:
            if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
                raise SlackRefusal("invalid_auth")
            handler = self._handlers.get(method)
            if handler is None:
                log.warning("Slack stand-in: the bridge called %s, which the demo does not "
                            "know", method)
                raise SlackRefusal("unknown_method")
            body = await handler(await read_params(request))
        except SlackRefusal as refusal:
            body = {"ok": False, "error": refusal.error}
        return web.json_response(body, headers=headers)

    @staticmethod
    def _require_content(params: Params) -> None:
        if not params.get("channel"):
            raise SlackRefusal("channel_not_found")
        if not params.get("text") and not params.get("blocks"):
            raise SlackRefusal("no_text")

    def _bot_message(self, message: Message, with_metadata: bool = False) -> Params:
        out: Params = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID,
                       "app_id": APP_ID, "team": TEAM_ID, "text": message.text,
                       "ts": message.ts}
        if message.blocks is not None:
            out["blocks"] = message.blocks
        if message.thread_ts:
            out["thread_ts"] = message.thread_ts
        if with_metadata and message.metadata:
            out["metadata"] = message.metadata
        return out

    async def _auth_test(self, params: Params) -> Params:
        return {"ok": True, "url": "http://demo.slack.local/", "team": "Demo", "user": "bridge",
                "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID,
                "is_enterprise_install": False}

    async def _chat_post_message(self, params: Params) -> Params:
        self._require_content(params)
        blocks = params.get("blocks")
        metadata = params.get("metadata")
        message = self._add(Message(
            self._next_ts(), str(params["channel"]), "bridge", str(params.get("text", "")),
            blocks=blocks if isinstance(blocks, list) else None,
            thread_ts=str(params["thread_ts"]) if params.get("thread_ts") else None,
            metadata=metadata if isinstance(metadata, dict) else None))
        return {"ok": True, "channel": message.channel, "ts": message.ts,
                "message": self._bot_message(message)}

    async def _chat_post_ephemeral(self, params: Params) -> Params:
        self._require_content(params)
        if params.get("user") != USER_ID:
            raise SlackRefusal("user_not_in_channel")
        blocks = params.get("blocks")
        message = self._add(Message(
            self._next_ts(), str(params["channel"]), "bridge", str(params.get("text", "")),
            ephemeral=True, blocks=blocks if isinstance(blocks, list) else None,
            thread_ts=str(params["thread_ts"]) if params.get("thread_ts") else None))
        return {"ok": True, "message_ts": message.ts}

    async def _chat_update(self, params: Params) -> Params:
        self._require_content(params)
        channel = self._conversation(str(params["channel"]))
        for message in channel.messages:
            if message.ts == params.get("ts") and not message.ephemeral:
                message.text = str(params.get("text", ""))
                blocks = params.get("blocks")
                message.blocks = blocks if isinstance(blocks, list) else None
                message.edited = True
                self._on_change()
                return {"ok": True, "channel": channel.id, "ts": message.ts,
                        "text": message.text, "message": self._bot_message(message)}
        raise SlackRefusal("message_not_found")

    async def _conversations_history(self, params: Params) -> Params:
        channel = self._conversation(str(params.get("channel", "")))
        oldest = float(params.get("oldest") or 0)
        limit = int(params.get("limit") or 100)
        with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        # Like Slack: top-level messages only; replies in threads are not in the history.
        found = [m for m in reversed(channel.messages)
                 if not m.ephemeral and float(m.ts) > oldest
                 and (not m.thread_ts or m.thread_ts == m.ts)][:limit]
        return {"ok": True, "messages": [self._bot_message(m, with_metadata) for m in found],
                "has_more": False, "response_metadata": {"next_cursor": ""}}

    async def _conversations_replies(self, params: Params) -> Params:
        channel = self._conversation(str(params.get("channel", "")))
        thread = str(params.get("ts", ""))
        oldest = float(params.get("oldest") or 0)
        with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        found = [m for m in channel.messages if not m.ephemeral and
                 (m.ts == thread or (m.thread_ts == thread and float(m.ts) > oldest))]
        if not found:
            raise SlackRefusal("thread_not_found")
        return {"ok": True, "messages": [self._bot_message(m, with_metadata) for m in found],
                "has_more": False, "response_metadata": {"next_cursor": ""}}

    async def _conversations_info(self, params: Params) -> Params:
        channel = self._conversation(str(params.get("channel", "")))
        name = channel.name.lstrip("#")
        return {"ok": True, "channel": {
            "id": channel.id, "name": name, "name_normalized": name, "is_channel": True,
            "is_group": False, "is_im": False, "is_private": False, "is_archived": False,
            "is_member": True, "created": 1_700_000_000, "creator": USER_ID,
            "context_team_id": TEAM_ID}}

    async def _conversations_members(self, params: Params) -> Params:
        self._conversation(str(params.get("channel", "")))
        return {"ok": True, "members": [BOT_USER_ID, USER_ID],
                "response_metadata": {"next_cursor": ""}}

    async def _users_info(self, params: Params) -> Params:
        user = str(params.get("user", ""))
        if user not in (USER_ID, BOT_USER_ID):
            raise SlackRefusal("user_not_found")
        name = USER_NAME if user == USER_ID else "bridge"
        return {"ok": True, "user": {
            "id": user, "team_id": TEAM_ID, "name": name, "real_name": name, "deleted": False,
            "is_bot": user == BOT_USER_ID, "tz": "UTC",
            "profile": {"display_name": name, "real_name": name}}}

    async def _reactions_add(self, params: Params) -> Params:
        channel = self._conversation(str(params.get("channel", "")))
        name = str(params.get("name", ""))
        if not name:
            raise SlackRefusal("invalid_name")
        for message in channel.messages:
            if message.ts == params.get("timestamp"):
                if name in message.reactions:
                    raise SlackRefusal("already_reacted")
                message.reactions.append(name)
                self._on_change()
                return {"ok": True}
        raise SlackRefusal("message_not_found")

    async def _reactions_remove(self, params: Params) -> Params:
        channel = self._conversation(str(params.get("channel", "")))
        name = str(params.get("name", ""))
        for message in channel.messages:
            if message.ts == params.get("timestamp"):
                if name not in message.reactions:
                    raise SlackRefusal("no_reaction")
                message.reactions.remove(name)
                self._on_change()
                return {"ok": True}
        raise SlackRefusal("message_not_found")


def _reply_body(answer: str) -> dict[str, Any]:
    """A slash command's HTTP answer as Slack reads it: JSON, or plain text."""
    try:
        body = json.loads(answer)
    except ValueError:
        return {"text": answer}
    return body if isinstance(body, dict) else {"text": answer}

