"""The in-memory index of a search replica: a linear quadtree over numpy arrays.

Why a quadtree (and not S2/H3 cells): it adapts to density, answers "all points
in these cells" exactly with no approximation of the circle by cells, and needs
no extra dependency.

Why a linear one (Gargantini's: no pointers, the points sorted by the Z-order
code of their cell at the finest depth): every cell of every depth is then one
run of the sorted codes, so the cells that cover a query are found by one
``searchsorted`` (or, for big cells, a directory of where the cells of one coarse
depth start) instead of a walk over nodes in Python.

What a search costs is the number of numpy calls it makes (a microsecond or two
each, whatever the size of the arrays) and of Python operations, not arithmetic,
so it makes few:

1. cover the circle's lat/lon bounding box with at most MAX_COVER cells of one
   depth, the finest that needs no more; the rows they hold are the candidates;
2. keep the candidates whose unit vector's dot product with the centre's clears
   a cosine bound loosened far beyond its rounding error (the chord test cKDTree
   makes): in Python for up to FEW, so that a search that finds nothing (the most
   common) stops early and cheaply, else in numpy, where a page of ``limit`` also
   keeps only the ``limit`` largest dot products (the nearest);
3. for those alone, the haversine distance, to the bit what ``haversine_np`` (the
   distance every index ranks by, and brute_force, the oracle) gives; then the
   exact radius test, the order (distance, then id) and the page.

Edits go to a small delta (scanned by brute force) and a tombstone: a removed
point's unit vector and latitude become NaN, which passes no test. Once the delta
grows past a threshold the tree is rebuilt off the event loop and swapped in.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .domain import EARTH_RADIUS_M, Business, haversine_np

# Cells of the finest depth: 2 ** BITS a side, ~0.6 km tall (enough for the smallest
# radius asked, 500 m), so that a code fits in 30 bits, CPython's cheapest int.
BITS = 15
MAX_COVER = 4  # cells a query's box is covered with, at most (see _cover)
DIRECTORY_DEPTH = 10  # deepest cells whose starts _Tree keeps (4 ** 10 of them at most)
FEW = 48  # candidates up to this many get the chord test in Python
PY_DISTANCES = 8  # survivors up to this many get _haversine_few, more _haversine
GAP = 1024  # rows between the runs of a cover read rather than concatenate the runs
PAGE_SLACK = 16  # hits beyond the page size that are cut in numpy before ordering
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
_NEAR_TIE = 1e-12  # dot products this close may be in either order of distance
_COLUMNS_PER_RADIAN = 180.0 / math.pi * (1 + _BOX_SLACK) * _LON_SCALE
_COLUMN_PAD = _BOX_PAD * _LON_SCALE
# rows of _Tree.points, one per quantity, so that a run of points is a slice of each:
# the unit vector and the point's row (what the chord test needs); columns of
# _Tree.distance_data, one row per point, so that what the distance needs of one
# point is one cache line: radians(lat) * 0.5, lon, cos(radians(lat))
_X, _Y, _Z, _ROW = range(4)
_HALF_P2, _LON, _COS = range(3)
# 0-d arrays: an operand numpy takes faster than a Python float, with the same value
_ONE = np.array(1.0)
_HALF_DEG_TO_RAD = math.pi / 180.0 * 0.5  # np.radians multiplies by pi / 180
_HALF_RADIANS = np.array(_HALF_DEG_TO_RAD)  # see _haversine
_TWO_R = np.array(2 * EARTH_RADIUS_M)
_NO_DIST = np.empty(0)  # every empty answer
_NO_IDS = np.empty(0, dtype=object)
for _shared in (_ONE, _HALF_RADIANS, _TWO_R, _NO_DIST, _NO_IDS):
    _shared.flags.writeable = False


def _spread(v: np.ndarray) -> np.ndarray:
    """Each value's bits moved to the even bits (to interleave with another's)."""
    v = v.astype(np.uint64)
    for shift, mask in ((16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF),
                        (4, 0x0F0F0F0F0F0F0F0F), (2, 0x3333333333333333),
                        (1, 0x5555555555555555)):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


# the code of the cell (row, col) is _SPREAD[row] << 1 | _SPREAD[col]
_SPREAD: list[int] = _spread(np.arange(1 << BITS)).tolist()


def morton_codes(lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """Z-order codes at the finest depth, latitude bits the more significant; lat 90
    and lon 180 share the cells just below them."""
    rows = np.minimum(((lats + 90.0) * _LAT_SCALE).astype(np.int64), _SIDE - 1)
    cols = np.minimum(((lons + 180.0) * _LON_SCALE).astype(np.int64), _SIDE - 1)
    codes: np.ndarray = ((_spread(rows) << np.uint64(1)) | _spread(cols)).astype(np.int64)
    return codes


# what a search needs of its radius (see _cap), by index: a tuple is the fastest to read
Cap = tuple[float, float, float, bool, float, np.ndarray]
_CAPS: dict[float, Cap] = {}  # by radius: a handful of radii are ever asked for


def _cap(radius_m: float) -> Cap:
    """For a radius: half the box's height in degrees, the sine of the angular radius,
    the cosine bound of the chord test, whether a point that passes it is surely less
    than a quarter of the way round the earth away (so haversine needs no clamp), half
    the box's height in rows of the finest depth, and the bound as a 0-d array."""
    cap = _CAPS.get(radius_m)
    if cap is None:
        angular = radius_m / EARTH_RADIUS_M
        loose = angular * (1 + _ANGLE_SLACK) + _ANGLE_PAD
        bound = math.cos(loose) - _DOT_SLACK if loose < math.pi else -2.0
        dlat = math.degrees(angular) * (1 + _BOX_SLACK) + _BOX_PAD
        cap = (dlat, math.sin(angular), bound, bound > 0.0, dlat * _LAT_SCALE,
               np.array(bound))
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
    # the box's edges in rows and (unwrapped) columns of the finest depth
    y = (lat + 90.0) * _LAT_SCALE
    south, north = y - cap[4], y + cap[4]
    ratio = cap[1] / cos_lat
    if south <= 0.0 or north >= _SIDE or ratio >= 1.0:  # a pole, or every longitude
        return _cover_band(max(lat - cap[0], -90.0), min(lat + cap[0], 90.0))
    x = (lon + 180.0) * _LON_SCALE
    dx = math.asin(ratio) * _COLUMNS_PER_RADIAN + _COLUMN_PAD
    c0, c1 = math.floor(x - dx), math.floor(x + dx)  # dx < 90 degrees: c1 - c0 < _SIDE
    r0, r1 = int(south), int(north)
    # cells at least as large as the box: at most 2 x 2 of them; one depth finer if
    # that still takes at most MAX_COVER
    shift = ((r1 - r0) | (c1 - c0)).bit_length()
    if shift:
        finer = shift - 1
        if ((r1 >> finer) - (r0 >> finer) + 1) * ((c1 >> finer) - (c0 >> finer) + 1) <= MAX_COVER:
            shift = finer
    rows = range(r0 >> shift, (r1 >> shift) + 1)
    cols: Iterable[int] = range(c0 >> shift, (c1 >> shift) + 1)
    if c0 < 0 or c1 >= _SIDE:  # across the antimeridian
        wrap = (1 << (BITS - shift)) - 1
        cols = sorted({c & wrap for c in cols})
    return _ranges(shift, rows, cols)


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
    col_bits = [_SPREAD[c] for c in cols]
    bounds: list[int] = []
    for r in rows:
        row_bits = _SPREAD[r] << 1
        for c in col_bits:
            start = (row_bits | c) << size
            bounds += (start, start + step)
    return bounds


def _haversine(lat: float, lon: float, half_p2: np.ndarray, lons: np.ndarray,
               cos_p2: np.ndarray, clamp: bool) -> np.ndarray:
    """``haversine_np(lat, lon, lats, lons)`` to the bit, given half_p2 = np.radians(lats)
    * 0.5 and cos_p2 = np.cos(np.radians(lats)): the same IEEE operations on the same
    values in the same order, but for three that give the same doubles in fewer calls.

    Halving is exact, and so commutes with rounding: (p2 - p1) * 0.5 is p2 * 0.5 - p1 *
    0.5, and np.radians(x) * 0.5 is x * (pi / 180 * 0.5). (Only where a half is
    subnormal can they differ, and there the sine squared underflows to 0.0 either way,
    or the other operand is so much larger that both round alike.) ``clamp=False``
    leaves out the clamp of sqrt(a) to 1, which only a point near the antipode needs.
    """
    p1 = math.radians(lat)
    # the query's numbers as 0-d arrays, which numpy takes faster than Python floats
    half_p1, lon0, cos_p1 = np.array(p1 * 0.5), np.array(lon), np.array(math.cos(p1))
    a = (np.square(np.sin(half_p2 - half_p1))
         + cos_p2 * cos_p1 * np.square(np.sin((lons - lon0) * _HALF_RADIANS)))
    root = np.sqrt(a)
    distances: np.ndarray = _TWO_R * np.arcsin(np.minimum(_ONE, root) if clamp else root)
    return distances


def _haversine_few(lat: float, lon: float, points: list[list[float]]) -> list[float]:
    """What ``haversine_np`` gives for a few points ([radians(lat) * 0.5, lon,
    cos(radians(lat))] each), to the bit, in fewer numpy calls: the arithmetic of
    _haversine on Python floats (the same IEEE operations; square roots are correctly
    rounded in both, x ** 2 is x * x), and its sines and arcsines from numpy's own
    ufuncs, one call each for all the points."""
    p1 = math.radians(lat)
    half_p1, cos_p1 = p1 * 0.5, math.cos(p1)
    halves: list[float] = []
    for half_p2, lon2, _ in points:
        halves += (half_p2 - half_p1, (lon2 - lon) * _HALF_DEG_TO_RAD)
    sines = np.sin(np.array(halves)).tolist()
    roots: list[float] = []
    for i, (_, _, cos_p2) in enumerate(points):
        lat_sine, lon_sine = sines[2 * i], sines[2 * i + 1]
        root = math.sqrt(lat_sine * lat_sine + cos_p2 * cos_p1 * (lon_sine * lon_sine))
        roots.append(root if not root > 1.0 else 1.0)  # np.minimum(1.0, root), NaN too
    two_r = 2 * EARTH_RADIUS_M
    return [two_r * angle for angle in np.arcsin(np.array(roots)).tolist()]


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
    """The points in Z order (a point is its row); immutable but for tombstones."""

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
        self.points = np.empty((4, n), dtype=np.float64)
        self.points[_X] = cos_lat * np.cos(rlon)
        self.points[_Y] = cos_lat * np.sin(rlon)
        self.points[_Z] = np.sin(p2)
        self.points[_ROW] = np.arange(n, dtype=np.float64)
        self.distance_data = np.empty((n, 3), dtype=np.float64)
        self.distance_data[:, _HALF_P2] = p2 * 0.5
        self.distance_data[:, _LON] = lons
        self.distance_data[:, _COS] = cos_lat
        self.lats = lats
        self.unit_vectors = self.points[_X:_Z + 1]
        # where each cell of one coarse depth starts: a big radius's cells are runs of
        # them, found without a searchsorted (about two cells per point, at most 4 ** 10)
        depth = min(DIRECTORY_DEPTH, max(1, (n.bit_length() + 3) // 2))
        self.cell_shift = 2 * (BITS - depth)
        self.cell_step = 1 << self.cell_shift
        cells = np.arange((1 << 2 * depth) + 1, dtype=np.int64) << self.cell_shift
        self.directory = array("i" if n < 2 ** 31 else "q",
                               self.codes.searchsorted(cells).tolist())
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
        self.points[_X:_Z + 1, row] = np.nan
        self.distance_data[row, _HALF_P2] = np.nan

    def near(self, lat: float, lon: float, radius_m: float, first: int | None = None
             ) -> tuple[list[float], list[int]] | tuple[np.ndarray, np.ndarray]:
        """(haversine distances, rows) of a superset of the points within the radius, or
        with ``first``, of its ``first`` nearest: lists for a few, arrays for many."""
        cap = _CAPS.get(radius_m) or _cap(radius_m)
        rlat = math.radians(lat)
        cos_lat = math.cos(rlat)
        bounds = _cover(lat, lon, cap, cos_lat)
        if bounds[1] - bounds[0] >= self.cell_step:  # cells no smaller than the directory's
            directory, shift = self.directory, self.cell_shift
            edges = [directory[code >> shift] for code in bounds]
        else:
            edges = self.codes.searchsorted(bounds).tolist()
        starts, ends = edges[::2], edges[1::2]
        total = sum(ends) - sum(starts)
        if not total:
            return [], []
        rlon = math.radians(lon)
        cx, cy, cz = cos_lat * math.cos(rlon), cos_lat * math.sin(rlon), math.sin(rlat)
        points, bound = self.points, cap[2]
        if total <= FEW:  # the chord test in Python, on every candidate (cells are disjoint)
            spans = [(lo, hi) for lo, hi in zip(starts, ends) if lo < hi]
            rows: Iterable[int]
            if len(spans) == 1:  # most often: a slice costs less than a take
                lo, hi = spans[0]
                rows = range(lo, hi)
                xs, ys, zs = self.unit_vectors[:, lo:hi].tolist()
            else:
                rows = [row for lo, hi in spans for row in range(lo, hi)]
                xs, ys, zs = self.unit_vectors.take(rows, axis=1).tolist()
            picked = [row for row, x, y, z in zip(rows, xs, ys, zs)
                      if x * cx + y * cy + z * cz >= bound]  # NaN fails
            if not picked:
                return [], []
        else:  # in numpy, on the runs of rows
            runs = [(lo, hi) for lo, hi in zip(starts, ends) if lo < hi]
            lo, hi = min(runs)[0], max(runs)[1]
            if hi - lo - total <= GAP:  # close: test what lies between too, to copy nothing
                block = points[_X:_ROW + 1, lo:hi]
            else:
                block = np.concatenate([points[_X:_ROW + 1, lo:hi] for lo, hi in runs], axis=1)
            dots = np.dot(np.array((cx, cy, cz)), block[_X:_Z + 1])  # (faster than @)
            passed = dots >= cap[5]  # NaN fails
            if first and np.count_nonzero(passed) > first + PAGE_SLACK:
                # Only the `first` largest dot products (cosines of the angle, so in the
                # order of the distance but for rounding, which _NEAR_TIE covers) can
                # make the page: the distance is needed for no more than those.
                inside = dots[passed]  # no NaN
                cut = len(inside) - first
                passed = dots >= np.partition(inside, cut)[cut] - _NEAR_TIE
            chosen = block[_ROW][passed]
            if not len(chosen):
                return [], []
            if len(chosen) > PY_DISTANCES:
                many = chosen.astype(np.intp)
                return self._distances(lat, lon, many, not cap[3]), many
            picked = chosen.astype(np.intp).tolist()
        if len(picked) > PY_DISTANCES:
            many = np.array(picked)
            return self._distances(lat, lon, many, not cap[3]), many
        return _haversine_few(lat, lon, self.distance_data.take(picked, axis=0).tolist()), picked

    def _distances(self, lat: float, lon: float, rows: np.ndarray, clamp: bool) -> np.ndarray:
        near = self.distance_data.take(rows, axis=0)
        # columns strided: _haversine takes them only into exact IEEE operations, and
        # its sines and arcsines get fresh contiguous arrays
        return _haversine(lat, lon, near[:, _HALF_P2], near[:, _LON], near[:, _COS], clamp)


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
        lats, lons = tree.lats.tolist(), tree.distance_data[:, _LON].tolist()
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
        """(distances, ids) within radius, nearest first, ties by id: float64 metres,
        and the ids (str) in an object array.

        ``after`` skips everything up to and including that (distance, id);
        ``limit`` keeps only the first hits after it (a page).
        """
        if not radius_m >= 0:  # NaN too: nothing is within
            return _NO_DIST, _NO_IDS
        tree = self._tree
        near, rows = tree.near(lat, lon, radius_m, None if category or keyword or after
                               else limit)
        if isinstance(near, list):
            if not near and not self._delta:  # the most common answer: nothing
                return _NO_DIST, _NO_IDS
            dist, picked = near, rows
        else:
            rows = np.asarray(rows)  # an array too (near() gives lists or arrays, both)
            # many: cut in numpy to what the page can hold (those at `after`'s distance
            # that are not after it, and ties at the cut, included), then in Python
            if after is not None:
                later = near >= after[0]
                near, rows = near[later], rows[later]
            if (limit is not None and not category and not keyword
                    and len(near) > limit + PAGE_SLACK):
                k = limit + (int(np.count_nonzero(near == after[0])) if after else 0)
                if 0 < k < len(near):
                    kept = near <= np.partition(near, k - 1)[k - 1]
                    near, rows = near[kept], rows[kept]
            if not category and not keyword and not self._delta:
                page = _page(near, rows, tree.ids, radius_m, after, limit)
                if page is not None:
                    return page
            dist, picked = near.tolist(), rows.tolist()
        if category or keyword:
            categories, names = tree.categories, tree.names
            kept = [(d, r) for d, r in zip(dist, picked)
                    if (not category or categories[r] == category)
                    and (not keyword or keyword in names[r])]
            dist, picked = [d for d, _ in kept], [r for _, r in kept]
        hits = sorted(zip(dist, map(tree.ids.__getitem__, picked)))  # nearest first, ties by id
        if self._delta:
            extra = [p for p in self._delta.values()
                     if (not category or p.category == category)
                     and (not keyword or keyword in p.name_lower)]
            if extra:
                edist = haversine_np(lat, lon, np.array([p.lat for p in extra]),
                                     np.array([p.lon for p in extra])).tolist()
                hits = sorted(hits + [(d, p.id) for d, p in zip(edist, extra)])
        while hits and not hits[-1][0] <= radius_m:  # the few beyond it (no NaN gets here)
            hits.pop()
        if after is not None:
            del hits[:bisect.bisect_right(hits, after)]
        if limit is not None:
            del hits[limit:]
        if not hits:
            return _NO_DIST, _NO_IDS
        dists, found = zip(*hits)
        # ids as an object array of the str themselves: a unicode array of them costs
        # three times as much to make, and callers take them out with tolist()
        return np.array(dists), np.array(found, dtype=object)


def _page(dist: np.ndarray, rows: np.ndarray, ids: list[str], radius_m: float,
          after: tuple[float, str] | None, limit: int | None
          ) -> tuple[np.ndarray, np.ndarray] | None:
    """The page of many hits, ordered in numpy; None when two of them are at the same
    distance (they are ordered by id, which the caller does)."""
    order = dist.argsort(kind="stable")
    dist = dist[order]
    ds = dist.tolist()
    end = bisect.bisect_right(ds, radius_m)
    start = 0
    if after is not None:
        start = bisect.bisect_left(ds, after[0])
        if start < end and ds[start] == after[0]:
            return None
    stop = end if limit is None else min(end, start + limit)
    if stop <= start:
        return _NO_DIST, _NO_IDS
    if any(a == b for a, b in zip(ds[start:stop], ds[start + 1:stop + 1])):
        return None  # a tie on the page, or at its cut
    return dist[start:stop], np.array([ids[r] for r in rows[order[start:stop]].tolist()],
                                      dtype=object)


def brute_force(points: Sequence[IndexedPoint], lat: float, lon: float, radius_m: float
                ) -> list[tuple[float, str]]:
    """The oracle: haversine to every point, filter, sort by (distance, id)."""
    if not points:
        return []
    lats = np.array([p.lat for p in points])
    lons = np.array([p.lon for p in points])
    dist = haversine_np(lat, lon, lats, lons)
    return sorted((float(d), p.id) for d, p in zip(dist, points) if d <= radius_m)
