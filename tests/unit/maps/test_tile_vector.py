"""Mapbox Vector Tile encoding: the spec's worked examples, a decoder of our own, clipping
to the buffered tile, polygon winding and per-layer key/value deduplication.

Tiles are made from small GeoJSON road networks placed in tile units (so the expected
clipped coordinates are known exactly) and read through the real adapter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


from geoplex.maps.v1.vector_tile_pb2 import VectorTile
from geoplex.servers.maps.tiles import MapSource, TileSet, style
from geoplex.servers.maps.tiles.tilemath import tile_bounds_m, unproject
from geoplex.servers.maps.tiles.vector import BUFFER, EXTENT, encode_geometry

Z, X, Y = 16, 37307, 18969  # over central Helsinki (any tile would do)
Parts = list[list[tuple[int, int]]]


# ---- an MVT geometry decoder written from the spec (section 4.3), not from ours ----

def unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def decode_geometry(stream: list[int]) -> Parts:
    parts: Parts = []
    x = y = 0
    i = 0
    while i < len(stream):
        command, count = stream[i] & 0x7, stream[i] >> 3
        i += 1
        if command == 7:  # ClosePath
            assert count == 1
            continue
        assert command in (1, 2), f"unknown command {command}"
        for _ in range(count):
            x += unzigzag(stream[i])
            y += unzigzag(stream[i + 1])
            i += 2
            if command == 1:
                parts.append([])
            parts[-1].append((x, y))
    return parts


def surveyor_area(ring: list[tuple[int, int]]) -> float:
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1)
               in zip(ring, ring[1:] + ring[:1], strict=True)) / 2


def decoded(data: bytes) -> dict[str, list[tuple[dict[str, object], int, Parts]]]:
    """layer name -> [(attributes, geometry type, parts)]."""
    tile = VectorTile.FromString(data)
    out: dict[str, list[tuple[dict[str, object], int, Parts]]] = {}
    for layer in tile.layers:
        assert layer.version == 2 and layer.extent == EXTENT
        features = []
        for f in layer.features:
            attrs: dict[str, object] = {}
            for k, v in zip(f.tags[::2], f.tags[1::2], strict=True):
                value = layer.values[v]
                attrs[layer.keys[k]] = getattr(value, value.WhichOneof("kind") or "")
            features.append((attrs, int(f.type), decode_geometry(list(f.geometry))))
        out[layer.name] = features
    return out


# ---- the spec's own examples (4.3.5) ----

def test_point_example() -> None:
    assert encode_geometry(style.POINT, [[(25, 17)]]) == [9, 50, 34]


def test_multipoint_example() -> None:
    assert encode_geometry(style.POINT, [[(5, 7)], [(3, 2)]]) == [17, 10, 14, 3, 9]


def test_linestring_example() -> None:
    assert encode_geometry(style.LINE, [[(2, 2), (2, 10), (10, 10)]]) == \
        [9, 4, 4, 18, 0, 16, 16, 0]


def test_multilinestring_example() -> None:
    assert encode_geometry(style.LINE, [[(2, 2), (2, 10), (10, 10)], [(1, 1), (3, 5)]]) == \
        [9, 4, 4, 18, 0, 16, 16, 0, 9, 17, 17, 10, 4, 8]


def test_polygon_example() -> None:
    assert encode_geometry(style.POLYGON, [[(3, 6), (8, 12), (20, 34)]]) == \
        [9, 6, 12, 18, 10, 12, 24, 44, 15]


def test_multipolygon_example() -> None:
    rings = [[(0, 0), (10, 0), (10, 10), (0, 10)],
             [(11, 11), (20, 11), (20, 20), (11, 20)],
             [(13, 13), (13, 17), (17, 17), (17, 13)]]
    assert encode_geometry(style.POLYGON, rings) == \
        [9, 0, 0, 26, 20, 0, 0, 20, 19, 0, 15, 9, 22, 2, 26, 18, 0, 0, 18, 17, 0, 15, 9, 4,
         13, 26, 0, 8, 8, 0, 0, 7, 15]


def test_decoder_reads_back_the_examples() -> None:
    lines = [[(2, 2), (2, 10), (10, 10)], [(1, 1), (3, 5)]]
    assert decode_geometry(encode_geometry(style.LINE, lines)) == lines
    assert decode_geometry([9, 50, 34]) == [[(25, 17)]]


# ---- tiles from GeoJSON placed in tile units ----

def lonlat(u: float, v: float) -> list[float]:
    """Tile units of (Z, X, Y) (x right, y down) as [lon, lat]."""
    west, south, east, north = tile_bounds_m(Z, X, Y)
    size = east - west
    lat, lon = unproject(west + u / EXTENT * size, north - v / EXTENT * size)
    return [lon, lat]


def line(props: dict[str, str], *points: tuple[float, float]) -> dict[str, Any]:
    return {"type": "Feature", "properties": props,
            "geometry": {"type": "LineString", "coordinates": [lonlat(*p) for p in points]}}


def polygon(props: dict[str, str], *rings: Sequence[tuple[float, float]]) -> dict[str, Any]:
    coords = [[lonlat(*p) for p in [*ring, ring[0]]] for ring in rings]
    return {"type": "Feature", "properties": props,
            "geometry": {"type": "Polygon", "coordinates": coords}}


def tile_of(tmp_path: Path, *features: dict[str, Any], z: int = Z, x: int = X,
            y: int = Y) -> dict[str, list[tuple[dict[str, object], int, Parts]]]:
    path = tmp_path / "network.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}))
    data = TileSet.load([MapSource("test", path)]).render(z, x, y, "mvt")
    assert data is not None
    return decoded(data)


LO, HI = -BUFFER, EXTENT + BUFFER


def test_line_across_the_tile_is_cut_at_the_buffer_edge(tmp_path: Path) -> None:
    layers = tile_of(tmp_path, line({"highway": "primary"}, (-3000, 1000), (7000, 1000)))
    [(attrs, geom_type, parts)] = layers["roads"]
    assert geom_type == VectorTile.GEOM_TYPE_LINESTRING
    assert parts == [[(LO, 1000), (HI, 1000)]]
    assert attrs == {"class": "primary", "oneway": False}


def test_line_leaving_and_coming_back_is_split(tmp_path: Path) -> None:
    # down out of the bottom, then back up: two pieces, both ending on the buffer edge
    layers = tile_of(tmp_path, line({"highway": "residential"}, (1000, 2000),
                                    (1000, 6000), (3000, 6000), (3000, 2000)))
    [(_attrs, _type, parts)] = layers["roads"]
    assert parts == [[(1000, 2000), (1000, HI)], [(3000, HI), (3000, 2000)]]


def test_polygon_covering_the_tile_becomes_the_buffered_square(tmp_path: Path) -> None:
    big = [(-5000, -5000), (9000, -5000), (9000, 9000), (-5000, 9000)]
    layers = tile_of(tmp_path, polygon({"landuse": "forest"}, big))
    [(attrs, geom_type, [ring])] = layers["landuse"]
    assert attrs == {"class": "forest"}
    assert geom_type == VectorTile.GEOM_TYPE_POLYGON
    assert set(ring) == {(LO, LO), (HI, LO), (HI, HI), (LO, HI)} and len(ring) == 4
    assert surveyor_area(ring) == (HI - LO) ** 2  # exterior: positive, clockwise on screen


def test_rings_are_wound_per_spec_whatever_the_input(tmp_path: Path) -> None:
    outer_ccw = [(500, 500), (500, 3500), (3500, 3500), (3500, 500)]  # anticlockwise
    hole_cw = [(1000, 1000), (3000, 1000), (3000, 3000), (1000, 3000)]  # clockwise
    layers = tile_of(tmp_path, polygon({"leisure": "park"}, outer_ccw,
                                       hole_cw))
    [(_attrs, _type, [outer, hole])] = layers["landuse"]
    assert surveyor_area(outer) == 3000 ** 2
    assert surveyor_area(hole) == -(2000 ** 2)
    assert set(outer) == set(outer_ccw) and set(hole) == set(hole_cw)


def test_polygon_half_outside_is_clipped_on_the_buffer_edge(tmp_path: Path) -> None:
    layers = tile_of(tmp_path, polygon({"natural": "water"},
                                       [(2000, 1000), (6000, 1000), (6000, 3000),
                                        (2000, 3000)]))
    [(_attrs, _type, [ring])] = layers["water"]
    assert set(ring) == {(2000, 1000), (HI, 1000), (HI, 3000), (2000, 3000)}
    assert surveyor_area(ring) > 0


def test_keys_and_values_are_shared_within_a_layer(tmp_path: Path) -> None:
    path = tmp_path / "network.json"
    roads = [line({"highway": "residential", "name": "Kaivokatu", "oneway": "yes"},
                  (100, 100 + 300 * i), (4000, 100 + 300 * i)) for i in range(5)]
    roads.append(line({"highway": "primary", "name": "Kaivokatu", "ref": "1"},
                      (100, 3900), (4000, 3900)))
    path.write_text(json.dumps({"type": "FeatureCollection", "features": roads}))
    data = TileSet.load([MapSource("test", path)]).render(Z, X, Y, "mvt")
    assert data is not None
    [layer] = VectorTile.FromString(data).layers
    assert len(layer.features) == 6
    assert sorted(layer.keys) == ["class", "name", "oneway", "ref"]
    values = [(v.WhichOneof("kind"), getattr(v, v.WhichOneof("kind") or "")) for v in layer.values]
    assert len(values) == len(set(values))
    assert set(values) == {("string_value", "minor"), ("string_value", "primary"),
                           ("string_value", "Kaivokatu"), ("string_value", "1"),
                           ("bool_value", True), ("bool_value", False)}
    # minor roads come first: the draw order
    classes = [decoded(data)["roads"][i][0]["class"] for i in range(6)]
    assert classes == ["minor"] * 5 + ["primary"]


def test_oneway_against_the_line_is_reversed(tmp_path: Path) -> None:
    layers = tile_of(tmp_path, line({"highway": "tertiary", "oneway": "-1"},
                                    (100, 100), (2000, 100)))
    [(attrs, _type, parts)] = layers["roads"]
    assert parts == [[(2000, 100), (100, 100)]] and attrs["oneway"] is True


def test_low_zoom_leaves_out_minor_roads_and_simplifies(tmp_path: Path) -> None:
    wiggle = [(100 + 10 * i, 2000 + (i % 2)) for i in range(300)]
    features = [line({"highway": "residential"}, (100, 100), (4000, 100)),
                line({"highway": "primary"}, *wiggle)]
    # the parent tile four zooms up holds both roads in one corner
    layers = tile_of(tmp_path, *features, z=Z - 4, x=X >> 4, y=Y >> 4)
    [(attrs, _type, [part])] = layers["roads"]
    assert attrs["class"] == "primary"
    assert len(part) <= 30  # 300 points, 187 units at z12, snapped to an 8-unit grid


def test_roads_keep_name_and_ref(tmp_path: Path) -> None:
    layers = tile_of(tmp_path, line({"highway": "motorway", "name": "Kehä I", "ref": "101"},
                                    (0, 0), (100, 100)))
    [(attrs, _type, _parts)] = layers["roads"]
    assert attrs == {"class": "motorway", "name": "Kehä I", "ref": "101", "oneway": True}


def test_spec_zigzag_decoder_is_exact_for_negative_deltas() -> None:
    stream = encode_geometry(style.LINE, [[(10, 10), (3, -20), (-100, 5)]])
    assert decode_geometry(stream) == [[(10, 10), (3, -20), (-100, 5)]]
    assert math.isclose(unzigzag(3), -2)
