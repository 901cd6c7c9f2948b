"""The in-memory index of a search replica: a linear quadtree over numpy arrays.

Why a quadtree (and not S2/H3 cells): it adapts to density, answers "all
points in these cells" exactly with no approximation of the circle by cells,
and needs no extra dependency.

Why a *linear* one (Gargantini's: no pointers, the points sorted by their
Z-order code): with every point's Morton code at 2^26 x 2^26 sorted, every
quadtree cell at every depth is one contiguous run of the sorted codes, so the
cells that cover a query are found by one ``searchsorted`` instead of a walk
over nodes in Python. A query's cost is the number of numpy calls it makes
(each costs about as much as a few dozen Python operations, whatever the size
of the arrays), not its arithmetic, so it makes few:

1. cover the circle's lat/lon bounding box with at most MAX_COVER cells of one
   depth (the finest that needs no more); one ``searchsorted`` gives their runs;
2. for more than a handful of candidates (MID), keep those whose unit vector's
   dot product with the centre's clears a cosine bound loosened far beyond its
   rounding error (cKDTree's chord test), one matrix-vector product; for a
   handful (SMALL) the same test in Python, so a search that finds nothing
   stops early and cheaply;
3. for those, the haversine distance, computed to the bit as ``haversine_np``
   (the distance every index ranks by) from per-point rows that hold
   radians(lat) and its cosine ready, the exact radius test, and the page.

Edits go to a small delta (scanned by brute force) and a tombstone: a removed
point's unit vector and radians(lat) become NaN, which no test passes. Once the
delta grows past a threshold the tree is rebuilt off the event loop and swapped in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .domain import EARTH_RADIUS_M, Business, haversine_np

BITS = 26  # per axis: cells of the finest depth are ~0.3 m tall
MAX_COVER = 4  # cells a query's box is covered with, at most (see _cover)
SMALL = 16  # candidates up to this many get the chord test in Python
MID = 48  # up to this many get the distance without a chord test; more, one in numpy
FEW = 64  # hits up to this many are filtered and ordered in Python, more in numpy first
_SIDE = 1 << BITS
_LAT_SCALE = _SIDE / 180.0
_LON_SCALE = _SIDE / 360.0
# The box is widened by _BOX_SLACK (relative) and _BOX_PAD (degrees), the angle of
# the cosine bound by _ANGLE_SLACK and _ANGLE_PAD (radians), and the bound lowered by
# _DOT_SLACK: each is orders of magnitude above the float error of what it guards
# (~1e-15 relative in haversine_np, ~1e-15 absolute in a dot product), so no point
# within the radius is ever left out; the exact test comes after.
_BOX_SLACK, _BOX_PAD = 1e-6, 1e-9
_ANGLE_SLACK, _ANGLE_PAD, _DOT_SLACK = 1e-9, 1e-12, 1e-13
_DEGREES = 180.0 / math.pi * (1 + _BOX_SLACK)
# rows of _Tree.points: the unit vector and the row's own index (what the chord test
# needs), then radians(lat), lon and cos(radians(lat)) (what the distance needs), lat
_X, _Y, _Z, _ROW, _P2, _LON, _COS, _LAT = range(8)
# 0-d arrays: an operand numpy takes faster than a Python float, with the same value
_HALF, _ONE = np.array(0.5), np.array(1.0)
_HALF_RADIANS = np.array(math.pi / 180.0 * 0.5)  # see _haversine
_TWO_R = np.array(2 * EARTH_RADIUS_M)
_NO_DIST = np.empty(0)
_NO_IDS = np.empty(0, dtype=str)
_NO_ROWS = np.empty(0, dtype=np.intp)
for _shared in (_HALF, _ONE, _HALF_RADIANS, _TWO_R, _NO_DIST, _NO_IDS, _NO_ROWS):
    _shared.flags.writeable = False


def _spread_py(v: int) -> int:
    out = 0
    for bit in range(16):
        out |= ((v >> bit) & 1) << (2 * bit)
    return out


_SPREAD = [_spread_py(v) for v in range(1 << 16)]  # v's 16 bits moved to the even bits


def _spread(v: int) -> int:
    """``v``'s bits moved to the even bits: a cell's code is spread(row) << 1 | spread(col)."""
    return _SPREAD[v] if v < 65536 else _SPREAD[v & 65535] | (_SPREAD[v >> 16] << 32)


def _spread_np(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.uint64)
    for shift, mask in ((16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF),
                        (4, 0x0F0F0F0F0F0F0F0F), (2, 0x3333333333333333),
                        (1, 0x5555555555555555)):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


def morton_codes(lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """Z-order codes at the finest depth, latitude bits the more significant; lat 90
    and lon 180 share the cells just below them."""
    rows = np.minimum(((lats + 90.0) * _LAT_SCALE).astype(np.int64), _SIDE - 1)
    cols = np.minimum(((lons + 180.0) * _LON_SCALE).astype(np.int64), _SIDE - 1)
    codes: np.ndarray = ((_spread_np(rows) << np.uint64(1)) | _spread_np(cols)).astype(np.int64)
    return codes


Cap = tuple[float, float, float, bool]
_CAPS: dict[float, Cap] = {}  # by radius: a handful of radii are ever asked for


def _cap(radius_m: float) -> Cap:
    """For a radius: half the box's height in degrees, the sine of the angular radius,
    the cosine bound of the chord test, and whether a point that passes it is surely
    less than a quarter of the way round the earth away (so haversine needs no clamp)."""
    cap = _CAPS.get(radius_m)
    if cap is None:
        angular = radius_m / EARTH_RADIUS_M
        loose = angular * (1 + _ANGLE_SLACK) + _ANGLE_PAD
        bound = math.cos(loose) - _DOT_SLACK if loose < math.pi else -2.0
        cap = (math.degrees(angular) * (1 + _BOX_SLACK) + _BOX_PAD, math.sin(angular), bound,
               bound > 0.0)
        if len(_CAPS) >= 64:
            _CAPS.clear()
        _CAPS[radius_m] = cap
    return cap


def _cover(lat: float, lon: float, cap: Cap, cos_lat: float) -> list[int]:
    """[lo, hi, lo, hi, ...]: disjoint Morton code ranges whose cells hold every point
    whose haversine distance from (lat, lon) can be within the radius of ``cap``.

    They are the cells of the finest depth that covers the circle's bounding box with
    at most MAX_COVER cells. The box is never split: columns wrap round the
    antimeridian, and a box that reaches a pole takes every column.
    """
    south = lat - cap[0]
    north = lat + cap[0]
    ratio = cap[1] / cos_lat
    if south <= -90.0 or north >= 90.0 or ratio >= 1.0:
        return _cover_band(max(south, -90.0), min(north, 90.0))
    dlon = math.asin(ratio) * _DEGREES + _BOX_PAD
    # the box's edges in rows and (unwrapped) columns of the finest depth
    r0 = int((south + 90.0) * _LAT_SCALE)
    r1 = int((north + 90.0) * _LAT_SCALE)
    c0 = math.floor((lon - dlon + 180.0) * _LON_SCALE)
    c1 = math.floor((lon + dlon + 180.0) * _LON_SCALE)
    if c1 - c0 >= _SIDE:
        return _cover_band(south, north)
    if r1 >= _SIDE:
        r1 = _SIDE - 1
    # cells at least as large as the box: at most 2 x 2 of them; one depth finer if
    # that still takes at most MAX_COVER
    shift = max((r1 - r0).bit_length(), (c1 - c0).bit_length())
    if shift:
        finer = shift - 1
        if ((r1 >> finer) - (r0 >> finer) + 1) * ((c1 >> finer) - (c0 >> finer) + 1) <= MAX_COVER:
            shift = finer
    rows = range(r0 >> shift, (r1 >> shift) + 1)
    if c0 < 0 or c1 >= _SIDE:  # across the antimeridian
        wrap = (1 << (BITS - shift)) - 1
        return _ranges(shift, rows, sorted({c & wrap for c in range(c0 >> shift,
                                                                    (c1 >> shift) + 1)}))
    cols = range(c0 >> shift, (c1 >> shift) + 1)
    if shift < BITS - 16:  # cells under ~300 m: indexes beyond the table
        return _ranges(shift, rows, cols)
    spread = _SPREAD
    size = 2 * shift
    step = 1 << size
    bounds: list[int] = []
    for r in rows:
        row_bits = spread[r] << 1
        for c in cols:
            start = (row_bits | spread[c]) << size
            bounds += (start, start + step)
    return bounds


def _cover_band(south: float, north: float) -> list[int]:
    """Every column of the rows from ``south`` to ``north``: at most MAX_COVER cells if
    the band is thin enough, at the finest depth that allows it."""
    r0 = max(0, int((south + 90.0) * _LAT_SCALE))
    r1 = min(int((north + 90.0) * _LAT_SCALE), _SIDE - 1)
    shift = BITS
    while shift and (((r1 >> (shift - 1)) - (r0 >> (shift - 1)) + 1) << (BITS - shift + 1)
                     <= MAX_COVER):
        shift -= 1
    return _ranges(shift, range(r0 >> shift, (r1 >> shift) + 1), range(1 << (BITS - shift)))


def _ranges(shift: int, rows: Iterable[int], cols: Iterable[int]) -> list[int]:
    """The code ranges of the cells (row, col) of depth BITS - shift."""
    size = 2 * shift
    step = 1 << size
    col_bits = [_spread(c) for c in cols]
    bounds: list[int] = []
    for r in rows:
        row_bits = _spread(r) << 1
        for c in col_bits:
            start = (row_bits | c) << size
            bounds += (start, start + step)
    return bounds


def _haversine(lat: float, lon: float, p2: np.ndarray, lons: np.ndarray, cos_p2: np.ndarray,
               clamp: bool) -> np.ndarray:
    """``haversine_np(lat, lon, lats, lons)`` to the bit, given p2 = np.radians(lats) and
    cos_p2 = np.cos(p2): the same IEEE operations on the same values in the same order,
    but for two that give the same result with fewer numpy calls:

    - np.radians(x) * 0.5 is x * (pi / 180 * 0.5): halving is exact, so rounding once or
      twice gives the same double unless the product is subnormal, and then its sine
      squared underflows to 0.0 either way;
    - ``clamp=False`` leaves out the clamp of sqrt(a) to 1, which only a point near the
      antipode needs.
    """
    p1 = math.radians(lat)
    a = (np.square(np.sin((p2 - p1) * _HALF))
         + cos_p2 * math.cos(p1) * np.square(np.sin((lons - lon) * _HALF_RADIANS)))
    root = np.sqrt(a)
    distances: np.ndarray = _TWO_R * np.arcsin(np.minimum(_ONE, root) if clamp else root)
    return distances


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
    """Points in Z order, one column each of ``points``; immutable but for tombstones."""

    def __init__(self, points: Sequence[IndexedPoint]) -> None:
        n = len(points)
        lats = np.fromiter((p.lat for p in points), dtype=np.float64, count=n)
        lons = np.fromiter((p.lon for p in points), dtype=np.float64, count=n)
        codes = morton_codes(lats, lons)
        perm = np.argsort(codes, kind="stable")
        self.codes = codes[perm]
        lats, lons = lats[perm], lons[perm]
        p2, rlon = np.radians(lats), np.radians(lons)
        cos_lat = np.cos(p2)
        # one row per quantity: the points of a run are one slice of the rows a step
        # needs, and every row of what is taken out of it is contiguous
        self.points = np.empty((8, n), dtype=np.float64)
        self.points[_X] = cos_lat * np.cos(rlon)
        self.points[_Y] = cos_lat * np.sin(rlon)
        self.points[_Z] = np.sin(p2)
        self.points[_ROW] = np.arange(n, dtype=np.float64)
        self.points[_P2] = p2
        self.points[_LON] = lons
        self.points[_COS] = cos_lat
        self.points[_LAT] = lats
        ordered = [points[i] for i in perm.tolist()]
        self.ids = [p.id for p in ordered]
        self.categories = [p.category for p in ordered]
        self.names = [p.name_lower for p in ordered]
        self.alive = np.ones(n, dtype=bool)
        self.row_of = {p.id: i for i, p in enumerate(ordered)}

    @property
    def size(self) -> int:
        return len(self.ids)

    def kill(self, row: int) -> None:
        """Leave the point out of every search: NaN passes neither test."""
        self.alive[row] = False
        self.points[[_X, _Y, _Z, _P2], row] = np.nan

    def near(self, lat: float, lon: float, radius_m: float) -> tuple[np.ndarray, np.ndarray]:
        """(haversine distances, rows) of a superset of the points within the radius."""
        cap = _CAPS.get(radius_m) or _cap(radius_m)
        rlat = math.radians(lat)
        cos_lat = math.cos(rlat)
        edges = self.codes.searchsorted(_cover(lat, lon, cap, cos_lat)).tolist()
        starts, ends = edges[::2], edges[1::2]
        total = sum(ends) - sum(starts)
        if not total:
            return _NO_DIST, _NO_ROWS
        runs: list[tuple[int, int]] = []
        for lo, hi in zip(starts, ends):
            if lo < hi:
                if runs and runs[-1][1] == lo:
                    runs[-1] = (runs[-1][0], hi)
                else:
                    runs.append((lo, hi))
        points = self.points
        if SMALL < total <= MID:  # a few dozen: the distance costs what a test would
            block = (points[_ROW:_COS + 1, runs[0][0]:runs[0][1]] if len(runs) == 1 else
                     np.concatenate([points[_ROW:_COS + 1, lo:hi] for lo, hi in runs], axis=1))
            row_of, p2, lons, cos_p2 = block
            return _haversine(lat, lon, p2, lons, cos_p2, True), row_of.astype(np.intp)
        _, _, bound, near_side = cap
        rlon = math.radians(lon)
        cx, cy, cz = cos_lat * math.cos(rlon), cos_lat * math.sin(rlon), math.sin(rlat)
        if total <= SMALL:  # the chord test in Python: no numpy call, and often no hit
            chosen: list[int] = []
            for lo, hi in runs:
                xs, ys, zs = points[_X:_Z + 1, lo:hi].tolist()
                chosen.extend(lo + k for k, x in enumerate(xs)
                              if x * cx + ys[k] * cy + zs[k] * cz >= bound)
            if not chosen:
                return _NO_DIST, _NO_ROWS
            rows = np.array(chosen)
        else:
            block = (points[_X:_ROW + 1, runs[0][0]:runs[0][1]] if len(runs) == 1 else
                     np.concatenate([points[_X:_ROW + 1, lo:hi] for lo, hi in runs], axis=1))
            rows = block[_ROW][np.array((cx, cy, cz)) @ block[_X:_Z + 1] >= bound]
            if not len(rows):
                return _NO_DIST, _NO_ROWS
            rows = rows.astype(np.intp)
        p2, lons, cos_p2 = points[_P2:_COS + 1].take(rows, axis=1)  # rows contiguous
        return _haversine(lat, lon, p2, lons, cos_p2, not near_side), rows


class QuadtreeIndex:
    """Nearby search over points in memory; exact, nearest first, ties by id."""

    def __init__(self, points: Iterable[IndexedPoint] = (), rebuild_threshold: int = 5000) -> None:
        self._tree = _Tree(list(points))
        self._delta: dict[str, IndexedPoint] = {}
        self._dead = 0
        self.rebuild_threshold = rebuild_threshold

    def __len__(self) -> int:
        return self._tree.size - self._dead + len(self._delta)

    def upsert(self, point: IndexedPoint) -> None:
        self._kill(point.id)
        self._delta[point.id] = point

    def remove(self, business_id: str) -> None:
        self._kill(business_id)
        self._delta.pop(business_id, None)

    def _kill(self, business_id: str) -> None:
        row = self._tree.row_of.get(business_id)
        if row is not None and self._tree.alive[row]:
            self._tree.kill(row)
            self._dead += 1

    def needs_rebuild(self) -> bool:
        return len(self._delta) + self._dead > self.rebuild_threshold

    def snapshot(self) -> list[IndexedPoint]:
        tree = self._tree
        lats, lons = tree.points[_LAT].tolist(), tree.points[_LON].tolist()
        points = [IndexedPoint(tree.ids[i], lats[i], lons[i], tree.categories[i], tree.names[i])
                  for i in np.flatnonzero(tree.alive).tolist()]
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
        if not radius_m >= 0:  # NaN too: nothing is within
            return _NO_DIST, _NO_IDS
        tree = self._tree
        dist, rows = tree.near(lat, lon, radius_m)
        if len(dist) > FEW:  # narrow down in numpy first, to what could be on the page
            keep = dist <= radius_m
            if after is not None:
                keep &= dist >= after[0]
            dist, rows = dist[keep], rows[keep]
            if (limit is not None and not category and not keyword
                    and len(dist) > limit + FEW):
                # all but what the first `limit` hits after `after` may be (those at the
                # cut and those at `after`'s distance that may not be after it included)
                k = limit + (int(np.count_nonzero(dist == after[0])) if after else 0)
                if 0 < k < len(dist):
                    keep = dist <= np.partition(dist, k - 1)[k - 1]
                    dist, rows = dist[keep], rows[keep]
        ids, categories, names = tree.ids, tree.categories, tree.names
        hits = [(d, ids[r]) for d, r in zip(dist.tolist(), rows.tolist())
                if d <= radius_m and (not category or categories[r] == category)
                and (not keyword or keyword in names[r])]
        if self._delta:
            extra = [p for p in self._delta.values()
                     if (not category or p.category == category)
                     and (not keyword or keyword in p.name_lower)]
            if extra:
                edist = haversine_np(lat, lon, np.array([p.lat for p in extra]),
                                     np.array([p.lon for p in extra])).tolist()
                hits += [(d, p.id) for d, p in zip(edist, extra) if d <= radius_m]
        if after is not None:
            hits = [hit for hit in hits if hit > after]
        if not hits:
            return _NO_DIST, _NO_IDS
        hits.sort()  # nearest first, ties by id
        if limit is not None:
            del hits[limit:]
        return np.array([d for d, _ in hits]), np.array([i for _, i in hits], dtype=str)


def brute_force(points: Sequence[IndexedPoint], lat: float, lon: float, radius_m: float
                ) -> list[tuple[float, str]]:
    """The oracle: haversine to every point, filter, sort by (distance, id)."""
    if not points:
        return []
    lats = np.array([p.lat for p in points])
    lons = np.array([p.lon for p in points])
    dist = haversine_np(lat, lon, lats, lons)
    return sorted((float(d), p.id) for d, p in zip(dist, points) if d <= radius_m)
