"""Which phones are registered right now: `online`, `offline` or `unknown`. Pure.

Fed by AMI (bridge/asterisk/ami.py turns `ContactStatus` events, and the `PJSIPShowContacts` listing
when the AMI user may run it, into `ContactChange` values), read by `/sip list`, the compose
window's picker and the App Home.

What Asterisk 22 tells a least-privilege AMI user (measured): `ContactStatus` and `PeerStatus`
events need `read = system` (which the bridge's user has anyway, for FullyBooted) and pass the
shipped eventfilter only with `eventfilter = Event: ContactStatus`; a REGISTER gives
`ContactStatus: NonQualified` (or `Reachable` with qualify), an unregister or an expiry
`Removed`, a failed qualify `Unreachable`. `PJSIPShowContacts` (and
`PJSIPShowRegistrationInboundContactStatuses`) need `write = system`, which the shipped user
does not get: so after the bridge (re)connects, a phone stays `unknown` until it registers,
unregisters or expires again. Static contacts (`contact =` in an aor) produce no events:
they stay `unknown`, since nothing says whether a phone is really there.

A phone's state is keyed by its PJSIP endpoint, read from the directory destination
(`pjsip:alice`, `pjsip:alice/sip:...`); other destinations (a trunk, `PJSIP/+1...@trunk`)
are always `unknown`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bridge.core.directory import Directory

State = Literal["online", "offline", "unknown"]

# ContactStatus values that mean the contact is there (registered, maybe not qualified).
_LIVE = frozenset({"Created", "Updated", "Reachable", "NonQualified", "Unknown"})


@dataclass(frozen=True)
class ContactChange:
    """One contact of a PJSIP endpoint appeared, changed or went away."""

    endpoint: str  # PJSIP endpoint name (EndpointName / Endpoint)
    uri: str  # the contact URI
    status: str  # Asterisk's ContactStatus: Created, Removed, Reachable, Unreachable, ...


def pjsip_endpoint(destination: str) -> str | None:
    """The PJSIP endpoint a MessageSend destination reaches directly, or None."""
    if not destination.lower().startswith("pjsip:"):
        return None
    rest = destination[len("pjsip:"):]
    name = rest.split("/", 1)[0]
    if not name or "@" in name or name.upper() == "PJSIP":
        return None
    return name


class PhonePresence:
    """The contacts Asterisk told us about, per PJSIP endpoint."""

    def __init__(self) -> None:
        self._contacts: dict[str, dict[str, bool]] = {}  # endpoint -> uri -> reachable
        self._since: dict[str, float] = {}
        self._listeners: list[Callable[[str], None]] = []

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call `listener(endpoint)` whenever an endpoint's state changes."""
        self._listeners.append(listener)

    def update(self, change: ContactChange) -> None:
        before = self._state(change.endpoint)
        contacts = self._contacts.setdefault(change.endpoint, {})
        if change.status == "Removed":
            contacts.pop(change.uri, None)
        else:
            contacts[change.uri] = change.status in _LIVE
        after = self._state(change.endpoint)
        if after != before:
            self._since[change.endpoint] = time.time()
            for listener in self._listeners:
                listener(change.endpoint)

    def forget(self) -> None:
        """Back to unknown for all (the AMI link dropped: changes meanwhile are missed)."""
        changed = [e for e in self._contacts if self._state(e) != "unknown"]
        self._contacts.clear()
        self._since.clear()
        for endpoint in changed:
            for listener in self._listeners:
                listener(endpoint)

    def _state(self, endpoint: str) -> State:
        contacts = self._contacts.get(endpoint)
        if contacts is None:
            return "unknown"
        return "online" if any(contacts.values()) else "offline"

    def state_of(self, destination: str) -> State:
        """The state of the phone a directory destination reaches."""
        endpoint = pjsip_endpoint(destination)
        return "unknown" if endpoint is None else self._state(endpoint)

    def of_name(self, directory: Directory, name: str) -> State:
        """online / offline / unknown for a directory name (unknown when there is none)."""
        endpoint = directory.lookup(name)
        return self.state_of(endpoint.destination) if endpoint else "unknown"

    def since(self, destination: str) -> float | None:
        """When that phone's state last changed (unix time), if it did while we watched."""
        endpoint = pjsip_endpoint(destination)
        return self._since.get(endpoint) if endpoint else None
