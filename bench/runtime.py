"""The shared runtime's own ceiling: how fast can a Geoplex server answer nothing?

``python -m bench.runtime`` (``make bench-runtime``) starts ``bench._mesh_server``
(the real runtime: :class:`GeoplexServer` with its interceptors, health and
reflection, serving only MeshService) in separate processes and drives it from
this one client process with closed-loop asyncio workers:

- unary ``MeshService/Ping`` (``response_size`` 0 and each ``--response-size``)
  and one message on a long-lived ``PingStream`` per worker (send, await reply);
- at each ``--concurrency`` (asyncio tasks over one channel, or two);
- against one server process and two sharing the port (``SO_REUSEPORT``, one
  channel pinned to each), with tracing off and on (spans built and dropped),
  at log level ``warning`` and at the default ``info`` (one line per RPC);
- through the raw generated stub (the ceiling), and through the typed
  ``clients.mesh.MeshClient`` to show what the SDK adds.

Each cell is measured in ``--rounds`` rounds (default 3), each a whole pass over
every cell with freshly started servers, so that a burst of other work on this
shared 2-core machine, or one unlucky placement of threads on cores, moves one
round and not the result. A round is ``--warmup`` seconds, then ``--duration /
--rounds`` seconds in which every completed call's latency is recorded
(``time.perf_counter``); each first waits for the machine to go idle and is
repeated when other work used more than ``--noise-pct`` of a core; a cell left
with fewer than two undisturbed rounds gets up to two extra ones. Waiting,
repeating and extra rounds share ``--noise-budget`` seconds per run. A cell
reports the median round's calls/s, p50 and p99 over all rounds' calls, and the
CPU used by this client, the servers and anything else on the machine.
``--rounds 1`` measures each cell once: 1 s warmup, then 4 s.
Writes ``bench/results/runtime.json`` and the ``runtime`` section of
``BENCHMARKS.md`` (``--no-write`` to skip; ``--quick`` implies it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import grpc
import grpc.aio

from geoplex.clients.mesh import MeshClient, open_spread_channels
from geoplex.mesh.v1 import mesh_pb2, mesh_pb2_grpc

from ._common import (RESULTS_DIR, LoadResult, ServerProcesses, WorkerFactory, WorkerOp,
                      closed_loop, combine_rounds, fmt_num, free_port, machine_info,
                      machine_line, markdown_table, per_worker, start_server_processes,
                      wait_for_quiet_async, write_results, write_section)

NAME = "runtime"
SERVER_ARGV = [sys.executable, "-m", "bench._mesh_server"]


@dataclass(frozen=True, slots=True)
class ServerSetup:
    """One way of running the bench server: processes, tracing, log level."""

    key: str
    label: str
    processes: int = 1
    tracing: bool = False
    log_level: str = "warning"

    def env(self, port: int) -> dict[str, str]:
        return {
            "GEOPLEX_BENCH_PORT": str(port),
            "GEOPLEX_BENCH_REUSE_PORT": "true" if self.processes > 1 else "false",
            "GEOPLEX_BENCH_TRACING": "discard" if self.tracing else "off",
            "GEOPLEX_TRACING": "off",
            "GEOPLEX_LOG_LEVEL": self.log_level,
        }


BASE = ServerSetup("base", "1 proc")
TRACING = ServerSetup("tracing", "1 proc, tracing on", tracing=True)
TWO = ServerSetup("two", "2 procs, shared port", processes=2)
INFO = ServerSetup("info", "1 proc, log info", log_level="info")
SETUPS = (BASE, TRACING, TWO, INFO)


@dataclass(frozen=True, slots=True)
class Cell:
    server: ServerSetup
    call: str  # "unary" | "stream"
    concurrency: int
    response_size: int = 0
    client: str = "stub"  # "stub" (raw generated stub) | "MeshClient" (typed SDK client)
    channels: int = 1

    def describe(self) -> str:
        return (f"{self.server.key:<7} {self.call:<6} {self.response_size:>5}B "
                f"{self.client:<10} {self.channels}ch c={self.concurrency:<3}")


def plan(concurrencies: Sequence[int], sizes: Sequence[int]) -> list[Cell]:
    """Every cell of one run, grouped by server setup (started once per round)."""
    head = 16 if 16 in concurrencies else max(concurrencies)
    multi = [c for c in concurrencies if c > 1] or [head]
    cells: list[Cell] = []
    # The ceiling, and what each variation costs against it.
    cells += [Cell(BASE, "unary", c) for c in concurrencies]
    cells += [Cell(BASE, "stream", c) for c in concurrencies]
    cells += [Cell(BASE, "unary", c, size) for size in sizes if size for c in concurrencies]
    cells += [Cell(BASE, "unary", c, channels=2) for c in multi]
    cells += [Cell(BASE, "unary", c, client="MeshClient") for c in concurrencies]
    cells += [Cell(TRACING, "unary", c) for c in concurrencies]
    cells += [Cell(TRACING, "stream", head)]
    cells += [Cell(TWO, "unary", c, channels=2) for c in multi]
    cells += [Cell(TWO, "stream", head, channels=2), Cell(TWO, "unary", head, channels=1)]
    cells += [Cell(INFO, "unary", c) for c in sorted({min(concurrencies), head})]
    return cells


# --------------------------------------------------------------------------- client side

def ping_factory(stubs: Sequence[mesh_pb2_grpc.MeshServiceAsyncStub], call: str, size: int
                 ) -> WorkerFactory:
    """Each worker's op: one unary Ping ("unary"), or one round trip on its own PingStream."""

    @contextlib.asynccontextmanager
    async def factory(index: int) -> AsyncIterator[WorkerOp]:
        stub = stubs[index % len(stubs)]
        if call == "unary":
            ping, unary = stub.Ping, mesh_pb2.PingRequest(response_size=size)
            yield lambda: ping(unary)
            return
        stream, request = stub.PingStream(), mesh_pb2.PingStreamRequest(response_size=size)

        async def op() -> None:
            await stream.write(request)
            if await stream.read() is grpc.aio.EOF:
                raise RuntimeError("PingStream ended early")

        try:
            yield op
        finally:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await stream.done_writing()
                while await stream.read() is not grpc.aio.EOF:
                    pass

    return factory


async def check_payload(cell: Cell, stub: mesh_pb2_grpc.MeshServiceAsyncStub) -> None:
    """One call before the cell: the server answers with the asked-for size."""
    if cell.call == "unary":
        response = await stub.Ping(mesh_pb2.PingRequest(response_size=cell.response_size),
                                   timeout=10)
        got = len(response.payload)
    else:
        call = stub.PingStream()
        await call.write(mesh_pb2.PingStreamRequest(response_size=cell.response_size))
        first = await call.read()
        await call.done_writing()
        while await call.read() is not grpc.aio.EOF:
            pass
        if not isinstance(first, mesh_pb2.PingStreamResponse):  # grpc.aio.EOF
            raise RuntimeError(f"{cell.describe()}: PingStream ended early")
        got = len(first.payload)
    if got != cell.response_size:
        raise RuntimeError(f"{cell.describe()}: asked {cell.response_size} bytes, got {got}")


async def run_cell(cell: Cell, servers: ServerProcesses, warmup: float,
                   duration: float) -> tuple[LoadResult, list[int]]:
    """Measure one cell on fresh channels; its result and the server pid per channel."""
    target = servers.address
    if cell.client == "MeshClient":
        client = MeshClient(target)  # owns its channel: open_channel(), retries, deadline
        try:
            await client.ping(cell.response_size)
            size = cell.response_size
            result = await closed_loop(per_worker(lambda: client.ping(size)),
                                       concurrency=cell.concurrency, warmup=warmup,
                                       duration=duration, pids=servers.pids)
            return result, []
        finally:
            await client.aclose()
    # each channel its own connection; with several processes behind the port, each a
    # different one (the kernel spreads SO_REUSEPORT connections by a hash)
    pairs = await open_spread_channels([target], cell.channels, every_process=False)
    channels, pids = [c for c, _ in pairs], [pid for _, pid in pairs]
    try:
        stubs = [mesh_pb2_grpc.MeshServiceStub(ch) for ch in channels]
        for stub in stubs:
            await check_payload(cell, stub)
        result = await closed_loop(ping_factory(stubs, cell.call, cell.response_size),
                                   concurrency=cell.concurrency, warmup=warmup,
                                   duration=duration, pids=servers.pids)
        return result, pids
    finally:
        for channel in channels:
            await channel.close()


async def measure(cell: Cell, servers: ServerProcesses, args: argparse.Namespace,
                  duration: float) -> tuple[LoadResult, list[int], list[float]]:
    """Run a cell, again (up to ``--retries`` times) while other work on the machine
    used more than ``--noise-pct`` % of a core in its window; keep the quietest
    attempt. Waiting for quiet and retrying draw on ``args.noise_budget`` seconds
    for the whole run, so a busy machine cannot stretch it without bound.
    Returns the attempt kept, its channel pids and every attempt's 'other' CPU."""
    best: tuple[LoadResult, list[int]] | None = None
    attempts: list[float] = []
    for attempt in range(1 + args.retries):
        if attempt and args.noise_budget <= 0:
            break
        began = time.monotonic()
        if args.noise_budget > 0:
            await wait_for_quiet_async(min(args.quiet_wait, args.noise_budget))
        if attempt == 0:
            args.noise_budget -= time.monotonic() - began
        result, pids = await run_cell(cell, servers, args.warmup, duration)
        if attempt:
            args.noise_budget -= time.monotonic() - began
        other = result.cpu.get("other_cpu_pct", 0.0)
        attempts.append(round(other, 1))
        if best is None or other < best[0].cpu.get("other_cpu_pct", 0.0):
            best = (result, pids)
        if other <= args.noise_pct:
            break
    assert best is not None
    return best[0], best[1], attempts


def progress_line(n: int, total: int, cell: Cell, result: LoadResult,
                  attempts: Sequence[float]) -> str:
    cpu = result.cpu
    lo, hi = result.slice_range
    line = (f"[{n:>2}/{total}] {cell.describe()} {fmt_num(result.calls_per_s):>7} calls/s "
            f"({fmt_num(lo)}-{fmt_num(hi)})  p50 {result.p50_ms:6.2f} ms  "
            f"p99 {result.p99_ms:6.2f} ms  cpu client {cpu.get('client_cpu_pct', 0):3.0f}% "
            f"server {cpu.get('server_cpu_pct', 0):3.0f}% other {cpu.get('other_cpu_pct', 0):3.0f}%")
    if len(attempts) > 1:
        line += f"  (attempts: other {', '.join(f'{a:.0f}%' for a in attempts)})"
    if result.errors:
        line += f"  ERRORS {result.errors}: {result.first_error}"
    return line


# --------------------------------------------------------------------------- report

def _key(cell: dict[str, Any]) -> tuple[Any, ...]:
    return (cell["server"], cell["call"], cell["response_size"], cell["client"],
            cell["channels"], cell["concurrency"])


def _find(cells: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for cell in cells:
        if all(cell.get(k) == v for k, v in match.items()):
            return cell
    return None


def baseline_of(cell: dict[str, Any], cells: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The ceiling cell a cell compares with: same call, size and concurrency, on
    one untraced process at log level warning, raw stub over one channel."""
    return _find(cells, server=BASE.key, call=cell["call"], response_size=cell["response_size"],
                 client="stub", channels=1, concurrency=cell["concurrency"])


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float:
    if not a or not b or not b["calls_per_s"]:
        return math.nan
    return a["calls_per_s"] / b["calls_per_s"]


def _pct(ratio: float) -> str:
    return "-" if not math.isfinite(ratio) else f"{(ratio - 1) * 100:+.0f}%"


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two cells' calls/s ranges (kept rounds, or half-second slices) overlap."""
    (a_lo, a_hi), (b_lo, b_hi) = a["calls_per_s_range"], b["calls_per_s_range"]
    return bool(a_lo <= b_hi and b_lo <= a_hi)


def _cmp(cell: dict[str, Any], base: dict[str, Any], what: str = "") -> str:
    """``-27% vs ...``; flagged when the two cells' ranges overlap (no clear difference)."""
    text = _pct(_ratio(cell, base)) + (f" {what}" if what else "")
    if _overlap(cell, base):
        text += ", ranges overlap: not a clear difference"
    return text


def findings(cells: Sequence[dict[str, Any]], concurrencies: Sequence[int],
             sizes: Sequence[int], noise_pct: float = 15.0,
             nproc: int | None = None) -> list[str]:
    """Plain sentences computed from this run's numbers (so they stay true on rerun)."""
    head = 16 if 16 in concurrencies else max(concurrencies)
    nproc = nproc or os.cpu_count() or 1
    out: list[str] = []

    def get(**m: Any) -> dict[str, Any] | None:
        base = {"server": BASE.key, "call": "unary", "response_size": 0, "client": "stub",
                "channels": 1, "concurrency": head}
        return _find(cells, **{**base, **m})

    def cpu(cell: dict[str, Any], key: str) -> float:
        return float(cell["cpu"].get(key, math.nan))

    ceiling = get()
    if ceiling:
        best = max((c for c in cells if c["server"] == BASE.key and c["call"] == "unary"
                    and c["response_size"] == 0 and c["client"] == "stub"),
                   key=lambda c: c["calls_per_s"])
        machine = cpu(ceiling, "machine_cpu_pct")
        out.append(
            f"Ceiling (empty unary Ping, 1 process, raw stub, c={head}): "
            f"{fmt_num(ceiling['calls_per_s'])} calls/s, p50 {ceiling['p50_ms']:.2f} ms, "
            f"p99 {ceiling['p99_ms']:.2f} ms (best unary cell: "
            f"{fmt_num(best['calls_per_s'])} calls/s at c={best['concurrency']}, "
            f"{best['channels']} ch). The client process used "
            f"{cpu(ceiling, 'client_cpu_pct'):.0f}% of a core and the server "
            f"{cpu(ceiling, 'server_cpu_pct'):.0f}% (gRPC's own threads let one process use "
            f"more than a core): {machine:.0f}% of the {nproc * 100}% the machine has"
            + (", so the ceiling is the machine's CPU, shared by client and server, not "
               "either process alone." if machine >= 85 * nproc else "."))
        one = get(concurrency=min(concurrencies))
        if one and one is not ceiling:
            out.append(f"One call at a time (c={one['concurrency']}): "
                       f"{fmt_num(one['calls_per_s'])} calls/s, p50 {one['p50_ms']:.2f} ms: "
                       "the round-trip latency floor through both Python processes.")
        top = get(concurrency=max(concurrencies))
        if top and top is not ceiling:
            more = ("past saturation, more concurrency mostly queues"
                    if _ratio(top, ceiling) < 1 or _overlap(top, ceiling)
                    else "more calls in flight still amortise per-call work")
            out.append(f"c={top['concurrency']}: {fmt_num(top['calls_per_s'])} calls/s "
                       f"({_cmp(top, ceiling, f'vs c={head}')}), p99 "
                       f"{top['p99_ms']:.2f} ms: {more}.")
    stream = get(call="stream")
    if stream and ceiling:
        out.append(f"Stream messages on long-lived streams: {fmt_num(stream['calls_per_s'])} "
                   f"messages/s at c={head} ({_cmp(stream, ceiling, 'vs unary')}), "
                   f"p99 {stream['p99_ms']:.2f} ms: no per-call HTTP/2 stream, headers, "
                   "deadline or interceptor run per message.")
    for size in sizes:
        if size and ceiling:
            sized = get(response_size=size)
            if sized:
                out.append(f"A {size:,}-byte response: {fmt_num(sized['calls_per_s'])} calls/s "
                           f"at c={head} ({_cmp(sized, ceiling, 'vs empty')}), "
                           f"p99 {sized['p99_ms']:.2f} ms.")
    traced = get(server=TRACING.key)
    if traced and ceiling:
        out.append(f"Tracing on (OpenTelemetry gRPC server spans, batch processor, exporter "
                   f"that drops them): {_cmp(traced, ceiling, 'calls/s')} at c={head}, "
                   f"p99 {ceiling['p99_ms']:.2f} -> {traced['p99_ms']:.2f} ms; the span work "
                   "runs in the server process.")
        traced_stream, stream = get(server=TRACING.key, call="stream"), get(call="stream")
        if traced_stream and stream:
            out.append(f"A stream is one span however many messages it carries, so tracing "
                       f"costs stream messages little: at c={head}, "
                       f"{_cmp(traced_stream, stream)}.")
    info = get(server=INFO.key)
    if info and ceiling:
        out.append(f"Log level info, the default (one line per RPC, here to a file): "
                   f"{_cmp(info, ceiling, 'calls/s')} at c={head}, p99 "
                   f"{info['p99_ms']:.2f} ms; every other row runs the servers at warning.")
    sdk = get(client="MeshClient")
    if sdk and ceiling:
        out.append(f"Through the typed MeshClient (request id, deadline, retry policy, typed "
                   f"errors) instead of the raw stub: {_cmp(sdk, ceiling, 'calls/s')} "
                   f"at c={head}, p99 {sdk['p99_ms']:.2f} ms.")
    two_ch = get(channels=2)
    if two_ch and ceiling:
        out.append(f"Two channels (two connections) to the same process instead of one, at "
                   f"c={head}: {_cmp(two_ch, ceiling)}.")
    two = get(server=TWO.key, channels=2)
    if two and ceiling:
        each = " + ".join(f"{v:.0f}%" for v in two["cpu"].get("server_cpu_pct_each", []))
        saturated = cpu(ceiling, "machine_cpu_pct") >= 85 * nproc
        verdict = ""
        if (_ratio(two, ceiling) < 1 or _overlap(two, ceiling)) and saturated:
            verdict = (f" With one process the client and server already kept all {nproc} "
                       "cores busy, so a second server process has no core to run on: it "
                       "only adds contention (more threads, context switches). Multi-process "
                       "scaling needs more cores than the load generator uses; it cannot be "
                       "shown on this machine.")
        others = []
        for conc in concurrencies:
            two_c, one_c = get(server=TWO.key, channels=2, concurrency=conc), \
                get(concurrency=conc)
            if conc != head and two_c and one_c:
                others.append(f"at c={conc}: {fmt_num(two_c['calls_per_s'])} calls/s "
                              f"({_cmp(two_c, one_c, 'vs one process')})")
        out.append(f"Two server processes sharing the port, one channel pinned to each: "
                   f"{fmt_num(two['calls_per_s'])} calls/s at c={head} "
                   f"({_cmp(two, ceiling, 'vs one process')}), p99 "
                   f"{two['p99_ms']:.2f} ms; CPU client {cpu(two, 'client_cpu_pct'):.0f}%, "
                   f"servers {each}"
                   + (f"; {'; '.join(others)}" if others else "") + f".{verdict}")
        pinned = get(server=TWO.key, channels=1)
        if pinned:
            out.append(f"Two processes but one channel: every call rides one connection, so "
                       f"reaches one process ({fmt_num(pinned['calls_per_s'])} calls/s, "
                       f"{_cmp(pinned, ceiling, 'vs one process')}). SO_REUSEPORT "
                       "spreads connections, not calls: a client needs several connections "
                       "to use several processes.")
    noisy = [c for c in cells if c["cpu"].get("other_cpu_pct", 0) > noise_pct]
    if noisy:
        out.append(f"{len(noisy)} cell(s) ran, even after retries, while other work used "
                   f"more than {noise_pct:g}% of a core (column 'other'): "
                   f"{', '.join(str(cells.index(c) + 1) for c in noisy)}; their numbers "
                   f"are likely low.")
    retried = sum(1 for c in cells for r in c["round_details"]
                  if len(r["attempts_other_cpu_pct"]) > 1)
    if retried:
        out.append(f"{retried} measurement(s) were repeated because other work on the "
                   f"machine disturbed the first attempt.")
    errors = sum(c["errors"] for c in cells)
    if errors:
        out.append(f"{errors} calls failed in total; see the JSON for the first error of "
                   "each cell.")
    return out


def markdown(cells: Sequence[dict[str, Any]], info: dict[str, Any], settings: dict[str, Any],
             notes: Sequence[str]) -> str:
    rounds = settings["rounds"]
    spread_label = "per round (min-max)" if rounds > 1 else "per 0.5 s (min-max)"
    rows = []
    for i, cell in enumerate(cells, 1):
        base = baseline_of(cell, cells)
        cpu = cell["cpu"]
        rows.append([
            i, cell["call"], fmt_num(cell["response_size"]), cell["server_label"],
            f"{cell['client']}, {cell['channels']} ch", cell["concurrency"],
            fmt_num(cell["calls_per_s"]),
            "{}-{}".format(*(fmt_num(v) for v in cell["calls_per_s_range"])),
            "ceiling" if base is cell else _pct(_ratio(cell, base)),
            f"{cell['p50_ms']:.2f}", f"{cell['p99_ms']:.2f}",
            f"{cpu.get('client_cpu_pct', math.nan):.0f} / "
            f"{cpu.get('server_cpu_pct', math.nan):.0f} / "
            f"{cpu.get('other_cpu_pct', math.nan):.0f}",
        ])
    table = markdown_table(
        ["#", "call", "resp. bytes", "server", "client", "conc.", "calls/s", spread_label,
         "vs ceiling", "p50 ms", "p99 ms", "CPU % client / server / other"],
        rows, "rlrllrrrrrrr")
    lines = [
        "## Runtime ceiling",
        "",
        "`python -m bench.runtime` (`make bench-runtime`): the cheapest calls the shared "
        "runtime serves, `geoplex.mesh.v1.MeshService/Ping` (unary) and one message on a "
        "long-lived `PingStream` (one stream per worker: send, await the reply). The server is "
        "`bench/_mesh_server.py`: the real `GeoplexServer` (request-id/log/error interceptor, "
        "health, reflection) with no service of its own, in its own process; the load comes "
        "from one separate client process, `conc.` asyncio tasks sharing the channel(s), each "
        "sending its next call as soon as the last one returns. Servers log at **warning** "
        "unless the row says `log info` (the default, one line per RPC). `tracing on` = the "
        "OpenTelemetry gRPC server instrumentation with a batch span processor whose exporter "
        "drops the spans. `2 procs` = two processes on one port (`GEOPLEX_BENCH_REUSE_PORT`), "
        "one channel pinned to each. `stub` = the raw generated stub; `MeshClient` = the typed "
        "client (`clients/mesh.py`). `vs ceiling` compares with the same call, size and "
        "concurrency on `1 proc` through `stub, 1 ch`. "
        + (f"Every cell is measured in {rounds} rounds, each a whole pass over all cells with "
           "freshly started servers; rounds disturbed by other work (see `other` below) are "
           "left out when a clean one exists, and a cell with fewer than two clean rounds gets "
           "up to two extra rounds. `calls/s` is the median of the rounds kept and "
           "the next column their slowest and fastest; p50/p99 pool their calls. "
           if rounds > 1 else
           "The column after `calls/s` is the slowest and fastest half second of the window. ")
        + "CPU is percent of one core over the measured window (a process can exceed 100: "
        "gRPC runs its own threads); `other` is everything else running on the machine, i.e. "
        "noise: each measurement first waits for the machine to go idle and is repeated (up "
        f"to {settings['retries']} times) when `other` exceeds {settings['noise_pct']:g}%.",
        "",
        f"Machine: {machine_line(info)}. Each cell: "
        + (f"{rounds} x ({settings['warmup_s']:g} s warmup + "
           f"{settings['duration_s'] / rounds:.3g} s measured)" if rounds > 1 else
           f"{settings['warmup_s']:g} s warmup + {settings['duration_s']:g} s measured")
        + f"; client and servers share the cores. The whole run took "
        f"{settings['elapsed_s'] / 60:.1f} min.",
        "",
        table,
        "",
        "Findings from this run:",
        "",
        *[f"- {note}" for note in notes],
        "",
        "Later benchmarks quote their throughput against the row with the same call, "
        "response size and concurrency. Raw numbers: `bench/results/runtime.json`.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def _int_list(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.replace(",", " ").split()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas: {text!r}")
    if not values or values[0] < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers: {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.runtime", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0,
                        help="measured seconds per cell, split across the rounds (default 4)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure every cell this many times, a whole pass over all "
                             "cells (fresh servers) apart; report the median rate and pool "
                             "the latencies (default 3)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="warmup seconds per cell, not measured (default 1)")
    parser.add_argument("--concurrency", type=_int_list, default=[1, 16, 64],
                        help="client concurrencies, comma-separated (default 1,16,64)")
    parser.add_argument("--response-size", type=_int_list, default=[0, 2048, 8192],
                        help="unary response sizes in bytes, comma-separated "
                             "(default 0,2048,8192; 0 is always measured)")
    parser.add_argument("--retries", type=int, default=2,
                        help="measure a cell again, up to this many times, when other work "
                             "on the machine used more than --noise-pct of a core (default 2)")
    parser.add_argument("--noise-pct", type=float, default=15.0,
                        help="'other' CPU (%% of one core) above which a cell is retried "
                             "(default 15)")
    parser.add_argument("--quiet-wait", type=float, default=10.0,
                        help="before each cell, wait up to this many seconds for the machine "
                             "to be idle (default 10)")
    parser.add_argument("--noise-budget", type=float, default=90.0,
                        help="seconds the whole run may spend waiting for quiet and "
                             "retrying; once spent, cells are measured once, as they come "
                             "(default 90)")
    parser.add_argument("--only", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                        default=None, metavar="SETUPS",
                        help="only these server setups: " + ",".join(s.key for s in SETUPS))
    parser.add_argument("--rerender", action="store_true",
                        help="measure nothing: rebuild the findings and the BENCHMARKS.md "
                             "section from bench/results/runtime.json")
    parser.add_argument("--quick", action="store_true",
                        help="0.3 s warmup, 1 s per cell, concurrency 1,16; implies --no-write")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; do not write bench/results/runtime.json or "
                             "BENCHMARKS.md")
    parser.add_argument("--write", action="store_true",
                        help="write the results even with --quick")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds = 1.0, 0.3, 1
        if args.concurrency == [1, 16, 64]:
            args.concurrency = [1, 16]
        args.no_write = not args.write
    if any(c < 1 for c in args.concurrency):
        parser.error("--concurrency: every value must be at least 1")
    if any(s > 1 << 20 for s in args.response_size):
        parser.error("--response-size: at most 1048576 bytes")
    if args.duration <= 0 or args.warmup < 0 or args.rounds < 1 or args.retries < 0:
        parser.error("--duration must be > 0, --warmup and --retries >= 0, --rounds >= 1")
    if args.only:
        unknown = set(args.only) - {s.key for s in SETUPS}
        if unknown:
            parser.error(f"--only: unknown setup(s) {', '.join(sorted(unknown))}")
    args.response_size = sorted({0, *args.response_size})
    return args


async def run(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    cells_plan = [c for c in plan(args.concurrency, args.response_size)
                  if not args.only or c.server.key in args.only]
    setups = list(dict.fromkeys(c.server for c in cells_plan))
    info = machine_info()
    per_round = args.duration / args.rounds
    estimate = len(cells_plan) * (args.rounds * args.warmup + args.duration)
    print(f"bench.runtime: {len(cells_plan)} cells on {len(setups)} server setups, "
          f"{args.rounds} round(s) of {args.warmup:g} s warmup + {per_round:.3g} s measured per "
          f"cell (~{estimate / 60:.1f} min plus start-up and retries)", flush=True)
    print(f"machine: {machine_line(info)}; load average {info['loadavg'][0]:.2f}", flush=True)
    measured: list[list[dict[str, Any]]] = [[] for _ in cells_plan]

    def clean_rounds(index: int) -> int:
        return sum(1 for m in measured[index]
                   if m["result"].cpu.get("other_cpu_pct", 0.0) <= args.noise_pct)

    async def one_pass(label: str, indexes: Sequence[int]) -> None:
        """Measure these cells once more, each setup's servers freshly started."""
        for setup in setups:
            todo = [i for i in indexes if cells_plan[i].server == setup]
            if not todo:
                continue
            port = free_port()
            level = "" if "log" in setup.label else f", log {setup.log_level}"
            print(f"-- {label}, server: {setup.label}{level} ({setup.processes} "
                  f"process{'es' if setup.processes > 1 else ''} on :{port})", flush=True)
            with start_server_processes(SERVER_ARGV, setup.processes,
                                        setup.env(port)) as servers:
                for index in todo:
                    cell = cells_plan[index]
                    result, pids, attempts = await measure(cell, servers, args, per_round)
                    measured[index].append({"result": result, "channel_server_pids": pids,
                                            "server_pids": servers.pids,
                                            "attempts_other_cpu_pct": attempts})
                    line = progress_line(index + 1, len(cells_plan), cell, result, attempts)
                    if args.rounds > 1:
                        line = f"{label.split(',')[0].replace('round ', 'r')} {line}"
                    if len(measured[index]) >= args.rounds and args.rounds > 1:
                        # The cell is complete (or topped up): its result so far.
                        done = combine_rounds([m["result"] for m in measured[index]],
                                              args.noise_pct)
                        rates = [done["calls_per_s_rounds"][i] for i in done["rounds_used"]]
                        line += (f"  => median {fmt_num(done['calls_per_s'])} calls/s "
                                 f"({fmt_num(min(rates))}-{fmt_num(max(rates))}, "
                                 f"{len(rates)} of {len(measured[index])} rounds), "
                                 f"p99 {done['p99_ms']:.2f} ms")
                    print(line, flush=True)

    started = time.perf_counter()
    for round_no in range(1, args.rounds + 1):
        await one_pass(f"round {round_no}/{args.rounds}", range(len(cells_plan)))
    # Cells left with fewer than two undisturbed rounds get extra rounds, as far as
    # the noise budget allows (at most two extra passes).
    want = min(2, args.rounds)
    for extra in range(1, 3):
        short = [i for i in range(len(cells_plan)) if clean_rounds(i) < want]
        if not short or args.noise_budget <= 0:
            break
        print(f"{len(short)} cell(s) have fewer than {want} undisturbed round(s): "
              f"measuring them again ({args.noise_budget:.0f} s of noise budget left)",
              flush=True)
        began = time.monotonic()
        await one_pass(f"extra round {extra}", short)
        args.noise_budget -= time.monotonic() - began
    results: list[dict[str, Any]] = []
    for cell, rounds in zip(cells_plan, measured):
        setup = cell.server
        combined = combine_rounds([m["result"] for m in rounds], args.noise_pct)
        if len(rounds) > 1:
            kept = [combined["calls_per_s_rounds"][i] for i in combined["rounds_used"]]
            spread = [min(kept), max(kept)]
        else:
            spread = list(rounds[0]["result"].slice_range)
        results.append({
            "server": setup.key, "server_label": setup.label,
            "server_processes": setup.processes, "tracing": setup.tracing,
            "log_level": setup.log_level, "call": cell.call,
            "response_size": cell.response_size, "client": cell.client,
            "channels": cell.channels, **combined, "calls_per_s_range": spread,
            "round_details": [{**m["result"].as_dict(),
                               "channel_server_pids": m["channel_server_pids"],
                               "server_pids": m["server_pids"],
                               "attempts_other_cpu_pct": m["attempts_other_cpu_pct"]}
                              for m in rounds],
        })
    elapsed = time.perf_counter() - started
    settings = {"warmup_s": args.warmup, "duration_s": args.duration, "rounds": args.rounds,
                "retries": args.retries, "noise_pct": args.noise_pct,
                "noise_budget_left_s": round(args.noise_budget, 1),
                "concurrency": args.concurrency, "response_sizes": args.response_size,
                "quick": args.quick, "elapsed_s": round(elapsed, 1),
                "setups": [asdict(s) for s in setups]}
    notes = findings(results, args.concurrency, args.response_size, args.noise_pct,
                     info.get("nproc"))
    print(f"\ndone in {elapsed:.0f} s", flush=True)
    for note in notes:
        print(f"- {note}")
    if args.no_write:
        print("(results not written: --no-write" + (" implied by --quick; pass --write"
                                                   if args.quick else "") + ")")
        return 0
    info["loadavg_end"] = list(os.getloadavg())
    payload = {"benchmark": NAME, "machine": info, "settings": settings,
               "findings": notes, "cells": results}
    path = write_results(NAME, payload)
    md = write_section(NAME, markdown(results, info, settings, notes))
    print(f"wrote {path} and the '{NAME}' section of {md}")
    return 0


def rerender() -> int:
    """Rebuild findings and the Markdown section from the last results file."""
    path = RESULTS_DIR / f"{NAME}.json"
    payload = json.loads(path.read_text())
    settings, info, cells = payload["settings"], payload["machine"], payload["cells"]
    notes = findings(cells, settings["concurrency"], settings["response_sizes"],
                     settings["noise_pct"], info.get("nproc"))
    payload["findings"] = notes
    write_results(NAME, payload)
    md = write_section(NAME, markdown(cells, info, settings, notes))
    print(f"rebuilt the '{NAME}' section of {md} from {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rerender:
        return rerender()
    try:
        return asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
