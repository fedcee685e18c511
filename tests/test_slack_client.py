"""The Slack error boundary: every way a Web API call can fail becomes one SlackError."""

from __future__ import annotations

import types

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError

from bridge.core.errors import SlackError
from bridge.slack.client import slack_call


def _answer(status: int, data: object, headers: dict[str, str] | None = None) -> object:
    return types.SimpleNamespace(status_code=status, data=data, headers=headers or {})


async def _raising(exc: BaseException) -> None:
    raise exc


async def _returning(answer: object) -> object:
    return answer


async def test_an_ok_false_answer_carries_slacks_code() -> None:
    exc = SlackApiError("no", _answer(200, {"ok": False, "error": "channel_not_found"}))
    with pytest.raises(SlackError) as caught:
        await slack_call(_raising(exc))
    assert caught.value.error == "channel_not_found"
    assert not caught.value.ambiguous and caught.value.retry_after is None


async def test_an_html_answer_from_a_proxy_is_its_status_and_may_have_happened() -> None:
    exc = SlackApiError("no", _answer(502, "<html><body>Bad Gateway</body></html>"))
    with pytest.raises(SlackError) as caught:
        await slack_call(_raising(exc))
    assert caught.value.error == "HTTP 502 (not a Slack answer)"
    assert caught.value.status == 502 and caught.value.ambiguous


async def test_a_429_carries_retry_after() -> None:
    exc = SlackApiError("slow down", _answer(429, {"ok": False, "error": "ratelimited"},
                                             {"Retry-After": "7"}))
    with pytest.raises(SlackError) as caught:
        await slack_call(_raising(exc))
    assert caught.value.retry_after == 7.0 and caught.value.status == 429


async def test_internal_error_may_have_happened() -> None:
    exc = SlackApiError("oops", _answer(200, {"ok": False, "error": "internal_error"}))
    with pytest.raises(SlackError) as caught:
        await slack_call(_raising(exc))
    assert caught.value.ambiguous


async def test_an_answer_that_is_not_a_json_object_is_a_failure() -> None:
    with pytest.raises(SlackError) as caught:
        await slack_call(_returning(types.SimpleNamespace(data=["not", "an", "object"])))
    assert caught.value.ambiguous


async def test_no_answer_is_ambiguous_unless_never_connected() -> None:
    with pytest.raises(SlackError) as caught:
        await slack_call(_raising(TimeoutError()))
    assert caught.value.ambiguous
    refused = aiohttp.ClientConnectorError(
        types.SimpleNamespace(ssl=None, host="slack", port=443),  # type: ignore[arg-type]
        ConnectionRefusedError(111, "refused"))
    with pytest.raises(SlackError) as caught:
        await slack_call(_raising(refused))
    assert not caught.value.ambiguous
