"""The search index kinds a replica can run, by the name GEOPLEX_PROXIMITY_INDEX gives."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .index_geohash import GeohashSearch
from .index_quadtree import QuadtreeSearch
from .index_redis_geo import RedisGeoSearch
from .ports import BusinessCache, BusinessLookup, BusinessStore, SearchIndex

IndexFactory = Callable[[BusinessStore, BusinessCache, BusinessLookup], SearchIndex]

SEARCH_INDEXES: Mapping[str, IndexFactory] = {
    "quadtree": lambda store, _cache, _details: QuadtreeSearch(store),
    "geohash": GeohashSearch,
    "redis-geo": RedisGeoSearch,  # a benchmark baseline
}
INDEX_KINDS = tuple(SEARCH_INDEXES)


def build_index(kind: str, store: BusinessStore, cache: BusinessCache,
                details: BusinessLookup) -> SearchIndex:
    factory = SEARCH_INDEXES.get(kind)
    if factory is None:
        raise ValueError(f"index must be one of {INDEX_KINDS}")
    return factory(store, cache, details)
