"""SegmentIndex.snap: the nearest point on the nearest link, and its directions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers._runtime.geo import haversine_m
from geoplex.servers.routing.graph import RoadGraph, build_graph, local_xy
from geoplex.servers.routing.profiles import CarProfile
from geoplex.servers.routing.snapping import SegmentIndex
from road_networks import NetworkBuilder, grid, latlon, segment

CAR = CarProfile()
_GRID_BUILDER = grid(4, 4)   # 100 m blocks; its points are in metres
_GRID_POINTS = _GRID_BUILDER.points
_GRID = build_graph(_GRID_BUILDER.build(), CAR)
_GRID_INDEX = SegmentIndex(_GRID)


def _street(oneway: bool = False) -> tuple[RoadGraph, int, int]:
    """A 500 m street running east from node a to node z (a loop back makes a oneway usable)."""
    b = NetworkBuilder()
    a, z = b.node(0, 0), b.node(0, 500)
    if oneway:
        b.way([a, z], oneway="yes")
        b.way([z, b.node(200, 500), b.node(200, 0), a], oneway="yes")
    else:
        b.way([a, z])
    return build_graph(b.build(), CAR), a, z


def test_a_point_beside_the_middle_of_a_long_segment_snaps_mid_segment() -> None:
    graph, _, _ = _street()
    lat, lon = latlon(30, 250)
    snap = SegmentIndex(graph).snap(lat, lon)
    assert snap.fraction == pytest.approx(0.5, abs=1e-3)
    assert snap.distance_m == pytest.approx(30.0, abs=0.05)
    mid_lat, mid_lon = latlon(0, 250)
    assert haversine_m(snap.lat, snap.lon, mid_lat, mid_lon) < 0.5


def test_the_snapped_point_lies_on_the_segment() -> None:
    graph, a, z = _street()
    snap = SegmentIndex(graph).snap(*latlon(-42, 137))
    la, loa = graph.node_lat[a], graph.node_lon[a]
    lz, loz = graph.node_lat[z], graph.node_lon[z]
    along = haversine_m(la, loa, snap.lat, snap.lon)
    rest = haversine_m(snap.lat, snap.lon, lz, loz)
    assert along + rest == pytest.approx(haversine_m(la, loa, lz, loz), abs=1e-3)
    assert along == pytest.approx(snap.fraction * 500.0, abs=0.5)
    assert snap.fraction == pytest.approx(137 / 500, abs=1e-3)


def test_distance_is_the_great_circle_distance_to_the_snapped_point() -> None:
    graph, _, _ = _street()
    lat, lon = latlon(75, 400)
    snap = SegmentIndex(graph).snap(lat, lon)
    assert snap.distance_m == pytest.approx(haversine_m(lat, lon, snap.lat, snap.lon))
    assert snap.distance_m == pytest.approx(75.0, abs=0.1)


def test_a_point_past_the_end_snaps_to_the_end_node() -> None:
    graph, a, z = _street()
    snap = SegmentIndex(graph).snap(*latlon(0, 560))
    assert snap.fraction == 1.0
    assert (snap.lat, snap.lon) == pytest.approx((graph.node_lat[z], graph.node_lon[z]))
    assert snap.distance_m == pytest.approx(60.0, abs=0.1)


def test_a_two_way_road_offers_both_directions() -> None:
    graph, a, z = _street()
    snap = SegmentIndex(graph).snap(*latlon(10, 100))
    forward, backward = segment(graph, a, z), segment(graph, z, a)
    assert (snap.forward, snap.backward) == (forward, backward)
    candidates = snap.candidates()
    assert [c[0] for c in candidates] == [forward, backward]
    assert candidates[0][1] == pytest.approx(0.2, abs=1e-3)
    assert candidates[1][1] == pytest.approx(0.8, abs=1e-3)
    assert candidates[0][1] + candidates[1][1] == pytest.approx(1.0)


def test_a_oneway_road_offers_only_its_direction() -> None:
    graph, a, z = _street(oneway=True)
    snap = SegmentIndex(graph).snap(*latlon(-10, 100))
    [(seg, fraction)] = snap.candidates()
    assert seg == segment(graph, a, z)
    assert fraction == pytest.approx(0.2, abs=1e-3)
    assert snap.backward == -1


def test_a_reversed_oneway_offers_its_direction_measured_from_its_own_start() -> None:
    b = NetworkBuilder()
    a, z = b.node(0, 0), b.node(0, 500)
    b.way([a, z], oneway="-1")
    b.way([a, b.node(200, 0), b.node(200, 500), z], oneway="-1")
    graph = build_graph(b.build(), CAR)
    snap = SegmentIndex(graph).snap(*latlon(-10, 100))
    assert snap.forward == -1
    [(seg, fraction)] = snap.candidates()
    assert seg == segment(graph, z, a)
    assert fraction == pytest.approx(0.8, abs=1e-3)


def test_the_nearest_link_wins_even_when_another_has_the_nearest_sample() -> None:
    # the street runs east at north = 0; its samples are 10 m apart (at east = 0, 10, ...)
    # and the query sits 4 m north of it between two of them (6.4 m from each); eight
    # dead-end spokes end 5 m from the query, so the eight nearest samples are theirs
    b = NetworkBuilder()
    west, east = b.node(0, -250), b.node(0, 250)
    b.way([west, east], name="Long Street")
    qn, qe = 4.0, 5.0
    outer = []
    for k in range(8):
        angle = math.radians(30 + k * 120 / 7)
        inner = b.node(qn + 5 * math.sin(angle), qe + 5 * math.cos(angle))
        outer.append(b.node(qn + 15 * math.sin(angle), qe + 15 * math.cos(angle)))
        b.way([inner, outer[-1]], name=f"Spoke {k}")
    b.way([east, b.node(60, 250), *outer, b.node(60, -250), west], name="Ring")
    graph = build_graph(b.build(), CAR)
    index = SegmentIndex(graph)
    lat, lon = latlon(qn, qe)
    px, py = local_xy(np.array([lat]), np.array([lon]), index.lat0, index.lon0)
    _, nearest = index.tree.query((float(px[0]), float(py[0])), k=8)
    long_link = int(np.flatnonzero((index.link_a == west) & (index.link_b == east))[0])
    assert long_link not in set(index.sample_link[nearest].tolist())  # the premise
    snap = index.snap(lat, lon)
    assert snap.link == long_link
    assert snap.distance_m == pytest.approx(4.0, abs=0.01)
    assert snap.forward == segment(graph, west, east)


@settings(max_examples=60, deadline=None)
@given(st.floats(-150, 450), st.floats(-150, 450))
def test_snap_is_never_farther_than_any_link_of_a_grid(north: float, east: float) -> None:
    graph = _GRID
    index = _GRID_INDEX
    lat, lon = latlon(north, east)
    snap = index.snap(lat, lon)
    # brute force: project onto every link in metres
    best = min(_point_to_link_m(north, east, int(a), int(b))
               for a, b in zip(index.link_a, index.link_b))
    assert snap.distance_m == pytest.approx(best, abs=0.05)
    assert graph.seg_count == 2 * index.link_count


def _point_to_link_m(north: float, east: float, a: int, b: int) -> float:
    (an, ae), (bn, be) = _GRID_POINTS[a], _GRID_POINTS[b]
    dn, de = bn - an, be - ae
    t = min(1.0, max(0.0, ((north - an) * dn + (east - ae) * de) / (dn * dn + de * de)))
    return math.hypot(an + t * dn - north, ae + t * de - east)



@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_snap_equals_brute_force_near_and_far_from_roads(seed: int) -> None:
    # random streets over 600 m; points up to 300 m beyond them: the grid answers near a
    # road, the k-d tree farther out, and both must give the nearest link
    rng = np.random.default_rng(seed)
    b = NetworkBuilder()
    spots = [(float(n), float(e)) for n, e in rng.uniform(0, 600, size=(30, 2))]
    nodes = [b.node(n, e) for n, e in spots]
    order = rng.permutation(len(nodes)).tolist()
    b.way([nodes[k] for k in order] + [nodes[order[0]]], name="Loop")
    for _ in range(10):
        i, j = (int(x) for x in rng.choice(len(nodes), size=2, replace=False))
        b.way([nodes[i], nodes[j]], name="Cut")
    graph = build_graph(b.build(), CAR)
    index = SegmentIndex(graph)
    for north, east in rng.uniform(-300, 900, size=(25, 2)):
        lat, lon = latlon(float(north), float(east))
        snap = index.snap(lat, lon)
        best = min(_to_link(spots, nodes, float(north), float(east), int(a), int(c))
                   for a, c in zip(index.link_a, index.link_b))
        assert snap.distance_m == pytest.approx(best, rel=5e-4, abs=0.05)


def _to_link(spots: list[tuple[float, float]], nodes: list[int], north: float, east: float,
             a: int, b: int) -> float:
    where = dict(zip(nodes, spots))
    (an, ae), (bn, be) = where[a], where[b]
    dn, de = bn - an, be - ae
    t = min(1.0, max(0.0, ((north - an) * dn + (east - ae) * de) / max(dn * dn + de * de,
                                                                        1e-12)))
    return math.hypot(an + t * dn - north, ae + t * de - east)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(5.0, 120.0))
def test_near_equals_brute_force_within_the_radius(seed: int, radius: float) -> None:
    # the map matcher's candidates: every link within the radius (grid for small radii,
    # the k-d tree beyond a cell), nearest first, each at its own nearest point
    rng = np.random.default_rng(seed)
    b = NetworkBuilder()
    spots = [(float(n), float(e)) for n, e in rng.uniform(0, 400, size=(25, 2))]
    nodes = [b.node(n, e) for n, e in spots]
    order = rng.permutation(len(nodes)).tolist()
    b.way([nodes[k] for k in order] + [nodes[order[0]]], name="Loop")
    graph = build_graph(b.build(), CAR)
    index = SegmentIndex(graph)
    for north, east in rng.uniform(-100, 500, size=(15, 2)):
        lat, lon = latlon(float(north), float(east))
        found = index.near(lat, lon, radius, limit=10_000)
        brute = {link: _to_link(spots, nodes, float(north), float(east), int(a), int(c))
                 for link, (a, c) in enumerate(zip(index.link_a, index.link_b))}
        got = {s.link for s in found}
        # links within 0.1 m of the radius may fall either side (metres vs great circle)
        assert {k for k, d in brute.items() if d <= radius - 0.1} <= got
        assert got <= {k for k, d in brute.items() if d <= radius + 0.1}
        distances = [s.distance_m for s in found]
        assert distances == sorted(distances)
        for s in found:
            assert s.distance_m == pytest.approx(brute[s.link], rel=5e-4, abs=0.05)
