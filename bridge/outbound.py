"""Sending a Slack user's text to a phone: validate, segment, MessageSend each part in order.

No Slack and no panoramisk here: the caller turns the outcome into a reply, `AmiLink`
does the wire work. Every way a text can fail to go out ends as a `TextRejected` or an
`AmiError`, with how many segments had already gone out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from bridge.directory import Directory, Endpoint
from bridge.errors import AmiError, TextRejected
from bridge.segments import segment_body

log = logging.getLogger(__name__)


class MessageSender(Protocol):
    async def message_send(self, *, destination: str, body: str, from_: str | None) -> None: ...


@dataclass(frozen=True)
class OutboundText:
    """A text a Slack user asked to send."""

    recipient: str  # as typed
    text: str
    slack_user: str  # user ID, for logs
    slack_channel: str


@dataclass(frozen=True)
class SendReport:
    endpoint: Endpoint
    segments: int
    chars: int


class UnknownRecipient(TextRejected):
    def __init__(self, recipient: str, suggestions: list[str]) -> None:
        self.recipient = recipient
        self.suggestions = suggestions
        super().__init__(f"no endpoint called '{recipient}'")


class PartlySent(AmiError):
    """Some segments went out, then one failed; the rest were not sent."""

    def __init__(self, endpoint: Endpoint, sent: int, total: int, cause: AmiError) -> None:
        self.endpoint = endpoint
        self.sent = sent
        self.total = total
        self.cause = cause
        super().__init__(f"sent {sent} of {total} parts to {endpoint.name}, then: {cause}")


def check_text(text: str) -> None:
    """Refuse texts that cannot reach a phone exactly as typed."""
    if not text.strip():
        raise TextRejected("there is no text to send")
    if "\0" in text:
        # Asterisk ends the text at a NUL: the phone would get a silently cut text.
        raise TextRejected("the text contains a NUL character, which would cut it short")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise TextRejected("the text contains invalid characters (unpaired surrogates)") from None


class Outbox:
    """Resolves recipients and sends texts through AMI, one segment after another."""

    def __init__(self, *, directory: Directory, sender: MessageSender,
                 from_: str | None) -> None:
        self._directory = directory
        self._sender = sender
        self._from = from_

    def resolve(self, recipient: str) -> Endpoint:
        endpoint = self._directory.lookup(recipient)
        if endpoint is None:
            raise UnknownRecipient(recipient, self._directory.suggest(recipient))
        return endpoint

    async def send(self, request: OutboundText) -> SendReport:
        endpoint = self.resolve(request.recipient)
        check_text(request.text)
        segments = segment_body(request.text)
        started = time.monotonic()
        for index, segment in enumerate(segments):
            try:
                await self._sender.message_send(destination=endpoint.destination, body=segment,
                                                from_=self._from)
            except AmiError as exc:
                log.warning("text out: slack_user=%s endpoint=%s result=failed sent=%d/%d "
                            "reason=%s", request.slack_user, endpoint.name, index,
                            len(segments), exc)
                if index:
                    raise PartlySent(endpoint, index, len(segments), exc) from exc
                raise
        log.info("text out: slack_user=%s endpoint=%s destination=%s result=sent segments=%d "
                 "chars=%d latency_ms=%.0f", request.slack_user, endpoint.name,
                 endpoint.destination, len(segments), len(request.text),
                 (time.monotonic() - started) * 1000)
        return SendReport(endpoint=endpoint, segments=len(segments), chars=len(request.text))
