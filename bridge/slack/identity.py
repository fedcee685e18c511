"""Who the bot is in Slack (its team, user ID and bot ID), learned once and never per request.

Bolt's single-workspace setup calls `auth.test` before every request until one call succeeds,
so in a freshly started bridge a 429 storm or a slow Slack turns every `/sip` into bolt's
"installation no longer available" answer or a missed 3-second ack. Instead, `BotIdentity`
calls `auth.test` once at start-up, retried in the background (Retry-After on a 429, backoff
otherwise), and `authorize` hands bolt what it needs for each request at once: the bot token
it already has, and the identity as far as it is known. Until it is known the bot's own posts
are still ignored: they carry a `bot_id`, and bots are ignored unless listed in allowed_bots.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

_RETRY_FIRST = 2.0
_RETRY_MAX = 60.0


class BotIdentity:
    """The bot's identity in its workspace, once auth.test has answered."""

    def __init__(self, client: AsyncWebClient, token: str) -> None:
        self._client = client
        self._token = token
        self.team_id: str | None = None
        self.enterprise_id: str | None = None
        self.bot_user_id: str | None = None
        self.bot_id: str | None = None
        self.known = asyncio.Event()

    async def learn(self) -> None:
        """Ask auth.test until it answers (a background task; returns once known)."""
        delay = _RETRY_FIRST
        while not self.known.is_set():
            wait = delay
            try:
                answer = await self._client.auth_test()
            except SlackApiError as exc:
                status = getattr(exc.response, "status_code", 0)
                headers = getattr(exc.response, "headers", {}) or {}
                if status == 429:
                    wait = _retry_after(headers, delay)
                log.warning("Slack: cannot learn the bot's identity yet (auth.test: %s); "
                            "commands are answered meanwhile; retrying in %.0f s",
                            _error_of(exc), wait)
            except Exception as exc:  # noqa: BLE001 - no answer: retry, never crash
                log.warning("Slack: cannot learn the bot's identity yet (auth.test: %s); "
                            "commands are answered meanwhile; retrying in %.0f s",
                            f"{type(exc).__name__}: {exc}".rstrip(": "), wait)
            else:
                self._take(answer.data if isinstance(answer.data, dict) else {})
                return
            await asyncio.sleep(wait)
            delay = min(delay * 2, _RETRY_MAX)

    def _take(self, data: dict[str, Any]) -> None:
        self.team_id = str(data.get("team_id") or "") or None
        self.enterprise_id = str(data.get("enterprise_id") or "") or None
        self.bot_user_id = str(data.get("user_id") or "") or None
        self.bot_id = str(data.get("bot_id") or "") or None
        self.known.set()
        log.info("Slack: the bot is %s (bot %s) in team %s", self.bot_user_id, self.bot_id,
                 self.team_id)

    def authorizer(self) -> Callable[..., Awaitable[AuthorizeResult]]:
        """Bolt's `authorize`: the known token and identity, with no call to Slack. A plain
        function, since bolt passes arguments by the names in its signature."""
        async def authorize(enterprise_id: str | None = None, team_id: str | None = None,
                            user_id: str | None = None) -> AuthorizeResult:
            return AuthorizeResult(enterprise_id=self.enterprise_id or enterprise_id,
                                   team_id=self.team_id or team_id, bot_token=self._token,
                                   bot_user_id=self.bot_user_id, bot_id=self.bot_id,
                                   user_id=user_id)
        return authorize


def _error_of(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    error = data.get("error") if isinstance(data, dict) else None
    status = getattr(exc.response, "status_code", None)
    return f"{error or 'no error code'}, HTTP {status}"


def _retry_after(headers: Any, default: float) -> float:
    for key in ("Retry-After", "retry-after"):
        value = headers.get(key) if hasattr(headers, "get") else None
        if value is not None:
            try:
                return max(1.0, min(float(value), _RETRY_MAX))
            except (TypeError, ValueError):
                break
    return default
