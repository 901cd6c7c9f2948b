"""Writing the friend graph and every user's settings to MongoDB before a run, and removing them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from .config import SimConfig
from .friends import FriendGraph


@contextlib.asynccontextmanager
async def _presence_store(mongo_uri: str, database: str) -> Any:
    from geoplex.servers._runtime.backends import open_mongo
    from geoplex.servers.presence.adapters.mongo_store import MongoPresenceStore

    async with contextlib.AsyncExitStack() as stack:
        yield MongoPresenceStore(await open_mongo(mongo_uri, stack), database)


async def load_graph(mongo_uri: str, database: str, config: SimConfig, graph: FriendGraph,
                     progress: Callable[[str], None] = lambda _m: None) -> float:
    """Write the friendships and every user's settings (sharing on); seconds it took."""
    from pymongo import UpdateOne

    started = time.perf_counter()
    async with _presence_store(mongo_uri, database) as store:
        await store.ensure_indexes()
        pairs = [(config.user_id(a), config.user_id(b)) for a, b in graph.edge_list()]
        progress(f"loading {len(pairs):,} friendships ({2 * len(pairs):,} documents) "
                 f"and {graph.n:,} settings into {database}...")
        step = 20_000
        for n in range(0, len(pairs), step):
            await store.add_friendships(pairs[n:n + step])
        ops = [UpdateOne({"_id": config.user_id(i)},
                         {"$set": {"sharing": True, "radius_m": config.radius_m}}, upsert=True)
               for i in range(graph.n)]
        for n in range(0, len(ops), 5000):
            await store.settings_.bulk_write(ops[n:n + 5000], ordered=False)
    return time.perf_counter() - started


async def unload_graph(mongo_uri: str, database: str, prefix: str) -> int:
    """Delete what :func:`load_graph` wrote for users whose ids start with ``prefix``."""
    import re

    async with _presence_store(mongo_uri, database) as store:
        pattern = {"$regex": "^" + re.escape(prefix)}
        result = await store.friendships.delete_many({"user": pattern})
        await store.settings_.delete_many({"_id": pattern})
        return int(result.deleted_count)
