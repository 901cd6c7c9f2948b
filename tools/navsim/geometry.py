"""Polylines in metres: positions along a route, where one route runs along another, noise.

A :class:`Line` is a route's polyline projected onto a local plane (equirectangular about
a fixed origin: metres east and north, exact to well under a metre across a city), with
the cumulative distance at each vertex, so "the point 1,234 m along the route" and "the
stretches of this route that drive that road, in its direction" are cheap numpy work.

Pure: no gRPC, no servers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
Point = tuple[float, float]  # (latitude, longitude)

EARTH_M_PER_DEG = 6_371_008.8 * math.pi / 180.0


@dataclass(frozen=True, slots=True)
class Frame:
    """The local plane: metres east/north of (lat0, lon0)."""

    lat0: float
    lon0: float

    @property
    def kx(self) -> float:
        return EARTH_M_PER_DEG * math.cos(math.radians(self.lat0))

    def to_xy(self, points: Sequence[Point]) -> tuple[F64, F64]:
        a = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return (a[:, 1] - self.lon0) * self.kx, (a[:, 0] - self.lat0) * EARTH_M_PER_DEG

    def to_point(self, x: float, y: float) -> Point:
        return (self.lat0 + y / EARTH_M_PER_DEG, self.lon0 + x / self.kx)


class Line:
    """A polyline with cumulative distances (metres) along it."""

    def __init__(self, points: Sequence[Point], frame: Frame | None = None) -> None:
        pts = [p for i, p in enumerate(points) if i == 0 or p != points[i - 1]]
        if not pts:
            raise ValueError("a line needs at least one point")
        if len(pts) == 1:
            pts = [pts[0], pts[0]]
        self.points: list[Point] = pts
        self.frame = frame or Frame(pts[0][0], pts[0][1])
        self.x, self.y = self.frame.to_xy(pts)
        seg = np.hypot(np.diff(self.x), np.diff(self.y))
        self.cum: F64 = np.concatenate([[0.0], np.cumsum(seg)])

    @property
    def length_m(self) -> float:
        return float(self.cum[-1])

    def _locate(self, along_m: float) -> tuple[int, float]:
        d = min(max(along_m, 0.0), self.length_m)
        i = int(np.searchsorted(self.cum, d, side="right")) - 1
        i = min(max(i, 0), len(self.cum) - 2)
        span = self.cum[i + 1] - self.cum[i]
        return i, (d - self.cum[i]) / span if span > 0 else 0.0

    def xy_at(self, along_m: float) -> tuple[float, float]:
        i, f = self._locate(along_m)
        return (float(self.x[i] + (self.x[i + 1] - self.x[i]) * f),
                float(self.y[i] + (self.y[i + 1] - self.y[i]) * f))

    def at(self, along_m: float) -> Point:
        """The point ``along_m`` metres from the start (clamped to the line)."""
        return self.frame.to_point(*self.xy_at(along_m))

    def bearing_at(self, along_m: float) -> float:
        """Direction of travel there, radians (atan2 of north over east)."""
        i, _ = self._locate(along_m)
        return math.atan2(float(self.y[i + 1] - self.y[i]), float(self.x[i + 1] - self.x[i]))

    def sub(self, start_m: float, end_m: float) -> Line:
        """The part between two distances along it (same frame)."""
        start_m, end_m = max(0.0, start_m), min(self.length_m, end_m)
        inner = [self.points[k] for k in range(len(self.points))
                 if start_m < self.cum[k] < end_m]
        return Line([self.at(start_m), *inner, self.at(end_m)], self.frame)

    def samples(self, every_m: float) -> F64:
        """Distances along it every ``every_m`` metres, the end included."""
        n = max(1, math.ceil(self.length_m / every_m))
        return np.linspace(0.0, self.length_m, n + 1)

    def nearest(self, xs: F64, ys: F64) -> tuple[F64, F64]:
        """For points (in this frame): (distance to the line, bearing of the line there)."""
        ax, ay = self.x[:-1], self.y[:-1]
        dx, dy = np.diff(self.x), np.diff(self.y)
        ll = np.maximum(dx * dx + dy * dy, 1e-12)
        px, py = xs[:, None], ys[:, None]
        t = np.clip(((px - ax) * dx + (py - ay) * dy) / ll, 0.0, 1.0)
        dist = np.hypot(px - (ax + t * dx), py - (ay + t * dy))
        k = np.argmin(dist, axis=1)
        rows = np.arange(len(xs))
        return dist[rows, k], np.arctan2(dy[k], dx[k])


def _aligned(a: F64, b: F64, max_deg: float) -> npt.NDArray[np.bool_]:
    diff = np.abs((a - b + math.pi) % (2 * math.pi) - math.pi)
    result: npt.NDArray[np.bool_] = diff <= math.radians(max_deg)
    return result


def _on(route: Line, road: Line, every_m: float, tol_m: float, max_deg: float
        ) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Distances along ``route`` every ``every_m`` and whether each is on ``road``, driven
    in its direction (within ``tol_m`` of it, heading within ``max_deg``)."""
    along = route.samples(every_m)
    pts = [route.xy_at(float(d)) for d in along]
    xs = np.array([p[0] for p in pts])
    ys = np.array([p[1] for p in pts])
    xs, ys = _reframe(route, road, xs, ys)
    dist, road_bearing = road.nearest(xs, ys)
    heading = np.array([route.bearing_at(float(d)) for d in along])
    return along, (dist <= tol_m) & _aligned(heading, road_bearing, max_deg)


def _reframe(src: Line, dst: Line, xs: F64, ys: F64) -> tuple[F64, F64]:
    if src.frame == dst.frame:
        return xs, ys
    lat = src.frame.lat0 + ys / EARTH_M_PER_DEG
    lon = src.frame.lon0 + xs / src.frame.kx
    return (lon - dst.frame.lon0) * dst.frame.kx, (lat - dst.frame.lat0) * EARTH_M_PER_DEG


def stretches_along(route: Line, road: Line, *, tol_m: float = 12.0, max_deg: float = 40.0,
                    every_m: float = 5.0, min_m: float = 30.0, gap_m: float = 25.0
                    ) -> list[tuple[float, float]]:
    """Where ``route`` drives along ``road`` in the road's direction: (start, end) metres
    along ``route``, each at least ``min_m`` long; gaps shorter than ``gap_m`` (a junction,
    a kink) are bridged."""
    along, on = _on(route, road, every_m, tol_m, max_deg)
    runs: list[list[float]] = []
    for d, hit in zip(along.tolist(), on.tolist()):
        if not hit:
            continue
        if runs and d - runs[-1][1] <= gap_m:
            runs[-1][1] = d
        else:
            runs.append([d, d])
    return [(a, b) for a, b in runs if b - a >= min_m]


def coverage(route: Line, road: Line, *, tol_m: float = 12.0, max_deg: float = 40.0,
             every_m: float = 10.0) -> float:
    """The share (0..1) of ``road`` that ``route`` drives, in the road's direction."""
    _, on = _on(road, route, every_m, tol_m, max_deg)
    return float(np.count_nonzero(on)) / len(on)


def in_stretches(along_m: float, stretches: Sequence[tuple[float, float]]) -> bool:
    """Whether ``along_m`` is in one of the half-open ``[start, end)`` stretches."""
    return any(a <= along_m < b for a, b in stretches)


class GpsNoise:
    """A receiver's error: per axis a first-order Gauss-Markov process (standard deviation
    ``sigma_m``, correlation time ``tau_s``), at most ``max_m`` metres in all.

    Real GPS error drifts slowly (multipath, the atmosphere) rather than jumping about
    independently each second; ``tau_s=0`` gives independent (white) noise, the worst
    case for a map matcher watching a car crawl.
    """

    def __init__(self, rng: random.Random, sigma_m: float, max_m: float,
                 tau_s: float = 10.0) -> None:
        self.rng, self.sigma_m, self.max_m, self.tau_s = rng, sigma_m, max_m, tau_s
        self.east, self.north = rng.gauss(0.0, sigma_m), rng.gauss(0.0, sigma_m)

    def step(self, seconds: float) -> tuple[float, float]:
        """The error (east, north metres) ``seconds`` after the last one."""
        keep = math.exp(-seconds / self.tau_s) if self.tau_s > 0 else 0.0
        fresh = self.sigma_m * math.sqrt(1.0 - keep * keep)
        self.east = keep * self.east + self.rng.gauss(0.0, fresh)
        self.north = keep * self.north + self.rng.gauss(0.0, fresh)
        r = math.hypot(self.east, self.north)
        if r > self.max_m:
            self.east, self.north = self.east * self.max_m / r, self.north * self.max_m / r
        return self.east, self.north

    def apply(self, point: Point, seconds: float) -> Point:
        """``point`` as the receiver reports it, ``seconds`` after its last fix."""
        east, north = self.step(seconds)
        return (point[0] + north / EARTH_M_PER_DEG,
                point[1] + east / (EARTH_M_PER_DEG * math.cos(math.radians(point[0]))))


def distance_m(a: Point, b: Point) -> float:
    """Metres between two nearby points (equirectangular)."""
    kx = EARTH_M_PER_DEG * math.cos(math.radians((a[0] + b[0]) / 2))
    return math.hypot((b[1] - a[1]) * kx, (b[0] - a[0]) * EARTH_M_PER_DEG)
