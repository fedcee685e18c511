"""Several replicas (issue 14): two bridges on one PostgreSQL store against one on SQLite.

Both systems see the same Asterisk, the same sipp load and a fake Slack of their own (answering
in 50-150 ms), and take turns at each rate, so the machine's load at that moment is shared:

* `throughput_turns`: `count` texts at a rate (1000/s), one bridge on the lab's SQLite store,
  then two replicas on the bench's PostgreSQL database; texts per second that reached Slack.
* `latency_turns`: a fixed rate (200/s) for a fixed time, the same way; send-to-post p99.
* `failover`: two replicas under a steady load; the one holding the lease of a busy channel
  (the first phone's) is SIGKILLed mid-stream; the time from the kill to the next post in
  that channel, and every text accepted (202) posted once.

The PostgreSQL server is a throwaway cluster (tests/postgres_cluster.py, which the bench
reuses as it reuses the other test helpers). The turns share one database: like the lab's
SQLite store it is shared by every run, so a new bridge knows what it already relayed. The
failover has a database of its own: each run has a new fake Slack, which knows none of the
threads an earlier run's posts started, and a post left "posting" by the killed replica
inside such a thread could not be found there (Slack answers thread_not_found) and would be
posted again. Against one Slack, as in production, the store and Slack agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from postgres_cluster import PostgresCluster, postgres_problem

from bench import measure
from bench.bridge_proc import SPREAD, RunningBridge, bridge_endpoints, start_bridge
from bench.slack_side import TimedFakeSlack

log = logging.getLogger("bench")

# The busy channel whose holder the failover kills: the first phone of the load's.
FAILOVER_PHONE = SPREAD[0]
FAILOVER_CHANNEL = next(e.channel for e in bridge_endpoints() if e.name == FAILOVER_PHONE)


class ReplicaStore:
    """The throwaway PostgreSQL cluster and the one database every replica run shares."""

    def __init__(self) -> None:
        problem = postgres_problem()
        if problem is not None:
            raise RuntimeError(f"the replicas section needs PostgreSQL: {problem}")
        self.cluster = PostgresCluster()
        self.url = ""

    def start(self) -> None:
        self.cluster.start()
        self.url = self.cluster.url(self.cluster.database())

    def fresh_url(self) -> str:
        """A new empty database of the cluster."""
        return self.cluster.url(self.cluster.database())

    def stop(self) -> None:
        self.cluster.stop()


async def _replica(lab: measure.Lab, slack: TimedFakeSlack, url: str) -> RunningBridge:
    return await start_bridge(api_url=slack.api_url, ami_port=lab.asterisk.ami_port,
                              sip_port=lab.asterisk.sip_port, arrivals=slack.arrivals,
                              delivery=measure.UNPACED, store_url=url)


async def _leases(bridge: RunningBridge) -> list[str]:
    """What the replica holds now, from its /healthz ([] when it does not answer)."""
    url = f"http://127.0.0.1:{bridge.process.port}/healthz"
    try:
        async with aiohttp.ClientSession() as session, session.get(
                url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return []
    return list((body.get("replica") or {}).get("leases") or [])


async def _pair(lab: measure.Lab, slack: TimedFakeSlack, url: str) -> list[RunningBridge]:
    replicas: list[RunningBridge] = []
    try:
        for _ in range(2):
            replicas.append(await _replica(lab, slack, url))
    except BaseException:
        for bridge in replicas:
            with contextlib.suppress(Exception):
                await bridge.stop()
        raise
    return replicas


async def _stop_all(replicas: Sequence[RunningBridge]) -> list[int]:
    codes = []
    for bridge in replicas:
        code = await bridge.stop()
        codes.append(code)
        if code not in (0, -signal.SIGKILL):
            log.warning("replica exited %s:\n%s", code, bridge.process.log[-3000:])
    return codes


async def replicas_run(lab: measure.Lab, store: ReplicaStore, *, rate: float, count: int,
                       label: str) -> dict[str, Any]:
    """Two replicas on the PostgreSQL store, started fresh with a fresh fake Slack."""
    slack = measure.new_fake_slack()
    await slack.start()
    replicas: list[RunningBridge] = []
    try:
        replicas = await _pair(lab, slack, store.url)
        run = measure.new_run("q")
        for number, bridge in enumerate(replicas):
            await bridge.start_profile(f"replica{number}-{label}-{rate:g}")
        watch = {f"replica{i}": bridge.stats for i, bridge in enumerate(replicas)}
        result = await measure.send_texts(lab_sip_port=lab.asterisk.sip_port,
                                          arrivals=slack.arrivals, run=run, count=count,
                                          rate=rate, watch=watch,
                                          duplicates=slack.duplicates)
        cpu = sum(result.get(f"{name}_cpu_s", 0.0) for name in watch)
        result["bridge_cpu_s"] = round(cpu, 2)
        result["bridge_cpu_s_per_1000"] = (round(cpu / result["delivered"] * 1000, 3)
                                           if result["delivered"] else None)
        result["bridge_peak_rss_mb"] = round(max(b.stats.sample().peak_rss_mb
                                                 for b in replicas), 1)
        held = [await _leases(bridge) for bridge in replicas]
        result["leases_held"] = [sorted(h) for h in held]
        result["channels_posted_by"] = [sum(1 for n in h if n.startswith("channel:"))
                                        for h in held]
        result["posts"] = slack.posts_for(run)
        log.info("replicas %s %s/s: %s leases=%s", label, rate, measure._brief(result),
                 result["channels_posted_by"])
        return {"system": "replicas", "measure": label, **result}
    finally:
        await _stop_all(replicas)
        await slack.stop()


async def single_run(lab: measure.Lab, *, rate: float, count: int,
                     label: str) -> dict[str, Any]:
    """One bridge on the lab's SQLite store (the bench's usual bridge run)."""
    [result] = await measure.bridge_runs(lab, (rate,), count, label=label)
    return {**result, "system": "single"}


async def turns(lab: measure.Lab, store: ReplicaStore, *, rate: float, count: int,
                label: str, rounds: int) -> list[dict[str, Any]]:
    """single, replicas, single, replicas, ...: `rounds` turns each at `rate`."""
    runs: list[dict[str, Any]] = []
    for _ in range(rounds):
        runs.append(await single_run(lab, rate=rate, count=count, label=label))
        runs.append(await replicas_run(lab, store, rate=rate, count=count, label=label))
    return runs


async def failover(lab: measure.Lab, store: ReplicaStore, *, rate: float, seconds: float,
                   kill_after_s: float) -> dict[str, Any]:
    """Two replicas, `rate` texts/s for `seconds`; after `kill_after_s` the holder of the
    busy channel's lease is SIGKILLed. From the kill to that channel's next post."""
    slack = measure.new_fake_slack()
    await slack.start()
    replicas: list[RunningBridge] = []
    count = int(rate * seconds)
    try:
        replicas = await _pair(lab, slack, store.fresh_url())
        run = measure.new_run("f")
        lease = f"channel:{FAILOVER_CHANNEL}"

        async def kill_holder() -> dict[str, Any]:
            await asyncio.sleep(kill_after_s)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                held = [await _leases(bridge) for bridge in replicas]
                holders = [i for i, names in enumerate(held) if lease in names]
                if holders:
                    victim = holders[0]
                    before = len(slack.arrivals(run))
                    killed_ns = time.time_ns()
                    os.kill(replicas[victim].pid, signal.SIGKILL)
                    return {"victim": victim, "victim_leases": sorted(held[victim]),
                            "survivor_leases_before": sorted(held[1 - victim]),
                            "killed_ns": killed_ns, "texts_visible_at_kill": before}
                await asyncio.sleep(0.1)
            return {"victim": None, "note": f"no replica held {lease}"}

        killer = asyncio.create_task(kill_holder())
        result = await measure.send_texts(lab_sip_port=lab.asterisk.sip_port,
                                          arrivals=slack.arrivals, run=run, count=count,
                                          rate=rate, duplicates=slack.duplicates,
                                          idle_s=8.0)
        kill = await killer
        result["rate_offered"] = rate
        result["channel"] = FAILOVER_CHANNEL
        killed_ns = kill.pop("killed_ns", None)
        result.update(kill)
        if killed_ns is not None:
            after = [ns for channel, ns in slack.post_times
                     if channel == FAILOVER_CHANNEL and ns > killed_ns]
            result["failover_s"] = round((min(after) - killed_ns) / 1e9, 3) if after else None
            survivor = replicas[1 - kill["victim"]]
            result["survivor_leases_after"] = sorted(await _leases(survivor))
        log.info("replicas failover: %s", {k: result.get(k) for k in (
            "sent", "sip_202", "delivered", "duplicates", "failover_s", "victim_leases")})
        return result
    finally:
        await _stop_all(replicas)
        await slack.stop()
