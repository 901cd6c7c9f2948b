"""The ``quadtree`` search index (the default): every business's point in this process.

Search never leaves the process. Edits go to the tree's delta at once; once the delta
is large, a fresh tree is built off the event loop and swapped in, with the edits made
meanwhile replayed onto it.
"""

from __future__ import annotations

import asyncio
import contextlib

from .domain import SearchQuery
from .ports import BusinessStore, Change
from .quadtree import IndexedPoint, QuadtreeIndex


class QuadtreeSearch:
    def __init__(self, store: BusinessStore) -> None:
        self.store = store
        self.tree = QuadtreeIndex()
        self._rebuild: asyncio.Task[None] | None = None
        self._replay: list[tuple[str, IndexedPoint | None]] | None = None

    async def load(self) -> int:
        points = [IndexedPoint.from_row(row) async for row in self.store.scan_points()]
        self.tree = await asyncio.to_thread(QuadtreeIndex, points)
        return len(points)

    async def search(self, query: SearchQuery, limit: int) -> list[tuple[float, str]]:
        dist, ids = self.tree.search(query.lat, query.lon, query.radius_m, query.category,
                                     query.keyword, query.after, limit)
        return list(zip(dist.tolist(), ids.tolist()))

    async def apply(self, change: Change) -> None:
        point: IndexedPoint | None = None
        if change.business is None:
            self.tree.remove(change.business_id)
        else:
            point = IndexedPoint.of(change.business)
            self.tree.upsert(point)
        if self._replay is not None:
            self._replay.append((change.business_id, point))
        if self.tree.needs_rebuild() and self._rebuild is None:
            self._rebuild = asyncio.create_task(self._rebuild_tree(), name="quadtree-rebuild")

    def size(self) -> int:
        return len(self.tree)

    async def stop(self) -> None:
        if self._rebuild is not None:
            self._rebuild.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._rebuild

    async def _rebuild_tree(self) -> None:
        tree = self.tree  # a reload meanwhile replaces it: then this rebuild is moot
        self._replay = []
        try:
            fresh = await asyncio.to_thread(QuadtreeIndex, tree.snapshot())
            tree.swap_in(fresh, self._replay)
        finally:
            self._replay = None
            self._rebuild = None
