"""What Slack says about the bridge's tokens and channels, for `bridge check`.

One of the Slack modules (it imports slack_sdk). It asks Slack, read-only:
- `auth.test` with the bot token: does the token work, who is the bot, and (from the
  `x-oauth-scopes` response header) which scopes it was granted;
- `conversations.info` for every mapped channel: does it exist, is it private or archived,
  is the bot a member (needs channels:read / groups:read; without them Slack answers
  `missing_scope` and membership cannot be seen);
- `apps.connections.open` with the app-level token in Socket Mode: does that token work
  (it only issues a WebSocket URL; nothing connects to it).

Everything comes back as plain values; `bridge/ops/check.py` decides what is a problem. No call
is retried for long: the whole probe is bounded by one timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bridge.settings.config import SlackSettings

_DEFAULT_API_URL = "https://slack.com/api/"


@dataclass(frozen=True)
class SlackIdentity:
    """auth.test's answer: who the bot is and which scopes its token has."""

    user: str
    team: str
    scopes: frozenset[str] | None  # None: Slack sent no x-oauth-scopes header


@dataclass(frozen=True)
class ChannelState:
    """conversations.info's answer for one channel, or the error Slack gave instead."""

    channel: str
    error: str | None = None  # e.g. channel_not_found, missing_scope
    name: str = ""
    is_member: bool = False
    is_private: bool = False
    is_archived: bool = False
    is_im: bool = False


@dataclass(frozen=True)
class SlackProbe:
    """Everything `probe_slack` learned. `unreachable` set means nothing else could be asked."""

    api_url: str
    unreachable: str | None = None  # network error or timeout, phrased for the admin
    auth_error: str | None = None  # Slack's error for auth.test (invalid_auth, ...)
    identity: SlackIdentity | None = None
    channels: tuple[ChannelState, ...] = ()
    app_token_error: str | None = None  # None: fine or not in Socket Mode


class _Unreachable(Exception):
    pass


async def probe_slack(settings: SlackSettings, channels: Iterable[str], *,
                      timeout: float) -> SlackProbe:
    """Ask Slack about the bot token, the app token (Socket Mode) and every channel."""
    api_url = settings.api_url or _DEFAULT_API_URL
    # No retry handlers: a check must answer quickly, and the timeout bounds everything.
    client = AsyncWebClient(token=settings.bot_token.reveal(), base_url=api_url,
                            timeout=max(1, int(timeout)), retry_handlers=[])
    try:
        return await asyncio.wait_for(_probe(client, settings, list(channels), api_url),
                                      timeout)
    except TimeoutError:
        return SlackProbe(api_url=api_url,
                          unreachable=f"no answer from {api_url} within {timeout:g} s")
    except _Unreachable as exc:
        return SlackProbe(api_url=api_url, unreachable=str(exc))


async def _call(request: Awaitable[AsyncSlackResponse], base_url: str,
                ) -> tuple[Mapping[str, Any], Mapping[str, str]]:
    """(body, headers) of one API call; Slack's refusals come back as the body, not raised."""
    try:
        response = await request
    except SlackApiError as exc:
        response = exc.response
    except (aiohttp.ClientError, OSError) as exc:
        raise _Unreachable(f"cannot reach {base_url}: {exc}") from exc
    body = response.data if isinstance(response.data, dict) else {}
    if not body and response.status_code != 200:
        body = {"ok": False, "error": f"HTTP {response.status_code}"}
    return body, response.headers


async def _probe(client: AsyncWebClient, settings: SlackSettings, channels: list[str],
                 api_url: str) -> SlackProbe:
    body, headers = await _call(client.auth_test(), api_url)
    if not body.get("ok"):
        return SlackProbe(api_url=api_url, auth_error=str(body.get("error") or "unknown error"))
    header = next((v for k, v in headers.items() if k.lower() == "x-oauth-scopes"), None)
    scopes = None if header is None else frozenset(
        s.strip() for s in header.split(",") if s.strip())
    identity = SlackIdentity(user=str(body.get("user", "")), team=str(body.get("team", "")),
                             scopes=scopes)
    states = await asyncio.gather(*(_channel(client, c, api_url)
                                    for c in dict.fromkeys(channels)))
    app_token_error = None
    if settings.app_token is not None:
        app_client = AsyncWebClient(base_url=api_url, timeout=client.timeout,
                                    retry_handlers=[])
        app_body, _ = await _call(
            app_client.apps_connections_open(app_token=settings.app_token.reveal()), api_url)
        if not app_body.get("ok"):
            app_token_error = str(app_body.get("error") or "unknown error")
    return SlackProbe(api_url=api_url, identity=identity, channels=tuple(states),
                      app_token_error=app_token_error)


async def _channel(client: AsyncWebClient, channel: str, api_url: str) -> ChannelState:
    body, _ = await _call(client.conversations_info(channel=channel), api_url)
    if not body.get("ok"):
        return ChannelState(channel=channel, error=str(body.get("error") or "unknown error"))
    info = body.get("channel") or {}
    return ChannelState(
        channel=channel,
        name=str(info.get("name") or ""),
        is_member=bool(info.get("is_member")),
        is_private=bool(info.get("is_private") or info.get("is_group")),
        is_archived=bool(info.get("is_archived")),
        is_im=bool(info.get("is_im")),
    )
