"""Snap a point onto the nearest usable road segment, mid-segment.

Every road of the graph is a straight *link* between two base nodes (the two
directed segments of a two-way street share one). Points sampled along each
link at most ``SPACING_M`` apart go into a k-d tree (scipy's cKDTree, in local
metres). A query takes the nearest samples, projects the point onto their links
exactly, then looks once more within ``best + SPACING_M / 2``: any link nearer
than the best found has a sample within that radius, so the answer is the true
nearest link, not just the one of the nearest sample.

A k-d tree query costs ~40 µs from Python for one point, more than the rest of a
route's search, so a hash grid answers first: square cells of ``CELL_M``, each
listing the links with a sample in it or in one of its eight neighbours. A point
takes its cell's list and projects onto those links; a link nearer than the
best found has a sample within ``best + SPACING_M / 2``, inside the 3 x 3 block
while that is at most ``CELL_M``, so the grid's answer is exact then. Farther
from every road (or outside the grid) the k-d tree answers.
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
CELL_M = 50.0

Links = npt.NDArray[np.int64] | npt.NDArray[np.int32]
F64s = npt.NDArray[np.float64]


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


def _sorted_unique(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """np.unique by sorting (numpy 2's hashing unique is ~50x slower on these keys)."""
    out = np.sort(values)
    kept: npt.NDArray[np.int64] = out[np.r_[True, out[1:] != out[:-1]]]
    return kept


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
        ax, ay = x[self.link_a], y[self.link_a]
        dx, dy = x[self.link_b] - ax, y[self.link_b] - ay
        length = np.hypot(dx, dy)
        pieces = np.maximum(np.ceil(length / SPACING_M), 1).astype(np.int64)
        link_of = np.repeat(np.arange(keys.size), pieces + 1)
        step = np.arange(link_of.size) - np.repeat(np.cumsum(pieces + 1) - (pieces + 1),
                                                   pieces + 1)
        t = step / np.repeat(pieces, pieces + 1)
        sx = ax[link_of] + dx[link_of] * t
        sy = ay[link_of] + dy[link_of] * t
        self.sample_link: npt.NDArray[np.int64] = link_of
        self.tree = cKDTree(np.column_stack([sx, sy]))
        self.node_lat, self.node_lon = graph.node_lat, graph.node_lon
        # each link as complex numbers (x + iy): its start, its direction, minus the
        # direction's conjugate and 1 / length^2; a projection is then a few array operations
        self._start: npt.NDArray[np.complex128] = ax + 1j * ay
        self._dir: npt.NDArray[np.complex128] = dx + 1j * dy
        self._back: npt.NDArray[np.complex128] = -np.conj(self._dir)
        self._inv_len2: npt.NDArray[np.float64] = 1.0 / np.maximum(dx * dx + dy * dy, 1e-12)
        self._build_grid(sx, sy, link_of)

    def _build_grid(self, sx: npt.NDArray[np.float64], sy: npt.NDArray[np.float64],
                    link_of: npt.NDArray[np.int64]) -> None:
        """Per cell: the links with a sample in its 3 x 3 block (CSR over the cells)."""
        cx = np.floor(sx / CELL_M).astype(np.int64)
        cy = np.floor(sy / CELL_M).astype(np.int64)
        # a margin of one cell all round, so a sample's neighbours stay inside the grid
        self._cx0, self._cy0 = int(cx.min()) - 1, int(cy.min()) - 1
        self._width = int(cx.max()) - self._cx0 + 2
        self._height = int(cy.max()) - self._cy0 + 2
        cell = (cx - self._cx0) * self._height + (cy - self._cy0)
        pairs = _sorted_unique(cell * self.link_count + link_of)  # (cell, link), once each
        cell, link = pairs // self.link_count, pairs % self.link_count
        spread = [cell + ox * self._height + oy for ox in (-1, 0, 1) for oy in (-1, 0, 1)]
        block = _sorted_unique(np.concatenate(spread) * self.link_count + np.tile(link, 9))
        block_cell = block // self.link_count
        self._cell_links = (block % self.link_count).astype(np.int32)
        first = np.flatnonzero(np.r_[True, block_cell[1:] != block_cell[:-1]])
        keys = block_cell[first]
        bounds = [*first.tolist(), int(block_cell.size)]
        self._cells: dict[int, tuple[int, int]] = {
            key: (bounds[k], bounds[k + 1]) for k, key in enumerate(keys.tolist())}

    def nbytes(self) -> int:
        arrays = (self.link_a, self.link_b, self.forward_seg, self.backward_seg, self._start,
                  self._dir, self._back, self._inv_len2, self.sample_link, self._cell_links)
        # the tree holds its points and an index of the same size; the grid's dict ~150 B
        # a cell
        return (sum(a.nbytes for a in arrays) + int(self.tree.data.nbytes) * 2
                + len(self._cells) * 150)

    @property
    def link_count(self) -> int:
        return int(self.link_a.shape[0])

    def _xy(self, lat: float, lon: float) -> tuple[float, float]:
        """The point in the index's local metres."""
        return float((lon - self.lon0) * self._kx), float((lat - self.lat0) * self._ky)

    def _projections(self, px: float, py: float, links: Links) -> tuple[F64s, F64s]:
        """(fraction along, distance in metres) of the nearest point of each of ``links``."""
        w = self._start[links] - complex(px, py)
        t = (w * self._back[links]).real * self._inv_len2[links]
        np.maximum(t, 0.0, out=t)
        np.minimum(t, 1.0, out=t)
        dist: F64s = np.abs(w + t * self._dir[links])
        return t, dist

    def _project(self, px: float, py: float, links: Links) -> tuple[int, float, float]:
        """(link, fraction along it, distance in metres) of the nearest of ``links``."""
        t, dist = self._projections(px, py, links)
        i = int(dist.argmin())
        return int(links[i]), float(t[i]), float(dist[i])

    def _cell(self, px: float, py: float) -> Links | None:
        """The links of the point's grid cell and its eight neighbours (None: no cell)."""
        cx, cy = math.floor(px / CELL_M) - self._cx0, math.floor(py / CELL_M) - self._cy0
        if not (0 <= cx < self._width and 0 <= cy < self._height):
            return None
        bounds = self._cells.get(cx * self._height + cy)
        return None if bounds is None else self._cell_links[bounds[0]:bounds[1]]

    def _at(self, lat: float, lon: float, link: int, t: float) -> Snap:
        """The query point snapped to fraction ``t`` of ``link``."""
        a, b = int(self.link_a[link]), int(self.link_b[link])
        snapped_lat = float(self.node_lat[a] + (self.node_lat[b] - self.node_lat[a]) * t)
        snapped_lon = float(self.node_lon[a] + (self.node_lon[b] - self.node_lon[a]) * t)
        return Snap(link, t, snapped_lat, snapped_lon,
                    haversine_m(lat, lon, snapped_lat, snapped_lon),
                    int(self.forward_seg[link]), int(self.backward_seg[link]))

    def snap(self, lat: float, lon: float) -> Snap:
        """The nearest point on any link (however far: the caller applies its limit)."""
        p = self._xy(lat, lon)
        links = self._cell(*p)
        found = self._project(*p, links) if links is not None else None
        # sure only within CELL_M - SPACING_M / 2 of the point (see the module docstring)
        if found is None or found[2] + SPACING_M / 2 > CELL_M:
            found = self._from_tree(p)
        return self._at(lat, lon, found[0], found[1])

    def near(self, lat: float, lon: float, radius_m: float, limit: int) -> list[Snap]:
        """Every link within ``radius_m`` of the point (at most ``limit``, nearest first),
        each as the point on it nearest the query: a map matcher's candidates."""
        p = self._xy(lat, lon)
        reach = radius_m + SPACING_M / 2
        links: Links | None
        if reach <= CELL_M:
            links = self._cell(*p)
        else:
            found = self.tree.query_ball_point(p, reach)
            links = np.unique(self.sample_link[np.asarray(found, dtype=np.int64)]) \
                if found else None
        if links is None:
            return []
        t, dist = self._projections(*p, links)
        keep = np.flatnonzero(dist <= radius_m)
        keep = keep[np.argsort(dist[keep], kind="stable")][:limit]
        return [self._at(lat, lon, int(links[i]), float(t[i])) for i in keep.tolist()]

    def _from_tree(self, p: tuple[float, float]) -> tuple[int, float, float]:
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
        return link, t, dist
