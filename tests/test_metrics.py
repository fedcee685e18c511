"""/metrics: Prometheus text from a registry of the bridge's own, with counters that move when
texts move (a /sip text, a refused one, a phone's text through a 429), bounded labels, and
queue depths read at scrape time. The end-to-end run also logs in LOG_FORMAT=json: every
line is a JSON object, the lines about texts carry their fields, and no secret appears."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from asterisk.harness import AsteriskSandbox, free_port
from bridge_runner import BridgeConfig, BridgeProcess, ack_text, outcomes_told, taken, write_config
from conftest import (
    ALICE_CHANNEL,
    AMI_SECRET,
    APP_TOKEN,
    BOT_TOKEN,
    DEFAULT_CHANNEL,
    SIGNING_SECRET,
    bridge_env,
    directory_endpoints,
    own_pbx,
)
from fake_slack import FakeSlack
from ops_view import Samples, scrape, value
from prometheus_client.parser import text_string_to_metric_families
from sip_ua import SipPhone
from slack_view import wait_phone_posts

from bridge.core.errors import AmiActionFailed, AmiUnavailable, GaveUp, PartlySent, PostFailed
from bridge.core.model import Backlog
from bridge.ops import metrics
from bridge.ops.metrics import Metrics, post_failure_reason, send_failure_reason

METRIC_NAMES = {
    "bridge_texts_in", "bridge_texts_out", "bridge_delivery_failures", "bridge_slack_posts",
    "bridge_slack_api_calls", "bridge_slack_rate_limited", "bridge_text_in_latency_seconds",
    "bridge_text_out_latency_seconds", "bridge_texts_waiting", "bridge_oldest_waiting_seconds",
    "bridge_untold_outcomes", "bridge_ami_connected", "bridge_ami_reconnects",
    "bridge_ami_text_events",
    "bridge_texts_refused",
    "bridge_slack_last_answer_age_seconds",
}


class _Ami:
    ready = True
    reconnects = 2
    text_events = 5
    name = "default"


class _Slack:
    def answered_age(self) -> float | None:
        return 3.0


def parsed(m: Metrics) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(m.exposition().decode())
            for s in family.samples}


@pytest.fixture
def installed() -> Iterator[Metrics]:
    m = Metrics()
    m.watch(ami=_Ami(), slack=_Slack())
    metrics.install(m)
    yield m
    metrics.install(None)


def test_every_metric_is_exposed_in_prometheus_text_before_anything_happens(
        installed: Metrics) -> None:
    families = {f.name for f in text_string_to_metric_families(installed.exposition().decode())}
    assert METRIC_NAMES <= families
    samples = parsed(installed)
    assert value(samples, "bridge_texts_in_total", result="posted") == 0
    assert value(samples, "bridge_delivery_failures_total", direction="out",
                 reason="asterisk_refused") == 0
    assert value(samples, "bridge_ami_connected", pbx="default") == 1
    assert value(samples, "bridge_ami_reconnects_total", pbx="default") == 2
    assert value(samples, "bridge_ami_text_events_total", pbx="default") == 5
    assert value(samples, "bridge_slack_last_answer_age_seconds") == 3.0


def test_recordings_move_the_installed_registry_only(installed: Metrics) -> None:
    other = Metrics()
    metrics.inbound_posted([0.2, 1.5], recovered=False)
    metrics.inbound_posted([], recovered=False)  # an echo-only post: no phone text
    metrics.inbound_failed(PostFailed("C1", "ratelimited", retry_after=3))
    metrics.outbound_sent(0.4)
    metrics.outbound_failed(AmiActionFailed("MessageSend", "Message failed to send."))
    metrics.outbound_unconfirmed()
    metrics.slack_api_answer("chat.postMessage", 200)
    metrics.slack_api_answer("chat.postMessage", 429)
    metrics.slack_api_answer("some.newMethod", 503)
    metrics.slack_api_answer("auth.test", None)
    installed.refresh_backlog(Backlog(inbound_waiting=4, inbound_oldest=100.0,
                                      outbound_waiting=1, outbound_oldest=None,
                                      outbound_unnotified=2), now=130.0)
    s = parsed(installed)
    assert value(s, "bridge_texts_in_total", result="posted") == 2
    assert value(s, "bridge_slack_posts_total", result="posted") == 2
    assert value(s, "bridge_text_in_latency_seconds_count") == 2
    assert value(s, "bridge_text_in_latency_seconds_bucket", le="1.0") == 1
    assert value(s, "bridge_delivery_failures_total", direction="in",
                 reason="rate_limited") == 1
    assert value(s, "bridge_texts_out_total", result="sent") == 1
    assert value(s, "bridge_texts_out_total", result="failed") == 1
    assert value(s, "bridge_text_out_latency_seconds_count") == 1
    assert value(s, "bridge_delivery_failures_total", direction="out",
                 reason="asterisk_refused") == 1
    assert value(s, "bridge_delivery_failures_total", direction="out", reason="unconfirmed") == 1
    assert value(s, "bridge_slack_api_calls_total", method="chat.postMessage", status="2xx") == 1
    assert value(s, "bridge_slack_api_calls_total", method="chat.postMessage", status="429") == 1
    assert value(s, "bridge_slack_api_calls_total", method="other", status="5xx") == 1
    assert value(s, "bridge_slack_api_calls_total", method="auth.test", status="error") == 1
    assert value(s, "bridge_slack_rate_limited_total") == 1
    assert value(s, "bridge_texts_waiting", direction="in") == 4
    assert value(s, "bridge_oldest_waiting_seconds", direction="in") == 30
    assert value(s, "bridge_oldest_waiting_seconds", direction="out") == 0
    assert value(s, "bridge_untold_outcomes") == 2
    assert value(parsed(other), "bridge_texts_in_total", result="posted") == 0


def test_recording_without_metrics_installed_does_nothing() -> None:
    metrics.install(None)
    metrics.inbound_posted([1.0], recovered=True)
    metrics.outbound_failed(RuntimeError("x"))
    metrics.slack_api_answer("chat.postMessage", 429)


@pytest.mark.parametrize("failure,reason", [
    (PostFailed("C1", "ratelimited", retry_after=1), "rate_limited"),
    (PostFailed("C1", "not_in_channel", permanent=True), "channel_refused"),
    (PostFailed("C1", "TimeoutError", ambiguous=True), "timeout"),
    (PostFailed("C1", "cannot connect: refused"), "connection"),
    (PostFailed("C1", "fatal_error"), "slack_error"),
])
def test_slack_failures_map_to_a_fixed_set_of_reasons(failure: PostFailed, reason: str) -> None:
    assert post_failure_reason(failure) == reason in metrics.IN_FAILURES


@pytest.mark.parametrize("failure,reason", [
    (AmiActionFailed("MessageSend", "Message failed to send."), "asterisk_refused"),
    (GaveUp("Asterisk was unreachable for 60 min"), "asterisk_unreachable"),
    (PartlySent(1, 3, AmiActionFailed("MessageSend", "")), "asterisk_refused"),
    (AmiUnavailable("not connected"), "asterisk_unreachable"),
    (RuntimeError("?"), "other"),
])
def test_send_failures_map_to_a_fixed_set_of_reasons(failure: Exception, reason: str) -> None:
    assert send_failure_reason(failure) == reason in metrics.OUT_FAILURES


# -- end to end: the real bridge, a real Asterisk --------------------------------------------

SECRETS = (BOT_TOKEN, SIGNING_SECRET, APP_TOKEN, AMI_SECRET)


@pytest.fixture
async def own_asterisk() -> AsyncIterator[tuple[AsteriskSandbox, SipPhone]]:
    """An Asterisk of this test's own: a second bridge on the shared one would post every
    phone text twice."""
    async with own_pbx("alice") as (sandbox, phones):
        yield sandbox, phones["alice"]


async def wait_metrics(port: int, done: Callable[[Samples], bool],
                       timeout: float = 10.0) -> Samples:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        samples = await scrape(port)
        if done(samples):
            return samples
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"metrics did not get there: {samples}")
        await asyncio.sleep(0.1)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.mark.asterisk
async def test_counters_move_when_texts_move_and_json_logs_carry_them(
        tmp_path: Path, slack: FakeSlack,
        own_asterisk: tuple[AsteriskSandbox, SipPhone]) -> None:
    asterisk, phone = own_asterisk
    config = write_config(tmp_path, BridgeConfig(ami_port=asterisk.ami_port,
                                                 endpoints=directory_endpoints(),
                                                 default_channel=DEFAULT_CHANNEL))
    bridge = BridgeProcess(config, {**bridge_env(slack), "LOG_FORMAT": "json"}, port=free_port())
    await bridge.start()
    try:
        await bridge.wait_for_log("AMI: connected")
        before = await scrape(bridge.port)
        assert value(before, "bridge_ami_connected", pbx="default") == 1

        async def slash(text: str) -> str:
            body, headers = slack.signed_slash_command(slack.slash_command_payload(text=text))
            status, answer = await bridge.post_signed(body, headers)
            assert status == 200
            return ack_text(answer)

        alice = await slash("alice counted hello")
        assert taken(alice)
        ghost = await slash("ghost nobody home")
        assert "Asterisk refused it" in ghost or "Sending" in ghost, ghost
        assert "no phone called" in await slash("alcie typo")  # refused before sending
        assert "no text" in await slash("alice   ")
        refusals = await scrape(bridge.port)
        assert moved(before, refusals, "bridge_texts_refused_total",
                     reason="unknown_recipient") == 1
        assert moved(before, refusals, "bridge_texts_refused_total", reason="invalid_text") == 1
        [message] = await phone.wait_for_messages(1)
        assert message.body == "counted hello"
        deadline = asyncio.get_running_loop().time() + 10
        while len(outcomes_told(slack, [alice, ghost])) < 2:  # both senders told
            assert asyncio.get_running_loop().time() < deadline, slack.responses
            await asyncio.sleep(0.1)
        mid = await wait_metrics(bridge.port, lambda s: moved(
            before, s, "bridge_texts_out_total", result="failed") == 1 and moved(
            before, s, "bridge_slack_posts_total", result="posted") >= 2)  # the two echoes
        assert moved(before, mid, "bridge_texts_out_total", result="sent") == 1
        assert moved(before, mid, "bridge_text_out_latency_seconds_count") == 1
        assert moved(before, mid, "bridge_delivery_failures_total", direction="out",
                     reason="asterisk_refused") == 1
        assert moved(before, mid, "bridge_texts_in_total", result="posted") == 0  # echoes only

        slack.fail_next("chat.postMessage", status=429, retry_after=1)
        await phone.send_message("counted from the phone")
        [post] = await wait_phone_posts(slack, 1)
        assert post["channel"] == ALICE_CHANNEL
        after = await wait_metrics(bridge.port, lambda s: moved(
            mid, s, "bridge_texts_in_total", result="posted") == 1)
        assert moved(mid, after, "bridge_text_in_latency_seconds_count") == 1
        assert moved(mid, after, "bridge_slack_rate_limited_total") == 1
        assert moved(mid, after, "bridge_delivery_failures_total", direction="in",
                     reason="rate_limited") == 1
        assert moved(mid, after, "bridge_slack_api_calls_total", method="chat.postMessage",
                     status="429") == 1
        assert moved(before, after, "bridge_slack_api_calls_total", method="chat.postMessage",
                     status="2xx") >= 3
        assert value(after, "bridge_texts_waiting", direction="in") == 0
        assert value(after, "bridge_texts_waiting", direction="out") == 0
        labels = {dict(key[1]).get("method") for key in after} - {None}
        assert labels <= metrics.SLACK_METHODS | {"other"}
    finally:
        assert await bridge.stop() == 0, bridge.log

    entries = []
    for line in bridge.lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(e["level"] == "DEBUG" for e in entries)  # the verbose run really happened
    posted = [e for e in entries if e.get("direction") == "in" and e.get("result") == "posted"]
    phone_in = posted[-1]  # the phone's text came after the two echoes
    assert phone_in["endpoint"] == "alice" and phone_in["channel"] == ALICE_CHANNEL
    assert isinstance(phone_in["latency_ms"], float) and phone_in["latency_ms"] >= 0
    [retry] = [e for e in entries if e.get("direction") == "in"
               and e.get("result") == "retrying"]
    assert retry["reason"] == "ratelimited" and retry["retry_after_s"] == 1.0
    [sent] = [e for e in entries if e.get("direction") == "out" and e.get("result") == "sent"]
    assert sent["endpoint"] == "alice" and isinstance(sent["latency_ms"], float)
    [refused] = [e for e in entries if e.get("direction") == "out"
                 and e.get("result") == "failed"]
    assert refused["endpoint"] == "ghost" and "Asterisk refused" in refused["reason"]
    text = "\n".join(bridge.lines)
    assert not [s for s in SECRETS if s in text]
