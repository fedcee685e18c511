"""Every query the store runs for a text, a start, a scrape or a prune uses an index: none reads
the whole table, so none grows slower as delivered rows pile up. And the figures that follow
from it: /metrics and the first text after a start cost the same on a store of many rows.
On PostgreSQL: the waiting-rows and backlog queries read their partial indexes only."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import sqlite3
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres_cluster import PostgresCluster

from bridge.core.model import AuditEntry, NewInbound, NewOutbound
from bridge.core.texts import EchoText, InboundText
from bridge.store.postgres import PostgresStore
from bridge.store.sqlite import Store


def text(n: int, at: float | None = None) -> InboundText:
    return InboundText(event_id=f"m{n}", sender_uri="sip:alice@h", display_name="A",
                       body=f"text {n}", declared_bytes=6, to_uri="", exten="",
                       asterisk_time=at)


def fill(path: Path, rows: int) -> None:
    """`rows` delivered texts each way, written straight into the file (fast)."""
    now = time.time()
    body = json.dumps({"event_id": "", "sender_uri": "sip:a@h", "display_name": "",
                       "body": "x", "declared_bytes": 1, "to_uri": "", "exten": ""})
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO inbound (message_id, channel, endpoint, text_json, received_at, state,"
            " posted_at, slack_ts) VALUES (?, 'C1', 'alice', ?, ?, 'posted', ?, '1.1')",
            ((f"old{i}", body, now - 100_000 + i, now - 100_000 + i) for i in range(rows)))
        db.executemany(
            "INSERT INTO outbound (slack_user, slack_channel, endpoint, destination, body,"
            " created_at, state, segments_total, finished_at, notified) VALUES"
            " ('U1', 'C1', 'alice', 'pjsip:alice', 'hi', ?, 'sent', 1, ?, 1)",
            ((now - 100_000 + i, now - 100_000 + i) for i in range(rows)))
        db.executemany("INSERT INTO slack_events (event_id, received_at) VALUES (?, ?)",
                       ((f"Ev{i}", now - 100_000 + i) for i in range(rows)))


async def exercise(store: Store) -> set[str]:
    """Call every public operation of the store; return the names called."""
    called: set[str] = set()

    async def call(name: str, *args: object, **kwargs: object) -> object:
        called.add(name)
        return await getattr(store, name)(*args, **kwargs)

    now = time.time()
    rows = await call("add_inbound", [NewInbound("C1", "alice", text(1, now), now),
                                      NewInbound("C1", "alice", text(2, now), now, "alice")])
    await call("add_inbound", [NewInbound("C1", "alice", text(1, now), now)])  # a duplicate
    ids = [row.id for row in rows if row is not None]
    await call("waiting_inbound")
    await call("mark_inbound", ids, "posting")
    await call("waiting_channels")
    await call("waiting_inbound", channel="C1", limit=10)
    await call("mark_inbound", ids, "pending", error="ratelimited")
    await call("mark_inbound", ids, "posted", slack_ts="2.2")
    await call("move_inbound", ids, "C2")
    await call("spool_mark")
    out = await call("add_outbound", slack_user="U1", slack_channel="C1", endpoint="alice",
                     destination="pjsip:alice", body="hi", response_url=None,
                     segments_total=2, feedback_ts="3.3")
    row_id = out.id  # type: ignore[attr-defined]
    await call("add_audit", AuditEntry(at=now, slack_user="U1", slack_channel="C1",
                                       source="slash", recipient="alice", endpoint="alice",
                                       destination="pjsip:alice", result="accepted",
                                       reason=None, outbound_id=row_id, text=None))
    await call("unfinished_outbound")
    await call("get_outbound", row_id)
    await call("recent_outbound", "U1")
    await call("outbound_progress", row_id, 1)
    await call("set_feedback_target", row_id, "C1", "4.4", done=False)
    await call("feedback_done", row_id)
    await call("finish_outbound", row_id, "sent", segments_sent=2)
    await call("outbound_notified", row_id)
    echo = EchoText(body="hi", slack_user="U1", slack_user_name="u", endpoint="alice",
                    outbound_id=row_id)
    echoed = await call("add_inbound", [NewInbound("C1", "alice", echo, now, "alice")])
    # the echo's "posted" mark with its text's feedback target and the next post's "posting"
    await call("mark_inbound", [row.id for row in echoed if row is not None],  # type: ignore[attr-defined]
               "posted", slack_ts="5.5", then_posting=ids, channel="C1",
               echoes_done=[row_id])
    # A /sip text as the Slack side stores it: the command, the text, its audit and echo.
    await call("accept_outbound", NewOutbound(
        slack_user="U1", slack_channel="C1", endpoint="alice", destination="pjsip:alice",
        body="hi", response_url=None, segments_total=1), request_id="command:T-new",
        audit=AuditEntry(at=now, slack_user="U1", slack_channel="C1", source="slash",
                         recipient="alice", endpoint="alice", destination="pjsip:alice",
                         result="accepted", reason=None, outbound_id=None, text=None),
        echo=NewInbound("C1", "alice", replace(echo, outbound_id=0), now, "alice"))
    await call("start_conversation", key="alice", channel="C1", thread_ts="5.5",
               endpoint="alice", now=now)
    await call("conversation", "alice")
    await call("touch_conversation", "alice", now + 1)
    await call("thread_owner", "C1", "5.5")
    await call("first_sight_of_event", "Ev-new")
    await call("forget_event", "Ev-new")
    await call("backlog")
    await call("claim_leases", "replica-1", ["channel:C1", "events:default"], 3.0)
    await call("release_leases", "replica-1", ["channel:C1"])
    await call("prune", now - 50_000, audit_older_than=now - 50_000)
    await store._run(store._test_write)
    return called


def full_scans(db: sqlite3.Connection, statement: str) -> list[str]:
    """The plan lines of `statement` that read a whole table (or a whole full index)."""
    partial = {name for name, sql in db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")
        if " WHERE " in sql.upper()}
    bad = []
    for *_, detail in db.execute(f"EXPLAIN QUERY PLAN {statement}"):
        if not detail.startswith("SCAN "):
            continue
        index = re.search(r"USING (?:COVERING )?INDEX (\w+)", detail)
        if index and index.group(1) in partial:
            continue  # a partial index holds the waiting rows only
        bad.append(detail)
    return bad


_NOT_QUERIES = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|PRAGMA)\b", re.IGNORECASE)


async def test_every_store_query_uses_an_index(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    await (await Store.open(path)).close()
    fill(path, 2000)
    store = await Store.open(path)
    statements: list[str] = []
    # The store's one connection, traced while every operation runs once (SQL as executed,
    # parameters filled in).
    store._conn().set_trace_callback(statements.append)
    try:
        called = await exercise(store)
    finally:
        store._conn().set_trace_callback(None)
        await store.close()
    public = {name for name, member in inspect.getmembers(Store)
              if inspect.iscoroutinefunction(member) and not name.startswith("_")}
    # watch() is the health loop; it runs no query of its own but the test write (a primary-key
    # upsert into store_info), which exercise() runs through _test_write below.
    assert public - {"open", "close", "watch"} <= called, \
        "a store operation this test does not run"
    queries = sorted({s for s in statements if not _NOT_QUERIES.match(s)})
    assert len(queries) > 20
    with sqlite3.connect(path) as db:
        scans = {q: bad for q in queries if (bad := full_scans(db, q))}
    assert scans == {}


async def test_metrics_and_the_first_text_cost_the_same_on_a_store_of_200000_rows(
        tmp_path: Path) -> None:
    async def figures(path: Path) -> tuple[float, float]:
        store = await Store.open(path)
        try:
            samples = []
            for _ in range(30):
                began = time.perf_counter()
                await store.backlog()
                samples.append(time.perf_counter() - began)
            # a start's prune queued right before the first text's store trip
            prune = asyncio.ensure_future(store.prune(time.time() - 3 * 86400))
            began = time.perf_counter()
            await store.add_inbound([NewInbound("C1", "alice", text(10**9), time.time())])
            first = time.perf_counter() - began
            await prune
            return statistics.median(samples), first
        finally:
            await store.close()

    empty, full = tmp_path / "empty.sqlite3", tmp_path / "full.sqlite3"
    for path in (empty, full):
        await (await Store.open(path)).close()
    fill(full, 200_000)
    empty_scrape, _ = await figures(empty)
    full_scrape, full_first = await figures(full)
    print(f"backlog: {full_scrape * 1000:.3f} ms with 200,000 rows, "
          f"{empty_scrape * 1000:.3f} ms empty; first write {full_first * 1000:.1f} ms")
    # /metrics within 3x of an empty store (a thread hop dominates both); before the
    # indexes the full store took a thousand times longer.
    assert full_scrape <= 3 * max(empty_scrape, 0.0002)
    assert full_first < 0.1


async def test_prune_in_batches_forgets_every_old_row_and_keeps_the_spool_mark(
        tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = await Store.open(path)
    now = time.time()
    rows = await store.add_inbound([NewInbound("C1", "alice", text(n, now - 10 + n), now)
                                    for n in range(3)])
    await store.mark_inbound([row.id for row in rows if row is not None], "posted",
                             slack_ts="1.1")
    await store.close()
    fill(path, 1_234)  # more than two prune batches of each table
    store = await Store.open(path)
    try:
        # the three young rows stay; every filled row (a day old) goes
        assert (await store.prune(now - 3600)).texts == 2 * 1_234
        assert (await store.prune(now - 3600)).texts == 0
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT COUNT(*) FROM inbound").fetchone()[0] == 3
            assert db.execute("SELECT COUNT(*) FROM slack_events").fetchone()[0] == 0
        assert await store.spool_mark() == now - 10 + 2
        assert (await store.prune(now + 60)).texts == 3  # everything delivered is forgotten...
        assert await store.spool_mark() == now - 10 + 2  # ...but not how far the spool was read
    finally:
        await store.close()


async def test_postgresql_finds_waiting_rows_and_the_backlog_by_index(
        postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same partial indexes on PostgreSQL: the waiting-rows and backlog queries (each
    # text, each start, each /metrics scrape) read the few waiting rows, never the delivered.
    dbname = postgres.database()
    await (await PostgresStore.open(postgres.url(dbname))).close()
    now = time.time()
    postgres.execute(dbname, [
        ("INSERT INTO inbound (message_id, channel, endpoint, text_json, received_at, state,"
        " posted_at, slack_ts) SELECT 'old' || i, 'C1', 'alice', '{}', %(t)s - i, 'posted',"
        " %(t)s - i, '1.1' FROM generate_series(1, 20000) AS i"),
        ("INSERT INTO outbound (slack_user, slack_channel, endpoint, destination, body,"
        " created_at, state, segments_total, finished_at, notified) SELECT 'U1', 'C1',"
        " 'alice', 'pjsip:alice', 'hi', %(t)s - i, 'sent', 1, %(t)s - i, TRUE"
        " FROM generate_series(1, 20000) AS i"),
        "ANALYZE"], {"t": now})
    store = await PostgresStore.open(postgres.url(dbname))
    statements: list[tuple[str, Any]] = []
    execute = psycopg.AsyncConnection.execute

    async def traced(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        if str(query).strip():  # not the pool's empty liveness check
            statements.append((str(query), params))
        return await execute(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", traced)
    try:
        await store.waiting_inbound()
        await store.unfinished_outbound()
        await store.backlog()
    finally:
        monkeypatch.undo()
        await store.close()
    assert len(statements) == 3
    plans: dict[str, str] = {}
    with psycopg.connect(postgres.url(dbname), autocommit=True) as conn:
        # Without a usable index the planner still scans the table, whatever this says.
        conn.execute("SET enable_seqscan = off")
        for query, params in statements:
            plans[query] = "\n".join(row[0] for row in conn.execute(
                f"EXPLAIN {query}", params).fetchall())
    # Every table read goes through a partial index of waiting rows (an index scan of a full
    # index, filtered, reads every delivered row too).
    partial = ("inbound_unposted", "inbound_waiting_channel", "outbound_queued",
               "outbound_unfinished", "outbound_untold")
    scans = {q: [line.strip() for line in plan.splitlines() if " Scan " in f" {line} "
                 and not any(f" on {index}" in line or f"using {index}" in line
                             for index in partial)]
             for q, plan in plans.items()}
    assert {q: lines for q, lines in scans.items() if lines} == {}
