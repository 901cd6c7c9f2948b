"""Navigation sessions without servers: progress along a route, the off-route and arrival
rules, the reroute threshold, the segment index, the traffic diff and the bounded queue,
and the navigator over a fake routing service."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import polyline
import pytest

from geoplex.maps.v1 import maps_pb2 as pb
from geoplex.routing.v1 import routing_pb2 as rpb
from geoplex.servers._runtime.errors import InvalidArgument, ResourceExhausted
from geoplex.servers.maps.locations import Fix
from geoplex.servers.maps.navigation import (
    ARRIVED,
    FASTER_ROUTE,
    OFF_ROUTE,
    PROGRESS,
    STARTED,
    TRAFFIC,
    Guidance,
    LatestQueue,
    NavigateQuery,
    Navigator,
    SessionIndex,
    Track,
    Update,
    decode_polyline,
    query_from_pb,
    should_reroute,
    speed_changes,
    update_to_pb,
)
from polling import eventually

M_PER_DEG_LAT = math.radians(1.0) * 6_371_008.8
LAT0, LON0 = 60.0, 24.0


def north(metres: float, lat: float = LAT0) -> float:
    return lat + metres / M_PER_DEG_LAT


def east(metres: float, lon: float = LON0, lat: float = LAT0) -> float:
    return lon + metres / (M_PER_DEG_LAT * math.cos(math.radians(lat)))


def line_route(*, lon: float = LON0, edges: int = 10, edge_m: float = 100.0,
               duration_s: float = 100.0, first_segment: int = 100,
               steps: list[tuple[float, float]] | None = None) -> rpb.Route:
    """A route due north from (LAT0, lon): ``edges`` segments of ``edge_m``."""
    points = [(north(k * edge_m), lon) for k in range(edges + 1)]
    route = rpb.Route(distance_meters=edges * edge_m, polyline=polyline.encode(points, 5),
                      segment_ids=list(range(first_segment, first_segment + edges)))
    route.duration.FromNanoseconds(int(duration_s * 1e9))
    for distance, seconds in steps or [(edges * edge_m, duration_s)]:
        step = route.steps.add(distance_meters=distance)
        step.duration.FromNanoseconds(int(seconds * 1e9))
    return route


def guidance(route: rpb.Route | None = None) -> Guidance:
    route = route or line_route()
    return Guidance(route, 1, (LAT0, LON0), (north(1000.0), LON0))


# -- geometry and ETA ----------------------------------------------------------------------------

def test_polyline_decodes_as_the_reference_encoder_wrote_it() -> None:
    points = [(60.16861, 24.94142), (60.17603, 24.94961), (-33.9, 151.2)]
    decoded = decode_polyline(polyline.encode(points, 5))
    assert [c for p in decoded for c in p] == pytest.approx([c for p in points for c in p])


def test_a_fix_beside_the_route_projects_onto_it_with_its_offset() -> None:
    track = Track(line_route())
    p = track.project(north(250.0), east(20.0))
    assert p.along_m == pytest.approx(250.0, abs=1.0)
    assert p.offset_m == pytest.approx(20.0, abs=1.0)
    assert p.edge == 2
    assert track.remaining_m(p.along_m) == pytest.approx(750.0, abs=1.0)
    assert track.remaining_s(p.along_m) == pytest.approx(75.0, abs=0.2)
    assert track.remaining_segments(p.along_m) == list(range(102, 110))


def test_the_remaining_time_follows_the_steps_speeds_not_only_the_distance() -> None:
    # the first 500 m take 80 s, the last 500 m 20 s
    track = Track(line_route(steps=[(500.0, 80.0), (500.0, 20.0)]))
    assert track.remaining_s(0.0) == pytest.approx(100.0, abs=0.1)
    assert track.remaining_s(250.0) == pytest.approx(60.0, abs=0.3)
    assert track.remaining_s(750.0) == pytest.approx(10.0, abs=0.3)


def test_a_slower_segment_ahead_adds_its_extra_time_and_one_behind_does_not() -> None:
    track = Track(line_route())
    before = track.remaining_s(450.0)
    assert track.apply_speeds({107: (50.0, 25.0)}, 450.0)  # edge 7: 10 s -> 20 s
    assert track.remaining_s(450.0) == pytest.approx(before + 10.0, abs=0.3)
    slower = track.remaining_s(450.0)
    assert not track.apply_speeds({101: (50.0, 10.0)}, 450.0)  # already driven
    assert track.remaining_s(450.0) == slower


# -- progress, off route, arrival ----------------------------------------------------------------

def test_progress_moves_forward_only() -> None:
    g = guidance()
    assert g.observe(north(300.0), east(5.0)) == PROGRESS
    assert g.remaining()[1] == pytest.approx(700.0, abs=1.0)
    assert g.observe(north(280.0), LON0) is None  # GPS noise behind: no step back
    assert g.remaining()[1] == pytest.approx(700.0, abs=1.0)
    assert g.observe(north(400.0), LON0) == PROGRESS
    assert g.remaining()[1] == pytest.approx(600.0, abs=1.0)


def test_off_route_takes_two_fixes_beyond_the_limit_in_a_row() -> None:
    g = guidance()
    assert g.observe(north(100.0), east(60.0)) is None   # once: could be a bad fix
    assert g.observe(north(120.0), east(10.0)) == PROGRESS  # back on: the count resets
    assert g.observe(north(140.0), east(60.0)) is None
    assert g.observe(north(150.0), east(70.0)) == OFF_ROUTE


def test_one_fix_far_beyond_the_route_is_off_route_at_once() -> None:
    g = guidance()
    assert g.observe(north(100.0), east(400.0)) == OFF_ROUTE


def test_a_fix_near_the_destination_is_arrival() -> None:
    g = guidance()
    assert g.observe(north(900.0), LON0) == PROGRESS
    assert g.observe(north(980.0), east(5.0)) == ARRIVED


# -- the reroute threshold -----------------------------------------------------------------------

def test_a_faster_route_must_save_the_minimum_and_a_tenth_of_the_remaining_time() -> None:
    assert not should_reroute(300.0, 250.0, 60.0)   # 50 s < 60 s
    assert should_reroute(300.0, 240.0, 60.0)       # 60 s, and >= 30 s
    assert not should_reroute(1000.0, 920.0, 60.0)  # 80 s < 10 % of 1000 s
    assert should_reroute(1000.0, 900.0, 60.0)


def test_two_routes_of_nearly_equal_time_do_not_flap() -> None:
    current = 1000.0
    for candidate in (950.0, 940.0, 960.0, 930.0):  # noise around a similar route
        assert not should_reroute(current, candidate, 60.0)
    current = 880.0                                 # switched once to a clearly faster one
    assert not should_reroute(current, 870.0, 60.0)  # the old one back a bit faster: stay


# -- the index and the traffic diff --------------------------------------------------------------

KEY = ("helsinki", rpb.TRAVEL_MODE_DRIVE)


def test_the_index_finds_only_sessions_whose_remaining_route_holds_the_segment() -> None:
    index = SessionIndex()
    index.put(1, KEY, [1, 2, 3])
    index.put(2, KEY, [3, 4])
    index.put(3, KEY, [5])
    index.put(4, ("helsinki", rpb.TRAVEL_MODE_BICYCLE), [3])  # another graph's segment 3
    assert index.sessions_on(KEY, [3]) == {1, 2}
    assert index.sessions_on(KEY, [5, 9]) == {3}
    index.put(1, KEY, [2, 3])         # session 1 drove past segment 1
    assert index.sessions_on(KEY, [1]) == set()
    index.remove(2)
    assert index.sessions_on(KEY, [3, 4]) == {1}
    index.remove(1)
    index.remove(3)
    assert index.keys() == {("helsinki", rpb.TRAVEL_MODE_BICYCLE)}


def test_speed_changes_are_new_gone_or_moved_by_more_than_a_few_percent() -> None:
    old = {1: (20.0, 50.0), 2: (30.0, 50.0), 3: (40.0, 50.0)}
    new = {1: (20.4, 50.0), 2: (15.0, 50.0), 4: (10.0, 60.0)}
    assert speed_changes(old, new) == {2: (30.0, 15.0), 3: (40.0, 50.0), 4: (60.0, 10.0)}
    assert speed_changes(new, new) == {}


# -- the queue -----------------------------------------------------------------------------------

async def test_the_queue_keeps_only_the_latest_eta() -> None:
    queue = LatestQueue()
    for metres in (900.0, 800.0, 700.0):
        queue.put(Update(PROGRESS, metres / 10, metres))
    got = await queue.get()
    assert got is not None and got.remaining_m == 700.0 and queue.coalesced == 2


async def test_a_pending_new_route_is_kept_and_takes_the_newer_eta() -> None:
    queue = LatestQueue()
    route = line_route()
    queue.put(Update(STARTED, 100.0, 1000.0, route))
    queue.put(Update(PROGRESS, 80.0, 800.0))
    got = await queue.get()
    assert got is not None and got.reason == STARTED and got.route is route
    assert got.remaining_m == 800.0
    queue.put(Update(PROGRESS, 70.0, 700.0))
    queue.put(Update(ARRIVED, 0.0, 0.0))
    queue.put(Update(PROGRESS, 60.0, 600.0))  # after the end: dropped
    got = await queue.get()
    assert got is not None and got.reason == ARRIVED
    assert await queue.get() is None


async def test_a_queue_closed_with_an_error_raises_it_after_what_is_pending() -> None:
    queue = LatestQueue()
    queue.put(Update(PROGRESS, 1.0, 1.0))
    queue.close(RuntimeError("stopping"))
    assert await queue.get() is not None
    with pytest.raises(RuntimeError):
        await queue.get()


# -- requests and responses ----------------------------------------------------------------------

def test_a_request_without_destination_or_with_a_bad_saving_names_the_field() -> None:
    request = pb.NavigateRequest()
    request.origin.latitude, request.origin.longitude = LAT0, LON0
    with pytest.raises(InvalidArgument) as missing:
        query_from_pb(request)
    assert missing.value.field == "destination"
    request.destination.latitude, request.destination.longitude = north(1000.0), LON0
    request.reroute_min_saving_seconds = -1
    with pytest.raises(InvalidArgument) as saving:
        query_from_pb(request)
    assert saving.value.field == "reroute_min_saving_seconds"
    request.reroute_min_saving_seconds = 0
    assert query_from_pb(request).min_saving_s == 60.0
    request.travel_mode = rpb.TravelMode.ValueType(9)
    with pytest.raises(InvalidArgument) as mode:
        query_from_pb(request)
    assert mode.value.field == "travel_mode"


def test_the_response_says_arrival_as_now_plus_the_remaining_time() -> None:
    out = update_to_pb(Update(TRAFFIC, 90.5, 1234.56), now=1_000.0)
    assert out.reason == TRAFFIC and not out.HasField("route")
    assert out.remaining_duration.ToNanoseconds() == 90_500_000_000
    assert out.arrival_time.ToNanoseconds() == 1_090_500_000_000
    assert out.remaining_distance_meters == pytest.approx(1234.6)


# -- the navigator over a fake routing service ----------------------------------------------------

class FakeRouting:
    """Routes due north from the origin's longitude: sessions at LON0 drive segments
    100.., sessions at LON0 + 0.1 drive 200..; traffic is what a test sets."""

    def __init__(self) -> None:
        self.version = 1
        self.duration_s = 100.0
        self.faster: rpb.Route | None = None
        self.traffic: dict[int, tuple[float, float]] = {}
        self.calls: list[tuple[float, float]] = []

    async def route(self, origin: tuple[float, float], destination: tuple[float, float], *,
                    mode: str | int = "drive", traffic_aware: bool = False,
                    include_segments: bool = False,
                    timeout: float | None = None) -> rpb.ComputeRouteResponse:
        self.calls.append(origin)
        first = 100 if abs(origin[1] - LON0) < 0.05 else 200
        route = self.faster or line_route(lon=origin[1], first_segment=first,
                                          duration_s=self.duration_s)
        return rpb.ComputeRouteResponse(routes=[route], region="helsinki",
                                        metric_version=self.version)

    async def get_traffic(self, region: str, low: tuple[float, float],
                          high: tuple[float, float], *, mode: str | int = "drive",
                          max_segments: int = 0,
                          timeout: float | None = None) -> rpb.GetTrafficResponse:
        return rpb.GetTrafficResponse(metric_version=self.version, segments=[
            rpb.TrafficSegment(segment_id=s, speed_kmh=v, free_flow_speed_kmh=f)
            for s, (v, f) in self.traffic.items()])

    async def regions(self, *, timeout: float | None = None) -> list[rpb.Region]:
        region = rpb.Region(name="helsinki")
        region.low.latitude, region.low.longitude = 59.0, 23.0
        region.high.latitude, region.high.longitude = 61.0, 26.0
        graph = region.graphs.add(travel_mode=rpb.TRAVEL_MODE_DRIVE,
                                  metric_version=self.version)
        graph.metric_time.FromSeconds(self.version)
        return [region]


def query(lon: float = LON0, min_saving: float = 60.0) -> NavigateQuery:
    return NavigateQuery((LAT0, lon), (north(1000.0), lon), rpb.TRAVEL_MODE_DRIVE, min_saving)


async def next_update(stream: AsyncIterator[Update]) -> Update:
    return await asyncio.wait_for(anext(stream), 5.0)


async def test_a_traffic_change_re_evaluates_only_the_sessions_driving_the_segment() -> None:
    routing = FakeRouting()
    nav = Navigator(routing, debounce_s=0.01)
    a, b = nav.navigate("ann", query(LON0)), nav.navigate("bob", query(LON0 + 0.1))
    assert (await next_update(a)).reason == STARTED
    assert (await next_update(b)).reason == STARTED
    assert len(routing.calls) == 2

    await nav.poll_once()  # the first look: the base to diff against
    routing.version, routing.duration_s = 2, 130.0
    routing.traffic = {105: (10.0, 50.0)}  # a jam on ann's route only
    await nav.poll_once()
    update = await next_update(a)
    assert update.reason == TRAFFIC and update.remaining_s == pytest.approx(130.0, abs=0.1)
    assert len(routing.calls) == 3 and routing.calls[-1] == (LAT0, LON0)
    assert nav.evaluations == 1
    bob = next(s for s in nav.sessions.values() if s.user == "bob")
    assert bob.worker is None  # never looked at
    await a.aclose()
    await b.aclose()
    assert nav.sessions == {} and nav.index.keys() == set()


async def test_a_burst_of_changes_makes_one_evaluation() -> None:
    routing = FakeRouting()
    nav = Navigator(routing, debounce_s=0.05)
    a = nav.navigate("ann", query())
    await next_update(a)
    for k in range(5):
        nav.traffic_changed(KEY, {103 + k: (50.0, 40.0 - k)}, version=2)
    update = await next_update(a)
    assert update.reason == TRAFFIC
    await eventually(lambda: all(s.worker is not None and s.worker.done()
                                 for s in nav.sessions.values()), 5.0)
    assert nav.evaluations == 1
    await a.aclose()


async def test_a_clearly_faster_route_is_offered_and_a_slightly_faster_one_is_not() -> None:
    routing = FakeRouting()
    nav = Navigator(routing, debounce_s=0.01)
    a = nav.navigate("ann", query())
    await next_update(a)
    # a jam makes the current route's rest 100 s + 90 s; another route takes 150 s
    routing.faster = line_route(first_segment=300, duration_s=150.0)
    nav.traffic_changed(KEY, {104: (50.0, 5.0)}, version=2)
    update = await next_update(a)
    assert update.reason == TRAFFIC  # saves 40 s < 60 s
    assert update.remaining_s == pytest.approx(190.0, abs=0.5)
    routing.faster = line_route(first_segment=300, duration_s=100.0)
    nav.traffic_changed(KEY, {106: (50.0, 5.0)}, version=3)
    update = await next_update(a)
    assert update.reason == FASTER_ROUTE and update.route == routing.faster
    assert update.remaining_s == pytest.approx(100.0, abs=0.1)
    # the session now drives segments 300..: a change on the old route is no concern
    assert nav.traffic_changed(KEY, {107: (50.0, 5.0)}, version=4) == set()
    await a.aclose()


async def test_fixes_move_the_session_off_route_and_to_arrival() -> None:
    routing = FakeRouting()
    nav = Navigator(routing, debounce_s=0.01)
    a = nav.navigate("ann", query())
    await next_update(a)
    nav.on_fixes("ann", [Fix(north(300.0), LON0, 10.0)])
    progress = await next_update(a)
    assert progress.reason == PROGRESS and progress.remaining_m == pytest.approx(700, abs=1)
    segments = nav.index.segments_of(next(iter(nav.sessions)))
    assert 101 not in segments and 103 in segments  # driven past: out of the index
    nav.on_fixes("bob", [Fix(north(900.0), LON0, 11.0)])  # another user: not ann's
    nav.on_fixes("ann", [Fix(north(400.0), east(80.0), 12.0),
                         Fix(north(420.0), east(90.0), 13.0)])
    off = await next_update(a)
    assert off.reason == OFF_ROUTE and off.route is not None
    assert routing.calls[-1] == pytest.approx((north(420.0), east(90.0)))
    nav.on_fixes("ann", [Fix(north(995.0), east(90.0), 14.0)])
    assert (await next_update(a)).reason == ARRIVED
    with pytest.raises(StopAsyncIteration):
        await next_update(a)
    assert nav.sessions == {}


async def test_sessions_are_capped_per_user_and_in_total() -> None:
    nav = Navigator(FakeRouting(), max_sessions=2, max_per_user=1)
    first = nav.navigate("ann", query())
    await next_update(first)
    with pytest.raises(ResourceExhausted) as per_user:
        await next_update(nav.navigate("ann", query()))
    assert "per user" in per_user.value.message and per_user.value.metadata["limit"] == "1"
    second = nav.navigate("bob", query())
    await next_update(second)
    with pytest.raises(ResourceExhausted) as total:
        await next_update(nav.navigate("cid", query()))
    assert total.value.metadata["limit"] == "2"
    await first.aclose()  # a session that ends frees its place
    third = nav.navigate("ann", query())
    assert (await next_update(third)).reason == STARTED
    await second.aclose()
    await third.aclose()
