"""The Slack side: the bolt app, the `/sip` command, and its two transports.

The only module that imports slack_bolt. HTTP mode serves `POST /slack/events` on $PORT
(bolt checks every request's signature and age and answers 401 otherwise); Socket Mode
connects out with the app-level token and needs no public URL.

Every command is acknowledged well inside Slack's 3-second limit: help, list, status and
refusals are answered in the ack itself; a text is stored by the Outbox and acked with
"Sending…" (or "Queued…" while Asterisk is unreachable), and its outcome follows later
through `tell()` (response_url while valid, else the configured fallback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bridge import metrics
from bridge.commands import Help, ListDirectory, Status, parse_command
from bridge.config import Settings
from bridge.directory import Endpoint
from bridge.errors import TextRejected
from bridge.gate import Gate
from bridge.outbound import OutboundText, Outbox, Outcome, check_text
from bridge.relay import InboundRelay
from bridge.replies import (
    cannot_store_text,
    failure_reason,
    help_text,
    list_text,
    not_sent_text,
    queued_text,
    sending_text,
    sent_text,
    status_text,
)
from bridge.slack_client import Notifier, SlackActions
from bridge.slack_identity import BotIdentity
from bridge.slack_text import escape, slack_to_plain, user_ids
from bridge.store import OutboundRow, Store, StoreError
from bridge.texts import EchoText
from bridge.thread_replies import Ignore, Refuse, ThreadInfo, decide, reply_mode

log = logging.getLogger(__name__)

# Reactions that show a text's state on the Slack message that caused it.
_QUEUED = "hourglass_flowing_sand"
_SENT = "white_check_mark"
_FAILED = "x"


class AmiState(Protocol):
    """What the command handler needs to know about AMI (implemented by AmiLink)."""

    @property
    def ready(self) -> bool: ...

    last_error: str


class SlackFrontend:
    """Receives slash commands over HTTP or Socket Mode and answers them."""

    def __init__(self, *, settings: Settings, client: AsyncWebClient, outbox: Outbox,
                 ami: AmiState, store: Store, relay: InboundRelay) -> None:
        self._settings = settings
        self._outbox = outbox
        self._ami = ami
        self._store = store
        self._relay = relay
        self._notifier = Notifier(client, fallback=settings.delivery.notify)
        self._actions = SlackActions(client, usergroups=settings.access.usergroups)
        self._gate = Gate(directory=settings.directory, policy=settings.access, store=store,
                          groups=self._actions.user_groups_of)
        # Outcomes of /sip texts whose echo is not posted yet: (sent, reason).
        self._outcomes: dict[int, tuple[bool, str]] = {}
        self._shown_queued: set[tuple[str, str]] = set()  # messages showing ⏳ (this run)
        self._started = time.time()
        slack = settings.slack
        # Bolt never calls auth.test per request: it gets the token and identity from here
        # (learned once, in the background: bridge.slack_identity).
        self.identity = BotIdentity(client, slack.bot_token.reveal())
        # Bolt's client carries no token (the authorize result gives each request one), so
        # bolt has nothing to warn about; it shares the bridge's session and Web API URL.
        bolt_client = AsyncWebClient(token=None, base_url=client.base_url,
                                     session=client.session, timeout=client.timeout,
                                     logger=client.logger)
        with _env_hidden("SLACK_BOT_TOKEN"):  # bolt warns when it finds a token there too
            self.app = self._bolt_app(bolt_client)
        self.app.command(slack.command)(self._on_command)
        self.app.event("message")(self._on_message)
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._socket_task: asyncio.Task[None] | None = None
        self._socket_problem = ""
        # More routes on the HTTP-mode server (bridge.ops_http: /healthz, /metrics).
        self.extra_routes: Callable[[web.Application], None] | None = None

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

    def transport_problem(self) -> str:
        """For /healthz: why Slack cannot reach the bridge's command handler ("" if it can)."""
        return self._socket_problem

    async def start(self) -> None:
        """Start listening. Socket Mode connects in the background: Slack may be unreachable
        for minutes, and meanwhile /healthz answers and SIGTERM stops the bridge."""
        slack = self._settings.slack
        if slack.socket_mode:
            assert slack.app_token is not None
            self._socket = AsyncSocketModeHandler(self.app, slack.app_token.reveal(),
                                                  logger=_SocketLog(self))
            self._socket_problem = "Slack Socket Mode: connecting"
            self._socket_task = asyncio.create_task(self._connect_socket(self._socket),
                                                    name="socket-mode-connect")
        else:
            web_app = web.Application()
            web_app.router.add_post("/slack/events", self._http_events)
            if self.extra_routes is not None:
                self.extra_routes(web_app)
            self._runner = web.AppRunner(web_app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, host="0.0.0.0", port=slack.port)
            await site.start()
            log.info("Slack: HTTP mode; listening for %s on port %d at POST /slack/events",
                     slack.command, slack.port)

    async def _connect_socket(self, handler: AsyncSocketModeHandler) -> None:
        # slack_sdk retries every ping_interval until connected; each failure reaches
        # _socket_failed through _SocketLog as one line.
        await handler.connect_async()  # type: ignore[no-untyped-call]
        self._socket_problem = ""
        log.info("Slack: connected in Socket Mode; listening for %s",
                 self._settings.slack.command)

    def _socket_connected(self) -> None:
        if self._socket_problem:
            log.info("Slack: Socket Mode connected")
        self._socket_problem = ""

    def _socket_failed(self, message: str) -> None:
        self._socket_problem = f"Slack Socket Mode not connected: {message}"
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
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    # -- the command ----------------------------------------------------------------------

    async def _on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        name = self._settings.slack.command
        directory = self._settings.directory
        parsed = parse_command(str(command.get("text", "")))
        user = str(command.get("user_id", ""))
        if isinstance(parsed, Help):
            await ack(help_text(name, directory))
            return
        if isinstance(parsed, ListDirectory):
            await ack(list_text(name, directory))
            return
        if isinstance(parsed, Status):
            try:
                backlog = await self._store.backlog()
            except StoreError:  # the store file is unusable: say that instead of a status
                await ack(cannot_store_text())
                return
            await ack(status_text(ami_ready=self._ami.ready, ami_error=self._ami.last_error,
                                  backlog=backlog, now=time.time()))
            return
        request = OutboundText(recipient=parsed.recipient, text=parsed.text, slack_user=user,
                               slack_channel=str(command.get("channel_id", "")),
                               response_url=command.get("response_url") or None)
        try:
            endpoint, row = await self._admit_and_store(request)
        except TextRejected as exc:
            await ack(not_sent_text(exc, name))
            return
        except StoreError as exc:  # disk full, store file gone: the bridge stays up
            log.warning("text out: slack_user=%s result=not_stored reason=%s", user, exc)
            await ack(cannot_store_text(parsed.recipient))
            return
        await ack(sending_text(endpoint) if self._ami.ready else queued_text(endpoint))
        # The conversation's thread shows what was sent, by whom (its state as a reaction).
        try:
            await self._relay.post_echo(EchoText(
                body=parsed.text, slack_user=user,
                slack_user_name=str(command.get("user_name") or user), endpoint=endpoint.name,
                outbound_id=row.id), channel=endpoint.channel)
        except StoreError as exc:  # the text is stored and will be sent; only its echo is not
            log.warning("text out: id=%d its echo in the thread could not be stored: %s",
                        row.id, exc)

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
        owner = await self._store.thread_owner(channel, thread_ts) if thread_ts else None
        decision = decide(
            event, directory=self._settings.directory,
            bot_user_id=str(context.get("bot_user_id") or ""),
            allowed_bots=slack.allowed_bots,
            mode=reply_mode(self._settings.directory, channel, slack.reply_mode,
                            slack.reply_modes),
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
                               thread_ts=decision.thread_ts or ts)
        try:
            endpoint, _row = await self._admit_and_store(request)
        except TextRejected as exc:
            await self._actions.ephemeral(channel, user, f":x: Not sent to "
                                          f"{decision.recipient}: {exc}.",
                                          thread_ts=thread_ts or None)
            await self._actions.react(channel, ts, _FAILED)
            return
        if decision.thread_ts:
            owner_key = owner.conversation if owner else endpoint.name
            await self._relay.touch(owner_key)
        if not self._ami.ready:
            await self._show_queued(channel, ts)

    async def _admit_and_store(self, request: OutboundText) -> tuple[Endpoint, OutboundRow]:
        """Check a text (sendable, allowed, within limits), then store it for sending."""
        try:
            check_text(request.text)  # before the gate: a blank text costs no rate allowance
        except TextRejected:
            metrics.outbound_refused("invalid_text")
            raise
        endpoint = await self._gate.admit(recipient=request.recipient,
                                          user=request.slack_user,
                                          channel=request.slack_channel,
                                          source=request.source, text=request.text)
        row = await self._outbox.accept(request, endpoint)
        await self._gate.accepted(row, recipient=request.recipient, source=request.source)
        return endpoint, row

    # -- delivery state -------------------------------------------------------------------

    def state_of(self, outbound_id: int) -> str | None:
        """For the relay: the final state to print in a text's echo, once known."""
        outcome = self._outcomes.get(outbound_id)
        if outcome is None:
            return None
        sent, reason = outcome
        return f":{_SENT}: sent" if sent else f":{_FAILED}: not sent: {escape(reason)}"

    async def posted(self, outbound_id: int, channel: str, ts: str, *,
                     shown_final: bool) -> None:
        """For the relay: the echo of a /sip text is in Slack; it now carries the state."""
        if shown_final:
            self._outcomes.pop(outbound_id, None)
            await self._store.set_feedback_target(outbound_id, channel, ts, done=True)
            return
        await self._store.set_feedback_target(outbound_id, channel, ts)
        row = await self._store.get_outbound(outbound_id)
        if row is None:
            return
        if row.state == "queued":
            if not self._ami.ready:
                await self._show_queued(channel, ts)
            return
        if not row.feedback_done:
            _, reason = self._outcomes.pop(row.id, (True, ""))
            await self._show_outcome(row, sent=row.state == "sent",
                                     reason=reason or row.last_error or "")

    async def _show_queued(self, channel: str, ts: str) -> None:
        self._shown_queued.add((channel, ts))
        await self._actions.react(channel, ts, _QUEUED)

    async def _show_outcome(self, row: OutboundRow, *, sent: bool, reason: str) -> None:
        channel, ts = row.feedback_channel, row.feedback_ts
        if not channel or not ts:
            return  # the echo is not posted yet; posted() shows it then
        # Only a message that showed ⏳ has one to take off; for texts from before a restart
        # the bridge cannot know, so it tries.
        if (channel, ts) in self._shown_queued or row.created_at < self._started:
            self._shown_queued.discard((channel, ts))
            await self._actions.react(channel, ts, _QUEUED, remove=True)
        await self._actions.react(channel, ts, _SENT if sent else _FAILED)
        if not sent:
            thread = row.thread_ts
            if not thread:
                conversation = await self._store.conversation(row.endpoint)
                thread = conversation.thread_ts if conversation else ts
            await self._actions.note_in_thread(
                channel, thread, f":x: Not sent to *{escape(row.endpoint)}*: "
                f"{escape(reason or 'unknown reason')}")
        await self._store.feedback_done(row.id)

    async def tell(self, outcome: Outcome) -> bool:
        """Tell a text's sender what became of it (the Outbox calls this)."""
        row = await self._store.get_outbound(outcome.row.id) or outcome.row
        reason = "" if outcome.sent else failure_reason(outcome.reason or Exception("not sent"))
        if not row.feedback_ts and row.source == "slash":
            self._outcomes[row.id] = (outcome.sent, reason)  # for its echo, once posted
        if not row.feedback_done:
            await self._show_outcome(row, sent=outcome.sent, reason=reason)
        if row.source == "reply":
            return True  # the reaction on their message is how they hear it
        if outcome.sent:
            text = sent_text(outcome.endpoint, outcome.segments_sent,
                             time.time() - row.created_at)
        else:
            text = not_sent_text(outcome.reason or Exception("not sent"),
                                 self._settings.slack.command, outcome.endpoint)
        return await self._notifier.tell(user=row.slack_user, channel=row.slack_channel,
                                         response_url=row.response_url,
                                         created_at=row.created_at, text=text)


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
