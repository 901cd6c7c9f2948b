"""Web Mercator (EPSG:3857) XYZ tile maths: mercantile behind this module, plus the
vectorised projection of many points at once (mercantile projects one at a time).

mercantile ships without type information (pyproject's mypy overrides list it): every
value it returns is converted to a typed one at this boundary.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

import mercantile as _mercantile

EARTH_RADIUS_M = 6_378_137.0
MAX_LATITUDE = 85.051128779806589
F64 = npt.NDArray[np.float64]


def tile_bounds_m(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """The tile's (west, south, east, north) in Web Mercator metres."""
    b = _mercantile.xy_bounds(x, y, z)
    return float(b.left), float(b.bottom), float(b.right), float(b.top)


def tile_of(lat: float, lon: float, z: int) -> tuple[int, int]:
    """The (x, y) of the zoom ``z`` tile holding the point."""
    t = _mercantile.tile(lon, lat, z)
    return int(t.x), int(t.y)


def project(lon: F64, lat: F64) -> tuple[F64, F64]:
    """Degrees to Web Mercator metres (latitudes clamped to the projection's range)."""
    x = np.radians(lon) * EARTH_RADIUS_M
    phi = np.radians(np.clip(lat, -MAX_LATITUDE, MAX_LATITUDE))
    y = np.log(np.tan(math.pi / 4 + phi / 2)) * EARTH_RADIUS_M
    return x, y


def unproject(x: float, y: float) -> tuple[float, float]:
    """Web Mercator metres to (lat, lon) in degrees."""
    lon = math.degrees(x / EARTH_RADIUS_M)
    lat = math.degrees(2 * math.atan(math.exp(y / EARTH_RADIUS_M)) - math.pi / 2)
    return lat, lon
