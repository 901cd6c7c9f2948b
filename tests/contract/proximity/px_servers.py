"""How the proximity contract tests load a database and configure a server process."""

from __future__ import annotations

import asyncio

from geoplex.infra.local import BackendUrls
from geoplex.servers._runtime.backends import connect_mongo
from geoplex.servers.proximity.adapters.mongo_store import MongoBusinessStore
from geoplex.servers.proximity.domain import Business
from geoplex.servers.proximity.loader import load


def load_businesses(backends: BackendUrls, database: str, businesses: list[Business]) -> None:
    async def run() -> None:
        client = await connect_mongo(backends.mongo_uri or "")
        try:
            await load(MongoBusinessStore(client, database), businesses)
        finally:
            await client.close()

    asyncio.run(run())


def server_env(backends: BackendUrls, database: str, index: str) -> dict[str, str]:
    return {**backends.env(), "GEOPLEX_PROXIMITY_DATABASE": database,
            "GEOPLEX_PROXIMITY_INDEX": index, "GEOPLEX_PROXIMITY_PORT": "0",
            "GEOPLEX_LOG_LEVEL": "warning"}
