"""`bridge demo`, end to end: a real headless Chromium on the demo's page, the real bridge,
a real Asterisk and the demo's SIP phones. Each test does what a newcomer would do on the page
and checks what they would see, plus what the phone or the Slack stand-in really got."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from asterisk.harness import require_sandbox
from cdp_browser import Chromium, text_of

from bridge.demo.runner import Demo
from bridge.sandbox import launcher

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = Path("/tmp/bridge-demo.png")

ALICE_CHANNEL = "C0ALICE01"  # the demo's channels (bridge/demo/runner.py)
BOB_CHANNEL = "C0BOB0001"


@pytest.mark.asterisk
async def test_slash_command_typed_in_the_page_reaches_alices_phone(
        demo: Demo, page: Chromium) -> None:
    await page.evaluate(f"document.getElementById('command-channel').value = '{ALICE_CHANNEL}'")
    await page.type_and_enter("#command-text", "/sip alice hello from the browser")

    [message] = await demo.phones["alice"].wait_for_messages(1)
    assert message.body == "hello from the browser"
    # The phone's panel shows it, and the user sees the outcome, only to them.
    await page.wait_for(f"{text_of('[data-phone=alice] .bubble.in')}"
                        ".includes('hello from the browser')")
    channel = f"[data-channel={ALICE_CHANNEL}]"
    shown = await page.wait_for(f"{text_of(channel)}.includes('Sent to alice') && "
                                f"{text_of(channel)}")
    assert "only visible to you" in shown
    assert demo.phones["bob"].received == []


@pytest.mark.asterisk
async def test_text_from_bobs_phone_shows_in_bobs_channel(demo: Demo, page: Chromium) -> None:
    text = "Running late 🐟 <b>not bold</b> & *not bold either*"
    await page.type_and_enter("[data-phone=bob] input", text)

    await page.wait_for(f"{text_of(f'[data-channel={BOB_CHANNEL}] .section.plain')}"
                        f" === {json.dumps(text)}")
    assert text in demo.slack.texts_in(BOB_CHANNEL)
    assert text not in demo.slack.texts_in(ALICE_CHANNEL)
    sender = await page.evaluate(text_of(f"[data-channel={BOB_CHANNEL}] .context"))
    assert sender.startswith("📱 bob · From: sip:bob@127.0.0.1")
    # The phone's own panel shows what it sent and that Asterisk took it.
    bubble = await page.evaluate(text_of("[data-phone=bob] .bubble.out"))
    assert text in bubble and "202 Accepted" in bubble
    # Nothing typed on a phone becomes markup on the page.
    bold = await page.evaluate(f"document.querySelectorAll('[data-channel={BOB_CHANNEL}] b')"
                               ".length")
    assert bold == 1  # only the sender's name in the context line
    assert page.console == []


async def test_demo_says_how_to_get_a_missing_sandbox(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "demo", "--no-build", "--sandbox",
        str(tmp_path / "none"), cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2, out + err
    message = err.decode()
    assert f"no Asterisk sandbox at {tmp_path / 'none'}" in message
    assert re.search(r"sudo bash \S+/bridge/sandbox/build\.sh " + re.escape(str(tmp_path)),
                     message), message


def test_without_root_the_demo_says_to_run_it_as_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher.os, "geteuid", lambda: 1000)
    (tmp_path / "usr/sbin").mkdir(parents=True)
    (tmp_path / "usr/sbin/asterisk").write_text("")
    problem = launcher.sandbox_problem(tmp_path)
    assert problem is not None and "needs root" in problem and "sudo" in problem
    missing = launcher.sandbox_problem(tmp_path / "none")
    assert missing is not None
    assert f"sudo bash {launcher.build_script()} {tmp_path / 'none'}" in missing
    assert "run this again as root" in missing
    assert launcher.build_script().is_file()  # shipped with the package


@pytest.mark.asterisk
async def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    require_sandbox()
    # Its own session, so the SIGINT below is exactly a terminal's Ctrl-C to that group.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "demo", "--port", "0", "--quiet", cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True)
    assert process.stdout is not None
    output = b""
    try:
        async with asyncio.timeout(60):
            while b"Ctrl-C stops everything" not in output:
                line = await process.stdout.readline()
                assert line, f"the demo exited early:\n{output.decode()}"
                output += line
        url = re.search(rb"Open (http://127\.0\.0\.1:\d+/)", output)
        assert url, output.decode()
        async with aiohttp.ClientSession() as session, session.get(
                url.group(1).decode() + "state") as reply:
            state = await reply.json()
        pids = [state["asterisk"]["pid"], state["bridge"]["pid"]]
        assert all(pids) and state["bridge"]["running"] and state["asterisk"]["running"]

        os.killpg(process.pid, signal.SIGINT)
        rest, _ = await asyncio.wait_for(process.communicate(), 40)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    assert process.returncode == 0, (output + rest).decode()
    assert b"bridge demo: stopped" in rest
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.asterisk
async def test_reply_in_a_phones_thread_reaches_the_phone(demo: Demo, page: Chromium) -> None:
    await page.type_and_enter("[data-phone=bob] input", "Can someone call me back?")
    card = f"[data-channel={BOB_CHANNEL}]"
    await page.wait_for(f"{text_of(card)}.includes('Can someone call me back?')")
    before = len(demo.phones["bob"].received)
    # "Reply in thread" under bob's latest post, then type the reply in the composer.
    await page.evaluate(f"[...document.querySelectorAll('{card} .feed > .msg')].pop()"
                        ".querySelector('.reply-link').click()")
    assert "Replying in the thread of" in await page.evaluate(text_of("#thread-banner"))
    await page.type_and_enter("#command-text", "Calling you in 5 minutes")

    received = await demo.phones["bob"].wait_for_messages(before + 1)
    assert received[-1].body == "Calling you in 5 minutes"
    await page.wait_for(f"{text_of(card + ' .replies')}.includes('Calling you in 5 minutes')")
    await page.evaluate("document.getElementById('thread-cancel').click()")
    await page.screenshot(SCREENSHOT)
