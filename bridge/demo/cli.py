"""The `bridge demo` subcommand: check what the demo needs, start it, stop it on Ctrl-C.

Needs no Slack app, no PBX, no config: only root (Asterisk runs in a chroot) and the Asterisk
sandbox, which it builds the first time when it can (`bridge/sandbox/build.sh`). When something
is missing it says exactly what and how to get it, and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys

from bridge.demo.runner import ENDPOINTS, Demo, DemoError
from bridge.sandbox.launcher import (
    build_script,
    default_sandbox_dir,
    sandbox_exists,
    sandbox_problem,
)

EXIT_MISSING = 2
log = logging.getLogger(__name__)


def add_demo_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `demo` to the `bridge` command line."""
    parser = sub.add_parser(
        "demo", help="try the bridge with no Slack app and no PBX: a local page, two phones",
        description="Start a real Asterisk (from the sandbox chroot), two simulated SIP phones, "
                    "a local stand-in for Slack shown as a web page, and the real bridge "
                    "between them. Ctrl-C stops everything. Needs root.")
    parser.add_argument("--port", type=int, default=8080,
                        help="port of the page on 127.0.0.1 (default 8080; 0 picks a free one)")
    parser.add_argument("--sandbox", default=None,
                        help="the Asterisk chroot (default: $ASTERISK_SANDBOX or "
                             f"{default_sandbox_dir()})")
    parser.add_argument("--no-build", action="store_true",
                        help="do not build a missing sandbox; say how to build it instead")
    parser.add_argument("--quiet", action="store_true", help="do not show the bridge's log")


def run_demo_command(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C / SIGTERM; return the exit status."""
    sandbox = args.sandbox or default_sandbox_dir()
    if not sandbox_exists(sandbox) and os.geteuid() == 0 and not args.no_build:
        print(f"bridge demo: building the Asterisk sandbox in {sandbox} (a Debian sid chroot, "
              "~640 MB download, about a minute; once)", flush=True)
        built = subprocess.run(["bash", str(build_script()), sandbox], check=False)
        if built.returncode != 0:
            print(f"bridge demo: building the sandbox failed (exit {built.returncode}); "
                  f"see above, then retry: sudo bash {build_script()} {sandbox}",
                  file=sys.stderr)
            return EXIT_MISSING
    problem = sandbox_problem(sandbox)
    if problem is not None:
        print(f"bridge demo: cannot start Asterisk: {problem}", file=sys.stderr)
        return EXIT_MISSING
    return asyncio.run(_run(args, sandbox))


async def _run(args: argparse.Namespace, sandbox: str) -> int:
    def show(line: str) -> None:
        if not args.quiet:
            print(f"  bridge | {line}", flush=True)

    demo = Demo(port=args.port, sandbox_dir=sandbox, on_bridge_line=show)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("bridge demo: starting two phones, Asterisk and the bridge…", flush=True)
    starting = asyncio.create_task(demo.start())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # Ctrl-C while starting: start() cleans up what it started
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await demo.stop()
        print("bridge demo: stopped", flush=True)
        return 0
    try:
        starting.result()
    except DemoError as exc:
        stopper.cancel()
        print(f"bridge demo: {exc}", file=sys.stderr)
        return 1
    names = " and ".join(e.name for e in ENDPOINTS)
    print(f"\nbridge demo: ready. Open {demo.url} in a browser.\n"
          f"  Type /sip alice hello there, or /sip alone for the compose window, or text from "
          f"{names}'s phone on the page; the Home tab shows what the app publishes.\n"
          "  Ctrl-C stops everything.\n", flush=True)
    crashed = asyncio.create_task(demo.wait_stopped())
    await asyncio.wait({stopper, crashed}, return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if crashed.done():
        print(f"bridge demo: the bridge exited by itself (status {crashed.result()}); "
              "stopping", file=sys.stderr)
        status = 1
    stopper.cancel()
    crashed.cancel()
    print("bridge demo: stopping the bridge, Asterisk and the phones…", flush=True)
    await demo.stop()
    print("bridge demo: stopped", flush=True)
    return status
