"""Typed client for MeshService, served by every Geoplex process."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, cast

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from geoplex.mesh.v1 import mesh_pb2, mesh_pb2_grpc

from .channel import BaseClient, ChannelOptions


UNREACHABLE = "UNREACHABLE"


class _HealthStub(Protocol):
    """``grpc_health``'s HealthStub over an aio channel, as it is at run time."""

    Check: grpc.aio.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest,
                                            health_pb2.HealthCheckResponse]


async def health_of(address: str, service: str = "", *, timeout: float = 1.0) -> str:
    """What a server's standard health service answers for ``service`` ("" = the whole
    server): SERVING, NOT_SERVING, SERVICE_UNKNOWN..., or UNREACHABLE when no answer came
    within ``timeout`` seconds (refused, frozen, gone)."""
    async with grpc.aio.insecure_channel(address) as channel:
        # cast: types-grpcio-health-checking declares HealthStub without Check
        stub = cast(_HealthStub, health_pb2_grpc.HealthStub(channel))
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=service),
                                      timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return "NOT_FOUND" if exc.code() == grpc.StatusCode.NOT_FOUND else UNREACHABLE
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


class MeshClient(BaseClient):
    def __init__(self, target: str | grpc.aio.Channel, options: ChannelOptions | None = None,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> None:
        super().__init__(target, options, interceptors)
        self.stub = mesh_pb2_grpc.MeshServiceStub(self.channel)

    async def server_info(self, *, timeout: float | None = None) -> mesh_pb2.GetServerInfoResponse:
        return await self.call(self.stub.GetServerInfo, mesh_pb2.GetServerInfoRequest(),
                               timeout=timeout)

    async def ping(self, response_size: int = 0, *, timeout: float | None = None) -> bytes:
        response = await self.call(self.stub.Ping, mesh_pb2.PingRequest(
            response_size=response_size), timeout=timeout)
        return response.payload


async def open_spread_channels(targets: Sequence[str], count: int, *, every_process: bool = True,
                               probe: int = 8, max_tries: int | None = None
                               ) -> list[tuple[grpc.aio.Channel, int]]:
    """``count`` channels spread evenly over the server *processes* behind ``targets``.

    Each channel has its own connection (local subchannel pool) and asks
    MeshService which pid serves it; with SO_REUSEPORT the kernel picks a process
    per connection, so channels are opened until every process seen has its
    share (``probe`` first, to see them all), or ``max_tries`` is spent.
    Returns ``(channel, pid)`` pairs, processes interleaved. ``every_process``: open at
    least one channel per process seen even if ``count`` is smaller.
    """
    tries = max_tries or count * 6 + probe
    serial = 0

    async def one() -> tuple[grpc.aio.Channel, int]:
        nonlocal serial
        target = targets[serial % len(targets)]
        serial += 1
        channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.use_local_subchannel_pool", 1), ("geoplex.spread.channel", serial),
            ("grpc.http2.max_pings_without_data", 0)])
        try:
            info = await mesh_pb2_grpc.MeshServiceStub(channel).GetServerInfo(
                mesh_pb2.GetServerInfoRequest(), timeout=10)
        except BaseException:
            await channel.close()
            raise
        return channel, int(info.pid)

    candidates = [await one() for _ in range(min(tries, max(probe, count)))]
    pids = {pid for _, pid in candidates}
    if every_process:
        count = max(count, len(pids))  # at least one channel per server process
    quota = math.ceil(count / len(pids))
    chosen: list[tuple[grpc.aio.Channel, int]] = []
    spare: list[tuple[grpc.aio.Channel, int]] = []
    load: dict[int, int] = {}
    for channel, pid in candidates:
        if len(chosen) < count and load.get(pid, 0) < quota:
            chosen.append((channel, pid))
            load[pid] = load.get(pid, 0) + 1
        else:
            spare.append((channel, pid))
    tries -= len(candidates)
    while len(chosen) < count and tries > 0:
        channel, pid = await one()
        tries -= 1
        if load.get(pid, 0) < quota:
            chosen.append((channel, pid))
            load[pid] = load.get(pid, 0) + 1
        else:
            spare.append((channel, pid))
    while len(chosen) < count and spare:
        chosen.append(spare.pop())
    for channel, _ in spare:
        await channel.close()
    # interleave processes so user i and user i+1 land on different ones
    by_pid: dict[int, list[tuple[grpc.aio.Channel, int]]] = {}
    for item in chosen:
        by_pid.setdefault(item[1], []).append(item)
    order: list[tuple[grpc.aio.Channel, int]] = []
    while any(by_pid.values()):
        for items in by_pid.values():
            if items:
                order.append(items.pop())
    return order
