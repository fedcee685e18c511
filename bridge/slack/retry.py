"""The Retry button on a failed text's notice in its phone's thread.

Only the text's sender may press it (anyone else is told so, only them); it sends the same text
to the same recipient once, however often it is pressed (the first press claims the text in the
store, where Slack event IDs are deduplicated, so a double click, a retried delivery or a
restart cannot send it twice); and it goes through the gate again, since the rules, the limits
or the directory may have changed since the first try. A refusal there gives the claim back,
so the sender may try again once the reason is gone.

Self-contained on purpose: the notice's blocks come from `failure_notice_blocks`, the press is
handled by `RetryButton.on_press`, and the new attempt is an ordinary text from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncRespond

from bridge.core.directory import Endpoint
from bridge.core.errors import TextRejected
from bridge.delivery.outbound import OutboundText
from bridge.slack.text import escape
from bridge.store.backend import StoreBackend

log = logging.getLogger(__name__)


Admit = Callable[[OutboundText, str], Awaitable[Endpoint]]


def _claim_key(row_id: int) -> str:
    return f"retry:{row_id}"


class RetryButton:
    """Handles presses of the Retry button (`block_actions` with RETRY_ACTION)."""

    def __init__(self, *, store: StoreBackend, admit: Admit) -> None:
        self._store = store
        self._admit = admit

    async def on_press(self, ack: AsyncAck, body: dict[str, Any],
                       respond: AsyncRespond) -> None:
        await ack()
        user = body.get("user") or {}
        presser = str(user.get("id") or "")
        actions = body.get("actions") or [{}]
        value = str(actions[0].get("value") or "")
        row = await self._store.get_outbound(int(value)) if value.isdigit() else None

        async def tell(text: str) -> None:
            await respond(text=text, response_type="ephemeral", replace_original=False)

        if row is None:
            await tell("That text is no longer stored, so it cannot be retried; send it again "
                       "with the command.")
            return
        if presser != row.slack_user:
            log.info("retry: slack_user=%s pressed Retry on id=%d of %s: refused", presser,
                     row.id, row.slack_user)
            await tell("Only the sender can retry this text.")
            return
        if row.state != "failed":
            await tell(f"That text to *{escape(row.endpoint)}* did not fail; nothing to retry.")
            return
        if not await self._store.first_sight_of_event(_claim_key(row.id)):
            await tell(f"That text to *{escape(row.endpoint)}* was already retried.")
            return
        request = OutboundText(recipient=row.endpoint, text=row.body, slack_user=presser,
                               slack_channel=row.slack_channel,
                               response_url=str(body.get("response_url") or "") or None,
                               source="retry")
        name = str(user.get("username") or user.get("name") or presser)
        try:
            endpoint = await self._admit(request, name)
        except TextRejected as exc:
            await self._store.forget_event(_claim_key(row.id))
            await tell(f":x: Not retried: {exc}.")
            return
        log.info("retry: id=%d retried by its sender %s", row.id, presser)
        await tell(f"Retrying the text to *{escape(endpoint.name)}*…")
