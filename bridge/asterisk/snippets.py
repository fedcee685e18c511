"""`bridge asterisk-config`: the Asterisk config snippets that match this bridge's config.

The snippets live in one place, `bridge/asterisk/templates/` (package data, so a pip-installed
bridge has them; `config/asterisk/README.md` points there). From them and the settings this
renders:
- extensions.conf: the shipped dialplan, with the event token filled in when it is known,
  then one small `slack-bridge-from-<endpoint>` context per PJSIP endpoint of the directory
  (and any extra endpoints asked for): it records which endpoint Asterisk identified, which
  is the only sender identity the bridge trusts;
- manager.conf: the shipped least-privilege AMI user, named as `[ami] username` says, with the
  placeholder secret (never the real one);
- pjsip.conf: for every directory endpoint whose destination is a plain `pjsip:<endpoint>`,
  a `[<endpoint>](+type=endpoint)` section that sets `message_context` to that endpoint's
  own context; other destinations are listed in comments saying why not.

Pure: no I/O beyond reading the package's templates.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from importlib import resources

from bridge.core.directory import Endpoint, asterisk_endpoint
from bridge.core.texts import EVENT_TOKEN_GLOBAL
from bridge.settings.config import Settings

FILES = ("extensions.conf", "manager.conf", "pjsip.conf")
INBOUND_CONTEXT = "slack-bridge-inbound"
ENDPOINT_CONTEXT_PREFIX = "slack-bridge-from-"
TEMPLATE_AMI_USER = "slackbridge"
# Asterisk cuts context names at 79 characters (AST_MAX_CONTEXT).
_MAX_CONTEXT = 79
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def template(name: str) -> str:
    """The shipped text of one snippet (`extensions.conf`, `manager.conf` or `pjsip.conf`)."""
    if name not in FILES:
        raise ValueError(f"no such template: {name}")
    return resources.files("bridge.asterisk").joinpath("templates", name).read_text("utf-8")


def render_all(settings: Settings, *, extra_endpoints: Iterable[str] = (),
               event_token: str | None = None) -> dict[str, str]:
    """Every snippet for these settings, by file name, in the order an admin applies them.

    `extra_endpoints`: Asterisk endpoints outside the directory whose texts should reach
    Slack identified (they go to the default channel); `event_token`: the token to write
    into the dialplan (None: leave the placeholder and say so).
    """
    extra = tuple(extra_endpoints)
    return {
        "extensions.conf": render_extensions(settings, extra_endpoints=extra,
                                             event_token=event_token),
        "manager.conf": render_manager(settings),
        "pjsip.conf": render_pjsip(settings, extra_endpoints=extra),
    }


def endpoint_context(endpoint_id: str) -> str:
    """The name of the dialplan context that receives one endpoint's texts."""
    return f"{ENDPOINT_CONTEXT_PREFIX}{endpoint_id}"


def render_endpoint_contexts(endpoint_ids: Iterable[str]) -> str:
    """One `slack-bridge-from-<endpoint>` context per endpoint: records who sent the text.

    The endpoint's name is written base64-encoded, so no character of it can change the
    meaning of the dialplan line (or of the UserEvent it ends up in).
    """
    blocks = []
    for endpoint_id in dict.fromkeys(endpoint_ids):
        encoded = base64.b64encode(endpoint_id.encode("utf-8")).decode("ascii")
        blocks.append(
            f"[{endpoint_context(endpoint_id)}]\n"
            f"exten => _[0-9A-Za-z+*#]!,1,Set(SLACK_BRIDGE_ENDPOINT={encoded})\n"
            " same => n,Set(SLACK_BRIDGE_TO_EXTEN=${BASE64_ENCODE(${EXTEN})})\n"
            " same => n,Goto(slack-bridge-inbound-text,text,1)\n")
    return "\n".join(blocks)


def render_extensions(settings: Settings, *, extra_endpoints: Iterable[str] = (),
                      event_token: str | None = None) -> str:
    text = template("extensions.conf")
    if event_token is not None:
        text, count = re.subn(rf"^{EVENT_TOKEN_GLOBAL}\s*=.*$",
                              f"{EVENT_TOKEN_GLOBAL} = {event_token}", text, count=1,
                              flags=re.MULTILINE)
        if count != 1:  # the shipped template changed shape; fail loudly rather than mislead
            raise RuntimeError(f"the extensions.conf template has no {EVENT_TOKEN_GLOBAL} line")
        note = ("; The event token below matches this bridge's (from AMI_EVENT_TOKEN, or "
                "derived from AMI_SECRET).")
    else:
        note = (f"; {EVENT_TOKEN_GLOBAL} below is a placeholder: run `bridge asterisk-config` "
                "with AMI_SECRET (or\n; AMI_EVENT_TOKEN) set to print the token this bridge "
                "expects; until then it refuses every text.")
    ids, _ = _identified_endpoints(settings, extra_endpoints)
    contexts = render_endpoint_contexts(ids)
    lines = [note, ";", text.rstrip("\n"), "",
             "; ----- One context per endpoint, rendered from the bridge's [[endpoints]]:",
             "; each records which endpoint Asterisk identified (pjsip.conf's message_context",
             "; selects it).",
             ""]
    lines.append(contexts if contexts else "; (no endpoint with a plain pjsip:<endpoint> "
                 "destination)\n")
    return "\n".join(lines)


def _identified_endpoints(settings: Settings, extra_endpoints: Iterable[str]
                          ) -> tuple[list[str], list[str]]:
    """Asterisk endpoint ids that get a context of their own, and skip notes for the rest."""
    ids: list[str] = []
    skipped: list[str] = []
    for endpoint in settings.directory.endpoints:
        endpoint_id = asterisk_endpoint(endpoint.destination)
        if endpoint_id is None:
            skipped.append(f"; skipped {endpoint.name} ({endpoint.destination}): "
                           f"{_skip_reason(endpoint.destination)}")
        elif len(endpoint_context(endpoint_id)) > _MAX_CONTEXT:
            skipped.append(f"; skipped {endpoint.name}: the endpoint name is too long for a "
                           f"context name")
        else:
            ids.append(endpoint_id)
    ids.extend(extra_endpoints)
    return list(dict.fromkeys(ids)), skipped


def render_manager(settings: Settings) -> str:
    text = template("manager.conf")
    username = settings.ami.username
    text, count = re.subn(rf"^\[{TEMPLATE_AMI_USER}\]$", f"[{username}]", text, count=1,
                          flags=re.MULTILINE)
    if count != 1:  # the shipped template changed shape; fail loudly rather than mislead
        raise RuntimeError(f"the manager.conf template has no [{TEMPLATE_AMI_USER}] section")
    note = [f"; Rendered for [ami] username = {username} by `bridge asterisk-config`. The secret",
            "; below is a placeholder: replace it (the bridge's AMI_SECRET must match)."]
    if settings.ami.host not in _LOOPBACK:
        note.append(f"; The bridge connects to {settings.ami.host}, so it runs on another "
                    "machine: change the permit")
        note.append("; line to that machine's address (and manager.conf [general] bindaddr "
                    "to listen there).")
    return "\n".join(note) + "\n;\n" + text


def render_pjsip(settings: Settings, *, extra_endpoints: Iterable[str] = ()) -> str:
    by_endpoint: dict[str, list[Endpoint]] = {}
    for endpoint in settings.directory.endpoints:
        endpoint_id = asterisk_endpoint(endpoint.destination)
        if endpoint_id is not None:
            by_endpoint.setdefault(endpoint_id, []).append(endpoint)
    ids, skipped = _identified_endpoints(settings, extra_endpoints)
    lines = [
        "; Slack bridge: let the directory's PJSIP endpoints text Slack, identified.",
        ";",
        "; Rendered by `bridge asterisk-config` from the bridge's [[endpoints]]. Each",
        "; `[name](+type=endpoint)` section below ADDS one line to your EXISTING endpoint of that",
        "; name; it creates nothing. Put it at the END of /etc/asterisk/pjsip.conf (or in a file",
        "; #included after your endpoint sections), then `asterisk -rx \"pjsip reload\"`.",
        "; Asterisk rejects the whole file if a section named here does not exist yet, so drop",
        "; the ones you have not defined, or instead add the line to the endpoint's own section.",
        "; Each endpoint gets its own context (see extensions.conf): that is how the bridge knows",
        "; which endpoint Asterisk identified, whatever its identify_by and whatever From says.",
    ]
    for endpoint_id in ids:
        endpoints = by_endpoint.get(endpoint_id, [])
        who = "; ".join(_describe(e) for e in endpoints) if endpoints else \
            f"{endpoint_id}: not in the directory; texts posted to the default channel"
        lines += ["", f"; {who}", f"[{endpoint_id}](+type=endpoint)",
                  f"message_context = {endpoint_context(endpoint_id)}"]
    if not ids:
        lines += ["", "; (no directory endpoint has a plain pjsip:<endpoint> destination)"]
    if skipped:
        lines += ["", "; Not rendered (their texts arrive through another endpoint, e.g. a trunk:",
                  "; render that one with --endpoint NAME; its texts go to the default channel):",
                  *skipped]
    return "\n".join(lines) + "\n"


def _describe(endpoint: Endpoint) -> str:
    aliases = f" (also {', '.join(endpoint.aliases)})" if endpoint.aliases else ""
    return f"{endpoint.name}{aliases}: texts posted to {endpoint.channel}"


def _skip_reason(destination: str) -> str:
    if not destination.startswith("pjsip:"):
        return "not a PJSIP endpoint; pjsip.conf plays no part in its texts"
    rest = destination[len("pjsip:"):]
    if rest.upper().startswith("PJSIP/"):
        return "a number dialled through a trunk; set message_context on that trunk's endpoint"
    if "/" in rest:
        return ("sent to a URI through an endpoint; set message_context on the endpoint that "
                "its phone's texts arrive on")
    return "the endpoint name is not a plain pjsip.conf section name"


def render_text(settings: Settings, only: str | None = None, *,
                extra_endpoints: Iterable[str] = (), event_token: str | None = None) -> str:
    """What `bridge asterisk-config` prints: every snippet under a header, or just one."""
    snippets = render_all(settings, extra_endpoints=extra_endpoints, event_token=event_token)
    if only is not None:
        return snippets[only]
    return "\n".join(f"; ===== {name} =====\n{text}" for name, text in snippets.items())
