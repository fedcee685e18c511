"""`bridge asterisk-config`: the Asterisk config snippets that match this bridge's config.

The snippets live in one place, `bridge/asterisk/templates/` (package data, so a pip-installed
bridge has them; `config/asterisk/README.md` points there). From them and the settings this
renders:
- extensions.conf: the shipped dialplan, verbatim (it does not depend on the config);
- manager.conf: the shipped least-privilege AMI user, named as `[ami] username` says, with the
  placeholder secret (never the real one);
- pjsip.conf: for every directory endpoint whose destination is a plain `pjsip:<endpoint>`,
  a `[<endpoint>](+type=endpoint)` section that adds `message_context = slack-bridge-inbound`
  to the existing endpoint; other destinations are listed in comments saying why not.

Pure: no I/O beyond reading the package's templates.
"""

from __future__ import annotations

import re
from importlib import resources

from bridge.core.directory import Endpoint
from bridge.settings.config import Settings

FILES = ("extensions.conf", "manager.conf", "pjsip.conf")
INBOUND_CONTEXT = "slack-bridge-inbound"
TEMPLATE_AMI_USER = "slackbridge"

# A destination that is just a PJSIP endpoint; group 1 is the endpoint (section) name.
_PLAIN_PJSIP = re.compile(r"^pjsip:([A-Za-z0-9][A-Za-z0-9._+-]*)$")
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def template(name: str) -> str:
    """The shipped text of one snippet (`extensions.conf`, `manager.conf` or `pjsip.conf`)."""
    if name not in FILES:
        raise ValueError(f"no such template: {name}")
    return resources.files("bridge.asterisk").joinpath("templates", name).read_text("utf-8")


def render_all(settings: Settings) -> dict[str, str]:
    """Every snippet for these settings, by file name, in the order an admin applies them."""
    return {
        "extensions.conf": template("extensions.conf"),
        "manager.conf": render_manager(settings),
        "pjsip.conf": render_pjsip(settings),
    }


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


def render_pjsip(settings: Settings) -> str:
    by_endpoint: dict[str, list[Endpoint]] = {}
    skipped: list[str] = []
    for endpoint in settings.directory.endpoints:
        match = _PLAIN_PJSIP.match(endpoint.destination)
        if match:
            by_endpoint.setdefault(match.group(1), []).append(endpoint)
        else:
            skipped.append(f"; skipped {endpoint.name} ({endpoint.destination}): "
                           f"{_skip_reason(endpoint.destination)}")
    lines = [
        "; Slack bridge: let the directory's PJSIP endpoints text Slack.",
        ";",
        "; Rendered by `bridge asterisk-config` from the bridge's [[endpoints]]. Each",
        "; `[name](+type=endpoint)` section below ADDS one line to your EXISTING endpoint of that",
        "; name; it creates nothing. Put it at the END of /etc/asterisk/pjsip.conf (or in a file",
        "; #included after your endpoint sections), then `asterisk -rx \"pjsip reload\"`.",
        "; Asterisk rejects the whole file if a section named here does not exist yet, so drop",
        "; the ones you have not defined, or instead add the line to the endpoint's own section:",
        f";     message_context = {INBOUND_CONTEXT}",
    ]
    for name, endpoints in by_endpoint.items():
        who = "; ".join(_describe(e) for e in endpoints)
        lines += ["", f"; {who}", f"[{name}](+type=endpoint)",
                  f"message_context = {INBOUND_CONTEXT}"]
    if not by_endpoint:
        lines += ["", "; (no directory endpoint has a plain pjsip:<endpoint> destination)"]
    if skipped:
        lines += ["", "; Not rendered (set message_context yourself where it applies):", *skipped]
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


def render_text(settings: Settings, only: str | None = None) -> str:
    """What `bridge asterisk-config` prints: every snippet under a header, or just one."""
    snippets = render_all(settings)
    if only is not None:
        return snippets[only]
    return "\n".join(f"; ===== {name} =====\n{text}" for name, text in snippets.items())
