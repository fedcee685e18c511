"""Slack incidents seen from a user and an operator: a 429 storm on auth.test at start-up does
not touch `/sip` (normal answers, acks within 3 s) nor /healthz (a 429 is an answer).

AMI is the small fake AMI server (tests/fake_ami.py): the point here is Slack's side, and the
fake answers MessageSend with Success as Asterisk does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bridge_runner import BridgeConfig, BridgeProcess, ack_text, write_config
from conftest import DEFAULT_CHANNEL, bridge_env, directory_endpoints, start_bridge
from fake_ami import FakeAmi
from fake_slack import BOT_USER_ID, FakeSlack
from ops_view import health

from bridge.sandbox.launcher import free_port


@pytest.fixture
async def fake_ami() -> AsyncIterator[FakeAmi]:
    ami = FakeAmi()
    await ami.start()
    yield ami
    await ami.stop()


async def test_a_hanging_auth_test_at_start_does_not_delay_commands(
        tmp_path: Path, slack: FakeSlack, fake_ami: FakeAmi) -> None:
    # auth.test answers only after 20 s (a slow Slack, a hanging proxy).
    slack.fail_next("auth.test", status=200, times=10**6, delay=20)
    bridge = await start_bridge(tmp_path, slack, fake_ami.port)
    try:
        for i in range(5):
            body, headers = slack.signed_slash_command(
                slack.slash_command_payload(text=f"alice slow {i}"))
            started = time.monotonic()
            status, answer = await bridge.post_signed(body, headers)
            took = time.monotonic() - started
            assert status == 200 and ack_text(answer).startswith(
                ":white_check_mark: Sent to *alice*"), answer
            assert took < 3.0, f"ack took {took:.1f} s"
    finally:
        slack.clear_faults()
        assert await bridge.stop() == 0


async def test_a_429_storm_on_auth_test_at_start_leaves_commands_and_health_alone(
        tmp_path: Path, slack: FakeSlack, fake_ami: FakeAmi) -> None:
    slack.fail_next("auth.test", status=429, times=10**6, retry_after=1)
    bridge = await start_bridge(tmp_path, slack, fake_ami.port)
    try:
        async def slash(i: int) -> tuple[float, int, str]:
            body, headers = slack.signed_slash_command(
                slack.slash_command_payload(text=f"alice storm {i}"))
            started = time.monotonic()
            status, answer = await bridge.post_signed(body, headers)
            return time.monotonic() - started, status, ack_text(answer)

        results = await asyncio.gather(*(slash(i) for i in range(20)))
        for took, status, text in results:
            assert status == 200, bridge.log[-4000:]
            # The text's outcome (or "Sending" behind the others), not bolt's "reinstall".
            assert text.startswith((":white_check_mark: Sent to *alice*",
                                    "Sending to *alice*")), text
            assert took < 3.0, f"ack took {took:.1f} s"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while len(fake_ami.actions_named("MessageSend")) < 20 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert len(fake_ami.actions_named("MessageSend")) == 20
        # auth.test answers, with 429s: Slack is there, so the bridge is healthy.
        status, body = await health(bridge.port)
        assert status == 200, body
        assert body["slack"]["auth_refused"] is None
        assert "check SLACK_BOT_TOKEN" not in bridge.log
        # The commands did not each ask auth.test: only the start-up learner and the probe do.
        assert len(slack.calls_of("auth.test")) < 10
        # When the storm ends the identity is learned, in the background.
        slack.clear_faults()
        await bridge.wait_for_log(f"Slack: the bot is {BOT_USER_ID}", timeout=10)
        assert (await health(bridge.port))[0] == 200
    finally:
        assert await bridge.stop() == 0


async def test_socket_mode_with_slack_unreachable_at_start_is_unhealthy_and_stops_on_sigterm(
        tmp_path: Path, slack: FakeSlack) -> None:
    path = write_config(tmp_path, BridgeConfig(
        ami_port=free_port(), default_channel=DEFAULT_CHANNEL, endpoints=directory_endpoints(),
        delivery={"drain_timeout": 5}))
    env = bridge_env(slack, socket_mode=True)
    env["SLACK_API_URL"] = f"http://127.0.0.1:{free_port()}/api/"  # nothing listens there
    bridge = BridgeProcess(path, env, port=free_port())
    started = time.monotonic()
    await bridge.start(wait_for=None)
    try:
        # /healthz answers from the first second, with the reason.
        while True:
            try:
                status, body = await health(bridge.port)
                break
            except OSError:
                assert time.monotonic() - started < 3, bridge.log
                await asyncio.sleep(0.1)
        assert time.monotonic() - started < 3
        assert status == 503
        assert any("Socket Mode" in reason for reason in body["reasons"]), body
        # Two connection attempts (10 s apart): one line each, no traceback.
        await bridge.wait_for_log("Slack: Socket Mode: .*Failed to connect", timeout=10)
        mark = len(bridge.lines)
        await bridge.wait_for_log("Slack: Socket Mode: .*Failed to connect", after=mark,
                                  timeout=15)
        assert "Traceback" not in bridge.log
        _, body = await health(bridge.port)
        assert any("Socket Mode not connected" in reason for reason in body["reasons"]), body
    finally:
        stopping = time.monotonic()
        code = await bridge.stop(timeout=15)
        took = time.monotonic() - stopping
    assert code == 0, bridge.log
    assert took < 5 + 1, f"SIGTERM took {took:.1f} s"
