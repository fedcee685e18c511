"""Group commit: one thread owns the SQLite connection and runs every waiting operation.

The thread takes whatever operations are waiting (up to `_GROUP_MAX`), runs each in a savepoint
of its own inside one transaction (so one failing operation does not undo the others), commits
once, then answers them all. An operation's future resolves only after the commit that holds
it, so "stored" still means on disk; under load many texts share one commit, and the event
loop never waits on the disk. `raw` operations (open, close) run alone, outside a transaction.
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
        self._connection = connection
        self._health = health
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def abandon(self) -> None:
        """Let the thread end without waiting for it (the store never opened)."""
        self._jobs.put(None)

    async def stop(self) -> None:
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    async def run(self, fn: Callable[..., T], *args: Any, raw: bool = False) -> T:
        """Run `fn(*args)` on the store thread; answers after the commit that holds it."""
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
        refusal = self._health.refusal()
        if refusal is not None:
            return [(job, False, refusal) for job in group]
        try:
            db = self._connection()
            changes = db.total_changes
            db.execute("BEGIN IMMEDIATE")
        except Exception as exc:  # noqa: BLE001 - raised in every awaiting coroutine
            error = self._health.translate(exc)
            return [(job, False, error) for job in group]
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
                outcomes.append((job, False, self._health.translate(exc)))
        try:
            db.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - nothing was stored: every job fails
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            error = self._health.translate(exc)
            return [(job, False, error) for job in group]
        if db.total_changes > changes:
            self._health.wrote()
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


def _resolve(done: list[tuple[_Job, bool, Any]]) -> None:
    for job, ok, value in done:
        if job.future.cancelled():
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)
