"""Command line and lifecycle: `python -m bridge run --config PATH` (or `bridge run`).

Start in order (config, AMI link, inbound relay, Slack), wait for SIGTERM/SIGINT, stop in
reverse. A configuration problem is reported whole and exits 2 before anything connects.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
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


async def run(settings: Settings) -> int:
    try:
        store = await Store.open(settings.store_path)
    except StoreError as exc:
        log.error("store: %s", exc)
        return EXIT_STORE
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
                         thread_idle=settings.slack.thread_idle, access=settings.access)
    ami = AmiLink(settings.ami, on_text=relay.submit)
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

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    log.info("starting: %d endpoints, AMI %s:%d as %s, Slack %s, store %s", len(
        settings.directory.endpoints), settings.ami.host, settings.ami.port,
        settings.ami.username, "Socket Mode" if settings.slack.socket_mode else "HTTP",
        settings.store_path)
    await relay.start()
    tasks.spawn(outbox.run(), name="outbox")
    await ami.start()
    tasks.spawn(slack_health.probe_loop(client.auth_test), name="slack-health")
    try:
        await frontend.start()
        if settings.slack.socket_mode:  # no HTTP server for Slack: one for health and metrics
            await ops.serve(settings.slack.port, host=settings.ops.bind)
    except Exception as exc:  # noqa: BLE001 - any failure here means the bridge cannot serve
        log.error("could not start the Slack side: %s", exc)
        await ami.stop()
        await tasks.cancel_all()
        await store.close()
        await session.close()
        return 1
    tasks.spawn(_report_backlog(store), name="backlog-report")
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


async def _report_backlog(store: Store) -> None:
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
    add_admin_commands(sub)
    args = parser.parse_args(argv)
    if args.command != "run":
        setup_logging()
        return run_admin_command(args)

    setup_logging()
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
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
