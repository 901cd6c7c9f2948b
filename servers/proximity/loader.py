"""Bulk loading of real businesses (OSM POIs) and places (GeoNames) into MongoDB.

Writes go straight to the system of record with deterministic ids (from the
OSM element or GeoNames id), so loading twice changes nothing. Running
replicas pick the documents up from the change stream; replicas started
after a load read them at start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from pymongo import ReplaceOne, UpdateOne

from .adapters.mongo_store import MongoBusinessStore, to_doc
from .adapters.redis_cache import RedisBusinessCache
from .domain import Business

BATCH = 2000


class Poi(Protocol):
    """An OpenStreetMap point of interest as the data tools read it
    (``geoplex.infra.data.Poi``; a service does not import the operator side)."""

    @property
    def source(self) -> str: ...  # "osm:node/123" or "osm:way/45"
    @property
    def name(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...
    @property
    def address(self) -> str: ...
    @property
    def phone(self) -> str: ...
    @property
    def website(self) -> str: ...
    @property
    def opening_hours(self) -> str: ...


class Place(Protocol):
    """A GeoNames populated place as the data tools read it (``geoplex.infra.data.Place``)."""

    @property
    def geonameid(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...
    @property
    def country_code(self) -> str: ...


def business_from_poi(poi: Poi, now: datetime) -> Business:
    kind, _, number = poi.source.removeprefix("osm:").partition("/")
    return Business(id=f"osm-{kind}-{number}", name=poi.name[:200], category=poi.category,
                    lat=poi.lat, lon=poi.lon, address=poi.address, phone=poi.phone,
                    website=poi.website, opening_hours=poi.opening_hours, owner="",
                    source=poi.source, create_time=now, update_time=now)


def business_from_place(place: Place, now: datetime) -> Business:
    return Business(id=f"gn-{place.geonameid}", name=place.name[:200], category="place",
                    lat=place.lat, lon=place.lon, address=place.country_code, owner="",
                    source=f"geonames:{place.geonameid}", create_time=now, update_time=now)


async def load(store: MongoBusinessStore, businesses: Sequence[Business], *,
               cache: RedisBusinessCache | None = None,
               progress: Callable[[str], None] = lambda _m: None, label: str = "businesses"
               ) -> int:
    """Upsert businesses and their geohash_index rows; returns how many were written."""
    await store.ensure_indexes()
    if await store.businesses.estimated_document_count() == 0:
        return await _insert_fresh(store, businesses, cache, progress, label)
    existing = {doc["_id"] async for doc in store.businesses.find(
        {"_id": {"$in": [b.id for b in businesses]}}, {"_id": 1})} if len(businesses) < 20000 \
        else {doc["_id"] async for doc in store.businesses.find({}, {"_id": 1})}
    todo = [b for b in businesses if b.id not in existing]
    if not todo:
        progress(f"{label}: all {len(businesses):,} already loaded")
        return 0
    for n in range(0, len(todo), BATCH):
        chunk = todo[n:n + BATCH]
        await store.businesses.bulk_write(
            [ReplaceOne({"_id": b.id}, to_doc(b), upsert=True) for b in chunk], ordered=False)
        await store.cells.bulk_write(
            [UpdateOne({"geohash": b.geohash, "business_id": b.id},
                       {"$setOnInsert": {"geohash": b.geohash, "business_id": b.id}},
                       upsert=True) for b in chunk], ordered=False)
        if cache is not None:
            await cache.geo_upsert(chunk)
        progress(f"{label}: {min(n + BATCH, len(todo)):,}/{len(todo):,} written")
    return len(todo)


async def _insert_fresh(store: MongoBusinessStore, businesses: Sequence[Business],
                        cache: RedisBusinessCache | None, progress: Callable[[str], None],
                        label: str) -> int:
    """An empty collection: plain inserts, much faster than upserts."""
    unique = list({b.id: b for b in businesses}.values())
    for n in range(0, len(unique), BATCH):
        chunk = unique[n:n + BATCH]
        await store.businesses.insert_many([to_doc(b) for b in chunk], ordered=False)
        await store.cells.insert_many([{"geohash": b.geohash, "business_id": b.id}
                                       for b in chunk], ordered=False)
        if cache is not None:
            await cache.geo_upsert(chunk)
        if (n // BATCH) % 10 == 0 or n + BATCH >= len(unique):
            progress(f"{label}: {min(n + BATCH, len(unique)):,}/{len(unique):,} written")
    return len(unique)


def from_pois(pois: Iterable[Poi]) -> list[Business]:
    now = datetime.now(UTC).replace(microsecond=0)
    seen: dict[str, Business] = {}
    for poi in pois:
        b = business_from_poi(poi, now)
        seen[b.id] = b
    return list(seen.values())


def from_places(places: Iterable[Place]) -> list[Business]:
    now = datetime.now(UTC).replace(microsecond=0)
    return [business_from_place(p, now) for p in places]
