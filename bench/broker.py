"""Broker benchmark: our broker against NATS JetStream and Redis Streams, in one run.

``python -m bench.broker`` (``make bench-broker``), about 4 minutes on 2 cores. 1 KB
records, one node of each system, each started fresh by the benchmark on a temporary
directory, one log each (a one-partition topic / one stream / one stream key), the
clients in this one Python process (uvloop):

- **ours**: ``python -m geoplex.servers.broker`` on its own etcd, driven through the
  raw generated stubs (the floor: ``Produce`` with the batch's records, ``Fetch`` loops,
  ``CommitOffsets``) and, when ``clients/broker.py`` is there, the typed SDK producer and
  consumer (their own cost on top);
- **NATS JetStream**: ``nats-server`` with JetStream, file storage; nats-py
  (``publish`` / ``publish_async`` awaiting each batch's acks, a pull consumer);
- **Redis Streams**: ``redis-server --appendonly yes``; redis.asyncio with hiredis
  (``XADD`` pipelined per batch, ``XREADGROUP`` + ``XACK``).

For each durability (fsync before every acknowledgement: ours per batch, Redis
``appendfsync always``, JetStream ``sync_interval: always`` where the server has it; and
fsync every so often: ours every ``--fsync-interval-ms``, Redis ``everysec``, JetStream's
default of 2 minutes) it measures, the systems interleaved within each round:

1. produce throughput (records/s, MB/s) with batches of 1, 100 and 1,000 records,
   ``--inflight`` batches in flight at once (closed loop, ``--rounds`` rounds);
2. consume throughput: ``--consume-records`` records read back from the start in reads
   of ``--consume-batch`` records, each read acknowledged;
3. end-to-end latency p50/p99 at a fixed ``--rate`` (2,000 records/s): the producer
   stamps each record with its scheduled send time, the consumer (tailing the log)
   takes the difference on receipt;
4. the server's CPU seconds per million records (``/proc/<pid>/stat``) in each.

Writes ``bench/results/broker.json`` and the ``broker`` section of ``BENCHMARKS.md``
(``--report-only`` re-renders it from the results).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import uvloop

from ._common import (log, 
    BENCHMARKS_MD,
    RESULTS_DIR,
    CpuSample,
    LoadResult,
    WorkerFactory,
    WorkerOp,
    closed_loop,
    combine_rounds,
    cpu_usage,
    fmt_num,
    latency_summary,
    machine_info,
    machine_line,
    markdown_table,
    read_results,
    wait_for_quiet_async,
    write_results,
    write_section,
)
from .broker_systems import (
    Driver,
    Durability,
    JetStream,
    OursRaw,
    Redis,
    broker_server,
    connected,
    durabilities,
    etcd_server,
    have_nats,
    nats_server,
    nats_supports_sync_always,
    nats_version,
    redis_server,
)

NAME = "broker"
TITLE = "## Broker: ours vs NATS JetStream and Redis Streams"
SYSTEMS = ("ours", "ours-sdk", "redis", "jetstream")
PEERS = ("redis", "jetstream")
AIM_RATIO = 2.0  # batched produce and consume: at least twice the faster peer
QUICK = {"warmup": 0.2, "duration": 0.5, "rounds": 1, "consume_records": 5000,
         "latency_duration": 1.0, "latency_warmup": 0.3, "quiet_wait": 0.0,
         "quiet_budget": 0.0}
"""--quick: the defaults it changes (a flag given beside it still wins)."""




# --------------------------------------------------------------------------- measurements

def producer(driver: Driver, batch: int, payload: bytes) -> WorkerFactory:
    """Closed-loop workers, each sending one batch of ``batch`` records and awaiting its acks."""
    values = [payload] * batch

    @contextlib.asynccontextmanager
    async def factory(_index: int) -> AsyncIterator[WorkerOp]:
        async def op() -> None:
            await driver.send(values)

        yield op

    return factory


_quiet_spent = [0.0]  # seconds this run has waited for quiet so far


async def quiet(args: argparse.Namespace) -> float:
    """Wait (at most ``--quiet-wait`` s, ``--quiet-budget`` s in all) for an idle machine;
    the busy percentage last seen."""
    left = min(args.quiet_wait, args.quiet_budget - _quiet_spent[0])
    if left <= 0:
        return math.nan
    began = time.monotonic()
    busy = await wait_for_quiet_async(max_wait=left, busy_pct=args.noise_pct)
    _quiet_spent[0] += time.monotonic() - began
    return busy


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _etcd(each: Sequence[float]) -> float | None:
    """Ours samples [broker, etcd]: etcd's share, None for a peer (one process)."""
    return each[1] if len(each) > 1 else None


def _cpu_per_million(cpu_pct: float, records_per_s: float) -> float:
    """Seconds of CPU per million records from a share of a core and a rate."""
    return cpu_pct / 100 / records_per_s * 1e6 if records_per_s > 0 else math.nan


async def measure_produce(driver: Driver, batch: int, args: argparse.Namespace,
                          payload: bytes, tag: str) -> LoadResult:
    busy = await quiet(args)
    await driver.fresh(f"bench-{tag}")
    await driver.prepare(batch)
    result = await closed_loop(producer(driver, batch, payload), concurrency=args.inflight,
                               warmup=args.warmup, duration=args.duration, pids=driver.pids)
    result.cpu["busy_before_pct"] = busy
    return result


def produce_cell(driver: Driver, durability: Durability, batch: int,
                 rounds: Sequence[LoadResult], args: argparse.Namespace) -> dict[str, Any]:
    combined = combine_rounds(rounds, args.noise_pct)
    records_per_s = combined["calls_per_s"] * batch
    server_pct = combined["cpu"].get("server_cpu_pct_each", [math.nan])[0]
    return {
        "durability": durability.key, "system": driver.key, "label": driver.label,
        "fsync": driver.fsync, "batch": batch, "inflight": args.inflight,
        "records_per_s": records_per_s,
        "mb_per_s": records_per_s * args.record_bytes / 1e6,
        "records_per_s_rounds": [r * batch for r in combined["calls_per_s_rounds"]],
        "ack_p50_ms": combined["p50_ms"], "ack_p99_ms": combined["p99_ms"],
        "server_cpu_pct": server_pct,
        "cpu_s_per_million": _cpu_per_million(server_pct, records_per_s),
        "other_cpu_pct": combined["cpu"].get("other_cpu_pct", math.nan),
        "client_cpu_pct": combined["cpu"].get("client_cpu_pct", math.nan),
        "etcd_cpu_pct": _etcd(combined["cpu"].get("server_cpu_pct_each", [])),
        "errors": combined["errors"], "first_error": combined["first_error"],
        "rounds_used": combined["rounds_used"], "how": driver.produce_note,
    }


async def prefill(driver: Driver, count: int, batch: int, inflight: int,
                  payload: bytes) -> None:
    """``count`` records written as fast as the system takes them (not measured)."""
    values = [payload] * batch
    todo = [len(values)] * (count // batch) + ([count % batch] if count % batch else [])
    queue = iter(todo)

    async def worker() -> None:
        for n in queue:
            await driver.send(values[:n])

    await asyncio.gather(*(worker() for _ in range(inflight)))


async def measure_consume(driver: Driver, durability: Durability, args: argparse.Namespace,
                          payload: bytes, tag: str) -> dict[str, Any]:
    await driver.fresh(f"bench-{tag}")
    await driver.prepare(1000)
    await prefill(driver, args.consume_records, 1000, args.inflight, payload)
    rounds = []
    for _ in range(args.rounds):
        busy = await quiet(args)
        c0 = CpuSample.take(driver.pids)
        started = time.perf_counter()
        read = await driver.consume(args.consume_records, args.consume_batch)
        elapsed = time.perf_counter() - started
        usage = cpu_usage(c0, CpuSample.take(driver.pids))
        rounds.append({"records": read, "seconds": elapsed, "records_per_s": read / elapsed,
                       "server_cpu_pct": usage["server_cpu_pct_each"][0],
                       "other_cpu_pct": usage["other_cpu_pct"],
                       "client_cpu_pct": usage["client_cpu_pct"],
                       "etcd_cpu_pct": _etcd(usage["server_cpu_pct_each"]),
                       "busy_before_pct": busy})
    # as combine_rounds does for produce: rounds disturbed by other work left out when a
    # clean one exists, the median rate (of two: their mean), CPU shares averaged
    used = [r for r in rounds if r["other_cpu_pct"] <= args.noise_pct] or rounds
    rate = _median([r["records_per_s"] for r in used])
    server_pct = sum(r["server_cpu_pct"] for r in used) / len(used)
    return {"durability": durability.key, "system": driver.key, "label": driver.label,
            "fsync": driver.fsync, "batch": args.consume_batch,
            "records": args.consume_records, "records_per_s": rate,
            "mb_per_s": rate * args.record_bytes / 1e6, "server_cpu_pct": server_pct,
            "cpu_s_per_million": _cpu_per_million(server_pct, rate),
            "other_cpu_pct": sum(r["other_cpu_pct"] for r in used) / len(used),
            "rounds_used": [i for i, r in enumerate(rounds) if r in used], "rounds": rounds}


async def measure_latency(driver: Driver, durability: Durability, args: argparse.Namespace,
                          payload: bytes, tag: str) -> dict[str, Any]:
    """Records at ``args.rate``/s, each stamped with its scheduled send time; the consumer
    tails the log and records receipt minus that time (so a stalled sender counts too)."""
    await quiet(args)
    await driver.fresh(f"bench-{tag}")
    await driver.prepare(None)
    pad = payload[8:]
    rate = args.rate
    window = [math.inf, math.inf]
    latencies: list[float] = []
    counts = {"received": 0}
    clock = time.perf_counter_ns

    def on_value(value: bytes) -> None:
        now = clock()
        sent_ns = struct.unpack_from("<q", value)[0]
        counts["received"] += 1
        if window[0] <= sent_ns < window[1]:
            latencies.append((now - sent_ns) / 1e9)

    started, stop = asyncio.Event(), asyncio.Event()
    receiver = asyncio.create_task(driver.receive(on_value, started, stop))
    sends: set[asyncio.Task[None]] = set()
    errors: list[str] = []

    def sent(task: asyncio.Task[None]) -> None:
        sends.discard(task)
        if not task.cancelled() and task.exception() is not None:
            errors.append(repr(task.exception())[:300])

    try:
        waiter = asyncio.ensure_future(started.wait())
        done, _ = await asyncio.wait([waiter, receiver], timeout=30,
                                     return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if receiver in done:
            receiver.result()
        if not started.is_set():
            raise RuntimeError(f"{driver.label}: the consumer did not start within 30 s")
        t0 = clock()
        step = 1e9 / rate
        window[:] = [t0 + args.latency_warmup * 1e9,
                     t0 + (args.latency_warmup + args.latency_duration) * 1e9]
        c0: CpuSample | None = None
        c1: CpuSample | None = None
        number = 0  # records scheduled so far
        while True:
            now = clock()
            if c0 is None and now >= window[0]:
                c0 = CpuSample.take(driver.pids)
            if now >= window[1]:
                c1 = CpuSample.take(driver.pids)
                break
            due = int((now - t0) / step) + 1 - number
            if due > 0:
                values = [struct.pack("<q", int(t0 + (number + i) * step)) + pad
                          for i in range(due)]
                number += due
                task = asyncio.create_task(driver.send(values))
                sends.add(task)
                task.add_done_callback(sent)
            await asyncio.sleep(args.tick_ms / 1000)
        if sends:
            await asyncio.wait(list(sends), timeout=30)
        deadline = time.monotonic() + 10
        while counts["received"] < number and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # poll for the last records, with a deadline
    finally:
        stop.set()
        finished, _ = await asyncio.wait([receiver], timeout=10)
        if not finished:
            receiver.cancel()
            log(f"  {driver.label}: the consumer did not stop within 10 s; cancelled")
        elif not receiver.cancelled() and receiver.exception() is not None:
            errors.append(f"consumer: {receiver.exception()!r}"[:300])
        for task in list(sends):
            task.cancel()
    in_window = int(args.latency_duration * rate)
    usage = cpu_usage(c0, c1) if c0 and c1 else {}
    return {"durability": durability.key, "system": driver.key, "label": driver.label,
            "fsync": driver.fsync, "rate": rate, "scheduled": number,
            "received": counts["received"], "measured": len(latencies),
            "expected_in_window": in_window, **latency_summary(latencies),
            "server_cpu_pct": (usage.get("server_cpu_pct_each") or [math.nan])[0],
            "etcd_cpu_pct": _etcd(usage.get("server_cpu_pct_each") or []),
            "client_cpu_pct": usage.get("client_cpu_pct", math.nan),
            "other_cpu_pct": usage.get("other_cpu_pct", math.nan),
            "errors": len(errors), "first_error": errors[0] if errors else None}


# --------------------------------------------------------------------------- the run

@contextlib.asynccontextmanager
async def systems_for(durability: Durability, args: argparse.Namespace, etcd: str,
                      etcd_pid: int, nats_bin: str | None, skipped: list[dict[str, str]]
                      ) -> AsyncIterator[list[Driver]]:
    """Every selected system for one durability, started and connected; stopped after."""
    with contextlib.ExitStack() as stack:
        async with contextlib.AsyncExitStack() as astack:
            drivers: list[Driver] = []
            if "ours" in args.systems or "ours-sdk" in args.systems:
                log(f"  starting the broker ({durability.ours})")
                broker = stack.enter_context(broker_server(etcd, durability))
                pids = [broker.pids[0], etcd_pid]
                if "ours" in args.systems:
                    drivers.append(await astack.enter_async_context(connected(
                        OursRaw(broker.address, durability.ours, pids, args.ours_produce))))
                if "ours-sdk" in args.systems:
                    sdk = _sdk_driver(broker.address, durability.ours, pids,
                                      args.record_bytes)
                    if isinstance(sdk, str):
                        skipped.append({"durability": durability.key, "system": "ours-sdk",
                                        "why": sdk})
                        log(f"  ours (SDK): skipped, {sdk}")
                    else:
                        drivers.append(await astack.enter_async_context(connected(sdk)))
            if "redis" in args.systems:
                log(f"  starting redis-server ({durability.redis})")
                redis = stack.enter_context(redis_server(durability))
                drivers.append(await astack.enter_async_context(connected(
                    Redis(redis.address, durability.redis, [redis.pid]))))
            if "jetstream" in args.systems:
                why = ("no nats-server binary (install the Debian package nats-server)"
                       if nats_bin is None else
                       durability.jetstream if durability.jetstream_sync_always is None
                       else "")
                if why:
                    skipped.append({"durability": durability.key, "system": "jetstream",
                                    "why": why})
                    log(f"  NATS JetStream: skipped, {why}")
                else:
                    assert nats_bin is not None and durability.jetstream_sync_always is not None
                    log(f"  starting nats-server -js ({durability.jetstream})")
                    nats = stack.enter_context(
                        nats_server(nats_bin, durability.jetstream_sync_always))
                    drivers.append(await astack.enter_async_context(connected(
                        JetStream(nats.address, durability.jetstream, [nats.pid]))))
            yield drivers


def _sdk_driver(address: str, fsync: str, pids: list[int], record_bytes: int
                ) -> Driver | str:
    """The typed SDK's driver, or why there is none."""
    try:
        from .broker_sdk import OursSdk
    except ImportError as exc:
        return f"the typed SDK is not available ({exc})"
    return OursSdk(address, fsync, pids, record_bytes)


def estimate_s(args: argparse.Namespace, profiles: Sequence[Durability]) -> float:
    """Roughly how long a run takes (start-up, cells, prefill at ~40 k records/s)."""
    cells = sum(len([k for k in args.systems
                     if k != "jetstream" or d.jetstream_sync_always is not None])
                for d in profiles)
    produce = len(args.batches) * args.rounds * (args.warmup + args.duration + 0.3)
    consume = (args.consume_records / 40_000 * (1 + args.rounds) + 0.5
               if args.consume_records else 0.0)
    latency = args.latency_warmup + args.latency_duration + 0.5 \
        if args.latency_duration > 0 else 0.0
    return 5 + 5 * len(profiles) + cells * (produce + consume + latency)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    info = machine_info()
    nats_bin = have_nats(args.nats_server)
    version = nats_version(nats_bin) if nats_bin else "none"
    sync_always = bool(nats_bin) and nats_supports_sync_always(nats_bin or "")
    profiles = [d for d in durabilities(args.fsync_interval_ms, sync_always, version)
                if d.key in args.durability]
    payload = os.urandom(args.record_bytes)
    log(f"bench.broker: {args.record_bytes:,} B records; systems {', '.join(args.systems)}; "
        f"durabilities {', '.join(d.key for d in profiles)}; batches "
        f"{', '.join(map(str, args.batches))} x {args.inflight} in flight, "
        f"{args.rounds} round(s) of {args.warmup:g} s warmup + {args.duration:g} s; consume "
        f"{args.consume_records:,}; latency at {args.rate:,.0f} records/s for "
        f"{args.latency_duration:g} s")
    log(f"about {estimate_s(args, profiles) / 60:.1f} min, plus up to "
        f"{args.quiet_budget:g} s waiting for a quiet machine")
    log(f"machine: {machine_line(info)}; load average {info['loadavg'][0]:.2f}; "
        f"nats-server {version} (sync_interval always: {'yes' if sync_always else 'no'})")
    result: dict[str, Any] = {
        "benchmark": NAME, "machine": info,
        "settings": {k: v for k, v in vars(args).items() if k not in ("report_only",)},
        "nats": {"binary": nats_bin, "version": version, "sync_always": sync_always},
        "durabilities": [d.as_dict() for d in profiles],
        "produce": [], "consume": [], "latency": [], "skipped": []}
    started = time.perf_counter()
    with etcd_server(lambda m: log(f"  {m}")) as (etcd, etcd_pid):
        for durability in profiles:
            log(f"\n== {durability.title}: ours {durability.ours}, Redis {durability.redis}, "
                f"JetStream {durability.jetstream}")
            async with systems_for(durability, args, etcd, etcd_pid, nats_bin,
                                   result["skipped"]) as drivers:
                await run_durability(durability, drivers, args, payload, result)
    result["elapsed_s"] = time.perf_counter() - started
    result["quiet_wait_spent_s"] = _quiet_spent[0]
    return result


async def run_durability(durability: Durability, drivers: Sequence[Driver],
                         args: argparse.Namespace, payload: bytes,
                         result: dict[str, Any]) -> None:
    rounds: dict[tuple[str, int], list[LoadResult]] = {}
    total = len(drivers) * len(args.batches) * args.rounds
    n = 0
    for round_no in range(args.rounds):
        for batch in args.batches:
            for driver in drivers:
                n += 1
                tag = f"{durability.key}-{driver.key}-b{batch}-r{round_no}"
                res = await measure_produce(driver, batch, args, payload, tag)
                rounds.setdefault((driver.key, batch), []).append(res)
                server = res.cpu.get("server_cpu_pct_each", [math.nan])[0]
                log(f"  [produce {n}/{total}] batch {batch:>5,} {driver.label:<18} "
                    f"{fmt_num(res.calls_per_s * batch):>9} rec/s "
                    f"({res.calls_per_s * batch * args.record_bytes / 1e6:6.1f} MB/s), ack "
                    f"p50 {res.p50_ms:.2f} / p99 {res.p99_ms:.2f} ms, server {server:.0f} %, "
                    f"other {res.cpu.get('other_cpu_pct', math.nan):.0f} %"
                    + (f", {res.errors} errors: {res.first_error}" if res.errors else ""))
    for batch in args.batches:
        for driver in drivers:
            result["produce"].append(produce_cell(driver, durability, batch,
                                                  rounds[(driver.key, batch)], args))
    if args.consume_records > 0:
        for driver in drivers:
            cell = await measure_consume(driver, durability, args, payload,
                                         f"{durability.key}-{driver.key}-consume")
            result["consume"].append(cell)
            log(f"  [consume] {driver.label:<18} {fmt_num(cell['records_per_s']):>9} rec/s "
                f"({cell['mb_per_s']:.1f} MB/s) reading {cell['records']:,} in reads of "
                f"{cell['batch']:,}; server {cell['server_cpu_pct']:.0f} %, other "
                f"{cell['other_cpu_pct']:.0f} %")
    if args.latency_duration > 0:
        for driver in drivers:
            cell = await measure_latency(driver, durability, args, payload,
                                         f"{durability.key}-{driver.key}-latency")
            result["latency"].append(cell)
            log(f"  [latency] {driver.label:<18} at {cell['rate']:,.0f} rec/s: p50 "
                f"{cell['p50_ms']:.2f} ms, p99 {cell['p99_ms']:.2f} ms, max "
                f"{cell['max_ms']:.1f} ms ({cell['measured']:,} of "
                f"{cell['expected_in_window']:,} measured, {cell['received']:,} of "
                f"{cell['scheduled']:,} received); server {cell['server_cpu_pct']:.0f} %"
                + (f"; {cell['errors']} send errors: {cell['first_error']}"
                   if cell["errors"] else ""))
    for driver in drivers:
        await driver.fresh(f"bench-{durability.key}-{driver.key}-end")  # frees the last log


# --------------------------------------------------------------------------- report

def _find(cells: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((c for c in cells if all(c.get(k) == v for k, v in match.items())), None)


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not (a == a and b == b) or not b:
        return math.nan
    return a / b


def _x(ratio: float) -> str:
    return "-" if not ratio == ratio else f"{ratio:.2f}x"


def _rate(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "-"
    return f"{fmt_num(cell['records_per_s'])} ({cell['mb_per_s']:.1f})"


def _ms(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _policy_short(result: dict[str, Any], key: str) -> str:
    d = next((d for d in result["durabilities"] if d["key"] == key), None)
    if d is None:
        return key
    js = d["jetstream"]
    js = "n/a" if js.startswith("n/a") else ("always" if "always" in js else "every 2 min")
    ours = "per batch" if key == "batch" else d["ours"].replace("fsync every ", "every ")
    return f"{ours} / {d['redis']} / {js}"


def faster_peer(cells: Sequence[dict[str, Any]], key: str, lower_is_better: bool = False,
                **match: Any) -> dict[str, Any] | None:
    found = [c for c in (_find(cells, system=p, **match) for p in PEERS)
             if c is not None and c.get(key) == c.get(key) and c.get(key) is not None]
    if not found:
        return None
    pick = min if lower_is_better else max
    return pick(found, key=lambda c: c[key])


def aims(result: dict[str, Any]) -> list[str]:
    """The issue's aims, checked against what was measured."""
    notes = []
    produce, consume, latency = result["produce"], result["consume"], result["latency"]
    for d in result["durabilities"]:
        for batch in sorted({c["batch"] for c in produce if c["batch"] >= 100}):
            ours = _find(produce, durability=d["key"], system="ours", batch=batch)
            peer = faster_peer(produce, "records_per_s", durability=d["key"], batch=batch)
            if ours and peer:
                r = _ratio(ours["records_per_s"], peer["records_per_s"])
                notes.append(
                    f"produce, batch {batch:,}, {_policy_short(result, d['key'])}: ours "
                    f"{_x(r)} {peer['label']} ({fmt_num(ours['records_per_s'])} vs "
                    f"{fmt_num(peer['records_per_s'])} records/s): aim of {AIM_RATIO:g}x "
                    + ("met" if r >= AIM_RATIO else "not met"))
        ours = _find(consume, durability=d["key"], system="ours")
        peer = faster_peer(consume, "records_per_s", durability=d["key"])
        if ours and peer:
            r = _ratio(ours["records_per_s"], peer["records_per_s"])
            notes.append(f"consume, {_policy_short(result, d['key'])}: ours {_x(r)} "
                         f"{peer['label']} ({fmt_num(ours['records_per_s'])} vs "
                         f"{fmt_num(peer['records_per_s'])} records/s): aim of "
                         f"{AIM_RATIO:g}x " + ("met" if r >= AIM_RATIO else "not met"))
        ours = _find(latency, durability=d["key"], system="ours")
        js = _find(latency, durability=d["key"], system="jetstream")
        if ours and js:
            ok = ours["p99_ms"] <= js["p99_ms"]
            notes.append(f"latency p99 at {fmt_num(ours['rate'])} records/s, "
                         f"{_policy_short(result, d['key'])}: ours {_ms(ours['p99_ms'])} ms, "
                         f"JetStream {_ms(js['p99_ms'])} ms: aim (no worse than JetStream) "
                         + ("met" if ok else "not met"))
    return notes


def report(result: dict[str, Any]) -> str:
    s = result["settings"]
    labels = {"ours": "ours (raw stubs)", "ours-sdk": "ours (SDK)", "redis": "Redis Streams",
              "jetstream": "NATS JetStream"}
    present = [k for k in SYSTEMS
               if any(c["system"] == k for c in result["produce"] + result["latency"]
                      + result["consume"])]
    lines = [
        "`python -m bench.broker` (`make bench-broker`): "
        f"{s['record_bytes']:,} B records, one node of each system, started fresh by the "
        "benchmark in the same run, one log each (a one-partition topic, one JetStream "
        "stream, one Redis stream key), all clients in one Python process on uvloop. "
        "**ours**: `python -m geoplex.servers.broker` on its own etcd; *raw stubs* is the "
        "floor (the generated stubs: each batch one `ProduceRequest`, "
        + ("written back to back on one pipelined `ProduceStream`"
           if s.get("ours_produce", "stream") == "stream" else "as unary `Produce` calls")
        + ", acks LEADER; long-poll `Fetch` loops; `CommitOffsets`); *SDK* the typed "
        "client of `clients/broker.py` (its idempotent `Producer` with `batch_records` set "
        "to the batch, one batch in flight per partition, the next filling meanwhile, "
        "`linger_ms=0` in the latency run; its group `Consumer`, `async for`, committing "
        "every second). **NATS JetStream**: "
        f"nats-server {result['nats']['version']} `-js`, file storage, nats-py "
        "(`publish` for a batch of 1, else `publish_async` per record then await the "
        "batch's acks; a push consumer with flow control and AckAll, one ack per read: "
        "nats-py's pull `fetch` was 4x slower here). **Redis Streams**: "
        "redis-server `--appendonly yes`, redis.asyncio + hiredis (`XADD` per record "
        "pipelined per batch; `XREADGROUP` with the previous read's `XACK` in the same "
        "round trip).",
        "",
        f"Produce: {s['inflight']} batches in flight at once (closed loop), "
        f"{s['rounds']} round(s) of {s['warmup']:g} s warm-up + {s['duration']:g} s measured, "
        "the systems interleaved within each round; the median of the rounds is shown "
        "(of two: their mean). Consume: "
        f"{s['consume_records']:,} records written beforehand, read back from the start in "
        f"reads of {s['consume_batch']:,} records, each read acknowledged (ours: a "
        "`CommitOffsets` to etcd, one in flight at a time; the SDK's time includes joining "
        "the group). Latency: "
        f"{s['rate']:,.0f} records/s, sent as they fall due (every ~{s['tick_ms']:g} ms, "
        "the due records in one batch, not waiting for earlier acks), each stamped with its "
        "scheduled send time; the consumer tails the log (ours: long-poll `Fetch`; Redis: "
        "`XREADGROUP BLOCK`; JetStream: a push consumer) and takes receipt minus that time, "
        f"over {s['latency_duration']:g} s after {s['latency_warmup']:g} s warm-up. CPU: the "
        "server process's user + system seconds (`/proc/<pid>/stat`) over the window, per "
        "million records (for ours the broker only; etcd's share is in the results file, "
        "`etcd_cpu_pct`).",
        "",
        f"Machine: {machine_line(result['machine'])}; clients and servers share the cores. "
        f"The whole run took {result.get('elapsed_s', 0) / 60:.1f} min.",
        "",
        "**fsync policies** (every row names its own as ours / Redis / JetStream):",
        "",
        markdown_table(["policy", "ours", "Redis", "JetStream"],
                       [[d["title"], d["ours"], d["redis"], d["jetstream"]]
                        for d in result["durabilities"]], "llll"),
    ]
    produce = result["produce"]
    if produce:
        rows = []
        for d in result["durabilities"]:
            for batch in sorted({c["batch"] for c in produce}):
                match = {"durability": d["key"], "batch": batch}
                ours = _find(produce, system="ours", **match)
                sdk = _find(produce, system="ours-sdk", **match)
                redis, js = (_find(produce, system=p, **match) for p in PEERS)
                peer = faster_peer(produce, "records_per_s", **match)
                rate = (lambda c: c["records_per_s"] if c else None)
                rows.append([
                    _policy_short(result, d["key"]), f"{batch:,}",
                    *[_rate(_find(produce, system=k, **match)) for k in present],
                    _x(_ratio(rate(ours), rate(redis))), _x(_ratio(rate(ours), rate(js))),
                    _x(_ratio(rate(ours), rate(peer))),
                    *([_x(_ratio(rate(sdk), rate(peer)))] if "ours-sdk" in present else []),
                ])
        lines += ["", "**Produce throughput**, records/s (MB/s)", "",
                  markdown_table(["fsync (ours / Redis / JetStream)", "batch",
                                  *[labels[k] for k in present], "ours / Redis",
                                  "ours / JetStream", "ours / faster peer",
                                  *(["SDK / faster peer"] if "ours-sdk" in present else [])],
                                 rows, "lr" + "r" * (len(present) + 3 + ("ours-sdk" in present)))]
    consume = result["consume"]
    if consume:
        rows = []
        for d in result["durabilities"]:
            match = {"durability": d["key"]}
            if not any(c["durability"] == d["key"] for c in consume):
                continue
            ours = _find(consume, system="ours", **match)
            redis, js = (_find(consume, system=p, **match) for p in PEERS)
            peer = faster_peer(consume, "records_per_s", **match)
            rate = (lambda c: c["records_per_s"] if c else None)
            rows.append([_policy_short(result, d["key"]),
                         *[_rate(_find(consume, system=k, **match)) for k in present],
                         _x(_ratio(rate(ours), rate(redis))),
                         _x(_ratio(rate(ours), rate(js))), _x(_ratio(rate(ours), rate(peer)))])
        lines += ["", f"**Consume throughput**, records/s (MB/s), reading "
                  f"{s['consume_records']:,} records back (the fsync policy was the writes')",
                  "", markdown_table(["fsync of the writes", *[labels[k] for k in present],
                                      "ours / Redis", "ours / JetStream",
                                      "ours / faster peer"],
                                     rows, "l" + "r" * (len(present) + 3))]
    latency = result["latency"]
    if latency:
        rows = []
        for d in result["durabilities"]:
            match = {"durability": d["key"]}
            if not any(c["durability"] == d["key"] for c in latency):
                continue
            cells = [_find(latency, system=k, **match) for k in present]
            ours = _find(latency, system="ours", **match)
            js = _find(latency, system="jetstream", **match)
            redis = _find(latency, system="redis", **match)
            p99 = (lambda c: c["p99_ms"] if c else None)
            rows.append([_policy_short(result, d["key"]),
                         *[f"{_ms(c['p50_ms'])} / {_ms(c['p99_ms'])}" if c else "-"
                           for c in cells],
                         _x(_ratio(p99(ours), p99(js))), _x(_ratio(p99(ours), p99(redis)))])
        lines += ["", f"**End-to-end latency** at {s['rate']:,.0f} records/s, p50 / p99 ms "
                  "(produce to consumer receipt)", "",
                  markdown_table(["fsync (ours / Redis / JetStream)",
                                  *[labels[k] for k in present], "p99 ours / JetStream",
                                  "p99 ours / Redis"], rows, "l" + "r" * (len(present) + 2))]
    if produce or consume:
        rows = []
        top = max((c["batch"] for c in produce), default=0)
        for d in result["durabilities"]:
            for what, cells, match in (
                    (f"produce, batch {top:,}", produce, {"batch": top}),
                    ("consume", consume, {}),
                    (f"latency run ({s['rate']:,.0f}/s)", latency, {})):
                found = [_find(cells, system=k, durability=d["key"], **match) for k in present]
                if not any(found):
                    continue
                per_m = [c.get("cpu_s_per_million", _cpu_per_million(
                    c["server_cpu_pct"], c.get("rate", math.nan))) if c else None
                    for c in found]
                rows.append([_policy_short(result, d["key"]), what,
                             *[f"{v:.1f}" if v is not None and v == v else "-"
                               for v in per_m]])
        lines += ["", "**Server CPU seconds per million records** (lower is better)", "",
                  markdown_table(["fsync (ours / Redis / JetStream)", "measured in",
                                  *[labels[k] for k in present]],
                                 rows, "ll" + "r" * len(present))]
    notes = aims(result)
    if notes:
        lines += ["", "**The issue's aims** (batched produce and consume at least "
                  f"{AIM_RATIO:g}x the faster peer; p99 at the moderate rate no worse than "
                  "JetStream's):", "", *[f"- {n}" for n in notes]]
    if result.get("skipped"):
        lines += ["", "Not measured: " + "; ".join(
            f"{labels.get(k['system'], k['system'])} under "
            f"'{_policy_short(result, k['durability'])}' ({k['why']})"
            for k in result["skipped"]) + "."]
    lines += ["", "Raw numbers (every round, ack latencies of the produce batches, CPU of "
              "the clients and etcd): `bench/results/broker.json`."]
    return "\n".join(lines)


def write_report(result: dict[str, Any], path: Path = BENCHMARKS_MD) -> Path:
    """The ``broker`` section of ``BENCHMARKS.md`` (or ``path``) from ``result``."""
    written = write_section(NAME, TITLE + "\n\n" + report(result), path)
    log(f"wrote the '{NAME}' section of {written}")
    return written


def rerender(directory: Path = RESULTS_DIR, path: Path = BENCHMARKS_MD) -> Path:
    """``--report-only``: the section again from ``<directory>/broker.json``, nothing run."""
    result = read_results(NAME, directory)
    print(report(result))
    return write_report(result, path)


# --------------------------------------------------------------------------- main

def _int_list(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.replace(",", " ").split()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas: {text!r}")
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def _choices(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            raise argparse.ArgumentTypeError(
                f"{', '.join(unknown) or 'nothing'}: expected some of {', '.join(allowed)}, "
                "comma-separated")
        return [v for v in allowed if v in values]

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.broker", description=(__doc__ or "").split("\n\n")[0],
        epilog="A quick look: --quick (tiny sizes, writes nothing). Re-render the "
               "BENCHMARKS.md section from bench/results/broker.json: --report-only.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--systems", type=_choices(SYSTEMS), default=",".join(SYSTEMS),
        help="systems to measure, comma-separated: " + ", ".join(SYSTEMS))
    add("--durability", type=_choices(("batch", "interval")), default="batch,interval",
        help="fsync policies: batch (before every ack), interval (every so often)")
    add("--fsync-interval-ms", type=int, default=1000,
        help="ours under the interval policy (Redis everysec is 1000)")
    add("--batches", type=_int_list, default="1,100,1000",
        help="produce batch sizes in records, comma-separated")
    add("--inflight", type=int, default=4, help="produce batches in flight at once")
    add("--warmup", type=float, default=0.5, help="produce warm-up seconds per cell")
    add("--duration", type=float, default=2.0, help="produce seconds measured per round")
    add("--rounds", type=int, default=2, help="rounds of every produce and consume cell")
    add("--consume-records", type=int, default=100_000,
        help="records read back per consume measurement (0: none)")
    add("--consume-batch", type=int, default=1000, help="records per read")
    add("--rate", type=float, default=2000.0, help="records/s of the latency measurement")
    add("--latency-duration", type=float, default=4.0,
        help="latency seconds measured (0: none)")
    add("--latency-warmup", type=float, default=1.0,
        help="latency seconds sent before the measured ones")
    add("--tick-ms", type=float, default=1.0,
        help="the latency sender's pace: due records go out every this many ms")
    add("--record-bytes", type=int, default=1024, help="bytes per record value")
    add("--ours-produce", choices=("stream", "unary"), default="stream",
        help="how the raw-stub driver sends batches: on one pipelined ProduceStream, or "
             "as unary Produce calls side by side")
    add("--nats-server", default=None,
        help="the nats-server binary to run (None: the one on PATH)")
    add("--quiet-wait", type=float, default=5.0,
        help="seconds to wait at most for the machine to go idle before each cell (0: never)")
    add("--quiet-budget", type=float, default=45.0,
        help="seconds the whole run may spend waiting for quiet; once spent, cells are "
             "measured as they come")
    add("--noise-pct", type=float, default=25.0,
        help="a round where other work took more than this share of a core is left out "
             "when a clean one exists")
    add("--quick", action="store_true",
        help="tiny sizes for a smoke run (0.2 s warm-up + 0.5 s cells, 5,000 records read "
             "back, 1 s of latency, 1 round, no quiet wait; flags given beside it win); "
             "implies --no-write")
    add("--no-write", action="store_true",
        help="print only: do not write bench/results/broker.json or BENCHMARKS.md")
    add("--report-only", action="store_true",
        help="measure nothing: re-render the BENCHMARKS.md section from "
             "bench/results/broker.json")
    if "--quick" in (sys.argv[1:] if argv is None else argv):  # its sizes, unless given
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    if args.quick:
        args.no_write = True
    if args.record_bytes < 8:
        parser.error("--record-bytes: at least 8 (the latency timestamp)")
    if args.inflight < 1 or args.rounds < 1 or args.consume_batch < 1:
        parser.error("--inflight, --rounds and --consume-batch must be at least 1")
    if args.duration <= 0 or args.warmup < 0 or args.rate <= 0 or args.tick_ms <= 0:
        parser.error("--duration, --rate and --tick-ms must be > 0, --warmup >= 0")
    if not 1 <= args.fsync_interval_ms <= 60_000:
        parser.error("--fsync-interval-ms: 1..60000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        rerender()
        return 0
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(run(args))
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    markdown = report(result)
    print("\n" + markdown)
    if args.no_write:
        log("(results not written: --no-write" + (", implied by --quick)" if args.quick
                                                  else ")"))
        return 0
    log(f"wrote {write_results(NAME, result)}")
    write_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
