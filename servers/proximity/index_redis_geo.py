"""The ``redis-geo`` search index, a benchmark baseline: Redis GEOSEARCH over a GEO set
of every business in the shared cache.

Redis's own Earth radius makes its edge differ from ours by ~0.03 %, so a filtered or
paged search asks GEOSEARCH for every member in the radius and ranks them itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import domain
from .domain import SearchQuery
from .ports import BusinessCache, BusinessLookup, BusinessStore, Change
from .quadtree import IndexedPoint

log = logging.getLogger(__name__)

FILL_BATCH = 5000


@dataclass(frozen=True, slots=True)
class RedisGeoSearch:
    store: BusinessStore
    cache: BusinessCache
    details: BusinessLookup

    async def load(self) -> None:
        """Fill the GEO set from the system of record unless it already holds as many
        businesses (the first replica up fills it)."""
        points = [IndexedPoint.from_row(row) async for row in self.store.scan_points()]
        if await self.cache.geo_size() != len(points):
            for start in range(0, len(points), FILL_BATCH):
                await self.cache.geo_upsert(points[start:start + FILL_BATCH])
        return None

    async def search(self, query: SearchQuery, limit: int) -> list[tuple[float, str]]:
        plain = not query.category and not query.keyword and query.after is None
        rows = await self.cache.geo_search(query.lat, query.lon, query.radius_m,
                                           limit if plain else None)
        if plain:
            return rows
        businesses = await self.details.get_many([bid for _, bid in rows])
        return domain.rank(query, businesses.values(), limit)

    async def apply(self, change: Change) -> None:
        try:
            if change.business is None:
                await self.cache.geo_remove(change.business_id)
            else:
                await self.cache.geo_upsert([change.business])
        except Exception as exc:  # noqa: BLE001 - a lost edit; a reload sizes the set again
            log.warning("GEO set update failed (%s)", type(exc).__name__)

    async def stop(self) -> None:
        return None
