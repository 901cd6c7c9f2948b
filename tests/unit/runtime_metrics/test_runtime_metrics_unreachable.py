"""Telemetry not there: a server with metrics on answers as before, an export gives up
within its timeout, nothing above debug is logged (once a minute at most), and shutdown
is not held up."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc.aio
import pytest
from runtime_metrics_probe import MakeMeteredServer
from runtime_probe import ProbeProximityServicer, probe_spec, search_request

from geoplex.infra.local import free_port
from geoplex.proximity.v1 import proximity_pb2_grpc
from geoplex.servers._runtime.config import MetricsConfig
from geoplex.servers._runtime.metrics import make_metrics


async def test_an_unreachable_telemetry_is_logged_at_debug_once_and_slows_nothing(
        make_metered_server: MakeMeteredServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    metrics = make_metrics(MetricsConfig(mode="otlp", endpoint=nobody, interval_s=1.0), "test")
    server = await make_metered_server([probe_spec(ProbeProximityServicer())], metrics)

    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = proximity_pb2_grpc.ProximityServiceStub(channel)
        for _ in range(3):
            await stub.SearchNearbyBusinesses(search_request(500), timeout=5)
    started = time.monotonic()
    for _ in range(2):
        await asyncio.to_thread(metrics.force_flush)
    flushed_s = time.monotonic() - started
    started = time.monotonic()
    await asyncio.to_thread(metrics.shutdown)
    stopped_s = time.monotonic() - started

    loud = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno > logging.DEBUG
            and r.name.startswith("opentelemetry")]
    told = [r.getMessage() for r in caplog.records
            if r.name == "geoplex.servers._runtime.metrics" and "failed" in r.getMessage()]
    assert loud == []
    assert len(told) == 1 and nobody in told[0]
    assert flushed_s < 2 * 2.5  # each export waits at most its 1 s timeout (and a backoff)
    assert stopped_s < 3.0
