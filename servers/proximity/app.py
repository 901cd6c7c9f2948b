"""The proximity application: search, details and owner edits over the ports.

Search never waits on a MongoDB geo query: it asks the replica's search index
(``indexes.SEARCH_INDEXES``, chosen once at construction) for the page's ids,
then reads their details from a bounded in-process cache (L1) over Redis (L2)
over MongoDB (L3, the system of record). Every replica follows the MongoDB
change stream, so an owner's edit is visible to search in well under 5 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from geoplex.servers._runtime import paging
from geoplex.servers._runtime.errors import InvalidArgument, NotFound, PermissionDenied

from . import domain
from .details import BusinessDetails
from .domain import Business, Hit, SearchPage, SearchQuery
from .indexes import build_index
from .ports import BusinessCache, BusinessStore, Change, ChangeStream

if TYPE_CHECKING:
    from geoplex.servers._runtime.metrics import ServiceMetrics

log = logging.getLogger(__name__)

STOP_RECANCEL_S = 0.5  # how long stop() waits on the change watcher before cancelling again


def _now() -> datetime:
    """Now, to the millisecond MongoDB keeps."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class ProximityApp:
    def __init__(self, store: BusinessStore, cache: BusinessCache, *, index: str = "quadtree",
                 detail_capacity: int = 500_000,
                 on_loaded: Callable[[list[Business]], object] | None = None) -> None:
        """``on_loaded``: called (in a thread) with the cached businesses after every
        load, before they are frozen out of the collector's way; the transport prepares
        what it sends of them there (servicer's response bytes)."""
        self.store = store
        self._on_loaded = on_loaded
        self.cache = cache
        self.details = BusinessDetails(store, cache, detail_capacity)
        self.index_kind = index
        self.index = build_index(index, store, cache, self.details)
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    def instruments(self, metrics: ServiceMetrics) -> None:
        """The service's metrics (ServiceSpec.instruments): the index size and the detail
        cache's hits and misses per tier, read from counters kept anyway."""
        def indexed() -> list[tuple[float, dict[str, str]]]:
            size = self.index.size()
            return [] if size is None else [(size, {"index": self.index_kind})]

        details = self.details
        metrics.gauge("geoplex.proximity.index.businesses", indexed, unit="{business}",
                      description="Businesses in this process's in-memory search index")
        metrics.counter("geoplex.proximity.detail_cache.hits",
                        lambda: [(details.local_hits, {"tier": "memory"}),
                                 (details.redis_hits, {"tier": "redis"})],
                        unit="{lookup}", description="Business details found in a cache tier")
        metrics.counter("geoplex.proximity.detail_cache.misses",
                        lambda: [(details.local_misses, {"tier": "memory"}),
                                 (details.redis_misses, {"tier": "redis"})],
                        unit="{lookup}",
                        description="Business details not in a cache tier (memory: asked of "
                                    "Redis next; redis: read from MongoDB)")

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Load every business and follow the changes; serve once this returns."""
        stream = await self._open_and_load()
        self._watcher = asyncio.create_task(self._follow(stream), name="proximity-changes")

    async def stop(self) -> None:
        self._stopping = True
        if self._watcher is not None:
            # On Python 3.11 a cancellation that lands as a library's asyncio.wait_for
            # completes (redis-py's sends) is lost (cpython gh-86296), and the watcher would
            # go on reading the change stream: cancel again until it has ended.
            while not self._watcher.done():
                self._watcher.cancel()
                await asyncio.wait({self._watcher}, timeout=STOP_RECANCEL_S)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        await self.index.stop()

    async def _open_and_load(self) -> ChangeStream:
        """Open the change stream, then load: no change committed after the load is missed."""
        stream = await self.store.open_change_stream()
        try:
            await self._load_all()
        except BaseException:
            await stream.close()
            raise
        return stream

    async def _load_all(self) -> None:
        held = await self.index.load()
        await self.details.warm()
        if self._on_loaded is not None:
            await asyncio.to_thread(self._on_loaded, list(self.details.local.values()))
        # The index and detail cache are long-lived: keep them out of the cyclic
        # collector's generations so a search's garbage never makes it walk them.
        gc.collect()
        gc.freeze()
        log.info("proximity index loaded (%s): %s businesses in memory, %d details cached",
                 self.index_kind, "no" if held is None else held, len(self.details.local))

    async def _follow(self, stream: ChangeStream) -> None:
        """Apply committed changes; on a lost stream, reopen and reload everything."""
        while True:
            try:
                try:
                    async for event in stream:
                        change = self.store.decode_change(event)
                        if change is not None:
                            await self.apply(change)
                        if self._stopping:
                            return
                finally:
                    await stream.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - backend gone; resync below
                log.warning("change stream lost (%s); resyncing", type(exc).__name__)
            while True:
                try:
                    await asyncio.sleep(1.0)
                    stream = await self._open_and_load()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    log.warning("resync failed (%s); retrying", type(exc).__name__)

    async def apply(self, change: Change) -> None:
        """Make one committed change visible to this replica's search."""
        old = self.details.local.get(change.business_id)
        if change.business is None:
            self.details.local.drop(change.business_id)
        else:
            self.details.local.put(change.business)
        await self.index.apply(change)
        # whatever this replica's index, replicas of the other kinds read the shared cache
        geohashes = [g for g in (old.geohash if old else None,
                                 change.business.geohash if change.business else None) if g]
        try:
            await self.cache.invalidate(change.business_id, geohashes)
        except Exception as exc:  # noqa: BLE001 - cache entries also expire by TTL
            log.warning("cache invalidation failed (%s)", type(exc).__name__)

    # -- search ------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> SearchPage:
        ranked = await self.index.search(query, query.page_size + 1)
        page = ranked[:query.page_size]
        found = await self.details.get_many([bid for _, bid in page])
        hits = [Hit(b, d) for d, bid in page if (b := found.get(bid)) is not None]
        token = ""
        if len(ranked) > query.page_size and hits:
            token = domain.encode_page_token(query, hits[-1])
        return SearchPage(hits, token)

    # -- details -------------------------------------------------------------------

    async def get(self, business_id: str) -> Business:
        domain.validate_business_id(business_id, "id")
        found = await self.details.get_many([business_id])
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
        for n, business_id in enumerate(ids):
            domain.validate_business_id(business_id, f"ids[{n}]")
        found = await self.details.get_many(list(dict.fromkeys(ids)))
        return [found[i] for i in ids if i in found]

    # -- owner edits ----------------------------------------------------------------

    async def create(self, owner: str, draft: Business) -> Business:
        now = _now()
        business = replace(domain.validate_business(draft), id="biz_" + secrets.token_hex(8),
                           owner=owner, source="owner", create_time=now, update_time=now)
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
        current = await self._owned(owner, business_id, "business.id")
        candidate = domain.validate_business(
            current.edited(draft, paths or domain.EDITABLE_FIELDS))
        updated = replace(candidate, update_time=_now())
        await self.store.replace(updated, current.geohash)
        await self.apply(Change(updated.id, updated))
        return updated

    async def delete(self, owner: str, business_id: str) -> None:
        current = await self._owned(owner, business_id, "id")
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

    async def _owned(self, owner: str, business_id: str, field: str) -> Business:
        """The business ``field`` of the request names, if ``owner`` owns it."""
        domain.validate_business_id(business_id, field)
        found = await self.store.get_many([business_id])
        if business_id not in found:
            raise NotFound(f"business {business_id!r} not found", reason="BUSINESS_NOT_FOUND",
                           metadata={"id": business_id})
        business = found[business_id]
        if business.owner != owner:
            raise PermissionDenied(f"business {business_id!r} belongs to another owner",
                                   reason="NOT_OWNER", metadata={"id": business_id})
        return business
