"""The admin subcommands next to `run`: `bridge check`, `bridge asterisk-config`, `bridge demo`.

`__main__` adds them to its parser (`add_admin_commands`) and hands them over
(`run_admin_command`). Both read the config like `run` (--config or $BRIDGE_CONFIG, every
problem reported, exit 2). `asterisk-config` needs no secrets: it reads only the file, so an
admin can run it on the PBX without the Slack tokens; with AMI_SECRET (or AMI_EVENT_TOKEN) in
the environment it also fills in the dialplan's event token. `demo` needs no config at all; it
lives in `bridge/demo/`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.asterisk.snippets import FILES, render_text
from bridge.core.directory import Directory, asterisk_endpoint
from bridge.core.errors import ConfigError
from bridge.demo.cli import add_demo_command, run_demo_command
from bridge.ops.check import check
from bridge.ops.logs import add_secrets
from bridge.settings.config import Settings, load_settings

EXIT_CONFIG = 2

# Stand-ins for the environment `asterisk-config` does not need, so that only problems in
# the file itself are reported. They never leave this process.
_NO_SECRETS = {"SLACK_BOT_TOKEN": "xoxb-unused", "SLACK_SIGNING_SECRET": "unused",
               "AMI_SECRET": "unused"}


def add_admin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `check` and `asterisk-config` to the `bridge` command line."""
    config_help = "path of the TOML config (default: $BRIDGE_CONFIG)"
    check_parser = sub.add_parser(
        "check", help="check the config, Asterisk and Slack; print a checklist",
        description="Check the config, log in to AMI and ask Slack about the tokens and "
                    "channels; print a checklist with a fix for each problem. Exit 0 when "
                    "ready, 1 when something must be fixed, 2 when the config is invalid.")
    check_parser.add_argument("--config", default=os.environ.get("BRIDGE_CONFIG"),
                              help=config_help)
    check_parser.add_argument("--mode", choices=("auto", "http", "socket"), default="auto",
                              help="check for this Slack transport (as for `run`)")
    check_parser.add_argument("--send-test", metavar="ENDPOINT",
                              help="also send a test text to this directory endpoint")
    snippets_parser = sub.add_parser(
        "asterisk-config", help="print the Asterisk config snippets for this config",
        description="Print the extensions.conf, manager.conf and pjsip.conf snippets that "
                    "match the config's AMI user and endpoints.")
    snippets_parser.add_argument("--config", default=os.environ.get("BRIDGE_CONFIG"),
                                 help=config_help)
    snippets_parser.add_argument("--only", choices=FILES, help="print just this snippet")
    snippets_parser.add_argument(
        "--endpoint", action="append", default=[], metavar="NAME",
        help="also give this Asterisk endpoint (not in the directory) a context of its own, "
             "so its texts are identified (repeatable)")
    snippets_parser.add_argument(
        "--pbx", metavar="NAME",
        help="with several [[pbx]]: print the snippets of this PBX (its AMI user and the "
             "directory's endpoints on it)")
    add_demo_command(sub)


def run_admin_command(args: argparse.Namespace) -> int:
    """Run `check`, `asterisk-config` or `demo`; return the exit status."""
    if args.command == "demo":
        return run_demo_command(args)
    if args.command == "asterisk-config":
        # The real AMI secret (environment or file) or event token, when given, only to fill
        # in the dialplan's event token; it is never printed.
        pbx_vars = _pbx_variables(args.config, args.pbx)
        real = {k: os.environ[k] for k in ("AMI_SECRET", "AMI_EVENT_TOKEN", *pbx_vars.mine)
                if os.environ.get(k)}
        in_file = _file_has_ami_secret(args.config, args.pbx)
        has_secret = bool(real) or in_file
        environ: Mapping[str, str] = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "AMI_"))},
            **_NO_SECRETS, **{k: "unused" for k in pbx_vars.secrets},
            **({"AMI_SECRET": ""} if in_file else {}),
            **({k: "" for k in pbx_vars.mine[:1]} if in_file else {}), **real}
        settings = _load(args.config, environ, mode="http")
        if settings is None:
            return EXIT_CONFIG
        settings = _one_pbx(settings, args.pbx)
        if settings is None:
            return EXIT_CONFIG
        bad = [name for name in args.endpoint if asterisk_endpoint(f"pjsip:{name}") is None]
        if bad:
            print(f"bridge: --endpoint {bad[0]!r} is not a pjsip.conf section name (letters, "
                  "digits and . _ + - only)", file=sys.stderr)
            return EXIT_CONFIG
        token = settings.ami.event_token.reveal() if has_secret else None
        sys.stdout.write(render_text(settings, args.only, extra_endpoints=args.endpoint,
                                     event_token=token))
        return 0
    settings = _load(args.config, None, mode=args.mode)
    if settings is None:
        return EXIT_CONFIG
    add_secrets(settings.secrets())
    return asyncio.run(check(settings, send_test=args.send_test))


def _raw_config(path: str | None) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path or "").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}  # load_settings reports the problem


def _pbx_tables(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = data.get("pbx")
    return [t for t in raw if isinstance(t, dict)] if isinstance(raw, list) else []


def _file_has_ami_secret(path: str | None, pbx: str | None = None) -> bool:
    """Whether the config file sets the secret of the PBX asked for (ami.secret, or that
    [[pbx]]'s): then it, not a stand-in, gives the token."""
    data = _raw_config(path)
    tables = [t for t in _pbx_tables(data) if t.get("name") == pbx] if pbx else [data.get("ami")]
    return any(isinstance(t, dict) and bool(t.get("secret")) for t in tables)


@dataclass(frozen=True)
class _PbxVariables:
    secrets: list[str]  # every [[pbx]]'s secret variable (stand-ins are given for them)
    mine: list[str]  # the secret and token variables of the PBX asked for


def _pbx_variables(path: str | None, pbx: str | None) -> _PbxVariables:
    """The environment variables of the file's [[pbx]] sections (see settings/config.py)."""
    secrets: list[str] = []
    mine: list[str] = []
    for table in _pbx_tables(_raw_config(path)):
        name = str(table.get("name", ""))
        upper = "".join(c if c.isalnum() else "_" for c in name.upper())
        secret = str(table.get("secret_env") or f"AMI_SECRET_{upper}")
        secrets.append(secret)
        if name == pbx:
            mine = [secret, f"AMI_EVENT_TOKEN_{upper}"]
    return _PbxVariables(secrets=secrets, mine=mine)


def _one_pbx(settings: Settings, name: str | None) -> Settings | None:
    """The settings as seen by one PBX: its AMI user, only the endpoints on it."""
    names = [p.name for p in settings.all_pbxs]
    if name is None:
        if settings.several_pbxs:
            print(f"bridge: the config has several PBXs ({', '.join(names)}): pass --pbx NAME "
                  "for the snippets of one", file=sys.stderr)
            return None
        return settings
    pbx = settings.pbx(name)
    if pbx is None:
        print(f"bridge: --pbx {name!r} is not a PBX of {settings.path} (its PBXs: "
              f"{', '.join(names)})", file=sys.stderr)
        return None
    endpoints = tuple(e for e in settings.directory.endpoints if e.pbx == pbx.name)
    return dataclasses.replace(settings, ami=pbx, pbxs=(pbx,), directory=Directory(endpoints))


def _load(path: str | None, environ: Mapping[str, str] | None, *, mode: str) -> Settings | None:
    if not path:
        print("bridge: no config file given: pass --config PATH or set BRIDGE_CONFIG "
              "(start from config/bridge.example.toml)", file=sys.stderr)
        return None
    try:
        return load_settings(path, environ, mode=mode)
    except ConfigError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return None
