"""/healthz: 200 while AMI is logged in and Slack answers, 503 with the reasons otherwise;
an idle bridge stays healthy through its auth.test probe. End to end: Asterisk stopped
under the bridge turns it 503 and back to 200 after the reconnect; in Socket Mode /healthz
and /metrics answer on $PORT."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from asterisk.harness import AsteriskSandbox, free_port
from bridge_runner import BridgeConfig, BridgeProcess, write_config
from conftest import (
    AMI_SECRET,
    APP_TOKEN,
    BOT_TOKEN,
    DEFAULT_CHANNEL,
    SIGNING_SECRET,
    bridge_env,
    directory_endpoints,
    own_pbx,
    start_bridge,
)
from fake_slack import FakeSlack
from ops_view import get, health, scrape, value, wait_health

from bridge.core.errors import SlackError
from bridge.core.model import Backlog
from bridge.ops import metrics
from bridge.ops.health import SlackReachability, health_report
from bridge.ops.metrics import Metrics

SECRETS = (BOT_TOKEN, SIGNING_SECRET, APP_TOKEN, AMI_SECRET)
EMPTY = Backlog(inbound_waiting=0, inbound_oldest=None, outbound_waiting=0,
                outbound_oldest=None, outbound_unnotified=0)


class FakeAmi:
    def __init__(self, *, ready: bool, last_error: str = "") -> None:
        self.ready = ready
        self.address = "127.0.0.1:5038"
        self.last_error = last_error
        self.reconnects = 0
        self.connected_since: float | None = 0.0 if ready else None
        self.name = "default"
        self.required = True
        self.events = "on" if ready else ""
        self.text_events = 0


def test_healthy_when_ami_is_logged_in_and_slack_answered() -> None:
    slack = SlackReachability()
    slack.answered("chat.postMessage", 200)
    report = health_report(ami=FakeAmi(ready=True), slack=slack,
                           backlog=Backlog(2, 100.0, 0, None, 0), now=160.0)
    assert report.healthy and report.body["status"] == "ok" and "reasons" not in report.body
    assert report.body["ami"]["connected"] is True
    assert report.body["slack"]["ok"] is True
    assert report.body["backlog"]["inbound_waiting"] == 2
    assert report.body["backlog"]["inbound_oldest_age_s"] == 60.0


def test_unhealthy_with_every_reason() -> None:
    slack = SlackReachability()
    report = health_report(ami=FakeAmi(ready=False, last_error="cannot connect to 127.0.0.1"),
                           slack=slack, backlog=EMPTY)
    assert not report.healthy and report.body["status"] == "unhealthy"
    assert report.body["reasons"] == ["AMI not connected: cannot connect to 127.0.0.1",
                                      "Slack has not answered yet"]


def test_several_pbxs_healthy_only_while_every_required_pbx_is_logged_in() -> None:
    slack = SlackReachability()
    slack.answered("chat.postMessage", 200)
    hq = FakeAmi(ready=True)
    hq.name = "hq"
    branch = FakeAmi(ready=False, last_error="cannot connect to 10.1.0.5:5038")
    branch.name, branch.address = "branch", "10.1.0.5:5038"
    report = health_report(ami=[hq, branch], slack=slack, backlog=EMPTY)
    assert not report.healthy
    assert report.body["reasons"] == [
        "PBX branch: AMI not connected: cannot connect to 10.1.0.5:5038"]
    assert report.body["pbxs"]["hq"]["connected"] is True
    assert report.body["pbxs"]["branch"] == {
        "connected": False, "address": "10.1.0.5:5038", "required": True,
        "connected_for_s": None, "reconnects": 0,
        "last_error": "cannot connect to 10.1.0.5:5038", "events": None, "text_events": 0}

    branch.required = False  # `required = false`: it may be down
    report = health_report(ami=[hq, branch], slack=slack, backlog=EMPTY)
    assert report.healthy and report.body["status"] == "ok"
    assert report.body["pbxs"]["branch"]["connected"] is False

    hq.ready = False
    assert not health_report(ami=[hq, branch], slack=slack, backlog=EMPTY).healthy


def test_metrics_carry_each_pbx_as_a_label() -> None:
    m = Metrics()
    hq, branch = FakeAmi(ready=True), FakeAmi(ready=False)
    hq.name, branch.name = "hq", "branch"
    branch.reconnects = 4
    hq.text_events = 7
    m.watch(ami=[hq, branch], slack=SlackReachability())
    text = m.exposition().decode()
    assert 'bridge_ami_connected{pbx="hq"} 1.0' in text
    assert 'bridge_ami_connected{pbx="branch"} 0.0' in text
    assert 'bridge_ami_reconnects_total{pbx="branch"} 4.0' in text
    assert 'bridge_ami_text_events_total{pbx="hq"} 7.0' in text


async def test_slack_counts_as_gone_after_the_window_without_an_answer() -> None:
    slack = SlackReachability(interval=0.05, window=0.1)
    slack.answered("chat.postMessage", 429)  # rate limited is still an answer
    assert slack.problem() is None
    slack.answered("chat.postMessage", 503)  # a 5xx is not
    await asyncio.sleep(0.15)
    problem = slack.problem()
    assert problem is not None and problem.startswith("Slack has not answered for")
    assert "HTTP 503 from chat.postMessage" in problem


async def test_an_idle_bridge_stays_healthy_through_the_probe() -> None:
    slack = SlackReachability(interval=0.1, window=0.3)
    probes = 0

    async def auth_test() -> None:  # answers, as the trace hook would record it
        nonlocal probes
        probes += 1
        slack.answered("auth.test", 200)

    task = asyncio.create_task(slack.probe_loop(auth_test))
    try:
        for _ in range(10):
            await asyncio.sleep(0.1)
            assert slack.problem() is None
        assert 5 <= probes <= 15
        # Busy with other calls: no probes needed.
        probes = 0
        for _ in range(10):
            slack.answered("chat.postMessage", 200)
            await asyncio.sleep(0.03)
        assert probes <= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_refused_probe_is_unhealthy_until_accepted_again() -> None:
    slack = SlackReachability(interval=0.05, window=10)
    refuse = True

    async def auth_test() -> None:
        slack.answered("auth.test", 200)  # Slack answers HTTP 200 with ok: false
        if refuse:
            # What bridge.slack.client.auth_probe raises for an `ok: false` answer.
            raise SlackError("invalid_auth", status=200)

    await slack.probe_once(auth_test)
    assert slack.problem() == "Slack refused auth.test: invalid_auth"
    refuse = False
    await slack.probe_once(auth_test)
    assert slack.problem() is None


async def test_a_probe_that_gets_no_answer_leaves_slack_unanswered() -> None:
    slack = SlackReachability(interval=0.05, window=10)

    async def auth_test() -> None:
        raise ConnectionRefusedError("nobody there")

    await slack.probe_once(auth_test)
    assert slack.problem() == "Slack has not answered yet"


async def test_the_trace_hook_sees_answers_from_the_api_only(slack: FakeSlack) -> None:
    reach = SlackReachability(slack.api_url)
    counted = Metrics()
    metrics.install(counted)
    try:
        async with aiohttp.ClientSession(trace_configs=[reach.trace_config()]) as session:
            auth = {"Authorization": f"Bearer {BOT_TOKEN}"}
            async with session.post(f"{slack.base_url}/response/nothing-here") as answer:
                await answer.read()
            assert reach.answered_age() is None  # a response_url is not the Web API
            slack.fail_next("chat.postMessage", status=429, retry_after=1)
            async with session.post(slack.api_url + "chat.postMessage", headers=auth,
                                    json={"channel": "C1", "text": "x"}) as answer:
                assert answer.status == 429
            assert reach.problem() is None
            dead = f"http://127.0.0.1:{free_port()}/api/"
            reach.api_url = dead
            with pytest.raises(aiohttp.ClientConnectorError):
                async with session.post(dead + "auth.test"):
                    pass
            assert reach.last_problem.startswith("auth.test: ClientConnectorError")
    finally:
        metrics.install(None)
    samples = counted.exposition().decode()
    assert 'bridge_slack_api_calls_total{method="chat.postMessage",status="429"} 1.0' in samples
    assert 'bridge_slack_api_calls_total{method="auth.test",status="error"} 1.0' in samples
    assert "bridge_slack_rate_limited_total 1.0" in samples


# -- end to end -----------------------------------------------------------------------------


@pytest.fixture
async def own_asterisk() -> AsyncIterator[AsteriskSandbox]:
    """An Asterisk of this test's own, since the test stops it."""
    async with own_pbx("alice") as (sandbox, _):
        yield sandbox


def no_secrets(body: dict[str, Any]) -> bool:
    text = json.dumps(body)
    return not [s for s in SECRETS if s in text]


@pytest.mark.asterisk
async def test_healthz_goes_503_while_asterisk_is_down_and_back_after_the_reconnect(
        tmp_path: Path, slack: FakeSlack, own_asterisk: AsteriskSandbox) -> None:
    asterisk = own_asterisk
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port)
    try:
        body = await wait_health(bridge.port, 200)
        assert body["status"] == "ok" and body["ami"]["connected"] is True
        assert body["slack"]["ok"] is True and body["slack"]["last_answer_age_s"] is not None
        assert body["backlog"]["outbound_waiting"] == 0 and no_secrets(body)
        assert any(call[0] == "auth.test" for call in slack.calls)  # the idle probe

        await asterisk.stop()
        body = await wait_health(bridge.port, 503)
        assert body["status"] == "unhealthy" and body["ami"]["connected"] is False
        assert body["reasons"][0].startswith("AMI not connected: "), body
        assert no_secrets(body)
        assert value(await scrape(bridge.port), "bridge_ami_connected", pbx="default") == 0

        mark = len(bridge.lines)
        await asterisk.restart()
        await bridge.wait_for_log("AMI: connected", after=mark, timeout=40)
        body = await wait_health(bridge.port, 200)
        assert body["ami"]["reconnects"] == 1
        samples = await scrape(bridge.port)
        assert value(samples, "bridge_ami_connected", pbx="default") == 1
        assert value(samples, "bridge_ami_reconnects_total", pbx="default") == 1
    finally:
        assert await bridge.stop() == 0, bridge.log


@pytest.mark.asterisk
async def test_socket_mode_serves_healthz_and_metrics_on_port(
        tmp_path: Path, slack: FakeSlack, own_asterisk: AsteriskSandbox) -> None:
    bridge = await start_bridge(tmp_path, slack, own_asterisk.ami_port, socket_mode=True)
    try:
        await slack.wait_socket_connected()
        body = await wait_health(bridge.port, 200)
        assert body["status"] == "ok" and no_secrets(body)
        samples = await scrape(bridge.port)
        assert value(samples, "bridge_ami_connected", pbx="default") == 1
        assert value(samples, "bridge_texts_waiting", direction="out") == 0
        status, _, _ = await get(bridge.port, "/slack/events")
        assert status in (404, 405)  # Slack talks over the socket, not to this port
        # They show the AMI address and errors without auth: loopback only by default
        # ([ops] bind); 127.0.0.2 is this machine too, but not the address it listens on.
        assert not await answers("127.0.0.2", bridge.port)
    finally:
        assert await bridge.stop() == 0, bridge.log


async def answers(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


@pytest.mark.asterisk
async def test_ops_bind_opens_health_to_other_interfaces_when_asked(
        tmp_path: Path, slack: FakeSlack, own_asterisk: AsteriskSandbox) -> None:
    bridge = await start_bridge(tmp_path, slack, own_asterisk.ami_port, socket_mode=True,
                                tail='[ops]\nbind = "0.0.0.0"\n')
    try:
        await slack.wait_socket_connected()
        assert await answers("127.0.0.2", bridge.port)
        assert "health and metrics on 0.0.0.0" in bridge.log
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_healthz_says_when_slack_refuses_the_token(tmp_path: Path,
                                                         slack: FakeSlack) -> None:
    """No Asterisk needed: AMI points at a closed port, and Slack refuses auth.test."""
    slack.fail_next("auth.test", status=200, error="invalid_auth", times=100)
    config = write_config(tmp_path, BridgeConfig(ami_port=free_port(),
                                                 endpoints=directory_endpoints(),
                                                 default_channel=DEFAULT_CHANNEL))
    bridge = BridgeProcess(config, bridge_env(slack), port=free_port())
    await bridge.start()
    try:
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            status, body = await health(bridge.port)
            if "Slack refused auth.test: invalid_auth" in body.get("reasons", []):
                break
            assert asyncio.get_running_loop().time() < deadline, body
            await asyncio.sleep(0.2)
        assert status == 503 and body["slack"]["auth_refused"] == "invalid_auth"
        assert body["reasons"][0].startswith("AMI not connected: ")
        await bridge.wait_for_log("auth.test refused")
    finally:
        slack.clear_faults()
        assert await bridge.stop() == 0, bridge.log
