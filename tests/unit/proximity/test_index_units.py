"""Unit tests of the proximity domain: no network."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers.proximity import domain
from geoplex.servers.proximity.quadtree import IndexedPoint, QuadtreeIndex, brute_force

lat_st = st.floats(-90, 90, allow_nan=False)
lon_st = st.floats(-180, 180, allow_nan=False)


@st.composite
def clustered_points(draw: st.DrawFn) -> tuple[float, float, list[IndexedPoint]]:
    centre_lat, centre_lon = draw(lat_st), draw(lon_st)
    n = draw(st.integers(0, 400))
    pts = []
    for i in range(n):
        lat = max(-90.0, min(90.0, centre_lat + draw(st.floats(-0.3, 0.3))))
        lon = ((centre_lon + draw(st.floats(-0.5, 0.5)) + 180) % 360) - 180
        pts.append(IndexedPoint(f"p{i:04d}", lat, lon, draw(st.sampled_from(["a", "b"])), "n"))
    return centre_lat, centre_lon, pts


@settings(max_examples=150, deadline=None)
@given(clustered_points(), st.sampled_from(domain.RADII_M), st.floats(-0.2, 0.2),
       st.floats(-0.2, 0.2))
def test_quadtree_equals_brute_force_anywhere_on_earth(data, radius, dlat, dlon):
    lat, lon, pts = data
    qlat = max(-90.0, min(90.0, lat + dlat))
    qlon = ((lon + dlon + 180) % 360) - 180
    index = QuadtreeIndex(pts)
    dist, ids = index.search(qlat, qlon, radius)
    expected = brute_force(pts, qlat, qlon, radius)
    assert list(ids) == [bid for _, bid in expected]
    assert list(dist) == pytest.approx([d for d, _ in expected])


@settings(max_examples=100, deadline=None)
@given(clustered_points(), st.sampled_from(domain.RADII_M))
def test_geohash_cells_cover_every_point_in_the_circle(data, radius):
    lat, lon, pts = data
    cells = domain.cells_for_search(lat, lon, radius)
    for d, bid in brute_force(pts, lat, lon, radius):
        p = next(p for p in pts if p.id == bid)
        assert any(domain.encode_geohash(p.lat, p.lon).startswith(c) for c in cells)


def test_quadtree_sees_upserts_and_removals_before_and_after_rebuild():
    pts = [IndexedPoint(f"p{i}", 60 + i * 1e-4, 25.0, "a", "n") for i in range(300)]
    index = QuadtreeIndex(pts, rebuild_threshold=1)
    index.upsert(IndexedPoint("new", 60.0, 25.0, "a", "n"))
    index.remove("p1")
    _, ids = index.search(60.0, 25.0, 500, limit=3)
    assert list(ids) == ["new", "p0", "p2"]
    assert index.needs_rebuild()
    index.rebuild()
    _, again = index.search(60.0, 25.0, 500, limit=3)
    assert list(again) == ["new", "p0", "p2"] and len(index) == 300


def test_pages_follow_the_cursor_without_repeats():
    pts = [IndexedPoint(f"p{i:03d}", 0.0, i * 1e-5, "a", "n") for i in range(250)]
    index = QuadtreeIndex(pts)
    seen, after = [], None
    while True:
        dist, ids = index.search(0.0, 0.0, 5000, after=after, limit=40)
        if not len(ids):
            break
        seen.extend(ids.tolist())
        after = (float(dist[-1]), str(ids[-1]))
    assert seen == [f"p{i:03d}" for i in range(250)]


def test_bounding_box_splits_at_the_antimeridian_and_opens_at_the_pole():
    assert len(domain.bounding_boxes(0.0, 179.999, 1000)) == 2
    polar = domain.bounding_boxes(89.999, 10.0, 1000)
    assert len(polar) == 1 and polar[0].min_lon == -180 and polar[0].max_lon == 180


def test_page_token_is_bound_to_its_query_and_holds_no_coordinates():
    q = domain.SearchQuery(60.1704, 24.9522, 500)
    hit = domain.Hit(domain.Business("b1", "x", "", 60.1704, 24.9522), 12.5)
    token = domain.encode_page_token(q, hit)
    assert domain.decode_page_token(token, q) == (12.5, "b1")
    assert "60.17" not in token
    with pytest.raises(InvalidArgument):
        domain.decode_page_token(token, domain.SearchQuery(60.1704, 24.9522, 1000))


@pytest.mark.parametrize("lat,lon", [(90.0001, 0), (0, 180.0001), (math.inf, 0), (0, math.nan)])
def test_invalid_locations_are_rejected(lat, lon):
    with pytest.raises(InvalidArgument):
        domain.validate_location(lat, lon)


def test_haversine_matches_arc_length_on_the_mean_sphere():
    # one degree of arc along the equator or a meridian is R * pi / 180
    arc = domain.EARTH_RADIUS_M * math.pi / 180
    assert domain.haversine_m(0, 0, 0, 1) == pytest.approx(arc, rel=1e-12)
    assert domain.haversine_m(10, 30, 11, 30) == pytest.approx(arc, rel=1e-12)
    assert domain.haversine_m(0, 179.5, 0, -179.5) == pytest.approx(arc, rel=1e-9)


def test_hand_built_search_response_parses_like_the_generated_one():
    from datetime import UTC, datetime

    from geoplex.proximity.v1 import proximity_pb2 as pb
    from geoplex.servers.proximity import convert

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    hits = [domain.Hit(domain.Business(f"b{i}", f"Café {i} ☕" * (i * 20), "cafe", 60.0 + i,
                                       24.0, address="x" * (i * 70), create_time=now,
                                       update_time=now), i * 12.5) for i in range(5)]
    for token in ("", "tok_en-123"):
        page = domain.SearchPage(hits, token)
        parsed = pb.SearchNearbyBusinessesResponse.FromString(convert.page_to_bytes(page))
        assert parsed == convert.page_to_pb(page)


def test_primed_heads_answer_searches_and_an_edit_gets_fresh_bytes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace
    from datetime import UTC, datetime

    from geoplex.proximity.v1 import proximity_pb2 as pb
    from geoplex.servers.proximity import convert

    monkeypatch.setattr(convert, "_heads", {})
    now = datetime(2026, 12, 8, tzinfo=UTC)
    businesses = [domain.Business(f"prime{i}", f"Shop {i}", "shop", 60.0, 24.0 + i / 100,
                                  create_time=now, update_time=now) for i in range(3)]
    assert convert.prime_heads(iter(businesses)) == 3
    assert [convert._heads[b.id][0] for b in businesses] == businesses  # made ahead
    built: list[str] = []
    real = convert.business_to_pb

    def counting(b: domain.Business) -> pb.Business:
        built.append(b.id)
        return real(b)
    monkeypatch.setattr(convert, "business_to_pb", counting)
    page = domain.SearchPage([domain.Hit(b, 10.0 * i) for i, b in enumerate(businesses)], "")
    assert pb.SearchNearbyBusinessesResponse.FromString(
        convert.page_to_bytes(page)).businesses[2].business.name == "Shop 2"
    assert built == [], "a primed business is not serialised again by a search"
    assert (pb.SearchNearbyBusinessesResponse.FromString(convert.page_to_bytes(page))
            == convert.page_to_pb(page))
    renamed = replace(businesses[0], name="Shop renamed")  # an edit is a new object
    parsed = pb.SearchNearbyBusinessesResponse.FromString(
        convert.page_to_bytes(domain.SearchPage([domain.Hit(renamed, 1.0)], "")))
    assert parsed.businesses[0].business.name == "Shop renamed"
