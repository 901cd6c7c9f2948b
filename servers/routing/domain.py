"""Routing's domain: what a query asks, what an answer holds, what can go wrong.

Pure Python. Errors never carry a location: a distance to the nearest road is
given, never the point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from geoplex.servers._runtime.errors import FailedPrecondition, NotFound

from .guidance import Step

AVOID_TOLLS = 1
AVOID_MOTORWAYS = 2
AVOID_FERRIES = 4
MAX_ALTERNATIVES = 2
DEFAULT_TRAFFIC_SEGMENTS = 2000
MAX_TRAFFIC_SEGMENTS = 10_000


class NoRoadNearby(FailedPrecondition):
    def __init__(self, field: str, distance_m: float | None, limit_m: float) -> None:
        if distance_m is None:
            message = f"{field}: no loaded region covers this point"
            metadata = {"field": field, "max_snap_distance_m": f"{limit_m:.0f}"}
        else:
            message = (f"{field}: the nearest usable road is {distance_m:.0f} m away, "
                       f"farther than the {limit_m:.0f} m limit")
            metadata = {"field": field, "distance_m": f"{distance_m:.0f}",
                        "max_snap_distance_m": f"{limit_m:.0f}"}
        super().__init__(message, reason="NO_ROAD_NEARBY", metadata=metadata)


class NoRoute(NotFound):
    def __init__(self, why: str) -> None:
        super().__init__(f"no route: {why}", reason="NO_ROUTE")


@dataclass(frozen=True, slots=True)
class Point:
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class SnappedPoint:
    lat: float
    lon: float
    distance_m: float
    name: str
    segment_ids: tuple[int, ...]
    way_id: int


@dataclass(frozen=True, slots=True)
class RouteQuery:
    origin: Point
    destination: Point
    mode: str
    traffic_aware: bool = False
    departure_time: float | None = None   # unix seconds; None: now
    alternatives: int = 0
    avoid: int = 0                          # AVOID_* bits
    include_segments: bool = False          # fill Route.segment_ids (and their metres, speeds)


@dataclass(frozen=True, slots=True)
class Route:
    distance_m: float
    duration_s: float
    static_duration_s: float
    polyline: str          # Google's encoded polyline, precision 5
    steps: list[Step]
    summary: str
    segment_ids: tuple[int, ...] = ()  # the directed segments driven, in order (on request)
    segment_distances_m: tuple[float, ...] = ()  # metres driven on each (the ends in part)
    segment_free_kmh: tuple[float, ...] = ()     # each one's free-flow speed


@dataclass(frozen=True, slots=True)
class RouteAnswer:
    region: str
    routes: list[Route]
    origin: SnappedPoint
    destination: SnappedPoint
    metric_version: int


@dataclass(frozen=True, slots=True)
class MatrixCell:
    status: str                             # "ok", "no_road_nearby", "no_route"
    distance_m: float = 0.0
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class MatrixAnswer:
    region: str
    rows: list[list[MatrixCell]]
    metric_version: int


@dataclass(frozen=True, slots=True)
class TrafficObservation:
    segment_id: int | None = None
    way_id: int | None = None
    speed_factor: float | None = None
    speed_kmh: float | None = None


@dataclass(frozen=True, slots=True)
class TrafficQuery:
    region: str
    mode: str
    low: Point             # the box's south-west corner
    high: Point            # its north-east corner
    max_segments: int


@dataclass(frozen=True, slots=True)
class TrafficSegment:
    segment_id: int
    polyline: str
    speed_kmh: float
    free_flow_speed_kmh: float


@dataclass(frozen=True, slots=True)
class TrafficAnswer:
    segments: list[TrafficSegment]
    truncated: bool
    metric_version: int


@dataclass(frozen=True, slots=True)
class GraphInfo:
    mode: str
    node_count: int
    segment_count: int
    turn_count: int
    memory_bytes: int
    metric_version: int
    metric_time: float
    traffic_segments: int


@dataclass(frozen=True, slots=True)
class RegionInfo:
    name: str
    low: Point
    high: Point
    checksum: str
    graphs: list[GraphInfo] = field(default_factory=list)
