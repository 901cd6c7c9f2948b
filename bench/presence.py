"""Presence fan-out benchmark: N streaming users on a power-law friend graph, Gothenburg roads.

``python -m bench.presence`` (``make bench-presence``), in one run, for each load
level (users N, update interval T):

1. **Ours**: the friend graph (mean degree min(400, (N-1)/2)) is loaded into
   MongoDB, two fresh presence processes share one port (SO_REUSEPORT), and the
   simulator (:mod:`geoplex.clients.simulator`, in its own process(es)) connects
   N live streams spread evenly over them, moves the users along the roads and
   sends one update per user every T seconds (jittered). Measured in a window
   after warm-up: updates/s sent and accepted, fan-out deliveries/s (a friend
   receiving a *new* location) against what was expected (friends within the
   radius), update-to-friend latency p50/p99, the RSS of each server process
   before and after its streams opened (memory per connection), and the CPU of
   servers, Redis, MongoDB and the client.
2. **The floor**: the same fan-out (same graph, same users on the same two
   "servers", same walks and update rate) with nothing but Python and Redis:
   one ``PUBLISH`` per update to the user's channel, one multiplexed PubSub
   connection per server subscribed to the channels of its users' friends, and
   delivery to in-process subscribers (a bounded queue and a task per user,
   filtered by the same radius), measuring publish-to-receipt latency.

A level is *sustained* when at least 95 % of the scheduled updates went out,
at least 95 % of the expected deliveries arrived and p99 stayed below the
interval (so nothing queues up). From the highest level both sustain, the
results extrapolate servers and Redis pub/sub shards for 10 M concurrent users
(334 k updates/s, 400 friends). Writes ``bench/results/presence.json`` and the
``presence`` section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis
import redis.asyncio as aioredis

from geoplex.clients.simulator import (
    DEFAULT_RADIUS_M,
    FriendGraph,
    RoadNetwork,
    SimConfig,
    Simulator,
    Walker,
    haversine_m,
    haversine_np,
    latency_summary_ms,
    load_graph,
)
from geoplex.infra.local import LocalInfra

from ._common import (
    CpuSample,
    cpu_usage,
    fmt_num,
    free_port,
    machine_info,
    machine_line,
    markdown_table,
    start_server_processes,
    wait_for_quiet,
    write_results,
    write_section,
)

NAME = "presence"
DATABASE = "geoplex_bench_presence"
NAMESPACE = "bp:"
SERVERS = 2
# (users, real seconds between two updates of one user)
DEFAULT_LEVELS = ("100:1", "300:2", "300:1", "1000:8", "1000:4")

# The target of the extrapolation (System Design Interview vol. 2, "Nearby friends").
TARGET_USERS = 10_000_000
TARGET_UPDATES_PER_S = 334_000
TARGET_FRIENDS = 400
BOOK_ONLINE_NEARBY = 0.10        # the book: 10 % of friends online and nearby
BOOK_PUSHES_PER_REDIS = 100_000  # the book: pushes/s one Redis pub/sub server handles


def log(msg: str) -> None:
    print(msg, flush=True)


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sustained(cell: dict[str, Any], interval_s: float) -> bool:
    return (cell["updates_per_s"] >= 0.95 * cell["offered_updates_per_s"]
            and (cell["delivery_ratio"] or 0) >= 0.95
            and (cell["latency_ms"]["p99"] or math.inf) < interval_s * 1000)


# -- 1. ours ----------------------------------------------------------------------------

def run_ours(level: tuple[int, float], args: argparse.Namespace, net: RoadNetwork,
             graph: FriendGraph, env: dict[str, str], infra_pids: dict[str, int]
             ) -> dict[str, Any]:
    users, interval = level
    config = SimConfig(targets=("",), users=users, interval_s=interval,
                       sim_interval_s=args.sim_interval, duration_s=args.duration,
                       warmup_s=args.warmup, processes=args.client_processes,
                       prefix=f"u{users}t{interval:g}-", seed=args.seed)
    log(f"  loading the friend graph ({graph.pairs:,} friendships)...")
    load_s = asyncio.run(load_graph(env["GEOPLEX_MONGO_URI"], DATABASE, config, graph))
    log(f"  loaded in {load_s:.1f} s")
    wait_for_quiet(max_wait=10)
    port = free_port()
    server_env = {**env, "GEOPLEX_PRESENCE_PORT": str(port),
                  "GEOPLEX_PRESENCE_REUSE_PORT": "true", "GEOPLEX_LOG_LEVEL": "warning",
                  "GEOPLEX_PRESENCE_DATABASE": DATABASE,
                  "GEOPLEX_PRESENCE_NAMESPACE": NAMESPACE}
    with start_server_processes([sys.executable, "-m", "geoplex.servers.presence"], SERVERS,
                                server_env, ready_timeout=60) as servers:
        config = dataclasses.replace(config, targets=(servers.address,))
        sim = Simulator(config, net, graph)
        rss: dict[str, dict[str, int]] = {"start": {str(p): rss_bytes(p) for p in servers.pids}}
        marks: dict[str, Any] = {}
        sync_redis = redis.Redis.from_url(env["GEOPLEX_REDIS_URL"])

        def pids() -> list[int]:
            return [*servers.pids, infra_pids["redis"], infra_pids["mongo"], *sim.worker_pids]

        def on_phase(phase: str) -> None:
            if phase == "connected":
                rss["connected"] = {str(p): rss_bytes(p) for p in servers.pids}
            elif phase == "window_start":
                marks["cpu0"] = CpuSample.take(pids())
                marks["redis0"] = sync_redis.info("commandstats")
            elif phase == "window_end":
                marks["cpu1"] = CpuSample.take(pids())
                marks["redis1"] = sync_redis.info("commandstats")
                rss["end"] = {str(p): rss_bytes(p) for p in servers.pids}

        try:
            result = sim.run(progress=log, on_phase=on_phase)
        finally:
            sync_redis.close()
        tails = [servers.log_tail(i, 5) for i in range(SERVERS)]
    cpu = _cpu_breakdown(marks["cpu0"], marks["cpu1"], len(servers.pids), len(sim.worker_pids))
    publishes = _calls(marks["redis1"], "publish") - _calls(marks["redis0"], "publish")
    window = result.window_s
    cell = result.as_dict()
    cell.pop("progress", None)
    cell.update(
        offered_updates_per_s=users / interval, load_s=load_s, cpu=cpu,
        rss=rss, memory_per_connection_bytes=_per_connection(rss, result.sessions_per_server),
        redis_publish_per_s=publishes / window,
        server_events_per_s=(result.deliveries + result.refreshes) / window,
        server_log_tails=[t for t in tails if t.strip()])
    cell["sustained"] = sustained(cell, interval)
    return cell


def _calls(info: dict[str, Any], command: str) -> int:
    stats = info.get(f"cmdstat_{command}") or {}
    return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0


def _cpu_breakdown(c0: CpuSample, c1: CpuSample, servers: int, clients: int) -> dict[str, Any]:
    wall = c1.wall - c0.wall
    each = [(b - a) / wall * 100 for a, b in zip(c0.pids, c1.pids)]
    server = each[:servers]
    redis_pct, mongo_pct = each[servers], each[servers + 1]
    client = each[servers + 2:servers + 2 + clients]
    busy = (c1.busy - c0.busy) / wall * 100
    own = (c1.own - c0.own) / wall * 100
    return {"server_pct_each": server, "server_pct": sum(server), "redis_pct": redis_pct,
            "mongo_pct": mongo_pct, "client_pct": sum(client), "coordinator_pct": own,
            "machine_pct": busy,
            "other_pct": max(0.0, busy - sum(each) - own)}


def _per_connection(rss: dict[str, dict[str, int]], sessions: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase in ("connected", "end"):
        per = []
        for pid, count in sessions.items():
            if count and pid in rss.get(phase, {}) and pid in rss["start"]:
                per.append((rss[phase][pid] - rss["start"][pid]) / count)
        out[phase] = sum(per) / len(per) if per else math.nan
    return out


# -- 2. the floor: raw Redis pub/sub from Python ------------------------------------------

async def run_floor(level: tuple[int, float], args: argparse.Namespace, net: RoadNetwork,
                    graph: FriendGraph, redis_url: str, redis_pid: int,
                    radius_m: float) -> dict[str, Any]:
    users, interval = level
    prefix = f"{NAMESPACE}floor{users}t{interval:g}:"
    rng = random.Random(args.seed * 31 + users)
    starts = np.random.default_rng(args.seed + 7).integers(0, net.nodes, size=users)
    walkers = [Walker(net, int(s), rng) for s in starts]
    positions = [w.position() for w in walkers]
    coords = np.array(positions)  # the same positions, for counting expected deliveries
    home = [i % SERVERS for i in range(users)]  # the simulator alternates processes too
    followers: list[dict[int, list[int]]] = [{} for _ in range(SERVERS)]
    for user in range(users):
        for friend in graph.friends(user).tolist():
            followers[home[friend]].setdefault(user, []).append(friend)
    window = [math.inf, math.inf]
    latencies: list[float] = []
    counts = {"sent": 0, "expected": 0, "deliveries": 0, "dropped": 0}
    queues = [asyncio.Queue(maxsize=1024) for _ in range(users)]
    pub = aioredis.Redis.from_url(redis_url, max_connections=64)
    subs = [aioredis.Redis.from_url(redis_url) for _ in range(SERVERS)]
    pubsubs = [s.pubsub(ignore_subscribe_messages=True) for s in subs]
    for server, pubsub in enumerate(pubsubs):
        channels = [f"{prefix}{u}" for u in followers[server]]
        for n in range(0, len(channels), 1000):
            await pubsub.subscribe(*channels[n:n + 1000])
    step_m = args.speed * args.sim_interval

    async def subscriber(user: int) -> None:
        q = queues[user]
        while True:
            t = await q.get()
            now = time.time()
            if window[0] <= now < window[1]:
                counts["deliveries"] += 1
                latencies.append(now - t)

    async def server(index: int) -> None:
        pubsub = pubsubs[index]
        mine = followers[index]
        cut = len(prefix)
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            user = int(message["channel"][cut:])
            lat, lon, t = json.loads(message["data"])
            for friend in mine.get(user, ()):
                flat, flon = positions[friend]
                if haversine_m(lat, lon, flat, flon) <= radius_m:
                    try:
                        queues[friend].put_nowait(t)
                    except asyncio.QueueFull:
                        counts["dropped"] += 1

    async def mover(user: int, go: float, end: float) -> None:
        due = go + rng.uniform(0.0, interval)
        friends = graph.friends(user)
        channel = f"{prefix}{user}"
        while True:
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.time()
            if now >= end:
                return
            lat, lon = walkers[user].advance(step_m)
            positions[user] = (lat, lon)
            coords[user] = (lat, lon)
            await pub.publish(channel, json.dumps([lat, lon, now]))
            if window[0] <= now < window[1]:
                counts["sent"] += 1
                counts["expected"] += int(np.count_nonzero(haversine_np(
                    lat, lon, coords[friends, 0], coords[friends, 1]) <= radius_m))
            due = max(due + interval * rng.uniform(0.9, 1.1), now - interval)

    readers = [asyncio.create_task(server(i)) for i in range(SERVERS)]
    consumers = [asyncio.create_task(subscriber(u)) for u in range(users)]
    go = time.time() + 0.3
    window[:] = [go + args.warmup, go + args.warmup + args.duration]
    movers = [asyncio.create_task(mover(u, go, window[1])) for u in range(users)]
    await asyncio.sleep(max(0.0, window[0] - time.time()))
    c0 = CpuSample.take([redis_pid])
    await asyncio.sleep(max(0.0, window[1] - time.time()))
    c1 = CpuSample.take([redis_pid])
    await asyncio.gather(*movers, return_exceptions=True)
    for task in (*readers, *consumers):
        task.cancel()
    await asyncio.gather(*readers, *consumers, return_exceptions=True)
    for pubsub in pubsubs:
        await pubsub.aclose()
    for client in (pub, *subs):
        await client.aclose()
    usage = cpu_usage(c0, c1)
    duration = args.duration
    cell = {
        "users": users, "interval_s": interval, "offered_updates_per_s": users / interval,
        "updates_per_s": counts["sent"] / duration,
        "deliveries_per_s": counts["deliveries"] / duration,
        "expected_deliveries_per_s": counts["expected"] / duration,
        "delivery_ratio": counts["deliveries"] / counts["expected"] if counts["expected"]
        else math.nan,
        "dropped": counts["dropped"], "latency_ms": latency_summary_ms(latencies),
        "cpu": {"process_pct": usage.get("client_cpu_pct"),
                "redis_pct": usage.get("server_cpu_pct"),
                "machine_pct": usage.get("machine_cpu_pct")},
        "pushes_per_s": counts["sent"] / duration * SERVERS,
    }
    cell["sustained"] = sustained(cell, interval)
    return cell


# -- extrapolation ----------------------------------------------------------------------------

def extrapolate(cells: list[dict[str, Any]]) -> dict[str, Any]:
    both = [c for c in cells if c["ours"]["sustained"] and c["floor"]["sustained"]]
    best = max(both, key=lambda c: c["ours"]["deliveries_per_s"]) if both else \
        max(cells, key=lambda c: c["ours"]["deliveries_per_s"])
    ours, floor = best["ours"], best["floor"]
    server_cores = ours["cpu"]["server_pct"] / 100
    per_core = ours["deliveries_per_s"] / server_cores if server_cores else math.nan
    updates_per_core = ours["accepted_per_s"] / server_cores if server_cores else math.nan
    out: dict[str, Any] = {"from_level": {"users": best["users"],
                                          "interval_s": best["interval_s"],
                                          "both_sustained": bool(both)},
                           "deliveries_per_server_core_s": per_core,
                           "updates_per_server_core_s": updates_per_core}
    bytes_per_conn = ours["memory_per_connection_bytes"].get("end", math.nan)
    out["memory_per_connection_bytes"] = bytes_per_conn
    scenarios = {}
    for label, fraction in (("book: 10% of friends online and nearby", BOOK_ONLINE_NEARBY),
                            ("measured here: every friend online, "
                             f"{ours['nearby_fraction']:.0%} nearby",
                             ours["nearby_fraction"])):
        fanout = TARGET_UPDATES_PER_S * TARGET_FRIENDS * fraction
        servers_cpu = math.ceil(fanout / per_core) if per_core else math.nan
        servers_mem = math.ceil(TARGET_USERS * bytes_per_conn / (16 * 2**30) / 0.7) \
            if bytes_per_conn == bytes_per_conn else math.nan
        # each update is pushed once per server holding a follower of the user
        followers_online = TARGET_FRIENDS * fraction
        pushes_per_update = min(followers_online, servers_cpu) if servers_cpu else \
            followers_online
        pushes = TARGET_UPDATES_PER_S * pushes_per_update
        scenarios[label] = {
            "fanout_deliveries_per_s": fanout,
            "presence_server_cores": servers_cpu,
            "presence_servers_16gib_for_memory": servers_mem,
            "connections_per_core": TARGET_USERS / servers_cpu if servers_cpu else math.nan,
            "redis_pushes_per_s": pushes,
            "redis_shards_book": math.ceil(pushes / BOOK_PUSHES_PER_REDIS),
        }
    out["scenarios"] = scenarios
    # what Redis did here: pushes per second of Redis CPU in the floor run
    redis_pct = floor["cpu"]["redis_pct"] or math.nan
    out["redis_floor_publishes_per_s"] = floor["updates_per_s"]
    out["redis_floor_pushes_per_s"] = floor["pushes_per_s"]
    out["redis_floor_cpu_pct"] = redis_pct
    out["redis_pushes_per_core_s"] = floor["pushes_per_s"] / (redis_pct / 100) \
        if redis_pct and redis_pct == redis_pct else math.nan
    for scenario in scenarios.values():
        per_redis = out["redis_pushes_per_core_s"]
        scenario["redis_shards_measured"] = math.ceil(scenario["redis_pushes_per_s"] / per_redis) \
            if per_redis == per_redis and per_redis else math.nan
    return out


# -- report --------------------------------------------------------------------------------

def report(result: dict[str, Any]) -> str:
    g0 = result["network"]
    lines = [
        f"Machine: {machine_line(result['machine'])}.",
        f"Roads: Gothenburg, {g0['junctions']:,} junctions, {g0['segments']:,} segments, "
        f"{g0['extent_km'][0]:.0f} x {g0['extent_km'][1]:.0f} km; users walk the largest "
        f"connected part at {result['speed_mps']:g} m/s, one update every T real seconds "
        f"standing for {result['sim_interval_s']:g} s of movement; radius 5 miles, so most "
        "friends are nearby (maximal fan-out). Friend graph: Chung-Lu, power-law exponent "
        "2.5, mean degree min(400, (N-1)/2). Two presence processes share the port; the "
        f"simulator runs in {result['client_processes']} separate process(es); "
        f"{result['duration_s']:g} s window after {result['warmup_s']:g} s warm-up. "
        "**Ours**: through gRPC streams, Redis and the hubs; **floor**: the same updates "
        "published with raw redis.asyncio PUBLISH, one PubSub connection per 'server', "
        "delivered to in-process subscriber queues (one Python process).",
        "",
    ]
    rows = []
    for c in result["cells"]:
        o, f = c["ours"], c["floor"]
        ratio = o["latency_ms"]["p99"] / f["latency_ms"]["p99"] \
            if f["latency_ms"]["p99"] else math.nan
        rows.append([
            f"{c['users']:,}", f"{c['interval_s']:g}", f"{o['graph']['avg_degree']:.0f}",
            f"{o['nearby_fraction']:.0%}",
            f"{fmt_num(o['accepted_per_s'])} / {fmt_num(o['offered_updates_per_s'])}",
            f"{fmt_num(o['deliveries_per_s'])} ({o['delivery_ratio']:.0%})",
            f"{o['latency_ms']['p50']:.1f} / {o['latency_ms']['p99']:.1f}",
            f"{fmt_num(f['deliveries_per_s'])} ({f['delivery_ratio']:.0%})",
            f"{f['latency_ms']['p50']:.1f} / {f['latency_ms']['p99']:.1f}",
            f"{ratio:.1f}x",
            " + ".join(f"{x:.0f}" for x in o["cpu"]["server_pct_each"]),
            f"{o['cpu']['client_pct']:.0f}", f"{o['cpu']['redis_pct']:.0f}",
            f"{o['cpu']['mongo_pct']:.0f}",
            f"{o['memory_per_connection_bytes']['end'] / 1024:.0f}",
            ("yes" if o["sustained"] else "no") + " / " + ("yes" if f["sustained"] else "no"),
        ])
    lines.append(markdown_table(
        ["users", "T s", "friends", "nearby", "updates/s accepted / offered",
         "ours fan-out/s (of expected)", "ours p50 / p99 ms", "floor fan-out/s",
         "floor p50 / p99 ms", "p99 ours / floor", "server CPU % (2 procs)", "client CPU %",
         "Redis CPU %", "Mongo CPU %", "KiB per connection", "sustained ours / floor"],
        rows, "rrrrrrrrrrrrrrrr"))
    x = result["extrapolation"]
    lvl = x["from_level"]
    lines += [
        "",
        "Fan-out/s counts friends receiving a *new* location (FriendNearby/FriendMoved); the "
        "servers also send about as many distance refreshes when the receiver itself moves "
        "(not counted). Sustained: >= 95 % of updates sent, >= 95 % of expected deliveries "
        "received, p99 below the interval. KiB per connection: server RSS growth from start "
        "to the end of the window divided by its streams (each stream follows ~400 friends).",
        "",
        f"**Extrapolation to {TARGET_USERS / 1e6:.0f} M concurrent users, "
        f"{TARGET_UPDATES_PER_S / 1000:.0f} k updates/s, {TARGET_FRIENDS} friends** (from "
        f"{lvl['users']:,} users, T = {lvl['interval_s']:g} s"
        + ("" if lvl["both_sustained"] else ", the busiest level: none was sustained by both")
        + f"): one presence process core delivered {fmt_num(x['deliveries_per_server_core_s'])}"
        f" fan-out messages/s ({fmt_num(x['updates_per_server_core_s'])} updates/s); Redis "
        f"pushed {fmt_num(x['redis_pushes_per_core_s'])} messages/s per core in the floor run "
        f"(book: {BOOK_PUSHES_PER_REDIS / 1000:.0f} k/s per Redis server).",
        "",
    ]
    srows = []
    for label, s in x["scenarios"].items():
        srows.append([label, fmt_num(s["fanout_deliveries_per_s"] / 1e6, 1) + " M",
                      fmt_num(s["presence_server_cores"]),
                      fmt_num(s["connections_per_core"]),
                      fmt_num(s["presence_servers_16gib_for_memory"]),
                      fmt_num(s["redis_pushes_per_s"] / 1e6, 1) + " M",
                      fmt_num(s["redis_shards_book"]), fmt_num(s["redis_shards_measured"])])
    lines.append(markdown_table(
        ["assumption", "fan-out/s", "presence cores (CPU)", "streams per core",
         "16 GiB servers (memory, 70 % full)", "Redis pushes/s",
         "Redis shards @100 k/s (book)", "Redis shards @measured"], srows, "lrrrrrrr"))
    lines += [
        "",
        "Redis pushes: one PUBLISH per update reaches each *server* holding a follower "
        "(one multiplexed subscription per process), so with streams spread at random it "
        "is ~ the number of online nearby friends per update; sharded pub/sub "
        "(SPUBLISH/SSUBSCRIBE) spreads channels over the shards by user id.",
    ]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------

def parse_level(text: str) -> tuple[int, float]:
    users, _, interval = text.partition(":")
    return int(users), float(interval or 1)


def main_run(args: argparse.Namespace) -> dict[str, Any]:
    machine = machine_info()
    net = RoadNetwork.gothenburg(progress=log)
    ns, ew = net.extent_m()
    result: dict[str, Any] = {
        "machine": machine,
        "network": {"junctions": net.nodes, "segments": net.edges,
                    "extent_km": [ns / 1000, ew / 1000]},
        "speed_mps": args.speed, "sim_interval_s": args.sim_interval,
        "duration_s": args.duration, "warmup_s": args.warmup,
        "client_processes": args.client_processes, "servers": SERVERS, "cells": []}
    with tempfile.TemporaryDirectory(prefix="geoplex-bench-presence-") as state:
        infra = LocalInfra.from_env(Path(state), backends=("redis", "mongo"), progress=log)
        urls = infra.start()
        try:
            env = urls.env()
            infra_pids = {name: proc.proc.pid for name, proc in infra.procs.items()
                          if proc.proc is not None}
            if set(infra_pids) != {"redis", "mongo"}:
                raise SystemExit("bench.presence starts its own Redis and MongoDB to measure "
                                 "their CPU: unset GEOPLEX_REDIS_URL / GEOPLEX_MONGO_URI")
            for level in args.levels:
                users, interval = level
                graph = FriendGraph.power_law(users, seed=args.seed)
                log(f"\n== {users:,} users, one update every {interval:g} s "
                    f"({users / interval:,.0f} updates/s), mean degree "
                    f"{graph.degrees.mean():.0f}")
                ours = run_ours(level, args, net, graph, env, infra_pids)
                log(f"  ours: {ours['accepted_per_s']:,.0f} updates/s, "
                    f"{ours['deliveries_per_s']:,.0f} fan-out/s ({ours['delivery_ratio']:.0%} "
                    f"of expected), p50 {ours['latency_ms']['p50']:.1f} ms, "
                    f"p99 {ours['latency_ms']['p99']:.1f} ms; servers "
                    f"{ours['cpu']['server_pct']:.0f} % CPU, client "
                    f"{ours['cpu']['client_pct']:.0f} %, redis {ours['cpu']['redis_pct']:.0f} "
                    f"%, mongo {ours['cpu']['mongo_pct']:.0f} %; "
                    f"{ours['memory_per_connection_bytes']['end'] / 1024:.0f} KiB/connection")
                wait_for_quiet(max_wait=10)
                floor = asyncio.run(run_floor(level, args, net, graph, urls.redis_url or "",
                                              infra_pids["redis"], args.radius))
                log(f"  floor: {floor['updates_per_s']:,.0f} updates/s, "
                    f"{floor['deliveries_per_s']:,.0f} fan-out/s "
                    f"({floor['delivery_ratio']:.0%}), p50 {floor['latency_ms']['p50']:.2f} ms,"
                    f" p99 {floor['latency_ms']['p99']:.2f} ms; process "
                    f"{floor['cpu']['process_pct']:.0f} % CPU, redis "
                    f"{floor['cpu']['redis_pct']:.0f} %")
                result["cells"].append({"users": users, "interval_s": interval,
                                        "ours": ours, "floor": floor})
        finally:
            infra.stop()
    result["extrapolation"] = extrapolate(result["cells"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.presence",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--levels", type=parse_level, nargs="+",
                        default=[parse_level(x) for x in DEFAULT_LEVELS],
                        help="USERS:INTERVAL_S load levels, in order")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--sim-interval", type=float, default=30.0,
                        help="simulated seconds each update stands for")
    parser.add_argument("--speed", type=float, default=10.0, help="m/s")
    parser.add_argument("--radius", type=float, default=DEFAULT_RADIUS_M, help="metres")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    started = time.perf_counter()
    with contextlib.suppress(KeyboardInterrupt):
        result = main_run(args)
        result["elapsed_s"] = time.perf_counter() - started
        markdown = report(result)
        print("\n" + markdown)
        if not args.no_write:
            log(f"wrote {write_results(NAME, result)}")
            log(f"wrote {write_section(NAME, '## Presence fan-out' + chr(10) + chr(10) + markdown)}")


if __name__ == "__main__":
    main()
