"""The ``geohash`` search index: ids by geohash cell, from the shared cache.

A search reads the ids of the cells covering its circle from Redis (one MGET), fills
the missing cells from MongoDB's ``geohash_index`` collection, then ranks the
businesses found. Nothing is held in this process, so there is nothing to load.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import domain
from .domain import SearchQuery
from .ports import Change, OnSharedBackends


@dataclass(frozen=True, slots=True)
class GeohashSearch(OnSharedBackends):

    async def load(self) -> None:
        return None

    async def search(self, query: SearchQuery, limit: int) -> list[tuple[float, str]]:
        cells = domain.cells_for_search(query.lat, query.lon, query.radius_m)
        cached = await self.cache.get_cells(cells)
        ids: list[str] = []
        for cell, hit in zip(cells, cached):
            if hit is None:
                hit = await self.store.ids_in_cell(cell)
                await self.cache.put_cell(cell, hit)
            ids.extend(hit)
        businesses = await self.details.get_many(ids)
        return domain.rank(query, businesses.values(), limit)

    async def apply(self, change: Change) -> None:
        """Nothing: the application drops the changed cells from the shared cache."""

    async def stop(self) -> None:
        return None
