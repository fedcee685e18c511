"""Who works what when several bridges share one store: a lease per channel and per PBX stream.

Every replica takes any slash command or Slack event and stores it; the work that must happen
once, in order, is split by leases kept in the store (`StoreBackend.claim_leases`):
- `channel:<id>`: posting a channel's texts from phones (its order, Slack's pace per channel);
- `events:<pbx>`: taking that PBX's text events and reading its spool (one consumer per PBX);
- `outbox:<pbx>`: sending the texts to that PBX's phones (in order per phone).

A lease lasts `ttl` seconds of the database's clock and is renewed every `ttl / 3`. A replica
trusts a lease only until `ttl` after the moment it *asked* for it (never later than the
database's expiry), so once its holder stops renewing (killed, cut off from the database) it
has stopped using it before anyone else can take it. The others take it within `ttl` plus one
round of `ttl / 3`. A replica alone on its SQLite file holds everything without asking.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable

from bridge.core.errors import StoreError
from bridge.store.backend import StoreBackend

log = logging.getLogger(__name__)

LeaseListener = Callable[[str, bool], None]


def channel_lease(channel: str) -> str:
    return f"channel:{channel}"


def events_lease(pbx: str) -> str:
    return f"events:{pbx}"


def outbox_lease(pbx: str) -> str:
    return f"outbox:{pbx}"


def replica_name() -> str:
    """This process's name among the replicas: host, pid, and a random part (a restarted
    container may get the same pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases:
    """The leases this replica holds, renewed in the background."""

    def __init__(self, *, store: StoreBackend, holder: str, ttl: float,
                 shared: bool) -> None:
        """`shared`: other replicas may use the store (PostgreSQL); otherwise every lease is
        this bridge's and the store is never asked."""
        self._store = store
        self.holder = holder
        self.ttl = ttl
        self.shared = shared
        self._held: dict[str, float] = {}  # name -> until when (monotonic) it is trusted
        self._wanted: set[str] = set()  # claimed at every round while free
        self._listeners: list[LeaseListener] = []
        self._stopping = False

    @property
    def renew_interval(self) -> float:
        return self.ttl / 3

    def on_change(self, listener: LeaseListener) -> None:
        """Call `listener(name, held)` when this replica gains or loses a lease."""
        self._listeners.append(listener)

    def holds(self, name: str) -> bool:
        """Whether this replica may do the work of `name` right now."""
        if not self.shared:
            return True
        until = self._held.get(name)
        return until is not None and until > time.monotonic() and not self._stopping

    def held(self) -> list[str]:
        """The leases held now, sorted (for /healthz and metrics)."""
        now = time.monotonic()
        return sorted(name for name, until in self._held.items() if until > now)

    @property
    def wanted(self) -> frozenset[str]:
        return frozenset(self._wanted)

    def want(self, name: str) -> None:
        """Keep trying to take `name` whenever it is free (a PBX stream: some replica must
        always hold it)."""
        self._wanted.add(name)

    async def claim(self, names: Iterable[str]) -> set[str]:
        """Take (or renew) `names` now; the ones this replica holds afterwards."""
        listed = set(names)
        if not self.shared:
            return listed
        if self._stopping or not listed:
            return set()
        got = await self._ask(listed)
        return {name for name in listed if name in got}

    async def run(self) -> None:
        """Forever: renew what is held and take what is wanted and free, every ttl / 3."""
        if not self.shared:
            return
        while not self._stopping:
            names = set(self._wanted) | set(self._held)
            if names:
                await self._ask(names)
            self._expire()
            await asyncio.sleep(self.renew_interval)

    async def release(self, names: Iterable[str]) -> None:
        """Give leases up (an idle channel, a stop), so another replica need not wait for
        them to expire."""
        listed = [name for name in names if name in self._held]
        for name in listed:
            self._lose(name, why="released")
        if self.shared and listed:
            try:
                await self._store.release_leases(self.holder, listed)
            except StoreError as exc:  # they expire by themselves
                log.debug("leases: could not release %s: %s", listed, exc)

    async def stop(self) -> None:
        """Give every lease up (a clean stop, after the work is done): the other replicas
        take over at once instead of after `ttl`."""
        self._stopping = True  # no renewal or claim from now on
        held = list(self._held)
        await self.release(held)
        if held:
            log.info("leases: gave up %d leases for the other replicas", len(held))

    async def _ask(self, names: set[str]) -> set[str]:
        asked_at = time.monotonic()
        try:
            got = await self._store.claim_leases(self.holder, names, self.ttl)
        except StoreError as exc:
            # What is held stays trusted until it expires, then is dropped (_expire): a
            # replica cut off from the database stops posting before another takes over.
            log.debug("leases: could not renew (%s)", exc)
            return set()
        if self._stopping:
            return set()
        for name in got:
            gained = name not in self._held
            self._held[name] = asked_at + self.ttl
            if gained:
                log.info("leases: %s taken by this replica (%s)", name, self.holder)
                self._tell(name, True)
        for name in names - got:
            if name in self._held:
                self._lose(name, why="another replica holds it now")
        return got

    def _expire(self) -> None:
        now = time.monotonic()
        for name, until in list(self._held.items()):
            if until <= now:
                self._lose(name, why="not renewed in time (the store could not be reached)")

    def _lose(self, name: str, *, why: str) -> None:
        if self._held.pop(name, None) is None:
            return
        (log.info if why == "released" else log.warning)("leases: %s %s", name, why)
        self._tell(name, False)

    def _tell(self, name: str, held: bool) -> None:
        for listener in self._listeners:
            try:
                listener(name, held)
            except Exception:  # one listener's bug must not stop the renewals
                log.exception("leases: a listener failed on %s", name)
