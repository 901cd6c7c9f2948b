"""Route.segment_ids (with each segment's metres and free-flow speed) and GetTraffic over
real gRPC: a routing server process on Helsinki (car), called through the SDK
(clients/routing.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import polyline
import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import InvalidArgumentError, NotFoundError
from geoplex.clients.routing import RoutingClient, observation
from geoplex.routing.v1 import routing_pb2 as pb
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.servers.routing.config import RegionSource
from geoplex.servers.routing.graph import RoadGraph
from geoplex.servers.routing.regions import load_region
from routing_servers import routing_env  # tests/routing_servers.py

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

ADMIN = mint_token(DEV_SECRET, "admin")
# central Helsinki: Mannerheimintie by the station -> Kaisaniemenranta
STATION = (60.1686, 24.9414)
KAISANIEMI = (60.1760, 24.9496)
# a box around the centre, holding the whole route
LOW, HIGH = (60.160, 24.925), (60.185, 24.965)


@pytest.fixture(scope="module")
def segments_server(server_factory: Callable[..., ServerProcess],
                    routing_sources: tuple[RegionSource, ...], routing_cache: Path
                    ) -> ServerProcess:
    """Its own server: the traffic test changes its state. Helsinki, car only."""
    helsinki = tuple(s for s in routing_sources if s.name == "helsinki")
    return server_factory("routing", routing_env(helsinki, routing_cache,
                                                 GEOPLEX_ROUTING_MODES="car"),
                          "routing-segments")


@pytest.fixture(scope="module")
def helsinki_car(segments_server: ServerProcess, routing_sources: tuple[RegionSource, ...],
                 routing_cache: Path) -> RoadGraph:
    """The server's car graph of Helsinki, read here from the cache it built."""
    source = next(s for s in routing_sources if s.name == "helsinki")
    return load_region(source, ("car",), routing_cache, 600.0,
                       progress=lambda _m: None).modes["car"].graph


@pytest.fixture
async def rt(segments_server: ServerProcess) -> AsyncIterator[RoutingClient]:
    async with RoutingClient(segments_server.address, ChannelOptions(retry=False)) as client:
        yield client


async def test_route_segments_are_consecutive_and_start_where_the_origin_snaps(
        rt: RoutingClient, helsinki_car: RoadGraph) -> None:
    answer = await rt.route(STATION, KAISANIEMI, include_segments=True,
                                    alternatives=2)
    assert len(answer.routes) >= 2
    snapped = (await rt.snap([STATION, KAISANIEMI])).points
    for route in answer.routes:
        ids = list(route.segment_ids)
        assert ids, "every route, alternatives too, names its segments"
        assert all(0 <= s < helsinki_car.seg_count for s in ids)
        for a, b in zip(ids, ids[1:]):
            assert helsinki_car.seg_head[a] == helsinki_car.seg_tail[b]
        assert ids[0] in snapped[0].segment_ids
        assert ids[-1] in snapped[1].segment_ids
        # one polyline point per segment boundary: the geometry of segment k is edge k
        assert len(polyline.decode(route.polyline, 5)) == len(ids) + 1
        length = float(helsinki_car.seg_length_m[ids[1:-1]].sum())
        assert length <= route.distance_meters + 1.0


async def test_route_segments_carry_the_metres_driven_and_the_free_flow_speed(
        rt: RoutingClient, helsinki_car: RoadGraph) -> None:
    # what a simulated car at free flow drives on each segment, and what an
    # UpdateTraffic speed_kmh on it is compared with (so at that speed: no slowdown)
    g = helsinki_car
    for route in (await rt.route(STATION, KAISANIEMI, include_segments=True,
                                 traffic_aware=True)).routes:
        ids = list(route.segment_ids)
        metres = list(route.segment_distances_meters)
        kmh = list(route.segment_free_flow_speeds_kmh)
        assert len(metres) == len(kmh) == len(ids)
        assert metres[1:-1] == pytest.approx(g.seg_length_m[ids[1:-1]].tolist(), abs=0.01)
        assert 0 <= metres[0] <= g.seg_length_m[ids[0]] + 0.01
        assert 0 <= metres[-1] <= g.seg_length_m[ids[-1]] + 0.01
        assert sum(metres) == pytest.approx(route.distance_meters, abs=1.0)
        free = g.seg_length_m[ids] / (g.seg_ms[ids] / 1000.0) * 3.6
        assert kmh == pytest.approx(free.tolist(), abs=0.001)
        # driving them takes the free-flow duration but for the turn costs
        driving_s = sum(m / (v / 3.6) for m, v in zip(metres, kmh))
        static_s = route.static_duration.ToTimedelta().total_seconds()
        assert 0.7 * static_s < driving_s <= static_s + 0.01


async def test_routes_carry_no_segments_unless_asked(rt: RoutingClient) -> None:
    plain = await rt.route(STATION, KAISANIEMI)
    assert list(plain.routes[0].segment_ids) == []
    assert list(plain.routes[0].segment_distances_meters) == []
    assert list(plain.routes[0].segment_free_flow_speeds_kmh) == []


async def test_get_traffic_shows_the_slowed_way_slower_than_free_flow_inside_the_box(
        rt: RoutingClient) -> None:
    free = await rt.get_traffic("helsinki", LOW, HIGH)
    assert list(free.segments) == [] and not free.truncated

    route = (await rt.route(STATION, KAISANIEMI, include_segments=True)).routes[0]
    line = polyline.decode(route.polyline, 5)
    middle = line[len(line) // 2]
    road = (await rt.snap([middle])).points[0]
    updated = await rt.update_traffic("helsinki", [observation(way_id=road.way_id,
                                                               speed_factor=0.25)],
                                      token=ADMIN)
    assert updated.segments_updated >= 1

    jam = await rt.get_traffic("helsinki", LOW, HIGH)
    assert jam.metric_version == updated.metric_version
    ids = {s.segment_id for s in jam.segments}
    assert set(road.segment_ids) <= ids
    assert len(ids) == updated.segments_updated  # only the way's segments are slowed
    for s in jam.segments:
        assert 0 < s.speed_kmh < s.free_flow_speed_kmh
        assert s.speed_kmh == pytest.approx(0.25 * s.free_flow_speed_kmh, rel=0.05)
        points = polyline.decode(s.polyline, 5)
        assert len(points) == 2
        assert any(LOW[0] <= lat <= HIGH[0] and LOW[1] <= lon <= HIGH[1]
                   for lat, lon in points)
    # the route now drives the jam: it is slower than before
    slower = (await rt.route(STATION, KAISANIEMI, traffic_aware=True,
                                     include_segments=True)).routes[0]
    assert slower.duration.ToTimedelta() > route.duration.ToTimedelta()

    # a box away from the jam holds none of it; a limit of one truncates
    elsewhere = await rt.get_traffic("helsinki", (60.20, 25.05), (60.21, 25.06))
    assert list(elsewhere.segments) == []
    one = await rt.get_traffic("helsinki", LOW, HIGH, max_segments=1)
    assert len(one.segments) == 1 and one.truncated == (len(ids) > 1)


async def test_get_traffic_rejects_bad_requests_naming_the_field(rt: RoutingClient) -> None:
    with pytest.raises(InvalidArgumentError) as no_region:
        await rt.get_traffic("", LOW, HIGH)
    assert no_region.value.field == "region" and no_region.value.reason == "REQUIRED_FIELD"
    assert "helsinki" in no_region.value.message

    with pytest.raises(NotFoundError) as unknown:
        await rt.get_traffic("atlantis", LOW, HIGH)
    assert unknown.value.reason == "UNKNOWN_REGION"
    assert unknown.value.metadata["regions"] == "helsinki"

    with pytest.raises(InvalidArgumentError) as upside_down:
        await rt.get_traffic("helsinki", HIGH, LOW)
    assert upside_down.value.field == "high.latitude"

    with pytest.raises(InvalidArgumentError) as bad_corner:
        await rt.get_traffic("helsinki", (91.0, 24.9), HIGH)
    assert bad_corner.value.field == "low.latitude"

    for limit in (-1, 10_001):
        with pytest.raises(InvalidArgumentError) as too_many:
            await rt.get_traffic("helsinki", LOW, HIGH, max_segments=limit)
        assert too_many.value.field == "max_segments" and "10,000" in too_many.value.message

    with pytest.raises(InvalidArgumentError) as mode:
        await rt.get_traffic("helsinki", LOW, HIGH, mode="walk")
    assert mode.value.field == "travel_mode" and "car" in mode.value.message


async def test_get_traffic_requires_both_corners(rt: RoutingClient) -> None:
    with pytest.raises(InvalidArgumentError) as missing:
        await rt.call(rt.stub.GetTraffic, pb.GetTrafficRequest(region="helsinki"))
    assert missing.value.field == "low" and missing.value.reason == "REQUIRED_FIELD"
