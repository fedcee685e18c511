"""The embedded store: every text the bridge is responsible for, in SQLite, until it is delivered.

One file (`[store] path`), WAL mode, written from one dedicated thread so the event loop never
waits on disk. `synchronous=NORMAL` in WAL mode makes every commit survive a crash of the
bridge process (SIGKILL); only a power loss can take the last commits.

The schema is versioned (`schema_version`) and upgraded in place by `_MIGRATIONS`; a file
written by a newer bridge is refused with a clear error rather than touched.

Inbound texts (phone -> Slack) move pending -> posting -> posted. `posting` is written before
the Slack request, so after a crash the bridge knows which posts may already be in Slack.
Outbound texts (Slack -> phone) move queued -> sent | failed, and record how many segments
Asterisk has accepted so a restart resumes after the last one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from bridge.errors import BridgeError
from bridge.texts import EchoText, InboundText

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 3

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
]


class StoreError(BridgeError):
    """The store file cannot be used (newer schema, not a database, unwritable)."""


@dataclass(frozen=True)
class InboundRow:
    """Something to post into Slack: a phone's text, or the echo of a /sip text."""

    id: int
    channel: str
    endpoint: str | None
    text: InboundText | EchoText
    received_at: float
    state: str
    attempts: int
    conversation: str = ""


@dataclass(frozen=True)
class OutboundRow:
    id: int
    slack_user: str
    slack_channel: str
    endpoint: str
    destination: str
    body: str
    response_url: str | None
    created_at: float
    state: str
    segments_sent: int
    segments_total: int
    last_error: str | None
    notified: bool
    source: str = "slash"  # slash | reply
    feedback_channel: str | None = None
    feedback_ts: str | None = None
    thread_ts: str | None = None
    feedback_done: bool = False


@dataclass(frozen=True)
class NewInbound:
    channel: str
    endpoint: str | None
    text: InboundText | EchoText
    received_at: float
    conversation: str = ""


@dataclass(frozen=True)
class AuditEntry:
    """One send or refusal: who, to whom, when, what happened (the text only if configured)."""

    at: float
    slack_user: str
    slack_channel: str
    source: str
    recipient: str
    endpoint: str | None
    destination: str | None
    result: str
    reason: str | None
    outbound_id: int | None
    text: str | None


@dataclass(frozen=True)
class Conversation:
    key: str
    channel: str
    thread_ts: str
    last_activity: float


@dataclass(frozen=True)
class ThreadOwner:
    conversation: str
    endpoint: str | None


@dataclass(frozen=True)
class Backlog:
    inbound_waiting: int
    inbound_oldest: float | None  # unix time of the oldest waiting inbound text
    outbound_waiting: int
    outbound_oldest: float | None
    outbound_unnotified: int


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    raw: bool  # runs alone, outside the shared transaction (open, close)
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


# How many queued operations one transaction may take (group commit).
_GROUP_MAX = 256


class Store:
    """Async facade over one SQLite connection owned by one thread.

    Group commit: the thread runs every operation waiting for it in one transaction (each in
    a savepoint of its own, so one failing operation does not undo the others) and commits
    once, then answers them all. An operation's future resolves only after the commit that
    holds it, so "stored" still means on disk; under load, many texts share one commit.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="store", daemon=True)
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str | Path) -> Store:
        store = cls(Path(path))
        store._thread.start()
        try:
            await store._run(store._open, raw=True)
        except BaseException:
            store._jobs.put(None)
            raise
        return store

    async def close(self) -> None:
        await self._run(self._close, raw=True)
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    async def _run(self, fn: Callable[..., T], *args: Any, raw: bool = False) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, args, raw, loop, future))
        return await future

    def _serve(self) -> None:
        """The store thread: take waiting jobs in groups, one transaction per group."""
        while True:
            job = self._jobs.get()
            if job is None:
                return
            group = [job]
            stop = False
            while not job.raw and len(group) < _GROUP_MAX:
                try:
                    following = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    stop = True
                    break
                if following.raw:  # runs alone, after this group
                    self._settle(self._run_group(group))
                    group = [following]
                    break
                group.append(following)
            self._settle(self._run_raw(group[0]) if group[0].raw else self._run_group(group))
            if stop:
                return

    @staticmethod
    def _run_raw(job: _Job) -> list[tuple[_Job, bool, Any]]:
        try:
            return [(job, True, job.fn(*job.args))]
        except Exception as exc:  # noqa: BLE001 - raised in the awaiting coroutine instead
            return [(job, False, exc)]

    def _run_group(self, group: list[_Job]) -> list[tuple[_Job, bool, Any]]:
        outcomes: list[tuple[_Job, bool, Any]] = []
        try:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
        except Exception as exc:  # noqa: BLE001 - raised in every awaiting coroutine
            return [(job, False, exc) for job in group]
        for job in group:
            try:
                db.execute("SAVEPOINT job")
                value = job.fn(*job.args)
                db.execute("RELEASE job")
                outcomes.append((job, True, value))
            except Exception as exc:  # noqa: BLE001 - raised in the awaiting coroutine
                try:
                    db.execute("ROLLBACK TO job")
                    db.execute("RELEASE job")
                except sqlite3.Error:
                    pass
                outcomes.append((job, False, exc))
        try:
            db.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - nothing was stored: every job fails
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return [(job, False, exc) for job in group]
        return outcomes

    @staticmethod
    def _settle(outcomes: list[tuple[_Job, bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, done in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, done)
            except RuntimeError:  # the loop is closed; nobody is waiting any more
                pass

    # -- runs on the store thread --------------------------------------------------------

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            version = self._schema_version(db)
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
        for target in range(version, SCHEMA_VERSION):
            log.info("store: upgrading %s from schema %d to %d", self.path, target, target + 1)
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(_MIGRATIONS[target]):
                    db.execute(statement)
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (target + 1,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        self._db = db

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
        return await self._run(self._add_inbound, items)

    def _add_inbound(self, items: list[NewInbound]) -> list[InboundRow | None]:
        def insert(db: sqlite3.Connection) -> list[InboundRow | None]:
            rows: list[InboundRow | None] = []
            for item in items:
                is_echo = isinstance(item.text, EchoText)
                cursor = db.execute(
                    "INSERT OR IGNORE INTO inbound (message_id, channel, endpoint, text_json,"
                    " received_at, kind, conversation, outbound_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (None if isinstance(item.text, EchoText) else item.text.event_id or None,
                     item.channel, item.endpoint, json.dumps(asdict(item.text)),
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
            return rows
        return self._transaction(insert)

    async def waiting_inbound(self) -> list[InboundRow]:
        """Every inbound text not yet known to be posted, oldest first."""
        return await self._run(self._waiting_inbound)

    def _waiting_inbound(self) -> list[InboundRow]:
        cursor = self._conn().execute(
            "SELECT id, channel, endpoint, text_json, received_at, state, attempts, kind,"
            " conversation FROM inbound WHERE state != 'posted' ORDER BY id")
        return [InboundRow(id=r[0], channel=r[1], endpoint=r[2],
                           text=(EchoText if r[7] == "echo" else InboundText)(
                               **json.loads(r[3])),
                           received_at=r[4], state=r[5], attempts=r[6],
                           conversation=r[8] or "") for r in cursor]

    async def mark_inbound(self, ids: Iterable[int], state: str, *, error: str | None = None,
                           slack_ts: str | None = None) -> None:
        await self._run(self._mark_inbound, list(ids), state, error, slack_ts)

    def _mark_inbound(self, ids: list[int], state: str, error: str | None,
                      slack_ts: str | None) -> None:
        now = time.time()

        def update(db: sqlite3.Connection) -> None:
            for row_id in ids:
                if state == "posted":
                    db.execute("UPDATE inbound SET state='posted', posted_at=?, slack_ts=?,"
                               " last_error=NULL WHERE id=?", (now, slack_ts, row_id))
                elif state == "posting":
                    db.execute("UPDATE inbound SET state='posting', attempts=attempts+1"
                               " WHERE id=?", (row_id,))
                else:
                    db.execute("UPDATE inbound SET state=?, last_error=? WHERE id=?",
                               (state, error, row_id))
        self._transaction(update)

    async def move_inbound(self, ids: Iterable[int], channel: str) -> None:
        await self._run(self._move_inbound, list(ids), channel)

    def _move_inbound(self, ids: list[int], channel: str) -> None:
        self._transaction(lambda db: db.executemany(
            "UPDATE inbound SET channel=? WHERE id=?", [(channel, i) for i in ids]))

    # -- outbound --------------------------------------------------------------------------

    async def add_outbound(self, *, slack_user: str, slack_channel: str, endpoint: str,
                           destination: str, body: str, response_url: str | None,
                           segments_total: int, source: str = "slash",
                           feedback_ts: str | None = None,
                           thread_ts: str | None = None) -> OutboundRow:
        return await self._run(self._add_outbound, slack_user, slack_channel, endpoint,
                               destination, body, response_url, segments_total, source,
                               feedback_ts, thread_ts)

    def _add_outbound(self, slack_user: str, slack_channel: str, endpoint: str,
                      destination: str, body: str, response_url: str | None,
                      segments_total: int, source: str, feedback_ts: str | None,
                      thread_ts: str | None) -> OutboundRow:
        now = time.time()
        feedback_channel = slack_channel if feedback_ts else None

        def insert(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "INSERT INTO outbound (slack_user, slack_channel, endpoint, destination, body,"
                " response_url, created_at, segments_total, source, feedback_channel,"
                " feedback_ts, thread_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (slack_user, slack_channel, endpoint, destination, body, response_url, now,
                 segments_total, source, feedback_channel, feedback_ts, thread_ts))
            assert cursor.lastrowid is not None
            return cursor.lastrowid
        row_id = self._transaction(insert)
        return OutboundRow(id=row_id, slack_user=slack_user, slack_channel=slack_channel,
                           endpoint=endpoint, destination=destination, body=body,
                           response_url=response_url, created_at=now, state="queued",
                           segments_sent=0, segments_total=segments_total, last_error=None,
                           notified=False, source=source, feedback_channel=feedback_channel,
                           feedback_ts=feedback_ts, thread_ts=thread_ts)

    async def unfinished_outbound(self) -> list[OutboundRow]:
        """Texts still to send, and finished ones whose sender has not been told yet."""
        return await self._run(self._unfinished_outbound)

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
        return await self._run(self._recent_outbound, slack_user, limit)

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
        await self._run(self._transaction, lambda db: db.execute(
            "INSERT INTO audit (at, slack_user, slack_channel, source, recipient, endpoint,"
            " destination, result, reason, outbound_id, text) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.at, entry.slack_user, entry.slack_channel, entry.source, entry.recipient,
             entry.endpoint, entry.destination, entry.result, entry.reason, entry.outbound_id,
             entry.text)))

    # -- conversations -----------------------------------------------------------------------

    async def conversation(self, key: str) -> Conversation | None:
        return await self._run(self._conversation, key)

    def _conversation(self, key: str) -> Conversation | None:
        row = self._conn().execute("SELECT key, channel, thread_ts, last_activity FROM"
                                   " conversations WHERE key=?", (key,)).fetchone()
        return Conversation(*row) if row else None

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
        return ThreadOwner(*row) if row else None

    async def first_sight_of_event(self, event_id: str) -> bool:
        """Record a Slack event ID; False if it was seen before (a retried delivery)."""
        return await self._run(self._first_sight, event_id)

    def _first_sight(self, event_id: str) -> bool:
        def insert(db: sqlite3.Connection) -> bool:
            cursor = db.execute("INSERT OR IGNORE INTO slack_events (event_id, received_at)"
                                " VALUES (?, ?)", (event_id, time.time()))
            return cursor.rowcount == 1
        return self._transaction(insert)

    async def forget_event(self, event_id: str) -> None:
        """Forget a recorded event ID, so its next sight counts as the first again."""
        await self._run(self._transaction, lambda db: db.execute(
            "DELETE FROM slack_events WHERE event_id=?", (event_id,)))

    async def outbound_progress(self, row_id: int, segments_sent: int) -> None:
        await self._run(self._transaction, lambda db: db.execute(
            "UPDATE outbound SET segments_sent=? WHERE id=?", (segments_sent, row_id)))

    async def finish_outbound(self, row_id: int, state: str, error: str | None = None, *,
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

    async def outbound_notified(self, row_id: int) -> None:
        await self._run(self._transaction, lambda db: db.execute(
            "UPDATE outbound SET notified=1 WHERE id=?", (row_id,)))

    async def prune(self, older_than: float) -> int:
        """Forget delivered texts finished before unix time `older_than`; returns how many.

        Keep them longer than Asterisk's spool (about 22 h): their message IDs are what
        recognises a spooled text as already relayed.
        """
        return await self._run(self._prune, older_than)

    def _prune(self, older_than: float) -> int:
        def delete(db: sqlite3.Connection) -> int:
            inbound = db.execute("DELETE FROM inbound WHERE state='posted' AND posted_at < ?",
                                 (older_than,)).rowcount
            outbound = db.execute("DELETE FROM outbound WHERE state!='queued' AND notified=1"
                                  " AND finished_at < ?", (older_than,)).rowcount
            db.execute("DELETE FROM slack_events WHERE received_at < ?", (older_than,))
            return int(inbound) + int(outbound)
        return self._transaction(delete)

    # -- reporting -------------------------------------------------------------------------

    async def backlog(self) -> Backlog:
        return await self._run(self._backlog)

    def _backlog(self) -> Backlog:
        db = self._conn()
        inbound = db.execute("SELECT COUNT(*), MIN(received_at) FROM inbound"
                             " WHERE state != 'posted'").fetchone()
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
    " feedback_ts, thread_ts, feedback_done")


def _outbound_row(r: tuple[Any, ...]) -> OutboundRow:
    return OutboundRow(id=r[0], slack_user=r[1], slack_channel=r[2], endpoint=r[3],
                       destination=r[4], body=r[5], response_url=r[6], created_at=r[7],
                       state=r[8], segments_sent=r[9], segments_total=r[10], last_error=r[11],
                       notified=bool(r[12]), source=r[13], feedback_channel=r[14],
                       feedback_ts=r[15], thread_ts=r[16], feedback_done=bool(r[17]))


def _resolve(done: list[tuple[_Job, bool, Any]]) -> None:
    for job, ok, value in done:
        if job.future.cancelled():
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script (ours: no semicolons inside literals)."""
    without_comments = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [s.strip() for s in without_comments.split(";") if s.strip()]
