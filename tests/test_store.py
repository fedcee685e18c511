"""The store file: created and upgraded in place, never recreated; a newer file is refused
untouched; an unusable file gets a clear error."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from bridge.store import SCHEMA_VERSION, NewInbound, Store, StoreError
from bridge.texts import InboundText


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
    assert await store.prune(time.time() - 60) == 0  # posted just now: kept
    assert await store.prune(time.time() + 60) == 1
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
