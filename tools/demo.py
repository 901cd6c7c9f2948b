"""Demo data for ``geoplex up``: real Helsinki and Monaco businesses from OpenStreetMap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from geoplex.infra import data


async def load_demo_data(env: Mapping[str, str], progress: Callable[[str], None] = print) -> int:
    from geoplex.servers._runtime.backends import connect_mongo
    from geoplex.servers.proximity.adapters.mongo_store import MongoBusinessStore
    from geoplex.servers.proximity.loader import from_pois, load

    fetched = await asyncio.to_thread(data.fetch, ["helsinki", "monaco"], None, progress=progress)
    businesses = []
    for name in ("helsinki", "monaco"):
        pois = await asyncio.to_thread(data.read_pois, fetched[name]["pbf"])
        progress(f"{name}: {len(pois):,} named points of interest")
        businesses.extend(from_pois(pois))
    client = await connect_mongo(env["GEOPLEX_MONGO_URI"])
    try:
        store = MongoBusinessStore(client, "geoplex")
        return await load(store, businesses, progress=progress, label="demo businesses")
    finally:
        await client.close()
