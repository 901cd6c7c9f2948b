"""The VictoriaMetrics storage adapter against a real VictoriaMetrics single-node server
(Debian's ``victoria-metrics``, 1.79.5) on a free port: what it stores reads back, and
our PromQL engine answers on it exactly as on the local store loaded with the same
samples.

One server for the module; each test writes its own metric names. Samples sit at
``:04, :19, :34, :49`` and query times 7.3 s past a sample, so no sample is on a
window's edge; values are integers or quarters (VictoriaMetrics keeps about 12
significant digits, see the adapter's docstring), compared within a relative 1e-9.
"""

from __future__ import annotations

import json
import math
import random
import re
import secrets
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import InvalidArgumentError
from geoplex.clients.telemetry import TelemetryClient, label_dict, series
from geoplex.infra.local import free_port
from geoplex.infra.process import Process
from geoplex.servers._runtime.errors import InvalidArgument, Unavailable
from geoplex.servers.telemetry.adapters.victoria import (VictoriaMetricsStorage,
                                                         open_victoria)
from geoplex.servers.telemetry.promql.engine import Engine
from geoplex.servers.telemetry.promql.values import Matrix, Result, Vector
from geoplex.servers.telemetry.tsdb import (STALE_NAN_BITS, TSDB, Labels, RejectReason,
                                            SampleRejected, Series)
from geoplex.servers.telemetry.tsdb.head import SampleInput
from geoplex.servers.telemetry.tsdb.labels import Matcher, eq, ne, nre, re_

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

SEED = 20261203
STEP_MS = 15_000
SPAN_MS = 3600_000
OFFSET_MS = 4_000
OFF_GRID_MS = 7_300
SLICE_MS = 5 * 60_000       # one append per five minutes of samples (the OOO window: 10)
REL_TOL, ABS_TOL = 1e-9, 1e-12
ODD_PATH = '/a"b\\c\n✓ 😀 }{,='  # quotes, backslashes, a newline, non-BMP, selector syntax
BUCKETS = ("0.05", "0.1", "0.25", "0.5", "1", "+Inf")


# ---- the server ---------------------------------------------------------------------


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.read().strip() == b"OK")
    except OSError:
        return False


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our own VictoriaMetrics (not the package's service) on a free port; its URL.
    ``-search.latencyOffset=0s`` for VictoriaMetrics' own queries (export, which the
    adapter reads, is not delayed); a small ``-maxInsertRequestSize`` to see a 400."""
    binary = shutil.which("victoria-metrics")
    if binary is None:
        pytest.fail("victoria-metrics is missing: `make system-deps` installs Debian's "
                    "victoria-metrics package")
    work = tmp_path_factory.mktemp("victoria")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Process("victoria-metrics", [
        binary, f"-storageDataPath={work / 'data'}", f"-httpListenAddr=127.0.0.1:{port}",
        "-search.latencyOffset=0s", "-retentionPeriod=100y",
        f"-maxInsertRequestSize={1 << 20}"], work / "victoria-metrics.log",
        probe=lambda: _healthy(url), stop_grace=10.0)
    try:
        server.start().wait_ready(60)
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def store(victoria: str) -> VictoriaMetricsStorage:
    return open_victoria(victoria, timeout_s=10.0)


def _metric(url: str, name: str, **labels: str) -> float:
    """One sample of the server's own ``/metrics``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.split("{", 1)[0] == name and all(f'{k}="{v}"' in head
                                                 for k, v in labels.items()):
            return float(value)
    raise AssertionError(f"{name}{labels} is not in {url}/metrics")


# ---- the data -----------------------------------------------------------------------


def dataset(start_ms: int) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    """Counters (integer, one with a reset), gauges (quarters), a classic histogram; a
    series whose label value needs escaping; samples every 15 s for an hour."""
    rng = random.Random(SEED)
    times = [start_ms + k * STEP_MS for k in range(SPAN_MS // STEP_MS)]
    out: list[tuple[dict[str, str], list[tuple[int, float]]]] = []
    for instance in ("a", "b", "c"):
        for code in ("200", "500"):
            value, points = float(rng.randrange(1000)), []
            reset = rng.randrange(len(times)) if instance == "b" and code == "200" else -1
            for k, t in enumerate(times):
                value = 0.0 if k == reset else value + rng.randrange(1, 200)
                points.append((t, value))
            out.append(({"__name__": "vmt_requests_total", "job": "api",
                         "instance": instance, "code": code}, points))
        out.append(({"__name__": "vmt_load", "job": "node", "instance": instance},
                    [(t, rng.randrange(0, 400) / 4) for t in times]))
    out.append(({"__name__": "vmt_load", "job": "node", "instance": "d", "path": ODD_PATH},
                [(t, rng.randrange(0, 400) / 4) for t in times]))
    for instance in ("a", "b"):
        counts = [0.0] * len(BUCKETS)
        series: list[list[tuple[int, float]]] = [[] for _ in BUCKETS]
        for t in times:
            for _ in range(rng.randrange(5, 50)):
                seconds = rng.expovariate(4.0)
                for i, le in enumerate(BUCKETS):
                    if seconds <= float(le):
                        counts[i] += 1
            for i, points in enumerate(series):
                points.append((t, counts[i]))
        for le, points in zip(BUCKETS, series):
            out.append(({"__name__": "vmt_duration_seconds_bucket", "job": "api",
                         "instance": instance, "le": le}, points))
    return out


@pytest.fixture(scope="module")
def start_ms() -> int:
    # an hour, ending an hour or more ago, at the second OFFSET_MS past a 15 s mark
    end = int(time.time() * 1000 - 3600_000) // SPAN_MS * SPAN_MS
    return end - SPAN_MS + OFFSET_MS


def slices(data: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> Iterator[list[SampleInput]]:
    """The samples, five minutes of all series per batch, in time order."""
    first = min(t for _labels, points in data for t, _v in points)
    last = max(t for _labels, points in data for t, _v in points)
    for lo in range(first, last + 1, SLICE_MS):
        yield [(labels, t, v) for labels, points in data for t, v in points
               if lo <= t < lo + SLICE_MS]


@pytest.fixture(scope="module")
def stores(store: VictoriaMetricsStorage, start_ms: int,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VictoriaMetricsStorage,
                                                                        TSDB]]:
    """The adapter and a local store, each holding the dataset."""
    data = dataset(start_ms)
    local = TSDB.open(tmp_path_factory.mktemp("local-store"))
    try:
        for batch in slices(data):
            assert store.append(batch).appended == len(batch)
            assert local.append(batch).appended == len(batch)
        yield store, local
    finally:
        local.close()


# ---- comparing ----------------------------------------------------------------------


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=REL_TOL,
                                                            abs_tol=ABS_TOL)


def assert_same_series(got: Sequence[Series], want: Sequence[Series]) -> None:
    assert [s.labels for s in got] == [s.labels for s in want]
    for g, w in zip(got, want):
        assert g.timestamps.dtype == np.int64 and g.values.dtype == np.float64
        assert g.timestamps.tolist() == w.timestamps.tolist(), g.labels
        assert bool(np.all(np.diff(g.timestamps) > 0)), g.labels
        assert all(close(a, b) for a, b in zip(g.values.tolist(), w.values.tolist())), g.labels


def points(result: Result) -> dict[Labels, list[tuple[int, float]]]:
    value = result.value
    if isinstance(value, Vector):
        return {s.labels: [(s.t, s.v)] for s in value.samples}
    assert isinstance(value, Matrix), value
    return {s.labels: list(zip(s.timestamps.tolist(), s.values.tolist()))
            for s in value.series}


def assert_same_answer(got: Result, want: Result, query: str) -> None:
    assert got.type == want.type, query
    g, w = points(got), points(want)
    assert sorted(g) == sorted(w), query
    assert w, f"{query}: the local store's answer is empty, a test that proves nothing"
    for labels, expected in w.items():
        actual = g[labels]
        assert [t for t, _ in actual] == [t for t, _ in expected], (query, labels)
        assert all(close(a, b) for (_, a), (_, b) in zip(actual, expected)), (
            query, labels, actual, expected)


# ---- the tests ----------------------------------------------------------------------

SELECTIONS: list[list[Matcher]] = [
    [eq("__name__", "vmt_requests_total")],
    [eq("__name__", "vmt_requests_total"), ne("code", "200")],
    [re_("__name__", "vmt_(load|requests_total)"), re_("instance", "a|c")],
    [eq("__name__", "vmt_load"), nre("instance", "a|b")],
    [eq("path", ODD_PATH)],
    [eq("__name__", "vmt_load"), eq("path", "")],        # the series without the label
    [re_("__name__", "vmt_.*"), eq("job", "nothing")],
]


@pytest.mark.parametrize("matchers", SELECTIONS, ids=lambda ms: ",".join(map(str, ms)))
def test_select_reads_back_what_the_local_store_holds_for_each_matcher_type(
        stores: tuple[VictoriaMetricsStorage, TSDB], start_ms: int,
        matchers: list[Matcher]) -> None:
    vm, local = stores
    for mint, maxt in ((start_ms, start_ms + SPAN_MS),
                       (start_ms + 600_000, start_ms + 600_000 + 4 * STEP_MS)):  # inclusive
        got, want = list(vm.select(matchers, mint, maxt)), list(local.select(matchers, mint,
                                                                             maxt))
        assert_same_series(got, want)
        assert bool(want) == (matchers is not SELECTIONS[-1])  # the last selects nothing
    narrow = list(vm.select(SELECTIONS[0], start_ms + 600_000, start_ms + 600_000 + 4 * STEP_MS))
    assert all(len(s.timestamps) == 5 for s in narrow)  # both ends inclusive


def test_series_labels_and_label_values_answer_as_the_local_store(
        stores: tuple[VictoriaMetricsStorage, TSDB], start_ms: int) -> None:
    vm, local = stores
    mint, maxt = start_ms, start_ms + SPAN_MS
    for matchers in SELECTIONS:
        assert vm.series(matchers, mint, maxt) == local.series(matchers, mint, maxt)
        assert vm.label_names(matchers, mint, maxt) == local.label_names(matchers, mint, maxt)
        assert (vm.label_values("instance", matchers, mint, maxt)
                == local.label_values("instance", matchers, mint, maxt))
    assert set(local.label_names()) <= set(vm.label_names())  # other tests add more
    assert set(local.label_values("__name__")) <= set(vm.label_values("__name__"))
    assert vm.label_values("path", [re_("__name__", "vmt_.*")]) == [ODD_PATH]


QUERIES = [
    "vmt_load",
    'vmt_load{path=""}',
    "rate(vmt_requests_total[5m])",
    'increase(vmt_requests_total{code="200"}[10m])',
    "sum by (code) (rate(vmt_requests_total[5m]))",
    "sum by (instance) (vmt_load)",
    "avg_over_time(vmt_load[5m])",
    "histogram_quantile(0.9, sum by (le) (rate(vmt_duration_seconds_bucket[5m])))",
    "histogram_quantile(0.5, rate(vmt_duration_seconds_bucket[5m]))",
]


@pytest.mark.parametrize("query", QUERIES)
def test_promql_on_victoria_metrics_answers_as_on_the_local_store(
        stores: tuple[VictoriaMetricsStorage, TSDB], start_ms: int, query: str) -> None:
    vm, local = stores
    on_vm, on_local = Engine(vm), Engine(local)
    for minutes in (11, 23, 37, 59):
        at = start_ms + minutes * 60_000 + OFF_GRID_MS
        assert_same_answer(on_vm.instant(query, at), on_local.instant(query, at), query)
    first, last = start_ms + 10 * 60_000 + OFF_GRID_MS, start_ms + SPAN_MS - STEP_MS
    assert_same_answer(on_vm.range(query, first, last, 60_000),
                       on_local.range(query, first, last, 60_000), query)


def test_a_stale_marker_passes_through_and_ends_the_series(
        store: VictoriaMetricsStorage, start_ms: int, tmp_path: Path) -> None:
    labels = {"__name__": "vmt_stale_probe", "job": "gone"}
    t0 = start_ms + 20 * 60_000
    stale = float(np.array([STALE_NAN_BITS], np.uint64).view(np.float64)[0])
    batch: list[SampleInput] = [(labels, t0, 1.0), (labels, t0 + STEP_MS, 2.0),
                                (labels, t0 + 2 * STEP_MS, stale)]
    store.append(batch)
    with TSDB.open(tmp_path) as local:
        local.append(batch)
        [series] = store.select([eq("__name__", "vmt_stale_probe")], t0, t0 + SPAN_MS)
        assert series.timestamps.tolist() == [t0, t0 + STEP_MS, t0 + 2 * STEP_MS]
        assert series.values.view(np.uint64).tolist()[-1] == STALE_NAN_BITS
        on_vm, on_local = Engine(store), Engine(local)
        for at in (t0 + 2 * STEP_MS - 1, t0 + 2 * STEP_MS, t0 + 2 * STEP_MS + 1, t0 + 60_000):
            got = on_vm.instant("vmt_stale_probe", at)
            assert points(got) == points(on_local.instant("vmt_stale_probe", at))
            assert bool(points(got)) == (at < t0 + 2 * STEP_MS), at  # gone at the marker


def test_a_resent_batch_reads_back_once(store: VictoriaMetricsStorage, start_ms: int) -> None:
    labels = {"__name__": "vmt_resent", "job": "retry"}
    batch: list[SampleInput] = [(labels, start_ms + k * STEP_MS, float(k)) for k in range(8)]
    batch.append((labels, start_ms, 0.0))  # an exact duplicate inside the batch
    first, again = store.append(batch), store.append(batch)
    assert first.appended == again.appended == 8 and first.duplicates == (8,)
    [series] = store.select([eq("__name__", "vmt_resent")], start_ms, start_ms + SPAN_MS)
    assert series.timestamps.tolist() == [start_ms + k * STEP_MS for k in range(8)]
    assert series.values.tolist() == [float(k) for k in range(8)]


def test_a_bad_label_name_is_invalid_argument_and_nothing_is_sent(
        store: VictoriaMetricsStorage, victoria: str, start_ms: int) -> None:
    writes = _metric(victoria, "vm_http_requests_total", path="/api/v1/write")
    good = {"__name__": "vmt_never_sent", "job": "x"}
    with pytest.raises(SampleRejected) as caught:
        store.append([(good, start_ms, 1.0), ({"__name__": "vmt_never_sent", "bad-name": "x"},
                                              start_ms, 1.0)])
    assert caught.value.code == "INVALID_ARGUMENT"
    assert caught.value.reject_reason is RejectReason.INVALID_LABELS and caught.value.index == 1
    assert _metric(victoria, "vm_http_requests_total", path="/api/v1/write") == writes
    store.flush()
    assert list(store.select([eq("__name__", "vmt_never_sent")], 0, start_ms + SPAN_MS)) == []


def test_samples_victoria_metrics_would_drop_silently_are_rejected_before_sending(
        store: VictoriaMetricsStorage, victoria: str) -> None:
    writes = _metric(victoria, "vm_http_requests_total", path="/api/v1/write")
    now = int(time.time() * 1000)
    labels = {"__name__": "vmt_out_of_bounds"}
    many = {"__name__": "vmt_out_of_bounds", **{f"l{i}": "v" for i in range(40)}}
    for batch, index in (([(labels, now, 1.0), (labels, -1, 1.0)], 1),          # before 1970
                         ([(labels, now + 3 * 86_400_000, 1.0)], 0),           # 3 days ahead
                         ([(labels, now, 1.0), (many, now, 1.0)], 1)):         # > 30 labels
        with pytest.raises(SampleRejected) as caught:
            store.append(batch)
        assert caught.value.index == index
    assert _metric(victoria, "vm_http_requests_total", path="/api/v1/write") == writes


def test_victoria_metrics_refusing_a_batch_is_invalid_argument_with_its_message(
        store: VictoriaMetricsStorage, start_ms: int) -> None:
    # random 8 kB label values do not compress: 200 series are past -maxInsertRequestSize
    batch: list[SampleInput] = [({"__name__": "vmt_too_big", "blob": secrets.token_hex(4096),
                                  "n": str(n)}, start_ms, 1.0) for n in range(200)]
    with pytest.raises(InvalidArgument) as caught:
        store.append(batch)
    assert caught.value.field == "samples"
    assert re.search(r"VictoriaMetrics refused it: .*1048576", caught.value.message)
    store.flush()
    assert list(store.select([eq("__name__", "vmt_too_big")], 0, start_ms + SPAN_MS)) == []


def test_an_unreachable_server_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(Unavailable, match="unreachable"):
        open_victoria(url, timeout_s=2.0)
    storage = VictoriaMetricsStorage(url, timeout_s=2.0)
    with pytest.raises(Unavailable):
        storage.append([({"__name__": "vmt_nowhere"}, int(time.time() * 1000), 1.0)])
    with pytest.raises(Unavailable):
        list(storage.select([eq("__name__", "vmt_nowhere")], 0, 1))
    with pytest.raises(Unavailable):
        storage.label_names()


def test_stats_count_the_series_and_samples_stored(
        stores: tuple[VictoriaMetricsStorage, TSDB]) -> None:
    vm, local = stores
    vm.append([({"__name__": "vmt_today"}, int(time.time() * 1000), 1.0)])  # a series today
    stats = vm.stats()
    [whole] = stats.blocks
    held = local.stats()
    assert whole.series >= len(local.series([re_("__name__", ".+")], 0, 1 << 62)) + 1
    assert whole.samples >= held.head_samples + held.block_samples + 1
    assert whole.bytes > 0
    assert 1 <= stats.head_series <= whole.series
    assert stats.head_samples == 0 and stats.wal_bytes == 0  # flushed after each append


# ---- the service on it ----------------------------------------------------------------


async def test_the_telemetry_service_serves_its_api_on_victoria_metrics(
        victoria: str, server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """GEOPLEX_TELEMETRY_BACKEND=victoriametrics: the same gRPC and Prometheus HTTP API,
    the samples kept by VictoriaMetrics, our PromQL engine on top."""
    http_port = free_port()
    rules = tmp_path / "no-rules.yml"   # no rules writing into the module's VictoriaMetrics
    rules.write_text("groups: []\n")
    server = server_factory("telemetry", {
        "GEOPLEX_TELEMETRY_RULE_FILES": str(rules),
        "GEOPLEX_TELEMETRY_BACKEND": "victoriametrics",
        "GEOPLEX_TELEMETRY_VICTORIAMETRICS_URL": victoria,
        "GEOPLEX_TELEMETRY_HTTP_PORT": str(http_port)}, "telemetry-on-victoria")
    end = (int(time.time() * 1000) // STEP_MS) * STEP_MS - STEP_MS
    points = [(t, float(k * 30)) for k, t in enumerate(range(end - 300_000, end + 1, STEP_MS))]
    async with TelemetryClient(server.address, ChannelOptions(retry=False)) as tm:
        written = await tm.write([series({"__name__": "svc_requests_total", "job": "api"},
                                         points)])
        assert written.samples_written == len(points)
        answer = await tm.query("rate(svc_requests_total[2m])", at_s=end / 1000)
        assert [s.sample.value for s in answer.vector] == [pytest.approx(2.0)]
        assert answer.resolution == "raw"
        found = await tm.list_series(["svc_requests_total"])
        assert [label_dict(s) for s in found.series] == [
            {"__name__": "svc_requests_total", "job": "api"}]
        with pytest.raises(InvalidArgumentError, match="resolution '1m'"):
            await tm.query("svc_requests_total", resolution="1m")
    query = urllib.parse.urlencode({"query": "svc_requests_total", "time": str(end / 1000)})
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/v1/query?{query}",
                                timeout=30) as response:
        body = json.loads(response.read())
    assert [float(r["value"][1]) for r in body["data"]["result"]] == [points[-1][1]]
    assert body["resolution"] == "raw"
    server.stop()
