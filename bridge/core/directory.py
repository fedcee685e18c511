"""The endpoint directory: who can be texted, under which names, and where their texts go.

Pure: built from validated config, no I/O; every index is built once, so each answer costs the
same with 10 endpoints or 10,000. Answers three questions:
- `lookup("front-desk")`: which endpoint a Slack user means,
- `suggest("alce")`: which names they probably meant,
- `by_asterisk_endpoint("alice", pbx="hq")`: which directory entry a text Asterisk identified
  as coming from its PJSIP endpoint `alice` belongs to. That identity comes from the dialplan
  (one context per endpoint), never from the From header, which a phone writes itself.

With several PBXs (`[[pbx]]`), every endpoint belongs to one of them and a text's sender is
matched only among the endpoints of the PBX it came from: `alice` on hq and `alice` on branch
are two phones. Names Slack users type stay unique across all PBXs.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

# A destination that is just a PJSIP endpoint; group 1 is the endpoint (section) name.
_PLAIN_PJSIP = re.compile(r"^pjsip:([A-Za-z0-9][A-Za-z0-9._+-]*)$")

# The PBX of a config with one `[ami]` section (and of texts and rows from before PBXs had names).
DEFAULT_PBX = "default"


def asterisk_endpoint(destination: str) -> str | None:
    """The PJSIP endpoint a plain `pjsip:<endpoint>` destination names, else None."""
    match = _PLAIN_PJSIP.match(destination)
    return match.group(1) if match else None


@dataclass(frozen=True)
class Endpoint:
    """A phone (or any MessageSend destination) that Slack users can text."""

    name: str
    destination: str  # the AMI MessageSend Destination, e.g. "pjsip:alice"
    channel: str  # Slack channel ID where this endpoint's texts are posted
    aliases: tuple[str, ...] = ()
    pbx: str = DEFAULT_PBX  # the PBX (AMI link) it is reached through and texts from

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def sip_user(uri: str) -> str:
    """The user part of a SIP URI: `sip:alice@10.0.0.5:5060;transport=udp` -> `alice`."""
    rest = _strip_scheme(uri)
    if "@" not in rest:
        return ""
    user = rest.split("@", 1)[0]
    return user.split(";", 1)[0]


def normalize_uri(uri: str) -> str:
    """Compare-ready form of a SIP URI: no scheme, params or headers; host lower-cased."""
    rest = _strip_scheme(uri.strip().strip("<>"))
    rest = rest.split("?", 1)[0]
    if "@" in rest:
        user, host = rest.rsplit("@", 1)
        user = user.split(";", 1)[0]
        host = host.split(";", 1)[0].lower()
        return f"{user}@{host}"
    return rest.split(";", 1)[0].lower()


def _strip_scheme(uri: str) -> str:
    lowered = uri.lower()
    for scheme in ("sips:", "sip:", "tel:"):
        if lowered.startswith(scheme):
            return uri[len(scheme):]
    return uri


class Directory:
    """All endpoints, indexed by every name they answer to (case-insensitive)."""

    def __init__(self, endpoints: tuple[Endpoint, ...]) -> None:
        self.endpoints = endpoints
        self._by_name: dict[str, Endpoint] = {}
        # The sender index, built once: finding who sent a text must not cost more with more
        # endpoints (the intake runs it for every text on the event loop). It is keyed by
        # (PBX, Asterisk endpoint): a sender is found within its own PBX. The first entry
        # configured for an endpoint wins, as when the list was walked.
        self._by_pjsip: dict[tuple[str, str], Endpoint] = {}
        for endpoint in endpoints:
            for name in endpoint.names:
                # config validation guarantees names are unique; first one wins if not
                self._by_name.setdefault(name.casefold(), endpoint)
            pjsip = asterisk_endpoint(endpoint.destination)
            if pjsip is not None:
                self._by_pjsip.setdefault((endpoint.pbx, pjsip), endpoint)
        self.pbxs = tuple(dict.fromkeys(e.pbx for e in endpoints))

    def lookup(self, recipient: str) -> Endpoint | None:
        """The endpoint called `recipient` (a name or alias), if any."""
        return self._by_name.get(recipient.casefold())

    def suggest(self, recipient: str, limit: int = 3) -> list[str]:
        """Names close to a mistyped `recipient`, best first."""
        return difflib.get_close_matches(recipient.casefold(), list(self._by_name), n=limit,
                                         cutoff=0.5)

    def by_asterisk_endpoint(self, endpoint_id: str, pbx: str = DEFAULT_PBX) -> Endpoint | None:
        """The directory entry of PBX `pbx` whose destination is `pjsip:<endpoint_id>` (exact:
        Asterisk section names are case-sensitive), or None for an endpoint not in the
        directory."""
        return self._by_pjsip.get((pbx, endpoint_id))
