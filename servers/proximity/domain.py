"""Proximity domain: businesses, validation, distances, geohash cells, paging.

Pure logic: no gRPC, no protobuf, no network. Coordinates never appear in an
error message.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import pygeohash

from geoplex.servers._runtime import paging
from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers._runtime.validate import check_id
from geoplex.servers._runtime.geo import EARTH_RADIUS_M as EARTH_RADIUS_M
from geoplex.servers._runtime.geo import haversine_m as haversine_m
from geoplex.servers._runtime.geo import haversine_np as haversine_np
from geoplex.servers._runtime.geo import validate_location as validate_location

RADII_M = (500, 1000, 2000, 5000, 20000)
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_BATCH_GET = 100
MAX_NAME = 200
MAX_TEXT = 500
MAX_ID = 128
# The bidirectional controls (Unicode's Bidi_Control property, all in category Cf): they
# reorder the text printed after them. Other format characters (the zero-width joiners
# in emoji and Persian, the soft hyphen) are ordinary text.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                          "\u2066\u2067\u2068\u2069")
# Geohash precision stored per business, and used per radius: the cells of one
# radius are at most about one radius wide on their shorter side, so the
# circle's bounding box touches a handful of them (the book's 3 x 3 block).
STORED_GEOHASH_PRECISION = 6
PRECISION_FOR_RADIUS = {500: 6, 1000: 5, 2000: 5, 5000: 4, 20000: 3}
MAX_CELLS = 64
EDITABLE_FIELDS = ("name", "category", "location", "address", "phone", "website",
                   "opening_hours")


@dataclass(frozen=True, slots=True)
class Business:
    id: str
    name: str
    category: str
    lat: float
    lon: float
    address: str = ""
    phone: str = ""
    website: str = ""
    opening_hours: str = ""
    owner: str = ""
    source: str = ""
    create_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    update_time: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def geohash(self) -> str:
        return encode_geohash(self.lat, self.lon)

    def edited(self, draft: Business, fields: Collection[str]) -> Business:
        """This business with the named EDITABLE_FIELDS taken from ``draft``
        ("location" is lat and lon); every other field is kept."""
        def source(name: str) -> Business:
            return draft if name in fields else self
        return replace(self, name=source("name").name, category=source("category").category,
                       lat=source("location").lat, lon=source("location").lon,
                       address=source("address").address, phone=source("phone").phone,
                       website=source("website").website,
                       opening_hours=source("opening_hours").opening_hours)


class Hit(NamedTuple):
    """A business on a page and its distance (a tuple: made up to 20 times per search,
    where a frozen dataclass costs ten times as much to make)."""

    business: Business
    distance_m: float


@dataclass(frozen=True, slots=True)
class SearchQuery:
    lat: float
    lon: float
    radius_m: int
    category: str = ""
    keyword: str = ""
    page_size: int = DEFAULT_PAGE_SIZE
    after: tuple[float, str] | None = None  # (distance, id) of the last hit of the previous page

    def scope(self) -> str:
        """What a page token is bound to (only its hash goes into the token)."""
        return f"{self.lat!r}|{self.lon!r}|{self.radius_m}|{self.category}|{self.keyword}"


@dataclass(frozen=True, slots=True)
class SearchPage:
    hits: list[Hit]
    next_page_token: str


# -- validation -----------------------------------------------------------------

def validate_radius(radius_m: int) -> None:
    if radius_m not in RADII_M:
        raise InvalidArgument("radius_meters", "must be one of the supported radii in metres",
                              reason="INVALID_RADIUS", allowed=RADII_M)


def page_size_or_default(value: int) -> int:
    return paging.page_size(value, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _has_control_characters(value: str) -> bool:
    return any(unicodedata.category(c) == "Cc" or c in BIDI_CONTROLS for c in value)


def validate_text(value: str, field_name: str, *, required: bool = False,
                  limit: int = MAX_TEXT) -> str:
    """``value`` without surrounding whitespace; INVALID_ARGUMENT (never echoing the
    value) when required and empty, longer than ``limit``, or holding a control or
    bidi control character (category Cc or BIDI_CONTROLS) a terminal would act on."""
    value = value.strip()
    if required and not value:
        raise InvalidArgument(field_name, "must not be empty", reason="REQUIRED_FIELD")
    if len(value) > limit:
        raise InvalidArgument(field_name, f"must be at most {limit} characters",
                              reason="FIELD_TOO_LONG")
    if _has_control_characters(value):
        raise InvalidArgument(field_name, "must not contain control or bidirectional "
                              "control characters", reason="INVALID_CHARACTERS")
    return value


def validate_business_id(value: str, field_name: str) -> str:
    """A business id as a request carries it: the runtime's id rule (1..MAX_ID printable
    characters, else REQUIRED_FIELD, ID_TOO_LONG or INVALID_ID). Never echoed: an id of
    any length would otherwise come back in the error's trailers."""
    return check_id(field_name, value, max_len=MAX_ID)


def validate_business(b: Business) -> Business:
    """``b`` with every owner-editable field checked and normalised, as it may be stored."""
    validate_location(b.lat, b.lon, "business.location")
    return replace(
        b,
        name=validate_text(b.name, "business.name", required=True, limit=MAX_NAME),
        category=normalise_category(validate_text(b.category, "business.category", limit=64)),
        address=validate_text(b.address, "business.address"),
        phone=validate_text(b.phone, "business.phone", limit=64),
        website=validate_text(b.website, "business.website"),
        opening_hours=validate_text(b.opening_hours, "business.opening_hours"))


def normalise_category(value: str) -> str:
    return value.strip().lower()


# -- page tokens -----------------------------------------------------------------

def encode_page_token(query: SearchQuery, last: Hit) -> str:
    """Opaque cursor: (distance, id) of the last hit, bound to the query."""
    return paging.encode_cursor(last.distance_m, last.business.id, query.scope())


def decode_page_token(token: str, query: SearchQuery) -> tuple[float, str]:
    return paging.decode_cursor(token, query.scope())


@dataclass(frozen=True, slots=True)
class Box:
    min_lat: float
    min_lon: float
    max_lat: float
    max_lon: float


def bounding_boxes(lat: float, lon: float, radius_m: float) -> list[Box]:
    """Boxes (never crossing the antimeridian) that contain every point within radius.

    Near a pole the circle wraps all longitudes; at the antimeridian the box
    splits in two. A tiny margin covers floating-point error at the edge.
    """
    angular = radius_m / EARTH_RADIUS_M
    dlat = math.degrees(angular) * 1.000001 + 1e-9
    min_lat, max_lat = lat - dlat, lat + dlat
    if max_lat >= 90.0 or min_lat <= -90.0:
        return [Box(max(min_lat, -90.0), -180.0, min(max_lat, 90.0), 180.0)]
    ratio = math.sin(angular) / math.cos(math.radians(lat))
    if ratio >= 1.0:
        return [Box(min_lat, -180.0, max_lat, 180.0)]
    dlon = math.degrees(math.asin(ratio)) * 1.000001 + 1e-9
    west, east = lon - dlon, lon + dlon
    if west < -180.0:
        return [Box(min_lat, west + 360.0, max_lat, 180.0), Box(min_lat, -180.0, max_lat, east)]
    if east > 180.0:
        return [Box(min_lat, west, max_lat, 180.0), Box(min_lat, -180.0, max_lat, east - 360.0)]
    return [Box(min_lat, west, max_lat, east)]


# -- geohash cells -----------------------------------------------------------------

def encode_geohash(lat: float, lon: float, precision: int = STORED_GEOHASH_PRECISION) -> str:
    return str(pygeohash.encode(lat, lon, precision))


def geohash_prefixes(geohash: str, lowest: int = 1) -> list[str]:
    """Every prefix a search may look the business up under, coarsest first."""
    return [geohash[:n] for n in range(lowest, len(geohash) + 1)]


def cells_for_search(lat: float, lon: float, radius_m: int) -> list[str]:
    """Geohash cells whose union covers the search circle.

    Normally the cell of the location and the neighbours the circle reaches
    (at most the 3 x 3 block); at the antimeridian the box is split; near the
    poles, where cells get thin, the precision drops until at most MAX_CELLS
    cells cover it.
    """
    precision = PRECISION_FOR_RADIUS[radius_m]
    boxes = bounding_boxes(lat, lon, radius_m)
    while True:
        cells: set[str] = set()
        for box in boxes:
            cells.update(pygeohash.geohashes_in_box(
                pygeohash.BoundingBox(box.min_lat, box.min_lon, box.max_lat, box.max_lon),
                precision=precision))
            if len(cells) > MAX_CELLS:
                break
        if len(cells) <= MAX_CELLS or precision == 1:
            return sorted(cells)
        precision -= 1


# -- ordering and paging -------------------------------------------------------------

def matches(business: Business, category: str, keyword: str) -> bool:
    if category and business.category != category:
        return False
    if keyword and keyword not in business.name.lower():
        return False
    return True


def rank(query: SearchQuery, candidates: Iterable[Business], limit: int
         ) -> list[tuple[float, str]]:
    """The first ``limit`` (distance m, id) of the candidates that match the query, after
    ``query.after``, nearest first, ties by id (the order every index answers in)."""
    chosen = [b for b in candidates if matches(b, query.category, query.keyword)]
    if not chosen:
        return []
    dist = haversine_np(query.lat, query.lon, np.array([b.lat for b in chosen]),
                        np.array([b.lon for b in chosen]))
    ranked = sorted((float(d), b.id) for d, b in zip(dist, chosen) if d <= query.radius_m)
    if query.after is not None:
        ranked = [r for r in ranked if r > query.after]
    return ranked[:limit]
