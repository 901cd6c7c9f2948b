"""Reading a required ``geoplex.type.v1.LatLng`` from a request, the same way everywhere."""

from __future__ import annotations

from geoplex.type.v1 import geo_pb2

from .errors import InvalidArgument
from .geo import validate_location


def location_from_pb(location: geo_pb2.LatLng, has: bool, field: str) -> tuple[float, float]:
    """A required location: present, with both coordinates set (``{}`` is not (0, 0))
    and valid. Errors name the field, never the value."""
    if not has:
        raise InvalidArgument(field, "is required", reason="REQUIRED_FIELD")
    for coordinate in ("latitude", "longitude"):
        if not location.HasField(coordinate):
            raise InvalidArgument(f"{field}.{coordinate}", "is required",
                                  reason="REQUIRED_FIELD")
    validate_location(location.latitude, location.longitude, field)
    return location.latitude, location.longitude
