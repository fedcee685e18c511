"""What the shipped dialplan's spool costs Asterisk, against a real one: CPU per text with the
spool empty and with a full spool (50,000 texts), next to a bare dialplan that only emits the
UserEvent.

The bare dialplan is the shipped extensions.conf with every spool line taken out and its
contexts renamed, so it is exactly the rest of the work each text costs. The full spool is
made the way the dialplan makes it: one text through the shipped context shows the key
shape, and 50,000 entries of that shape (other times, other hashes, same hour) are put into
AstDB over AMI before the measured texts. The spool is never cleared in between: the shipped
runs leave it as the dialplan leaves it.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from asterisk.harness import SipPeer, free_port

from bench.bridge_proc import AMI_SECRET, INBOUND, start_bridge
from bench.measure import new_fake_slack, new_run, send_texts
from bench.sandbox import BenchAsterisk
from bench.scaling import fill_store
from bench.watch import AmiCounter, ProcStats
from bridge.asterisk.snippets import INBOUND_CONTEXT
from bridge.sandbox.launcher import AmiUser
from bridge.store.sqlite import Store

BARE_PHONE = "benchbare"
BARE_CONTEXT = "bench-bare-inbound"
_ADMIN = AmiUser(name="benchadmin", secret="bench-admin-secret-77", read="system",
                 write="system", eventfilters=("Event: FullyBooted",))
_KEY = re.compile(r"^(/slack-bridge-spool/\S+)\s*:\s*(.*)$", re.MULTILINE)


def bare_dialplan(shipped: str) -> str:
    """The shipped dialplan without its spool: every line about it and its own contexts."""
    lines: list[str] = []
    keep = True
    for line in shipped.splitlines():
        stripped = line.split(";", 1)[0].rstrip()
        if stripped.startswith("["):
            # [globals] (the event token) is the main dialplan's: repeating the shipped
            # placeholder here would override the token the sandbox set there.
            keep = "spool" not in stripped and stripped != "[globals]"
        if not keep or not stripped:
            continue
        if re.search(r"spool|SLACK_BRIDGE_KEY|SLACK_BRIDGE_HOUR|SLACK_BRIDGE_MINUTE", stripped):
            continue
        lines.append(stripped.replace(INBOUND_CONTEXT, BARE_CONTEXT))
    return "\n; bench/spool.py: the shipped dialplan without its spool\n" + "\n".join(lines) + "\n"


class SpoolAsterisk(BenchAsterisk):
    """The bench Asterisk plus a phone whose texts run the bare dialplan."""

    def _extensions_conf(self) -> str:
        return super()._extensions_conf() + bare_dialplan(self._shipped_snippet(
            "extensions.conf"))


async def _ami_put_many(port: int, entries: list[tuple[str, str, str]]) -> None:
    """DBPut every (family, key, value) over one AMI session, pipelined."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # banner
        writer.write(f"Action: Login\r\nUsername: {_ADMIN.name}\r\nSecret: {_ADMIN.secret}"
                     f"\r\n\r\n".encode())
        answers = 0
        for start in range(0, len(entries), 1000):
            for family, key, value in entries[start:start + 1000]:
                writer.write(f"Action: DBPut\r\nFamily: {family}\r\nKey: {key}\r\n"
                             f"Val: {value}\r\n\r\n".encode())
            await writer.drain()
        deadline = time.monotonic() + 120
        while answers < len(entries) + 1 and time.monotonic() < deadline:
            line = await asyncio.wait_for(reader.readline(), 30)
            if line.startswith(b"Response:"):
                answers += 1
    finally:
        writer.close()


async def _prefill(asterisk: SpoolAsterisk, entries: int) -> dict[str, Any]:
    """`entries` spool entries shaped like the one the shipped dialplan just wrote."""
    listing = await asterisk.cli("database show slack-bridge-spool")
    found = _KEY.findall(listing)
    if not found:
        raise RuntimeError(f"the shipped dialplan wrote no spool entry:\n{listing[-500:]}")
    key, value = found[-1]
    family, _, leaf = key.lstrip("/").rpartition("/")
    stamp = re.search(r"\d{10}\.\d{6}", leaf)
    rng = random.Random(13)
    made = []
    for n in range(entries):
        new_leaf = re.sub(r"[0-9a-f]{40}", lambda _m: f"{rng.getrandbits(160):040x}", leaf)
        if stamp:
            new_leaf = new_leaf.replace(stamp.group(0),
                                        f"{float(stamp.group(0)) - 1 - n * 0.01:.6f}")
        made.append((family.split("/", 1)[0], f"{family.partition('/')[2]}/{new_leaf}"
                     if "/" in family else new_leaf, value))
    began = time.monotonic()
    await _ami_put_many(asterisk.ami_port, made)
    await asyncio.sleep(1.5)  # AstDB commits in the background, about once a second
    count = (await asterisk.cli("database show slack-bridge-spool")).count("/slack-bridge-spool/")
    return {"key_shape": key, "entries_in_spool": count,
            "fill_s": round(time.monotonic() - began, 1)}


async def spool_cost(*, count: int, rate: float, full_entries: int) -> dict[str, Any]:
    """Asterisk CPU ms per text: bare dialplan, shipped with its spool as it comes, shipped
    with `full_entries` spooled texts; each run `count` texts at `rate` per second."""
    peers = [SipPeer(INBOUND, free_port("udp")), SipPeer(BARE_PHONE, free_port("udp"))]
    asterisk = SpoolAsterisk(peers=peers, contexts={BARE_PHONE: BARE_CONTEXT},
                             ami_secret=AMI_SECRET, extra_ami_users=[_ADMIN])
    await asterisk.start()
    counter = AmiCounter(port=asterisk.ami_port, username=asterisk.ami_username,
                         secret=AMI_SECRET)
    await counter.start()
    result: dict[str, Any] = {"texts_per_run": count, "rate_offered": rate}
    try:
        assert asterisk.pid is not None
        stats = {"asterisk": ProcStats(asterisk.pid)}

        async def one(label: str, phone: str) -> None:
            run = await send_texts(lab_sip_port=asterisk.sip_port, arrivals=counter.arrivals,
                                   run=new_run("s"), count=count, rate=rate, from_user=phone,
                                   watch=stats, cap_s=max(60.0, count / 20))
            per_text = run.get("asterisk_cpu_s_per_1000")
            result[label] = {"asterisk_cpu_ms_per_text": per_text, "delivered":
                             run["delivered"], "lost": run["lost"],
                             "sip_timeouts": run["sip_timeouts"],
                             "throughput_per_s": run.get("throughput_per_s")}

        await one("bare", BARE_PHONE)
        await one("shipped_empty", INBOUND)
        result["prefill"] = await _prefill(asterisk, full_entries)
        await one("shipped_full", INBOUND)
        await one("bare_after", BARE_PHONE)  # the same Asterisk, now holding the full spool
        result["bridge_login"] = await _bridge_login(asterisk)
    finally:
        await counter.stop()
        await asterisk.stop()
    bare = min(v for v in (result["bare"]["asterisk_cpu_ms_per_text"],
                           result["bare_after"]["asterisk_cpu_ms_per_text"]) if v) \
        if result.get("bare_after") else None
    full = result.get("shipped_full", {}).get("asterisk_cpu_ms_per_text")
    result["ratio_full_to_bare"] = round(full / bare, 2) if full and bare else None
    return result


async def _bridge_login(asterisk: SpoolAsterisk) -> dict[str, Any]:
    """A bridge logging in to the full spool, its store holding everything up to now (a
    restart): how long until its first live text is posted (live texts wait for the spool
    read), and its peak memory."""
    folder = Path(tempfile.mkdtemp(prefix="bench-login-"))
    path = folder / "store.sqlite3"
    await (await Store.open(path)).close()
    fill_store(path, 0)
    slack = new_fake_slack()
    await slack.start()
    bridge = None
    try:
        bridge = await start_bridge(api_url=slack.api_url, ami_port=asterisk.ami_port,
                                    sip_port=asterisk.sip_port, arrivals=slack.arrivals,
                                    delivery={"channel_rate": 0}, store_path=path)
        return {"first_post_s": round(bridge.first_post_s, 3),
                "bridge_peak_rss_mb": round(bridge.stats.sample().peak_rss_mb, 1),
                "posts": slack.accepted}
    finally:
        if bridge is not None:
            await bridge.stop()
        await slack.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":  # python -m bench.spool [count rate entries]
    import json
    import sys

    args = [float(a) for a in sys.argv[1:4]] or [2000, 200, 50_000]
    print(json.dumps(asyncio.run(spool_cost(count=int(args[0]), rate=args[1],
                                            full_entries=int(args[2]))), indent=1))
