"""The probe service and helpers shared by the runtime contract tests and their conftest.

The probe is a real servicer of the generated ``ProximityServiceServicer``
whose handlers raise the runtime's domain errors, crash, sleep, or record the
request id they see, so every behaviour of the shared runtime (interceptor,
error mapping, health, reflection, MeshService, shutdown) is exercised
through a real aio server and a real channel.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from geoplex.clients.channel import BaseClient
from geoplex.proximity.v1 import proximity_pb2, proximity_pb2_grpc
from geoplex.servers._runtime.config import RuntimeConfig
from geoplex.servers._runtime.context import request_id
from geoplex.servers._runtime.errors import InvalidArgument, NotFound, PermissionDenied
from geoplex.servers._runtime.server import GeoplexServer, ServiceSpec

PROXIMITY_SERVICE = proximity_pb2.DESCRIPTOR.services_by_name["ProximityService"].full_name
ALLOWED_RADII = (500, 1000)
# The ``make_server`` fixture: (servicer=None, *, tracer_provider=None, streams=None,
# **config) -> server.
MakeServer = Callable[..., Awaitable[GeoplexServer]]
# A secret the probe puts in the text of an unexpected exception; it must never
# reach a client or a span.
CRASH_TEXT = "connection to db-7 failed with password hunter2"
_Servicer = proximity_pb2_grpc.ProximityServiceServicer
T = TypeVar("T")


class ProbeProximityServicer(_Servicer):
    """Handlers that fail or wait on request, and remember the request ids they saw.

    SearchNearbyBusinesses: radius not in ALLOWED_RADII -> InvalidArgument on
    radius_meters; keyword "slow" -> sleeps ``slow_seconds`` first.
    GetBusiness: id "missing" -> NotFound, "forbidden" -> PermissionDenied,
    "crash" -> RuntimeError(CRASH_TEXT); an id starting "missing-" -> NotFound and one
    starting "bad-" -> InvalidArgument, each echoing the whole id (message, ErrorInfo
    metadata, BadRequest) as a careless service would; anything else is found.
    """

    def __init__(self) -> None:
        self.request_ids: list[str] = []
        self.slow_seconds = 1.0
        self.slow_started = asyncio.Event()

    # not served by the probe: the generated handlers (they answer UNIMPLEMENTED), named
    # because the generated stubs declare every handler of the servicer abstract
    BatchGetBusinesses = _Servicer.BatchGetBusinesses
    CreateBusiness = _Servicer.CreateBusiness
    UpdateBusiness = _Servicer.UpdateBusiness
    DeleteBusiness = _Servicer.DeleteBusiness
    ListBusinesses = _Servicer.ListBusinesses

    async def SearchNearbyBusinesses(
        self, request: proximity_pb2.SearchNearbyBusinessesRequest,
        context: grpc.aio.ServicerContext[proximity_pb2.SearchNearbyBusinessesRequest,
                                          proximity_pb2.SearchNearbyBusinessesResponse],
    ) -> proximity_pb2.SearchNearbyBusinessesResponse:
        self.request_ids.append(request_id.get())
        if request.radius_meters not in ALLOWED_RADII:
            raise InvalidArgument("radius_meters", "must be one of", allowed=list(ALLOWED_RADII))
        if request.keyword == "slow":
            self.slow_started.set()
            await asyncio.sleep(self.slow_seconds)
        return proximity_pb2.SearchNearbyBusinessesResponse(businesses=[
            proximity_pb2.NearbyBusiness(
                business=proximity_pb2.Business(id="b-1", name="Cafe Probe"),
                distance_meters=12.5)])

    async def GetBusiness(
        self, request: proximity_pb2.GetBusinessRequest,
        context: grpc.aio.ServicerContext[proximity_pb2.GetBusinessRequest,
                                          proximity_pb2.GetBusinessResponse],
    ) -> proximity_pb2.GetBusinessResponse:
        self.request_ids.append(request_id.get())
        if request.id == "missing":
            raise NotFound("business missing does not exist", reason="BUSINESS_NOT_FOUND")
        if request.id == "forbidden":
            raise PermissionDenied("only the owner may read this business",
                                   reason="NOT_OWNER")
        if request.id == "crash":
            raise RuntimeError(CRASH_TEXT)
        if request.id.startswith("missing-"):
            raise NotFound(f"business {request.id!r} does not exist",
                           reason="BUSINESS_NOT_FOUND", metadata={"id": request.id})
        if request.id.startswith("bad-"):
            raise InvalidArgument("id", f"{request.id!r} is not a business id",
                                  reason="INVALID_ID")
        return proximity_pb2.GetBusinessResponse(
            business=proximity_pb2.Business(id=request.id, name="Cafe Probe"))


STREAM_SERVICE = "geoplex.probe.v1.ProbeStreamService"
TICKS = f"/{STREAM_SERVICE}/Ticks"  # unary-stream, raw bytes
CHAT = f"/{STREAM_SERVICE}/Chat"  # stream-stream, raw bytes
TICK_BYTES = 32 * 1024  # a few ticks fill HTTP/2 flow control: the server waits in write


class ProbeStreams:
    """Real streaming handlers (raw bytes, no proto) that yield as fast as the client lets
    them, so a client that stops reading leaves the server waiting to write.

    Ticks: yields TICK_BYTES messages, numbered from 0 in their first 8 bytes (big-endian),
    until the call ends. Chat: once the first request arrives, yields TICK_BYTES messages
    until the call ends (before it, the stream is quiet). Both count the streams that
    started, and the ones whose ``finally`` ran (a stream releases what it holds there).
    """

    def __init__(self) -> None:
        self.started = 0
        self.closed = 0
        self.sent = 0
        self.running = asyncio.Event()

    def spec(self) -> ServiceSpec:
        handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
            "Ticks": grpc.unary_stream_rpc_method_handler(self.ticks),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat)}
        return ServiceSpec(STREAM_SERVICE, lambda server: server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(STREAM_SERVICE, handlers)]))

    async def ticks(self, request: bytes,
                    context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
        self.started += 1
        try:
            for number in itertools.count():
                self.sent += 1
                self.running.set()
                yield number.to_bytes(8, "big") + b"t" * (TICK_BYTES - 8)
        finally:
            self.closed += 1

    async def chat(self, requests: AsyncIterator[bytes],
                   context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
        self.started += 1
        try:
            async for _ in requests:
                while True:
                    self.sent += 1
                    self.running.set()
                    yield b"c" * TICK_BYTES
        finally:
            self.closed += 1


def ticks_method(channel: grpc.aio.Channel) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
    """ProbeStreams' Ticks over ``channel`` (raw bytes both ways)."""
    return channel.unary_stream(TICKS)


def chat_method(channel: grpc.aio.Channel) -> grpc.aio.StreamStreamMultiCallable[bytes, bytes]:
    """ProbeStreams' Chat over ``channel`` (raw bytes both ways)."""
    return channel.stream_stream(CHAT)


class ProbeClient(BaseClient):
    """A typed client over the probe, built on the shared ``clients`` base."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stub = proximity_pb2_grpc.ProximityServiceStub(self.channel)

    async def get_business(self, business_id: str) -> proximity_pb2.Business:
        response = await self.call(self.stub.GetBusiness,
                                   proximity_pb2.GetBusinessRequest(id=business_id))
        return response.business

    async def search(self, radius_meters: int, keyword: str = "",
                     latitude: float = 60.1704, longitude: float = 24.9522
                     ) -> proximity_pb2.SearchNearbyBusinessesResponse:
        return await self.call(self.stub.SearchNearbyBusinesses, search_request(
            radius_meters, keyword, latitude, longitude))


def search_request(radius_meters: int, keyword: str = "", latitude: float = 60.1704,
                   longitude: float = 24.9522) -> proximity_pb2.SearchNearbyBusinessesRequest:
    request = proximity_pb2.SearchNearbyBusinessesRequest(radius_meters=radius_meters,
                                                          keyword=keyword)
    request.location.latitude = latitude
    request.location.longitude = longitude
    return request


class HealthStub(Protocol):
    """``grpc_health``'s ``HealthStub`` over an aio channel, as it is at run time."""

    Check: grpc.aio.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest,
                                            health_pb2.HealthCheckResponse]
    Watch: grpc.aio.UnaryStreamMultiCallable[health_pb2.HealthCheckRequest,
                                             health_pb2.HealthCheckResponse]


def health_stub(channel: grpc.aio.Channel) -> HealthStub:
    # cast: types-grpcio-health-checking 1.0 declares HealthStub without Check and Watch
    return cast(HealthStub, health_pb2_grpc.HealthStub(channel))


async def read_response(call: grpc.aio.UnaryStreamCall[Any, T] | grpc.aio.StreamStreamCall[Any, T],
                        kind: type[T]) -> T:
    """The call's next response, a ``kind``; the stream must not have ended (``grpc.aio.EOF``)."""
    response = await call.read()
    assert isinstance(response, kind), f"expected a {kind.__name__}, read {response!r}"
    return response


def runtime_config(**overrides: Any) -> RuntimeConfig:
    values: dict[str, Any] = dict(name="test", host="127.0.0.1", port=0, reuse_port=False,
                                  tls=None, tracing="off", log_level="info", shutdown_grace=5.0,
                                  max_concurrent_rpcs=None)
    values.update(overrides)
    return RuntimeConfig(**values)


def probe_spec(servicer: ProbeProximityServicer) -> ServiceSpec:
    return ServiceSpec(PROXIMITY_SERVICE, lambda server: proximity_pb2_grpc
                       .add_ProximityServiceServicer_to_server(servicer, server))
