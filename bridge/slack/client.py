"""The Slack Web API client and posting: one of the two modules that import slack_sdk.

`make_web_client` builds the AsyncWebClient every part of the bridge shares (base URL from
SLACK_API_URL for GovSlack-style hosts and tests). Every Web API call goes through `_answer`,
the one place where whatever comes back (slack_sdk's errors, a proxy's HTML page, JSON of the
wrong shape, a timeout) becomes either a dict or `SlackError`; nothing else in the bridge sees
a slack_sdk exception. `SlackPoster.post` turns a failure into `PostFailed`, which says whether
trying again can help, whether the post may have arrived anyway and whether Slack refused its
*content*; `find_posted` answers "did it arrive" from the channel history. `Notifier` tells a
user what became of their text (response_url while valid, else a DM or an ephemeral message).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bridge.core.errors import PostFailed, SlackError
from bridge.settings.config import SlackSettings

log = logging.getLogger(__name__)

# Slack API errors that the same request will keep getting: retrying cannot help.
_PERMANENT = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed",
    "account_inactive", "token_revoked", "missing_scope", "invalid_blocks",
    "msg_blocks_too_long", "no_text", "restricted_action", "ekm_access_denied",
    "team_access_not_granted", "invalid_arguments", "too_many_attachments",
})
# Of those, the ones about the message itself (its blocks, text or size), not the channel:
# the same channel takes a post rendered differently.
_CONTENT = frozenset({
    "invalid_blocks", "invalid_blocks_format", "msg_blocks_too_long", "msg_too_long",
    "no_text", "too_many_attachments", "invalid_attachments", "invalid_arguments",
    "invalid_metadata_format", "invalid_metadata_schema", "metadata_too_large",
    "markdown_text_conflict",
})
# Slack documents these as "it is possible some aspect of the operation succeeded before the
# error was raised": the post may be in the channel, as after a timeout.
_MAY_HAVE_HAPPENED = frozenset({"internal_error", "fatal_error"})

_DEFAULT_API_URL = "https://slack.com/api/"
_RESPONSE_URL_LIFETIME = 29 * 60
_GROUP_CACHE_SECONDS = 300.0


def _failure_of(response: object) -> SlackError:
    """What a refused call's response says, whatever its shape: slack_sdk hands over a
    SlackResponse (its data a dict, {} for an HTML page, None for an empty body) or, when
    the body was not JSON at all, aiohttp's own ClientResponse."""
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    return _failure(status if isinstance(status, int) else 0, getattr(response, "data", None),
                    getattr(response, "headers", None))


def _failure(status: int, data: object, headers: object) -> SlackError:
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, str) or not error:
        error = f"HTTP {status}" + ("" if isinstance(data, dict) and data
                                    else " (not a Slack answer)")
    retry_after = None
    if status == 429:
        headers = headers or {}
        try:
            header = headers.get("Retry-After") or headers.get("retry-after")  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            header = None
        retry_after = float(header) if header and str(header).isdigit() else 1.0
    # A 5xx may come from a gateway that passed the request on before failing; 503 is
    # Slack (or the gateway) saying it did not take the request.
    ambiguous = error in _MAY_HAVE_HAPPENED or (status >= 500 and status != 503)
    return SlackError(error, ambiguous=ambiguous, retry_after=retry_after,
                      status=status or None)


async def slack_call(call: Awaitable[Any]) -> dict[str, Any]:
    """Await one Web API call and return its answer as a dict; raise SlackError otherwise.

    The single place slack_sdk's and aiohttp's errors are mapped: a refusal, a proxy's HTML
    page, JSON of the wrong shape, a refused connection and a timeout all become SlackError.
    """
    try:
        response = await call
    except SlackApiError as exc:
        raise _failure_of(exc.response) from exc
    except aiohttp.ClientConnectorError as exc:  # never reached Slack
        raise SlackError(f"cannot connect: {exc}") from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise SlackError(f"{type(exc).__name__}: {exc}".rstrip(": "), ambiguous=True) from exc
    except (AttributeError, TypeError, ValueError) as exc:
        # slack_sdk trips over some answers itself (a JSON array: 'list' has no 'get').
        raise SlackError(f"unreadable answer from Slack ({type(exc).__name__}: {exc})",
                         ambiguous=True) from exc
    data = getattr(response, "data", None)
    if not isinstance(data, dict):
        raise SlackError("unreadable answer from Slack (not a JSON object)", ambiguous=True)
    return data


class WebApi:
    """Web API calls with a JSON body on the hot paths (every post of texts, every echo):
    the request slack_sdk sends (bearer token, JSON body, the shared session and its
    timeout), the answer mapped to a dict or SlackError as `slack_call` maps slack_sdk's.
    Measured at 1,000 texts a second: slack_sdk's request machinery around aiohttp was a
    tenth of the bridge's CPU. Without a shared session (some tests) it is slack_sdk's call.
    """

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client
        self._headers = {**client.headers, "Content-Type": "application/json;charset=utf-8",
                         "Authorization": f"Bearer {client.token}"}

    async def call(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        session = self._client.session
        if session is None or session.closed:
            return await slack_call(self._client.api_call(method, json=payload))
        body = json.dumps(payload).encode()
        try:
            async with session.post(urllib.parse.urljoin(self._client.base_url, method),
                                    data=body,
                                    headers=self._headers) as response:
                status, headers = response.status, response.headers
                raw = await response.read()
        except aiohttp.ClientConnectorError as exc:  # never reached Slack
            raise SlackError(f"cannot connect: {exc}") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise SlackError(f"{type(exc).__name__}: {exc}".rstrip(": "),
                             ambiguous=True) from exc
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = {}  # an HTML page: what slack_sdk makes of it
        if status == 200 and isinstance(data, dict) and data.get("ok"):
            return data
        if status == 200 and not isinstance(data, dict) and data is not None:
            raise SlackError("unreadable answer from Slack (not a JSON object)", ambiguous=True)
        raise _failure(status, data, headers)


def post_failed(channel: str, failure: SlackError) -> PostFailed:
    """What a failed chat.postMessage means for the relay."""
    return PostFailed(channel, failure.error, permanent=failure.error in _PERMANENT,
                      content=failure.error in _CONTENT, ambiguous=failure.ambiguous,
                      retry_after=failure.retry_after)


def auth_probe(client: AsyncWebClient) -> Callable[[], Awaitable[object]]:
    """`auth.test` as the health probe calls it (raising our errors)."""
    async def probe() -> object:
        return await slack_call(client.auth_test())
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
        self._api = WebApi(client)
        self.history_available = True

    async def post(self, *, channel: str, text: str, blocks: list[dict[str, Any]],
                   marker: str = "", thread_ts: str | None = None) -> str:
        """Post and return the message ts; raise PostFailed."""
        payload: dict[str, Any] = {"channel": channel, "text": text, "blocks": blocks,
                                   "unfurl_links": False, "unfurl_media": False}
        if thread_ts:
            payload["thread_ts"] = thread_ts
        if marker:
            payload["metadata"] = {"event_type": METADATA_EVENT,
                                   "event_payload": {"marker": marker}}
        try:
            answer = await self._api.call("chat.postMessage", payload)
        except SlackError as failure:
            raise post_failed(channel, failure) from failure
        ts = answer.get("ts")
        if not isinstance(ts, str) or not ts:
            # Slack said ok but named no message: it may well be there; check the history.
            raise PostFailed(channel, "the answer names no message ts", ambiguous=True)
        return ts

    async def find_posted(self, *, channel: str, first: int, since: float,
                          thread_ts: str | None = None) -> tuple[str, int] | None:
        """Our post in `channel` (after unix time `since`) whose texts start at store ID
        `first`: its ts and the last store ID it carried; None if there is none.

        A post inside a thread is not in the channel's history (Slack lists replies only in
        conversations.replies), so with `thread_ts` that thread is searched first.
        Raises PostFailed when Slack cannot be asked right now. Without the history scope
        (channels:history / groups:history) the answer is always None: then a timed-out post
        is sent again, and may show twice.
        """
        if not self.history_available:
            return None
        if thread_ts:
            found = await self._search(channel, first, since, thread_ts)
            if found is not None or not self.history_available:
                return found
        return await self._search(channel, first, since, None)

    async def _search(self, channel: str, first: int, since: float,
                      thread_ts: str | None) -> tuple[str, int] | None:
        prefix = f"{first}-"
        cursor: str | None = None
        for _ in range(10):  # at most 1,000 messages back
            try:
                if thread_ts:
                    call = self._client.conversations_replies(
                        channel=channel, ts=thread_ts, oldest=f"{since - 5:.6f}", limit=100,
                        include_all_metadata=True, cursor=cursor)
                else:
                    call = self._client.conversations_history(
                        channel=channel, oldest=f"{since - 5:.6f}", limit=100,
                        include_all_metadata=True, cursor=cursor)
                answer = await slack_call(call)
            except SlackError as failure:
                if failure.error in ("missing_scope", "not_allowed_token_type"):
                    log.warning("Slack: cannot read channel history (%s): after a timeout the "
                                "bridge cannot tell whether a post arrived, so it posts again; "
                                "add the channels:history and groups:history scopes",
                                failure.error)
                    self.history_available = False
                    return None
                if thread_ts and failure.error == "thread_not_found":
                    return None
                raise PostFailed(channel, f"history unavailable: {failure.error}",
                                 retry_after=failure.retry_after) from failure
            messages = answer.get("messages")
            if not isinstance(messages, list):
                raise PostFailed(channel, "history unreadable: no list of messages")
            for message in messages:
                found = _marked(message, prefix)
                if found is not None:
                    return found
            metadata = answer.get("response_metadata")
            cursor = metadata.get("next_cursor") if isinstance(metadata, dict) else None
            if not isinstance(cursor, str) or not cursor:
                return None
        return None


def _marked(message: object, prefix: str) -> tuple[str, int] | None:
    """A history message's ts and last store ID if it is our post marked `prefix`..."""
    if not isinstance(message, dict):
        return None
    metadata = message.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("event_type") != METADATA_EVENT:
        return None
    payload = metadata.get("event_payload")
    marker = str(payload.get("marker", "")) if isinstance(payload, dict) else ""
    ts = message.get("ts")
    if marker.startswith(prefix) and marker[len(prefix):].isdigit() and \
            isinstance(ts, str) and ts:
        return ts, int(marker[len(prefix):])
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
                answer = await webhook.send(text=text, response_type="ephemeral")
                if answer.status_code == 200:
                    return True
                log.info("Slack: response_url answered %s; using the %s fallback",
                         answer.status_code, self._fallback)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.info("Slack: response_url failed (%s); using the %s fallback", exc,
                         self._fallback)
        try:
            if self._fallback == "dm":
                await slack_call(self._client.chat_postMessage(channel=user, text=text))
            elif self._fallback == "channel":
                await slack_call(self._client.chat_postEphemeral(channel=channel, user=user,
                                                              text=text))
            return True
        except SlackError as failure:
            log.warning("Slack: could not tell %s about their text (%s)", user, failure.error)
            return failure.error in _PERMANENT


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
                    answer = await slack_call(self._client.usergroups_users_list(usergroup=group))
                    users = answer.get("users")
                    if not isinstance(users, list):
                        raise SlackError("no list of users in the answer")
                    members[group] = frozenset(str(u) for u in users)
                except SlackError as failure:
                    log.warning("Slack: cannot list user group %s (%s); its members are "
                                "refused until it can be read (scope usergroups:read)",
                                group, failure.error)
                    members[group] = self._members.get(group, frozenset())
            self._members, self._members_at = members, time.monotonic()
        return frozenset(g for g, users in self._members.items() if user in users)

    async def react(self, channel: str, ts: str, name: str, *, remove: bool = False) -> None:
        try:
            if remove:
                await slack_call(self._client.reactions_remove(channel=channel, timestamp=ts,
                                                            name=name))
            else:
                await slack_call(self._client.reactions_add(channel=channel, timestamp=ts,
                                                         name=name))
        except SlackError as failure:
            if failure.error not in ("already_reacted", "no_reaction"):
                log.warning("Slack: could not %s :%s: on %s/%s (%s)",
                            "remove" if remove else "add", name, channel, ts, failure.error)

    async def note_in_thread(self, channel: str, thread_ts: str, text: str,
                             blocks: list[dict[str, Any]] | None = None) -> bool:
        try:
            await slack_call(self._client.chat_postMessage(channel=channel, thread_ts=thread_ts,
                                                           text=text, blocks=blocks))
        except SlackError as failure:
            log.warning("Slack: could not post a note in %s/%s (%s)", channel, thread_ts,
                        failure.error)
            return False
        return True

    async def ephemeral(self, channel: str, user: str, text: str,
                        thread_ts: str | None = None) -> None:
        try:
            await slack_call(self._client.chat_postEphemeral(channel=channel, user=user, text=text,
                                                          thread_ts=thread_ts))
        except SlackError as failure:
            log.warning("Slack: could not tell %s in %s (%s)", user, channel, failure.error)

    async def display_names(self, user_ids: list[str]) -> dict[str, str]:
        """Display names for user IDs (users.info; the ID itself when Slack cannot say)."""
        for user_id in user_ids:
            if user_id in self._names:
                continue
            try:
                answer = await slack_call(self._client.users_info(user=user_id))
            except SlackError as failure:
                log.info("Slack: no name for %s (%s)", user_id, failure.error)
                continue
            user = answer.get("user")
            user = user if isinstance(user, dict) else {}
            profile = user.get("profile")
            profile = profile if isinstance(profile, dict) else {}
            name = (profile.get("display_name") or profile.get("real_name")
                    or user.get("name") or user_id)
            self._names[user_id] = str(name)
        return {u: self._names.get(u, u) for u in user_ids}
