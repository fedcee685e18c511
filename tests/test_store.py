"""The store file: created and upgraded in place, never recreated; a newer file is refused
untouched; an unusable file gets a clear error."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import pytest

from bridge.core.errors import StoreError, StoreInUse
from bridge.core.model import AuditEntry, NewInbound
from bridge.core.texts import InboundText
from bridge.store.sqlite import _MIGRATIONS, SCHEMA_VERSION, Store


def text(body: str) -> InboundText:
    return InboundText(event_id=f"id-{body}", sender_uri="sip:alice@h", display_name="A",
                       body=body, declared_bytes=len(body), to_uri="", exten="")


def version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])


async def test_new_store_is_created_in_wal_mode_at_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "store.sqlite3"
    store = await Store.open(path)
    rows = await store.add_inbound([NewInbound("C1", "alice", text("hi"), time.time())])
    assert rows[0] is not None
    await store.close()
    assert version(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_texts_survive_reopening_and_duplicates_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = await Store.open(path)
    await store.add_inbound([NewInbound("C1", "alice", text("one"), 1.0),
                             NewInbound("C1", "alice", text("two"), 2.0)])
    await store.close()
    store = await Store.open(path)
    again = await store.add_inbound([NewInbound("C1", "alice", text("one"), 3.0)])
    assert again == [None]
    waiting = await store.waiting_inbound()
    assert [row.text.body for row in waiting] == ["one", "two"]
    assert waiting[0].text == text("one")
    await store.close()


async def test_an_older_store_is_upgraded_in_place_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    # A file from before the store had tables (schema 0), holding someone else's table too:
    # upgrading must keep what is there, not recreate the file.
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("CREATE TABLE keep_me (x TEXT)")
        db.execute("INSERT INTO keep_me VALUES ('still here')")
    store = await Store.open(path)
    await store.close()
    assert version(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT x FROM keep_me").fetchone()[0] == "still here"


async def test_a_newer_store_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = await Store.open(path)
    await store.add_inbound([NewInbound("C1", "alice", text("from the future"), 1.0)])
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreError, match="newer version of the bridge"):
        await Store.open(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


async def test_a_file_that_is_not_a_database_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    path.write_text("this is a text file, not a database" * 100)
    with pytest.raises(StoreError, match="cannot be used as the bridge's store"):
        await Store.open(path)


async def test_prune_forgets_only_old_delivered_texts(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "store.sqlite3")
    rows = await store.add_inbound([NewInbound("C1", "alice", text(b), 1.0)
                                    for b in ("posted", "waiting")])
    assert rows[0] is not None
    await store.mark_inbound([rows[0].id], "posted", slack_ts="1.2")
    assert (await store.prune(time.time() - 60)).texts == 0  # posted just now: kept
    assert (await store.prune(time.time() + 60)).texts == 1
    assert [r.text.body for r in await store.waiting_inbound()] == ["waiting"]
    await store.close()


async def test_concurrent_writes_share_commits_and_one_failure_undoes_only_itself(
        tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "store.sqlite3"
    store = await Store.open(path)

    def broken(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO inbound (channel, text_json, received_at)"
                   " VALUES ('C1', '{}', 1)")
        raise RuntimeError("this operation fails after writing")

    writes = [store.add_inbound([NewInbound("C1", "alice", text(f"t{i}"), float(i))])
              for i in range(200)]
    results = await asyncio.gather(*writes[:100], store._run(store._transaction, broken),
                                   *writes[100:],
                                   return_exceptions=True)
    assert isinstance(results[100], RuntimeError)
    assert all(isinstance(r, list) and r[0] is not None for i, r in enumerate(results)
               if i != 100)
    await store.close()
    with sqlite3.connect(path) as db:
        bodies = [json.loads(r[0])["body"] for r in db.execute(
            "SELECT text_json FROM inbound ORDER BY id")]
    assert bodies == [f"t{i}" for i in range(200)]  # the broken job's row is gone


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
    assert version(path) == SCHEMA_VERSION


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


async def test_prune_forgets_old_threads_conversations_events_and_audit(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "store.sqlite3")
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
