"""Proof that tests/fake_slack.py behaves like Slack, judged by Slack's own client libraries.

Every check here goes through the real slack_sdk / slack_bolt code the bridge uses, so a fake that
answered in a shape Slack never uses (and so could hide a bridge bug) fails here first.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from fake_slack import BOT_SCOPES, BOT_USER_ID, FakeSlack
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as slack:
        yield slack


def web_client(fake: FakeSlack, token: str | None = "xoxb-test", **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=fake.api_url, **kwargs)


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def refusal(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value


# ---------------------------------------------------------------- chat.postMessage


async def test_post_message_is_recorded_with_the_exact_text(fake: FakeSlack) -> None:
    client = web_client(fake)
    text = "Grüße 👋🏽 from +1 555 & <b>bold</b> > ünïcödé 中文"
    first = await client.chat_postMessage(channel="C0CHAN1", text=text, thread_ts="1699.000001")
    second = await client.chat_postMessage(channel="C0CHAN2", text="two")

    assert first["ok"] is True
    assert first["channel"] == "C0CHAN1"
    assert first["message"]["text"] == text
    assert first["message"]["bot_id"] == "B0BOT"
    assert [p["text"] for p in fake.posts] == [text, "two"]
    assert fake.posts[0]["channel"] == "C0CHAN1"
    assert fake.posts[0]["thread_ts"] == "1699.000001"
    assert fake.posts[0]["ts"] == first["ts"]
    assert float(first["ts"]) < float(second["ts"])
    assert "token" not in fake.posts[0]
    assert [name for name, _ in fake.calls] == ["chat.postMessage", "chat.postMessage"]


async def test_form_encoded_post_has_its_blocks_parsed(fake: FakeSlack) -> None:
    client = web_client(fake)
    blocks = [section("hello *there*")]
    await client.api_call(
        "chat.postMessage",
        data={"channel": "C0CHAN1", "text": "fallback", "blocks": json.dumps(blocks)},
    )
    assert fake.posts[0]["blocks"] == blocks
    assert fake.posts[0]["text"] == "fallback"


async def test_post_without_channel_or_text_is_refused(fake: FakeSlack) -> None:
    client = web_client(fake)
    no_channel = await refusal(client.api_call("chat.postMessage", json={"text": "hi"}))
    assert no_channel.response["error"] == "channel_not_found"
    # api_call: chat_postMessage itself warns about a missing text before sending.
    no_text = await refusal(client.api_call("chat.postMessage", json={"channel": "C0CHAN1"}))
    assert no_text.response["error"] == "no_text"
    assert fake.posts == []
    assert len(fake.calls) == 2


async def test_bad_or_missing_token_is_refused(fake: FakeSlack) -> None:
    wrong = await refusal(web_client(fake, "xoxb-wrong").chat_postMessage(channel="C1", text="x"))
    assert wrong.response.status_code == 200
    assert wrong.response["error"] == "invalid_auth"

    missing = await refusal(web_client(fake, None).chat_postMessage(channel="C1", text="x"))
    assert missing.response["error"] == "not_authed"

    app_token = await refusal(
        web_client(fake, "xapp-test").chat_postMessage(channel="C1", text="x")
    )
    assert app_token.response["error"] == "not_allowed_token_type"

    assert fake.posts == []
    assert [name for name, _ in fake.calls] == ["chat.postMessage"] * 3


async def test_oversize_blocks_are_refused_like_slack(fake: FakeSlack) -> None:
    client = web_client(fake)

    async def error_for(blocks: list[dict[str, Any]]) -> str:
        err = await refusal(client.chat_postMessage(channel="C1", text="t", blocks=blocks))
        return str(err.response["error"])

    assert await error_for([section("x")] * 51) == "invalid_blocks"
    assert await error_for([section("x" * 3001)]) == "invalid_blocks"
    header: dict[str, Any] = {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}
    assert await error_for([header]) == "invalid_blocks"
    assert await error_for([section("x" * 2900)] * 5) == "msg_blocks_too_long"
    # A context element is a text object too: 3,000 characters as sent (escaped) at most.
    context = {"type": "context", "elements": [{"type": "mrkdwn", "text": "&amp;" * 601}]}
    assert await error_for([context]) == "invalid_blocks"
    many = {"type": "context", "elements": [{"type": "mrkdwn", "text": "e"}] * 11}
    assert await error_for([many]) == "invalid_blocks"
    assert fake.posts == []
    context["elements"] = [{"type": "mrkdwn", "text": "&amp;" * 600}]
    await client.chat_postMessage(channel="C1", text="t", blocks=[context])
    fake.posts.clear()

    # Exactly at the limits is fine.
    header["text"]["text"] = "h" * 150
    await client.chat_postMessage(
        channel="C1", text="t", blocks=[header, section("x" * 3000)] + [section("y")] * 48
    )
    assert len(fake.posts[0]["blocks"]) == 50


async def test_text_past_40000_characters_is_truncated_not_refused(fake: FakeSlack) -> None:
    client = web_client(fake)
    await client.chat_postMessage(channel="C1", text="é" * 40_005)
    assert fake.posts[0]["text"] == "é" * 40_000


async def test_unknown_method_is_refused(fake: FakeSlack) -> None:
    err = await refusal(web_client(fake).api_call("chat.frobnicate", json={"channel": "C1"}))
    assert err.response["error"] == "unknown_method"
    assert fake.calls == [("chat.frobnicate", {"channel": "C1"})]


# ---------------------------------------------------------------- other methods


async def test_auth_test_answers_with_the_bot_identity_and_scopes(fake: FakeSlack) -> None:
    resp = await web_client(fake).auth_test()
    assert resp["user_id"] == BOT_USER_ID
    assert resp["bot_id"] == "B0BOT"
    assert resp["team_id"] == "T0TEAM1"
    assert resp.headers["x-oauth-scopes"] == BOT_SCOPES


async def test_lookup_and_edit_methods_answer_plausibly(fake: FakeSlack) -> None:
    client = web_client(fake)
    user = await client.users_info(user="U0USER1")
    assert user["user"]["profile"]["display_name"] == "U0USER1-name"
    channel = await client.conversations_info(channel="C0CHAN1")
    assert channel["channel"]["id"] == "C0CHAN1"
    members = await client.conversations_members(channel="C0CHAN1")
    assert members["members"] == ["U0BOT"]

    posted = await client.chat_postMessage(channel="C0CHAN1", text="v1")
    updated = await client.chat_update(channel="C0CHAN1", ts=posted["ts"], text="v2")
    assert updated["ts"] == posted["ts"]
    missing = await refusal(client.chat_update(channel="C0CHAN1", ts="1.000001", text="v2"))
    assert missing.response["error"] == "message_not_found"

    ephemeral = await client.chat_postEphemeral(channel="C0CHAN1", user="U0USER1", text="psst")
    assert ephemeral["message_ts"]
    await client.reactions_add(channel="C0CHAN1", timestamp=posted["ts"], name="white_check_mark")

    assert [p["text"] for p in fake.posts] == ["v1"]
    assert fake.calls_of("chat.update")[0]["text"] == "v2"
    assert fake.calls_of("reactions.add") == [
        {"channel": "C0CHAN1", "timestamp": posted["ts"], "name": "white_check_mark"}
    ]


# ---------------------------------------------------------------- fault injection


async def test_injected_429_reaches_slack_sdk_with_retry_after(fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", status=429, retry_after=7)
    client = web_client(fake)
    err = await refusal(client.chat_postMessage(channel="C1", text="first"))
    assert err.response.status_code == 429
    assert err.response.headers["Retry-After"] == "7"
    assert err.response["error"] == "ratelimited"

    await client.chat_postMessage(channel="C1", text="second")
    assert [p["text"] for p in fake.posts] == ["second"]
    assert [p["text"] for p in fake.calls_of("chat.postMessage")] == ["first", "second"]


async def test_injected_server_errors_and_refusals(fake: FakeSlack) -> None:
    client = web_client(fake)
    fake.fail_next("chat.postMessage", status=503, times=2)
    fake.fail_next("chat.postMessage", status=200, error="channel_not_found")
    for _ in range(2):
        err = await refusal(client.chat_postMessage(channel="C1", text="x"))
        assert err.response.status_code == 503
    err = await refusal(client.chat_postMessage(channel="C1", text="x"))
    assert (err.response.status_code, err.response["error"]) == (200, "channel_not_found")
    await client.chat_postMessage(channel="C1", text="finally")
    assert [p["text"] for p in fake.posts] == ["finally"]
    # Faults are per method.
    await client.auth_test()


async def test_injected_delay_outlasts_a_client_timeout(fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", status=200, delay=30)
    client = web_client(fake, timeout=1, retry_handlers=[])
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await client.chat_postMessage(channel="C1", text="slow")
    assert time.monotonic() - started < 5
    assert fake.posts == []
    # The hang was one call only.
    await client.chat_postMessage(channel="C1", text="fast")
    assert [p["text"] for p in fake.posts] == ["fast"]


async def test_rate_limit_is_per_channel_with_whole_second_retry_after(fake: FakeSlack) -> None:
    fake.rate_limit(per_channel_per_second=4, burst=2)
    client = web_client(fake)
    await client.chat_postMessage(channel="C1", text="1")
    await client.chat_postMessage(channel="C1", text="2")
    err = await refusal(client.chat_postMessage(channel="C1", text="3"))
    assert err.response.status_code == 429
    assert err.response.headers["Retry-After"] == "1"
    await client.chat_postMessage(channel="C2", text="other channel")
    await asyncio.sleep(0.3)  # one token back after 1/4 s
    await client.chat_postMessage(channel="C1", text="3 again")
    assert [p["text"] for p in fake.posts] == ["1", "2", "other channel", "3 again"]


async def test_slack_sdk_retry_handler_honours_the_rate_limit(fake: FakeSlack) -> None:
    fake.rate_limit(per_channel_per_second=1, burst=1)
    client = web_client(fake, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)])
    started = time.monotonic()
    await client.chat_postMessage(channel="C1", text="a")
    await client.chat_postMessage(channel="C1", text="b")
    assert time.monotonic() - started >= 1.0
    assert [p["text"] for p in fake.posts] == ["a", "b"]
    assert len(fake.calls_of("chat.postMessage")) == 3


async def test_wait_for_posts_says_what_arrived(fake: FakeSlack) -> None:
    await web_client(fake).chat_postMessage(channel="C1", text="only one")
    assert len(await fake.wait_for_posts(1)) == 1
    with pytest.raises(AssertionError, match="got 1.*only one"):
        await fake.wait_for_posts(2, timeout=0.2)


# ---------------------------------------------------------------- slash commands over HTTP


async def test_signed_slash_command_passes_slack_sdk_verification(fake: FakeSlack) -> None:
    payload = fake.slash_command_payload(text="alice hi & <bye>")
    assert payload["text"] == "alice hi &amp; &lt;bye&gt;"
    body, headers = fake.signed_slash_command(payload)

    verifier = SignatureVerifier("test-signing-secret")
    assert verifier.is_valid(
        body=body.decode(),
        timestamp=headers["X-Slack-Request-Timestamp"],
        signature=headers["X-Slack-Signature"],
    )
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    _, bad = fake.signed_slash_command(payload, secret="other")
    assert not verifier.is_valid(
        body=body.decode(),
        timestamp=bad["X-Slack-Request-Timestamp"],
        signature=bad["X-Slack-Signature"],
    )
    _, old = fake.signed_slash_command(payload, timestamp=int(time.time()) - 600)
    assert not verifier.is_valid_request(body.decode(), old)


async def test_bolt_accepts_signed_slash_command_and_refuses_forged(fake: FakeSlack) -> None:
    app = AsyncApp(client=web_client(fake), signing_secret="test-signing-secret")
    seen: list[dict[str, Any]] = []

    @app.command("/sip")
    async def sip(ack: Any, command: dict[str, Any]) -> None:
        seen.append(command)
        await ack("queued")

    payload = fake.slash_command_payload(text="bob hello")
    body, headers = fake.signed_slash_command(payload)
    resp = await app.async_dispatch(AsyncBoltRequest(body=body.decode(), headers=headers))
    assert resp.status == 200
    assert resp.body == "queued"
    assert seen[0]["text"] == "bob hello"
    assert seen[0]["response_url"].startswith(fake.base_url + "/response/")

    forged_body, forged = fake.signed_slash_command(payload, secret="wrong")
    resp = await app.async_dispatch(AsyncBoltRequest(body=forged_body.decode(), headers=forged))
    assert resp.status == 401
    assert len(seen) == 1


async def test_response_url_records_posts_and_limits_uses(fake: FakeSlack) -> None:
    url = fake.slash_command_payload(text="x")["response_url"]
    hook = AsyncWebhookClient(url)
    for i in range(5):
        resp = await hook.send(text=f"reply {i} ✓", response_type="ephemeral")
        assert (resp.status_code, resp.body) == (200, "ok")
    sixth = await hook.send(text="too many")
    assert sixth.status_code == 404

    responses = await fake.wait_for_responses(5)
    assert [r["text"] for r in responses] == [f"reply {i} ✓" for i in range(5)]
    assert responses[0]["response_type"] == "ephemeral"
    assert responses[0]["response_url"] == url

    unknown = await AsyncWebhookClient(fake.base_url + "/response/nope").send(text="x")
    assert unknown.status_code == 404
    assert [r["error"] for r in fake.refused_responses] == ["used_url", "expired_url"]
    with pytest.raises(AssertionError, match="expected 6 response_url"):
        await fake.wait_for_responses(6, timeout=0.1)


# ---------------------------------------------------------------- Socket Mode


@pytest.fixture
async def bolt_socket_app(fake: FakeSlack) -> AsyncIterator[tuple[AsyncApp, list[Any]]]:
    """A bolt app connected to the fake over Socket Mode, as the bridge connects."""
    app = AsyncApp(client=web_client(fake), signing_secret="unused-in-socket-mode")
    seen: list[Any] = []

    @app.command("/sip")
    async def sip(ack: Any, command: dict[str, Any], respond: Any) -> None:
        seen.append(command)
        await ack(f"sending to {command['text'].split()[0]}")
        await respond("delivered")

    @app.event("message")
    async def message(event: dict[str, Any]) -> None:
        seen.append(event)

    handler = AsyncSocketModeHandler(app, app_token="xapp-test")
    await handler.connect_async()
    try:
        await fake.wait_socket_connected()
        yield app, seen
    finally:
        await handler.close_async()


async def test_socket_mode_slash_command_is_acked_with_its_payload(
    fake: FakeSlack, bolt_socket_app: tuple[AsyncApp, list[Any]]
) -> None:
    _, seen = bolt_socket_app
    assert fake.socket_connected
    payload = fake.slash_command_payload(text="alice hi <3")

    ack = await fake.send_socket_envelope("slash_commands", payload)

    assert ack["payload"] == {"text": "sending to alice"}
    assert seen[0]["text"] == "alice hi &lt;3"
    responses = await fake.wait_for_responses(1)
    assert responses[0]["text"] == "delivered"
    assert responses[0]["response_url"] == payload["response_url"]
    assert fake.socket_acks == [ack]
    # One socket, opened once (the fake only opens it for the app token).
    assert len(fake.calls_of("apps.connections.open")) == 1


async def test_socket_mode_message_event_reaches_bolt(
    fake: FakeSlack, bolt_socket_app: tuple[AsyncApp, list[Any]]
) -> None:
    _, seen = bolt_socket_app
    payload = fake.message_event_payload(text="reply & more", thread_ts="1700000000.000100")
    ack = await fake.send_socket_envelope("events_api", payload)
    assert "payload" not in ack
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.02)
    assert seen[0]["text"] == "reply &amp; more"
    assert seen[0]["thread_ts"] == "1700000000.000100"


async def test_socket_mode_client_reconnects_when_asked(
    fake: FakeSlack, bolt_socket_app: tuple[AsyncApp, list[Any]]
) -> None:
    await fake.send_socket_disconnect()
    for _ in range(200):
        if len(fake.calls_of("apps.connections.open")) == 2 and fake.socket_connected:
            break
        await asyncio.sleep(0.02)
    assert len(fake.calls_of("apps.connections.open")) == 2
    await fake.wait_socket_connected()
    ack = await fake.send_socket_envelope("slash_commands", fake.slash_command_payload(text="b x"))
    assert ack["payload"] == {"text": "sending to b"}


async def test_socket_connection_needs_an_issued_url_and_unacked_envelopes_fail(
    fake: FakeSlack,
) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(fake.base_url + "/socket-mode/never-issued")

        opened = await web_client(fake, "xapp-test").apps_connections_open(app_token="xapp-test")
        async with session.ws_connect(opened["url"]) as ws:
            hello = await ws.receive_json()
            assert hello["type"] == "hello"
            assert hello["connection_info"] == {"app_id": "A0APP"}
            await fake.wait_socket_connected(timeout=1)
            with pytest.raises(AssertionError, match="no ack for slash_commands"):
                await fake.send_socket_envelope("slash_commands", {"text": "x"}, timeout=0.2)
            envelope = await ws.receive_json()
            assert envelope["accepts_response_payload"] is True

    with pytest.raises(AssertionError, match="no Socket Mode client"):
        await fake.wait_socket_connected(timeout=0.2)


# ---------------------------------------------------------------- views


def modal(**changes: Any) -> dict[str, Any]:
    view: dict[str, Any] = {"type": "modal", "title": {"type": "plain_text", "text": "Text a phone"},
                            "submit": {"type": "plain_text", "text": "Send"},
                            "blocks": [section("hi")]}
    view.update(changes)
    return view


async def test_a_trigger_opens_one_view_within_3_seconds(fake: FakeSlack) -> None:
    client = web_client(fake)
    trigger = fake.new_trigger_id()
    assert (await client.views_open(trigger_id=trigger, view=modal()))["ok"] is True
    again = await refusal(client.views_open(trigger_id=trigger, view=modal()))
    assert again.response["error"] == "exchanged_trigger_id"
    late = fake.new_trigger_id()
    fake.expire_trigger(late)
    assert (await refusal(client.views_open(trigger_id=late, view=modal()))
            ).response["error"] == "expired_trigger_id"
    assert (await refusal(client.views_open(trigger_id="1.2.made-up", view=modal()))
            ).response["error"] == "invalid_trigger_id"
    assert len(fake.opened_views) == 1


async def test_views_over_slacks_limits_are_refused(fake: FakeSlack) -> None:
    client = web_client(fake)
    too_long = modal(title={"type": "plain_text", "text": "x" * 25})
    too_many = modal(blocks=[section(str(i)) for i in range(101)])
    for view in (too_long, too_many):
        error = await refusal(client.views_open(trigger_id=fake.new_trigger_id(), view=view))
        assert error.response["error"] == "invalid_arguments"
    assert (await client.views_open(trigger_id=fake.new_trigger_id(),
                                    view=modal(blocks=[section(str(i)) for i in range(100)]))
            )["ok"] is True
    home = {"type": "home", "blocks": [section(str(i)) for i in range(101)]}
    error = await refusal(client.views_publish(user_id="U0USER1", view=home))
    assert error.response["error"] == "invalid_arguments"
    home["blocks"] = home["blocks"][:100]
    assert (await client.views_publish(user_id="U0USER1", view=home))["ok"] is True
    assert len(fake.home_views["U0USER1"]) == 1
