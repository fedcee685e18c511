"""The Slack Web API client and posting: one of the two modules that import slack_sdk.

`make_web_client` builds the AsyncWebClient every part of the bridge shares (base URL from
SLACK_API_URL for GovSlack-style hosts and tests). `SlackPoster.post` turns slack_sdk's errors
into `PostFailed`, which says whether trying again can help and whether the post may have
arrived anyway; `find_posted` answers that from the channel history. `Notifier` tells a user
what became of their text (response_url while valid, else a DM or an ephemeral message).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bridge.core.errors import PostFailed, SlackError, SlackRefused, SlackUnreachable
from bridge.settings.config import SlackSettings

log = logging.getLogger(__name__)

# Slack API errors that the same request will keep getting: retrying cannot help.
_PERMANENT = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed",
    "account_inactive", "token_revoked", "missing_scope", "invalid_blocks",
    "msg_blocks_too_long", "no_text", "restricted_action", "ekm_access_denied",
    "team_access_not_granted", "invalid_arguments", "too_many_attachments",
})

_DEFAULT_API_URL = "https://slack.com/api/"
_RESPONSE_URL_LIFETIME = 29 * 60
_GROUP_CACHE_SECONDS = 300.0


T = TypeVar("T")


async def slack_call(method: str, call: Awaitable[T]) -> T:
    """Await one Web API call: the one place slack_sdk's and aiohttp's errors become ours.

    Slack answered with an error (`ok: false`, an HTTP error status, a 429): `SlackRefused`
    with Slack's error code (or `HTTP <status>` when the answer was not Slack's JSON, e.g. a
    proxy's HTML page) and Retry-After. No answer: `SlackUnreachable`, `ambiguous` unless the
    connection was never made (then Slack certainly did nothing).
    """
    try:
        return await call
    except SlackApiError as exc:
        response = exc.response
        status = int(getattr(response, "status_code", 0) or 0)
        data = getattr(response, "data", None)
        error = data.get("error") if isinstance(data, dict) else None
        retry_after = None
        if status == 429:
            headers = getattr(response, "headers", None) or {}
            header = headers.get("Retry-After") or headers.get("retry-after")
            retry_after = float(header) if header and str(header).isdigit() else 1.0
        raise SlackRefused(method, str(error or f"HTTP {status}"), status=status or None,
                           retry_after=retry_after) from exc
    except aiohttp.ClientConnectorError as exc:  # never reached Slack
        raise SlackUnreachable(method, f"cannot connect: {exc}", ambiguous=False) from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise SlackUnreachable(method, f"{type(exc).__name__}: {exc}".rstrip(": "),
                               ambiguous=True) from exc


def auth_probe(client: AsyncWebClient) -> Callable[[], Awaitable[object]]:
    """`auth.test` as the health probe calls it (raising our errors)."""
    async def probe() -> object:
        return await slack_call("auth.test", client.auth_test())
    return probe


def api_url(settings: SlackSettings) -> str:
    """The Web API's base URL (SLACK_API_URL for GovSlack-style hosts and tests)."""
    return settings.api_url or _DEFAULT_API_URL


def make_web_client(settings: SlackSettings, *, timeout: float | None = None,
                    session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """The shared client. No SDK-level retries: the relay retries, paces and reconciles itself,
    and an SDK retry after a timeout could post a text twice behind its back.

    Pass a `session` to reuse connections (slack_sdk otherwise opens one per call).
    """
    return AsyncWebClient(
        token=settings.bot_token.reveal(),
        base_url=api_url(settings),
        timeout=int(max(1, timeout if timeout is not None else settings.timeout)),
        retry_handlers=[],
        session=session,
    )


# Message metadata event type carrying the store IDs of the texts in a post, so the bridge can
# tell after a timeout or a crash whether Slack already has the post.
METADATA_EVENT = "sip_text_relayed"


class SlackPoster:
    """Posts messages into channels, and finds its own earlier posts."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client
        self.history_available = True

    async def post(self, *, channel: str, text: str, blocks: list[dict[str, Any]],
                   marker: str = "", thread_ts: str | None = None) -> str:
        """Post and return the message ts; raise PostFailed."""
        extra: dict[str, Any] = {}
        if thread_ts:
            extra["thread_ts"] = thread_ts
        if marker:
            extra["metadata"] = {"event_type": METADATA_EVENT,
                                 "event_payload": {"marker": marker}}
        try:
            response = await slack_call("chat.postMessage", self._client.chat_postMessage(
                channel=channel, text=text, blocks=blocks, unfurl_links=False,
                unfurl_media=False, **extra))
        except SlackRefused as exc:
            raise PostFailed(channel, exc.error, permanent=exc.error in _PERMANENT,
                             retry_after=exc.retry_after) from exc
        except SlackUnreachable as exc:
            raise PostFailed(channel, exc.error, ambiguous=exc.ambiguous) from exc
        return str(response.get("ts", ""))

    async def find_posted(self, *, channel: str, first: int,
                          since: float) -> tuple[str, int] | None:
        """Our post in `channel` (after unix time `since`) whose texts start at store ID
        `first`: its ts and the last store ID it carried; None if there is none.

        Raises PostFailed when Slack cannot be asked right now. Without the history scope
        (channels:history / groups:history) the answer is always None: then a timed-out post
        is sent again, and may show twice.
        """
        if not self.history_available:
            return None
        prefix = f"{first}-"
        cursor: str | None = None
        try:
            for _ in range(10):  # at most 1,000 messages back
                response = await slack_call(
                    "conversations.history", self._client.conversations_history(
                        channel=channel, oldest=f"{since - 5:.6f}", limit=100,
                        include_all_metadata=True, cursor=cursor))
                messages: list[dict[str, Any]] = response.get("messages", [])
                for message in messages:
                    metadata = message.get("metadata") or {}
                    payload = metadata.get("event_payload") or {}
                    marker = str(payload.get("marker", ""))
                    if metadata.get("event_type") == METADATA_EVENT and \
                            marker.startswith(prefix) and marker[len(prefix):].isdigit():
                        return str(message.get("ts", "")), int(marker[len(prefix):])
                cursor = (response.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    return None
        except SlackRefused as exc:
            error = exc.error
            if error in ("missing_scope", "not_allowed_token_type"):
                log.warning("Slack: cannot read channel history (%s): after a timeout the "
                            "bridge cannot tell whether a post arrived, so it posts again; "
                            "add the channels:history and groups:history scopes", error)
                self.history_available = False
                return None
            raise PostFailed(channel, error or "history unavailable") from exc
        except SlackUnreachable as exc:
            raise PostFailed(channel, exc.error) from exc
        return None


class Notifier:
    """Tells a Slack user what became of their text, wherever they can still see it."""

    def __init__(self, client: AsyncWebClient, *, fallback: str) -> None:
        self._client = client
        self._fallback = fallback  # "dm" | "channel" | "none"
        self._session = client.session  # shared connections for response_url calls too

    async def tell(self, *, user: str, channel: str, response_url: str | None,
                   created_at: float, text: str) -> bool:
        """Deliver `text`; True once it reached the user (or there is nowhere to tell)."""
        # Slack accepts a response_url for 30 minutes (and 5 uses; we use it once per text).
        if response_url and time.time() - created_at < _RESPONSE_URL_LIFETIME:
            try:
                webhook = AsyncWebhookClient(response_url, timeout=10, session=self._session)
                answer = await slack_call("response_url", webhook.send(
                    text=text, response_type="ephemeral"))
                if answer.status_code == 200:
                    return True
                log.info("Slack: response_url answered %s; using the %s fallback",
                         answer.status_code, self._fallback)
            except SlackError as exc:
                log.info("Slack: response_url failed (%s); using the %s fallback", exc.error,
                         self._fallback)
        try:
            if self._fallback == "dm":
                await slack_call("chat.postMessage",
                                 self._client.chat_postMessage(channel=user, text=text))
            elif self._fallback == "channel":
                await slack_call("chat.postEphemeral", self._client.chat_postEphemeral(
                    channel=channel, user=user, text=text))
            return True
        except SlackError as exc:
            log.warning("Slack: could not tell %s about their text (%s)", user, exc.error)
            # Refused for good (no such user, no access): nobody can be told; don't keep trying.
            return isinstance(exc, SlackRefused) and exc.error in _PERMANENT


class SlackActions:
    """Small Slack calls around a conversation: reactions as delivery state, notes in a
    thread, ephemeral answers, and users' display names (cached)."""

    def __init__(self, client: AsyncWebClient, *, usergroups: frozenset[str] = frozenset()
                 ) -> None:
        self._client = client
        self._names: dict[str, str] = {}
        self._usergroups = usergroups  # the groups access rules mention
        self._members: dict[str, frozenset[str]] = {}
        self._members_at = 0.0

    async def user_groups_of(self, user: str) -> frozenset[str]:
        """Which of the configured user groups `user` is in (membership cached 5 minutes)."""
        if time.monotonic() - self._members_at > _GROUP_CACHE_SECONDS:
            members: dict[str, frozenset[str]] = {}
            for group in sorted(self._usergroups):
                try:
                    answer = await slack_call("usergroups.users.list",
                                              self._client.usergroups_users_list(usergroup=group))
                    members[group] = frozenset(answer.get("users") or [])
                except SlackError as exc:
                    log.warning("Slack: cannot list user group %s (%s); its members are "
                                "refused until it can be read (scope usergroups:read)",
                                group, exc)
                    members[group] = self._members.get(group, frozenset())
            self._members, self._members_at = members, time.monotonic()
        return frozenset(g for g, users in self._members.items() if user in users)

    async def react(self, channel: str, ts: str, name: str, *, remove: bool = False) -> None:
        try:
            if remove:
                await slack_call("reactions.remove", self._client.reactions_remove(
                    channel=channel, timestamp=ts, name=name))
            else:
                await slack_call("reactions.add", self._client.reactions_add(
                    channel=channel, timestamp=ts, name=name))
        except SlackError as exc:
            if exc.error not in ("already_reacted", "no_reaction"):
                log.warning("Slack: could not %s :%s: on %s/%s (%s)",
                            "remove" if remove else "add", name, channel, ts, exc.error)

    async def note_in_thread(self, channel: str, thread_ts: str, text: str,
                             blocks: list[dict[str, Any]] | None = None) -> bool:
        try:
            await slack_call("chat.postMessage", self._client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=text, blocks=blocks))
        except SlackError as exc:
            log.warning("Slack: could not post a note in %s/%s (%s)", channel, thread_ts,
                        exc.error)
            return False
        return True

    async def ephemeral(self, channel: str, user: str, text: str,
                        thread_ts: str | None = None) -> None:
        try:
            await slack_call("chat.postEphemeral", self._client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=thread_ts))
        except SlackError as exc:
            log.warning("Slack: could not tell %s in %s (%s)", user, channel, exc.error)

    async def display_names(self, user_ids: list[str]) -> dict[str, str]:
        """Display names for user IDs (users.info; the ID itself when Slack cannot say)."""
        for user_id in user_ids:
            if user_id in self._names:
                continue
            try:
                answer = await slack_call("users.info", self._client.users_info(user=user_id))
            except SlackError as exc:
                log.info("Slack: no name for %s (%s)", user_id, exc.error)
                continue
            user = answer.get("user") or {}
            profile = user.get("profile") or {}
            name = (profile.get("display_name") or profile.get("real_name")
                    or user.get("name") or user_id)
            self._names[user_id] = str(name)
        return {u: self._names.get(u, u) for u in user_ids}
