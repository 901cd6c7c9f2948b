"""Routing benchmark: our engines against networkx and OSRM, then ComputeRoute over gRPC.

``python -m bench.routing`` (``make bench-routing``), in one run, on the car graphs of
Gothenburg (a GeoJSON road export) and Helsinki (an OSM PBF extract):

1. Engine query time (segment to segment, distance only plus the path's arcs) of our
   Python Dijkstra, networkx's ``bidirectional_dijkstra`` on the same edge-based graph,
   our Python bidirectional A*, and the production CCH (RoutingKit), on seeded random
   pairs of road segments (``--pairs``; the pure-Python engines on the first
   ``--baseline-pairs``). Every engine's distance is checked against the CCH's.
2. Time per route of ours: what ``RoutingApp._route`` does for a ComputeRoute (snap
   both points, shortest path, steps, polyline), with its parts timed apart.
3. OSRM (``osrm-bindings`` 26.10.0, in-process, in a Python 3.12 venv the benchmark
   makes once, ``~/.cache/geoplex/osrm-bindings-26.10.0-venv``) as the peer: ``osrm-extract`` with
   ``car.lua``, ``osrm-contract`` (CH), ``osrm-partition`` + ``osrm-customize`` (MLD),
   each timed; ``Route()`` on the same pairs' points, bare and with steps and full
   geometry. Gothenburg, a GeoJSON export, is written out as OSM XML first (one node per
   distinct coordinate, as ``adapters/geojson_roads.py`` reads it). After a traffic
   change on ``--traffic-share`` of the directed segments: OSRM's MLD re-customization
   (``osrm-customize --segment-speed-file``) and CH re-contraction against ours
   (``ModeGraph.apply_traffic``: ``TrafficState.apply``, customization, swap).
4. Accuracy against OSRM: our route's distance and duration over OSRM's on the same
   points. The points are segment midpoints, which lie exactly on a road of both graphs
   (the same straight piece between the same two OSM nodes), so snapping differs only
   in OSRM's 1e-6 degree coordinates.
5. End to end: one ``geoplex.servers.routing`` process, closed-loop ComputeRoute
   through the raw generated stub at ``--concurrency`` (1, 16, 64), interleaved with
   the runtime ceiling measured on the same process (``MeshService/Ping`` answering as
   many bytes as the average route), as ``bench/proximity.py`` does; the best of
   ``--rounds`` each. Also the ratio to the empty-Ping ceiling in
   ``bench/results/runtime.json`` (another run, shown for scale).
6. Matrices: ``RoutingApp._matrix`` and OSRM ``Table()`` for 25x25 and 100x100
   random points.
7. Our preprocessing (read, ``build_graph``, snapping index, CCH order and contraction,
   customization) and memory per node and per segment.

Writes ``bench/results/routing.json`` and the ``routing`` section of ``BENCHMARKS.md``
(``--no-write`` to skip; ``--quick`` implies it; ``--report-only`` re-renders).
A step of OSRM that fails is reported as "-" with a footnote; the run goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import grpc
import grpc.aio
import networkx as nx
import numpy as np
import numpy.typing as npt

from geoplex.infra import data
from geoplex.mesh.v1 import mesh_pb2, mesh_pb2_grpc
from geoplex.routing.v1 import routing_pb2 as rpb
from geoplex.routing.v1 import routing_pb2_grpc
from geoplex.servers._runtime.config import Env
from geoplex.servers.routing.adapters.geojson_roads import network_from_features
from geoplex.servers.routing.adapters.routingkit_cch import CCHEngine
from geoplex.servers.routing.app import RoutingApp
from geoplex.servers.routing.config import RegionSource, RoutingConfig
from geoplex.servers.routing.domain import Point, RouteQuery
from geoplex.servers.routing.engines.baselines import BidirectionalAStarEngine, DijkstraMetric
from geoplex.servers.routing.graph import RoadGraph, build_graph
from geoplex.servers.routing.planner import shortest_path
from geoplex.servers.routing.ports import UNREACHABLE
from geoplex.servers.routing.profiles import CLASS_FERRY, PROFILES
from geoplex.servers.routing.regions import Region, load_region, read_network
from geoplex.servers.routing.snapping import SegmentIndex
from geoplex.type.v1.geo_pb2 import LatLng

from ._common import (log, LoadResult, closed_loop, fmt_num, free_port, machine_info,
                      machine_line, markdown_table, percentile, per_worker, read_results,
                      start_server_processes, wait_for_quiet, wait_for_quiet_async,
                      write_results, write_section)

NAME = "routing"
MODE = "car"
OSRM_VERSION = "26.10.0"
# Outside the checkout on purpose: a venv under bench/ would be scanned by
# scripts/typecheck.py (pip's vendored code carries ignore comments) and copied by the
# packaging test; beside the fetched data it survives a fresh clone.
OSRM_VENV = (Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "geoplex"
             / f"osrm-bindings-{OSRM_VERSION}-venv")
SMALL_COMPONENT_SIZE = 100  # osrm-extract's, where its default leaves no large component
SAME_SNAP_M = 1.0  # accuracy on the pairs where OSRM moved neither point farther than this
PEER_SCRIPT = Path(__file__).resolve().parent / "_osrm_peer.py"
# region -> (dataset of `geoplex data fetch`, its logical file)
REGION_FILES = {"gothenburg": ("gothenburg", "network"), "helsinki": ("helsinki", "pbf"),
                "monaco": ("monaco", "pbf")}
REGION_LABELS = {"gothenburg": "Gothenburg", "helsinki": "Helsinki", "monaco": "Monaco"}
ENGINES = (  # key, label, runs on the baseline subset only
    ("dijkstra", "Dijkstra (ours, Python)", True),
    ("networkx", "networkx bidirectional_dijkstra", True),
    ("astar", "bidirectional A* (ours, Python)", True),
    ("cch", "CCH (ours, RoutingKit C++)", False),
)
I64s = npt.NDArray[np.int64]




# =========================================================================== pure helpers

def time_summary(times_s: Sequence[float], unit: str = "us") -> dict[str, float]:
    """``{"p50", "p99", "mean", "n"}`` of durations in seconds, in ``unit`` (us, ms, s)."""
    scale = {"us": 1e6, "ms": 1e3, "s": 1.0}[unit]
    values = sorted(t * scale for t in times_s)
    if not values:
        return {"p50": math.nan, "p99": math.nan, "mean": math.nan, "n": 0}
    return {"p50": percentile(values, 50), "p99": percentile(values, 99),
            "mean": sum(values) / len(values), "n": len(values)}


def ratio_stats(ours: Sequence[float | None], theirs: Sequence[float | None],
                floor: float = 1e-9) -> dict[str, float]:
    """How far ``ours`` is from ``theirs``, pair by pair, where both answered.

    ``median`` and ``p95`` of ``|ours / theirs - 1|``; ``within_1pct`` and
    ``within_5pct`` (shares of the pairs); ``median_ratio`` of ``ours / theirs`` (the
    bias: above 1, ours is longer); ``n`` pairs compared. A pair counts when both values
    are finite and ``theirs`` above ``floor``, or both are 0 (the same point: ratio 1).
    """
    ratios: list[float] = []
    for a, b in zip(ours, theirs):
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            continue
        if b <= floor:
            if abs(a) <= floor:
                ratios.append(1.0)
            continue
        ratios.append(a / b)
    if not ratios:
        return {"n": 0, "median": math.nan, "p95": math.nan, "within_1pct": math.nan,
                "within_5pct": math.nan, "median_ratio": math.nan}
    errors = sorted(abs(r - 1.0) for r in ratios)
    n = len(errors)
    return {"n": n, "median": percentile(errors, 50), "p95": percentile(errors, 95),
            "within_1pct": sum(e <= 0.01 for e in errors) / n,
            "within_5pct": sum(e <= 0.05 for e in errors) / n,
            "median_ratio": percentile(sorted(ratios), 50)}


@dataclass
class OsmData:
    """A road network as OSM objects: node ``i + 1`` is ``nodes[i]`` (lat, lon in 1e-7
    degrees), each way ``(id, node ids, tags)``."""

    nodes: list[tuple[int, int]] = field(default_factory=list)
    ways: list[tuple[int, list[int], dict[str, str]]] = field(default_factory=list)


SYNTHETIC_WAY_BASE = 10**12  # way ids for features without one: far above real OSM ids


def geojson_to_osm(collection: Mapping[str, Any]) -> OsmData:
    """The OSM nodes and ways of a GeoJSON road export, exactly as our reader
    (``adapters/geojson_roads``) numbers them: OSM node ``i + 1`` is our base node ``i``;
    a way without an id of its own (negative in our network) gets one above any real OSM id."""
    network = network_from_features(collection)
    out = OsmData(nodes=list(zip(np.rint(network.lat * 1e7).astype(np.int64).tolist(),
                                 np.rint(network.lon * 1e7).astype(np.int64).tolist())))
    for way in network.ways:
        way_id = way.way_id if way.way_id > 0 else SYNTHETIC_WAY_BASE - way.way_id - 1
        out.ways.append((way_id, (way.nodes + 1).tolist(), dict(way.tags)))
    return out


def osm_xml_lines(osm: OsmData) -> Iterable[str]:
    """``osm`` as OSM XML 0.6, line by line (nodes first, then ways)."""
    yield '<?xml version="1.0" encoding="UTF-8"?>\n'
    yield '<osm version="0.6" generator="geoplex bench/routing.py">\n'
    for i, (lat, lon) in enumerate(osm.nodes, start=1):
        yield f'  <node id="{i}" version="1" lat="{lat / 1e7:.7f}" lon="{lon / 1e7:.7f}"/>\n'
    for way_id, refs, tags in osm.ways:
        yield f'  <way id="{way_id}" version="1">\n'
        for ref in refs:
            yield f'    <nd ref="{ref}"/>\n'
        for k, v in tags.items():
            yield f"    <tag k={quoteattr(k)} v={quoteattr(v)}/>\n"
        yield "  </way>\n"
    yield "</osm>\n"


def write_osm_xml(osm: OsmData, path: Path) -> Path:
    with path.open("w", encoding="utf-8") as f:
        f.writelines(osm_xml_lines(osm))
    return path


def speed_rows(seg_tail: npt.NDArray[np.int32], seg_head: npt.NDArray[np.int32],
               node_ids: I64s, kmh: npt.NDArray[np.float64], segments: I64s) -> list[str]:
    """OSRM segment speed file lines ``from_osm_node_id,to_osm_node_id,speed_kmh`` for
    ``segments`` (directed, tail -> head), the speed rounded to a whole km/h, at least 1."""
    rows = []
    for s in segments.tolist():
        speed = max(1, int(round(float(kmh[s]))))
        rows.append(f"{int(node_ids[seg_tail[s]])},{int(node_ids[seg_head[s]])},{speed}")
    return rows


def osrm_large_components(extract_log: str) -> int | None:
    """How many "large" strongly connected components osrm-extract reported (its line
    ``Found 72 SCC (0 large, 72 small)``); None if the log has no such line."""
    match = re.search(r"Found \d+ SCC \((\d+) large", extract_log)
    return int(match.group(1)) if match else None


def free_speed_kmh(graph: RoadGraph) -> npt.NDArray[np.float64]:
    speed: npt.NDArray[np.float64] = graph.seg_length_m / (graph.seg_ms / 1000.0) * 3.6
    return speed


def ceiling_cells(runtime: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """The runtime benchmark's ceiling per concurrency: unary empty Ping, raw stub, one
    process, one channel (``bench/results/runtime.json``)."""
    out: dict[int, dict[str, Any]] = {}
    for cell in runtime.get("cells", []):
        if (cell.get("server") == "base" and cell.get("call") == "unary"
                and cell.get("response_size") == 0 and cell.get("client") == "stub"
                and cell.get("channels") == 1):
            out[int(cell["concurrency"])] = cell
    return out


def pick_pairs(rng: np.random.Generator, graph: RoadGraph, count: int,
               reachable: Callable[[int, int], bool]) -> list[tuple[int, int]]:
    """``count`` pairs of distinct road segments (not ferries, not the two directions of
    one road), uniformly at random, that ``reachable`` accepts."""
    eligible = np.flatnonzero((graph.seg_classes & CLASS_FERRY) == 0)
    pairs: list[tuple[int, int]] = []
    tries = 0
    while len(pairs) < count and tries < count * 20:
        tries += 1
        e, f = (int(x) for x in rng.choice(eligible, size=2))
        if e == f or int(graph.seg_reverse[e]) == f:
            continue
        if reachable(e, f):
            pairs.append((e, f))
    return pairs


# =========================================================================== ours, in process

@dataclass
class RegionRun:
    """One region's loaded graph and what the run measured on it."""

    name: str
    path: Path
    region: Region
    result: dict[str, Any]
    pairs: list[tuple[int, int]] = field(default_factory=list)
    points: list[tuple[float, float, float, float]] = field(default_factory=list)  # lat,lon x2
    matrix_points: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    route_distance: list[float | None] = field(default_factory=list)
    route_duration: list[float | None] = field(default_factory=list)
    traffic_segments: I64s = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def graph(self) -> RoadGraph:
        return self.region.modes[MODE].graph


def quiet(label: str) -> float:
    busy = wait_for_quiet(max_wait=10.0)
    if busy >= 20:
        log(f"    (machine still {busy:.0f}% busy before {label})")
    return busy


def preprocess(name: str, path: Path, cache: Path, customize_runs: int) -> tuple[Region,
                                                                                 dict[str, Any]]:
    """Our preprocessing, step by step, then the region as the server loads it."""
    quiet(f"{name} preprocessing")
    t = time.perf_counter()
    network = read_network(path)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    graph = build_graph(network, PROFILES[MODE])
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    index = SegmentIndex(graph)
    index_s = time.perf_counter() - t
    topo_dir = cache / f"{name}-topology"
    t = time.perf_counter()
    engine = CCHEngine(graph, topo_dir)
    cch_s = time.perf_counter() - t
    weights = graph.arc_weights()
    customize = []
    for _ in range(customize_runs):
        t = time.perf_counter()
        engine.customize(weights)
        customize.append(time.perf_counter() - t)
    topo_bytes = sum(p.stat().st_size for p in topo_dir.rglob("*") if p.is_file())
    used_nodes = int(np.unique(np.concatenate([graph.seg_tail, graph.seg_head])).size)
    graph_bytes, index_bytes = graph.nbytes(), index.nbytes()
    prep: dict[str, Any] = {
        "read_s": read_s, "build_graph_s": build_s, "index_s": index_s, "cch_build_s": cch_s,
        "customize_s": percentile(sorted(customize), 50), "customize_runs_s": customize}
    log(f"  {name}: read {read_s:.2f} s, build_graph {build_s:.2f} s, snapping index "
        f"{index_s:.2f} s, CCH order+contraction {cch_s:.2f} s, customize "
        f"{prep['customize_s'] * 1e3:.1f} ms")
    del network, engine, index
    t = time.perf_counter()
    region = load_region(RegionSource(name, path), (MODE,), cache / "regions", 600.0,
                         progress=lambda m: log("  " + m))
    prep["load_region_s"] = time.perf_counter() - t
    info = {
        "source": path.name, "nodes": int(graph.node_lat.shape[0]), "nodes_used": used_nodes,
        "segments": graph.seg_count, "turns": graph.arc_count, "prep": prep,
        "memory": {"graph_bytes": graph_bytes, "index_bytes": index_bytes,
                   "cch_topology_disk_bytes": topo_bytes,
                   "bytes_per_node": (graph_bytes + index_bytes) / used_nodes,
                   "bytes_per_segment": (graph_bytes + index_bytes) / graph.seg_count},
    }
    return region, info


def engine_times(run: RegionRun, baseline_pairs: int) -> None:
    """Query time of every engine; each one's distances against the CCH's."""
    g = run.graph
    mode = run.region.modes[MODE]
    weights = mode.free.arc_weights
    cch = mode.free.metric
    log(f"  {run.name}: building the baselines (Python lists, networkx graph)...")
    dijkstra = DijkstraMetric(g, weights)
    astar = BidirectionalAStarEngine(g).customize(weights)
    digraph = nx.DiGraph()
    digraph.add_weighted_edges_from(zip(g.arc_tail.tolist(), g.arc_head.tolist(),
                                        weights.astype(np.int64).tolist()))

    def nx_query(s: int, t: int) -> int:
        try:
            length, _ = nx.bidirectional_dijkstra(digraph, s, t, weight="weight")
        except nx.NetworkXNoPath:
            return UNREACHABLE
        return int(length)

    queries: dict[str, Callable[[int, int], int]] = {
        "cch": lambda s, t: cch.query(s, t)[0],
        "dijkstra": lambda s, t: dijkstra.query(s, t)[0],
        "networkx": nx_query,
        "astar": lambda s, t: astar.query(s, t)[0],
    }
    reference: list[int] = []
    out: dict[str, Any] = {}
    for key, label, subset in sorted(ENGINES, key=lambda e: e[0] != "cch"):
        pairs = run.pairs[:baseline_pairs] if subset else run.pairs
        quiet(f"{run.name} {key}")
        query = queries[key]
        for s, t in pairs[:5]:  # warm caches
            query(s, t)
        times: list[float] = []
        dists: list[int] = []
        clock = time.perf_counter
        for n, (s, t) in enumerate(pairs, 1):
            t0 = clock()
            d = query(s, t)
            times.append(clock() - t0)
            dists.append(d)
            if subset and n % 25 == 0:
                log(f"    {key}: {n}/{len(pairs)} ({percentile(sorted(times), 50) * 1e3:.0f} "
                    "ms p50 so far)")
        if key == "cch":
            reference = dists
        mismatches = sum(a != b for a, b in zip(dists, reference))
        out[key] = {**time_summary(times), "pairs": len(pairs), "mismatches": mismatches}
        log(f"    {label:<34} {len(pairs):>5} pairs: p50 {out[key]['p50']:,.0f} us, "
            f"p99 {out[key]['p99']:,.0f} us, mismatches vs CCH {mismatches}")
    run.result["engines"] = out


def app_for(regions: dict[str, Region], cache: Path) -> RoutingApp:
    """The service's app over the loaded regions, configured as the server is by default
    (read from an environment of our own, so new settings keep their defaults)."""
    env = Env({"GEOPLEX_ROUTING_MODES": MODE, "GEOPLEX_ROUTING_CACHE_DIR": str(cache),
               "GEOPLEX_ROUTING_REGIONS": ",".join(f"{name}={name}" for name in regions)})
    return RoutingApp(regions, RoutingConfig.from_env(env))


def route_times(run: RegionRun, app: RoutingApp) -> None:
    """``RoutingApp._route`` per pair (snap, path, steps, polyline), then its parts."""
    mode = run.region.modes[MODE]
    queries = [RouteQuery(Point(a, b), Point(c, d), MODE) for a, b, c, d in run.points]
    quiet(f"{run.name} routes")
    for q in queries[:10]:
        with contextlib.suppress(Exception):
            app._route(run.region, mode, q)
    times: list[float] = []
    failures = 0
    first_error = ""
    run.route_distance, run.route_duration = [], []
    clock = time.perf_counter
    for q in queries:
        t0 = clock()
        try:
            answer = app._route(run.region, mode, q)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            times.append(clock() - t0)
            failures += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
            run.route_distance.append(None)
            run.route_duration.append(None)
            continue
        times.append(clock() - t0)
        best = answer.routes[0]
        run.route_distance.append(best.distance_m)
        run.route_duration.append(best.duration_s)
    # the parts, on the same pairs
    g, weighting = mode.graph, mode.free
    snap_s, path_s, assemble_s = [], [], []
    for q in queries:
        t0 = clock()
        origin = mode.index.snap(q.origin.lat, q.origin.lon)
        destination = mode.index.snap(q.destination.lat, q.destination.lon)
        t1 = clock()
        path = shortest_path(g, weighting, origin, destination)
        t2 = clock()
        if path is None:
            continue
        app._assemble(mode, weighting, path, origin, destination)
        t3 = clock()
        snap_s.append(t1 - t0)
        path_s.append(t2 - t1)
        assemble_s.append(t3 - t2)
    run.result["route"] = {**time_summary(times), "failures": failures,
                           "first_error": first_error or None}
    run.result["route_parts"] = {"snap_both": time_summary(snap_s),
                                 "shortest_path": time_summary(path_s),
                                 "steps_and_polyline": time_summary(assemble_s)}
    r = run.result["route"]
    parts = run.result["route_parts"]
    log(f"    _route ({len(queries)} pairs): p50 {r['p50']:,.0f} us, p99 {r['p99']:,.0f} us"
        f" (snap {parts['snap_both']['p50']:,.0f} + path {parts['shortest_path']['p50']:,.0f}"
        f" + steps/polyline {parts['steps_and_polyline']['p50']:,.0f} us p50), "
        f"failures {failures}")


def matrix_times(run: RegionRun, app: RoutingApp, sizes: Sequence[int], runs: int,
                 rng: np.random.Generator) -> None:
    mode = run.region.modes[MODE]
    g = run.graph
    lat, lon = g.seg_mid()
    eligible = np.flatnonzero((g.seg_classes & CLASS_FERRY) == 0)
    out: dict[str, Any] = {}
    for size in sizes:
        chosen = rng.choice(eligible, size=2 * size, replace=False)
        pts = [(float(lat[s]), float(lon[s])) for s in chosen.tolist()]
        run.matrix_points[size] = pts
        origins = [Point(a, b) for a, b in pts[:size]]
        destinations = [Point(a, b) for a, b in pts[size:]]
        quiet(f"{run.name} matrix {size}")
        app._matrix(run.region, mode, origins, destinations, False)  # warm
        times = []
        ok = 0
        for _ in range(runs):
            t0 = time.perf_counter()
            answer = app._matrix(run.region, mode, origins, destinations, False)
            times.append(time.perf_counter() - t0)
            ok = sum(c.status == "ok" for row in answer.rows for c in row)
        out[str(size)] = {**time_summary(times, "ms"), "cells_ok": ok}
        log(f"    _matrix {size}x{size}: p50 {out[str(size)]['p50']:,.1f} ms ({ok} cells ok)")
    run.result["matrix"] = out


def traffic_times(run: RegionRun, share: float, runs: int, rng: np.random.Generator) -> None:
    """From a traffic update to a new metric in use: apply, customize, swap."""
    mode = run.region.modes[MODE]
    g = run.graph
    k = max(1, round(share * g.seg_count))
    segments = np.sort(rng.choice(g.seg_count, size=k, replace=False)).astype(np.int64)
    run.traffic_segments = segments
    factors = np.full(k, 0.5)
    quiet(f"{run.name} traffic")
    apply_s, customize_s, total_s = [], [], []
    for _ in range(runs):
        now = time.time()
        t0 = time.perf_counter()
        mode.traffic.apply(segments, factors, now + 600.0, now)  # the recording alone
        t1 = time.perf_counter()
        mode.apply_traffic(segments, factors, now + 600.0, now)  # recording + new metric in use
        t2 = time.perf_counter()
        apply_s.append(t1 - t0)
        customize_s.append(max((t2 - t1) - (t1 - t0), 0.0))
        total_s.append(t2 - t1)
    run.result["traffic"] = {"segments": k, "share": k / g.seg_count,
                             "apply": time_summary(apply_s, "ms"),
                             "customize_and_swap": time_summary(customize_s, "ms"),
                             "total": time_summary(total_s, "ms")}
    log(f"    traffic on {k:,} segments ({k / g.seg_count:.1%}): update to new metric in use "
        f"p50 {run.result['traffic']['total']['p50']:.1f} ms")


# =========================================================================== OSRM

class StepFailed(Exception):
    """An OSRM step did not work; the message says which and why (one line)."""


def find_python312(explicit: str | None) -> str:
    """A Python >= 3.12 that runs (a pyenv shim on PATH may not): ``explicit``, else
    ``python3.12`` on PATH, else pyenv's 3.12, else a newer pyenv one."""
    candidates = [explicit] if explicit else []
    candidates += [shutil.which("python3.12") or ""]
    for pattern in ("3.12*", "3.1[3-9]*"):
        candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{pattern}/bin/"
                                                          "python")), reverse=True)
    for c in candidates:
        if not c or not Path(c).is_file():
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            probe = subprocess.run([c, "-c", "import sys; print(sys.version_info >= (3, 12))"],
                                   capture_output=True, text=True, timeout=30, check=False)
            if probe.returncode == 0 and probe.stdout.strip() == "True":
                return c
    raise StepFailed("no Python 3.12 found (osrm-bindings wheels need >= 3.12): pass "
                     "--osrm-python")


@dataclass(frozen=True)
class OsrmTools:
    python: Path
    bin_dir: Path
    profile: Path

    def binary(self, name: str) -> Path:
        return self.bin_dir / name


def _probe_osrm(python: Path) -> OsrmTools | None:
    if not python.is_file():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, osrm, pathlib; "
         "print(m.version('osrm-bindings')); print(pathlib.Path(osrm.__file__).parent)"],
        capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:
        return None
    version, package = probe.stdout.split()[:2]
    if version != OSRM_VERSION:
        return None
    pkg = Path(package)
    return OsrmTools(python, pkg / "bin", pkg / "share" / "profiles" / "car.lua")


def osrm_tools(venv: Path, python312: str | None) -> OsrmTools:
    """The OSRM venv (made once, then reused) and its binaries and car profile."""
    python = venv / "bin" / "python"
    tools = _probe_osrm(python)
    if tools is None:
        base = find_python312(python312)
        log(f"  creating {venv} with {base} and installing osrm-bindings=={OSRM_VERSION} "
            "(once; a minute or two)...")
        made = subprocess.run([base, "-m", "venv", "--clear", str(venv)], capture_output=True,
                              text=True, check=False)
        if made.returncode != 0:
            raise StepFailed(f"python -m venv failed: {made.stderr.strip()[-300:]}")
        pip = subprocess.run([str(python), "-m", "pip", "install", "-q",
                              f"osrm-bindings=={OSRM_VERSION}"], capture_output=True,
                             text=True, timeout=1800, check=False)
        if pip.returncode != 0:
            raise StepFailed(f"pip install osrm-bindings failed: {pip.stderr.strip()[-300:]}")
        tools = _probe_osrm(python)
        if tools is None:
            raise StepFailed("osrm-bindings installed but `import osrm` fails")
    for name in ("osrm-extract", "osrm-contract", "osrm-partition", "osrm-customize"):
        if not tools.binary(name).is_file():
            raise StepFailed(f"{name} is not in the osrm-bindings wheel ({tools.bin_dir})")
    if not tools.profile.is_file():
        raise StepFailed(f"car.lua is not in the osrm-bindings wheel ({tools.profile})")
    return tools


def run_tool(argv: Sequence[str | Path], log_path: Path, timeout: float = 1800) -> float:
    """Run one OSRM binary; its wall time in seconds, or :class:`StepFailed`."""
    t0 = time.perf_counter()
    with log_path.open("w") as out:
        done = subprocess.run([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise StepFailed(f"{Path(str(argv[0])).name} exited {done.returncode}: "
                         + " | ".join(tail)[-400:])
    return wall


def copy_dataset(base: Path, into: Path) -> Path:
    """Copy every ``<base>.*`` file of an OSRM dataset into ``into``; the new base."""
    into.mkdir(parents=True, exist_ok=True)
    for f in base.parent.glob(base.name + ".*"):
        shutil.copy2(f, into / f.name)
    return into / base.name


def dataset_bytes(base: Path) -> int:
    return sum(f.stat().st_size for f in base.parent.glob(base.name + ".*"))


def pbf_node_ids(path: Path) -> I64s:
    """The OSM id of each of our base nodes of a PBF region, in the order
    ``adapters/osm_pbf.read_pbf`` numbers them (first appearance in a routable way)."""
    import osmium

    index: dict[int, int] = {}
    for obj in osmium.FileProcessor(str(path)).with_locations():
        if not isinstance(obj, osmium.osm.Way):
            continue
        if "highway" not in obj.tags and obj.tags.get("route") != "ferry":
            continue
        for n in obj.nodes:
            if n.location.valid() and n.ref not in index:
                index[n.ref] = len(index)
    ids = np.zeros(len(index), dtype=np.int64)
    for ref, i in index.items():
        ids[i] = ref
    return ids


def peer(tools: OsrmTools, job: Mapping[str, Any], work: Path, label: str) -> dict[str, Any]:
    """Run ``bench/_osrm_peer.py`` on one dataset (its own process) and read its answer."""
    job_path = work / f"{label}.job.json"
    job_path.write_text(json.dumps(job))
    err = work / f"{label}.peer.log"
    with job_path.open() as stdin, err.open("w") as stderr:
        done = subprocess.run([str(tools.python), str(PEER_SCRIPT)], stdin=stdin,
                              stdout=subprocess.PIPE, stderr=stderr, timeout=1800,
                              check=False)
    if done.returncode != 0:
        tail = err.read_text(errors="replace").strip().splitlines()[-3:]
        raise StepFailed(f"OSRM peer ({label}) exited {done.returncode}: "
                         + " | ".join(tail)[-400:])
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def osrm_region(run: RegionRun, tools: OsrmTools, work: Path, args: argparse.Namespace,
                node_ids: I64s | None) -> dict[str, Any]:
    """OSRM's preprocessing, queries, matrices and traffic update on one region."""
    out: dict[str, Any] = {"errors": {}}
    errors: dict[str, str] = out["errors"]
    root = work / "osrm" / run.name
    shutil.rmtree(root, ignore_errors=True)
    (root / "extract").mkdir(parents=True)
    g = run.graph

    def step(name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (StepFailed, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            errors[name] = str(exc) if isinstance(exc, StepFailed) else (
                f"{type(exc).__name__}: {exc}")[:400]
            log(f"    OSRM {name} failed: {errors[name]}")
            return None

    # -- input: the PBF itself, or the GeoJSON written as OSM XML
    def make_input() -> Path:
        if run.path.name.endswith(".pbf"):
            target = root / "extract" / "input.osm.pbf"
            shutil.copy2(run.path, target)
            out["convert_s"] = None
            return target
        t0 = time.perf_counter()
        with run.path.open("rb") as f:
            osm = geojson_to_osm(json.load(f))
        target = write_osm_xml(osm, root / "extract" / "input.osm")
        out["convert_s"] = time.perf_counter() - t0
        out["converted"] = {"nodes": len(osm.nodes), "ways": len(osm.ways),
                            "xml_bytes": target.stat().st_size}
        log(f"    GeoJSON -> OSM XML: {len(osm.nodes):,} nodes, {len(osm.ways):,} ways in "
            f"{out['convert_s']:.1f} s")
        return target

    source = step("convert", make_input)
    if source is None:
        return out
    base = root / "extract" / "input.osrm"
    quiet(f"{run.name} osrm-extract")
    extract_s = step("extract", lambda: run_tool(
        [tools.binary("osrm-extract"), "-p", tools.profile, source], root / "extract.log"))
    if extract_s is None:
        return out
    out["extract_s"] = extract_s
    large = osrm_large_components((root / "extract.log").read_text(errors="replace"))
    out["large_components"] = large
    if large == 0:
        # The extract is so small that no component reaches OSRM's default
        # --small-component-size (1000 nodes): every query then also looks for a phantom
        # in a "large" component, and finds none. Measure that once, then extract again
        # with a threshold the main component passes.
        probe_base = copy_dataset(base, root / "ch-default")
        probe = step("default-extract probe", lambda: (
            run_tool([tools.binary("osrm-contract"), probe_base], root / "contract-default.log"),
            peer(tools, {"pairs": [[b, a, d, c] for a, b, c, d in run.points[:200]],
                         "full_pairs": 0, "warmup": 20, "matrices": [],
                         "path": str(probe_base), "algorithm": "CH"}, root, "CH-default")))
        if probe is not None:
            out["default_extract"] = {"route": time_summary(probe[1]["route_s"]),
                                      "extract_s": extract_s}
        quiet(f"{run.name} osrm-extract again")
        again = step("extract", lambda: run_tool(
            [tools.binary("osrm-extract"), "-p", tools.profile, "--small-component-size",
             str(SMALL_COMPONENT_SIZE), source], root / "extract.log"))
        if again is None:
            return out
        out["extract_s"] = extract_s = again
        out["small_component_size"] = SMALL_COMPONENT_SIZE
        log(f"    OSRM found no large component at its default --small-component-size; "
            f"extracted again with {SMALL_COMPONENT_SIZE} (default-extract Route() p50 "
            f"{fmt_num((out.get('default_extract') or {}).get('route', {}).get('p50', math.nan))}"
            " us)")
    ch_base = copy_dataset(base, root / "ch")
    mld_base = copy_dataset(base, root / "mld")
    quiet(f"{run.name} osrm-contract")
    out["contract_s"] = step("contract", lambda: run_tool(
        [tools.binary("osrm-contract"), ch_base], root / "contract.log"))
    quiet(f"{run.name} osrm-partition")
    out["partition_s"] = step("partition", lambda: run_tool(
        [tools.binary("osrm-partition"), mld_base], root / "partition.log"))
    if out["partition_s"] is not None:
        out["customize_s"] = step("customize", lambda: run_tool(
            [tools.binary("osrm-customize"), mld_base], root / "customize.log"))
    else:
        out["customize_s"] = None
    log(f"    OSRM extract {fmt_num(extract_s, 2)} s, contract (CH) "
        f"{fmt_num(out['contract_s'] or math.nan, 2)} s, partition + customize (MLD) "
        f"{fmt_num(out['partition_s'] or math.nan, 2)} + "
        f"{fmt_num(out['customize_s'] or math.nan, 2)} s")

    pairs = [[b, a, d, c] for a, b, c, d in run.points]  # lon, lat order for OSRM
    matrices = [{"key": str(size), "origins": [[b, a] for a, b in pts[:size]],
                 "destinations": [[b, a] for a, b in pts[size:]], "runs": args.matrix_runs}
                for size, pts in run.matrix_points.items()]
    job = {"pairs": pairs, "full_pairs": len(pairs), "warmup": 20, "matrices": matrices}
    ready = {"CH": out["contract_s"] is not None,
             "MLD": out["partition_s"] is not None and out["customize_s"] is not None}
    for algo, dataset in (("CH", ch_base), ("MLD", mld_base)):
        if not ready[algo]:
            continue
        out[f"{algo}_disk_bytes"] = dataset_bytes(dataset)
        quiet(f"{run.name} OSRM {algo} queries")
        answer = step(f"{algo} queries", lambda: peer(
            tools, {**job, "path": str(dataset), "algorithm": algo}, root, algo))
        if answer is None:
            continue
        answered = sum(d is not None for d in answer["distance_m"])
        out[algo] = {
            "load_s": answer["load_s"],
            "rss_loaded_mib": (answer["rss_loaded_kib"] - answer["rss_import_kib"]) / 1024,
            "rss_after_queries_mib": (answer["rss_end_kib"] - answer["rss_import_kib"]) / 1024,
            "route": time_summary(answer["route_s"]), "route_full": time_summary(
                answer["full_s"]), "answered": answered, "errors": answer["errors"],
            "distance_m": answer["distance_m"], "duration_s": answer["duration_s"],
            "snap_m": answer["snap_m"], "matrix": {k: {**time_summary(v["table_s"], "ms"), "cells_ok": v["cells_ok"]}
                       for k, v in answer["matrices"].items()}}
        m = out[algo]
        log(f"    OSRM {algo} Route(): p50 {m['route']['p50']:,.0f} us, p99 "
            f"{m['route']['p99']:,.0f} us; with steps + full geometry p50 "
            f"{m['route_full']['p50']:,.0f} us; answered {answered}/{len(pairs)}; Table() "
            + ", ".join(f"{k}x{k} {v['p50']:.1f} ms" for k, v in m["matrix"].items()))

    # -- traffic: the same segments as ours, at half their free-flow speed
    before = (out.get("MLD") or {}).get("duration_s") or []
    out["traffic"] = osrm_traffic(run, tools, root, ch_base, mld_base, ready, node_ids, args,
                                  step, before)
    return out


def osrm_traffic(run: RegionRun, tools: OsrmTools, root: Path, ch_base: Path, mld_base: Path,
                 ready: Mapping[str, bool], node_ids: I64s | None, args: argparse.Namespace,
                 step: Callable[[str, Callable[[], Any]], Any],
                 before: Sequence[float | None]) -> dict[str, Any]:
    """OSRM after the traffic change of :func:`traffic_times`: MLD re-customized with a
    segment speed file (then reloaded, and routes checked for the change), CH contracted
    again with it."""
    g = run.graph
    out: dict[str, Any] = {}
    if node_ids is None:
        def no_ids() -> None:
            raise StepFailed("no OSM node ids for this region's base nodes")
        step("traffic", no_ids)
        return out
    segments = run.traffic_segments
    rows = speed_rows(g.seg_tail, g.seg_head, node_ids, free_speed_kmh(g) * 0.5, segments)
    speed_file = root / "speeds.csv"
    speed_file.write_text("\n".join(rows) + "\n")
    out["segments"] = len(rows)
    if ready["MLD"]:
        traffic_base = copy_dataset(mld_base, root / "mld-traffic")
        walls = []
        for n in range(args.traffic_runs_osrm):
            quiet(f"{run.name} osrm-customize traffic")
            wall = step("traffic customize", lambda: run_tool(
                [tools.binary("osrm-customize"), traffic_base, "--segment-speed-file",
                 speed_file], root / f"customize-traffic-{n}.log"))
            if wall is None:
                break
            walls.append(wall)
        if walls:
            out["mld_customize_runs_s"] = walls
            out["mld_customize_s"] = percentile(sorted(walls), 50)
            sample = run.points[:200]
            job = {"pairs": [[b, a, d, c] for a, b, c, d in sample], "full_pairs": 0,
                   "warmup": 0, "matrices": []}
            answer = step("traffic reload", lambda: peer(
                tools, {**job, "path": str(traffic_base), "algorithm": "MLD"}, root,
                "MLD-traffic"))
            if answer is not None:
                out["mld_reload_s"] = answer["load_s"]
                out["routes_changed"] = sum(
                    1 for a, b in zip(answer["duration_s"], before)
                    if a is not None and b is not None and abs(a - b) > 0.05)
                out["routes_compared"] = len(sample)
    if ready["CH"]:
        traffic_ch = copy_dataset(ch_base, root / "ch-traffic")
        quiet(f"{run.name} osrm-contract traffic")
        wall = step("traffic contract", lambda: run_tool(
            [tools.binary("osrm-contract"), traffic_ch, "--segment-speed-file", speed_file],
            root / "contract-traffic.log"))
        out["ch_contract_s"] = wall
    log(f"    OSRM traffic on {len(rows):,} segments: MLD osrm-customize "
        f"{fmt_num((out.get('mld_customize_s') or math.nan) * 1e3)} ms (+ reload "
        f"{fmt_num((out.get('mld_reload_s') or math.nan) * 1e3, 1)} ms), CH osrm-contract "
        f"{fmt_num(out.get('ch_contract_s') or math.nan, 2)} s; "
        f"{out.get('routes_changed', '-')}/{out.get('routes_compared', '-')} routes changed")
    return out


def osrm_node_ids(run: RegionRun) -> I64s | None:
    """OSM node ids of our base nodes: ``index + 1`` for a GeoJSON region (as
    :func:`geojson_to_osm` writes them), read from the file for a PBF; checked against
    the graph's coordinates."""
    g = run.graph
    if run.path.name.endswith(".pbf"):
        ids = pbf_node_ids(run.path)
        if ids.size != g.node_lat.shape[0]:
            log(f"    node ids: {ids.size} read, graph has {g.node_lat.shape[0]} nodes")
            return None
        return ids
    return np.arange(1, g.node_lat.shape[0] + 1, dtype=np.int64)


# =========================================================================== end to end

async def e2e(regions: Sequence[RegionRun], args: argparse.Namespace,
              cache: Path) -> list[dict[str, Any]]:
    state = cache / "server-state"
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {"GEOPLEX_ROUTING_PORT": str(port),
           "GEOPLEX_ROUTING_REGIONS": ",".join(f"{r.name}={r.path}" for r in regions),
           "GEOPLEX_ROUTING_MODES": MODE, "GEOPLEX_STATE_DIR": str(state),
           "GEOPLEX_ROUTING_CACHE_DIR": str(cache / "regions"),
           "GEOPLEX_LOG_LEVEL": "warning", "GEOPLEX_TRACING": "off"}
    requests = []
    for batch in itertools.zip_longest(*[r.points for r in regions]):
        for p in batch:
            if p is not None:
                requests.append(rpb.ComputeRouteRequest(
                    origin=LatLng(latitude=p[0], longitude=p[1]),
                    destination=LatLng(latitude=p[2], longitude=p[3]),
                    travel_mode=rpb.TRAVEL_MODE_DRIVE))
    log("  starting one routing server process...")
    rows: list[dict[str, Any]] = []
    with start_server_processes([sys.executable, "-m", "geoplex.servers.routing"], 1, env,
                                ready_timeout=600) as servers:
        channel = grpc.aio.insecure_channel(servers.address)
        try:
            stub = routing_pb2_grpc.RoutingServiceStub(channel)
            mesh = mesh_pb2_grpc.MeshServiceStub(channel)
            sizes = [(await stub.ComputeRoute(r, timeout=30)).ByteSize()
                     for r in requests[:200]]
            size = int(np.mean(sizes))
            ping_req = mesh_pb2.PingRequest(response_size=size)
            for conc in args.concurrency:
                if not servers.processes[0].running:
                    break
                cyc = itertools.cycle(requests)

                async def route() -> None:
                    await stub.ComputeRoute(next(cyc), timeout=30)

                async def ping() -> None:
                    await mesh.Ping(ping_req, timeout=30)

                async def window(op: Callable[[], Any], what: str) -> LoadResult:
                    """One round; again (twice at most) if no call completed in it."""
                    for attempt in range(3):
                        await wait_for_quiet_async(max_wait=10)
                        got = await closed_loop(per_worker(op), concurrency=conc,
                                                warmup=args.warmup, duration=args.duration,
                                                pids=servers.pids)
                        if got.calls:
                            return got
                        log(f"  c={conc}: {what}: no call completed in the window "
                            f"({got.errors} errors, first: {got.first_error}; server "
                            f"{'running' if servers.processes[0].running else 'gone'})"
                            + ("; again" if attempt < 2 else ""))
                    return got

                best: LoadResult | None = None
                ceil: LoadResult | None = None
                for _ in range(args.rounds):
                    r = await window(route, "ComputeRoute")
                    best = r if best is None or r.calls_per_s > best.calls_per_s else best
                    c = await window(ping, "Ping")
                    ceil = c if ceil is None or c.calls_per_s > ceil.calls_per_s else ceil
                assert best is not None and ceil is not None
                for what, got in (("ComputeRoute", best), ("Ping", ceil)):
                    if got.errors or not got.calls:
                        log(f"  c={conc}: {what}: {got.calls} calls, {got.errors} errors, "
                            f"first: {got.first_error}")
                rows.append({"concurrency": conc, "response_bytes": size,
                             "route": best.as_dict(), "ceiling": ceil.as_dict()})
                log(f"  c={conc:>2}: {best.calls_per_s:,.0f} routes/s p50 {best.p50_ms:.2f} "
                    f"p99 {best.p99_ms:.2f} ms, errors {best.errors} | ceiling (Ping "
                    f"{size} B) {ceil.calls_per_s:,.0f}/s -> "
                    f"{_pct(best.calls_per_s / ceil.calls_per_s if ceil.calls_per_s else math.nan)}")
        finally:
            await channel.close()
            server = servers.processes[0]
            if not server.running:
                tail = server.log_tail(40)
                log(f"  the routing server exited ({server.returncode}) during the run; the "
                    f"end of its log:\n{tail}")
                rows.append({"server_exit": server.returncode, "server_log_tail": tail})
    return rows


# =========================================================================== report

def _us(x: Mapping[str, Any] | None) -> str:
    if not x:
        return "-"
    return f"{fmt_num(x['p50'])} / {fmt_num(x['p99'])}"


def _ms(x: Mapping[str, Any] | None, key: str = "p50", digits: int = 1) -> str:
    if not x:
        return "-"
    return fmt_num(x.get(key, math.nan), digits)


def _s(value: Any, digits: int = 2) -> str:
    return "-" if value is None else fmt_num(float(value), digits)


def _pct(value: Any, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value * 100:.{digits}f}%"


class Notes:
    """Numbered footnotes for the cells that are "-" because a step failed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.lines:
            self.lines.append(text)
        return f"[{self.lines.index(text) + 1}]"


def _failed(osrm: Mapping[str, Any] | None, steps: Sequence[str], notes: Notes,
            region: str) -> str:
    """"-" and a footnote naming why, for an OSRM cell whose steps failed or were skipped."""
    if not osrm:
        return "-"
    errors = osrm.get("errors") or {}
    for s in steps:
        if s in errors:
            return "- " + notes.mark(f"{REGION_LABELS.get(region, region)}, OSRM {s}: "
                                     f"{errors[s]}")
    if osrm.get("unavailable"):
        return "- " + notes.mark(f"OSRM not run: {osrm['unavailable']}")
    return "-"


def report(result: Mapping[str, Any]) -> str:
    regions: dict[str, Any] = result["regions"]
    names = list(regions)
    labels = [REGION_LABELS.get(n, n) for n in names]
    settings = result["settings"]
    notes = Notes()
    lines = [
        f"Machine: {machine_line(result['machine'])}. Car graphs: "
        + "; ".join(f"{REGION_LABELS.get(n, n)} ({r['source']}: {r['nodes_used']:,} road "
                    f"nodes, {r['segments']:,} directed segments, {r['turns']:,} turns)"
                    for n, r in regions.items())
        + f". Seeded random pairs of road segments (seed {settings['seed']}); route points "
        "are the segments' midpoints. OSRM is osrm-bindings "
        f"{OSRM_VERSION} with its stock car.lua, in-process in its own Python 3.12 "
        f"process. Whole run: {fmt_num(result.get('elapsed_s', math.nan) / 60, 1)} min.", ""]

    # 1. engine query time
    head = ["engine", "pairs"] + [f"{lab} p50 / p99 µs" for lab in labels] + [
        f"{lab} vs CCH p50" for lab in labels] + ["distance mismatches vs CCH"]
    rows = []
    for key, label, _ in ENGINES:
        cells = [label, " / ".join(str(regions[n]["engines"][key]["pairs"]) for n in names)]
        cells += [_us(regions[n]["engines"].get(key)) for n in names]
        cells += [f"{regions[n]['engines'][key]['p50'] / regions[n]['engines']['cch']['p50']:,.0f}x"
                  if key != "cch" else "1x" for n in names]
        cells.append(" / ".join(str(regions[n]["engines"][key]["mismatches"]) for n in names))
        rows.append(cells)
    for algo in ("CH", "MLD"):
        cells = [f"OSRM {algo} `Route()` (snapping included, no steps/geometry)",
                 " / ".join(str(regions[n].get("osrm", {}).get(algo, {}).get("route", {})
                                .get("n", "-")) for n in names)]
        for n in names:
            o = regions[n].get("osrm") or {}
            steps = ["convert", "extract", "contract" if algo == "CH" else "partition",
                     "customize", f"{algo} queries"]
            text = _us(o[algo]["route"]) if algo in o else _failed(o, steps, notes, n)
            if algo in o and o.get("small_component_size"):
                probe = (o.get("default_extract") or {}).get("route") or {}
                text += " " + notes.mark(
                    f"{REGION_LABELS.get(n, n)}: at osrm-extract's default "
                    "--small-component-size (1000) OSRM finds no large component in this "
                    "small extract, so every query also searches for a phantom in one; its CH "
                    f"`Route()` p50 was then {fmt_num(probe.get('p50', math.nan))} µs "
                    f"(200 pairs). Extracted with --small-component-size "
                    f"{o['small_component_size']} for every OSRM number here.")
            cells.append(text)
        for n in names:
            o = regions[n].get("osrm") or {}
            cells.append(f"{o[algo]['route']['p50'] / regions[n]['engines']['cch']['p50']:.1f}x"
                         if algo in o else "-")
        cells.append("-")
        rows.append(cells)
    base_pairs = settings["baseline_pairs"]
    lines += [f"**1. Engine query time** (µs, p50 / p99): one segment-to-segment shortest "
              f"path on the edge-based graph (distance and the path's turns). The pure-Python "
              f"engines run on the first {base_pairs} pairs, the CCH on all "
              f"{settings['pairs']}; every engine's distances equal the CCH's on the pairs "
              "they share (last column, Gothenburg / Helsinki). "
              "OSRM's `Route()` also snaps its two coordinates, so it compares with the CCH "
              "plus our snapping (table 2).",
              "", markdown_table(head, rows, "ll" + "r" * (len(head) - 2)), ""]

    # 2. time per route
    head = ["what", *[f"{lab} p50 / p99 µs" for lab in labels]]
    rows = [["ours: `RoutingApp._route` (snap both points, shortest path, steps, polyline)",
             *[_us(regions[n].get("route")) for n in names]],
            ["  of which: snap both points",
             *[_us(regions[n]["route_parts"]["snap_both"]) for n in names]],
            ["  of which: shortest path (CCH, up to 4 direction combinations)",
             *[_us(regions[n]["route_parts"]["shortest_path"]) for n in names]],
            ["  of which: steps + polyline",
             *[_us(regions[n]["route_parts"]["steps_and_polyline"]) for n in names]]]
    for algo in ("CH", "MLD"):
        cells = [f"OSRM {algo} `Route()` with steps and full geometry (polyline)"]
        for n in names:
            o = regions[n].get("osrm") or {}
            cells.append(_us(o[algo]["route_full"]) if algo in o
                         else _failed(o, ["convert", "extract", f"{algo} queries"], notes, n))
        rows.append(cells)
    lines += [f"**2. Engine time per route** (µs, p50 / p99, {settings['pairs']} pairs per "
              "region, in process, no gRPC): what a ComputeRoute costs below the servicer.",
              "", markdown_table(head, rows, "l" + "r" * len(names)), ""]

    # 3. preprocessing and memory
    head = ["step", *labels]
    pr = {n: regions[n]["prep"] for n in names}
    osr = {n: regions[n].get("osrm") or {} for n in names}
    rows = [["ours: read the data file", *[_s(pr[n]["read_s"]) for n in names]],
            ["ours: `build_graph` (profile, turns, largest SCC)",
             *[_s(pr[n]["build_graph_s"]) for n in names]],
            ["ours: snapping index", *[_s(pr[n]["index_s"]) for n in names]],
            ["ours: CCH order + contraction (`CCHEngine`, metric-independent)",
             *[_s(pr[n]["cch_build_s"]) for n in names]],
            ["ours: CCH customization (one metric), ms",
             *[_s(pr[n]["customize_s"] * 1e3, 1) for n in names]],
            ["ours: `load_region` from scratch (all of the above, cached on disk)",
             *[_s(pr[n]["load_region_s"]) for n in names]],
            ["OSRM: GeoJSON -> OSM XML (Gothenburg only)",
             *[_s(osr[n].get("convert_s")) if osr[n].get("convert_s") is not None
               else ("n/a (PBF)" if osr[n] and "convert" not in osr[n].get("errors", {})
                     and not osr[n].get("unavailable")
                     else _failed(osr[n], ["convert"], notes, n)) for n in names]],
            ["OSRM: `osrm-extract` (car.lua)",
             *[_s(osr[n].get("extract_s")) if osr[n].get("extract_s") is not None
               else _failed(osr[n], ["convert", "extract"], notes, n) for n in names]],
            ["OSRM CH: `osrm-contract`",
             *[_s(osr[n].get("contract_s")) if osr[n].get("contract_s") is not None
               else _failed(osr[n], ["convert", "extract", "contract"], notes, n)
               for n in names]],
            ["OSRM MLD: `osrm-partition` + `osrm-customize`",
             *[f"{_s(osr[n]['partition_s'])} + {_s(osr[n]['customize_s'])}"
               if osr[n].get("partition_s") is not None and osr[n].get("customize_s")
               is not None else _failed(osr[n], ["convert", "extract", "partition",
                                                 "customize"], notes, n) for n in names]]]
    mem = {n: regions[n]["memory"] for n in names}
    mem_rows = [
        ["ours: graph + snapping index in memory",
         *[f"{(mem[n]['graph_bytes'] + mem[n]['index_bytes']) / 2**20:.1f} MiB" for n in names]],
        ["ours: per road node / per directed segment",
         *[f"{mem[n]['bytes_per_node']:.0f} B / {mem[n]['bytes_per_segment']:.0f} B"
           for n in names]],
        ["ours: CCH topology (on disk)",
         *[f"{mem[n]['cch_topology_disk_bytes'] / 2**20:.1f} MiB" for n in names]],
        ["OSRM CH / MLD dataset (on disk)",
         *[(f"{osr[n]['CH_disk_bytes'] / 2**20:.1f} / "
            if osr[n].get("CH_disk_bytes") else "- / ")
           + (f"{osr[n]['MLD_disk_bytes'] / 2**20:.1f} MiB"
              if osr[n].get("MLD_disk_bytes") else "-") for n in names]],
        ["OSRM CH / MLD: resident memory its dataset adds to the process (after the queries)",
         *[" / ".join(f"{osr[n][a]['rss_after_queries_mib']:.1f}" if a in osr[n] else "-"
                      for a in ("CH", "MLD")) + " MiB" for n in names]]]
    lines += ["**3. Preprocessing** (seconds; OSRM's binaries use both cores) **and memory.** "
              "Our memory per node is the graph's arrays plus the snapping index over the road "
              "nodes the car graph uses; the CCH's own arrays are not counted there (their "
              "size on disk is shown).", "",
              markdown_table(head, rows + mem_rows, "l" + "r" * len(names)), ""]

    # 4. traffic
    head = ["from a traffic update to routes using it", *labels]
    tr = {n: regions[n].get("traffic") or {} for n in names}
    otr = {n: osr[n].get("traffic") or {} for n in names}
    rows = [["segments changed (half their free-flow speed)",
             *[f"{tr[n].get('segments', 0):,} ({_pct(tr[n].get('share'))})" for n in names]],
            ["ours: `ModeGraph.apply_traffic` (record, customize, swap; ms, p50)",
             *[_ms(tr[n].get("total")) for n in names]],
            ["  of which CCH customization + swap (ms, p50)",
             *[_ms(tr[n].get("customize_and_swap")) for n in names]],
            ["OSRM MLD: `osrm-customize --segment-speed-file` (ms, p50 wall)",
             *[_s((otr[n].get("mld_customize_s") or math.nan) * 1e3, 0)
               if otr[n].get("mld_customize_s") is not None
               else _failed(osr[n], ["convert", "extract", "partition", "customize",
                                     "traffic", "traffic customize"], notes, n)
               for n in names]],
            ["OSRM MLD: then loading the new dataset (ms)",
             *[_s((otr[n].get("mld_reload_s") or math.nan) * 1e3, 1)
               if otr[n].get("mld_reload_s") is not None
               else _failed(osr[n], ["traffic", "traffic customize", "traffic reload"],
                            notes, n) for n in names]],
            ["OSRM MLD: routes whose duration changed (of those checked)",
             *[f"{otr[n]['routes_changed']} / {otr[n]['routes_compared']}"
               if "routes_changed" in otr[n] else "-" for n in names]],
            ["OSRM CH: `osrm-contract --segment-speed-file` (s, wall)",
             *[_s(otr[n].get("ch_contract_s")) if otr[n].get("ch_contract_s") is not None
               else _failed(osr[n], ["convert", "extract", "contract", "traffic",
                                     "traffic contract"], notes, n) for n in names]]]
    lines += [f"**4. Traffic update** on {_pct(settings['traffic_share'], 0)} of the directed "
              "segments (the same segments for both; OSRM's as a segment speed file keyed by "
              "OSM node ids). Ours runs in the serving process; OSRM's customization is a "
              "separate program writing files that a server then reloads.", "",
              markdown_table(head, rows, "l" + "r" * len(names)), ""]

    # 5. accuracy
    acc = {n: osr[n].get("accuracy") or {} for n in names}
    cols = [(n, part) for n in names for part in ("all", "same_snap")]
    head = ["vs OSRM CH", *[f"{REGION_LABELS.get(n, n)}: "
                            + ("all pairs" if part == "all" else f"OSRM snapped <= {SAME_SNAP_M:g} m")
                            for n, part in cols]]

    def cell(n: str, part: str, fn: Callable[[Mapping[str, Any], Mapping[str, Any]], str]) -> str:
        got = acc[n].get(part)
        return fn(got["distance"], got["duration"]) if got and got["distance"]["n"] else "-"

    rows = [["pairs both answered", *[cell(n, p, lambda d, t: str(d["n"])) for n, p in cols]],
            ["distance: median / p95 of abs(ours/OSRM - 1)",
             *[cell(n, p, lambda d, t: f"{_pct(d['median'], 2)} / {_pct(d['p95'])}")
               for n, p in cols]],
            ["distance: within 1% / within 5%",
             *[cell(n, p, lambda d, t: f"{_pct(d['within_1pct'], 0)} / "
                                       f"{_pct(d['within_5pct'], 0)}") for n, p in cols]],
            ["distance: median of ours/OSRM",
             *[cell(n, p, lambda d, t: fmt_num(d["median_ratio"], 3)) for n, p in cols]],
            ["duration: median / p95 of abs(ours/OSRM - 1)",
             *[cell(n, p, lambda d, t: f"{_pct(t['median'], 1)} / {_pct(t['p95'])}")
               for n, p in cols]],
            ["duration: within 1% / within 5%",
             *[cell(n, p, lambda d, t: f"{_pct(t['within_1pct'], 0)} / "
                                       f"{_pct(t['within_5pct'], 0)}") for n, p in cols]],
            ["duration: median of ours/OSRM",
             *[cell(n, p, lambda d, t: fmt_num(t["median_ratio"], 3)) for n, p in cols]]]
    differ = " / ".join(f"{REGION_LABELS.get(n, n)} {acc[n].get('ch_vs_mld_distance_differ', '-')}"
                        for n in names)
    lines += ["**5. Accuracy against OSRM** (car, free flow): our best route's distance and "
              "duration over OSRM CH's `Route()` from the same two points (segment "
              "midpoints, on a road of both graphs). \"OSRM snapped <= "
              f"{SAME_SNAP_M:g} m\" keeps the pairs where OSRM started and ended where we did "
              "(elsewhere it left a road it will not start on, e.g. a private one, or a "
              "component it thinks tiny). Both minimise time, but OSRM's car.lua minimises "
              "its `routability` weight (it also forbids entering an access=destination / "
              "private road from a public one), and rounds to 0.1 m / 0.1 s. OSRM's CH and "
              f"MLD distances differ by more than 0.1 m on {differ} pairs.", "",
              markdown_table(head, rows, "l" + "r" * len(cols)), ""]

    # 6. matrices
    head = ["matrix", *[f"{lab} ours `_matrix` ms" for lab in labels],
            *[f"{lab} OSRM CH / MLD `Table()` ms" for lab in labels]]
    rows = []
    for size in settings["matrix_sizes"]:
        k = str(size)
        cells = [f"{size} x {size}"]
        cells += [_ms(regions[n].get("matrix", {}).get(k)) for n in names]
        for n in names:
            parts = []
            for algo in ("CH", "MLD"):
                m = (osr[n].get(algo) or {}).get("matrix", {}).get(k)
                parts.append(_ms(m) if m else "-")
            cells.append(" / ".join(parts))
        rows.append(cells)
    lines += [f"**6. Matrices** (p50 of {settings['matrix_runs']} runs, random road points, "
              "in process; ours includes snapping and each cell's distance).", "",
              markdown_table(head, rows, "l" + "r" * (len(head) - 1)), ""]

    # 7. end to end
    e2e_rows = result.get("e2e") or []
    ceilings = {int(k): v for k, v in (result.get("runtime_ceiling") or {}).get(
        "calls_per_s", {}).items()}
    rows = []
    for row in e2e_rows:
        if "server_exit" in row:
            rows.append(["-"] * 7 + ["- " + notes.mark(
                f"the routing server exited (code {row['server_exit']}) during the end-to-end "
                "run; the cells after it are missing (its log tail is in the JSON results)")])
            continue
        r, c = row["route"], row["ceiling"]
        conc = row["concurrency"]
        ref = ceilings.get(conc)
        rows.append([conc, row["response_bytes"],
                     f"{fmt_num(r['calls_per_s'])} ({r['p50_ms']:.2f} / {r['p99_ms']:.2f})",
                     f"{fmt_num(c['calls_per_s'])} ({c['p50_ms']:.2f} / {c['p99_ms']:.2f})",
                     _pct(r["calls_per_s"] / c["calls_per_s"] if c["calls_per_s"] else math.nan),
                     f"{fmt_num(ref)} -> {_pct(r['calls_per_s'] / ref)}" if ref else "-",
                     f"{r['cpu'].get('server_cpu_pct', math.nan):.0f} / "
                     f"{r['cpu'].get('client_cpu_pct', math.nan):.0f} / "
                     f"{r['cpu'].get('other_cpu_pct', math.nan):.0f}",
                     r["errors"]])
    when = (result.get("runtime_ceiling") or {}).get("date", "")
    lines += [f"**7. End to end over gRPC**: one routing server process (both regions, car), "
              "one client process, closed-loop `ComputeRoute` through the raw generated stub "
              "(no alternatives, free flow), random pairs of both regions; routes/s and "
              f"(p50 / p99 ms); each cell the best of {settings['rounds']} rounds of "
              f"{settings['duration']:.0f} s, interleaved with the ceiling on the same "
              "process: `MeshService/Ping` answering as many bytes as the average route "
              "response. The last ceiling column is the empty-Ping ceiling of "
              f"`bench/results/runtime.json` ({when or 'not found'}), another run.", "",
              markdown_table(["conc", "resp B", "ours: ComputeRoute", "ceiling: Ping same size",
                              "ours / ceiling", "runtime.json ceiling -> ours / it",
                              "CPU % server / client / other", "errors"], rows, "rrrrrrrr")
              if rows else "(not run)"]
    if notes.lines:
        lines += [""] + [f"[{i}] {text}" for i, text in enumerate(notes.lines, 1)]
    return "\n".join(lines)


def write_report(result: Mapping[str, Any]) -> None:
    markdown = "## Routing\n\n" + report(result)
    log(f"wrote {write_section(NAME, markdown)}")


# =========================================================================== main

def accuracy(run: RegionRun) -> None:
    """Our routes against OSRM CH's on every pair, and on the pairs OSRM did not move."""
    osrm = run.result.get("osrm") or {}
    ch = osrm.get("CH")
    if not ch:
        return
    snap = ch["snap_m"]
    same = [s is not None and s <= SAME_SNAP_M for s in snap]

    def only(values: Sequence[float | None]) -> list[float | None]:
        return [v if keep else None for v, keep in zip(values, same)]

    acc: dict[str, Any] = {
        "all": {"distance": ratio_stats(run.route_distance, ch["distance_m"]),
                "duration": ratio_stats(run.route_duration, ch["duration_s"])},
        "same_snap": {"distance": ratio_stats(only(run.route_distance), ch["distance_m"]),
                      "duration": ratio_stats(only(run.route_duration), ch["duration_s"])},
        "osrm_snapped_farther": sum(1 for s in snap if s is not None and s > SAME_SNAP_M)}
    mld = osrm.get("MLD")
    if mld:
        acc["ch_vs_mld_distance_differ"] = sum(
            1 for a, b in zip(ch["distance_m"], mld["distance_m"])
            if (a is None) != (b is None) or (a is not None and b is not None
                                              and abs(a - b) > 0.15))
    osrm["accuracy"] = acc
    for part in ("all", "same_snap"):
        d, t = acc[part]["distance"], acc[part]["duration"]
        log(f"  {run.name} ({part}): {d['n']} pairs; distance |ours/OSRM-1| median "
            f"{d['median']:.2%}, p95 {d['p95']:.2%}, within 1% {d['within_1pct']:.0%}, 5% "
            f"{d['within_5pct']:.0%}; duration median {t['median']:.1%}, p95 {t['p95']:.1%}")


def strip_for_json(run: RegionRun) -> None:
    """Per-pair answers (ours and OSRM's) go to the results as lists side by side, to 0.1
    m / 0.1 s (OSRM's own precision)."""
    def rounded(values: Sequence[float | None]) -> list[float | None]:
        return [None if v is None else round(v, 1) for v in values]

    osrm = run.result.get("osrm") or {}
    per_pair: dict[str, Any] = {"ours_distance_m": rounded(run.route_distance),
                                "ours_duration_s": rounded(run.route_duration)}
    for algo in ("CH", "MLD"):
        if algo in osrm:
            per_pair[f"osrm_{algo}_distance_m"] = osrm[algo].pop("distance_m")
            per_pair[f"osrm_{algo}_duration_s"] = osrm[algo].pop("duration_s")
            per_pair[f"osrm_{algo}_snap_m"] = rounded(osrm[algo].pop("snap_m"))
    run.result["per_pair"] = per_pair


def runtime_ceiling() -> dict[str, Any]:
    try:
        runtime = read_results("runtime")
    except (OSError, ValueError):
        return {}
    cells = ceiling_cells(runtime)
    return {"source": "bench/results/runtime.json",
            "date": runtime.get("machine", {}).get("date", ""),
            "calls_per_s": {str(c): cell["calls_per_s"] for c, cell in sorted(cells.items())}}


def amain(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": NAME, "machine": machine_info(),
        "settings": {"pairs": args.pairs, "baseline_pairs": args.baseline_pairs,
                     "regions": args.regions, "seed": args.seed,
                     "concurrency": args.concurrency, "duration": args.duration,
                     "warmup": args.warmup, "rounds": args.rounds,
                     "matrix_sizes": args.matrix_sizes, "matrix_runs": args.matrix_runs,
                     "traffic_share": args.traffic_share, "traffic_runs": args.traffic_runs,
                     "quick": args.quick},
        "regions": {}}
    datasets = [REGION_FILES[r][0] for r in args.regions]
    log(f"[1/7] data: {', '.join(datasets)} (geoplex data fetch)...")
    fetched = data.fetch(datasets, progress=log)
    paths = {r: fetched[REGION_FILES[r][0]][REGION_FILES[r][1]] for r in args.regions}
    work_ctx: contextlib.AbstractContextManager[str]
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
        work_ctx = contextlib.nullcontext(args.work_dir)
    else:
        work_ctx = tempfile.TemporaryDirectory(prefix="geoplex-bench-routing-")
    with work_ctx as work_name:
        work = Path(work_name)
        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)  # every preprocessing step from scratch
        log("[2/7] our preprocessing (read, build_graph, snapping index, CCH, customize)...")
        runs: list[RegionRun] = []
        for name in args.regions:
            region, info = preprocess(name, paths[name], cache, args.customize_runs)
            runs.append(RegionRun(name, paths[name], region, info))
        app = app_for({r.name: r.region for r in runs}, cache)
        try:
            for k, run in enumerate(runs):
                rng = np.random.default_rng(args.seed + k)
                cch = run.region.modes[MODE].free.metric
                run.pairs = pick_pairs(rng, run.graph, args.pairs,
                                       lambda s, t: cch.query(s, t)[0] < UNREACHABLE)
                lat, lon = run.graph.seg_mid()
                run.points = [(float(lat[e]), float(lon[e]), float(lat[f]), float(lon[f]))
                              for e, f in run.pairs]
                run.result["pairs"] = len(run.pairs)
                log(f"[3/7] {run.name}: {len(run.pairs)} routable pairs; engine query times...")
                engine_times(run, args.baseline_pairs)
                log(f"[4/7] {run.name}: time per route, matrices, traffic update (ours)...")
                route_times(run, app)
                matrix_times(run, app, args.matrix_sizes, args.matrix_runs, rng)
                traffic_times(run, args.traffic_share, args.traffic_runs, rng)
        finally:
            asyncio.run(app.stop())  # its worker pool (nothing was started)

        log("[5/7] OSRM (osrm-bindings in a Python 3.12 venv)...")
        tools: OsrmTools | None = None
        unavailable = ""
        if args.no_osrm:
            unavailable = "--no-osrm"
        else:
            try:
                tools = osrm_tools(Path(args.osrm_venv), args.osrm_python)
                log(f"  OSRM tools: {tools.bin_dir}")
            except (StepFailed, OSError, subprocess.SubprocessError) as exc:
                unavailable = str(exc)
                log(f"  OSRM unavailable: {unavailable}")
        for run in runs:
            if tools is None:
                run.result["osrm"] = {"errors": {}, "unavailable": unavailable}
                continue
            log(f"  {run.name}:")
            try:
                node_ids = osrm_node_ids(run)
            except (OSError, RuntimeError) as exc:
                log(f"    node ids: {exc}")
                node_ids = None
            run.result["osrm"] = osrm_region(run, tools, work, args, node_ids)
        log("[6/7] accuracy against OSRM...")
        for run in runs:
            accuracy(run)
            strip_for_json(run)
            result["regions"][run.name] = run.result

        log("[7/7] end to end over gRPC...")
        result["runtime_ceiling"] = runtime_ceiling()
        if args.no_e2e:
            result["e2e"] = []
        else:
            result["e2e"] = asyncio.run(e2e(runs, args, cache))
        if args.keep_work:
            kept = Path(tempfile.mkdtemp(prefix="geoplex-bench-routing-kept-"))
            shutil.copytree(work / "osrm", kept / "osrm", dirs_exist_ok=True)
            log(f"  OSRM work files kept in {kept}")
    result["elapsed_s"] = time.perf_counter() - started
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    return result


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1000,
                        help="random routable pairs per region (CCH, routes, OSRM)")
    parser.add_argument("--baseline-pairs", type=int, default=100,
                        help="of those, how many the pure-Python engines and networkx run")
    parser.add_argument("--regions", default="gothenburg,helsinki",
                        help="comma-separated, of " + ", ".join(REGION_FILES))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--concurrency", type=_int_list, default=[1, 16, 64],
                        help="end-to-end concurrencies, e.g. '1,16,64'")
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds per end-to-end round")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2,
                        help="interleaved end-to-end rounds (route, ceiling); the best is kept")
    parser.add_argument("--matrix-sizes", type=_int_list, default=[25, 100])
    parser.add_argument("--matrix-runs", type=int, default=5)
    parser.add_argument("--customize-runs", type=int, default=5)
    parser.add_argument("--traffic-share", type=float, default=0.01,
                        help="share of directed segments a traffic update changes")
    parser.add_argument("--traffic-runs", type=int, default=5,
                        help="timed traffic updates of ours")
    parser.add_argument("--traffic-runs-osrm", type=int, default=3,
                        help="timed osrm-customize --segment-speed-file runs")
    parser.add_argument("--osrm-venv", default=str(OSRM_VENV),
                        help="where the Python 3.12 venv with osrm-bindings lives (made once; "
                             "default %(default)s)")
    parser.add_argument("--osrm-python", default=None,
                        help="a Python 3.12+ to make that venv with (default: python3.12 on "
                             "PATH, else ~/.pyenv/versions/3.12*)")
    parser.add_argument("--no-osrm", action="store_true", help="skip the OSRM peer")
    parser.add_argument("--no-e2e", action="store_true", help="skip the gRPC measurement")
    parser.add_argument("--work-dir", default=None,
                        help="keep graphs and OSRM files here (default: a temporary dir)")
    parser.add_argument("--keep-work", action="store_true",
                        help="copy the OSRM files and logs somewhere to look at afterwards")
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke run: 40 pairs, 4 baseline, short e2e; writes nothing")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: re-render the BENCHMARKS.md section from "
                             "bench/results/routing.json")
    args = parser.parse_args()
    if args.report_only:
        write_report(read_results(NAME))
        return
    args.regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    unknown = [r for r in args.regions if r not in REGION_FILES]
    if unknown or not args.regions:
        parser.error(f"--regions: unknown {', '.join(unknown)}; expected some of "
                     + ", ".join(REGION_FILES))
    if args.quick:
        args.pairs, args.baseline_pairs, args.no_write = 40, 4, True
        args.duration, args.warmup, args.rounds = 1.0, 0.3, 1
        args.concurrency = [1, 16]
        args.matrix_sizes, args.matrix_runs = [5, 10], 2
        args.customize_runs, args.traffic_runs, args.traffic_runs_osrm = 2, 2, 1
    with contextlib.suppress(KeyboardInterrupt):
        result = amain(args)
        print("\n" + report(result), flush=True)
        log(f"run took {result['elapsed_s'] / 60:.1f} min")
        if not args.no_write:
            log(f"wrote {write_results(NAME, result)}")
            write_report(result)


if __name__ == "__main__":
    main()
