"""`WebApi`, the bridge's own Web API call on the hot paths, sends what slack_sdk sends and
reads every answer as `slack_call` reads slack_sdk's: the same dict, or the same SlackError
(code, whether the post may have arrived, Retry-After, status), for Slack's answers and for
what a proxy or a broken server answers instead."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bridge.core.errors import SlackError
from bridge.slack.client import WebApi, slack_call

ANSWERS: dict[str, tuple[int, str, str, dict[str, str]]] = {
    # name: status, content type, body, headers
    "ok": (200, "application/json", '{"ok": true, "ts": "1.2", "channel": "C1"}', {}),
    "refused": (200, "application/json", '{"ok": false, "error": "channel_not_found"}', {}),
    "internal": (200, "application/json", '{"ok": false, "error": "internal_error"}', {}),
    "ratelimited": (429, "application/json", '{"ok": false, "error": "ratelimited"}',
                    {"Retry-After": "7"}),
    "ratelimited-no-header": (429, "application/json", '{"ok": false}', {}),
    "proxy-html": (502, "text/html", "<html><body>Bad Gateway</body></html>", {}),
    "unavailable": (503, "text/html", "<html>down</html>", {}),
    "html-200": (200, "text/html", "<html>captive portal</html>", {}),
    "empty": (200, "application/json", "", {}),
    "bad-json": (500, "application/json", "{not json", {}),
    "ok-but-not-ok": (200, "application/json", '{"ts": "1.2"}', {}),
}


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append({"method": request.match_info["method"],
                     "authorization": request.headers.get("Authorization"),
                     "content_type": request.headers.get("Content-Type"),
                     "body": json.loads(await request.read())})
        status, content_type, body, headers = ANSWERS[request.headers["X-Answer"]]
        return web.Response(status=status, body=body.encode(), headers=headers,
                            content_type=content_type)

    app = web.Application()
    app.router.add_post("/api/{method}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/api/", seen
    finally:
        await runner.cleanup()


async def outcome(call: Any) -> object:
    try:
        return await call
    except SlackError as failure:
        return ("SlackError", failure.error, failure.ambiguous, failure.retry_after,
                failure.status)


@pytest.mark.parametrize("name", list(ANSWERS))
async def test_an_answer_reads_as_slack_sdks_does(
        server: tuple[str, list[dict[str, Any]]], name: str) -> None:
    base_url, seen = server
    payload = {"channel": "C1", "text": "hi", "blocks": [{"type": "section", "text": {
        "type": "mrkdwn", "text": "hi"}}], "metadata": {"event_type": "x",
                                                       "event_payload": {"marker": "1-2"}}}
    async with aiohttp.ClientSession(headers={"X-Answer": name}) as session:
        client = AsyncWebClient(token="xoxb-test", base_url=base_url, retry_handlers=[],
                                session=session)
        theirs = await outcome(slack_call(client.api_call("chat.postMessage",
                                                          json=dict(payload))))
        ours = await outcome(WebApi(client).call("chat.postMessage", dict(payload)))
    if name == "ok-but-not-ok":  # neither is a success; slack_sdk words it its own way
        assert isinstance(ours, tuple) and isinstance(theirs, tuple)
        assert ours[1] == theirs[1] == "HTTP 200"
    else:
        assert ours == theirs
    sdk_request, our_request = seen
    assert our_request == sdk_request
    assert our_request["authorization"] == "Bearer xoxb-test"


async def test_a_refused_connection_is_not_ambiguous() -> None:
    async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=0.5)) as session:
        refused = WebApi(AsyncWebClient(token="x", base_url="http://127.0.0.1:9/api/",
                                        session=session))
        with pytest.raises(SlackError) as caught:
            await refused.call("chat.postMessage", {"channel": "C1", "text": "hi"})
        assert caught.value.error.startswith("cannot connect") and not caught.value.ambiguous
