"""Several bridge replicas on one PostgreSQL store, end to end: real bridges (`bridge run` twice,
same config, same Asterisk, same database), real phones, a fake Slack that enforces one post a
second per channel. One replica SIGKILLed mid-stream, the same Slack event delivered to both,
the database restarted under traffic: every text delivered once, in order."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from asterisk.harness import AsteriskSandbox
from bridge_runner import BridgeProcess, EndpointSpec, ack_text, taken
from conftest import ALICE_CHANNEL, BOB_CHANNEL, own_pbx, start_bridge
from fake_slack import FakeSlack
from postgres_cluster import PostgresCluster
from sip_ua import SipPhone
from slack_view import phone_posts
from test_e2e_durability import in_channel, wait_shown

pytestmark = pytest.mark.asterisk

CAROL_CHANNEL = "C0CAROL00"
CHANNELS = {"alice": ALICE_CHANNEL, "bob": BOB_CHANNEL, "carol": CAROL_CHANNEL}


@pytest.fixture
async def pbx() -> AsyncIterator[tuple[AsteriskSandbox, dict[str, SipPhone]]]:
    async with own_pbx("alice", "bob", "carol") as pbx:
        yield pbx


def endpoints() -> list[EndpointSpec]:
    return [EndpointSpec(name, f"pjsip:{name}", channel) for name, channel in CHANNELS.items()]


async def replica(tmp: Path, slack: FakeSlack, asterisk: AsteriskSandbox,
                  url: str, *, socket_mode: bool = False) -> BridgeProcess:
    """One more `bridge run` with the shared config (each its own directory and port)."""
    tmp.mkdir(parents=True, exist_ok=True)
    return await start_bridge(tmp, slack, asterisk.ami_port, store_url=url,
                              endpoints=endpoints(), socket_mode=socket_mode)


async def health(bridge: BridgeProcess) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{bridge.port}/healthz",
            timeout=aiohttp.ClientTimeout(total=10)) as response:
        return response.status, json.loads(await response.text())


async def leases_of(bridge: BridgeProcess) -> list[str]:
    _, body = await health(bridge)
    return list(body["replica"]["leases"])


async def holder_of(lease: str, *bridges: BridgeProcess) -> BridgeProcess:
    """The replica holding `lease` (waits for one to take it)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for bridge in bridges:
            if lease in await leases_of(bridge):
                return bridge
        await asyncio.sleep(0.2)
    raise AssertionError(f"no replica holds {lease}")


def kill(bridge: BridgeProcess) -> None:
    bridge._process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]


async def stream(phones: dict[str, SipPhone], sent: dict[str, list[str]], start: int,
                 count: int, tag: str) -> None:
    """`count` texts from the phones in turn, each with a unique tag."""
    names = list(CHANNELS)
    for i in range(start, start + count):
        name = names[i % len(names)]
        body = f"{name} {tag} #{i:03d}"
        assert await phones[name].send_message(body) == 202
        sent[name].append(body)
        await asyncio.sleep(0.01)


async def test_two_replicas_one_sigkilled_post_every_text_once_in_order_within_the_pace(
        tmp_path: Path, slack: FakeSlack, postgres: PostgresCluster,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    slack.rate_limit(per_channel_per_second=1, burst=3)  # Slack's pace, as the bridge's

    # The same 300 texts with one replica first: the 429s Slack answers it are the baseline.
    alone = await replica(tmp_path / "alone", slack, asterisk, postgres.url(postgres.database()))
    baseline: dict[str, list[str]] = {name: [] for name in CHANNELS}
    try:
        await stream(phones, baseline, 0, 300, "one")
        await wait_shown(slack, 300, timeout=90)
    finally:
        assert await alone.stop() == 0, alone.log
    baseline_429s = slack.rate_limited
    slack.reset()
    slack.rate_limit(per_channel_per_second=1, burst=3)

    url = postgres.url(postgres.database())
    a = await replica(tmp_path / "a", slack, asterisk, url)
    b = await replica(tmp_path / "b", slack, asterisk, url)
    sent: dict[str, list[str]] = {name: [] for name in CHANNELS}
    victim, survivor = a, b
    try:
        victim = await holder_of("events:default", a, b)
        survivor = b if victim is a else a
        await stream(phones, sent, 0, 100, "two")
        # Asterisk sends the texts only to the replica taking them: the other one stands by
        # at no cost per text (README, "Running several replicas").
        _, standing_by = await health(survivor)
        _, taking = await health(victim)
        assert (standing_by["ami"]["events"], standing_by["ami"]["text_events"]) == (
            "system", 0), standing_by["ami"]
        assert taking["ami"]["events"] == "on"
        assert taking["ami"]["text_events"] >= 100, taking["ami"]
        kill(victim)
        killed_at = time.monotonic()
        await victim.stop()
        streaming = asyncio.ensure_future(stream(phones, sent, 100, 200, "two"))
        await survivor.wait_for_log("leases: events:default taken", timeout=10)
        failover = time.monotonic() - killed_at
        await streaming
        shown = await wait_shown(slack, 300, timeout=90)
        print(f"two replicas, SIGKILL of the events holder after 100 texts: shown {len(shown)} "
              f"of 300, doubled {len(shown) - len(set(shown))}, failover {failover:.1f} s, "
              f"429s {slack.rate_limited} (one replica: {baseline_429s})")
        for name, channel in CHANNELS.items():
            assert in_channel(slack, channel) == sent[name], name
        assert len(shown) == 300
        assert failover <= 5.0
        assert slack.rate_limited <= baseline_429s
        # The survivor holds everything now, and says so.
        assert {"events:default", "outbox:default"} <= set(await leases_of(survivor))
        # ... and Asterisk now sends it the texts (those above may all have come from the
        # spool it read when it took over).
        await stream(phones, sent, 300, 3, "after")
        await wait_shown(slack, 303, timeout=30)
        _, took_over = await health(survivor)
        assert took_over["ami"]["events"] == "on"
        assert took_over["ami"]["text_events"] >= 3, took_over["ami"]
    finally:
        await victim.stop(signal.SIGKILL)  # already dead unless the test failed before
        assert await survivor.stop() == 0, survivor.log


async def test_slash_commands_to_both_replicas_one_killed_reach_each_phone_once_in_order(
        tmp_path: Path, slack: FakeSlack, postgres: PostgresCluster,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    url = postgres.url(postgres.database())
    a = await replica(tmp_path / "a", slack, asterisk, url)
    b = await replica(tmp_path / "b", slack, asterisk, url)
    victim = await holder_of("outbox:default", a, b)
    survivor = b if victim is a else a
    expected: dict[str, list[str]] = {"alice": [], "bob": []}
    urls = []
    try:
        for i in range(100):
            to = survivor if i >= 50 or i % 2 else victim  # alternately, one gone half-way
            name = "alice" if i % 3 else "bob"
            # Ten people (each under the per-person limit of 20 texts a minute).
            payload = slack.slash_command_payload(text=f"{name} order {i:03d}",
                                                  user_id=f"U0USER{i % 10:02d}")
            status, body = await to.post_signed(*slack.signed_slash_command(payload))
            answer = ack_text(body)
            # Told in the answer by the replica that sends (it holds the outbox lease),
            # else "Sending to" and then through the response_url by whichever sends it.
            assert status == 200 and (f"Sent to *{name}*" in answer
                                      or f"Sending to *{name}*" in answer), body
            expected[name].append(f"order {i:03d}")
            if "Sent to" not in answer:
                urls.append(payload["response_url"])
            if i == 49:
                kill(victim)
                await victim.stop()
        for name, bodies in expected.items():
            await phones[name].wait_for_messages(len(bodies), timeout=30)
        await asyncio.sleep(1.5)  # a text sent twice would arrive now
        for name, bodies in expected.items():
            assert [m.body for m in phones[name].received] == bodies, name
        # Every sender is told, whichever replica took the command and whichever sent it.
        deadline = time.monotonic() + 15
        while True:
            told = {r["response_url"] for r in slack.responses if "Sent to" in r.get("text", "")}
            if set(urls) <= told or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert set(urls) <= told, f"{len(set(urls) - told)} senders not told"
    finally:
        await victim.stop(signal.SIGKILL)  # already dead unless the test failed before
        assert await survivor.stop() == 0, survivor.log


async def test_slacks_retry_of_one_event_to_the_other_replica_sends_one_text(
        tmp_path: Path, slack: FakeSlack, postgres: PostgresCluster,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    url = postgres.url(postgres.database())
    a = await replica(tmp_path / "a", slack, asterisk, url)
    b = await replica(tmp_path / "b", slack, asterisk, url)
    try:
        assert await phones["alice"].send_message("anyone there?") == 202
        [parent] = await slack.wait_for_posts(1)
        event = slack.message_event_payload(text="on my way", user_id="U0HUMAN1",
                                            channel_id=ALICE_CHANNEL, thread_ts=parent["ts"])
        assert (await a.post_signed(*slack.signed_event(event)))[0] == 200
        assert (await b.post_signed(*slack.signed_event(event, retry_num=1)))[0] == 200
        await phones["alice"].wait_for_messages(1)
        await asyncio.sleep(1.5)
        assert [m.body for m in phones["alice"].received] == ["on my way"]
    finally:
        assert await a.stop() == 0, a.log
        assert await b.stop() == 0, b.log


async def test_in_socket_mode_each_replica_holds_its_own_connection_and_texts_go_once(
        tmp_path: Path, slack: FakeSlack, postgres: PostgresCluster,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    url = postgres.url(postgres.database())
    a = await replica(tmp_path / "a", slack, asterisk, url, socket_mode=True)
    b = await replica(tmp_path / "b", slack, asterisk, url, socket_mode=True)
    try:
        deadline = time.monotonic() + 15
        while slack.live_sockets < 2:
            assert time.monotonic() < deadline, "the replicas did not both connect"
            await asyncio.sleep(0.1)
        for i in range(10):  # Slack hands each envelope to one of the connections
            ack = await slack.send_socket_envelope("slash_commands", slack.slash_command_payload(
                text=f"alice over socket {i}"), connection=i)
            assert taken(ack["payload"]["text"]), ack
        await phones["alice"].wait_for_messages(10)
        # A text from a phone and a reply in its thread, redelivered on the other connection.
        assert await phones["bob"].send_message("socket thread?") == 202
        deadline = time.monotonic() + 10
        while not [p for p in slack.posts if p["channel"] == BOB_CHANNEL and not
                   p.get("thread_ts")]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        [parent] = [p for p in slack.posts if p["channel"] == BOB_CHANNEL
                    and not p.get("thread_ts")]
        event = slack.message_event_payload(text="yes", user_id="U0HUMAN1",
                                            channel_id=BOB_CHANNEL, thread_ts=parent["ts"])
        await slack.send_socket_envelope("events_api", event, connection=0)
        await slack.send_socket_envelope("events_api", event, connection=1)
        await phones["bob"].wait_for_messages(1)
        await asyncio.sleep(1.5)
        assert [m.body for m in phones["alice"].received] == [
            f"over socket {i}" for i in range(10)]
        assert [m.body for m in phones["bob"].received] == ["yes"]
    finally:
        assert await a.stop() == 0, a.log
        assert await b.stop() == 0, b.log


async def test_the_database_restarted_under_traffic_unhealthy_then_nothing_lost(
        tmp_path: Path, slack: FakeSlack, postgres: PostgresCluster,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    url = postgres.url(postgres.database())
    a = await replica(tmp_path / "a", slack, asterisk, url)
    b = await replica(tmp_path / "b", slack, asterisk, url)
    sent: dict[str, list[str]] = {name: [] for name in CHANNELS}
    try:
        await stream(phones, sent, 0, 30, "db")
        await wait_shown(slack, 30, timeout=30)
        postgres.pause()
        try:
            await stream(phones, sent, 30, 30, "db")  # Asterisk takes them (202), spools them
            for bridge in (a, b):  # each replica says the database is gone, and posts nothing
                deadline = time.monotonic() + 15
                while True:
                    status, body = await health(bridge)
                    if status == 503 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.3)
                assert status == 503 and not body["store"]["ok"], body
                assert body["replica"]["leases"] == [], body
            posted = len(phone_posts(slack.posts))
            # A /sip text meanwhile is answered, not lost silently.
            status, answer = await a.post_signed(*slack.signed_slash_command(
                slack.slash_command_payload(text="alice are you there")))
            assert status == 200 and not taken(answer), answer
            await asyncio.sleep(1.0)
            assert len(phone_posts(slack.posts)) == posted
        finally:
            postgres.resume()
        shown = await wait_shown(slack, 60, timeout=60)
        for name, channel in CHANNELS.items():
            assert in_channel(slack, channel) == sent[name], name
        assert len(shown) == 60
        for bridge in (a, b):
            deadline = time.monotonic() + 15
            while (await health(bridge))[0] != 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
            assert (await health(bridge))[0] == 200
    finally:
        assert await a.stop() == 0, a.log
        assert await b.stop() == 0, b.log
