"""The only module that knows both routing's protobuf messages and its domain types."""

from __future__ import annotations

import math

import numpy as np

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from geoplex.routing.v1 import routing_pb2 as pb
from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers._runtime.latlng import location_from_pb
from geoplex.type.v1 import geo_pb2

from . import domain, encoded_polyline
from .graph import RoadGraph
from .guidance import Step
from .matching import MatchResult, TracePoint

MODES: dict[int, str] = {pb.TRAVEL_MODE_UNSPECIFIED: "car", pb.TRAVEL_MODE_DRIVE: "car",
         pb.TRAVEL_MODE_BICYCLE: "bicycle", pb.TRAVEL_MODE_WALK: "foot"}
MODE_NAMES = ("TRAVEL_MODE_DRIVE", "TRAVEL_MODE_BICYCLE", "TRAVEL_MODE_WALK")
TO_PB_MODE = {"car": pb.TRAVEL_MODE_DRIVE, "bicycle": pb.TRAVEL_MODE_BICYCLE,
              "foot": pb.TRAVEL_MODE_WALK}
MANEUVER_TYPES = {"depart": pb.Maneuver.TYPE_DEPART, "turn": pb.Maneuver.TYPE_TURN,
                  "new name": pb.Maneuver.TYPE_NEW_NAME,
                  "continue": pb.Maneuver.TYPE_CONTINUE,
                  "roundabout": pb.Maneuver.TYPE_ROUNDABOUT, "arrive": pb.Maneuver.TYPE_ARRIVE}
MODIFIERS = {"": pb.Maneuver.MODIFIER_UNSPECIFIED, "straight": pb.Maneuver.MODIFIER_STRAIGHT,
             "slight left": pb.Maneuver.MODIFIER_SLIGHT_LEFT, "left": pb.Maneuver.MODIFIER_LEFT,
             "sharp left": pb.Maneuver.MODIFIER_SHARP_LEFT,
             "slight right": pb.Maneuver.MODIFIER_SLIGHT_RIGHT,
             "right": pb.Maneuver.MODIFIER_RIGHT,
             "sharp right": pb.Maneuver.MODIFIER_SHARP_RIGHT,
             "uturn": pb.Maneuver.MODIFIER_UTURN}
CELL_STATUS = {"ok": pb.MatrixCell.STATUS_OK,
               "no_road_nearby": pb.MatrixCell.STATUS_NO_ROAD_NEARBY,
               "no_route": pb.MatrixCell.STATUS_NO_ROUTE}
MAX_SNAP_POINTS = 100
MAX_OBSERVATIONS = 100_000
MAX_VALID_FOR_S = 86_400.0


def mode_from_pb(value: int) -> str:
    mode = MODES.get(value)
    if mode is None:
        raise InvalidArgument("travel_mode", "unknown travel mode", allowed=MODE_NAMES)
    return mode


def point(location: geo_pb2.LatLng, has: bool, field: str) -> domain.Point:
    lat, lon = location_from_pb(location, has, field)
    return domain.Point(lat, lon)


def points(locations: list[geo_pb2.LatLng], field: str, limit: int,
           too_many: str = "TOO_MANY_POINTS") -> list[domain.Point]:
    if not 1 <= len(locations) <= limit:
        raise InvalidArgument(field, f"must hold 1..{limit} points (got {len(locations)})",
                              reason=too_many if locations else "REQUIRED_FIELD")
    return [point(p, True, f"{field}[{i}]") for i, p in enumerate(locations)]


def matrix_points(request: pb.ComputeRouteMatrixRequest, limit: int
                  ) -> tuple[list[domain.Point], list[domain.Point]]:
    """Origins and destinations, each 1..``limit`` (else MATRIX_TOO_LARGE naming the side)."""
    return (points(list(request.origins), "origins", limit, "MATRIX_TOO_LARGE"),
            points(list(request.destinations), "destinations", limit, "MATRIX_TOO_LARGE"))


def route_query_from_pb(request: pb.ComputeRouteRequest) -> domain.RouteQuery:
    origin = point(request.origin, request.HasField("origin"), "origin")
    destination = point(request.destination, request.HasField("destination"), "destination")
    if not 0 <= request.alternatives <= domain.MAX_ALTERNATIVES:
        raise InvalidArgument("alternatives", f"must be in 0..{domain.MAX_ALTERNATIVES}")
    avoid = ((domain.AVOID_TOLLS if request.avoid.tolls else 0)
             | (domain.AVOID_MOTORWAYS if request.avoid.motorways else 0)
             | (domain.AVOID_FERRIES if request.avoid.ferries else 0))
    departure = None
    if request.HasField("departure_time"):
        departure = request.departure_time.seconds + request.departure_time.nanos / 1e9
    return domain.RouteQuery(origin, destination, mode_from_pb(request.travel_mode),
                             request.traffic_aware, departure, request.alternatives, avoid,
                             request.include_segments)


def traffic_query_from_pb(request: pb.GetTrafficRequest) -> domain.TrafficQuery:
    """The region (checked by the app: it knows which are loaded), mode, box and limit."""
    mode = mode_from_pb(request.travel_mode)
    low = point(request.low, request.HasField("low"), "low")
    high = point(request.high, request.HasField("high"), "high")
    if low.lat > high.lat:
        raise InvalidArgument("high.latitude", "must not be below low.latitude (low is the "
                              "south-west corner, high the north-east)")
    if low.lon > high.lon:
        raise InvalidArgument("high.longitude", "must not be west of low.longitude (low is "
                              "the south-west corner, high the north-east)")
    limit = request.max_segments or domain.DEFAULT_TRAFFIC_SEGMENTS
    if not 1 <= limit <= domain.MAX_TRAFFIC_SEGMENTS:
        raise InvalidArgument("max_segments",
                              f"must be in 1..{domain.MAX_TRAFFIC_SEGMENTS:,} (0 means "
                              f"{domain.DEFAULT_TRAFFIC_SEGMENTS:,})")
    return domain.TrafficQuery(request.region, mode, low, high, limit)


def traffic_to_pb(answer: domain.TrafficAnswer) -> pb.GetTrafficResponse:
    out = pb.GetTrafficResponse(truncated=answer.truncated,
                                metric_version=answer.metric_version)
    add = out.segments.add
    for s in answer.segments:
        add(segment_id=s.segment_id, polyline=s.polyline, speed_kmh=round(s.speed_kmh, 2),
            free_flow_speed_kmh=round(s.free_flow_speed_kmh, 2))
    return out


def _latlng(lat: float, lon: float) -> geo_pb2.LatLng:
    return geo_pb2.LatLng(latitude=lat, longitude=lon)


def _set_duration(d: Duration, seconds: float) -> None:
    d.seconds, d.nanos = divmod(int(round(max(seconds, 0.0) * 1e9)), 1_000_000_000)


def _fill_step(s: pb.Step, step: Step) -> None:
    """One step, written field by field into the response (several times faster with
    upb than building each message from keyword arguments)."""
    m = step.maneuver
    s.name, s.ref, s.distance_meters = step.name, step.ref, round(step.distance_m, 1)
    _set_duration(s.duration, step.duration_s)
    pm = s.maneuver
    pm.type, pm.modifier = MANEUVER_TYPES[m.type], MODIFIERS[m.modifier]
    pm.location.latitude, pm.location.longitude = m.lat, m.lon
    pm.bearing_before, pm.bearing_after, pm.exit = m.bearing_before, m.bearing_after, m.exit


def step_to_pb(step: Step) -> pb.Step:
    out = pb.Step()
    _fill_step(out, step)
    return out


def _fill_route(r: pb.Route, route: domain.Route) -> None:
    r.distance_meters = round(route.distance_m, 1)
    _set_duration(r.duration, route.duration_s)
    _set_duration(r.static_duration, route.static_duration_s)
    r.polyline, r.summary = route.polyline, route.summary
    if route.segment_ids:
        r.segment_ids.extend(route.segment_ids)
        r.segment_distances_meters.extend(round(m, 2) for m in route.segment_distances_m)
        r.segment_free_flow_speeds_kmh.extend(round(v, 3) for v in route.segment_free_kmh)
    add = r.steps.add
    for step in route.steps:
        _fill_step(add(), step)


def route_to_pb(route: domain.Route) -> pb.Route:
    out = pb.Route()
    _fill_route(out, route)
    return out


def snapped_to_pb(s: domain.SnappedPoint) -> pb.SnappedPoint:
    return pb.SnappedPoint(location=_latlng(s.lat, s.lon),
                           distance_meters=round(s.distance_m, 2), name=s.name,
                           segment_ids=list(s.segment_ids), way_id=s.way_id)


def route_answer_to_pb(answer: domain.RouteAnswer) -> pb.ComputeRouteResponse:
    out = pb.ComputeRouteResponse(origin=snapped_to_pb(answer.origin),
                                  destination=snapped_to_pb(answer.destination),
                                  region=answer.region, metric_version=answer.metric_version)
    add = out.routes.add
    for route in answer.routes:
        _fill_route(add(), route)
    return out


def matrix_to_pb(answer: domain.MatrixAnswer) -> pb.ComputeRouteMatrixResponse:
    out = pb.ComputeRouteMatrixResponse(region=answer.region,
                                        metric_version=answer.metric_version)
    add = out.cells.add
    for i, row in enumerate(answer.rows):
        for j, c in enumerate(row):
            cell = add(origin_index=i, destination_index=j, status=CELL_STATUS[c.status],
                       distance_meters=round(c.distance_m, 1))
            _set_duration(cell.duration, c.duration_s)
    return out


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def regions_to_pb(regions: list[domain.RegionInfo]) -> pb.ListRegionsResponse:
    return pb.ListRegionsResponse(regions=[
        pb.Region(name=r.name, low=_latlng(r.low.lat, r.low.lon),
                  high=_latlng(r.high.lat, r.high.lon), source_checksum=r.checksum,
                  graphs=[pb.RegionGraph(travel_mode=TO_PB_MODE[g.mode], node_count=g.node_count,
                                         segment_count=g.segment_count,
                                         turn_count=g.turn_count, memory_bytes=g.memory_bytes,
                                         metric_version=g.metric_version,
                                         metric_time=_timestamp(g.metric_time),
                                         traffic_segments=g.traffic_segments)
                          for g in r.graphs])
        for r in regions])


def observations_from_pb(request: pb.UpdateTrafficRequest
                         ) -> tuple[list[domain.TrafficObservation], float | None]:
    """The observations and how long they hold (None: the server's default)."""
    if not request.region:
        raise InvalidArgument("region", "is required", reason="REQUIRED_FIELD")
    if not 1 <= len(request.observations) <= MAX_OBSERVATIONS:
        raise InvalidArgument("observations", f"must hold 1..{MAX_OBSERVATIONS:,} observations",
                              reason="REQUIRED_FIELD" if not request.observations else None)
    out = []
    for i, o in enumerate(request.observations):
        field = f"observations[{i}]"
        road = o.WhichOneof("road")
        speed = o.WhichOneof("speed")
        if road is None:
            raise InvalidArgument(f"{field}.road", "set segment_id or way_id",
                                  reason="REQUIRED_FIELD")
        if speed is None:
            raise InvalidArgument(f"{field}.speed", "set speed_factor or speed_kmh",
                                  reason="REQUIRED_FIELD")
        if speed == "speed_factor" and not (math.isfinite(o.speed_factor)
                                            and 0.02 <= o.speed_factor <= 1.5):
            raise InvalidArgument(f"{field}.speed_factor", "must be in 0.02..1.5")
        if speed == "speed_kmh" and not (math.isfinite(o.speed_kmh)
                                         and 0.1 <= o.speed_kmh <= 300):
            raise InvalidArgument(f"{field}.speed_kmh", "must be in 0.1..300")
        out.append(domain.TrafficObservation(
            segment_id=o.segment_id if road == "segment_id" else None,
            way_id=o.way_id if road == "way_id" else None,
            speed_factor=o.speed_factor if speed == "speed_factor" else None,
            speed_kmh=o.speed_kmh if speed == "speed_kmh" else None))
    valid_for: float | None = None
    if request.HasField("valid_for"):
        valid_for = request.valid_for.ToNanoseconds() / 1e9
        if not 1.0 <= valid_for <= MAX_VALID_FOR_S:
            raise InvalidArgument("valid_for", "must be 1 s..24 h")
    return out, valid_for


MAX_TRACE_POINTS = 5000


def trace_from_pb(request: pb.MatchTraceRequest) -> list[TracePoint]:
    """The trace's fixes, each located and timed, in time order (else INVALID_ARGUMENT
    naming the point)."""
    if not 1 <= len(request.points) <= MAX_TRACE_POINTS:
        raise InvalidArgument("points", f"must hold 1..{MAX_TRACE_POINTS} points",
                              reason="TOO_MANY_POINTS" if request.points else "REQUIRED_FIELD")
    out: list[TracePoint] = []
    for i, p in enumerate(request.points):
        field = f"points[{i}]"
        lat, lon = location_from_pb(p.location, p.HasField("location"), f"{field}.location")
        if not p.HasField("time"):
            raise InvalidArgument(f"{field}.time", "is required", reason="REQUIRED_FIELD")
        t = p.time.seconds + p.time.nanos / 1e9
        if out and t < out[-1].time:
            raise InvalidArgument(f"{field}.time", f"must not be before points[{i - 1}].time")
        if not (math.isfinite(p.accuracy_meters) and 0 <= p.accuracy_meters <= 10_000):
            raise InvalidArgument(f"{field}.accuracy_meters", "must be in 0..10000")
        out.append(TracePoint(lat, lon, t, p.accuracy_meters))
    return out


def match_to_pb(region: str, result: MatchResult, graph: RoadGraph) -> pb.MatchTraceResponse:
    out = pb.MatchTraceResponse(region=region, confidence=round(result.confidence, 4),
                                chains=result.chains)
    for f in result.fixes:
        point = out.points.add(matched=f.segment >= 0, distance_meters=round(f.distance_m, 2))
        point.location.latitude, point.location.longitude = f.lat, f.lon
        if f.segment >= 0:
            way = int(graph.seg_way[f.segment])
            point.segment_id, point.way_id = f.segment, int(graph.way_ids[way])
            point.name = graph.way_names[way]
    for t in result.traversals:
        way = int(graph.seg_way[t.segment])
        item = out.traversals.add(segment_id=t.segment, way_id=int(graph.way_ids[way]),
                                  distance_meters=round(t.metres, 1),
                                  speed_kmh=round(t.speed_mps * 3.6, 2))
        _set_duration(item.duration, t.seconds)
    matched = [f for f in result.fixes if f.segment >= 0]
    if matched:
        out.polyline = encoded_polyline.encode(np.array([f.lat for f in matched]),
                                               np.array([f.lon for f in matched]))
    return out
