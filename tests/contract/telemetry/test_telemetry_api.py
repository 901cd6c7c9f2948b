"""TelemetryService on a real server process: writes stored once and durable across a
kill -9, series and labels by PromQL selectors, bad input refused with nothing stored."""

from __future__ import annotations

import json
import math
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import InvalidArgumentError, ResourceExhaustedError
from geoplex.clients.telemetry import TelemetryClient, label_dict, series
from geoplex.infra.local import free_port
from geoplex.telemetry.v1 import telemetry_pb2 as pb

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("telemetry-store")


@pytest.fixture(scope="module")
def http_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess], store_dir: Path,
           http_port: int) -> ServerProcess:
    return server_factory("telemetry", {"GEOPLEX_TELEMETRY_DATA_DIR": str(store_dir),
                                        "GEOPLEX_TELEMETRY_HTTP_PORT": str(http_port)},
                          "telemetry")


def _get(port: int, path: str, **params: str | list[str]) -> tuple[int, dict[str, Any]]:
    query = urllib.parse.urlencode(params, doseq=True)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}?{query}",
                                    timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
async def tm(server: ServerProcess) -> AsyncIterator[TelemetryClient]:
    async with TelemetryClient(server.address, ChannelOptions(retry=False)) as client:
        yield client


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_written_series_are_listed_by_selector_and_a_repeat_is_dropped(
        tm: TelemetryClient) -> None:
    t = _now_ms() - 60_000
    batch = [series({"__name__": "http_requests_total", "job": "api", "code": "200"},
                    [(t, 10.0), (t + 15_000, 12.0)]),
             series({"__name__": "http_requests_total", "job": "api", "code": "500"},
                    [(t, 1.0)]),
             series({"__name__": "up", "job": "db"}, [(t, 1.0)])]
    first = await tm.write(batch)
    assert (first.samples_written, first.duplicates_dropped) == (4, 0)
    again = await tm.write(batch)                     # a retried batch
    assert (again.samples_written, again.duplicates_dropped) == (0, 4)

    found = await tm.list_series(['http_requests_total{code=~"5.."}', 'up'])
    assert sorted(label_dict(s)["__name__"] + ":" + label_dict(s)["job"]
                  for s in found.series) == ["http_requests_total:api", "up:db"]
    assert await tm.list_labels("code", match=["http_requests_total"]) == ["200", "500"]
    assert {"__name__", "code", "job"} <= set(await tm.list_labels())


async def test_nan_and_infinities_are_samples(tm: TelemetryClient) -> None:
    t = _now_ms() - 30_000
    answer = await tm.write([series({"__name__": "odd_values"},
                                    [(t, math.nan), (t + 1, math.inf), (t + 2, -math.inf)])])
    assert answer.samples_written == 3


@pytest.mark.parametrize(("labels", "field"), [
    ({"__name__": "ok", "bad-name": "x"}, "labels"),
    ({"job": "no_name"}, "labels"),
])
async def test_a_bad_series_is_refused_and_nothing_of_the_batch_stored(
        tm: TelemetryClient, labels: dict[str, str], field: str) -> None:
    t = _now_ms()
    good = series({"__name__": "refused_batch_marker"}, [(t, 1.0)])
    with pytest.raises(InvalidArgumentError) as caught:
        await tm.write([good, series(labels, [(t, 1.0)])])
    assert "sample 1" in caught.value.message or field in caught.value.message
    assert (await tm.list_series(["refused_batch_marker"])).series == []


async def test_future_samples_and_empty_requests_name_their_field(tm: TelemetryClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await tm.write([series({"__name__": "x"}, [(_now_ms() + 3_600_000, 1.0)])])
    assert caught.value.field == "series[0].samples[0].timestamp_ms"
    with pytest.raises(InvalidArgumentError) as caught:
        await tm.write([])
    assert caught.value.field == "series"
    with pytest.raises(InvalidArgumentError) as caught:
        await tm.list_series([])
    assert caught.value.field == "match"
    with pytest.raises(InvalidArgumentError) as caught:
        await tm.list_series(["up{job=~\"(\"}"])
    assert caught.value.field == "match[0]"


async def test_acknowledged_samples_survive_a_kill_9(server: ServerProcess) -> None:
    t = _now_ms() - 10_000
    async with TelemetryClient(server.address, ChannelOptions(retry=False)) as tm:
        written = await tm.write([series({"__name__": "durable_total", "n": str(i)},
                                         [(t, float(i))]) for i in range(50)])
        assert written.samples_written == 50
    server.stop(signal.SIGKILL)
    server.start()
    async with TelemetryClient(server.address, ChannelOptions(retry=False)) as tm:
        found = await tm.list_series(["durable_total"])
        assert len(found.series) == 50
        info = await tm.storage_info()
        assert info.head_samples >= 50


async def _counter(tm: TelemetryClient, name: str, end_ms: int) -> None:
    """Two counters of ``name`` over 8 minutes of 15 s scrapes (inside the store's 10-minute
    out-of-order window): +30 and +60 per scrape."""
    points = range(end_ms - 480_000, end_ms + 1, 15_000)
    await tm.write([series({"__name__": name, "job": "api", "instance": str(i)},
                           [(t, float(k * 30 * i)) for k, t in enumerate(points)])
                    for i in (1, 2)])


async def test_promql_over_grpc_and_the_prometheus_http_api_agree(
        tm: TelemetryClient, http_port: int) -> None:
    end = (_now_ms() // 15_000) * 15_000 - 15_000
    await _counter(tm, "api_requests_total", end)
    query = "sum by (job) (rate(api_requests_total[5m]))"
    answer = await tm.call(tm.stub.Query, pb.QueryRequest(
        query=query, time=_ts(end)))
    assert answer.result_type == pb.VALUE_TYPE_VECTOR
    [sample] = answer.vector
    assert {label.name: label.value for label in sample.labels} == {"job": "api"}
    assert sample.sample.value == pytest.approx(2.0 + 4.0)      # 30/15 + 60/15 per second

    status, body = _get(http_port, "/api/v1/query", query=query, time=str(end / 1000))
    assert status == 200 and body["status"] == "success"
    assert body["data"]["resultType"] == "vector"
    [item] = body["data"]["result"]
    assert item["metric"] == {"job": "api"} and float(item["value"][1]) == pytest.approx(6.0)
    assert item["value"][0] == end / 1000

    status, body = _get(http_port, "/api/v1/query_range", query="api_requests_total",
                        start=str((end - 60_000) / 1000), end=str(end / 1000), step="30s")
    assert status == 200 and body["data"]["resultType"] == "matrix"
    assert [len(s["values"]) for s in body["data"]["result"]] == [3, 3]
    ranged = await tm.call(tm.stub.QueryRange, pb.QueryRangeRequest(
        query="api_requests_total", start=_ts(end - 60_000), end=_ts(end),
        step=_duration(30)))
    assert [len(s.samples) for s in ranged.series] == [3, 3]


async def test_the_http_api_lists_series_and_labels_as_prometheus_does(
        tm: TelemetryClient, http_port: int) -> None:
    end = _now_ms() - 5_000
    await _counter(tm, "listed_total", end)
    status, body = _get(http_port, "/api/v1/series", **{"match[]": ["listed_total"]})
    assert status == 200
    assert sorted(s["instance"] for s in body["data"]) == ["1", "2"]
    status, body = _get(http_port, "/api/v1/labels")
    assert status == 200 and {"__name__", "instance", "job"} <= set(body["data"])
    status, body = _get(http_port, "/api/v1/label/instance/values",
                        **{"match[]": ["listed_total"]})
    assert body["data"] == ["1", "2"]
    status, body = _get(http_port, "/api/v1/status/buildinfo")
    assert status == 200 and body["data"]["version"].startswith("3.")


async def test_a_query_that_does_not_parse_names_its_position(
        tm: TelemetryClient, http_port: int) -> None:
    status, body = _get(http_port, "/api/v1/query", query="sum(rate(x[5m])")
    assert status == 400 and body["status"] == "error" and body["errorType"] == "bad_data"
    assert "parse error" in body["error"]
    status, body = _get(http_port, "/api/v1/query_range", query="up", start="1", end="2")
    assert status == 400 and "step" in body["error"]
    with pytest.raises(InvalidArgumentError) as caught:
        await tm.call(tm.stub.Query, pb.QueryRequest(query="sum(rate(x[5m])"))
    assert caught.value.field == "query"
    assert caught.value.metadata["position"].isdigit()


def _ts(ms: int) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp
    out = Timestamp()
    out.FromMilliseconds(ms)
    return out


def _duration(seconds: int) -> Any:
    from google.protobuf.duration_pb2 import Duration
    out = Duration()
    out.FromSeconds(seconds)
    return out


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


REMOTE_WRITE_HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                        "X-Prometheus-Remote-Write-Version": "0.1.0"}


def _remote_write_body(name: str, t_ms: int, value: float, *, bad_label: bool = False) -> bytes:
    import pysnappy

    from geoplex.telemetry.v1.remote_write_pb2 import RemoteWriteRequest
    request = RemoteWriteRequest()
    series = request.timeseries.add()
    series.labels.add(name="__name__", value=name)
    series.labels.add(name="bad-label" if bad_label else "job", value="pushed")
    series.samples.add(value=value, timestamp=t_ms)
    body: bytes = pysnappy.compress(request.SerializeToString())
    return body


def test_remote_write_stores_samples_a_query_then_reads(http_port: int) -> None:
    t = _now_ms() - 2_000
    status, _ = _post(http_port, "/api/v1/write",
                      _remote_write_body("pushed_gauge", t, 42.5), REMOTE_WRITE_HEADERS)
    assert status == 204
    status, body = _get(http_port, "/api/v1/query", query="pushed_gauge",
                        time=str(t / 1000))
    [item] = body["data"]["result"]
    assert item["metric"] == {"__name__": "pushed_gauge", "job": "pushed"}
    assert item["value"][1] == "42.5"


def test_remote_write_refuses_bad_bodies_and_stores_nothing(http_port: int) -> None:
    t = _now_ms() - 2_000
    for body, headers in ((b"not snappy at all", REMOTE_WRITE_HEADERS),
                          (_remote_write_body("refused_rw", t, 1.0),
                           {**REMOTE_WRITE_HEADERS, "Content-Encoding": "gzip"}),
                          (_remote_write_body("refused_rw", t, 1.0, bad_label=True),
                           REMOTE_WRITE_HEADERS)):
        status, answer = _post(http_port, "/api/v1/write", body, headers)
        assert status == 400, answer
        assert json.loads(answer)["errorType"] == "bad_data"
    status, listed = _get(http_port, "/api/v1/series", **{"match[]": ["refused_rw"]})
    assert listed["data"] == []


async def test_a_tenant_over_its_samples_per_second_limit_is_refused_whole(
        server_factory: Callable[..., ServerProcess],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    port = free_port()
    limited = server_factory("telemetry", {
        "GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path_factory.mktemp("telemetry-limited")),
        "GEOPLEX_TELEMETRY_HTTP_PORT": str(port),
        "GEOPLEX_TELEMETRY_MAX_SAMPLES_PER_SECOND": "5"}, "telemetry-limited")
    t = _now_ms() - 60_000
    too_many = [series({"__name__": "limited_total", "n": str(i)}, [(t, 1.0)])
                for i in range(11)]                     # the burst is two seconds: 10
    async with TelemetryClient(limited.address, ChannelOptions(retry=False)) as tm:
        with pytest.raises(ResourceExhaustedError) as caught:
            await tm.write(too_many)
        assert caught.value.metadata["limit"] == "GEOPLEX_TELEMETRY_MAX_SAMPLES_PER_SECOND"
        assert (await tm.list_series(["limited_total"])).series == []
        assert (await tm.write(too_many[:4])).samples_written == 4
        other = await tm.call(tm.stub.Write, pb.WriteRequest(series=too_many[4:10]),
                              metadata=(("x-scope-orgid", "team-b"),))
        assert other.samples_written == 6               # another tenant, its own bucket
    # remote write counts for the same tenants: one sample at a time, the default
    # tenant's bucket (refilling 5 a second) runs dry and the sender is told to back off
    one = _remote_write_body("limited_rw", t, 1.0)
    for _ in range(200):
        status, answer = _post(port, "/api/v1/write", one, REMOTE_WRITE_HEADERS)
        if status != 204:
            break
    assert status == 429 and json.loads(answer)["errorType"] == "too_many_requests"


def test_the_opentelemetry_sdk_exports_metrics_over_otlp(server: ServerProcess,
                                                         http_port: int) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    exporter = OTLPMetricExporter(endpoint=server.address, insecure=True, timeout=10)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create({"service.name": "checkout",
                                                       "service.instance.id": "pod-1"}),
                             metric_readers=[reader])
    try:
        meter = provider.get_meter("contract-test")
        requests = meter.create_counter("http.server.requests", unit="{request}")
        latency = meter.create_histogram("http.server.duration", unit="s")
        for code, n in (("200", 7), ("500", 2)):
            requests.add(n, {"http.status_code": code})
        for value in (0.004, 0.02, 0.3):
            latency.record(value, {"http.route": "/pay"})
        assert provider.force_flush(timeout_millis=10_000)
    finally:
        provider.shutdown()

    status, body = _get(http_port, "/api/v1/query",
                        query='sum by (http_status_code) (http_server_requests_total'
                              '{job="checkout", instance="pod-1"})')
    assert status == 200, body
    got = {r["metric"]["http_status_code"]: r["value"][1] for r in body["data"]["result"]}
    assert got == {"200": "7", "500": "2"}
    status, body = _get(http_port, "/api/v1/query",
                        query='http_server_duration_seconds_count{http_route="/pay"}')
    assert [r["value"][1] for r in body["data"]["result"]] == ["3"]
    status, body = _get(http_port, "/api/v1/series",
                        **{"match[]": ['http_server_duration_seconds_bucket{le="+Inf"}']})
    assert len(body["data"]) == 1
