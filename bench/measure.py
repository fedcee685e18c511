"""The measurements: each one sets up what it needs, drives load, and returns plain dicts.

* `inbound_ladder`: sipp texts Asterisk at rising rates; the bare AMI baseline and the bridge
  each count what arrives (ceiling, throughput, loss).
* `inbound_latency`: a fixed rate for a fixed time; send-to-arrival percentiles, both ways.
* `outbound_ladder`: signed `/sip` slash commands at rising rates into the bridge's HTTP
  endpoint; ack latency, and texts reaching a sipp UAS.
* `burst`: 100 texts to one channel against a fake Slack limiting posts to 1/s per channel.
* `dialplan_curl`: the same sipp load through a CURL()-to-webhook dialplan instead of the
  bridge, and whether Asterisk's message handling backs up for everyone.

Every figure says how it was measured in its field names; `bench.report` adds the targets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import panoramisk
from asterisk.harness import SipPeer, free_port
from bridge_runner import ack_text
from sip_ua import SipPhone

from bench.bridge_proc import (
    AMI_SECRET,
    BOT_TOKEN,
    BURST,
    BURST_CHANNEL,
    CURL_PHONE,
    INBOUND,
    RECEIVER,
    SIGNING_SECRET,
    SPREAD,
    RunningBridge,
    caught_up,
    start_bridge,
)
from bench.sandbox import CURL_CONTEXT, BenchAsterisk
from bench.scaling import fill_store
from bench.sipp import SippRun
from bench.slack_side import Arrival, TimedFakeSlack, WebhookReceiver
from bench.watch import AmiCounter, ProcStats, ReferencePoster
from bridge.store.sqlite import Store

log = logging.getLogger("bench")

SPOOL_FAMILY = "slack-bridge-spool"  # bridge/asterisk/templates/extensions.conf keeps recent texts here

ArrivalsOf = Callable[[str], dict[int, Arrival]]

_run_ids = 0


def new_run(prefix: str) -> str:
    """A tag unique within this bench process; it goes into every text's marker."""
    global _run_ids
    _run_ids += 1
    return f"{prefix}{_run_ids}"


def percentiles(values_ms: Sequence[float]) -> dict[str, float | None]:
    if not values_ms:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values_ms)

    def pick(q: float) -> float:
        # nearest-rank: the smallest value with at least q of the samples at or below it
        index = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 1)) - 1))
        return round(ordered[index], 2)

    return {"p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99),
            "max_ms": round(ordered[-1], 2)}


@dataclass
class Lab:
    """The Asterisk every bridge and baseline measurement shares, and its phones' ports.

    The dialplan's spool is never cleared: it grows over the whole run as the dialplan leaves
    it, and the bridge runs share one store, as one bridge restarted would (so each new
    bridge knows which spooled texts it already has).
    """

    asterisk: BenchAsterisk
    uas_port: int
    store_dir: Path

    @classmethod
    async def start(cls) -> Lab:
        uas_port = free_port("udp")
        peers = [SipPeer(INBOUND, free_port("udp")), SipPeer(BURST, free_port("udp")),
                 SipPeer(RECEIVER, uas_port),
                 *(SipPeer(name, free_port("udp")) for name in SPREAD)]
        asterisk = BenchAsterisk(peers=peers, ami_secret=AMI_SECRET)
        await asterisk.start()
        return cls(asterisk, uas_port, Path(tempfile.mkdtemp(prefix="bench-store-")))

    async def stop(self) -> None:
        await self.asterisk.stop()
        shutil.rmtree(self.store_dir, ignore_errors=True)

    @property
    def store_path(self) -> Path:
        return self.store_dir / "bridge-store.sqlite3"

    async def spool_size(self) -> int:
        """How many texts the dialplan's spool holds right now."""
        listing = await self.asterisk.cli(f"database show {SPOOL_FAMILY}", timeout=60)
        return listing.count(f"/{SPOOL_FAMILY}/")

    def asterisk_stats(self) -> ProcStats:
        assert self.asterisk.pid is not None
        return ProcStats(self.asterisk.pid)


def new_fake_slack() -> TimedFakeSlack:
    return TimedFakeSlack(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET)


# The bridge paces its posts per channel (Slack allows ~1 post/s per channel) and combines
# waiting texts into one post. With the fake Slack unlimited, measurements of the bridge's own
# cost switch the pacing off (channel_rate = 0); the burst keeps the shipped defaults.
# Likewise its flood control: a phone over 5 texts a second (bursts of 30) has its further
# texts wait in the store and read back, combined. The bench's 20 phones carry every load
# (10 texts/s each at 200/s, 100 at 2,000/s), so with the shipped limit every run measured
# that path (a store read per post, a quarter of the CPU at 200/s); loads this size come
# from hundreds of phones, each under the limit. The limit is raised out of the way here.
UNPACED = {"channel_rate": 0, "inbound_rate": 10000, "inbound_burst": 100000}


async def _bridge_for(lab: Lab, slack: TimedFakeSlack, *,
                      delivery: dict[str, Any] | None = UNPACED,
                      catch_up: bool = True) -> RunningBridge:
    return await start_bridge(api_url=slack.api_url, ami_port=lab.asterisk.ami_port,
                              sip_port=lab.asterisk.sip_port, arrivals=slack.arrivals,
                              delivery=delivery, store_path=lab.store_path,
                              catch_up=catch_up)


# ------------------------------------------------------------------ inbound


# The arrivals between these two shares of a run (in arrival order) give its sustained rate.
SUSTAINED_SHARES = (0.1, 0.9)


def sustained_rate(received_ns: Sequence[int]) -> float | None:
    """Texts per second arriving over the middle of a run: the 10th to the 90th percentile of
    the arrival times (None for too few texts).

    `throughput_per_s` (every text over first sent to last arrived) holds one delivery time
    on top of the run: a relay with Slack's answer time in its path (each channel's next post
    leaves when the post before is answered, 50-150 ms) hands its last texts over ~150 ms
    after they came; over a 2.5 s run (5,000 texts at 2,000/s) that alone caps the bridge's
    ratio to a bare AMI client at about 0.94, whatever its speed. The sustained rate measures
    how fast texts flow through once they do: a relay that falls behind Asterisk stretches
    the middle of the run as much as its end.
    """
    ordered = sorted(received_ns)
    low = int(SUSTAINED_SHARES[0] * len(ordered))
    high = int(SUSTAINED_SHARES[1] * len(ordered)) - 1
    if high - low < 10:
        return None
    span = (ordered[high] - ordered[low]) / 1e9
    return round((high - low) / span, 1) if span > 0 else None


async def _wait_arrivals(arrivals: ArrivalsOf, run: str, want: int, *, idle_s: float,
                         cap_s: float) -> None:
    """Until `want` texts of `run` arrived, nothing new came for `idle_s`, or `cap_s` passed."""
    deadline = time.monotonic() + cap_s
    seen, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(arrivals(run))
        if count >= want:
            return
        if count != seen:
            seen, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > idle_s:
            return
        await asyncio.sleep(0.05)


SLOW_MS = 500.0  # a text slower than this counts in a run's `slow_texts`


async def send_texts(*, lab_sip_port: int, arrivals: ArrivalsOf, run: str, count: int,
                     rate: float, from_user: str | Sequence[str] = SPREAD,
                     idle_s: float = 3.0,
                     cap_s: float = 60.0,
                     watch: Mapping[str, ProcStats] | None = None,
                     duplicates: Callable[[str], int] | None = None) -> dict[str, Any]:
    """sipp sends `count` texts at `rate`; wait for them at the far end; summarise.

    `watch` names processes ("bridge", "asterisk") whose CPU time (and, for the bridge, peak
    RSS) is reported for the run.
    """
    watch = watch or {}
    before = {label: w.sample() for label, w in watch.items()}
    sipp = await SippRun.uac(asterisk_port=lab_sip_port, from_user=from_user,
                             to_user="bridge", run=run, count=count, rate=rate)
    try:
        if await sipp.wait(count / rate + 40) is None:
            log.warning("sipp (run %s) still running; stopping it", run)
        await _wait_arrivals(arrivals, run, count, idle_s=idle_s, cap_s=cap_s)
    finally:
        await sipp.stop()
    after = {label: w.sample() for label, w in watch.items()}
    stats = sipp.stats()
    got = arrivals(run)
    result: dict[str, Any] = {
        "rate_offered": rate, "sent": stats.created, "sip_202": stats.successful,
        "sip_failed": stats.failed, "sip_timeouts": stats.timeouts,
        "sip_retransmissions": stats.retransmissions, "delivered": len(got),
        "lost": max(0, count - len(got)), "sipp_exit": sipp.returncode,
        "duplicates": duplicates(run) if duplicates is not None else None,
    }
    if got:
        sent = [a.marker.sent_ns for a in got.values()]
        received = [a.received_ns for a in got.values()]
        span = (max(received) - min(sent)) / 1e9
        send_span = (max(sent) - min(sent)) / 1e9
        result["send_rate_actual"] = round((len(sent) - 1) / send_span, 1) if send_span else None
        result["throughput_per_s"] = round(len(got) / span, 1) if span > 0 else None
        result["duration_s"] = round(span, 3)
        result["sustained_per_s"] = sustained_rate(received)
        # the first and the last text's way through: a relay posting one message at a time
        # per channel hands its last texts over only when the post before comes back
        result["first_last_ms"] = [round((min(received) - min(sent)) / 1e6, 1),
                                   round((max(received) - max(sent)) / 1e6, 1)]
        result["latency"] = percentiles([(a.received_ns - a.marker.sent_ns) / 1e6
                                         for a in got.values()])
        # Where the tail is: texts slower than SLOW_MS, by when they were sent in the run.
        first = min(sent)
        slow = sorted((a.marker.sent_ns - first) / 1e9 for a in got.values()
                      if (a.received_ns - a.marker.sent_ns) / 1e6 > SLOW_MS)
        result["slow_texts"] = {"over_ms": SLOW_MS, "count": len(slow),
                                "sent_at_s": [round(slow[0], 2), round(slow[-1], 2)]
                                if slow else None}
    for label, a in after.items():
        cpu = a.cpu_s - before[label].cpu_s
        result[f"{label}_cpu_s"] = round(cpu, 2)
        result[f"{label}_cpu_s_per_1000"] = round(cpu / len(got) * 1000, 3) if got else None
        if label == "bridge":
            result["bridge_peak_rss_mb"] = round(a.peak_rss_mb, 1)
            result["bridge_rss_end_mb"] = round(a.rss_mb, 1)
    errors = sipp.errors()
    if errors:
        result["sipp_errors"] = errors
    sipp.cleanup()
    return result


async def baseline_runs(lab: Lab, rates: Sequence[float], count: int, *,
                        label: str) -> list[dict[str, Any]]:
    counter = AmiCounter(port=lab.asterisk.ami_port, username=lab.asterisk.ami_username,
                         secret=AMI_SECRET)
    await counter.start()
    results = []
    try:
        for rate in rates:
            run = new_run("b")
            result = await send_texts(lab_sip_port=lab.asterisk.sip_port,
                                      arrivals=counter.arrivals, run=run, count=count,
                                      rate=rate, watch={"asterisk": lab.asterisk_stats()},
                                      duplicates=counter.duplicates)
            results.append({"system": "baseline", "measure": label, **result})
            log.info("baseline %s %s/s: %s", label, rate, _brief(result))
    finally:
        await counter.stop()
    return results


async def bridge_runs(lab: Lab, rates: Sequence[float], count: int, *,
                      label: str) -> list[dict[str, Any]]:
    """One fresh bridge (and fake Slack) per rate, so each run's peak RSS is its own."""
    results = []
    for rate in rates:
        slack = new_fake_slack()
        await slack.start()
        bridge = None
        try:
            bridge = await _bridge_for(lab, slack)
            run = new_run("r")
            await bridge.start_profile(f"inbound-{label}-{rate:g}")
            result = await send_texts(lab_sip_port=lab.asterisk.sip_port,
                                      arrivals=slack.arrivals, run=run, count=count, rate=rate,
                                      watch={"bridge": bridge.stats,
                                             "asterisk": lab.asterisk_stats()},
                                      duplicates=slack.duplicates)
            result["posts"] = slack.posts_for(run)
            result["bridge_start_s"] = round(bridge.started_s, 2)
            # posted from the spool before the load began (texts of the turn before)
            result["backlog_at_start"] = bridge.backlog_at_start
            result["caught_up_s"] = round(bridge.caught_up_s, 2)
            result["spool_size"] = await lab.spool_size()
            results.append({"system": "bridge", "measure": label, **result})
            log.info("bridge %s %s/s: %s", label, rate, _brief(result))
        finally:
            if bridge is not None:
                await _stop_bridge(bridge)
            await slack.stop()
    return results


async def _stop_bridge(bridge: RunningBridge) -> None:
    """Stop a measured bridge; its log's end is shown if it did not exit cleanly."""
    code = await bridge.stop()
    if code != 0:
        log.warning("bridge exited %s:\n%s", code, bridge.process.log[-3000:])


async def side_by_side_runs(lab: Lab, rate: float, count: int, *,
                            label: str) -> list[dict[str, Any]]:
    """The bridge and the reference relay (`ReferencePoster`) at once, each with its own fake
    Slack, on the same texts: both take each UserEvent Asterisk emits at the same moment, so
    a stall of the machine delays both, and what differs between their latencies is what
    the bridge does. (Taking turns, the reference's own p99 moved 9 ms from one turn to the
    next, as much as the 10 ms judged.) One result for each."""
    bridge_slack, reference_slack = new_fake_slack(), new_fake_slack()
    await bridge_slack.start()
    await reference_slack.start()
    bridge = None
    poster = ReferencePoster(api_url=reference_slack.api_url, token=BOT_TOKEN,
                             port=lab.asterisk.ami_port, username=lab.asterisk.ami_username,
                             secret=AMI_SECRET)
    try:
        bridge = await _bridge_for(lab, bridge_slack)
        await poster.start()
        run = new_run("s")
        await bridge.start_profile(f"inbound-{label}-{rate:g}")
        result = await send_texts(lab_sip_port=lab.asterisk.sip_port,
                                  arrivals=bridge_slack.arrivals, run=run, count=count,
                                  rate=rate, watch={"bridge": bridge.stats,
                                                    "asterisk": lab.asterisk_stats()},
                                  duplicates=bridge_slack.duplicates)
        result["posts"] = bridge_slack.posts_for(run)
        await _wait_arrivals(reference_slack.arrivals, run, count, idle_s=3.0, cap_s=30.0)
        got = reference_slack.arrivals(run)
        reference = {
            "rate_offered": rate, "sent": result["sent"], "sip_202": result["sip_202"],
            "delivered": len(got), "lost": max(0, count - len(got)),
            "duplicates": reference_slack.duplicates(run),
            "posts": reference_slack.posts_for(run),
            "latency": percentiles([(a.received_ns - a.marker.sent_ns) / 1e6
                                    for a in got.values()]) if got else None}
        log.info("side by side %s %s/s: bridge %s; reference %s", label, rate,
                 _brief(result), _brief(reference))
        return [{"system": "reference", "measure": label, "side_by_side": True, **reference},
                {"system": "bridge", "measure": label, "side_by_side": True, **result}]
    finally:
        await poster.stop()
        if bridge is not None:
            await _stop_bridge(bridge)
        await bridge_slack.stop()
        await reference_slack.stop()


def _brief(result: dict[str, Any]) -> str:
    keys = ("sent", "sip_202", "delivered", "throughput_per_s", "duration_s")
    brief = {k: result.get(k) for k in keys}
    if result.get("latency"):
        brief["p99_ms"] = result["latency"].get("p99_ms")
    return str(brief)


# ------------------------------------------------------------------ outbound


_UAS_LINE = re.compile(r"out (\w+) #(\d+)\s+\S+\s+\S+\s+(\d{9,}\.\d+)")


def _uas_arrivals(lines: list[str], run: str) -> dict[int, int]:
    seen: dict[int, int] = {}
    for line in lines:
        match = _UAS_LINE.search(line)
        if match and match.group(1) == run:
            seconds, _, micros = match.group(3).partition(".")
            seen.setdefault(int(match.group(2)),
                            int(seconds) * 1_000_000_000 + int(micros.ljust(6, "0")[:6]) * 1000)
    return seen


async def _slash_load(url: str, requests: list[tuple[bytes, dict[str, str]]],
                      rate: float) -> tuple[list[tuple[int, float, str]], float, float]:
    """POST the signed commands open-loop at `rate`; (status, ack ms, ack text) for each."""
    results: list[tuple[int, float, str]] = [(0, 0.0, "")] * len(requests)
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(index: int, body: bytes, headers: dict[str, str]) -> None:
            began = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    text = await response.text()
                    results[index] = (response.status, (time.perf_counter() - began) * 1000,
                                      text)
            except (aiohttp.ClientError, TimeoutError) as exc:
                results[index] = (-1, (time.perf_counter() - began) * 1000, repr(exc))

        tasks: list[asyncio.Task[None]] = []
        started_wall = time.time()
        t0 = time.perf_counter()
        sent = 0
        while sent < len(requests):
            due = min(len(requests), int((time.perf_counter() - t0) * rate) + 1)
            while sent < due:
                body, headers = requests[sent]
                tasks.append(asyncio.create_task(one(sent, body, headers)))
                sent += 1
            await asyncio.sleep(0.001)
        send_span = time.perf_counter() - t0
        await asyncio.gather(*tasks)
    return results, started_wall, send_span


async def outbound_runs(lab: Lab, rates: Sequence[float], duration_s: float) -> list[dict[str, Any]]:
    """Per rate: a fresh bridge and a fresh sipp UAS; `rate * duration_s` /sip commands."""
    results = []
    for rate in rates:
        count = max(1, int(rate * duration_s))
        slack = new_fake_slack()
        await slack.start()
        bridge = None
        uas = None
        try:
            bridge = await _bridge_for(lab, slack)
            run = new_run("o")
            await bridge.start_profile(f"outbound-{rate:g}")
            url = bridge.process.events_url
            # Warm the HTTP path (bolt, signature check) without sending texts.
            for _ in range(10):
                body, headers = slack.signed_slash_command(slack.slash_command_payload(
                    text="list"))
                await bridge.process.post_signed(body, headers)
            uas = await SippRun.uas(port=lab.uas_port, count=count,
                                    timeout_s=duration_s + max(30.0, count / 50) + 30)
            await asyncio.sleep(0.5)  # let sipp bind its port
            requests = [slack.signed_slash_command(slack.slash_command_payload(
                text=f"{RECEIVER} out {run} #{i}")) for i in range(1, count + 1)]
            responses_before = len(slack.responses)
            before = bridge.stats.sample()
            cpu_before = before.cpu_s
            acks, started_wall, send_span = await _slash_load(url, requests, rate)
            # Wait for the texts at the phone: sipp exits by itself after `count`. The bridge
            # queues texts it cannot send yet, so wait while they keep coming (5 s without
            # one ends it), up to a cap; what is still missing then is reported as lost.
            deadline = time.monotonic() + max(30.0, count / 50)
            seen, last_change = -1, time.monotonic()
            while uas.returncode is None and time.monotonic() < deadline:
                if await uas.wait(0.25) is not None:
                    break
                got = len(_uas_arrivals(uas.logged_lines(), run))
                if got != seen:
                    seen, last_change = got, time.monotonic()
                elif time.monotonic() - last_change > 5:
                    break
            await uas.stop()
            # Let the response_url replies land before stopping the bridge: one for each
            # text whose command's answer did not carry the outcome already.
            told_in_answer = sum(1 for status, _, text in acks
                                 if status == 200 and "Sent to" in ack_text(text))
            with contextlib.suppress(AssertionError):
                await slack.wait_for_responses(responses_before + count - told_in_answer,
                                               timeout=5)
            after = bridge.stats.sample()
            arrived = _uas_arrivals(uas.logged_lines(), run)
            ack_ms = [ms for status, ms, _ in acks if status == 200]
            ok_acks = sum(1 for status, _, text in acks if status == 200 and (
                "Sending to" in ack_text(text) or "Sent to" in ack_text(text)))
            replies = slack.responses[responses_before:]
            result: dict[str, Any] = {
                "system": "bridge", "rate_offered": rate, "commands": count,
                "send_rate_actual": round((count - 1) / send_span, 1) if send_span else None,
                "acks_200": len(ack_ms), "acks_sending": ok_acks,
                "told_in_answer": told_in_answer,
                "ack_errors": [text[:120] for status, _, text in acks if status != 200][:3],
                "ack": percentiles(ack_ms),
                # Senders told "Sent": in the command's answer, or by a response_url reply.
                "replies_sent": told_in_answer + sum(1 for r in replies
                                                     if "Sent to" in str(r.get("text", ""))),
                "replies_not_sent": sum(1 for r in replies
                                        if "Not sent" in str(r.get("text", ""))),
                "received_at_phone": len(arrived), "lost": count - len(arrived),
                "bridge_cpu_s": round(after.cpu_s - cpu_before, 2),
                "bridge_peak_rss_mb": round(after.peak_rss_mb, 1),
            }
            if arrived:
                span = (max(arrived.values()) / 1e9) - started_wall
                result["throughput_per_s"] = round(len(arrived) / span, 1) if span > 0 else None
                result["duration_s"] = round(span, 3)
                result["bridge_cpu_s_per_1000"] = round(
                    (after.cpu_s - cpu_before) / len(arrived) * 1000, 3)
                result["bridge_sys_cpu_s_per_1000"] = round(
                    (after.sys_s - before.sys_s) / len(arrived) * 1000, 3)
            results.append(result)
            # The echoes still waiting are posted before this bridge stops: the next bridge,
            # on the same store, would start behind them (thousands after 1000/s, each
            # shown with a reaction call once the outcomes in memory are gone).
            try:
                await caught_up(bridge.process, timeout=120)
            except RuntimeError as exc:
                log.warning("outbound %s/s: %s", rate, exc)
            log.info("outbound %s/s: acks=%s p99=%s received=%s throughput=%s", rate,
                     len(ack_ms), result["ack"]["p99_ms"], len(arrived),
                     result.get("throughput_per_s"))
        finally:
            if uas is not None:
                await uas.stop()
                uas.cleanup()
            if bridge is not None:
                await bridge.stop()
            await slack.stop()
    return results


# ------------------------------------------------------------------ burst


async def burst(lab: Lab, *, texts: int, timeout_s: float) -> dict[str, Any]:
    """`texts` texts from one phone, fast, into one channel limited to 1 post/s (burst 1)."""
    slack = new_fake_slack()
    await slack.start()
    bridge = None
    try:
        # Its own channel: what other channels have waiting in the store does not hold it up.
        bridge = await _bridge_for(lab, slack, delivery=None, catch_up=False)
        slack.rate_limit("chat.postMessage", per_channel_per_second=1.0, burst=1)
        calls_before = slack.post_calls()
        run = new_run("u")
        began = time.time_ns()
        sipp = await SippRun.uac(asterisk_port=lab.asterisk.sip_port, from_user=BURST,
                                 to_user="bridge", run=run, count=texts, rate=1000)
        await sipp.wait(10)
        await _wait_arrivals(slack.arrivals, run, texts, idle_s=timeout_s,
                             cap_s=max(0.0, timeout_s - (time.time_ns() - began) / 1e9))
        await sipp.stop()
        got = slack.arrivals(run)
        sent = [a.marker.sent_ns for a in got.values()]
        first_sent = min(sent) if sent else began
        result: dict[str, Any] = {
            "texts": texts, "sip_202": sipp.stats().successful, "timeout_s": timeout_s,
            "visible": len(got), "all_visible": len(got) >= texts,
            "posts_used": slack.posts_for(run),
            "post_calls": slack.post_calls() - calls_before,
            "rate_limited_429": slack.post_calls() - calls_before - slack.posts_for(run),
            "channel": BURST_CHANNEL,
        }
        if got:
            last = max(a.received_ns for a in got.values())
            result["seconds_to_last_visible"] = round((last - first_sent) / 1e9, 2)
        if len(got) >= texts:
            result["seconds_to_all_visible"] = result["seconds_to_last_visible"]
        result["bridge_peak_rss_mb"] = round(bridge.stats.sample().peak_rss_mb, 1)
        sipp.cleanup()
        log.info("burst: %s", result)
        return result
    finally:
        if bridge is not None:
            # The bridge drains its backlog for up to 10 s on SIGTERM; that is expected here.
            await bridge.stop()
        await slack.stop()


# ------------------------------------------------------------------ dialplan-only


async def dialplan_curl(rates: Sequence[float], count: int, *, wait_s: float,
                        bridge_results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The CURL() dialplan at each rate, on a fresh Asterisk each, next to the bridge's run.

    While the CURL texts are being worked off, a probe text from a phone on the bridge's
    context is sent: how long its 202 and its AMI event take shows whether Asterisk's message
    handling is backed up for every phone, not only the CURL ones.
    """
    results = []
    for rate in rates:
        hook = WebhookReceiver(delay=0.1)
        await hook.start()
        peers = [SipPeer(CURL_PHONE, free_port("udp")), SipPeer(INBOUND, free_port("udp"))]
        asterisk = BenchAsterisk(peers=peers, contexts={CURL_PHONE: CURL_CONTEXT},
                                 webhook_url=hook.url, ami_secret=AMI_SECRET)
        counter = None
        try:
            await asterisk.start()
            counter = AmiCounter(port=asterisk.ami_port, username=asterisk.ami_username,
                                 secret=AMI_SECRET)
            await counter.start()
            assert asterisk.pid is not None
            stats = ProcStats(asterisk.pid)
            run = new_run("c")
            probe_task = asyncio.create_task(_probe_after(asterisk, counter, count / rate + 0.5))
            result = await send_texts(lab_sip_port=asterisk.sip_port, arrivals=hook.arrivals,
                                      run=run, count=count, rate=rate, from_user=CURL_PHONE,
                                      idle_s=wait_s, cap_s=wait_s,
                                      watch={"asterisk": stats})
            probe = await probe_task
            result["webhook_max_concurrent"] = hook.max_in_flight
            result["wait_cap_s"] = wait_s
            result["probe"] = probe
            result["asterisk_log_warnings"] = [
                line.strip() for line in asterisk.log_text().splitlines()
                if "WARNING" in line or "ERROR" in line][:5]
            same = [b for b in bridge_results if b.get("rate_offered") == rate]
            if same:
                result["bridge_same_load"] = {k: same[0].get(k) for k in (
                    "sent", "delivered", "throughput_per_s", "duration_s")}
            results.append({"system": "dialplan-curl", **result})
            log.info("dialplan curl %s/s: %s probe=%s", rate, _brief(result), probe)
        finally:
            if counter is not None:
                await counter.stop()
            run_dir = asterisk.run_dir
            await asterisk.stop()
            # A stalled Asterisk ignores SIGTERM and gets killed; the sandbox then keeps its
            # folder for debugging, which here is expected, not worth keeping.
            if run_dir is not None:
                shutil.rmtree(run_dir, ignore_errors=True)
            await hook.stop()
    return results


async def _probe_after(asterisk: BenchAsterisk, counter: AmiCounter,
                       delay: float) -> dict[str, Any]:
    """After `delay` s, one text from a bridge-context phone: time to 202, time to its event."""
    await asyncio.sleep(delay)
    events_before = counter.events
    async with SipPhone(INBOUND, asterisk_port=asterisk.sip_port) as phone:
        began = time.perf_counter()
        try:
            status = await phone.send_message("probe", to_user="bridge", timeout=10)
        except TimeoutError:
            return {"sip_status": None, "note": "no final answer within 10 s"}
        answered = time.perf_counter() - began
        deadline = began + 30
        while counter.events == events_before and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        event_s = time.perf_counter() - began if counter.events > events_before else None
    return {"sip_status": status, "sip_answer_ms": round(answered * 1000, 1),
            "ami_event_s": round(event_s, 3) if event_s is not None else None}



async def outbound_reference(lab: Lab, rates: Sequence[float],
                             duration_s: float) -> list[dict[str, Any]]:
    """Per rate: a bare AMI client (panoramisk, in this process) sends `rate * duration_s`
    MessageSend actions open-loop to a sipp UAS: Asterisk's own outbound ceiling, and what
    the least a client can spend per text (CPU of this process while it runs)."""
    results = []
    for rate in rates:
        count = max(1, int(rate * duration_s))
        run = new_run("p")
        uas = await SippRun.uas(port=lab.uas_port, count=count,
                                timeout_s=duration_s + max(30.0, count / 50) + 30)
        manager = panoramisk.Manager(loop=asyncio.get_running_loop(), host="127.0.0.1",
                                     port=lab.asterisk.ami_port,
                                     username=lab.asterisk.ami_username, secret=AMI_SECRET,
                                     ping_delay=10**6, reconnect_timeout=10**6)
        try:
            await asyncio.wait_for(manager.connect(), 10)
            while not manager.authenticated:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # let sipp bind its port
            cpu_before = time.process_time()
            started_wall = time.time()
            t0 = time.perf_counter()
            futures: list[asyncio.Future[Any]] = []
            sent = 0
            while sent < count:
                due = min(count, int((time.perf_counter() - t0) * rate) + 1)
                while sent < due:
                    sent += 1
                    body = f"{RECEIVER} out {run} #{sent}".encode()
                    futures.append(manager.send_action({
                        "Action": "MessageSend", "Destination": f"pjsip:{RECEIVER}",
                        "Base64Body": base64.b64encode(body).decode("ascii")}))
                # sleep until the next one is due (no polling: this CPU is the reference)
                await asyncio.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))
            send_span = time.perf_counter() - t0
            answers = await asyncio.wait_for(asyncio.gather(*futures), 60)
            cpu = time.process_time() - cpu_before
            deadline = time.monotonic() + max(30.0, count / 50)
            while uas.returncode is None and time.monotonic() < deadline:
                if await uas.wait(0.25) is not None:
                    break
                if len(_uas_arrivals(uas.logged_lines(), run)) >= count:
                    break
            await uas.stop()
            arrived = _uas_arrivals(uas.logged_lines(), run)
            result: dict[str, Any] = {
                "system": "ami-reference", "rate_offered": rate, "commands": count,
                "send_rate_actual": round((count - 1) / send_span, 1) if send_span else None,
                "accepted": sum(1 for a in answers if getattr(a, "success", False)),
                "received_at_phone": len(arrived), "lost": count - len(arrived),
                "client_cpu_s_per_1000": round(cpu / count * 1000, 3),
            }
            if arrived:
                span = (max(arrived.values()) / 1e9) - started_wall
                result["throughput_per_s"] = round(len(arrived) / span, 1) if span > 0 else None
            results.append(result)
            log.info("outbound reference %s/s: %s", rate, result)
        finally:
            manager.close()
            await uas.stop()
            uas.cleanup()
    return results


# ------------------------------------------------------------------ startup and store size


async def startup(lab: Lab, rows: int, scrapes: int = 50) -> dict[str, Any]:
    """A bridge started on an empty store and on one holding `rows` delivered texts: how
    long until its first text is visible in Slack, and what GET /metrics then takes."""
    result: dict[str, Any] = {"rows": rows}
    for label, size in (("empty", 0), ("full", rows)):
        folder = Path(tempfile.mkdtemp(prefix="bench-startup-"))
        path = folder / "store.sqlite3"
        await (await Store.open(path)).close()
        fill_store(path, size)
        slack = new_fake_slack()
        await slack.start()
        bridge = None
        try:
            bridge = await start_bridge(api_url=slack.api_url, ami_port=lab.asterisk.ami_port,
                                        sip_port=lab.asterisk.sip_port, arrivals=slack.arrivals,
                                        delivery=UNPACED, store_path=path)
            samples = []
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{bridge.process.port}/metrics"
                for _ in range(scrapes):
                    began = time.perf_counter()
                    async with session.get(url) as response:
                        await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"/metrics answered {response.status}")
                    samples.append((time.perf_counter() - began) * 1000)
            samples.sort()
            result[label] = {"first_post_s": round(bridge.first_post_s, 3),
                             "listening_s": round(bridge.listening_s, 3),
                             "metrics_ms": round(samples[len(samples) // 2], 2)}
        finally:
            if bridge is not None:
                await bridge.stop()
            await slack.stop()
            shutil.rmtree(folder, ignore_errors=True)
    result["metrics_ratio"] = round(result["full"]["metrics_ms"]
                                    / max(result["empty"]["metrics_ms"], 0.01), 2)
    return result
