"""With metrics on, every RPC and a service's own instruments reach the export as the
series telemetry stores (names, units, labels), cumulative from one export to the next."""

from __future__ import annotations

import dataclasses

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.metrics.export import Histogram, HistogramDataPoint
from polling import eventually
from runtime_metrics_probe import KeepingExporter, MakeMeteredServer, series, value_of
from runtime_probe import (
    ProbeProximityServicer,
    ProbeStreams,
    probe_spec,
    search_request,
    ticks_method,
)

from geoplex.proximity.v1 import proximity_pb2, proximity_pb2_grpc
from geoplex.servers._runtime.metrics import (
    DURATION_BUCKETS,
    RpcMetrics,
    RuntimeMetrics,
    ServiceMetrics,
)
from geoplex.servers._runtime.server import ServiceSpec

SERVICE = "geoplex.proximity.v1.ProximityService"
COUNT = "rpc_server_call_duration_seconds_count"


def _points(rpc: RpcMetrics) -> list[HistogramDataPoint]:
    metric = rpc.duration_metric(0)
    if metric is None:
        return []
    assert isinstance(metric.data, Histogram)
    return list(metric.data.data_points)


def _calls(metrics: RuntimeMetrics) -> int:
    """RPCs recorded so far (the interceptor records just after the answer is sent)."""
    assert metrics.rpc is not None
    return sum(p.count for p in _points(metrics.rpc))


async def _call_probe(address: str, ok: int, invalid: int, missing: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = proximity_pb2_grpc.ProximityServiceStub(channel)
        for _ in range(ok):
            await stub.SearchNearbyBusinesses(search_request(500), timeout=5)
        for _ in range(invalid):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.SearchNearbyBusinesses(search_request(7), timeout=5)
        for _ in range(missing):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.GetBusiness(proximity_pb2.GetBusinessRequest(id="missing"),
                                       timeout=5)


async def test_every_rpc_is_counted_by_method_and_status_code_as_telemetry_stores_it(
        make_metered_server: MakeMeteredServer, metrics: RuntimeMetrics,
        keeping: KeepingExporter) -> None:
    server = await make_metered_server([probe_spec(ProbeProximityServicer())], metrics)

    await _call_probe(server.address, ok=2, invalid=1, missing=1)
    await eventually(lambda: _calls(metrics) == 4, 10, what="4 RPCs recorded")
    assert metrics.force_flush()
    samples = keeping.last_samples()

    search = dict(rpc_method="SearchNearbyBusinesses", rpc_service=SERVICE, rpc_system="grpc",
                  job="test", instance="probe-host:4242")
    assert value_of(samples, COUNT, **search, rpc_grpc_status_code="0") == 2
    assert value_of(samples, COUNT, **search, rpc_grpc_status_code="3") == 1  # INVALID_ARGUMENT
    assert value_of(samples, COUNT, rpc_method="GetBusiness", rpc_grpc_status_code="5") == 1
    buckets = series(samples, "rpc_server_call_duration_seconds_bucket", **search,
                     rpc_grpc_status_code="0")
    assert len(buckets) == len(DURATION_BUCKETS) + 1
    assert value_of(buckets, "rpc_server_call_duration_seconds_bucket", le="+Inf") == 2
    total = value_of(samples, "rpc_server_call_duration_seconds_sum", **search,
                     rpc_grpc_status_code="0")
    assert total is not None and 0 < total < 10
    assert (value_of(samples, "process_uptime_seconds", job="test") or -1) >= 0


async def test_totals_carry_on_from_one_export_to_the_next(
        make_metered_server: MakeMeteredServer, metrics: RuntimeMetrics,
        keeping: KeepingExporter) -> None:
    server = await make_metered_server([probe_spec(ProbeProximityServicer())], metrics)
    ok = dict(rpc_method="SearchNearbyBusinesses", rpc_grpc_status_code="0")

    await _call_probe(server.address, ok=2, invalid=0, missing=0)
    await eventually(lambda: _calls(metrics) == 2, 10, what="2 RPCs recorded")
    metrics.force_flush()
    first = value_of(keeping.last_samples(), COUNT, **ok)
    await _call_probe(server.address, ok=1, invalid=0, missing=0)
    await eventually(lambda: _calls(metrics) == 3, 10, what="3 RPCs recorded")
    metrics.force_flush()

    assert (first, value_of(keeping.last_samples(), COUNT, **ok)) == (2, 3)


async def test_open_streams_are_counted_by_method_and_a_cancelled_one_by_its_code(
        make_metered_server: MakeMeteredServer, metrics: RuntimeMetrics,
        keeping: KeepingExporter) -> None:
    streams = ProbeStreams()
    server = await make_metered_server([streams.spec()], metrics)
    ticks = dict(rpc_method="Ticks", rpc_service="geoplex.probe.v1.ProbeStreamService")

    async with grpc.aio.insecure_channel(server.address) as channel:
        call = ticks_method(channel)(b"", timeout=10)
        assert await call.read() is not grpc.aio.EOF
        metrics.force_flush()
        open_now = value_of(keeping.last_samples(), "rpc_server_active_streams", **ticks)
        call.cancel()
    await eventually(lambda: streams.closed == 1 and _calls(metrics) == 1, 10,
                     what="the cancelled stream recorded")
    metrics.force_flush()
    samples = keeping.last_samples()

    assert open_now == 1
    assert value_of(samples, "rpc_server_active_streams", **ticks) == 0
    # CANCELLED, and marked as a wait by design: a stream's duration is how long it was open
    assert value_of(samples, COUNT, **ticks, rpc_grpc_status_code="1",
                    geoplex_rpc_waits="stream") == 1


async def test_a_declared_long_poll_is_marked_as_a_wait_and_other_calls_are_not(
        make_metered_server: MakeMeteredServer, metrics: RuntimeMetrics,
        keeping: KeepingExporter) -> None:
    servicer = ProbeProximityServicer()
    spec = dataclasses.replace(probe_spec(servicer),
                               long_polls=frozenset({f"/{SERVICE}/GetBusiness"}))
    server = await make_metered_server([spec], metrics)

    await _call_probe(server.address, ok=1, invalid=0, missing=1)
    await eventually(lambda: _calls(metrics) == 2, 10, what="2 RPCs recorded")
    metrics.force_flush()
    samples = keeping.last_samples()

    (polled,) = series(samples, COUNT, rpc_method="GetBusiness")
    assert polled[0].get("geoplex_rpc_waits") == "poll" and polled[1] == 1
    (searched,) = series(samples, COUNT, rpc_method="SearchNearbyBusinesses")
    assert "geoplex_rpc_waits" not in searched[0] and searched[1] == 1


async def test_a_services_hook_gets_a_live_meter_and_its_names_follow_prometheus(
        make_metered_server: MakeMeteredServer, metrics: RuntimeMetrics,
        keeping: KeepingExporter) -> None:
    seen: list[ServiceMetrics] = []
    fanned = [41]
    lag: list[tuple[float, dict[str, str | int]]] = [
        (7.0, {"topic": "orders", "partition": 0, "group": "billing"})]

    def instruments(service: ServiceMetrics) -> None:
        seen.append(service)
        service.counter("geoplex.test.fanout.messages", lambda: fanned[0], unit="{message}",
                        description="messages")
        service.gauge("geoplex.broker.consumer.lag", lambda: lag, unit="{message}",
                      description="lag")
        service.up_down_counter("geoplex.test.streams", lambda: 3, unit="{stream}",
                                description="streams")
        service.gauge("geoplex.test.heap", lambda: 1024, unit="By", description="bytes")

    spec = ServiceSpec("geoplex.test.v1.NothingService", lambda _server: None,
                       instruments=instruments)
    await make_metered_server([spec], metrics)
    metrics.force_flush()
    fanned[0] = 42
    metrics.force_flush()
    samples = keeping.last_samples()

    assert [(s.enabled, s.interval_s) for s in seen] == [(True, 3600)]
    assert value_of(samples, "geoplex_test_fanout_messages_total", job="test") == 42
    assert value_of(samples, "geoplex_broker_consumer_lag", topic="orders", partition="0",
                    group="billing", job="test", instance="probe-host:4242") == 7
    assert value_of(samples, "geoplex_test_streams") == 3
    assert value_of(samples, "geoplex_test_heap_bytes") == 1024


async def test_a_read_racing_a_resize_is_read_again_and_a_failing_one_is_left_out(
        make_metered_server: MakeMeteredServer, metrics: RuntimeMetrics,
        keeping: KeepingExporter) -> None:
    tries = []

    def racing() -> float:
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return 5

    def broken() -> float:
        raise ValueError("a bug in a read")

    def instruments(service: ServiceMetrics) -> None:
        service.gauge("geoplex.test.racing", racing, unit="1", description="x")
        service.gauge("geoplex.test.broken", broken, unit="1", description="x")

    await make_metered_server([ServiceSpec("geoplex.test.v1.NothingService",
                                           lambda _server: None, instruments=instruments)],
                              metrics)
    metrics.force_flush()
    samples = keeping.last_samples()

    assert value_of(samples, "geoplex_test_racing_ratio") == 5 and len(tries) == 2
    assert series(samples, "geoplex_test_broken_ratio") == []


async def test_stopping_the_server_exports_once_more_and_closes_the_exporter(
        make_metered_server: MakeMeteredServer, metrics: RuntimeMetrics,
        keeping: KeepingExporter) -> None:
    server = await make_metered_server([probe_spec(ProbeProximityServicer())], metrics)
    await _call_probe(server.address, ok=1, invalid=0, missing=0)
    await eventually(lambda: _calls(metrics) == 1, 10, what="the RPC recorded")

    await server.stop(grace=0)

    assert keeping.shut_down
    assert value_of(keeping.last_samples(), COUNT, rpc_method="SearchNearbyBusinesses") == 1


def test_a_duration_on_a_bound_counts_in_that_bounds_bucket() -> None:
    """Prometheus's ``le``: a bucket counts the values less than or equal to its bound."""
    rpc = RpcMetrics(bounds=(0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.005, 0.01, 3.0):
        rpc.record("/a.B/C", grpc.StatusCode.OK, seconds)

    (point,) = _points(rpc)
    assert (list(point.bucket_counts), point.count, point.min, point.max) == (
        [2, 2, 1], 5, 0.0005, 3.0)
    assert point.attributes == {"rpc.system": "grpc", "rpc.service": "a.B",
                                "rpc.method": "C", "rpc.grpc.status_code": 0}


def test_streams_opened_and_closed_are_counted_per_method() -> None:
    rpc = RpcMetrics()
    rpc.stream_opened("/a.B/Watch")
    rpc.stream_opened("/a.B/Watch")
    rpc.stream_closed("/a.B/Watch")

    assert rpc.open_streams() == [(1.0, {"rpc.system": "grpc", "rpc.service": "a.B",
                                         "rpc.method": "Watch"})]
