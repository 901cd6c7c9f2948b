"""Presence fan-out benchmark: N streaming users on a power-law friend graph, Gothenburg roads.

``python -m bench.presence``, in one run (about 7 minutes), for each load
level (users N, update interval T):

1. **Ours**: the friend graph (mean degree min(400, (N-1)/2)) is loaded into
   MongoDB, two fresh presence processes share one port (SO_REUSEPORT), and the
   simulator (:mod:`geoplex.tools.simulator`, in its own process(es)) connects
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
interval (so nothing queues up) and below one second. From the highest level both sustain, the
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
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import grpc.aio
import numpy as np
import redis
import redis.asyncio as aioredis
import uvloop

from geoplex.tools.simulator import (
    DEFAULT_RADIUS_M,
    FriendGraph,
    RoadNetwork,
    SimConfig,
    Simulator,
    Walker,
    latency_summary_ms,
    load_graph,
    scheduled_moves,
)
from geoplex.infra.process import stop_all
from geoplex.servers._runtime.geo import haversine_m, haversine_np

from ._common import (log, 
    RESULTS_DIR,
    CpuSample,
    cpu_usage,
    fmt_num,
    free_port,
    local_backends,
    machine_info,
    machine_line,
    markdown_table,
    process_cpu_seconds,
    start_server_processes,
    wait_for_quiet,
    write_results,
    read_results,
    write_section,
)

NAME = "presence"
DATABASE = "geoplex_bench_presence"
NAMESPACE = "bp:"
SERVERS = 2
# (users, real seconds between two updates of one user)
DEFAULT_LEVELS = ("100:4", "100:1", "300:6", "300:3", "1000:60")
SIDES = ("ours", "floor", "floor-grpc")

# The target of the extrapolation (System Design Interview vol. 2, "Nearby friends").
TARGET_USERS = 10_000_000
TARGET_UPDATES_PER_S = 334_000
TARGET_FRIENDS = 400
BOOK_ONLINE_NEARBY = 0.10        # the book: 10 % of friends online and nearby
BOOK_PUSHES_PER_REDIS = 100_000  # the book: pushes/s one Redis pub/sub server handles




def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


MAX_P99_MS = 1000.0  # a friend's dot should move within a second


def sustained(cell: dict[str, Any], interval_s: float) -> bool:
    """Kept up: the updates went out, the deliveries arrived, and p99 stayed under
    both the interval (no backlog) and a second."""
    p99 = cell["latency_ms"]["p99"]
    return (cell["updates_per_s"] >= 0.95 * cell["offered_updates_per_s"]
            and (cell["delivery_ratio"] or 0) >= 0.95
            and p99 == p99 and p99 < min(interval_s * 1000, MAX_P99_MS))


# -- 1. ours ----------------------------------------------------------------------------

def run_ours(level: tuple[int, float], args: argparse.Namespace, net: RoadNetwork,
             graph: FriendGraph, env: dict[str, str], infra_pids: dict[str, int],
             loaded: dict[int, float]) -> dict[str, Any]:
    users, interval = level
    config = SimConfig(targets=("",), users=users, interval_s=interval,
                       sim_interval_s=args.sim_interval, speed_mps=args.speed,
                       duration_s=args.duration, warmup_s=args.warmup, radius_m=args.radius,
                       processes=args.client_processes, prefix=f"n{users}-", seed=args.seed)
    load_s = loaded.get(users)
    if load_s is None:  # levels with the same N share one graph (same seed, same users)
        log(f"  loading the friend graph ({graph.pairs:,} friendships, "
            f"{2 * graph.pairs:,} documents)...")
        load_s = loaded[users] = asyncio.run(
            load_graph(env["GEOPLEX_MONGO_URI"], DATABASE, config, graph))
        log(f"  loaded in {load_s:.1f} s")
    quiet = wait_for_quiet(max_wait=5)
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
        server_log_tails=[t for t in tails if t.strip()], machine_busy_before_pct=quiet)
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
    queues: list[asyncio.Queue[float]] = [asyncio.Queue(maxsize=1024) for _ in range(users)]
    pub = aioredis.Redis.from_url(redis_url, max_connections=64)
    subs = [aioredis.Redis.from_url(redis_url) for _ in range(SERVERS)]
    pubsubs = [s.pubsub(ignore_subscribe_messages=True) for s in subs]
    for index, pubsub in enumerate(pubsubs):
        channels = [f"{prefix}{u}" for u in followers[index]]
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
        friends = graph.friends(user)
        channel = f"{prefix}{user}"
        async for now, lat, lon in scheduled_moves(walkers[user], step_m, interval, rng, go, end):
            positions[user] = (lat, lon)
            coords[user] = (lat, lon)
            await pub.publish(channel, json.dumps([lat, lon, now]))
            if window[0] <= now < window[1]:
                counts["sent"] += 1
                counts["expected"] += int(np.count_nonzero(haversine_np(
                    lat, lon, coords[friends, 0], coords[friends, 1]) <= radius_m))

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
                "machine_pct": usage.get("machine_cpu_pct"),
                "other_pct": usage.get("other_cpu_pct")},
        "pushes_per_s": counts["sent"] / duration * SERVERS,
    }
    cell["sustained"] = sustained(cell, interval)
    return cell


# -- 2b. the gRPC-hop floor: the raw floor behind one minimal grpc.aio stream ------------------

async def run_floor_grpc(level: tuple[int, float], args: argparse.Namespace, net: RoadNetwork,
                         graph: FriendGraph, redis_url: str, redis_pid: int,
                         radius_m: float) -> dict[str, Any]:
    """The same users, friends, walks and rates as :func:`run_floor`, through
    :mod:`bench._presence_floor`: two server processes on one port, N bidirectional
    streams from this process (uvloop, ~50 streams per connection as the simulator)."""
    from array import array as _array

    from geoplex.clients.mesh import open_spread_channels

    from . import _presence_floor as pf

    users, interval = level
    prefix = f"{NAMESPACE}gfloor{users}t{interval:g}:"
    rng = random.Random(args.seed * 31 + users)
    starts = np.random.default_rng(args.seed + 7).integers(0, net.nodes, size=users)
    walkers = [Walker(net, int(s), rng) for s in starts]
    coords = np.array([w.position() for w in walkers])
    window = [math.inf, math.inf]
    latencies = _array("d")
    counts = {"sent": 0, "expected": 0, "deliveries": 0, "refreshes": 0}
    step_m = args.speed * args.sim_interval
    port = free_port()
    argv = [sys.executable, "-m", "bench._presence_floor", "--port", str(port),
            "--redis", redis_url, "--prefix", prefix, "--radius", str(radius_m)]
    with start_server_processes(argv, SERVERS, {}, ready_timeout=60) as servers:
        channels = await open_spread_channels((servers.address,), math.ceil(users / 50))
        calls: list[Any] = []
        for user in range(users):
            live: Any = channels[user % len(channels)][0].stream_stream(pf.LIVE)
            call = live()
            friends = graph.friends(user).astype("<i4")
            await call.write(pf.USER.pack(user) + friends.tobytes())
            calls.append(call)
        for call in calls:  # each server has subscribed its user's friends' channels
            await call.read()

        async def consume(user: int) -> None:
            call = calls[user]
            unpack = pf.EVENT.iter_unpack
            while True:
                data = await call.read()
                if data is grpc.aio.EOF:
                    raise RuntimeError(f"stream ended: {await call.code()} {await call.details()}")
                if not data:
                    continue
                now = time.time()
                if window[0] <= now < window[1]:
                    for event in unpack(data):
                        if event[0] < 0:  # a refresh (user -1 - friend): not a fan-out
                            counts["refreshes"] += 1
                            continue
                        counts["deliveries"] += 1
                        latencies.append(now - event[3])

        async def mover(user: int, go: float, end: float) -> None:
            friends = graph.friends(user)
            call = calls[user]
            await call.write(pf.UPDATE.pack(*coords[user], go))  # position known to its server
            async for now, lat, lon in scheduled_moves(walkers[user], step_m, interval, rng,
                                                       go, end):
                coords[user] = (lat, lon)
                await call.write(pf.UPDATE.pack(lat, lon, now))
                if window[0] <= now < window[1]:
                    counts["sent"] += 1
                    counts["expected"] += int(np.count_nonzero(haversine_np(
                        lat, lon, coords[friends, 0], coords[friends, 1]) <= radius_m))

        consumers = [asyncio.create_task(consume(u)) for u in range(users)]
        go = time.time() + 0.3
        window[:] = [go + args.warmup, go + args.warmup + args.duration]
        movers = [asyncio.create_task(mover(u, go, window[1])) for u in range(users)]
        pids = [*servers.pids, redis_pid]
        await asyncio.sleep(max(0.0, window[0] - time.time()))
        c0 = CpuSample.take(pids)
        await asyncio.sleep(max(0.0, window[1] - time.time()))
        c1 = CpuSample.take(pids)
        ends = await asyncio.gather(*movers, return_exceptions=True)
        for call in calls:
            call.cancel()
        ends += await asyncio.gather(*consumers, return_exceptions=True)
        errors = [repr(e) for e in ends
                  if isinstance(e, BaseException) and not isinstance(e, asyncio.CancelledError)]
        for channel, _ in channels:
            await channel.close()
        stop_all(servers.processes, 5.0)  # their last line counts what they passed on
        tails = [servers.log_tail(i, 3) for i in range(SERVERS)]
    wall = c1.wall - c0.wall
    each = [(b - a) / wall * 100 for a, b in zip(c0.pids, c1.pids)]
    duration = args.duration
    cell = {
        "users": users, "interval_s": interval, "offered_updates_per_s": users / interval,
        "updates_per_s": counts["sent"] / duration,
        "deliveries_per_s": counts["deliveries"] / duration,
        "refreshes_per_s": counts["refreshes"] / duration,
        "expected_deliveries_per_s": counts["expected"] / duration,
        "delivery_ratio": counts["deliveries"] / counts["expected"] if counts["expected"]
        else math.nan,
        "latency_ms": latency_summary_ms(latencies),
        "cpu": {"server_pct_each": each[:SERVERS], "server_pct": sum(each[:SERVERS]),
                "redis_pct": each[SERVERS],
                "client_pct": (c1.own - c0.own) / wall * 100,
                "machine_pct": (c1.busy - c0.busy) / wall * 100},
        "server_log_tails": tails, "client_errors": len(errors),
        "first_client_error": sorted(set(errors))[:3] if errors else None,
    }
    cell["sustained"] = sustained(cell, interval)
    return cell


# -- 3. what one Redis does: pub/sub pushes per core ---------------------------------------

def redis_pubsub_capacity(redis_url: str, redis_pid: int, channels: int = 2000,
                          subscribers: int = SERVERS, publishes: int = 200_000
                          ) -> dict[str, Any]:
    """PUBLISH from ``redis-benchmark`` (C) to ``subscribers`` ``redis-cli`` readers (C).

    Each subscriber stands for one presence process subscribed to every user's channel,
    so each publish is pushed ``subscribers`` times; Python is out of the way, so this is
    what Redis itself does per core with our message size. No pipelining (``-P 1``): one
    publish per round trip, as a presence process sends one pipeline per update.
    """
    bench_bin, cli = shutil.which("redis-benchmark"), shutil.which("redis-cli")
    if not bench_bin or not cli:
        return {"skipped": "redis-benchmark / redis-cli not on PATH"}
    url = urllib.parse.urlparse(redis_url)
    host, port = url.hostname or "127.0.0.1", str(url.port or 6379)
    names = [f"{NAMESPACE}rb:{i:012d}" for i in range(channels)]
    payload = '{"k":"loc","f":[57.7080617,11.9743582,1764097234.123456]}'
    client = redis.Redis.from_url(redis_url)
    subs = [subprocess.Popen([cli, "-h", host, "-p", port, "subscribe", *names],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL) for _ in range(subscribers)]
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if client.pubsub_numsub(names[-1])[0][1] >= subscribers:
                break
            time.sleep(0.1)
        else:
            return {"skipped": "redis-cli subscribers did not subscribe in time"}
        before = _calls(client.info("commandstats"), "publish")
        cpu0, t0 = process_cpu_seconds(redis_pid), time.perf_counter()
        run = subprocess.run([bench_bin, "-h", host, "-p", port, "-c", "16", "-P", "1",
                              "-n", str(publishes), "-r", str(channels), "-q",
                              "publish", f"{NAMESPACE}rb:__rand_int__", payload],
                             capture_output=True, text=True, timeout=120)
        cpu1, t1 = process_cpu_seconds(redis_pid), time.perf_counter()
        published = _calls(client.info("commandstats"), "publish") - before
        still = client.pubsub_numsub(names[-1])[0][1]
    finally:
        for sub in subs:
            sub.terminate()
        for sub in subs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                sub.wait(5)
        client.close()
    wall, cpu = t1 - t0, cpu1 - cpu0
    pushes = published * subscribers
    return {"channels": channels, "subscribers": subscribers, "payload_bytes": len(payload),
            "publishes": published, "publish_per_s": published / wall,
            "pushes_per_s": pushes / wall, "redis_cpu_pct": cpu / wall * 100,
            "pushes_per_redis_core_s": pushes / cpu if cpu > 0 else math.nan,
            "subscribers_still_attached": still, "redis_benchmark": run.stdout.strip()[-200:]}


# -- extrapolation ----------------------------------------------------------------------------

def extrapolate(cells: list[dict[str, Any]], redis_cap: dict[str, Any]) -> dict[str, Any]:
    both = [c for c in cells if c["ours"]["sustained"]
            and c.get("floor_grpc", c["floor"])["sustained"]]
    best = max(both or cells, key=lambda c: c["ours"]["deliveries_per_s"])
    ours = best["ours"]
    server_cores = ours["cpu"]["server_pct"] / 100
    per_core = ours["deliveries_per_s"] / server_cores if server_cores else math.nan
    # memory: from the level closest to 400 friends per user
    widest = max(cells, key=lambda c: (c["ours"]["graph"]["avg_degree"], c["users"]))
    bytes_per_conn = widest["ours"]["memory_per_connection_bytes"]["end"]
    per_redis = redis_cap.get("pushes_per_redis_core_s", math.nan)
    out: dict[str, Any] = {
        "from_level": {"users": best["users"], "interval_s": best["interval_s"],
                       "both_sustained": bool(both)},
        "deliveries_per_server_core_s": per_core,
        "updates_per_server_core_s": ours["accepted_per_s"] / server_cores
        if server_cores else math.nan,
        "memory_per_connection_bytes": bytes_per_conn,
        "memory_from_level": {"users": widest["users"], "interval_s": widest["interval_s"],
                              "avg_degree": widest["ours"]["graph"]["avg_degree"]},
        "redis_pushes_per_core_s": per_redis, "scenarios": {}}
    for label, fraction in (("book: 10 % of friends online and nearby", BOOK_ONLINE_NEARBY),
                            (f"as here: all friends online, {ours['nearby_fraction']:.0%} "
                             "nearby", ours["nearby_fraction"])):
        fanout = TARGET_UPDATES_PER_S * TARGET_FRIENDS * fraction
        cores = math.ceil(fanout / per_core) if per_core == per_core and per_core else math.nan
        # one PUBLISH per update is pushed to every server process holding a follower;
        # streams land on processes at random, so that is ~ one push per online friend
        pushes = TARGET_UPDATES_PER_S * min(TARGET_FRIENDS * fraction, cores or math.inf)
        out["scenarios"][label] = {
            "online_nearby_fraction": fraction,
            "fanout_deliveries_per_s": fanout,
            "presence_cores": cores,
            "presence_servers_16_cores": math.ceil(cores / 16) if cores == cores else math.nan,
            "streams_per_core": TARGET_USERS / cores if cores else math.nan,
            "memory_tib": TARGET_USERS * bytes_per_conn / 2**40,
            "redis_pushes_per_s": pushes,
            "redis_shards_book": math.ceil(pushes / BOOK_PUSHES_PER_REDIS),
            "redis_shards_measured": math.ceil(pushes / per_redis)
            if per_redis == per_redis and per_redis else math.nan,
        }
    return out


# -- report --------------------------------------------------------------------------------

def _ms(x: float) -> str:
    return "-" if x is None or x != x else (f"{x:.2f}" if x < 10 else f"{x:.0f}")


def report(result: dict[str, Any]) -> str:
    g0 = result["network"]
    lines = [
        f"`python -m bench.presence`. Machine: "
        f"{machine_line(result['machine'])}; the whole run took "
        f"{result.get('elapsed_s', 0) / 60:.1f} min.",
        "",
        f"Users walk the roads of Gothenburg ({g0['junctions']:,} junctions, "
        f"{g0['extent_km'][0]:.0f} x {g0['extent_km'][1]:.0f} km) at "
        f"{result['speed_mps']:g} m/s, each sending one update every T real seconds (jittered "
        f"+-10 %) that stands for {result['sim_interval_s']:g} s of movement; the radius is "
        "5 miles, so almost every friend is nearby (maximal fan-out). Friend graph: Chung-Lu, "
        "power-law exponent 2.5, mean degree min(400, (N-1)/2), loaded into MongoDB before "
        "anyone connects. **Ours**: N gRPC streams (`tools/simulator.py`, "
        f"{result['client_processes']} client process, ~50 streams per connection) spread "
        "evenly over two fresh presence processes sharing one port, through Redis and the "
        "hubs. **Floor**: the same graph, walks and update rate with raw redis.asyncio: one "
        "PUBLISH per update, one PubSub connection per 'server' subscribed to its users' "
        "friends' channels, delivery to in-process subscriber queues filtered by the same "
        "radius (one Python process). **gRPC floor** (`bench/_presence_floor.py`): that floor "
        "behind one minimal grpc.aio stream hop: two server processes on one port, raw bytes "
        "(struct-packed, no protobuf, auth or interceptors), one PUBLISH per update, one "
        "multiplexed PubSub per process, the radius filter, a bounded queue per follower "
        "written to its stream; as ours, a user who moved is also sent a refresh of every "
        "friend within the radius (its last location seen on pub/sub); the client holds N "
        "streams (~50 per connection) in one process. All sides run on uvloop. Each cell: "
        f"{result['warmup_s']:g} s warm-up, {result['duration_s']:g} s measured.",
        "",
    ]
    rows = []
    for c in result["cells"]:
        o, f, g = c["ours"], c["floor"], c.get("floor_grpc")
        ratio = o["latency_ms"]["p99"] / f["latency_ms"]["p99"] \
            if f["latency_ms"]["p99"] else math.nan
        g_ratio = o["latency_ms"]["p99"] / g["latency_ms"]["p99"] \
            if g and g["latency_ms"]["p99"] else math.nan
        rows.append([
            f"{c['users']:,}", f"{c['interval_s']:g}", f"{o['graph']['avg_degree']:.0f}",
            f"{o['nearby_fraction']:.0%}",
            f"{fmt_num(o['accepted_per_s'])} / {fmt_num(o['offered_updates_per_s'])}",
            f"{fmt_num(o['deliveries_per_s'])} ({o['delivery_ratio']:.0%})",
            fmt_num(o["refreshes"] / o["window_s"]),
            f"{_ms(o['latency_ms']['p50'])} / {_ms(o['latency_ms']['p99'])}",
            f"{fmt_num(f['deliveries_per_s'])} ({f['delivery_ratio']:.0%})",
            f"{_ms(f['latency_ms']['p50'])} / {_ms(f['latency_ms']['p99'])}",
            f"{ratio:.1f}x",
            f"{fmt_num(g['deliveries_per_s'])} ({g['delivery_ratio']:.0%})" if g else "-",
            fmt_num(g["refreshes_per_s"]) if g and "refreshes_per_s" in g else "-",
            f"{_ms(g['latency_ms']['p50'])} / {_ms(g['latency_ms']['p99'])}" if g else "-",
            f"{g_ratio:.1f}x" if g else "-",
            " / ".join("yes" if side["sustained"] else "no" for side in (o, f, g) if side),
        ])
    lines.append("**Throughput and update-to-friend latency**")
    lines.append("")
    lines.append(markdown_table(
        ["users", "T s", "friends (mean)", "nearby", "updates/s accepted / offered",
         "ours fan-out/s (of expected)", "ours refreshes/s", "ours p50 / p99 ms",
         "floor fan-out/s (of expected)", "floor p50 / p99 ms", "p99 ours / floor",
         "gRPC floor fan-out/s", "gRPC floor refreshes/s", "gRPC floor p50 / p99 ms",
         "p99 ours / gRPC floor", "sustained ours / floor / gRPC floor"], rows,
        "rrrrrrrrrrrrrrrr"))
    rows = []
    for c in result["cells"]:
        o, f, g = c["ours"], c["floor"], c.get("floor_grpc")
        cpu = o["cpu"]
        mem = o["memory_per_connection_bytes"]
        per_core = o["deliveries_per_s"] / (cpu["server_pct"] / 100) if cpu["server_pct"] \
            else math.nan
        rows.append([
            f"{c['users']:,}", f"{c['interval_s']:g}",
            " + ".join(f"{x:.0f}" for x in cpu["server_pct_each"]),
            f"{cpu['client_pct']:.0f}", f"{cpu['redis_pct']:.0f}", f"{cpu['mongo_pct']:.0f}",
            f"{cpu['machine_pct']:.0f}", f"{cpu['other_pct']:.0f}", fmt_num(per_core),
            f"{mem['connected'] / 1024:.0f} / {mem['end'] / 1024:.0f}",
            f"{f['cpu']['process_pct']:.0f} / {f['cpu']['redis_pct']:.0f}",
            (" + ".join(f"{x:.0f}" for x in g["cpu"]["server_pct_each"])
             + f" / {g['cpu']['client_pct']:.0f} / {g['cpu']['redis_pct']:.0f}") if g else "-",
            fmt_num(g["deliveries_per_s"] / (g["cpu"]["server_pct"] / 100))
            if g and g["cpu"]["server_pct"] else "-",
        ])
    lines += ["", "**Where the CPU went (percent of one core; the machine has "
              f"{result['machine']['nproc'] * 100} %) and memory per stream**", ""]
    lines.append(markdown_table(
        ["users", "T s", "presence procs", "client", "Redis", "MongoDB", "machine",
         "other work", "fan-out/s per server core", "KiB per stream: open / end",
         "floor: process / Redis", "gRPC floor: servers / client / Redis",
         "gRPC floor fan-out/s per server core"], rows, "rrrrrrrrrrrrr"))
    lines += [
        "",
        "Fan-out = a friend receiving a *new* location (FriendNearby/FriendMoved). The "
        "servers also send *refreshes* when the receiver itself moved (each nearby "
        "friend's known location again, with the new distance; or a friend coming into "
        "view with an older location): about one per nearby friend per update, as many "
        "messages again through the same streams. Sustained = >= 95 % of updates sent, "
        ">= 95 % of expected deliveries received, p99 below T and below 1 s. KiB per "
        "stream = growth of a server's RSS from start to all streams open / to the end of "
        "the window, over its streams.",
    ]
    x = result["extrapolation"]
    cap = result["redis_capacity"]
    lvl, mlvl = x["from_level"], x["memory_from_level"]
    lines += [
        "",
        f"**Extrapolation to {TARGET_USERS / 1e6:.0f} M concurrent users, "
        f"{TARGET_UPDATES_PER_S / 1000:.0f} k updates/s, {TARGET_FRIENDS} friends.** "
        f"Presence: {fmt_num(x['deliveries_per_server_core_s'])} fan-out messages/s per "
        f"server core (at {lvl['users']:,} users, T = {lvl['interval_s']:g} s, "
        + ("the busiest level both sustained" if lvl["both_sustained"] else
           "the busiest level; none was sustained by both")
        + f"); memory {x['memory_per_connection_bytes'] / 1024:.0f} KiB per stream (at "
        f"{mlvl['users']:,} users, {mlvl['avg_degree']:.0f} friends each). Redis: "
        + (f"{fmt_num(cap['pushes_per_redis_core_s'])} pushes per second of Redis CPU "
           f"(redis-benchmark PUBLISH to {cap['channels']:,} channels x "
           f"{cap['subscribers']} redis-cli subscribers, {cap['payload_bytes']} B messages:"
           f" {fmt_num(cap['publish_per_s'])} publishes/s at {cap['redis_cpu_pct']:.0f} % "
           "CPU)" if "skipped" not in cap else f"not measured ({cap['skipped']})")
        + f"; the book assumes {BOOK_PUSHES_PER_REDIS / 1000:.0f} k pushes/s per pub/sub "
        "server.",
        "",
    ]
    srows = []
    for label, s in x["scenarios"].items():
        srows.append([label, f"{fmt_num(s['fanout_deliveries_per_s'] / 1e6, 1)} M",
                      fmt_num(s["presence_cores"]), fmt_num(s["presence_servers_16_cores"]),
                      fmt_num(s["streams_per_core"]), f"{s['memory_tib']:.1f}",
                      f"{fmt_num(s['redis_pushes_per_s'] / 1e6, 1)} M",
                      fmt_num(s["redis_shards_book"]), fmt_num(s["redis_shards_measured"])])
    lines.append(markdown_table(
        ["assumption", "fan-out/s", "presence cores", "16-core servers", "streams per core",
         "stream memory TiB", "Redis pushes/s", "Redis shards @100 k/s (book)",
         "Redis shards @measured/core"], srows, "lrrrrrrrr"))
    lines += [
        "",
        "One PUBLISH per update is pushed once to every presence process holding a follower "
        "(one multiplexed subscription per process), so with streams placed at random that "
        "is about one push per online nearby friend; Redis Cluster sharded pub/sub "
        "(SPUBLISH/SSUBSCRIBE, Redis 7) spreads the user channels over the shards.",
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
    with local_backends("presence", progress=log) as infra:
        urls = infra.urls
        env = urls.env()
        infra_pids = {name: proc.proc.pid for name, proc in infra.procs.items()
                      if proc.proc is not None}
        if set(infra_pids) != {"redis", "mongo"}:
            raise SystemExit("bench.presence starts its own Redis and MongoDB to measure "
                             "their CPU: unset GEOPLEX_REDIS_URL / GEOPLEX_MONGO_URI")
        loaded: dict[int, float] = {}
        for level in args.levels:
            users, interval = level
            graph = FriendGraph.power_law(users, seed=args.seed)
            log(f"\n== {users:,} users, one update every {interval:g} s "
                f"({users / interval:,.0f} updates/s), mean degree "
                f"{graph.degrees.mean():.0f}")
            cell: dict[str, Any] = {"users": users, "interval_s": interval}
            if "ours" in args.only:
                ours = cell["ours"] = run_ours(level, args, net, graph, env, infra_pids,
                                               loaded)
                log(f"  ours: {ours['accepted_per_s']:,.0f} updates/s, "
                    f"{ours['deliveries_per_s']:,.0f} fan-out/s "
                    f"({ours['delivery_ratio']:.0%} of expected), p50 "
                    f"{ours['latency_ms']['p50']:.1f} ms, p99 {ours['latency_ms']['p99']:.1f} "
                    f"ms, max {ours['latency_ms']['max']:.0f} ms; servers "
                    f"{ours['cpu']['server_pct']:.0f} % CPU, client "
                    f"{ours['cpu']['client_pct']:.0f} %, redis "
                    f"{ours['cpu']['redis_pct']:.0f} %, mongo {ours['cpu']['mongo_pct']:.0f} %; "
                    f"{ours['memory_per_connection_bytes']['end'] / 1024:.0f} KiB/connection")
            redis_url = urls.redis_url or ""
            if "floor" in args.only:
                wait_for_quiet(max_wait=5)
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # as ours
                    floor = cell["floor"] = runner.run(run_floor(
                        level, args, net, graph, redis_url, infra_pids["redis"], args.radius))
                log(f"  floor: {floor['updates_per_s']:,.0f} updates/s, "
                    f"{floor['deliveries_per_s']:,.0f} fan-out/s "
                    f"({floor['delivery_ratio']:.0%}), p50 {floor['latency_ms']['p50']:.2f} "
                    f"ms, p99 {floor['latency_ms']['p99']:.2f} ms, max "
                    f"{floor['latency_ms']['max']:.0f} ms; process "
                    f"{floor['cpu']['process_pct']:.0f} % CPU, redis "
                    f"{floor['cpu']['redis_pct']:.0f} %")
            if "floor-grpc" in args.only:
                wait_for_quiet(max_wait=5)
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    gf = cell["floor_grpc"] = runner.run(run_floor_grpc(
                        level, args, net, graph, redis_url, infra_pids["redis"], args.radius))
                log(f"  gRPC floor: {gf['updates_per_s']:,.0f} updates/s, "
                    f"{gf['deliveries_per_s']:,.0f} fan-out/s ({gf['delivery_ratio']:.0%}), "
                    f"{gf['refreshes_per_s']:,.0f} refreshes/s, "
                    f"p50 {gf['latency_ms']['p50']:.2f} ms, p99 {gf['latency_ms']['p99']:.2f} "
                    f"ms, max {gf['latency_ms']['max']:.0f} ms; servers "
                    f"{gf['cpu']['server_pct']:.0f} % CPU, client "
                    f"{gf['cpu']['client_pct']:.0f} %, redis {gf['cpu']['redis_pct']:.0f} %")
            result["cells"].append(cell)
        if set(args.only) != set(SIDES):
            return result  # a partial run: printed, not written
        wait_for_quiet(max_wait=5)
        log("\n== Redis pub/sub capacity (redis-benchmark PUBLISH -> redis-cli subscribers)")
        result["redis_capacity"] = redis_pubsub_capacity(urls.redis_url or "",
                                                         infra_pids["redis"])
        log(f"  {result['redis_capacity']}")
    result["extrapolation"] = extrapolate(result["cells"], result["redis_capacity"])
    return result


def rewrite_report() -> None:
    """Re-render the BENCHMARKS.md section from ``bench/results/presence.json`` (no run)."""
    markdown = report(read_results(NAME))
    print(markdown)
    log(f"wrote {write_section(NAME, '## Presence fan-out' + chr(10) * 2 + markdown)}")


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
    parser.add_argument("--only", nargs="+", choices=SIDES, default=list(SIDES),
                        help="run only these sides (a partial run prints, writes nothing)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render the BENCHMARKS.md section from the last results")
    args = parser.parse_args()
    if args.report_only:
        rewrite_report()
        return
    started = time.perf_counter()
    with contextlib.suppress(KeyboardInterrupt):
        result = main_run(args)
        result["elapsed_s"] = time.perf_counter() - started
        if set(args.only) != set(SIDES):
            return  # a partial run: the lines above are its result
        markdown = report(result)
        print("\n" + markdown)
        if not args.no_write:
            log(f"wrote {write_results(NAME, result)}")
            log(f"wrote {write_section(NAME, '## Presence fan-out' + chr(10) * 2 + markdown)}")


if __name__ == "__main__":
    main()
