"""Group commit: one SQLite connection, its operations run on the event loop or one thread.

An operation asked for while the store thread has nothing to do, and marked neither `bulk` nor
`raw`, runs at once on the event loop, in a transaction of its own: a point write or read by
key takes tens of microseconds there (the commit writes the WAL into the page cache; with
`synchronous=NORMAL` it never waits for the disk), where handing it to a thread and back cost
two thread wakeups and about a tenth of the bridge's CPU per /sip text (measured).

Anything else goes to the store thread, which takes whatever operations are waiting (up to
`_GROUP_MAX`), runs each in a savepoint of its own inside one transaction (so one failing
operation does not undo the others), commits once, then answers them all: under load many
texts share one commit. `bulk` operations (many rows: a batch of texts, a read of every
waiting one, a prune) always go there, as do `raw` ones (open, close: alone, outside a
transaction). Operations are done in the order they were asked for: one runs on the loop only
when none asked before is still waiting for the thread.

Either way an operation answers only after the commit that holds it, so "stored" means in the
store file's WAL. Checkpoints (copying the WAL into the file, with an fsync: the one step that
waits for the disk) run only on the thread, every `_CHECKPOINT_EVERY` commits.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

# How many queued operations one transaction may take.
_GROUP_MAX = 256
# Commits between two checkpoints of the WAL (SQLite's own, every 1,000 pages, would run in
# whichever commit crosses the mark, on the event loop too): a /sip text's commit writes 8 to
# 16 pages, so about as many pages as SQLite's (measured: the WAL peaks at 4 MB).
_CHECKPOINT_EVERY = 64


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    raw: bool  # runs alone, outside the shared transaction (open, close)
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class WriteHealth(Protocol):
    """What the engine asks the store it serves about writing (on the store thread)."""

    def refusal(self) -> Exception | None:
        """An error to fail a whole group with instead of running it (None: run it)."""

    def translate(self, exc: Exception) -> Exception:
        """The error an operation's caller gets for `exc` (e.g. disk full -> StoreUnavailable)."""

    def wrote(self) -> None:
        """A commit that changed something reached the disk."""


class GroupCommit:
    """Runs store operations on one thread, many per transaction."""

    def __init__(self, connection: Callable[[], sqlite3.Connection], *, name: str,
                 health: WriteHealth) -> None:
        """`connection` is opened with `wal_autocheckpoint=0`: the engine checkpoints."""
        self._connection = connection
        self._health = health
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        # Jobs handed to the thread and not answered yet (changed on the loop's thread).
        self._outstanding = 0
        # The one event loop operations may run on (None: not known yet; False: jobs came
        # from more than one loop, so all go to the thread, which serialises them).
        self._loop: asyncio.AbstractEventLoop | None | bool = None
        self._commits = 0  # since the last checkpoint

    def start(self) -> None:
        self._thread.start()

    def abandon(self) -> None:
        """Let the thread end without waiting for it (the store never opened)."""
        self._jobs.put(None)

    async def stop(self) -> None:
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    async def run(self, fn: Callable[..., T], *args: Any, raw: bool = False,
                  bulk: bool = False) -> T:
        """Run `fn(*args)` in a transaction (`raw`: outside one, alone); answers after the
        commit that holds it. `bulk`: on the thread, whatever it is doing (many rows)."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            self._loop = False
        if not (raw or bulk) and self._outstanding == 0 and self._loop is loop \
                and self._thread.is_alive():
            ok, value = self._run_alone(fn, args)
            if ok and self._checkpoint_due():
                # Nobody waits for it; its error, if any, is dropped (the next one retries).
                self._hand(_checkpoint, (self._connection,), loop, raw=True).add_done_callback(
                    lambda done: done.cancelled() or done.exception())
            if ok:
                return value  # type: ignore[no-any-return]
            raise value
        return await self._hand(fn, args, loop, raw=raw)

    def _hand(self, fn: Callable[..., T], args: tuple[Any, ...],
              loop: asyncio.AbstractEventLoop, *, raw: bool = False) -> asyncio.Future[T]:
        """Queue a job for the thread; its future resolves on `loop`."""
        future: asyncio.Future[T] = loop.create_future()
        self._outstanding += 1
        self._jobs.put(_Job(fn, args, raw, loop, future))
        return future

    def _run_alone(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
        """One job in a transaction of its own (no savepoint: a failure undoes all of it)."""
        _, [outcome] = self._transaction([(fn, args)], savepoints=False)
        return outcome

    def _checkpoint_due(self) -> bool:
        """A transaction committed (on the loop or the thread, never both at once): True
        every `_CHECKPOINT_EVERY`-th time."""
        self._commits += 1
        if self._commits < _CHECKPOINT_EVERY:
            return False
        self._commits = 0
        return True

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
        committed, outcomes = self._transaction([(job.fn, job.args) for job in group],
                                                savepoints=True)
        if committed and self._checkpoint_due():
            try:
                _checkpoint(self._connection)
            except Exception:  # noqa: BLE001, S110 - the next one tries again
                pass
        return [(job, ok, value) for job, (ok, value) in zip(group, outcomes, strict=True)]

    def _transaction(self, calls: list[tuple[Callable[..., Any], tuple[Any, ...]]], *,
                     savepoints: bool) -> tuple[bool, list[tuple[bool, Any]]]:
        """Run `calls` in one transaction: whether it committed, and each call's (ok, value
        or error), in order.

        `savepoints`: each call in a savepoint of its own, so one failing undoes only
        itself (a group of callers); without, a failing call undoes the transaction (one
        caller). A refusal, a failed BEGIN or COMMIT fails every call: nothing was stored.
        """
        refusal = self._health.refusal()
        if refusal is not None:
            return False, [(False, refusal)] * len(calls)
        try:
            db = self._connection()
            changes = db.total_changes
            db.execute("BEGIN IMMEDIATE")
        except Exception as exc:  # noqa: BLE001 - raised in every caller
            return False, [(False, self._health.translate(exc))] * len(calls)
        outcomes: list[tuple[bool, Any]] = []
        for fn, args in calls:
            try:
                if savepoints:
                    db.execute("SAVEPOINT job")
                value = fn(*args)
                if savepoints:
                    db.execute("RELEASE job")
                outcomes.append((True, value))
            except Exception as exc:  # noqa: BLE001 - raised in the caller
                if not savepoints:
                    _rollback(db)
                    return False, [(False, self._health.translate(exc))]
                try:
                    db.execute("ROLLBACK TO job")
                    db.execute("RELEASE job")
                except sqlite3.Error:
                    pass
                outcomes.append((False, self._health.translate(exc)))
        try:
            db.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - nothing was stored: every call fails
            _rollback(db)
            return False, [(False, self._health.translate(exc))] * len(calls)
        if db.total_changes > changes:
            self._health.wrote()
        return True, outcomes

    def _settle(self, outcomes: list[tuple[_Job, bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, done in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._resolve, done)
            except RuntimeError:  # the loop is closed; nobody is waiting any more
                pass

    def _resolve(self, done: list[tuple[_Job, bool, Any]]) -> None:
        """On the jobs' loop: answer them (the thread is done with them, cancelled or not)."""
        self._outstanding -= len(done)
        for job, ok, value in done:
            if job.future.cancelled():
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)


def _rollback(db: sqlite3.Connection) -> None:
    """End the open transaction, if there is one, undoing it (its error is the caller's)."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _checkpoint(connection: Callable[[], sqlite3.Connection]) -> None:
    """Copy what the WAL holds into the store file, as far as no reader needs it."""
    connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

