"""Unit tests of what the proximity service refuses in a request: no network."""

from __future__ import annotations

import unicodedata
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geoplex.proximity.v1 import proximity_pb2 as pb
from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers.proximity import convert, domain
from geoplex.type.v1.geo_pb2 import LatLng

BIDI_CONTROLS = "\u061c\u200e\u200f" + "".join(map(chr, range(0x202A, 0x202F))) \
    + "".join(map(chr, range(0x2066, 0x206A)))
CONTROLS = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\t", "\n", *BIDI_CONTROLS]
CAFE = domain.Business("", "Cafe", "cafe", 60.17, 24.95)
ESCAPE = "Main St\x1b[2J 1"


# -- control and bidi characters ---------------------------------------------------------

@pytest.mark.parametrize("char", CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_control_and_bidi_characters_in_text_are_rejected_without_echoing_it(char):
    value = f"Evil{char}Cafe"
    with pytest.raises(InvalidArgument) as err:
        domain.validate_text(value, "business.name")
    assert err.value.reason == "INVALID_CHARACTERS" and err.value.field == "business.name"
    assert "Evil" not in err.value.message and char not in err.value.message


@pytest.mark.parametrize("field_name,draft", [
    ("name", replace(CAFE, name=ESCAPE)), ("category", replace(CAFE, category=ESCAPE)),
    ("address", replace(CAFE, address=ESCAPE)), ("phone", replace(CAFE, phone=ESCAPE)),
    ("website", replace(CAFE, website=ESCAPE)),
    ("opening_hours", replace(CAFE, opening_hours=ESCAPE))])
def test_every_stored_text_field_of_a_business_refuses_control_characters(field_name, draft):
    with pytest.raises(InvalidArgument) as err:
        domain.validate_business(draft)
    assert err.value.field == f"business.{field_name}"
    assert err.value.reason == "INVALID_CHARACTERS"


@pytest.mark.parametrize("value", ["Café Ægir", "東京ラーメン", "Pizza 🍕", "👩‍🍳 Chef's",
                                   "مقهى", "کافه‌ نو", "Shy\u00adhyphen", "  padded\t\n"])
def test_ordinary_unicode_text_is_kept(value):
    assert domain.validate_text(value, "business.name") == value.strip()


printable = st.characters(blacklist_categories=("Cc", "Cs"),
                          blacklist_characters=BIDI_CONTROLS)


@given(st.text(printable, max_size=40), st.sampled_from(CONTROLS), st.text(printable, max_size=40))
def test_text_is_refused_exactly_when_a_control_character_would_be_stored(head, char, tail):
    assert domain.validate_text(head + tail, "x") == (head + tail).strip()
    stored = (head + char + tail).strip()
    if any(unicodedata.category(c) == "Cc" or c in BIDI_CONTROLS for c in stored):
        with pytest.raises(InvalidArgument):
            domain.validate_text(head + char + tail, "x")
    else:  # a leading or trailing tab, newline or NEL is whitespace, stripped
        assert domain.validate_text(head + char + tail, "x") == stored


def test_search_keyword_and_category_refuse_control_characters():
    request = pb.SearchNearbyBusinessesRequest(
        location=LatLng(latitude=60.17, longitude=24.95), radius_meters=500, keyword="a\x00b")
    with pytest.raises(InvalidArgument) as err:
        convert.query_from_pb(request)
    assert err.value.field == "keyword" and err.value.reason == "INVALID_CHARACTERS"


# -- business ids ----------------------------------------------------------------------------

@pytest.mark.parametrize("value,reason", [
    ("x" * 129, "ID_TOO_LONG"), ("x" * 5000, "ID_TOO_LONG"), ("biz\x00", "INVALID_ID"),
    ("biz\u202e1", "INVALID_ID"), ("a\nb", "INVALID_ID")])
def test_overlong_or_unprintable_ids_are_rejected_without_echoing_them(value, reason):
    with pytest.raises(InvalidArgument) as err:
        domain.validate_business_id(value, "id")
    assert err.value.reason == reason and err.value.field == "id"
    assert "128" in err.value.message and "xxx" not in err.value.message
    assert "biz" not in err.value.message


def test_an_empty_id_is_a_missing_field():
    with pytest.raises(InvalidArgument) as err:
        domain.validate_business_id("", "business.id")
    assert err.value.reason == "REQUIRED_FIELD" and err.value.field == "business.id"


@pytest.mark.parametrize("value", ["b", "biz_0123456789abcdef", "osm-node-1", "gn-42", "x" * 128,
                                   "café-東京"])
def test_ids_of_1_to_128_printable_characters_are_accepted(value):
    assert domain.validate_business_id(value, "id") == value


# -- locations with explicit presence -------------------------------------------------------

@pytest.mark.parametrize("location,missing", [
    (LatLng(), "latitude"), (LatLng(longitude=24.95), "latitude"),
    (LatLng(latitude=60.17), "longitude")])
def test_a_business_location_without_both_coordinates_is_missing(location, missing):
    with pytest.raises(InvalidArgument) as err:
        convert.draft_from_pb(pb.Business(name="Nowhere", location=location),
                              need_location=True)
    assert err.value.field == f"business.location.{missing}"
    assert err.value.reason == "REQUIRED_FIELD"


@pytest.mark.parametrize("location,missing", [
    (LatLng(), "latitude"), (LatLng(longitude=0.0), "latitude"),
    (LatLng(latitude=0.0), "longitude")])
def test_a_search_location_without_both_coordinates_is_missing(location, missing):
    request = pb.SearchNearbyBusinessesRequest(location=location, radius_meters=500)
    with pytest.raises(InvalidArgument) as err:
        convert.query_from_pb(request)
    assert err.value.field == f"location.{missing}" and err.value.reason == "REQUIRED_FIELD"


def test_zero_coordinates_set_explicitly_are_a_location():
    draft = convert.draft_from_pb(pb.Business(name="Null Island",
                                              location=LatLng(latitude=0.0, longitude=0.0)),
                                  need_location=True)
    assert (draft.lat, draft.lon) == (0.0, 0.0)


def test_a_location_left_out_of_the_mask_may_be_empty():
    draft = convert.draft_from_pb(pb.Business(name="Renamed", location=LatLng()),
                                  need_location=False)
    assert draft.name == "Renamed"
