"""Geometry every service shares: validation of a point and great-circle distances.

Messages name the field and the allowed range, never the value: a location is
personal data.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from .errors import InvalidArgument

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius, the one 2dsphere $geoNear uses


def validate_location(lat: float, lon: float, field_name: str = "location") -> None:
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise InvalidArgument(f"{field_name}.latitude", "must be a finite number in -90..90",
                              reason="INVALID_LOCATION")
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise InvalidArgument(f"{field_name}.longitude", "must be a finite number in -180..180",
                              reason="INVALID_LOCATION")


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


Degrees = npt.NDArray[np.float64]
Metres = npt.NDArray[np.float64]


def haversine_np(lat: float, lon: float, lats: Degrees, lons: Degrees) -> Metres:
    """Distances in metres from one point to arrays of points (degrees)."""
    p1 = math.radians(lat)
    p2 = np.radians(lats)
    dp = p2 - p1
    dl = np.radians(lons - lon)
    a = np.sin(dp * 0.5) ** 2 + math.cos(p1) * np.cos(p2) * np.sin(dl * 0.5) ** 2
    # numpy's stubs type these ufunc results as Any
    distances: Metres = 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))
    return distances


def haversine_pairs(lat1: Degrees, lon1: Degrees, lat2: Degrees, lon2: Degrees) -> Metres:
    """Element-wise distances in metres between two arrays of points (degrees)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = (np.sin((p2 - p1) * 0.5) ** 2
         + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) * 0.5) ** 2)
    distances: Metres = 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))
    return distances
