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

from bridge.ami import AmiLink
from bridge.config import Settings, load_settings
from bridge.errors import ConfigError
from bridge.logs import add_secrets, setup_logging
from bridge.outbound import Outbox
from bridge.relay import InboundRelay
from bridge.slack_app import SlackFrontend
from bridge.slack_client import SlackPoster, make_web_client
from bridge.tasks import TaskSet

log = logging.getLogger("bridge")

EXIT_CONFIG = 2
# How long a stopping bridge waits for queued texts to reach Slack.
_DRAIN_SECONDS = 10.0


async def run(settings: Settings) -> int:
    tasks = TaskSet()
    client = make_web_client(settings.slack)
    relay = InboundRelay(directory=settings.directory,
                         default_channel=settings.slack.default_channel,
                         poster=SlackPoster(client))
    ami = AmiLink(settings.ami, on_text=relay.submit)
    outbox = Outbox(directory=settings.directory, sender=ami, from_=settings.ami.from_)
    frontend = SlackFrontend(settings=settings, client=client, outbox=outbox, ami=ami)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    log.info("starting: %d endpoints, AMI %s:%d as %s, Slack %s", len(
        settings.directory.endpoints), settings.ami.host, settings.ami.port,
        settings.ami.username, "Socket Mode" if settings.slack.socket_mode else "HTTP")
    tasks.spawn(relay.run(), name="inbound-relay")
    await ami.start()
    try:
        await frontend.start()
    except Exception as exc:  # noqa: BLE001 - any failure here means the bridge cannot serve
        log.error("could not start the Slack side: %s", exc)
        await ami.stop()
        await tasks.cancel_all()
        return 1
    log.info("bridge running")

    stopper = asyncio.create_task(stop.wait())
    crashed = asyncio.create_task(tasks.failed.wait())
    await asyncio.wait({stopper, crashed}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    crashed.cancel()
    log.info("stopping")
    await frontend.stop()
    await ami.stop()
    if relay.backlog and not await relay.drain(_DRAIN_SECONDS):
        log.error("stopped with %d texts from phones not yet posted to Slack", relay.backlog)
    await tasks.cancel_all()
    log.info("stopped")
    return 1 if tasks.failed.is_set() else 0


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
    args = parser.parse_args(argv)

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
