"""The Slack Web API client and posting: one of the two modules that import slack_sdk.

`make_web_client` builds the AsyncWebClient every part of the bridge shares (base URL from
SLACK_API_URL for GovSlack-style hosts and tests; retries for connection errors, 429 with
Retry-After and 5xx). `SlackPoster.post` turns slack_sdk's errors into `PostFailed`, which
says whether trying again can help.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bridge.config import SlackSettings
from bridge.errors import BridgeError

log = logging.getLogger(__name__)

# Slack API errors that the same request will keep getting: retrying cannot help.
_PERMANENT = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed",
    "account_inactive", "token_revoked", "missing_scope", "invalid_blocks",
    "msg_blocks_too_long", "no_text", "restricted_action", "ekm_access_denied",
    "team_access_not_granted", "invalid_arguments", "too_many_attachments",
})

_DEFAULT_API_URL = "https://slack.com/api/"


class PostFailed(BridgeError):
    def __init__(self, channel: str, error: str, *, permanent: bool) -> None:
        self.channel = channel
        self.error = error
        self.permanent = permanent
        super().__init__(f"Slack refused the post to {channel}: {error}")


def make_web_client(settings: SlackSettings, *, timeout: float = 10.0) -> AsyncWebClient:
    return AsyncWebClient(
        token=settings.bot_token.reveal(),
        base_url=settings.api_url or _DEFAULT_API_URL,
        timeout=int(max(1, timeout)),
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


class SlackPoster:
    """Posts messages into channels."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def post(self, *, channel: str, text: str, blocks: list[dict[str, Any]]) -> str:
        """Post and return the message ts; raise PostFailed."""
        try:
            response = await self._client.chat_postMessage(
                channel=channel, text=text, blocks=blocks, unfurl_links=False,
                unfurl_media=False)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "") or f"HTTP {exc.response.status_code}")
            permanent = error in _PERMANENT
            raise PostFailed(channel, error, permanent=permanent) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PostFailed(channel, f"{type(exc).__name__}: {exc}", permanent=False) from exc
        return str(response.get("ts", ""))
