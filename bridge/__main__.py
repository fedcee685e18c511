"""Command line and lifecycle: `python -m bridge run --config PATH` (or `bridge run`).

Start in order (config, AMI link, inbound relay, Slack), wait for SIGTERM/SIGINT, stop in
reverse. A configuration problem is reported whole and exits 2 before anything connects.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import faulthandler
import logging
import os
import signal
import sqlite3
import sys
import time

import aiohttp

from bridge.admin_cli import add_admin_commands, run_admin_command
from bridge.ami import AmiLink
from bridge.config import Settings, load_settings
from bridge.errors import ConfigError
from bridge.health import SlackReachability
from bridge.logs import add_secrets, setup_logging
from bridge.metrics import Metrics, install
from bridge.ops_http import OpsEndpoints
from bridge.outbound import Outbox
from bridge.relay import InboundRelay
from bridge.slack_app import SlackFrontend
from bridge.slack_client import SlackPoster, make_web_client
from bridge.store import Store, StoreError
from bridge.tasks import TaskSet

log = logging.getLogger("bridge")

EXIT_CONFIG = 2
EXIT_STORE = 3
_BACKLOG_REPORT_SECONDS = 30.0
_KEEP_DELIVERED_SECONDS = 3 * 86400  # well beyond Asterisk's ~22 h spool


async def run(settings: Settings, *, replay_spool: bool = False) -> int:
    try:
        store = await Store.open(settings.store_path)
    except StoreError as exc:
        log.error("store: %s", exc)
        return EXIT_STORE
    # A store newer than texts in Asterisk's spool does not know whether they are in Slack
    # (it was deleted, replaced, or this is the first run): they are only relayed if asked.
    spool_since = None if replay_spool else store.created_at
    if replay_spool:
        log.warning("store: --replay-spool: every text in Asterisk's spool that this store "
                    "does not know is relayed, even if it may be in Slack already")
    tasks = TaskSet()
    # One pool of Slack connections for the whole run. slack_sdk applies its own timeout only
    # to sessions it creates, so the shared one carries it.
    # Every answer on it tells /healthz that Slack is reachable (bridge.health).
    slack_health = SlackReachability()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.slack.timeout),
                                    trace_configs=[slack_health.trace_config()])
    client = make_web_client(settings.slack, session=session)
    slack_health.api_url = client.base_url
    relay = InboundRelay(store=store, directory=settings.directory,
                         default_channel=settings.slack.default_channel,
                         poster=SlackPoster(client), delivery=settings.delivery, tasks=tasks,
                         thread_idle=settings.slack.thread_idle)
    ami = AmiLink(settings.ami, on_text=relay.submit, spool_since=spool_since)
    outbox = Outbox(store=store, sender=ami,
                    from_=settings.ami.from_, max_wait=settings.delivery.outbound_max_wait)
    frontend = SlackFrontend(settings=settings, client=client, outbox=outbox, ami=ami,
                             store=store, relay=relay)
    outbox.set_teller(frontend.tell)
    relay.set_echo_listener(frontend)
    metrics = Metrics()
    metrics.watch(ami=ami, slack=slack_health)
    install(metrics)
    ops = OpsEndpoints(ami=ami, slack=slack_health, store=store, metrics=metrics)
    frontend.extra_routes = ops.add_routes  # HTTP mode: /healthz, /metrics beside /slack/events
    slack_health.transport_problem = frontend.transport_problem

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    log.info("starting: %d endpoints, AMI %s:%d as %s, Slack %s, store %s", len(
        settings.directory.endpoints), settings.ami.host, settings.ami.port,
        settings.ami.username, "Socket Mode" if settings.slack.socket_mode else "HTTP",
        settings.store_path)
    await relay.start()
    tasks.spawn(store.watch(), name="store-watch")  # file replaced? disk writable again?
    tasks.spawn(outbox.run(), name="outbox")
    await ami.start()
    tasks.spawn(slack_health.probe_loop(client.auth_test), name="slack-health")
    tasks.spawn(frontend.identity.learn(), name="slack-identity")
    try:
        if settings.slack.socket_mode:  # no HTTP server for Slack: one for health and metrics,
            await ops.serve(settings.slack.port)  # up before Slack, which may be unreachable
        await frontend.start()
    except Exception as exc:  # noqa: BLE001 - any failure here means the bridge cannot serve
        log.error("could not start the Slack side: %s", exc)
        await ops.stop()
        await ami.stop()
        await tasks.cancel_all()
        await store.close()
        await session.close()
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
    drain = settings.delivery.drain_timeout
    log.info("stopping: no new commands; finishing what is in flight (up to %.0f s)", drain)
    await frontend.stop()
    await ops.stop()
    await outbox.stop(drain)  # needs AMI for the text it is sending
    await ami.stop()  # no more texts from phones
    await relay.stop(drain)
    await tasks.cancel_all()
    backlog = await store.backlog()
    await store.close()
    await session.close()
    log.info("stopped; left in the store for the next start: %d texts from phones, %d to "
             "phones", backlog.inbound_waiting, backlog.outbound_waiting)
    return 1 if tasks.failed.is_set() else 0


async def _report_backlog(store: Store, *, keep: float, keep_audit: float) -> None:
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
        except (StoreError, sqlite3.Error):  # /healthz says why; nothing to report
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bridge", description="Slack <-> Asterisk text bridge.")
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run the bridge")
    run_parser.add_argument("--config", default=os.environ.get("BRIDGE_CONFIG"),
                            help="path of the TOML config (default: $BRIDGE_CONFIG)")
    run_parser.add_argument("--mode", choices=("auto", "http", "socket"), default="auto",
                            help="Slack transport: Socket Mode or HTTP (default: Socket Mode "
                                 "when SLACK_APP_TOKEN is set, else HTTP on $PORT)")
    run_parser.add_argument("--replay-spool", action="store_true",
                            help="relay the texts in Asterisk's spool that are older than the "
                                 "store too (after the store was lost or replaced; they may "
                                 "already be in Slack)")
    add_admin_commands(sub)
    args = parser.parse_args(argv)
    if args.command != "run":
        setup_logging()
        return run_admin_command(args)

    setup_logging()
    # A fatal signal (SIGBUS from SQLite's memory-mapped -shm on a broken disk, SIGSEGV) would
    # otherwise end the process without a word: this prints the signal and where it hit.
    faulthandler.enable()
    if not args.config:
        print("bridge: no config file given: pass --config PATH or set BRIDGE_CONFIG "
              "(start from config/bridge.example.toml)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        settings = load_settings(args.config, mode=args.mode)
    except ConfigError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    add_secrets(settings.secrets())
    return asyncio.run(run(settings, replay_spool=args.replay_spool))


if __name__ == "__main__":
    sys.exit(main())
