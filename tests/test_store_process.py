"""The bridge process and its store file, started the way a user starts it (no Asterisk needed:
AMI points at a closed port, the bridge runs and retries it).

One bridge per store (a second one refuses, naming the first); a store file deleted, replaced or
truncated under a running bridge makes /healthz 503 at once; a damaged store gives one clear
error and exit code whether the damage is in its header or in a page further in; a new store
starts quietly (one line, no library warnings). On PostgreSQL too: one bridge per database,
and a database that cannot be reached shows on /healthz until it is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from bridge_runner import BridgeProcess
from conftest import bridge_env, start_bridge
from fake_slack import FakeSlack
from ops_view import health
from postgres_cluster import PostgresCluster

from bridge.sandbox.launcher import free_port

EXIT_STORE = 3


async def exit_code(process: BridgeProcess, timeout: float = 20) -> int:
    """Wait for a bridge that should stop by itself; its exit code."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while process.returncode is None:
        if loop.time() > deadline:
            await process.stop()
            raise AssertionError(f"the bridge kept running:\n{process.log}")
        await asyncio.sleep(0.05)
    return process.returncode


async def wait_store_problem(port: int, timeout: float = 5) -> dict[str, Any]:
    """Poll /healthz until it reports a store problem (it is 503 anyway: AMI is down)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, body = await health(port)
        if not body["store"]["ok"]:
            assert status == 503
            return body
        if loop.time() > deadline:
            raise AssertionError(f"/healthz shows no store problem: {body}")
        await asyncio.sleep(0.1)


async def test_a_second_bridge_on_the_same_store_refuses_to_start_naming_the_first(
        tmp_path: Path, slack: FakeSlack) -> None:
    first = await start_bridge(tmp_path, slack, free_port(), wait_for_ami=False)
    try:
        second = BridgeProcess(first.config_path, bridge_env(slack), port=free_port())
        await second.start(wait_for=None)
        assert await exit_code(second) == EXIT_STORE
        assert first._process is not None
        line = await second.wait_for_log("in use by another bridge")
        assert f"pid {first._process.pid} on host" in line
        assert "Traceback" not in second.log
        # The first one is untouched by the attempt.
        assert first.returncode is None
        assert (await health(first.port))[1]["store"]["ok"] is True
    finally:
        assert await first.stop() == 0
    # Once the first has stopped, the store is free again.
    third = BridgeProcess(first.config_path, bridge_env(slack), port=free_port())
    await third.start()
    assert await third.stop() == 0


@pytest.mark.parametrize("change", ["deleted", "replaced", "truncated"])
async def test_a_store_file_changed_under_the_running_bridge_makes_it_unhealthy(
        tmp_path: Path, slack: FakeSlack, change: str) -> None:
    bridge = await start_bridge(tmp_path, slack, free_port(), wait_for_ami=False)
    try:
        store = tmp_path / "bridge-store.sqlite3"
        _, before = await health(bridge.port)
        assert before["store"]["ok"] is True
        if change == "deleted":
            store.unlink()
        elif change == "replaced":
            shutil.copy(store, tmp_path / "copy")
            os.replace(tmp_path / "copy", store)  # same content, another file
        else:
            os.truncate(store, 0)
        body = await wait_store_problem(bridge.port)
        assert "changed under the running bridge" in body["store"]["problem"]
        assert any("changed under the running bridge" in r for r in body["reasons"])
        await bridge.wait_for_log("store: the store file .* changed under the running bridge")
        assert bridge.returncode is None  # unhealthy, not gone
    finally:
        await bridge.stop()


def fill_store(path: Path, rows: int = 3000) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=DELETE")  # everything in the main file
        for i in range(rows):
            db.execute("INSERT INTO inbound (channel, text_json, received_at) VALUES (?, ?, ?)",
                       ("C1", '{"body": "' + "x" * 200 + f'{i}"}}', float(i)))


@pytest.mark.parametrize("where", ["header", "a page further in"])
async def test_a_damaged_store_gives_one_clear_error_and_exit_code(
        tmp_path: Path, slack: FakeSlack, where: str) -> None:
    # A real store first (the bridge creates it), with enough rows for many pages.
    bridge = await start_bridge(tmp_path, slack, free_port(), wait_for_ami=False)
    assert await bridge.stop() == 0
    store = tmp_path / "bridge-store.sqlite3"
    fill_store(store)
    assert store.stat().st_size > 100 * 4096
    with store.open("r+b") as f:
        f.seek(0 if where == "header" else 60 * 4096)
        f.write(b"\xde\xad\xbe\xef" * 1024)
    again = BridgeProcess(bridge.config_path, bridge_env(slack), port=free_port())
    await again.start(wait_for=None)
    assert await exit_code(again) == EXIT_STORE
    line = await again.wait_for_log("cannot be used as the bridge's store")
    assert "restore this one" in line
    assert "Traceback" not in again.log


async def test_a_new_store_starts_quietly(tmp_path: Path, slack: FakeSlack) -> None:
    bridge = await start_bridge(tmp_path, slack, free_port(), wait_for_ami=False)
    assert await bridge.stop() == 0
    store_lines = [line for line in bridge.lines if "store:" in line]
    assert len(store_lines) == 1 and "store: created" in store_lines[0], store_lines
    assert "upgrading" not in bridge.log
    # No library talks in the log: bolt's "As you gave client as well, token will be unused"
    # and its like are warnings about how the bridge set it up, not news for the operator.
    assert "token will be unused" not in bridge.log
    assert [line for line in bridge.lines if "slack_bolt" in line] == []


async def test_a_fatal_signal_is_not_silent(tmp_path: Path, slack: FakeSlack) -> None:
    """SQLite maps `-shm` into memory: a disk that cannot back it ends the process with
    SIGBUS. The bridge cannot survive that, but it must say so in its log."""
    import signal

    bridge = await start_bridge(tmp_path, slack, free_port(), wait_for_ami=False)
    assert bridge._process is not None
    bridge._process.send_signal(signal.SIGBUS)
    assert await exit_code(bridge) == -signal.SIGBUS
    await bridge.wait_for_log("Fatal Python error: Bus error")


async def test_a_second_bridge_on_the_same_postgresql_database_runs_beside_it_as_a_replica(
        tmp_path: Path, slack: FakeSlack, postgres: PostgresCluster) -> None:
    url = postgres.url(postgres.database())
    first = await start_bridge(tmp_path, slack, free_port(), wait_for_ami=False, store_url=url)
    second = BridgeProcess(first.config_path, bridge_env(slack), port=free_port())
    try:
        await second.start()
        assert postgres.password not in second.log and "Traceback" not in second.log
        # Each says which replica it is and what it holds; the PBX's streams are one's only.
        one = (await health(first.port))[1]["replica"]
        two = (await health(second.port))[1]["replica"]
        assert one["name"] != two["name"] and one["lease_seconds"] == 3.0
        assert set(one["leases"]) == {"events:default", "outbox:default"}
        assert two["leases"] == []
    finally:
        assert await second.stop() == 0
        assert await first.stop() == 0


async def test_an_unreachable_postgresql_store_shows_on_healthz_until_it_is_back(
        tmp_path: Path, slack: FakeSlack, postgres: PostgresCluster) -> None:
    dbname = postgres.database()
    bridge = await start_bridge(tmp_path, slack, free_port(), wait_for_ami=False,
                                store_url=postgres.url(dbname))
    try:
        assert (await health(bridge.port))[1]["store"]["ok"] is True
        postgres.execute("postgres", [
            f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS false",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'"])
        body = await wait_store_problem(bridge.port, timeout=15)
        assert "cannot be reached" in body["store"]["problem"]
        assert postgres.password not in json.dumps(body)
        postgres.execute("postgres", f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS true")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not (await health(bridge.port))[1]["store"]["ok"]:
            assert loop.time() < deadline, "/healthz never showed the store back"
            await asyncio.sleep(0.1)
        assert bridge.returncode is None
    finally:
        postgres.execute("postgres", f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS true")
        assert await bridge.stop() == 0, bridge.log


async def test_a_bridge_stopped_while_its_postgresql_store_is_unreachable_exits_cleanly(
        tmp_path: Path, slack: FakeSlack, postgres: PostgresCluster) -> None:
    dbname = postgres.database()
    bridge = await start_bridge(tmp_path, slack, free_port(), wait_for_ami=False,
                                store_url=postgres.url(dbname))
    try:
        postgres.execute("postgres", [
            f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS false",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'"])
        await wait_store_problem(bridge.port, timeout=15)
        began = asyncio.get_running_loop().time()
        assert await bridge.stop() == 0, bridge.log  # what is stored stays stored
        assert asyncio.get_running_loop().time() - began < 8
        assert "Traceback" not in bridge.log
        await bridge.wait_for_log("the store cannot say what is left in it")
    finally:
        postgres.execute("postgres", f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS true")
