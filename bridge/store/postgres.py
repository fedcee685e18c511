"""The shared store: every text the bridge is responsible for, in PostgreSQL, until delivered.

The same `StoreBackend` as the embedded SQLite store (`bridge/store/sqlite.py`), with the same
values, states and semantics: one transaction per call, a text from a phone stored once per
message_id (duplicates come back as None), rows mapped by column name (`dict_row`). It is the
backend for an installation whose database is already PostgreSQL, and the base that several
bridge replicas will share.

Driver: psycopg 3 with psycopg_pool. It runs on libpq itself, so the URL, `PGPASSWORD`,
`~/.pgpass`, `PGSSLMODE`, service files and every other libpq setting behave exactly as in
`psql` (asyncpg re-implements the protocol and its own subset of those rules), it is the
maintained successor of psycopg2 that PostgreSQL admins already know, its `psycopg[binary]`
wheel ships libpq so nothing is needed from the system, and its pool replaces a connection
that broke (a database restart) without the bridge doing anything.

The schema is versioned (`schema_version`) in step with the SQLite store (version N means the
same tables on both) and upgraded in place by `_MIGRATIONS`, one transaction per step under an
advisory lock so two bridges starting at once do not both migrate; a database written by a newer
bridge is refused and left untouched (the check runs inside a transaction that is rolled back).

PostgreSQL's text cannot hold NUL characters where SQLite's can: every string parameter goes
through `_text`, which writes a NUL as U+2400 (␀) instead of failing the whole transaction.
psycopg errors become `StoreError` here; the rest of the bridge never sees psycopg.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from bridge.core.errors import StoreError
from bridge.core.model import (
    AuditEntry,
    Backlog,
    Conversation,
    InboundRow,
    InboundState,
    NewInbound,
    OutboundRow,
    OutboundState,
    Source,
    ThreadOwner,
)
from bridge.core.texts import EchoText, InboundText
from bridge.store.backend import StoreBackend

log = logging.getLogger(__name__)

T = TypeVar("T")
Connection = psycopg.AsyncConnection[DictRow]

SCHEMA_VERSION = 3

# Seconds to wait for the database when opening, and for a free connection on each call.
CONNECT_TIMEOUT = 10.0
# Connections one bridge keeps; its calls are short, so a few are plenty.
POOL_MAX = 4
# pg_advisory_xact_lock key held while the schema is checked and upgraded ("slkbrdg1").
_MIGRATION_LOCK = 0x736C6B6272646731

# Each entry upgrades the schema from version N to N+1 (index N), the same steps as SQLite's
# `_MIGRATIONS` in PostgreSQL's types. Never edit a shipped entry: add a new one, and bump
# SCHEMA_VERSION (keep it equal to the SQLite store's).
_MIGRATIONS: list[str] = [
    # 0 -> 1
    """
    CREATE TABLE inbound (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_id TEXT UNIQUE,            -- SIP Call-ID + CSeq; NULL when unknown
        channel TEXT NOT NULL,
        endpoint TEXT,                     -- directory name, NULL for unknown senders
        text_json TEXT NOT NULL,           -- the InboundText, as JSON
        received_at DOUBLE PRECISION NOT NULL,   -- unix time
        state TEXT NOT NULL DEFAULT 'pending',   -- pending | posting | posted
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        posted_at DOUBLE PRECISION,
        slack_ts TEXT
    );
    CREATE INDEX inbound_waiting ON inbound (state, channel, id);
    CREATE TABLE outbound (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        slack_user TEXT NOT NULL,
        slack_channel TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        destination TEXT NOT NULL,
        body TEXT NOT NULL,
        response_url TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',    -- queued | sent | failed
        segments_sent INTEGER NOT NULL DEFAULT 0,
        segments_total INTEGER NOT NULL,
        last_error TEXT,
        finished_at DOUBLE PRECISION,
        notified BOOLEAN NOT NULL DEFAULT FALSE  -- the sender was told the outcome
    );
    CREATE INDEX outbound_waiting ON outbound (state, id);
    """,
    # 1 -> 2: conversations, echoes of /sip texts, delivery feedback, Slack event dedupe.
    """
    ALTER TABLE inbound ADD COLUMN kind TEXT NOT NULL DEFAULT 'in';     -- in | echo
    ALTER TABLE inbound ADD COLUMN conversation TEXT;
    ALTER TABLE inbound ADD COLUMN outbound_id BIGINT;
    ALTER TABLE outbound ADD COLUMN source TEXT NOT NULL DEFAULT 'slash';  -- slash | reply
    ALTER TABLE outbound ADD COLUMN feedback_channel TEXT;
    ALTER TABLE outbound ADD COLUMN feedback_ts TEXT;     -- the Slack message showing the state
    ALTER TABLE outbound ADD COLUMN thread_ts TEXT;       -- where a failure reason is posted
    ALTER TABLE outbound ADD COLUMN feedback_done BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE TABLE conversations (
        key TEXT PRIMARY KEY,               -- endpoint name, or "uri:<sender>" for strangers
        channel TEXT NOT NULL,
        thread_ts TEXT NOT NULL,
        last_activity DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE threads (
        channel TEXT NOT NULL,
        thread_ts TEXT NOT NULL,
        conversation TEXT NOT NULL,
        endpoint TEXT,
        started DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (channel, thread_ts)
    );
    CREATE TABLE slack_events (
        event_id TEXT PRIMARY KEY,
        received_at DOUBLE PRECISION NOT NULL
    );
    """,
    # 2 -> 3: the audit trail of every send and refusal.
    """
    CREATE TABLE audit (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        slack_user TEXT NOT NULL,
        slack_channel TEXT NOT NULL,
        source TEXT NOT NULL,              -- slash | reply
        recipient TEXT NOT NULL,           -- as typed, or the thread's phone
        endpoint TEXT,
        destination TEXT,
        result TEXT NOT NULL,              -- refused | accepted | sent | failed
        reason TEXT,
        outbound_id BIGINT,
        text TEXT                          -- only with [audit] store_text = true
    );
    CREATE INDEX audit_outbound ON audit (outbound_id);
    CREATE INDEX audit_at ON audit (at);
    """,
]

# The tables the bridge uses, and the rights it needs on each (schema_version is written only
# by an upgrade, which needs the tables' owner anyway).
_ROW_RIGHTS = ("SELECT", "INSERT", "UPDATE", "DELETE")
TABLE_RIGHTS: dict[str, tuple[str, ...]] = {
    **{table: _ROW_RIGHTS for table in ("inbound", "outbound", "conversations", "threads",
                                        "slack_events", "audit")},
    "schema_version": ("SELECT",),
}


def describe(url: str) -> str:
    """Where a URL points, for logs and messages: never its password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "a PostgreSQL database (the URL cannot be read)"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    where = f"postgresql://{params['user']}@" if params.get("user") else "postgresql://"
    return f"{where}{host}:{port}/{params.get('dbname') or ''}"


def _text(value: T) -> T:
    """A parameter as PostgreSQL can store it: a NUL in a string becomes U+2400 (␀)."""
    if isinstance(value, str) and "\0" in value:
        return value.replace("\0", "\u2400")  # type: ignore[return-value]
    return value


def _params(*values: Any) -> tuple[Any, ...]:
    return tuple(_text(v) for v in values)


class PostgresStore:
    """The store in a PostgreSQL database, through a small pool of connections."""

    def __init__(self, url: str, pool: AsyncConnectionPool[Connection]) -> None:
        self._where = describe(url)
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, timeout: float = CONNECT_TIMEOUT) -> PostgresStore:
        """Connect, create or upgrade the schema, and return the store; StoreError if the
        database cannot be used (unreachable, refused, newer schema, missing rights)."""
        where = describe(url)
        # One connection of our own first: its error is libpq's, word for word (the pool
        # would only say it timed out), and it upgrades the schema before any call is made.
        try:
            conn = await psycopg.AsyncConnection.connect(
                url, autocommit=True, row_factory=dict_row, connect_timeout=max(1, int(timeout)))
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the store at {where}: {_reason(exc)}. Check [store] url "
                "(or BRIDGE_STORE_URL), the password (in the URL, PGPASSWORD or ~/.pgpass) and "
                "that the server accepts this host (pg_hba.conf)") from exc
        try:
            await _migrate(conn, where)
        finally:
            await conn.close()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url, connection_class=psycopg.AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row}, min_size=1,
            max_size=POOL_MAX, open=False, timeout=timeout, name="store",
            # An empty query on each checkout (one round trip): a connection the server
            # dropped (a restart, a failover, an idle timeout) is replaced before a call
            # fails on it.
            check=AsyncConnectionPool.check_connection)
        try:
            await pool.open(wait=True, timeout=timeout)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreError(f"cannot connect to the store at {where}: {_reason(exc)}") from exc
        return cls(url, pool)

    async def close(self) -> None:
        await self._pool.close()

    async def _transaction(self, fn: Callable[[Connection], Awaitable[T]], *,
                           single: bool = False) -> T:
        """Run `fn` in one transaction on a pooled connection; psycopg errors -> StoreError.

        `single`: `fn` runs one statement, which in autocommit mode is a transaction of its
        own, so BEGIN and COMMIT (two round trips) are left out."""
        try:
            async with self._pool.connection() as conn:
                if single:
                    return await fn(conn)
                async with conn.transaction():
                    return await fn(conn)
        except psycopg.Error as exc:
            raise StoreError(f"the store at {self._where} failed: {_reason(exc)}") from exc

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement; how many rows it changed."""
        async def run(conn: Connection) -> int:
            cursor = await conn.execute(sql, _params(*params))
            return cursor.rowcount
        return await self._transaction(run, single=True)

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[DictRow]:
        """One statement; the rows it returned."""
        async def run(conn: Connection) -> list[DictRow]:
            cursor = await conn.execute(sql, _params(*params))
            return await cursor.fetchall()
        return await self._transaction(run, single=True)

    async def _fetch_one(self, sql: str, params: Sequence[Any] = ()) -> DictRow | None:
        rows = await self._fetch(sql, params)
        return rows[0] if rows else None

    # -- inbound ---------------------------------------------------------------------------

    async def add_inbound(self, items: list[NewInbound]) -> list[InboundRow | None]:
        """Store texts in one transaction; None in place of a duplicate (same message_id)."""
        if not items:
            return []

        async def insert(conn: Connection) -> list[InboundRow | None]:
            rows: list[InboundRow | None] = []
            async with conn.cursor() as cursor:
                # One round trip for the whole batch (pipeline), one result per text.
                await cursor.executemany(
                    "INSERT INTO inbound (message_id, channel, endpoint, text_json,"
                    " received_at, kind, conversation, outbound_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (message_id) DO NOTHING RETURNING id",
                    [_params(None if isinstance(item.text, EchoText)
                             else item.text.event_id or None,
                             item.channel, item.endpoint, json.dumps(asdict(item.text)),
                             item.received_at,
                             "echo" if isinstance(item.text, EchoText) else "in",
                             item.conversation,
                             item.text.outbound_id if isinstance(item.text, EchoText) else None)
                     for item in items], returning=True)
                for index, item in enumerate(items):
                    if index:
                        cursor.nextset()
                    found = await cursor.fetchone()
                    if found is None:  # ON CONFLICT DO NOTHING: a duplicate
                        rows.append(None)
                        continue
                    rows.append(InboundRow(id=found["id"], channel=item.channel,
                                           endpoint=item.endpoint, text=item.text,
                                           received_at=item.received_at, state="pending",
                                           attempts=0, conversation=item.conversation))
            return rows
        return await self._transaction(insert)

    async def waiting_inbound(self) -> list[InboundRow]:
        """Every inbound text not yet known to be posted, oldest first."""
        rows = await self._fetch(
            "SELECT id, channel, endpoint, text_json, received_at, state, attempts, kind,"
            " conversation FROM inbound WHERE state != 'posted' ORDER BY id")
        return [_inbound_row(r) for r in rows]

    async def mark_inbound(self, ids: Iterable[int], state: InboundState, *,
                           error: str | None = None, slack_ts: str | None = None) -> None:
        ids = list(ids)
        if state == "posted":
            await self._execute("UPDATE inbound SET state='posted', posted_at=%s, slack_ts=%s,"
                                " last_error=NULL WHERE id = ANY(%s)",
                                (time.time(), slack_ts, ids))
        elif state == "posting":
            await self._execute("UPDATE inbound SET state='posting', attempts=attempts+1"
                                " WHERE id = ANY(%s)", (ids,))
        else:
            await self._execute("UPDATE inbound SET state=%s, last_error=%s WHERE id = ANY(%s)",
                                (state, error, ids))

    async def move_inbound(self, ids: Iterable[int], channel: str) -> None:
        await self._execute("UPDATE inbound SET channel=%s WHERE id = ANY(%s)",
                            (channel, list(ids)))

    # -- outbound --------------------------------------------------------------------------

    async def add_outbound(self, *, slack_user: str, slack_channel: str, endpoint: str,
                           destination: str, body: str, response_url: str | None,
                           segments_total: int, source: Source = "slash",
                           feedback_ts: str | None = None,
                           thread_ts: str | None = None) -> OutboundRow:
        now = time.time()
        feedback_channel = slack_channel if feedback_ts else None
        found = await self._fetch_one(
            "INSERT INTO outbound (slack_user, slack_channel, endpoint, destination, body,"
            " response_url, created_at, segments_total, source, feedback_channel,"
            " feedback_ts, thread_ts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING id",
            (slack_user, slack_channel, endpoint, destination, body, response_url, now,
             segments_total, source, feedback_channel, feedback_ts, thread_ts))
        assert found is not None
        return OutboundRow(id=found["id"], slack_user=slack_user, slack_channel=slack_channel,
                           endpoint=endpoint, destination=destination, body=body,
                           response_url=response_url, created_at=now, state="queued",
                           segments_sent=0, segments_total=segments_total, last_error=None,
                           notified=False, source=source, feedback_channel=feedback_channel,
                           feedback_ts=feedback_ts, thread_ts=thread_ts)

    async def unfinished_outbound(self) -> list[OutboundRow]:
        """Texts still to send, and finished ones whose sender has not been told yet."""
        rows = await self._fetch(f"SELECT {_OUTBOUND_COLUMNS} FROM outbound WHERE"
                                 " state = 'queued' OR NOT notified ORDER BY id")
        return [_outbound_row(r) for r in rows]

    async def get_outbound(self, row_id: int) -> OutboundRow | None:
        row = await self._fetch_one(f"SELECT {_OUTBOUND_COLUMNS} FROM outbound WHERE id=%s",
                                    (row_id,))
        return _outbound_row(row) if row else None

    async def set_feedback_target(self, row_id: int, channel: str, ts: str, *,
                                  done: bool = False) -> None:
        """The Slack message that shows this text's state (e.g. its echo in the thread);
        `done` when that message already shows the final state."""
        await self._execute("UPDATE outbound SET feedback_channel=%s, feedback_ts=%s,"
                            " feedback_done = feedback_done OR %s WHERE id=%s",
                            (channel, ts, done, row_id))

    async def feedback_done(self, row_id: int) -> None:
        await self._execute("UPDATE outbound SET feedback_done=TRUE WHERE id=%s", (row_id,))

    # -- audit -----------------------------------------------------------------------------

    async def add_audit(self, entry: AuditEntry) -> None:
        await self._execute(
            "INSERT INTO audit (at, slack_user, slack_channel, source, recipient, endpoint,"
            " destination, result, reason, outbound_id, text) VALUES"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (entry.at, entry.slack_user, entry.slack_channel, entry.source, entry.recipient,
             entry.endpoint, entry.destination, entry.result, entry.reason, entry.outbound_id,
             entry.text))

    # -- conversations -----------------------------------------------------------------------

    async def conversation(self, key: str) -> Conversation | None:
        row = await self._fetch_one("SELECT key, channel, thread_ts, last_activity FROM"
                                    " conversations WHERE key=%s", (key,))
        return Conversation(key=row["key"], channel=row["channel"], thread_ts=row["thread_ts"],
                            last_activity=row["last_activity"]) if row else None

    async def start_conversation(self, *, key: str, channel: str, thread_ts: str,
                                 endpoint: str | None, now: float) -> None:
        async def upsert(conn: Connection) -> None:
            await conn.execute(
                "INSERT INTO conversations (key, channel, thread_ts, last_activity)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET"
                " channel=excluded.channel, thread_ts=excluded.thread_ts,"
                " last_activity=excluded.last_activity", _params(key, channel, thread_ts, now))
            await conn.execute(
                "INSERT INTO threads (channel, thread_ts, conversation, endpoint, started)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (channel, thread_ts) DO UPDATE SET"
                " conversation=excluded.conversation, endpoint=excluded.endpoint,"
                " started=excluded.started", _params(channel, thread_ts, key, endpoint, now))
        await self._transaction(upsert)

    async def touch_conversation(self, key: str, now: float) -> None:
        await self._execute("UPDATE conversations SET last_activity=GREATEST(last_activity, %s)"
                            " WHERE key=%s", (now, key))

    async def thread_owner(self, channel: str, thread_ts: str) -> ThreadOwner | None:
        """Which conversation a Slack thread belongs to (old threads included)."""
        row = await self._fetch_one("SELECT conversation, endpoint FROM threads WHERE"
                                    " channel=%s AND thread_ts=%s", (channel, thread_ts))
        return ThreadOwner(conversation=row["conversation"],
                           endpoint=row["endpoint"]) if row else None

    async def first_sight_of_event(self, event_id: str) -> bool:
        """Record a Slack event ID; False if it was seen before (a retried delivery)."""
        return await self._execute("INSERT INTO slack_events (event_id, received_at)"
                                   " VALUES (%s, %s) ON CONFLICT (event_id) DO NOTHING",
                                   (event_id, time.time())) == 1

    async def outbound_progress(self, row_id: int, segments_sent: int) -> None:
        await self._execute("UPDATE outbound SET segments_sent=%s WHERE id=%s",
                            (segments_sent, row_id))

    async def finish_outbound(self, row_id: int, state: OutboundState,
                              error: str | None = None, *,
                              segments_sent: int | None = None) -> None:
        """Record a text's outcome, in its row and in its audit entry (one transaction)."""
        now = time.time()

        async def update(conn: Connection) -> None:
            await conn.execute("UPDATE outbound SET state=%s, last_error=%s, finished_at=%s,"
                               " segments_sent=COALESCE(%s, segments_sent) WHERE id=%s",
                               _params(state, error, now, segments_sent, row_id))
            await conn.execute("UPDATE audit SET result=%s, reason=%s WHERE outbound_id=%s",
                               _params(state, error, row_id))
        await self._transaction(update)

    async def outbound_notified(self, row_id: int) -> None:
        await self._execute("UPDATE outbound SET notified=TRUE WHERE id=%s", (row_id,))

    async def prune(self, older_than: float) -> int:
        """Forget delivered texts finished before unix time `older_than`; returns how many.

        Keep them longer than Asterisk's spool (about 22 h): their message IDs are what
        recognises a spooled text as already relayed.
        """
        async def delete(conn: Connection) -> int:
            inbound = await conn.execute("DELETE FROM inbound WHERE state='posted' AND"
                                         " posted_at < %s", (older_than,))
            outbound = await conn.execute("DELETE FROM outbound WHERE state!='queued' AND"
                                          " notified AND finished_at < %s", (older_than,))
            await conn.execute("DELETE FROM slack_events WHERE received_at < %s",
                               (older_than,))
            return inbound.rowcount + outbound.rowcount
        return await self._transaction(delete)

    # -- reporting -------------------------------------------------------------------------

    async def backlog(self) -> Backlog:
        row = await self._fetch_one(
            "SELECT (SELECT COUNT(*) FROM inbound WHERE state != 'posted') AS inbound_waiting,"
            " (SELECT MIN(received_at) FROM inbound WHERE state != 'posted') AS inbound_oldest,"
            " (SELECT COUNT(*) FROM outbound WHERE state = 'queued') AS outbound_waiting,"
            " (SELECT MIN(created_at) FROM outbound WHERE state = 'queued') AS outbound_oldest,"
            " (SELECT COUNT(*) FROM outbound WHERE state != 'queued' AND NOT notified)"
            " AS outbound_unnotified")
        assert row is not None
        return Backlog(inbound_waiting=row["inbound_waiting"],
                       inbound_oldest=row["inbound_oldest"],
                       outbound_waiting=row["outbound_waiting"],
                       outbound_oldest=row["outbound_oldest"],
                       outbound_unnotified=row["outbound_unnotified"])


# -- schema ---------------------------------------------------------------------------------

async def _migrate(conn: Connection, where: str) -> None:
    """Create or upgrade the schema in place; refuse (untouched) one from a newer bridge."""
    try:
        for _ in range(SCHEMA_VERSION + 1):
            async with conn.transaction():
                # Held to the end of this transaction: a second bridge starting now waits
                # here, then finds the schema already upgraded.
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                # Looked up first: even CREATE TABLE IF NOT EXISTS needs CREATE on the
                # schema, which a user with row rights only (a current store) lacks.
                cursor = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL"
                                            " AS present")
                found = await cursor.fetchone()
                if not found or not found["present"]:
                    await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                version = await _schema_version(conn)
                if version > SCHEMA_VERSION:
                    raise _Newer(version)
                if version == SCHEMA_VERSION:
                    return
                log.info("store: upgrading %s from schema %d to %d", where, version,
                         version + 1)
                await conn.execute(_MIGRATIONS[version])
                await conn.execute("DELETE FROM schema_version")
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)",
                                   (version + 1,))
    except _Newer as newer:  # the transaction was rolled back: nothing was changed
        raise StoreError(
            f"the database at {where} was written by a newer version of the bridge (store "
            f"schema {newer.version}; this bridge knows up to {SCHEMA_VERSION}). Upgrade the "
            f"bridge, or point [store] url at another database; the database was left "
            f"untouched") from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StoreError(
            f"the database user may not create or change the store's tables at {where}: "
            f"{_reason(exc)}. Let the bridge's user own its schema (e.g. `CREATE SCHEMA "
            f"bridge AUTHORIZATION <user>` and `?options=-csearch_path%3Dbridge` in the URL), "
            f"or run the bridge once as the tables' owner") from exc
    except psycopg.Error as exc:
        raise StoreError(f"cannot set up the store at {where}: {_reason(exc)}") from exc


async def _schema_version(conn: Connection) -> int:
    cursor = await conn.execute("SELECT MAX(version) AS version FROM schema_version")
    row = await cursor.fetchone()
    return int(row["version"]) if row and row["version"] is not None else 0


class _Newer(Exception):
    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version


def _reason(exc: BaseException) -> str:
    """libpq's message on one line (it spans several for a refused connection)."""
    return " ".join(str(exc).split()) or type(exc).__name__


# -- `bridge check` -------------------------------------------------------------------------

@dataclass(frozen=True)
class DatabaseProbe:
    """What `bridge check` learned about the database, without changing it."""

    where: str
    server_version: str
    user: str
    schema_version: int  # 0: no store tables yet
    may_create: bool  # CREATE on the current schema: needed to create the tables
    owns_tables: bool  # owns (or is a member of the owner of) every existing store table:
    #                    needed to upgrade them (ALTER TABLE)
    missing: tuple[str, ...]  # "SELECT on inbound", ... for tables that exist


async def probe_database(url: str, *, timeout: float) -> DatabaseProbe:
    """Connect read-only and report the schema version and missing rights; StoreError if the
    database cannot be reached."""
    where = describe(url)
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row, connect_timeout=max(1, int(timeout)))
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {where}: {_reason(exc)}") from exc
    try:
        cursor = await conn.execute(
            "SELECT current_setting('server_version') AS server, current_user AS who,"
            " to_regclass('schema_version') IS NOT NULL AS versioned,"
            " has_schema_privilege(current_schema(), 'CREATE') AS may_create")
        info = await cursor.fetchone()
        assert info is not None
        version = 0
        if info["versioned"]:
            version = await _schema_version(conn)
        missing: list[str] = []
        owns_tables = True
        for table, rights in TABLE_RIGHTS.items():
            cursor = await conn.execute(
                "SELECT pg_has_role(current_user, c.relowner, 'USAGE') AS owner"
                " FROM pg_class c WHERE c.oid = to_regclass(%s)", (table,))
            present = await cursor.fetchone()
            if present is None:  # not created yet
                continue
            owns_tables = owns_tables and bool(present["owner"])
            for right in rights:
                cursor = await conn.execute(
                    "SELECT has_table_privilege(%s, %s) AS granted", (table, right))
                granted = await cursor.fetchone()
                if not granted or not granted["granted"]:
                    missing.append(f"{right} on {table}")
        return DatabaseProbe(where=where, server_version=str(info["server"]),
                             user=str(info["who"]), schema_version=version,
                             may_create=bool(info["may_create"]), owns_tables=owns_tables,
                             missing=tuple(missing))
    except psycopg.Error as exc:
        raise StoreError(f"cannot read the store at {where}: {_reason(exc)}") from exc
    finally:
        await conn.close()


# -- rows -----------------------------------------------------------------------------------

_OUTBOUND_COLUMNS = (
    "id, slack_user, slack_channel, endpoint, destination, body, response_url, created_at,"
    " state, segments_sent, segments_total, last_error, notified, source, feedback_channel,"
    " feedback_ts, thread_ts, feedback_done")


def _outbound_row(r: DictRow) -> OutboundRow:
    return OutboundRow(id=r["id"], slack_user=r["slack_user"], slack_channel=r["slack_channel"],
                       endpoint=r["endpoint"], destination=r["destination"], body=r["body"],
                       response_url=r["response_url"], created_at=r["created_at"],
                       state=r["state"], segments_sent=r["segments_sent"],
                       segments_total=r["segments_total"], last_error=r["last_error"],
                       notified=bool(r["notified"]), source=r["source"],
                       feedback_channel=r["feedback_channel"], feedback_ts=r["feedback_ts"],
                       thread_ts=r["thread_ts"], feedback_done=bool(r["feedback_done"]))


def _inbound_row(r: DictRow) -> InboundRow:
    kind = EchoText if r["kind"] == "echo" else InboundText
    return InboundRow(id=r["id"], channel=r["channel"], endpoint=r["endpoint"],
                      text=kind(**json.loads(r["text_json"])), received_at=r["received_at"],
                      state=r["state"], attempts=r["attempts"],
                      conversation=r["conversation"] or "")


def _implements_the_interface(store: PostgresStore) -> StoreBackend:
    return store  # mypy checks here that the PostgreSQL store is a complete StoreBackend
