"""Costs that must not grow with the size of the work: the directory and the store.

Pure measurements in this process, no Asterisk (the spool's cost is measured against a real
one in `bench.spool`):

* `directory_ratio`: matching a text's sender among 10,000 endpoints against 10.
* `store_scrape`: what `/metrics` asks the store (`Store.backlog`), and the other queries a
  start or a text runs, with 1,000,000 delivered texts in the store against an empty one;
  plus how long the first store write after opening a full store waits (a prune at start
  used to run first and scan everything).

Each returns a plain dict; `bench.report` adds the targets.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bridge.core.directory import Directory, Endpoint
from bridge.core.model import NewInbound
from bridge.core.texts import InboundText
from bridge.store.sqlite import Store

# ------------------------------------------------------------------ directory


def _directory(size: int) -> Directory:
    """`size` phones, each its own PJSIP endpoint."""
    return Directory(tuple(Endpoint(f"ep{i}", f"pjsip:ep{i}", "C1") for i in range(size)))


def _match_seconds(directory: Directory, senders: list[str], repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        for sender in senders:
            directory.by_asterisk_endpoint(sender)
        best = min(best, (time.perf_counter() - began) / len(senders))
    return best


def directory_ratio(small: int = 10, large: int = 10_000) -> dict[str, Any]:
    """Seconds per sender lookup (the endpoint Asterisk identified -> its directory entry)
    with `large` endpoints / with `small` (the worst cases of a walk over the list: the last
    endpoint, and one not in the directory). The two sizes are timed in turns and the best of
    each kept: a few microseconds per lookup are easily disturbed by whatever else the machine
    does."""
    result: dict[str, Any] = {"small": small, "large": large}
    cases = {}
    for label, size in (("small", small), ("large", large)):
        directory = _directory(size)
        senders = [f"ep{size - 1}", "stranger"] * 1500
        if directory.by_asterisk_endpoint(senders[0]) is None:
            raise AssertionError("the directory bench's sender does not match")
        cases[label] = (directory, senders)
    best = {"small": float("inf"), "large": float("inf")}
    for _ in range(10):
        for label, (directory, senders) in cases.items():
            best[label] = min(best[label], _match_seconds(directory, senders, repeats=1))
    for label, seconds in best.items():
        result[f"{label}_us_per_text"] = round(seconds * 1e6, 2)
    result["ratio"] = round(best["large"] / best["small"], 2)
    return result


# ------------------------------------------------------------------ store


def fill_store(path: Path, rows: int) -> None:
    """`rows` delivered texts from phones (posted within the last two days, so nothing is old
    enough to prune) and rows // 10 delivered texts to phones, written straight to the file;
    0 rows: only the spool mark, as a bridge that has run leaves it."""
    now = time.time()
    text = json.dumps({"event_id": "", "sender_uri": "sip:alice@10.0.0.5",
                       "display_name": "Alice", "body": "a short text of a few words",
                       "declared_bytes": 27, "to_uri": "sip:bridge@pbx", "exten": "bridge",
                       "problem": "", "asterisk_time": now})
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    batch = 50_000
    for start in range(0, rows, batch):
        db.executemany(
            "INSERT INTO inbound (message_id, channel, endpoint, text_json, received_at, state,"
            " posted_at, slack_ts, conversation) VALUES (?, 'C1', 'alice', ?, ?, 'posted', ?,"
            " '1.0', 'alice')",
            ((f"m{i}", text, now - 172_000 + i * 0.1, now - 172_000 + i * 0.1 + 0.2)
             for i in range(start, min(rows, start + batch))))
    db.executemany(
        "INSERT INTO outbound (slack_user, slack_channel, endpoint, destination, body,"
        " created_at, state, segments_sent, segments_total, finished_at, notified)"
        " VALUES ('U1', 'C1', 'alice', 'pjsip:alice', 'hi', ?, 'sent', 1, 1, ?, 1)",
        ((now - 172_000 + i, now - 172_000 + i + 0.1) for i in range(rows // 10)))
    # The newest text a running bridge had stored: its spool read at the next start skips
    # what Asterisk spooled before (bridge/asterisk/ami.py), as it would after a restart.
    db.execute("INSERT OR REPLACE INTO pbx_spool_mark (pbx, asterisk_time) VALUES ('default', ?)",
               (now,))
    db.commit()
    db.close()


async def _timed(call: Any, repeats: int) -> float:
    """Median milliseconds of `repeats` awaits of `call()`."""
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(samples), 3)


_QUERIES = {"backlog_ms": "backlog", "waiting_inbound_ms": "waiting_inbound",
            "unfinished_outbound_ms": "unfinished_outbound"}


async def _store_figures(paths: dict[str, Path], repeats: int) -> dict[str, dict[str, float]]:
    """Each store's figures; the queries' medians from calls taking turns between the
    stores (a few milliseconds of other work on the machine then hits both alike: measured
    one store after the other, the same query differed by 5x from run to run)."""
    stores = {label: await Store.open(path) for label, path in paths.items()}
    try:
        figures: dict[str, dict[str, float]] = {label: {} for label in stores}
        for key, name in _QUERIES.items():
            samples: dict[str, list[float]] = {label: [] for label in stores}
            for _ in range(repeats):
                for label, store in stores.items():
                    began = time.perf_counter()
                    await getattr(store, name)()
                    samples[label].append((time.perf_counter() - began) * 1000)
            for label in stores:
                figures[label][key] = round(statistics.median(samples[label]), 3)
        for label, store in stores.items():
            # The first text after a start: what a text's own store trip waits for when
            # the bridge's start-up work (resume, prune) is queued before it.
            prune = asyncio.ensure_future(store.prune(time.time() - 3 * 86400))
            began = time.perf_counter()
            text = InboundText(event_id=f"first-{time.time_ns()}", sender_uri="sip:alice@h",
                               display_name="", body="first", declared_bytes=5, to_uri="",
                               exten="", asterisk_time=time.time())
            await store.add_inbound([NewInbound(channel="C1", endpoint="alice", text=text,
                                                received_at=time.time())])
            figures[label]["first_write_ms"] = round((time.perf_counter() - began) * 1000, 3)
            await prune
            figures[label]["prune_ms"] = await _timed(
                lambda store=store: store.prune(time.time() - 3 * 86400), 3)
        return figures
    finally:
        for store in stores.values():
            await store.close()


async def store_scrape(rows: int = 1_000_000, repeats: int = 40) -> dict[str, Any]:
    """The store's hot queries on an empty store and on one holding `rows` delivered texts."""
    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        empty, full = Path(folder) / "empty.sqlite3", Path(folder) / "full.sqlite3"
        for path in (empty, full):
            await (await Store.open(path)).close()  # the schema, as the bridge makes it
        began = time.perf_counter()
        fill_store(full, rows)
        fill_s = time.perf_counter() - began
        figures = await _store_figures({"empty": empty, "full": full}, repeats)
        result: dict[str, Any] = {"rows": rows, "fill_s": round(fill_s, 1), **figures}
    result["scrape_ratio"] = round(result["full"]["backlog_ms"]
                                   / max(result["empty"]["backlog_ms"], 0.001), 2)
    return result


if __name__ == "__main__":  # a quick look: python -m bench.scaling [rows]
    import sys

    print(json.dumps(directory_ratio(), indent=1))
    print(json.dumps(asyncio.run(store_scrape(int(sys.argv[1]) if len(sys.argv) > 1
                                              else 1_000_000)), indent=1))
