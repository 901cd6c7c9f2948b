"""Fixtures: a real ``GeoplexServer`` on loopback port 0 serving the probe service.

Every server a test makes is stopped at the end of the test; every channel is
closed. The probe service and helpers live in ``runtime_probe``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from runtime_probe import (
    MakeServer,
    ProbeClient,
    ProbeProximityServicer,
    ProbeStreams,
    probe_spec,
    runtime_config,
)

from geoplex.clients.channel import ChannelOptions, open_channel
from geoplex.proximity.v1 import proximity_pb2_grpc
from geoplex.servers._runtime.server import GeoplexServer


@pytest.fixture
def probe() -> ProbeProximityServicer:
    return ProbeProximityServicer()


@pytest.fixture
async def make_server() -> AsyncIterator[MakeServer]:
    """Build and start servers (config fields as keyword overrides, ``streams`` to serve the
    probe's streaming handlers too); all stop at the end."""
    started: list[GeoplexServer] = []

    async def make(servicer: ProbeProximityServicer | None = None, *,
                   tracer_provider: TracerProvider | None = None,
                   streams: ProbeStreams | None = None,
                   **config: Any) -> GeoplexServer:
        services = [] if servicer is None else [probe_spec(servicer)]
        if streams is not None:
            services.append(streams.spec())
        server = GeoplexServer(runtime_config(**config), services, tracer_provider)
        await server.start()
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        await server.stop(grace=0)


@pytest.fixture
async def server(make_server: MakeServer, probe: ProbeProximityServicer) -> GeoplexServer:
    return await make_server(probe)


@pytest.fixture
async def channel(server: GeoplexServer) -> AsyncIterator[grpc.aio.Channel]:
    """A plaintext channel from ``clients.channel``, retries on, as clients use it."""
    chan = open_channel(server.address)
    yield chan
    await chan.close()


@pytest.fixture
async def raw_channel(server: GeoplexServer) -> AsyncIterator[grpc.aio.Channel]:
    """A channel without retries, to see exactly what the server answered."""
    chan = open_channel(server.address, ChannelOptions(retry=False))
    yield chan
    await chan.close()


@pytest.fixture
def probe_stub(raw_channel: grpc.aio.Channel) -> proximity_pb2_grpc.ProximityServiceAsyncStub:
    return proximity_pb2_grpc.ProximityServiceStub(raw_channel)


@pytest.fixture
async def probe_client(channel: grpc.aio.Channel) -> AsyncIterator[ProbeClient]:
    async with ProbeClient(channel) as client:
        yield client
