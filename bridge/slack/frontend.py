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

from bridge.core.directory import Endpoint
from bridge.core.errors import StoreError, TextRejected
from bridge.core.model import OutboundRow, PbxStatus
from bridge.core.texts import EchoText
from bridge.core.thread_replies import Ignore, Refuse, ThreadInfo, decide, reply_mode
from bridge.delivery.feedback import DeliveryFeedback
from bridge.delivery.gate import Gate
from bridge.delivery.inbound import InboundRelay
from bridge.delivery.outbound import OutboundText, Outbox, check_text
from bridge.ops import metrics
from bridge.settings.config import Settings
from bridge.slack.client import SlackActions
from bridge.slack.commands import Compose, Help, ListDirectory, Status, parse_command
from bridge.slack.compose import (
    COMPOSE_SHORTCUT,
    COMPOSE_VIEW,
    MESSAGE_SHORTCUT,
    RECIPIENT_ACTION,
    ComposeFlow,
    ComposeOrigin,
)
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

class AmiState(Protocol):
    """What the command handler needs to know about each PBX's AMI link (implemented by
    `bridge.asterisk.links.PbxLinks`)."""

    def ready_for(self, pbx: str) -> bool: ...

    def statuses(self) -> list[PbxStatus]: ...


class SlackFrontend:
    """Receives slash commands over HTTP or Socket Mode and answers them."""

    def __init__(self, *, settings: Settings, client: AsyncWebClient, actions: SlackActions,
                 outbox: Outbox, ami: AmiState, store: StoreBackend, relay: InboundRelay,
                 feedback: DeliveryFeedback,
                 extra_routes: Callable[[web.Application], None] | None = None) -> None:
        self._settings = settings
        self._outbox = outbox
        self._ami = ami
        self._store = store
        self._relay = relay
        self._feedback = feedback
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
        self.app.command(slack.command)(self._on_command)
        self.app.event("message")(self._on_message)
        # The compose window (bridge.slack.compose): shortcuts, picker type-ahead, Send.
        self._compose = ComposeFlow(client=client, directory=settings.directory,
                                    policy=settings.access, admit=self._submit,
                                    display_names=self._actions.display_names,
                                    presence=lambda name: "unknown")
        self.app.shortcut(COMPOSE_SHORTCUT)(self._compose.on_shortcut)
        self.app.shortcut(MESSAGE_SHORTCUT)(self._compose.on_message_shortcut)
        self.app.options(RECIPIENT_ACTION)(self._compose.on_options)
        self.app.view(COMPOSE_VIEW)(self._compose.on_submit)
        # The Retry button on a failed text's notice (bridge.slack.retry).
        self._retry = RetryButton(store=store, admit=self._submit)
        self.app.action(RETRY_ACTION)(self._retry.on_press)
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
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
        slack = self._settings.slack
        if slack.socket_mode:
            assert slack.app_token is not None
            self._socket = AsyncSocketModeHandler(self.app, slack.app_token.reveal())
            await self._socket.connect_async()  # type: ignore[no-untyped-call]
            log.info("Slack: connected in Socket Mode; listening for %s", slack.command)
        else:
            web_app = web.Application()
            web_app.router.add_post("/slack/events", self._http_events)
            if self._extra_routes is not None:
                self._extra_routes(web_app)
            self._runner = web.AppRunner(web_app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, host="0.0.0.0", port=slack.port)
            await site.start()
            log.info("Slack: HTTP mode; listening for %s on port %d at POST /slack/events",
                     slack.command, slack.port)

    async def stop(self) -> None:
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
            await ack(list_text(name, directory))
            return
        if isinstance(parsed, Status):
            backlog = await self._store.backlog()
            await ack(status_text(pbxs=self._ami.statuses(), backlog=backlog,
                                  now=time.time()))
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
        await ack(sending_text(endpoint) if self._ami.ready_for(endpoint.pbx) else queued_text(
            endpoint, several_pbxs=self._settings.several_pbxs))
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
                               thread_ts=decision.thread_ts or ts,
                               reply_endpoint=decision.reply_endpoint)
        try:
            endpoint, _row = await self._admit_and_store(request)
        except TextRejected as exc:
            await self._actions.ephemeral(channel, user, f":x: Not sent to "
                                          f"{decision.recipient}: {exc}.",
                                          thread_ts=thread_ts or None)
            await self._feedback.show_refused(channel, ts)
            return
        if decision.thread_ts:
            owner_key = owner.conversation if owner else endpoint.name
            await self._relay.touch(owner_key)
        if not self._ami.ready_for(endpoint.pbx):
            await self._feedback.show_queued(channel, ts)

    async def _submit(self, request: OutboundText, user_name: str) -> Endpoint:
        """A text from the compose window: the /sip checks, then its echo in the thread."""
        endpoint, row = await self._admit_and_store(request)
        await self._relay.post_echo(EchoText(
            body=request.text, slack_user=request.slack_user, slack_user_name=user_name,
            endpoint=endpoint.name, outbound_id=row.id), channel=endpoint.channel)
        return endpoint

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
                                          source=request.source, text=request.text,
                                          reply_endpoint=request.reply_endpoint)
        row = await self._outbox.accept(request, endpoint)
        await self._gate.accepted(row, recipient=request.recipient, source=request.source)
        return endpoint, row


@contextlib.contextmanager
def _env_hidden(*names: str) -> Iterator[None]:
    """Hide environment variables for a moment (while bolt's app is built)."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
