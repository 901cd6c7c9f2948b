"""The maps service's domain: what the gazetteer holds and what a lookup answers.

No grpc, protobuf or backend imports here (the layering test holds it to that).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

ADDRESS, STREET, POI, PLACE = "address", "street", "poi", "place"
KINDS = (ADDRESS, STREET, POI, PLACE)


@dataclass(frozen=True, slots=True)
class Feature:
    """One thing a person can look up by name."""

    kind: str              # one of KINDS
    name: str              # display form: the street's, the POI's or the place's name;
                           # for an address, its street
    lat: float
    lon: float
    housenumber: str = ""  # addresses only ("10", "10 A", "12-14")
    postcode: str = ""
    city: str = ""         # locality ("Helsinki", "Monaco"); for a place, its country code
    category: str = ""     # POIs: "amenity=cafe"; places: "city" / "town" / ...
    importance: float = 0.0  # 0..1: a place's population on a log scale, a POI's or
                             # street's prominence; breaks ties between equal matches


@dataclass(frozen=True, slots=True)
class StreetLine:
    """One named road as a polyline (an OSM way): for reverse geocoding onto the street
    and for interpolating a house number along it."""

    name: str
    city: str
    lats: F64
    lons: F64


@dataclass(frozen=True, slots=True)
class Candidate:
    """One answer to a geocoding query, best first."""

    label: str             # as a person writes it: "Mannerheimintie 10, 00100 Helsinki"
    kind: str
    lat: float
    lon: float
    confidence: float      # 0..1
    interpolated: bool = False  # the house number was placed along its street


@dataclass(frozen=True, slots=True)
class ReverseAnswer:
    """The nearest address within the limit, else the street, else the place."""

    label: str
    kind: str
    lat: float             # the answer's own point (the address, or the point on the street)
    lon: float
    distance_m: float      # from the query point to it


MAX_QUERY_CHARS = 200
MAX_LIMIT = 50
