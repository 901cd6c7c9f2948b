"""Fixtures: real ``GeoplexServer``s on loopback port 0 with metrics exported to a keeping
exporter (the SDK's reader, the runtime's exporter wrapper, the real OTLP encoding)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
from runtime_metrics_probe import KeepingExporter, MakeMeteredServer
from runtime_probe import runtime_config

from geoplex.servers._runtime.config import MetricsConfig
from geoplex.servers._runtime.metrics import RuntimeMetrics, make_metrics
from geoplex.servers._runtime.server import GeoplexServer, ServiceSpec


@pytest.fixture
def keeping() -> KeepingExporter:
    return KeepingExporter()


@pytest.fixture
def metrics(keeping: KeepingExporter) -> RuntimeMetrics:
    """Metrics on, exported only when a test flushes (the interval is an hour)."""
    return make_metrics(MetricsConfig(mode="otlp", interval_s=3600), "test", exporter=keeping,
                        instance="probe-host:4242")


@pytest.fixture
async def make_metered_server() -> AsyncIterator[MakeMeteredServer]:
    started: list[GeoplexServer] = []

    async def make(services: Sequence[ServiceSpec], metrics: RuntimeMetrics) -> GeoplexServer:
        server = GeoplexServer(runtime_config(), services, metrics=metrics)
        await server.start()
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        await server.stop(grace=0)
