"""Every search index kind behind the application, over the real MongoDB store and Redis cache.

Each test gets its own database and Redis namespace on the session's backends, and
drops both afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import pytest

from geoplex.infra.local import BackendUrls
from geoplex.servers._runtime.backends import RedisClient, open_mongo, open_redis
from geoplex.servers.proximity import domain
from geoplex.servers.proximity.adapters.mongo_store import MongoBusinessStore
from geoplex.servers.proximity.adapters.redis_cache import RedisBusinessCache
from geoplex.servers.proximity.app import ProximityApp
from geoplex.servers.proximity.domain import Business, SearchQuery
from geoplex.servers.proximity.index_quadtree import QuadtreeSearch
from geoplex.servers.proximity.indexes import INDEX_KINDS
from geoplex.servers.proximity.loader import load
from geoplex.servers.proximity.ports import Change

OWNER = "owner-grid"
NOWHERE = SearchQuery(60.0, 25.0, 1000)  # ~19 km south-east of the grid


@dataclass(frozen=True, slots=True)
class Backing:
    store: MongoBusinessStore
    cache: RedisBusinessCache


@pytest.fixture
async def backing(backends: BackendUrls) -> AsyncIterator[Backing]:
    """The real adapters over a fresh database and Redis namespace, dropped afterwards."""
    assert backends.mongo_uri and backends.redis_url
    name = f"px_idx_{uuid.uuid4().hex[:12]}"
    async with contextlib.AsyncExitStack() as stack:
        mongo = await open_mongo(backends.mongo_uri, stack)
        redis = await open_redis(backends.redis_url, stack)
        stack.push_async_callback(mongo.drop_database, name)
        stack.push_async_callback(_delete_namespace, redis, name)
        store = MongoBusinessStore(mongo, name)
        await store.ensure_indexes()
        yield Backing(store, RedisBusinessCache(redis, name))


async def _delete_namespace(redis: RedisClient, namespace: str) -> None:
    keys = [key async for key in redis.scan_iter(match=f"px:{namespace}:*")]
    if keys:
        await redis.delete(*keys)


def grid() -> list[Business]:
    """A 20 x 20 grid of businesses about 55 m apart around Helsinki's centre."""
    return [Business(f"b{i:02d}{j:02d}", f"Shop {i}-{j}", "cafe" if (i + j) % 3 else "bar",
                     60.17 + i * 5e-4, 24.94 + j * 1e-3, owner=OWNER)
            for i in range(20) for j in range(20)]


STOP_WITHIN_S = 10.0


@contextlib.asynccontextmanager
async def running(kind: str, backing: Backing) -> AsyncIterator[ProximityApp]:
    """A started application (loaded, following the change stream), stopped on exit;
    a stop that does not return promptly fails the test (Python 3.11's asyncio.wait_for,
    used by redis-py for a send, can drop the cancellation of the change watcher: stop()
    must cancel again until it has ended)."""
    app = ProximityApp(backing.store, backing.cache, index=kind)
    await app.start()
    try:
        yield app
    finally:
        stop = asyncio.ensure_future(app.stop())
        done, _ = await asyncio.wait([stop], timeout=STOP_WITHIN_S)
        if not done:
            stop.cancel()
            pytest.fail(f"ProximityApp.stop() did not return within {STOP_WITHIN_S:.0f} s")
        stop.result()


async def eventually(check: Callable[[], object | Awaitable[object]], timeout: float = 10.0,
                     interval: float = 0.05) -> None:
    """Return once ``check()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(interval)


async def ids_found(app: ProximityApp, query: SearchQuery) -> list[str]:
    return [hit.business.id for hit in (await app.search(query)).hits]


async def caught_up(app: ProximityApp, store: MongoBusinessStore) -> None:
    """Return once the app has applied every change committed before the call.

    A marker committed now reaches the app's search only through its change stream,
    which delivers changes in commit order: once search finds it, the earlier ones
    are applied too. (The marker's cells are cached first, so the geohash kind, which
    reads cells from the store on a miss, also has to be told.)
    """
    spot = SearchQuery(-45.0, 170.0, 500, page_size=domain.MAX_PAGE_SIZE)
    await app.search(spot)
    marker = Business(f"marker-{uuid.uuid4().hex[:8]}", "Marker", "marker", spot.lat, spot.lon)
    await store.create(marker)

    async def seen() -> bool:
        return marker.id in await ids_found(app, spot)

    await eventually(seen)


def brute_force(query: SearchQuery, businesses: Sequence[Business]) -> list[tuple[float, str]]:
    """Haversine to every business, filter, sort by (distance, id)."""
    return sorted((d, b.id) for b in businesses
                  if domain.matches(b, query.category, query.keyword)
                  and (d := domain.haversine_m(query.lat, query.lon, b.lat, b.lon))
                  <= query.radius_m)


async def every_page(app: ProximityApp, query: SearchQuery) -> list[tuple[float, str]]:
    seen: list[tuple[float, str]] = []
    while True:
        page = await app.search(query)
        seen.extend((hit.distance_m, hit.business.id) for hit in page.hits)
        if not page.next_page_token:
            return seen
        query = replace(query, after=domain.decode_page_token(page.next_page_token, query))


def paged_cases() -> list[object]:
    cases: list[object] = []
    for kind in INDEX_KINDS:
        for category, keyword in (("", ""), ("bar", ""), ("", "shop 1")):
            cases.append(pytest.param(
                kind, category, keyword, id=f"{kind}-{category or 'any'}-{keyword or 'any'}"))
    return cases


@pytest.mark.parametrize("kind,category,keyword", paged_cases())
async def test_every_index_kind_pages_through_the_brute_force_answer(
        kind: str, category: str, keyword: str, backing: Backing) -> None:
    businesses = grid()
    await load(backing.store, businesses)
    query = SearchQuery(60.175, 24.95, 500, category, keyword, page_size=7)

    async with running(kind, backing) as app:
        got = await every_page(app, query)

    expected = brute_force(query, businesses)
    assert [bid for _, bid in got] == [bid for _, bid in expected]
    assert [d for d, _ in got] == pytest.approx([d for d, _ in expected], rel=1e-3)
    assert expected and len(expected) < len(businesses)


@pytest.mark.parametrize("kind", INDEX_KINDS)
async def test_an_owner_edit_and_delete_are_visible_to_the_next_search_on_every_index_kind(
        kind: str, backing: Backing) -> None:
    await load(backing.store, grid())
    async with running(kind, backing) as app:
        assert await ids_found(app, NOWHERE) == []

        await app.update(OWNER, "b0000", Business("", "Moved", "", NOWHERE.lat, NOWHERE.lon),
                         ["name", "location"])
        assert [h.business.name for h in (await app.search(NOWHERE)).hits] == ["Moved"]
        # the same edit arriving on the change stream leaves it so (and is not replayed
        # after the delete below)
        await caught_up(app, backing.store)
        assert await ids_found(app, NOWHERE) == ["b0000"]

        await app.delete(OWNER, "b0000")
        assert await ids_found(app, NOWHERE) == []
        await caught_up(app, backing.store)
        assert await ids_found(app, NOWHERE) == []


@pytest.mark.parametrize("kind", INDEX_KINDS)
async def test_an_edit_committed_by_another_replica_reaches_every_index_kind(
        kind: str, backing: Backing) -> None:
    await load(backing.store, grid())
    async with running(kind, backing) as app:
        assert await ids_found(app, NOWHERE) == []
        current = (await backing.store.get_many(["b0000"]))["b0000"]
        moved = replace(current, name="Moved", lat=NOWHERE.lat, lon=NOWHERE.lon)

        await backing.store.replace(moved, current.geohash)  # committed, not applied here

        async def found_moved() -> bool:
            return [h.business.name for h in (await app.search(NOWHERE)).hits] == ["Moved"]

        await eventually(found_moved)

        await backing.store.delete(moved)

        async def gone() -> bool:
            return await ids_found(app, NOWHERE) == []

        await eventually(gone)


async def test_a_quadtree_rebuild_keeps_the_edits_made_while_it_builds(backing: Backing) -> None:
    # The index alone over the real store: an application's change stream would apply
    # these edits as well, at moments the test does not choose.
    businesses = grid()
    await load(backing.store, businesses)
    index = QuadtreeSearch(backing.store)
    assert await index.load() == len(businesses)
    first, second = (Business(f"new{i}", f"New {i}", "cafe", NOWHERE.lat,
                              NOWHERE.lon + i * 1e-4) for i in range(2))
    # committed first: from the rebuild's start to the end of the edits nothing awaits I/O
    await backing.store.create(first)
    await backing.store.create(second)
    await backing.store.delete(businesses[0])
    try:
        index.tree.rebuild_threshold = 0
        await index.apply(Change(first.id, first))
        rebuild = index._rebuild
        assert rebuild is not None
        # polled without a pause: between two polls the build could finish and swap in
        await eventually(lambda: index._replay is not None, interval=0)  # snapshot taken

        await index.apply(Change(second.id, second))
        await index.apply(Change(businesses[0].id, None))
        assert index._replay is not None and len(index._replay) == 2  # made while it builds
        await rebuild

        assert [bid for _, bid in await index.search(NOWHERE, 10)] == ["new0", "new1"]
        assert len(index.tree) == len(businesses) + 2 - 1
    finally:
        await index.stop()


async def test_an_unknown_index_kind_is_refused(backing: Backing) -> None:
    with pytest.raises(ValueError, match="quadtree"):
        ProximityApp(backing.store, backing.cache, index="kd-tree")


def test_an_edit_takes_only_the_masked_fields_from_the_draft() -> None:
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
