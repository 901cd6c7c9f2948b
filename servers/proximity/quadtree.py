"""The in-memory index of a search replica: a point quadtree over numpy arrays.

Why a quadtree (and not S2/H3 cells): it adapts to density (dense cities get
deep, small leaves; oceans stay one leaf), answers "all points in this box"
exactly with no approximation of the circle by cells, needs no extra
dependency, and with points laid out so that every node's points are one
contiguous slice, a query is a short Python walk over a few dozen nodes and
then one vectorised haversine over the gathered slices.

Leaf capacity is 100 (the book's choice). Edits go to a small delta (scanned
by brute force) and a tombstone mask; once the delta grows past a threshold
the tree is rebuilt off the event loop and swapped in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .domain import Box, Business, bounding_boxes, haversine_np

LEAF_CAPACITY = 100
MAX_DEPTH = 24


@dataclass(frozen=True, slots=True)
class IndexedPoint:
    id: str
    lat: float
    lon: float
    category: str
    name_lower: str

    @classmethod
    def of(cls, b: Business) -> IndexedPoint:
        return cls(b.id, b.lat, b.lon, b.category, b.name.lower())

    @classmethod
    def from_row(cls, row: tuple[str, float, float, str, str]) -> IndexedPoint:
        """From an (id, lat, lon, category, name) row of the system of record."""
        bid, lat, lon, category, name = row
        return cls(bid, lat, lon, category, name.lower())


class _Tree:
    """Immutable quadtree: arrays sorted so each node covers points[start:end]."""

    def __init__(self, points: Sequence[IndexedPoint]) -> None:
        n = len(points)
        lats = np.fromiter((p.lat for p in points), dtype=np.float64, count=n)
        lons = np.fromiter((p.lon for p in points), dtype=np.float64, count=n)
        order = np.arange(n, dtype=np.int64)
        # node arrays as python lists: scalar access in the query loop is ~10x
        # faster than numpy indexing
        self.min_lat: list[float] = []
        self.min_lon: list[float] = []
        self.max_lat: list[float] = []
        self.max_lon: list[float] = []
        self.start: list[int] = []
        self.end: list[int] = []
        self.children: list[int] = []  # index of first child, or -1 for a leaf
        chunks: list[np.ndarray] = []
        for arr in (self.min_lat, self.min_lon, self.max_lat, self.max_lon):
            arr.append(0.0)
        self.start.append(0)
        self.end.append(0)
        self.children.append(-1)
        self._fill(0, lats, lons, order, -90.0, -180.0, 90.0, 180.0, 0, chunks, [0])
        perm = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
        self.lats = lats[perm]
        self.lons = lons[perm]
        ordered = [points[i] for i in perm.tolist()]
        self.ids = np.array([p.id for p in ordered], dtype=np.object_)
        self.ids_u = self.ids.astype(str) if n else np.empty(0, dtype=str)
        self.categories = np.array([p.category for p in ordered], dtype=np.object_)
        self.names = [p.name_lower for p in ordered]
        self.alive = np.ones(n, dtype=bool)
        self.row_of = {self.ids[i]: i for i in range(n)}

    def _fill(self, node: int, lats: np.ndarray, lons: np.ndarray, idx: np.ndarray, a: float,
              b: float, c: float, d: float, depth: int, chunks: list[np.ndarray],
              cursor: list[int]) -> None:
        self.min_lat[node], self.min_lon[node], self.max_lat[node], self.max_lon[node] = a, b, c, d
        self.start[node] = cursor[0]
        if len(idx) <= LEAF_CAPACITY or depth >= MAX_DEPTH:
            chunks.append(idx)
            cursor[0] += len(idx)
            self.end[node] = cursor[0]
            return
        mid_lat, mid_lon = (a + c) / 2, (b + d) / 2
        north = lats[idx] >= mid_lat
        east = lons[idx] >= mid_lon
        first = len(self.start)
        for _ in range(4):
            for arr in (self.min_lat, self.min_lon, self.max_lat, self.max_lon):
                arr.append(0.0)
            self.start.append(0)
            self.end.append(0)
            self.children.append(-1)
        self.children[node] = first
        quadrants = (
            (idx[~north & ~east], a, b, mid_lat, mid_lon),
            (idx[~north & east], a, mid_lon, mid_lat, d),
            (idx[north & ~east], mid_lat, b, c, mid_lon),
            (idx[north & east], mid_lat, mid_lon, c, d),
        )
        for k, (sub, qa, qb, qc, qd) in enumerate(quadrants):
            self._fill(first + k, lats, lons, sub, qa, qb, qc, qd, depth + 1, chunks, cursor)
        self.end[node] = cursor[0]

    def ranges(self, box: Box) -> list[tuple[int, int]]:
        """Contiguous point ranges of the nodes that intersect ``box``."""
        out: list[tuple[int, int]] = []
        min_lat, min_lon, max_lat, max_lon = self.min_lat, self.min_lon, self.max_lat, self.max_lon
        start, end, children = self.start, self.end, self.children
        stack = [0]
        while stack:
            node = stack.pop()
            if start[node] == end[node]:
                continue
            if (max_lat[node] < box.min_lat or min_lat[node] > box.max_lat
                    or max_lon[node] < box.min_lon or min_lon[node] > box.max_lon):
                continue
            first = children[node]
            if first < 0 or (min_lat[node] >= box.min_lat and max_lat[node] <= box.max_lat
                             and min_lon[node] >= box.min_lon and max_lon[node] <= box.max_lon):
                out.append((start[node], end[node]))
            else:
                stack.extend((first, first + 1, first + 2, first + 3))
        return out

    @property
    def size(self) -> int:
        return len(self.ids)


class QuadtreeIndex:
    """Nearby search over points in memory; exact, nearest first, ties by id."""

    def __init__(self, points: Iterable[IndexedPoint] = (), rebuild_threshold: int = 5000) -> None:
        self._tree = _Tree(list(points))
        self._delta: dict[str, IndexedPoint] = {}
        self._dead = 0
        self.rebuild_threshold = rebuild_threshold

    def __len__(self) -> int:
        return int(self._tree.alive.sum()) + len(self._delta)

    def upsert(self, point: IndexedPoint) -> None:
        self._kill(point.id)
        self._delta[point.id] = point

    def remove(self, business_id: str) -> None:
        self._kill(business_id)
        self._delta.pop(business_id, None)

    def _kill(self, business_id: str) -> None:
        row = self._tree.row_of.get(business_id)
        if row is not None and self._tree.alive[row]:
            self._tree.alive[row] = False
            self._dead += 1

    def needs_rebuild(self) -> bool:
        return len(self._delta) + self._dead > self.rebuild_threshold

    def snapshot(self) -> list[IndexedPoint]:
        tree = self._tree
        rows = np.flatnonzero(tree.alive)
        points = [IndexedPoint(tree.ids[i], float(tree.lats[i]), float(tree.lons[i]),
                               tree.categories[i], tree.names[i]) for i in rows]
        points.extend(self._delta.values())
        return points

    def rebuild(self) -> None:
        self._tree = _Tree(self.snapshot())
        self._delta.clear()
        self._dead = 0

    def swap_in(self, fresh: QuadtreeIndex, replay: Iterable[tuple[str, IndexedPoint | None]]
                ) -> None:
        """Adopt a tree built off-loop, then re-apply the edits made while it was built."""
        self._tree, self._delta, self._dead = fresh._tree, fresh._delta, fresh._dead
        for business_id, point in replay:
            if point is None:
                self.remove(business_id)
            else:
                self.upsert(point)

    def search(self, lat: float, lon: float, radius_m: float, category: str = "",
               keyword: str = "", after: tuple[float, str] | None = None,
               limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, ids) within radius, nearest first, ties by id.

        ``after`` skips everything up to and including that (distance, id);
        ``limit`` keeps only the first hits after it (a page).
        """
        tree = self._tree
        parts: list[np.ndarray] = []
        boxes = bounding_boxes(lat, lon, radius_m)
        for box in boxes:
            for a, b in tree.ranges(box):
                parts.append(np.arange(a, b))
        if parts:
            rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
            if len(boxes) > 1:  # boxes split at the antimeridian may share a node
                rows = np.unique(rows)
            dist = haversine_np(lat, lon, tree.lats[rows], tree.lons[rows])
            keep = (dist <= radius_m) & tree.alive[rows]
            if category:
                keep &= tree.categories[rows] == category
            rows, dist = rows[keep], dist[keep]
            if keyword:
                names = tree.names
                mask = np.fromiter((keyword in names[r] for r in rows), dtype=bool,
                                   count=len(rows))
                rows, dist = rows[mask], dist[mask]
            ids = tree.ids_u[rows]
        else:
            dist, ids = np.empty(0), np.empty(0, dtype=str)
        if self._delta:
            extra = [p for p in self._delta.values()
                     if (not category or p.category == category)
                     and (not keyword or keyword in p.name_lower)]
            if extra:
                edist = haversine_np(lat, lon, np.array([p.lat for p in extra]),
                                     np.array([p.lon for p in extra]))
                near = edist <= radius_m
                dist = np.concatenate([dist, edist[near]])
                ids = np.concatenate([ids.astype(object),
                                      np.array([p.id for p in extra], dtype=np.object_)[near]]
                                     ).astype(str)
        return _order(dist, ids, after, limit)


def _order(dist: np.ndarray, ids: np.ndarray, after: tuple[float, str] | None,
           limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    if after is not None and len(dist):
        last_d, last_id = after
        later = (dist > last_d) | ((dist == last_d) & (ids > last_id))
        dist, ids = dist[later], ids[later]
    if limit is not None and len(dist) > limit:
        # only the first `limit` need sorting: partition, then keep ties of the cut
        cut = np.partition(dist, limit - 1)[limit - 1]
        near = dist <= cut
        dist, ids = dist[near], ids[near]
    if len(dist) > 1:
        order = np.lexsort((ids, dist))
        dist, ids = dist[order], ids[order]
    if limit is not None:
        dist, ids = dist[:limit], ids[:limit]
    return dist, ids


def brute_force(points: Sequence[IndexedPoint], lat: float, lon: float, radius_m: float
                ) -> list[tuple[float, str]]:
    """The oracle: haversine to every point, filter, sort by (distance, id)."""
    if not points:
        return []
    lats = np.array([p.lat for p in points])
    lons = np.array([p.lon for p in points])
    dist = haversine_np(lat, lon, lats, lons)
    return sorted((float(d), p.id) for d, p in zip(dist, points) if d <= radius_m)

