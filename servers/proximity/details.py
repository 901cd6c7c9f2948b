"""Business details by id: this process's LRU (L1), then Redis (L2), then MongoDB (L3)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence

from .domain import Business
from .ports import BusinessCache, BusinessStore


class DetailCache:
    """Bounded LRU of businesses in this process (L1). Recency is kept only while the
    cache is full: until then nothing is evicted, and a search's lookups cost a third
    less without it (the order it fills in stands for recency when it first fills)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Business] = OrderedDict()

    def get(self, business_id: str) -> Business | None:
        item = self._items.get(business_id)
        if item is not None and len(self._items) >= self.capacity:
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

    def values(self) -> Iterator[Business]:
        return iter(self._items.values())


class BusinessDetails:
    """The three tiers behind one ``get_many``; what L3 returns is written back to L2 and
    L1, what L2 returns to L1."""

    def __init__(self, store: BusinessStore, cache: BusinessCache, capacity: int) -> None:
        self.store = store
        self.cache = cache
        self.local = DetailCache(capacity)
        # ids looked up, by where they were found (the metrics read these)
        self.local_hits = 0
        self.local_misses = 0  # looked up in Redis next
        self.redis_hits = 0
        self.redis_misses = 0  # read from MongoDB

    async def warm(self) -> None:
        """Fill L1 with as many businesses as it holds, straight from the system of record."""
        async for b in self.store.scan_some(self.local.capacity):
            self.local.put(b)

    async def get_many(self, ids: Sequence[str]) -> dict[str, Business]:
        found: dict[str, Business] = {}
        missing: list[str] = []
        for bid in ids:
            b = self.local.get(bid)
            if b is None:
                missing.append(bid)
            else:
                found[bid] = b
        self.local_hits += len(found)
        self.local_misses += len(missing)
        if missing:
            from_cache = await self.cache.get_businesses(missing)
            still = [bid for bid in missing if bid not in from_cache]
            self.redis_hits += len(missing) - len(still)
            self.redis_misses += len(still)
            from_store = await self.store.get_many(still) if still else {}
            if from_store:
                await self.cache.put_businesses(from_store)
            for b in (*from_cache.values(), *from_store.values()):
                self.local.put(b)
                found[b.id] = b
        return found
