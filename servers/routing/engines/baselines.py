"""The design's algorithms, kept as baselines: Dijkstra and bidirectional A*.

Both run in Python over the same CSR arrays as the production kernel, so the
property tests can hold the kernel to them exactly and the benchmark can show
what the speed-up buys. They are far too slow to serve (hundreds of
milliseconds per query on a city); nothing in the request path uses them.
"""

from __future__ import annotations

import heapq

import numpy as np

from geoplex.servers._runtime.geo import haversine_pairs

from ..graph import RoadGraph
from ..ports import I32, I64, U32, UNREACHABLE


class DijkstraEngine:
    name = "dijkstra"

    def __init__(self, graph: RoadGraph) -> None:
        self.graph = graph

    def customize(self, weights: U32) -> DijkstraMetric:
        return DijkstraMetric(self.graph, weights)


class DijkstraMetric:
    """Textbook Dijkstra with a binary heap and lazy deletion."""

    def __init__(self, graph: RoadGraph, weights: U32) -> None:
        self.first = graph.arc_first.tolist()
        self.head = graph.arc_head.tolist()
        self.weight = weights.astype(np.int64).tolist()
        self.tail = graph.arc_tail.tolist()
        self.n = graph.seg_count

    def one_to_all(self, source: int, target: int = -1) -> tuple[list[int], list[int]]:
        """Distances from ``source`` (stopping early at ``target``) and the arc each came by."""
        dist = [UNREACHABLE] * self.n
        via = [-1] * self.n
        dist[source] = 0
        heap = [(0, source)]
        first, head, weight = self.first, self.head, self.weight
        while heap:
            d, u = heapq.heappop(heap)
            if d > dist[u]:
                continue
            if u == target:
                break
            for a in range(first[u], first[u + 1]):
                v = head[a]
                nd = d + weight[a]
                if nd < dist[v]:
                    dist[v] = nd
                    via[v] = a
                    heapq.heappush(heap, (nd, v))
        return dist, via

    def query(self, source: int, target: int) -> tuple[int, I32]:
        dist, via = self.one_to_all(source, target)
        if dist[target] >= UNREACHABLE:
            return UNREACHABLE, np.zeros(0, dtype=np.int32)
        arcs: list[int] = []
        v = target
        while v != source:
            a = via[v]
            arcs.append(a)
            v = self.tail[a]
        return dist[target], np.asarray(arcs[::-1], dtype=np.int32)

    def many_to_many(self, sources: I32, targets: I32) -> I64:
        out = np.full((len(sources), len(targets)), UNREACHABLE, dtype=np.int64)
        for i, s in enumerate(sources.tolist()):
            dist, _ = self.one_to_all(s)
            out[i] = np.asarray(dist, dtype=np.int64)[targets]
        return out


class BidirectionalAStarEngine:
    """Bidirectional A* with the average of the two straight-line potentials.

    The potentials are a segment end's great-circle distance to the target (and
    from the source) at the graph's fastest pace (the least milliseconds per
    metre of any segment); every arc costs at least its segment's length at that
    pace, so both potentials are consistent and the search stays exact.
    """

    name = "bidirectional-astar"

    def __init__(self, graph: RoadGraph) -> None:
        self.graph = graph
        pace = graph.seg_ms / np.maximum(graph.seg_length_m, 1e-9)
        self.ms_per_m = float(pace.min()) * (1 - 1e-9)

    def customize(self, weights: U32) -> BidirectionalAStarMetric:
        return BidirectionalAStarMetric(self.graph, weights, self.ms_per_m)


class BidirectionalAStarMetric:
    def __init__(self, graph: RoadGraph, weights: U32, ms_per_m: float) -> None:
        g = graph
        self.first = g.arc_first.tolist()
        self.head = g.arc_head.tolist()
        self.tail = g.arc_tail.tolist()
        self.weight = weights.astype(np.int64).tolist()
        by_head = np.argsort(g.arc_head, kind="stable")
        rfirst = np.zeros(g.seg_count + 1, dtype=np.int64)
        np.cumsum(np.bincount(g.arc_head, minlength=g.seg_count), out=rfirst[1:])
        self.rfirst = rfirst.tolist()
        self.rarc = by_head.tolist()
        self.end_lat = g.node_lat[g.seg_head]
        self.end_lon = g.node_lon[g.seg_head]
        self.ms_per_m = ms_per_m
        self.n = g.seg_count

    def _potential(self, source: int, target: int) -> list[float]:
        """Forward potential p(v) = (to_target(v) - from_source(v)) / 2, in ms."""
        lat, lon = self.end_lat, self.end_lon
        to_t = haversine_pairs(lat, lon, np.full(self.n, lat[target]), np.full(self.n, lon[target]))
        from_s = haversine_pairs(np.full(self.n, lat[source]), np.full(self.n, lon[source]),
                                 lat, lon)
        potential: list[float] = ((to_t - from_s) * (0.5 * self.ms_per_m)).tolist()
        return potential

    def query(self, source: int, target: int) -> tuple[int, I32]:
        if source == target:
            return 0, np.zeros(0, dtype=np.int32)
        p = self._potential(source, target)
        inf = UNREACHABLE
        dist_f: dict[int, int] = {source: 0}
        dist_b: dict[int, int] = {target: 0}
        via_f: dict[int, int] = {}
        via_b: dict[int, int] = {}
        done_f: set[int] = set()
        done_b: set[int] = set()
        heap_f: list[tuple[float, int]] = [(p[source], source)]
        heap_b: list[tuple[float, int]] = [(-p[target], target)]
        best, meet = inf, -1
        first, head, weight = self.first, self.head, self.weight
        rfirst, rarc, tail = self.rfirst, self.rarc, self.tail
        while heap_f and heap_b:
            if heap_f[0][0] + heap_b[0][0] >= best:
                break
            if heap_f[0][0] <= heap_b[0][0]:
                _, u = heapq.heappop(heap_f)
                if u in done_f:
                    continue
                done_f.add(u)
                du = dist_f[u]
                for a in range(first[u], first[u + 1]):
                    v = head[a]
                    nd = du + weight[a]
                    if nd < dist_f.get(v, inf):
                        dist_f[v] = nd
                        via_f[v] = a
                        heapq.heappush(heap_f, (nd + p[v], v))
                        if v in dist_b and nd + dist_b[v] < best:
                            best, meet = nd + dist_b[v], v
            else:
                _, u = heapq.heappop(heap_b)
                if u in done_b:
                    continue
                done_b.add(u)
                du = dist_b[u]
                for i in range(rfirst[u], rfirst[u + 1]):
                    a = rarc[i]
                    v = tail[a]
                    nd = du + weight[a]
                    if nd < dist_b.get(v, inf):
                        dist_b[v] = nd
                        via_b[v] = a
                        heapq.heappush(heap_b, (nd - p[v], v))
                        if v in dist_f and nd + dist_f[v] < best:
                            best, meet = nd + dist_f[v], v
        if meet < 0:
            return UNREACHABLE, np.zeros(0, dtype=np.int32)
        arcs: list[int] = []
        v = meet
        while v != source:
            a = via_f[v]
            arcs.append(a)
            v = tail[a]
        arcs.reverse()
        v = meet
        while v != target:
            a = via_b[v]
            arcs.append(a)
            v = head[a]
        return best, np.asarray(arcs, dtype=np.int32)

    def many_to_many(self, sources: I32, targets: I32) -> I64:
        out = np.full((len(sources), len(targets)), UNREACHABLE, dtype=np.int64)
        for i, s in enumerate(sources.tolist()):
            for j, t in enumerate(targets.tolist()):
                out[i, j] = self.query(s, t)[0]
        return out
