"""A call that crosses services keeps one request id and one trace: a handler of server A
calls server B through the SDK, and B's log line and span carry A's request id and trace."""

from __future__ import annotations

import asyncio
import logging

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from runtime_probe import runtime_config

from geoplex.clients.mesh import MeshClient
from geoplex.servers._runtime.server import GeoplexServer, ServiceSpec
from geoplex.servers._runtime.tracing import make_tracer_provider

RELAY = "geoplex.test.v1.Relay"


def relay_spec(downstream: list[str]) -> ServiceSpec:
    """A unary ``Relay/Call`` whose handler asks the downstream server about itself."""
    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        async with MeshClient(downstream[0]) as mesh:
            info = await mesh.server_info(timeout=5)
        return info.server_name.encode()

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(RELAY, {
            "Call": grpc.unary_unary_rpc_method_handler(call)}),))
    return ServiceSpec(RELAY, register)


async def test_the_next_service_gets_the_callers_request_id_and_joins_its_trace(
        caplog: pytest.LogCaptureFixture) -> None:
    spans_a, spans_b = InMemorySpanExporter(), InMemorySpanExporter()
    b = GeoplexServer(runtime_config(name="downstream"), [], make_tracer_provider(
        "off", "downstream", processor=SimpleSpanProcessor(spans_b)))
    await b.start()
    a = GeoplexServer(runtime_config(name="upstream"), [relay_spec([b.address])],
                      make_tracer_provider("off", "upstream",
                                           processor=SimpleSpanProcessor(spans_a)))
    await a.start()
    rid = "e2e0c0ffee0123456789abcdef012345"
    try:
        with caplog.at_level(logging.INFO, logger="geoplex.rpc"):
            async with grpc.aio.insecure_channel(a.address) as channel:
                relay: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                    f"/{RELAY}/Call", request_serializer=bytes, response_deserializer=bytes)
                answer = await relay(b"", timeout=10, metadata=[("x-request-id", rid)])
        assert answer == b"downstream"
        for _ in range(100):   # server spans end just after the answer is sent
            if spans_a.get_finished_spans() and spans_b.get_finished_spans():
                break
            await asyncio.sleep(0.02)
    finally:
        await a.stop(grace=0)
        await b.stop(grace=0)

    lines = [r.getMessage() for r in caplog.records if r.name == "geoplex.rpc"]
    assert any("Relay/Call" in line and f"rid={rid}" in line for line in lines), lines
    assert any("GetServerInfo" in line and f"rid={rid}" in line for line in lines), lines
    [upstream] = [s for s in spans_a.get_finished_spans() if "Relay" in s.name]
    [downstream] = [s for s in spans_b.get_finished_spans() if "GetServerInfo" in s.name]
    assert downstream.context.trace_id == upstream.context.trace_id
    assert downstream.parent is not None and downstream.parent.span_id == upstream.context.span_id


async def test_a_call_outside_any_handler_gets_a_new_request_id_each_time() -> None:
    from geoplex.clients.channel import BaseClient

    client = BaseClient("127.0.0.1:1")
    try:
        first = dict(client.metadata())["x-request-id"]
        second = dict(client.metadata())["x-request-id"]
        assert first != second and len(first) == 32
        assert "traceparent" not in dict(client.metadata())   # no span: nothing to carry
    finally:
        await client.aclose()
