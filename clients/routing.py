"""Typed async client for RoutingService.

    async with RoutingClient("127.0.0.1:50054") as rt:
        answer = await rt.route((60.1686, 24.9414), (60.1760, 24.9496), mode="drive")
        best = answer.routes[0]
        print(best.distance_meters, best.duration.ToTimedelta())
        for step in best.steps:
            print(step.maneuver.type, step.name, step.distance_meters)
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc.aio

from geoplex.routing.v1 import routing_pb2 as pb
from geoplex.routing.v1 import routing_pb2_grpc
from geoplex.type.v1.geo_pb2 import LatLng

from .channel import BaseClient, ChannelOptions

Route = pb.Route
Step = pb.Step
Maneuver = pb.Maneuver
TravelMode = pb.TravelMode
Point = tuple[float, float]  # (latitude, longitude)

MODES: dict[str, pb.TravelMode.ValueType] = {"drive": pb.TRAVEL_MODE_DRIVE, "car": pb.TRAVEL_MODE_DRIVE,
         "bicycle": pb.TRAVEL_MODE_BICYCLE, "bike": pb.TRAVEL_MODE_BICYCLE,
         "walk": pb.TRAVEL_MODE_WALK, "foot": pb.TRAVEL_MODE_WALK}


def travel_mode(mode: str | int) -> pb.TravelMode.ValueType:
    """``"drive"``/``"car"``, ``"bicycle"``/``"bike"``, ``"walk"``/``"foot"``, or the enum."""
    if isinstance(mode, int):
        return pb.TravelMode.ValueType(mode)
    try:
        return MODES[mode.lower()]
    except KeyError:
        raise ValueError(f"unknown travel mode {mode!r}; use one of "
                         f"{', '.join(sorted(MODES))}") from None


def _latlng(point: Point) -> LatLng:
    return LatLng(latitude=point[0], longitude=point[1])


class RoutingClient(BaseClient):
    def __init__(self, target: str | grpc.aio.Channel, options: ChannelOptions | None = None,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> None:
        super().__init__(target, options, interceptors)
        self.stub = routing_pb2_grpc.RoutingServiceStub(self.channel)

    async def route(self, origin: Point, destination: Point, *, mode: str | int = "drive",
                    traffic_aware: bool = False, alternatives: int = 0,
                    avoid_tolls: bool = False, avoid_motorways: bool = False,
                    avoid_ferries: bool = False, departure_time: float | None = None,
                    include_segments: bool = False,
                    timeout: float | None = None) -> pb.ComputeRouteResponse:
        """The fastest route (plus up to two ``alternatives``) between two points;
        ``include_segments`` adds each route's directed segment ids (``segment_ids``)."""
        request = pb.ComputeRouteRequest(
            origin=_latlng(origin), destination=_latlng(destination),
            travel_mode=travel_mode(mode), traffic_aware=traffic_aware,
            alternatives=alternatives, include_segments=include_segments,
            avoid=pb.RouteAvoid(tolls=avoid_tolls, motorways=avoid_motorways,
                                ferries=avoid_ferries))
        if departure_time is not None:
            request.departure_time.FromNanoseconds(int(departure_time * 1e9))
        return await self.call(self.stub.ComputeRoute, request, timeout=timeout)

    async def matrix(self, origins: Sequence[Point], destinations: Sequence[Point], *,
                     mode: str | int = "drive", traffic_aware: bool = False,
                     durations_only: bool = False, timeout: float | None = None
                     ) -> pb.ComputeRouteMatrixResponse:
        """Durations and distances from every origin to every destination (up to 100 x 100);
        ``durations_only`` skips the distances, which cost a path per cell."""
        request = pb.ComputeRouteMatrixRequest(
            origins=[_latlng(p) for p in origins],
            destinations=[_latlng(p) for p in destinations],
            travel_mode=travel_mode(mode), traffic_aware=traffic_aware,
            durations_only=durations_only)
        return await self.call(self.stub.ComputeRouteMatrix, request, timeout=timeout)

    async def match_trace(self, points: Sequence[tuple[float, float, float]], *,
                          accuracy_m: float = 0.0, mode: str | int = "drive",
                          timeout: float | None = None) -> pb.MatchTraceResponse:
        """Map-match ``points`` ((lat, lng, unix time) in time order): the road under each,
        the segments driven with their speeds, and a confidence."""
        request = pb.MatchTraceRequest(travel_mode=travel_mode(mode))
        for lat, lng, t in points:
            p = request.points.add(accuracy_meters=accuracy_m)
            p.location.latitude, p.location.longitude = lat, lng
            p.time.FromNanoseconds(int(round(t * 1e9)))
        return await self.call(self.stub.MatchTrace, request, timeout=timeout)

    async def snap(self, points: Sequence[Point], *, mode: str | int = "drive",
                   timeout: float | None = None) -> pb.SnapToRoadsResponse:
        """The nearest point on a road usable by ``mode``, for each point."""
        request = pb.SnapToRoadsRequest(points=[_latlng(p) for p in points],
                                        travel_mode=travel_mode(mode))
        return await self.call(self.stub.SnapToRoads, request, timeout=timeout)

    async def regions(self, *, timeout: float | None = None) -> list[pb.Region]:
        response = await self.call(self.stub.ListRegions, pb.ListRegionsRequest(),
                                   timeout=timeout)
        return list(response.regions)

    async def get_traffic(self, region: str, low: Point, high: Point, *,
                          mode: str | int = "drive", max_segments: int = 0,
                          timeout: float | None = None) -> pb.GetTrafficResponse:
        """The segments inside the box (``low``: south-west, ``high``: north-east corner)
        whose live speed differs from free flow, slowest by share first; at most
        ``max_segments`` (0: the server's 2,000), ``truncated`` when there were more."""
        request = pb.GetTrafficRequest(region=region, travel_mode=travel_mode(mode),
                                       low=_latlng(low), high=_latlng(high),
                                       max_segments=max_segments)
        return await self.call(self.stub.GetTraffic, request, timeout=timeout)

    async def update_traffic(self, region: str, observations: Sequence[pb.TrafficObservation],
                             *, mode: str | int = "drive", valid_for_s: float | None = None,
                             token: str | None = None, timeout: float | None = None
                             ) -> pb.UpdateTrafficResponse:
        """Apply observed speeds (admin); answers once routes use them."""
        request = pb.UpdateTrafficRequest(region=region, travel_mode=travel_mode(mode),
                                          observations=list(observations))
        if valid_for_s is not None:
            request.valid_for.FromNanoseconds(int(valid_for_s * 1e9))
        return await self.call(self.stub.UpdateTraffic, request, token=token, timeout=timeout)


def observation(*, segment_id: int | None = None, way_id: int | None = None,
                speed_factor: float | None = None,
                speed_kmh: float | None = None) -> pb.TrafficObservation:
    """One traffic observation: a segment or a way, and a speed factor or a speed."""
    if (segment_id is None) == (way_id is None):
        raise ValueError("give exactly one of segment_id and way_id")
    if (speed_factor is None) == (speed_kmh is None):
        raise ValueError("give exactly one of speed_factor and speed_kmh")
    obs = pb.TrafficObservation()
    if segment_id is not None:
        obs.segment_id = segment_id
    else:
        assert way_id is not None
        obs.way_id = way_id
    if speed_factor is not None:
        obs.speed_factor = speed_factor
    else:
        assert speed_kmh is not None
        obs.speed_kmh = speed_kmh
    return obs
