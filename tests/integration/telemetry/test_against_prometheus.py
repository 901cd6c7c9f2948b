"""Geoplex's PromQL answers equal the real Prometheus's on the same samples.

Two hours of seeded node-exporter-like data (counters with resets, gauges, a series with
a gap, series that start and stop, a classic histogram) are written as OpenMetrics text,
turned into blocks by ``promtool tsdb create-blocks-from openmetrics`` and served by
Debian's ``prometheus`` (2.42) on a free port; the same samples go into a Geoplex
telemetry server through the SDK's ``Write``. Every query below is asked of both HTTP
APIs, instant at several times and as a range query, and the answers must be equal:
the same result type, the same label sets, values within a relative 1e-9 (absolute
1e-12 near zero, NaN equal to NaN), the same timestamps.

Geoplex follows Prometheus 3.x where 2.x differs: range windows and the lookback are
left-open, ``(t - range, t]``. On a sample grid the two disagree, so samples sit at
``:04, :19, :34, :49`` of each minute and every query time is 7.3 s past a sample (and off
the whole minute, where subquery steps fall): no sample is ever on a window's edge.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.telemetry import TelemetryClient, series
from geoplex.infra.local import free_port
from geoplex.infra.process import Process

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

SEED = 20240601
STEP_S = 15                    # the scrape interval
SPAN_S = 2 * 3600              # two hours of samples
GRID_OFFSET_S = 4              # samples at :04, :19, :34, :49 — never on a whole minute
OFF_GRID_S = 7.3               # query times this far past a sample
REL_TOL, ABS_TOL = 1e-9, 1e-12
WRITE_SLICE = 40               # timestamps per Write (10 minutes: inside the OOO window)

# ---- the data -----------------------------------------------------------------------


@dataclass
class Series:
    labels: dict[str, str]
    samples: list[tuple[int, float]] = field(default_factory=list)  # (unix s, value)


@dataclass
class Dataset:
    start_s: int               # the first sample's time
    families: dict[str, tuple[str, list[Series]]]  # family -> (OpenMetrics type, series)

    @property
    def all_series(self) -> Iterator[Series]:
        for _kind, members in self.families.values():
            yield from members

    @property
    def end_s(self) -> int:
        return max(t for s in self.all_series for t, _v in s.samples)


NODES = [("node", f"node-{c}:9100") for c in "abcd"] + [("edge", f"edge-{c}:9100") for c in "ab"]
APIS = [("api", f"api-{n}:8080") for n in range(3)]
BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf")


def generate(start_s: int) -> Dataset:
    """Seeded samples at ``start_s + k * STEP_S`` for two hours."""
    rng = random.Random(SEED)
    times = list(range(start_s, start_s + SPAN_S, STEP_S))
    n = len(times)
    families: dict[str, tuple[str, list[Series]]] = {}

    def family(name: str, kind: str) -> list[Series]:
        return families.setdefault(name, (kind, []))[1]

    def counter(labels: dict[str, str], rate: float, resets: set[int], integer: bool,
                present: range = range(n)) -> Series:
        out, value = Series(labels), rng.uniform(0, rate * 600)
        for k in present:
            if k in resets:
                value = 0.0
            value += rate * STEP_S * rng.uniform(0.2, 1.8)
            if integer:
                value = float(math.floor(value))
            out.samples.append((times[k], value))
        return out

    def gauge(labels: dict[str, str], values: list[float | None]) -> Series:
        """A gauge's values per step; None: no sample then."""
        return Series(labels, [(times[k], v) for k, v in enumerate(values) if v is not None])

    restart_of = {instance: {rng.randrange(60, n - 60)} if i % 3 == 0 else set()
                  for i, (_job, instance) in enumerate(NODES + APIS)}

    cpu = family("node_cpu_seconds", "counter")
    for job, instance in NODES:
        for c in range(4):
            for mode, share in (("idle", 0.7), ("user", 0.2), ("system", 0.07),
                                ("iowait", 0.03)):
                cpu.append(counter({"__name__": "node_cpu_seconds_total", "job": job,
                                    "instance": instance, "cpu": str(c), "mode": mode},
                                   share, restart_of[instance], False))
    net = family("node_network_receive_bytes", "counter")
    for job, instance in NODES:
        for device, rate in (("eth0", 2e5), ("lo", 3e3)):
            net.append(counter({"__name__": "node_network_receive_bytes_total", "job": job,
                                "instance": instance, "device": device},
                               rate * rng.uniform(0.5, 2), restart_of[instance], True))
    for name, kind in (("node_load1", "gauge"), ("node_memory_MemAvailable_bytes", "gauge"),
                       ("node_memory_MemTotal_bytes", "gauge"),
                       ("node_filesystem_avail_bytes", "gauge"),
                       ("node_hwmon_temp_celsius", "gauge"), ("node_uname_info", "gauge"),
                       ("up", "gauge")):
        family(name, kind)
    for i, (job, instance) in enumerate(NODES):
        base = {"job": job, "instance": instance}
        phase, level = rng.uniform(0, 6.28), rng.uniform(0.3, 2.0)
        families["node_load1"][1].append(gauge(
            {"__name__": "node_load1", **base},
            [max(0.0, level + 0.6 * math.sin(phase + k / 40) + rng.gauss(0, 0.15))
             for k in range(n)]))
        memory = float(rng.choice((8, 16, 32)) * 2 ** 30)
        families["node_memory_MemTotal_bytes"][1].append(
            gauge({"__name__": "node_memory_MemTotal_bytes", **base}, [memory] * n))
        families["node_memory_MemAvailable_bytes"][1].append(gauge(
            {"__name__": "node_memory_MemAvailable_bytes", **base},
            [float(int(memory * (0.5 + 0.2 * math.sin(k / 55))
                       + rng.randrange(-2 ** 24, 2 ** 24))) for k in range(n)]))
        for mountpoint, device, size in (("/", "sda1", 5e10), ("/boot", "sda2", 5e8)):
            free, slope = size * rng.uniform(0.3, 0.8), -size * rng.uniform(0, 2e-5)
            families["node_filesystem_avail_bytes"][1].append(gauge(
                {"__name__": "node_filesystem_avail_bytes", **base, "mountpoint": mountpoint,
                 "device": device},
                [float(int(free + slope * k + rng.uniform(-1e5, 1e5))) for k in range(n)]))
        gap = range(200, 248) if i == 1 else range(0)  # twelve minutes without samples
        families["node_hwmon_temp_celsius"][1].append(gauge(
            {"__name__": "node_hwmon_temp_celsius", **base, "chip": "coretemp"},
            [None if k in gap else float(rng.randrange(40, 80)) for k in range(n)]))
        families["node_uname_info"][1].append(gauge(
            {"__name__": "node_uname_info", **base, "nodename": instance.split(":")[0],
             "release": "6.1.0-18-amd64"}, [1.0] * n))
    for i, (job, instance) in enumerate(NODES + APIS):
        down = range(300, 320) if i == 2 else range(0)
        gone = n - 120 if i == 5 else n             # the last edge node leaves 30 min early
        families["up"][1].append(gauge(
            {"__name__": "up", "job": job, "instance": instance},
            [None if k >= gone else 0.0 if k in down else 1.0 for k in range(n)]))

    requests = family("http_requests", "counter")
    for job, instance in APIS:
        for method, weight in (("GET", 1.0), ("POST", 0.3)):
            for code, share in (("200", 20.0), ("404", 1.0), ("500", 0.2)):
                resets = {k for k in range(n) if rng.random() < 0.004} | restart_of[instance]
                requests.append(counter({"__name__": "http_requests_total", "job": job,
                                         "instance": instance, "method": method,
                                         "code": code}, weight * share, resets, True))
    requests.append(counter({"__name__": "http_requests_total", "job": "api",  # appears late
                             "instance": APIS[0][1], "method": "GET", "code": "503"},
                            0.5, set(), True, range(n // 2, n)))

    histogram = family("http_request_duration_seconds", "histogram")
    bounds = [float(le) for le in BUCKETS]
    for job, instance in APIS:
        for handler, scale in (("/v1/route", 0.08), ("/v1/search", 0.02)):
            base = {"job": job, "instance": instance, "handler": handler}
            parts = [Series({"__name__": "http_request_duration_seconds_bucket", **base,
                             "le": le}) for le in BUCKETS]
            total = Series({"__name__": "http_request_duration_seconds_sum", **base})
            count = Series({"__name__": "http_request_duration_seconds_count", **base})
            cumulative, observed, seen = [0] * len(BUCKETS), 0.0, 0
            for k in range(n):
                if k in restart_of[instance]:
                    cumulative, observed, seen = [0] * len(BUCKETS), 0.0, 0
                for _ in range(rng.randrange(5, 40)):
                    duration = rng.lognormvariate(math.log(scale), 0.9)
                    observed += duration
                    seen += 1
                    for b, bound in enumerate(bounds):
                        if duration <= bound:
                            cumulative[b] += 1
                for b, part in enumerate(parts):
                    part.samples.append((times[k], float(cumulative[b])))
                total.samples.append((times[k], observed))
                count.samples.append((times[k], float(seen)))
            histogram.extend([*parts, total, count])
    return Dataset(start_s, families)


def openmetrics(data: Dataset) -> str:
    """The samples as OpenMetrics text: each family's series, each in time order."""
    lines: list[str] = []
    for name, (kind, members) in data.families.items():
        lines.append(f"# TYPE {name} {kind}")
        for one in members:
            labels = ",".join(f'{k}="{v}"' for k, v in one.labels.items() if k != "__name__")
            head = f"{one.labels['__name__']}{{{labels}}}"
            lines.extend(f"{head} {v!r} {t}" for t, v in one.samples)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


# ---- the two servers ----------------------------------------------------------------


def _get(port: int, path: str, params: dict[str, str]) -> dict[str, Any]:
    query = urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}?{query}",
                                    timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        answer = json.loads(exc.read())
    return answer


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    # two hours ending an hour or more ago, at the second GRID_OFFSET_S past a 15 s mark
    end = int(time.time() - 3600) // 3600 * 3600
    return generate(end - SPAN_S + GRID_OFFSET_S)


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: `make system-deps` installs Debian's prometheus "
                    f"package (prometheus and promtool)")
    return found


@pytest.fixture(scope="module")
def prometheus(dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Our own Debian prometheus (not the package's service) on a free port, serving
    blocks that promtool made from the dataset; its HTTP port."""
    promtool, binary = _binary("promtool"), _binary("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    source, blocks = work / "samples.om.txt", work / "data"
    source.write_text(openmetrics(dataset))
    convert = Process("promtool", [promtool, "tsdb", "create-blocks-from", "openmetrics",
                                   str(source), str(blocks)], work / "promtool.log")
    try:
        code = convert.start().wait(timeout=60)
    finally:
        convert.stop(grace=2.0)
    assert code == 0, f"promtool failed ({code}):\n{convert.log_tail()}"
    config = work / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")  # no scrape jobs
    port = free_port()
    server = Process("prometheus", [
        binary, f"--config.file={config}", f"--storage.tsdb.path={blocks}",
        f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=10y",
        "--query.lookback-delta=5m"], work / "prometheus.log",
        probe=lambda: _ready(port), stop_grace=10.0)
    try:
        server.start().wait_ready(60)
        yield port
    finally:
        server.stop()


async def _load(address: str, data: Dataset) -> int:
    """Every sample, in time order: all series' samples of a time slice per Write."""
    by_time = sorted({t for s in data.all_series for t, _v in s.samples})
    written = 0
    async with TelemetryClient(address, ChannelOptions(retry=False)) as client:
        for first in range(0, len(by_time), WRITE_SLICE):
            lo, hi = by_time[first], by_time[min(first + WRITE_SLICE, len(by_time)) - 1]
            batch = [series(s.labels, [(t * 1000, v) for t, v in s.samples if lo <= t <= hi])
                     for s in data.all_series]
            answer = await client.write([b for b in batch if b.samples], timeout=60)
            written += answer.samples_written
    return written


@pytest.fixture(scope="module")
def geoplex(dataset: Dataset, server_factory: Callable[..., ServerProcess],
            tmp_path_factory: pytest.TempPathFactory) -> int:
    """A Geoplex telemetry server holding the dataset; its HTTP port. Half-hour blocks, so
    the queries read blocks and the head both; written in time order, nothing falls
    behind the out-of-order window or before a cut block."""
    port = free_port()
    server = server_factory("telemetry", {
        "GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path_factory.mktemp("telemetry-vs-prom")),
        "GEOPLEX_TELEMETRY_HTTP_PORT": str(port), "GEOPLEX_TELEMETRY_FSYNC": "interval",
        "GEOPLEX_TELEMETRY_BLOCK_HOURS": "0.5"}, "telemetry-vs-prometheus")
    written = asyncio.run(_load(server.address, dataset))
    assert written == sum(len(s.samples) for s in dataset.all_series)
    return port


# ---- the queries --------------------------------------------------------------------

QUERIES: list[Any] = [
    # selectors, one per matcher op
    'node_load1',
    'node_cpu_seconds_total{mode="idle",cpu="0"}',
    'node_cpu_seconds_total{mode!="idle",cpu="1",job="node"}',
    'http_requests_total{code=~"5.."}',
    'node_filesystem_avail_bytes{mountpoint!~"/boot|/var"}',
    'node_hwmon_temp_celsius',                                     # one has a 12 min gap
    # counters and gauges over ranges
    'rate(http_requests_total[5m])',
    'rate(node_network_receive_bytes_total[1m])',
    'irate(node_cpu_seconds_total{mode="user"}[1m])',
    'increase(http_requests_total[5m])',
    'delta(node_memory_MemAvailable_bytes[5m])',
    'deriv(node_load1[5m])',
    'resets(http_requests_total[30m])',
    'changes(node_hwmon_temp_celsius[10m])',
    'predict_linear(node_filesystem_avail_bytes[30m], 3600)',
    # aggregations
    'sum by (job, mode) (rate(node_cpu_seconds_total[5m]))',
    'avg by (instance) (node_load1)',
    'max by (job) (node_memory_MemAvailable_bytes)',
    'min without (cpu) (rate(node_cpu_seconds_total{mode="system"}[1m]))',
    'count by (job) (up == 1)',
    'topk(3, rate(http_requests_total[5m]))',
    'quantile(0.75, node_load1)',
    # *_over_time
    'avg_over_time(node_load1[5m])',
    'max_over_time(node_hwmon_temp_celsius[10m])',
    'min_over_time(node_load1[1m])',
    'sum_over_time(node_load1[5m])',
    'count_over_time(node_hwmon_temp_celsius[10m])',
    'stddev_over_time(node_load1[10m])',
    'quantile_over_time(0.9, node_load1[10m])',
    'last_over_time(up[5m])',
    # histograms
    'histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))',
    'histogram_quantile(0.5, sum by (le, handler) '
    '(rate(http_request_duration_seconds_bucket[5m])))',
    'rate(http_request_duration_seconds_sum[5m])'
    ' / rate(http_request_duration_seconds_count[5m])',
    # binary operators
    'node_memory_MemAvailable_bytes / on(job, instance) node_memory_MemTotal_bytes',
    'rate(node_cpu_seconds_total{mode="user"}[5m])'
    ' * on(job, instance) group_left(nodename) node_uname_info',
    'sum by (code) (rate(http_requests_total[5m]))'
    ' / ignoring(code) group_left sum(rate(http_requests_total[5m]))',
    'node_load1 > bool 1',
    'node_load1 > 1.2',
    'node_load1 and on(instance) (node_hwmon_temp_celsius > 60)',
    'up == 0 or node_load1 < 0.5',
    'node_load1 unless on(instance) up == 0',
    # functions
    'abs(delta(node_load1[5m]))',
    'clamp_max(node_load1, 1.5)',
    'label_replace(up, "host", "$1", "instance", "(.*):.*")',
    'absent(nonexistent_metric{job="x"})',
    'absent(up{job="api"})',
    'scalar(count(up == 1))',
    'timestamp(node_hwmon_temp_celsius)',
    'rate(http_requests_total[5m] offset 10m)',
    'max_over_time(rate(http_requests_total[1m])[10m:1m])',
    'count_values("state", up)',
    # left out: sort() / sort_desc() — this comparison is blind to order (a range query
    # has none in either version), so they would test nothing; and anything reading the
    # clock (time(), day_of_week() ...), which the two servers would read at different
    # instants.
]


EXPECTED_EMPTY = {'absent(up{job="api"})'}  # every other query has an answer somewhere


def _labels(metric: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(metric.items()))


def _value(raw: str) -> float:
    return float(raw)


def normalized(answer: dict[str, Any]) -> tuple[str, dict[Any, list[tuple[float, float]]]]:
    """(resultType, {label set: [(t, value)]}); a scalar is one empty label set."""
    assert answer.get("status") == "success", answer
    data = answer["data"]
    kind, result = data["resultType"], data["result"]
    out: dict[Any, list[tuple[float, float]]] = {}
    if kind == "scalar":
        out[()] = [(float(result[0]), _value(result[1]))]
    elif kind == "vector":
        for item in result:
            key = _labels(item["metric"])
            assert key not in out, f"duplicate label set {key}"
            out[key] = [(float(item["value"][0]), _value(item["value"][1]))]
    elif kind == "matrix":
        for item in result:
            key = _labels(item["metric"])
            assert key not in out, f"duplicate label set {key}"
            out[key] = [(float(t), _value(v)) for t, v in item["values"]]
    else:
        raise AssertionError(f"unexpected resultType {kind}")
    return kind, out


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    kind_ours, got = normalized(ours)
    kind_theirs, want = normalized(theirs)
    if kind_ours != kind_theirs:
        return [f"resultType {kind_ours} != {kind_theirs}"]
    problems = [f"only in Geoplex: {dict(k)}" for k in got.keys() - want.keys()]
    problems += [f"only in Prometheus: {dict(k)}" for k in want.keys() - got.keys()]
    for key in got.keys() & want.keys():
        a, b = got[key], want[key]
        if [t for t, _ in a] != [t for t, _ in b]:
            problems.append(f"{dict(key)}: timestamps {[t for t, _ in a]} != "
                            f"{[t for t, _ in b]}")
        else:
            problems += [f"{dict(key)} at {t}: {va!r} != {vb!r}"
                         for (t, va), (_t, vb) in zip(a, b, strict=True) if not _close(va, vb)]
    return problems


def _instants(data: Dataset) -> list[float]:
    """Query times 7.3 s past a sample: early, in the gaps, across block cuts, at the end."""
    return [data.start_s + k * STEP_S + OFF_GRID_S for k in (41, 130, 210, 245, 363, 470)]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("query", QUERIES)
def test_query_answers_equal_prometheus(query: str, prometheus: int, geoplex: int,
                                        dataset: Dataset) -> None:
    asks: list[tuple[str, dict[str, str]]] = [
        ("/api/v1/query", {"query": query, "time": f"{t:.3f}"}) for t in _instants(dataset)]
    start = dataset.start_s + 23 * STEP_S + OFF_GRID_S
    asks.append(("/api/v1/query_range", {"query": query, "start": f"{start:.3f}",
                                         "end": f"{dataset.end_s + 60:.3f}", "step": "60"}))
    report: list[str] = []
    answered = 0
    for path, params in asks:
        ours, theirs = _get(geoplex, path, params), _get(prometheus, path, params)
        answered += len(normalized(theirs)[1])
        problems = differences(ours, theirs)
        if problems:
            report.append(f"{path} {params}:\n  " + "\n  ".join(problems[:10])
                          + f"\n  Geoplex: {json.dumps(ours)[:1500]}"
                          + f"\n  Prometheus: {json.dumps(theirs)[:1500]}")
    assert not report, "\n".join(report)
    # two empty answers agree too: make sure Prometheus did see the data
    assert (answered == 0) == (query in EXPECTED_EMPTY), f"Prometheus answered {answered} series"
