"""`bridge check` and the store: it connects to the configured database, reports its schema
version and the rights the bridge lacks, each with a fix, and never prints the password.
(Asterisk is left unreachable here: the AMI items fail quickly, the store items are the test.)"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asterisk.harness import free_port
from fake_slack import FakeSlack
from postgres_cluster import PostgresCluster
from test_check import (
    APP_TOKEN,
    BOT_TOKEN,
    MAX_SECONDS,
    SIGNING_SECRET,
    CheckRun,
    config_for,
    env_for,
    run_check,
)

from bridge.core.errors import StoreError
from bridge.store import postgres as pg_store
from bridge.store.postgres import PostgresStore
from bridge.store.sqlite import SCHEMA_VERSION, Store


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(bot_token=BOT_TOKEN, app_token=APP_TOKEN, signing_secret=SIGNING_SECRET)
    await fake.start()
    yield fake
    await fake.stop()


async def check_with(tmp_path: Path, slack: FakeSlack, url: str | None = None) -> CheckRun:
    env = env_for(slack)
    if url is not None:
        env["BRIDGE_STORE_URL"] = url
    env["PGPASSFILE"] = str(tmp_path / "no-pgpass")  # only what the URL says
    return await run_check(config_for(tmp_path, free_port()), env)


async def test_a_new_then_current_postgresql_store(tmp_path: Path, slack: FakeSlack,
                                                   postgres: PostgresCluster) -> None:
    dbname = postgres.database()
    url = postgres.url(dbname)
    where = f"postgresql://bridge_admin@127.0.0.1:{postgres.port}/{dbname}"
    result = await check_with(tmp_path, slack, url)
    assert result.line("✓ store: connected to PostgreSQL 1")
    assert f"at {where} as 'bridge_admin'" in result.out
    assert result.line(f"✓ store: no tables yet: `bridge run` creates them (schema "
                       f"{SCHEMA_VERSION})")
    assert postgres.execute(dbname, "SELECT to_regclass('inbound')") == [(None,)]  # untouched
    store = await PostgresStore.open(url)
    await store.close()
    result = await check_with(tmp_path, slack, url)
    assert result.line(f"✓ store: schema {SCHEMA_VERSION} (current)")
    assert result.line("✓ store: 'bridge_admin' may read and write every store table")
    assert postgres.password not in result.out + result.err


async def test_a_user_without_the_rights_is_told_which_to_grant(
        tmp_path: Path, slack: FakeSlack, postgres: PostgresCluster) -> None:
    dbname = postgres.database()
    store = await PostgresStore.open(postgres.url(dbname))
    await store.close()
    postgres.execute(dbname, [
        "CREATE ROLE reader LOGIN PASSWORD 'reader-pw-5150'",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader",
        ("GRANT INSERT, UPDATE, DELETE ON inbound, outbound, conversations, threads,"
         " slack_events, schema_version, store_info, pbx_spool_mark, leases TO reader")])
    result = await check_with(tmp_path, slack, postgres.url(dbname, user="reader",
                                                            password="reader-pw-5150"))
    assert result.code == 1
    assert result.line(f"✓ store: schema {SCHEMA_VERSION} (current)")
    block = result.line("✗ store: 'reader' lacks INSERT on audit, UPDATE on audit, DELETE on "
                        "audit")
    assert "fix: as the tables' owner: GRANT SELECT, INSERT, UPDATE, DELETE ON audit TO " \
           "reader" in block
    # Not the tables' owner (nor CREATE in schema public, PostgreSQL 15's default): fine
    # until an upgrade.
    assert "next bridge version" in result.line("! store: 'reader' may not upgrade the store's "
                                                "tables")
    assert "reader-pw-5150" not in result.out + result.err


async def test_an_older_store_the_user_does_not_own_cannot_be_upgraded(
        tmp_path: Path, slack: FakeSlack, postgres: PostgresCluster) -> None:
    dbname = postgres.database()
    # A store at schema 2, created by the admin; the bridge's user may use every row.
    postgres.execute(dbname, [
        "CREATE TABLE schema_version (version INTEGER NOT NULL)", *pg_store._MIGRATIONS[:2],
        "INSERT INTO schema_version VALUES (2)",
        "CREATE ROLE tenant LOGIN PASSWORD 'tenant-pw-6160'",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO tenant"])
    url = postgres.url(dbname, user="tenant", password="tenant-pw-6160")
    result = await check_with(tmp_path, slack, url)
    assert result.code == 1
    assert result.line(f"✓ store: schema 2: `bridge run` upgrades it in place to "
                       f"{SCHEMA_VERSION}")
    block = result.line(f"✗ store: 'tenant' may not upgrade the store's tables to schema "
                        f"{SCHEMA_VERSION}")
    assert "CREATE SCHEMA bridge AUTHORIZATION tenant" in block
    before = postgres.fingerprint(dbname)
    with pytest.raises(StoreError, match="may not create or change the store's tables"):
        await PostgresStore.open(url)
    assert postgres.fingerprint(dbname) == before  # the failed upgrade was rolled back


async def test_a_store_of_a_newer_bridge_is_reported_not_touched(
        tmp_path: Path, slack: FakeSlack, postgres: PostgresCluster) -> None:
    dbname = postgres.database()
    store = await PostgresStore.open(postgres.url(dbname))
    await store.close()
    postgres.execute(dbname, f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION + 1})")
    before = postgres.fingerprint(dbname)
    result = await check_with(tmp_path, slack, postgres.url(dbname))
    assert result.code == 1
    assert "upgrade this bridge" in result.line(
        f"✗ store: written by a newer bridge (schema {SCHEMA_VERSION + 1}; this bridge knows "
        f"up to {SCHEMA_VERSION})")
    assert postgres.fingerprint(dbname) == before


async def test_a_wrong_password_is_a_failure_with_a_fix_and_no_password(
        tmp_path: Path, slack: FakeSlack, postgres: PostgresCluster) -> None:
    url = postgres.url(postgres.database(), password="not-the-pw-4242")
    result = await check_with(tmp_path, slack, url)
    assert result.code == 1
    block = result.line("✗ store: cannot use the database at postgresql://bridge_admin@")
    assert "password authentication failed" in block and "PGPASSWORD" in block
    assert "not-the-pw-4242" not in result.out + result.err


async def test_the_sqlite_file_is_reported_without_creating_it(tmp_path: Path,
                                                               slack: FakeSlack) -> None:
    result = await check_with(tmp_path, slack)
    store_file = tmp_path / "bridge-store.sqlite3"
    assert "`bridge run` creates it" in result.line("✓ store: SQLite file")
    assert not store_file.exists()
    store = await Store.open(store_file)
    await store.close()
    result = await check_with(tmp_path, slack)
    assert result.line(f"✓ store: schema {SCHEMA_VERSION} (current)")
    with sqlite3.connect(store_file) as db:
        db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    result = await check_with(tmp_path, slack)
    assert result.code == 1
    assert result.line(f"✗ store: written by a newer bridge (schema {SCHEMA_VERSION + 1}")


async def test_a_database_port_that_never_answers_fails_in_time(tmp_path: Path,
                                                                slack: FakeSlack) -> None:
    with socket.socket() as listener:  # accepts connections, never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        result = await check_with(tmp_path, slack,
                                  f"postgresql://bridge:pw-never-shown@127.0.0.1:{port}/bridge")
    assert result.code == 1
    assert result.line(f"✗ store: cannot use the database at postgresql://bridge@127.0.0.1:"
                       f"{port}/bridge")
    assert result.seconds < MAX_SECONDS
    assert "pw-never-shown" not in result.out + result.err
