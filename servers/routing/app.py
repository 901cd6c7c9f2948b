"""The routing service's operations on loaded regions.

A plain route (well under a millisecond) runs on the event loop: handing it to a thread costs more
than it takes. Everything longer runs on a worker thread: matrices, alternatives, a
route that avoids road classes (its metric may need customizing first), traffic
customization, snapping many points; so a slow matrix never stalls the loop's other
calls. A query reads one
:class:`~geoplex.servers.routing.planner.Weighting` reference at its start and
uses only that, so a traffic swap mid-query cannot mix two metrics.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from geoplex.servers._runtime.errors import InvalidArgument, NotFound

from . import domain, encoded_polyline
from .config import RoutingConfig
from .domain import (MatrixAnswer, MatrixCell, NoRoadNearby, NoRoute, Point, RouteAnswer,
                     RouteQuery, SnappedPoint, TrafficAnswer, TrafficObservation, TrafficQuery,
                     TrafficSegment)
from .guidance import Step
from .matching import MatchResult, TracePoint, match
from .planner import (Path, Weighting, alternatives_for, driven, path_duration_ms, path_from,
                      path_length_m, shortest_path)
from .ports import UNREACHABLE
from .regions import ModeGraph, Region
from .snapping import Snap

if TYPE_CHECKING:
    from geoplex.servers._runtime.metrics import Readings, ServiceMetrics

T = TypeVar("T")
DEGREES_PER_M = 1 / 111_000.0


class RoutingApp:
    def __init__(self, regions: dict[str, Region], config: RoutingConfig) -> None:
        self.regions = regions
        self.config = config
        # 0 workers: run queries on the event loop itself (for measuring the hand-off)
        self._pool = (ThreadPoolExecutor(max_workers=config.workers,
                                         thread_name_prefix="routing")
                      if config.workers > 0 else None)
        self._refresher: asyncio.Task[None] | None = None
        # how far outside a region's box a point may still snap into it
        self._margin_deg = config.max_snap_m * DEGREES_PER_M * 2

    def instruments(self, metrics: ServiceMetrics) -> None:
        """The service's metrics (ServiceSpec.instruments): customizations per region and
        mode (queries are the runtime's per-RPC histogram)."""
        def customizations() -> Readings:
            return [(count, {"region": region.name, "mode": graph.mode, "kind": kind})
                    for region in self.regions.values()
                    for graph in region.modes.values()
                    for kind, count in (("traffic", graph.traffic_customizations),
                                        ("derived", graph.derived_customizations))]

        metrics.counter("geoplex.routing.customizations", customizations,
                        unit="{customization}",
                        description="Metrics customized since start: live traffic (an update "
                                    "or its fading) and derived (avoided road classes, plain "
                                    "durations)")

    async def start(self) -> None:
        self._refresher = asyncio.create_task(self._refresh_forever(), name="traffic-refresh")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            try:
                await self._refresher
            except asyncio.CancelledError:
                pass
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._pool is None:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    # -- lookups ----------------------------------------------------------------------

    def _region_of(self, point: Point, field: str) -> Region:
        for region in self.regions.values():
            if region.covers(point.lat, point.lon, self._margin_deg):
                return region
        raise NoRoadNearby(field, None, self.config.max_snap_m)

    def _one_region(self, points: Sequence[Point]) -> Region:
        """The region of ``points[0]``, which every other point must be in too."""
        region = self._region_of(points[0], "points[0]")
        for i, p in enumerate(points[1:], start=1):
            if not region.covers(p.lat, p.lon, self._margin_deg):
                raise InvalidArgument(f"points[{i}]", "is in another region than points[0]")
        return region

    def _mode(self, region: Region, mode: str) -> ModeGraph:
        found = region.modes.get(mode)
        if found is None:
            raise InvalidArgument("travel_mode", f"not served in region {region.name}",
                                  allowed=sorted(region.modes))
        return found

    def _snap(self, graph: ModeGraph, point: Point, field: str) -> Snap:
        snap = graph.index.snap(point.lat, point.lon)
        if snap.distance_m > self.config.max_snap_m:
            raise NoRoadNearby(field, snap.distance_m, self.config.max_snap_m)
        return snap

    def _live(self, traffic_aware: bool, departure: float | None, now: float) -> bool:
        if not traffic_aware:
            return False
        return departure is None or departure - now <= self.config.traffic_valid_s

    # -- ComputeRoute -------------------------------------------------------------------

    async def route(self, query: RouteQuery) -> RouteAnswer:
        region = self._region_of(query.origin, "origin")
        other = self._region_of(query.destination, "destination")
        if other is not region:
            raise NoRoute("origin and destination are in different regions")
        graph = self._mode(region, query.mode)
        if not query.alternatives and not query.avoid:
            # a plain route is ~0.5 ms of work: handing it to a thread costs more than
            # it takes (docs/architecture.md §8, "Where the work runs"), so it runs here
            return self._route(region, graph, query)
        return await self._run(lambda: self._route(region, graph, query))

    def _route(self, region: Region, graph: ModeGraph, query: RouteQuery) -> RouteAnswer:
        origin = self._snap(graph, query.origin, "origin")
        destination = self._snap(graph, query.destination, "destination")
        live = self._live(query.traffic_aware, query.departure_time, time.time())
        weighting = graph.weighting(live, query.avoid)
        best = shortest_path(graph.graph, weighting, origin, destination)
        if best is None or best.cost_ms >= UNREACHABLE:
            raise NoRoute("nothing connects these points"
                          + (" while avoiding the requested roads" if query.avoid else ""))
        paths = [best]
        if query.alternatives:
            paths += alternatives_for(graph.graph, weighting, origin, destination, best,
                                      query.alternatives)
        routes = [self._assemble(graph, weighting, p, origin, destination,
                                 query.include_segments) for p in paths]
        return RouteAnswer(region.name, routes, self._snapped(graph, origin),
                           self._snapped(graph, destination), weighting.version)

    def _assemble(self, graph: ModeGraph, weighting: Weighting, path: Path, origin: Snap,
                  destination: Snap, include_segments: bool = False) -> domain.Route:
        g = graph.graph
        start, end = (origin.lat, origin.lon), (destination.lat, destination.lon)
        steps = graph.guide.steps(weighting.seg_ms, path, start, end)
        static = path_duration_ms(g, g.seg_ms, path) / 1000.0
        duration = path_duration_ms(g, weighting.seg_ms, path) / 1000.0
        polyline = graph.encoder.path(path.segments, start, end)
        if not include_segments:
            return domain.Route(path_length_m(g, path), duration, static, polyline, steps,
                                _summary(steps))
        segs = path.segments
        free_kmh = g.seg_length_m[segs] / (np.maximum(g.seg_ms[segs], 1) / 1000.0) * 3.6
        return domain.Route(path_length_m(g, path), duration, static, polyline, steps,
                            _summary(steps), tuple(segs.tolist()),
                            tuple(driven(g.seg_length_m, path).tolist()),
                            tuple(free_kmh.tolist()))

    def _snapped(self, graph: ModeGraph, snap: Snap) -> SnappedPoint:
        g = graph.graph
        segs = tuple(s for s in (snap.forward, snap.backward) if s >= 0)
        way = int(g.seg_way[segs[0]])
        return SnappedPoint(snap.lat, snap.lon, snap.distance_m, g.way_names[way], segs,
                            int(g.way_ids[way]))

    # -- SnapToRoads ------------------------------------------------------------------------

    async def snap(self, points: Sequence[Point], mode: str) -> tuple[str, list[SnappedPoint]]:
        region = self._one_region(points)
        graph = self._mode(region, mode)

        def work() -> list[SnappedPoint]:
            return [self._snapped(graph, self._snap(graph, p, f"points[{i}]"))
                    for i, p in enumerate(points)]
        return region.name, await self._run(work)

    # -- MatchTrace -----------------------------------------------------------------------

    async def match_trace(self, trace: Sequence[TracePoint], mode: str
                          ) -> tuple[str, MatchResult, ModeGraph]:
        region = self._one_region([Point(p.lat, p.lon) for p in trace])
        graph = self._mode(region, mode)

        def work() -> MatchResult:
            return match(graph.graph, graph.index, graph.distances.weighting(), trace)
        return region.name, await self._run(work), graph

    # -- ComputeRouteMatrix ----------------------------------------------------------------------

    async def matrix(self, origins: Sequence[Point], destinations: Sequence[Point], mode: str,
                     traffic_aware: bool, durations_only: bool = False) -> MatrixAnswer:
        region = self._region_of(origins[0], "origins[0]")
        graph = self._mode(region, mode)
        return await self._run(lambda: self._matrix(region, graph, origins, destinations,
                                                    traffic_aware, durations_only))

    def _matrix(self, region: Region, graph: ModeGraph, origins: Sequence[Point],
                destinations: Sequence[Point], traffic_aware: bool,
                durations_only: bool = False) -> MatrixAnswer:
        # durations alone: the fastest times, from one many-to-many on a metric of plain
        # durations; with distances: the routes ComputeRoute would take, each unpacked
        weighting = graph.weighting(self._live(traffic_aware, None, time.time()),
                                    fastest=durations_only)
        g, ms, weight = graph.graph, weighting.seg_ms, weighting.seg_weight
        src = [self._try_snap(region, graph, p) for p in origins]
        dst = [self._try_snap(region, graph, p) for p in destinations]
        # every (segment, fraction) a point can be left or reached by, then one
        # many-to-many over all of them
        src_c = [(i, e, s) for i, snap in enumerate(src) if snap for e, s in snap.candidates()]
        dst_c = [(j, f, t) for j, snap in enumerate(dst) if snap for f, t in snap.candidates()]
        best = np.full((len(origins), len(destinations)), np.inf)
        pick: dict[tuple[int, int], tuple[int, float, int, float]] = {}
        if src_c and dst_c:
            table = weighting.metric.many_to_many(
                np.array([e for _, e, _ in src_c], dtype=np.int32),
                np.array([f for _, f, _ in dst_c], dtype=np.int32)).astype(np.float64)
            table[table >= UNREACHABLE] = np.inf
            lead = np.array([(1 - s) * float(weight[e]) for _, e, s in src_c])
            tail = np.array([(1 - t) * float(weight[f]) for _, f, t in dst_c])
            cost = lead[:, None] + table - tail[None, :]
            for a, (i, e, s) in enumerate(src_c):
                for b, (j, f, t) in enumerate(dst_c):
                    c = cost[a, b]
                    if e == f:
                        c = (t - s) * float(weight[e]) if t >= s else np.inf  # behind: below
                    if c < best[i, j]:
                        best[i, j] = c
                        pick[(i, j)] = (e, s, f, t)
        rows: list[list[MatrixCell]] = []
        for i in range(len(origins)):
            row = []
            for j in range(len(destinations)):
                origin, destination = src[i], dst[j]
                if origin is None or destination is None:
                    row.append(MatrixCell("no_road_nearby"))
                    continue
                chosen = pick.get((i, j))
                if chosen is None:
                    # unreachable, or only round and back onto the same segment
                    path = shortest_path(g, weighting, origin, destination)
                    if path is None or path.cost_ms >= UNREACHABLE:
                        row.append(MatrixCell("no_route"))
                    else:
                        row.append(MatrixCell("ok", path_length_m(g, path),
                                              path_duration_ms(g, ms, path) / 1000.0))
                    continue
                if durations_only:  # weights are durations on this metric
                    row.append(MatrixCell("ok", 0.0, float(best[i, j]) / 1000.0))
                    continue
                # the cell's path: its length, and its duration (its weight may hold
                # factors and penalties that are no time)
                path = path_from(g, weighting, *chosen)
                row.append(MatrixCell("no_route") if path is None else
                           MatrixCell("ok", path_length_m(g, path),
                                      path_duration_ms(g, ms, path) / 1000.0))
            rows.append(row)
        return MatrixAnswer(region.name, rows, weighting.version)

    def _try_snap(self, region: Region, graph: ModeGraph, point: Point) -> Snap | None:
        """The point on a road of this region, or None where ``_snap`` would refuse it."""
        if not region.covers(point.lat, point.lon, self._margin_deg):
            return None
        try:
            return self._snap(graph, point, "")
        except NoRoadNearby:
            return None

    # -- ListRegions -----------------------------------------------------------------------

    def list_regions(self) -> list[domain.RegionInfo]:
        now = time.time()
        out = []
        for region in self.regions.values():
            graphs = [domain.GraphInfo(m.mode, m.node_count,
                                       m.graph.seg_count, m.graph.arc_count,
                                       m.graph.nbytes() + m.index.nbytes(),
                                       m.current.version, m.metric_time,
                                       m.traffic.active_segments(now))
                      for m in region.modes.values()]
            out.append(domain.RegionInfo(region.name, Point(*region.low), Point(*region.high),
                                         region.checksum, graphs))
        return out

    # -- UpdateTraffic ---------------------------------------------------------------------

    async def update_traffic(self, region_name: str, mode: str,
                             observations: Sequence[TrafficObservation],
                             valid_for_s: float) -> tuple[int, int, float]:
        started = time.monotonic()
        region = self._named_region(region_name)
        graph = self._mode(region, mode)
        segments, factors = self._resolve(region, graph, observations)
        now = time.time()

        touched, version = await self._run(
            functools.partial(graph.apply_traffic, segments, factors, now + valid_for_s, now))
        return touched, version, time.monotonic() - started

    def _named_region(self, name: str) -> Region:
        if not name:
            raise InvalidArgument("region", "is required", reason="REQUIRED_FIELD",
                                  allowed=sorted(self.regions))
        region = self.regions.get(name)
        if region is None:
            raise NotFound(f"region: no region named {name!r} is loaded",
                           reason="UNKNOWN_REGION",
                           metadata={"regions": ",".join(sorted(self.regions))})
        return region

    # -- GetTraffic ------------------------------------------------------------------------

    async def traffic(self, query: TrafficQuery) -> TrafficAnswer:
        region = self._named_region(query.region)
        graph = self._mode(region, query.mode)
        return await self._run(lambda: _traffic_in_box(graph, query))

    def _resolve(self, region: Region, graph: ModeGraph,
                 observations: Sequence[TrafficObservation]) -> tuple[np.ndarray, np.ndarray]:
        g = graph.graph
        segs: list[np.ndarray] = []
        facs: list[np.ndarray] = []
        for i, obs in enumerate(observations):
            field = f"observations[{i}]"
            if obs.segment_id is not None:
                if not 0 <= obs.segment_id < g.seg_count:
                    raise InvalidArgument(f"{field}.segment_id",
                                          f"must be in 0..{g.seg_count - 1} for {graph.mode} in "
                                          f"{region.name}")
                ids = np.array([obs.segment_id], dtype=np.int64)
            elif obs.way_id is not None:
                found = graph.segments_of_way(obs.way_id)
                if found is None:
                    raise InvalidArgument(f"{field}.way_id",
                                          f"no road of way {obs.way_id} in {region.name} is "
                                          f"usable by {graph.mode}")
                ids = found
            else:
                raise InvalidArgument(f"{field}.road", "set segment_id or way_id")
            if obs.speed_factor is not None:
                factor = np.full(ids.size, obs.speed_factor)
            elif obs.speed_kmh is not None:
                free_kmh = g.seg_length_m[ids] / (g.seg_ms[ids] / 1000.0) * 3.6
                factor = obs.speed_kmh / np.maximum(free_kmh, 1e-6)
            else:
                raise InvalidArgument(f"{field}.speed", "set speed_factor or speed_kmh")
            segs.append(ids)
            facs.append(factor)
        return np.concatenate(segs), np.concatenate(facs)

    async def _refresh_forever(self) -> None:
        """Re-customize a mode whose traffic moved since its metric was made: observations
        fading back to free flow, or a validity window that ended."""
        while True:
            await asyncio.sleep(self.config.traffic_refresh_s)
            for region in self.regions.values():
                for graph in region.modes.values():
                    now = time.time()
                    if not graph.traffic.changed_between(graph.metric_time, now):
                        continue  # the common case, checked here without a hand-off
                    try:
                        await self._run(functools.partial(graph.refresh_traffic, now))
                    except RuntimeError:  # the pool is shutting down
                        return


def _traffic_in_box(graph: ModeGraph, query: TrafficQuery) -> TrafficAnswer:
    """The segments with at least one end in the box whose live duration (the metric in
    use) differs from free flow, slowest by share of free-flow speed first."""
    g = graph.graph
    weighting = graph.current  # one reference: a swap mid-call cannot mix two metrics
    live_ms, free_ms = weighting.seg_ms, g.seg_ms
    slowed = np.flatnonzero(live_ms != free_ms)
    if slowed.size:
        tail, head = g.seg_tail[slowed], g.seg_head[slowed]
        inside = np.zeros(slowed.size, dtype=bool)
        for node in (tail, head):
            lat, lon = g.node_lat[node], g.node_lon[node]
            inside |= ((query.low.lat <= lat) & (lat <= query.high.lat)
                       & (query.low.lon <= lon) & (lon <= query.high.lon))
        slowed = slowed[inside]
    share = free_ms[slowed].astype(np.float64) / live_ms[slowed].astype(np.float64)
    order = slowed[np.argsort(share, kind="stable")]
    kept = order[:query.max_segments]
    out = []
    for s in kept.tolist():
        tail_node, head_node = int(g.seg_tail[s]), int(g.seg_head[s])
        length = float(g.seg_length_m[s])
        line = encoded_polyline.encode(g.node_lat[[tail_node, head_node]],
                                       g.node_lon[[tail_node, head_node]])
        out.append(TrafficSegment(s, line, length / (int(live_ms[s]) / 1000.0) * 3.6,
                                  length / (int(free_ms[s]) / 1000.0) * 3.6))
    return TrafficAnswer(out, order.size > kept.size, weighting.version)


def _summary(steps: Sequence[Step]) -> str:
    """The two named roads the route follows longest, in the order it meets them."""
    lengths: dict[str, float] = {}
    order: list[str] = []
    for step in steps:
        label = step.ref or step.name
        if not label:
            continue
        if label not in lengths:
            order.append(label)
            lengths[label] = 0.0
        lengths[label] += step.distance_m
    top = sorted(order, key=lambda k: -lengths[k])[:2]
    return ", ".join(k for k in order if k in top)
