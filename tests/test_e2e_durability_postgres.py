"""The durability scenarios on the PostgreSQL store: the real bridge (`bridge run`, store at
`[store] url`) against the real Asterisk and a real PostgreSQL, SIGKILLed mid-stream and
stopped with a backlog; every text delivered once, in order, and kept in the database."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asterisk.harness import AsteriskSandbox
from conftest import ALICE_CHANNEL, BOB_CHANNEL, own_pbx, start_bridge
from fake_slack import FakeSlack
from postgres_cluster import PostgresCluster
from sip_ua import SipPhone
from test_e2e_durability import in_channel, wait_shown

pytestmark = pytest.mark.asterisk


@pytest.fixture
async def pbx() -> AsyncIterator[tuple[AsteriskSandbox, dict[str, SipPhone]]]:
    async with own_pbx("alice", "bob") as pbx:
        yield pbx


async def test_sigkill_mid_stream_on_postgresql_delivers_every_text_once(
        tmp_path: Path, slack: FakeSlack, postgres: PostgresCluster,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    dbname = postgres.database()
    url = postgres.url(dbname)
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port, store_url=url)
    assert f"store postgresql://bridge_admin@127.0.0.1:{postgres.port}/{dbname}" in bridge.log
    sent: dict[str, list[str]] = {"alice": [], "bob": []}

    async def stream(count: int, start: int) -> None:
        for i in range(start, start + count):
            name = "alice" if i % 3 else "bob"
            body = f"{name} pg #{i:03d}"
            assert await phones[name].send_message(body) == 202
            sent[name].append(body)
            await asyncio.sleep(0.01)

    await stream(40, 0)
    bridge._process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    await bridge.stop()
    await stream(40, 40)  # the bridge is dead: Asterisk spools these
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port, store_url=url)
    await stream(40, 80)
    try:
        shown = await wait_shown(slack, 120, timeout=30)
        print(f"SIGKILL mid-stream on PostgreSQL: sent 120, shown {len(shown)}, duplicates "
              f"{len(shown) - len(set(shown))}")
        assert in_channel(slack, ALICE_CHANNEL) == sent["alice"]
        assert in_channel(slack, BOB_CHANNEL) == sent["bob"]
    finally:
        assert await bridge.stop() == 0, bridge.log
    # The texts went through the database, not a SQLite file.
    assert postgres.execute(dbname, "SELECT state, COUNT(*) FROM inbound GROUP BY state") == [
        ("posted", 120)]
    assert not (tmp_path / "bridge-store.sqlite3").exists()
    assert postgres.password not in bridge.log


async def test_sigterm_with_a_backlog_on_postgresql_and_the_next_start_delivers_it(
        tmp_path: Path, slack: FakeSlack, postgres: PostgresCluster,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    url = postgres.url(postgres.database())
    slack.fail_next("chat.postMessage", status=503, times=1000)  # Slack is down
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port, store_url=url)
    for i in range(5):
        await phones["alice"].send_message(f"pg kept {i}")
    await bridge.wait_for_log("result=retrying")
    assert await bridge.stop() == 0, bridge.log
    assert "left in the store for the next start: 5 texts from phones" in bridge.log
    slack.clear_faults()  # Slack is back
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port, store_url=url)
    try:
        assert await wait_shown(slack, 5, timeout=20) == [f"pg kept {i}" for i in range(5)]
    finally:
        assert await bridge.stop() == 0, bridge.log
