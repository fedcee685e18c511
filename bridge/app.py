"""The bridge's lifecycle: build every part, start them in order, stop them in reverse.

Each part is handed what it needs when it is built (nothing is wired afterwards):

    store ─┬──────────────────────────────────────────────┐
    Slack client ── SlackActions, Notifier ─┐              │
    Inbox ◄── AmiLink (texts from phones)   ├─ DeliveryFeedback
                │                           │      │
                ▼                           ▼      ▼
          InboundRelay ◄────────────── SlackFrontend ──► Outbox ──► AmiLink (MessageSend)

One `AsyncExitStack` holds the stop actions: whatever started is stopped, in reverse order,
whether the bridge is told to stop (SIGTERM, SIGINT), a background task crashes, or a later
part fails to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

import aiohttp

from bridge.asterisk.ami import AmiLink
from bridge.core.errors import StoreError
from bridge.core.tasks import TaskSet
from bridge.delivery.feedback import DeliveryFeedback
from bridge.delivery.inbound import InboundRelay, Inbox
from bridge.delivery.outbound import Outbox
from bridge.ops.health import SlackReachability
from bridge.ops.http import OpsEndpoints
from bridge.ops.metrics import Metrics, install
from bridge.settings.config import Settings
from bridge.slack.client import (
    Notifier,
    SlackActions,
    SlackPoster,
    api_url,
    auth_probe,
    make_web_client,
)
from bridge.slack.frontend import SlackFrontend
from bridge.store import open_store, store_location
from bridge.store.backend import StoreBackend

log = logging.getLogger("bridge")

EXIT_STORE = 3
_BACKLOG_REPORT_SECONDS = 30.0
_KEEP_DELIVERED_SECONDS = 3 * 86400  # well beyond Asterisk's ~22 h spool


async def run(settings: Settings) -> int:
    """Run the bridge until SIGTERM/SIGINT; the process's exit status."""
    try:
        store = await open_store(settings)
    except StoreError as exc:
        log.error("store: %s", exc)
        return EXIT_STORE
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(store.close)
        return await _serve(settings, store, stack)
    raise AssertionError("unreachable")  # pragma: no cover - mypy cannot see through the stack


async def _serve(settings: Settings, store: StoreBackend, stack: contextlib.AsyncExitStack) -> int:
    drain = settings.delivery.drain_timeout
    # Every answer on the shared Slack session tells /healthz that Slack is reachable.
    slack_health = SlackReachability(api_url(settings.slack))
    # One pool of Slack connections for the whole run. slack_sdk applies its own timeout only
    # to sessions it creates, so the shared one carries it.
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.slack.timeout),
                                    trace_configs=[slack_health.trace_config()])
    stack.push_async_callback(session.close)
    client = make_web_client(settings.slack, session=session)
    actions = SlackActions(client, usergroups=settings.access.usergroups)
    inbox = Inbox()
    ami = AmiLink(settings.ami, on_text=inbox.submit)
    feedback = DeliveryFeedback(store=store, reactions=actions,
                                teller=Notifier(client, fallback=settings.delivery.notify),
                                ami=ami, command=settings.slack.command)
    tasks = TaskSet()
    relay = InboundRelay(store=store, directory=settings.directory,
                         default_channel=settings.slack.default_channel,
                         poster=SlackPoster(client), delivery=settings.delivery, tasks=tasks,
                         inbox=inbox, feedback=feedback, thread_idle=settings.slack.thread_idle)
    outbox = Outbox(store=store, sender=ami, feedback=feedback,
                    from_=settings.ami.from_, max_wait=settings.delivery.outbound_max_wait)
    metrics = Metrics()
    metrics.watch(ami=ami, slack=slack_health)
    install(metrics)
    ops = OpsEndpoints(ami=ami, slack=slack_health, store=store, metrics=metrics)
    frontend = SlackFrontend(settings=settings, client=client, actions=actions, outbox=outbox,
                             ami=ami, store=store, relay=relay, feedback=feedback,
                             # HTTP mode: /healthz and /metrics beside /slack/events
                             extra_routes=ops.add_routes)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("starting: %d endpoints, AMI %s:%d as %s, Slack %s, store %s", len(
        settings.directory.endpoints), settings.ami.host, settings.ami.port,
        settings.ami.username, "Socket Mode" if settings.slack.socket_mode else "HTTP",
        store_location(settings))

    # Start in order; each stop action is pushed once its part runs (they run in reverse).
    stack.push_async_callback(_report_left, store)
    stack.push_async_callback(tasks.cancel_all)
    await relay.start()
    stack.push_async_callback(relay.stop, drain)  # after AMI: no more texts from phones
    await ami.start()
    stack.push_async_callback(ami.stop)
    feedback.start()
    stack.push_async_callback(feedback.stop, drain)
    tasks.spawn(outbox.run(), name="outbox")
    stack.push_async_callback(outbox.stop, drain)  # needs AMI for the text it is sending
    tasks.spawn(slack_health.probe_loop(auth_probe(client)), name="slack-health")
    try:
        await frontend.start()
        stack.push_async_callback(frontend.stop)
        if settings.slack.socket_mode:  # no HTTP server for Slack: one for health and metrics
            await ops.serve(settings.slack.port)
            stack.push_async_callback(ops.stop)
    except Exception as exc:  # noqa: BLE001 - any failure here means the bridge cannot serve
        log.error("could not start the Slack side: %s", exc)
        return 1
    tasks.spawn(_report_backlog(store), name="backlog-report")
    log.info("bridge running")

    stopper = asyncio.create_task(stop.wait())
    crashed = asyncio.create_task(tasks.failed.wait())
    await asyncio.wait({stopper, crashed}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    crashed.cancel()
    log.info("stopping: no new commands; finishing what is in flight (up to %.0f s)", drain)
    # The stack now stops everything in reverse; the exit status is decided before.
    return 1 if tasks.failed.is_set() else 0


async def _report_left(store: StoreBackend) -> None:
    backlog = await store.backlog()
    log.info("stopped; left in the store for the next start: %d texts from phones, %d to "
             "phones", backlog.inbound_waiting, backlog.outbound_waiting)


async def _report_backlog(store: StoreBackend) -> None:
    """Log queue depths and the oldest waiting text whenever something is waiting; forget
    delivered texts after a few days."""
    last: tuple[int, int] = (0, 0)
    next_prune = 0.0
    while True:
        if time.monotonic() >= next_prune:
            pruned = await store.prune(time.time() - _KEEP_DELIVERED_SECONDS)
            if pruned:
                log.info("store: forgot %d delivered texts older than %d days", pruned,
                         _KEEP_DELIVERED_SECONDS // 86400)
            next_prune = time.monotonic() + 3600
        await asyncio.sleep(_BACKLOG_REPORT_SECONDS)
        backlog = await store.backlog()
        now = time.time()
        current = (backlog.inbound_waiting, backlog.outbound_waiting)
        if current == (0, 0) and last == (0, 0):
            continue
        last = current
        log.info("backlog: %d texts from phones waiting for Slack%s; %d texts to phones "
                 "waiting for Asterisk%s", backlog.inbound_waiting,
                 _age(backlog.inbound_oldest, now), backlog.outbound_waiting,
                 _age(backlog.outbound_oldest, now))


def _age(oldest: float | None, now: float) -> str:
    return f" (oldest {now - oldest:.0f} s)" if oldest is not None else ""
