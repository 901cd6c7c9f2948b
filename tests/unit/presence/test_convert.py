"""Presence messages to domain values: a location is required, and so is each coordinate."""

from __future__ import annotations

import pytest

from geoplex.presence.v1 import presence_pb2 as pb
from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers.presence import convert
from geoplex.servers.presence.domain import Fix
from geoplex.type.v1.geo_pb2 import LatLng


class Validator:
    def validate(self, lat: float, lon: float, t: float | None, field: str) -> Fix:
        return Fix(lat, lon, 100.0 if t is None else t)


@pytest.mark.parametrize("kind", [pb.Hello, pb.LocationUpdate], ids=["hello", "update"])
@pytest.mark.parametrize("location,missing", [
    (None, "location"),
    (LatLng(), "location.latitude"),
    (LatLng(latitude=0.0), "location.longitude"),
    (LatLng(longitude=0.0), "location.latitude"),
], ids=["no-location", "empty", "no-longitude", "no-latitude"])
def test_a_location_or_coordinate_not_sent_is_missing_not_zero(
        kind: type[pb.Hello] | type[pb.LocationUpdate], location: LatLng | None,
        missing: str) -> None:
    message = kind() if location is None else kind(location=location)
    with pytest.raises(InvalidArgument) as err:
        convert.fix_from(Validator(), message, "m")
    assert (err.value.field, err.value.reason) == (f"m.{missing}", "REQUIRED_FIELD")


def test_zero_coordinates_sent_explicitly_are_a_location() -> None:
    message = pb.LocationUpdate(location=LatLng(latitude=0.0, longitude=0.0))
    assert convert.fix_from(Validator(), message, "m") == Fix(0.0, 0.0, 100.0)
