"""A client cancelling a stream is normal: one CANCELLED line, no ERROR, no traceback.

The probe's streams yield as fast as flow control lets them, so when the client
cancels, the server is suspended in a ``yield`` (waiting to write), the case where
grpc.aio stops iterating the handler and closes it with ``GeneratorExit``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from runtime_probe import (
    CHAT,
    TICK_BYTES,
    TICKS,
    MakeServer,
    ProbeStreams,
    chat_method,
    ticks_method,
)

from geoplex.servers._runtime.server import GeoplexServer
from geoplex.servers._runtime.tracing import make_tracer_provider


@pytest.fixture
def streams() -> ProbeStreams:
    return ProbeStreams()


@pytest.fixture(params=["plain", "traced"])
async def stream_server(request: pytest.FixtureRequest, make_server: MakeServer,
                        streams: ProbeStreams) -> GeoplexServer:
    """The probe streams, without and with tracing (whose interceptor wraps the runtime's)."""
    provider = None
    if request.param == "traced":
        provider = make_tracer_provider("off", "test",
                                        processor=SimpleSpanProcessor(InMemorySpanExporter()))
    return await make_server(streams=streams, tracer_provider=provider)


@pytest.fixture
async def stream_channel(stream_server: GeoplexServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(stream_server.address) as channel:
        yield channel


async def _eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)  # no gc.collect(): the end must not wait for the collector
    return condition()


def _rpc_lines(caplog: pytest.LogCaptureFixture, method: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "geoplex.rpc" and method in r.getMessage()]


async def _assert_cancel_is_quiet(caplog: pytest.LogCaptureFixture, streams: ProbeStreams,
                                  method: str) -> None:
    assert await _eventually(lambda: bool(_rpc_lines(caplog, method))), \
        "no RPC line for the cancelled stream"
    assert await _eventually(lambda: streams.closed == streams.started == 1), \
        "the handler's finally did not run"
    await asyncio.sleep(0.2)  # anything logged late (asyncgen finalizers) is in by now
    lines = _rpc_lines(caplog, method)
    assert len(lines) == 1 and "code=CANCELLED" in lines[0], lines
    loud = [f"{r.name} {r.levelname}: {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == []
    assert "Traceback" not in caplog.text and "GeneratorExit" not in caplog.text


async def test_cancelled_server_stream_logs_cancelled_without_a_traceback(
        stream_channel: grpc.aio.Channel, streams: ProbeStreams,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    call = ticks_method(stream_channel)(b"", timeout=10)

    assert isinstance(await call.read(), bytes)
    await asyncio.wait_for(streams.running.wait(), 5)
    await asyncio.sleep(0.2)  # the client reads no more: the server waits in its write
    call.cancel()

    await _assert_cancel_is_quiet(caplog, streams, TICKS)


async def test_cancelled_bidi_stream_logs_cancelled_without_a_traceback(
        stream_channel: grpc.aio.Channel, streams: ProbeStreams,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    call = chat_method(stream_channel)()

    await call.write(b"hello")
    assert isinstance(await call.read(), bytes)
    await asyncio.wait_for(streams.running.wait(), 5)
    await asyncio.sleep(0.2)
    call.cancel()

    await _assert_cancel_is_quiet(caplog, streams, CHAT)


async def test_stream_that_ends_on_its_own_still_logs_ok(
        stream_channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture) -> None:
    """The quiet cancel path must not turn a normal end into CANCELLED."""
    caplog.set_level(logging.INFO, logger="geoplex.rpc")
    call = chat_method(stream_channel)()
    await call.done_writing()  # no request: Chat ends at once
    assert [m async for m in call] == []
    assert await call.code() is grpc.StatusCode.OK

    assert await _eventually(lambda: bool(_rpc_lines(caplog, CHAT)))
    assert "code=OK" in _rpc_lines(caplog, CHAT)[0]


async def test_stream_responses_all_arrive_in_order(stream_channel: grpc.aio.Channel) -> None:
    """The runtime writes each response itself; none is lost, doubled or reordered."""
    call = ticks_method(stream_channel)(b"", timeout=10)
    numbers = []
    async for message in call:
        assert isinstance(message, bytes) and len(message) == TICK_BYTES
        numbers.append(int.from_bytes(message[:8], "big"))
        if len(numbers) == 50:
            break
    call.cancel()

    assert numbers == list(range(50))
