"""Contract tests through the typed client against real server processes."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from geoplex.clients.proximity import ProximityClient
from geoplex.proximity.v1 import proximity_pb2 as pb
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.servers._runtime.backends import connect_redis
from geoplex.type.v1.geo_pb2 import LatLng

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

CATHEDRAL = (60.1704, 24.9522)
ALICE = mint_token(DEV_SECRET, "alice")
BOB = mint_token(DEV_SECRET, "bob")


def client(server: ServerProcess, token: str | None = None) -> ProximityClient:
    return ProximityClient(server.address, ChannelOptions(token=token, retry=False))


def new_business(name: str = "Cafe Test", lat: float = 60.1710, lon: float = 24.9530,
                 category: str = "cafe") -> pb.Business:
    return pb.Business(name=name, category=category, address="Testikatu 1",
                       location=LatLng(latitude=lat, longitude=lon))


async def ids_near(px: ProximityClient, lat: float, lon: float, radius: int = 500) -> list[str]:
    return [h.business.id async for h in px.search_all(lat, lon, radius)]


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> float:
    start = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


# -- search and details -------------------------------------------------------------

async def test_search_returns_nearest_first_with_distances(edit_servers):
    async with client(edit_servers["a"]) as px:
        page = await px.search(*CATHEDRAL, radius_m=1000, page_size=50)
    distances = [h.distance_meters for h in page.businesses]
    assert distances == sorted(distances) and all(d <= 1000 for d in distances)
    assert page.businesses[0].business.name == "Helsingin tuomiokirkko"


async def test_pages_neither_repeat_nor_skip_a_business(edit_servers):
    async with client(edit_servers["a"]) as px:
        whole = await px.search(*CATHEDRAL, radius_m=2000, page_size=100)
        paged: list[str] = []
        token = ""
        while True:
            page = await px.search(*CATHEDRAL, radius_m=2000, page_size=7, page_token=token)
            paged.extend(h.business.id for h in page.businesses)
            token = page.next_page_token
            if not token:
                break
    first_hundred = [h.business.id for h in whole.businesses]
    assert len(paged) == len(set(paged)) > 100
    assert paged[:100] == first_hundred


async def test_category_and_keyword_filters(edit_servers):
    async with client(edit_servers["a"]) as px:
        cafes = await px.search(*CATHEDRAL, radius_m=2000, category="cafe", page_size=100)
        named = await px.search(*CATHEDRAL, radius_m=2000, keyword="KIRKKO", page_size=100)
    assert cafes.businesses and all(h.business.category == "cafe" for h in cafes.businesses)
    assert named.businesses and all("kirkko" in h.business.name.lower()
                                    for h in named.businesses)


async def test_get_and_batch_get_return_details(edit_servers):
    async with client(edit_servers["a"]) as px:
        b = await px.get("osm-way-419479428")
        batch = await px.batch_get(["osm-way-419479428", "no-such-id", b.id])
    assert b.name == "Helsingin tuomiokirkko" and b.address.startswith("Unioninkatu")
    assert b.source == "osm:way/419479428" and b.update_time.seconds > 0
    assert [x.id for x in batch] == [b.id, b.id]


# -- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("radius", [0, 300, 1500, 50000, -500])
async def test_radius_outside_the_allowed_set_is_rejected_naming_the_values(edit_servers,
                                                                            radius):
    async with client(edit_servers["a"]) as px:
        with pytest.raises(InvalidArgumentError) as err:
            await px.search(*CATHEDRAL, radius_m=radius)
    assert err.value.reason == "INVALID_RADIUS" and err.value.field == "radius_meters"
    assert "500, 1000, 2000, 5000, 20000" in err.value.message


@pytest.mark.parametrize("lat,lon,field", [(91.0, 0.0, "location.latitude"),
                                           (0.0, -180.5, "location.longitude"),
                                           (float("nan"), 0.0, "location.latitude")])
async def test_bad_search_coordinates_are_rejected_without_echoing_them(edit_servers, lat, lon,
                                                                        field):
    async with client(edit_servers["a"]) as px:
        with pytest.raises(InvalidArgumentError) as err:
            await px.search(lat, lon, radius_m=500)
    assert err.value.reason == "INVALID_LOCATION" and err.value.field == field
    assert "91" not in err.value.message and "180.5" not in err.value.message


async def test_bad_page_size_and_token_are_rejected(edit_servers):
    async with client(edit_servers["a"]) as px:
        with pytest.raises(InvalidArgumentError) as size:
            await px.search(*CATHEDRAL, radius_m=500, page_size=101)
        with pytest.raises(InvalidArgumentError) as token:
            await px.search(*CATHEDRAL, radius_m=500, page_token="garbage!")
        first = await px.search(*CATHEDRAL, radius_m=500, page_size=2)
        with pytest.raises(InvalidArgumentError) as other:
            await px.search(*CATHEDRAL, radius_m=1000, page_size=2,
                            page_token=first.next_page_token)
    assert size.value.reason == "INVALID_PAGE_SIZE"
    assert token.value.reason == other.value.reason == "INVALID_PAGE_TOKEN"


async def test_unknown_business_is_not_found(edit_servers):
    async with client(edit_servers["a"]) as px:
        with pytest.raises(NotFoundError) as err:
            await px.get("biz_missing")
    assert err.value.reason == "BUSINESS_NOT_FOUND"


async def test_owner_calls_without_or_with_bad_token_are_unauthenticated(edit_servers):
    async with client(edit_servers["a"]) as px:
        with pytest.raises(UnauthenticatedError) as missing:
            await px.create(new_business())
        with pytest.raises(UnauthenticatedError) as forged:
            await px.create(new_business(), token=mint_token("another-secret-that-is-32-bytes-long!", "eve"))
        with pytest.raises(UnauthenticatedError):
            await px.list_own(token="not-a-jwt")
    assert missing.value.reason == "TOKEN_MISSING" and forged.value.reason == "TOKEN_INVALID"


async def test_invalid_create_changes_nothing(edit_servers):
    async with client(edit_servers["a"], ALICE) as px:
        before = len((await px.list_own(page_size=100)).businesses)
        with pytest.raises(InvalidArgumentError) as bad_lat:
            await px.create(new_business(lat=95.0))
        with pytest.raises(InvalidArgumentError) as empty:
            await px.create(new_business(name="   "))
        no_location = pb.Business(name="Nowhere")
        with pytest.raises(InvalidArgumentError) as missing:
            await px.create(no_location)
        after = len((await px.list_own(page_size=100)).businesses)
    assert bad_lat.value.field == "business.location.latitude"
    assert empty.value.field == "business.name" and empty.value.reason == "REQUIRED_FIELD"
    assert missing.value.field == "business.location"
    assert before == after


async def test_only_the_owner_may_change_a_business(edit_servers):
    async with client(edit_servers["a"], ALICE) as alice, client(edit_servers["a"], BOB) as bob:
        created = await alice.create(new_business("Alice's Bakery"))
        created.name = "Bob was here"
        with pytest.raises(PermissionDeniedError) as upd:
            await bob.update(created, ["name"])
        with pytest.raises(PermissionDeniedError) as dele:
            await bob.delete(created.id)
        with pytest.raises(PermissionDeniedError):
            await bob.update(pb.Business(id="osm-way-419479428", name="x"), ["name"])
        still = await alice.get(created.id)
        await alice.delete(created.id)
    assert upd.value.reason == dele.value.reason == "NOT_OWNER"
    assert still.name == "Alice's Bakery"


async def test_unknown_field_in_the_mask_is_rejected_and_changes_nothing(edit_servers):
    async with client(edit_servers["a"], ALICE) as px:
        created = await px.create(new_business("Mask Cafe"))
        change = pb.Business(id=created.id, name="Renamed", owner="mallory")
        with pytest.raises(InvalidArgumentError) as err:
            await px.update(change, ["name", "owner"])
        with pytest.raises(InvalidArgumentError):
            await px.update(change, ["nonsense"])
        unchanged = await px.get(created.id)
        await px.delete(created.id)
    assert err.value.reason == "INVALID_FIELD_MASK" and err.value.field == "update_mask.paths"
    assert "name, category, location" in err.value.message
    assert unchanged.name == "Mask Cafe" and unchanged.owner == "alice"


async def test_list_businesses_pages_through_the_callers_own(edit_servers):
    async with client(edit_servers["a"], mint_token(DEV_SECRET, "carol")) as px:
        made = [await px.create(new_business(f"Carol {n}")) for n in range(5)]
        seen: list[str] = []
        token = ""
        while True:
            page = await px.list_own(page_size=2, page_token=token)
            seen.extend(b.id for b in page.businesses)
            token = page.next_page_token
            if not token:
                break
        for b in made:
            await px.delete(b.id)
    assert sorted(seen) == sorted(b.id for b in made)


# -- edits become visible -------------------------------------------------------------------

async def test_new_business_is_searchable_on_another_replica_within_5_seconds(edit_servers):
    async with client(edit_servers["a"], ALICE) as a, client(edit_servers["b"]) as b, \
            client(edit_servers["geohash"]) as gh:
        created = await a.create(new_business("Fresh Cafe", 60.16, 24.94))
        seen_b = await wait_until(lambda: _has(b, created.id, 60.16, 24.94))
        seen_gh = await wait_until(lambda: _has(gh, created.id, 60.16, 24.94))
        await a.delete(created.id)
    assert seen_b < 5 and seen_gh < 5


async def _has(px: ProximityClient, business_id: str, lat: float, lon: float) -> bool:
    return business_id in await ids_near(px, lat, lon)


async def test_move_and_delete_invalidate_every_cache(edit_servers, backends, edit_database):
    r = await connect_redis(backends.redis_url)  # one Redis or a cluster
    async with client(edit_servers["a"], ALICE) as a, client(edit_servers["b"]) as b, \
            client(edit_servers["geohash"]) as gh:
        created = await a.create(new_business("Moving Cafe", 60.17, 24.95))
        for px in (b, gh):  # warm the caches at the old place
            await wait_until(functools.partial(_has, px, created.id, 60.17, 24.95))
            assert (await px.get(created.id)).name == "Moving Cafe"
        moved = pb.Business(id=created.id, name="Moved Cafe",
                            location=LatLng(latitude=43.7384, longitude=7.4246))
        await a.update(moved, ["name", "location"])
        for px in (b, gh):
            await wait_until(functools.partial(_has, px, created.id, 43.7384, 7.4246))
            assert created.id not in await ids_near(px, 60.17, 24.95)
            assert (await px.get(created.id)).name == "Moved Cafe"
        await a.delete(created.id)
        for px in (b, gh):
            await wait_until(functools.partial(_gone, px, created.id))
        assert await r.exists(f"px:{edit_database}:biz:{created.id}") == 0
    await r.aclose()


async def _gone(px: ProximityClient, business_id: str) -> bool:
    try:
        await px.get(business_id)
    except NotFoundError:
        return business_id not in await ids_near(px, 43.7384, 7.4246)
    return False


async def test_restarted_replica_loses_nothing(edit_servers):
    async with client(edit_servers["a"], ALICE) as a:
        created = await a.create(new_business("Durable Cafe", 60.18, 24.96))
    server = edit_servers["b"]
    assert server.stop() == 0
    server.start()
    async with client(server, ALICE) as b:
        assert created.id in await ids_near(b, 60.18, 24.96)
        assert (await b.get(created.id)).name == "Durable Cafe"
        await b.delete(created.id)


class HealthStub(Protocol):
    """``grpc_health``'s ``HealthStub`` over an aio channel, as it is at run time."""

    Check: grpc.aio.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest,
                                            health_pb2.HealthCheckResponse]


async def test_health_reports_serving(edit_servers):
    async with grpc.aio.insecure_channel(edit_servers["a"].address) as channel:
        # cast: types-grpcio-health-checking 1.0 declares HealthStub without its Check
        stub = cast(HealthStub, health_pb2_grpc.HealthStub(channel))
        reply = await stub.Check(health_pb2.HealthCheckRequest(
            service="geoplex.proximity.v1.ProximityService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# -- what a request may carry (issue 8) ------------------------------------------------------

TEXT_FIELDS = ("name", "category", "address", "phone", "website", "opening_hours")


async def test_control_characters_in_business_text_are_refused_and_nothing_is_stored(
        edit_servers):
    async with client(edit_servers["a"], ALICE) as px:
        before = len((await px.list_own(page_size=100)).businesses)
        refused = {}
        for field, char in zip(TEXT_FIELDS, ["\x00", "\x07", "\x1b", "\u202e", "\u2066", "\x7f"]):
            business = new_business()
            setattr(business, field, f"Evil{char}Text")
            with pytest.raises(InvalidArgumentError) as err:
                await px.create(business)
            refused[field] = err.value
        created = await px.create(new_business("Kept Cafe"))
        with pytest.raises(InvalidArgumentError) as upd:
            await px.update(pb.Business(id=created.id, address="Line\u202eEvil"), ["address"])
        after = len((await px.list_own(page_size=100)).businesses)
        unchanged = await px.get(created.id)
        await px.delete(created.id)
    for field, error in refused.items():
        assert error.field == f"business.{field}" and error.reason == "INVALID_CHARACTERS"
        assert "Evil" not in error.message
    assert upd.value.field == "business.address" and upd.value.reason == "INVALID_CHARACTERS"
    assert after == before + 1 and unchanged.address == "Testikatu 1"


async def test_ordinary_unicode_in_business_text_is_stored_as_sent(edit_servers):
    async with client(edit_servers["a"], ALICE) as px:
        sent = new_business("Café 東京 🍕 👩‍🍳")
        sent.opening_hours = "Mo-Fr 08:00-16:00; کافه‌"
        created = await px.create(sent)
        read = await px.get(created.id)
        await px.delete(created.id)
    assert read.name == "Café 東京 🍕 👩‍🍳" and read.opening_hours == sent.opening_hours


async def test_a_5000_character_id_is_invalid_argument_not_resource_exhausted(edit_servers):
    long_id = "x" * 5000
    async with client(edit_servers["a"], ALICE) as px:
        with pytest.raises(InvalidArgumentError) as get:
            await px.get(long_id)
        with pytest.raises(InvalidArgumentError) as batch:
            await px.batch_get(["osm-way-419479428", long_id])
        with pytest.raises(InvalidArgumentError) as upd:
            await px.update(pb.Business(id=long_id, name="x"), ["name"])
        with pytest.raises(InvalidArgumentError) as dele:
            await px.delete(long_id)
        with pytest.raises(InvalidArgumentError) as unprintable:
            await px.get("biz\x1b[31m")
    assert (get.value.field, batch.value.field, upd.value.field, dele.value.field) == (
        "id", "ids[1]", "business.id", "id")
    assert [e.value.reason for e in (get, batch, upd, dele, unprintable)] == [
        "ID_TOO_LONG"] * 4 + ["INVALID_ID"]
    for err in (get, batch, upd, dele, unprintable):
        assert "128" in err.value.message
        assert "xxxx" not in str(err.value) and "xxxx" not in repr(err.value.metadata)


async def test_an_empty_location_is_missing_not_null_island(edit_servers):
    async with client(edit_servers["a"], ALICE) as px:
        before = len((await px.list_own(page_size=100)).businesses)
        with pytest.raises(InvalidArgumentError) as empty:
            await px.create(pb.Business(name="Null Island Cafe", location=LatLng()))
        with pytest.raises(InvalidArgumentError) as half:
            await px.create(pb.Business(name="Half Cafe", location=LatLng(latitude=60.17)))
        with pytest.raises(InvalidArgumentError) as search:
            await px.call(px.stub.SearchNearbyBusinesses, pb.SearchNearbyBusinessesRequest(
                location=LatLng(), radius_meters=500))
        created = await px.create(new_business("Staying Cafe", 60.17, 24.95))
        with pytest.raises(InvalidArgumentError) as move:
            await px.update(pb.Business(id=created.id, location=LatLng()), ["location"])
        renamed = await px.update(pb.Business(id=created.id, name="Renamed Cafe",
                                              location=LatLng()), ["name"])
        after = len((await px.list_own(page_size=100)).businesses)
        await px.delete(created.id)
    assert (empty.value.field, half.value.field, search.value.field, move.value.field) == (
        "business.location.latitude", "business.location.longitude", "location.latitude",
        "business.location.latitude")
    assert all(e.value.reason == "REQUIRED_FIELD" for e in (empty, half, search, move))
    assert after == before + 1
    assert (renamed.name, renamed.location.latitude, renamed.location.longitude) == (
        "Renamed Cafe", 60.17, 24.95)
