"""Posting phones' texts to Slack, against the fake Slack: order, retries, dedupe, redirect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fake_slack import FakeSlack

from bridge.config import Secret, SlackSettings
from bridge.directory import Directory, Endpoint
from bridge.relay import InboundRelay
from bridge.slack_client import SlackPoster, make_web_client
from bridge.texts import InboundText, MalformedEvent

DIRECTORY = Directory((Endpoint("alice", "pjsip:alice", "C0ALICE00"),))


def text(body: str, event_id: str = "") -> InboundText:
    return InboundText(event_id=event_id or body, sender_uri="sip:alice@10.0.0.5",
                       display_name="", body=body, declared_bytes=len(body.encode()),
                       to_uri="sip:bridge@pbx", exten="bridge")


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token="xoxb-relay") as slack:
        yield slack


@pytest.fixture
async def relay(fake: FakeSlack) -> AsyncIterator[InboundRelay]:
    settings = SlackSettings(command="/sip", default_channel="C0DEFAULT0",
                             bot_token=Secret("xoxb-relay"), signing_secret=None,
                             app_token=None, api_url=fake.api_url, port=0)
    relay = InboundRelay(directory=DIRECTORY, default_channel="C0DEFAULT0",
                         poster=SlackPoster(make_web_client(settings, timeout=2)))
    worker = asyncio.create_task(relay.run())
    yield relay
    worker.cancel()


def bodies(posts: list[dict[str, object]]) -> list[str]:
    return [p["blocks"][1]["text"]["text"] for p in posts]  # type: ignore[index]


async def test_same_sip_message_reported_twice_is_posted_once(
        relay: InboundRelay, fake: FakeSlack) -> None:
    relay.submit(text("hello", event_id="call-1 1 MESSAGE"))
    relay.submit(text("hello", event_id="call-1 1 MESSAGE"))
    relay.submit(text("hello", event_id="call-1 2 MESSAGE"))  # sent again on purpose: a new text
    assert await relay.drain(5)
    assert bodies(fake.posts) == ["hello", "hello"]


async def test_rate_limits_and_server_errors_are_retried_in_order(
        relay: InboundRelay, fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", status=429, retry_after=1, times=4)
    fake.fail_next("chat.postMessage", status=503, times=4)
    for i in range(5):
        relay.submit(text(f"text {i}"))
    assert await relay.drain(30)
    assert bodies(fake.posts) == [f"text {i}" for i in range(5)]
    refused = [c for c in fake.calls if c[0] == "chat.postMessage"]
    assert len(refused) == 5 + 8


async def test_a_refused_channel_sends_the_text_to_the_default_channel(
        relay: InboundRelay, fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", status=200, error="not_in_channel")
    relay.submit(text("find me"))
    assert await relay.drain(5)
    [post] = fake.posts
    assert post["channel"] == "C0DEFAULT0"
    assert bodies([post]) == ["find me"]
    assert "not_in_channel" in str(post["blocks"][-1])


async def test_malformed_events_become_a_notice(relay: InboundRelay, fake: FakeSlack) -> None:
    relay.submit(MalformedEvent(event_id="x", problem="Body is not valid base64",
                                sender_hint="Bob <b>"))
    assert await relay.drain(5)
    [post] = fake.posts
    assert post["channel"] == "C0DEFAULT0"
    assert "Body is not valid base64" in post["text"] and "Bob &lt;b&gt;" in post["text"]
