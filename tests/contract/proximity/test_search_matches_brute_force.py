"""Property tests: the service's answers equal a brute-force haversine scan, in order.

Both indexes (the in-memory quadtree and the geohash cell index) are asked
over gRPC, following every page, at random points near real places, at all
five radii, and near the poles, the equator and the antimeridian.
"""

from __future__ import annotations

import math

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoplex.proximity.v1 import proximity_pb2 as pb
from geoplex.proximity.v1 import proximity_pb2_grpc
from geoplex.servers.proximity.domain import Business
from geoplex.type.v1.geo_pb2 import LatLng

from px_edges import EDGE_POINTS

RADII = (500, 1000, 2000, 5000, 20000)
R = 6_371_008.8
Query = tuple[float, float, int, int]  # latitude, longitude, radius, page size


def haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * R * math.asin(min(1.0, math.sqrt(a)))


def brute_force(businesses: list[Business], lat: float, lon: float, radius: int
                ) -> list[tuple[float, str]]:
    return sorted((d, b.id) for b in businesses
                  if (d := haversine(lat, lon, b.lat, b.lon)) <= radius)


def search_all(address: str, lat: float, lon: float, radius: int, page_size: int
               ) -> list[tuple[float, str]]:
    with grpc.insecure_channel(address) as channel:
        stub = proximity_pb2_grpc.ProximityServiceStub(channel)
        out: list[tuple[float, str]] = []
        token = ""
        while True:
            page = stub.SearchNearbyBusinesses(pb.SearchNearbyBusinessesRequest(
                location=LatLng(latitude=lat, longitude=lon), radius_meters=radius,
                page_size=page_size, page_token=token), timeout=20)
            out.extend((h.distance_meters, h.business.id) for h in page.businesses)
            token = page.next_page_token
            if not token:
                return out


def assert_same(expected: list[tuple[float, str]], got: list[tuple[float, str]],
                radius: int) -> None:
    # a point within a micrometre of the edge may fall either way in floating point
    edge = {bid for d, bid in expected + got if abs(d - radius) < 1e-6}
    want = [(d, bid) for d, bid in expected if bid not in edge]
    have = [(d, bid) for d, bid in got if bid not in edge]
    assert [bid for _, bid in have] == [bid for _, bid in want]
    for (d1, _), (d2, _) in zip(have, want):
        assert d1 == pytest.approx(d2, abs=1e-6)


def near_real_place(draw: st.DrawFn, businesses: list[Business]) -> tuple[float, float]:
    anchor = draw(st.sampled_from(businesses))
    dlat = draw(st.floats(-0.05, 0.05))
    dlon = draw(st.floats(-0.08, 0.08))
    lat = max(-90.0, min(90.0, anchor.lat + dlat))
    lon = ((anchor.lon + dlon + 180.0) % 360.0) - 180.0
    return lat, lon


@st.composite
def queries(draw: st.DrawFn, businesses: list[Business]) -> Query:
    lat, lon = near_real_place(draw, businesses)
    return lat, lon, draw(st.sampled_from(RADII)), draw(st.sampled_from((7, 20, 100)))


@st.composite
def edge_queries(draw: st.DrawFn) -> Query:
    _, lat, lon = draw(st.sampled_from(EDGE_POINTS))
    lat = max(-90.0, min(90.0, lat + draw(st.floats(-0.02, 0.02))))
    lon = ((lon + draw(st.floats(-0.05, 0.05)) + 180.0) % 360.0) - 180.0
    extremes = draw(st.sampled_from([None, (90.0, 0.0), (-90.0, 10.0), (0.0, 180.0),
                                     (0.0, -180.0), (89.9999, 179.9999)]))
    if extremes:
        lat, lon = extremes
    return lat, lon, draw(st.sampled_from(RADII)), 20


SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.mark.parametrize("index", ["quadtree", "geohash"])
def test_search_near_real_places_equals_brute_force(index, search_servers, search_dataset):
    _, businesses = search_dataset
    real = [b for b in businesses if b.source.startswith("osm:")]

    @SETTINGS
    @given(queries(real))
    def check(q: Query) -> None:
        lat, lon, radius, page_size = q
        assert_same(brute_force(businesses, lat, lon, radius),
                    search_all(search_servers[index], lat, lon, radius, page_size), radius)

    check()


@pytest.mark.parametrize("index", ["quadtree", "geohash"])
def test_search_at_poles_equator_and_antimeridian_equals_brute_force(index, search_servers,
                                                                       search_dataset):
    _, businesses = search_dataset

    @SETTINGS
    @given(edge_queries())
    def check(q: Query) -> None:
        lat, lon, radius, page_size = q
        assert_same(brute_force(businesses, lat, lon, radius),
                    search_all(search_servers[index], lat, lon, radius, page_size), radius)

    check()


def test_search_across_the_antimeridian_finds_both_sides(search_servers):
    got = {bid for _, bid in search_all(search_servers["quadtree"], 0.5, 180.0, 1000, 100)}
    assert {"syn-05-0", "syn-06-0"} <= got  # east at 179.999, west at -179.999


def test_search_at_the_north_pole_finds_every_longitude(search_servers):
    got = {bid for _, bid in search_all(search_servers["geohash"], 90.0, 0.0, 2000, 100)}
    assert {"syn-00-0", "syn-01-0", "syn-02-0"} <= got


def test_helsinki_cathedral_is_nearest_to_its_own_coordinates(search_servers):
    first = search_all(search_servers["quadtree"], 60.1704, 24.9522, 500, 20)[0]
    assert first[1] == "osm-way-419479428" and first[0] < 10
