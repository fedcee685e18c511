"""Prometheus metrics: texts moved, failures by reason, queues, AMI and Slack, latencies.

One `Metrics` object owns a dedicated `CollectorRegistry` (never prometheus_client's global
one, so several bridges or tests in one process do not clash). `__main__` creates it and
`install()`s it; the places where texts move call the small module functions below
(`inbound_posted`, `outbound_sent`, ...), which do nothing when no `Metrics` is installed
(unit tests of the relay or the outbox need no set-up).

Every label takes values from a fixed set, listed here, so no text, user or channel can
grow the number of series. Queue depths are read from the store when `/metrics` is scraped
(`refresh_backlog`); AMI state and Slack reachability are read at collection time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.core.errors import AmiActionFailed, AmiError, PostFailed
from bridge.core.model import Backlog

# Label values (bounded by construction).
IN_RESULTS = ("posted", "recovered")  # recovered: found already posted after a timeout/crash
OUT_RESULTS = ("sent", "failed")
IN_FAILURES = ("rate_limited", "channel_refused", "timeout", "connection", "slack_error")
OUT_FAILURES = ("asterisk_refused", "asterisk_unreachable", "unconfirmed", "other")
# Why a text from Slack was refused before it was stored (bridge/delivery/gate.py, check_text).
REFUSALS = ("unknown_recipient", "not_allowed", "rate_limited", "invalid_text")
# What a replica can hold a lease on (bridge/delivery/leases.py).
LEASE_KINDS = ("channel", "events", "outbox")
SLACK_METHODS = frozenset({
    "chat.postMessage", "chat.postEphemeral", "chat.update", "conversations.history",
    "conversations.replies",
    "conversations.info", "conversations.members", "reactions.add", "reactions.remove",
    "users.info", "auth.test", "apps.connections.open",
})

# Seconds; from a text that goes straight through to one that waited an hour for Asterisk.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                    3600.0)


class AmiStatus(Protocol):
    """What metrics and health read from one PBX's AMI link (implemented by AmiLink)."""

    @property
    def ready(self) -> bool: ...

    @property
    def name(self) -> str: ...

    reconnects: int
    text_events: int


class SlackStatus(Protocol):
    """What metrics read about Slack's reachability (implemented by SlackReachability)."""

    def answered_age(self) -> float | None: ...


class Metrics:
    """The bridge's instruments, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.texts_in = Counter("bridge_texts_in", "Texts from phones posted in Slack",
                                ["result"], registry=r)
        self.texts_out = Counter("bridge_texts_out", "Texts from Slack finished towards "
                                 "phones (sent: Asterisk accepted every part)", ["result"],
                                 registry=r)
        self.failures = Counter("bridge_delivery_failures", "Failed delivery attempts (a "
                                "retried text counts once per attempt)",
                                ["direction", "reason"], registry=r)
        self.slack_posts = Counter("bridge_slack_posts", "Posts of phone texts that reached "
                                   "Slack (one post may carry several texts)", ["result"],
                                   registry=r)
        self.slack_calls = Counter("bridge_slack_api_calls", "Slack Web API calls by method "
                                   "and HTTP status class", ["method", "status"], registry=r)
        self.slack_rate_limited = Counter("bridge_slack_rate_limited", "Slack Web API answers "
                                          "with HTTP 429", registry=r)
        self.in_latency = Histogram("bridge_text_in_latency_seconds", "From a phone's text "
                                    "reaching the bridge to its post in Slack",
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.out_latency = Histogram("bridge_text_out_latency_seconds", "From a Slack text "
                                     "being accepted to Asterisk accepting its last part",
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.waiting = Gauge("bridge_texts_waiting", "Texts waiting in the store",
                             ["direction"], registry=r)
        self.oldest = Gauge("bridge_oldest_waiting_seconds", "Age of the oldest waiting text "
                            "(0 when none waits)", ["direction"], registry=r)
        self.refused = Counter("bridge_texts_refused", "Texts from Slack refused before "
                               "sending (unknown recipient, not allowed, over a rate limit, "
                               "not sendable as typed)", ["reason"], registry=r)
        self.untold = Gauge("bridge_untold_outcomes", "Finished texts to phones whose sender "
                            "has not been told yet", registry=r)
        self.leases = Gauge("bridge_leases_held", "Leases this replica holds (several "
                            "replicas on one store): channels it posts, PBXs whose texts it "
                            "takes (events) and sends (outbox)", ["kind"], registry=r)
        for kind in LEASE_KINDS:
            self.leases.labels(kind=kind)
        for result in IN_RESULTS:
            self.texts_in.labels(result=result)
            self.slack_posts.labels(result=result)
        for result in OUT_RESULTS:
            self.texts_out.labels(result=result)
        for reason in IN_FAILURES:
            self.failures.labels(direction="in", reason=reason)
        for reason in OUT_FAILURES:
            self.failures.labels(direction="out", reason=reason)
        for reason in REFUSALS:
            self.refused.labels(reason=reason)
        for direction in ("in", "out"):
            self.waiting.labels(direction=direction)
            self.oldest.labels(direction=direction)

    def watch(self, *, ami: AmiStatus | Sequence[AmiStatus], slack: SlackStatus) -> None:
        """Report each PBX's AMI link (labelled `pbx`) and Slack's state whenever metrics are
        collected."""
        links = [ami] if not isinstance(ami, Sequence) else list(ami)
        self.registry.register(_LinkCollector(links, slack))

    def refresh_backlog(self, backlog: Backlog, now: float | None = None) -> None:
        """Set the queue gauges from the store's current backlog."""
        now = time.time() if now is None else now
        for direction, count, oldest in (
                ("in", backlog.inbound_waiting, backlog.inbound_oldest),
                ("out", backlog.outbound_waiting, backlog.outbound_oldest)):
            self.waiting.labels(direction=direction).set(count)
            self.oldest.labels(direction=direction).set(
                max(0.0, now - oldest) if oldest is not None else 0.0)
        self.untold.set(backlog.outbound_unnotified)

    def refresh_leases(self, held: list[str]) -> None:
        """Set the leases gauge from the names held (`<kind>:<what>`)."""
        for kind in LEASE_KINDS:
            self.leases.labels(kind=kind).set(
                sum(1 for name in held if name.startswith(kind + ":")))

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class _LinkCollector(Collector):
    def __init__(self, links: list[AmiStatus], slack: SlackStatus) -> None:
        self._links = links
        self._slack = slack

    def collect(self) -> Iterable[Metric]:
        return self._metrics()

    def _metrics(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily("bridge_ami_connected", "1 while logged in to the "
                                      "PBX's AMI", labels=["pbx"])
        reconnects = CounterMetricFamily("bridge_ami_reconnects", "AMI logins after the "
                                         "first, per PBX", labels=["pbx"])
        text_events = CounterMetricFamily(
            "bridge_ami_text_events", "Text events Asterisk sent this bridge, per PBX (taken "
            "or, by a replica not taking that PBX's texts, left)", labels=["pbx"])
        for link in self._links:
            connected.add_metric([link.name], 1 if link.ready else 0)
            reconnects.add_metric([link.name], link.reconnects)
            text_events.add_metric([link.name], link.text_events)
        yield connected
        yield reconnects
        yield text_events
        age = self._slack.answered_age()
        yield GaugeMetricFamily("bridge_slack_last_answer_age_seconds", "Seconds since Slack's "
                                "Web API last answered (-1: not yet)",
                                value=-1.0 if age is None else age)


# -- recording, from where texts move ----------------------------------------------------

_installed: Metrics | None = None


def install(metrics: Metrics | None) -> None:
    """Make `metrics` the instance the recording functions below update (None: none)."""
    global _installed
    _installed = metrics


def inbound_posted(latencies: list[float], *, recovered: bool) -> None:
    """A post reached Slack carrying phone texts that waited `latencies` seconds."""
    m = _installed
    if m is None:
        return
    result = "recovered" if recovered else "posted"
    m.slack_posts.labels(result=result).inc()
    m.texts_in.labels(result=result).inc(len(latencies))
    for latency in latencies:
        m.in_latency.observe(max(0.0, latency))


def inbound_failed(exc: PostFailed) -> None:
    """A post to Slack failed (it will be retried or moved)."""
    if _installed is not None:
        _installed.failures.labels(direction="in", reason=post_failure_reason(exc)).inc()


def post_failure_reason(exc: PostFailed) -> str:
    if exc.retry_after is not None:
        return "rate_limited"
    if exc.permanent:
        return "channel_refused"
    if exc.ambiguous:
        return "timeout"
    if exc.error.startswith("cannot connect"):
        return "connection"
    return "slack_error"


def outbound_sent(latency: float) -> None:
    """Asterisk accepted every part of a text, `latency` seconds after it was accepted."""
    m = _installed
    if m is None:
        return
    m.texts_out.labels(result="sent").inc()
    m.out_latency.observe(max(0.0, latency))


def outbound_failed(reason: Exception) -> None:
    """A text to a phone failed for good."""
    m = _installed
    if m is None:
        return
    m.texts_out.labels(result="failed").inc()
    m.failures.labels(direction="out", reason=send_failure_reason(reason)).inc()


def outbound_refused(reason: str) -> None:
    """A text from Slack was refused before it was stored; `reason` is one of REFUSALS."""
    if _installed is not None:
        _installed.refused.labels(reason=reason if reason in REFUSALS else "invalid_text").inc()


def outbound_unconfirmed() -> None:
    """A part of a text got no answer (link lost); it is sent again."""
    if _installed is not None:
        _installed.failures.labels(direction="out", reason="unconfirmed").inc()


def send_failure_reason(reason: Exception) -> str:
    cause = getattr(reason, "cause", None)  # PartlySent: what stopped the rest
    if isinstance(cause, Exception):
        reason = cause
    if isinstance(reason, AmiActionFailed):
        return "asterisk_refused"
    if isinstance(reason, AmiError):  # includes waiting too long for an unreachable Asterisk
        return "asterisk_unreachable"
    return "other"


def slack_api_answer(method: str, status: int | None) -> None:
    """The Slack Web API answered `method` with HTTP `status` (None: no answer at all)."""
    m = _installed
    if m is None:
        return
    if status is None:
        label = "error"
    elif status == 429:
        label = "429"
        m.slack_rate_limited.inc()
    else:
        label = f"{min(max(status // 100, 2), 5)}xx"
    m.slack_calls.labels(method=method if method in SLACK_METHODS else "other",
                         status=label).inc()
