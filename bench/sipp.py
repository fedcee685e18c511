"""sipp as the phones: a UAC that texts Asterisk at a set rate, a UAS that receives texts.

Each run gets its own folder for sipp's statistics, error and log files (kept on failure).
sipp runs as our child (no -bg) with its own control port, stdin closed and its screen
output discarded; `SippRun.stop()` ends it if it is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import shutil
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asterisk.harness import free_port

from bench import SCENARIO_DIR

SIPP = shutil.which("sipp") or "/usr/bin/sipp"
UAC_SCENARIO = SCENARIO_DIR / "uac_message.xml"
UAS_SCENARIO = SCENARIO_DIR / "uas_message.xml"


@dataclass
class SippStats:
    """The last line of sipp's -trace_stat CSV: cumulative counts for the whole run."""

    created: int = 0
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    timeouts: int = 0  # failed on a recv timeout or on max UDP retransmissions
    elapsed_s: float = 0.0
    raw: dict[str, str] = field(default_factory=dict)


def _elapsed(value: str) -> float:
    # "00:00:05:123456" (h:m:s:us) in sipp's CSV; tolerate other shapes.
    parts = value.replace(".", ":").split(":")
    try:
        h, m, s, us = (int(p) for p in parts[:4])
    except ValueError:
        return 0.0
    return h * 3600 + m * 60 + s + us / 1_000_000


def read_stats(path: Path) -> SippStats:
    if not path.is_file():
        return SippStats()
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    if len(rows) < 2:
        return SippStats()
    header, last = rows[0], rows[-1]
    row = dict(zip(header, last, strict=False))

    def num(key: str) -> int:
        try:
            return int(row.get(key, "0") or 0)
        except ValueError:
            return 0

    return SippStats(
        created=num("TotalCallCreated"),
        successful=num("SuccessfulCall(C)"),
        failed=num("FailedCall(C)"),
        retransmissions=num("Retransmissions(C)"),
        timeouts=num("FailedTimeoutOnRecv(C)") + num("FailedMaxUDPRetrans(C)"),
        elapsed_s=_elapsed(row.get("ElapsedTime(C)", "")),
        raw=row,
    )


class SippRun:
    """One sipp process; `await SippRun.uac(...)` / `SippRun.uas(...)` start it."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.stats_file = workdir / "stats.csv"
        self.log_file = workdir / "messages.log"
        self.error_file = workdir / "errors.log"
        self.returncode: int | None = None
        self._process: asyncio.subprocess.Process | None = None

    @classmethod
    async def _start(cls, scenario: Path, extra: list[str], workdir: Path) -> SippRun:
        args = [SIPP, "-sf", str(scenario), "-nostdin", "-cp", str(free_port("udp")),
                "-trace_stat", "-stf", str(workdir / "stats.csv"), "-fd", "1",
                "-trace_err", "-error_file", str(workdir / "errors.log"), *extra]
        run = cls(args, workdir)
        run._process = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, cwd=workdir, start_new_session=True)
        return run

    @classmethod
    async def uac(cls, *, asterisk_port: int, from_user: str | Sequence[str], to_user: str,
                  run: str, count: int, rate: float, local_port: int | None = None) -> SippRun:
        """Send `count` MESSAGEs at `rate` per second over one UDP socket, from `from_user`
        (several: each in turn, so the load spreads over their phones and channels)."""
        workdir = Path(tempfile.mkdtemp(prefix="bench-sipp-uac-"))
        users = [from_user] if isinstance(from_user, str) else list(from_user)
        senders = workdir / "senders.csv"  # sipp's injection file: [field0] of each call
        senders.write_text("SEQUENTIAL\n" + "".join(f"{user};\n" for user in users))
        extra = ["-t", "u1", "-i", "127.0.0.1", "-m", str(count), "-r", str(rate),
                 "-rp", "1000", "-l", str(max(1000, int(rate) * 5)), "-inf", str(senders),
                 "-key", "to_user", to_user,
                 "-key", "run", run, "-max_recv_loops", "10000", "-max_sched_loops", "10000"]
        if local_port is not None:
            extra += ["-p", str(local_port)]
        return await cls._start(UAC_SCENARIO, [*extra, f"127.0.0.1:{asterisk_port}"], workdir)

    @classmethod
    async def uas(cls, *, port: int, count: int, timeout_s: float) -> SippRun:
        """Answer MESSAGEs on UDP 127.0.0.1:`port`; exit after `count` or `timeout_s`."""
        workdir = Path(tempfile.mkdtemp(prefix="bench-sipp-uas-"))
        extra = ["-t", "u1", "-i", "127.0.0.1", "-p", str(port), "-m", str(count),
                 "-timeout", f"{max(1, int(timeout_s))}s", "-trace_logs",
                 "-log_file", str(workdir / "messages.log"), "-max_recv_loops", "10000"]
        return await cls._start(UAS_SCENARIO, extra, workdir)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def wait(self, timeout: float) -> int | None:
        """Wait for sipp to exit by itself; None if it is still running after `timeout`."""
        assert self._process is not None
        try:
            self.returncode = await asyncio.wait_for(self._process.wait(), timeout)
        except TimeoutError:
            return None
        return self.returncode

    async def stop(self) -> None:
        """End sipp if it still runs (SIGUSR1: stop gracefully, then SIGKILL)."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGUSR1)
        try:
            await asyncio.wait_for(process.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        self.returncode = process.returncode

    def stats(self) -> SippStats:
        return read_stats(self.stats_file)

    def logged_lines(self) -> list[str]:
        return self.log_file.read_text(errors="replace").splitlines() \
            if self.log_file.is_file() else []

    def errors(self, limit: int = 5) -> list[str]:
        if not self.error_file.is_file():
            return []
        return self.error_file.read_text(errors="replace").splitlines()[:limit]

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
