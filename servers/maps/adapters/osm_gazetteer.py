"""Read an OpenStreetMap PBF extract with pyosmium into the gazetteer's features.

Kept: addresses (nodes, and ways placed at the mean of their nodes) with
``addr:housenumber`` and ``addr:street`` (or ``addr:place``); named ``highway`` ways as
:class:`StreetLine` plus one street :class:`Feature` per (name, city); named POIs with
one of :data:`POI_KEYS` (or a railway / public transport station). Relations
(multipolygon buildings) are skipped: few carry addresses, and placing them needs the
assembled area.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import osmium

from ..domain import ADDRESS, POI, STREET, Feature, StreetLine

_PLAIN_NUMBER = re.compile(r"\d+\s?[A-Za-z]?(?:bis|ter)?(?:\s?[-/]\s?\d+\s?[A-Za-z]?)?")
_LEADING_NUMBER = re.compile(r"\d+(?:\s?[A-Za-z](?![A-Za-z]))?")
POI_KEYS = ("amenity", "shop", "tourism", "leisure", "historic", "office")
STATION_KEYS = ("railway", "public_transport")
# a street's prominence, by its highway class: breaks ties between equal names
HIGHWAY_IMPORTANCE = {
    "motorway": 0.4, "trunk": 0.4, "primary": 0.35, "secondary": 0.3, "tertiary": 0.25,
    "unclassified": 0.15, "residential": 0.15, "living_street": 0.1, "pedestrian": 0.15,
}


def read_gazetteer(path: Path, default_city: str) -> tuple[list[Feature], list[StreetLine]]:
    """Addresses, streets and POIs of ``path`` (features in that order, each in file
    order), and the named streets' polylines. ``default_city`` is the locality of
    elements without ``addr:city`` and of every street."""
    addresses: list[Feature] = []
    pois: list[Feature] = []
    lines: list[StreetLine] = []
    street_length: dict[tuple[str, str], float] = {}  # of its longest way
    street_importance: dict[tuple[str, str], float] = {}
    street_point: dict[tuple[str, str], tuple[float, float]] = {}
    processor = osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY) \
        .with_locations()
    for obj in processor:
        tags = obj.tags
        if "name" not in tags and "addr:housenumber" not in tags:
            continue
        if isinstance(obj, osmium.osm.Node):
            if not obj.location.valid():
                continue
            lat, lon = obj.location.lat, obj.location.lon
        else:
            assert isinstance(obj, osmium.osm.Way)  # the processor reads nodes and ways only
            refs = list(obj.nodes)
            points = [(r.location.lat, r.location.lon) for r in refs if r.location.valid()]
            if not points:
                continue
            name = tags.get("name")
            if name and "highway" in tags and len(points) >= 2:
                line = StreetLine(name, default_city,
                                  np.asarray([p[0] for p in points], dtype=np.float64),
                                  np.asarray([p[1] for p in points], dtype=np.float64))
                lines.append(line)
                length = _length_m(line)
                key = (name, default_city)
                if length > street_length.get(key, -1.0):
                    street_length[key] = length
                    street_point[key] = _midpoint(line, length)
                street_importance[key] = max(street_importance.get(key, 0.0),
                                             HIGHWAY_IMPORTANCE.get(tags["highway"], 0.05))
            if len(points) > 1 and refs[0].ref == refs[-1].ref:
                points = points[:-1]  # a closed way repeats its first node
            lat = sum(p[0] for p in points) / len(points)
            lon = sum(p[1] for p in points) / len(points)
        addresses.extend(_address(tags, lat, lon, default_city))
        poi = _poi(tags, lat, lon, default_city)
        if poi is not None:
            pois.append(poi)
    streets = [Feature(STREET, name, *street_point[(name, city)], city=city,
                       importance=street_importance[(name, city)])
               for name, city in street_length]
    return addresses + streets + pois, lines


def _address(tags: osmium.osm.TagList, lat: float, lon: float,
             default_city: str) -> list[Feature]:
    """The addresses an element carries, cleaned of what mappers put beside them:
    "26, 14. krs." is number 26 (the floor dropped), "1;3" two numbers, a street
    "Asemahalli, Kaivokatu" is Kaivokatu (a building's name first), a city "7" none."""
    numbers = [_clean_number(n) for n in (tags.get("addr:housenumber") or "").split(";")]
    street = (tags.get("addr:street") or tags.get("addr:place") or "").split(",")[-1].strip()
    city = (tags.get("addr:city") or "").strip()
    if not any(ch.isalpha() for ch in city):
        city = default_city
    postcode = (tags.get("addr:postcode") or "").strip()
    if not street:
        return []
    return [Feature(ADDRESS, street, lat, lon, housenumber=n, postcode=postcode, city=city)
            for n in numbers if n]


def _clean_number(number: str) -> str:
    """The house number without the floor, staircase or flat mappers add to it
    ("26, 14. krs." -> "26", "11 B 9" -> "11 B", "33 Keskuskatu 5" -> "33"); "" if it
    does not start with a number."""
    number = number.split(",")[0].strip()
    if _PLAIN_NUMBER.fullmatch(number):
        return number
    match = _LEADING_NUMBER.match(number)
    return match.group(0) if match else ""  # "33;Keskuskatu 5": the other street's number


def _poi(tags: osmium.osm.TagList, lat: float, lon: float,
         default_city: str) -> Feature | None:
    name = (tags.get("name") or "").strip()
    if not name:
        return None
    key = next((k for k in POI_KEYS if k in tags), None)
    if key is None:
        key = next((k for k in STATION_KEYS if tags.get(k) == "station"), None)
    if key is None:
        return None
    importance = 0.3 if ("wikidata" in tags or "wikipedia" in tags) else 0.1
    return Feature(POI, name, lat, lon, housenumber="",
                   postcode=(tags.get("addr:postcode") or "").strip(),
                   city=(tags.get("addr:city") or "").strip() or default_city,
                   category=f"{key}={tags[key]}", importance=importance)


def _length_m(line: StreetLine) -> float:
    """The polyline's length on a sphere (equirectangular per segment: short segments)."""
    lat = np.radians(line.lats)
    lon = np.radians(line.lons)
    dx = np.diff(lon) * np.cos((lat[1:] + lat[:-1]) / 2)
    dy = np.diff(lat)
    return float(np.hypot(dx, dy).sum() * 6_371_008.8)


def _midpoint(line: StreetLine, length: float) -> tuple[float, float]:
    """The point halfway along the polyline: where a street's own answer is placed."""
    if length <= 0 or not math.isfinite(length):
        return float(line.lats[0]), float(line.lons[0])
    lat = np.radians(line.lats)
    dx = np.diff(np.radians(line.lons)) * np.cos((lat[1:] + lat[:-1]) / 2)
    dy = np.diff(lat)
    chain = np.concatenate(([0.0], np.cumsum(np.hypot(dx, dy)))) * 6_371_008.8
    half = length / 2
    i = int(np.clip(np.searchsorted(chain, half, side="right") - 1, 0, len(chain) - 2))
    span = chain[i + 1] - chain[i]
    t = (half - chain[i]) / span if span > 0 else 0.0
    return (float(line.lats[i] + t * (line.lats[i + 1] - line.lats[i])),
            float(line.lons[i] + t * (line.lons[i + 1] - line.lons[i])))
