"""Our vectorised polyline encoder against the `polyline` package, byte for byte."""

from __future__ import annotations

import numpy as np
import polyline
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.routing.encoded_polyline import encode

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
