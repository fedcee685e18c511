"""The store's interface: what the rest of the bridge may ask of wherever texts are kept.

`bridge/store/sqlite.py` is the embedded backend (one process, one file). Every other part of
the bridge is typed against `StoreBackend`, so a second backend (PostgreSQL, for several
replicas) implements this one interface and nothing else changes. Values come and go as the
frozen dataclasses of `bridge/core/model.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from bridge.core.directory import DEFAULT_PBX
from bridge.core.model import (
    Accepted,
    AuditEntry,
    Backlog,
    Conversation,
    InboundRow,
    InboundState,
    NewInbound,
    NewOutbound,
    OutboundRow,
    OutboundState,
    Pruned,
    Source,
    ThreadOwner,
)


class StoreBackend(Protocol):
    """Everything the bridge keeps until it is delivered; every call is one transaction."""

    @property
    def location(self) -> str:
        """Where the store is, for messages (a path, or a database URL without password)."""

    @property
    def created_at(self) -> float | None:
        """When this store was created (unix time); None when it predates knowing. Texts in
        Asterisk's spool from before it may be in Slack already: not relayed unless asked."""

    async def watch(self, interval: float = 2.0) -> None:
        """Forever: notice the store becoming unusable (file replaced, database gone) and
        usable again; `problem` says why meanwhile."""

    @property
    def problem(self) -> str | None:
        """Why the store cannot take texts right now (disk full, file replaced); None: fine."""

    async def close(self) -> None: ...

    async def add_inbound(self, items: list[NewInbound]) -> list[InboundRow | None]:
        """Store texts in one transaction; None in place of a duplicate (same message_id)."""

    async def waiting_inbound(self, *, channel: str | None = None,
                              limit: int | None = None) -> list[InboundRow]:
        """Inbound texts not yet known to be posted, oldest first: all of them, or the
        oldest `limit` of one `channel`."""

    async def waiting_channels(self) -> dict[str, int]:
        """The channels with inbound texts waiting, each with how many."""

    async def mark_inbound(self, ids: Iterable[int], state: InboundState, *,
                           error: str | None = None, slack_ts: str | None = None,
                           then_posting: Iterable[int] = (), channel: str = "",
                           echoes_done: Iterable[int] = ()) -> None:
        """Set the texts' state. `then_posting`: with state "posted", these other texts are
        marked "posting" in the same transaction (a channel posting back to back writes once
        a post: the post that went and the one about to go). `echoes_done`: with "posted",
        the /sip texts (outbound IDs) whose echoes are among `ids`, posted showing their
        final state: their feedback target becomes that post (`channel`, `slack_ts`), done,
        in the same transaction."""

    async def move_inbound(self, ids: Iterable[int], channel: str) -> None: ...

    async def add_outbound(self, *, slack_user: str, slack_channel: str, endpoint: str,
                           destination: str, body: str, response_url: str | None,
                           segments_total: int, source: Source = "slash",
                           feedback_ts: str | None = None,
                           thread_ts: str | None = None, pbx: str = DEFAULT_PBX
                           ) -> OutboundRow:
        """Store a text to send to `endpoint` through PBX `pbx`."""

    async def accept_outbound(self, new: NewOutbound, *, request_id: str | None = None,
                              audit: AuditEntry | None = None,
                              echo: NewInbound | None = None) -> Accepted | None:
        """Store a text to send with what comes with it, in one transaction (one trip to the
        store for a /sip text, not four): its audit entry and its echo for the phone's
        conversation (their `outbound_id` set to the text's id), and `request_id`, the
        Slack request that asked for it (as `first_sight_of_event` records it). None, and
        nothing stored, if that request was recorded before (a replay, a redelivery)."""

    async def unfinished_outbound(self) -> list[OutboundRow]:
        """Texts still to send, and finished ones whose sender has not been told yet."""

    async def get_outbound(self, row_id: int) -> OutboundRow | None: ...

    async def recent_outbound(self, slack_user: str, limit: int = 10) -> list[OutboundRow]:
        """A user's latest texts to phones, newest first (for the App Home)."""

    async def set_feedback_target(self, row_id: int, channel: str, ts: str, *,
                                  done: bool = False) -> None:
        """The Slack message that shows this text's state (e.g. its echo in the thread)."""

    async def feedback_done(self, row_id: int) -> None: ...

    async def add_audit(self, entry: AuditEntry) -> None: ...

    async def conversation(self, key: str) -> Conversation | None: ...

    async def start_conversation(self, *, key: str, channel: str, thread_ts: str,
                                 endpoint: str | None, now: float) -> None: ...

    async def touch_conversation(self, key: str, now: float) -> None: ...

    async def thread_owner(self, channel: str, thread_ts: str) -> ThreadOwner | None:
        """Which conversation a Slack thread belongs to (old threads included)."""

    async def first_sight_of_event(self, event_id: str) -> bool:
        """Record a Slack event ID; False if it was seen before (a retried delivery)."""

    async def claim_leases(self, holder: str, names: Iterable[str], ttl: float) -> set[str]:
        """Take the leases of `names` that are free or expired and renew those `holder` has,
        each for `ttl` seconds (one statement); the names `holder` holds now."""

    async def release_leases(self, holder: str, names: Iterable[str]) -> None:
        """Give up `holder`'s leases of `names`."""

    async def outbound_progress(self, row_id: int, segments_sent: int) -> None: ...

    async def finish_outbound(self, row_id: int, state: OutboundState,
                              error: str | None = None, *,
                              segments_sent: int | None = None) -> None:
        """Record a text's outcome, in its row and in its audit entry (one transaction)."""

    async def outbound_notified(self, *row_ids: int) -> None:
        """The senders of these texts have been told their outcome (one transaction)."""

    async def prune(self, older_than: float, *, audit_older_than: float | None = None
                    ) -> Pruned:
        """Forget what was finished before `older_than` (audit entries before
        `audit_older_than`; None keeps them)."""

    async def forget_event(self, event_id: str) -> None:
        """Forget a recorded event ID, so its next sight counts as the first again."""

    async def spool_mark(self, pbx: str = DEFAULT_PBX) -> float | None:
        """The newest Asterisk time of any text from PBX `pbx` ever stored (None: none yet);
        that PBX's spool read at login skips what is older."""

    async def backlog(self) -> Backlog: ...
