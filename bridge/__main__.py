"""The command line: `python -m bridge run --config PATH` (or `bridge run`), and the admin
commands (`check`, `asterisk-config`, `demo`, ...).

`run` reads and checks the whole config first: a problem is reported whole and exits 2 before
anything connects; then `bridge.app.run` owns the lifecycle.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import sys

from bridge import app
from bridge.core.errors import ConfigError
from bridge.ops.admin_cli import add_admin_commands, run_admin_command
from bridge.ops.logs import add_secrets, setup_logging
from bridge.settings.config import load_settings

EXIT_CONFIG = 2


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
    return asyncio.run(app.run(settings, replay_spool=args.replay_spool))


if __name__ == "__main__":
    sys.exit(main())
