"""The ``redis-geo`` search index, a benchmark baseline: Redis GEOSEARCH over a GEO set
of every business in the shared cache.

Redis's own Earth radius and 52-bit coordinates make its distances differ from ours by
~0.03 %, so every search ranks GEOSEARCH's candidates by our own distances.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from . import domain
from .domain import SearchQuery
from .ports import Change, OnSharedBackends
from .quadtree import IndexedPoint

log = logging.getLogger(__name__)

FILL_BATCH = 5000
RADIUS_SLACK = 1.001  # Redis's distances differ from ours by ~0.03 %
PAGE_MARGIN = 32  # extra unfiltered rows, for neighbours Redis orders differently


@dataclass(frozen=True, slots=True)
class RedisGeoSearch(OnSharedBackends):

    async def load(self) -> None:
        """Fill the GEO set from the system of record unless it already holds as many
        businesses (the first replica up fills it)."""
        points = [IndexedPoint.from_row(row) async for row in self.store.scan_points()]
        if await self.cache.geo_size() != len(points):
            for start in range(0, len(points), FILL_BATCH):
                await self.cache.geo_upsert(points[start:start + FILL_BATCH])
        return None

    async def search(self, query: SearchQuery, limit: int) -> list[tuple[float, str]]:
        """Candidates from GEOSEARCH, ranked by our own distances.

        Redis keeps 52-bit geohash coordinates and its own Earth radius, so its distances
        and order differ slightly from ours: it is asked a little beyond the radius (and,
        unfiltered, for a margin of extra rows), and the page is ranked by ``domain.rank``,
        so its page token carries our distance, as the next page expects.
        """
        plain = not query.category and not query.keyword and query.after is None
        rows = await self.cache.geo_search(query.lat, query.lon,
                                           math.ceil(query.radius_m * RADIUS_SLACK),
                                           limit + PAGE_MARGIN if plain else None)
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
