"""Posting phones' texts to Slack, against the fake Slack and a real store file: order,
pacing, combining, retries through 429/5xx/hangs, dedupe, redirect, and resuming."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fake_slack import FakeSlack
from slack_view import shown_echoes, shown_senders, shown_texts

from bridge.core.directory import Directory, Endpoint
from bridge.core.model import NewInbound
from bridge.core.tasks import TaskSet
from bridge.core.texts import EchoText, InboundText, MalformedEvent
from bridge.core.thread_replies import Refuse, ThreadInfo, decide
from bridge.delivery.inbound import InboundRelay
from bridge.delivery.leases import Leases
from bridge.settings.config import DeliverySettings, Secret, SlackSettings
from bridge.slack.client import SlackPoster, make_web_client
from bridge.store.sqlite import Store

DIRECTORY = Directory((Endpoint("alice", "pjsip:alice", "C0ALICE00"),
                       Endpoint("bob", "pjsip:bob", "C0BOB0000")))


def delivery(**overrides: Any) -> DeliverySettings:
    values: dict[str, Any] = {
        "channel_rate": 0, "channel_burst": 3, "max_texts_per_post": 20,
        "max_chars_per_post": 9000, "late_after": 600, "outbound_max_wait": 3600,
        "notify": "dm", "drain_timeout": 5}
    values.update(overrides)
    return DeliverySettings(**values)


def text(body: str, *, sender: str = "alice", event_id: str | None = None) -> InboundText:
    return InboundText(event_id=event_id if event_id is not None else f"id-{body}",
                       sender_uri=f"sip:{sender}@10.0.0.5", display_name="", body=body,
                       declared_bytes=len(body.encode()), to_uri="sip:bridge@pbx",
                       exten="bridge", asterisk_endpoint=sender)


def shown(posts: list[dict[str, Any]]) -> list[str]:
    """Every text a reader sees, in order, across posts (a post may carry several)."""
    return [b["text"]["text"] for p in posts for b in p["blocks"]
            if b["type"] == "section" and b["text"]["type"] == "plain_text"]


def poster_for(fake: FakeSlack, timeout: float = 2) -> SlackPoster:
    """A Slack poster as the bridge builds it, against the fake Slack."""
    slack = SlackSettings(command="/sip", default_channel="C0DEFAULT0",
                          bot_token=Secret("xoxb-relay"), signing_secret=None,
                          app_token=None, api_url=fake.api_url, port=0)
    return SlackPoster(make_web_client(slack, timeout=timeout))


async def posted_by_an_earlier_bridge(fake: FakeSlack, ids: list[int], bodies: list[str]) -> None:
    """Slack has one post of these texts (rows `ids`), as a bridge that died right after
    posting them left it: its store rows still say "posting"."""
    await poster_for(fake).post(
        channel="C0ALICE00", text="x", marker="-".join(str(i) for i in ids), blocks=[
            {"type": "section", "text": {"type": "plain_text", "text": body}}
            for body in bodies])


class Harness:
    def __init__(self, store_path: Path, fake: FakeSlack, settings: DeliverySettings) -> None:
        self.store_path = store_path
        self.fake = fake
        self.settings = settings
        self.tasks = TaskSet()
        self.store: Store | None = None
        self.relay: InboundRelay | None = None

    async def start(self, timeout: float = 2, feedback: Echoes | None = None,
                    replica: str | None = None) -> InboundRelay:
        """`replica`: run as that replica of several (leases in the store, 60 s each)."""
        self.store = await Store.open(self.store_path)
        leases = (Leases(store=self.store, holder=replica, ttl=60, shared=True)
                  if replica else None)
        poster = poster_for(self.fake, timeout)
        self.relay = InboundRelay(store=self.store, directory=DIRECTORY,
                                  default_channel="C0DEFAULT0", poster=poster,
                                  delivery=self.settings, tasks=self.tasks, feedback=feedback,
                                  leases=leases)
        await self.relay.start()
        return self.relay

    async def post_echo(self, echo: EchoText, channel: str) -> None:
        """What the Slack side does with a /sip text's echo: stored (with the text), then
        queued for its phone's conversation."""
        assert self.store is not None and self.relay is not None
        [row] = await self.store.add_inbound([self.relay.echo_to_store(echo, channel)])
        assert row is not None
        self.relay.queue_echo(row)

    async def stop(self) -> None:
        if self.relay is not None:
            await self.relay.stop(1)
        await self.tasks.cancel_all()
        if self.store is not None:
            await self.store.close()
        assert not self.tasks.failed.is_set()


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token="xoxb-relay") as slack:
        yield slack


@pytest.fixture
async def harness(tmp_path: Path, fake: FakeSlack) -> AsyncIterator[Harness]:
    h = Harness(tmp_path / "store.sqlite3", fake, delivery())
    yield h
    await h.stop()


async def wait_shown(fake: FakeSlack, n: int, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(shown(fake.posts)) < n:
        assert time.monotonic() < deadline, f"only {len(shown(fake.posts))} of {n} shown"
        await asyncio.sleep(0.05)
    return shown(fake.posts)


async def test_same_sip_message_reported_twice_is_posted_once(
        harness: Harness, fake: FakeSlack) -> None:
    relay = await harness.start()
    relay.submit(text("hello", event_id="call-1 1 MESSAGE"))
    relay.submit(text("hello", event_id="call-1 1 MESSAGE"))
    relay.submit(text("hello", event_id="call-1 2 MESSAGE"))  # sent again on purpose: a new text
    assert await wait_shown(fake, 2) == ["hello", "hello"]
    await asyncio.sleep(0.3)
    assert len(shown(fake.posts)) == 2


async def test_429_then_5xx_then_a_hang_lose_and_double_nothing(
        harness: Harness, fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", status=429, retry_after=1, times=2)
    fake.fail_next("chat.postMessage", status=500, times=2)
    # Slack takes the post but answers after the client gave up (2 s): the bridge must find
    # it in the channel history instead of posting it again.
    fake.fail_next("chat.postMessage", status=200, delay=3)
    relay = await harness.start(timeout=2)
    sent = [f"text {i}" for i in range(30)]
    for i, body in enumerate(sent):
        relay.submit(text(body))
        if i % 10 == 9:
            await asyncio.sleep(1)
    assert await wait_shown(fake, 30, timeout=60) == sent
    await asyncio.sleep(1)
    assert shown(fake.posts) == sent, "a text was posted twice"
    assert [c for c in fake.calls if c[0] == "conversations.history"], "hang not reconciled"


async def test_a_burst_to_one_channel_is_combined_and_paced(
        tmp_path: Path, fake: FakeSlack) -> None:
    fake.rate_limit("chat.postMessage", per_channel_per_second=1.0, burst=3)
    h = Harness(tmp_path / "store.sqlite3", fake, delivery(channel_rate=1.0, channel_burst=3))
    relay = await h.start()
    try:
        started = time.monotonic()
        sent = [f"burst {i:03d}" for i in range(100)]
        for body in sent:
            relay.submit(text(body))
        assert await wait_shown(fake, 100, timeout=30) == sent
        elapsed = time.monotonic() - started
        refused = sum(1 for c in fake.calls if c[0] == "chat.postMessage") - len(fake.posts)
        print(f"burst of 100 to one channel: visible after {elapsed:.1f} s in "
              f"{len(fake.posts)} posts ({refused} refused with 429)")
        assert elapsed < 10
    finally:
        await h.stop()


async def test_a_refused_channel_sends_the_text_to_the_default_channel(
        harness: Harness, fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", status=200, error="not_in_channel")
    relay = await harness.start()
    relay.submit(text("find me"))
    assert await wait_shown(fake, 1) == ["find me"]
    [post] = fake.posts
    assert post["channel"] == "C0DEFAULT0"
    assert "&lt;#C0ALICE00&gt;" not in str(post["blocks"]) and "<#C0ALICE00>" in str(
        post["blocks"])


async def test_malformed_events_become_a_notice(harness: Harness, fake: FakeSlack) -> None:
    relay = await harness.start()
    relay.submit(MalformedEvent(event_id="x", problem="Body is not valid base64",
                                sender_hint="Bob <b>"))
    await fake.wait_for_posts(1)
    [post] = fake.posts
    assert post["channel"] == "C0DEFAULT0"
    assert "Body is not valid base64" in post["text"] and "Bob &lt;b&gt;" in str(post["blocks"])


async def test_texts_in_the_store_are_delivered_after_a_restart_once(
        tmp_path: Path, fake: FakeSlack) -> None:
    path = tmp_path / "store.sqlite3"
    store = await Store.open(path)
    now = time.time()
    rows = await store.add_inbound([
        NewInbound("C0ALICE00", "alice", text(f"stored {i}"), now) for i in range(4)])
    ids = [row.id for row in rows if row]
    # The bridge died right after posting the first two (the post is in Slack, the store
    # still says "posting"), and before posting the others.
    await store.mark_inbound(ids[:2], "posting")
    await store.close()
    await posted_by_an_earlier_bridge(fake, ids[:2], ["stored 0", "stored 1"])

    h = Harness(path, fake, delivery())
    await h.start()
    try:
        assert await wait_shown(fake, 4) == [f"stored {i}" for i in range(4)]
        await asyncio.sleep(0.3)
        assert len(shown(fake.posts)) == 4
    finally:
        await h.stop()
    store = await Store.open(path)
    assert await store.waiting_inbound() == []
    await store.close()


async def test_a_replica_taking_a_dead_ones_channel_posts_what_it_left_first_and_once(
        tmp_path: Path, fake: FakeSlack) -> None:
    h = Harness(tmp_path / "store.sqlite3", fake, delivery())
    relay = await h.start(replica="survivor")
    try:
        assert h.store is not None
        # Another replica stored four texts of alice's channel, posted the first two (Slack
        # has them, its store row still says "posting") and died holding the channel.
        rows = await h.store.add_inbound([
            NewInbound("C0ALICE00", "alice", text(f"left {i}"), time.time()) for i in range(4)])
        ids = [row.id for row in rows if row]
        await h.store.mark_inbound(ids[:2], "posting")
        await posted_by_an_earlier_bridge(fake, ids[:2], ["left 0", "left 1"])
        assert await h.store.claim_leases("dead", ["channel:C0ALICE00"], 0.2)
        await asyncio.sleep(0.3)  # its lease runs out
        # This replica takes the PBX's texts now: a new one of alice takes the channel up.
        relay.submit(text("new 0"))
        assert await wait_shown(fake, 5, timeout=5) == [
            "left 0", "left 1", "left 2", "left 3", "new 0"]
        await asyncio.sleep(0.3)
        assert len(shown(fake.posts)) == 5
    finally:
        await h.stop()


async def test_late_texts_say_so(tmp_path: Path, fake: FakeSlack) -> None:
    path = tmp_path / "store.sqlite3"
    store = await Store.open(path)
    await store.add_inbound([NewInbound("C0ALICE00", "alice", text("old news"),
                                        time.time() - 7200)])
    await store.close()
    h = Harness(path, fake, delivery(late_after=600))
    await h.start()
    try:
        [post] = await fake.wait_for_posts(1)
        assert "late: received 2 h ago" in str(post["blocks"][0])
    finally:
        await h.stop()


class Echoes:
    """The Slack side as the relay sees it: outcomes known for some texts."""

    def __init__(self, known: dict[int, str]) -> None:
        self.known = known
        self.posted_calls: list[tuple[int, bool]] = []

    def state_of(self, outbound_id: int) -> str | None:
        return self.known.get(outbound_id)

    async def posted(self, outbound_id: int, channel: str, ts: str, *,
                     shown_final: bool, stored: bool = False) -> None:
        assert stored == shown_final  # a final state is stored with the echo's mark
        self.posted_calls.append((outbound_id, shown_final))


async def test_an_echo_shows_its_outcome_inline_when_it_is_already_known(
        harness: Harness, fake: FakeSlack) -> None:
    echoes = Echoes({7: ":white_check_mark: sent"})
    await harness.start(feedback=echoes)
    await harness.post_echo(EchoText(body="known", slack_user="U1", slack_user_name="ann",
                                     endpoint="alice", outbound_id=7), channel="C0ALICE00")
    await harness.post_echo(EchoText(body="pending", slack_user="U1", slack_user_name="ann",
                                     endpoint="alice", outbound_id=8), channel="C0ALICE00")
    deadline = time.monotonic() + 5
    while len(echoes.posted_calls) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert shown_echoes(fake.posts) == ["known", "pending"]
    lines = [b["elements"][0]["text"] for p in fake.posts for b in p["blocks"]
             if b["type"] == "context"]
    assert ":white_check_mark: sent" in lines[0] and ":white_check_mark:" not in lines[1]
    assert echoes.posted_calls == [(7, True), (8, False)]


async def wait_posts(fake: FakeSlack, n: int, timeout: float = 20) -> list[dict[str, Any]]:
    return await fake.wait_for_posts(n, timeout=timeout)


RETRIED_FAULTS = {
    "429": {"status": 429, "retry_after": 1},
    "ok-false": {"status": 503, "error": "service_unavailable"},
    # Slack never answers within the client's 2 s and never took the post.
    "timeout": {"status": 500, "delay": 3},
}


@pytest.mark.parametrize("fault", list(RETRIED_FAULTS), ids=list(RETRIED_FAULTS))
async def test_a_retried_post_keeps_its_thread_and_replies_map_back(
        harness: Harness, fake: FakeSlack, fault: str) -> None:
    relay = await harness.start(timeout=2)
    # The first text of the conversation is retried (it starts the thread once it is in),
    # then one inside the thread is.
    fake.fail_next("chat.postMessage", **RETRIED_FAULTS[fault])
    relay.submit(text("first"))
    [first] = await wait_posts(fake, 1)
    fake.fail_next("chat.postMessage", **RETRIED_FAULTS[fault])
    relay.submit(text("second"))
    [_, second] = await wait_posts(fake, 2)
    assert shown(fake.posts) == ["first", "second"]
    assert "thread_ts" not in first
    assert second.get("thread_ts") == first["ts"], "the retried text left its thread"
    # A reply in the thread reaches alice: the store maps the thread to her conversation.
    assert harness.store is not None
    owner = await harness.store.thread_owner("C0ALICE00", second["thread_ts"])
    assert owner is not None and owner.endpoint == "alice"


async def test_internal_error_is_checked_in_the_history_not_reposted(
        harness: Harness, fake: FakeSlack) -> None:
    # Slack posts the message, then answers ok:false internal_error ("it's possible some
    # aspect of the operation succeeded").
    fake.fail_next("chat.postMessage", status=200, error="internal_error", processed=True)
    relay = await harness.start()
    relay.submit(text("only once"))
    relay_posts = await wait_posts(fake, 1)
    await asyncio.sleep(1.5)  # a repost would come after the 1 s backoff
    assert shown(fake.posts) == ["only once"], relay_posts
    assert fake.calls_of("conversations.history"), "the history was not checked"
    assert harness.store is not None
    assert await harness.store.waiting_inbound() == []


ODD_ANSWERS = {
    "html-502": {"status": 502, "body": "<html><body><h1>502 Bad Gateway</h1></body></html>"},
    "html-405": {"status": 405, "body": "<html><body>Method Not Allowed</body></html>"},
    "html-as-json": {"status": 200, "body": "<html>maintenance</html>",
                     "content_type": "application/json"},
    "json-array": {"status": 200, "body": "[1, 2]", "content_type": "application/json"},
    "ok-wrong-types": {"status": 200, "content_type": "application/json",
                       "body": '{"ok": true, "ts": 17, "messages": "none",'
                               ' "response_metadata": []}'},
    "empty": {"status": 200, "body": "", "content_type": "application/json"},
}


@pytest.mark.parametrize("answer", list(ODD_ANSWERS), ids=list(ODD_ANSWERS))
async def test_odd_answers_from_slack_are_retried_never_crash(
        harness: Harness, fake: FakeSlack, answer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bridge.delivery.inbound._BACKOFF_MAX", 0.5)  # keeps the test short
    # The first post hangs past the client timeout (so the history is checked next), then
    # every call answers the odd shape a few times; once Slack is back the text is posted
    # exactly once.
    fake.fail_next("chat.postMessage", status=500, delay=3)
    fake.fail_next("conversations.history", times=2, **ODD_ANSWERS[answer])
    fake.fail_next("chat.postMessage", times=2, **ODD_ANSWERS[answer])
    relay = await harness.start(timeout=2)
    relay.submit(text("through the storm"))
    deadline = time.monotonic() + 20
    while not shown(fake.posts) or len(fake.calls_of("chat.postMessage")) < 4:
        assert not harness.tasks.failed.is_set(), "a relay task crashed"
        assert time.monotonic() < deadline, fake.calls
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)
    assert not harness.tasks.failed.is_set(), "a relay task crashed"
    assert shown(fake.posts) == ["through the storm"]
    assert harness.store is not None
    assert await harness.store.waiting_inbound() == []


async def test_a_timed_out_post_inside_a_thread_is_found_not_doubled(
        harness: Harness, fake: FakeSlack) -> None:
    # Slack keeps replies out of conversations.history: a post that timed out inside the
    # conversation's thread must be looked for in the thread.
    relay = await harness.start(timeout=2)
    relay.submit(text("opens the thread"))
    await wait_posts(fake, 1)
    fake.fail_next("chat.postMessage", status=200, delay=3)  # posted, answered too late
    relay.submit(text("in the thread"))
    [first, second] = await wait_posts(fake, 2)
    await asyncio.sleep(2.5)
    assert shown(fake.posts) == ["opens the thread", "in the thread"], "posted twice"
    assert second["thread_ts"] == first["ts"]
    assert fake.calls_of("conversations.replies")


def stranger(body: str, *, name: str = "", event_id: str | None = None) -> InboundText:
    return InboundText(event_id=event_id or f"id-{body}", sender_uri="sip:carol@10.9.9.9",
                       display_name=name, body=body, declared_bytes=len(body.encode()),
                       to_uri="sip:bridge@pbx", exten="bridge")


async def test_a_name_of_2500_ampersands_is_shortened_and_nothing_behind_it_waits(
        harness: Harness, fake: FakeSlack) -> None:
    relay = await harness.start()
    relay.submit(stranger("poisoned?", name="&" * 2500))
    relay.submit(stranger("next one", event_id="next"))
    deadline = time.monotonic() + 10
    while shown_texts(fake.posts) != ["poisoned?", "next one"]:
        assert time.monotonic() < deadline, (shown_texts(fake.posts), fake.calls[-3:])
        await asyncio.sleep(0.05)
    [sender, _] = shown_senders(fake.posts)
    assert "&&&&" in sender and "…" in sender  # the name, visibly shortened
    assert all(p["channel"] == "C0DEFAULT0" for p in fake.posts)
    refused = len(fake.calls_of("chat.postMessage")) - len(fake.posts)
    assert refused == 0, "a post over Slack's limits was sent"


async def test_a_14000_character_echo_continues_in_further_posts_of_its_thread(
        harness: Harness, fake: FakeSlack) -> None:
    relay = await harness.start()
    relay.submit(text("hello"))
    await wait_posts(fake, 1)
    long_text = "".join(f"line {i:05d} & more!! " for i in range(700))  # 14,000 characters
    assert len(long_text) == 14000
    await harness.post_echo(EchoText(body=long_text, slack_user="U1", slack_user_name="ann",
                                     endpoint="alice", outbound_id=9), channel="C0ALICE00")
    relay.submit(text("after it"))
    deadline = time.monotonic() + 10
    while shown_texts(fake.posts) != ["hello", "after it"]:
        assert time.monotonic() < deadline, fake.calls[-3:]
        await asyncio.sleep(0.05)
    assert shown_echoes(fake.posts) == [long_text], "the long text was cut"
    first = fake.posts[0]
    assert all(p.get("thread_ts") == first["ts"] for p in fake.posts[1:])
    assert len(fake.posts) >= 4  # hello, the echo in two posts or more, after it
    assert len(fake.calls_of("chat.postMessage")) == len(fake.posts)


async def test_a_post_slack_refuses_for_its_content_is_posted_smaller(
        harness: Harness, fake: FakeSlack) -> None:
    # Slack's limits are lower than measured one day: the first rendering is refused.
    fake.fail_next("chat.postMessage", status=200, error="msg_blocks_too_long")
    relay = await harness.start()
    relay.submit(text("refused once"))
    relay.submit(text("behind it"))
    deadline = time.monotonic() + 10
    while shown_texts(fake.posts) != ["refused once", "behind it"]:
        assert time.monotonic() < deadline, fake.calls[-3:]
        await asyncio.sleep(0.05)
    assert all(p["channel"] == "C0ALICE00" for p in fake.posts), "moved to another channel"


async def test_a_text_slack_always_refuses_is_set_aside_with_a_notice(
        harness: Harness, fake: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    fake.fail_next("chat.postMessage", status=200, error="invalid_blocks", times=3)
    relay = await harness.start()
    relay.submit(text("never fits"))
    relay.submit(text("behind it"))
    deadline = time.monotonic() + 10
    while shown_texts(fake.posts) != ["behind it"]:
        assert time.monotonic() < deadline, fake.calls[-3:]
        await asyncio.sleep(0.05)
    notice = fake.posts[0]
    assert notice["channel"] == "C0ALICE00"
    assert "Slack refused a text from *alice*" in notice["text"]
    assert "invalid_blocks" in notice["text"] and "set_aside" in notice["text"]
    assert any(r.levelname == "ERROR" and "result=set-aside" in r.getMessage()
               for r in caplog.records)
    assert harness.store is not None
    assert await harness.store.waiting_inbound() == []
    assert (await harness.store.backlog()).inbound_waiting == 0
    # Not retried: it waits in the store for an admin, not at the head of the queue.
    calls = len(fake.calls_of("chat.postMessage"))
    await asyncio.sleep(1.5)
    assert len(fake.calls_of("chat.postMessage")) == calls


async def test_texts_of_unknown_senders_from_many_hosts_are_combined_by_channel(
        tmp_path: Path, fake: FakeSlack) -> None:
    # Slack's pace (1 post a second per channel, bursts of 3), enforced by the fake too.
    fake.rate_limit("chat.postMessage", per_channel_per_second=1.0, burst=3)
    h = Harness(tmp_path / "store.sqlite3", fake, delivery(channel_rate=1.0, channel_burst=3))
    relay = await h.start()
    try:
        sent = [f"flood {i:03d}" for i in range(300)]
        for i, body in enumerate(sent):
            relay.submit(InboundText(
                event_id=f"f{i}", sender_uri=f"sip:+1555{i % 7}@10.{i % 250}.0.1",
                display_name="", body=body, declared_bytes=len(body), to_uri="", exten=""))
        started = time.monotonic()
        relay.submit(stranger("a normal text after them", event_id="normal"))
        assert await wait_shown(fake, 301, timeout=40) == [*sent, "a normal text after them"]
        elapsed = time.monotonic() - started
        print(f"300 texts from 300 hosts: {len(fake.posts)} posts, all shown after "
              f"{elapsed:.1f} s")
        assert len(fake.posts) <= 20 and elapsed < 20
        assert all(p["channel"] == "C0DEFAULT0" for p in fake.posts)
        # A reply in a combined post's thread cannot go to one sender: it is refused, not
        # sent to whoever came first.
        assert h.store is not None
        owner = await h.store.thread_owner("C0DEFAULT0", fake.posts[0]["ts"])
        assert owner is not None
        decision = decide({"type": "message", "user": "U1", "text": "hi", "channel":
                           "C0DEFAULT0", "ts": "2.0", "thread_ts": fake.posts[0]["ts"]},
                          directory=DIRECTORY, bot_user_id="U0BOT", allowed_bots=frozenset(),
                          mode="thread", thread=ThreadInfo(owner.conversation, owner.endpoint))
        assert isinstance(decision, Refuse) and "several senders" in decision.reason
    finally:
        await h.stop()


async def test_a_flooding_phone_is_bounded_in_memory_kept_whole_and_others_go_first(
        tmp_path: Path, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bridge.delivery.inbound._QUEUE_MAX", 200)  # so 3,000 texts overflow it
    h = Harness(tmp_path / "store.sqlite3", fake,
                delivery(channel_rate=20.0, channel_burst=3, inbound_rate=5, inbound_burst=10))
    relay = await h.start()
    try:
        flood = [f"flood {i:04d}" for i in range(3000)]
        most_in_memory = 0
        started = 0.0
        # About 1,000 texts a second, as a phone flooding Asterisk delivered them.
        for i, body in enumerate(flood):
            relay.submit(InboundText(event_id=f"f{i}", sender_uri="sip:+15550001@10.0.0.9",
                                     display_name="", body=body, declared_bytes=len(body),
                                     to_uri="", exten=""))
            if i % 100 == 99:
                most_in_memory = max(most_in_memory, relay.texts_in_memory)
                await asyncio.sleep(0.1)
            if i == 1500:
                started = time.monotonic()
                relay.submit(stranger("meanwhile, a normal text", event_id="normal"))
        deadline = time.monotonic() + 60
        normal_after = None
        while len(shown(fake.posts)) < 3001:
            assert time.monotonic() < deadline, f"{len(shown(fake.posts))} of 3001 shown"
            most_in_memory = max(most_in_memory, relay.texts_in_memory)
            if normal_after is None and "meanwhile, a normal text" in shown(fake.posts):
                normal_after = time.monotonic() - started
            await asyncio.sleep(0.02)
        texts = shown(fake.posts)
        print(f"3,000 texts from one phone: {len(fake.posts)} posts, at most "
              f"{most_in_memory} in memory; another sender's text shown after "
              f"{normal_after:.1f} s")
        assert [t for t in texts if t.startswith("flood")] == flood  # none lost, in order
        assert len(texts) == 3001
        assert most_in_memory <= 200 + 100  # the channel's queue, and one burst being stored
        assert normal_after is not None and normal_after < 3
        assert len(fake.posts) <= 3000 / 20 + 10  # combined
    finally:
        await h.stop()
