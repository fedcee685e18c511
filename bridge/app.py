"""The bridge's lifecycle: build every part, start them in order, stop them in reverse.

Each part is handed what it needs when it is built (nothing is wired afterwards):

    store ─┬──────────────────────────────────────────────┐
    Slack client ── SlackActions, Notifier ─┐              │
    Inbox ◄── AmiLink (texts from phones)   ├─ DeliveryFeedback
                │                           │      │
                ▼                           ▼      ▼
          InboundRelay ◄────────────── SlackFrontend ──► Outbox ──► AmiLink (MessageSend)

Several PBXs: one AmiLink per `[[pbx]]` (PbxLinks holds them), all handing texts to the one
Inbox, each read from its own spool mark; the Outbox has one lane per PBX, sending through
that PBX's link.

One `AsyncExitStack` holds the stop actions: whatever started is stopped, in reverse order,
whether the bridge is told to stop (SIGTERM, SIGINT), a background task crashes, or a later
part fails to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable

import aiohttp

from bridge.asterisk.ami import AmiLink
from bridge.asterisk.links import PbxLinks
from bridge.core.errors import StoreError
from bridge.core.model import Backlog
from bridge.core.presence import PhonePresence
from bridge.core.tasks import TaskSet
from bridge.delivery.feedback import DeliveryFeedback
from bridge.delivery.inbound import InboundRelay, Inbox
from bridge.delivery.leases import Leases, events_lease, outbox_lease, replica_name
from bridge.delivery.outbound import Outbox, Route
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
from bridge.slack.home import HomeTab
from bridge.store import open_store, store_location
from bridge.store.backend import StoreBackend

log = logging.getLogger("bridge")

EXIT_STORE = 3
_BACKLOG_REPORT_SECONDS = 30.0
_KEEP_DELIVERED_SECONDS = 3 * 86400  # well beyond Asterisk's ~22 h spool


async def run(settings: Settings, *, replay_spool: bool = False) -> int:
    """Run the bridge until SIGTERM/SIGINT; the process's exit status."""
    try:
        store = await open_store(settings)
    except StoreError as exc:
        log.error("store: %s", exc)
        return EXIT_STORE
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(store.close)
        return await _serve(settings, store, stack, replay_spool=replay_spool)
    raise AssertionError("unreachable")  # pragma: no cover - mypy cannot see through the stack


async def _serve(settings: Settings, store: StoreBackend, stack: contextlib.AsyncExitStack, *,
                 replay_spool: bool) -> int:
    drain = settings.delivery.drain_timeout
    # A store newer than texts in Asterisk's spool does not know whether they are in Slack
    # (it was deleted, replaced, or this is the first run): they are only relayed if asked.
    spool_since = None if replay_spool else store.created_at
    if replay_spool:
        log.warning("store: --replay-spool: every text in Asterisk's spool that this store "
                    "does not know is relayed, even if it may be in Slack already")
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
    presence = PhonePresence()  # which phones are registered (ContactStatus events)
    # Several replicas on one PostgreSQL store share the work by leases (a channel, a PBX's
    # texts in, a PBX's texts out); alone on a SQLite file, this bridge holds every lease.
    leases = Leases(store=store, holder=replica_name(), ttl=settings.lease_seconds,
                    shared=settings.store_url is not None)
    for pbx in settings.all_pbxs:
        leases.want(events_lease(pbx.name))
        leases.want(outbox_lease(pbx.name))
    links = PbxLinks([AmiLink(pbx, on_text=inbox.submit,
                              spool_mark=functools.partial(store.spool_mark, pbx.name),
                              spool_since=spool_since, presence=presence,
                              consuming=functools.partial(leases.holds, events_lease(pbx.name)))
                      for pbx in settings.all_pbxs])
    # The App Home tab: the directory with presence, a user's recent texts, the bridge's state.
    home = HomeTab(client=client, directory=settings.directory,
                   presence=lambda name: presence.of_name(settings.directory, name),
                   recent=store.recent_outbound, state=_state_of(links, store))
    presence.on_change(lambda _endpoint: home.changed())
    feedback = DeliveryFeedback(store=store, reactions=actions,
                                teller=Notifier(client, fallback=settings.delivery.notify),
                                ami=links, command=settings.slack.command, on_change=home.changed)
    tasks = TaskSet()
    relay = InboundRelay(store=store, directory=settings.directory,
                         default_channel=settings.slack.default_channel,
                         poster=SlackPoster(client), delivery=settings.delivery, tasks=tasks,
                         inbox=inbox, feedback=feedback, thread_idle=settings.slack.thread_idle,
                         show_pbx=links.several, access=settings.access, leases=leases)
    outbox = Outbox(store=store, feedback=feedback, max_wait=settings.delivery.outbound_max_wait,
                    routes={link.name: Route(link, pbx.from_)
                            for link, pbx in zip(links, settings.all_pbxs, strict=True)},
                    leases=leases)

    def lease_changed(name: str, held: bool) -> None:
        for link in links:
            if name == events_lease(link.name):
                if held:
                    link.take_over()  # read the spool for what arrived while nobody took it
                else:
                    link.stand_by()  # Asterisk stops sending this replica the texts
    leases.on_change(lease_changed)
    metrics = Metrics()
    metrics.watch(ami=list(links), slack=slack_health)
    install(metrics)
    ops = OpsEndpoints(ami=list(links), slack=slack_health, store=store, metrics=metrics,
                       leases=leases)
    frontend = SlackFrontend(settings=settings, client=client, actions=actions, outbox=outbox,
                             ami=links, store=store, relay=relay, feedback=feedback,
                             transport=slack_health, presence=presence, home=home,
                             # HTTP mode: /healthz and /metrics beside /slack/events
                             extra_routes=ops.add_routes)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("starting: %d endpoints, AMI %s, Slack %s, store %s", len(
        settings.directory.endpoints), ", ".join(
            f"{p.host}:{p.port} as {p.username}" + (f" (PBX {p.name})" if links.several else "")
            for p in settings.all_pbxs),
        "Socket Mode" if settings.slack.socket_mode else "HTTP", store_location(settings))

    # Start in order; each stop action is pushed once its part runs (they run in reverse).
    stack.push_async_callback(_report_left, store)
    stack.push_async_callback(tasks.cancel_all)
    if leases.shared:
        # Whatever is free is this replica's before it starts (the first replica takes the
        # PBXs' streams at once); then renewed and retaken in the background.
        await leases.claim(name for name in leases.wanted)
        log.info("replica %s on a shared store: holds %s", leases.holder,
                 ", ".join(leases.held()) or "nothing yet (other replicas hold the PBXs)")
    tasks.spawn(leases.run(), name="leases")
    stack.push_async_callback(leases.stop)  # the last to stop: after the work is finished
    await relay.start()
    stack.push_async_callback(relay.stop, drain)  # after AMI: no more texts from phones
    tasks.spawn(store.watch(), name="store-watch")  # file replaced? disk writable again?
    await links.start()  # each PBX connects in the background, on its own
    stack.push_async_callback(links.stop)
    feedback.start()
    stack.push_async_callback(feedback.stop, drain)
    tasks.spawn(outbox.run(), name="outbox")
    stack.push_async_callback(outbox.stop, drain)  # needs AMI for the text it is sending
    tasks.spawn(slack_health.probe_loop(auth_probe(client)), name="slack-health")
    tasks.spawn(frontend.identity.learn(), name="slack-identity")
    try:
        if settings.slack.socket_mode:  # no HTTP server for Slack: one for health and metrics,
            await ops.serve(settings.slack.port, host=settings.ops.bind)  # before Slack, which
            # may be unreachable for a while
            stack.push_async_callback(ops.stop)
        await frontend.start()
        stack.push_async_callback(frontend.stop)
        stack.push_async_callback(home.stop)  # after the frontend: no more Home changes
    except Exception as exc:  # noqa: BLE001 - any failure here means the bridge cannot serve
        log.error("could not start the Slack side: %s", exc)
        return 1
    tasks.spawn(_report_backlog(store, keep=max(_KEEP_DELIVERED_SECONDS,
                                                settings.slack.thread_idle),
                                keep_audit=settings.access.audit_keep_days * 86400),
                name="backlog-report")
    log.info("bridge running")

    stopper = asyncio.create_task(stop.wait())
    crashed = asyncio.create_task(tasks.failed.wait())
    await asyncio.wait({stopper, crashed}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    crashed.cancel()
    log.info("stopping: no new commands; finishing what is in flight (up to %.0f s)", drain)
    # The stack now stops everything in reverse; the exit status is decided before.
    return 1 if tasks.failed.is_set() else 0


def _state_of(ami: PbxLinks, store: StoreBackend) -> Callable[[], Awaitable[tuple[bool, Backlog]]]:
    """What the App Home shows of the bridge: is Asterisk there, what waits."""
    async def state() -> tuple[bool, Backlog]:
        return ami.ready, await store.backlog()
    return state


async def _report_left(store: StoreBackend) -> None:
    try:
        backlog = await store.backlog()
    except StoreError as exc:  # a database gone at the stop: what is stored stays stored
        log.warning("stopped; the store cannot say what is left in it: %s", exc)
        return
    log.info("stopped; left in the store for the next start: %d texts from phones, %d to "
             "phones", backlog.inbound_waiting, backlog.outbound_waiting)


async def _report_backlog(store: StoreBackend, *, keep: float, keep_audit: float) -> None:
    """Log queue depths and the oldest waiting text whenever something is waiting; forget
    delivered texts, idle conversations and their threads after `keep` seconds, audit entries
    after `keep_audit`."""
    last: tuple[int, int] = (0, 0)
    next_prune = 0.0
    while True:
        if time.monotonic() >= next_prune:
            next_prune = time.monotonic() + 3600
            try:
                pruned = await store.prune(time.time() - keep,
                                           audit_older_than=time.time() - keep_audit)
            except StoreError as exc:  # a full disk: try again in an hour
                log.warning("store: could not prune: %s", exc)
            else:
                if any(dataclasses.astuple(pruned)):
                    log.info("store: forgot %d delivered texts, %d idle conversations and %d "
                             "threads older than %.0f days, %d audit entries older than %.0f "
                             "days", pruned.texts, pruned.conversations, pruned.threads,
                             keep / 86400, pruned.audit, keep_audit / 86400)
        await asyncio.sleep(_BACKLOG_REPORT_SECONDS)
        try:
            backlog = await store.backlog()
        except StoreError:  # /healthz says why; nothing to report
            continue
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
