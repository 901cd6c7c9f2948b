"""Our vectorised polyline encoder against the `polyline` package, byte for byte."""

from __future__ import annotations

import numpy as np
import polyline
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.routing.encoded_polyline import ChainEncoder, encode

coordinate = st.tuples(st.floats(-90, 90, allow_nan=False), st.floats(-180, 180, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(st.lists(coordinate, min_size=1, max_size=60))
def test_encoding_equals_the_reference_package(points: list[tuple[float, float]]) -> None:
    lats = np.array([p[0] for p in points])
    lons = np.array([p[1] for p in points])
    assert encode(lats, lons) == polyline.encode(points, 5)


def test_halves_round_away_from_zero_like_the_reference() -> None:
    points = [(0.000005, -0.000005), (1.000015, -1.000025), (-45.123455, 120.000005)]
    lats, lons = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    assert encode(lats, lons) == polyline.encode(points, 5)


def test_google_documented_example() -> None:
    # the example of Google's "Encoded Polyline Algorithm Format" page
    lats = np.array([38.5, 40.7, 43.252])
    lons = np.array([-120.2, -120.95, -126.453])
    assert encode(lats, lons) == "_p~iF~ps|U_ulLnnqC_mqNvxq`@"


def test_no_points_is_an_empty_string() -> None:
    assert encode(np.zeros(0), np.zeros(0)) == ""


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12))
def test_a_chain_of_segments_encodes_as_its_points_do(seed: int, length: int) -> None:
    # a random walk over random nodes: segment k runs node k -> node k + 1
    rng = np.random.default_rng(seed)
    lat = rng.uniform(-80, 80, size=length + 1)
    lon = rng.uniform(-179, 179, size=length + 1)
    tail = np.arange(length, dtype=np.int32)
    head = tail + 1
    encoder = ChainEncoder(lat, lon, tail, head)
    start = (float(rng.uniform(-80, 80)), float(rng.uniform(-179, 179)))
    end = (float(rng.uniform(-80, 80)), float(rng.uniform(-179, 179)))
    segments = np.arange(length, dtype=np.int32)
    # the points a route gives: its start, the head of every segment but the last, its end
    lats = np.concatenate([[start[0]], lat[head[:-1]], [end[0]]])
    lons = np.concatenate([[start[1]], lon[head[:-1]], [end[1]]])
    assert encoder.path(segments, start, end) == encode(lats, lons)
    assert encoder.path(segments, start, end) == polyline.encode(list(zip(lats, lons)), 5)
