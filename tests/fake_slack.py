"""A fake Slack service for end-to-end tests: Web API, response_url and Socket Mode.

This module owns everything the bridge's Slack side talks to when it is not talking to Slack:

* the Web API under ``/api/<method>`` (what ``AsyncWebClient(base_url=fake.api_url)`` calls),
  answering in Slack's wire format and refusing what Slack refuses (bad token, missing channel,
  oversize blocks, rate limits), so a bridge bug cannot pass here and fail in production;
* ``response_url`` endpoints under ``/response/<id>`` for slash command replies;
* a Socket Mode WebSocket under ``/socket-mode/<id>`` that greets with ``hello``, delivers
  envelopes and collects the app's acks, compatible with ``slack_sdk.socket_mode.aiohttp``
  (which bolt's ``AsyncSocketModeHandler`` uses);
* helpers that build what Slack sends to an app (slash command payloads, signed HTTP bodies,
  message events), so tests do not each re-invent Slack's payload shapes.

It runs inside the test's event loop on 127.0.0.1 with a random free port. Tests assert on what
arrived (``posts``, ``responses``, ``calls``), never on how the bridge produced it.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp
from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier

from bridge.demo.slack_web_api import MessageClock, Params, SlackRefusal, read_params, slack_escape

# Identities the fake answers with; tests can compare against these.
TEAM_ID = "T0TEAM1"
TEAM_DOMAIN = "fake"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
APP_ID = "A0APP"
# The legacy verification token Slack still puts in every payload; bolt ignores it.
VERIFICATION_TOKEN = "fake-verification-token"
BOT_SCOPES = (
    "commands,chat:write,chat:write.public,channels:history,groups:history,users:read,"
    "channels:read,groups:read,reactions:write"
)

# Limits Slack enforces on messages (see /work/shared/FACTS.md, Slack section).
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_TEXT_OBJECT = 3000
MAX_CONTEXT_ELEMENTS = 10
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_BLOCKS_TOTAL_TEXT = 12000
MAX_MESSAGE_TEXT = 40000
# Slack allows a response_url to be used 5 times (within 30 minutes).
MAX_RESPONSE_URL_USES = 5
# Views (modals and the App Home) and interactivity.
TRIGGER_LIFETIME = 3.0  # a trigger_id opens one view, within 3 s of the user's action
MAX_VIEW_BLOCKS = 100
MAX_VIEW_TITLE = 24  # title, submit and close labels
MAX_PRIVATE_METADATA = 3000
MAX_CALLBACK_ID = 255
MAX_OPTIONS = 100  # per block_suggestion answer
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
INTERACTION_DEADLINE = 3.0  # options and view_submission must be answered within 3 s

# Methods that take the app-level (xapp-) token; every other method takes the bot token.
_APP_TOKEN_METHODS = frozenset({"apps.connections.open"})


@dataclass
class _Fault:
    """One queued fault for a Web API method (see ``FakeSlack.fail_next``)."""

    status: int
    remaining: int
    retry_after: int | None
    error: str | None
    delay: float
    processed: bool = False  # the call takes effect, then the error is answered anyway
    body: str | None = None  # answer this raw body instead of Slack's JSON
    content_type: str = "text/html"


@dataclass
class _TokenBucket:
    """Slack-like per-channel rate limit: ``rate`` tokens a second, at most ``burst`` saved."""

    rate: float
    burst: int
    tokens: dict[str, float] = field(default_factory=dict)
    updated: dict[str, float] = field(default_factory=dict)

    def take(self, key: str, now: float) -> int | None:
        """Take one token for ``key``; None if allowed, else the Retry-After seconds (>= 1)."""
        tokens = self.tokens.get(key, float(self.burst))
        last = self.updated.get(key, now)
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        self.updated[key] = now
        if tokens >= 1.0:
            self.tokens[key] = tokens - 1.0
            return None
        self.tokens[key] = tokens
        # Slack sends whole seconds and never 0, so a client that honours it always backs off.
        return max(1, math.ceil((1.0 - tokens) / self.rate))


def _text_of(obj: Any) -> str:
    """The string of a text object (``{"type": "mrkdwn", "text": ...}``), or "" if malformed."""
    if isinstance(obj, dict) and isinstance(obj.get("text"), str):
        return str(obj["text"])
    return ""


def _all_text_length(value: Any) -> int:
    """Characters in every ``text`` string anywhere in a block tree (what Slack totals)."""
    if isinstance(value, list):
        return sum(_all_text_length(v) for v in value)
    if isinstance(value, dict):
        total = 0
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                total += len(item)
            else:
                total += _all_text_length(item)
        return total
    return 0


def _text_objects(value: Any) -> list[str]:
    """Every text object's string anywhere in a block tree (mrkdwn or plain_text)."""
    if isinstance(value, list):
        return [t for v in value for t in _text_objects(v)]
    if isinstance(value, dict):
        if value.get("type") in ("mrkdwn", "plain_text") and isinstance(value.get("text"), str):
            return [value["text"]]
        return [t for v in value.values() for t in _text_objects(v)]
    return []


def check_blocks(blocks: Any) -> None:
    """Raise SlackRefusal for blocks Slack would refuse; the limits Slack documents."""
    if not isinstance(blocks, list):
        raise SlackRefusal("invalid_blocks_format")
    if len(blocks) > MAX_BLOCKS:
        raise SlackRefusal("invalid_blocks")
    # Any text object (a context element, a section's text, a field...) holds at most 3,000
    # characters, counted as sent (so after escaping: one "&" is five).
    if any(len(t) > MAX_TEXT_OBJECT for t in _text_objects(blocks)):
        raise SlackRefusal("invalid_blocks")
    for block in blocks:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise SlackRefusal("invalid_blocks")
        kind = block["type"]
        if kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements or \
                    len(elements) > MAX_CONTEXT_ELEMENTS:
                raise SlackRefusal("invalid_blocks")
            if any(isinstance(e, dict) and e.get("type") in ("mrkdwn", "plain_text")
                   and not _text_of(e) for e in elements):
                raise SlackRefusal("invalid_blocks")
        if kind == "section":
            text = block.get("text")
            fields = block.get("fields")
            if text is None and not fields:
                raise SlackRefusal("invalid_blocks")
            if text is not None:
                body = _text_of(text)
                if not body or len(body) > MAX_SECTION_TEXT:
                    raise SlackRefusal("invalid_blocks")
            if fields is not None:
                if not isinstance(fields, list) or len(fields) > MAX_SECTION_FIELDS:
                    raise SlackRefusal("invalid_blocks")
                for item in fields:
                    body = _text_of(item)
                    if not body or len(body) > MAX_FIELD_TEXT:
                        raise SlackRefusal("invalid_blocks")
        elif kind == "header":
            text = block.get("text")
            body = _text_of(text)
            # A header takes plain_text only.
            if (
                not isinstance(text, dict)
                or text.get("type") != "plain_text"
                or not body
                or len(body) > MAX_HEADER_TEXT
            ):
                raise SlackRefusal("invalid_blocks")
    if _all_text_length(blocks) > MAX_BLOCKS_TOTAL_TEXT:
        raise SlackRefusal("msg_blocks_too_long")


def _label(obj: Any, limit: int) -> None:
    if not isinstance(obj, dict) or obj.get("type") != "plain_text":
        raise SlackRefusal("invalid_arguments")
    body = _text_of(obj)
    if not body or len(body) > limit:
        raise SlackRefusal("invalid_arguments")


def check_view(view: Any, *, kind: str) -> None:
    """Raise SlackRefusal for a view (``modal`` or ``home``) that Slack would refuse."""
    if not isinstance(view, dict) or view.get("type") != kind:
        raise SlackRefusal("invalid_arguments")
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or len(blocks) > MAX_VIEW_BLOCKS:
        raise SlackRefusal("invalid_arguments")
    if kind == "modal":
        _label(view.get("title"), MAX_VIEW_TITLE)
        for key in ("submit", "close"):
            if key in view:
                _label(view[key], MAX_VIEW_TITLE)
        if any(b.get("type") == "input" for b in blocks if isinstance(b, dict)) \
                and "submit" not in view:
            raise SlackRefusal("invalid_arguments")  # inputs need a submit button
    if len(str(view.get("private_metadata", ""))) > MAX_PRIVATE_METADATA:
        raise SlackRefusal("invalid_arguments")
    if len(str(view.get("callback_id", ""))) > MAX_CALLBACK_ID:
        raise SlackRefusal("invalid_arguments")
    block_ids = [b.get("block_id") for b in blocks if isinstance(b, dict) and b.get("block_id")]
    if len(block_ids) != len(set(block_ids)):
        raise SlackRefusal("invalid_arguments")  # duplicate block_id
    for block in blocks:
        if not isinstance(block, dict):
            raise SlackRefusal("invalid_blocks")
        if block.get("type") == "input":
            _label(block.get("label"), 2000)
            element = block.get("element")
            if not isinstance(element, dict) or not element.get("type"):
                raise SlackRefusal("invalid_blocks")
            if element.get("type") == "plain_text_input":
                initial = element.get("initial_value")
                limit = int(element.get("max_length") or 3000)
                if limit > 3000 or (isinstance(initial, str) and len(initial) > limit):
                    raise SlackRefusal("invalid_blocks")
        else:
            check_blocks([block])  # the message rules for section, header, ...


def check_options_answer(answer: Any) -> list[dict[str, Any]]:
    """The options of a block_suggestion answer; AssertionError where Slack would refuse it
    (and show the user "no results")."""
    assert isinstance(answer, dict) and isinstance(answer.get("options"), list), answer
    options: list[dict[str, Any]] = answer["options"]
    assert len(options) <= MAX_OPTIONS, f"{len(options)} options (Slack shows at most 100)"
    for option in options:
        text = option.get("text") or {}
        assert text.get("type") == "plain_text", option
        assert 0 < len(text.get("text", "")) <= MAX_OPTION_TEXT, option
        assert 0 < len(str(option.get("value", ""))) <= MAX_OPTION_VALUE, option
    return options


class FakeSlack:
    """A local Slack: start it, point the bridge at ``api_url``, assert on what arrived."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test",
        app_token: str = "xapp-test",
        signing_secret: str = "test-signing-secret",
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        # What the bot token was granted (the x-oauth-scopes header); tests may change it.
        self.scopes: list[str] = BOT_SCOPES.split(",")
        # Channels the bot is not a member of (a private one is then invisible to it) and
        # private channels; every other channel is public with the bot in it.
        self.channels_without_bot: set[str] = set()
        self.private_channels: set[str] = set()

        self.posts: list[dict[str, Any]] = []
        self.rate_limited = 0  # calls answered 429 by rate_limit()'s buckets
        # User groups and their members, for usergroups.users.list.
        self.usergroups: dict[str, set[str]] = {}
        # The bot's reactions: (channel, message ts) -> reaction names.
        self.reactions: dict[tuple[str, str], set[str]] = {}
        self.responses: list[dict[str, Any]] = []
        # POSTs to a response_url that Slack would refuse (unknown id, used too often, bad body):
        # kept apart so `responses` only holds what a user would actually see.
        self.refused_responses: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        # Every message received from Socket Mode clients that carried an envelope_id.
        self.socket_acks: list[dict[str, Any]] = []
        # Modals opened (views.open, accepted ones) and App Home views published, per user.
        self.opened_views: list[dict[str, Any]] = []
        self.home_views: dict[str, list[dict[str, Any]]] = {}
        self._triggers: dict[str, float] = {}  # trigger_id -> monotonic time issued
        self._used_triggers: set[str] = set()

        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._changed = asyncio.Condition()
        self._faults: dict[str, list[_Fault]] = {}
        self._limits: dict[str, _TokenBucket] = {}
        self._response_urls: dict[str, int] = {}  # id -> times used
        self._socket_ids: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_connected = asyncio.Event()
        self._pending_acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._clock = MessageClock()
        self._ids = 0

        handlers: dict[str, Callable[[Params], Awaitable[Params]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.update": self._chat_update,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
            "conversations.members": self._conversations_members,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "usergroups.users.list": self._usergroups_users_list,
            "apps.connections.open": self._apps_connections_open,
            "views.open": self._views_open,
            "views.publish": self._views_publish,
        }
        self._handlers = handlers

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Serve on 127.0.0.1 at a free port chosen by the OS."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{id}", self._handle_response_url)
        app.router.add_get("/socket-mode/{id}", self._handle_socket)
        # A short shutdown timeout: a handler sleeping in an injected delay must not hold stop().
        self._runner = web.AppRunner(app, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Close Socket Mode connections and the server; wakes any injected delays."""
        self._stopping.set()
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutting down")
        for future in self._pending_acks.values():
            future.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeSlack is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        """The Web API base URL for ``AsyncWebClient(base_url=...)`` (with trailing slash)."""
        return f"{self.base_url}/api/"

    def _new_id(self) -> str:
        self._ids += 1
        return f"{self._ids:04d}{uuid.uuid4().hex[:12]}"

    def new_response_url(self) -> str:
        """A fresh response_url, usable MAX_RESPONSE_URL_USES times like Slack's."""
        rid = self._new_id()
        self._response_urls[rid] = 0
        return f"{self.base_url}/response/{rid}"

    def _next_ts(self) -> str:
        return self._clock.next_ts()

    # ------------------------------------------------------------------ waiting

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_until(
        self, done: Callable[[], bool], timeout: float, describe: Callable[[], str]
    ) -> None:
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(done), timeout)
        except TimeoutError:
            raise AssertionError(describe()) from None

    def _describe_calls(self) -> str:
        recent = [
            f"{name}({ {k: v for k, v in params.items() if k in ('channel', 'text')} })"
            for name, params in self.calls[-10:]
        ]
        return f"last Web API calls: {recent}"

    async def wait_for_posts(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` messages were posted; AssertionError says what arrived."""
        await self._wait_until(
            lambda: len(self.posts) >= n,
            timeout,
            lambda: (
                f"expected {n} chat.postMessage posts within {timeout}s, got {len(self.posts)}: "
                f"{[(p.get('channel'), p.get('text')) for p in self.posts]}; "
                + self._describe_calls()
            ),
        )
        return list(self.posts)

    async def wait_for_responses(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` response_url POSTs were accepted."""
        await self._wait_until(
            lambda: len(self.responses) >= n,
            timeout,
            lambda: (
                f"expected {n} response_url POSTs within {timeout}s, got {len(self.responses)}: "
                f"{[r.get('text') for r in self.responses]}; refused: {self.refused_responses}"
            ),
        )
        return list(self.responses)

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        """The params of every call of one Web API method, refused ones included."""
        return [params for name, params in self.calls if name == method]

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        method: str,
        *,
        status: int = 500,
        times: int = 1,
        retry_after: int | None = None,
        error: str | None = None,
        delay: float = 0.0,
        processed: bool = False,
        body: str | None = None,
        content_type: str = "text/html",
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail.

        The answer is HTTP ``status`` with body ``{"ok": false, "error": ...}`` (``error``, or
        ``ratelimited`` for 429, ``fatal_error`` otherwise); a 429 carries ``Retry-After`` when
        ``retry_after`` is given. With ``status=200`` and an ``error`` the answer is Slack's usual
        HTTP 200 refusal. With ``status=200`` and no ``error`` the call is answered normally, only
        late. ``delay`` seconds pass before answering, to simulate a hang past a client timeout.
        ``processed``: the call takes effect (the message is posted) at once, before the
        delay and the error, as Slack warns may happen with ``internal_error``; with
        ``status=200`` and no ``error`` its own answer comes after the delay (Slack has posted
        the message, and everyone in the channel sees it, before the poster hears back). ``body``: the answer is
        this raw body (``content_type``, HTML by default) with ``status``, as a proxy in front
        of Slack sends, or any odd shape (``'[1]'``, ``'{"ok": true}'``) to test a client.
        """
        fault = _Fault(status, times, retry_after, error, delay, processed, body,
                       content_type)
        self._faults.setdefault(method, []).append(fault)

    def clear_faults(self) -> None:
        """Forget every fault still pending from fail_next()."""
        self._faults.clear()

    def reset(self) -> None:
        """Back to a fresh Slack for the next test: no records, faults or rate limits."""
        self.posts.clear()
        self.responses.clear()
        self.calls.clear()
        self.reactions.clear()
        self.usergroups.clear()
        self._faults.clear()
        self._limits.clear()
        self.rate_limited = 0
        self.opened_views.clear()
        self.home_views.clear()

    def rate_limit(
        self,
        method: str = "chat.postMessage",
        *,
        per_channel_per_second: float = 1.0,
        burst: int = 1,
    ) -> None:
        """Limit ``method`` per channel with a token bucket; over it answer 429 + Retry-After."""
        self._limits[method] = _TokenBucket(rate=per_channel_per_second, burst=burst)

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.pop(0)
        return fault

    async def _sleep_unless_stopping(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            pass

    # ------------------------------------------------------------------ Web API

    def _check_token(self, request: web.Request, method: str) -> None:
        header = request.headers.get("Authorization", "")
        if not header:
            # Slack's answer when no token is given at all.
            raise SlackRefusal("not_authed")
        wanted = self.app_token if method in _APP_TOKEN_METHODS else self.bot_token
        other = self.bot_token if method in _APP_TOKEN_METHODS else self.app_token
        if header == f"Bearer {wanted}":
            return
        if header == f"Bearer {other}":
            raise SlackRefusal("not_allowed_token_type")
        raise SlackRefusal("invalid_auth")

    def _check_rate_limit(self, method: str, params: Params) -> int | None:
        bucket = self._limits.get(method)
        if bucket is None:
            return None
        return bucket.take(str(params.get("channel", "")), time.monotonic())

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        scopes = ",".join(self.scopes)
        headers = {"x-oauth-scopes": scopes} if method not in _APP_TOKEN_METHODS else {}
        try:
            params = await read_params(request)
        except SlackRefusal as refusal:
            self.calls.append((method, {}))
            await self._notify()
            return web.json_response({"ok": False, "error": refusal.error}, headers=headers)
        self.calls.append((method, params))
        await self._notify()

        fault = self._take_fault(method)
        if fault is not None:
            processed: Params = {"ok": False, "error": "unknown_method"}
            if fault.processed:  # it takes effect now; its answer comes after the delay
                handler = self._handlers.get(method)
                if handler is not None:
                    try:
                        processed = await handler(params)
                    except SlackRefusal as refusal:
                        processed = {"ok": False, "error": refusal.error}
            if fault.delay > 0:
                await self._sleep_unless_stopping(fault.delay)
            if fault.processed and fault.status == 200 and fault.error is None:
                return web.json_response(processed, headers=headers)
            if fault.body is not None:
                return web.Response(status=fault.status, text=fault.body,
                                    content_type=fault.content_type)
            if not (fault.status == 200 and fault.error is None):
                error = fault.error or ("ratelimited" if fault.status == 429 else "fatal_error")
                fault_headers = dict(headers)
                if fault.status == 429 and fault.retry_after is not None:
                    fault_headers["Retry-After"] = str(fault.retry_after)
                return web.json_response(
                    {"ok": False, "error": error}, status=fault.status, headers=fault_headers
                )

        try:
            self._check_token(request, method)
            retry_after = self._check_rate_limit(method, params)
            if retry_after is not None:
                self.rate_limited += 1
                return web.json_response(
                    {"ok": False, "error": "ratelimited"},
                    status=429,
                    headers={**headers, "Retry-After": str(retry_after)},
                )
            handler = self._handlers.get(method)
            if handler is None:
                raise SlackRefusal("unknown_method")
            body = await handler(params)
        except SlackRefusal as refusal:
            body = {"ok": False, "error": refusal.error}
        return web.json_response(body, headers=headers)

    async def _auth_test(self, params: Params) -> Params:
        return {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": "Fake",
            "user": "bridge",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    @staticmethod
    def _require_message_content(params: Params) -> None:
        if not params.get("channel"):
            raise SlackRefusal("channel_not_found")
        blocks = params.get("blocks")
        if blocks is not None:
            check_blocks(blocks)
        if not params.get("text") and not blocks and not params.get("attachments"):
            raise SlackRefusal("no_text")

    def _bot_message(self, params: Params, ts: str) -> Params:
        message: Params = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "text": params.get("text", ""),
            "ts": ts,
        }
        for key in ("blocks", "attachments", "thread_ts"):
            if key in params:
                message[key] = params[key]
        return message

    async def _chat_post_message(self, params: Params) -> Params:
        self._require_message_content(params)
        post = dict(params)
        text = post.get("text")
        if isinstance(text, str) and len(text) > MAX_MESSAGE_TEXT:
            # Slack keeps the message but cuts its text.
            post["text"] = text[:MAX_MESSAGE_TEXT]
        ts = self._next_ts()
        post["ts"] = ts
        self.posts.append(post)
        await self._notify()
        return {
            "ok": True,
            "channel": post["channel"],
            "ts": ts,
            "message": self._bot_message(post, ts),
        }

    async def _chat_post_ephemeral(self, params: Params) -> Params:
        self._require_message_content(params)
        if not params.get("user"):
            raise SlackRefusal("user_not_found")
        return {"ok": True, "message_ts": self._next_ts()}

    async def _chat_update(self, params: Params) -> Params:
        channel, ts = params.get("channel"), params.get("ts")
        if not channel:
            raise SlackRefusal("channel_not_found")
        if not any(p["channel"] == channel and p["ts"] == ts for p in self.posts):
            raise SlackRefusal("message_not_found")
        blocks = params.get("blocks")
        if blocks is not None:
            check_blocks(blocks)
        if not params.get("text") and not blocks and not params.get("attachments"):
            raise SlackRefusal("no_text")
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": params.get("text", ""),
            "message": self._bot_message(params, str(ts)),
        }

    async def _users_info(self, params: Params) -> Params:
        user_id = params.get("user")
        if not user_id:
            raise SlackRefusal("user_not_found")
        name = f"{user_id}-name"
        return {
            "ok": True,
            "user": {
                "id": user_id,
                "team_id": TEAM_ID,
                "name": name,
                "deleted": False,
                "real_name": name,
                "is_bot": False,
                "is_app_user": False,
                "tz": "Europe/London",
                "profile": {
                    "display_name": name,
                    "display_name_normalized": name,
                    "real_name": name,
                    "real_name_normalized": name,
                    "team": TEAM_ID,
                },
            },
        }

    async def _conversations_info(self, params: Params) -> Params:
        channel = params.get("channel")
        if not {"channels:read", "groups:read"} & set(self.scopes):
            raise SlackRefusal("missing_scope")
        if not channel:
            raise SlackRefusal("channel_not_found")
        private = channel in self.private_channels
        member = channel not in self.channels_without_bot
        if private and not member:
            raise SlackRefusal("channel_not_found")  # Slack hides private channels from outsiders
        name = str(channel).lower()
        return {
            "ok": True,
            "channel": {
                "id": channel,
                "name": name,
                "name_normalized": name,
                "is_channel": True,
                "is_group": private,
                "is_im": False,
                "is_private": private,
                "is_archived": False,
                "is_member": member,
                "created": 1_600_000_000,
                "creator": "U0USER1",
                "context_team_id": TEAM_ID,
            },
        }

    async def _conversations_members(self, params: Params) -> Params:
        if not params.get("channel"):
            raise SlackRefusal("channel_not_found")
        return {"ok": True, "members": [BOT_USER_ID], "response_metadata": {"next_cursor": ""}}

    async def _conversations_history(self, params: Params) -> Params:
        """The channel's top-level messages (posted through this fake), newest first, like
        Slack: replies in a thread are not in the history (conversations.replies has them).

        Message metadata is included only with `include_all_metadata`, as Slack does.
        """
        channel = params.get("channel")
        if not channel:
            raise SlackRefusal("channel_not_found")
        oldest = float(params.get("oldest") or 0)
        limit = int(params.get("limit") or 100)
        with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        found = [p for p in self.posts if p["channel"] == channel and float(p["ts"]) > oldest
                 and not p.get("thread_ts")]
        found.reverse()
        start = int(params.get("cursor") or 0)
        page = found[start:start + limit]
        messages = []
        for post in page:
            message = self._bot_message(post, post["ts"])
            if with_metadata and "metadata" in post:
                message["metadata"] = post["metadata"]
            messages.append(message)
        more = start + limit < len(found)
        return {"ok": True, "messages": messages, "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    async def _conversations_replies(self, params: Params) -> Params:
        """A thread: its parent, then its replies oldest first, like Slack."""
        channel = params.get("channel")
        thread = params.get("ts")
        if not channel:
            raise SlackRefusal("channel_not_found")
        parent = [p for p in self.posts if p["channel"] == channel and p["ts"] == thread]
        if not parent:
            raise SlackRefusal("thread_not_found")
        oldest = float(params.get("oldest") or 0)
        limit = int(params.get("limit") or 100)
        with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        found = parent + [p for p in self.posts if p["channel"] == channel
                          and p.get("thread_ts") == thread and float(p["ts"]) > oldest]
        start = int(params.get("cursor") or 0)
        messages = []
        for post in found[start:start + limit]:
            message = self._bot_message(post, post["ts"])
            if with_metadata and "metadata" in post:
                message["metadata"] = post["metadata"]
            messages.append(message)
        more = start + limit < len(found)
        return {"ok": True, "messages": messages, "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    async def _reactions_add(self, params: Params) -> Params:
        if not params.get("channel"):
            raise SlackRefusal("channel_not_found")
        if not params.get("timestamp"):
            raise SlackRefusal("message_not_found")
        if not params.get("name"):
            raise SlackRefusal("invalid_name")
        names = self.reactions.setdefault((params["channel"], params["timestamp"]), set())
        if params["name"] in names:
            raise SlackRefusal("already_reacted")
        names.add(params["name"])
        await self._notify()
        return {"ok": True}

    async def _reactions_remove(self, params: Params) -> Params:
        names = self.reactions.get((params.get("channel"), params.get("timestamp")), set())
        if params.get("name") not in names:
            raise SlackRefusal("no_reaction")
        names.discard(params["name"])
        await self._notify()
        return {"ok": True}

    async def _usergroups_users_list(self, params: Params) -> Params:
        group = str(params.get("usergroup") or "")
        if group not in self.usergroups:
            raise SlackRefusal("no_such_subteam")
        return {"ok": True, "users": sorted(self.usergroups[group])}

    def reactions_on(self, channel: str, ts: str) -> set[str]:
        """The bot's reactions now on a message."""
        return set(self.reactions.get((channel, ts), set()))

    async def _apps_connections_open(self, params: Params) -> Params:
        sid = self._new_id()
        self._socket_ids.add(sid)
        return {"ok": True, "url": f"ws://127.0.0.1:{self._port}/socket-mode/{sid}"}

    # ------------------------------------------------------------------ views

    def new_trigger_id(self) -> str:
        """A trigger_id as Slack puts in a user's action: opens one view, within 3 s."""
        self._ids += 1
        trigger = f"{self._ids}.1700000000.{uuid.uuid4().hex}"
        self._triggers[trigger] = time.monotonic()
        return trigger

    def expire_trigger(self, trigger_id: str) -> None:
        """Age a trigger_id past its 3 s (a slow app, or a delivery Slack retried late)."""
        self._triggers[trigger_id] = time.monotonic() - TRIGGER_LIFETIME - 1

    async def _views_open(self, params: Params) -> Params:
        trigger = str(params.get("trigger_id") or "")
        view = params.get("view")
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except ValueError:
                raise SlackRefusal("invalid_arguments") from None
        issued = self._triggers.get(trigger)
        if issued is None:
            raise SlackRefusal("invalid_trigger_id")
        if trigger in self._used_triggers:
            raise SlackRefusal("exchanged_trigger_id")
        if time.monotonic() - issued > TRIGGER_LIFETIME:
            raise SlackRefusal("expired_trigger_id")
        check_view(view, kind="modal")
        self._used_triggers.add(trigger)
        opened = {**view, "id": f"V{self._new_id().upper()}"}
        self.opened_views.append(opened)
        await self._notify()
        return {"ok": True, "view": opened}

    async def _views_publish(self, params: Params) -> Params:
        user = str(params.get("user_id") or "")
        view = params.get("view")
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except ValueError:
                raise SlackRefusal("invalid_arguments") from None
        if not user.startswith(("U", "W")):
            raise SlackRefusal("invalid_arguments")
        check_view(view, kind="home")
        published = {**view, "id": f"V{self._new_id().upper()}"}
        self.home_views.setdefault(user, []).append(published)
        await self._notify()
        return {"ok": True, "view": published}

    async def wait_for_view(self, n: int = 1, timeout: float = 5.0) -> dict[str, Any]:
        """Wait until ``n`` modals were opened; the ``n``-th."""
        await self._wait_until(
            lambda: len(self.opened_views) >= n, timeout,
            lambda: f"expected {n} modals opened, got {len(self.opened_views)}; "
                    + self._describe_calls())
        return self.opened_views[n - 1]

    async def wait_for_home(self, user: str, n: int = 1,
                            timeout: float = 5.0) -> dict[str, Any]:
        """Wait until ``n`` App Home views were published for ``user``; the latest."""
        await self._wait_until(
            lambda: len(self.home_views.get(user, [])) >= n, timeout,
            lambda: f"expected {n} Home views for {user}, got "
                    f"{len(self.home_views.get(user, []))}; " + self._describe_calls())
        return self.home_views[user][-1]

    # ------------------------------------------------------------------ response_url

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        rid = request.match_info["id"]
        url = f"{self.base_url}/response/{rid}"
        raw = await request.text()

        def refuse(status: int, error: str) -> web.Response:
            self.refused_responses.append({"response_url": url, "body": raw, "error": error})
            return web.Response(status=status, text=error)

        if rid not in self._response_urls:
            return refuse(404, "expired_url")
        if self._response_urls[rid] >= MAX_RESPONSE_URL_USES:
            return refuse(404, "used_url")
        try:
            body = json.loads(raw)
        except ValueError:
            return refuse(400, "invalid_payload")
        if not isinstance(body, dict):
            return refuse(400, "invalid_payload")
        blocks = body.get("blocks")
        try:
            if blocks is not None:
                check_blocks(blocks)
        except SlackRefusal as refusal:
            return refuse(400, refusal.error)
        if not body.get("text") and not blocks and not body.get("delete_original"):
            return refuse(400, "no_text")
        self._response_urls[rid] += 1
        self.responses.append({**body, "response_url": url})
        await self._notify()
        return web.Response(text="ok")

    # ------------------------------------------------------------------ Socket Mode

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["id"] not in self._socket_ids:
            # Slack refuses the handshake for a URL it never issued.
            return web.Response(status=401, text="invalid ticket")
        # autoping answers the client's sdk-ping-pong pings, which it uses to detect stale links.
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {"host": "fake", "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            }
        )
        self._socket_connected.set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if not isinstance(data, dict) or "envelope_id" not in data:
                    continue
                self.socket_acks.append(data)
                future = self._pending_acks.pop(str(data["envelope_id"]), None)
                if future is not None and not future.done():
                    future.set_result(data)
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self._socket_connected.clear()
        return ws

    @property
    def socket_connected(self) -> bool:
        """True while at least one Socket Mode client is connected."""
        return bool(self._sockets)

    async def wait_socket_connected(self, timeout: float = 10.0) -> None:
        """Wait until a Socket Mode client has connected and been sent ``hello``."""
        try:
            await asyncio.wait_for(self._socket_connected.wait(), timeout)
        except TimeoutError:
            opens = len(self.calls_of("apps.connections.open"))
            raise AssertionError(
                f"no Socket Mode client connected within {timeout}s "
                f"(apps.connections.open called {opens} times)"
            ) from None

    @property
    def live_sockets(self) -> int:
        """Socket Mode connections open now."""
        return sum(1 for ws in self._sockets if not ws.closed)

    def _live_socket(self, connection: int | None = None) -> web.WebSocketResponse:
        live = [ws for ws in self._sockets if not ws.closed]
        if not live:
            raise AssertionError("no Socket Mode client is connected")
        # Slack spreads envelopes over connections; the newest one is as good as any.
        return live[-1] if connection is None else live[connection % len(live)]

    async def send_socket_envelope(
        self, type: str, payload: dict[str, Any], *, timeout: float = 5.0,
        connection: int | None = None,
    ) -> dict[str, Any]:
        """Deliver an envelope to the connected client and return its ack (parsed JSON);
        `connection` picks one of several open connections (in the order they opened)."""
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": type,
            "payload": payload,
            "accepts_response_payload": type in ("slash_commands", "interactive"),
        }
        if type == "events_api":
            envelope["retry_attempt"] = 0
            envelope["retry_reason"] = ""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending_acks[envelope_id] = future
        try:
            await self._live_socket(connection).send_json(envelope)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AssertionError(
                f"no ack for {type} envelope {envelope_id} within {timeout}s "
                "(Slack would retry or show the user an error)"
            ) from None
        finally:
            self._pending_acks.pop(envelope_id, None)

    async def send_socket_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the clients to reconnect, as Slack does every few hours."""
        for ws in list(self._sockets):
            await ws.send_json(
                {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}}
            )

    # ------------------------------------------------------------------ payload builders

    def slash_command_payload(
        self,
        *,
        command: str = "/sip",
        text: str,
        user_id: str = "U0USER1",
        user_name: str = "alice.smith",
        channel_id: str = "C0CHAN1",
        team_id: str = TEAM_ID,
        escaped: bool = False,
    ) -> dict[str, str]:
        """Every field Slack sends for a slash command.

        ``text`` is what the user typed; Slack escapes ``&``, ``<``, ``>`` before sending, so this
        does too unless ``escaped=True`` (text already in wire form, e.g. ``<@U123|bob>``).
        """
        self._ids += 1
        return {
            "token": VERIFICATION_TOKEN,
            "team_id": team_id,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel_id,
            "channel_name": channel_id.lower(),
            "user_id": user_id,
            "user_name": user_name,
            "command": command,
            "text": text if escaped else slack_escape(text),
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": self.new_response_url(),
            "trigger_id": self.new_trigger_id(),
        }

    def message_event_payload(
        self,
        *,
        text: str,
        user_id: str = "U0USER1",
        channel_id: str = "C0CHAN1",
        ts: str | None = None,
        thread_ts: str | None = None,
        escaped: bool = False,
    ) -> dict[str, Any]:
        """An ``event_callback`` payload for a user's channel message (``message.channels``).

        Give ``thread_ts`` for a reply in a thread. ``text`` is escaped like Slack does unless
        ``escaped=True``. Send it with ``send_socket_envelope("events_api", payload)``.
        """
        ts = ts or self._next_ts()
        event: dict[str, Any] = {
            "type": "message",
            "client_msg_id": str(uuid.uuid4()),
            "user": user_id,
            "text": text if escaped else slack_escape(text),
            "ts": ts,
            "team": TEAM_ID,
            "channel": channel_id,
            "event_ts": ts,
            "channel_type": "channel",
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = BOT_USER_ID
        return {
            "token": VERIFICATION_TOKEN,
            "team_id": TEAM_ID,
            "context_team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(float(ts)),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": TEAM_ID,
                    "user_id": BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }

    def signed_event(
        self, payload: dict[str, Any], *, retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> tuple[bytes, dict[str, str]]:
        """The JSON body and headers of an Events API delivery to an HTTP Request URL.

        ``retry_num`` marks it as Slack's retry of an earlier delivery of the same event.
        """
        body = json.dumps(payload)
        ts = int(time.time())
        signature = SignatureVerifier(self.signing_secret).generate_signature(
            timestamp=str(ts), body=body)
        assert signature is not None
        headers = {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": signature,
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        return body.encode("utf-8"), headers

    def signed_slash_command(
        self,
        payload: dict[str, Any],
        *,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """The urlencoded body and headers Slack would send to an HTTP Request URL."""
        body = urllib.parse.urlencode(payload)
        ts = int(time.time()) if timestamp is None else timestamp
        verifier = SignatureVerifier(secret if secret is not None else self.signing_secret)
        signature = verifier.generate_signature(timestamp=str(ts), body=body)
        assert signature is not None  # None only when the timestamp or body is missing
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": signature,
        }
        return body.encode("utf-8"), headers

    # ------------------------------------------------------------------ interactivity

    @staticmethod
    def _user(user_id: str, user_name: str) -> dict[str, str]:
        return {"id": user_id, "username": user_name, "name": user_name, "team_id": TEAM_ID}

    def _interaction(self, kind: str, user_id: str, user_name: str,
                     **fields: Any) -> dict[str, Any]:
        return {"type": kind, "token": VERIFICATION_TOKEN, "api_app_id": APP_ID,
                "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
                "user": self._user(user_id, user_name), "is_enterprise_install": False,
                **fields}

    def shortcut_payload(self, *, callback_id: str, user_id: str = "U0USER1",
                         user_name: str = "alice.smith") -> dict[str, Any]:
        """A global shortcut (lightning menu), as Slack sends it."""
        return self._interaction("shortcut", user_id, user_name, callback_id=callback_id,
                                 trigger_id=self.new_trigger_id(), action_ts=self._next_ts())

    def message_action_payload(self, *, callback_id: str, text: str,
                               user_id: str = "U0USER1", user_name: str = "alice.smith",
                               channel_id: str = "C0CHAN1", escaped: bool = False,
                               author: str = "U0USER2") -> dict[str, Any]:
        """A message shortcut on a message whose text is ``text`` (escaped like Slack's)."""
        ts = self._next_ts()
        return self._interaction(
            "message_action", user_id, user_name, callback_id=callback_id,
            trigger_id=self.new_trigger_id(), action_ts=ts, message_ts=ts,
            response_url=self.new_response_url(),
            channel={"id": channel_id, "name": channel_id.lower()},
            message={"type": "message", "user": author, "ts": ts,
                     "text": text if escaped else slack_escape(text)})

    @staticmethod
    def _view_state(view: dict[str, Any], values: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {**view, "team_id": TEAM_ID, "app_id": APP_ID, "bot_id": BOT_ID,
                "state": {"values": values}, "hash": uuid.uuid4().hex[:16]}

    def block_suggestion_payload(self, *, view: dict[str, Any], block_id: str,
                                 action_id: str, value: str, user_id: str = "U0USER1",
                                 user_name: str = "alice.smith") -> dict[str, Any]:
        """What Slack sends to the options load URL while the user types in a picker."""
        return self._interaction("block_suggestion", user_id, user_name, block_id=block_id,
                                 action_id=action_id, value=value,
                                 container={"type": "view", "view_id": view.get("id")},
                                 view=self._view_state(view, {}))

    def view_submission_payload(self, *, view: dict[str, Any],
                                values: dict[str, dict[str, Any]], user_id: str = "U0USER1",
                                user_name: str = "alice.smith") -> dict[str, Any]:
        """A modal's Send: ``values`` is Slack's view.state.values (block -> action -> value).

        Input values arrive as typed (Slack does not escape what is typed in an input)."""
        return self._interaction("view_submission", user_id, user_name,
                                 trigger_id=self.new_trigger_id(),
                                 view=self._view_state(view, values), response_urls=[])

    def block_actions_payload(self, *, message: dict[str, Any], action: dict[str, Any],
                              user_id: str = "U0USER1",
                              user_name: str = "alice.smith") -> dict[str, Any]:
        """A button pressed on a message the bot posted (``message``: one of ``posts``)."""
        pressed = {**action, "action_ts": self._next_ts()}
        return self._interaction(
            "block_actions", user_id, user_name, trigger_id=self.new_trigger_id(),
            container={"type": "message", "message_ts": message["ts"],
                       "channel_id": message["channel"], "is_ephemeral": False},
            channel={"id": message["channel"], "name": str(message["channel"]).lower()},
            message=self._bot_message(message, message["ts"]),
            response_url=self.new_response_url(), actions=[pressed])

    def view_block_actions_payload(self, *, view: dict[str, Any], action: dict[str, Any],
                                   user_id: str = "U0USER1",
                                   user_name: str = "alice.smith") -> dict[str, Any]:
        """A button pressed in a view (the App Home, a modal)."""
        pressed = {**action, "action_ts": self._next_ts()}
        return self._interaction(
            "block_actions", user_id, user_name, trigger_id=self.new_trigger_id(),
            container={"type": "view", "view_id": view.get("id")},
            view=self._view_state(view, {}), actions=[pressed])

    def app_home_opened_payload(self, *, user_id: str = "U0USER1") -> dict[str, Any]:
        """An ``event_callback`` for the user opening the app's Home tab."""
        ts = self._next_ts()
        return {"token": VERIFICATION_TOKEN, "team_id": TEAM_ID, "api_app_id": APP_ID,
                "type": "event_callback", "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
                "event_time": int(float(ts)),
                "event": {"type": "app_home_opened", "user": user_id, "channel": "D0HOME",
                          "tab": "home", "event_ts": ts},
                "authorizations": [{"enterprise_id": None, "team_id": TEAM_ID,
                                    "user_id": BOT_USER_ID, "is_bot": True,
                                    "is_enterprise_install": False}]}

    def signed_interaction(self, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The body (``payload=<json>``, urlencoded) and headers of an interactivity request,
        signed like slash commands."""
        return self.signed_slash_command({"payload": json.dumps(payload)})

    async def interact(self, payload: dict[str, Any], *,
                       events_url: str | None = None) -> tuple[dict[str, Any], float]:
        """Deliver an interactivity payload (or an ``event_callback``) as Slack would: signed
        over HTTP to ``events_url``, else as a Socket Mode envelope. Returns the app's answer
        (``{}`` for an empty 200) and how long it took; AssertionError when the app answered
        anything but 200, or later than Slack waits (3 s)."""
        is_event = payload.get("type") == "event_callback"
        started = time.monotonic()
        if events_url is None:
            ack = await self.send_socket_envelope(
                "events_api" if is_event else "interactive", payload,
                timeout=INTERACTION_DEADLINE)
            answer = ack.get("payload") or {}
        else:
            body, headers = (self.signed_event(payload) if is_event
                             else self.signed_interaction(payload))
            async with aiohttp.ClientSession() as session, session.post(
                    events_url, data=body, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=INTERACTION_DEADLINE)) as response:
                text = await response.text()
                assert response.status == 200, (response.status, text)
            answer = json.loads(text) if text.strip().startswith("{") else {}
        took = time.monotonic() - started
        assert took <= INTERACTION_DEADLINE, f"answered after {took:.2f} s"
        if payload.get("type") == "block_suggestion":
            check_options_answer(answer)
        if payload.get("type") == "view_submission" and answer:
            assert answer.get("response_action") in ("errors", "update", "push", "clear"), \
                answer
        return answer, took
