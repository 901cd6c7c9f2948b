"""Snap a point onto the nearest usable road segment, mid-segment.

Every road of the graph is a straight *link* between two base nodes (the two
directed segments of a two-way street share one). Points sampled along each
link at most ``SPACING_M`` apart go into a k-d tree (scipy's cKDTree, in local
metres). A query takes the nearest samples, projects the point onto their links
exactly, then looks once more within ``best + SPACING_M / 2``: any link nearer
than the best found has a sample within that radius, so the answer is the true
nearest link, not just the one of the nearest sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from geoplex.servers._runtime.geo import EARTH_RADIUS_M, haversine_m

from .graph import I32, RoadGraph, local_xy

SPACING_M = 10.0
FIRST_LOOK = 16


@dataclass(frozen=True, slots=True)
class Snap:
    """Where a point lands on the road: a link and how far along it (a -> b)."""

    link: int
    fraction: float        # 0 at link_a, 1 at link_b
    lat: float
    lon: float
    distance_m: float      # from the query point to the snapped point
    forward: int           # segment a -> b, or -1 if travel that way is not allowed
    backward: int          # segment b -> a, or -1

    def candidates(self) -> list[tuple[int, float]]:
        """(segment, fraction along that segment) for each direction one may travel."""
        out = []
        if self.forward >= 0:
            out.append((self.forward, self.fraction))
        if self.backward >= 0:
            out.append((self.backward, 1.0 - self.fraction))
        return out


class SegmentIndex:
    def __init__(self, graph: RoadGraph) -> None:
        tail, head = graph.seg_tail, graph.seg_head
        lo = np.minimum(tail, head).astype(np.int64)
        hi = np.maximum(tail, head).astype(np.int64)
        n_nodes = graph.node_lat.shape[0]
        keys, first = np.unique(lo * n_nodes + hi, return_index=True)
        self.link_a = (keys // n_nodes).astype(np.int32)
        self.link_b = (keys % n_nodes).astype(np.int32)
        seg_link = np.searchsorted(keys, lo * n_nodes + hi)
        forward_seg = np.full(keys.size, -1, dtype=np.int32)
        backward_seg = np.full(keys.size, -1, dtype=np.int32)
        is_forward = tail == self.link_a[seg_link]
        ids = np.arange(tail.size, dtype=np.int32)
        forward_seg[seg_link[is_forward]] = ids[is_forward]
        backward_seg[seg_link[~is_forward]] = ids[~is_forward]
        self.forward_seg: I32 = forward_seg
        self.backward_seg: I32 = backward_seg

        self.lat0 = float(graph.node_lat.mean())
        self.lon0 = float(graph.node_lon.mean())
        x, y = local_xy(graph.node_lat, graph.node_lon, self.lat0, self.lon0)
        # the same projection for one point, as scalars (metres per degree)
        self._ky = math.pi / 180.0 * EARTH_RADIUS_M
        self._kx = self._ky * math.cos(math.radians(self.lat0))
        self.ax, self.ay = x[self.link_a], y[self.link_a]
        self.bx, self.by = x[self.link_b], y[self.link_b]
        length = np.hypot(self.bx - self.ax, self.by - self.ay)
        pieces = np.maximum(np.ceil(length / SPACING_M), 1).astype(np.int64)
        link_of = np.repeat(np.arange(keys.size), pieces + 1)
        step = np.arange(link_of.size) - np.repeat(np.cumsum(pieces + 1) - (pieces + 1),
                                                   pieces + 1)
        t = step / np.repeat(pieces, pieces + 1)
        sx = self.ax[link_of] + (self.bx - self.ax)[link_of] * t
        sy = self.ay[link_of] + (self.by - self.ay)[link_of] * t
        self.sample_link: npt.NDArray[np.int64] = link_of
        self.tree = cKDTree(np.column_stack([sx, sy]))
        self.node_lat, self.node_lon = graph.node_lat, graph.node_lon

    def nbytes(self) -> int:
        arrays = (self.link_a, self.link_b, self.forward_seg, self.backward_seg, self.ax,
                  self.ay, self.bx, self.by, self.sample_link)
        # the tree holds its points and an index of the same size
        return sum(a.nbytes for a in arrays) + int(self.tree.data.nbytes) * 2

    @property
    def link_count(self) -> int:
        return int(self.link_a.shape[0])

    def _project(self, px: float, py: float,
                 links: npt.NDArray[np.int64]) -> tuple[int, float, float]:
        ax, ay = self.ax[links], self.ay[links]
        dx, dy = self.bx[links] - ax, self.by[links] - ay
        denom = np.maximum(dx * dx + dy * dy, 1e-12)
        t = np.clip(((px - ax) * dx + (py - ay) * dy) / denom, 0.0, 1.0)
        dist = np.hypot(ax + t * dx - px, ay + t * dy - py)
        i = int(np.argmin(dist))
        return int(links[i]), float(t[i]), float(dist[i])

    def snap(self, lat: float, lon: float) -> Snap:
        """The nearest point on any link (however far: the caller applies its limit)."""
        p = (float((lon - self.lon0) * self._kx), float((lat - self.lat0) * self._ky))
        k = min(FIRST_LOOK, self.tree.n)
        sample_dist, idx = self.tree.query(p, k=k)
        sample_dist, idx = np.atleast_1d(sample_dist), np.atleast_1d(idx)
        link, t, dist = self._project(p[0], p[1], self.sample_link[idx])
        # every link nearer than `dist` has a sample within dist + SPACING_M / 2: when the
        # k samples looked at reach that far, none was missed; else look that far
        reach = dist + SPACING_M / 2 + 1e-6
        if k < self.tree.n and sample_dist[-1] <= reach:
            near = self.tree.query_ball_point(p, reach)
            more = self.sample_link[np.asarray(near, dtype=np.int64)]
            link, t, dist = self._project(p[0], p[1], np.append(more, link))
        a, b = int(self.link_a[link]), int(self.link_b[link])
        snapped_lat = float(self.node_lat[a] + (self.node_lat[b] - self.node_lat[a]) * t)
        snapped_lon = float(self.node_lon[a] + (self.node_lon[b] - self.node_lon[a]) * t)
        return Snap(link, t, snapped_lat, snapped_lon,
                    haversine_m(lat, lon, snapped_lat, snapped_lon),
                    int(self.forward_seg[link]), int(self.backward_seg[link]))
