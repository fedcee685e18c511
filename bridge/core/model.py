"""The bridge's stored values: what the store holds and hands back, as frozen dataclasses.

The store's backends map their rows to these by column name; the rest of the bridge changes a
row only with `dataclasses.replace`, so no field is ever dropped on the way (that is how a
retried text once lost its thread).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from bridge.core.directory import DEFAULT_PBX
from bridge.core.texts import EchoText, InboundText

# A text from a phone (or the echo of a /sip text) on its way to Slack: `posting` is written
# before the post is sent, so after a crash the bridge knows which posts may be in Slack;
# `set_aside`: Slack refused it however it was rendered (kept, with a notice in the channel).
InboundState = Literal["pending", "posting", "posted", "set_aside"]
# A text to a phone: queued until Asterisk took every segment (sent) or it failed.
OutboundState = Literal["queued", "sent", "failed"]
# Where a text to a phone came from: the slash command, the compose window, a reply in a
# phone's thread, or the Retry button on a failed text's notice.
Source = Literal["slash", "modal", "reply", "retry"]


@dataclass(frozen=True)
class InboundRow:
    """Something to post into Slack: a phone's text, or the echo of a /sip text."""

    id: int
    channel: str
    endpoint: str | None
    text: InboundText | EchoText
    received_at: float
    state: InboundState
    attempts: int
    conversation: str = ""


@dataclass(frozen=True)
class OutboundRow:
    id: int
    slack_user: str
    slack_channel: str
    endpoint: str
    destination: str
    body: str
    response_url: str | None
    created_at: float
    state: OutboundState
    segments_sent: int
    segments_total: int
    last_error: str | None
    notified: bool
    source: Source = "slash"
    feedback_channel: str | None = None
    feedback_ts: str | None = None
    thread_ts: str | None = None
    feedback_done: bool = False
    pbx: str = DEFAULT_PBX  # the PBX it goes out through (its endpoint's)


@dataclass(frozen=True)
class NewInbound:
    channel: str
    endpoint: str | None
    text: InboundText | EchoText
    received_at: float
    conversation: str = ""


@dataclass(frozen=True)
class NewOutbound:
    """A text to send, as the store takes it (`StoreBackend.accept_outbound`)."""

    slack_user: str
    slack_channel: str
    endpoint: str
    destination: str
    body: str
    response_url: str | None
    segments_total: int
    source: Source = "slash"
    feedback_ts: str | None = None  # the Slack message that shows its state (replies)
    thread_ts: str | None = None
    pbx: str = DEFAULT_PBX

    @property
    def feedback_channel(self) -> str | None:
        """Where its state shows: a reply's own channel (None: its echo, set when posted)."""
        return self.slack_channel if self.feedback_ts else None

    def stored(self, row_id: int, created_at: float) -> OutboundRow:
        """The row the store holds for it once inserted as `row_id`."""
        return OutboundRow(
            id=row_id, slack_user=self.slack_user, slack_channel=self.slack_channel,
            endpoint=self.endpoint, destination=self.destination, body=self.body,
            response_url=self.response_url, created_at=created_at, state="queued",
            segments_sent=0, segments_total=self.segments_total, last_error=None,
            notified=False, source=self.source, feedback_channel=self.feedback_channel,
            feedback_ts=self.feedback_ts, thread_ts=self.thread_ts, pbx=self.pbx)


@dataclass(frozen=True)
class Accepted:
    """A text stored for sending, and its echo if one was stored with it."""

    row: OutboundRow
    echo: InboundRow | None = None


def echo_of(echo: NewInbound, outbound_id: int) -> NewInbound:
    """`echo` (the echo of a text not stored yet) as the echo of the text `outbound_id`."""
    assert isinstance(echo.text, EchoText)
    return replace(echo, text=replace(echo.text, outbound_id=outbound_id))


@dataclass(frozen=True)
class AuditEntry:
    """One send or refusal: who, to whom, when, what happened (the text only if configured)."""

    at: float
    slack_user: str
    slack_channel: str
    source: str
    recipient: str
    endpoint: str | None
    destination: str | None
    result: str
    reason: str | None
    outbound_id: int | None
    text: str | None


@dataclass(frozen=True)
class Conversation:
    key: str
    channel: str
    thread_ts: str
    last_activity: float


@dataclass(frozen=True)
class ThreadOwner:
    conversation: str
    endpoint: str | None


@dataclass(frozen=True)
class Pruned:
    """What one prune forgot."""

    texts: int  # delivered inbound and finished outbound texts
    threads: int
    conversations: int
    slack_events: int
    audit: int


@dataclass(frozen=True)
class Backlog:
    inbound_waiting: int
    inbound_oldest: float | None  # unix time of the oldest waiting inbound text
    outbound_waiting: int
    outbound_oldest: float | None
    outbound_unnotified: int


@dataclass(frozen=True)
class Outcome:
    """What became of a stored text, for telling its sender."""

    row: OutboundRow
    endpoint: str
    sent: bool
    segments_sent: int
    reason: Exception | None  # why it failed


@dataclass(frozen=True)
class PbxStatus:
    """One PBX's AMI link right now, as `/sip status` shows it."""

    name: str
    address: str
    ready: bool
    error: str
    required: bool = True
