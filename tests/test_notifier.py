"""Telling a sender what became of their text, against the fake Slack: response_url while
Slack still accepts it, else the configured fallback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from fake_slack import FakeSlack

from bridge.settings.config import Secret, SlackSettings
from bridge.slack.client import Notifier, make_web_client


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token="xoxb-n") as slack:
        yield slack


def notifier(fake: FakeSlack, fallback: str) -> Notifier:
    settings = SlackSettings(command="/sip", default_channel="C0DEFAULT0",
                             bot_token=Secret("xoxb-n"), signing_secret=None, app_token=None,
                             api_url=fake.api_url, port=0)
    return Notifier(make_web_client(settings), fallback=fallback)


async def test_fresh_response_url_is_used(fake: FakeSlack) -> None:
    url = fake.new_response_url()
    assert await notifier(fake, "dm").tell(user="U1", channel="C1", response_url=url,
                                           created_at=time.time(), text="Sent to alice")
    assert [r["text"] for r in fake.responses] == ["Sent to alice"]
    assert fake.posts == []


async def test_expired_response_url_falls_back_to_a_dm_or_an_ephemeral(
        fake: FakeSlack) -> None:
    old = time.time() - 3600
    url = fake.new_response_url()
    assert await notifier(fake, "dm").tell(user="U1", channel="C1", response_url=url,
                                           created_at=old, text="Sent late")
    assert fake.responses == []
    [post] = fake.posts
    assert post["channel"] == "U1" and post["text"] == "Sent late"
    assert await notifier(fake, "channel").tell(user="U1", channel="C1", response_url=url,
                                                created_at=old, text="Sent later")
    [ephemeral] = fake.calls_of("chat.postEphemeral")
    assert ephemeral["user"] == "U1" and ephemeral["channel"] == "C1"


async def test_a_used_up_response_url_falls_back(fake: FakeSlack) -> None:
    url = fake.new_response_url()
    tell = notifier(fake, "dm").tell
    for i in range(6):
        assert await tell(user="U1", channel="C1", response_url=url, created_at=time.time(),
                          text=f"note {i}")
    assert len(fake.responses) == 5 and [p["text"] for p in fake.posts] == ["note 5"]
