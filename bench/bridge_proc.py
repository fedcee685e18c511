"""Starting the real bridge (`python -m bridge run`) for one measurement, warmed up and ready.

The bridge runs with LOG_LEVEL=WARNING (at INFO it logs one line per text, which is part of
what an operator would pay but not what these figures compare), so "ready" cannot be read
from its INFO lines: a phone texts it until the fake Slack gets the post, which also proves
the AMI link is up and warms the code paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from asterisk.harness import free_port
from bridge_runner import BridgeConfig, BridgeProcess, EndpointSpec, write_config
from sip_ua import SipPhone

from bench.watch import ProcStats

AMI_SECRET = "bench-ami-secret-1c3e"
SIGNING_SECRET = "bench-signing-secret-9d2a"
BOT_TOKEN = "xoxb-bench-token-5522"

# Endpoint names: they are PJSIP endpoints in Asterisk and [[endpoints]] in the bridge.
INBOUND = "bench"  # sipp texts from here; its channel is INBOUND_CHANNEL
BURST = "burst"  # the burst scenario's phone, alone in BURST_CHANNEL
RECEIVER = "benchuas"  # the sipp UAS that receives /sip texts
CURL_PHONE = "curlbench"  # texts through the dialplan-only CURL context
INBOUND_CHANNEL = "C0BENCH0001"
# The inbound ceiling and latency loads come from these phones in turn, each with a channel of
# its own: the bridge posts to one channel one post at a time (Slack keeps a channel's order),
# so with Slack answering in 50-150 ms one channel takes at most 20 texts a post, ~10 posts a
# second. A PBX relaying 2,000 texts a second has many phones.
SPREAD = tuple(f"bench{i}" for i in range(20))
BURST_CHANNEL = "C0BURST0001"
RECEIVER_CHANNEL = "C0BENCHUAS1"
DEFAULT_CHANNEL = "C0DEFAULT01"

_WARM_UP_TEXTS = 20
_warmups = 0


def bridge_endpoints() -> list[EndpointSpec]:
    return [EndpointSpec(INBOUND, f"pjsip:{INBOUND}", INBOUND_CHANNEL),
            *(EndpointSpec(name, f"pjsip:{name}", f"C0SPREAD{i:03d}")
              for i, name in enumerate(SPREAD)),
            EndpointSpec(BURST, f"pjsip:{BURST}", BURST_CHANNEL),
            EndpointSpec(RECEIVER, f"pjsip:{RECEIVER}", RECEIVER_CHANNEL)]


# Set by `python -m bench --profile DIR`: every bridge run is sampled by py-spy (if installed)
# from the end of its warm-up until it stops, into DIR/<n>.txt (collapsed stacks).
PROFILE_DIR: Path | None = None
_profiles = 0


@dataclass
class RunningBridge:
    process: BridgeProcess
    stats: ProcStats
    workdir: Path
    started_s: float  # from spawn to the end of the warm-up
    first_post_s: float = 0.0  # from listening (started) to its first text visible in Slack
    listening_s: float = 0.0  # from spawn to listening on HTTP (Python start, imports, config)
    # What the bridge found in Asterisk's spool at its start and posted before the load began
    # (texts sent while no bridge ran, e.g. during the bare AMI client's turn), and how long
    # that took: a measured load starts on a bridge that is caught up.
    backlog_at_start: int = 0
    caught_up_s: float = 0.0
    profiler: asyncio.subprocess.Process | None = None
    profile_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.stats.pid

    async def start_profile(self, label: str) -> None:
        global _profiles
        py_spy = Path(sys.executable).parent / "py-spy"
        if PROFILE_DIR is None or not py_spy.exists():
            return
        _profiles += 1
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
        self.profile_path = PROFILE_DIR / f"{_profiles:02d}-{label}.txt"
        self.profiler = await asyncio.create_subprocess_exec(
            str(py_spy), "record", "-p", str(self.pid), "-r", "250", "-f", "raw", "-o",
            str(self.profile_path), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    async def stop(self) -> int:
        if self.profiler is not None and self.profiler.returncode is None:
            self.profiler.send_signal(signal.SIGINT)  # py-spy writes its file and exits
            try:
                await asyncio.wait_for(self.profiler.wait(), 10)
            except TimeoutError:
                self.profiler.kill()
                await self.profiler.wait()
        try:
            code = await self.process.stop(timeout=25)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)  # config and SQLite store
        return code


async def start_bridge(*, api_url: str, ami_port: int, sip_port: int,
                       arrivals: Callable[[str], Mapping[int, object]],
                       delivery: Mapping[str, object] | None = None,
                       store_path: Path | None = None,
                       store_url: str = "",
                       timeout: float = 30.0, catch_up: bool = True) -> RunningBridge:
    """Start the bridge in HTTP mode; return once it has relayed warm-up texts.

    `arrivals(run)` is what the fake Slack has seen of a run's texts. `delivery` becomes the
    config's [delivery] table (the bridge's own pacing of posts); None keeps its defaults.
    `store_url`: a PostgreSQL store (several replicas share one) instead of the SQLite file.
    `catch_up`: return only once the bridge has posted what it found waiting (`caught_up`).
    """
    workdir = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    config = BridgeConfig(ami_port=ami_port, endpoints=bridge_endpoints(),
                          default_channel=DEFAULT_CHANNEL)
    if delivery:
        config.delivery = dict(delivery)
    if store_url:  # a PostgreSQL store, shared with other replicas
        config.store_url = store_url
    elif store_path is not None:  # kept by the caller; else a new one in workdir
        config.store_path = str(store_path)
    # One synthetic user sends every command: the per-user and per-phone rate limits (20 and
    # 60 a minute by default, right for people) would refuse most of a load test.
    config.tail = '[access]\nuser_rate = ""\nendpoint_rate = ""\n'
    config_path = write_config(workdir, config)
    env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "SLACK_API_URL": api_url, "AMI_SECRET": AMI_SECRET, "LOG_LEVEL": "WARNING"}
    process = BridgeProcess(config_path, env, port=free_port())
    began = time.monotonic()
    await process.start(wait_for=None)
    assert process._process is not None
    running = RunningBridge(process, ProcStats(process._process.pid), workdir, 0.0)
    try:
        listening, first = await _warm_up(process, sip_port=sip_port, arrivals=arrivals,
                                          timeout=timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            await running.stop()
        raise
    running.started_s = time.monotonic() - began
    running.listening_s = listening - began
    running.first_post_s = first - listening
    if not catch_up:
        return running
    began_catching_up = time.monotonic()
    try:
        running.backlog_at_start = await caught_up(process, timeout=max(timeout, 120.0))
    except BaseException:
        with contextlib.suppress(Exception):
            await running.stop()
        raise
    running.caught_up_s = time.monotonic() - began_catching_up
    return running


async def caught_up(process: BridgeProcess, *, timeout: float) -> int:
    """Wait until the bridge has no text from phones waiting to be posted (its /metrics
    gauge, read from the store); return the most it had waiting meanwhile.

    A bridge starting after texts reached Asterisk without it (the bare AMI client's turn
    at the same rate, or the other system's) hands them over from the spool and posts them
    first: a load measured meanwhile would queue behind them in every channel and count
    the catch-up as the bridge's latency and throughput at that rate (measured: every text
    sent in the first 0.4-1.5 s of such a run over 500 ms, and the 2000/s ratio down)."""
    url = f"http://127.0.0.1:{process.port}/metrics"
    deadline = time.monotonic() + timeout
    most = 0
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url) as response:
                body = await response.text()
            waiting = next((int(float(line.rsplit(" ", 1)[1])) for line in body.splitlines()
                            if line.startswith('bridge_texts_waiting{direction="in"}')), None)
            if waiting is None:
                raise RuntimeError(f"the bridge's /metrics has no inbound backlog:\n{body[:500]}")
            most = max(most, waiting)
            if waiting == 0:
                return most
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bridge still had {waiting} texts to post after "
                                   f"{timeout:g} s")
            await asyncio.sleep(0.1)


async def _warm_up(process: BridgeProcess, *, sip_port: int,
                   arrivals: Callable[[str], Mapping[int, object]],
                   timeout: float) -> tuple[float, float]:
    """Warm the bridge up; returns when (time.monotonic()) it listened on HTTP (it has
    started: store open, AMI link started, Slack side up) and when its first text, sent right
    then, was visible in Slack."""
    global _warmups
    _warmups += 1
    run = f"warm{_warmups}"
    deadline = time.monotonic() + timeout

    def text(seq: int) -> str:  # the bench marker format, with the send time
        return f"bench {run} #{seq} warm-up\tup\t{time.time():.6f}"

    # 1. the HTTP side listens
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", process.port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            break
        except OSError:
            if process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bridge never listened on HTTP:\n{process.log}")
            await asyncio.sleep(0.02)
    listening = time.monotonic()
    # 2. a text reaches Slack (AMI link up, relay running); then a few more to warm up
    async with SipPhone(INBOUND, asterisk_port=sip_port) as phone:
        seq = 0
        while not arrivals(run):
            if process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bridge relayed no warm-up text:\n{process.log}")
            seq += 1
            await phone.send_message(text(seq), to_user="bridge")
            for _ in range(20):
                await asyncio.sleep(0.01)
                if arrivals(run):
                    break
        first = time.monotonic()
        for _ in range(_WARM_UP_TEXTS):
            seq += 1
            await phone.send_message(text(seq), to_user="bridge")
        while len(arrivals(run)) < seq:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bridge relayed {len(arrivals(run))} of {seq} warm-up "
                                   f"texts within {timeout} s:\n{process.log}")
            await asyncio.sleep(0.05)
    return listening, first


def pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")
