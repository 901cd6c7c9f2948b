"""Broker chaos: a three-broker cluster under a long run of faults (Jepsen-style).

``python -m bench.broker_chaos``: the long version of
``tests/faults/test_broker_cluster_faults.py``, with the same pieces (``tests/nemesis.py``:
the proxies, the producers, the faults and the history checker; ``tests/broker_cluster.py``:
the cluster). Three brokers on a fresh etcd, each behind a proxy so that it can be cut off;
a topic of ``--partitions`` partitions with three replicas and ``min_insync_replicas`` 2;
``--producers`` producers per partition writing batches of unique values with idempotent
sequences, routed to the leaders by GetMetadata. Each round is one fault (every
``--leader-kill-every``-th a kill -9 of a leader, the others in turn: a follower killed,
all three killed, a leader paused past its lease, a leader cut off from brokers and etcd,
a follower cut off from the brokers, a stopped follower's segment tails damaged, etcd
restarted), healed, then until every partition has a live leader and a full ISR again.
At the end every partition is read back and checked against the history.

Runs (``--runs``): ``all-batch`` (acks=ALL, fsync before every acknowledgement: nothing
acknowledged may be lost), ``leader-batch`` (acks=LEADER: a leader killed before its
followers copied a batch loses it, by design) and ``all-interval`` (acks=ALL, fsync every
200 ms: killing every broker at once may lose the last moments). Reported per run and
fault kind: records produced / acknowledged / lost / duplicated / of unknown outcome, and
the failover time (a leader killed -> the first acks=ALL produce acknowledged by another
broker to each partition it led) p50 / p99.

Writes ``bench/results/broker_chaos.json`` and the ``broker-chaos`` section of
``BENCHMARKS.md`` (``--report-only`` re-renders it). At the defaults (200 rounds per run,
100 of them leader kills) a run takes about 25 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.infra.local import BackendUrls, LocalInfra

from ._common import (log, 
    BENCHMARKS_MD,
    RESULTS_DIR,
    ROOT,
    latency_summary,
    machine_info,
    machine_line,
    markdown_table,
    read_results,
    wait_for_quiet_async,
    write_results,
    write_section,
)

if str(ROOT / "tests") not in sys.path:  # the nemesis and the cluster live with the tests
    sys.path.insert(0, str(ROOT / "tests"))

import nemesis  # noqa: E402 - tests/nemesis.py
from broker_cluster import BrokerCluster  # noqa: E402 - tests/broker_cluster.py

NAME = "broker-chaos"  # the BENCHMARKS.md section
RESULTS = "broker_chaos"  # bench/results/broker_chaos.json
TITLE = "## Broker chaos: three brokers under faults"
RUNS: dict[str, tuple[str, pb.Acks.ValueType, str]] = {
    # key: (title, acks, fsync)
    "all-batch": ("acks=ALL, fsync per batch", pb.ACKS_ALL, "batch"),
    "leader-batch": ("acks=LEADER, fsync per batch", pb.ACKS_LEADER, "batch"),
    "all-interval": ("acks=ALL, fsync every 200 ms", pb.ACKS_ALL, "interval"),
}




# --------------------------------------------------------------------------- one run

async def run_one(key: str, args: argparse.Namespace, infra: LocalInfra, root: Path
                  ) -> dict[str, Any]:
    title, acks, fsync = RUNS[key]
    assert infra.urls.etcd_endpoints
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rounds = args.rounds if key == "all-batch" or not args.other_rounds else args.other_rounds
    kinds = nemesis.schedule(rounds, leader_kill_every=args.leader_kill_every)
    log(f"[{key}] {title}: {len(kinds)} rounds, {kinds.count('kill-leader')} leader kills, "
        f"seed {seed}")
    began = time.monotonic()
    reports: list[nemesis.FaultReport] = []
    aborted = ""
    result: nemesis.CheckResult | None = None
    history = nemesis.History()
    workload: nemesis.Workload | None = None
    async with BrokerCluster(infra.urls.etcd_endpoints, root / key, proxies=True,
                             etcd=infra.procs["etcd"], fsync=fsync) as cluster:
        await cluster.wait_healthy()
        topic = await cluster.create_topic(f"chaos-{uuid.uuid4().hex[:8]}", args.partitions,
                                           replication_factor=3, min_insync_replicas=2)
        await cluster.wait_healthy([topic])
        router = nemesis.Router(cluster, topic)
        workload = nemesis.Workload(router, history, args.partitions, nemesis.WorkloadConfig(
            producers_per_partition=args.producers, batch=args.batch, acks=acks,
            pace_s=args.pace_ms / 1000), seed=seed)
        context = nemesis.FaultContext(cluster, topic, args.partitions, history,
                                       random.Random(seed), hold_s=args.hold)
        workload.start()
        try:
            for number, kind in enumerate(kinds, 1):
                report = await nemesis.run_fault(context, kind)
                reports.append(report)
                log(f"[{key}] {number}/{len(kinds)} {report.line()}; "
                    f"{history.acked:,} records acknowledged")
                await asyncio.sleep(args.calm)  # load on a healthy cluster between faults
            history.phase = "after"
        except Exception as error:  # noqa: BLE001 - reported; what was written is still checked
            aborted = f"{type(error).__name__}: {error}"
            log(f"[{key}] stopped at round {len(reports) + 1}: {aborted}")
            traceback.print_exc()
        finally:
            await workload.stop()
        try:
            await cluster.wait_healthy([topic])
            result = history.check(await nemesis.consume_all(router, args.partitions))
        except Exception as error:  # noqa: BLE001 - reported
            aborted = aborted or f"reading back: {type(error).__name__}: {error}"
            log(f"[{key}] could not read the topic back: {error}")
    elapsed = time.monotonic() - began
    if result is not None:
        log(result.table())
    return summarize(key, title, acks, fsync, seed, kinds, reports, result, workload, aborted,
                     elapsed)


def summarize(key: str, title: str, acks: pb.Acks.ValueType, fsync: str, seed: int,
              kinds: Sequence[str], reports: Sequence[nemesis.FaultReport],
              result: nemesis.CheckResult | None, workload: nemesis.Workload | None,
              aborted: str, elapsed: float) -> dict[str, Any]:
    failovers = [s for r in reports if r.kind == "kill-leader" for s in r.failover_s]
    recoveries = [s for r in reports if r.kind == "kill-all" for s in r.failover_s]
    healthy: dict[str, list[float]] = {}
    for report in reports:
        healthy.setdefault(report.kind, []).append(report.healthy_s)
    return {
        "key": key, "title": title, "acks": pb.Acks.Name(acks), "fsync": fsync, "seed": seed,
        "rounds_planned": len(kinds), "rounds": len(reports),
        "leader_kills": sum(r.kind == "kill-leader" for r in reports),
        "aborted": aborted, "elapsed_s": elapsed,
        "valid": None if result is None else result.valid,
        "total": None if result is None else result.total.as_dict(),
        "unexpected": None if result is None else result.unexpected,
        "by_fault": {} if result is None else {
            phase: counts.as_dict() for phase, counts in result.by_phase.items()},
        "examples": {} if result is None else {k: v[:10] for k, v in result.examples.items()},
        "failover": latency_summary(failovers), "failover_s": failovers,
        "kill_all_recovery": latency_summary(recoveries),
        "healthy_after": {kind: latency_summary(v) for kind, v in healthy.items()},
        "producer_errors": dict(sorted(workload.errors.items())) if workload else {},
        "faults": [{"kind": r.kind, "victims": list(r.victims), "detail": r.detail,
                    "failover_s": r.failover_s, "healthy_s": r.healthy_s} for r in reports],
    }


# --------------------------------------------------------------------------- report

def _ms(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:,.0f}"


def report(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"Three brokers (lease {s['lease_s']:g} s, replica lag time {s['replica_lag_ms']:,} ms) "
        f"on one etcd, each behind a proxy; a topic of {s['partitions']} partitions, 3 "
        f"replicas, min_insync_replicas 2; {s['producers']} producers per partition, batches "
        f"of {s['batch']} unique values, one in flight each, idempotent, retried for up to "
        "15 s then left unknown. "
        + (f"One round in {s['leader_kill_every']} kills a leader (-9); the others in turn: "
           if s["leader_kill_every"] else "The rounds in turn: kill a leader (-9), ")
        + "kill a "
        "follower, kill all three, pause a leader (SIGSTOP) for "
        f"{s['hold_s']:g} s, cut a leader from the brokers and etcd for {s['hold_s']:g} s, cut "
        f"a follower from the brokers, damage a stopped follower's segment tails, restart "
        "etcd; each healed, then until every partition has a live leader and a full ISR. "
        "Finally every partition is read back from its leader and compared with what the "
        "producers were told (`tests/nemesis.py`).",
        "",
        "*lost*: acknowledged, not read back; *dup*: read back twice; *unknown*: the producer "
        "never learned the outcome (*kept*: read back anyway); *moved*: read back elsewhere "
        "than acknowledged; *order*: a producer's later acknowledgement read back before an "
        "earlier one. Failover: a leader killed to the first produce acknowledged by "
        "another broker, per partition it led.",
        "",
        f"Machine: {machine_line(result['machine'])}; clients, proxies and brokers share the "
        f"cores. The whole run took {result.get('elapsed_s', 0) / 60:.1f} min.",
    ]
    summary = []
    for run in result["runs"]:
        total = run["total"] or {}
        f = run["failover"]
        summary.append([run["title"], f"{run['rounds']}", f"{run['leader_kills']}",
                        f"{total.get('acked', 0):,}", f"{total.get('lost', '-')}",
                        f"{total.get('duplicated', '-')}", f"{total.get('unknown', '-')}",
                        f"{total.get('moved', '-')}", f"{total.get('order', '-')}",
                        f"{run['unexpected'] if run['unexpected'] is not None else '-'}",
                        _ms(f.get("p50_ms")), _ms(f.get("p99_ms")), _ms(f.get("max_ms"))])
    lines += ["", "**Per run**", "", markdown_table(
        ["run", "rounds", "leader kills", "acked", "lost", "dup", "unknown", "moved", "order",
         "unexpected", "failover p50 ms", "p99 ms", "max ms"], summary, "l" + "r" * 12)]
    for run in result["runs"]:
        rows = [[phase, *(f"{counts[k]:,}" for k in nemesis.COLUMNS[1:])]
                for phase, counts in run["by_fault"].items()]
        if run["total"]:
            rows.append(["**all**", *(f"**{run['total'][k]:,}**" for k in nemesis.COLUMNS[1:])])
        heal = run["healthy_after"]
        lines += ["", f"**{run['title']}**, per fault kind (records)"
                  + (f" — stopped early: {run['aborted']}" if run["aborted"] else ""), "",
                  markdown_table(["fault", *nemesis.HEADERS[2:], "healthy after p50 / p99 s"],
                                 [[*row, (f"{heal[row[0]]['p50_ms'] / 1000:.1f} / "
                                          f"{heal[row[0]]['p99_ms'] / 1000:.1f}")
                                   if row[0] in heal else ""] for row in rows],
                                 "l" + "r" * (len(nemesis.HEADERS) - 1))]
    lines += ["", "Raw numbers (every fault, its victims, failover and healing times, the "
              "producers' errors): `bench/results/broker_chaos.json`."]
    return "\n".join(lines)


def write_report(result: dict[str, Any], path: Path = BENCHMARKS_MD) -> Path:
    written = write_section(NAME, TITLE + "\n\n" + report(result), path)
    log(f"wrote the '{NAME}' section of {written}")
    return written


# --------------------------------------------------------------------------- main

async def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="geoplex-bench-chaos-"))
    runs = []
    try:
        infra = LocalInfra(state / "infra", backends=("etcd",), configured=BackendUrls(),
                           progress=log)
        with infra:
            for key in args.runs:
                if args.quiet_wait > 0:
                    busy = await wait_for_quiet_async(max_wait=args.quiet_wait)
                    log(f"machine busy {busy:.0f}% of a core before the run")
                runs.append(await run_one(key, args, infra, state))
    finally:
        if args.keep:
            log(f"broker logs and data kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)
    return {
        "machine": machine_info(), "elapsed_s": time.monotonic() - began,
        "settings": {"rounds": args.rounds, "other_rounds": args.other_rounds,
                     "leader_kill_every": args.leader_kill_every,
                     "partitions": args.partitions, "producers": args.producers,
                     "batch": args.batch, "pace_ms": args.pace_ms, "hold_s": args.hold,
                     "calm_s": args.calm, "lease_s": 2.0, "replica_lag_ms": 2000},
        "runs": runs,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.broker_chaos", description=(__doc__ or "").split("\n\n")[0],
        epilog="A smoke run: --rounds 3 --runs all-batch --no-write. Re-render the "
               "BENCHMARKS.md section from bench/results/broker_chaos.json: --report-only.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--runs", default=",".join(RUNS),
        help="runs, comma-separated: " + ", ".join(f"{k} ({v[0]})" for k, v in RUNS.items()))
    add("--rounds", type=int, default=200, help="faults per run")
    add("--other-rounds", type=int, default=0,
        help="faults in the runs other than all-batch (the acks=LEADER and fsync-interval "
             "runs, which show what those settings lose); 0: as --rounds")
    add("--leader-kill-every", type=int, default=2,
        help="every n-th round kills a leader (the others cycle through the other faults)")
    add("--partitions", type=int, default=3, help="partitions of the topic")
    add("--producers", type=int, default=2, help="producers per partition")
    add("--batch", type=int, default=5, help="values per produce")
    add("--pace-ms", type=float, default=50.0,
        help="at least this long between one producer's batches")
    add("--hold", type=float, default=4.0, help="seconds a pause or a partition lasts")
    add("--calm", type=float, default=1.0, help="seconds of healthy load after each fault")
    add("--seed", type=int, default=None, help="the faults' and producers' random seed")
    add("--quiet-wait", type=float, default=10.0,
        help="seconds to wait at most for the machine to go idle before each run (0: never)")
    add("--keep", action="store_true", help="keep the brokers' data and logs")
    add("--no-write", action="store_true",
        help="print only: do not write bench/results/broker_chaos.json or BENCHMARKS.md")
    add("--report-only", action="store_true",
        help="run nothing: re-render the BENCHMARKS.md section from the results file")
    args = parser.parse_args(argv)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    if unknown or not runs:
        parser.error(f"--runs: {', '.join(unknown) or 'nothing'}; expected some of "
                     f"{', '.join(RUNS)}")
    args.runs = runs
    if args.rounds < 1 or args.partitions < 1 or args.producers < 1 or args.batch < 1:
        parser.error("--rounds, --partitions, --producers and --batch must be at least 1")
    if args.leader_kill_every < 0 or args.hold <= 0 or args.calm < 0 or args.pace_ms < 0:
        parser.error("--leader-kill-every, --calm and --pace-ms must be >= 0, --hold > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        result = read_results(RESULTS, RESULTS_DIR)
        print(report(result))
        write_report(result)
        return 0
    try:
        result = asyncio.run(run(args))
    except KeyboardInterrupt:
        print("interrupted; brokers stopped", file=sys.stderr)
        return 130
    markdown = report(result)
    print("\n" + markdown)
    if args.no_write:
        log("(results not written: --no-write)")
    else:
        log(f"wrote {write_results(RESULTS, result)}")
        write_report(result)
    failed = [r["key"] for r in result["runs"] if r["key"] == "all-batch" and r["valid"] is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
