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

import logging
import time
from typing import Any, Protocol

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bridge.commands import Help, ListDirectory, Status, parse_command
from bridge.config import Settings
from bridge.errors import TextRejected
from bridge.outbound import OutboundText, Outbox, Outcome
from bridge.replies import (
    help_text,
    list_text,
    not_sent_text,
    queued_text,
    sending_text,
    sent_text,
    status_text,
)
from bridge.slack_client import Notifier
from bridge.store import Store

log = logging.getLogger(__name__)


class AmiState(Protocol):
    """What the command handler needs to know about AMI (implemented by AmiLink)."""

    @property
    def ready(self) -> bool: ...

    last_error: str


class SlackFrontend:
    """Receives slash commands over HTTP or Socket Mode and answers them."""

    def __init__(self, *, settings: Settings, client: AsyncWebClient, outbox: Outbox,
                 ami: AmiState, store: Store) -> None:
        self._settings = settings
        self._outbox = outbox
        self._ami = ami
        self._store = store
        self._notifier = Notifier(client, fallback=settings.delivery.notify)
        slack = settings.slack
        self.app = AsyncApp(
            client=client,
            signing_secret=slack.signing_secret.reveal() if slack.signing_secret else "unused",
            # Socket Mode traffic is authenticated by the app token, not signatures; HTTP
            # requests are always verified (there is deliberately no switch to turn it off).
            request_verification_enabled=not slack.socket_mode,
            process_before_response=False,
            raise_error_for_unhandled_request=False,
        )
        self.app.command(slack.command)(self._on_command)
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None

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
        if isinstance(parsed, Help):
            await ack(help_text(name, directory))
            return
        if isinstance(parsed, ListDirectory):
            await ack(list_text(name, directory))
            return
        if isinstance(parsed, Status):
            backlog = await self._store.backlog()
            await ack(status_text(ami_ready=self._ami.ready, ami_error=self._ami.last_error,
                                  backlog=backlog, now=time.time()))
            return
        request = OutboundText(recipient=parsed.recipient, text=parsed.text, slack_user=user,
                               slack_channel=str(command.get("channel_id", "")),
                               response_url=command.get("response_url") or None)
        try:
            endpoint, _row = await self._outbox.accept(request)
        except TextRejected as exc:
            log.info("text out: slack_user=%s recipient=%r result=refused reason=%s", user,
                     parsed.recipient, exc)
            await ack(not_sent_text(exc, name))
            return
        await ack(sending_text(endpoint) if self._ami.ready else queued_text(endpoint))

    async def tell(self, outcome: Outcome) -> bool:
        """Tell a text's sender what became of it (the Outbox calls this)."""
        row = outcome.row
        if outcome.sent:
            text = sent_text(outcome.endpoint, outcome.segments_sent,
                             time.time() - row.created_at)
        else:
            text = not_sent_text(outcome.reason or Exception("not sent"),
                                 self._settings.slack.command, outcome.endpoint)
        return await self._notifier.tell(user=row.slack_user, channel=row.slack_channel,
                                         response_url=row.response_url,
                                         created_at=row.created_at, text=text)
