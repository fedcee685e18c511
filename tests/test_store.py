"""The store, on both backends (the SQLite file and a real PostgreSQL): created and upgraded in
place, never recreated; a newer store is refused untouched; an unusable one gets a clear error;
every call means the same on both."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest
from postgres_cluster import PostgresCluster

from bridge.core.directory import DEFAULT_PBX
from bridge.core.errors import StoreError, StoreInUse, StoreUnavailable
from bridge.core.model import AuditEntry, NewInbound, NewOutbound
from bridge.core.texts import EchoText, InboundText
from bridge.store import postgres as pg_store
from bridge.store import sqlite as sqlite_store
from bridge.store.backend import StoreBackend
from bridge.store.postgres import PostgresStore
from bridge.store.sqlite import _MIGRATIONS, SCHEMA_VERSION, Store


def text(body: str) -> InboundText:
    return InboundText(event_id=f"id-{body}", sender_uri="sip:alice@h", display_name="A",
                       body=body, declared_bytes=len(body), to_uri="", exten="")


class Backend(Protocol):
    """One backend under test, with a way around the bridge to look at what it stored."""

    name: str

    async def open(self) -> StoreBackend: ...

    def version(self) -> int: ...

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Run SQL directly on the store (outside the bridge); the rows it returns."""

    def fingerprint(self) -> str:
        """Everything stored: equal fingerprints mean the store was not touched."""

    def broken_write(self, store: StoreBackend) -> Awaitable[None]:
        """An operation on the store's own transaction machinery that writes a row and
        then fails."""


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def open(self) -> StoreBackend:
        return await Store.open(self.path)

    def version(self) -> int:
        return int(self.sql("SELECT MAX(version) FROM schema_version")[0][0])

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self.path) as db:
            return list(db.execute(statement).fetchall())

    def fingerprint(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def broken_write(self, store: StoreBackend) -> Awaitable[None]:
        assert isinstance(store, Store)

        def broken(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO inbound (channel, text_json, received_at)"
                       " VALUES ('C1', '{}', 1)")
            raise RuntimeError("this operation fails after writing")
        return store._run(store._transaction, broken)


class PostgresBackend:
    name = "postgres"

    def __init__(self, cluster: PostgresCluster) -> None:
        self.cluster = cluster
        self.dbname = cluster.database()
        self.url = cluster.url(self.dbname)

    async def open(self) -> StoreBackend:
        return await PostgresStore.open(self.url)

    def version(self) -> int:
        return int(self.sql("SELECT MAX(version) FROM schema_version")[0][0])

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        return self.cluster.execute(self.dbname, statement)

    def fingerprint(self) -> str:
        return self.cluster.fingerprint(self.dbname)

    def broken_write(self, store: StoreBackend) -> Awaitable[None]:
        assert isinstance(store, PostgresStore)

        async def broken(conn: pg_store.Connection) -> None:
            await conn.execute("INSERT INTO inbound (channel, text_json, received_at)"
                               " VALUES ('C1', '{}', 1)")
            raise RuntimeError("this operation fails after writing")
        return store._transaction(broken)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return SqliteBackend(tmp_path / "sub" / "store.sqlite3")
    return PostgresBackend(request.getfixturevalue("postgres"))


def test_both_backends_are_at_the_same_schema_version() -> None:
    # Version N means the same tables on both: a migration is added to both lists.
    assert pg_store.SCHEMA_VERSION == sqlite_store.SCHEMA_VERSION
    assert len(pg_store._MIGRATIONS) == pg_store.SCHEMA_VERSION


async def test_both_backends_have_the_same_tables_and_columns(tmp_path: Path,
                                                               postgres: PostgresCluster) -> None:
    # What a migration added to one list only would break: the same code reads both.
    lite, pg = SqliteBackend(tmp_path / "store.sqlite3"), PostgresBackend(postgres)
    for backend in (lite, pg):
        await (await backend.open()).close()
    tables = [r[0] for r in lite.sql("SELECT name FROM sqlite_master WHERE type='table'"
                                     " AND name NOT LIKE 'sqlite_%'")]
    sqlite_columns = {t: sorted(r[1] for r in lite.sql(f"PRAGMA table_info({t})"))
                      for t in tables}
    pg_columns: dict[str, list[str]] = {}
    for table, column in pg.sql("SELECT table_name, column_name FROM"
                                " information_schema.columns WHERE table_schema='public'"):
        pg_columns.setdefault(table, []).append(column)
    assert {t: sorted(c) for t, c in pg_columns.items()} == sqlite_columns


async def test_both_backends_have_the_same_indexes(tmp_path: Path,
                                                  postgres: PostgresCluster) -> None:
    # The queries are the same on both: an index missing on one makes them scan there.
    lite, pg = SqliteBackend(tmp_path / "store.sqlite3"), PostgresBackend(postgres)
    for backend in (lite, pg):
        await (await backend.open()).close()
    sqlite_indexes = {r[0] for r in lite.sql("SELECT name FROM sqlite_master WHERE"
                                             " type='index' AND sql IS NOT NULL")}
    # Primary keys and UNIQUE constraints are implicit in SQLite's list (sql IS NULL).
    pg_indexes = {r[0] for r in pg.sql("SELECT indexname FROM pg_indexes WHERE"
                                       " schemaname='public' AND indexname NOT LIKE '%_pkey'"
                                       " AND indexname NOT LIKE '%_key'")}
    assert pg_indexes == sqlite_indexes
    assert "inbound_unposted" in pg_indexes


async def test_new_store_is_created_at_the_current_schema(backend: Backend) -> None:
    store = await backend.open()
    rows = await store.add_inbound([NewInbound("C1", "alice", text("hi"), time.time())])
    assert rows[0] is not None
    await store.close()
    assert backend.version() == SCHEMA_VERSION
    if isinstance(backend, SqliteBackend):
        assert backend.sql("PRAGMA journal_mode")[0][0] == "wal"


async def test_texts_survive_reopening_and_duplicates_are_refused(backend: Backend) -> None:
    store = await backend.open()
    await store.add_inbound([NewInbound("C1", "alice", text("one"), 1.0),
                             NewInbound("C1", "alice", text("two"), 2.0)])
    await store.close()
    store = await backend.open()
    again = await store.add_inbound([NewInbound("C1", "alice", text("one"), 3.0),
                                     NewInbound("C1", "alice", text("three"), 3.0),
                                     NewInbound("C1", "alice", text("three"), 3.5)])
    assert again[0] is None and again[1] is not None and again[2] is None
    waiting = await store.waiting_inbound()
    assert [row.text.body for row in waiting] == ["one", "two", "three"]
    assert waiting[0].text == text("one")
    await store.close()


async def test_waiting_channels_say_how_many_texts_each_has_waiting(backend: Backend) -> None:
    # What a replica's scan compares with the texts it has queued, to find those another
    # replica stored.
    store = await backend.open()
    rows = await store.add_inbound([NewInbound("C1", "alice", text("a1"), 1.0),
                                    NewInbound("C1", "alice", text("a2"), 2.0),
                                    NewInbound("C2", "bob", text("b1"), 3.0),
                                    NewInbound("C3", "carol", text("c1"), 4.0)])
    ids = [row.id for row in rows if row is not None]
    await store.mark_inbound([ids[0]], "posting")
    await store.mark_inbound([ids[3]], "posted", slack_ts="1.1")
    assert await store.waiting_channels() == {"C1": 2, "C2": 1}
    await store.close()


async def test_an_older_store_is_upgraded_in_place_keeping_its_rows(backend: Backend) -> None:
    # A store from before it had tables (schema 0), holding someone else's table too:
    # upgrading must keep what is there, not recreate it.
    backend.sql("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    backend.sql("CREATE TABLE keep_me (x TEXT)")
    backend.sql("INSERT INTO keep_me VALUES ('still here')")
    store = await backend.open()
    await store.close()
    assert backend.version() == SCHEMA_VERSION
    assert backend.sql("SELECT x FROM keep_me")[0][0] == "still here"


async def test_a_newer_store_is_refused_and_left_untouched(backend: Backend) -> None:
    store = await backend.open()
    await store.add_inbound([NewInbound("C1", "alice", text("from the future"), 1.0)])
    await store.close()
    backend.sql(f"INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION + 1})")
    if backend.name == "postgres":  # and one this bridge may not use (see the rolling upgrade)
        backend.sql(f"UPDATE store_info SET value = '{SCHEMA_VERSION + 1}'"
                    " WHERE key = 'oldest_reader'")
    before = backend.fingerprint()
    with pytest.raises(StoreError, match="newer version of the bridge"):
        await backend.open()
    assert backend.fingerprint() == before


async def test_a_file_that_is_not_a_database_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    path.write_text("this is a text file, not a database" * 100)
    with pytest.raises(StoreError, match="cannot be used as the bridge's store"):
        await Store.open(path)


async def test_prune_forgets_only_old_delivered_texts(backend: Backend) -> None:
    store = await backend.open()
    rows = await store.add_inbound([NewInbound("C1", "alice", text(b), 1.0)
                                    for b in ("posted", "waiting")])
    assert rows[0] is not None
    await store.mark_inbound([rows[0].id], "posted", slack_ts="1.2")
    assert (await store.prune(time.time() - 60)).texts == 0  # posted just now: kept
    assert (await store.prune(time.time() + 60)).texts == 1
    assert [r.text.body for r in await store.waiting_inbound()] == ["waiting"]
    await store.close()


async def test_concurrent_writes_succeed_and_one_failure_undoes_only_itself(
        backend: Backend) -> None:
    store = await backend.open()
    writes = [store.add_inbound([NewInbound("C1", "alice", text(f"t{i}"), float(i))])
              for i in range(200)]
    results = await asyncio.gather(*writes[:100], backend.broken_write(store), *writes[100:],
                                   return_exceptions=True)
    assert isinstance(results[100], RuntimeError)
    assert all(isinstance(r, list) and r[0] is not None for i, r in enumerate(results)
               if i != 100)
    await store.close()
    bodies = [json.loads(r[0])["body"] for r in backend.sql(
        "SELECT text_json FROM inbound ORDER BY id")]
    expected = [f"t{i}" for i in range(200)]
    if isinstance(backend, SqliteBackend):
        # One store thread: concurrent writes share commits in the order they were made.
        assert bodies == expected  # the broken job's row is gone
    else:
        # A pool of connections: concurrent writes commit side by side, in any order.
        assert sorted(bodies) == sorted(expected)  # the broken job's row is gone


async def test_a_new_store_is_created_in_one_step_and_says_so_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="bridge.store.sqlite")
    store = await Store.open(tmp_path / "store.sqlite3")
    assert store.created_now and store.created_at is not None
    assert abs(store.created_at - time.time()) < 60
    await store.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.store.sqlite"]
    assert lines == [f"store: created {tmp_path / 'store.sqlite3'} (schema {SCHEMA_VERSION})"]
    # Opening it again: nothing to create or upgrade, nothing logged, not "new".
    caplog.clear()
    store = await Store.open(tmp_path / "store.sqlite3")
    assert not store.created_now
    await store.close()
    assert [r for r in caplog.records if r.name == "bridge.store.sqlite"] == []


async def test_an_existing_store_is_still_upgraded_step_by_step(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "store.sqlite3"
    with sqlite3.connect(path) as db:  # a store as schema 2 left it
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for script in _MIGRATIONS[:2]:
            db.executescript(script)
        db.execute("INSERT INTO schema_version VALUES (2)")
    caplog.set_level("INFO", logger="bridge.store.sqlite")
    store = await Store.open(path)
    assert store.created_at is None  # its history is unknown: not treated as new
    await store.close()
    upgrades = [r.getMessage() for r in caplog.records if "upgrading" in r.getMessage()]
    assert len(upgrades) == SCHEMA_VERSION - 2
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == \
            SCHEMA_VERSION


async def test_a_second_opener_of_the_same_store_is_refused_naming_the_holder(
        tmp_path: Path) -> None:
    import os
    import socket

    path = tmp_path / "store.sqlite3"
    store = await Store.open(path)
    with pytest.raises(StoreInUse, match=f"pid {os.getpid()} on host "
                                         f"{socket.gethostname()}"):
        await Store.open(path)
    await store.close()
    again = await Store.open(path)  # released with the store: the next one opens it
    await again.close()


async def test_prune_forgets_old_threads_conversations_events_and_audit(
        backend: Backend) -> None:
    store = await backend.open()
    old, recent = time.time() - 10 * 86400, time.time()
    await store.start_conversation(key="alice", channel="C1", thread_ts="1.1", endpoint="alice",
                                   now=old)
    await store.start_conversation(key="bob", channel="C2", thread_ts="2.1", endpoint="bob",
                                   now=old)
    await store.start_conversation(key="bob", channel="C2", thread_ts="2.2", endpoint="bob",
                                   now=recent)  # bob's new thread; 2.1 is an old one now
    await store.touch_conversation("bob", recent)
    for at in (old, recent):
        await store.add_audit(AuditEntry(at=at, slack_user="U1", slack_channel="C1",
                                         source="slash", recipient="alice", endpoint="alice",
                                         destination="pjsip:alice", result="sent", reason=None,
                                         outbound_id=None, text=None))
    pruned = await store.prune(time.time() - 3 * 86400,
                               audit_older_than=time.time() - 5 * 86400)
    assert (pruned.conversations, pruned.threads, pruned.audit) == (1, 2, 1)
    assert await store.conversation("alice") is None
    assert await store.thread_owner("C1", "1.1") is None
    assert await store.thread_owner("C2", "2.1") is None
    assert await store.thread_owner("C2", "2.2") is not None  # still bob's current thread
    assert (await store.conversation("bob")) is not None
    # Without an audit retention the audit trail is kept.
    assert (await store.prune(time.time() + 86400)).audit == 0
    await store.close()


async def test_prune_deletes_in_batches_until_every_old_row_is_gone(backend: Backend) -> None:
    store = await backend.open()
    await store.close()
    # More old rows than two batches hold (500 each), written around the bridge (fast).
    backend.sql("INSERT INTO slack_events (event_id, received_at) WITH RECURSIVE n(i) AS"
                " (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1234)"
                " SELECT 'Ev' || i, 1.0 FROM n")
    backend.sql("INSERT INTO audit (at, slack_user, slack_channel, source, recipient, result)"
                " WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1100)"
                " SELECT 1.0, 'U1', 'C1', 'slash', 'alice', 'sent' FROM n")
    store = await backend.open()
    assert await store.first_sight_of_event("young") is True
    pruned = await store.prune(time.time() - 60, audit_older_than=time.time() - 60)
    assert (pruned.slack_events, pruned.audit) == (1234, 1100)
    assert backend.sql("SELECT event_id FROM slack_events") == [("young",)]
    assert backend.sql("SELECT COUNT(*) FROM audit") == [(0,)]
    await store.close()


async def test_a_text_set_aside_waits_no_more_and_is_never_pruned(backend: Backend) -> None:
    # Slack refused it however it was rendered: kept, but it must not hold up the texts behind
    # it (not waiting, not in the backlog), nor be forgotten like a delivered one.
    store = await backend.open()
    refused, behind = await store.add_inbound([NewInbound("C1", "alice", text(b), 1.0)
                                               for b in ("refused", "behind")])
    assert refused is not None and behind is not None
    await store.mark_inbound([refused.id], "set_aside", error="msg_too_long")
    assert [r.text.body for r in await store.waiting_inbound()] == ["behind"]
    backlog = await store.backlog()
    assert (backlog.inbound_waiting, backlog.inbound_oldest) == (1, 1.0)
    await store.mark_inbound([behind.id], "posted", slack_ts="1.1")
    assert (await store.prune(time.time() + 60)).texts == 1
    assert await store.waiting_inbound() == []
    await store.close()
    assert backend.sql("SELECT state, last_error FROM inbound") == [("set_aside",
                                                                     "msg_too_long")]


async def test_the_store_files_stay_small_under_a_steady_stream_of_texts(
        tmp_path: Path) -> None:
    """The bridge checkpoints the WAL itself (off the event loop): texts stored one at a
    time, as /sip texts come, leave a WAL of a few MB, not one growing with every text."""
    path = tmp_path / "store.sqlite3"
    store = await Store.open(path)
    try:
        for i in range(1500):
            accepted = await store.accept_outbound(
                NewOutbound(slack_user="U1", slack_channel="C9", endpoint="alice",
                            destination="pjsip:alice", body=f"text {i}", response_url=None,
                            segments_total=1),
                request_id=f"command:{i}", audit=AuditEntry(
                    at=time.time(), slack_user="U1", slack_channel="C9", source="slash",
                    recipient="alice", endpoint="alice", destination="pjsip:alice",
                    result="accepted", reason=None, outbound_id=None, text=None),
                echo=NewInbound(channel="C0ALICE", endpoint="alice", received_at=time.time(),
                                conversation="alice", text=EchoText(
                                    body=f"text {i}", slack_user="U1", slack_user_name="ann",
                                    endpoint="alice", outbound_id=0)))
            assert accepted is not None
            await store.finish_outbound(accepted.row.id, "sent", segments_sent=1)
        await asyncio.sleep(0.2)  # the last checkpoint, on the store thread
        wal = Path(f"{path}-wal").stat().st_size
        assert wal < 8_000_000, f"the WAL is {wal / 1e6:.0f} MB after 1,500 texts"
        assert path.stat().st_size > 500_000  # the texts are in the store file itself
    finally:
        await store.close()


async def test_a_text_is_stored_with_its_audit_entry_echo_and_request_once(
        backend: Backend) -> None:
    """One transaction takes a /sip text, its audit entry, its echo and the command's ID;
    the same command again stores nothing, and the echo reads back as the text's."""
    store = await backend.open()
    text = NewOutbound(slack_user="U1", slack_channel="C9", endpoint="alice",
                       destination="pjsip:alice", body="on my way", response_url=None,
                       segments_total=1)
    audit = AuditEntry(at=time.time(), slack_user="U1", slack_channel="C9", source="slash",
                       recipient="alice", endpoint="alice", destination="pjsip:alice",
                       result="accepted", reason=None, outbound_id=None, text=None)
    echo = NewInbound(channel="C0ALICE", endpoint="alice", received_at=time.time(),
                      conversation="alice", text=EchoText(
                          body="on my way", slack_user="U1", slack_user_name="ann",
                          endpoint="alice", outbound_id=0))
    accepted = await store.accept_outbound(text, request_id="command:T1", audit=audit,
                                           echo=echo)
    assert accepted is not None and accepted.echo is not None
    row = accepted.row
    assert (row.body, row.state, row.pbx) == ("on my way", "queued", DEFAULT_PBX)
    assert accepted.echo.text == replace(echo.text, outbound_id=row.id)
    assert await store.accept_outbound(text, request_id="command:T1", audit=audit,
                                       echo=echo) is None
    assert [r.id for r in await store.unfinished_outbound()] == [row.id]
    [waiting] = await store.waiting_inbound()
    assert waiting.id == accepted.echo.id and waiting.text == accepted.echo.text
    assert backend.sql("SELECT result, outbound_id FROM audit") == [("accepted", row.id)]
    assert await store.first_sight_of_event("command:T1") is False
    # Without a request ID, audit or echo: the text alone.
    alone = await store.accept_outbound(replace(text, body="again"))
    assert alone is not None and alone.echo is None and alone.row.id > row.id
    assert len(backend.sql("SELECT id FROM audit")) == 1
    await store.close()


async def test_an_echo_posted_showing_its_outcome_is_its_texts_feedback_target_in_one_mark(
        backend: Backend) -> None:
    """The "posted" mark of a post carrying echoes that show their text's outcome also makes
    that post the texts' feedback target, done; the next post's "posting" goes with it."""
    store = await backend.open()
    accepted = [await store.accept_outbound(
        NewOutbound(slack_user="U1", slack_channel="C9", endpoint="alice",
                    destination="pjsip:alice", body=body, response_url=None,
                    segments_total=1),
        echo=NewInbound(channel="C0ALICE", endpoint="alice", received_at=time.time(),
                        conversation="alice", text=EchoText(
                            body=body, slack_user="U1", slack_user_name="ann",
                            endpoint="alice", outbound_id=0)))
        for body in ("one", "two", "three")]
    echoes = [a.echo.id for a in accepted if a is not None and a.echo is not None]
    rows = [a.row.id for a in accepted if a is not None]
    await store.mark_inbound(echoes[:2], "posting")
    await store.mark_inbound(echoes[:2], "posted", slack_ts="8.8", then_posting=echoes[2:],
                             channel="C0ALICE", echoes_done=rows[:1])
    first, second, _ = [await store.get_outbound(row_id) for row_id in rows]
    assert first is not None and second is not None
    assert (first.feedback_channel, first.feedback_ts, first.feedback_done) == \
        ("C0ALICE", "8.8", True)
    assert (second.feedback_ts, second.feedback_done) == (None, False)  # shown by reaction
    assert [(r.id, r.state) for r in await store.waiting_inbound()] == \
        [(echoes[2], "posting")]
    await store.close()


async def test_a_forgotten_event_counts_as_first_seen_again(backend: Backend) -> None:
    store = await backend.open()
    assert await store.first_sight_of_event("Ev1") is True
    assert await store.first_sight_of_event("Ev1") is False
    await store.forget_event("Ev1")
    await store.forget_event("never-seen")  # nothing to forget: no error
    assert await store.first_sight_of_event("Ev1") is True
    await store.close()


async def test_a_lease_has_one_holder_until_it_expires_or_is_released(
        backend: Backend) -> None:
    store = await backend.open()
    assert await store.claim_leases("A", ["channel:C1", "events:default"], 30) == {
        "channel:C1", "events:default"}
    assert await store.claim_leases("B", ["channel:C1", "outbox:default"], 30) == {
        "outbox:default"}
    assert await store.claim_leases("A", ["channel:C1"], 0.3) == {"channel:C1"}  # renewed
    assert await store.claim_leases("B", ["channel:C1"], 30) == set()
    await asyncio.sleep(0.5)  # A stopped renewing: expired, the next claimant takes it
    assert await store.claim_leases("B", ["channel:C1"], 30) == {"channel:C1"}
    assert await store.claim_leases("A", ["channel:C1"], 30) == set()
    await store.release_leases("B", ["channel:C1", "events:default"])  # not B's: kept
    assert await store.claim_leases("A", ["channel:C1", "events:default"], 30) == {
        "channel:C1", "events:default"}
    await store.close()


async def test_the_spool_mark_is_the_newest_asterisk_time_ever_stored(backend: Backend) -> None:
    store = await backend.open()
    assert await store.spool_mark() is None
    timed = [InboundText(event_id=f"m{n}", sender_uri="sip:alice@h", display_name="A",
                         body=f"t{n}", declared_bytes=2, to_uri="", exten="", asterisk_time=at)
             for n, at in enumerate((100.0, 300.0, 200.0))]
    [row, *_] = await store.add_inbound([NewInbound("C1", "alice", t, 1.0) for t in timed])
    assert row is not None
    assert await store.spool_mark() == 300.0
    # An older text later (from the spool), a text without a time, an echo: the mark stays.
    older = InboundText(event_id="m9", sender_uri="sip:alice@h", display_name="A", body="x",
                        declared_bytes=1, to_uri="", exten="", asterisk_time=50.0)
    await store.add_inbound([NewInbound("C1", "alice", older, 2.0),
                             NewInbound("C1", "alice", text("untimed"), 2.0)])
    assert await store.spool_mark() == 300.0
    await store.mark_inbound([r.id for r in await store.waiting_inbound()], "posted",
                             slack_ts="1.1")
    assert (await store.prune(time.time() + 60)).texts == 5
    await store.close()
    store = await backend.open()
    assert await store.spool_mark() == 300.0  # kept apart from the pruned rows, and reopened
    await store.close()


async def test_a_new_store_knows_when_it_was_created_an_upgraded_one_does_not(
        backend: Backend) -> None:
    store = await backend.open()
    created = store.created_at
    assert created is not None and abs(created - time.time()) < 60
    await store.close()
    store = await backend.open()
    assert store.created_at == created  # read back, not "now" again
    await store.close()


async def test_a_store_upgraded_from_schema_3_has_no_creation_time(backend: Backend) -> None:
    migrations = (sqlite_store._MIGRATIONS if isinstance(backend, SqliteBackend)
                  else pg_store._MIGRATIONS)
    backend.sql("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for script in migrations[:3]:
        for statement in sqlite_store._split_sql(script):
            backend.sql(statement)
    backend.sql("INSERT INTO schema_version VALUES (3)")
    store = await backend.open()
    # Its history is unknown: texts in Asterisk's spool are not taken for ones before it.
    assert store.created_at is None
    await store.close()
    assert backend.version() == SCHEMA_VERSION


async def test_the_location_names_the_store_never_the_password(backend: Backend) -> None:
    store = await backend.open()
    if isinstance(backend, PostgresBackend):
        assert store.location == (f"postgresql://bridge_admin@127.0.0.1:"
                                  f"{backend.cluster.port}/{backend.dbname}")
        assert backend.cluster.password not in store.location
    else:
        assert store.location == str(backend.path)
    assert store.problem is None
    await store.close()


async def test_every_call_means_the_same_on_both_backends(backend: Backend) -> None:
    store = await backend.open()
    # inbound: pending -> posting -> posted, moved, echoes kept apart from texts
    first, echo_row = await store.add_inbound([
        NewInbound("C1", "alice", text("a"), 10.0, conversation="alice"),
        NewInbound("C1", "alice", EchoText(body="sent", endpoint="alice", outbound_id=7,
                                           slack_user="U1", slack_user_name="Ann"), 11.0, conversation="alice")])
    assert first is not None and echo_row is not None
    await store.mark_inbound([first.id], "posting")
    await store.mark_inbound([first.id], "pending", error="Slack said no")
    await store.mark_inbound([first.id], "posting")
    await store.move_inbound([first.id], "C9")
    [row, echo] = await store.waiting_inbound()
    assert (row.state, row.attempts, row.channel, row.conversation) == ("posting", 2, "C9",
                                                                         "alice")
    assert echo.text == EchoText(body="sent", endpoint="alice", outbound_id=7,
                                 slack_user="U1", slack_user_name="Ann")
    await store.mark_inbound([row.id, echo.id], "posted", slack_ts="17.1")
    assert await store.waiting_inbound() == []

    # outbound: queued -> progress -> sent, the sender told, feedback recorded
    out = await store.add_outbound(slack_user="U1", slack_channel="C1", endpoint="alice",
                                   destination="pjsip:alice", body="hello", response_url="h",
                                   segments_total=2, source="reply", feedback_ts="5.5",
                                   thread_ts="4.4")
    assert (out.state, out.feedback_channel, out.source) == ("queued", "C1", "reply")
    assert await store.get_outbound(out.id) == out
    await store.add_audit(AuditEntry(at=1.0, slack_user="U1", slack_channel="C1",
                                     source="reply", recipient="alice", endpoint="alice",
                                     destination="pjsip:alice", result="accepted",
                                     reason=None, outbound_id=out.id, text=None))
    backlog = await store.backlog()
    assert (backlog.outbound_waiting, backlog.outbound_oldest) == (1, out.created_at)
    await store.outbound_progress(out.id, 1)
    assert [r.segments_sent for r in await store.unfinished_outbound()] == [1]
    await store.finish_outbound(out.id, "sent", segments_sent=2)
    await store.set_feedback_target(out.id, "C2", "6.6", done=True)
    await store.set_feedback_target(out.id, "C3", "7.7")  # done stays done
    done = await store.get_outbound(out.id)
    assert done is not None
    assert (done.state, done.segments_sent, done.feedback_channel, done.feedback_ts,
            done.feedback_done, done.notified) == ("sent", 2, "C3", "7.7", True, False)
    assert [r.id for r in await store.unfinished_outbound()] == [out.id]  # not told yet
    assert (await store.backlog()).outbound_unnotified == 1
    await store.outbound_notified(out.id)
    assert await store.unfinished_outbound() == []
    assert backend.sql("SELECT result FROM audit")[0][0] == "sent"
    failed = await store.add_outbound(slack_user="U1", slack_channel="C1", endpoint="bob",
                                      destination="pjsip:bob", body="x", response_url=None,
                                      segments_total=1)
    await store.finish_outbound(failed.id, "failed", "Asterisk refused")
    again = await store.get_outbound(failed.id)
    assert again is not None and (again.state, again.last_error) == ("failed",
                                                                      "Asterisk refused")
    await store.feedback_done(failed.id)
    assert (await store.get_outbound(failed.id)).feedback_done  # type: ignore[union-attr]
    assert await store.get_outbound(9999) is None

    # conversations and threads; Slack event dedupe
    assert await store.conversation("alice") is None
    await store.start_conversation(key="alice", channel="C1", thread_ts="1.1",
                                   endpoint="alice", now=100.0)
    await store.touch_conversation("alice", 50.0)  # never goes back in time
    await store.touch_conversation("alice", 150.0)
    found = await store.conversation("alice")
    assert found is not None and (found.thread_ts, found.last_activity) == ("1.1", 150.0)
    await store.start_conversation(key="alice", channel="C1", thread_ts="2.2",
                                   endpoint="alice", now=200.0)
    old, new = await store.thread_owner("C1", "1.1"), await store.thread_owner("C1", "2.2")
    assert old is not None and new is not None and old.conversation == new.conversation
    assert await store.thread_owner("C1", "3.3") is None
    assert await store.first_sight_of_event("Ev1") is True
    assert await store.first_sight_of_event("Ev1") is False
    await store.close()


async def test_texts_with_every_kind_of_character_come_back_exactly(backend: Backend) -> None:
    # A batch of texts goes into PostgreSQL as arrays: quotes, backslashes, braces, commas
    # and NULL-looking words are what an array's text form escapes (the texts' JSON is sent
    # binary), and emoji and newlines must survive the round trip too.
    bodies = ['say "hi"', "back\\slash \\\"", "{a,b}", "NULL", "", "line\nbreak 😀 ü",
              '{"json": ["in", "json"]}']
    store = await backend.open()
    texts = [InboundText(event_id=f"m{i}", sender_uri=f'sip:"q{i}"@h', display_name='A "B"',
                         body=body, declared_bytes=len(body.encode()), to_uri="", exten="")
             for i, body in enumerate(bodies)]
    rows = await store.add_inbound([NewInbound("C1", None, t, 1.0 + i)
                                    for i, t in enumerate(texts)])
    assert all(row is not None for row in rows)
    assert [row.text for row in await store.waiting_inbound()] == texts
    await store.close()


async def test_text_with_nul_characters_is_stored_not_refused(backend: Backend) -> None:
    # A refused /sip text is audited as typed; PostgreSQL's text cannot hold NUL, so the
    # store writes it as ␀ instead of failing the audit (and the refusal with it).
    store = await backend.open()
    await store.add_audit(AuditEntry(at=1.0, slack_user="U1", slack_channel="C1",
                                     source="slash", recipient="al\0ice", endpoint=None,
                                     destination=None, result="refused", reason="no such\0",
                                     outbound_id=None, text="a\0b"))
    stranger = InboundText(event_id="id\0x", sender_uri="sip:e\0ve@h", display_name="E\0",
                           body="b\0dy", declared_bytes=4, to_uri="", exten="")
    [row] = await store.add_inbound([NewInbound("C1", None, stranger, 1.0,
                                                conversation="uri:sip:e\0ve@h")])
    assert row is not None
    await store.start_conversation(key="uri:sip:e\0ve@h", channel="C1", thread_ts="1.1",
                                   endpoint=None, now=1.0)
    assert await store.conversation("uri:sip:e\0ve@h") is not None
    [waiting] = await store.waiting_inbound()
    assert waiting.text.body == "b\0dy"  # inside the text's JSON the NUL is kept exactly
    await store.close()
    [(recipient, audited)] = backend.sql("SELECT recipient, text FROM audit")
    assert audited in ("a\0b", "a\u2400b") and recipient in ("al\0ice", "al\u2400ice")


# -- PostgreSQL only: reaching the database ---------------------------------------------------

async def test_the_password_may_come_from_pgpassword_or_pgpass(
        postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dbname = postgres.database()
    bare = postgres.url(dbname, with_password=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(StoreError, match="password"):
        await PostgresStore.open(bare)
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    store = await PostgresStore.open(bare)
    await store.close()
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{postgres.port}:{dbname}:bridge_admin:{postgres.password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    store = await PostgresStore.open(bare)
    assert await store.first_sight_of_event("via-pgpass") is True
    await store.close()


async def test_a_wrong_password_or_no_server_is_a_clear_error_without_the_password(
        postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    wrong = postgres.url(postgres.database(), password="wrong-pw-1234")
    with pytest.raises(StoreError) as refused:
        await PostgresStore.open(wrong)
    message = str(refused.value)
    assert "password authentication failed" in message and "PGPASSWORD" in message
    assert "wrong-pw-1234" not in message
    nobody = f"postgresql://x:secret-pw-9876@127.0.0.1:{postgres.port + 1}/none"
    with pytest.raises(StoreError, match="cannot connect to the store at "
                                         r"postgresql://x@127\.0\.0\.1") as unreachable:
        await PostgresStore.open(nobody, timeout=2)
    assert "secret-pw-9876" not in str(unreachable.value)


async def test_a_user_with_row_rights_only_uses_a_current_store(
        postgres: PostgresCluster) -> None:
    # The usual production split: the tables' owner upgrades, the bridge's user only uses rows.
    dbname = postgres.database()
    await (await PostgresStore.open(postgres.url(dbname))).close()
    postgres.execute(dbname, ["CREATE ROLE rows_only LOGIN PASSWORD 'rows-only-pw'",
                              ("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN"
                               " SCHEMA public TO rows_only")])
    store = await PostgresStore.open(postgres.url(dbname, user="rows_only",
                                                  password="rows-only-pw"))
    [row] = await store.add_inbound([NewInbound("C1", "alice", text("hi"), 1.0)])
    assert row is not None and [r.id for r in await store.waiting_inbound()] == [row.id]
    await store.close()


async def test_replicas_starting_at_once_on_an_empty_database_all_open_one_schema(
        postgres: PostgresCluster) -> None:
    # The schema is created under an advisory lock: no "relation already exists", one
    # schema, and every replica opens the same store.
    url = postgres.url(postgres.database())
    stores = await asyncio.gather(*(PostgresStore.open(url) for _ in range(4)))
    assert await stores[0].first_sight_of_event("ev-1") is True
    assert [await s.first_sight_of_event("ev-1") for s in stores[1:]] == [False] * 3
    for store in stores:
        await store.close()
    assert postgres.execute(url.rsplit("/", 1)[1], "SELECT version FROM schema_version") == [
        (SCHEMA_VERSION,)]


async def test_one_expired_lease_claimed_by_many_replicas_at_once_goes_to_one(
        postgres: PostgresCluster) -> None:
    url = postgres.url(postgres.database())
    stores = await asyncio.gather(*(PostgresStore.open(url) for _ in range(5)))
    for attempt in range(5):
        name = f"channel:C{attempt}"
        got = await asyncio.gather(*(s.claim_leases(f"replica-{i}", [name], 30)
                                     for i, s in enumerate(stores)))
        assert sum(1 for g in got if g == {name}) == 1, got
    for store in stores:
        await store.close()


async def test_a_bridge_of_the_previous_version_still_running_stops_the_upgrade(
        postgres: PostgresCluster) -> None:
    # Bridges of schema 6 held a session advisory lock, one bridge per store, and know no
    # leases: upgrading under one would let it send texts beside the replicas.
    dbname = postgres.database()
    url = postgres.url(dbname)
    store = await PostgresStore.open(url)
    await store.add_inbound([NewInbound("C1", "alice", text("queued"), 1.0)])
    await store.close()
    postgres.execute(dbname, ["DROP TABLE leases", "DELETE FROM store_info",
                              "UPDATE schema_version SET version = 6",
                              "INSERT INTO store_info VALUES ('holder', 'pid 42 on host old')"])
    old = await psycopg.AsyncConnection.connect(url, autocommit=True)
    crc = zlib.crc32(b"public")
    await old.execute("SELECT pg_advisory_lock(%s, %s)",
                      (pg_store._STORE_LOCK_CLASS, crc - (1 << 32) if crc >= 1 << 31 else crc))
    try:
        with pytest.raises(StoreError, match=r"previous version .* still running .*\(pid 42 "
                                             r"on host old\).* Stop it"):
            await PostgresStore.open(url)
        assert postgres.execute(dbname, "SELECT version FROM schema_version") == [(6,)]
    finally:
        await old.close()
    store = await PostgresStore.open(url)  # the old bridge stopped: the upgrade goes on
    assert [r.text.body for r in await store.waiting_inbound()] == ["queued"]
    await store.close()
    assert postgres.execute(dbname, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_a_rolling_upgrade_keeps_older_replicas_running_unless_the_schema_forbids(
        postgres: PostgresCluster) -> None:
    dbname = postgres.database()
    url = postgres.url(dbname)
    running = await PostgresStore.open(url)
    # A newer bridge upgraded the store with a migration older replicas can live with.
    postgres.execute(dbname, f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}")
    joining = await PostgresStore.open(url)  # this version may still start, too
    assert await running.check() is False and running.problem is None
    await joining.add_inbound([NewInbound("C1", "alice", text("during the deploy"), 1.0)])
    # The next one's migration cannot be lived with: older replicas step aside.
    postgres.execute(dbname, f"UPDATE store_info SET value = '{SCHEMA_VERSION + 1}'"
                             " WHERE key = 'oldest_reader'")
    await running.check()  # what watch() runs every interval
    assert running.problem is not None and "upgrade it" in running.problem
    with pytest.raises(StoreUnavailable, match="newer bridge"):
        await running.claim_leases("old-replica", ["channel:C1"], 3)
    with pytest.raises(StoreError, match="newer version of the bridge"):
        await PostgresStore.open(url)
    await running.close()
    await joining.close()


async def test_connections_the_server_dropped_are_replaced_before_a_call_fails(
        postgres: PostgresCluster) -> None:
    dbname = postgres.database()
    store = await PostgresStore.open(postgres.url(dbname))
    await store.add_inbound([NewInbound("C1", "alice", text("before"), 1.0)])
    # What a database restart does to the pool's idle connections.
    postgres.execute("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                 f" WHERE datname = '{dbname}'")
    await asyncio.sleep(0.2)
    await store.add_inbound([NewInbound("C1", "alice", text("after"), 2.0)])
    assert [r.text.body for r in await store.waiting_inbound()] == ["before", "after"]
    await store.close()


async def test_an_unreachable_database_is_a_store_error_not_a_driver_error(
        postgres: PostgresCluster) -> None:
    dbname = postgres.database()
    store = await PostgresStore.open(postgres.url(dbname), timeout=1)
    # The database refuses new connections, and the pool's one is dropped.
    postgres.execute("postgres", f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS false")
    postgres.execute("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                 f" WHERE datname = '{dbname}'")
    with pytest.raises(StoreError, match="the store at postgresql://.* failed") as failed:
        await store.add_inbound([NewInbound("C1", "alice", text("during"), 2.0)])
    assert not isinstance(failed.value, psycopg.Error)
    postgres.execute("postgres", f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS true")
    # The pool reconnects with a backoff; a caller retries meanwhile (as the bridge does).
    deadline = time.monotonic() + 15
    while True:
        try:
            await store.add_inbound([NewInbound("C1", "alice", text("after"), 3.0)])
            break
        except StoreError:
            assert time.monotonic() < deadline, "the store did not come back"
            await asyncio.sleep(0.2)
    assert [r.text.body for r in await store.waiting_inbound()] == ["after"]
    await store.close()


async def test_an_empty_file_becomes_a_new_store_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "store.sqlite3"
    path.write_bytes(b"")  # e.g. truncated by someone while the bridge was down
    caplog.set_level("INFO", logger="bridge.store.sqlite")
    store = await Store.open(path)
    assert store.created_now  # so the spool from before it is not reposted unasked
    await store.close()
    [line] = [r for r in caplog.records if r.name == "bridge.store.sqlite"
              and "existed but was empty" in r.getMessage()]
    assert line.levelname == "WARNING" and "existed but was empty (0 bytes)" in line.getMessage()


async def test_the_store_and_its_wal_and_shm_are_private_to_their_owner(tmp_path: Path) -> None:
    # It holds texts and response_urls: nobody but the bridge's user may read it.
    old_umask = os.umask(0o022)  # the usual one, under which files are made 0644
    try:
        path = tmp_path / "store.sqlite3"
        store = await Store.open(path)
        await store.add_inbound([NewInbound("C1", "alice", text("private"), time.time())])
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        assert all(f.exists() for f in files)  # WAL mode, still open
        assert {f.name: f.stat().st_mode & 0o777 for f in files} == {
            f.name: 0o600 for f in files}
        await store.close()
        # A store an older bridge left readable by everyone is narrowed when opened.
        path.chmod(0o644)
        store = await Store.open(path)
        await store.close()
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old_umask)


# -- PostgreSQL only: health and the store's lock while the bridge runs -----------------------

async def test_a_database_refusing_writes_is_a_problem_until_it_takes_them_again(
        postgres: PostgresCluster) -> None:
    # What a failover to a read-only standby looks like from the bridge's connections.
    dbname = postgres.database()
    store = await PostgresStore.open(postgres.url(dbname), timeout=2)
    watching = asyncio.ensure_future(store.watch(interval=0.1))
    try:
        postgres.execute("postgres", [
            f"ALTER DATABASE {dbname} SET default_transaction_read_only = on",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'"])
        with pytest.raises(StoreUnavailable, match="cannot take writes.*read-only"):
            await store.add_inbound([NewInbound("C1", "alice", text("during"), 1.0)])
        assert store.problem is not None and "cannot take writes" in store.problem
        assert await store.waiting_inbound() == []  # reads still work; still a problem
        assert store.problem is not None
        postgres.execute("postgres", [
            f"ALTER DATABASE {dbname} SET default_transaction_read_only = off",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'"])
        await wait_for(lambda: store.problem is None)  # the watch's test write worked
        await store.add_inbound([NewInbound("C1", "alice", text("after"), 2.0)])
        assert [r.text.body for r in await store.waiting_inbound()] == ["after"]
    finally:
        watching.cancel()
        await store.close()


async def test_a_write_whose_connection_the_server_ends_is_done_once_on_a_new_one(
        postgres: PostgresCluster) -> None:
    # A failover, a restart or an administrator ends the bridge's session in the middle of
    # a write: the server says so (57P01) and commits nothing of it, so the write is done
    # again on a fresh connection instead of failing the text (a /sip sender would read
    # "cannot store", a phone's text would wait for the next spool read).
    dbname = postgres.database()
    store = await PostgresStore.open(postgres.url(dbname), timeout=5)
    locker = await psycopg.AsyncConnection.connect(postgres.url(dbname))
    try:
        await locker.execute("LOCK TABLE inbound IN ACCESS EXCLUSIVE MODE")  # holds the write
        writing = asyncio.ensure_future(
            store.add_inbound([NewInbound("C1", "alice", text("in the middle"), 1.0)]))
        deadline = time.monotonic() + 10
        waiting: list[tuple[Any, ...]] = []
        while not waiting:  # the store's session, waiting for the table in its write
            assert time.monotonic() < deadline and not writing.done()
            await asyncio.sleep(0.05)
            waiting = postgres.execute("postgres", "SELECT pid FROM pg_stat_activity WHERE "
                                       "datname = %s AND wait_event_type = 'Lock'", [dbname])
        postgres.execute("postgres", "SELECT pg_terminate_backend(%s)", [waiting[0][0]])
        await asyncio.sleep(0.3)
        assert not writing.done()  # done again on a new session, which waits for the table
        await locker.rollback()
        await asyncio.wait_for(writing, 10)
        assert [r.text.body for r in await store.waiting_inbound()] == ["in the middle"]
        assert store.problem is None
    finally:
        await locker.close()
        await store.close()


async def test_a_database_turned_read_only_is_noticed_before_a_text_needs_it(
        postgres: PostgresCluster) -> None:
    store = await PostgresStore.open(postgres.url(postgres.database()), timeout=2)
    watching = asyncio.ensure_future(store.watch(interval=0.1))
    try:
        # Every session read-only from now on, the ones already open included (a reload;
        # no connection is lost, so only a look at the database can tell).
        postgres.execute("postgres", ["ALTER SYSTEM SET default_transaction_read_only = on",
                                      "SELECT pg_reload_conf()"])
        await wait_for(lambda: store.problem is not None and "cannot take writes"
                       in store.problem)  # no call was made: the watch found it
        with pytest.raises(StoreUnavailable):
            await store.add_inbound([NewInbound("C1", "alice", text("during"), 1.0)])
    finally:
        postgres.execute("postgres", ["ALTER SYSTEM RESET default_transaction_read_only",
                                      "SELECT pg_reload_conf()"])
    try:
        await wait_for(lambda: store.problem is None)
        await store.add_inbound([NewInbound("C1", "alice", text("after"), 2.0)])
    finally:
        watching.cancel()
        await store.close()


async def test_an_unreachable_database_is_a_problem_until_it_is_back(
        postgres: PostgresCluster) -> None:
    dbname = postgres.database()
    url = postgres.url(dbname)
    store = await PostgresStore.open(url, timeout=1)
    watching = asyncio.ensure_future(store.watch(interval=0.1))
    try:
        postgres.execute("postgres", [
            f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS false",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'"])
        await wait_for(lambda: store.problem is not None and "cannot be reached"
                       in store.problem)
        with pytest.raises(StoreUnavailable):
            await store.add_inbound([NewInbound("C1", "alice", text("during"), 1.0)])
        with pytest.raises(StoreUnavailable):  # no lease renewed: the replica posts nothing
            await store.claim_leases("r1", ["channel:C1"], 3)
        postgres.execute("postgres", f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS true")
        await wait_for(lambda: store.problem is None)
        await store.add_inbound([NewInbound("C1", "alice", text("after"), 2.0)])
        assert [r.text.body for r in await store.waiting_inbound()] == ["after"]
    finally:
        watching.cancel()
        await store.close()


async def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.05)


async def test_each_pbx_has_its_own_spool_mark_and_a_schema_5_mark_is_the_default_pbxs(
        tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    # A store of schema 5 (one PBX): its spool mark and a queued text to a phone.
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        Store._migrate(db, 0, 5, created_at=1.0)
        db.execute("INSERT INTO spool_mark (id, asterisk_time) VALUES (1, 500.0)")
        db.execute("INSERT INTO outbound (slack_user, slack_channel, endpoint, destination,"
                   " body, created_at, segments_total) VALUES ('U1', 'C1', 'alice',"
                   " 'pjsip:alice', 'queued before', 2.0, 1)")
    store = await Store.open(path)
    try:
        assert await store.spool_mark() == 500.0  # the PBX "default"
        assert await store.spool_mark("branch") is None
        [queued] = await store.unfinished_outbound()
        assert queued.body == "queued before" and queued.pbx == "default"

        hq_text = InboundText(event_id="hq/x", sender_uri="sip:a@h", display_name="",
                              body="hq", declared_bytes=2, to_uri="", exten="",
                              asterisk_time=900.0, pbx="hq")
        branch_text = InboundText(event_id="branch/x", sender_uri="sip:a@h", display_name="",
                                  body="branch", declared_bytes=6, to_uri="", exten="",
                                  asterisk_time=700.0, pbx="branch")
        rows = await store.add_inbound([NewInbound("C1", None, hq_text, 1.0),
                                        NewInbound("C1", None, branch_text, 1.0)])
        assert None not in rows  # same MessageId, different PBXs: two texts
        assert (await store.spool_mark("hq"), await store.spool_mark("branch")) == (900.0,
                                                                                    700.0)
        assert await store.spool_mark() == 500.0
        row = await store.add_outbound(slack_user="U1", slack_channel="C1", endpoint="carol",
                                       destination="pjsip:carol", body="b", response_url=None,
                                       segments_total=1, pbx="branch")
        assert (await store.get_outbound(row.id)).pbx == "branch"  # type: ignore[union-attr]
        waiting = await store.waiting_inbound()
        assert [t.text.pbx for t in waiting] == ["hq", "branch"]  # type: ignore[union-attr]
    finally:
        await store.close()
