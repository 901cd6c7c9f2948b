"""How the proximity contract tests load a database and configure a server process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from geoplex.infra.local import BackendUrls
from geoplex.servers._runtime.backends import connect_mongo
from geoplex.servers.proximity.adapters.mongo_store import MongoBusinessStore
from geoplex.servers.proximity.domain import Business
from geoplex.servers.proximity.loader import load

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


def load_businesses(backends: BackendUrls, database: str, businesses: list[Business]) -> None:
    async def run() -> None:
        client = await connect_mongo(backends.mongo_uri or "")
        try:
            await load(MongoBusinessStore(client, database), businesses)
        finally:
            await client.close()

    asyncio.run(run())


def fresh_database(backends: BackendUrls, businesses: list[Business], prefix: str) -> str:
    """A new database named ``prefix_<random>``, loaded with ``businesses``."""
    database = f"{prefix}_{uuid.uuid4().hex[:8]}"
    load_businesses(backends, database, businesses)
    return database


def server_env(backends: BackendUrls, database: str, index: str) -> dict[str, str]:
    return {**backends.env(), "GEOPLEX_PROXIMITY_DATABASE": database,
            "GEOPLEX_PROXIMITY_INDEX": index, "GEOPLEX_PROXIMITY_PORT": "0",
            "GEOPLEX_LOG_LEVEL": "warning"}


def edit_replicas(backends: BackendUrls, database: str,
                  server_factory: Callable[..., ServerProcess], name: str
                  ) -> dict[str, ServerProcess]:
    """Two quadtree replicas and one geohash replica over the same writable database."""
    env = lambda index: server_env(backends, database, index)  # noqa: E731
    return {
        "a": server_factory("proximity", env("quadtree"), f"{name}-a"),
        "b": server_factory("proximity", env("quadtree"), f"{name}-b"),
        "geohash": server_factory("proximity", env("geohash"), f"{name}-gh"),
    }
