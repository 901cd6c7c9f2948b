"""One log line per RPC and OpenTelemetry spans joined client to server; no locations."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from runtime_probe import (
    CRASH_TEXT,
    MakeServer,
    ProbeClient,
    ProbeProximityServicer,
    health_stub,
    search_request,
)

from geoplex.clients.channel import open_channel
from geoplex.clients.errors import InvalidArgumentError
from geoplex.proximity.v1 import proximity_pb2, proximity_pb2_grpc
from geoplex.servers._runtime.tracing import client_interceptors, make_tracer_provider

LATITUDE, LONGITUDE = 60.1704, 24.9522
COORDINATE_TEXTS = ("60.1704", "24.9522")
SEARCH = "/geoplex.proximity.v1.ProximityService/SearchNearbyBusinesses"


def _span_texts(span: ReadableSpan) -> Iterator[str]:
    yield span.name
    for key, value in (span.attributes or {}).items():  # !s: bytes values too, as str() shows them
        yield f"{key}={value!s}"
    for event in span.events:
        yield event.name
        for key, value in (event.attributes or {}).items():
            yield f"{key}={value!s}"


async def _wait_for_spans(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """Server spans end after the response is sent; give them a moment."""
    for _ in range(100):
        spans = list(exporter.get_finished_spans())
        if len(spans) >= count:
            return spans
        await asyncio.sleep(0.02)
    return list(exporter.get_finished_spans())


async def test_server_span_joins_the_client_trace_and_records_no_location(
        make_server: MakeServer, probe: ProbeProximityServicer) -> None:
    server_spans, client_spans = InMemorySpanExporter(), InMemorySpanExporter()
    server_provider = make_tracer_provider("off", "test",
                                           processor=SimpleSpanProcessor(server_spans))
    client_provider = make_tracer_provider("off", "test-client",
                                           processor=SimpleSpanProcessor(client_spans))
    server = await make_server(probe, tracer_provider=server_provider)
    channel = open_channel(server.address, interceptors=client_interceptors(client_provider))
    try:
        stub = proximity_pb2_grpc.ProximityServiceStub(channel)
        await stub.SearchNearbyBusinesses(search_request(500, "", LATITUDE, LONGITUDE),
                                          timeout=5)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.SearchNearbyBusinesses(search_request(7, "", LATITUDE, LONGITUDE),
                                              timeout=5)
    finally:
        await channel.close()
    served = await _wait_for_spans(server_spans, 2)
    called = await _wait_for_spans(client_spans, 2)

    assert len(served) == 2 and len(called) == 2
    assert [s.context.trace_id for s in served] == [s.context.trace_id for s in called]
    assert all(s.parent is not None and s.parent.span_id == c.context.span_id
               for s, c in zip(served, called))
    assert all("SearchNearbyBusinesses" in s.name for s in [*served, *called])
    texts = [text for span in [*served, *called] for text in _span_texts(span)]
    leaked = [t for t in texts if any(c in t for c in COORDINATE_TEXTS)]
    assert leaked == []


async def test_unexpected_exception_text_never_reaches_a_span(
        make_server: MakeServer, probe: ProbeProximityServicer) -> None:
    """An unexpected error's text may hold anything (a location, a secret): logs only."""
    server_spans = InMemorySpanExporter()
    provider = make_tracer_provider("off", "test", processor=SimpleSpanProcessor(server_spans))
    server = await make_server(probe, tracer_provider=provider)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = proximity_pb2_grpc.ProximityServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetBusiness(proximity_pb2.GetBusinessRequest(id="crash"), timeout=5)
    spans = await _wait_for_spans(server_spans, 1)

    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert len(spans) == 1
    texts = list(_span_texts(spans[0]))
    assert [t for t in texts if "hunter2" in t or CRASH_TEXT in t] == []


def test_tracing_off_without_a_processor_builds_no_provider() -> None:
    assert make_tracer_provider("off", "test") is None
    assert client_interceptors(None) == []


def _rpc_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "geoplex.rpc"]


async def test_each_rpc_logs_one_line_with_method_code_latency_and_request_id(
        probe_client: ProbeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="geoplex.rpc")

    await probe_client.search(500, latitude=LATITUDE, longitude=LONGITUDE)

    lines = _rpc_lines(caplog)
    assert len(lines) == 1
    assert SEARCH in lines[0]
    assert "code=OK" in lines[0]
    assert "ms=" in lines[0]
    assert f"rid={probe_client.last_request_id}" in lines[0]


async def test_failed_rpc_logs_its_status_code(
        probe_client: ProbeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="geoplex.rpc")

    with pytest.raises(InvalidArgumentError):
        await probe_client.search(42, latitude=LATITUDE, longitude=LONGITUDE)

    # the status reaches the client during abort(); the server logs the line just after
    for _ in range(100):
        if _rpc_lines(caplog):
            break
        await asyncio.sleep(0.02)
    lines = _rpc_lines(caplog)
    assert len(lines) == 1
    assert SEARCH in lines[0] and "code=INVALID_ARGUMENT" in lines[0]


async def test_logs_never_contain_the_searched_location(
        probe_client: ProbeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    await probe_client.search(500, latitude=LATITUDE, longitude=LONGITUDE)
    with pytest.raises(InvalidArgumentError):
        await probe_client.search(3, latitude=LATITUDE, longitude=LONGITUDE)

    assert caplog.records, "expected the per-RPC lines at least"
    assert not any(c in caplog.text for c in COORDINATE_TEXTS)


async def test_health_and_reflection_calls_are_not_logged_per_rpc(
        raw_channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture) -> None:
    from grpc_health.v1 import health_pb2

    caplog.set_level(logging.INFO, logger="geoplex.rpc")

    await health_stub(raw_channel).Check(health_pb2.HealthCheckRequest(), timeout=5)

    assert _rpc_lines(caplog) == []
