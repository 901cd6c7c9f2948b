"""Reflection lists every service; MeshService describes the process and pings."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import cast

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from runtime_probe import PROXIMITY_SERVICE, MakeServer, read_response

import geoplex
from geoplex.clients.errors import InvalidArgumentError
from geoplex.clients.mesh import MeshClient
from geoplex.mesh.v1 import mesh_pb2, mesh_pb2_grpc
from geoplex.servers._runtime.server import MESH_SERVICE, GeoplexServer

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
ReflectionInfo = grpc.aio.StreamStreamMultiCallable[reflection_pb2.ServerReflectionRequest,
                                                    reflection_pb2.ServerReflectionResponse]


def reflection_info(channel: grpc.aio.Channel) -> ReflectionInfo:
    """``ServerReflectionStub(channel).ServerReflectionInfo``, typed as it is over an aio
    channel. cast: types-grpcio-reflection 1.0 types the stub for blocking channels only,
    and this method as ``binascii.Incomplete``."""
    stub = reflection_pb2_grpc.ServerReflectionStub(cast(grpc.Channel, channel))
    return cast(ReflectionInfo, stub.ServerReflectionInfo)


async def test_reflection_lists_own_mesh_health_and_reflection_services(
        raw_channel: grpc.aio.Channel) -> None:
    stream = reflection_info(raw_channel)(timeout=5)
    await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await read_response(stream, reflection_pb2.ServerReflectionResponse)
    await stream.done_writing()

    names = {service.name for service in response.list_services_response.service}
    assert {PROXIMITY_SERVICE, MESH_SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE} <= names


def _describe_over_sync_channel(address: str) -> tuple[list[str], list[str]]:
    """grpc_reflection's own descriptor database, over a blocking channel."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = list(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        proximity = pool.FindServiceByName(PROXIMITY_SERVICE)
        return services, [method.name for method in proximity.methods]


async def test_reflection_serves_full_descriptors_to_a_descriptor_database(
        server: GeoplexServer) -> None:
    # The blocking client runs in a thread: the server shares this event loop.
    services, methods = await asyncio.to_thread(_describe_over_sync_channel, server.address)

    assert {PROXIMITY_SERVICE, MESH_SERVICE, HEALTH_SERVICE} <= set(services)
    assert "SearchNearbyBusinesses" in methods and "GetBusiness" in methods


async def test_server_info_names_the_process_its_services_and_version(
        channel: grpc.aio.Channel) -> None:
    async with MeshClient(channel) as client:
        info = await client.server_info()

    assert info.server_name == "test"
    assert info.pid == os.getpid()
    assert info.version == geoplex.__version__
    assert set(info.services) == {PROXIMITY_SERVICE, MESH_SERVICE}
    assert info.start_time.seconds > 0


async def test_server_without_own_services_still_serves_mesh(make_server: MakeServer) -> None:
    server = await make_server()
    async with MeshClient(server.address) as client:
        info = await client.server_info()

    assert list(info.services) == [MESH_SERVICE]


@pytest.mark.parametrize("size", [0, 1, 4096])
async def test_ping_returns_the_requested_number_of_bytes(
        channel: grpc.aio.Channel, size: int) -> None:
    async with MeshClient(channel) as client:
        payload = await client.ping(size)

    assert len(payload) == size


@pytest.mark.parametrize("size", [-1, (1 << 20) + 1])
async def test_ping_outside_its_size_range_is_invalid_argument_on_response_size(
        channel: grpc.aio.Channel, size: int) -> None:
    async with MeshClient(channel) as client:
        with pytest.raises(InvalidArgumentError) as info:
            await client.ping(size)

    assert info.value.field == "response_size"
    assert info.value.domain == "geoplex.dev"


async def test_ping_stream_answers_each_request_with_one_response(
        raw_channel: grpc.aio.Channel) -> None:
    stub = mesh_pb2_grpc.MeshServiceStub(raw_channel)
    sizes = [0, 3, 1, 100, 7]

    async def requests() -> AsyncIterator[mesh_pb2.PingStreamRequest]:
        for size in sizes:
            yield mesh_pb2.PingStreamRequest(payload=b"x", response_size=size)

    responses = [r async for r in stub.PingStream(requests(), timeout=5)]

    assert [len(r.payload) for r in responses] == sizes


async def test_ping_stream_interleaves_requests_and_responses(
        raw_channel: grpc.aio.Channel) -> None:
    stub = mesh_pb2_grpc.MeshServiceStub(raw_channel)
    stream = stub.PingStream(timeout=5)

    for size in (2, 5, 9):
        await stream.write(mesh_pb2.PingStreamRequest(response_size=size))
        assert len((await read_response(stream, mesh_pb2.PingStreamResponse)).payload) == size
    await stream.done_writing()

    assert await stream.read() is grpc.aio.EOF
    assert await stream.code() is grpc.StatusCode.OK


async def test_ping_stream_with_a_bad_size_ends_invalid_argument(
        raw_channel: grpc.aio.Channel) -> None:
    stub = mesh_pb2_grpc.MeshServiceStub(raw_channel)
    stream = stub.PingStream(timeout=5)
    await stream.write(mesh_pb2.PingStreamRequest(response_size=1))
    assert len((await read_response(stream, mesh_pb2.PingStreamResponse)).payload) == 1

    await stream.write(mesh_pb2.PingStreamRequest(response_size=-5))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream.read()

    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "response_size" in (info.value.details() or "")
