"""Faults of our own processes: backends killed with SIGKILL and restarted under live replicas.

These tests own their backends (not the session ones), so killing them
disturbs no other test.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import GeoplexRpcError
from geoplex.clients.proximity import ProximityClient
from geoplex.infra.local import LocalInfra
from geoplex.proximity.v1 import proximity_pb2 as pb
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.type.v1.geo_pb2 import LatLng

import polling  # tests/polling.py

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

pytestmark = pytest.mark.timeout(240)
TOKEN = mint_token(DEV_SECRET, "fault-owner")
T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """``check()``'s first truthy answer; an RPC error counts as not yet."""
    return await polling.eventually(check, timeout, ignore=(GeoplexRpcError,), what="recovery")


@pytest.fixture(scope="module")
def replicas(own_infra: LocalInfra,
             server_factory: Callable[..., ServerProcess]) -> dict[str, ServerProcess]:
    env = {**own_infra.urls.env(), "GEOPLEX_PROXIMITY_DATABASE": f"px_fault_{uuid.uuid4().hex[:6]}",
           "GEOPLEX_PROXIMITY_PORT": "0", "GEOPLEX_LOG_LEVEL": "warning"}
    return {index: server_factory("proximity",
                                  {**env, "GEOPLEX_PROXIMITY_INDEX": index}, f"fault-{index}")
            for index in ("quadtree", "geohash")}


def client(server: ServerProcess) -> ProximityClient:
    return ProximityClient(server.address, ChannelOptions(token=TOKEN, retry=False))


async def found(px: ProximityClient, business_id: str) -> bool:
    page = await px.search(59.33, 18.06, 1000, page_size=100)
    return business_id in {h.business.id for h in page.businesses}


async def test_replicas_follow_edits_again_after_mongodb_is_killed(own_infra, replicas):
    async with client(replicas["quadtree"]) as qt, client(replicas["geohash"]) as gh:
        first = await qt.create(pb.Business(name="Before Crash", location=LatLng(
            latitude=59.33, longitude=18.06)))
        await eventually(lambda: found(gh, first.id))
        own_infra.restart("mongo", kill=True)  # SIGKILL, then start on the same port
        # nothing acknowledged is lost, and the replicas' change feeds resume
        after = await eventually(lambda: qt.create(pb.Business(
            name="After Crash", location=LatLng(latitude=59.331, longitude=18.061))))
        assert await eventually(lambda: found(qt, first.id))
        assert await eventually(lambda: found(gh, after.id))
        assert await eventually(lambda: found(qt, after.id))


async def test_search_recovers_after_redis_is_killed(own_infra, replicas):
    async with client(replicas["quadtree"]) as qt, client(replicas["geohash"]) as gh:
        made = await qt.create(pb.Business(name="Cache Victim", location=LatLng(
            latitude=59.332, longitude=18.062)))
        await eventually(lambda: found(gh, made.id))
        own_infra.restart("redis", kill=True)
        # the quadtree path does not need Redis for details it already holds
        assert await found(qt, made.id)
        # the geohash path refills its cell cache from MongoDB once Redis is back
        assert await eventually(lambda: found(gh, made.id))
        assert (await eventually(lambda: gh.get(made.id))).name == "Cache Victim"


async def test_killed_replica_restarts_with_every_acknowledged_business(replicas):
    server = replicas["quadtree"]
    async with client(server) as px:
        made = [await px.create(pb.Business(name=f"Acked {n}", location=LatLng(
            latitude=59.34, longitude=18.07 + n * 1e-4))) for n in range(5)]
    import signal

    server.stop(signal.SIGKILL)
    server.start()
    async with client(server) as px:
        page = await px.search(59.34, 18.07, 500, page_size=100)
    assert {b.id for b in made} <= {h.business.id for h in page.businesses}

