"""Read a region's drawable features from an OpenStreetMap PBF (pyosmium) or a GeoJSON
FeatureCollection of OSM ways (overpass-turbo export, tags as properties).

Kept, classified by :mod:`..tiles.style`: ``highway`` ways as roads (with name, ref and
oneway: ``oneway=-1`` is reversed so every oneway road runs forward, motorways and
roundabouts are oneway unless tagged ``oneway=no``); areas (closed ways and
multipolygon relations, assembled by osmium) as water, landuse or buildings; named POI
nodes (amenity, shop, tourism, leisure, historic, office, or a station) as POIs, their
tag value kept as the subclass. Everything else (coastlines, boundaries, routes) is
skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import osmium

from ..tiles import style
from ..tiles.features import FeatureBuilder, FeatureStore

POI_KEYS = ("amenity", "shop", "tourism", "leisure", "historic", "office")
STATION_KEYS = ("railway", "public_transport")
_AREA_KEYS = ("building", "natural", "waterway", "landuse", "leisure")
_ONEWAY_YES = ("yes", "true", "1")


class Tags(Protocol):
    def get(self, key: str, default: None = None, /) -> str | None: ...


def read_map(path: Path, name: str) -> FeatureStore:
    """The features of an ``.osm.pbf`` or a GeoJSON file (by its suffix, else by whether
    it starts like JSON)."""
    if path.name.endswith(".pbf"):
        return read_pbf_map(path, name)
    if path.suffix in (".json", ".geojson"):
        return read_geojson_map(path, name)
    with path.open("rb") as f:
        head = f.read(64).lstrip()
    if head.startswith(b"{"):
        return read_geojson_map(path, name)
    return read_pbf_map(path, name)


def read_pbf_map(path: Path, name: str) -> FeatureStore:
    builder = FeatureBuilder()
    processor = osmium.FileProcessor(str(path)).with_locations().with_areas() \
        .with_filter(osmium.filter.EmptyTagFilter())
    for obj in processor:
        tags = obj.tags
        if isinstance(obj, osmium.osm.Node):
            if obj.location.valid():
                _add_poi(builder, tags, obj.location.lon, obj.location.lat)
        elif isinstance(obj, osmium.osm.Way):
            if "highway" in tags:
                line = [c for n in obj.nodes if n.location.valid()
                        for c in (n.location.lon, n.location.lat)]
                _add_road(builder, tags, [line])
        elif isinstance(obj, osmium.osm.Area):
            found = classify_area(tags)
            if found is None:
                continue
            parts: list[list[float]] = []
            outer: list[bool] = []
            for ring in obj.outer_rings():
                parts.append(_ring(ring))
                outer.append(True)
                for hole in obj.inner_rings(ring):
                    parts.append(_ring(hole))
                    outer.append(False)
            builder.add(*found, parts, outer)
    return builder.build(name)


def _ring(ring: Iterable[osmium.osm.NodeRef]) -> list[float]:
    return [c for n in ring if n.location.valid() for c in (n.location.lon, n.location.lat)]


def read_geojson_map(path: Path, name: str) -> FeatureStore:
    with path.open("rb") as f:
        collection: dict[str, Any] = json.load(f)
    return features_from_geojson(collection, name)


def features_from_geojson(collection: Mapping[str, Any], name: str) -> FeatureStore:
    builder = FeatureBuilder()
    for feature in collection.get("features", ()):
        geometry = feature.get("geometry") or {}
        props = {str(k): str(v) for k, v in (feature.get("properties") or {}).items()}
        kind = geometry.get("type")
        coords = geometry.get("coordinates") or []
        if kind == "Point":
            _add_poi(builder, props, float(coords[0]), float(coords[1]))
        elif kind in ("LineString", "MultiLineString") and "highway" in props \
                and props.get("area") != "yes":
            lines = [coords] if kind == "LineString" else coords
            _add_road(builder, props, [_flat(line) for line in lines])
        elif kind in ("Polygon", "MultiPolygon"):
            found = classify_area(props)
            if found is None:
                continue
            polygons = [coords] if kind == "Polygon" else coords
            parts = [_flat(ring) for polygon in polygons for ring in polygon]
            outer = [i == 0 for polygon in polygons for i in range(len(polygon))]
            builder.add(*found, parts, outer)
    return builder.build(name)


def _flat(points: Sequence[Sequence[float]]) -> list[float]:
    return [float(c) for p in points for c in p[:2]]


def classify_road(tags: Tags) -> int | None:
    """The road class code of a ``highway`` way, None for one not drawn."""
    road = style.HIGHWAY_CLASS.get(tags.get("highway") or "")
    if road is None or tags.get("area") == "yes":
        return None
    return style.class_code(style.ROADS, road)


def classify_area(tags: Tags) -> tuple[int, int] | None:
    """(layer, class) of an area, None for one not drawn."""
    building = tags.get("building")
    if building and building != "no":
        return style.BUILDINGS, 0
    for key, value, layer, cls in style.AREA_CLASS:
        if tags.get(key) == value:
            return layer, style.class_code(layer, cls)
    return None


def _add_road(builder: FeatureBuilder, tags: Tags, lines: list[list[float]]) -> None:
    cls = classify_road(tags)
    if cls is None:
        return
    oneway_tag = tags.get("oneway") or ""
    oneway = oneway_tag in _ONEWAY_YES or oneway_tag == "-1"
    if not oneway_tag and (tags.get("highway") in ("motorway", "motorway_link")
                           or tags.get("junction") in ("roundabout", "circular")):
        oneway = True
    if oneway_tag == "-1":
        lines = [_reversed(line) for line in lines]
    builder.add(style.ROADS, cls, lines, name=(tags.get("name") or "").strip(),
                ref=(tags.get("ref") or "").strip(), oneway=oneway)


def _reversed(line: list[float]) -> list[float]:
    out: list[float] = []
    for i in range(len(line) - 2, -1, -2):
        out.extend((line[i], line[i + 1]))
    return out


def _add_poi(builder: FeatureBuilder, tags: Tags, lon: float, lat: float) -> None:
    name = (tags.get("name") or "").strip()
    if not name:
        return
    key = next((k for k in POI_KEYS if tags.get(k)), None)
    if key is None:
        key = next((k for k in STATION_KEYS if tags.get(k) == "station"), None)
        cls = "station"
    else:
        cls = key
    if key is None:
        return
    builder.add(style.POIS, style.class_code(style.POIS, cls), [[lon, lat]], name=name,
                ref=tags.get(key) or "")
