"""The store under faults, against the real Asterisk 22: a full disk (a small tmpfs, filled)
keeps the bridge up and loses nothing; a lost store does not repost Asterisk's spool unless
asked (`bridge run --replay-spool`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from asterisk.harness import AsteriskSandbox
from bridge_runner import BridgeProcess, ack_text, told_outcome
from conftest import own_pbx, start_bridge
from fake_slack import FakeSlack
from ops_view import health
from sip_ua import SipPhone
from slack_view import shown_texts

pytestmark = pytest.mark.asterisk


@pytest.fixture
async def own_asterisk() -> AsyncIterator[tuple[AsteriskSandbox, SipPhone]]:
    async with own_pbx("alice") as (sandbox, phones):
        yield sandbox, phones["alice"]


@contextlib.contextmanager
def small_disk(where: Path, size: str = "2m") -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Fill the disk to the last byte; returns the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


async def slash(bridge: BridgeProcess, slack: FakeSlack, text: str) -> str:
    body, headers = slack.signed_slash_command(slack.slash_command_payload(text=text))
    status, answer = await bridge.post_signed(body, headers)
    assert status == 200
    return ack_text(answer)


async def wait_until(check: object, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():  # type: ignore[operator]
        assert loop.time() < deadline, what
        await asyncio.sleep(0.2)


async def test_a_full_disk_keeps_the_bridge_up_and_it_resumes_by_itself(
        tmp_path: Path, slack: FakeSlack,
        own_asterisk: tuple[AsteriskSandbox, SipPhone]) -> None:
    asterisk, phone = own_asterisk
    with small_disk(tmp_path / "disk") as disk:
        bridge = await start_bridge(tmp_path, slack, asterisk.ami_port,
                                    store_path=str(disk / "bridge-store.sqlite3"))
        try:
            await phone.send_message("before the disk filled")
            await wait_until(lambda: _shown(slack, "before the disk filled"), 10,
                             "first text not posted")
            filler = fill(disk)

            # The phone's text cannot be stored: the bridge stays up and says why.
            assert await phone.send_message("while the disk is full") == 202
            await bridge.wait_for_log("cannot take writes: database or disk is full",
                                      timeout=10)

            async def unhealthy() -> bool:
                status, body = await health(bridge.port)
                return status == 503 and not body["store"]["ok"]
            await wait_until(unhealthy, 10, "/healthz did not report the full disk")
            _, body = await health(bridge.port)
            assert "disk is full" in body["store"]["problem"]
            answer = await slash(bridge, slack, "alice are you there")
            assert "cannot store texts right now" in answer, answer
            await asyncio.sleep(1)
            assert bridge.returncode is None
            assert phone.received == []  # nothing sent that was not stored
            assert not await _shown(slack, "while the disk is full")

            # Space is back: it resumes by itself, the phone's text is posted once.
            filler.unlink()

            async def healthy() -> bool:
                status, _ = await health(bridge.port)
                return status == 200
            await wait_until(healthy, 15, "/healthz stayed 503 after space came back")
            await wait_until(lambda: _shown(slack, "while the disk is full"), 15,
                             "the text from the full-disk time was not posted")
            outcome = await told_outcome(slack, await slash(bridge, slack, "alice space is back"))
            assert "Sent to *alice*" in outcome, outcome
            [got] = await phone.wait_for_messages(1)
            assert got.body == "space is back"
            assert shown_texts(slack.posts).count("while the disk is full") == 1
            assert "Traceback" not in bridge.log
        finally:
            assert await bridge.stop() == 0


async def _shown(slack: FakeSlack, text: str) -> bool:
    return text in shown_texts(slack.posts)


async def test_a_lost_store_does_not_repost_the_spool_unless_asked(
        tmp_path: Path, slack: FakeSlack,
        own_asterisk: tuple[AsteriskSandbox, SipPhone]) -> None:
    asterisk, phone = own_asterisk
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port)
    for i in range(3):
        await phone.send_message(f"old {i}")
    sent_minute = int(time.time() // 60)
    await wait_until(lambda: _shown(slack, "old 2"), 10, "texts not posted")
    assert await bridge.stop() == 0
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"bridge-store.sqlite3{suffix}").unlink(missing_ok=True)
    posted = len(slack.posts)

    # A new store: the spooled texts are older than it, so they are not posted again. They
    # are counted when they are from the minute it was created (read from there on), else
    # their minute is named, unread.
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port)
    try:
        line = await bridge.wait_for_log("texts in Asterisk's spool are older than this store")
        created_minute = int(_created_at(tmp_path) // 60)
        if created_minute == sent_minute:
            assert "NOT relayed: 3 texts from the minute it was created." in line, line
        else:
            assert "NOT relayed: those of 1 earlier minute" in line \
                or "NOT relayed: those of 1 earlier hour" in line, line
        assert "--replay-spool" in line
        await phone.send_message("new 0")
        await wait_until(lambda: _shown(slack, "new 0"), 10, "new text not posted")
        await asyncio.sleep(1)
        assert [t for t in shown_texts(slack.posts[posted:]) if t.startswith("old")] == []
    finally:
        assert await bridge.stop() == 0

    # Asked for: --replay-spool relays the spooled texts this store does not know.
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"bridge-store.sqlite3{suffix}").unlink(missing_ok=True)
    posted = len(slack.posts)
    bridge = BridgeProcess(bridge.config_path, bridge.env, port=bridge.port)
    await bridge.start(args=("--replay-spool",))
    try:
        await wait_until(lambda: _shown_after(slack, posted, "old 2"), 15, "not replayed")
        replayed = shown_texts(slack.posts[posted:])
        assert sorted(t for t in replayed if t.startswith("old")) == ["old 0", "old 1", "old 2"]
    finally:
        assert await bridge.stop() == 0


def _created_at(directory: Path) -> float:
    """When the bridge's store in `directory` was created (its store_info)."""
    db = sqlite3.connect(directory / "bridge-store.sqlite3")
    try:
        [(value,)] = db.execute("SELECT value FROM store_info WHERE key='created_at'")
    finally:
        db.close()
    return float(value)


async def _shown_after(slack: FakeSlack, start: int, text: str) -> bool:
    return text in shown_texts(slack.posts[start:])
