"""Read a road network exported as GeoJSON (overpass-turbo style) into a :class:`RawNetwork`.

Each ``LineString`` feature is a way with its OSM tags as properties; features share a
node where they share a coordinate (to 1e-7 degrees, OSM's own precision). Areas
(``Polygon`` features, ``area=yes``) are not roads and are skipped. Such an export has
no node tags and no relations, so it carries no signals, barriers or turn restrictions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..network import RawNetwork, RawWay


def read_geojson(path: Path, country: str = "") -> RawNetwork:
    with path.open("rb") as f:
        collection: dict[str, Any] = json.load(f)
    return network_from_features(collection, country)


def network_from_features(collection: Mapping[str, Any], country: str = "") -> RawNetwork:
    """The network of a FeatureCollection already parsed (node i is the i-th distinct
    coordinate in order of first appearance)."""
    index: dict[tuple[int, int], int] = {}
    lats: list[float] = []
    lons: list[float] = []
    ways: list[RawWay] = []
    for n, feature in enumerate(collection.get("features", ())):
        geometry = feature.get("geometry") or {}
        props = feature.get("properties") or {}
        if geometry.get("type") != "LineString" or props.get("area") == "yes":
            continue
        refs: list[int] = []
        for lon, lat, *_ in geometry.get("coordinates", ()):
            key = (round(lat * 1e7), round(lon * 1e7))
            i = index.get(key)
            if i is None:
                i = index[key] = len(lats)
                lats.append(key[0] / 1e7)
                lons.append(key[1] / 1e7)
            if not refs or refs[-1] != i:
                refs.append(i)
        if len(refs) < 2:
            continue
        tags = {str(k): str(v) for k, v in props.items() if not str(k).startswith("@")}
        way_id = _way_id(feature.get("id") or props.get("@id"), n)
        ways.append(RawWay(way_id, np.asarray(refs, dtype=np.int32), tags))
    return RawNetwork(np.asarray(lats, dtype=np.float64), np.asarray(lons, dtype=np.float64),
                      ways, country=country)


def _way_id(raw: object, ordinal: int) -> int:
    """``way/5016127`` -> 5016127; a feature without one gets a negative synthetic id."""
    if isinstance(raw, str) and raw.startswith("way/") and raw[4:].isdigit():
        return int(raw[4:])
    return -(ordinal + 1)
