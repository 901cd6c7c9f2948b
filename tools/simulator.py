"""Load simulator for PresenceService: N streaming users moving along real roads.

    net = RoadNetwork.gothenburg()                     # ~20 k OSM roads of Gothenburg
    graph = FriendGraph.power_law(1000, seed=1)        # Chung-Lu, mean degree 400
    sim = Simulator(SimConfig(targets=("127.0.0.1:50052",), users=1000), net, graph)
    asyncio.run(sim.load(mongo_uri, database))         # friendships + sharing, in bulk
    result = sim.run()                                 # connect, move, measure; a SimResult

What it models:

- **Friends**: a Chung-Lu random graph with power-law expected degrees
  (exponent 2.5): a few users have far more friends than the mean, most a
  little fewer. The mean is ``min(400, (N - 1) / 2)``: with N users nobody
  can have more than N - 1 friends, and at half of that the graph is already
  dense; the degree actually drawn is reported. It is written to MongoDB with
  ``MongoPresenceStore.add_friendships`` before anyone connects (no AddFriend
  storm), and every user's sharing is turned on in the same pass.
- **Movement**: each user walks (or drives) along the largest connected part
  of the road graph, node to node, picking a random next road at each
  junction (no U-turn unless it is a dead end), at ``speed_mps``. Time is
  accelerated: one update every ``interval_s`` real seconds (jittered +-10 %)
  stands for ``sim_interval_s`` simulated seconds of movement. Users start at
  random road nodes all over the city (about 20 km across), so with the
  default radius of 5 miles most friends are nearby: the fan-out is close to
  its maximum. The nearby fraction is measured and reported.
- **Streams**: every user is one ``LiveSession`` (one bidirectional stream)
  with its own bearer token; about ``users_per_channel`` users share a gRPC
  channel (one HTTP/2 connection). Channels are spread evenly over the server
  *processes* (each one asks MeshService for the pid behind it), so several
  processes behind one SO_REUSEPORT port get equal shares.
- **Latency**: an update carries ``time = now``; a friend's FriendNearby or
  FriendMoved carrying a *newer* ``update_time`` than that friend's last one
  is a fan-out delivery, and ``receive time - update_time`` its end-to-end
  latency (one machine, one clock). Events caused by the *receiver's* own
  move are counted apart as refreshes: the server re-evaluates distances
  when a user moves, sending a friend's known location again with a new
  distance, or a FriendNearby for a friend who came into view with an older
  location (older than the receiver's move, so not a delivery of its own).

The users run in ``processes`` worker processes (default 1), each with its own
event loop, so the client can use more than one core; the calling process only
coordinates and prints progress. Measured: updates sent and accepted, fan-out
deliveries and what was expected (friends within the radius of each update,
from the positions every worker shares in memory), latency percentiles, and the
CPU time of the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import queue
import random
import sys
import time
import uuid
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

from geoplex.clients.mesh import open_spread_channels
from geoplex.servers._runtime.geo import haversine_m, haversine_np, haversine_pairs
from geoplex.servers.presence.domain import DEFAULT_RADIUS_M

MAX_AVG_DEGREE = 400.0


# --------------------------------------------------------------------------- roads

@dataclass
class RoadNetwork:
    """An undirected road graph in CSR form: node coordinates, neighbours, edge lengths."""

    lat: np.ndarray
    lon: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    length_m: np.ndarray

    @property
    def nodes(self) -> int:
        return len(self.lat)

    @property
    def edges(self) -> int:
        return len(self.indices) // 2

    @classmethod
    def from_geojson(cls, collection: dict[str, Any]) -> RoadNetwork:
        """Build from LineString features; ways meet where they share a coordinate.

        Only the largest connected component is kept, so a walk can reach the
        whole network.
        """
        ids: dict[tuple[float, float], int] = {}
        coords: list[tuple[float, float]] = []
        edges: set[tuple[int, int]] = set()
        for feature in collection.get("features", ()):
            geometry = feature.get("geometry") or {}
            if geometry.get("type") != "LineString":
                continue
            prev = -1
            for lon, lat, *_ in geometry["coordinates"]:
                key = (float(lat), float(lon))
                node = ids.get(key)
                if node is None:
                    node = ids[key] = len(coords)
                    coords.append(key)
                if prev >= 0 and prev != node:
                    edges.add((min(prev, node), max(prev, node)))
                prev = node
        if not edges:
            raise ValueError("the collection has no LineString roads")
        adjacency: list[list[int]] = [[] for _ in coords]
        for a, b in edges:
            adjacency[a].append(b)
            adjacency[b].append(a)
        keep = _largest_component(adjacency)
        renumber = {old: new for new, old in enumerate(keep)}
        lat = np.array([coords[n][0] for n in keep])
        lon = np.array([coords[n][1] for n in keep])
        indptr = np.zeros(len(keep) + 1, dtype=np.int64)
        indices: list[int] = []
        for new, old in enumerate(keep):
            neighbours = [renumber[m] for m in adjacency[old]]
            indices.extend(neighbours)
            indptr[new + 1] = len(indices)
        idx = np.array(indices, dtype=np.int64)
        src = np.repeat(np.arange(len(keep)), np.diff(indptr))
        length = haversine_pairs(lat[src], lon[src], lat[idx], lon[idx])
        return cls(lat, lon, indptr, idx, np.maximum(length, 0.1))

    @classmethod
    def gothenburg(cls, cache_dir: Path | None = None,
                   progress: Callable[[str], None] = lambda _m: None) -> RoadNetwork:
        """The Gothenburg network of ``geoplex data fetch gothenburg`` (fetched if missing)."""
        from geoplex.infra import data

        paths = data.fetch(["gothenburg"], cache_dir, progress=progress)
        return cls.from_geojson(data.read_road_network(paths["gothenburg"]["network"]))

    def extent_m(self) -> tuple[float, float]:
        """(north-south, east-west) size of the bounding box, in metres."""
        mid = float(np.mean(self.lat))
        ns = haversine_m(float(self.lat.min()), 0.0, float(self.lat.max()), 0.0)
        ew = haversine_m(mid, float(self.lon.min()), mid, float(self.lon.max()))
        return ns, ew


def _largest_component(adjacency: list[list[int]]) -> list[int]:
    seen = [False] * len(adjacency)
    best: list[int] = []
    for start in range(len(adjacency)):
        if seen[start] or not adjacency[start]:
            continue
        seen[start] = True
        component, stack = [start], [start]
        while stack:
            for m in adjacency[stack.pop()]:
                if not seen[m]:
                    seen[m] = True
                    component.append(m)
                    stack.append(m)
        if len(component) > len(best):
            best = component
    return sorted(best)


class Walker:
    """A random walk along the roads: ``advance(metres)`` returns the new (lat, lon)."""

    __slots__ = ("net", "rng", "a", "b", "edge_m", "offset_m")

    def __init__(self, net: RoadNetwork, start: int, rng: random.Random) -> None:
        self.net = net
        self.rng = rng
        self.a = start
        self.b, self.edge_m = self._next(start, -1)
        self.offset_m = 0.0

    def _next(self, node: int, came_from: int) -> tuple[int, float]:
        lo, hi = int(self.net.indptr[node]), int(self.net.indptr[node + 1])
        choices = [k for k in range(lo, hi) if int(self.net.indices[k]) != came_from]
        k = self.rng.choice(choices) if choices else lo  # dead end: turn back
        return int(self.net.indices[k]), float(self.net.length_m[k])

    def position(self) -> tuple[float, float]:
        f = self.offset_m / self.edge_m
        net = self.net
        return (float(net.lat[self.a] + (net.lat[self.b] - net.lat[self.a]) * f),
                float(net.lon[self.a] + (net.lon[self.b] - net.lon[self.a]) * f))

    def advance(self, meters: float) -> tuple[float, float]:
        self.offset_m += meters
        while self.offset_m >= self.edge_m:
            self.offset_m -= self.edge_m
            nxt, length = self._next(self.b, self.a)
            self.a, self.b, self.edge_m = self.b, nxt, length
        return self.position()


# --------------------------------------------------------------------------- friends

def default_avg_degree(users: int) -> float:
    """400, or (N - 1) / 2 when N is too small for that (at most N - 1 friends each)."""
    return min(MAX_AVG_DEGREE, (users - 1) * 0.5)


@dataclass
class FriendGraph:
    """An undirected friend graph over users 0..n-1 in CSR form (``indices`` sorted per row)."""

    n: int
    indptr: np.ndarray
    indices: np.ndarray
    target_avg_degree: float
    exponent: float
    seed: int

    @property
    def degrees(self) -> np.ndarray:
        return np.diff(self.indptr)

    @property
    def pairs(self) -> int:
        return len(self.indices) // 2

    def friends(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user]:self.indptr[user + 1]]

    def edge_list(self) -> list[tuple[int, int]]:
        src = np.repeat(np.arange(self.n), self.degrees)
        keep = src < self.indices
        return list(zip(src[keep].tolist(), self.indices[keep].tolist()))

    def summary(self) -> dict[str, Any]:
        d = self.degrees
        return {"users": self.n, "pairs": self.pairs, "target_avg_degree": self.target_avg_degree,
                "avg_degree": float(d.mean()) if self.n else 0.0,
                "median_degree": float(np.median(d)) if self.n else 0.0,
                "p99_degree": float(np.percentile(d, 99)) if self.n else 0.0,
                "max_degree": int(d.max()) if self.n else 0,
                "min_degree": int(d.min()) if self.n else 0,
                "exponent": self.exponent, "seed": self.seed}

    @classmethod
    def power_law(cls, n: int, avg_degree: float | None = None, *, exponent: float = 2.5,
                  seed: int = 1) -> FriendGraph:
        """Chung-Lu graph whose expected degrees follow a power law of ``exponent``.

        Weights ``w_i ~ (i + 1) ** (-1 / (exponent - 1))`` are capped at n - 1 and scaled
        so that the expected mean degree (with each pair's probability capped at 1) is
        ``avg_degree`` (default :func:`default_avg_degree`); edges are drawn with the
        Miller-Hagberg skipping method in O(n + edges). User ids are a random permutation
        of the weight order, so hubs are spread over servers and worker processes.
        """
        if n < 2:
            return cls(n, np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64), 0.0,
                       exponent, seed)
        target = default_avg_degree(n) if avg_degree is None else min(avg_degree, n - 1.0)
        rng = np.random.default_rng(seed)
        raw = (np.arange(n) + 1.0) ** (-1.0 / (exponent - 1.0))
        weights = _calibrate(raw, target, n - 1.0)
        total = float(weights.sum())
        us, vs = _miller_hagberg(weights, total, rng)
        perm = rng.permutation(n)
        us, vs = perm[us], perm[vs]
        src = np.concatenate([us, vs])
        dst = np.concatenate([vs, us])
        order = np.lexsort((dst, src))
        src, dst = src[order], dst[order]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.add.at(indptr, src + 1, 1)
        return cls(n, np.cumsum(indptr), dst.astype(np.int64), target, exponent, seed)


def _expected_mean_degree(w: np.ndarray, total: float) -> float:
    """Mean over i of sum_j min(1, w_i w_j / total), for w sorted descending."""
    asc = w[::-1]
    prefix = np.concatenate([[0.0], np.cumsum(asc)])
    # for each i, the j with w_j >= total / w_i have probability 1
    cut = np.searchsorted(asc, total / w, side="left")  # asc[cut:] are the capped ones
    capped = len(w) - cut
    partial = w * prefix[cut] / total
    return float(np.mean(capped + partial - np.minimum(1.0, w * w / total)))


def _calibrate(raw: np.ndarray, target: float, cap: float) -> np.ndarray:
    lo, hi = 0.0, cap / raw[-1] * 4
    for _ in range(60):
        mid = (lo + hi) / 2
        w = np.minimum(raw * mid, cap)
        if _expected_mean_degree(w, float(w.sum())) < target:
            lo = mid
        else:
            hi = mid
    return np.minimum(raw * hi, cap)


def _miller_hagberg(w: np.ndarray, total: float, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Edges (u < v) of a Chung-Lu graph with weights ``w`` sorted descending."""
    n = len(w)
    us: list[int] = []
    vs: list[int] = []
    wl = w.tolist()
    draws = iter(rng.random(1 << 16).tolist())

    def uniform() -> float:
        nonlocal draws
        try:
            return next(draws)
        except StopIteration:
            draws = iter(rng.random(1 << 16).tolist())
            return next(draws)

    for u in range(n - 1):
        wu = wl[u]
        v = u + 1
        p = min(wu * wl[v] / total, 1.0)
        while v < n and p > 0:
            if p < 1.0:
                r = uniform()
                v += int(math.floor(math.log(r or 1e-300) / math.log1p(-p)))
            if v < n:
                q = min(wu * wl[v] / total, 1.0)
                if uniform() < q / p:
                    us.append(u)
                    vs.append(v)
                p = q
                v += 1
    return np.array(us, dtype=np.int64), np.array(vs, dtype=np.int64)


# --------------------------------------------------------------------------- configuration

@dataclass(frozen=True, slots=True)
class SimConfig:
    targets: tuple[str, ...]
    users: int
    interval_s: float = 1.0
    """Real seconds between two updates of one user (jittered +-10 %)."""
    sim_interval_s: float = 30.0
    """Simulated seconds one update interval stands for (acceleration = this / interval_s)."""
    speed_mps: float = 10.0
    duration_s: float = 20.0
    warmup_s: float = 3.0
    radius_m: float = DEFAULT_RADIUS_M
    processes: int = 1
    users_per_channel: int = 50
    connect_concurrency: int = 32
    connect_timeout_s: float = 120.0
    prefix: str = "sim-"
    seed: int = 1
    auth_secret: str = ""

    @property
    def acceleration(self) -> float:
        return self.sim_interval_s / self.interval_s

    def user_id(self, index: int) -> str:
        return f"{self.prefix}{index}"


def new_prefix() -> str:
    """A user id prefix of its own for one run, so runs never share friendships."""
    return f"sim-{uuid.uuid4().hex[:6]}-"


@contextlib.asynccontextmanager
async def _presence_store(mongo_uri: str, database: str) -> Any:
    from geoplex.servers._runtime.backends import open_mongo
    from geoplex.servers.presence.adapters.mongo_store import MongoPresenceStore

    async with contextlib.AsyncExitStack() as stack:
        yield MongoPresenceStore(await open_mongo(mongo_uri, stack), database)


async def load_graph(mongo_uri: str, database: str, config: SimConfig, graph: FriendGraph,
                     progress: Callable[[str], None] = lambda _m: None) -> float:
    """Write the friendships and every user's settings (sharing on); seconds it took."""
    from pymongo import UpdateOne

    started = time.perf_counter()
    async with _presence_store(mongo_uri, database) as store:
        await store.ensure_indexes()
        pairs = [(config.user_id(a), config.user_id(b)) for a, b in graph.edge_list()]
        progress(f"loading {len(pairs):,} friendships ({2 * len(pairs):,} documents) "
                 f"and {graph.n:,} settings into {database}...")
        step = 20_000
        for n in range(0, len(pairs), step):
            await store.add_friendships(pairs[n:n + step])
        ops = [UpdateOne({"_id": config.user_id(i)},
                         {"$set": {"sharing": True, "radius_m": config.radius_m}}, upsert=True)
               for i in range(graph.n)]
        for n in range(0, len(ops), 5000):
            await store.settings_.bulk_write(ops[n:n + 5000], ordered=False)
    return time.perf_counter() - started


async def unload_graph(mongo_uri: str, database: str, prefix: str) -> int:
    """Delete what :func:`load_graph` wrote for users whose ids start with ``prefix``."""
    import re

    async with _presence_store(mongo_uri, database) as store:
        pattern = {"$regex": "^" + re.escape(prefix)}
        result = await store.friendships.delete_many({"user": pattern})
        await store.settings_.delete_many({"_id": pattern})
        return int(result.deleted_count)


# --------------------------------------------------------------------------- results

@dataclass
class SimResult:
    """What one run measured in its window (after warm-up)."""

    users: int
    connected: int
    processes: int
    interval_s: float
    acceleration: float
    window_s: float
    connect_s: float
    graph: dict[str, Any]
    updates_sent: int = 0
    updates_rejected: int = 0
    deliveries: int = 0
    expected_deliveries: int = 0
    refreshes: int = 0
    gone_events: int = 0
    reconnects: int = 0
    errors: int = 0
    first_error: str | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    client_cpu_pct: float = math.nan
    sessions_per_server: dict[str, int] = field(default_factory=dict)
    progress: list[dict[str, Any]] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list, repr=False)

    @property
    def updates_per_s(self) -> float:
        return self.updates_sent / self.window_s if self.window_s else math.nan

    @property
    def accepted_per_s(self) -> float:
        return (self.updates_sent - self.updates_rejected) / self.window_s \
            if self.window_s else math.nan

    @property
    def deliveries_per_s(self) -> float:
        return self.deliveries / self.window_s if self.window_s else math.nan

    @property
    def expected_per_s(self) -> float:
        return self.expected_deliveries / self.window_s if self.window_s else math.nan

    @property
    def delivery_ratio(self) -> float:
        return self.deliveries / self.expected_deliveries if self.expected_deliveries \
            else math.nan

    @property
    def nearby_fraction(self) -> float:
        """Of each update's friends, the share within the radius (what fans out)."""
        degree = self.graph.get("avg_degree", 0.0)
        if not self.updates_sent or not degree:
            return math.nan
        return self.expected_deliveries / self.updates_sent / degree

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["latencies_s"]
        data.update(updates_per_s=self.updates_per_s, accepted_per_s=self.accepted_per_s,
                    deliveries_per_s=self.deliveries_per_s,
                    expected_deliveries_per_s=self.expected_per_s,
                    delivery_ratio=self.delivery_ratio, nearby_fraction=self.nearby_fraction)
        return data


def latency_summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    if not len(values_s):
        return {k: math.nan for k in ("p50", "p90", "p99", "p999", "max", "mean")}
    a = np.asarray(values_s) * 1e3
    p50, p90, p99, p999 = np.percentile(a, [50, 90, 99, 99.9])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "p999": float(p999),
            "max": float(a.max()), "mean": float(a.mean())}


# --------------------------------------------------------------------------- the coordinator

@dataclass(frozen=True, slots=True)
class _WorkerSpec:
    index: int
    config: SimConfig
    users: tuple[int, ...]
    starts: tuple[int, ...]
    shm_name: str
    net: RoadNetwork
    graph: FriendGraph


class Simulator:
    """Runs the users in worker processes and gathers what they measure."""

    def __init__(self, config: SimConfig, net: RoadNetwork, graph: FriendGraph) -> None:
        if graph.n != config.users:
            raise ValueError(f"the graph has {graph.n} users, the config {config.users}")
        if config.interval_s <= 0 or config.duration_s <= 0 or config.users < 1:
            raise ValueError("users, interval and duration must be positive")
        self.config = config
        self.net = net
        self.graph = graph
        self.worker_pids: list[int] = []

    def run(self, progress: Callable[[str], None] = print,
            on_phase: Callable[[str], None] = lambda _p: None) -> SimResult:
        """Connect every user, send updates, measure one window; blocks until done.

        ``on_phase`` is called with ``"connected"`` (every stream open, before any
        update), ``"window_start"`` and ``"window_end"``, from this thread, so a
        benchmark can sample memory and CPU at those moments.
        """
        cfg = self.config
        k = max(1, min(cfg.processes, cfg.users))
        rng = np.random.default_rng(cfg.seed + 7)
        starts = rng.integers(0, self.net.nodes, size=cfg.users)
        shm = shared_memory.SharedMemory(create=True, size=cfg.users * 2 * 8)
        positions = np.ndarray((cfg.users, 2), dtype=np.float64, buffer=shm.buf)
        positions[:, 0] = self.net.lat[starts]
        positions[:, 1] = self.net.lon[starts]
        ctx = mp.get_context("spawn")
        outbox: Any = ctx.Queue()
        inboxes: list[Any] = [ctx.Queue() for _ in range(k)]
        procs = []
        try:
            for w in range(k):
                mine = tuple(range(w, cfg.users, k))
                spec = _WorkerSpec(w, cfg, mine, tuple(int(starts[i]) for i in mine), shm.name,
                                   self.net, self.graph)
                proc = ctx.Process(target=_worker_main, args=(spec, inboxes[w], outbox),
                                   name=f"presence-sim-{w}", daemon=True)
                proc.start()
                procs.append(proc)
            self.worker_pids = [p.pid for p in procs if p.pid is not None]
            return self._coordinate(k, procs, inboxes, outbox, progress, on_phase)
        finally:
            for inbox in inboxes:
                with contextlib.suppress(Exception):
                    inbox.put(("stop",))
            for proc in procs:
                proc.join(timeout=15)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
            del positions
            shm.close()
            shm.unlink()

    def _coordinate(self, k: int, procs: list[Any], inboxes: list[Any], outbox: Any,
                    progress: Callable[[str], None],
                    on_phase: Callable[[str], None]) -> SimResult:
        cfg = self.config
        t0 = time.perf_counter()
        connected: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + cfg.connect_timeout_s + 60
        last_note = 0.0
        while len(connected) < k:
            msg = self._get(outbox, procs, deadline)
            if msg[0] == "connected":
                connected[msg[1]] = msg[2]
            elif msg[0] == "connecting" and time.monotonic() - last_note > 1.0:
                last_note = time.monotonic()
                progress(f"  connecting... {msg[2]:,} streams open in worker {msg[1]}")
            elif msg[0] == "failed":
                raise RuntimeError(f"simulator worker {msg[1]} failed: {msg[2]}")
        connect_s = time.perf_counter() - t0
        n_connected = sum(c["connected"] for c in connected.values())
        per_server: dict[str, int] = {}
        for c in connected.values():
            for pid, count in c["per_server"].items():
                per_server[pid] = per_server.get(pid, 0) + count
        progress(f"  {n_connected:,}/{cfg.users:,} streams open in {connect_s:.1f} s "
                 f"(per server process: {per_server})")
        on_phase("connected")
        go = time.time() + 0.5
        w0 = go + cfg.warmup_s
        w1 = w0 + cfg.duration_s
        for inbox in inboxes:
            inbox.put(("go", go, w0, w1))
        ticks: dict[int, dict[int, dict[str, Any]]] = {}
        finals: dict[int, dict[str, Any]] = {}
        lines: list[dict[str, Any]] = []
        previous: dict[str, float] = {}
        phase = "warmup"
        cpu0 = cpu1 = (math.nan, 0.0)
        deadline = w1 + cfg.connect_timeout_s
        while len(finals) < k:
            now = time.time()
            if phase == "warmup" and now >= w0:
                phase = "window"
                cpu0 = (_cpu_seconds(self.worker_pids), time.perf_counter())
                on_phase("window_start")
            if phase == "window" and now >= w1:
                phase = "done"
                cpu1 = (_cpu_seconds(self.worker_pids), time.perf_counter())
                on_phase("window_end")
            wait_until = w0 if phase == "warmup" else w1 if phase == "window" else now + 1
            try:
                msg = outbox.get(timeout=max(0.01, min(0.5, wait_until - now)))
            except queue.Empty:
                self._check_alive(procs)
                if time.time() > deadline:
                    raise TimeoutError("simulator workers did not finish in time") from None
                continue
            if msg[0] == "tick":
                _, w, sec, data = msg
                ticks.setdefault(sec, {})[w] = data
                if len(ticks[sec]) == k:
                    line = _progress_line(sec, list(ticks.pop(sec).values()), previous,
                                          w0 - go, cfg.duration_s)
                    lines.append(line)
                    progress(line["text"])
            elif msg[0] == "done":
                finals[msg[1]] = msg[2]
            elif msg[0] == "failed":
                raise RuntimeError(f"simulator worker {msg[1]} failed: {msg[2]}")
        if phase != "done":
            cpu1 = (_cpu_seconds(self.worker_pids), time.perf_counter())
        return self._result(finals, connect_s, n_connected, per_server, lines, cpu0, cpu1, k)

    def _result(self, finals: dict[int, dict[str, Any]], connect_s: float, connected: int,
                per_server: dict[str, int], lines: list[dict[str, Any]],
                cpu0: tuple[float, float], cpu1: tuple[float, float], k: int) -> SimResult:
        cfg = self.config
        result = SimResult(users=cfg.users, connected=connected, processes=k,
                           interval_s=cfg.interval_s, acceleration=cfg.acceleration,
                           window_s=cfg.duration_s, connect_s=connect_s,
                           graph=self.graph.summary(), sessions_per_server=per_server)
        latencies = array("d")
        for final in finals.values():
            for key in ("updates_sent", "updates_rejected", "deliveries", "expected_deliveries",
                        "refreshes", "gone_events", "reconnects", "errors"):
                setattr(result, key, getattr(result, key) + final[key])
            result.first_error = result.first_error or final["first_error"]
            latencies.frombytes(final["latencies"])
        result.latencies_s = latencies.tolist()
        result.latency_ms = latency_summary_ms(result.latencies_s)
        wall = cpu1[1] - cpu0[1]
        if wall > 0:
            result.client_cpu_pct = (cpu1[0] - cpu0[0]) / wall * 100
        result.progress = [{k: v for k, v in line.items() if k != "text"} for line in lines]
        return result

    @staticmethod
    def _check_alive(procs: list[Any]) -> None:
        dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
        if dead:
            raise RuntimeError(f"simulator worker {dead[0].name} died "
                               f"(exit code {dead[0].exitcode})")

    @classmethod
    def _get(cls, outbox: Any, procs: list[Any], deadline: float) -> tuple[Any, ...]:
        while True:
            try:
                return outbox.get(timeout=0.5)
            except queue.Empty:
                cls._check_alive(procs)
                if time.monotonic() > deadline:
                    raise TimeoutError("simulator workers did not answer in time") from None


_COUNTERS = ("sent", "rejected", "deliveries", "expected", "refreshes", "gone")


def _progress_line(sec: int, ticks: list[dict[str, Any]], previous: dict[str, float],
                   warmup_s: float, duration_s: float) -> dict[str, Any]:
    total = {key: sum(t[key] for t in ticks) for key in (*_COUNTERS, "reconnects", "open")}
    delta = {key: total[key] - previous.get(key, 0) for key in _COUNTERS}
    previous.update(total)
    sample = [x for t in ticks for x in t["sample"]]
    lat = latency_summary_ms(sample)
    phase = "warmup" if sec <= warmup_s else "window" if sec <= warmup_s + duration_s + 0.5 \
        else "drain"
    text = (f"  {sec:>3}s {phase:<6} open {total['open']:,}  updates/s {delta['sent']:,}"
            f"  fan-out/s {delta['deliveries']:,} (expected {delta['expected']:,})"
            f"  refreshes/s {delta['refreshes']:,}"
            f"  p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms"
            + (f"  rejected {delta['rejected']}" if delta["rejected"] else "")
            + (f"  reconnects {total['reconnects']}" if total["reconnects"] else ""))
    return {"second": sec, "phase": phase, "updates": delta["sent"],
            "deliveries": delta["deliveries"], "expected": delta["expected"],
            "refreshes": delta["refreshes"], "p50_ms": lat["p50"], "p99_ms": lat["p99"],
            "text": text}


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these processes so far (``/proc/<pid>/stat``)."""
    total = 0.0
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return math.nan
        fields = raw[raw.rindex(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total


# --------------------------------------------------------------------------- the workers

def _worker_main(spec: _WorkerSpec, inbox: Any, outbox: Any) -> None:
    """Entry point of one worker process (spawned; imports nothing from its parent)."""
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_Worker(spec, inbox, outbox).run())
    except BaseException as exc:  # noqa: BLE001 - reported to the coordinator
        outbox.put(("failed", spec.index, f"{type(exc).__name__}: {exc}"[:1000]))
        raise SystemExit(1) from None


class _User:
    __slots__ = ("index", "id", "walker", "live", "last", "friends", "pid", "consumer", "mover",
                 "moved_at")

    def __init__(self, index: int, user_id: str, walker: Walker, friends: np.ndarray) -> None:
        self.index = index
        self.id = user_id
        self.walker = walker
        self.friends = friends
        self.live: Any = None
        self.last: dict[str, float] = {}
        self.pid = 0
        self.moved_at = time.time()  # when this user's latest location was taken
        self.consumer: asyncio.Task[None] | None = None
        self.mover: asyncio.Task[None] | None = None


class _Worker:
    def __init__(self, spec: _WorkerSpec, inbox: Any, outbox: Any) -> None:
        self.spec = spec
        self.cfg = spec.config
        self.inbox = inbox
        self.outbox = outbox
        self.all = dict.fromkeys(_COUNTERS, 0)   # since the start, for progress lines
        self.win = dict.fromkeys(_COUNTERS, 0)   # inside the measured window
        self.window = (math.inf, math.inf)
        self.latencies = array("d")
        self.sample: list[float] = []
        self.errors = 0
        self.first_error: str | None = None
        self.rng = random.Random(self.cfg.seed * 1009 + spec.index)

    async def run(self) -> None:
        from geoplex.servers._runtime.auth import DEV_SECRET, mint_token

        from geoplex.clients.channel import ChannelOptions
        from geoplex.clients.presence import PresenceClient

        cfg, spec = self.cfg, self.spec
        shm = shared_memory.SharedMemory(name=spec.shm_name)
        self.positions = np.ndarray((cfg.users, 2), dtype=np.float64, buffer=shm.buf)
        loop = asyncio.get_running_loop()
        try:
            n_channels = max(1, math.ceil(len(spec.users) / cfg.users_per_channel))
            channels = await open_spread_channels(cfg.targets, n_channels)
            secret = cfg.auth_secret or DEV_SECRET
            users = []
            for local, (index, start) in enumerate(zip(spec.users, spec.starts)):
                user = _User(index, cfg.user_id(index), Walker(spec.net, start, self.rng),
                             spec.graph.friends(index))
                channel, user.pid = channels[local % len(channels)]
                client = PresenceClient(channel, ChannelOptions(
                    token=mint_token(secret, user.id, 24 * 3600)))
                lat, lon = user.walker.position()
                user.live = client.live(lat, lon)
                users.append(user)
            self.users = users
            await self._connect(users)
            per_server: dict[str, int] = {}
            for user in users:
                if user.live.connected.is_set():
                    per_server[str(user.pid)] = per_server.get(str(user.pid), 0) + 1
            self.outbox.put(("connected", spec.index,
                             {"connected": sum(per_server.values()), "per_server": per_server}))
            command = await loop.run_in_executor(None, self.inbox.get)
            if command[0] != "go":
                return
            _, go, w0, w1 = command
            self.window = (w0, w1)
            for user in users:
                user.mover = asyncio.create_task(self._move(user, go, w1))
            ticker = asyncio.create_task(self._ticks(go, w1))
            await asyncio.sleep(max(0.0, w1 - time.time()))
            await asyncio.sleep(0.3)  # let the last second's tick go out
            ticker.cancel()
            self.outbox.put(("done", spec.index, {
                "updates_sent": self.win["sent"], "updates_rejected": self.win["rejected"],
                "deliveries": self.win["deliveries"], "expected_deliveries": self.win["expected"],
                "refreshes": self.win["refreshes"], "gone_events": self.win["gone"],
                "reconnects": sum(u.live.reconnects for u in users), "errors": self.errors,
                "first_error": self.first_error, "latencies": self.latencies.tobytes()}))
            await self._close(users, channels)
        finally:
            del self.positions
            shm.close()

    async def _connect(self, users: list[_User]) -> None:
        gate = asyncio.Semaphore(self.cfg.connect_concurrency)
        opened = 0
        last_note = time.monotonic()

        async def connect(user: _User) -> None:
            nonlocal opened, last_note
            async with gate:
                user.consumer = asyncio.create_task(self._consume(user))
                await user.live.__aenter__()
                try:
                    await asyncio.wait_for(user.live.connected.wait(),
                                           self.cfg.connect_timeout_s)
                except TimeoutError:
                    self._error(f"{user.id}: no snapshot within "
                                f"{self.cfg.connect_timeout_s:.0f} s")
                    return
            opened += 1
            if time.monotonic() - last_note > 1.0:
                last_note = time.monotonic()
                self.outbox.put(("connecting", self.spec.index, opened))

        await asyncio.gather(*(connect(u) for u in users))

    async def _close(self, users: list[_User], channels: list[tuple[Any, int]]) -> None:
        tasks = [t for u in users for t in (u.mover, u.consumer) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(u.live.close() for u in users), return_exceptions=True)
        for channel, _ in channels:
            await channel.close()

    def _error(self, text: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = text[:500]

    async def _move(self, user: _User, go: float, end: float) -> None:
        cfg = self.cfg
        rng = self.rng
        step_m = cfg.speed_mps * cfg.sim_interval_s
        interval = cfg.interval_s
        radius = cfg.radius_m
        positions = self.positions
        friends = user.friends
        w0, w1 = self.window
        due = go + rng.uniform(0.0, interval)
        while True:
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.time()
            if now >= end:
                return
            lat, lon = user.walker.advance(step_m)
            positions[user.index, 0] = lat
            positions[user.index, 1] = lon
            if len(friends):
                near = int(np.count_nonzero(haversine_np(
                    lat, lon, positions[friends, 0], positions[friends, 1]) <= radius))
            else:
                near = 0
            user.moved_at = now
            await user.live.update(lat, lon, now)
            self.all["sent"] += 1
            self.all["expected"] += near
            if w0 <= now < w1:
                self.win["sent"] += 1
                self.win["expected"] += near
            # no catching up by bursts when the loop falls behind
            due = max(due + interval * rng.uniform(0.9, 1.1), now - interval)

    async def _consume(self, user: _User) -> None:
        events = user.live.events
        last = user.last
        clock = time.time
        every, win = self.all, self.win
        latencies, sample = self.latencies, self.sample
        while True:
            item = await events.get()
            now = clock()
            if isinstance(item, BaseException):
                self._error(f"{user.id}: {type(item).__name__}: {item}")
                return
            kind = item.WhichOneof("event")
            if kind == "friend_moved":
                friend = item.friend_moved.friend
            elif kind == "friend_nearby":
                friend = item.friend_nearby.friend
            elif kind == "snapshot":
                for f in item.snapshot.friends:
                    last[f.user_id] = f.update_time.seconds + f.update_time.nanos * 1e-9
                continue
            elif kind == "friend_gone":
                every["gone"] += 1
                if self.window[0] <= now < self.window[1]:
                    win["gone"] += 1
                continue
            else:  # update_rejected
                every["rejected"] += 1
                if self.window[0] <= now < self.window[1]:
                    win["rejected"] += 1
                continue
            ts = friend.update_time
            t = ts.seconds + ts.nanos * 1e-9
            inside = self.window[0] <= now < self.window[1]
            # A fan-out delivery carries a location of the friend this user has not seen.
            # FriendMoved: the friend was in view all along, so any newer time is new.
            # FriendNearby: the friend may have been out of view when it moved, and come
            # into view because *this* user moved since: then it is not the friend's
            # update arriving (its latency would be up to an interval), but a refresh.
            if t > last.get(friend.user_id, 0.0) and (kind == "friend_moved"
                                                      or t > user.moved_at):
                last[friend.user_id] = t
                every["deliveries"] += 1
                sample.append(now - t)
                if inside:
                    win["deliveries"] += 1
                    latencies.append(now - t)
            else:
                last[friend.user_id] = max(t, last.get(friend.user_id, 0.0))
                every["refreshes"] += 1
                if inside:
                    win["refreshes"] += 1

    async def _ticks(self, go: float, end: float) -> None:
        sec = 0
        while True:
            sec += 1
            await asyncio.sleep(max(0.0, go + sec - time.time()))
            sample, self.sample[:] = self.sample[:], []
            if len(sample) > 2000:
                sample = self.rng.sample(sample, 2000)
            opened = sum(1 for u in self.users if u.live.connected.is_set())
            self.outbox.put(("tick", self.spec.index, sec, {
                **self.all, "sample": sample, "open": opened,
                "reconnects": sum(u.live.reconnects for u in self.users)}))
            if go + sec >= end:
                return


# --------------------------------------------------------------------------- printing

def result_rows(result: SimResult) -> list[tuple[str, str]]:
    g = result.graph
    lat = result.latency_ms
    return [
        ("users (streams open)", f"{result.users:,} ({result.connected:,})"),
        ("friends per user", f"mean {g['avg_degree']:.1f} (target {g['target_avg_degree']:.1f}),"
                             f" median {g['median_degree']:.0f}, max {g['max_degree']}"),
        ("client processes", str(result.processes)),
        ("interval", f"{result.interval_s:g} s real = {result.interval_s * result.acceleration:g}"
                     f" s simulated (x{result.acceleration:g})"),
        ("streams per server process", json.dumps(result.sessions_per_server)),
        ("connect time", f"{result.connect_s:.1f} s"),
        ("window", f"{result.window_s:g} s"),
        ("updates/s sent / accepted", f"{result.updates_per_s:,.1f} / "
                                      f"{result.accepted_per_s:,.1f}"),
        ("nearby fraction of friends", f"{result.nearby_fraction:.1%}"),
        ("fan-out deliveries/s", f"{result.deliveries_per_s:,.0f} of {result.expected_per_s:,.0f}"
                                 f" expected ({result.delivery_ratio:.1%})"),
        ("refresh events/s (own moves)", f"{result.refreshes / result.window_s:,.0f}"),
        ("update -> friend latency", f"p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, "
                                     f"p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms"),
        ("client CPU", f"{result.client_cpu_pct:.0f} % of one core"),
        ("reconnects / errors", f"{result.reconnects} / {result.errors}"
                                + (f" ({result.first_error})" if result.first_error else "")),
    ]


if __name__ == "__main__":  # pragma: no cover - use `geoplex presence simulate`
    sys.exit("run `geoplex presence simulate --help`")
