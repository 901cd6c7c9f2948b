"""Every search index kind behind the application, over in-memory fakes of its ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace

import pytest

from geoplex.servers.proximity import domain
from geoplex.servers.proximity.app import ProximityApp
from geoplex.servers.proximity.domain import Business, SearchQuery
from geoplex.servers.proximity.indexes import INDEX_KINDS
from geoplex.servers.proximity.ports import Change, Located


class FakeStore:
    def __init__(self, businesses: Sequence[Business]) -> None:
        self.rows = {b.id: b for b in businesses}

    async def get_many(self, ids: Sequence[str]) -> dict[str, Business]:
        return {i: self.rows[i] for i in ids if i in self.rows}

    async def ids_in_cell(self, prefix: str) -> list[str]:
        return [b.id for b in self.rows.values() if b.geohash.startswith(prefix)]

    async def scan_points(self) -> AsyncIterator[tuple[str, float, float, str, str]]:
        for b in list(self.rows.values()):
            yield b.id, b.lat, b.lon, b.category, b.name

    async def scan_some(self, limit: int) -> AsyncIterator[Business]:
        for b in list(self.rows.values())[:limit]:
            yield b

    async def open_change_stream(self) -> IdleStream:
        return IdleStream()


class IdleStream:
    def __aiter__(self) -> IdleStream:
        return self

    async def __anext__(self) -> dict[str, object]:
        await asyncio.Event().wait()
        raise StopAsyncIteration

    async def close(self) -> None:
        pass


class FakeCache:
    def __init__(self) -> None:
        self.cells: dict[str, list[str]] = {}
        self.geo: dict[str, tuple[float, float]] = {}

    async def get_businesses(self, ids: Sequence[str]) -> dict[str, Business]:
        return {}

    async def put_businesses(self, businesses: Mapping[str, Business]) -> None:
        pass

    async def get_cells(self, prefixes: Sequence[str]) -> list[list[str] | None]:
        return [self.cells.get(p) for p in prefixes]

    async def put_cell(self, prefix: str, ids: Sequence[str]) -> None:
        self.cells[prefix] = list(ids)

    async def invalidate(self, business_id: str, geohashes: Sequence[str]) -> None:
        for geohash in geohashes:
            for prefix in domain.geohash_prefixes(geohash):
                self.cells.pop(prefix, None)

    async def geo_upsert(self, businesses: Sequence[Located]) -> None:
        self.geo.update({b.id: (b.lat, b.lon) for b in businesses})

    async def geo_size(self) -> int:
        return len(self.geo)

    async def geo_remove(self, business_id: str) -> None:
        self.geo.pop(business_id, None)

    async def geo_search(self, lat: float, lon: float, radius_m: int,
                         count: int | None) -> list[tuple[float, str]]:
        rows = sorted((d, bid) for bid, (blat, blon) in self.geo.items()
                      if (d := domain.haversine_m(lat, lon, blat, blon)) <= radius_m)
        return rows[:count] if count is not None else rows


def grid() -> list[Business]:
    """A 20 x 20 grid of businesses about 55 m apart around Helsinki's centre."""
    return [Business(f"b{i:02d}{j:02d}", f"Shop {i}-{j}", "cafe" if (i + j) % 3 else "bar",
                     60.17 + i * 5e-4, 24.94 + j * 1e-3) for i in range(20) for j in range(20)]


async def started(kind: str, businesses: Sequence[Business]) -> tuple[ProximityApp, FakeStore]:
    store = FakeStore(businesses)
    app = ProximityApp(store, FakeCache(), index=kind)
    await app.start()
    return app, store


async def every_page(app: ProximityApp, query: SearchQuery) -> list[tuple[float, str]]:
    seen: list[tuple[float, str]] = []
    while True:
        page = await app.search(query)
        seen.extend((hit.distance_m, hit.business.id) for hit in page.hits)
        if not page.next_page_token:
            return seen
        after = domain.decode_page_token(page.next_page_token, query)
        query = SearchQuery(query.lat, query.lon, query.radius_m, query.category,
                            query.keyword, query.page_size, after)


@pytest.mark.parametrize("kind", INDEX_KINDS)
@pytest.mark.parametrize("category,keyword", [("", ""), ("bar", ""), ("", "shop 1")])
async def test_every_index_kind_pages_through_the_brute_force_answer(kind, category, keyword):
    businesses = grid()
    app, _ = await started(kind, businesses)
    try:
        query = SearchQuery(60.175, 24.95, 500, category, keyword, page_size=7)
        got = await every_page(app, query)
    finally:
        await app.stop()
    expected = domain.rank(query, businesses, len(businesses))
    assert [bid for _, bid in got] == [bid for _, bid in expected]
    assert [d for d, _ in got] == pytest.approx([d for d, _ in expected], rel=1e-3)
    assert expected and len(expected) < len(businesses)


@pytest.mark.parametrize("kind", INDEX_KINDS)
async def test_an_edit_is_visible_to_the_next_search_on_every_index_kind(kind):
    app, store = await started(kind, grid())
    query = SearchQuery(60.0, 25.0, 1000)
    try:
        assert (await app.search(query)).hits == []
        moved = Business("b0000", "Moved", "cafe", 60.0, 25.0)
        store.rows[moved.id] = moved
        await app.apply(Change(moved.id, moved))
        assert [h.business.name for h in (await app.search(query)).hits] == ["Moved"]
        del store.rows[moved.id]
        await app.apply(Change(moved.id, None))
        assert (await app.search(query)).hits == []
    finally:
        await app.stop()


async def test_a_quadtree_rebuild_keeps_the_edits_made_while_it_builds():
    app, store = await started("quadtree", grid())
    query = SearchQuery(60.0, 25.0, 500)
    try:
        app.index.tree.rebuild_threshold = 0
        first, second = (Business(f"new{i}", f"New {i}", "cafe", 60.0, 25.0 + i * 1e-4)
                         for i in range(2))
        store.rows.update({first.id: first, second.id: second})
        await app.apply(Change(first.id, first))
        rebuild = app.index._rebuild
        assert rebuild is not None
        await asyncio.sleep(0)  # the rebuild has taken its snapshot and is building
        await app.apply(Change(second.id, second))
        await app.apply(Change("b0000", None))
        await rebuild
        assert [h.business.id for h in (await app.search(query)).hits] == ["new0", "new1"]
        assert len(app.index.tree) == 401
    finally:
        await app.stop()


def test_an_unknown_index_kind_is_refused():
    with pytest.raises(ValueError, match="quadtree"):
        ProximityApp(FakeStore([]), FakeCache(), index="kd-tree")


def test_an_edit_takes_only_the_masked_fields_from_the_draft():
    current = Business("b1", "Old", "cafe", 60.0, 25.0, address="Street 1", phone="123",
                       owner="alice")
    draft = Business("", "New", "bar", 61.0, 26.0, address="Street 2", phone="456")
    edited = current.edited(draft, ["name", "location"])
    assert (edited.name, edited.category, edited.lat, edited.lon) == ("New", "cafe", 61.0, 26.0)
    assert (edited.address, edited.phone, edited.owner, edited.id) == ("Street 1", "123",
                                                                        "alice", "b1")
    everything = current.edited(draft, domain.EDITABLE_FIELDS)
    assert everything == replace(draft, id="b1", owner="alice",
                                 create_time=current.create_time,
                                 update_time=current.update_time)
