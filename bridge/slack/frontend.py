"""The Slack side: the bolt app, the `/sip` command, and its two transports.

The only module that imports slack_bolt. HTTP mode serves `POST /slack/events` on $PORT
(bolt checks every request's signature and age and answers 401 otherwise); Socket Mode
connects out with the app-level token and needs no public URL.

Every command is acknowledged well inside Slack's 3-second limit: help, list, status and
refusals are answered in the ack itself; a text is stored by the Outbox and acked with
"Sending…" (or "Queued…" while Asterisk is unreachable), and its outcome follows later
through the delivery feedback (`bridge/delivery/feedback.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bridge.core.directory import Endpoint
from bridge.core.errors import StoreError, TextRejected
from bridge.core.model import Accepted, PbxStatus, ThreadOwner
from bridge.core.presence import PhonePresence
from bridge.core.segments import segment_body
from bridge.core.texts import EchoText
from bridge.core.thread_replies import Ignore, Refuse, ThreadInfo, decide, reply_mode
from bridge.delivery.feedback import DeliveryFeedback
from bridge.delivery.gate import Gate
from bridge.delivery.inbound import InboundRelay
from bridge.delivery.outbound import OutboundText, Outbox, check_text
from bridge.ops import metrics
from bridge.settings.config import Settings
from bridge.slack.client import SlackActions
from bridge.slack.commands import Compose, Help, ListDirectory, Send, Status, parse_command
from bridge.slack.compose import (
    COMPOSE_SHORTCUT,
    COMPOSE_VIEW,
    MESSAGE_SHORTCUT,
    RECIPIENT_ACTION,
    ComposeFlow,
    ComposeOrigin,
)
from bridge.slack.home import HOME_COMPOSE_ACTION, HomeTab
from bridge.slack.identity import BotIdentity
from bridge.slack.messages import (
    RETRY_ACTION,
    cannot_store_text,
    help_text,
    list_text,
    not_sent_text,
    queued_text,
    sending_text,
    status_text,
)
from bridge.slack.retry import RetryButton
from bridge.slack.text import slack_to_plain, user_ids
from bridge.store.backend import StoreBackend

log = logging.getLogger(__name__)

# A thread started less than this many seconds ago (by its ts; Slack's clock may be a little
# ahead of ours) may not be recorded yet; its lookup waits up to _YOUNG_THREAD_WAIT seconds.
_YOUNG_THREAD = 10.0
_YOUNG_THREAD_WAIT = 1.5
# How long a slash command's answer waits for its text's outcome (Slack wants the answer
# within 3 s). Asterisk normally answers MessageSend in milliseconds; past this the answer
# says "Sending…" and the outcome follows through the response_url.
_ANSWER_WAIT = 1.0


class AmiState(Protocol):
    """What the command handler needs to know about each PBX's AMI link (implemented by
    `bridge.asterisk.links.PbxLinks`)."""

    def ready_for(self, pbx: str) -> bool: ...

    def statuses(self) -> list[PbxStatus]: ...


def _is_external(event: dict[str, Any], body: dict[str, Any]) -> bool:
    """The message's author belongs to another organisation (a Slack Connect channel): Slack
    names the author's workspace in `user_team`, and it is neither this workspace nor its
    Enterprise Grid organisation."""
    user_team = str(event.get("user_team") or "")
    if not user_team:
        return False
    home = {str(body.get("team_id") or ""), str(body.get("enterprise_id") or "")}
    for authorization in body.get("authorizations") or []:
        if isinstance(authorization, dict):
            home.add(str(authorization.get("team_id") or ""))
            home.add(str(authorization.get("enterprise_id") or ""))
    return user_team not in home - {""}


def _command_key(command: dict[str, Any]) -> str:
    """What identifies one invocation of a slash command: its trigger_id (Slack makes a new
    one each time), else a digest of the whole payload (identical only for a replay)."""
    trigger = str(command.get("trigger_id") or "")
    if trigger:
        return f"command:{trigger}"
    payload = json.dumps(command, sort_keys=True, default=str).encode("utf-8")
    return f"command-body:{hashlib.sha256(payload).hexdigest()}"


class TransportState(Protocol):
    """Where the frontend reports whether Slack can reach it (implemented by
    bridge.ops.health.SlackReachability): "" when it can, else why not."""

    def transport_state(self, problem: str) -> None: ...


class SlackFrontend:
    """Receives slash commands over HTTP or Socket Mode and answers them."""

    def __init__(self, *, settings: Settings, client: AsyncWebClient, actions: SlackActions,
                 outbox: Outbox, ami: AmiState, store: StoreBackend, relay: InboundRelay,
                 feedback: DeliveryFeedback, transport: TransportState,
                 presence: PhonePresence, home: HomeTab,
                 extra_routes: Callable[[web.Application], None] | None = None) -> None:
        self._settings = settings
        self._presence = presence  # who is registered (fed by the AMI link)
        self._home = home  # the App Home tab (bridge.slack.home)
        self._outbox = outbox
        self._ami = ami
        self._store = store
        self._relay = relay
        self._feedback = feedback
        self._transport = transport  # told whether Slack can reach the handlers (/healthz)
        self._actions = actions
        self._gate = Gate(directory=settings.directory, policy=settings.access, store=store,
                          groups=actions.user_groups_of,
                          default_channel=settings.slack.default_channel)
        slack = settings.slack
        # Bolt never calls auth.test per request: it gets the token and identity from here
        # (learned once, in the background: bridge.slack.identity).
        self.identity = BotIdentity(client, slack.bot_token.reveal())
        # Bolt's client carries no token (the authorize result gives each request one), so
        # bolt has nothing to warn about; it shares the bridge's session and Web API URL.
        bolt_client = AsyncWebClient(token=None, base_url=client.base_url,
                                     session=client.session, timeout=client.timeout,
                                     logger=client.logger)
        with _env_hidden("SLACK_BOT_TOKEN"):  # bolt warns when it finds a token there too
            self.app = self._bolt_app(bolt_client)
        # HTTP mode: the slash command's own check of signatures (`_slash_command`).
        self._verifier = (SignatureVerifier(slack.signing_secret.reveal())
                          if slack.signing_secret and not slack.socket_mode else None)
        self.app.command(slack.command)(self._on_command)
        self.app.event("message")(self._on_message)
        # The compose window (bridge.slack.compose): shortcuts, picker type-ahead, Send.
        self._compose = ComposeFlow(client=client, directory=settings.directory,
                                    policy=settings.access, admit=self._submit,
                                    display_names=self._actions.display_names,
                                    presence=self.presence_of)
        self.app.shortcut(COMPOSE_SHORTCUT)(self._compose.on_shortcut)
        self.app.shortcut(MESSAGE_SHORTCUT)(self._compose.on_message_shortcut)
        self.app.options(RECIPIENT_ACTION)(self._compose.on_options)
        self.app.view(COMPOSE_VIEW)(self._compose.on_submit)
        # The Retry button on a failed text's notice (bridge.slack.retry).
        self._retry = RetryButton(store=store, admit=self._submit)
        self.app.action(RETRY_ACTION)(self._retry.on_press)
        self.app.event("app_home_opened")(home.on_opened)
        self.app.action(HOME_COMPOSE_ACTION)(self._compose.on_shortcut)
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._socket_task: asyncio.Task[None] | None = None
        self._socket_problem = ""
        # More routes on the HTTP-mode server (bridge.ops.http: /healthz, /metrics).
        self._extra_routes = extra_routes

    def _bolt_app(self, client: AsyncWebClient) -> AsyncApp:
        slack = self._settings.slack
        return AsyncApp(
            client=client,
            authorize=self.identity.authorizer(),
            signing_secret=slack.signing_secret.reveal() if slack.signing_secret else "unused",
            # Socket Mode traffic is authenticated by the app token, not signatures; HTTP
            # requests are always verified (there is deliberately no switch to turn it off).
            request_verification_enabled=not slack.socket_mode,
            # Our handlers only check and store (the sending happens elsewhere), so they finish
            # in milliseconds: answering after them avoids bolt's 10 ms polling for the ack.
            process_before_response=True,
            raise_error_for_unhandled_request=False,
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening. Socket Mode connects in the background: Slack may be unreachable
        for minutes, and meanwhile /healthz answers and SIGTERM stops the bridge."""
        slack = self._settings.slack
        if slack.socket_mode:
            assert slack.app_token is not None
            self._socket = AsyncSocketModeHandler(self.app, slack.app_token.reveal(),
                                                  logger=_SocketLog(self))
            self._socket_state("Slack Socket Mode: connecting")
            self._socket_task = asyncio.create_task(self._connect_socket(self._socket),
                                                    name="socket-mode-connect")
        else:
            web_app = web.Application()
            web_app.router.add_post("/slack/events", self._http_events)
            if self._extra_routes is not None:
                self._extra_routes(web_app)
            self._runner = web.AppRunner(web_app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, host=self._settings.ops.bind, port=slack.port)
            await site.start()
            log.info("Slack: HTTP mode; listening for %s on %s port %d at POST /slack/events",
                     slack.command, self._settings.ops.bind, slack.port)

    async def _connect_socket(self, handler: AsyncSocketModeHandler) -> None:
        # slack_sdk retries every ping_interval until connected; each failure reaches
        # _socket_failed through _SocketLog as one line.
        await handler.connect_async()  # type: ignore[no-untyped-call]
        self._socket_state("")
        log.info("Slack: connected in Socket Mode; listening for %s",
                 self._settings.slack.command)

    def _socket_state(self, problem: str) -> None:
        """Why Slack cannot reach the handlers over Socket Mode ("" when it can), for /healthz."""
        self._socket_problem = problem
        self._transport.transport_state(problem)

    def _socket_connected(self) -> None:
        if self._socket_problem:
            log.info("Slack: Socket Mode connected")
        self._socket_state("")

    def _socket_failed(self, message: str) -> None:
        self._socket_state(f"Slack Socket Mode not connected: {message}")
        log.warning("Slack: Socket Mode: %s", message)

    async def stop(self) -> None:
        if self._socket_task is not None:
            self._socket_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._socket_task
            self._socket_task = None
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _http_events(self, request: web.Request) -> web.Response:
        # Answered here, before bolt: it raises (a 500 with a traceback) on a timestamp that
        # is not a number and on a body that is not UTF-8.
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        if not (timestamp.isascii() and timestamp.isdigit()):
            log.info("Slack: request refused: X-Slack-Request-Timestamp is not a number")
            return web.Response(status=401, text="invalid request timestamp")
        raw = await request.read()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            log.info("Slack: request refused: its body is not UTF-8")
            return web.Response(status=400, text="the request body is not UTF-8")
        answered = await self._slash_command(request, raw)
        if answered is not None:
            return answered
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def _slash_command(self, request: web.Request, raw: bytes) -> web.Response | None:
        """Our slash command over HTTP, answered without bolt's dispatch (None: anything
        else, which bolt answers). Every /sip text comes this way, and bolt's request
        object, middleware chain, listener matching and per-request Web API client cost
        about an eighth of the bridge's CPU per text (measured). Checked as bolt checks it:
        the signature over the timestamp and body with the signing secret, the timestamp
        within 5 minutes (else 401, nothing done); the form is read as bolt reads it."""
        if self._verifier is None or not request.content_type.startswith(
                "application/x-www-form-urlencoded"):
            return None
        fields = dict(urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        if fields.get("command") != self._settings.slack.command or "payload" in fields \
                or "ssl_check" in fields:
            return None
        if not self._verifier.is_valid(raw, request.headers.get("X-Slack-Request-Timestamp",
                                                                ""),
                                       request.headers.get("X-Slack-Signature", "")):
            log.info("Slack: request refused: its signature is not valid")
            return web.json_response({"error": "invalid request"}, status=401)
        answer = _Answer()
        try:
            await self._on_command(answer, fields)
        except Exception:  # as bolt does: logged, and Slack shows the user a failure
            log.exception("Slack: %s failed", fields.get("command"))
            return web.Response(status=500, text="")
        if answer.text is None:
            return web.Response(status=200, text="")
        return web.json_response({"text": answer.text})

    # -- the command ----------------------------------------------------------------------

    async def _on_command(self, ack: Ack, command: dict[str, Any]) -> None:
        # The same signed command delivered again (a replayed request within the signature's
        # 5 minutes, or Socket Mode redelivering) is one command: its trigger_id is unique
        # per invocation. Recorded in the store, so a restart in between changes nothing; a
        # text's is recorded with the text itself (one store transaction).
        name = self._settings.slack.command
        directory = self._settings.directory
        parsed = parse_command(str(command.get("text", "")))
        user = str(command.get("user_id", ""))
        key = _command_key(command)
        if not isinstance(parsed, Send):
            try:
                first = await self._store.first_sight_of_event(key)
            except StoreError:  # disk full: help and status still work
                first = True
            if not first:
                await self._seen_before(ack, command)
                return
        if isinstance(parsed, Compose):
            origin = ComposeOrigin(channel=str(command.get("channel_id", "")),
                                   response_url=str(command.get("response_url") or ""))
            if await self._compose.open(str(command.get("trigger_id") or ""), origin):
                await ack()
                return
            parsed = Help()  # no window (an old trigger?): the typed way, then
        if isinstance(parsed, Help):
            await ack(help_text(name, directory))
            return
        if isinstance(parsed, ListDirectory):
            await ack(list_text(name, directory, presence=self.presence_of))
            return
        if isinstance(parsed, Status):
            try:
                backlog = await self._store.backlog()
            except StoreError:  # the store file is unusable: say that instead of a status
                await ack(cannot_store_text())
                return
            await ack(status_text(pbxs=self._ami.statuses(), backlog=backlog,
                                  now=time.time()))
            return
        request = OutboundText(recipient=parsed.recipient, text=parsed.text, slack_user=user,
                               slack_channel=str(command.get("channel_id", "")),
                               response_url=command.get("response_url") or None)
        try:
            stored = await self._admit_and_store(
                request, awaited=True, request_id=key,
                echo_as=str(command.get("user_name") or user))
        except TextRejected as exc:
            await ack(not_sent_text(exc, name))
            return
        except StoreError as exc:  # disk full, store file gone: the bridge stays up
            log.warning("text out: slack_user=%s result=not_stored reason=%s", user, exc)
            await ack(cannot_store_text(parsed.recipient))
            return
        if stored is None:
            await self._seen_before(ack, command)
            return
        endpoint, accepted = stored
        row = accepted.row
        outcome = await self._feedback.wait_for(row.id, _ANSWER_WAIT)
        if outcome is not None:
            await ack(self._feedback.answer(outcome, row))
            await self._feedback.answered(outcome)
        else:
            await ack(sending_text(endpoint) if self._ami.ready_for(endpoint.pbx)
                      else queued_text(endpoint, several_pbxs=self._settings.several_pbxs))
        # The conversation's thread shows what was sent, by whom, and its state: the echo
        # stored with the text is posted now, after the answer, so it can show the outcome.
        if accepted.echo is not None:
            self._relay.queue_echo(accepted.echo)

    @staticmethod
    async def _seen_before(ack: Ack, command: dict[str, Any]) -> None:
        log.info("Slack: command from %s delivered again (trigger_id seen); not sent again",
                 command.get("user_id", "?"))
        await ack()

    # -- replies in conversations ---------------------------------------------------------

    async def _on_message(self, event: dict[str, Any], body: dict[str, Any],
                          context: dict[str, Any]) -> None:
        try:
            await self._on_reply(event, body, context)
        except StoreError as exc:  # disk full, store file gone: say so, stay up
            channel = str(event.get("channel") or "")
            user = str(event.get("user") or "")
            log.warning("text out: slack_user=%s channel=%s result=not_stored reason=%s",
                        user, channel, exc)
            if user:
                await self._actions.ephemeral(channel, user, cannot_store_text(),
                                              thread_ts=str(event.get("thread_ts") or "")
                                              or None)

    async def _on_reply(self, event: dict[str, Any], body: dict[str, Any],
                        context: dict[str, Any]) -> None:
        event_id = str(body.get("event_id") or "")
        if event_id and not await self._store.first_sight_of_event(event_id):
            log.info("Slack: event %s delivered again (retry); ignored", event_id)
            return
        slack = self._settings.slack
        channel = str(event.get("channel") or "")
        thread_ts = str(event.get("thread_ts") or "")
        owner = await self._thread_owner(channel, thread_ts) if thread_ts else None
        decision = decide(
            event, directory=self._settings.directory,
            bot_user_id=str(context.get("bot_user_id") or ""),
            allowed_bots=slack.allowed_bots,
            mode=reply_mode(self._settings.directory, channel, slack.reply_mode,
                            slack.reply_modes,
                            thread_endpoint=owner.endpoint if owner else None),
            thread=ThreadInfo(owner.conversation, owner.endpoint) if owner else None)
        user = str(event.get("user") or event.get("bot_id") or "")
        if isinstance(decision, Ignore):
            log.debug("Slack: message in %s ignored: %s", channel, decision.reason)
            return
        if isinstance(decision, Refuse):
            log.info("text out: slack_user=%s channel=%s result=refused reason=%s", user,
                     channel, decision.reason)
            await self._actions.ephemeral(channel, user, f":no_entry_sign: {decision.reason}.",
                                          thread_ts=thread_ts or None)
            return
        raw = str(event.get("text") or "")
        names = await self._actions.display_names(user_ids(raw))
        text = slack_to_plain(raw, names)
        ts = str(event.get("ts") or "")
        request = OutboundText(recipient=decision.recipient, text=text, slack_user=user,
                               slack_channel=channel, source="reply", feedback_ts=ts,
                               thread_ts=decision.thread_ts or ts,
                               reply_endpoint=decision.reply_endpoint,
                               external=_is_external(event, body))
        try:
            stored = await self._admit_and_store(request)
        except TextRejected as exc:
            await self._actions.ephemeral(channel, user, f":x: Not sent to "
                                          f"{decision.recipient}: {exc}.",
                                          thread_ts=thread_ts or None)
            await self._feedback.show_refused(channel, ts)
            return
        assert stored is not None  # no request ID: never seen before
        endpoint = stored[0]
        if decision.thread_ts:
            owner_key = owner.conversation if owner else endpoint.name
            await self._relay.touch(owner_key)
        if not self._ami.ready_for(endpoint.pbx):
            await self._feedback.show_queued(channel, ts)

    async def _thread_owner(self, channel: str, thread_ts: str) -> ThreadOwner | None:
        """The conversation a thread belongs to. A reply can arrive before the store knows
        its thread: the bridge (another replica, on a shared store) records a post only once
        Slack has answered with its ts, and a quick reply, most often a bot's, can come in
        between. So a thread younger than a few seconds that is not known yet is looked up
        again for a moment (well within Slack's 3 s for the answer) before it is ignored."""
        owner = await self._store.thread_owner(channel, thread_ts)
        try:
            age = time.time() - float(thread_ts)
        except ValueError:
            return owner
        if owner is not None or not -_YOUNG_THREAD < age < _YOUNG_THREAD:
            return owner
        deadline = time.monotonic() + _YOUNG_THREAD_WAIT
        while owner is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            owner = await self._store.thread_owner(channel, thread_ts)
        return owner

    def presence_of(self, name: str) -> str:
        """online / offline / unknown for a directory name (bridge.core.presence)."""
        return self._presence.of_name(self._settings.directory, name)

    async def _submit(self, request: OutboundText, user_name: str) -> Endpoint:
        """A text from the compose window: the /sip checks, then its echo in the thread."""
        stored = await self._admit_and_store(request, echo_as=user_name)
        assert stored is not None  # no request ID: never seen before
        endpoint, accepted = stored
        if accepted.echo is not None:
            self._relay.queue_echo(accepted.echo)
        return endpoint

    async def _admit_and_store(self, request: OutboundText, *, awaited: bool = False,
                               request_id: str | None = None, echo_as: str | None = None
                               ) -> tuple[Endpoint, Accepted] | None:
        """Check a text (sendable, allowed, within limits), then store it for sending, with
        its audit entry, in one transaction. `awaited`: the caller waits for its outcome
        (`DeliveryFeedback.wait_for`). `request_id`: the Slack request that asked for it
        (None returned, nothing stored, if it was seen before). `echo_as`: its echo for
        the phone's conversation is stored with it, showing this sender's name."""
        try:
            check_text(request.text)  # before the gate: a blank text costs no rate allowance
            parts = len(segment_body(request.text))
            limit = self._settings.delivery.max_parts
            if parts > limit:
                # Each part is one MessageSend and one message on the phone.
                raise TextRejected(f"the text is too long: it would be {parts} messages on "
                                   f"the phone, and the limit is {limit} ([delivery] "
                                   f"max_parts); shorten it or send it in pieces")
        except TextRejected:
            metrics.outbound_refused("invalid_text")
            raise
        endpoint = await self._gate.admit(recipient=request.recipient,
                                          user=request.slack_user,
                                          channel=request.slack_channel,
                                          source=request.source, text=request.text,
                                          reply_endpoint=request.reply_endpoint, parts=parts,
                                          external=request.external)
        audit = self._gate.audit_of_accepted(
            endpoint, recipient=request.recipient, user=request.slack_user,
            channel=request.slack_channel, source=request.source, text=request.text)
        echo = None if echo_as is None else self._relay.echo_to_store(EchoText(
            body=request.text, slack_user=request.slack_user, slack_user_name=echo_as,
            endpoint=endpoint.name, outbound_id=0), channel=endpoint.channel)
        accepted = await self._outbox.accept(request, endpoint, awaited=awaited,
                                             request_id=request_id, audit=audit, echo=echo)
        if accepted is None:
            return None
        self._gate.accepted(accepted.row, recipient=request.recipient, source=request.source)
        self._home.changed(request.slack_user)  # their Home lists it (if they opened it)
        return endpoint, accepted


class Ack(Protocol):
    """How a command is answered: bolt's `ack`, or `_Answer` on the HTTP fast path."""

    async def __call__(self, text: str = "") -> Any: ...


class _Answer:
    """The answer to a slash command taken without bolt: what `ack` was given."""

    def __init__(self) -> None:
        self.text: str | None = None

    async def __call__(self, text: str = "") -> None:
        self.text = text or None


@contextlib.contextmanager
def _env_hidden(*names: str) -> Iterator[None]:
    """Hide environment variables for a moment (while bolt's app is built)."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class _SocketLog(logging.Logger):
    """The logger given to slack_sdk's Socket Mode client. It logs every failed connection
    attempt with `logger.exception` (a 60-line traceback every 10 s while Slack is
    unreachable): here each becomes one line, and the reason is kept for /healthz."""

    def __init__(self, frontend: SlackFrontend) -> None:
        super().__init__(f"{__name__}.socket_mode")
        self.parent = log  # handlers and level come from the bridge's logging set-up
        self._frontend = frontend

    def exception(self, msg: object, *args: object, exc_info: Any = True,
                  **kwargs: Any) -> None:
        text = str(msg) % args if args else str(msg)
        if text.startswith("Failed to connect"):  # its reconnect loop: Slack unreachable
            self._frontend._socket_failed(text)
        else:  # one failed message or listener: one line here, the traceback at debug
            log.warning("Slack: Socket Mode: %s", text)
            log.debug("Slack: Socket Mode: %s", text, exc_info=exc_info)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        super().info(msg, *args, **kwargs)
        if "has been established" in str(msg):  # connected again after a drop
            self._frontend._socket_connected()
