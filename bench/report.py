"""Targets and the printed table: pure functions of the results dict `bench.__main__` builds.

A target is met (pass), missed (MISS), or could not be judged from what ran (n/a). The
same verdicts go into the JSON file next to the raw figures.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

# The figures the project aims for (issue 7).
INBOUND_RATIO_MIN = 0.9
ADDED_LATENCY_P99_MAX_MS = 10.0
ACK_P99_MAX_MS = 50.0
ACK_AT_RATE = 100
OUTBOUND_MIN_PER_S = 500
BURST_MAX_S = 10.0
PEAK_RSS_MAX_MB = 80.0
# A run "keeps up" when what arrived per second is at least this share of what was offered.
KEEPS_UP = 0.95
# The inbound ratio is judged at these offered rates, whatever else ran (issue 13).
RATIO_AT_RATES = (1000.0, 2000.0)
# Costs that must not grow with the work (issue 13).
SPOOL_RATIO_MAX = 1.5  # Asterisk CPU per text, full spool (50,000) / bare dialplan
DIRECTORY_RATIO_MAX = 1.5  # sender match, 10,000 endpoints / 10
STORE_SCRAPE_RATIO_MAX = 3.0  # /metrics, 1,000,000 rows / empty store
FIRST_POST_MAX_S = 2.0  # first text visible after a start on a store of 1,000,000 rows
# Several replicas (issue 14): two on one PostgreSQL against one on SQLite, same load.
REPLICAS_RATIO_MIN = 0.9
REPLICAS_RATIO_AT = 1000.0
REPLICAS_ADDED_P99_MAX_MS = 20.0
# The replicas' median may sit this far below the single bridge's by jitter alone.
REPLICAS_P50_JITTER_MS = 1.0
REPLICAS_P99_AT = 200.0
FAILOVER_MAX_S = 5.0
# Outbound bridge CPU per text, as a multiple of the bare AMI client's (MessageSend through
# panoramisk, the run just before at the same rate): the same kind of work on the same
# machine, so the figure carries from one machine to another where milliseconds do not (one
# commit spent 2.9 ms per text on one machine, 4.4-6.2 on a slower one; its multiple was 5.0
# there, 4.8-5.5 here). The code before issue 13 spent 7.9x (this benchmark's first full run:
# 5.68 / 0.717 ms; 6.7-8.3x in turns with today's code on the slower machine); the target is
# half of that.
OUTBOUND_CPU_MAX_X = 3.95


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "MISS")


def _clean(run: dict[str, Any]) -> bool:
    """Nothing lost and every SIP MESSAGE answered 202."""
    return run.get("lost") == 0 and run.get("sip_failed", 0) == 0


def keeps_up(run: dict[str, Any]) -> bool:
    rate = run.get("send_rate_actual") or run.get("rate_offered") or 0
    return bool(run.get("throughput_per_s")) and run["throughput_per_s"] >= KEEPS_UP * min(
        rate, run.get("rate_offered") or rate)


def turns_at(ladder: Sequence[dict[str, Any]], rate: float
             ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The (baseline, bridge) pairs at `rate`, in the order they took turns."""
    bases = [r for r in ladder if r["system"] == "baseline" and r["rate_offered"] == rate]
    bridges = [r for r in ladder if r["system"] == "bridge" and r["rate_offered"] == rate]
    return list(zip(bases, bridges, strict=False))


def _ratio(base: dict[str, Any], bridge: dict[str, Any]) -> float | None:
    b, r = base.get("throughput_per_s"), bridge.get("throughput_per_s")
    return round(r / b, 3) if b and r else None


def inbound_ratio(ladder: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """bridge/baseline throughput at Asterisk's sustainable ceiling.

    That is the highest rate at which the baseline lost nothing and kept up (so Asterisk
    sustains it) and the bridge lost nothing either; the ratio then says how much of that
    ceiling the bridge delivers per second. A rate run in several turns (each a baseline
    run, then a bridge run) has the median of the turns' ratios: at 2,000/s the two cores
    are saturated and one pair swung from 0.6 to 0.9 with the same code.
    """
    per_rate: dict[float, float | None] = {}
    per_turn: dict[float, list[float | None]] = {}
    both = []
    for rate in sorted({r["rate_offered"] for r in ladder}):
        turns = turns_at(ladder, rate)
        if not turns:
            continue
        ratios = [_ratio(base, bridge) for base, bridge in turns]
        per_turn[rate] = ratios
        known = [ratio for ratio in ratios if ratio is not None]
        per_rate[rate] = round(statistics.median(known), 3) if len(known) == len(ratios) \
            else None
        if all(keeps_up(base) and _clean(base) and _clean(bridge) for base, bridge in turns):
            both.append(rate)
    if not both:
        return {"rate": None, "ratio": None, "per_rate": per_rate, "per_turn": per_turn}
    rate = both[-1]
    return {"rate": rate, "ratio": per_rate[rate], "per_rate": per_rate, "per_turn": per_turn}


def _turns_context(turns: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """What a ratio's turns say beside it: in how many Asterisk alone (the bare client's
    turn) kept up with the rate, and the ratio of the sustained rates (the middle of each
    run, see `measure.sustained_rate`), not judged. A bare client falling behind means the
    machine could not carry the rate even without the bridge: the ratio then measures
    which process the two cores served first more than it measures the bridge."""
    kept = sum(1 for base, _ in turns if keeps_up(base) and _clean(base))
    sustained = [round(bridge["sustained_per_s"] / base["sustained_per_s"], 3)
                 for base, bridge in turns
                 if base.get("sustained_per_s") and bridge.get("sustained_per_s")]
    said = f"Asterisk alone kept up in {kept} of {len(turns)} turns"
    if len(sustained) == len(turns):
        said += (f"; sustained-rate ratio {_median(sustained)} "
                 f"({', '.join(map(str, sustained))}; shown, not judged)")
    return said


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def add(name: str, value: Any, goal: str, ok: bool | None, note: str = "") -> None:
        targets.append({"target": name, "value": value, "goal": goal,
                        "verdict": _verdict(ok), "note": note})

    doubled = sum(r.get("duplicates") or 0 for section in ("inbound", "latency")
                  for r in results.get(section, []))
    if results.get("inbound") or results.get("latency"):
        add("texts doubled (inbound, latency runs)", doubled, "0", doubled == 0,
            "a text seen twice at the fake Slack or the AMI client")

    ladder = results.get("inbound", [])
    if ladder:
        ratio = inbound_ratio(ladder)
        results["inbound_ratio"] = ratio
        for rate in RATIO_AT_RATES:
            value = ratio["per_rate"].get(rate)
            turns = turns_at(ladder, rate)
            if not turns:
                add(f"inbound ratio bridge/baseline at {rate:g}/s", None,
                    f">= {INBOUND_RATIO_MIN}", None, f"no run at {rate:g}/s")
                continue
            lossless = all(bridge["delivered"] >= bridge["sip_202"] for _, bridge in turns)
            shown = "; ".join(f"{bridge.get('throughput_per_s')}/s vs "
                              f"{base.get('throughput_per_s')}/s" for base, bridge in turns)
            add(f"inbound ratio bridge/baseline at {rate:g}/s", value,
                f">= {INBOUND_RATIO_MIN}, nothing lost after 202",
                value is not None and value >= INBOUND_RATIO_MIN and lossless,
                f"throughput {shown}, runs taking turns"
                + (f" (median of {len(turns)} turns)" if len(turns) > 1 else "")
                + "; " + _turns_context(turns))

    latency = results.get("latency", [])
    # What the bridge adds is judged against the reference relay (the events posted to the
    # same kind of fake Slack, in order, one post at a time per channel): with Slack taking
    # 50-150 ms per post, any relay keeping a channel's order makes a text wait for the post
    # before it. Results without reference runs are judged against the bare AMI client.
    references = [r for r in latency if r["system"] == "reference" and r.get("latency")]
    bases = references or [r for r in latency if r["system"] == "baseline" and r.get("latency")]
    bridges = [r for r in latency if r["system"] == "bridge" and r.get("latency")]
    if bases and bridges:
        base_p99 = sum(r["latency"]["p99_ms"] for r in bases) / len(bases)
        bridge_p99 = sum(r["latency"]["p99_ms"] for r in bridges) / len(bridges)
        added = round(bridge_p99 - base_p99, 2)
        results["added_latency_p99_ms"] = added
        against = "reference relay" if references else "baseline"
        together = (", the two at once on the same texts"
                    if all(r.get("side_by_side") for r in bridges) else "")
        # The bridge's texts travel the reference's way and more: a negative figure means
        # the measurement is broken (runs not comparable), never that the bridge is fast.
        add("added inbound latency p99", f"{added} ms",
            f"0 <= added <= {ADDED_LATENCY_P99_MAX_MS:g} ms at {bridges[0]['rate_offered']:g}/s",
            0 <= added <= ADDED_LATENCY_P99_MAX_MS and all(_clean(b) for b in bridges),
            f"bridge p99 {bridge_p99:.2f} ms - {against} p99 {base_p99:.2f} ms (mean of "
            f"{len(bridges)} turns each{together})"
            + (" NEGATIVE: measurement error" if added < 0 else ""))

    outbound = results.get("outbound", [])
    if outbound:
        at_rate = next((r for r in outbound if r["rate_offered"] == ACK_AT_RATE), None)
        if at_rate is not None:
            p99 = at_rate["ack"]["p99_ms"]
            add("slash command ack p99", f"{p99} ms",
                f"<= {ACK_P99_MAX_MS:g} ms at {ACK_AT_RATE}/s",
                p99 is not None and p99 <= ACK_P99_MAX_MS
                and at_rate["acks_200"] == at_rate["commands"])
        else:
            add("slash command ack p99", None, f"<= {ACK_P99_MAX_MS:g} ms at {ACK_AT_RATE}/s",
                None, f"no run at {ACK_AT_RATE}/s")
        sustained = [r for r in outbound if r["lost"] == 0 and keeps_up(r)]
        best = max(sustained, key=lambda r: r["rate_offered"]) if sustained else None
        top = max((r.get("throughput_per_s") or 0 for r in outbound if r["lost"] == 0),
                  default=0)
        add("outbound texts/s, zero loss",
            f"{best['rate_offered']:g}/s kept up" if best else "none kept up",
            f">= {OUTBOUND_MIN_PER_S}/s",
            best is not None and best["rate_offered"] >= OUTBOUND_MIN_PER_S,
            f"highest offered rate delivered whole at >= {KEEPS_UP:.0%} of it; best zero-loss "
            f"throughput {top}/s")

    if outbound:
        # Judged at the lowest rate, where each text goes alone: the bare client and the
        # bridge take turns there, and the median turn's ratio counts (single turns of the
        # same code gave 3.5x to 4.8x in one session).
        low_rate = min(r["rate_offered"] for r in outbound)
        bridges = [r for r in outbound if r["rate_offered"] == low_rate
                   and r.get("bridge_cpu_s_per_1000") is not None]
        bares = [r for r in results.get("outbound_reference", [])
                 if r["rate_offered"] == low_rate and r.get("client_cpu_s_per_1000")]
        turns = sorted(((round(b["bridge_cpu_s_per_1000"] / r["client_cpu_s_per_1000"], 2),
                         b["bridge_cpu_s_per_1000"], r["client_cpu_s_per_1000"])
                        for r, b in zip(bares, bridges, strict=False)))
        times, cpu, bare = turns[(len(turns) - 1) // 2] if turns else (None, None, None)
        note = "no reference run at that rate"
        if turns:
            note = f"bare AMI client: {bare} ms per text"
            if len(turns) > 1:
                note += (f"; median of {len(turns)} turns: "
                         + "/".join(f"{t[0]:g}x" for t in turns))
        add("outbound bridge CPU per text / bare AMI client's",
            f"{times}x ({cpu} ms)" if times is not None else None,
            f"<= {OUTBOUND_CPU_MAX_X:g}x at {low_rate:g}/s (half of 7.9x)",
            None if times is None else times <= OUTBOUND_CPU_MAX_X, note)

    spool = results.get("spool")
    if spool:
        value = spool.get("ratio_full_to_bare")
        full = (spool.get("shipped_full") or {}).get("asterisk_cpu_ms_per_text")
        bare = (spool.get("bare") or {}).get("asterisk_cpu_ms_per_text")
        add("spool: Asterisk CPU per text, full spool / bare dialplan", value,
            f"<= {SPOOL_RATIO_MAX:g}", value is not None and value <= SPOOL_RATIO_MAX,
            f"{full} ms with {(spool.get('prefill') or {}).get('entries_in_spool')} spooled "
            f"texts, {bare} ms bare")

    scaling = results.get("scaling")
    if scaling:
        directory = scaling["directory"]
        add("directory: sender match, 10,000 endpoints / 10", directory["ratio"],
            f"<= {DIRECTORY_RATIO_MAX:g}", directory["ratio"] <= DIRECTORY_RATIO_MAX,
            f"{directory['large_us_per_text']} us vs {directory['small_us_per_text']} us")
        store = scaling["store"]
        add(f"store scrape (backlog), {store['rows']:,} rows / empty", store["scrape_ratio"],
            f"<= {STORE_SCRAPE_RATIO_MAX:g}", store["scrape_ratio"] <= STORE_SCRAPE_RATIO_MAX,
            f"{store['full']['backlog_ms']} ms vs {store['empty']['backlog_ms']} ms")

    startup = results.get("startup")
    if startup:
        add(f"GET /metrics, {startup['rows']:,} rows / empty store", startup["metrics_ratio"],
            f"<= {STORE_SCRAPE_RATIO_MAX:g}",
            startup["metrics_ratio"] <= STORE_SCRAPE_RATIO_MAX,
            f"{startup['full']['metrics_ms']} ms vs {startup['empty']['metrics_ms']} ms")
        first = startup["full"]["first_post_s"]
        add(f"first post after start, {startup['rows']:,} rows in the store", f"{first} s",
            f"<= {FIRST_POST_MAX_S:g} s", first <= FIRST_POST_MAX_S,
            f"empty store: {startup['empty']['first_post_s']} s; from listening on HTTP "
            f"(started), a phone texting right then")

    burst = results.get("burst")
    if burst:
        seconds = burst.get("seconds_to_all_visible")
        add(f"burst of {burst['texts']} to one channel visible",
            f"{seconds} s" if seconds is not None
            else f"{burst['visible']}/{burst['texts']} after {burst['timeout_s']:g} s",
            f"<= {BURST_MAX_S:g} s", seconds is not None and seconds <= BURST_MAX_S,
            f"{burst['posts_used']} posts, {burst['rate_limited_429']} calls answered 429")

    several = results.get("replicas")
    if several:
        _replica_targets(several, add)

    rss = [r["bridge_peak_rss_mb"] for section in ("inbound", "latency", "outbound")
           for r in results.get(section, []) if r.get("bridge_peak_rss_mb") is not None]
    if burst and burst.get("bridge_peak_rss_mb") is not None:
        rss.append(burst["bridge_peak_rss_mb"])
    if rss:
        add("bridge peak RSS (VmHWM)", f"{max(rss)} MB", f"<= {PEAK_RSS_MAX_MB:g} MB",
            max(rss) <= PEAK_RSS_MAX_MB, "highest over all bridge runs")
    return targets


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise_replicas(section: dict[str, Any]) -> dict[str, Any]:
    """The figures the targets judge: the throughput ratio, the added p99, the failover.
    Each system's figure is the median of its turns: one turn disturbed by something else on
    the machine (measured: a single bridge's p99 of 653 ms between turns of 143 ms) moves a
    mean by more than the target, and a median of three not at all."""
    def of(measure_name: str, system: str) -> list[dict[str, Any]]:
        return [r for r in section.get("runs", [])
                if r["measure"] == measure_name and r["system"] == system]

    summary: dict[str, Any] = {}
    single, pair = of("throughput", "single"), of("throughput", "replicas")
    if single and pair:
        a = _median([r.get("throughput_per_s") for r in single])
        b = _median([r.get("throughput_per_s") for r in pair])
        summary["throughput_rate"] = single[0]["rate_offered"]
        summary["throughput_single_per_s"] = round(a, 1) if a else None
        summary["throughput_replicas_per_s"] = round(b, 1) if b else None
        summary["throughput_ratio"] = round(b / a, 3) if a and b else None
    single, pair = of("latency", "single"), of("latency", "replicas")
    p99s = [[(r.get("latency") or {}).get("p99_ms") for r in runs] for runs in (single, pair)]
    p50s = [[(r.get("latency") or {}).get("p50_ms") for r in runs] for runs in (single, pair)]
    if single and pair and all(v is not None for vs in (*p99s, *p50s) for v in vs):
        a, b = _median(p99s[0]), _median(p99s[1])
        a50, b50 = _median(p50s[0]), _median(p50s[1])
        assert a is not None and b is not None and a50 is not None and b50 is not None
        summary["latency_rate"] = single[0]["rate_offered"]
        summary["p99_single_ms"] = round(a, 2)
        summary["p99_replicas_ms"] = round(b, 2)
        summary["added_p99_ms"] = round(b - a, 2)
        summary["added_p50_ms"] = round(b50 - a50, 2)
        summary["p99_single_turns_ms"] = p99s[0]
        summary["p99_replicas_turns_ms"] = p99s[1]
    if section.get("failover"):
        summary["failover_s"] = section["failover"].get("failover_s")
    return summary


def _replica_targets(several: dict[str, Any], add: Any) -> None:
    summary = summarise_replicas(several)
    several["summary"] = summary
    runs = several.get("runs", [])
    failover = several.get("failover") or {}
    everything = [*runs, *([failover] if failover else [])]
    lost = sum(max(0, r["sip_202"] - r["delivered"]) for r in everything)
    doubled = sum(r.get("duplicates") or 0 for r in everything)
    add("replicas: texts lost or doubled", f"{lost} lost, {doubled} doubled", "0 and 0",
        lost == 0 and doubled == 0, "every run of the section, the failover's included")

    rate = summary.get("throughput_rate")
    ratio = summary.get("throughput_ratio")
    name = f"replicas: inbound ratio two on PostgreSQL / one on SQLite at {REPLICAS_RATIO_AT:g}/s"
    if rate != REPLICAS_RATIO_AT:
        add(name, ratio, f">= {REPLICAS_RATIO_MIN}", None,
            f"no run at {REPLICAS_RATIO_AT:g}/s" + (f" (ran {rate:g}/s)" if rate else ""))
    else:
        clean = all(_clean(r) for r in runs if r["measure"] == "throughput")
        add(name, ratio, f">= {REPLICAS_RATIO_MIN}, nothing lost",
            ratio is not None and ratio >= REPLICAS_RATIO_MIN and clean,
            f"throughput {summary.get('throughput_replicas_per_s')}/s vs "
            f"{summary.get('throughput_single_per_s')}/s, runs taking turns (median of each)")

    name = "replicas: added inbound p99, two on PostgreSQL - one on SQLite"
    added = summary.get("added_p99_ms")
    at = summary.get("latency_rate")
    if added is None or at != REPLICAS_P99_AT:
        add(name, added, f"<= {REPLICAS_ADDED_P99_MAX_MS:g} ms at {REPLICAS_P99_AT:g}/s", None,
            f"no latency run at {REPLICAS_P99_AT:g}/s")
    else:
        # The replicas' texts travel the single bridge's way plus a network store, so their
        # median latency cannot be below the single bridge's: if it is (beyond a millisecond
        # of jitter), the runs were not comparable and nothing is judged. Their p99 may be:
        # the single bridge's turns have tail spikes the replicas' do not (measured: one turn
        # in three at 316 ms against 145 and 178, while the replicas' were 144-151); the
        # suspect, not pinned down, is the SQLite work in the single bridge's own process.
        added_p50 = summary["added_p50_ms"]
        comparable = added_p50 >= -REPLICAS_P50_JITTER_MS
        add(name, f"{added} ms",
            f"<= {REPLICAS_ADDED_P99_MAX_MS:g} ms at {REPLICAS_P99_AT:g}/s, p50 not lower",
            comparable and added <= REPLICAS_ADDED_P99_MAX_MS,
            f"replicas p99 {summary['p99_replicas_ms']:.2f} ms - single p99 "
            f"{summary['p99_single_ms']:.2f} ms (median of the turns: "
            f"{'/'.join(f'{v:g}' for v in summary['p99_replicas_turns_ms'])} vs "
            f"{'/'.join(f'{v:g}' for v in summary['p99_single_turns_ms'])}); p50 "
            f"{added_p50:+.2f} ms" + ("" if comparable else
                                      " LOWER: runs not comparable, measurement error"))

    if failover:
        seconds = failover.get("failover_s")
        add("replicas: failover, SIGKILL of a busy channel's holder -> its next post",
            f"{seconds} s" if seconds is not None else None, f"<= {FAILOVER_MAX_S:g} s",
            seconds is not None and seconds <= FAILOVER_MAX_S,
            f"{failover.get('rate_offered'):g}/s over 20 channels; killed the holder of "
            f"{failover.get('channel')}, which held {len(failover.get('victim_leases') or [])}"
            " leases")


def _render_replicas(several: dict[str, Any]) -> list[str]:
    parts = [("\n10. Replicas: two bridges on one PostgreSQL vs one on SQLite (same Asterisk, "
              "sipp load, fake Slack answering in 50-150 ms; taking turns at each rate)")]
    rows = []
    for r in several.get("runs", []):
        lat = r.get("latency") or {}
        rows.append([r["measure"], r["system"], r["rate_offered"], r.get("send_rate_actual"),
                     r["sip_202"], r["delivered"], r.get("duplicates"),
                     r.get("throughput_per_s"), lat.get("p50_ms"), lat.get("p99_ms"),
                     r.get("bridge_cpu_s_per_1000"),
                     "/".join(str(n) for n in r.get("channels_posted_by") or []) or None])
    parts.append(_table(["measure", "system", "rate", "sent/s", "202", "delivered", "dup",
                         "thru/s", "p50ms", "p99ms", "br cpu/1k", "channels a/b"], rows))
    failover = several.get("failover")
    if failover:
        parts.append(_table(
            ["failover", "rate", "202", "delivered", "dup", "killed holder of",
             "kill -> next post s", "p99ms"],
            [["SIGKILL", failover["rate_offered"], failover["sip_202"], failover["delivered"],
              failover.get("duplicates"), failover.get("channel"), failover.get("failover_s"),
              (failover.get("latency") or {}).get("p99_ms")]]))
    return parts


# ------------------------------------------------------------------ rendering


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def render(results: dict[str, Any], targets: Sequence[dict[str, Any]]) -> str:
    meta = results["meta"]
    header = (f"bench ({meta['mode']}): {meta['started']}, {meta['cpus']} CPUs, "
              f"bridge LOG_LEVEL=WARNING, {meta['seconds']:.0f} s")
    parts = [header]
    ladder = results.get("inbound", [])
    if ladder:
        parts.append("\n1. Inbound ceiling: sipp MESSAGE -> Asterisk -> (baseline: bare AMI "
                     "client | bridge -> fake Slack, no rate limit)")
        rows = []
        for r in ladder:
            lat = r.get("latency") or {}
            rows.append([r["system"], r["rate_offered"], r.get("send_rate_actual"), r["sent"],
                         r["sip_202"], r["delivered"], r["lost"], r.get("duplicates"),
                         r.get("throughput_per_s"), r.get("sustained_per_s"),
                         r.get("sip_retransmissions"),
                         lat.get("p50_ms"), lat.get("p99_ms"),
                         r.get("bridge_cpu_s_per_1000"), r.get("asterisk_cpu_s_per_1000"),
                         r.get("bridge_peak_rss_mb")])
        parts.append(_table(["system", "rate", "sent/s", "sent", "202", "delivered", "lost",
                             "dup", "thru/s", "sust/s", "retx", "p50ms", "p99ms", "br cpu/1k",
                             "ast cpu/1k", "br RSS MB"], rows))
        parts.append("   thru/s: texts over first sent to last arrived (judged); sust/s: the "
                     "middle 80% of arrivals (shown); retx: sipp's SIP retransmissions "
                     "(Asterisk answering late)")
        ratio = results.get("inbound_ratio") or {}
        parts.append("ratio bridge/baseline throughput per rate: "
                     + ", ".join(f"{k:g}/s: {_fmt(v)}" for k, v in
                                 (ratio.get("per_rate") or {}).items()))
    latency = results.get("latency", [])
    if latency:
        parts.append("\n2. Inbound latency (send time written by sipp into each text, "
                     "[timestamp]; arrival stamped at the fake Slack / the AMI client)")
        rows = [[r["system"], r["rate_offered"], r.get("duration_s"), r["delivered"], r["lost"],
                 *(r.get("latency") or {}).values(), r.get("bridge_cpu_s_per_1000"),
                 r.get("bridge_peak_rss_mb")] for r in latency]
        parts.append(_table(["system", "rate", "secs", "delivered", "lost", "p50ms", "p95ms",
                             "p99ms", "maxms", "br cpu/1k", "br RSS MB"], rows))
    outbound = results.get("outbound", [])
    if outbound:
        parts.append("\n3. Outbound: signed /sip slash commands over HTTP -> bridge -> AMI "
                     "MessageSend -> sipp UAS")
        rows = [[r["rate_offered"], r.get("send_rate_actual"), r["commands"], r["acks_200"],
                 r["ack"]["p50_ms"], r["ack"]["p99_ms"], r["received_at_phone"], r["lost"],
                 r.get("throughput_per_s"), "yes" if keeps_up(r) else "no",
                 r["replies_sent"], r.get("bridge_cpu_s_per_1000"), r["bridge_peak_rss_mb"]]
                for r in outbound]
        parts.append(_table(["rate", "sent/s", "commands", "acks 200", "ack p50ms",
                             "ack p99ms", "at phone", "lost", "texts/s", "kept up",
                             "told 'Sent'", "br cpu/1k", "br RSS MB"], rows))
    burst = results.get("burst")
    if burst:
        parts.append("\n4. Burst to one channel (fake Slack: 1 post/s per channel, burst 1, "
                     "429 + Retry-After over it)")
        parts.append(_table(["texts", "visible", "secs to all", "secs to last seen",
                             "timeout s", "posts", "429s"],
                            [[burst["texts"], burst["visible"],
                              burst.get("seconds_to_all_visible"),
                              burst.get("seconds_to_last_visible"), burst["timeout_s"],
                              burst["posts_used"], burst["rate_limited_429"]]]))
    curl = results.get("dialplan", [])
    if curl:
        parts.append("\n5. Dialplan-only alternative: CURL() to a webhook answering after "
                     "100 ms, same sipp load (bridge's run at the same rate alongside)")
        rows = []
        for r in curl:
            same = r.get("bridge_same_load") or {}
            probe = r.get("probe") or {}
            rows.append([r["rate_offered"], r["sent"], r["sip_202"], r["sip_timeouts"],
                         r["delivered"], r.get("throughput_per_s"), r.get("duration_s"),
                         r["wait_cap_s"], r["webhook_max_concurrent"],
                         probe.get("sip_answer_ms"), probe.get("ami_event_s"),
                         same.get("delivered"), same.get("throughput_per_s")])
        parts.append(_table(["rate", "sent", "202", "SIP timeouts", "at webhook", "thru/s",
                             "secs", "wait cap s", "max conc.", "probe 202 ms",
                             "probe event s", "bridge delivered", "bridge thru/s"], rows))
    reference = results.get("outbound_reference", [])
    if reference:
        parts.append("\n3b. Outbound reference: a bare AMI client sending MessageSend at the "
                     "same rates -> sipp UAS")
        parts.append(_table(["rate", "sent/s", "commands", "accepted", "at phone", "lost",
                             "texts/s", "client cpu/1k"],
                            [[r["rate_offered"], r.get("send_rate_actual"), r["commands"],
                              r["accepted"], r["received_at_phone"], r["lost"],
                              r.get("throughput_per_s"), r.get("client_cpu_s_per_1000")]
                             for r in reference]))
    spool = results.get("spool")
    if spool:
        parts.append(f"\n7. Spool cost: Asterisk CPU ms per text, {spool['texts_per_run']} texts "
                     f"at {spool['rate_offered']:g}/s per run, one Asterisk, in this order")
        rows = [[label, (spool.get(label) or {}).get("asterisk_cpu_ms_per_text"),
                 (spool.get(label) or {}).get("delivered"),
                 (spool.get(label) or {}).get("throughput_per_s")]
                for label in ("bare", "shipped_empty", "shipped_full", "bare_after")]
        parts.append(_table(["dialplan", "ast ms/text", "delivered", "thru/s"], rows))
        login = spool.get("bridge_login") or {}
        if login:
            parts.append(f"a bridge logging in to that spool (its store up to date): first "
                         f"live text posted {login.get('first_post_s')} s after it started, "
                         f"peak RSS {login.get('bridge_peak_rss_mb')} MB")
        parts.append(f"spool entries for the full run: "
                     f"{(spool.get('prefill') or {}).get('entries_in_spool')} (key shape "
                     f"{(spool.get('prefill') or {}).get('key_shape')})")
    scaling = results.get("scaling")
    if scaling:
        store = scaling["store"]
        parts.append(f"\n8. Scaling: directory {scaling['directory']['small']} vs "
                     f"{scaling['directory']['large']:,} endpoints; store empty vs "
                     f"{store['rows']:,} rows (median ms)")
        parts.append(_table(["store", *store["empty"].keys()],
                            [["empty", *store["empty"].values()],
                             ["full", *store["full"].values()]]))
    startup = results.get("startup")
    if startup:
        parts.append(f"\n9. Start on a store of {startup['rows']:,} delivered texts vs empty")
        parts.append(_table(["store", "spawn to listening s", "then first post s",
                             "GET /metrics ms"],
                            [[label, startup[label]["listening_s"],
                              startup[label]["first_post_s"],
                              startup[label]["metrics_ms"]] for label in ("empty", "full")]))
    if results.get("replicas"):
        parts += _render_replicas(results["replicas"])
    parts.append("\nTargets (6. memory and CPU: RSS and cpu/1k columns above; cpu/1k = CPU "
                 "seconds per 1,000 texts)")
    parts.append(_table(["target", "measured", "goal", "verdict", "how"],
                        [[t["target"], t["value"], t["goal"], t["verdict"], t["note"]]
                         for t in targets]))
    return "\n".join(parts)
