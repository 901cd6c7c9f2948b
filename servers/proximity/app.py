"""The proximity application: search, details and owner edits over the ports.

Search never waits on a MongoDB geo query. With the default ``quadtree``
index, a replica holds every business's point in an in-memory quadtree and
the details in a bounded in-process cache (L1) over Redis (L2) over MongoDB
(L3, the system of record). The ``geohash`` index answers from the Redis
cell cache filled from the ``geohash_index`` collection; ``redis-geo`` asks
Redis GEOSEARCH (a benchmark baseline: Redis's own Earth radius makes its
edge differ from ours by ~0.03 %). Every replica follows the MongoDB change
stream, so an owner's edit is visible to search in well under 5 seconds.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from geoplex.servers._runtime import paging
from geoplex.servers._runtime.errors import InvalidArgument, NotFound, PermissionDenied

from . import domain
from .domain import Business, Hit, SearchPage, SearchQuery
from .ports import BusinessCache, BusinessStore, Change
from .quadtree import IndexedPoint, QuadtreeIndex

log = logging.getLogger(__name__)

INDEX_KINDS = ("quadtree", "geohash", "redis-geo")


def indexed(b: Business) -> IndexedPoint:
    return IndexedPoint(b.id, b.lat, b.lon, b.category, b.name.lower())


class DetailCache:
    """Bounded LRU of businesses in this process (L1)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Business] = OrderedDict()

    def get(self, business_id: str) -> Business | None:
        item = self._items.get(business_id)
        if item is not None:
            self._items.move_to_end(business_id)
        return item

    def put(self, business: Business) -> None:
        self._items[business.id] = business
        self._items.move_to_end(business.id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def drop(self, business_id: str) -> None:
        self._items.pop(business_id, None)

    def __len__(self) -> int:
        return len(self._items)


class ProximityApp:
    def __init__(self, store: BusinessStore, cache: BusinessCache, *, index: str = "quadtree",
                 detail_capacity: int = 500_000) -> None:
        if index not in INDEX_KINDS:
            raise ValueError(f"index must be one of {INDEX_KINDS}")
        self.store = store
        self.cache = cache
        self.index_kind = index
        self.details = DetailCache(detail_capacity)
        self.quadtree = QuadtreeIndex()
        self._watcher: asyncio.Task[None] | None = None
        self._rebuild: asyncio.Task[None] | None = None
        self._replay: list[tuple[str, IndexedPoint | None]] | None = None
        self.ready = asyncio.Event()
        self.changes_applied = 0

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Open the change stream, then load every business; serve once loaded."""
        stream = await self.store.open_change_stream()
        await self._load_all()
        self._watcher = asyncio.create_task(self._follow(stream), name="proximity-changes")
        self.ready.set()

    async def stop(self) -> None:
        for task in (self._watcher, self._rebuild):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass

    async def _load_all(self) -> None:
        points = [IndexedPoint(bid, lat, lon, category, name.lower())
                  async for bid, lat, lon, category, name in self.store.scan_points()]
        async for b in self.store.scan_some(self.details.capacity):
            self.details.put(b)
        self.quadtree = await asyncio.to_thread(QuadtreeIndex, points)
        if self.index_kind == "redis-geo" and await self.cache.geo_size() != len(points):
            # the GEO set mirrors the system of record; the first replica up fills it
            for start in range(0, len(points), 5000):
                await self.cache.geo_upsert(points[start:start + 5000])
        # The index and detail cache are long-lived: keep them out of the cyclic
        # collector's generations so a search's garbage never makes it walk them.
        gc.collect()
        gc.freeze()
        log.info("proximity index loaded: %d businesses (%s)", len(points), self.index_kind)

    async def _follow(self, stream) -> None:  # type: ignore[no-untyped-def]
        """Apply committed changes; on a lost stream, reopen and reload everything."""
        while True:
            try:
                async with stream:
                    async for event in stream:
                        change = self.store.decode_change(event)
                        if change is not None:
                            await self.apply(change)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - backend gone; resync below
                log.warning("change stream lost (%s); resyncing", type(exc).__name__)
            while True:
                try:
                    await asyncio.sleep(1.0)
                    stream = await self.store.open_change_stream()
                    await self._load_all()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    log.warning("resync failed (%s); retrying", type(exc).__name__)

    async def apply(self, change: Change) -> None:
        """Make one committed change visible to this replica's search."""
        old = self.details.get(change.business_id)
        if change.business is None:
            self.details.drop(change.business_id)
            self.quadtree.remove(change.business_id)
            point: IndexedPoint | None = None
        else:
            self.details.put(change.business)
            point = indexed(change.business)
            self.quadtree.upsert(point)
        if self._replay is not None:
            self._replay.append((change.business_id, point))
        geohashes = [g for g in (old.geohash if old else None,
                                 change.business.geohash if change.business else None) if g]
        try:
            await self.cache.invalidate(change.business_id, geohashes)
            if self.index_kind == "redis-geo":
                if change.business is None:
                    await self.cache.geo_remove(change.business_id)
                else:
                    await self.cache.geo_upsert([change.business])
        except Exception as exc:  # noqa: BLE001 - cache entries also expire by TTL
            log.warning("cache invalidation failed (%s)", type(exc).__name__)
        self.changes_applied += 1
        if self.quadtree.needs_rebuild() and self._rebuild is None:
            self._rebuild = asyncio.create_task(self._rebuild_tree())

    async def _rebuild_tree(self) -> None:
        self._replay = []
        try:
            snapshot = self.quadtree.snapshot()
            fresh = await asyncio.to_thread(QuadtreeIndex, snapshot)
            self.quadtree.swap_in(fresh, self._replay)
        finally:
            self._replay = None
            self._rebuild = None

    # -- search ------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> SearchPage:
        limit = query.page_size + 1
        if self.index_kind == "quadtree":
            dist, ids = self.quadtree.search(query.lat, query.lon, query.radius_m,
                                             query.category, query.keyword, query.after, limit)
            ranked = list(zip(dist.tolist(), ids.tolist()))
        elif self.index_kind == "geohash":
            ranked = await self._search_geohash(query, limit)
        else:
            ranked = await self._search_redis_geo(query, limit)
        page = ranked[:query.page_size]
        found = await self.get_many([bid for _, bid in page])
        hits = [Hit(found[bid], d) for d, bid in page if bid in found]
        token = ""
        if len(ranked) > query.page_size and hits:
            token = domain.encode_page_token(query, hits[-1])
        return SearchPage(hits, token)

    async def _search_geohash(self, query: SearchQuery, limit: int) -> list[tuple[float, str]]:
        cells = domain.cells_for_search(query.lat, query.lon, query.radius_m)
        cached = await self.cache.get_cells(cells)  # type: ignore[attr-defined]
        ids: list[str] = []
        for cell, hit in zip(cells, cached):
            if hit is None:
                hit = await self.store.ids_in_cell(cell)
                await self.cache.put_cell(cell, hit)
            ids.extend(hit)
        businesses = await self.get_many(ids)
        return self._rank(query, businesses.values(), limit)

    async def _search_redis_geo(self, query: SearchQuery, limit: int) -> list[tuple[float, str]]:
        plain = not query.category and not query.keyword and query.after is None
        rows = await self.cache.geo_search(query.lat, query.lon, query.radius_m,
                                           limit if plain else None)
        if plain:
            return rows
        businesses = await self.get_many([bid for _, bid in rows])
        return self._rank(query, businesses.values(), limit)

    @staticmethod
    def _rank(query: SearchQuery, candidates, limit: int) -> list[tuple[float, str]]:  # type: ignore[no-untyped-def]
        chosen = [b for b in candidates if domain.matches(b, query.category, query.keyword)]
        if not chosen:
            return []
        dist = domain.haversine_np(query.lat, query.lon, np.array([b.lat for b in chosen]),
                                   np.array([b.lon for b in chosen]))
        ranked = sorted((float(d), b.id) for d, b in zip(dist, chosen) if d <= query.radius_m)
        if query.after is not None:
            ranked = [r for r in ranked if r > query.after]
        return ranked[:limit]

    # -- details -------------------------------------------------------------------

    async def get_many(self, ids: Sequence[str]) -> dict[str, Business]:
        found: dict[str, Business] = {}
        missing: list[str] = []
        for bid in ids:
            b = self.details.get(bid)
            if b is None:
                missing.append(bid)
            else:
                found[bid] = b
        if missing:
            from_cache = await self.cache.get_businesses(missing)
            still = [bid for bid in missing if bid not in from_cache]
            from_store = await self.store.get_many(still) if still else {}
            if from_store:
                await self.cache.put_businesses(from_store)
            for b in (*from_cache.values(), *from_store.values()):
                self.details.put(b)
                found[b.id] = b
        return found

    async def get(self, business_id: str) -> Business:
        if not business_id:
            raise InvalidArgument("id", "must not be empty", reason="REQUIRED_FIELD")
        found = await self.get_many([business_id])
        if business_id not in found:
            raise NotFound(f"business {business_id!r} not found", reason="BUSINESS_NOT_FOUND",
                           metadata={"id": business_id})
        return found[business_id]

    async def batch_get(self, ids: Sequence[str]) -> list[Business]:
        if not ids:
            raise InvalidArgument("ids", "must name at least one business",
                                  reason="REQUIRED_FIELD")
        if len(ids) > domain.MAX_BATCH_GET:
            raise InvalidArgument("ids", f"at most {domain.MAX_BATCH_GET} ids per call",
                                  reason="TOO_MANY_IDS")
        found = await self.get_many(list(dict.fromkeys(ids)))
        return [found[i] for i in ids if i in found]

    # -- owner edits ----------------------------------------------------------------

    async def create(self, owner: str, draft: Business) -> Business:
        now = datetime.now(UTC).replace(microsecond=(datetime.now(UTC).microsecond // 1000) * 1000)
        business = self._validated(draft).with_changes(
            id="biz_" + secrets.token_hex(8), owner=owner, source="owner", create_time=now,
            update_time=now)
        await self.store.create(business)
        await self.apply(Change(business.id, business))
        return business

    async def update(self, owner: str, business_id: str, draft: Business,
                     paths: Sequence[str]) -> Business:
        unknown = [p for p in paths if p not in domain.EDITABLE_FIELDS]
        if unknown:
            raise InvalidArgument("update_mask.paths", f"unknown or read-only field "
                                  f"{unknown[0]!r}", reason="INVALID_FIELD_MASK",
                                  allowed=domain.EDITABLE_FIELDS)
        fields = list(paths) or list(domain.EDITABLE_FIELDS)
        current = await self._owned(owner, business_id)
        changes: dict[str, object] = {}
        for name in fields:
            if name == "location":
                changes["lat"], changes["lon"] = draft.lat, draft.lon
            else:
                changes[name] = getattr(draft, name)
        candidate = self._validated(current.with_changes(**changes))
        now = datetime.now(UTC)
        updated = candidate.with_changes(
            update_time=now.replace(microsecond=(now.microsecond // 1000) * 1000))
        await self.store.replace(updated, current.geohash)
        await self.apply(Change(updated.id, updated))
        return updated

    async def delete(self, owner: str, business_id: str) -> None:
        current = await self._owned(owner, business_id)
        await self.store.delete(current)
        await self.apply(Change(business_id, None))

    async def list_owned(self, owner: str, page_size: int, page_token: str
                         ) -> tuple[list[Business], str]:
        size = domain.page_size_or_default(page_size)
        after = paging.decode_cursor(page_token, owner)[1] if page_token else ""
        items = await self.store.list_by_owner(owner, size + 1, after)
        token = ""
        if len(items) > size:
            items = items[:size]
            token = paging.encode_cursor(0.0, items[-1].id, owner)
        return items, token

    async def _owned(self, owner: str, business_id: str) -> Business:
        if not business_id:
            raise InvalidArgument("business.id", "must name the business to change",
                                  reason="REQUIRED_FIELD")
        found = await self.store.get_many([business_id])
        if business_id not in found:
            raise NotFound(f"business {business_id!r} not found", reason="BUSINESS_NOT_FOUND",
                           metadata={"id": business_id})
        business = found[business_id]
        if business.owner != owner:
            raise PermissionDenied(f"business {business_id!r} belongs to another owner",
                                   reason="NOT_OWNER", metadata={"id": business_id})
        return business

    @staticmethod
    def _validated(b: Business) -> Business:
        domain.validate_location(b.lat, b.lon, "business.location")
        return b.with_changes(
            name=domain.validate_text(b.name, "business.name", required=True,
                                      limit=domain.MAX_NAME),
            category=domain.normalise_category(domain.validate_text(
                b.category, "business.category", limit=64)),
            address=domain.validate_text(b.address, "business.address"),
            phone=domain.validate_text(b.phone, "business.phone", limit=64),
            website=domain.validate_text(b.website, "business.website"),
            opening_hours=domain.validate_text(b.opening_hours, "business.opening_hours"))
