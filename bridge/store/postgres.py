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

Several bridges (replicas) share one store: unlike the SQLite file, nothing here is one
bridge's alone. Who works what is decided by leases (`claim_leases`, driven by
`bridge/delivery/leases.py`): one replica at a time posts a channel, consumes a PBX's events or
sends a PBX's texts to phones. Rolling upgrades: `store_info.oldest_reader` is the oldest schema
a bridge may know and still use this database. A migration that only adds (so far, all of them)
leaves it; one that older replicas cannot live with raises it to its own version. A bridge older
than it refuses at start, and a running one that sees it raised (`watch`) stops working with a
message saying to upgrade it.

The store watches its own health (`problem`): the database unreachable (connection refused, the
pool timing out, shut down) or refusing writes (read-only after a failover, disk full) makes
calls raise `StoreUnavailable`, and clears when a call (or the watch's test write) works again.

PostgreSQL's text cannot hold NUL characters where SQLite's can: every string parameter goes
through `_text`, which writes a NUL as U+2400 (␀) instead of failing the whole transaction.
psycopg errors become `StoreError` here; the rest of the bridge never sees psycopg.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import astuple, dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from bridge.core.directory import DEFAULT_PBX
from bridge.core.errors import StoreError, StoreUnavailable
from bridge.core.model import (
    Accepted,
    AuditEntry,
    Backlog,
    Conversation,
    InboundRow,
    InboundState,
    NewInbound,
    NewOutbound,
    OutboundRow,
    OutboundState,
    Pruned,
    Source,
    ThreadOwner,
    echo_of,
)
from bridge.core.texts import EchoText, InboundText, text_json
from bridge.store.backend import StoreBackend

log = logging.getLogger(__name__)

T = TypeVar("T")
Connection = psycopg.AsyncConnection[DictRow]

SCHEMA_VERSION = 7

# Seconds to wait for the database when opening, and for a free connection on each call.
CONNECT_TIMEOUT = 10.0
# Connections one bridge keeps: each channel's poster and the intake make short calls
# side by side; more than a few let them overlap at 1,000 texts a second.
POOL_MAX = 8
# pg_advisory_xact_lock key held while the schema is checked and upgraded ("slkbrdg1").
_MIGRATION_LOCK = 0x736C6B6272646731
# How many rows of each table one prune transaction deletes.
_PRUNE_BATCH = 500
# SQLSTATEs of a database that is up but refuses writes (a read-only standby after a
# failover, default_transaction_read_only; class 53 is disk full, out of memory and the like).
_REFUSING_WRITES = frozenset({"25006"})
# Seconds a call waits for a connection while the database is known to be unreachable.
_UNREACHABLE_WAIT = 1.0
# Whether the database would refuse a write now, asked without writing.
_READ_ONLY_CHECK = ("SELECT current_setting('transaction_read_only') = 'on'"
                    " OR pg_is_in_recovery() AS read_only")
# SQLSTATEs of a database going away under the bridge (shut down, restarting, dropped).
_GONE = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05", "3D000"})
# The server ended the session (pg_terminate_backend, a fast shutdown, a failover's fencing):
# it aborts whatever the session was doing, so the call is done again on a new connection.
_SESSION_ENDED = "57P01"

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
    # 3 -> 4: facts about the store itself (created_at: when a new store was created; holder:
    # the bridge holding the store's lock).
    """
    CREATE TABLE store_info (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE INDEX threads_started ON threads (started);
    CREATE INDEX conversations_activity ON conversations (last_activity);
    """,
    # 4 -> 5: an index for every query a text, a start, a scrape or a prune runs (the partial
    # ones hold the waiting rows only), the version-1 indexes no query could use dropped, and
    # spool_mark: the newest Asterisk time of any text stored, kept apart from the (pruned)
    # rows. The same as SQLite's 4 -> 5.
    """
    DROP INDEX inbound_waiting;
    DROP INDEX outbound_waiting;
    CREATE INDEX inbound_unposted ON inbound (id, received_at)
        WHERE state IN ('pending', 'posting');
    CREATE INDEX inbound_waiting_channel ON inbound (channel, id)
        WHERE state IN ('pending', 'posting');
    CREATE INDEX inbound_posted ON inbound (posted_at) WHERE state = 'posted';
    CREATE INDEX outbound_queued ON outbound (created_at) WHERE state = 'queued';
    CREATE INDEX outbound_unfinished ON outbound (id) WHERE state = 'queued' OR NOT notified;
    CREATE INDEX outbound_untold ON outbound (id) WHERE state != 'queued' AND NOT notified;
    CREATE INDEX outbound_told ON outbound (finished_at) WHERE state != 'queued' AND notified;
    CREATE INDEX slack_events_age ON slack_events (received_at);
    CREATE INDEX conversations_thread ON conversations (channel, thread_ts);
    CREATE INDEX outbound_user ON outbound (slack_user, id);
    CREATE TABLE spool_mark (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        asterisk_time DOUBLE PRECISION NOT NULL
    );
    """,
    # 5 -> 6: several PBXs: a text to a phone keeps the PBX it goes out through, and each
    # PBX's spool has its own mark. The same as SQLite's 5 -> 6.
    """
    ALTER TABLE outbound ADD COLUMN pbx TEXT NOT NULL DEFAULT 'default';
    CREATE TABLE pbx_spool_mark (
        pbx TEXT PRIMARY KEY,
        asterisk_time DOUBLE PRECISION NOT NULL
    );
    INSERT INTO pbx_spool_mark (pbx, asterisk_time)
        SELECT 'default', asterisk_time FROM spool_mark;
    DROP TABLE spool_mark;
    """,
    # 6 -> 7: leases: several bridges share the store, each channel, PBX event stream and
    # PBX's texts to phones worked by one of them at a time (`claim_leases`). `expires` is
    # the database's clock, so the replicas' clocks need not agree. The same as SQLite's.
    """
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires DOUBLE PRECISION NOT NULL
    );
    INSERT INTO store_info (key, value) VALUES ('oldest_reader', '7');
    """,
]

# The tables the bridge uses, and the rights it needs on each (schema_version is written only
# by an upgrade, which needs the tables' owner anyway).
_ROW_RIGHTS = ("SELECT", "INSERT", "UPDATE", "DELETE")
TABLE_RIGHTS: dict[str, tuple[str, ...]] = {
    **{table: _ROW_RIGHTS for table in ("inbound", "outbound", "conversations", "threads",
                                        "slack_events", "audit", "leases")},
    # Upserted only: the lock's holder, the health check's test write, the spool mark.
    **{table: ("SELECT", "INSERT", "UPDATE") for table in ("store_info", "pbx_spool_mark")},
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
    """The store in a PostgreSQL database, through a small pool of connections, shared with
    any other bridge replicas pointed at the same database."""

    def __init__(self, url: str, pool: AsyncConnectionPool[Connection], *,
                 timeout: float) -> None:
        self._url = url
        self._where = describe(url)
        self._pool = pool
        self._timeout = timeout
        self.created_at: float | None = None  # None: created before the store knew (schema < 4)
        self.unreachable = ""  # why the database cannot be reached right now
        self.unwritable = ""  # why it refuses writes right now (read-only, disk full)
        self.outdated = ""  # a newer bridge upgraded the store beyond what this one can use

    @classmethod
    async def open(cls, url: str, *, timeout: float = CONNECT_TIMEOUT) -> PostgresStore:
        """Connect, create or upgrade the schema, and return the store; StoreError if the
        database cannot be used (unreachable, refused, a schema this bridge is too old for,
        missing rights)."""
        where = describe(url)
        # One connection of our own first: its error is libpq's, word for word (the pool
        # would only say it timed out). It upgrades the schema (under a transaction lock:
        # replicas starting at once upgrade it once) and is closed.
        try:
            conn = await _connect(url, timeout)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the store at {where}: {_reason(exc)}. Check [store] url "
                "(or BRIDGE_STORE_URL), the password (in the URL, PGPASSWORD or ~/.pgpass) and "
                "that the server accepts this host (pg_hba.conf)") from exc
        try:
            await _migrate(conn, where)
            created_at = await _created_at(conn)
        except psycopg.Error as exc:
            raise StoreError(f"cannot set up the store at {where}: {_reason(exc)}") from exc
        finally:
            await conn.close()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url, connection_class=psycopg.AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row}, min_size=1,
            max_size=POOL_MAX, open=False, timeout=timeout, name="store",
            check=_check_connection)
        try:
            await pool.open(wait=True, timeout=timeout)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreError(f"cannot connect to the store at {where}: {_reason(exc)}") from exc
        store = cls(url, pool, timeout=timeout)
        store.created_at = created_at
        return store

    async def close(self) -> None:
        await self._pool.close()

    # -- health ------------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return self._where

    @property
    def problem(self) -> str | None:
        """Why the store cannot take texts right now; None when it can."""
        if self.outdated:
            return self.outdated
        if self.unreachable:
            return f"the store at {self._where} cannot be reached: {self.unreachable}"
        if self.unwritable:
            return f"the store at {self._where} cannot take writes: {self.unwritable}"
        return None

    async def watch(self, interval: float = 2.0) -> None:
        """Forever: ask the database every interval whether it is there and takes writes,
        and whether a newer bridge upgraded the store beyond this one (a rolling upgrade);
        clear the trouble once a test write works again."""
        while True:
            await asyncio.sleep(interval)
            read_only = await self.check()
            if (self.unreachable or self.unwritable or read_only) and not self.outdated:
                try:
                    await self._transaction(self._test_write, writes=True)
                except StoreError as exc:  # still unusable (logged when it changed)
                    log.debug("store: still unusable: %s", exc)
                    continue

    async def check(self) -> bool:
        """One round trip: True when the database looks read-only (a standby,
        default_transaction_read_only). Notes a schema this bridge is too old for."""
        if self.outdated:
            return False
        try:
            rows = await self._fetch(
                f"SELECT ({_READ_ONLY_CHECK}) AS read_only,"
                " (SELECT MAX(version) FROM schema_version) AS version,"
                " (SELECT value FROM store_info WHERE key='oldest_reader') AS oldest")
        except StoreError:
            return False
        row = rows[0]
        version = int(row["version"] or 0)
        oldest = int(row["oldest"] or version)
        if version > SCHEMA_VERSION and oldest > SCHEMA_VERSION and not self.outdated:
            self.outdated = (
                f"the store at {self._where} was upgraded by a newer bridge to schema "
                f"{version}, which bridges older than schema {oldest} cannot use (this one "
                f"knows {SCHEMA_VERSION}): this replica stops working; upgrade it")
            log.error("store: %s", self.outdated)
        return bool(row["read_only"])

    @staticmethod
    async def _test_write(conn: Connection) -> None:
        await conn.execute("INSERT INTO store_info (key, value) VALUES ('last_write_test', %s)"
                           " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                           (str(time.time()),))

    def _trouble(self, exc: psycopg.Error) -> StoreError:
        """The error a caller gets for `exc`: the database unreachable or refusing writes
        makes the store unhealthy (`problem`) and raises StoreUnavailable; anything else is a
        StoreError."""
        reason = _reason(exc)
        state = exc.sqlstate or ""
        if state in _REFUSING_WRITES or state[:2] == "53":
            if reason != self.unwritable:
                log.error("store: %s refuses writes: %s; texts are not stored until it takes "
                          "them (phones' texts stay in Asterisk's spool)", self._where, reason)
            self.unwritable = reason
            return StoreUnavailable(f"the store at {self._where} cannot take writes: {reason}")
        if (isinstance(exc, psycopg.OperationalError) and not state) or state[:2] == "08" \
                or state in _GONE:
            if reason != self.unreachable:
                log.error("store: %s cannot be reached: %s; texts are not stored until it "
                          "can (phones' texts stay in Asterisk's spool)", self._where, reason)
            self.unreachable = reason
            return StoreUnavailable(f"the store at {self._where} failed: {reason}")
        return StoreError(f"the store at {self._where} failed: {reason}")

    def _worked(self, *, wrote: bool) -> None:
        """A call reached the database (and changed it, if `wrote`): clear what it disproves."""
        if self.unreachable:
            log.info("store: %s can be reached again", self._where)
            self.unreachable = ""
        if wrote and self.unwritable:
            log.info("store: %s takes writes again", self._where)
            self.unwritable = ""

    async def _transaction(self, fn: Callable[[Connection], Awaitable[T]], *,
                           single: bool = False, writes: bool = True) -> T:
        """Run `fn` in one transaction on a pooled connection; psycopg errors -> StoreError
        (StoreUnavailable while the database cannot be reached or written to).

        `single`: `fn` runs one statement, which in autocommit mode is a transaction of its
        own, so BEGIN and COMMIT (two round trips) are left out. `writes`: a success shows
        the database takes writes again."""
        if self.outdated:  # permanent: a newer bridge's schema this one cannot use
            raise StoreUnavailable(self.outdated)
        # A database known to be unreachable gets a short wait for a connection, not the full
        # one: /healthz and a stopping bridge answer in a second, and the callers retry.
        wait = min(self._timeout, _UNREACHABLE_WAIT) if self.unreachable else self._timeout
        for again in (True, False):
            try:
                async with self._pool.connection(timeout=wait) as conn:
                    if single:
                        value = await fn(conn)
                    else:
                        async with conn.transaction():
                            value = await fn(conn)
                break
            except psycopg.Error as exc:
                # Its session ended under it (the pool checks a connection when handing it
                # out, but the server's word can come just after): nothing of it committed,
                # so once more, on a new connection (the pool drops the dead one).
                if again and exc.sqlstate == _SESSION_ENDED:
                    log.info("store: %s ended the session in the middle of a call (%s); "
                             "doing it again on a new connection", self._where, _reason(exc))
                    continue
                raise self._trouble(exc) from exc
        self._worked(wrote=writes)
        return value

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement; how many rows it changed."""
        async def run(conn: Connection) -> int:
            cursor = await conn.execute(sql, _params(*params))
            return cursor.rowcount
        return await self._transaction(run, single=True)

    async def _fetch(self, sql: str, params: Sequence[Any] = (), *,
                     writes: bool = False) -> list[DictRow]:
        """One statement; the rows it returned."""
        async def run(conn: Connection) -> list[DictRow]:
            cursor = await conn.execute(sql, _params(*params))
            return await cursor.fetchall()
        return await self._transaction(run, single=True, writes=writes)

    async def _fetch_one(self, sql: str, params: Sequence[Any] = (), *,
                         writes: bool = False) -> DictRow | None:
        rows = await self._fetch(sql, params, writes=writes)
        return rows[0] if rows else None

    # -- inbound ---------------------------------------------------------------------------

    async def add_inbound(self, items: list[NewInbound]) -> list[InboundRow | None]:
        """Store texts in one transaction; None in place of a duplicate (same message_id)."""
        if not items:
            return []

        # One statement for the whole batch: the texts go in as arrays, in order (their
        # ids are taken in that order, which is the order they are posted in). A text whose
        # message ID is already stored (or earlier in the batch) is skipped by ON CONFLICT.
        # The same statement moves each PBX's spool mark to its newest text's Asterisk time.
        # The texts' JSON goes in binary (%b): in text format every one of its quotes is
        # escaped by a regular expression, a seventh of a replica's CPU at 1,000 texts/s.
        columns: list[list[Any]] = [[] for _ in range(8)]
        newest: dict[str, float] = {}
        for item in items:
            text = item.text
            if isinstance(text, EchoText):
                message_id, kind, outbound_id = None, "echo", text.outbound_id
            else:
                message_id, kind, outbound_id = text.event_id or None, "in", None
                if text.asterisk_time:
                    newest[text.pbx] = max(newest.get(text.pbx, 0.0), text.asterisk_time)
            values = _params(message_id, item.channel, item.endpoint, text_json(text),
                             item.received_at, kind, item.conversation, outbound_id)
            for column, value in zip(columns, values, strict=True):
                column.append(value)

        async def insert(conn: Connection) -> list[InboundRow | None]:
            cursor = await conn.execute(
                "WITH marked AS (INSERT INTO pbx_spool_mark (pbx, asterisk_time)"
                " SELECT * FROM unnest(%s::text[], %s::float8[])"
                " ON CONFLICT (pbx) DO UPDATE SET asterisk_time ="
                " GREATEST(pbx_spool_mark.asterisk_time, excluded.asterisk_time))"
                " INSERT INTO inbound (message_id, channel, endpoint, text_json, received_at,"
                " kind, conversation, outbound_id)"
                " SELECT m, c, e, t, r, k, v, o FROM unnest(%s::text[], %s::text[],"
                " %s::text[], %b::text[], %s::float8[], %s::text[], %s::text[], %s::bigint[])"
                " WITH ORDINALITY AS batch(m, c, e, t, r, k, v, o, n) ORDER BY n"
                " ON CONFLICT (message_id) DO NOTHING RETURNING id, message_id",
                [list(newest), list(newest.values()), *columns])
            inserted = sorted(await cursor.fetchall(), key=lambda r: int(r["id"]))
            by_message = {r["message_id"]: int(r["id"]) for r in inserted
                          if r["message_id"] is not None}
            # Texts without a message ID (echoes, unreadable events) never conflict: they
            # are all inserted, their ids in the batch's order.
            anonymous = iter(int(r["id"]) for r in inserted if r["message_id"] is None)
            rows: list[InboundRow | None] = []
            for item, message_id in zip(items, columns[0], strict=True):
                row_id = next(anonymous) if message_id is None else by_message.pop(message_id,
                                                                                  None)
                if row_id is None:  # a duplicate, of a stored text or of one in this batch
                    rows.append(None)
                    continue
                rows.append(InboundRow(id=row_id, channel=item.channel,
                                       endpoint=item.endpoint, text=item.text,
                                       received_at=item.received_at, state="pending",
                                       attempts=0, conversation=item.conversation))
            return rows
        # The statement is a transaction of its own (autocommit): one round trip.
        return await self._transaction(insert, single=True)

    async def spool_mark(self, pbx: str = DEFAULT_PBX) -> float | None:
        """The newest Asterisk time of any text from a phone of PBX `pbx` the store ever took
        (None before the first): spooled texts older than this are already here, or were,
        before a prune."""
        row = await self._fetch_one("SELECT asterisk_time FROM pbx_spool_mark WHERE pbx=%s",
                                    (pbx,))
        return float(row["asterisk_time"]) if row else None

    async def waiting_inbound(self, *, channel: str | None = None,
                              limit: int | None = None) -> list[InboundRow]:
        """Inbound texts not yet known to be posted, oldest first: all of them, or the
        oldest `limit` of one `channel`."""
        where = " AND channel = %s" if channel is not None else ""
        rows = await self._fetch(
            "SELECT id, channel, endpoint, text_json, received_at, state, attempts, kind,"
            " conversation FROM inbound WHERE state IN ('pending', 'posting')" + where +
            " ORDER BY id" + (" LIMIT %s" if limit is not None else ""),
            (*((channel,) if channel is not None else ()),
             *((limit,) if limit is not None else ())))
        return [_inbound_row(r) for r in rows]

    async def waiting_channels(self) -> dict[str, int]:
        """The channels with inbound texts waiting, each with how many."""
        rows = await self._fetch(
            "SELECT channel, count(*) AS waiting FROM inbound"
            " WHERE state IN ('pending', 'posting') GROUP BY channel")
        return {str(r["channel"]): int(r["waiting"]) for r in rows}

    async def mark_inbound(self, ids: Iterable[int], state: InboundState, *,
                           error: str | None = None, slack_ts: str | None = None,
                           then_posting: Iterable[int] = (), channel: str = "",
                           echoes_done: Iterable[int] = ()) -> None:
        ids = list(ids)
        posting = list(then_posting)
        shown = list(echoes_done)
        if state == "posted" and (posting or shown):
            # One statement, one round trip: the sets of rows are disjoint.
            await self._execute(
                "WITH done AS (UPDATE inbound SET state='posted', posted_at=%s, slack_ts=%s,"
                " last_error=NULL WHERE id = ANY(%s)),"
                " shown AS (UPDATE outbound SET feedback_channel=%s, feedback_ts=%s,"
                " feedback_done=TRUE WHERE id = ANY(%s))"
                " UPDATE inbound SET state='posting', attempts=attempts+1 WHERE id = ANY(%s)",
                (time.time(), slack_ts, ids, channel, slack_ts, shown, posting))
        elif state == "posted":
            await self._execute("UPDATE inbound SET state='posted', posted_at=%s, slack_ts=%s,"
                                " last_error=NULL WHERE id = ANY(%s)",
                                (time.time(), slack_ts, ids))
        elif state == "posting":
            await self._execute("UPDATE inbound SET state='posting', attempts=attempts+1"
                                " WHERE id = ANY(%s)", (ids + posting,))
        else:
            await self._execute("UPDATE inbound SET state=%s, last_error=%s WHERE id = ANY(%s)",
                                (state, error, ids))
            if posting:
                await self._execute("UPDATE inbound SET state='posting', attempts=attempts+1"
                                    " WHERE id = ANY(%s)", (posting,))

    async def move_inbound(self, ids: Iterable[int], channel: str) -> None:
        await self._execute("UPDATE inbound SET channel=%s WHERE id = ANY(%s)",
                            (channel, list(ids)))

    # -- outbound --------------------------------------------------------------------------

    async def add_outbound(self, *, slack_user: str, slack_channel: str, endpoint: str,
                           destination: str, body: str, response_url: str | None,
                           segments_total: int, source: Source = "slash",
                           feedback_ts: str | None = None,
                           thread_ts: str | None = None, pbx: str = DEFAULT_PBX) -> OutboundRow:
        accepted = await self.accept_outbound(NewOutbound(
            slack_user=slack_user, slack_channel=slack_channel, endpoint=endpoint,
            destination=destination, body=body, response_url=response_url,
            segments_total=segments_total, source=source, feedback_ts=feedback_ts,
            thread_ts=thread_ts, pbx=pbx))
        assert accepted is not None  # no request ID: never a replay
        return accepted.row

    async def accept_outbound(self, new: NewOutbound, *, request_id: str | None = None,
                              audit: AuditEntry | None = None,
                              echo: NewInbound | None = None) -> Accepted | None:
        """Store a text to send with its audit entry, its echo and the Slack request that
        asked for it (see `StoreBackend.accept_outbound`): one statement, one round trip."""
        now = time.time()
        entry = audit or AuditEntry(at=now, slack_user="", slack_channel="", source="",
                                    recipient="", endpoint=None, destination=None, result="",
                                    reason=None, outbound_id=None, text=None)
        echoed = echo_of(echo, 0) if echo is not None else None  # its id is set below
        # Every part hangs on the outbound insert (`o`), which happens only when the request
        # is seen for the first time (`seen`); the echo's JSON gets the new id in place.
        row = await self._fetch_one(
            "WITH seen AS (INSERT INTO slack_events (event_id, received_at)"
            " SELECT %s::text, %s::float8 WHERE %s::text IS NOT NULL"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id),"
            " o AS (INSERT INTO outbound (slack_user, slack_channel, endpoint, destination,"
            " body, response_url, created_at, segments_total, source, feedback_channel,"
            " feedback_ts, thread_ts, pbx)"
            " SELECT %s::text, %s::text, %s::text, %s::text, %s::text, %s::text, %s::float8,"
            " %s::int, %s::text, %s::text, %s::text, %s::text, %s::text"
            " WHERE %s::text IS NULL OR EXISTS (SELECT 1 FROM seen) RETURNING id),"
            " a AS (INSERT INTO audit (at, slack_user, slack_channel, source, recipient,"
            " endpoint, destination, result, reason, outbound_id, text)"
            " SELECT %s::float8, %s::text, %s::text, %s::text, %s::text, %s::text, %s::text,"
            " %s::text, %s::text, o.id, %s::text FROM o WHERE %s::boolean),"
            " e AS (INSERT INTO inbound (message_id, channel, endpoint, text_json, received_at,"
            " kind, conversation, outbound_id)"
            " SELECT NULL, %s::text, %s::text,"
            " jsonb_set(%s::jsonb, '{outbound_id}', to_jsonb(o.id))::text, %s::float8,"
            " 'echo', %s::text, o.id FROM o WHERE %s::boolean RETURNING id)"
            " SELECT o.id, (SELECT id FROM e) AS echo_id FROM o",
            (request_id, now, request_id,
             new.slack_user, new.slack_channel, new.endpoint, new.destination, new.body,
             new.response_url, now, new.segments_total, new.source, new.feedback_channel,
             new.feedback_ts, new.thread_ts, new.pbx, request_id,
             entry.at, entry.slack_user, entry.slack_channel, entry.source, entry.recipient,
             entry.endpoint, entry.destination, entry.result, entry.reason, entry.text,
             audit is not None,
             echoed.channel if echoed else "", echoed.endpoint if echoed else None,
             text_json(echoed.text) if echoed else "{}",
             echoed.received_at if echoed else now, echoed.conversation if echoed else "",
             echoed is not None),
            writes=True)
        if row is None:
            return None  # the request was recorded before: nothing stored
        stored = new.stored(int(row["id"]), now)
        echo_row = None
        if echoed is not None:
            echo_row = InboundRow(id=int(row["echo_id"]), channel=echoed.channel,
                                  endpoint=echoed.endpoint,
                                  text=echo_of(echoed, stored.id).text,
                                  received_at=echoed.received_at, state="pending",
                                  attempts=0, conversation=echoed.conversation)
        return Accepted(row=stored, echo=echo_row)

    async def unfinished_outbound(self) -> list[OutboundRow]:
        """Texts still to send, and finished ones whose sender has not been told yet."""
        rows = await self._fetch(f"SELECT {_OUTBOUND_COLUMNS} FROM outbound WHERE"
                                 " state = 'queued' OR NOT notified ORDER BY id")
        return [_outbound_row(r) for r in rows]

    async def get_outbound(self, row_id: int) -> OutboundRow | None:
        row = await self._fetch_one(f"SELECT {_OUTBOUND_COLUMNS} FROM outbound WHERE id=%s",
                                    (row_id,))
        return _outbound_row(row) if row else None

    async def recent_outbound(self, slack_user: str, limit: int = 10) -> list[OutboundRow]:
        """A user's latest texts to phones, newest first (for the App Home)."""
        rows = await self._fetch(f"SELECT {_OUTBOUND_COLUMNS} FROM outbound WHERE"
                                 " slack_user=%s ORDER BY id DESC LIMIT %s", (slack_user, limit))
        return [_outbound_row(r) for r in rows]

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

    async def forget_event(self, event_id: str) -> None:
        """Forget a recorded event ID, so its next sight counts as the first again."""
        await self._execute("DELETE FROM slack_events WHERE event_id=%s", (event_id,))

    async def claim_leases(self, holder: str, names: Iterable[str], ttl: float) -> set[str]:
        """Take the leases of `names` that are free or expired, renew those `holder` has,
        each for `ttl` seconds of the database's clock; the names `holder` holds now. One
        statement: two replicas claiming one expired lease at once get it once (the second
        one's ON CONFLICT sees the first one's row, unexpired)."""
        listed = sorted(set(names))  # one order for every replica: no deadlock between them
        if not listed:
            return set()
        rows = await self._fetch(
            "INSERT INTO leases (name, holder, expires)"
            " SELECT n, %s, extract(epoch FROM clock_timestamp()) + %s"
            " FROM unnest(%s::text[]) AS n"
            " ON CONFLICT (name) DO UPDATE SET holder=excluded.holder, expires=excluded.expires"
            " WHERE leases.holder=excluded.holder"
            " OR leases.expires < extract(epoch FROM clock_timestamp())"
            " RETURNING name", (holder, ttl, listed), writes=True)
        return {str(row["name"]) for row in rows}

    async def release_leases(self, holder: str, names: Iterable[str]) -> None:
        """Give up `holder`'s leases of `names` (a clean stop: the next holder need not wait
        for them to expire)."""
        await self._execute("DELETE FROM leases WHERE holder=%s AND name = ANY(%s::text[])",
                            (holder, list(names)))

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

    async def outbound_notified(self, *row_ids: int) -> None:
        await self._execute("UPDATE outbound SET notified=TRUE WHERE id = ANY(%s)",
                            (list(row_ids),))

    async def prune(self, older_than: float, *, audit_older_than: float | None = None
                    ) -> Pruned:
        """Forget what was finished before unix time `older_than`: delivered texts, Slack
        event IDs, conversations idle since then and their threads (a reply in such an old
        thread is no longer mapped to its phone), and audit entries before
        `audit_older_than` (None: keep the audit trail). Texts set aside are kept.

        Keep texts longer than Asterisk's spool (about 25 h): their message IDs are what
        recognises a spooled text as already relayed. Deletes in batches of a few hundred
        rows, each its own transaction, so no long transaction holds rows others wait for.
        """
        total = Pruned(texts=0, threads=0, conversations=0, slack_events=0, audit=0)
        while True:
            batch, more = await self._transaction(
                lambda conn: self._prune_batch(conn, older_than, audit_older_than,
                                               _PRUNE_BATCH))
            total = Pruned(*(a + b for a, b in zip(astuple(total), astuple(batch),
                                                   strict=True)))
            if not more:
                return total

    @staticmethod
    async def _prune_batch(conn: Connection, older_than: float,
                           audit_older_than: float | None, limit: int) -> tuple[Pruned, bool]:
        async def batch(sql: str, before: float) -> int:
            return (await conn.execute(sql, (before, limit))).rowcount
        inbound = await batch("DELETE FROM inbound WHERE id IN (SELECT id FROM inbound"
                              " WHERE state='posted' AND posted_at < %s LIMIT %s)", older_than)
        outbound = await batch("DELETE FROM outbound WHERE id IN (SELECT id FROM outbound"
                               " WHERE state!='queued' AND notified AND finished_at < %s"
                               " LIMIT %s)", older_than)
        events = await batch("DELETE FROM slack_events WHERE event_id IN (SELECT event_id FROM"
                             " slack_events WHERE received_at < %s LIMIT %s)", older_than)
        conversations = await batch("DELETE FROM conversations WHERE key IN (SELECT key FROM"
                                    " conversations WHERE last_activity < %s LIMIT %s)",
                                    older_than)
        # A thread still some conversation's current one stays, however old it is.
        threads = await batch(
            "DELETE FROM threads WHERE (channel, thread_ts) IN (SELECT t.channel, t.thread_ts"
            " FROM threads t WHERE t.started < %s AND NOT EXISTS (SELECT 1 FROM conversations c"
            " WHERE c.channel = t.channel AND c.thread_ts = t.thread_ts) LIMIT %s)", older_than)
        audit = 0 if audit_older_than is None else await batch(
            "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < %s LIMIT %s)",
            audit_older_than)
        counts = (inbound, outbound, events, conversations, threads, audit)
        return (Pruned(texts=inbound + outbound, threads=threads, conversations=conversations,
                       slack_events=events, audit=audit),
                any(count >= limit for count in counts))

    # -- reporting -------------------------------------------------------------------------

    async def backlog(self) -> Backlog:
        row = await self._fetch_one(
            "SELECT (SELECT COUNT(*) FROM inbound WHERE state IN ('pending', 'posting'))"
            " AS inbound_waiting,"
            " (SELECT MIN(received_at) FROM inbound WHERE state IN ('pending', 'posting'))"
            " AS inbound_oldest,"
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
                    if await _oldest_reader(conn) <= SCHEMA_VERSION:
                        return  # a newer bridge's schema that this one can still use
                    raise _Newer(version)
                if version == SCHEMA_VERSION:
                    return
                if 0 < version < 7 and not await _try_lock(conn, await _store_lock_key(conn)):
                    # A bridge from before replicas holds its one-bridge lock: it knows no
                    # leases, and beside replicas it would send every queued text twice.
                    raise _StillRunning(await _holder(conn))
                if version == 0:
                    # A new store: every step in one transaction, one log line, and when it
                    # was created (texts in Asterisk's spool from before it are not relayed
                    # unless asked: they may be in Slack already).
                    for script in _MIGRATIONS:
                        await conn.execute(script)
                    await conn.execute("INSERT INTO store_info (key, value)"
                                       " VALUES ('created_at', %s)", (repr(time.time()),))
                    log.info("store: created the store at %s (schema %d)", where,
                             SCHEMA_VERSION)
                    target = SCHEMA_VERSION
                else:
                    log.info("store: upgrading %s from schema %d to %d", where, version,
                             version + 1)
                    await conn.execute(_MIGRATIONS[version])
                    target = version + 1
                await conn.execute("DELETE FROM schema_version")
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)",
                                   (target,))
    except _StillRunning as running:
        raise StoreError(
            f"a bridge of the previous version (one bridge per store) is still running on the "
            f"store at {where} ({running.holder or 'unknown'}): it would send texts beside "
            f"these replicas without sharing the work. Stop it, then start this version; the "
            f"store was left untouched") from None
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


async def _check_connection(conn: Connection) -> None:
    """Run by the pool on each checkout: a connection the server dropped (a restart, a
    failover, an idle timeout) is replaced before a call fails on it.

    A server that ends a connection says so (its FATAL message, then end of file), so a
    dropped connection has something to read, and an idle healthy one has nothing (the bridge
    uses no LISTEN). One poll of the socket tells them apart without a round trip to the
    server, which an empty query on every checkout cost (a tenth of a replica's CPU at 1,000
    texts a second); only a connection with something to read gets that query, which fails
    on a dropped one and makes the pool replace it."""
    idle_and_sound = (not conn.closed and conn.pgconn.status == pq.ConnStatus.OK
                      and not select.select([conn.pgconn.socket], [], [], 0)[0])
    if not idle_and_sound:
        await AsyncConnectionPool.check_connection(conn)  # raises on a dropped one


async def _schema_version(conn: Connection) -> int:
    cursor = await conn.execute("SELECT MAX(version) AS version FROM schema_version")
    row = await cursor.fetchone()
    return int(row["version"]) if row and row["version"] is not None else 0


async def _connect(url: str, timeout: float) -> Connection:
    return await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row, connect_timeout=max(1, int(timeout)))


async def _oldest_reader(conn: Connection) -> int:
    """The oldest schema a bridge may know and still use this store (store_info)."""
    cursor = await conn.execute("SELECT value FROM store_info WHERE key='oldest_reader'")
    row = await cursor.fetchone()
    return int(row["value"]) if row else await _schema_version(conn)


# Bridges of schema 6 and before took a session advisory lock (one bridge per store) with this
# class and the CRC of the schema the tables are in; an upgrade checks that none holds it.
_STORE_LOCK_CLASS = 0x736C6B62  # "slkb"


async def _store_lock_key(conn: Connection) -> tuple[int, int]:
    """The one-bridge lock key of earlier bridges: our class, and the schema its tables are (or will be) in."""
    cursor = await conn.execute("SELECT COALESCE(current_schema(), '') AS schema")
    row = await cursor.fetchone()
    crc = zlib.crc32(str(row["schema"] if row else "").encode())
    return _STORE_LOCK_CLASS, crc - (1 << 32) if crc >= 1 << 31 else crc  # as a signed int4


async def _try_lock(conn: Connection, key: tuple[int, int]) -> bool:
    """Whether a bridge of before holds its one-bridge lock (taken and given back at once)."""
    cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s) AS taken", key)
    row = await cursor.fetchone()
    return bool(row and row["taken"])


async def _holder(conn: Connection) -> str:
    """Who holds the earlier bridges' lock, as its holder recorded it ('' when unknown: it has no
    store_info table yet, or it is still starting)."""
    cursor = await conn.execute("SELECT to_regclass('store_info') IS NOT NULL AS present")
    found = await cursor.fetchone()
    if not found or not found["present"]:
        return ""
    cursor = await conn.execute("SELECT value FROM store_info WHERE key='holder'")
    row = await cursor.fetchone()
    return str(row["value"]) if row else ""


async def _created_at(conn: Connection) -> float | None:
    cursor = await conn.execute("SELECT value FROM store_info WHERE key='created_at'")
    row = await cursor.fetchone()
    return float(row["value"]) if row else None


class _StillRunning(Exception):
    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


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
    " feedback_ts, thread_ts, feedback_done, pbx")


def _outbound_row(r: DictRow) -> OutboundRow:
    return OutboundRow(id=r["id"], slack_user=r["slack_user"], slack_channel=r["slack_channel"],
                       endpoint=r["endpoint"], destination=r["destination"], body=r["body"],
                       response_url=r["response_url"], created_at=r["created_at"],
                       state=r["state"], segments_sent=r["segments_sent"],
                       segments_total=r["segments_total"], last_error=r["last_error"],
                       notified=bool(r["notified"]), source=r["source"],
                       feedback_channel=r["feedback_channel"], feedback_ts=r["feedback_ts"],
                       thread_ts=r["thread_ts"], feedback_done=bool(r["feedback_done"]),
                       pbx=r["pbx"])


def _inbound_row(r: DictRow) -> InboundRow:
    kind = EchoText if r["kind"] == "echo" else InboundText
    return InboundRow(id=r["id"], channel=r["channel"], endpoint=r["endpoint"],
                      text=kind(**json.loads(r["text_json"])), received_at=r["received_at"],
                      state=r["state"], attempts=r["attempts"],
                      conversation=r["conversation"] or "")


def _implements_the_interface(store: PostgresStore) -> StoreBackend:
    return store  # mypy checks here that the PostgreSQL store is a complete StoreBackend

