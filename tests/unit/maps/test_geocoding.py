"""The geocoder on a small synthetic gazetteer in Helsinki, where every answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.maps.domain import (ADDRESS, PLACE, POI, STREET, Feature,
                                         StreetLine)
from geoplex.servers._runtime.geo import EARTH_RADIUS_M
from geoplex.servers.maps.geocoding import Geocoder

LAT = 60.17
M_PER_DEG_LAT = EARTH_RADIUS_M * math.pi / 180
M_PER_DEG_LON = M_PER_DEG_LAT * math.cos(math.radians(LAT))


def east(lon0: float, metres: float) -> float:
    return lon0 + metres / M_PER_DEG_LON


def north(lat0: float, metres: float) -> float:
    return lat0 + metres / M_PER_DEG_LAT


LON0 = 24.90
# Testikatu: a straight street 1 km due east; even numbers 10 m north of it, odd south
STREET_LINE = StreetLine("Testikatu", "Helsinki", np.array([LAT, LAT]),
                         np.array([LON0, east(LON0, 1000)]))
ADDRESSES = [
    Feature(ADDRESS, "Testikatu", north(LAT, 10), east(LON0, 100), housenumber="2",
            postcode="00100", city="Helsinki"),
    Feature(ADDRESS, "Testikatu", north(LAT, 10), east(LON0, 300), housenumber="10",
            postcode="00100", city="Helsinki"),
    Feature(ADDRESS, "Testikatu", north(LAT, -10), east(LON0, 120), housenumber="1",
            postcode="00100", city="Helsinki"),
    Feature(ADDRESS, "Testikatu", north(LAT, -10), east(LON0, 280), housenumber="9",
            postcode="00100", city="Helsinki"),
    Feature(ADDRESS, "Testikatu", north(LAT, -10), east(LON0, 200), housenumber="5 A",
            postcode="00100", city="Helsinki"),
    Feature(ADDRESS, "Töölönkatu", north(LAT, 500), east(LON0, 100), housenumber="4",
            postcode="00250", city="Helsinki"),
    Feature(ADDRESS, "Mannerheimintie", north(LAT, 800), east(LON0, 100), housenumber="10",
            postcode="00100", city="Helsinki"),
    Feature(ADDRESS, "Avenue de la Costa", 43.74, 7.42, housenumber="10", postcode="98000",
            city="Monaco"),
]
OTHERS = [
    Feature(STREET, "Testikatu", LAT, east(LON0, 500), city="Helsinki"),
    Feature(STREET, "Töölönkatu", north(LAT, 500), east(LON0, 100), city="Helsinki"),
    Feature(STREET, "Testitie", north(LAT, 2000), LON0, city="Helsinki"),
    Feature(POI, "Café Regatta", north(LAT, 900), LON0, city="Helsinki",
            category="amenity=cafe"),
    Feature(POI, "Cafe Register", north(LAT, 950), LON0, city="Helsinki",
            category="amenity=cafe"),
    Feature(PLACE, "Helsinki", 60.16952, 24.93545, city="FI", importance=0.77),
    Feature(PLACE, "Helsinge", 56.02, 12.20, city="DK", importance=0.55),
    Feature(PLACE, "Monaco", 43.73, 7.42, city="MC", importance=0.6),
    Feature(PLACE, "Pasila", north(LAT, 5000), LON0, city="FI", importance=0.3),
]
# twelve Springfields of falling size, for paging and the bias point
SPRINGFIELDS = [Feature(PLACE, "Springfield", 40.0 + i, -90.0 + i, city=f"U{i:X}",
                        importance=0.9 - i * 0.01) for i in range(12)]


@pytest.fixture(scope="module")
def geocoder() -> Geocoder:
    return Geocoder(ADDRESSES + OTHERS + SPRINGFIELDS, [STREET_LINE])


def test_exact_address_wins(geocoder: Geocoder) -> None:
    found = geocoder.geocode("Testikatu 10")
    assert found[0].label == "Testikatu 10, 00100 Helsinki"
    assert found[0].kind == ADDRESS and not found[0].interpolated
    assert found[0].confidence == pytest.approx(1.0)
    assert (found[0].lat, found[0].lon) == (ADDRESSES[1].lat, ADDRESSES[1].lon)


def test_number_first_streets_are_labelled_number_first(geocoder: Geocoder) -> None:
    found = geocoder.geocode("10 Avenue de la Costa")
    assert found[0].label == "10 Avenue de la Costa, 98000 Monaco"


@pytest.mark.parametrize("query", [
    "testikatu 10", "TESTIKATU 10", "Testikatu 10, Helsinki", "Helsinki Testikatu 10",
    "Helsinki, Testikatu 10", "Tsetikatu 10", "Testkatu 10", "Testikkatu 10",
    "Testik. 10", "Testikatu 10, 00100 Helsinki",
])
def test_variants_of_one_address_find_it(geocoder: Geocoder, query: str) -> None:
    assert geocoder.geocode(query)[0].label == "Testikatu 10, 00100 Helsinki"


def test_missing_diacritics_and_typos_find_the_street(geocoder: Geocoder) -> None:
    assert geocoder.geocode("Toolonkatu 4")[0].label == "Töölönkatu 4, 00250 Helsinki"
    assert geocoder.geocode("Toolonkatu")[0].label == "Töölönkatu, Helsinki"
    assert geocoder.geocode("Tolonkatu")[0].label == "Töölönkatu, Helsinki"


def test_exact_name_beats_a_typo_match(geocoder: Geocoder) -> None:
    found = geocoder.geocode("Cafe Regatta")
    assert [c.label for c in found[:2]] == ["Café Regatta, Helsinki",
                                            "Cafe Register, Helsinki"]
    assert found[0].confidence > found[1].confidence


def test_places_are_labelled_with_their_country_and_ranked_by_size(
        geocoder: Geocoder) -> None:
    assert geocoder.geocode("Helsinki, FI")[0].label == "Helsinki, FI"
    assert geocoder.geocode("helsinki")[0].label == "Helsinki, FI"
    springfields = geocoder.geocode("Springfield", limit=12)
    assert [c.label for c in springfields] == [f"Springfield, U{i:X}" for i in range(12)]


def test_the_context_picks_the_place_of_that_country(geocoder: Geocoder) -> None:
    found = geocoder.geocode("Springfield, U5")
    assert found[0].label == "Springfield, U5"
    assert found[1].confidence < found[0].confidence


def test_the_bias_point_breaks_a_tie_of_equal_names(geocoder: Geocoder) -> None:
    near_ninth = (48.0, -82.0)  # Springfield U8 is at (48, -82)
    assert geocoder.geocode("Springfield", bias=near_ninth)[0].label == "Springfield, U8"


def test_interpolated_number_lands_between_its_neighbours_of_the_same_parity(
        geocoder: Geocoder) -> None:
    found = geocoder.geocode("Testikatu 6")[0]
    assert found.kind == ADDRESS and found.interpolated
    assert found.label == "Testikatu 6, 00100 Helsinki"
    # 2 is 100 m along, 10 is 300 m: 6 is on the street, 200 m along (not near odd 5 A)
    assert found.lat == pytest.approx(LAT, abs=0.05 / M_PER_DEG_LAT)
    assert found.lon == pytest.approx(east(LON0, 200), abs=0.05 / M_PER_DEG_LON)
    odd = geocoder.geocode("Testikatu 7")[0]
    assert odd.interpolated  # between 5 A (200 m) and 9 (280 m)
    assert odd.lon == pytest.approx(east(LON0, 240), abs=0.05 / M_PER_DEG_LON)


def test_a_number_outside_the_known_ones_gives_the_street(geocoder: Geocoder) -> None:
    found = geocoder.geocode("Testikatu 40")[0]
    assert (found.kind, found.label, found.interpolated) == \
        (STREET, "Testikatu, Helsinki", False)
    assert found.confidence < 0.9


def test_a_number_without_its_letter_finds_the_lettered_address(geocoder: Geocoder) -> None:
    found = geocoder.geocode("Testikatu 5")[0]
    assert found.label == "Testikatu 5 A, 00100 Helsinki" and not found.interpolated
    assert geocoder.geocode("Testikatu 5 a")[0].confidence == pytest.approx(1.0)


def test_limit_and_offset_page_through_one_ranking(geocoder: Geocoder) -> None:
    everything = geocoder.geocode("Springfield", limit=12)
    pages = [geocoder.geocode("Springfield", limit=5, offset=o) for o in (0, 5, 10)]
    assert [c for page in pages for c in page] == everything
    assert len(pages[2]) == 2
    assert geocoder.geocode("Springfield", limit=5, offset=40) == []


def test_nonsense_finds_nothing_and_bad_arguments_are_refused(geocoder: Geocoder) -> None:
    assert geocoder.geocode("qqqqxxzz") == []
    assert geocoder.geocode("   ") == []
    with pytest.raises(ValueError):
        geocoder.geocode("x" * 201)
    with pytest.raises(ValueError):
        geocoder.geocode("Testikatu", limit=0)
    with pytest.raises(ValueError):
        geocoder.geocode("Testikatu", offset=-1)


def test_reverse_returns_the_address_within_the_limit(geocoder: Geocoder) -> None:
    answer = geocoder.reverse(north(LAT, 15), east(LON0, 300))
    assert answer is not None
    assert (answer.kind, answer.label) == (ADDRESS, "Testikatu 10, 00100 Helsinki")
    assert answer.distance_m == pytest.approx(5.0, abs=0.01)


def test_reverse_projects_onto_the_street_beyond_the_addresses(geocoder: Geocoder) -> None:
    answer = geocoder.reverse(north(LAT, 30), east(LON0, 700))  # 400 m from any address
    assert answer is not None
    assert (answer.kind, answer.label) == (STREET, "Testikatu, Helsinki")
    assert answer.distance_m == pytest.approx(30.0, abs=0.05)
    assert answer.lat == pytest.approx(LAT, abs=0.05 / M_PER_DEG_LAT)
    assert answer.lon == pytest.approx(east(LON0, 700), abs=0.05 / M_PER_DEG_LON)


def test_reverse_falls_back_to_the_nearest_place(geocoder: Geocoder) -> None:
    answer = geocoder.reverse(north(LAT, 4000), LON0)  # 1 km from Pasila, far from streets
    assert answer is not None
    assert (answer.kind, answer.label) == (PLACE, "Pasila, FI")
    assert answer.distance_m == pytest.approx(1000.0, abs=0.5)
    assert geocoder.reverse(0.0, 0.0) is None  # nothing within 50 km


@settings(max_examples=60, deadline=None)
@given(st.floats(-200, 1200), st.floats(-150, 150), st.floats(5, 150))
def test_reverse_street_distance_is_the_brute_force_distance(
        geocoder_alone: Geocoder, x: float, y: float, limit: float) -> None:
    answer = geocoder_alone.reverse(north(LAT, y), east(LON0, x), max_distance_m=limit)
    along = min(max(x, 0.0), 1000.0)
    expected = math.hypot(x - along, y)  # the street is the x axis from 0 to 1000 m
    if expected > limit + 0.1:
        assert answer is None or answer.kind != STREET
    elif expected < limit - 0.1:
        assert answer is not None and answer.kind == STREET
        assert answer.distance_m == pytest.approx(expected, abs=0.05)


@pytest.fixture(scope="module")
def geocoder_alone() -> Geocoder:
    """Only the street: every reverse answer comes from it."""
    return Geocoder([], [STREET_LINE])


def test_counts_and_memory_are_reported(geocoder: Geocoder) -> None:
    assert geocoder.counts() == {ADDRESS: 8, STREET: 3, POI: 2, PLACE: 16}
    assert geocoder.nbytes() > 0


@pytest.mark.parametrize("order", [1, -1])
def test_of_places_with_one_label_the_most_populous_answers(order: int) -> None:
    # GeoNames has several "Helong, CN": whichever comes first, the larger one answers
    namesakes = [Feature(PLACE, "Helong", 42.54, 129.00, city="CN", importance=0.62),
                 Feature(PLACE, "Helong", 23.20, 112.05, city="CN", importance=0.35),
                 Feature(PLACE, "Helong", 30.01, 103.42, city="CN", importance=0.30)][::order]
    found = Geocoder(namesakes, []).geocode("Helong", None, 5, 0)
    assert [(c.label, c.lat) for c in found] == [("Helong, CN", 42.54)]
