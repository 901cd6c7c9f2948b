"""Helpers every Geoplex benchmark shares: servers, load, statistics, machine, output.

A benchmark module (``bench/runtime.py``, ``bench/proximity.py``...) typically::

    with start_server_processes([sys.executable, "-m", "bench._mesh_server"], 1,
                                {"GEOPLEX_BENCH_PORT": "0"}) as servers:
        target = servers.addresses[0]
        result = asyncio.run(closed_loop(per_worker(op), concurrency=16,
                                         warmup=1.0, duration=4.0, pids=servers.pids))
    print(result.calls_per_s, result.p50_ms, result.p99_ms)
    write_results("name", {"machine": machine_info(), "cells": [...]})
    write_section("name", markdown_table(headers, rows))

What is here:

- servers: :func:`start_server_processes` (argv, count, env) -> :class:`ServerProcesses`
  (``addresses``, ``pids``, ``stop()``, a context manager), :func:`free_port`;
  :func:`local_backends` for the Redis and MongoDB a service benchmark stands on;
- load: :func:`closed_loop` (worker factory, concurrency, warmup, duration, pids)
  -> :class:`LoadResult`; :func:`per_worker` for stateless ops;
  :func:`combine_rounds` to merge repeated measurements of one cell;
- noise on a shared machine: :func:`wait_for_quiet` (and ``_async``),
  :func:`cpu_usage` (each result's ``cpu`` says how much of the machine other
  work took);
- statistics: :func:`percentile`, :func:`latency_summary`;
- output: :func:`machine_info` / :func:`machine_line`, :func:`write_results`
  (``bench/results/<name>.json``), :func:`write_section` (the ``<name>`` section of
  ``BENCHMARKS.md``), :func:`markdown_table`, :func:`fmt_num`.

Standard library only, so the harness adds no dependency of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geoplex.infra.local import LocalInfra
from geoplex.infra.local import free_port as free_port  # re-exported
from geoplex.infra.process import (  # noqa: F401 - ProcessError re-exported
    READY_LINE, Process, ProcessError, stop_all)

ROOT = Path(__file__).resolve().parent.parent
"""The project root (where ``BENCHMARKS.md`` lives)."""
RESULTS_DIR = Path(__file__).resolve().parent / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"

BENCHMARKS_INTRO = """\
# Geoplex benchmarks

Numbers measured on one machine by the modules under `bench/` (`make bench`, or
`python -m bench.<name>`); each section is rewritten by its own benchmark, between
its `<!-- name:begin -->` and `<!-- name:end -->` markers, so edit only outside them.
Raw results, with the machine they ran on, are in `bench/results/<name>.json`.

Every service benchmark reports its throughput against the runtime's own ceiling
(the `runtime` section): the cheapest call the shared gRPC runtime can serve on
the same machine.
"""

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --------------------------------------------------------------------------- statistics

def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linearly interpolated.

    Returns ``nan`` for an empty sequence.
    """
    n = len(sorted_values)
    if n == 0:
        return math.nan
    if n == 1:
        return float(sorted_values[0])
    rank = (n - 1) * min(max(q, 0.0), 100.0) / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, n - 1)
    frac = rank - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """``{"p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms"}`` of latencies in seconds."""
    values = sorted(latencies_s)
    if not values:
        return {k: math.nan for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")}
    return {
        "p50_ms": percentile(values, 50) * 1e3,
        "p90_ms": percentile(values, 90) * 1e3,
        "p99_ms": percentile(values, 99) * 1e3,
        "max_ms": values[-1] * 1e3,
        "mean_ms": sum(values) / len(values) * 1e3,
    }


# --------------------------------------------------------------------------- CPU accounting

def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads).

    Reads ``/proc/<pid>/stat``; returns ``nan`` if the process is gone.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def system_cpu_seconds() -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of the whole machine so far, summed over cores."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return math.nan, math.nan
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already included in user/nice
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU counters at one instant: this process, some other processes, the machine."""

    wall: float
    own: float
    pids: tuple[float, ...]
    busy: float
    total: float

    @classmethod
    def take(cls, pids: Sequence[int] = ()) -> CpuSample:
        busy, total = system_cpu_seconds()
        return cls(time.perf_counter(), time.process_time(),
                   tuple(process_cpu_seconds(p) for p in pids), busy, total)


def cpu_usage(start: CpuSample, end: CpuSample) -> dict[str, Any]:
    """Percent of one core used between two samples.

    ``client_cpu_pct``: this process; ``server_cpu_pct``: the sampled pids summed
    (``server_cpu_pct_each``: one per pid);
    ``other_cpu_pct``: everything else on the machine (noise from other work; it
    should stay near 0 for a clean measurement); ``machine_cpu_pct``: all cores busy
    (100 x nproc when saturated).
    """
    wall = end.wall - start.wall
    if wall <= 0:
        return {}
    own = (end.own - start.own) / wall * 100
    servers = sum(b - a for a, b in zip(start.pids, end.pids)) / wall * 100
    busy = (end.busy - start.busy) / wall * 100
    return {
        "client_cpu_pct": own,
        "server_cpu_pct": servers,
        "server_cpu_pct_each": [(b - a) / wall * 100 for a, b in zip(start.pids, end.pids)],
        "other_cpu_pct": max(busy - own - servers, 0.0),
        "machine_cpu_pct": busy,
    }


# --------------------------------------------------------------------------- load generation

WorkerOp = Callable[[], Awaitable[object]]
"""One call of a closed-loop worker; awaited repeatedly, its latency recorded."""
WorkerFactory = Callable[[int], contextlib.AbstractAsyncContextManager[WorkerOp]]
"""``factory(worker_index)`` -> async context manager yielding that worker's op.

Use it for per-worker state, e.g. one long-lived stream per worker; see
:func:`per_worker` for stateless calls.
"""


def per_worker(op: WorkerOp) -> WorkerFactory:
    """A :data:`WorkerFactory` giving every worker the same stateless ``op``."""

    @contextlib.asynccontextmanager
    async def factory(_index: int) -> AsyncIterator[WorkerOp]:
        yield op

    return factory


@dataclass
class LoadResult:
    """What :func:`closed_loop` measured in its window (after warmup)."""

    concurrency: int
    duration_s: float
    calls: int
    errors: int
    calls_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    cpu: dict[str, Any] = field(default_factory=dict)
    first_error: str | None = None
    slices: list[dict[str, float]] = field(default_factory=list)
    """Per ``slice_s`` part of the window: ``calls_per_s`` and the CPU shares."""
    latencies_s: list[float] = field(default_factory=list, repr=False)
    """Every recorded latency (seconds), for pooling rounds; left out of :meth:`as_dict`."""

    @property
    def slice_range(self) -> tuple[float, float]:
        """Lowest and highest calls/s of the slices (how steady the window was)."""
        rates = [s["calls_per_s"] for s in self.slices]
        return (min(rates), max(rates)) if rates else (math.nan, math.nan)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["latencies_s"]
        return data


async def closed_loop(factory: WorkerFactory, *, concurrency: int, warmup: float,
                      duration: float, pids: Sequence[int] = (),
                      max_errors: int = 1000, slice_s: float = 0.5) -> LoadResult:
    """Run ``concurrency`` asyncio workers, each awaiting its op back to back.

    Every call that *completes* inside ``[start + warmup, start + warmup + duration]``
    counts, with its latency (``time.perf_counter`` around the await); calls
    completing during warmup or after the window are dropped. An exception from the
    op counts as an error and the worker goes on, until ``max_errors`` in total
    stop every worker. ``pids`` (e.g. the server processes) have their CPU use
    sampled at the window's edges, beside this process's and the machine's
    (see :func:`cpu_usage`), and every ``slice_s`` seconds to give
    :attr:`LoadResult.slices` (throughput and noise over time).
    """
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    stop = False
    ready = asyncio.Event()
    window: list[float] = []  # [t0, t1], set once every worker is ready

    # The clock starts once every worker has its state (e.g. its stream open),
    # so set-up never eats into warmup.
    all_entered = asyncio.Event()
    counted_factory = _counting(factory, concurrency, all_entered)

    async def worker(index: int) -> None:
        nonlocal errors, first_error, stop
        async with counted_factory(index) as op:
            await ready.wait()
            t0, t1 = window
            clock = time.perf_counter
            record = latencies.append
            while not stop:
                started = clock()
                try:
                    await op()
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors += 1
                    if first_error is None:
                        first_error = f"{type(exc).__name__}: {exc}"[:500]
                    if errors >= max_errors:
                        stop = True
                    if clock() > t1:
                        break
                    continue
                ended = clock()
                if ended > t1:
                    break
                if ended >= t0:
                    record(ended - started)

    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    try:
        waiter = asyncio.create_task(all_entered.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:  # a worker failed while setting up
            waiter.cancel()
            for task in done:
                task.result()
        start = time.perf_counter()
        window[:] = [start + warmup, start + warmup + duration]
        ready.set()
        await asyncio.sleep(max(window[0] - time.perf_counter(), 0))
        marks = [(0, CpuSample.take(pids))]
        parts = max(1, round(duration / slice_s))
        for k in range(1, parts + 1):
            await asyncio.sleep(max(window[0] + duration * k / parts - time.perf_counter(), 0))
            marks.append((len(latencies), CpuSample.take(pids)))
        await asyncio.gather(*tasks)
    finally:
        stop = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    stats = latency_summary(latencies)
    slices = []
    for (n0, c0), (n1, c1) in zip(marks, marks[1:]):
        usage = cpu_usage(c0, c1)
        usage.pop("server_cpu_pct_each", None)
        slices.append({"calls_per_s": (n1 - n0) / (c1.wall - c0.wall), **usage})
    return LoadResult(concurrency=concurrency, duration_s=duration, calls=len(latencies),
                      errors=errors, calls_per_s=len(latencies) / duration,
                      cpu=cpu_usage(marks[0][1], marks[-1][1]), first_error=first_error,
                      slices=slices, latencies_s=latencies, **stats)


def combine_rounds(rounds: Sequence[LoadResult],
                   max_other_pct: float | None = None) -> dict[str, Any]:
    """One cell's result from several rounds (the same measurement repeated apart in time).

    With ``max_other_pct``, rounds during which other work on the machine took more
    than that share of a core are left out, unless that would leave none
    (``rounds_used`` lists the indexes kept). Of the rounds kept, ``calls_per_s``
    is the median rate (``calls_per_s_rounds`` lists every round's), so one
    disturbed round does not move it; latency percentiles pool their calls; CPU
    shares are averaged; ``calls`` and ``errors`` are summed.
    """
    used = list(range(len(rounds)))
    if max_other_pct is not None:
        clean = [i for i, r in enumerate(rounds)
                 if r.cpu.get("other_cpu_pct", 0.0) <= max_other_pct]
        used = clean or used
    all_rounds = rounds
    rounds = [rounds[i] for i in used]
    rates = sorted(r.calls_per_s for r in rounds)
    mid = len(rates) // 2
    median = rates[mid] if len(rates) % 2 else (rates[mid - 1] + rates[mid]) / 2
    pooled: list[float] = [x for r in rounds for x in r.latencies_s]
    cpu: dict[str, Any] = {}
    for key in {k for r in rounds for k in r.cpu}:
        values = [r.cpu[key] for r in rounds if key in r.cpu]
        if values and isinstance(values[0], list):
            cpu[key] = [sum(col) / len(col) for col in zip(*values)]
        else:
            cpu[key] = sum(values) / len(values)
    return {
        "concurrency": rounds[0].concurrency,
        "duration_s": sum(r.duration_s for r in rounds),
        "rounds": len(all_rounds),
        "rounds_used": used,
        "calls": sum(r.calls for r in rounds),
        "errors": sum(r.errors for r in rounds),
        "calls_per_s": median,
        "calls_per_s_rounds": [r.calls_per_s for r in all_rounds],
        **latency_summary(pooled),
        "cpu": dict(sorted(cpu.items())),
        "first_error": next((r.first_error for r in rounds if r.first_error), None),
    }


def _counting(factory: WorkerFactory, expected: int, event: asyncio.Event) -> WorkerFactory:
    """``factory`` that sets ``event`` once ``expected`` workers have entered it."""
    entered = 0

    @contextlib.asynccontextmanager
    async def counted(index: int) -> AsyncIterator[WorkerOp]:
        nonlocal entered
        async with factory(index) as op:
            entered += 1
            if entered == expected:
                event.set()
            yield op

    return counted


# --------------------------------------------------------------------------- server processes

def wait_for_quiet(max_wait: float = 15.0, busy_pct: float = 20.0,
                   probe_s: float = 0.5) -> float:
    """Block until the whole machine uses less than ``busy_pct`` % of one core over a
    ``probe_s`` probe (call it while nothing of yours runs), or ``max_wait`` passes.

    Returns the busy percentage of the last probe. Benchmarks on a shared machine
    call it before each measurement so other work does not land in the window.
    See :func:`wait_for_quiet_async` inside an event loop.
    """
    deadline = time.monotonic() + max_wait
    while True:
        b0, _ = system_cpu_seconds()
        time.sleep(probe_s)
        busy = (system_cpu_seconds()[0] - b0) / probe_s * 100
        if busy < busy_pct or time.monotonic() >= deadline:
            return busy


async def wait_for_quiet_async(max_wait: float = 15.0, busy_pct: float = 20.0,
                               probe_s: float = 0.5) -> float:
    """:func:`wait_for_quiet` for a coroutine: sleeps with ``asyncio.sleep``, so it
    can be cancelled (Ctrl-C) at once."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, _ = system_cpu_seconds()
        await asyncio.sleep(probe_s)
        busy = (system_cpu_seconds()[0] - b0) / probe_s * 100
        if busy < busy_pct or time.monotonic() >= deadline:
            return busy


@dataclass
class ServerProcesses:
    """Server processes started by :func:`start_server_processes`.

    ``addresses[i]`` is what process ``i`` printed after ``ready on`` (e.g.
    ``127.0.0.1:50051``); ``pids[i]`` its process id; ``logs[i]`` the file its
    output (the runtime's log) goes to, kept until :meth:`stop`.
    """

    processes: list[Process]
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def addresses(self) -> list[str]:
        return [p.address for p in self.processes]

    @property
    def pids(self) -> list[int]:
        return [p.proc.pid for p in self.processes if p.proc is not None]

    @property
    def logs(self) -> list[Path]:
        return [p.log_path for p in self.processes]

    @property
    def address(self) -> str:
        """The first process's address (the shared one when they share a port)."""
        return self.addresses[0]

    def log_tail(self, index: int, lines: int = 20) -> str:
        return self.processes[index].log_tail(lines)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM each process (graceful stop), SIGKILL any still alive after ``timeout``."""
        stop_all(self.processes, timeout)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ServerProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server_processes(argv: Sequence[str], count: int = 1,
                           env: Mapping[str, str] | None = None, *,
                           ready_timeout: float = 30.0,
                           cwd: Path | None = None) -> ServerProcesses:
    """Start ``count`` copies of ``argv`` and wait for each one's ``... ready on host:port``.

    ``env`` is added to this process's environment (e.g. ``GEOPLEX_<NAME>_PORT``
    and ``GEOPLEX_<NAME>_REUSE_PORT=true`` so that several copies share a port:
    pick it first with :func:`free_port`). Each copy is a
    :class:`geoplex.infra.process.Process`: its own session (a Ctrl-C in the
    terminal reaches only the benchmark, which stops them), stdin closed, its
    output written straight to a temporary log file (nothing in this process
    reads it), SIGTERM if this process dies without stopping them. Returns a
    :class:`ServerProcesses`, a context manager that stops them all on exit.
    Raises :class:`ProcessError` (after stopping what it started) if any copy
    exits or is not ready within ``ready_timeout`` seconds.
    """
    tmp = tempfile.TemporaryDirectory(prefix="geoplex-bench-")
    group = ServerProcesses([], tmp)
    try:
        for i in range(count):
            process = Process(f"{' '.join(argv)} (copy {i + 1}/{count})", list(argv),
                              Path(tmp.name) / f"server-{i}.log", env=dict(env or {}),
                              ready_line=READY_LINE, cwd=cwd or ROOT)
            group.processes.append(process)
            process.start().wait_ready(ready_timeout)
    except BaseException:
        group.stop()
        raise
    return group


@contextlib.contextmanager
def local_backends(name: str, progress: Callable[[str], None]) -> Iterator[LocalInfra]:
    """Redis and MongoDB for one run: the configured ones (``GEOPLEX_REDIS_URL``,
    ``GEOPLEX_MONGO_URI``), else embedded ones on a fresh temporary state directory
    (``geoplex-bench-<name>-...``); started and ready on entry (``infra.urls``), stopped
    and removed on exit."""
    from geoplex.tools.backends import configured_backends

    with tempfile.TemporaryDirectory(prefix=f"geoplex-bench-{name}-") as state:
        infra = LocalInfra(Path(state), backends=("redis", "mongo"),
                           configured=configured_backends(), progress=progress)
        with infra:
            yield infra


# --------------------------------------------------------------------------- machine and output

def machine_info() -> dict[str, Any]:
    """Where a result was measured: CPU model, core count, versions, date, load, commit."""
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    for dist in ("grpcio", "protobuf", "opentelemetry-sdk",
                 "opentelemetry-instrumentation-grpc", "geoplex"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[dist] = version(dist)
    commit = ""
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    return {
        "cpu_model": cpu_model or platform.processor() or "unknown",
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else [],
        "git_commit": commit,
        "argv": sys.argv,
    }


def machine_line(info: Mapping[str, Any]) -> str:
    """One Markdown line describing the machine from :func:`machine_info`."""
    pkgs = info.get("packages", {})
    return (f"{info['cpu_model']}, {info['nproc']} cores, Python {info['python']}, "
            f"grpcio {pkgs.get('grpcio', '?')}, {info['date']}"
            + (f", commit {info['git_commit']}" if info.get("git_commit") else ""))


def write_results(name: str, payload: Mapping[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Write ``payload`` as ``<directory>/<name>.json`` (indented, NaN as null); its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_no_nan(payload), indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def read_results(name: str, directory: Path = RESULTS_DIR) -> dict[str, Any]:
    """What :func:`write_results` wrote last for ``name`` (to re-render a report)."""
    loaded: dict[str, Any] = json.loads((directory / f"{name}.json").read_text())
    return loaded


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD,
                  intro: str = BENCHMARKS_INTRO) -> Path:
    """Put ``markdown`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path``.

    Only the text between the markers changes; a missing file is created with
    ``intro``; a file without the markers gets the section appended at its end.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else intro.rstrip() + "\n"
    if begin in text and end in text and text.index(begin) < text.index(end):
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                   align: str | None = None) -> str:
    """A GitHub Markdown table; ``align`` is one char per column: ``l``, ``r`` or ``c``."""
    align = align or "l" * len(headers)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_num(value: float, digits: int = 0) -> str:
    """``1234.5`` -> ``1,234`` (or with ``digits`` decimals); ``nan`` -> ``-``."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.{digits}f}"


def log(msg: str) -> None:
    """A progress line, flushed at once (a benchmark's output is read while it runs)."""
    print(msg, flush=True)


class Steps:
    """Numbered progress lines, each with the time since the start; the seconds each
    step took, for the results."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = self.last = time.perf_counter()
        self.current = ""
        self.seconds: dict[str, float] = {}

    def __call__(self, n: int, key: str, what: str) -> None:
        self.done()
        self.current = key
        log(f"[{n}/{self.total}] (+{time.perf_counter() - self.started:.0f} s) {what}")

    def done(self) -> None:
        now = time.perf_counter()
        if self.current:
            self.seconds[self.current] = now - self.last
        self.current, self.last = "", now


def run_and_report(run: Callable[[], dict[str, Any]], name: str,
                   report: Callable[[Mapping[str, Any]], str],
                   write_report: Callable[[Mapping[str, Any]], None], *,
                   no_write: bool) -> None:
    """Run a benchmark (Ctrl-C stops it quietly), print its report and, unless
    ``no_write``, write ``bench/results/<name>.json`` and its BENCHMARKS.md section."""
    with contextlib.suppress(KeyboardInterrupt):
        result = run()
        print("\n" + report(result), flush=True)
        log(f"run took {result['elapsed_s'] / 60:.1f} min")
        if not no_write:
            log(f"wrote {write_results(name, result)}")
            write_report(result)
