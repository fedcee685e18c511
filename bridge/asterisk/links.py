"""Every PBX the bridge serves, each behind its own `AmiLink`: who is reachable, by PBX name.

One `AmiLink` per `[[pbx]]` (or the one `[ami]`, the PBX "default"), built from its settings and
run independently: a PBX that is down or refuses the login has its own backoff and never holds
up another. This collection answers what the rest of the bridge asks about them as a whole:
is the PBX of this endpoint reachable (`ready_for`), are all the required ones (`healthy`),
and which PBX is which (for `/sip status`, `/healthz`, metrics).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

from bridge.asterisk.ami import AmiLink
from bridge.core.model import PbxStatus


class PbxLinks:
    """The AMI links of every PBX, in config order."""

    def __init__(self, links: Sequence[AmiLink]) -> None:
        if not links:
            raise ValueError("at least one PBX is needed")
        self._links = tuple(links)
        self._by_name = {link.name: link for link in self._links}

    def __iter__(self) -> Iterator[AmiLink]:
        return iter(self._links)

    def __len__(self) -> int:
        return len(self._links)

    @property
    def several(self) -> bool:
        return len(self._links) > 1

    def get(self, pbx: str) -> AmiLink | None:
        """The link of PBX `pbx`; with one PBX, that one whatever the name (rows and texts
        from before it was renamed)."""
        if len(self._links) == 1:
            return self._links[0]
        return self._by_name.get(pbx)

    def ready_for(self, pbx: str) -> bool:
        """Whether texts to PBX `pbx`'s phones go out right now."""
        link = self.get(pbx)
        return link is not None and link.ready

    @property
    def ready(self) -> bool:
        """Every PBX logged in."""
        return all(link.ready for link in self._links)

    @property
    def healthy(self) -> bool:
        """Every required PBX logged in (`required = false` ones may be down)."""
        return all(link.ready for link in self._links if link.required)

    def statuses(self) -> list[PbxStatus]:
        """Each PBX's link, for `/sip status`."""
        return [PbxStatus(name=link.name, address=link.address, ready=link.ready,
                          error=link.last_error, required=link.required) for link in self]

    async def start(self) -> None:
        for link in self._links:
            await link.start()

    async def stop(self) -> None:
        await asyncio.gather(*(link.stop() for link in self._links))
