"""The store: every text the bridge is responsible for, kept until it is delivered.

`open_store(settings)` picks the backend: PostgreSQL when `[store] url` (or BRIDGE_STORE_URL)
is set, else the embedded SQLite file at `[store] path`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
