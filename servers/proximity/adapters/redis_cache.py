"""Redis adapter: the shared caches of the search path, and a Redis GEO set.

Keys (one Redis, or a Redis Cluster at scale; no hash tags on purpose, so cells
and businesses spread over the slots, and multi-key reads go slot by slot):
- ``px:{db}:biz:<id>``      business JSON, TTL ``ttl`` seconds
- ``px:{db}:cell:<prefix>`` JSON list of business ids in that geohash cell, TTL
- ``px:{db}:geo``           GEO set of every business (the GEOSEARCH variant)

Edits delete the business key and the keys of every cell prefix of the old
and new location (and every process deletes them again when it sees the
change on the MongoDB change stream, so a reader racing the writer cannot
pin a stale entry for longer than the change-stream lag).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from redis.asyncio.cluster import RedisCluster
from redis.typing import GeoSearchItem

from geoplex.servers._runtime.backends import RedisClient

from ..domain import Business, geohash_prefixes
from ..ports import Located


def _encode(b: Business) -> str:
    return json.dumps([b.id, b.name, b.category, b.lat, b.lon, b.address, b.phone, b.website,
                       b.opening_hours, b.owner, b.source, b.create_time.timestamp(),
                       b.update_time.timestamp()], separators=(",", ":"))


def _decode(raw: bytes | str) -> Business:
    (bid, name, category, lat, lon, address, phone, website, hours, owner, source, created,
     updated) = json.loads(raw)
    return Business(bid, name, category, lat, lon, address, phone, website, hours, owner, source,
                    datetime.fromtimestamp(created, UTC), datetime.fromtimestamp(updated, UTC))


class RedisBusinessCache:
    def __init__(self, client: RedisClient, namespace: str, ttl: int = 3600) -> None:
        self.r = client
        self.prefix = f"px:{namespace}:"
        self.ttl = ttl
        self.geo_key = self.prefix + "geo"

    async def _mget(self, keys: list[str]) -> list[bytes | str | None]:
        if isinstance(self.r, RedisCluster):  # keys in many slots: one MGET per node
            return await self.r.mget_nonatomic(keys)
        return await self.r.mget(keys)

    async def get_businesses(self, ids: Sequence[str]) -> dict[str, Business]:
        if not ids:
            return {}
        values = await self._mget([self.prefix + "biz:" + i for i in ids])
        return {i: _decode(v) for i, v in zip(ids, values) if v is not None}

    async def put_businesses(self, businesses: Mapping[str, Business]) -> None:
        if not businesses:
            return
        async with self.r.pipeline(transaction=False) as pipe:
            for bid, b in businesses.items():
                pipe.set(self.prefix + "biz:" + bid, _encode(b), ex=self.ttl)
            await pipe.execute()

    async def get_cells(self, prefixes: Sequence[str]) -> list[list[str] | None]:
        values = await self._mget([self.prefix + "cell:" + p for p in prefixes])
        return [None if v is None else list(json.loads(v)) for v in values]

    async def put_cell(self, prefix: str, ids: Sequence[str]) -> None:
        await self.r.set(self.prefix + "cell:" + prefix, json.dumps(list(ids)), ex=self.ttl)

    async def invalidate(self, business_id: str, geohashes: Sequence[str]) -> None:
        keys = [self.prefix + "biz:" + business_id]
        for geohash in geohashes:
            keys.extend(self.prefix + "cell:" + p for p in geohash_prefixes(geohash))
        await self.r.delete(*keys)

    async def geo_upsert(self, businesses: Sequence[Located]) -> None:
        if not businesses:
            return
        values: list[float | str] = []
        for b in businesses:
            values.extend((b.lon, b.lat, b.id))
        await self.r.geoadd(self.geo_key, values)

    async def geo_size(self) -> int:
        return int(await self.r.zcard(self.geo_key))

    async def geo_remove(self, business_id: str) -> None:
        await self.r.zrem(self.geo_key, business_id)

    async def geo_search(self, lat: float, lon: float, radius_m: int,
                         count: int | None) -> list[tuple[float, str]]:
        """GEOSEARCH FROMLONLAT BYRADIUS WITHDIST ASC [COUNT n]: (distance m, id)."""
        rows = await self.r.geosearch(self.geo_key, longitude=lon, latitude=lat,
                                      radius=radius_m, unit="m", sort="ASC", count=count,
                                      withdist=True)
        return [_member_and_distance(row) for row in rows]


def _member_and_distance(row: GeoSearchItem) -> tuple[float, str]:
    """(distance, member) of one GEOSEARCH WITHDIST row, [member, distance]."""
    match row:
        case [bytes() as member, float() as distance]:
            return distance, member.decode()
        case [str() as member, float() as distance]:
            return distance, member
    raise ValueError(f"not a GEOSEARCH WITHDIST row: {row!r}")
