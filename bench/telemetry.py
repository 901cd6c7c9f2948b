"""Telemetry: our time-series store against Prometheus and VictoriaMetrics on the same data.

``python -m bench.telemetry`` (``make bench-telemetry``), in one run:

1. Data: ``--hosts`` node-exporter-like hosts of 100 series each (CPU-seconds, network,
   disk and error counters, each host's reset by a reboot with some chance; load, memory,
   filesystem, temperature and scrape-duration gauges; two classic histograms,
   ``http_request_duration_seconds_bucket{le=...}`` with ``_sum`` and ``_count``), scraped
   every 15 s (each host at its own offset, a few ms of jitter) for ``--hours`` ending a
   minute ago, encoded once as Prometheus remote-write 1.0 bodies (protobuf + snappy):
   each body up to ``--batch-samples`` samples of one group of series over at most 5 min
   of scrapes.
2. Three servers, each its own process on loopback, each on a fresh directory: Geoplex
   telemetry (``python -m geoplex.servers.telemetry``, its defaults: 2 h blocks, the WAL
   synced before each acknowledgement, which the other two do not do), Debian's
   ``prometheus`` (``--web.enable-remote-write-receiver``) and Debian's
   ``victoria-metrics`` (``-search.latencyOffset=0s``, its cache off).
3. Ingest, one server at a time: every body POSTed to ``/api/v1/write`` in time order,
   ``--shards`` bodies in flight (disjoint series, as remote-write shards), a time slice
   finished before the next starts. Samples/s over the wall clock, and samples per CPU
   second of the server process (``/proc/<pid>/stat``) up to the moment it has gone
   quiet afterwards (VictoriaMetrics flushed first): what its background work costs too.
   RSS over the series once quiet.
4. Storage after compaction: Prometheus's block directories (the head, its last 2-3 h,
   is not in blocks) over their samples; VictoriaMetrics after ``/internal/force_merge``:
   ``vm_data_size_bytes`` (data and index) over ``vm_rows``; Geoplex: its blocks
   (``GetStorageInfo``'s raw tier) over their samples.
5. Dashboard queries over the HTTP API, ``--runs`` timed runs each after an untimed one,
   the servers taking turns: ``sum by (job) (rate(node_cpu_seconds_total[5m]))`` over the
   last 1 h (15 s step) and 24 h (6 min step), ``histogram_quantile(0.9, sum by (le)
   (rate(http_request_duration_seconds_bucket[5m])))`` over 1 h; and the 24 h query from
   Geoplex's rollup tiers (``resolution=1m``, ``1h``), when the server has them. The
   answers are compared with Prometheus's (series, points, values within ``--tolerance``).

Every timed part first waits (``--quiet-wait`` s at most) for an idle machine. Writes
``bench/results/telemetry.json`` and the ``telemetry`` section of ``BENCHMARKS.md``
(``--no-write`` to skip; ``--quick`` shrinks the data and implies it; ``--report-only``
re-renders from the results file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pysnappy

from geoplex.clients import ChannelOptions
from geoplex.clients.telemetry import TelemetryClient
from geoplex.infra.process import Process
from geoplex.servers.telemetry.tsdb.workload import SCRAPE_MS, scrape_times

from ._common import (CpuSample, Steps, cpu_usage, fmt_num, free_port, latency_summary,
                      log, machine_info, machine_line, markdown_table, process_cpu_seconds,
                      read_results, run_and_report, start_server_processes, wait_for_quiet,
                      write_section)

NAME = "telemetry"
TITLE = "## Telemetry: ours vs Prometheus and VictoriaMetrics"
HOST = "127.0.0.1"
SYSTEMS = ("geoplex", "prometheus", "vm")
LABELS = {"geoplex": "Geoplex", "prometheus": "Prometheus", "vm": "VictoriaMetrics"}
JOBS = ("node", "db", "edge")
SERIES_PER_HOST = 100
SAMPLE_BYTES = 18        # one encoded remote-write Sample: tag, length, double, varint(ts)
MAX_SLICE_SCRAPES = 20   # 5 min a slice: Geoplex takes samples up to 10 min behind its newest
AIM_BYTES_PER_SAMPLE = 1.37   # Gorilla's figure
AIM_QUERY_RATIO = 2.0         # dashboard queries within 2x of Prometheus's latency
LOOSE_TOLERANCE = 0.05        # answers also counted against this (MetricsQL's rate differs)
LOG_ENV = {"GEOPLEX_LOG_LEVEL": "warning", "GEOPLEX_TRACING": "off"}
QUICK = {"hosts": 5, "hours": 3.0, "runs": 5, "quiet_wait": 0.0, "settle_max": 20.0,
         "settle_min": 0.0}
"""--quick: the defaults it changes (a flag given beside it still wins)."""

BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf")
CPU_MODES = (("idle", 0.70), ("user", 0.15), ("system", 0.06), ("iowait", 0.03),
             ("irq", 0.005), ("softirq", 0.01), ("steal", 0.002), ("nice", 0.003))

F64s = npt.NDArray[np.float64]
I64s = npt.NDArray[np.int64]
LabelPairs = tuple[tuple[str, str], ...]


# =========================================================================== the data

@dataclass
class Dataset:
    """Every series' samples: host ``h``'s series are rows ``h * 100 .. h * 100 + 99``."""

    labels: list[LabelPairs]
    timestamps: I64s          # (hosts, samples): each host's scrape times, ms
    values: F64s              # (series, samples)
    resets: int               # hosts that rebooted (their counters reset)

    @property
    def series(self) -> int:
        return len(self.labels)

    @property
    def samples(self) -> int:
        return int(self.values.size)

    @property
    def first_ms(self) -> int:
        return int(self.timestamps[:, 0].min())

    @property
    def last_ms(self) -> int:
        return int(self.timestamps[:, -1].max())


def _counter(steps: F64s, start: float, reset: int | None) -> F64s:
    """A counter from its increments; from ``reset`` on it starts again from 0."""
    values = start + np.cumsum(steps)
    if reset is not None:
        values[reset:] = np.cumsum(steps[reset:])
    return values


def _walk(rng: np.random.Generator, samples: int, base: float, unit: float, spread: int,
          lo: float, hi: float, moving: float = 0.4) -> F64s:
    """A gauge that moves in multiples of ``unit`` (pages, blocks) at some scrapes."""
    moves = rng.integers(-spread, spread + 1, samples) * unit * (rng.random(samples) < moving)
    return np.clip(base + np.cumsum(moves), lo, hi).astype(np.float64)


def _histogram(rng: np.random.Generator, samples: int, reset: int | None
               ) -> tuple[list[F64s], F64s, F64s]:
    """A classic histogram's cumulative buckets (one per ``le``), ``_sum`` and ``_count``."""
    scale, sigma = rng.uniform(0.01, 0.2), 0.9
    bounds = [float(b) for b in BUCKETS[:-1]]
    below = [0.5 * (1 + math.erf((math.log(b) - math.log(scale)) / (sigma * math.sqrt(2))))
             for b in bounds]
    bins = np.diff(np.array([0.0, *below, 1.0]))
    seen = rng.poisson(rng.uniform(5, 50), samples)
    per_bin = rng.multinomial(seen, bins / bins.sum()).astype(np.float64)  # (samples, bins)
    le = np.cumsum(per_bin, axis=1)
    buckets = [_counter(le[:, b], 0.0, reset) for b in range(len(BUCKETS))]
    mean = scale * math.exp(sigma ** 2 / 2)
    total = _counter(seen * mean * rng.uniform(0.8, 1.2, samples), 0.0, reset)
    return buckets, total, buckets[-1].copy()


def host_series(rng: np.random.Generator, host: int, times: I64s
                ) -> tuple[list[tuple[dict[str, str], F64s]], bool]:
    """One host's 100 series (labels without ``__name__`` in ``name``) and whether it
    rebooted in the window."""
    n = len(times)
    reset = int(rng.integers(n // 10, n - n // 10)) if rng.random() < 0.3 and n > 20 else None
    base = {"job": JOBS[host % len(JOBS)], "instance": f"host-{host:03d}:9100"}
    out: list[tuple[dict[str, str], F64s]] = []

    def add(name: str, values: F64s, **labels: str) -> None:
        out.append(({"__name__": name, **base, **labels}, np.asarray(values, np.float64)))

    busy = rng.uniform(0.3, 1.7)
    for cpu in range(4):
        for mode, share in CPU_MODES:
            share = share * (busy if mode != "idle" else 1.0)
            steps = 15 * share * rng.uniform(0.5, 1.5, n)
            add("node_cpu_seconds_total",
                _counter(steps, rng.uniform(1e4, 1e6) * share, reset).round(2),
                cpu=str(cpu), mode=mode)
    for device, scale in (("eth0", 1.0), ("lo", 0.01)):
        for direction in ("receive", "transmit"):
            rate = rng.lognormal(12, 1) * scale
            steps = rng.poisson(rate * 15, n).astype(np.float64)
            steps[rng.random(n) < 0.02] *= 10  # bursts
            start = float(rng.integers(0, 1 << 40))
            add(f"node_network_{direction}_bytes_total", _counter(steps, start, reset),
                device=device)
            add(f"node_network_{direction}_packets_total",
                _counter(np.floor(steps / 800), start // 800, reset), device=device)
    for device in ("eth0", "lo"):
        for direction in ("receive", "transmit"):
            errors = (rng.random(n) < 0.001).astype(np.float64)
            add(f"node_network_{direction}_errs_total", _counter(errors, 0.0, reset),
                device=device)
    for device in ("sda", "sdb"):
        for what in ("read", "written"):
            steps = (rng.poisson(rng.lognormal(6, 1) * 15, n) * 512).astype(np.float64)
            add(f"node_disk_{what}_bytes_total",
                _counter(steps, float(rng.integers(0, 1 << 36)) * 512, reset), device=device)
        util = rng.uniform(0.01, 0.3)
        add("node_disk_io_time_seconds_total",
            _counter(15 * util * rng.uniform(0.5, 1.5, n), rng.uniform(1e3, 1e6), reset
                     ).round(3), device=device)
    for name, rate in (("node_context_switches_total", rng.uniform(500, 5000)),
                       ("node_intr_total", rng.uniform(200, 3000))):
        add(name, _counter(rng.poisson(rate * 15, n).astype(np.float64),
                           float(rng.integers(1 << 20, 1 << 34)), reset))
    phase, level = rng.uniform(0, 2 * math.pi), rng.uniform(0.2, 3.0)
    load1 = np.maximum(level + 0.5 * np.sin(phase + np.arange(n) / 120)
                       + rng.normal(0, 0.2, n), 0)
    kernel = np.ones(20) / 20
    add("node_load1", load1.round(2))
    add("node_load5", np.convolve(load1, kernel, "same").round(2))
    add("node_load15", np.convolve(load1, np.ones(60) / 60, "same").round(2))
    total = float(rng.choice([8, 16, 32, 64])) * 2 ** 30
    add("node_memory_MemTotal_bytes", np.full(n, total))
    for name, share in (("MemAvailable", 0.6), ("MemFree", 0.2), ("Cached", 0.3),
                        ("Buffers", 0.02)):
        add(f"node_memory_{name}_bytes",
            _walk(rng, n, total * share // 4096 * 4096, 4096, 256, 0, total))
    for mountpoint, size in (("/", 5e10), ("/boot", 5e8), ("/var", 2e11)):
        size = float(int(size * rng.uniform(0.5, 2)) // 4096 * 4096)
        add("node_filesystem_size_bytes", np.full(n, size), mountpoint=mountpoint)
        add("node_filesystem_avail_bytes",
            _walk(rng, n, size * rng.uniform(0.2, 0.8) // 4096 * 4096, 4096, 64, 0, size, 0.3),
            mountpoint=mountpoint)
    up = np.ones(n)
    boot = np.full(n, float(times[0] // 1000 - int(rng.integers(100_000, 10_000_000))))
    if reset is not None:
        up[reset] = 0.0
        boot[reset:] = float(times[reset] // 1000 - 30)
    add("up", up)
    add("node_boot_time_seconds", boot)
    add("node_uname_info", np.ones(n), release="6.1.0-18-amd64")
    for sensor in ("temp1", "temp2"):
        add("node_hwmon_temp_celsius",
            (rng.uniform(40, 60) + 5 * np.sin(phase + np.arange(n) / 300)
             + rng.normal(0, 0.5, n)).round(1), chip="coretemp", sensor=sensor)
    for collector in ("cpu", "diskstats", "filesystem", "meminfo", "netdev"):
        add("node_scrape_collector_duration_seconds", rng.lognormal(-7, 0.5, n),
            collector=collector)
    for handler in ("/metrics", "/api/v1/query"):
        buckets, hsum, hcount = _histogram(rng, n, reset)
        for le, values in zip(BUCKETS, buckets):
            add("http_request_duration_seconds_bucket", values, handler=handler, le=le)
        add("http_request_duration_seconds_sum", hsum, handler=handler)
        add("http_request_duration_seconds_count", hcount, handler=handler)
    assert len(out) == SERIES_PER_HOST, len(out)
    return out, reset is not None


def generate(hosts: int, hours: float, end_ms: int, seed: int) -> Dataset:
    """``hosts`` hosts scraped every 15 s for ``hours`` up to ``end_ms``; each host at its
    own offset 1-14 s past the 15 s grid (so no sample lies on a query window's edge)."""
    samples = max(int(hours * 3_600_000 // SCRAPE_MS), 2)
    grid = end_ms // SCRAPE_MS * SCRAPE_MS - samples * SCRAPE_MS
    rng = np.random.default_rng(seed)
    labels: list[LabelPairs] = []
    stamps, rows = [], []
    resets = 0
    for host in range(hosts):
        times = scrape_times(rng, samples, grid + 1000 + (host * 7919) % 13_000)
        series, rebooted = host_series(rng, host, times)
        resets += rebooted
        stamps.append(times)
        for pairs, values in series:
            labels.append(tuple(sorted(pairs.items())))
            rows.append(values)
    return Dataset(labels, np.stack(stamps).astype(np.int64), np.stack(rows), resets)


# =========================================================================== remote write

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _labels_bytes(pairs: LabelPairs) -> bytes:
    """A TimeSeries's ``labels`` (field 1): each Label's name (1) and value (2)."""
    return b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in pairs)


def _samples_block(ts: I64s, vs: F64s) -> npt.NDArray[np.uint8]:
    """``(series, k)`` samples as ``(series, k * 18)`` bytes of encoded Sample fields:
    ``0x12 0x10``, value (field 1, fixed64), timestamp (field 2, a 6-byte varint)."""
    if ts.size and (int(ts.min()) < 1 << 35 or int(ts.max()) >= 1 << 42):
        raise ValueError("timestamps must lie in [2^35, 2^42) ms for 6-byte varints")
    g, k = vs.shape
    out = np.empty((g, k, SAMPLE_BYTES), np.uint8)
    out[..., 0], out[..., 1], out[..., 2] = 0x12, 16, 0x09
    out[..., 3:11] = np.ascontiguousarray(vs, "<f8").view(np.uint8).reshape(g, k, 8)
    out[..., 11] = 0x10
    t = ts.astype(np.uint64)
    for i in range(6):
        byte = (t >> np.uint64(7 * i)) & np.uint64(0x7F)
        out[..., 12 + i] = (byte | np.uint64(0x80 if i < 5 else 0)).astype(np.uint8)
    return out.reshape(g, k * SAMPLE_BYTES)


@dataclass(frozen=True)
class Body:
    data: bytes      # snappy-compressed WriteRequest
    samples: int
    raw_bytes: int   # before snappy


def encode(dataset: Dataset, batch_samples: int, shards: int) -> list[list[Body]]:
    """The remote-write bodies, slice by slice in time order: each slice the same few
    scrapes of every series (at most :data:`MAX_SLICE_SCRAPES`: a slice's later bodies
    must stay inside Geoplex's out-of-order window, which trails the newest sample of the
    whole head), one body per group of series (groups disjoint, at least ``shards`` of
    them), about ``batch_samples`` samples a body."""
    n, total = dataset.values.shape
    groups = max(shards, math.ceil(n / batch_samples))
    size = math.ceil(n / groups)
    k = max(1, min(batch_samples // size, MAX_SLICE_SCRAPES))
    host_of = np.arange(n) // SERIES_PER_HOST
    labels = [_labels_bytes(p) for p in dataset.labels]
    slices: list[list[Body]] = []
    for a in range(0, total, k):
        b = min(a + k, total)
        heads = [b"\x0a" + _varint(len(lb) + (b - a) * SAMPLE_BYTES) + lb for lb in labels]
        bodies = []
        for lo in range(0, n, size):
            hi = min(lo + size, n)
            block = memoryview(_samples_block(dataset.timestamps[host_of[lo:hi], a:b],
                                              dataset.values[lo:hi, a:b]).tobytes())
            width = (b - a) * SAMPLE_BYTES
            parts: list[bytes | memoryview] = []
            for i in range(hi - lo):
                parts += [heads[lo + i], block[i * width:(i + 1) * width]]
            raw = b"".join(parts)
            bodies.append(Body(pysnappy.compress(raw), (hi - lo) * (b - a), len(raw)))
        slices.append(bodies)
    return slices


# =========================================================================== servers

@dataclass
class Server:
    key: str
    version: str
    http: str                 # http://host:port
    pid: int
    data_dir: Path
    grpc: str = ""            # Geoplex's gRPC address
    query_params: dict[str, str] = field(default_factory=dict)  # added to every query
    rss_empty_bytes: int = 0
    log_tail: Callable[[], str] = lambda: ""   # the end of the server's own log


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _version(argv: Sequence[str], pattern: str) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    found = re.search(pattern, done.stdout + done.stderr)
    return found.group(1) if found else "unknown"


def _debian_version(package: str) -> str:
    return _version(["dpkg-query", "-W", "-f=${Version}", package], r"(\S+)")


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@contextlib.contextmanager
def geoplex_server(work: Path) -> Iterator[Server]:
    """``python -m geoplex.servers.telemetry`` on a fresh data directory, its Prometheus
    HTTP API on a free port, its default WAL policy (``always``: a batch is acknowledged
    once an fsync covers it, concurrent batches sharing one; ``interval`` waits for the
    next timed fsync, which only adds latency to a sender with few batches in flight)."""
    data, port = work / "geoplex", free_port()
    # no rules, as the Prometheus beside it has none: the default rules write ALERTS at
    # the wall clock, and the head's out-of-order window then refuses the day-old backfill
    no_rules = work / "no-rules.yml"
    no_rules.write_text("groups: []\n")
    env = {"GEOPLEX_TELEMETRY_PORT": "0", "GEOPLEX_TELEMETRY_DATA_DIR": str(data),
           "GEOPLEX_TELEMETRY_RULE_FILES": str(no_rules),
           "GEOPLEX_TELEMETRY_HTTP_PORT": str(port), "GEOPLEX_TELEMETRY_FSYNC": "always",
           "GEOPLEX_STATE_DIR": str(work / "geoplex-state"), **LOG_ENV}
    with start_server_processes([sys.executable, "-m", "geoplex.servers.telemetry"], 1, env,
                                ready_timeout=60) as servers:
        from geoplex import __version__
        yield Server("geoplex", __version__, f"http://{HOST}:{port}", servers.pids[0], data,
                     grpc=servers.address, log_tail=lambda: servers.log_tail(0, 30))


@contextlib.contextmanager
def prometheus_server(work: Path) -> Iterator[Server]:
    """Debian's ``prometheus`` with the remote-write receiver, no scrape jobs."""
    data, port = work / "prometheus", free_port()
    config = work / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")
    url = f"http://{HOST}:{port}"
    proc = Process("prometheus", [
        "/usr/bin/prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
        f"--web.listen-address={HOST}:{port}", "--web.enable-remote-write-receiver",
        "--storage.tsdb.retention.time=30d", "--log.level=warn"],
        work / "prometheus.log", probe=lambda: _http_ok(url + "/-/ready"), stop_grace=15.0)
    with proc:
        proc.wait_ready(60)
        assert proc.pid is not None
        version = _version(["/usr/bin/prometheus", "--version"], r"version (\S+)")
        yield Server("prometheus", version, url, proc.pid, data,
                     log_tail=lambda: proc.log_tail(30))


@contextlib.contextmanager
def vm_server(work: Path) -> Iterator[Server]:
    """Debian's single-node ``victoria-metrics``: no latency offset (the newest samples
    are queried at once), its rollup result cache off (each timed query computes)."""
    data, port = work / "vm", free_port()
    url = f"http://{HOST}:{port}"
    proc = Process("victoria-metrics", [
        "/usr/bin/victoria-metrics", f"-storageDataPath={data}",
        f"-httpListenAddr={HOST}:{port}", "-search.latencyOffset=0s",
        "-search.disableCache", "-retentionPeriod=1y", "-loggerLevel=WARN"],
        work / "vm.log", probe=lambda: _http_ok(url + "/health"), stop_grace=15.0)
    with proc:
        proc.wait_ready(60)
        assert proc.pid is not None
        yield Server("vm", _debian_version("victoria-metrics"), url, proc.pid, data,
                     query_params={"nocache": "1"}, log_tail=lambda: proc.log_tail(30))


# =========================================================================== ingest

async def settle(pid: int, max_s: float, probe_s: float = 1.0, idle_pct: float = 5.0,
                 min_s: float = 0.0) -> float:
    """Wait at least ``min_s``, then until ``pid`` uses under ``idle_pct`` % of a core over
    a ``probe_s`` probe, or ``max_s`` passes; the seconds waited. ``min_s`` lets a server's
    timed background work begin (Prometheus looks for compactions once a minute, Geoplex
    telemetry maintains its store every 10 s): quiet right after the last write is not
    done."""
    began = time.perf_counter()
    if min_s > 0:
        await asyncio.sleep(min_s)
    while time.perf_counter() - began < max_s:
        c0 = process_cpu_seconds(pid)
        await asyncio.sleep(probe_s)
        if (process_cpu_seconds(pid) - c0) / probe_s * 100 < idle_pct:
            break
    return time.perf_counter() - began


async def ingest(session: aiohttp.ClientSession, server: Server, slices: Sequence[Sequence[Body]],
                 shards: int, settle_max: float, settle_min: float = 0.0) -> dict[str, Any]:
    """Every body POSTed to the server's remote-write endpoint, slice after slice."""
    url = server.http + "/api/v1/write"
    headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
               "X-Prometheus-Remote-Write-Version": "0.1.0"}
    gate = asyncio.Semaphore(shards)
    codes: dict[str, int] = {}
    first_error: list[str] = []
    accepted = 0

    async def post(body: Body) -> None:
        nonlocal accepted
        async with gate:
            async with session.post(url, data=body.data, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=300)) as response:
                text = await response.read()
                codes[str(response.status)] = codes.get(str(response.status), 0) + 1
                if response.status < 300:
                    accepted += body.samples
                elif not first_error:
                    first_error.append(f"{response.status}: {text[:300]!r}")

    total = sum(b.samples for s in slices for b in s)
    start = CpuSample.take([server.pid])
    shown = time.perf_counter()
    for i, bodies in enumerate(slices):
        await asyncio.gather(*(post(b) for b in bodies))
        if time.perf_counter() - shown > 15:
            shown = time.perf_counter()
            log(f"    {LABELS[server.key]}: {i + 1:,} of {len(slices):,} slices, "
                f"{(shown - start.wall):.0f} s")
    end = CpuSample.take([server.pid])
    if server.key == "vm":  # make every sample searchable before the answers are compared
        async with session.get(server.http + "/internal/force_flush") as response:
            await response.read()
    settled_s = await settle(server.pid, settle_max + settle_min, min_s=settle_min)
    after = CpuSample.take([server.pid])
    wall = end.wall - start.wall
    cpu_s = end.pids[0] - start.pids[0]
    cpu_settled_s = after.pids[0] - start.pids[0]
    return {
        "samples": total, "accepted": accepted, "status_codes": codes,
        "first_error": first_error[0] if first_error else None,
        "wall_s": wall, "samples_per_s": accepted / wall if wall > 0 else math.nan,
        "server_cpu_s": cpu_s, "server_cpu_settled_s": cpu_settled_s,
        "settle_s": settled_s,
        "samples_per_cpu_s": accepted / cpu_settled_s if cpu_settled_s > 0 else math.nan,
        "samples_per_cpu_s_ingest_only": accepted / cpu_s if cpu_s > 0 else math.nan,
        "cpu": cpu_usage(start, end),
        "rss_bytes": rss_bytes(server.pid),
    }


# =========================================================================== storage

def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def storage_geoplex(server: Server) -> dict[str, Any]:
    async with TelemetryClient(server.grpc, ChannelOptions(retry=False)) as client:
        info = await client.storage_info(timeout=60)
    tiers = {t.resolution: {"blocks": t.blocks, "series": t.series, "samples": t.samples,
                            "bytes": t.bytes} for t in info.tiers}
    raw = tiers.get("raw", {"blocks": 0, "samples": 0, "bytes": 0})
    return {"blocks": raw["blocks"], "block_samples": raw["samples"],
            "block_bytes": raw["bytes"], "head_series": info.head_series,
            "head_samples": info.head_samples, "wal_bytes": info.wal_bytes, "tiers": tiers,
            "bytes_per_sample": raw["bytes"] / raw["samples"] if raw["samples"] else math.nan,
            "how": "GetStorageInfo: the raw tier's blocks (bytes on disk) over their samples"}


def storage_prometheus(server: Server) -> dict[str, Any]:
    blocks = []
    for meta_path in sorted(server.data_dir.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        blocks.append({"id": meta.get("ulid", meta_path.parent.name),
                       "min_time": meta["minTime"], "max_time": meta["maxTime"],
                       "level": meta.get("compaction", {}).get("level", 1),
                       "samples": meta.get("stats", {}).get("numSamples", 0),
                       "bytes": _tree_bytes(meta_path.parent),
                       "chunks_bytes": _tree_bytes(meta_path.parent / "chunks"),
                       "index_bytes": (meta_path.parent / "index").stat().st_size
                       if (meta_path.parent / "index").exists() else 0})
    samples = sum(b["samples"] for b in blocks)
    size = sum(b["bytes"] for b in blocks)
    chunk_bytes = sum(b["chunks_bytes"] for b in blocks)
    return {"blocks": len(blocks), "block_samples": samples, "block_bytes": size,
            "levels": sorted({b["level"] for b in blocks}),
            "bytes_per_sample": size / samples if samples else math.nan,
            "data_bytes_per_sample": chunk_bytes / samples if samples else math.nan,
            "wal_bytes": _tree_bytes(server.data_dir / "wal")
            if (server.data_dir / "wal").exists() else 0,
            "how": "block directories (chunks, index, meta) over their numSamples; the head "
                   "(the last 2-3 h) is not in blocks",
            "block_list": blocks}


async def _vm_metrics(session: aiohttp.ClientSession, server: Server) -> dict[str, float]:
    async with session.get(server.http + "/metrics") as response:
        text = await response.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("vm_data_size_bytes{", "vm_rows{", "vm_parts{")):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def storage_vm(session: aiohttp.ClientSession, server: Server,
                     settle_max: float) -> dict[str, Any]:
    async with session.get(server.http + "/internal/force_flush") as response:
        await response.read()
    async with session.get(server.http + "/internal/force_merge") as response:
        merge_status = response.status
        await response.read()
    await asyncio.sleep(1.0)
    merged_s = await settle(server.pid, settle_max)
    metrics = await _vm_metrics(session, server)
    data = sum(v for k, v in metrics.items()
               if k.startswith("vm_data_size_bytes{") and "storage/" in k)
    index = sum(v for k, v in metrics.items()
                if k.startswith("vm_data_size_bytes{") and "indexdb" in k)
    rows = sum(v for k, v in metrics.items() if k.startswith("vm_rows{") and "storage/" in k)
    return {"force_merge_status": merge_status, "merge_settle_s": merged_s,
            "data_bytes": data, "index_bytes": index, "rows": rows,
            "block_samples": rows, "block_bytes": data + index,
            "bytes_per_sample": (data + index) / rows if rows else math.nan,
            "data_bytes_per_sample": data / rows if rows else math.nan,
            "how": "after /internal/force_merge: vm_data_size_bytes (storage and indexdb) "
                   "over vm_rows (storage)", "metrics": metrics}


# =========================================================================== queries

@dataclass(frozen=True)
class Query:
    key: str
    title: str
    promql: str
    range_s: int
    step_s: int
    resolution: str | None = None   # Geoplex's rollup tier (only Geoplex asks it)

    @property
    def systems(self) -> tuple[str, ...]:
        return ("geoplex",) if self.resolution else SYSTEMS


CPU_RATE = "sum by (job) (rate(node_cpu_seconds_total[5m]))"
HIST_P90 = ("histogram_quantile(0.9, sum by (le) "
            "(rate(http_request_duration_seconds_bucket[5m])))")


def queries_for(hours: float) -> list[Query]:
    """The dashboard queries; the long range is 24 h, or less when the data is shorter
    (its 5 min rate window and a few minutes kept clear of the data's start)."""
    long_s = min(86_400, int((hours * 3600 - 900) // 3600 * 3600))
    long_s = max(long_s, 3600)
    long_step = max(15, long_s // 240 // 15 * 15)
    span = f"{long_s // 3600} h"
    return [
        Query("cpu_1h", "cpu rate, 1 h", CPU_RATE, 3600, 15),
        Query("cpu_long", f"cpu rate, {span}", CPU_RATE, long_s, long_step),
        Query("hist_1h", "p90 histogram, 1 h", HIST_P90, 3600, 15),
        Query("cpu_long_1m", f"cpu rate, {span}, 1m rollup", CPU_RATE, long_s, long_step, "1m"),
        Query("cpu_long_1h", f"cpu rate, {span}, 1h rollup", CPU_RATE, long_s, long_step, "1h"),
    ]


@dataclass
class Answer:
    status: int
    seconds: float
    body: dict[str, Any] | None
    error: str | None = None


async def ask(session: aiohttp.ClientSession, server: Server, query: Query, end_s: int,
              parse: bool) -> Answer:
    params = {"query": query.promql, "start": str(end_s - query.range_s), "end": str(end_s),
              "step": str(query.step_s), **server.query_params}
    if query.resolution:
        params["resolution"] = query.resolution
    started = time.perf_counter()
    async with session.get(server.http + "/api/v1/query_range", params=params,
                           timeout=aiohttp.ClientTimeout(total=600)) as response:
        raw = await response.read()
        seconds = time.perf_counter() - started
        status = response.status
    if status != 200:
        return Answer(status, seconds, None, raw[:300].decode(errors="replace"))
    return Answer(status, seconds, json.loads(raw) if parse else None)


Points = dict[LabelPairs, dict[float, float]]


def points_of(body: Mapping[str, Any]) -> Points:
    out: Points = {}
    for item in body.get("data", {}).get("result", []):
        key = tuple(sorted(item["metric"].items()))
        out[key] = {float(t): float(v) for t, v in item["values"]}
    return out


def compare(ours: Points, reference: Points, tolerance: float) -> dict[str, Any]:
    """How one answer differs from the reference (Prometheus's): series on one side only,
    points at timestamps only one side has, values beyond the relative tolerance."""
    mismatched = loose = compared = missing = 0
    worst = 0.0
    for key in ours.keys() & reference.keys():
        a, b = ours[key], reference[key]
        missing += len(a.keys() ^ b.keys())
        for t in a.keys() & b.keys():
            x, y = a[t], b[t]
            compared += 1
            if math.isnan(x) or math.isnan(y):
                mismatched += math.isnan(x) != math.isnan(y)
                continue
            diff = abs(x - y) / max(abs(x), abs(y), 1e-12)
            worst = max(worst, diff)
            mismatched += diff > tolerance
            loose += diff > LOOSE_TOLERANCE
    return {"series": len(ours), "reference_series": len(reference),
            "only_here": len(ours.keys() - reference.keys()),
            "only_in_reference": len(reference.keys() - ours.keys()),
            "points_compared": compared, "points_missing": missing,
            "mismatched": mismatched, "tolerance": tolerance,
            "mismatched_loose": loose, "loose_tolerance": LOOSE_TOLERANCE,
            "max_rel_diff": worst,
            "agree": (ours.keys() == reference.keys() and mismatched == 0 and missing == 0)}


async def run_queries(session: aiohttp.ClientSession, servers: Mapping[str, Server],
                      queries: Sequence[Query], end_s: int, runs: int, tolerance: float
                      ) -> dict[str, Any]:
    """Each query once untimed per server (its answer kept for the comparison), then
    ``runs`` timed rounds, the servers taking turns in a rotating order. A rollup query's
    answer is compared with Prometheus's raw answer to the same query."""
    out: dict[str, Any] = {}
    references: dict[tuple[str, int, int], Points] = {}
    for query in queries:
        log(f"    {query.title}: {query.promql} over {query.range_s // 60} min, "
            f"step {query.step_s} s")
        row: dict[str, Any] = {"query": query.promql, "range_s": query.range_s,
                               "step_s": query.step_s, "resolution": query.resolution,
                               "title": query.title, "systems": {}}
        answers: dict[str, Points] = {}
        live: list[str] = []
        for key in (k for k in query.systems if k in servers):
            first = await ask(session, servers[key], query, end_s, parse=True)
            cell: dict[str, Any] = {"status": first.status}
            if first.body is None or first.body.get("status") != "success":
                cell.update(available=False, error=first.error or str(first.body)[:300])
                if first.status >= 500:
                    cell["server_log"] = servers[key].log_tail()[-3000:]
                    log(f"      {LABELS[key]} answered {first.status}; its log ends:\n"
                        + cell["server_log"][-1500:])
            elif query.resolution and first.body.get("resolution") is None:
                cell.update(available=False,
                            error="the answer names no resolution: rollup tiers not served")
            else:
                cell.update(available=True, served_by=first.body.get("resolution"))
                answers[key] = points_of(first.body)
                live.append(key)
            row["systems"][key] = cell
        times: dict[str, list[float]] = {k: [] for k in live}
        for i in range(runs if live else 0):
            turn = i % len(live)
            for key in live[turn:] + live[:turn]:
                answer = await ask(session, servers[key], query, end_s, parse=False)
                if answer.status == 200:
                    times[key].append(answer.seconds)
        for key in live:
            row["systems"][key].update(runs=len(times[key]), **latency_summary(times[key]))
        shape = (query.promql, query.range_s, query.step_s)
        if "prometheus" in answers:
            references[shape] = answers["prometheus"]
        for key in live:
            reference = references.get(shape)
            if key != "prometheus" and reference is not None:
                row["systems"][key]["vs_prometheus"] = compare(answers[key], reference,
                                                               tolerance)
        out[query.key] = row
    return out


# =========================================================================== the run

def _ratio(a: Any, b: Any) -> float:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return math.nan
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return math.nan
    return float(a) / float(b)


def ratios(result: Mapping[str, Any]) -> dict[str, Any]:
    """Geoplex's figures over Prometheus's and over VictoriaMetrics's."""
    ing, sto = result.get("ingest", {}), result.get("storage", {})
    series = result["data"]["series"]

    def per(key: str, source: Mapping[str, Any], field_name: str) -> float:
        value = source.get(key, {}).get(field_name, math.nan)
        return float(value) if isinstance(value, (int, float)) else math.nan

    figures: dict[str, dict[str, float]] = {}
    for key in SYSTEMS:
        f = {"samples_per_s": per(key, ing, "samples_per_s"),
             "samples_per_cpu_s": per(key, ing, "samples_per_cpu_s"),
             "samples_per_cpu_s_ingest_only": per(key, ing, "samples_per_cpu_s_ingest_only"),
             "bytes_per_sample": per(key, sto, "bytes_per_sample"),
             "rss_per_series_bytes": per(key, ing, "rss_bytes") / series,
             "rss_growth_per_series_bytes":
                 (per(key, ing, "rss_bytes")
                  - per(key, result.get("servers", {}), "rss_empty_bytes")) / series}
        for qkey, row in result.get("queries", {}).items():
            cell = row["systems"].get(key, {})
            if cell.get("available"):
                f[f"{qkey}_p50_ms"] = cell["p50_ms"]
                f[f"{qkey}_p99_ms"] = cell["p99_ms"]
        figures[key] = f
    out: dict[str, dict[str, float]] = {"geoplex_over_prometheus": {},
                                        "geoplex_over_vm": {}}
    for name, value in figures["geoplex"].items():
        base = name.replace("_long_1m", "_long").replace("_long_1h", "_long")
        out["geoplex_over_prometheus"][name] = _ratio(value, figures["prometheus"].get(base))
        out["geoplex_over_vm"][name] = _ratio(value, figures["vm"].get(base))
    return {**out, "figures": figures}


async def measure(args: argparse.Namespace, work: Path, step: Steps,
                  result: dict[str, Any]) -> None:
    end_ms = (int(time.time() * 1000) - 60_000) // SCRAPE_MS * SCRAPE_MS
    step(1, "data", f"generating {args.hosts} hosts x {SERIES_PER_HOST} series, "
         f"{args.hours:g} h of 15 s scrapes...")
    dataset = generate(args.hosts, args.hours, end_ms, args.seed)
    log(f"    {dataset.series:,} series x {dataset.values.shape[1]:,} scrapes = "
        f"{dataset.samples:,} samples; {dataset.resets} of {args.hosts} hosts reboot")
    t0 = time.perf_counter()
    slices = encode(dataset, args.batch_samples, args.shards)
    bodies = [b for s in slices for b in s]
    wire = sum(len(b.data) for b in bodies)
    result["data"] = {
        "hosts": args.hosts, "series": dataset.series, "samples": dataset.samples,
        "scrapes": int(dataset.values.shape[1]), "hours": args.hours,
        "first_ms": dataset.first_ms, "last_ms": dataset.last_ms,
        "hosts_rebooted": dataset.resets, "bodies": len(bodies), "slices": len(slices),
        "samples_per_body": dataset.samples / len(bodies), "wire_bytes": wire,
        "wire_bytes_per_sample": wire / dataset.samples,
        "raw_bytes_per_sample": sum(b.raw_bytes for b in bodies) / dataset.samples,
        "encode_s": time.perf_counter() - t0}
    log(f"    {len(bodies):,} remote-write bodies, {wire / 2**20:,.1f} MiB on the wire "
        f"({wire / dataset.samples:.2f} B/sample), encoded in "
        f"{result['data']['encode_s']:.1f} s")
    del dataset  # the bodies are all that is sent

    step(2, "servers", "starting Geoplex telemetry, Prometheus and VictoriaMetrics...")
    with contextlib.ExitStack() as stack:
        servers = {"geoplex": stack.enter_context(geoplex_server(work)),
                   "prometheus": stack.enter_context(prometheus_server(work)),
                   "vm": stack.enter_context(vm_server(work))}
        await asyncio.sleep(2.0)
        for server in servers.values():
            server.rss_empty_bytes = rss_bytes(server.pid)
        result["servers"] = {k: {"version": s.version, "pid": s.pid, "http": s.http,
                                 "rss_empty_bytes": s.rss_empty_bytes}
                             for k, s in servers.items()}
        log("    " + ", ".join(f"{LABELS[k]} {s.version} at {s.http}"
                               for k, s in servers.items()))
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as session:
            step(3, "ingest", f"remote write, one server at a time, {args.shards} bodies "
                 "in flight...")
            result["ingest"] = {}
            for key in args.systems:
                result["quiet"].append(quiet(args, f"ingest into {LABELS[key]}"))
                log(f"  {LABELS[key]}...")
                cell = await ingest(session, servers[key], slices, args.shards,
                                    args.settle_max, args.settle_min)
                result["ingest"][key] = cell
                log(f"    {fmt_num(cell['samples_per_s'])} samples/s, "
                    f"{fmt_num(cell['samples_per_cpu_s'])} per server CPU-s, "
                    f"{cell['accepted']:,} of {cell['samples']:,} accepted "
                    f"({cell['status_codes']}), settled in {cell['settle_s']:.0f} s")
                if cell["first_error"]:
                    log(f"    first error: {cell['first_error']}")
            del slices, bodies

            step(4, "storage", "bytes per sample on disk after compaction...")
            result["storage"] = {}
            if "geoplex" in args.systems:
                result["storage"]["geoplex"] = await storage_geoplex(servers["geoplex"])
            if "prometheus" in args.systems:
                await settle(servers["prometheus"].pid, args.settle_max)
                result["storage"]["prometheus"] = storage_prometheus(servers["prometheus"])
            if "vm" in args.systems:
                result["storage"]["vm"] = await storage_vm(session, servers["vm"],
                                                           args.settle_max)
            for key, cell in result["storage"].items():
                log(f"    {LABELS[key]}: {cell['bytes_per_sample']:.3f} B/sample "
                    f"({cell['block_bytes'] / 2**20:,.1f} MiB, {cell['block_samples']:,.0f} "
                    "samples)")

            step(5, "queries", f"dashboard queries, {args.runs} timed runs each...")
            result["quiet"].append(quiet(args, "queries"))
            end_s = result["data"]["last_ms"] // 1000 // 360 * 360
            result["query_end_s"] = end_s
            live = {k: s for k, s in servers.items() if k in args.systems}
            result["queries"] = await run_queries(session, live, queries_for(args.hours),
                                                  end_s, args.runs, args.tolerance)
            for key, server in servers.items():
                result["servers"][key]["rss_end_bytes"] = rss_bytes(server.pid)


def quiet(args: argparse.Namespace, label: str) -> dict[str, Any]:
    """Wait (at most ``--quiet-wait`` s) for an idle machine; what it found."""
    if args.quiet_wait <= 0:
        return {"label": label, "busy_pct": math.nan, "waited_s": 0.0, "timed_out": False,
                "skipped": True}
    t0 = time.perf_counter()
    busy = wait_for_quiet(max_wait=args.quiet_wait)
    waited = time.perf_counter() - t0
    if busy >= 20.0:
        log(f"    (machine still {busy:.0f}% busy before {label})")
    return {"label": label, "busy_pct": busy, "waited_s": waited, "timed_out": busy >= 20.0}


def amain(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": NAME, "machine": machine_info(),
        "settings": {k: (list(v) if isinstance(v, (list, tuple)) else v)
                     for k, v in vars(args).items() if k != "report_only"},
        "quiet": []}
    step = Steps(5)
    with tempfile.TemporaryDirectory(prefix="geoplex-bench-telemetry-") as work:
        asyncio.run(measure(args, Path(work), step, result))
    step.done()
    result["ratios"] = ratios(result)
    result["step_s"] = step.seconds
    result["elapsed_s"] = time.perf_counter() - started
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    return result


# =========================================================================== report

def _ms(cell: Mapping[str, Any]) -> str:
    if not cell.get("available"):
        return "not available"
    return f"{fmt_num(cell['p50_ms'], 1)} / {fmt_num(cell['p99_ms'], 1)}"


def _x(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}x" if math.isfinite(value) else "-"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "not met")


def report(result: Mapping[str, Any]) -> str:
    s, d = result["settings"], result["data"]
    ing, sto = result.get("ingest", {}), result.get("storage", {})
    figures = result["ratios"]["figures"]
    over_p = result["ratios"]["geoplex_over_prometheus"]
    over_v = result["ratios"]["geoplex_over_vm"]
    versions = result.get("servers", {})

    def version(key: str) -> str:
        return versions.get(key, {}).get("version", "?")

    lines = [
        "`python -m bench.telemetry` (`make bench-telemetry`): the same node-exporter-like "
        f"data, {d['hosts']} hosts x {SERIES_PER_HOST} series = {d['series']:,} series "
        f"(counters with resets: {d['hosts_rebooted']} hosts reboot; gauges; two classic "
        f"histograms a host), 15 s scrapes over {d['hours']:g} h = {d['samples']:,} samples, "
        f"sent as the same {d['bodies']:,} Prometheus remote-write bodies (protobuf + snappy, "
        f"{d['samples_per_body']:,.0f} samples each, {s['shards']} in flight on disjoint "
        "series, in time order) to Geoplex telemetry "
        f"({version('geoplex')}, 2 h blocks, the WAL fsynced before each acknowledgement, "
        f"which the other two do not do), Prometheus {version('prometheus')} "
        f"(`--web.enable-remote-write-receiver`) and VictoriaMetrics {version('vm')} "
        "(`-search.latencyOffset=0s`, cache off), each its own process on loopback, one at a "
        "time. *Per CPU-s*: samples over the server process's CPU time (`/proc/<pid>/stat`), "
        "from the first body until the last is acknowledged, and until it has gone quiet "
        f"at least {s.get('settle_min', 0):.0f} s after the last (its background work "
        "included: Prometheus's head compaction; Geoplex's cutting, compaction and its "
        "1-minute and 1-hour rollups, which the others do not make). *Bytes/sample*: on "
        "disk after compaction, index included: "
        "Prometheus's block directories over their samples (the head's last 2-3 h are not "
        "in blocks), VictoriaMetrics's data and index after `/internal/force_merge` over its "
        "rows, Geoplex's blocks (`GetStorageInfo`) over theirs. *RSS/series*: the process's "
        "RSS once quiet after its load, over the series. Queries: `/api/v1/query_range`, "
        f"{s['runs']} timed runs each after an untimed one, the servers taking turns; "
        "p50 / p99 ms. Aims: at most "
        f"{AIM_BYTES_PER_SAMPLE} bytes/sample (Gorilla), ingest per core at least "
        f"Prometheus's, dashboard queries within {AIM_QUERY_RATIO:g}x of Prometheus's, "
        "rollup queries faster than Prometheus scanning raw samples.", "",
        f"Machine: {machine_line(result['machine'])}. Whole run: "
        f"{fmt_num(result.get('elapsed_s', math.nan) / 60, 1)} min.", ""]
    waits = result.get("quiet", [])
    busy = [w for w in waits if w.get("timed_out")]
    if busy:
        lines += [f"*Noise*: the machine was still busy (other work on it) before "
                  + ", ".join(f"{w['label']} ({w['busy_pct']:.0f}% of a core)" for w in busy)
                  + ": those numbers may be low.", ""]
    if any(w.get("skipped") for w in waits):
        lines += ["*Noise*: no wait for an idle machine in this run (`--quiet-wait 0`).", ""]

    headers = ["measure", "Geoplex", "Prometheus", "VictoriaMetrics", "Geoplex / Prom.",
               "Geoplex / VM", "aim"]
    g, p = figures["geoplex"], figures["prometheus"]
    per_core_ok = (g["samples_per_cpu_s"] >= p["samples_per_cpu_s"]
                   if math.isfinite(g["samples_per_cpu_s"] + p["samples_per_cpu_s"]) else None)
    write_ok = (g["samples_per_cpu_s_ingest_only"] >= p["samples_per_cpu_s_ingest_only"]
                if math.isfinite(g["samples_per_cpu_s_ingest_only"]
                                 + p["samples_per_cpu_s_ingest_only"]) else None)
    bytes_ok = (g["bytes_per_sample"] <= AIM_BYTES_PER_SAMPLE
                if math.isfinite(g["bytes_per_sample"]) else None)
    rows: list[list[str]] = [
        ["ingest, samples/s", *(fmt_num(figures[k]["samples_per_s"]) for k in SYSTEMS),
         _x(over_p["samples_per_s"]), _x(over_v["samples_per_s"]), ""],
        ["ingest, samples per server CPU-s (until the last write is acknowledged)",
         *(fmt_num(figures[k]["samples_per_cpu_s_ingest_only"]) for k in SYSTEMS),
         _x(over_p["samples_per_cpu_s_ingest_only"]),
         _x(over_v["samples_per_cpu_s_ingest_only"]),
         f">= Prometheus: {_verdict(write_ok)}"],
        ["ingest, samples per server CPU-s (with the background work it caused)",
         *(fmt_num(figures[k]["samples_per_cpu_s"]) for k in SYSTEMS),
         _x(over_p["samples_per_cpu_s"]), _x(over_v["samples_per_cpu_s"]),
         f">= Prometheus: {_verdict(per_core_ok)}"],
        ["bytes/sample on disk", *(fmt_num(figures[k]["bytes_per_sample"], 3) for k in SYSTEMS),
         _x(over_p["bytes_per_sample"]), _x(over_v["bytes_per_sample"]),
         f"<= {AIM_BYTES_PER_SAMPLE}: {_verdict(bytes_ok)}"],
        ["RSS per series, bytes",
         *(fmt_num(figures[k]["rss_per_series_bytes"]) for k in SYSTEMS),
         _x(over_p["rss_per_series_bytes"]), _x(over_v["rss_per_series_bytes"]), ""],
        ["RSS over the empty server's, per series, bytes",
         *(fmt_num(figures[k]["rss_growth_per_series_bytes"]) for k in SYSTEMS),
         _x(over_p["rss_growth_per_series_bytes"]), _x(over_v["rss_growth_per_series_bytes"]),
         ""],
    ]
    queries = result.get("queries", {})
    for qkey, row in queries.items():
        cells = row["systems"]
        gcell = cells.get("geoplex", {})
        ratio_p50 = over_p.get(f"{qkey}_p50_ms", math.nan)
        ratio_p99 = over_p.get(f"{qkey}_p99_ms", math.nan)
        if row["resolution"]:
            aim_ok = ratio_p50 < 1.0 if math.isfinite(ratio_p50) else None
            aim = f"< Prometheus raw: {_verdict(aim_ok)}"
            base = queries.get(qkey.rsplit("_", 1)[0], {}).get("systems", {})
            prom, vm = _ms(base.get("prometheus", {})) + " (raw)", _ms(base.get("vm", {})) + \
                " (raw)"
            if gcell.get("available") and gcell.get("served_by"):
                title = f"{row['title']} (served by {gcell['served_by']}), p50 / p99 ms"
            else:
                title = f"{row['title']}, p50 / p99 ms"
        else:
            aim_ok = ratio_p50 <= AIM_QUERY_RATIO if math.isfinite(ratio_p50) else None
            aim = f"<= {AIM_QUERY_RATIO:g}x Prometheus: {_verdict(aim_ok)}"
            prom, vm = _ms(cells.get("prometheus", {})), _ms(cells.get("vm", {}))
            served = gcell.get("served_by")
            title = (f"{row['title']}, p50 / p99 ms" if served in (None, "raw")
                     else f"{row['title']} (Geoplex served it from {served}), p50 / p99 ms")
        rows.append([title, _ms(gcell), prom, vm,
                     f"{_x(ratio_p50)} / {_x(ratio_p99)}",
                     f"{_x(over_v.get(f'{qkey}_p50_ms', math.nan))} / "
                     f"{_x(over_v.get(f'{qkey}_p99_ms', math.nan))}", aim])
    lines += [markdown_table(headers, rows, "lrrrrrl"), ""]

    agree_rows = []
    for qkey, row in queries.items():
        for key in ("geoplex", "vm"):
            cmp = row["systems"].get(key, {}).get("vs_prometheus")
            if cmp is None:
                continue
            agree_rows.append([f"{row['title']}", LABELS[key],
                               f"{cmp['series']} / {cmp['reference_series']}",
                               fmt_num(cmp["points_compared"]), fmt_num(cmp["points_missing"]),
                               fmt_num(cmp["mismatched"]), fmt_num(cmp["mismatched_loose"]),
                               f"{cmp['max_rel_diff']:.2g}"])
    if agree_rows:
        lines += [f"Answers against Prometheus's (values within a relative "
                  f"{s['tolerance']:g}; VictoriaMetrics's MetricsQL `rate` uses the sample "
                  "before the window and does not extrapolate, so its values differ by design):",
                  "", markdown_table(["query", "server", "series / Prometheus's",
                                      "points compared", "points on one side only",
                                      f"values differing by > {s['tolerance']:g}",
                                      f"by > {LOOSE_TOLERANCE:g}", "max rel. diff"],
                                     agree_rows, "llrrrrrr"), ""]
    notes = []
    for key in SYSTEMS:
        cell = ing.get(key, {})
        if cell and cell.get("accepted") != cell.get("samples"):
            notes.append(f"{LABELS[key]} accepted {cell['accepted']:,} of "
                         f"{cell['samples']:,} samples ({cell['status_codes']}; first error: "
                         f"{cell['first_error']})")
    geo = sto.get("geoplex", {})
    if geo:
        tiers = ", ".join(f"{name} {t['blocks']} blocks, {t['bytes'] / 2**20:,.1f} MiB"
                          for name, t in geo.get("tiers", {}).items()
                          if name != "raw" and t.get("blocks"))
        notes.append(f"Geoplex: {geo['blocks']} raw blocks with {geo['block_samples']:,} "
                     f"samples (the head {geo['head_samples']:,})"
                     + (f"; its rollup tiers take {tiers} more" if tiers else ""))
    prom_st = sto.get("prometheus", {})
    if prom_st:
        notes.append(f"Prometheus: {prom_st['blocks']} blocks (compaction levels "
                     f"{prom_st['levels']}) with {prom_st['block_samples']:,} samples, "
                     f"{fmt_num(prom_st.get('data_bytes_per_sample', math.nan), 3)} B/sample "
                     "in their chunks alone")
    vm_st = sto.get("vm", {})
    if vm_st:
        notes.append(f"VictoriaMetrics: {fmt_num(vm_st.get('data_bytes_per_sample', math.nan), 3)}"
                     " B/sample in its data parts alone")
    unavailable = [row["title"] for row in queries.values()
                   if row["resolution"] and not row["systems"]["geoplex"].get("available")]
    if unavailable:
        first = next(row["systems"]["geoplex"] for row in queries.values()
                     if row["resolution"] and not row["systems"]["geoplex"].get("available"))
        notes.append("not available: " + ", ".join(unavailable) + f" (HTTP {first['status']}: "
                     f"{first.get('error', '')[:160]})")
    if notes:
        lines += ["Notes: " + "; ".join(notes) + ".", ""]
    lines.append(f"Raw numbers: `bench/results/{NAME}.json`.")
    return "\n".join(lines)


def write_report(result: Mapping[str, Any]) -> None:
    path = write_section(NAME, TITLE + "\n\n" + report(result))
    log(f"wrote the '{NAME}' section of {path}")


# =========================================================================== main

def _systems(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in SYSTEMS]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(SYSTEMS)}")
    return [v for v in SYSTEMS if v in values]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.telemetry", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--hosts", type=int, default=8,
        help=f"hosts of {SERIES_PER_HOST} series each (default 8: 5 M samples over 26 h, "
             "which Geoplex ingests in about 3 min on 2 cores; 50 hosts take it ~20 min)")
    add("--hours", type=float, default=26.0,
        help="hours of 15 s scrapes, ending a minute ago (default 26)")
    add("--batch-samples", type=int, default=10_000,
        help="samples per remote-write body (default 10,000)")
    add("--shards", type=int, default=2,
        help="bodies in flight at once, each on its own series (default 2)")
    add("--runs", type=int, default=30, help="timed runs of each query (default 30)")
    add("--tolerance", type=float, default=1e-6,
        help="relative difference allowed between answers (default 1e-6)")
    add("--systems", type=_systems, default=list(SYSTEMS),
        help="which servers, comma-separated (the comparison needs all three)")
    add("--seed", type=int, default=20240612, help="the data's seed")
    add("--quiet-wait", type=float, default=30.0,
        help="longest wait in seconds for an idle machine before each ingest and the "
             "queries (0: do not wait; default 30)")
    add("--settle-max", type=float, default=120.0,
        help="longest wait for a server to go quiet after its ingest (default 120)")
    add("--settle-min", type=float, default=75.0,
        help="seconds to wait after an ingest before looking for quiet, so that each "
             "server's timed background work (compaction, downsampling) is counted "
             "(default 75: Prometheus checks for compactions every minute)")
    add("--quick", action="store_true",
        help="smoke run: 5 hosts, 3 hours, 5 runs, no quiet wait; implies --no-write "
             "(flags given beside it win)")
    add("--no-write", action="store_true",
        help="print only: do not write bench/results/telemetry.json or BENCHMARKS.md")
    add("--report-only", action="store_true",
        help="measure nothing: re-render the section from bench/results/telemetry.json")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    if args.quick:
        args.no_write = True
    if args.hosts < 1 or args.hours <= 0.5 or args.runs < 1 or args.shards < 1 \
            or args.batch_samples < 1:
        parser.error("--hosts, --runs, --shards, --batch-samples >= 1; --hours > 0.5")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report_only:
        write_report(read_results(NAME))
        return
    run_and_report(lambda: amain(args), NAME, report, write_report, no_write=args.no_write)


if __name__ == "__main__":
    main()
