"""Asterisk shutting down under a running bridge, measured against the real Asterisk 22.

What Asterisk does (measured, see README "Asterisk restarts"): from `core stop ...` or
SIGTERM on, every AMI action is answered `Response: Error` / `Message: Asterisk is shutting
down`. PJSIP keeps answering phones' texts 202 Accepted for a while although they never reach
the dialplan: 20-110 ms with `core stop gracefully`, about 0.9 s with `core stop now`,
`core restart now` or SIGTERM. Unloading res_pjsip_messaging first (the shipped systemd stop,
bridge/asterisk/templates/asterisk-service-stop.conf) makes it refuse them (501) instead.

A channel held up (a Local channel running Wait) keeps a graceful stop "shutting down" for
as long as the test needs, and `core abort shutdown` brings Asterisk back without a restart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asterisk.harness import AsteriskSandbox
from bridge_runner import BridgeProcess, ack_text
from conftest import own_pbx, start_bridge
from fake_slack import FakeSlack
from sip_ua import SipPhone
from slack_view import wait_all_shown

pytestmark = pytest.mark.asterisk

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def own_asterisk() -> AsyncIterator[tuple[AsteriskSandbox, SipPhone]]:
    async with own_pbx("alice") as (sandbox, phones):
        yield sandbox, phones["alice"]


async def slash(bridge: BridgeProcess, slack: FakeSlack, text: str) -> str:
    body, headers = slack.signed_slash_command(slack.slash_command_payload(text=text))
    status, answer = await bridge.post_signed(body, headers)
    assert status == 200
    return ack_text(answer)


def spooled_bodies(astdb: Path) -> set[str]:
    """The texts in a stopped Asterisk's spool (its AstDB), as the bridge would relay them."""
    with sqlite3.connect(astdb) as db:
        rows = db.execute("SELECT value FROM astdb WHERE key LIKE '/slack-bridge-spool/%'")
        return {base64.b64decode(value.rsplit("|", 1)[-1]).decode() for (value,) in rows}


@contextlib.asynccontextmanager
async def graceful_shutdown_held(asterisk: AsteriskSandbox) -> AsyncIterator[None]:
    """Asterisk in `core stop gracefully`, held there by a call, until the block ends; then
    `core abort shutdown` and the call is hung up."""
    await asterisk.cli("module load res_clioriginate.so")  # `channel originate`
    await asterisk.cli("dialplan add extension hold,1,Wait,120 into slack-bridge-hold")
    await asterisk.cli("channel originate Local/hold@slack-bridge-hold application Wait 120")
    # The CLI command returns only when the shutdown ends (here: when it is aborted).
    stopping = asyncio.create_task(asterisk.cli("core stop gracefully", timeout=120))
    await asyncio.sleep(0.5)
    try:
        yield
    finally:
        await asterisk.cli("core abort shutdown")
        with contextlib.suppress(RuntimeError):
            await asyncio.wait_for(stopping, 10)
        await asterisk.cli("channel request hangup all")


async def test_a_text_sent_while_asterisk_shuts_down_waits_and_goes_out_after(
        tmp_path: Path, slack: FakeSlack,
        own_asterisk: tuple[AsteriskSandbox, SipPhone]) -> None:
    asterisk, phone = own_asterisk
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port)
    try:
        async with graceful_shutdown_held(asterisk):
            mark = len(bridge.lines)
            answer = await slash(bridge, slack, "alice sent during the shutdown")
            assert "Not sent" not in answer
            await bridge.wait_for_log("is shutting down", after=mark, timeout=10)
            await asyncio.sleep(1.0)
            assert phone.received == []
            assert not [r for r in slack.responses if "Not sent" in r.get("text", "")]
        # Asterisk is back (shutdown aborted): the bridge reconnects and sends the text.
        [got] = await phone.wait_for_messages(1, timeout=20)
        assert got.body == "sent during the shutdown"
        [told] = await slack.wait_for_responses(1, timeout=10)
        assert "Sent to *alice*" in told["text"], told
    finally:
        assert await bridge.stop() == 0


def shipped_stop_steps() -> list[str]:
    """The ExecStop lines of bridge/asterisk/templates/asterisk-service-stop.conf, in order."""
    text = (REPO / "bridge" / "asterisk" / "templates" / "asterisk-service-stop.conf").read_text()
    return [line.removeprefix("ExecStop=") for line in text.splitlines()
            if line.startswith("ExecStop=")]


async def run_stop_step(asterisk: AsteriskSandbox, step: str) -> None:
    """One ExecStop line, run the way systemd would, against the sandbox's Asterisk."""
    if step.startswith("/bin/sleep "):
        await asyncio.sleep(float(step.split()[1]))
        return
    command = step.split(" -rx ", 1)[1].strip('"')
    with contextlib.suppress(RuntimeError):  # the last one ends with Asterisk gone
        await asterisk.cli(command, timeout=30)


async def test_the_shipped_stop_loses_no_text_asterisk_accepted(
        tmp_path: Path, slack: FakeSlack,
        own_asterisk: tuple[AsteriskSandbox, SipPhone]) -> None:
    """What the README guarantees for the shipped systemd stop (messaging module out, a second,
    then `core stop gracefully`): every text Asterisk answered 202 while a phone kept texting
    reaches Slack once; the others were refused, so the phone knows."""
    asterisk, phone = own_asterisk
    steps = shipped_stop_steps()
    assert len(steps) == 3 and "core stop gracefully" in steps[-1]
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port)
    old_run = asterisk.run_dir
    try:
        accepted: list[str] = []
        refused: list[str] = []
        stopper: list[asyncio.Task[None]] = []

        async def stop_as_shipped() -> None:
            for step in steps:
                await run_stop_step(asterisk, step)

        async def keep_texting() -> None:
            for i in range(100_000):
                try:
                    # (3 s: on a loaded machine a text in the instant of the module unload
                    # was answered after more than 1 s, and the phone, taking Asterisk for
                    # gone, stopped before it was refused anything: seen once in CI)
                    status = await phone.send_message(f"text {i}", timeout=3.0)
                except TimeoutError:
                    if not asterisk.running:  # Asterisk is gone
                        return
                    continue  # unanswered, neither accepted nor refused: keep texting
                (accepted if status == 202 else refused).append(f"text {i}")
                if i == 50:
                    stopper.append(asyncio.create_task(stop_as_shipped()))

        await asyncio.wait_for(keep_texting(), 60)
        await stopper[0]
        while asterisk.running:
            await asyncio.sleep(0.1)
        await bridge.wait_for_log("AMI: disconnected")
        assert old_run is not None
        in_spool = spooled_bodies(old_run / "db" / "astdb.sqlite3")
        # Every accepted text is in Slack, or in Asterisk's spool, which the bridge reads
        # when it reconnects after the restart (tests/test_e2e_durability.py). How many were
        # accepted depends on how fast the module unload went (80 here, 260 on a loaded
        # machine); what passed the phone's flood limit is posted combined at Slack's pace,
        # so the wait is for the texts, not for a fixed time (260 took 8.5 s).
        # The dialplan spools a text before it emits the event, so a text in neither never
        # reached the dialplan: Asterisk answered it 202 and dropped it. Seen once in CI, on a
        # loaded machine: the last text answered 202, in the instant of the module unload
        # (the README says so). That one may be missing; no other.
        last = accepted[-1] if accepted else ""
        shown = await wait_all_shown(slack, set(accepted) - in_spool - {last}, timeout=60)
        if last not in in_spool and last not in shown:
            with contextlib.suppress(AssertionError):
                shown = await wait_all_shown(slack, {last}, timeout=3)
        assert len(accepted) > 50 and len(refused) > 0
        assert len(shown) == len(set(shown))  # each once
        assert not set(refused) & (set(shown) | in_spool)
    finally:
        assert await bridge.stop() == 0
        await asterisk.restart()  # it stopped by itself; own_pbx stops it again
        if old_run is not None:
            shutil.rmtree(old_run, ignore_errors=True)  # kept as "died on its own"
