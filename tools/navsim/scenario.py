"""The congestion scenario: which arterial to slow, the routes that watch it, chosen by seed.

:func:`choose_scenario` draws pairs of points A, B in the middle of the region (seeded),
asks routing for the free-flow route A -> B with alternatives, and takes the longest
stretch of it on one named road (consecutive steps with the same road number or name,
:func:`named_stretches`) that is 0.7..3 km long and, where the road classes are known
(the region's OSM network file), mostly trunk, primary or secondary. It keeps that
stretch when

- a *probe* route from its first to its last point drives it end to end (the ETA "of a
  route through the slowed road");
- one of the alternatives of A -> B leaves it (covers under a third of it), is at least
  8 % slower in free flow (so normal traffic never flips to it) and faster than the
  route through the arterial once the arterial runs at ``fraction`` of its speed, even
  if only half of that slowdown is seen (so the router must prefer it while congested).

The first draw that passes wins: the same seed, data and router give the same scenario.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polyline

from geoplex.clients.errors import FailedPreconditionError, NotFoundError
from geoplex.clients.routing import Route, RoutingClient

from .geometry import Line, Point, coverage, distance_m

ARTERIAL_CLASSES = frozenset({"trunk", "primary", "secondary"})
MIN_ARTERIAL_M = 700.0
MAX_ARTERIAL_M = 3000.0
TRIM_M = 40.0              # off each end of the stretch: away from the junctions
PROBE_COVERAGE = 0.9       # the probe must drive this much of the arterial
DETOUR_COVERAGE = 1 / 3    # a detour drives at most this much of it
DETOUR_MIN_EXTRA = 0.08    # a detour is this much slower than the arterial in free flow
DETOUR_MARGIN = 0.5        # ...and faster with this share of the slowdown seen


class NoScenario(Exception):
    """No arterial with a detour was found in the draws made."""


@dataclass(frozen=True, slots=True)
class StepInfo:
    label: str             # road number, else name ("" for an unnamed way)
    distance_m: float
    seconds: float
    name: str = ""         # the street's name


@dataclass(frozen=True, slots=True)
class Stretch:
    """Consecutive steps on one named road: where they are along the route polyline."""

    label: str
    start_m: float
    end_m: float
    seconds: float

    @property
    def length_m(self) -> float:
        return self.end_m - self.start_m


def step_infos(route: Route) -> list[StepInfo]:
    return [StepInfo(s.ref or s.name, s.distance_meters,
                     s.duration.ToTimedelta().total_seconds(), s.name) for s in route.steps]


def named_stretches(steps: Sequence[StepInfo], line_length_m: float) -> list[Stretch]:
    """Runs of consecutive steps with the same non-empty label, longest first; the steps'
    distances are scaled onto the polyline (its length may differ by a few metres)."""
    total = sum(s.distance_m for s in steps)
    scale = line_length_m / total if total > 0 else 0.0
    out: list[Stretch] = []
    at = 0.0
    run: list[float] | None = None   # [start, end, seconds]
    label = ""
    for s in steps:
        if s.label and run is not None and s.label == label:
            run[1] += s.distance_m * scale
            run[2] += s.seconds
        else:
            if run is not None and label:
                out.append(Stretch(label, run[0], run[1], run[2]))
            label = s.label
            run = [at, at + s.distance_m * scale, s.seconds]
        at += s.distance_m * scale
    if run is not None and label:
        out.append(Stretch(label, run[0], run[1], run[2]))
    return sorted(out, key=lambda r: -r.length_m)


def decode(route: Route) -> list[Point]:
    return [(float(lat), float(lon)) for lat, lon in polyline.decode(route.polyline, 5)]


def seconds(route: Route) -> float:
    return route.duration.ToTimedelta().total_seconds()


@dataclass(frozen=True, slots=True)
class Scenario:
    seed: int
    region: str
    fraction: float
    road: str                   # the arterial's road number or name
    road_classes: dict[str, int]  # OSM highway class -> sampled points on it
    arterial: list[Point]       # its polyline, in the direction that is slowed
    arterial_m: float
    trip_origin: Point          # A -> B: its best route drives the arterial
    trip_destination: Point
    trip_free_s: float
    trip_m: float
    probe_origin: Point         # along the arterial, end to end
    probe_destination: Point
    probe_free_s: float
    detour_free_s: float        # the alternative that leaves it, free flow
    detour_coverage: float
    attempts: int

    @property
    def arterial_line(self) -> Line:
        return Line(self.arterial)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def road_classes(network_path: Path) -> dict[int, str]:
    """OSM way id -> highway class, from a region's GeoJSON network file."""
    from geoplex.infra import data

    out: dict[int, str] = {}
    for feature in data.read_road_network(network_path).get("features", ()):
        raw = feature.get("id") or (feature.get("properties") or {}).get("@id")
        highway = (feature.get("properties") or {}).get("highway")
        if isinstance(raw, str) and raw.startswith("way/") and raw[4:].isdigit() and highway:
            out[int(raw[4:])] = str(highway)
    return out


def _draw(rng: random.Random, low: Point, high: Point, inner: float) -> Point:
    """A point in the middle ``inner`` share of the box, each way."""
    lat_mid, lon_mid = (low[0] + high[0]) / 2, (low[1] + high[1]) / 2
    half_lat, half_lon = (high[0] - low[0]) * inner / 2, (high[1] - low[1]) * inner / 2
    return (rng.uniform(lat_mid - half_lat, lat_mid + half_lat),
            rng.uniform(lon_mid - half_lon, lon_mid + half_lon))


async def region_box(routing: RoutingClient, region: str) -> tuple[Point, Point]:
    for r in await routing.regions(timeout=10):
        if r.name == region:
            return (r.low.latitude, r.low.longitude), (r.high.latitude, r.high.longitude)
    raise NoScenario(f"routing has no region {region!r} loaded")


async def _classes_along(routing: RoutingClient, arterial: Line,
                         classes: Mapping[int, str]) -> Counter[str]:
    every = max(25.0, arterial.length_m / 60)
    points = [arterial.at(float(d)) for d in arterial.samples(every)][:100]
    snapped = await routing.snap(points, timeout=10)
    return Counter(classes.get(p.way_id, "unknown") for p in snapped.points)


async def choose_scenario(routing: RoutingClient, *, seed: int, fraction: float,
                          region: str = "gothenburg", classes: Mapping[int, str] | None = None,
                          attempts: int = 150,
                          progress: Callable[[str], None] = lambda _m: None) -> Scenario:
    """The first seeded draw with an arterial that has a detour (see the module doc)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("the congestion fraction must be between 0 and 1")
    low, high = await region_box(routing, region)
    rng = random.Random(seed)
    for attempt in range(1, attempts + 1):
        a, b = _draw(rng, low, high, 0.5), _draw(rng, low, high, 0.5)
        if not 2500.0 <= distance_m(a, b) <= 7000.0:
            continue
        try:
            answer = await routing.route(a, b, alternatives=2, timeout=10)
        except (FailedPreconditionError, NotFoundError):
            continue  # in the sea, or nothing connects them
        best = answer.routes[0]
        line = Line(decode(best))
        for stretch in named_stretches(step_infos(best), line.length_m):
            if not MIN_ARTERIAL_M <= stretch.length_m <= MAX_ARTERIAL_M:
                continue
            found = await _try_stretch(routing, answer.routes, line, stretch, fraction, classes)
            if found is None:
                continue
            arterial, seen, probe, detour = found
            origin, destination = answer.origin.location, answer.destination.location
            scenario = Scenario(
                seed=seed, region=region, fraction=fraction, road=stretch.label,
                road_classes=dict(seen), arterial=arterial.points,
                arterial_m=arterial.length_m,
                trip_origin=(origin.latitude, origin.longitude),
                trip_destination=(destination.latitude, destination.longitude),
                trip_free_s=seconds(best), trip_m=best.distance_meters,
                probe_origin=arterial.at(0.0), probe_destination=arterial.at(arterial.length_m),
                probe_free_s=seconds(probe), detour_free_s=seconds(detour[0]),
                detour_coverage=detour[1], attempts=attempt)
            progress(f"scenario (seed {seed}, draw {attempt}): {stretch.label}, "
                     f"{arterial.length_m:,.0f} m, free flow {scenario.probe_free_s:.0f} s; "
                     f"trip {scenario.trip_free_s:.0f} s, detour {scenario.detour_free_s:.0f} s")
            return scenario
    raise NoScenario(f"no arterial with a detour in {attempts} draws (seed {seed}); "
                     "try another --seed")


async def _try_stretch(routing: RoutingClient, routes: Sequence[Route], line: Line,
                       stretch: Stretch, fraction: float, classes: Mapping[int, str] | None
                       ) -> tuple[Line, Counter[str], Route, tuple[Route, float]] | None:
    arterial = line.sub(stretch.start_m + TRIM_M, stretch.end_m - TRIM_M)
    seen: Counter[str] = Counter()
    if classes is not None:
        seen = await _classes_along(routing, arterial, classes)
        if sum(seen[c] for c in ARTERIAL_CLASSES) < 0.8 * sum(seen.values()):
            return None
    try:
        probe = (await routing.route(arterial.at(0.0), arterial.at(arterial.length_m),
                                     timeout=10)).routes[0]
    except (FailedPreconditionError, NotFoundError):
        return None
    if coverage(Line(decode(probe)), arterial) < PROBE_COVERAGE:
        return None
    best_s = seconds(routes[0])
    penalty = seconds(probe) * (1.0 / fraction - 1.0)
    for alt in routes[1:]:
        share = coverage(Line(decode(alt)), arterial)
        alt_s = seconds(alt)
        if share <= DETOUR_COVERAGE and best_s * (1 + DETOUR_MIN_EXTRA) <= alt_s \
                <= best_s + DETOUR_MARGIN * penalty:
            return arterial, seen, probe, (alt, share)
    return None


def congested_trip_s(scenario: Scenario) -> float:
    """The trip's ETA through the arterial with all of it at ``fraction`` of its speed."""
    return scenario.trip_free_s + scenario.probe_free_s * (1.0 / scenario.fraction - 1.0)

