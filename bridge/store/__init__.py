"""The store: every text the bridge is responsible for, kept until it is delivered.

`open_store(settings)` picks the backend: PostgreSQL when `[store] url` (or BRIDGE_STORE_URL)
is set, else the embedded SQLite file at `[store] path`. `probe_store(settings)` looks at it
for `bridge check` without changing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bridge.core.errors import StoreError
from bridge.store.backend import StoreBackend

if TYPE_CHECKING:
    from bridge.settings.config import Settings


async def open_store(settings: Settings) -> StoreBackend:
    """Open (creating or upgrading) the configured store; StoreError if it cannot be used."""
    if settings.store_url is not None:
        from bridge.store.postgres import PostgresStore  # psycopg only when it is used

        return await PostgresStore.open(settings.store_url.reveal())
    from bridge.store.sqlite import Store

    return await Store.open(settings.store_path)


def store_location(settings: Settings) -> str:
    """Where the store is, for logs: the SQLite path, or the database URL without password."""
    if settings.store_url is not None:
        from bridge.store.postgres import describe

        return describe(settings.store_url.reveal())
    return str(settings.store_path)


@dataclass(frozen=True)
class StoreProbe:
    """What `bridge check` found, the store left as it was."""

    kind: Literal["sqlite", "postgresql"]
    where: str
    known_version: int  # the newest schema this bridge knows
    schema_version: int | None = None  # None: no file yet; 0: no store tables yet
    error: str | None = None  # unreachable or unreadable: nothing else is known
    server: str = ""  # PostgreSQL's version
    user: str = ""
    may_create: bool = True  # may create the store's tables (CREATE on the schema)
    owns_tables: bool = True  # may upgrade them (owns every existing one)
    missing: tuple[str, ...] = ()  # "INSERT on inbound", ...


async def probe_store(settings: Settings, *, timeout: float) -> StoreProbe:
    """Connect to the configured store read-only: its schema version and missing rights."""
    where = store_location(settings)
    if settings.store_url is not None:
        from bridge.store import postgres

        try:
            found = await postgres.probe_database(settings.store_url.reveal(), timeout=timeout)
        except StoreError as exc:
            return StoreProbe("postgresql", where, postgres.SCHEMA_VERSION, error=str(exc))
        return StoreProbe("postgresql", where, postgres.SCHEMA_VERSION,
                          schema_version=found.schema_version, server=found.server_version,
                          user=found.user, may_create=found.may_create,
                          owns_tables=found.owns_tables, missing=found.missing)
    from bridge.store import sqlite

    try:
        version = sqlite.read_schema_version(settings.store_path)
    except StoreError as exc:
        return StoreProbe("sqlite", where, sqlite.SCHEMA_VERSION, error=str(exc))
    return StoreProbe("sqlite", where, sqlite.SCHEMA_VERSION, schema_version=version)
