"""Health per service, and a graceful stop: NOT_SERVING first, in-flight calls drain."""

from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2
from runtime_probe import (
    PROXIMITY_SERVICE,
    MakeServer,
    ProbeProximityServicer,
    health_stub,
    read_response,
    search_request,
)

from geoplex.proximity.v1 import proximity_pb2, proximity_pb2_grpc
from geoplex.servers._runtime.server import MESH_SERVICE, GeoplexServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("service", ["", PROXIMITY_SERVICE, MESH_SERVICE])
async def test_health_check_reports_serving_for_the_server_and_each_service(
        raw_channel: grpc.aio.Channel, service: str) -> None:
    health = health_stub(raw_channel)

    response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)

    assert response.status == SERVING


async def test_health_check_of_an_unknown_service_is_not_found(
        raw_channel: grpc.aio.Channel) -> None:
    health = health_stub(raw_channel)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)

    assert info.value.code() is grpc.StatusCode.NOT_FOUND


async def test_stop_turns_health_not_serving_while_an_in_flight_call_drains(
        server: GeoplexServer, raw_channel: grpc.aio.Channel,
        probe: ProbeProximityServicer) -> None:
    health = health_stub(raw_channel)
    stub = proximity_pb2_grpc.ProximityServiceStub(raw_channel)
    watches = {name: health.Watch(health_pb2.HealthCheckRequest(service=name), timeout=10)
               for name in ("", PROXIMITY_SERVICE)}
    for watch in watches.values():
        assert (await read_response(watch, health_pb2.HealthCheckResponse)).status == SERVING
    slow = stub.SearchNearbyBusinesses(search_request(500, keyword="slow"), timeout=10)
    await asyncio.wait_for(probe.slow_started.wait(), 5)

    stopping = asyncio.create_task(server.stop(grace=5))
    statuses = {name: (await asyncio.wait_for(
                    read_response(watch, health_pb2.HealthCheckResponse), 5)).status
                for name, watch in watches.items()}
    slow_done = slow.done()
    for watch in watches.values():
        watch.cancel()
    response = await slow
    await stopping

    assert statuses == {"": NOT_SERVING, PROXIMITY_SERVICE: NOT_SERVING}
    assert not slow_done, "health must turn NOT_SERVING before in-flight calls end"
    assert [b.business.id for b in response.businesses] == ["b-1"]


async def test_stop_lets_an_in_flight_call_finish_within_grace(
        server: GeoplexServer, probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub,
        probe: ProbeProximityServicer) -> None:
    slow = probe_stub.SearchNearbyBusinesses(search_request(500, keyword="slow"), timeout=10)
    await asyncio.wait_for(probe.slow_started.wait(), 5)

    started = time.monotonic()
    await server.stop(grace=5)
    stopped_after = time.monotonic() - started
    response = await slow

    assert await slow.code() is grpc.StatusCode.OK
    assert [b.business.id for b in response.businesses] == ["b-1"]
    assert stopped_after < 4.0, "stop should return once the call is done, not wait out grace"


async def test_call_started_after_stop_is_rejected(
        server: GeoplexServer, probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub,
        probe: ProbeProximityServicer) -> None:
    slow = probe_stub.SearchNearbyBusinesses(search_request(500, keyword="slow"), timeout=10)
    await asyncio.wait_for(probe.slow_started.wait(), 5)
    stopping = asyncio.create_task(server.stop(grace=5))
    await asyncio.sleep(0.1)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await probe_stub.GetBusiness(proximity_pb2.GetBusinessRequest(id="b-1"), timeout=3)
    await slow
    await stopping

    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_in_flight_call_longer_than_grace_is_cut_off(
        server: GeoplexServer, probe_stub: proximity_pb2_grpc.ProximityServiceAsyncStub,
        probe: ProbeProximityServicer) -> None:
    probe.slow_seconds = 30
    slow = probe_stub.SearchNearbyBusinesses(search_request(500, keyword="slow"), timeout=20)
    await asyncio.wait_for(probe.slow_started.wait(), 5)

    started = time.monotonic()
    await server.stop(grace=0.5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await slow

    assert time.monotonic() - started < 5
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


async def test_call_beyond_max_concurrent_rpcs_is_resource_exhausted(
        make_server: MakeServer, probe: ProbeProximityServicer) -> None:
    server = await make_server(probe, max_concurrent_rpcs=1)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = proximity_pb2_grpc.ProximityServiceStub(channel)
        slow = stub.SearchNearbyBusinesses(search_request(500, keyword="slow"), timeout=10)
        await asyncio.wait_for(probe.slow_started.wait(), 5)

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetBusiness(proximity_pb2.GetBusinessRequest(id="b-1"), timeout=5)
        await slow

        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        await stub.GetBusiness(proximity_pb2.GetBusinessRequest(id="b-1"), timeout=5)
