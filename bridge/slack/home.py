"""The App Home tab: the directory with presence, the user's recent texts, the bridge's state.

Published with `views.publish` when a user opens the tab (`app_home_opened`) and again when
something it shows changes (a phone's presence, the outcome of one of their texts), at most
once per `REFRESH_SECONDS` per user: a change inside that window is published once, at its end.
Only users who opened the tab during this run are refreshed.

Slack limits met: at most 100 blocks (the directory is cut with a note saying how many more
there are), each section text at most 3,000 characters. Everything from config, phones or users
is escaped (`bridge.slack_text.escape`), so a name can never mention or link anyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bridge.core.directory import Directory
from bridge.core.errors import SlackError
from bridge.core.model import Backlog, OutboundRow
from bridge.slack.client import slack_call
from bridge.slack.text import escape

log = logging.getLogger(__name__)

HOME_COMPOSE_ACTION = "home_compose"  # the Home's "Text a phone" button
REFRESH_SECONDS = 3.0
MAX_BLOCKS = 100
_RECENT = 10
_PHONE_BLOCKS = 60  # the directory's share of the 100 blocks
_MAX_TEXT = 3000
_ICONS = {"online": ":large_green_circle:", "offline": ":white_circle:",
          "unknown": ":grey_question:"}

PresenceOf = Callable[[str], str]
Recent = Callable[[str], Awaitable[list[OutboundRow]]]
State = Callable[[], Awaitable[tuple[bool, Backlog]]]  # AMI connected, the store's backlog


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:_MAX_TEXT]}}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def text_state(row: OutboundRow) -> str:
    """A text's state as the Home shows it: queued / sent / failed and why."""
    if row.state == "sent":
        return ":white_check_mark: sent"
    if row.state == "failed":
        return f":x: failed: {escape(_cut(row.last_error or 'unknown reason', 300))}"
    return ":hourglass_flowing_sand: queued"


def home_view(*, directory: Directory, presence: PresenceOf, recent: list[OutboundRow],
              ami_ready: bool, backlog: Backlog) -> dict[str, Any]:
    """The Home tab's view (at most 100 blocks)."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Phones you can text"}},
        {"type": "actions", "elements": [{
            "type": "button", "action_id": HOME_COMPOSE_ACTION, "style": "primary",
            "text": {"type": "plain_text", "text": "Text a phone"}}]},
    ]
    endpoints = directory.endpoints
    shown = endpoints[:_PHONE_BLOCKS]
    for endpoint in shown:
        state = presence(endpoint.name)
        aliases = f" (also: {escape(', '.join(endpoint.aliases))})" if endpoint.aliases else ""
        blocks.append(_section(
            f"{_ICONS.get(state, '')} *{escape(_cut(endpoint.name, 200))}*{_cut(aliases, 500)}"
            f" · {state} · texts in <#{endpoint.channel}>"))
    if not endpoints:
        blocks.append(_section("No phones are configured yet: ask your PBX admin."))
    if len(endpoints) > len(shown):
        blocks.append(_section(f"…and {len(endpoints) - len(shown)} more: "
                               f"`/sip list` shows them all."))
    blocks += [{"type": "divider"},
               {"type": "header", "text": {"type": "plain_text", "text": "Your recent texts"}}]
    if not recent:
        blocks.append(_section("None yet."))
    for row in recent[:_RECENT]:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(row.created_at))
        quoted = ">" + escape(_cut(row.body, 500)).replace("\n", "\n>")
        blocks.append(_section(f"*{escape(_cut(row.endpoint, 200))}* · {when} · "
                               f"{text_state(row)}\n{quoted}"))
    connected = ":large_green_circle: connected" if ami_ready else ":red_circle: not connected"
    waiting = backlog.outbound_waiting
    blocks += [{"type": "divider"},
               {"type": "header", "text": {"type": "plain_text", "text": "The bridge"}},
               _section(f"*PBX (Asterisk):* {connected}\n*Texts waiting for the PBX:* "
                        f"{waiting}\n*Texts from phones waiting for Slack:* "
                        f"{backlog.inbound_waiting}")]
    assert len(blocks) <= MAX_BLOCKS
    return {"type": "home", "blocks": blocks}


class HomeTab:
    """Publishes each user's Home, throttled per user."""

    def __init__(self, *, client: AsyncWebClient, directory: Directory, presence: PresenceOf,
                 recent: Recent, state: State) -> None:
        self._client = client
        self._directory = directory
        self._presence = presence
        self._recent = recent
        self._state = state
        self._published: dict[str, float] = {}  # user -> monotonic time of the last publish
        self._pending: dict[str, asyncio.Task[None]] = {}  # users with a publish scheduled

    async def on_opened(self, event: dict[str, Any]) -> None:
        """`app_home_opened` (the Messages tab opens send it too, without tab=home)."""
        if event.get("tab", "home") != "home":
            return
        user = str(event.get("user") or "")
        if user:
            self.changed(user, opened=True)

    def changed(self, user: str | None = None, *, opened: bool = False) -> None:
        """Something a Home shows changed: republish one user's, or every one published
        this run (a user who never opened the tab gets none)."""
        if user is not None and not opened and user not in self._published:
            return
        users = [user] if user else list(self._published)
        for who in users:
            if who in self._pending:
                continue  # a publish is already coming, and it will read the latest state
            wait = REFRESH_SECONDS - (time.monotonic() - self._published.get(who, -1e9))
            task = asyncio.get_running_loop().create_task(self._publish_after(who, wait))
            self._pending[who] = task

    async def _publish_after(self, user: str, wait: float) -> None:
        try:
            if wait > 0:
                await asyncio.sleep(wait)
            self._published[user] = time.monotonic()
            del self._pending[user]
            await self._publish(user)
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed Home must not take anything else down
            log.exception("Slack: could not publish the Home of %s", user)
        finally:
            self._pending.pop(user, None)

    async def _publish(self, user: str) -> None:
        ready, backlog = await self._state()
        view = home_view(directory=self._directory, presence=self._presence,
                         recent=await self._recent(user), ami_ready=ready, backlog=backlog)
        try:
            await slack_call(self._client.views_publish(user_id=user, view=view))
        except SlackError as exc:
            log.warning("Slack: could not publish the Home of %s (%s)", user, exc.error)

    async def stop(self) -> None:
        for task in list(self._pending.values()):
            task.cancel()
        await asyncio.gather(*self._pending.values(), return_exceptions=True)
        self._pending.clear()
