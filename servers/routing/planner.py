"""From two snapped points to a path: mid-segment starts and ends, on one metric.

A route starts part-way along a segment and ends part-way along another. With
the graph's convention (a distance runs from the *end* of one segment to the
*end* of another), the cost of going from fraction ``s`` of segment ``e`` to
fraction ``t`` of segment ``f`` is::

    (1 - s) * ms[e] + dist(e, f) - (1 - t) * ms[f]

for every direction the two points can be left and reached by (a two-way
street gives two), taking the cheapest. Both points on one segment with the
target ahead is the segment alone; with the target behind, the route must
leave the segment and come back round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoplex.servers._runtime.geo import haversine_pairs

from .graph import F64, I32, U32, RoadGraph
from .ports import UNREACHABLE, Metric
from .snapping import Snap


@dataclass(frozen=True, slots=True)
class Weighting:
    """One customized metric and the numbers it was made from."""

    metric: Metric
    seg_ms: U32            # segment durations under this metric (traffic applied)
    seg_weight: U32        # segment weights (durations times weight factors)
    arc_weights: U32       # seg_weight[arc_head] + turn costs + penalties, INF where avoided
    version: int           # traffic version it reflects


@dataclass(frozen=True, slots=True)
class Path:
    cost_ms: float
    segments: I32          # in travel order
    arcs: I32              # the turns between them (len(segments) - 1)
    start: float           # fraction along segments[0] where it starts
    end: float             # fraction along segments[-1] where it ends


def shortest_path(graph: RoadGraph, weighting: Weighting, origin: Snap,
                  destination: Snap) -> Path | None:
    """The cheapest way from ``origin`` to ``destination`` over every direction either
    point may be left or reached by: one many-to-many over the (up to 2 x 2) candidate
    segments picks the pair, one query unpacks its path."""
    ms = weighting.seg_weight
    sources = origin.candidates()
    targets = destination.candidates()
    table = weighting.metric.many_to_many(np.array([e for e, _ in sources], dtype=np.int32),
                                          np.array([f for f, _ in targets], dtype=np.int32))
    best: tuple[float, int, float, int, float] | None = None  # cost, e, s, f, t
    round_trip: tuple[int, I32] | None = None  # the search behind-on-one-segment needed
    for a, (e, s) in enumerate(sources):
        for b, (f, t) in enumerate(targets):
            found: tuple[int, I32] | None = None
            if e == f:
                if t >= s:
                    cost = (t - s) * float(ms[e])
                else:  # behind on the same segment: round and back
                    found = _between(graph, weighting, e, f)
                    if found is None:
                        continue
                    cost = (1 - s) * float(ms[e]) + found[0] - (1 - t) * float(ms[f])
            elif table[a, b] >= UNREACHABLE:
                continue
            else:
                cost = (1 - s) * float(ms[e]) + float(table[a, b]) - (1 - t) * float(ms[f])
            if best is None or cost < best[0]:
                best, round_trip = (cost, e, s, f, t), found
    if best is None:
        return None
    cost, e, s, f, t = best
    return path_from(graph, weighting, e, s, f, t, cost, round_trip)


def path_from(graph: RoadGraph, weighting: Weighting, e: int, s: float, f: int, t: float,
              cost: float = 0.0, found: tuple[int, I32] | None = None) -> Path | None:
    """The path from fraction ``s`` of segment ``e`` to fraction ``t`` of ``f`` (``found``:
    the search between them, if already made)."""
    if e == f and t >= s:
        return Path(cost, np.array([e], dtype=np.int32), np.zeros(0, dtype=np.int32), s, t)
    found = found or _between(graph, weighting, e, f)
    if found is None:
        return None
    arcs = found[1]
    segments = np.concatenate([[e], graph.arc_head[arcs]]).astype(np.int32)
    return Path(cost, segments, arcs, s, t)


def _between(graph: RoadGraph, weighting: Weighting, e: int, f: int) -> tuple[int, I32] | None:
    """Distance and arcs from the end of ``e`` to the end of ``f`` (round again if e == f)."""
    if e != f:
        dist, arcs = weighting.metric.query(e, f)
        return None if dist >= UNREACHABLE else (dist, arcs)
    best: tuple[int, I32] | None = None
    for a in range(int(graph.arc_first[e]), int(graph.arc_first[e + 1])):
        w = int(weighting.arc_weights[a])
        if w >= UNREACHABLE:
            continue
        dist, arcs = weighting.metric.query(int(graph.arc_head[a]), f)
        if dist >= UNREACHABLE:
            continue
        if best is None or w + dist < best[0]:
            best = (w + dist, np.concatenate([[a], arcs]).astype(np.int32))
    return best


def driven(per_segment: np.ndarray, path: Path) -> F64:
    """``per_segment``'s value for each of the path's segments, scaled by the part of it
    the path drives (all of it, but from ``start`` on the first and to ``end`` on the
    last)."""
    values = per_segment[path.segments].astype(np.float64)
    if values.size == 1:
        values[0] *= path.end - path.start
    else:
        values[0] *= 1 - path.start
        values[-1] *= path.end
    return values


def path_length_m(graph: RoadGraph, path: Path) -> float:
    return float(driven(graph.seg_length_m, path).sum())


def path_duration_ms(graph: RoadGraph, seg_ms: U32, path: Path) -> float:
    """The path's duration under segment durations ``seg_ms`` (turn costs included)."""
    return float(driven(seg_ms, path).sum()) + float(graph.arc_turn_ms[path.arcs].sum())


def path_points(graph: RoadGraph, path: Path, origin: Snap,
                destination: Snap) -> tuple[F64, F64]:
    """Latitudes and longitudes of the path's polyline, snapped point to snapped point."""
    inner = graph.seg_head[path.segments[:-1]]
    lats = np.concatenate([[origin.lat], graph.node_lat[inner], [destination.lat]])
    lons = np.concatenate([[origin.lon], graph.node_lon[inner], [destination.lon]])
    return lats, lons


def alternatives_for(graph: RoadGraph, weighting: Weighting, origin: Snap, destination: Snap,
                     best: Path, count: int, *, max_stretch: float = 1.3,
                     max_share: float = 0.8, samples: int = 256) -> list[Path]:
    """Up to ``count`` routes through a via segment, each at most ``max_stretch`` times
    the best route's duration and sharing at most ``max_share`` of its length with the
    best route and with every alternative already taken (the via-node method of
    Abraham et al., "Alternative routes in road networks", 2013).

    Via candidates are segments inside the ellipse around the two points whose
    size is the best route's length times ``max_stretch``; their distances from the
    origin and to the destination come from two many-to-many queries.
    """
    ms = weighting.seg_weight
    lat, lon = graph.seg_mid()
    length_best = path_length_m(graph, best)
    reach = (haversine_pairs(lat, lon, np.full(lat.size, origin.lat), np.full(lat.size, origin.lon))
             + haversine_pairs(lat, lon, np.full(lat.size, destination.lat),
                               np.full(lat.size, destination.lon)))
    inside = reach <= max_stretch * length_best
    inside[best.segments] = False
    ids = np.flatnonzero(inside)
    if ids.size == 0:
        return []
    if ids.size > samples:
        rng = np.random.default_rng(int(best.cost_ms) & 0xFFFFFFFF)
        ids = np.sort(rng.choice(ids, size=samples, replace=False))
    via = ids.astype(np.int32)
    sources = origin.candidates()
    targets = destination.candidates()
    src = np.array([e for e, _ in sources], dtype=np.int32)
    dst = np.array([f for f, _ in targets], dtype=np.int32)
    lead = np.array([(1 - s) * float(ms[e]) for e, s in sources])
    tail = np.array([(1 - t) * float(ms[f]) for f, t in targets])
    to_via = weighting.metric.many_to_many(src, via).astype(np.float64)
    from_via = weighting.metric.many_to_many(via, dst).astype(np.float64)
    to_via[to_via >= UNREACHABLE] = np.inf
    from_via[from_via >= UNREACHABLE] = np.inf
    first = lead[:, None] + to_via            # sources x via
    second = from_via - tail[None, :]         # via x targets
    a = first.argmin(axis=0)
    b = second.argmin(axis=1)
    total = first[a, np.arange(via.size)] + second[np.arange(via.size), b]
    ok = np.flatnonzero(total <= max_stretch * best.cost_ms)
    taken: list[Path] = []
    lengths = graph.seg_length_m
    kept_sets = [set(best.segments.tolist())]
    for k in ok[np.argsort(total[ok])][:40].tolist():
        (e, s), (f, t), v = sources[int(a[k])], targets[int(b[k])], int(via[k])
        d1, arcs1 = weighting.metric.query(e, v)
        d2, arcs2 = weighting.metric.query(v, f)
        if d1 >= UNREACHABLE or d2 >= UNREACHABLE:
            continue
        arcs = np.concatenate([arcs1, arcs2]).astype(np.int32)
        segments = np.concatenate([[e], graph.arc_head[arcs]]).astype(np.int32)
        if not _simple(graph, segments):
            continue  # it doubles back over a road: not a route anyone would take
        candidate = Path(float(total[k]), segments, arcs, s, t)
        own = path_length_m(graph, candidate)
        seg_set = set(segments.tolist())
        if any(float(lengths[list(seg_set & other)].sum()) > max_share * own
               for other in kept_sets):
            continue
        taken.append(candidate)
        kept_sets.append(seg_set)
        if len(taken) == count:
            break
    return taken


def _simple(graph: RoadGraph, segments: I32) -> bool:
    """No road (in either direction) used twice."""
    a, b = graph.seg_tail[segments], graph.seg_head[segments]
    n = graph.node_lat.shape[0]
    links = np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b)
    return bool(np.unique(links).size == links.size)
