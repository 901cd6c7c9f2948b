"""Redis adapter: rendered tiles shared by every maps process.

Keys ``mt:{data version}:{format}:{z}:{x}:{y}`` hold a tile's bytes with a TTL. The data
version is in the key, so a new extract or style makes every old key unreachable and the
TTL removes them. The TTL bounds what the tiles take in a Redis shared with other
services; a deployment that caches many tiles gives them a Redis of their own with
``maxmemory`` and ``maxmemory-policy allkeys-lru`` (GEOPLEX_MAPS_TILE_REDIS_URL), so
Redis itself bounds the size and evicts the coldest tiles.
"""

from __future__ import annotations

from geoplex.servers._runtime.backends import RedisClient


class RedisTileStore:
    def __init__(self, client: RedisClient, ttl_s: int) -> None:
        self.r = client
        self.ttl_s = ttl_s

    async def get(self, key: str) -> bytes | None:
        value = await self.r.get(key)
        if value is None:
            return None
        return value if isinstance(value, bytes) else value.encode("latin-1")

    async def put(self, key: str, data: bytes) -> None:
        await self.r.set(key, data, ex=self.ttl_s)
