"""Interfaces the proximity application needs: its backends and its search indexes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .domain import Business, SearchQuery


@dataclass(frozen=True, slots=True)
class Change:
    """A committed change to a business, as seen on the system of record's change feed."""

    business_id: str
    business: Business | None  # None: deleted


class Located(Protocol):
    """Anything with an id and a location (a Business, an index point)."""

    @property
    def id(self) -> str: ...
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...


class ChangeStream(Protocol):
    """The system of record's change events from the moment the stream was opened."""

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...
    async def close(self) -> None: ...


class BusinessStore(Protocol):
    """System of record: businesses plus the geohash index collection."""

    async def get_many(self, ids: Sequence[str]) -> dict[str, Business]: ...
    async def create(self, business: Business) -> Business: ...
    async def replace(self, business: Business, previous_geohash: str) -> Business: ...
    async def delete(self, business: Business) -> None: ...
    async def list_by_owner(self, owner: str, limit: int, after_id: str) -> list[Business]: ...
    async def ids_in_cell(self, prefix: str) -> list[str]: ...
    def scan_points(self) -> AsyncIterator[tuple[str, float, float, str, str]]: ...
    def scan_some(self, limit: int) -> AsyncIterator[Business]: ...
    async def open_change_stream(self) -> ChangeStream: ...
    @staticmethod
    def decode_change(event: dict[str, Any]) -> Change | None: ...


class BusinessCache(Protocol):
    """Shared cache (Redis): business by id, ids by geohash cell, a GEO set."""

    async def get_businesses(self, ids: Sequence[str]) -> dict[str, Business]: ...
    async def put_businesses(self, businesses: Mapping[str, Business]) -> None: ...
    async def get_cells(self, prefixes: Sequence[str]) -> list[list[str] | None]: ...
    async def put_cell(self, prefix: str, ids: Sequence[str]) -> None: ...
    async def invalidate(self, business_id: str, geohashes: Sequence[str]) -> None: ...
    async def geo_upsert(self, businesses: Sequence[Located]) -> None: ...
    async def geo_size(self) -> int: ...
    async def geo_remove(self, business_id: str) -> None: ...
    async def geo_search(self, lat: float, lon: float, radius_m: int,
                         count: int | None) -> list[tuple[float, str]]: ...


class BusinessLookup(Protocol):
    """Businesses by id, through whatever caches sit in front of the system of record."""

    async def get_many(self, ids: Sequence[str]) -> dict[str, Business]: ...


class SearchIndex(Protocol):
    """One way of answering a nearby search; a replica holds one, chosen by kind at start.

    Every kind answers alike: (distance m, business id) within the radius, matching
    the category and keyword, after ``query.after``, nearest first, ties by id.
    """

    async def load(self) -> int | None:
        """(Re)build from the system of record; how many businesses the index holds in
        this process, None for one that holds none (it reads shared state per search)."""
        ...

    async def search(self, query: SearchQuery, limit: int) -> list[tuple[float, str]]:
        """The first ``limit`` hits of the query."""
        ...

    async def apply(self, change: Change) -> None:
        """Make one committed change visible to the next search."""
        ...

    async def stop(self) -> None:
        """Cancel any background work."""
        ...

    def size(self) -> int | None:
        """How many businesses it holds in this process now (None: it holds none); read
        by the metrics export thread, so a plain read."""
        ...


@dataclass(frozen=True, slots=True)
class OnSharedBackends:
    """The base of a search index that keeps nothing in this process: it answers from the
    shared backends (the geohash and redis-geo indexes)."""

    store: BusinessStore
    cache: BusinessCache
    details: BusinessLookup

    def size(self) -> int | None:
        return None
