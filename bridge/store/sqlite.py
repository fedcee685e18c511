"""The embedded store: every text the bridge is responsible for, in SQLite, until it is delivered.

One file (`[store] path`), WAL mode, written from one dedicated thread so the event loop never
waits on disk. `synchronous=NORMAL` in WAL mode makes every commit survive a crash of the
bridge process (SIGKILL); only a power loss can take the last commits.

The schema is versioned (`schema_version`) and upgraded in place by `_MIGRATIONS`; a file
written by a newer bridge is refused with a clear error rather than touched. A new file is
created at the current schema in one transaction (one log line, not one per migration) and
remembers when it was created (`created_at`), so the bridge can tell texts in Asterisk's spool
from before this store (they may already be in Slack) from texts it has never seen.

One bridge per store: `open` takes an exclusive lock on `<store>.lock` for the process's life
and refuses to start if another process holds it, naming its PID and host (two bridges on one
store send every queued text twice).

The store watches its own health (`problem`): a full disk, a read-only file or an I/O error
makes writes fail with `StoreUnavailable` (the bridge stays up and says so on /healthz) until
a test write succeeds again; a file deleted, replaced or truncated under the running bridge
(its st_dev/st_ino changed, or it is gone) makes it unhealthy for good: writes are refused so
texts stay in Asterisk's spool, and a restart is needed.

Inbound texts (phone -> Slack) move pending -> posting -> posted. `posting` is written before
the Slack request, so after a crash the bridge knows which posts may already be in Slack.
A text Slack refuses however it is rendered ends `set_aside`: kept (never pruned), no longer
waiting, so it cannot hold up the texts behind it.
Outbound texts (Slack -> phone) move queued -> sent | failed, and record how many segments
Asterisk has accepted so a restart resumes after the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import astuple, replace
from pathlib import Path
from typing import Any, TypeVar

from bridge.core.directory import DEFAULT_PBX
from bridge.core.errors import StoreError, StoreInUse, StoreUnavailable
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
from bridge.store.engine import GroupCommit

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 7

# Each entry upgrades the schema from version N to N+1 (index N). Never edit a shipped entry:
# add a new one, and bump SCHEMA_VERSION.
_MIGRATIONS: list[str] = [
    # 0 -> 1
    """
    CREATE TABLE inbound (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT UNIQUE,            -- SIP Call-ID + CSeq; NULL when unknown
        channel TEXT NOT NULL,
        endpoint TEXT,                     -- directory name, NULL for unknown senders
        text_json TEXT NOT NULL,           -- the InboundText, as JSON
        received_at REAL NOT NULL,         -- unix time
        state TEXT NOT NULL DEFAULT 'pending',   -- pending | posting | posted
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        posted_at REAL,
        slack_ts TEXT
    );
    CREATE INDEX inbound_waiting ON inbound (state, channel, id);
    CREATE TABLE outbound (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        slack_user TEXT NOT NULL,
        slack_channel TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        destination TEXT NOT NULL,
        body TEXT NOT NULL,
        response_url TEXT,
        created_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',    -- queued | sent | failed
        segments_sent INTEGER NOT NULL DEFAULT 0,
        segments_total INTEGER NOT NULL,
        last_error TEXT,
        finished_at REAL,
        notified INTEGER NOT NULL DEFAULT 0       -- the sender was told the outcome
    );
    CREATE INDEX outbound_waiting ON outbound (state, id);
    """,
    # 1 -> 2: conversations (one Slack thread per phone), echoes of /sip texts in them,
    # delivery feedback on the Slack message that caused a send, Slack event dedupe.
    """
    ALTER TABLE inbound ADD COLUMN kind TEXT NOT NULL DEFAULT 'in';     -- in | echo
    ALTER TABLE inbound ADD COLUMN conversation TEXT;
    ALTER TABLE inbound ADD COLUMN outbound_id INTEGER;
    ALTER TABLE outbound ADD COLUMN source TEXT NOT NULL DEFAULT 'slash';  -- slash | reply
    ALTER TABLE outbound ADD COLUMN feedback_channel TEXT;
    ALTER TABLE outbound ADD COLUMN feedback_ts TEXT;     -- the Slack message showing the state
    ALTER TABLE outbound ADD COLUMN thread_ts TEXT;       -- where a failure reason is posted
    ALTER TABLE outbound ADD COLUMN feedback_done INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE conversations (
        key TEXT PRIMARY KEY,               -- endpoint name, or "uri:<sender>" for strangers
        channel TEXT NOT NULL,
        thread_ts TEXT NOT NULL,
        last_activity REAL NOT NULL
    );
    CREATE TABLE threads (
        channel TEXT NOT NULL,
        thread_ts TEXT NOT NULL,
        conversation TEXT NOT NULL,
        endpoint TEXT,
        started REAL NOT NULL,
        PRIMARY KEY (channel, thread_ts)
    );
    CREATE TABLE slack_events (
        event_id TEXT PRIMARY KEY,
        received_at REAL NOT NULL
    );
    """,
    # 2 -> 3: the audit trail of every send and refusal.
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        slack_user TEXT NOT NULL,
        slack_channel TEXT NOT NULL,
        source TEXT NOT NULL,              -- slash | reply
        recipient TEXT NOT NULL,           -- as typed, or the thread's phone
        endpoint TEXT,
        destination TEXT,
        result TEXT NOT NULL,              -- refused | accepted | sent | failed
        reason TEXT,
        outbound_id INTEGER,
        text TEXT                          -- only with [audit] store_text = true
    );
    CREATE INDEX audit_outbound ON audit (outbound_id);
    CREATE INDEX audit_at ON audit (at);
    """,
    # 3 -> 4: facts about the store file itself (created_at: when a new store was created).
    """
    CREATE TABLE store_info (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE INDEX threads_started ON threads (started);
    CREATE INDEX conversations_activity ON conversations (last_activity);
    """,
    # 4 -> 5: an index for every query a text, a start, a scrape or a prune runs, so none of
    # them costs more as delivered rows pile up. The partial indexes hold waiting rows only
    # (a handful), the prune ones let old rows be found without reading the young ones.
    # The two indexes of version 1 led no query to its rows (`state != ...` cannot use them)
    # and cost a write per text each.
    # spool_mark: the newest Asterisk time of any text stored, kept apart from the rows (which
    # are pruned), so the spool read at login skips everything older (bridge/asterisk/ami.py).
    """
    DROP INDEX inbound_waiting;
    DROP INDEX outbound_waiting;
    CREATE INDEX inbound_unposted ON inbound (id, received_at)
        WHERE state IN ('pending', 'posting');
    CREATE INDEX inbound_waiting_channel ON inbound (channel, id)
        WHERE state IN ('pending', 'posting');
    CREATE INDEX inbound_posted ON inbound (posted_at) WHERE state = 'posted';
    CREATE INDEX outbound_queued ON outbound (created_at) WHERE state = 'queued';
    CREATE INDEX outbound_unfinished ON outbound (id) WHERE state = 'queued' OR notified = 0;
    CREATE INDEX outbound_untold ON outbound (id) WHERE state != 'queued' AND notified = 0;
    CREATE INDEX outbound_told ON outbound (finished_at) WHERE state != 'queued' AND notified = 1;
    CREATE INDEX slack_events_age ON slack_events (received_at);
    CREATE INDEX conversations_thread ON conversations (channel, thread_ts);
    CREATE INDEX outbound_user ON outbound (slack_user, id);
    CREATE TABLE spool_mark (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        asterisk_time REAL NOT NULL
    );
    """,
    # 5 -> 6: several PBXs. A text to a phone goes out through its endpoint's PBX, kept with
    # it; each PBX's spool is read from the newest text that PBX gave (a PBX that was down
    # has older texts in its spool than the newest of another). Existing rows and the mark
    # are the one PBX there was: "default".
    """
    ALTER TABLE outbound ADD COLUMN pbx TEXT NOT NULL DEFAULT 'default';
    CREATE TABLE pbx_spool_mark (
        pbx TEXT PRIMARY KEY,
        asterisk_time REAL NOT NULL
    );
    INSERT INTO pbx_spool_mark (pbx, asterisk_time)
        SELECT 'default', asterisk_time FROM spool_mark;
    DROP TABLE spool_mark;
    """,
    # 6 -> 7: leases, by which several bridges on one PostgreSQL store share the work (one
    # channel, PBX event stream or PBX's texts to phones at a time). Kept here too so both
    # backends have the same schema; a bridge alone on its file holds everything anyway.
    """
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires REAL NOT NULL
    );
    """,
]


# SQLite error texts that mean "the disk/file cannot take writes now", not a bug of ours.
_UNWRITABLE = ("disk is full", "readonly", "read-only", "disk i/o error", "unable to open",
               "malformed", "not a database")
# How many rows of each table one prune job deletes.
_PRUNE_BATCH = 500


class Store:
    """Async facade over one SQLite connection (`GroupCommit`: a point operation runs on the
    event loop when the store thread is idle, the rest on that thread, where many share one
    commit under load; each answers only after its commit)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._engine = GroupCommit(self._conn, name="store", health=self)
        self._lock_fd: int | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self.created_at: float | None = None  # None: created before the store knew (schema < 4)
        self.created_now = False  # this open created the store
        self.unwritable = ""  # why writes fail right now (disk full, read-only, ...)
        self.replaced = ""  # the file was deleted/replaced under us: permanent until restart

    @classmethod
    async def open(cls, path: str | Path) -> Store:
        store = cls(Path(path))
        store._engine.start()
        try:
            await store._run(store._open, raw=True)
        except BaseException:
            store._engine.abandon()
            store._unlock()
            raise
        return store

    async def close(self) -> None:
        await self._run(self._close, raw=True)
        await self._engine.stop()
        self._unlock()

    # -- health ------------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def problem(self) -> str | None:
        """Why the store cannot take texts right now; None when it can."""
        if self.replaced:
            return self.replaced
        if self.unwritable:
            return f"the store {self.path} cannot take writes: {self.unwritable}"
        return None

    async def watch(self, interval: float = 2.0) -> None:
        """Forever: notice the file being deleted or replaced, and find out when a store
        that could not take writes (disk full) can again."""
        while True:
            await asyncio.sleep(interval)
            self.check_identity()
            if self.unwritable and not self.replaced:
                try:
                    await self._run(self._test_write)
                except Exception as exc:  # noqa: BLE001 - still unwritable (logged once)
                    log.debug("store: still cannot write: %s", exc)
                    continue
                log.info("store: %s takes writes again", self.path)

    def check_identity(self) -> None:
        """Compare the file at `path` with the one open; on a difference, go unhealthy."""
        if self.replaced or self._identity is None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            found = "it is gone"
        except OSError as exc:
            found = f"it cannot be read ({exc.strerror})"
        else:
            if (st.st_dev, st.st_ino) == self._identity:
                # The WAL switch writes the header into the main file at once, so a store
                # shorter than SQLite's 100-byte header was cut by someone else.
                if st.st_size >= 100:
                    return
                found = f"it was truncated to {st.st_size} bytes"
            else:
                found = "another file is there now"
        self.replaced = (f"the store file {self.path} changed under the running bridge ({found}): "
                         f"texts are no longer stored (phones' texts stay in Asterisk's spool); "
                         f"restore the file or restart the bridge (see README, the store)")
        log.error("store: %s", self.replaced)

    def _test_write(self) -> None:
        # Runs in the group's transaction: a real write, so a full disk fails it.
        self._conn().execute(
            "INSERT OR REPLACE INTO store_info (key, value) VALUES ('last_write_test', ?)",
            (str(time.time()),))

    def _lock(self) -> None:
        """Take `<store>.lock` for this process's life, or raise StoreInUse naming the holder."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create the store's lock file {lock_path}: "
                             f"{exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise StoreInUse(
                f"the store {self.path} is in use by another bridge ({holder or 'unknown'}); "
                f"two bridges on one store would send every queued text twice. Stop the "
                f"other one, or give this one its own [store] path") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing releases the flock; the file stays (harmless, reused)

    async def _run(self, fn: Callable[..., T], *args: Any, raw: bool = False,
                   bulk: bool = False) -> T:
        """`bulk`: an operation on many rows, always on the store thread (GroupCommit)."""
        return await self._engine.run(fn, *args, raw=raw, bulk=bulk)

    # -- the engine's view of the store's health (runs on the store thread) -----------------

    def refusal(self) -> Exception | None:
        """Why no group may run now: writing into a file nobody will open again loses texts."""
        return StoreUnavailable(self.replaced) if self.replaced else None

    def translate(self, exc: Exception) -> Exception:
        return self._unwritable_error(exc)

    def wrote(self) -> None:
        if self.unwritable:
            self.unwritable = ""  # a write reached the disk again

    def _unwritable_error(self, exc: Exception) -> Exception:
        """A SQLite error that means the disk or file cannot take writes becomes
        StoreUnavailable (and the store unhealthy); anything else is returned as it is."""
        if not isinstance(exc, sqlite3.Error):
            return exc
        text = str(exc)
        if not any(marker in text.lower() for marker in _UNWRITABLE):
            return exc
        if text != self.unwritable:
            log.error("store: %s cannot take writes: %s; texts are not stored until it can "
                      "(phones' texts stay in Asterisk's spool)", self.path, text)
        self.unwritable = text
        return StoreUnavailable(f"the store cannot take writes: {text}")

    # -- runs on the store thread --------------------------------------------------------

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        self._lock()
        try:
            existed = self.path.exists()
            empty = existed and self.path.stat().st_size == 0
            _private(self.path)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row  # rows are read by column name, never by position
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA wal_autocheckpoint=0")  # the engine checkpoints, on its thread
            db.execute("PRAGMA busy_timeout=5000")
            version = self._schema_version(db)
            # A damaged page anywhere (not only in the header) is found now, with the same
            # message as a damaged header, rather than as a traceback at the first query.
            damage = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if damage != "ok":
                db.close()
                log.debug("store: quick_check of %s: %s", self.path, damage)
                raise sqlite3.DatabaseError("database disk image is malformed")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} cannot be used as the bridge's store: {exc}. Point "
                             f"[store] path at a new file, or restore this one") from exc
        except OSError as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        if version > SCHEMA_VERSION:
            db.close()
            raise StoreError(
                f"{self.path} was written by a newer version of the bridge (store schema "
                f"{version}; this bridge knows up to {SCHEMA_VERSION}). Upgrade the bridge, or "
                f"point [store] path at another file; the store was left untouched")
        if version == 0:
            # A new store: every migration in one transaction, one log line.
            self._migrate(db, 0, SCHEMA_VERSION, created_at=time.time())
            self.created_now = True
            if empty:
                log.warning("store: %s existed but was empty (0 bytes); started a new store "
                            "there (schema %d)", self.path, SCHEMA_VERSION)
            else:
                log.info("store: created %s (schema %d)", self.path, SCHEMA_VERSION)
        for target in range(version, SCHEMA_VERSION) if version else range(0):
            log.info("store: upgrading %s from schema %d to %d", self.path, target, target + 1)
            self._migrate(db, target, target + 1)
        row = db.execute("SELECT value FROM store_info WHERE key='created_at'").fetchone()
        self.created_at = float(row[0]) if row else None
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        self._db = db

    @staticmethod
    def _migrate(db: sqlite3.Connection, start: int, end: int, *,
                 created_at: float | None = None) -> None:
        """Run migrations start..end-1 in one transaction."""
        db.execute("BEGIN IMMEDIATE")
        try:
            for target in range(start, end):
                for statement in _split_sql(_MIGRATIONS[target]):
                    db.execute(statement)
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (end,))
            if created_at is not None:
                db.execute("INSERT INTO store_info (key, value) VALUES ('created_at', ?)",
                           (repr(created_at),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @staticmethod
    def _schema_version(db: sqlite3.Connection) -> int:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is closed")
        return self._db

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # Every job already runs in its own savepoint of the group's transaction.
        return fn(self._conn())

    # -- inbound ---------------------------------------------------------------------------

    async def add_inbound(self, items: list[NewInbound]) -> list[InboundRow | None]:
        """Store texts in one transaction; None in place of a duplicate (same message_id)."""
        return await self._run(self._add_inbound, items, bulk=True)

    def _add_inbound(self, items: list[NewInbound]) -> list[InboundRow | None]:
        return self._transaction(lambda db: _insert_inbound(db, items))

    async def spool_mark(self, pbx: str = DEFAULT_PBX) -> float | None:
        """The newest Asterisk time of any text from a phone of PBX `pbx` the store ever took
        (None before the first): spooled texts older than this are already here, or were,
        before a prune."""
        return await self._run(self._spool_mark, pbx)

    def _spool_mark(self, pbx: str) -> float | None:
        row = self._conn().execute("SELECT asterisk_time FROM pbx_spool_mark WHERE pbx=?",
                                   (pbx,)).fetchone()
        return float(row[0]) if row else None

    async def waiting_inbound(self, *, channel: str | None = None,
                              limit: int | None = None) -> list[InboundRow]:
        """Inbound texts not yet known to be posted, oldest first: all of them, or the
        oldest `limit` of one `channel`."""
        return await self._run(self._waiting_inbound, channel, limit, bulk=True)

    async def waiting_channels(self) -> dict[str, int]:
        """The channels with inbound texts waiting, each with how many."""
        return await self._run(lambda: dict(self._conn().execute(
            "SELECT channel, count(*) FROM inbound WHERE state IN ('pending', 'posting')"
            " GROUP BY channel")), bulk=True)

    def _waiting_inbound(self, channel: str | None, limit: int | None) -> list[InboundRow]:
        where = " AND channel = ?" if channel is not None else ""
        cursor = self._conn().execute(
            "SELECT id, channel, endpoint, text_json, received_at, state, attempts, kind,"
            " conversation FROM inbound WHERE state IN ('pending', 'posting')" + where +
            " ORDER BY id LIMIT ?", (*((channel,) if channel is not None else ()),
                                     -1 if limit is None else limit))
        return [_inbound_row(r) for r in cursor]

    async def mark_inbound(self, ids: Iterable[int], state: InboundState, *,
                           error: str | None = None, slack_ts: str | None = None,
                           then_posting: Iterable[int] = (), channel: str = "",
                           echoes_done: Iterable[int] = ()) -> None:
        await self._run(self._mark_inbound, list(ids), state, error, slack_ts,
                        list(then_posting), channel, list(echoes_done))

    def _mark_inbound(self, ids: list[int], state: InboundState, error: str | None,
                      slack_ts: str | None, then_posting: list[int], channel: str,
                      echoes_done: list[int]) -> None:
        now = time.time()
        posting = ids + then_posting if state == "posting" else then_posting

        def update(db: sqlite3.Connection) -> None:
            if state == "posted":
                db.executemany("UPDATE inbound SET state='posted', posted_at=?, slack_ts=?,"
                               " last_error=NULL WHERE id=?",
                               [(now, slack_ts, row_id) for row_id in ids])
            elif state != "posting":
                db.executemany("UPDATE inbound SET state=?, last_error=? WHERE id=?",
                               [(state, error, row_id) for row_id in ids])
            if posting:
                db.executemany("UPDATE inbound SET state='posting', attempts=attempts+1"
                               " WHERE id=?", [(row_id,) for row_id in posting])
            if state == "posted" and echoes_done:
                db.executemany("UPDATE outbound SET feedback_channel=?, feedback_ts=?,"
                               " feedback_done=1 WHERE id=?",
                               [(channel, slack_ts, row_id) for row_id in echoes_done])
        self._transaction(update)

    async def move_inbound(self, ids: Iterable[int], channel: str) -> None:
        await self._run(self._move_inbound, list(ids), channel, bulk=True)

    def _move_inbound(self, ids: list[int], channel: str) -> None:
        self._transaction(lambda db: db.executemany(
            "UPDATE inbound SET channel=? WHERE id=?", [(channel, i) for i in ids]))

    # -- outbound --------------------------------------------------------------------------

    async def add_outbound(self, *, slack_user: str, slack_channel: str, endpoint: str,
                           destination: str, body: str, response_url: str | None,
                           segments_total: int, source: Source = "slash",
                           feedback_ts: str | None = None,
                           thread_ts: str | None = None, pbx: str = DEFAULT_PBX) -> OutboundRow:
        return await self._run(self._add_outbound, slack_user, slack_channel, endpoint,
                               destination, body, response_url, segments_total, source,
                               feedback_ts, thread_ts, pbx)

    def _add_outbound(self, slack_user: str, slack_channel: str, endpoint: str,
                      destination: str, body: str, response_url: str | None,
                      segments_total: int, source: Source, feedback_ts: str | None,
                      thread_ts: str | None, pbx: str) -> OutboundRow:
        accepted = self._accept_outbound(NewOutbound(
            slack_user=slack_user, slack_channel=slack_channel, endpoint=endpoint,
            destination=destination, body=body, response_url=response_url,
            segments_total=segments_total, source=source, feedback_ts=feedback_ts,
            thread_ts=thread_ts, pbx=pbx), None, None, None)
        assert accepted is not None  # no request ID: never a replay
        return accepted.row

    async def accept_outbound(self, new: NewOutbound, *, request_id: str | None = None,
                              audit: AuditEntry | None = None,
                              echo: NewInbound | None = None) -> Accepted | None:
        """Store a text to send with its audit entry, its echo and the Slack request that
        asked for it, in one transaction (see `StoreBackend.accept_outbound`)."""
        return await self._run(self._accept_outbound, new, request_id, audit, echo)

    def _accept_outbound(self, new: NewOutbound, request_id: str | None,
                         audit: AuditEntry | None,
                         echo: NewInbound | None) -> Accepted | None:
        now = time.time()

        def insert(db: sqlite3.Connection) -> Accepted | None:
            if request_id is not None and not _record_event(db, request_id):
                return None
            cursor = db.execute(
                "INSERT INTO outbound (slack_user, slack_channel, endpoint, destination, body,"
                " response_url, created_at, segments_total, source, feedback_channel,"
                " feedback_ts, thread_ts, pbx) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (new.slack_user, new.slack_channel, new.endpoint, new.destination, new.body,
                 new.response_url, now, new.segments_total, new.source, new.feedback_channel,
                 new.feedback_ts, new.thread_ts, new.pbx))
            assert cursor.lastrowid is not None
            row = new.stored(cursor.lastrowid, now)
            if audit is not None:
                _insert_audit(db, replace(audit, outbound_id=row.id))
            echo_row = None
            if echo is not None:
                [echo_row] = _insert_inbound(db, [echo_of(echo, row.id)])
            return Accepted(row=row, echo=echo_row)
        return self._transaction(insert)

    async def unfinished_outbound(self) -> list[OutboundRow]:
        """Texts still to send, and finished ones whose sender has not been told yet."""
        return await self._run(self._unfinished_outbound, bulk=True)

    def _unfinished_outbound(self) -> list[OutboundRow]:
        cursor = self._conn().execute(
            f"SELECT {_OUTBOUND_COLUMNS} FROM outbound WHERE state = 'queued' OR notified = 0"
            " ORDER BY id")
        return [_outbound_row(r) for r in cursor]

    async def get_outbound(self, row_id: int) -> OutboundRow | None:
        return await self._run(self._get_outbound, row_id)

    def _get_outbound(self, row_id: int) -> OutboundRow | None:
        row = self._conn().execute(f"SELECT {_OUTBOUND_COLUMNS} FROM outbound WHERE id=?",
                                   (row_id,)).fetchone()
        return _outbound_row(row) if row else None

    async def recent_outbound(self, slack_user: str, limit: int = 10) -> list[OutboundRow]:
        """A user's latest texts to phones, newest first (for the App Home)."""
        return await self._run(self._recent_outbound, slack_user, limit, bulk=True)

    def _recent_outbound(self, slack_user: str, limit: int) -> list[OutboundRow]:
        cursor = self._conn().execute(
            f"SELECT {_OUTBOUND_COLUMNS} FROM outbound WHERE slack_user=? ORDER BY id DESC"
            " LIMIT ?", (slack_user, limit))
        return [_outbound_row(r) for r in cursor]

    async def set_feedback_target(self, row_id: int, channel: str, ts: str, *,
                                  done: bool = False) -> None:
        """The Slack message that shows this text's state (e.g. its echo in the thread);
        `done` when that message already shows the final state."""
        await self._run(self._transaction, lambda db: db.execute(
            "UPDATE outbound SET feedback_channel=?, feedback_ts=?,"
            " feedback_done=MAX(feedback_done, ?) WHERE id=?",
            (channel, ts, int(done), row_id)))

    async def feedback_done(self, row_id: int) -> None:
        await self._run(self._transaction, lambda db: db.execute(
            "UPDATE outbound SET feedback_done=1 WHERE id=?", (row_id,)))

    # -- audit -----------------------------------------------------------------------------

    async def add_audit(self, entry: AuditEntry) -> None:
        await self._run(self._transaction, lambda db: _insert_audit(db, entry))

    # -- conversations -----------------------------------------------------------------------

    async def conversation(self, key: str) -> Conversation | None:
        return await self._run(self._conversation, key)

    def _conversation(self, key: str) -> Conversation | None:
        row = self._conn().execute("SELECT key, channel, thread_ts, last_activity FROM"
                                   " conversations WHERE key=?", (key,)).fetchone()
        return Conversation(key=row["key"], channel=row["channel"], thread_ts=row["thread_ts"],
                            last_activity=row["last_activity"]) if row else None

    async def start_conversation(self, *, key: str, channel: str, thread_ts: str,
                                 endpoint: str | None, now: float) -> None:
        def upsert(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO conversations (key, channel, thread_ts, last_activity)"
                       " VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
                       " channel=excluded.channel, thread_ts=excluded.thread_ts,"
                       " last_activity=excluded.last_activity", (key, channel, thread_ts, now))
            db.execute("INSERT OR REPLACE INTO threads (channel, thread_ts, conversation,"
                       " endpoint, started) VALUES (?, ?, ?, ?, ?)",
                       (channel, thread_ts, key, endpoint, now))
        await self._run(self._transaction, upsert)

    async def touch_conversation(self, key: str, now: float) -> None:
        await self._run(self._transaction, lambda db: db.execute(
            "UPDATE conversations SET last_activity=MAX(last_activity, ?) WHERE key=?",
            (now, key)))

    async def thread_owner(self, channel: str, thread_ts: str) -> ThreadOwner | None:
        """Which conversation a Slack thread belongs to (old threads included)."""
        return await self._run(self._thread_owner, channel, thread_ts)

    def _thread_owner(self, channel: str, thread_ts: str) -> ThreadOwner | None:
        row = self._conn().execute("SELECT conversation, endpoint FROM threads WHERE"
                                   " channel=? AND thread_ts=?", (channel, thread_ts)).fetchone()
        return ThreadOwner(conversation=row["conversation"],
                           endpoint=row["endpoint"]) if row else None

    async def first_sight_of_event(self, event_id: str) -> bool:
        """Record a Slack event ID; False if it was seen before (a retried delivery)."""
        return await self._run(self._first_sight, event_id)

    def _first_sight(self, event_id: str) -> bool:
        return self._transaction(lambda db: _record_event(db, event_id))

    async def forget_event(self, event_id: str) -> None:
        """Forget a recorded event ID, so its next sight counts as the first again."""
        await self._run(self._transaction, lambda db: db.execute(
            "DELETE FROM slack_events WHERE event_id=?", (event_id,)))

    async def claim_leases(self, holder: str, names: Iterable[str], ttl: float) -> set[str]:
        """Take the leases of `names` that are free or expired, renew those `holder` has,
        each for `ttl` seconds; the names `holder` holds now."""
        return await self._run(self._claim_leases, holder, list(names), ttl)

    def _claim_leases(self, holder: str, names: list[str], ttl: float) -> set[str]:
        def claim(db: sqlite3.Connection) -> set[str]:
            now = time.time()
            held = set()
            for name in names:
                cursor = db.execute(
                    "INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET holder=excluded.holder,"
                    " expires=excluded.expires"
                    " WHERE leases.holder=excluded.holder OR leases.expires < ?",
                    (name, holder, now + ttl, now))
                if cursor.rowcount == 1:
                    held.add(name)
            return held
        return self._transaction(claim)

    async def release_leases(self, holder: str, names: Iterable[str]) -> None:
        """Give up `holder`'s leases of `names` (a clean stop: the next holder need not wait
        for them to expire)."""
        listed = list(names)
        await self._run(self._transaction, lambda db: db.executemany(
            "DELETE FROM leases WHERE name=? AND holder=?", [(n, holder) for n in listed]))

    async def outbound_progress(self, row_id: int, segments_sent: int) -> None:
        await self._run(self._transaction, lambda db: db.execute(
            "UPDATE outbound SET segments_sent=? WHERE id=?", (segments_sent, row_id)))

    async def finish_outbound(self, row_id: int, state: OutboundState,
                              error: str | None = None, *,
                              segments_sent: int | None = None) -> None:
        """Record a text's outcome, in its row and in its audit entry (one transaction)."""
        now = time.time()

        def update(db: sqlite3.Connection) -> None:
            db.execute("UPDATE outbound SET state=?, last_error=?, finished_at=?,"
                       " segments_sent=COALESCE(?, segments_sent) WHERE id=?",
                       (state, error, now, segments_sent, row_id))
            db.execute("UPDATE audit SET result=?, reason=? WHERE outbound_id=?",
                       (state, error, row_id))
        await self._run(self._transaction, update)

    async def outbound_notified(self, *row_ids: int) -> None:
        await self._run(self._transaction, lambda db: db.executemany(
            "UPDATE outbound SET notified=1 WHERE id=?", [(i,) for i in row_ids]))

    async def prune(self, older_than: float, *, audit_older_than: float | None = None
                    ) -> Pruned:
        """Forget what was finished before unix time `older_than`: delivered texts, Slack
        event IDs, conversations idle since then and their threads (a reply in such an old
        thread is no longer mapped to its phone), and audit entries before
        `audit_older_than` (None: keep the audit trail).

        Keep texts longer than Asterisk's spool (about 25 h): their message IDs are what
        recognises a spooled text as already relayed. Deletes in batches of a few hundred
        rows, each its own store job, so texts arriving meanwhile wait for one batch at most.
        """
        total = Pruned(texts=0, threads=0, conversations=0, slack_events=0, audit=0)
        while True:
            batch, more = await self._run(self._prune, older_than, audit_older_than,
                                          _PRUNE_BATCH, bulk=True)
            total = Pruned(*(a + b for a, b in zip(astuple(total), astuple(batch),
                                                   strict=True)))
            if not more:
                return total

    def _prune(self, older_than: float, audit_older_than: float | None,
               limit: int) -> tuple[Pruned, bool]:
        def delete(db: sqlite3.Connection) -> tuple[Pruned, bool]:
            def batch(sql: str, before: float) -> int:
                return int(db.execute(sql, (before, limit)).rowcount)
            inbound = batch("DELETE FROM inbound WHERE id IN (SELECT id FROM inbound"
                            " WHERE state='posted' AND posted_at < ? LIMIT ?)", older_than)
            outbound = batch("DELETE FROM outbound WHERE id IN (SELECT id FROM outbound WHERE"
                             " state!='queued' AND notified=1 AND finished_at < ? LIMIT ?)",
                             older_than)
            events = batch("DELETE FROM slack_events WHERE event_id IN (SELECT event_id FROM"
                           " slack_events WHERE received_at < ? LIMIT ?)", older_than)
            conversations = batch("DELETE FROM conversations WHERE key IN (SELECT key FROM"
                                  " conversations WHERE last_activity < ? LIMIT ?)", older_than)
            # A thread still some conversation's current one stays, however old it is.
            threads = batch(
                "DELETE FROM threads WHERE rowid IN (SELECT rowid FROM threads WHERE started < ?"
                " AND NOT EXISTS (SELECT 1 FROM conversations c WHERE c.channel ="
                " threads.channel AND c.thread_ts = threads.thread_ts) LIMIT ?)", older_than)
            audit = 0 if audit_older_than is None else batch(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ? LIMIT ?)",
                audit_older_than)
            counts = (inbound, outbound, events, conversations, threads, audit)
            return (Pruned(texts=inbound + outbound, threads=threads,
                           conversations=conversations, slack_events=events, audit=audit),
                    any(count >= limit for count in counts))
        return self._transaction(delete)

    # -- reporting -------------------------------------------------------------------------

    async def backlog(self) -> Backlog:
        return await self._run(self._backlog)

    def _backlog(self) -> Backlog:
        db = self._conn()
        inbound = db.execute("SELECT COUNT(*), MIN(received_at) FROM inbound"
                             " WHERE state IN ('pending', 'posting')").fetchone()
        outbound = db.execute("SELECT COUNT(*), MIN(created_at) FROM outbound"
                              " WHERE state = 'queued'").fetchone()
        unnotified = db.execute("SELECT COUNT(*) FROM outbound WHERE state != 'queued'"
                                " AND notified = 0").fetchone()
        return Backlog(inbound_waiting=inbound[0], inbound_oldest=inbound[1],
                       outbound_waiting=outbound[0], outbound_oldest=outbound[1],
                       outbound_unnotified=unnotified[0])


_OUTBOUND_COLUMNS = (
    "id, slack_user, slack_channel, endpoint, destination, body, response_url, created_at,"
    " state, segments_sent, segments_total, last_error, notified, source, feedback_channel,"
    " feedback_ts, thread_ts, feedback_done, pbx")


def _private(path: Path) -> None:
    """Make the store readable by its owner only (0600), before SQLite opens it.

    It holds texts and Slack `response_url`s (anyone holding one can post as the app for 30
    minutes). SQLite creates `-wal` and `-shm` with the database file's permissions, so
    creating that one 0600 covers all three; files an older bridge made wider are narrowed.
    """
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = file.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                file.chmod(mode & 0o700)
            except PermissionError:  # not ours: say so, and carry on with what works
                log.warning("store: %s is readable by others (mode %03o) and cannot be "
                            "changed by this user: run `chmod 600 %s`", file, mode, file)
                continue
            log.warning("store: %s was readable by others (mode %03o); made it %03o",
                        file, mode, mode & 0o700)


def _outbound_row(r: sqlite3.Row) -> OutboundRow:
    return OutboundRow(id=r["id"], slack_user=r["slack_user"], slack_channel=r["slack_channel"],
                       endpoint=r["endpoint"], destination=r["destination"], body=r["body"],
                       response_url=r["response_url"], created_at=r["created_at"],
                       state=r["state"], segments_sent=r["segments_sent"],
                       segments_total=r["segments_total"], last_error=r["last_error"],
                       notified=bool(r["notified"]), source=r["source"],
                       feedback_channel=r["feedback_channel"], feedback_ts=r["feedback_ts"],
                       thread_ts=r["thread_ts"], feedback_done=bool(r["feedback_done"]),
                       pbx=r["pbx"])


def _inbound_row(r: sqlite3.Row) -> InboundRow:
    kind = EchoText if r["kind"] == "echo" else InboundText
    return InboundRow(id=r["id"], channel=r["channel"], endpoint=r["endpoint"],
                      text=kind(**json.loads(r["text_json"])), received_at=r["received_at"],
                      state=r["state"], attempts=r["attempts"],
                      conversation=r["conversation"] or "")


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script (ours: no semicolons inside literals)."""
    without_comments = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [s.strip() for s in without_comments.split(";") if s.strip()]


def _implements_the_interface(store: Store) -> StoreBackend:
    return store  # mypy checks here that the SQLite store is a complete StoreBackend


def read_schema_version(path: Path) -> int | None:
    """The schema version of the store file at `path`, read-only (`bridge check`); None when
    there is no file yet. StoreError if it is not a store."""
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro",
                                                uri=True)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if "schema_version" not in tables:
                return 0
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"{path} cannot be used as the bridge's store: {exc}") from exc
    return int(row[0]) if row and row[0] is not None else 0


def _record_event(db: sqlite3.Connection, event_id: str) -> bool:
    """Record a Slack event or request ID; False if it was recorded before."""
    cursor = db.execute("INSERT OR IGNORE INTO slack_events (event_id, received_at)"
                        " VALUES (?, ?)", (event_id, time.time()))
    return cursor.rowcount == 1


def _insert_audit(db: sqlite3.Connection, entry: AuditEntry) -> None:
    db.execute("INSERT INTO audit (at, slack_user, slack_channel, source, recipient, endpoint,"
               " destination, result, reason, outbound_id, text) VALUES"
               " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (entry.at, entry.slack_user, entry.slack_channel, entry.source,
                entry.recipient, entry.endpoint, entry.destination, entry.result,
                entry.reason, entry.outbound_id, entry.text))


def _insert_inbound(db: sqlite3.Connection, items: list[NewInbound]) -> list[InboundRow | None]:
    rows: list[InboundRow | None] = []
    for item in items:
        is_echo = isinstance(item.text, EchoText)
        cursor = db.execute(
            "INSERT OR IGNORE INTO inbound (message_id, channel, endpoint, text_json,"
            " received_at, kind, conversation, outbound_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (None if isinstance(item.text, EchoText) else item.text.event_id or None,
             item.channel, item.endpoint, text_json(item.text),
             item.received_at, "echo" if is_echo else "in", item.conversation,
             item.text.outbound_id if isinstance(item.text, EchoText) else None))
        if cursor.rowcount == 0:
            rows.append(None)
            continue
        assert cursor.lastrowid is not None
        rows.append(InboundRow(id=cursor.lastrowid, channel=item.channel,
                               endpoint=item.endpoint, text=item.text,
                               received_at=item.received_at, state="pending",
                               attempts=0, conversation=item.conversation))
    newest: dict[str, float] = {}  # per PBX
    for item in items:
        if isinstance(item.text, InboundText) and item.text.asterisk_time:
            newest[item.text.pbx] = max(newest.get(item.text.pbx, 0.0),
                                        item.text.asterisk_time)
    for pbx, at in newest.items():
        db.execute("INSERT INTO pbx_spool_mark (pbx, asterisk_time) VALUES (?, ?)"
                   " ON CONFLICT(pbx) DO UPDATE SET"
                   " asterisk_time=MAX(asterisk_time, excluded.asterisk_time)",
                   (pbx, at))
    return rows
