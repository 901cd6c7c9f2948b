"""RoutingService over real gRPC: a routing server process on the three real regions,
called through the SDK (clients/routing.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import polyline
import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import (
    FailedPreconditionError,
    GeoplexRpcError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from geoplex.clients.routing import RoutingClient, observation
from geoplex.routing.v1 import routing_pb2 as pb
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.servers._runtime.geo import haversine_m
from geoplex.servers.routing.config import RegionSource
from geoplex.type.v1.geo_pb2 import LatLng
from polling import eventually

from routing_servers import routing_env  # tests/routing_servers.py

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

ADMIN = mint_token(DEV_SECRET, "admin")
ALICE = mint_token(DEV_SECRET, "alice")
# central Helsinki: Mannerheimintie by the station -> Kaisaniemenranta
STATION = (60.1686, 24.9414)
KAISANIEMI = (60.1760, 24.9496)
ESPLANADI = (60.1676, 24.9460)
# Gothenburg: Järntorget -> Liseberg
JARNTORGET = (57.7000, 11.9530)
LISEBERG = (57.6950, 11.9900)
MONACO = (43.7384, 7.4246)
# south of the Helsinki extract: inside its bounds' margin, ~800 m from its nearest road
FAR_FROM_ROADS = (60.1570, 24.9500)


@pytest.fixture(scope="module")
def routing_server(server_factory: Callable[..., ServerProcess],
                   routing_sources: tuple[RegionSource, ...], routing_cache: Path
                   ) -> ServerProcess:
    return server_factory("routing", routing_env(routing_sources, routing_cache), "routing")


@pytest.fixture(scope="module")
def traffic_server(server_factory: Callable[..., ServerProcess],
                   routing_sources: tuple[RegionSource, ...], routing_cache: Path
                   ) -> ServerProcess:
    """Its own server: traffic changes its state. Car only; windows fade in 1 s."""
    helsinki = tuple(s for s in routing_sources if s.name in ("helsinki", "gothenburg"))
    env = routing_env(helsinki, routing_cache, GEOPLEX_ROUTING_MODES="car",
                      GEOPLEX_ROUTING_TRAFFIC_FADE_SECONDS="1",
                      GEOPLEX_ROUTING_TRAFFIC_REFRESH_SECONDS="0.2")
    return server_factory("routing", env, "routing-traffic")


@pytest.fixture
async def rt(routing_server: ServerProcess) -> AsyncIterator[RoutingClient]:
    async with RoutingClient(routing_server.address, ChannelOptions(retry=False)) as client:
        yield client


@pytest.fixture
async def traffic(traffic_server: ServerProcess) -> AsyncIterator[RoutingClient]:
    async with RoutingClient(traffic_server.address, ChannelOptions(retry=False)) as client:
        yield client


def seconds(d: object) -> float:
    assert hasattr(d, "ToTimedelta")
    return float(d.ToTimedelta().total_seconds())


# -- ComputeRoute ------------------------------------------------------------------------

async def test_route_follows_roads_from_snapped_start_to_snapped_end(rt: RoutingClient) -> None:
    answer = await rt.route(STATION, KAISANIEMI, mode="drive")
    assert answer.region == "helsinki"
    best = answer.routes[0]
    straight = haversine_m(*STATION, *KAISANIEMI)
    assert straight < best.distance_meters < 3 * straight
    assert 0 < seconds(best.duration) == pytest.approx(seconds(best.static_duration))
    points = polyline.decode(best.polyline, 5)
    assert points[0] == pytest.approx((answer.origin.location.latitude,
                                       answer.origin.location.longitude), abs=1e-5)
    assert points[-1] == pytest.approx((answer.destination.location.latitude,
                                        answer.destination.location.longitude), abs=1e-5)
    along = sum(haversine_m(*a, *b) for a, b in zip(points, points[1:]))
    assert along == pytest.approx(best.distance_meters, rel=0.01)
    assert 0 < answer.origin.distance_meters < 100 and answer.origin.segment_ids


async def test_steps_read_from_depart_to_arrive_and_add_up(rt: RoutingClient) -> None:
    best = (await rt.route(STATION, KAISANIEMI)).routes[0]
    kinds = [s.maneuver.type for s in best.steps]
    assert kinds[0] == pb.Maneuver.TYPE_DEPART and kinds[-1] == pb.Maneuver.TYPE_ARRIVE
    assert pb.Maneuver.TYPE_TURN in kinds
    assert sum(s.distance_meters for s in best.steps) == pytest.approx(best.distance_meters,
                                                                       abs=1.0)
    assert sum(seconds(s.duration) for s in best.steps) == pytest.approx(
        seconds(best.duration), abs=0.5)
    turns = [s for s in best.steps if s.maneuver.type == pb.Maneuver.TYPE_TURN]
    assert all(s.maneuver.modifier != pb.Maneuver.MODIFIER_UNSPECIFIED for s in turns)
    assert all(0 <= s.maneuver.bearing_after < 360 for s in best.steps)
    assert any(s.name for s in best.steps) and best.summary


async def test_car_is_faster_than_bicycle_faster_than_walking_at_5_kmh(
        rt: RoutingClient) -> None:
    car = (await rt.route(JARNTORGET, LISEBERG, mode="drive")).routes[0]
    bike = (await rt.route(JARNTORGET, LISEBERG, mode="bicycle")).routes[0]
    walk = (await rt.route(JARNTORGET, LISEBERG, mode="walk")).routes[0]
    assert seconds(car.duration) < seconds(bike.duration) < seconds(walk.duration)
    # walking at about 5 km/h
    assert walk.distance_meters / seconds(walk.duration) * 3.6 == pytest.approx(5.0, rel=0.1)


async def test_alternatives_are_different_and_not_much_longer(rt: RoutingClient) -> None:
    answer = await rt.route(JARNTORGET, LISEBERG, alternatives=2)
    assert 2 <= len(answer.routes) <= 3
    best = seconds(answer.routes[0].duration)
    lines = {r.polyline for r in answer.routes}
    assert len(lines) == len(answer.routes)
    for alt in answer.routes[1:]:
        assert best <= seconds(alt.duration) <= 1.3 * best + 1


async def test_avoiding_motorways_gives_a_route_without_them(rt: RoutingClient) -> None:
    # across Gothenburg, where the fastest way uses the E6 / E45
    origin, destination = (57.7200, 11.9400), (57.6700, 12.0100)
    fast = (await rt.route(origin, destination)).routes[0]
    slow = (await rt.route(origin, destination, avoid_motorways=True)).routes[0]
    assert seconds(slow.duration) >= seconds(fast.duration)
    refs = {s.ref for s in slow.steps}
    assert not refs & {"E6", "E45", "E20"}


# -- errors ---------------------------------------------------------------------------------

async def test_a_missing_or_bad_coordinate_is_an_invalid_argument_naming_the_field(
        rt: RoutingClient) -> None:
    with pytest.raises(InvalidArgumentError) as missing:
        await rt.call(rt.stub.ComputeRoute, pb.ComputeRouteRequest(
            destination=LatLng(latitude=KAISANIEMI[0], longitude=KAISANIEMI[1])))
    assert missing.value.field == "origin" and missing.value.reason == "REQUIRED_FIELD"
    with pytest.raises(InvalidArgumentError) as bad:
        await rt.route((91.0, 24.9), KAISANIEMI)
    assert bad.value.field == "origin.latitude" and "91" not in bad.value.message


async def test_a_point_far_from_any_road_is_no_road_nearby_with_the_distance(
        rt: RoutingClient) -> None:
    at_sea = FAR_FROM_ROADS
    with pytest.raises(FailedPreconditionError) as far:
        await rt.route(at_sea, KAISANIEMI)
    assert far.value.reason == "NO_ROAD_NEARBY" and far.value.field == "origin"
    assert float(far.value.metadata["distance_m"]) > float(
        far.value.metadata["max_snap_distance_m"])
    assert "60.157" not in far.value.message and "24.95" not in far.value.message
    with pytest.raises(FailedPreconditionError) as nowhere:
        await rt.route((0.0, 0.0), KAISANIEMI)
    assert nowhere.value.reason == "NO_ROAD_NEARBY"


async def test_points_in_different_regions_have_no_route(rt: RoutingClient) -> None:
    with pytest.raises(NotFoundError) as err:
        await rt.route(STATION, JARNTORGET)
    assert err.value.reason == "NO_ROUTE"


async def test_unknown_travel_mode_and_bad_alternatives_are_invalid(rt: RoutingClient) -> None:
    with pytest.raises(InvalidArgumentError) as mode:
        await rt.route(STATION, KAISANIEMI, mode=9)
    assert mode.value.field == "travel_mode" and "TRAVEL_MODE_WALK" in mode.value.message
    with pytest.raises(InvalidArgumentError) as alternatives:
        await rt.route(STATION, KAISANIEMI, alternatives=3)
    assert alternatives.value.field == "alternatives"


async def test_a_matrix_over_the_limit_names_the_limit(rt: RoutingClient) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        await rt.matrix([STATION] * 101, [KAISANIEMI])
    assert err.value.field == "origins" and "100" in err.value.message
    assert err.value.reason == "MATRIX_TOO_LARGE"


# -- matrix, snapping, regions ---------------------------------------------------------------

async def test_matrix_cells_equal_single_routes(rt: RoutingClient) -> None:
    points = [STATION, KAISANIEMI, ESPLANADI]
    answer = await rt.matrix(points, points)
    assert len(answer.cells) == 9
    for cell in answer.cells:
        assert cell.status == pb.MatrixCell.STATUS_OK
        if cell.origin_index == cell.destination_index:
            assert seconds(cell.duration) == pytest.approx(0.0, abs=0.01)
            continue
        route = (await rt.route(points[cell.origin_index],
                                points[cell.destination_index])).routes[0]
        assert seconds(cell.duration) == pytest.approx(seconds(route.duration), abs=0.01)
        assert cell.distance_meters == pytest.approx(route.distance_meters, abs=0.2)


async def test_a_durations_only_matrix_has_the_fastest_times(rt: RoutingClient) -> None:
    points = [JARNTORGET, LISEBERG, (57.7089, 11.9746)]
    full = await rt.matrix(points, points)
    quick = await rt.matrix(points, points, durations_only=True)
    for fast, routed in zip(quick.cells, full.cells):
        # the fastest time, never above the time of the route ComputeRoute would take
        assert seconds(fast.duration) <= seconds(routed.duration) + 0.01
        assert seconds(fast.duration) >= 0.8 * seconds(routed.duration)
    assert all(c.distance_meters == 0 for c in quick.cells)
    assert any(c.distance_meters > 0 for c in full.cells)


async def test_matrix_marks_a_point_with_no_road(rt: RoutingClient) -> None:
    answer = await rt.matrix([STATION, FAR_FROM_ROADS], [KAISANIEMI])
    status = {c.origin_index: c.status for c in answer.cells}
    assert status == {0: pb.MatrixCell.STATUS_OK, 1: pb.MatrixCell.STATUS_NO_ROAD_NEARBY}


async def test_snap_lands_on_a_named_road_with_its_segments(rt: RoutingClient) -> None:
    answer = await rt.snap([STATION])
    p = answer.points[0]
    assert answer.region == "helsinki" and p.name and p.way_id > 0
    assert 0 < p.distance_meters < 100 and 1 <= len(p.segment_ids) <= 2
    with pytest.raises(InvalidArgumentError) as err:
        await rt.snap([STATION, MONACO])
    assert err.value.field == "points[1]"


async def test_list_regions_shows_every_region_and_mode(rt: RoutingClient) -> None:
    regions = {r.name: r for r in await rt.regions()}
    assert set(regions) == {"monaco", "helsinki", "gothenburg"}
    for region in regions.values():
        assert {g.travel_mode for g in region.graphs} == {
            pb.TRAVEL_MODE_DRIVE, pb.TRAVEL_MODE_BICYCLE, pb.TRAVEL_MODE_WALK}
        assert region.low.latitude < region.high.latitude
        assert all(g.segment_count > 0 and g.memory_bytes > 0 for g in region.graphs)
    assert regions["gothenburg"].graphs[0].segment_count > 50_000


# -- live traffic -----------------------------------------------------------------------------

async def test_traffic_needs_an_admin(traffic: RoutingClient) -> None:
    obs = [observation(segment_id=0, speed_factor=0.5)]
    with pytest.raises(UnauthenticatedError):
        await traffic.update_traffic("helsinki", obs)
    with pytest.raises(PermissionDeniedError):
        await traffic.update_traffic("helsinki", obs, token=ALICE)
    with pytest.raises(NotFoundError) as unknown:
        await traffic.update_traffic("atlantis", obs, token=ADMIN)
    assert unknown.value.reason == "UNKNOWN_REGION"
    with pytest.raises(InvalidArgumentError) as bad:
        await traffic.update_traffic("helsinki", [observation(segment_id=10**9,
                                                              speed_factor=0.5)], token=ADMIN)
    assert bad.value.field == "observations[0].segment_id"
    with pytest.raises(InvalidArgumentError) as factor:
        await traffic.update_traffic("helsinki", [observation(segment_id=0, speed_factor=9.0)],
                                     token=ADMIN)
    assert factor.value.field == "observations[0].speed_factor"


async def test_a_jam_slows_the_eta_then_fades_back_to_free_flow(traffic: RoutingClient) -> None:
    before = await traffic.route(STATION, KAISANIEMI, traffic_aware=True)
    best = before.routes[0]
    points = polyline.decode(best.polyline, 5)
    middles = [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in zip(points, points[1:])]
    snapped = await traffic.snap(middles[:100])
    ways = {p.way_id for p in snapped.points}
    applied = await traffic.update_traffic(
        "helsinki", [observation(way_id=w, speed_factor=0.05) for w in ways],
        valid_for_s=3, token=ADMIN)
    assert applied.segments_updated > 0 and applied.metric_version > before.metric_version
    jammed = await traffic.route(STATION, KAISANIEMI, traffic_aware=True)
    assert jammed.metric_version >= applied.metric_version
    slow = jammed.routes[0]
    assert seconds(slow.duration) > 2 * seconds(best.duration)
    # free flow is what it was, with or without traffic asked for
    assert seconds(slow.static_duration) >= seconds(best.static_duration) - 0.01
    free = await traffic.route(STATION, KAISANIEMI, traffic_aware=False)
    assert free.routes[0].polyline == best.polyline
    assert seconds(free.routes[0].duration) == pytest.approx(seconds(best.duration))

    async def eta() -> float:
        again = await traffic.route(STATION, KAISANIEMI, traffic_aware=True)
        return seconds(again.routes[0].duration)

    async def back_to_free_flow() -> bool:
        return abs(await eta() - seconds(best.duration)) < 0.01

    assert await eventually(back_to_free_flow, timeout=30,
                            what="the jam fading back to free flow")


async def test_a_jam_on_one_street_moves_the_route_to_a_detour(traffic: RoutingClient) -> None:
    before = (await traffic.route(STATION, KAISANIEMI, traffic_aware=True)).routes[0]
    longest = max((s for s in before.steps if s.name), key=lambda s: s.distance_meters)
    points = polyline.decode(before.polyline, 5)
    middles = [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in zip(points, points[1:])]
    snapped = await traffic.snap(middles[:100])
    ways = {p.way_id for p in snapped.points if p.name == longest.name}
    assert ways
    await traffic.update_traffic("helsinki",
                                 [observation(way_id=w, speed_factor=0.05) for w in ways],
                                 valid_for_s=2, token=ADMIN)
    after = (await traffic.route(STATION, KAISANIEMI, traffic_aware=True)).routes[0]
    assert after.polyline != before.polyline
    assert longest.name not in {s.name for s in after.steps if s.distance_meters > 50}
    assert seconds(before.duration) < seconds(after.duration)


async def test_queries_during_traffic_updates_see_one_metric_or_the_other(
        traffic: RoutingClient) -> None:
    first = await traffic.route(JARNTORGET, LISEBERG, traffic_aware=True)
    snap = await traffic.snap([JARNTORGET, LISEBERG])
    ways = {p.way_id for p in snap.points}
    by_version: dict[int, set[float]] = {}
    updating = True

    def record(answer: pb.ComputeRouteResponse) -> None:
        by_version.setdefault(answer.metric_version, set()).add(
            round(seconds(answer.routes[0].duration), 3))

    async def query() -> None:
        # routes all through the updates, then one more that sees the last of them
        while updating:
            record(await traffic.route(JARNTORGET, LISEBERG, traffic_aware=True))
        record(await traffic.route(JARNTORGET, LISEBERG, traffic_aware=True))

    async def update() -> None:
        nonlocal updating
        for n in range(6):
            factor = 0.2 if n % 2 == 0 else 0.9
            await traffic.update_traffic("gothenburg",
                                         [observation(way_id=w, speed_factor=factor)
                                          for w in ways], valid_for_s=60, token=ADMIN)
        updating = False

    record(first)
    await asyncio.gather(query(), query(), update())
    assert len(by_version) >= 2
    for version, durations in by_version.items():
        assert len(durations) == 1, (version, durations)  # one metric, one answer
    assert first.metric_version in by_version or first.metric_version < min(by_version)


# -- start-up -----------------------------------------------------------------------------------

def test_a_region_that_fails_to_load_stops_start_up_with_one_line(tmp_path: Path) -> None:
    env = {"GEOPLEX_ROUTING_REGIONS": f"nowhere={tmp_path / 'missing.osm.pbf'}",
           "GEOPLEX_ROUTING_CACHE_DIR": str(tmp_path / "cache"), "GEOPLEX_ROUTING_PORT": "0",
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "geoplex.servers.routing"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "region nowhere" in lines[0] and "geoplex data fetch" in lines[0]
    broken = tmp_path / "broken.osm.pbf"
    broken.write_bytes(b"not a pbf at all")
    env["GEOPLEX_ROUTING_REGIONS"] = f"broken={broken}"
    done = subprocess.run([sys.executable, "-m", "geoplex.servers.routing"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "region broken: cannot load" in done.stderr


async def test_grpc_status_codes_are_the_canonical_ones(rt: RoutingClient) -> None:
    with pytest.raises(GeoplexRpcError) as err:
        await rt.route(FAR_FROM_ROADS, KAISANIEMI)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION


# -- the CLI ------------------------------------------------------------------------------------

def _geoplex(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "geoplex"), *args],
                          capture_output=True, text=True, timeout=60)


def test_geoplex_route_prints_the_steps_as_a_person_reads_them(
        routing_server: ServerProcess) -> None:
    done = _geoplex("route", "60.1686,24.9414", "60.1760,24.9496", "--target",
                    routing_server.address, "--alternatives", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("Route: ") and "[helsinki]" in out and "Alternative 1:" in out
    assert "Head " in out and "Turn right onto Kaivokatu" in out
    assert "Arrive at your destination" in out
    assert "60.1686" not in out  # the points are not echoed back


def test_geoplex_route_refuses_a_bad_point_with_one_clear_line(
        routing_server: ServerProcess) -> None:
    done = _geoplex("route", "60.1686;24.9414", "60.1760,24.9496",
                    "--target", routing_server.address)
    assert done.returncode == 2 and "expected LAT,LNG" in done.stderr
    far = _geoplex("route", "60.1570,24.9500", "60.1760,24.9496",
                   "--target", routing_server.address)
    assert far.returncode != 0 and "nearest usable road is" in far.stderr
    assert len((far.stderr + far.stdout).strip().splitlines()) == 1


def test_geoplex_routing_regions_and_matrix_print_tables(routing_server: ServerProcess) -> None:
    regions = _geoplex("routing", "regions", "--target", routing_server.address)
    assert regions.returncode == 0 and "gothenburg" in regions.stdout
    assert "segments" in regions.stdout.splitlines()[0]
    matrix = _geoplex("routing", "matrix", "--origins", "60.1686,24.9414", "--destinations",
                      "60.1760,24.9496", "60.1676,24.9460", "--target", routing_server.address)
    assert matrix.returncode == 0 and len(matrix.stdout.strip().splitlines()) == 4


# -- map matching ---------------------------------------------------------------------------

async def test_a_trace_along_a_route_matches_back_onto_its_roads(rt: RoutingClient) -> None:
    route = (await rt.route(STATION, KAISANIEMI)).routes[0]
    points = polyline.decode(route.polyline, 5)[::2]
    trace, t = [], 1.8e9
    for i, (lat, lng) in enumerate(points):
        if i:
            t += max(haversine_m(*points[i - 1], lat, lng) / 10.0, 1.0)  # 10 m/s
        trace.append((lat, lng, t))
    answer = await rt.match_trace(trace, accuracy_m=5)
    assert answer.region == "helsinki" and answer.chains == 1
    assert all(p.matched for p in answer.points) and answer.confidence > 0.9
    assert {"Kaivokatu", "Kaisaniemenkatu"} <= {p.name for p in answer.points}
    assert answer.traversals and answer.polyline
    speeds = sorted(tr.speed_kmh for tr in answer.traversals)
    assert speeds[len(speeds) // 2] == pytest.approx(36.0, rel=0.15)


async def test_a_bad_trace_is_an_invalid_argument_naming_the_point(rt: RoutingClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await rt.match_trace([(*STATION, 100.0), (*KAISANIEMI, 50.0)])
    assert caught.value.field == "points[1].time"
    with pytest.raises(InvalidArgumentError) as caught:
        await rt.match_trace([])
    assert caught.value.field == "points"
    with pytest.raises(InvalidArgumentError) as caught:
        await rt.match_trace([(*STATION, 100.0), (*JARNTORGET, 150.0)])
    assert caught.value.field == "points[1]"
