"""Unit tests of the in-memory quadtree index: exact against brute force wherever the
search takes a shortcut (the cover, the chord test, the cut to a page, the distance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.proximity import quadtree
from geoplex.servers.proximity.domain import haversine_np
from geoplex.servers.proximity.quadtree import IndexedPoint, QuadtreeIndex, brute_force

lat_st = st.floats(-90, 90, allow_nan=False)
lon_st = st.floats(-180, 180, allow_nan=False)
# spreads from one cell to many degrees: the cover, the Python and numpy chord tests,
# the cut to a page
spread_st = st.sampled_from([1e-4, 0.01, 0.05, 0.3, 3.0])
radius_st = st.sampled_from([0.0, 1.0, 500.0, 1000.0, 2000.0, 5000.0, 20000.0, 2e5, 5e6,
                             2.1e7])


def wrap(lon: float) -> float:
    return ((lon + 180.0) % 360.0) - 180.0


@st.composite
def cluster(draw: st.DrawFn, max_points: int = 300) -> tuple[float, float, list[IndexedPoint]]:
    """Points around a centre anywhere (the poles and the antimeridian included), some
    of them at the very same place (ties)."""
    lat = draw(st.one_of(lat_st, st.sampled_from([90.0, -90.0, 89.99, -89.99, 0.0])))
    lon = draw(st.one_of(lon_st, st.sampled_from([180.0, -180.0, 179.999, -179.999])))
    spread = draw(spread_st)
    n = draw(st.integers(0, max_points))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lats = np.clip(lat + rng.normal(0, spread, n), -90, 90)
    lons = (lon + rng.normal(0, spread * 2, n) + 180.0) % 360.0 - 180.0
    same = rng.random(n) < 0.1  # ties: at the place of the point before
    for i in np.flatnonzero(same[1:]) + 1:
        lats[i], lons[i] = lats[i - 1], lons[i - 1]
    points = [IndexedPoint(f"p{i:04d}", float(a), float(b), "a" if i % 3 else "b", f"n{i % 7}")
              for i, (a, b) in enumerate(zip(lats, lons))]
    return lat, lon, points


def query_near(draw: st.DrawFn, lat: float, lon: float) -> tuple[float, float]:
    return (max(-90.0, min(90.0, lat + draw(st.floats(-0.2, 0.2)))),
            wrap(lon + draw(st.floats(-0.3, 0.3))))


def all_pages(index: QuadtreeIndex, lat: float, lon: float, radius: float, size: int,
              **filters: str) -> list[tuple[float, str]]:
    out: list[tuple[float, str]] = []
    after = None
    while True:
        dist, ids = index.search(lat, lon, radius, after=after, limit=size, **filters)
        page = list(zip(dist.tolist(), ids.tolist()))
        assert len(page) <= size
        out += page
        if len(page) < size:
            return out
        after = page[-1]


@settings(max_examples=200, deadline=None)
@given(cluster(), radius_st, st.data())
def test_search_equals_brute_force_to_the_bit(data, radius, draw):
    lat, lon, points = data
    qlat, qlon = query_near(draw.draw, lat, lon)
    dist, ids = QuadtreeIndex(points).search(qlat, qlon, radius)
    assert list(zip(dist.tolist(), ids.tolist())) == brute_force(points, qlat, qlon, radius)


@settings(max_examples=150, deadline=None)
@given(cluster(), radius_st, st.sampled_from([1, 2, 7, 20]), st.data())
def test_every_page_follows_from_the_last_without_repeats_or_gaps(data, radius, size, draw):
    lat, lon, points = data
    qlat, qlon = query_near(draw.draw, lat, lon)
    index = QuadtreeIndex(points)
    assert all_pages(index, qlat, qlon, radius, size) == brute_force(points, qlat, qlon,
                                                                      radius)


@settings(max_examples=100, deadline=None)
@given(cluster(), radius_st, st.sampled_from(["", "a"]), st.sampled_from(["", "n3"]),
       st.data())
def test_category_and_keyword_filter_before_the_page(data, radius, category, keyword, draw):
    lat, lon, points = data
    qlat, qlon = query_near(draw.draw, lat, lon)
    chosen = [p for p in points if (not category or p.category == category)
              and (not keyword or keyword in p.name_lower)]
    got = all_pages(QuadtreeIndex(points), qlat, qlon, radius, 5, category=category,
                    keyword=keyword)
    assert got == brute_force(chosen, qlat, qlon, radius)


@settings(max_examples=100, deadline=None)
@given(cluster(), radius_st, st.data())
def test_removed_and_moved_points_are_found_where_they_are_now(data, radius, draw):
    lat, lon, points = data
    qlat, qlon = query_near(draw.draw, lat, lon)
    index = QuadtreeIndex(points)
    now = {p.id: p for p in points}
    for i, p in enumerate(points):
        if i % 3 == 0:
            index.remove(p.id)
            del now[p.id]
        elif i % 5 == 0:  # moved onto the query point
            moved = IndexedPoint(p.id, qlat, qlon, p.category, p.name_lower)
            index.upsert(moved)
            now[p.id] = moved
    want = brute_force(list(now.values()), qlat, qlon, radius)
    assert all_pages(index, qlat, qlon, radius, 7) == want
    index.rebuild()
    assert all_pages(index, qlat, qlon, radius, 7) == want


@settings(max_examples=300, deadline=None)
@given(lat_st, lon_st, radius_st, st.floats(-1, 1), st.floats(-1, 1))
def test_cover_holds_every_point_within_the_radius(lat, lon, radius, fy, fx):
    # a point on the circle's edge, in any direction, and the cells that hold it
    cap = quadtree._cap(radius)
    angle = radius / 6_371_008.8 * math.hypot(fx, fy) / math.sqrt(2)
    bearing = math.atan2(fx, fy)
    p1, l1 = math.radians(lat), math.radians(lon)
    p2 = math.asin(max(-1.0, min(1.0, math.sin(p1) * math.cos(angle)
                                 + math.cos(p1) * math.sin(angle) * math.cos(bearing))))
    l2 = l1 + math.atan2(math.sin(bearing) * math.sin(angle) * math.cos(p1),
                         math.cos(angle) - math.sin(p1) * math.sin(p2))
    plat, plon = math.degrees(p2), wrap(math.degrees(l2))
    if haversine_np(lat, lon, np.array([plat]), np.array([plon]))[0] > radius:
        return
    code = int(quadtree.morton_codes(np.array([plat]), np.array([plon]))[0])
    bounds = quadtree._cover(lat, lon, cap, math.cos(math.radians(lat)))
    assert any(lo <= code < hi for lo, hi in zip(bounds[::2], bounds[1::2]))
    assert len(bounds) // 2 <= max(quadtree.MAX_COVER, 4)


def test_distances_are_those_of_haversine_np_to_the_bit():
    rng = np.random.default_rng(7)
    for _ in range(2000):
        n = int(rng.integers(1, 40))
        lat = float(rng.choice([rng.uniform(-90, 90), 90.0, -90.0, 0.0, 1e-310, 5e-324]))
        lon = float(rng.choice([rng.uniform(-180, 180), 180.0, -180.0, 0.0, -1e-310]))
        lats = np.clip(lat + rng.normal(0, rng.choice([1e-300, 1e-4, 0.1, 10.0, 100.0]), n),
                       -90, 90)
        lats[0] = rng.choice([lats[0], 5e-324, -1e-310, 0.0, -lat])  # subnormal, antipode
        lons = (lon + rng.normal(0, rng.choice([1e-4, 0.1, 10.0, 200.0]), n) + 180) % 360 - 180
        want = haversine_np(lat, lon, lats, lons)
        p2 = np.radians(lats)
        data = np.column_stack([p2 * 0.5, lons, np.cos(p2)])
        many = quadtree._haversine(lat, lon, data[:, 0], data[:, 1], data[:, 2], True)
        few = quadtree._haversine_few(lat, lon, data.tolist())
        assert many.tolist() == want.tolist()
        assert few == want.tolist()


def test_an_empty_index_finds_nothing_anywhere():
    index = QuadtreeIndex()
    for lat, lon in [(0.0, 0.0), (90.0, 0.0), (-90.0, 180.0), (45.0, -180.0)]:
        dist, ids = index.search(lat, lon, 20000)
        assert len(dist) == len(ids) == 0
    assert len(index) == 0


@pytest.mark.parametrize("radius", [-1.0, math.nan])
def test_a_negative_or_nan_radius_finds_nothing(radius):
    index = QuadtreeIndex([IndexedPoint("a", 1.0, 2.0, "", "")])
    assert len(index.search(1.0, 2.0, radius)[1]) == 0


def test_ties_at_the_cut_of_a_page_go_by_id():
    # 100 points at one place and 100 at another, farther: ties on, and at, every page
    points = [IndexedPoint(f"b{i:03d}", 60.001, 25.0, "", "") for i in range(100)]
    points += [IndexedPoint(f"a{i:03d}", 60.002, 25.0, "", "") for i in range(100)]
    index = QuadtreeIndex(reversed(points))
    want = brute_force(points, 60.0, 25.0, 5000)
    assert [bid for _, bid in want[:3]] == ["b000", "b001", "b002"]
    for size in (1, 20, 99, 100, 101, 250):
        assert all_pages(index, 60.0, 25.0, 5000, size) == want


def test_a_dense_city_pages_like_brute_force_at_every_radius():
    # more candidates than the Python chord test takes, more survivors than a page:
    # the numpy test, the cut to the page's nearest, the ordering in numpy
    rng = np.random.default_rng(3)
    points = [IndexedPoint(f"c{i:05d}", 48.2 + float(a), 16.37 + float(b), "", "")
              for i, (a, b) in enumerate(rng.normal(0, 0.05, (3000, 2)))]
    index = QuadtreeIndex(points)
    for radius in (500, 1000, 2000, 5000, 20000):
        want = brute_force(points, 48.21, 16.36, radius)
        dist, ids = index.search(48.21, 16.36, radius, limit=20)
        assert list(zip(dist.tolist(), ids.tolist())) == want[:20]
        assert all_pages(index, 48.21, 16.36, radius, 50) == want
    for p in points[::2]:
        index.remove(p.id)
    want = brute_force(points[1::2], 48.21, 16.36, 20000)
    assert all_pages(index, 48.21, 16.36, 20000, 20) == want


@pytest.mark.parametrize("lat,lon", [(90.0, 0.0), (-90.0, 0.0), (89.9999, 179.9999),
                                     (0.0, 180.0), (0.0, -180.0), (-45.0, 179.99)])
def test_the_poles_and_the_antimeridian(lat, lon):
    rng = np.random.default_rng(11)
    points = [IndexedPoint(f"q{i:04d}", float(np.clip(lat + a, -90, 90)), wrap(lon + b),
                           "", "")
              for i, (a, b) in enumerate(rng.normal(0, 0.1, (500, 2)))]
    points.append(IndexedPoint("pole", math.copysign(90.0, lat), 0.0, "", ""))
    points.append(IndexedPoint("east", lat, 180.0, "", ""))
    points.append(IndexedPoint("west", lat, -180.0, "", ""))
    index = QuadtreeIndex(points)
    for radius in (500, 5000, 20000, 2e6):
        assert all_pages(index, lat, lon, radius, 20) == brute_force(points, lat, lon, radius)


def test_cells_far_apart_in_z_order_are_read_apart():
    # around (0, 0) the four cells of a cover are in four quadrants of the earth, with
    # every point elsewhere between them in Z order
    rng = np.random.default_rng(5)
    points = [IndexedPoint(f"o{i:04d}", float(a), float(b), "", "")
              for i, (a, b) in enumerate(rng.normal(0, 0.05, (400, 2)))]
    points += [IndexedPoint(f"w{i:04d}", float(a), float(b), "", "")
               for i, (a, b) in enumerate(zip(rng.uniform(-80, 80, 5000),
                                              rng.uniform(-180, 180, 5000)))]
    index = QuadtreeIndex(points)
    for radius in (2000, 5000, 20000):
        assert all_pages(index, 0.0, 0.0, radius, 20) == brute_force(points, 0.0, 0.0, radius)
