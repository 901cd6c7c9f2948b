"""Mapbox Vector Tiles (spec 2.1) from a tile's clipped geometry.

Every layer has ``version`` 2 and ``extent`` 4096; geometry is clipped to the tile plus
a :data:`BUFFER` of 64 units on each side, so lines and areas running across tile
edges join up (lines are cut where they leave the buffered square and split when they
come back; polygons are clipped by Sutherland-Hodgman, so an area covering the whole
tile is the buffered square). Coordinates are whole tile units, snapped to a coarser
grid below zoom 15 (8 units = half a pixel of a 256-pixel tile at zoom 12 and under, 4
at 13-14) to simplify; consecutive repeated points are dropped. Exterior rings are
clockwise on screen (positive area by the surveyor's formula in tile coordinates,
y down; spec 4.3.4.4), holes anticlockwise, each exterior followed by its holes.
Keys and values are deduplicated per layer. Features carry no ids.

Layers and attributes (a layer without features in the tile is left out):

===========  ==========  =====================================================
layer        geometry    attributes
===========  ==========  =====================================================
``landuse``  polygon     ``class``: forest, grass, meadow, park, cemetery, pitch
``water``    polygon     ``class``: water, riverbank, reservoir
``buildings`` polygon    (none); from zoom 15
``roads``    linestring  ``class``: motorway, trunk, primary, secondary, tertiary,
                         minor (residential, unclassified, living_street, road),
                         service, path (footway, cycleway, path, pedestrian,
                         bridleway), steps, track; ``name``, ``ref`` (strings,
                         when the road has one); ``oneway`` (bool, always set:
                         true means traffic runs only in the line's direction)
``pois``     point       ``name``; ``class``: amenity, shop, tourism, leisure,
                         historic, office, station; ``subclass``: the tag's value
                         ("cafe", "museum"...); from zoom 15
===========  ==========  =====================================================

Roads show by class: motorway and trunk from zoom 5, primary from 7, secondary and
tertiary from 11, minor from 13, service, path and track from 14, steps from 15;
areas from the zoom at which their bbox spans 3 pixels (landuse not before 8, water
not before 6). Features within a layer come in draw order (minor roads before major).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from geoplex.maps.v1.vector_tile_pb2 import VectorTile

from . import style
from .features import Shapes, TileGeometry
from .geometry import (drop_on_border, drop_repeats, part_of_points, reverse_parts,
                       ring_areas)

EXTENT = 4096
BUFFER = 64
I64 = npt.NDArray[np.int64]

MOVE_TO, LINE_TO, CLOSE_PATH = 1, 2, 7
_GEOM_TYPES = {style.POINT: VectorTile.GEOM_TYPE_POINT,
               style.LINE: VectorTile.GEOM_TYPE_LINESTRING,
               style.POLYGON: VectorTile.GEOM_TYPE_POLYGON}


def command(cmd: int, count: int) -> int:
    return (cmd & 0x7) | (count << 3)


def snap_grid(z: int) -> int:
    """The unit grid coordinates are snapped to at zoom ``z`` (1: whole units)."""
    return 8 if z <= 12 else 4 if z <= 14 else 1


def encode_geometry(geometry: int, parts: Sequence[Sequence[tuple[int, int]]]) -> list[int]:
    """The command stream of one feature: ``geometry`` (style.POINT, LINE, POLYGON) and its
    parts in tile units (points: one part per point; rings open, as they are drawn)."""
    lengths = [len(p) for p in parts]
    pts = np.asarray([xy for p in parts for xy in p], dtype=np.int64).reshape(-1, 2)
    off = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    stream, _starts = _commands(geometry, pts, off, np.zeros(len(parts), dtype=np.int64))
    return stream


def _commands(geometry: int, pts: I64, off: I64, feature_of_part: I64
              ) -> tuple[list[int], I64]:
    """The command streams of many features at once, concatenated, and where each
    feature's starts (``len(features) + 1`` offsets). Parts are grouped by feature in
    order; the cursor starts at (0, 0) for every feature."""
    parts = off.size - 1
    if parts == 0:
        return [], np.zeros(1, dtype=np.int64)
    delta = np.empty_like(pts)
    delta[0] = pts[0]
    delta[1:] = pts[1:] - pts[:-1]
    feature_starts = np.ones(parts, dtype=bool)
    feature_starts[1:] = feature_of_part[1:] != feature_of_part[:-1]
    first_points = off[:-1][feature_starts]
    delta[first_points] = pts[first_points]
    zigzag = (delta << 1) ^ (delta >> 63)
    lengths = np.diff(off)
    if geometry == style.POINT:
        # one MoveTo per feature with all its points
        feature_index = np.cumsum(feature_starts) - 1
        per_feature = np.bincount(feature_index, weights=lengths).astype(np.int64)
        start = _offsets(1 + 2 * per_feature)
        out = np.zeros(int(start[-1]), dtype=np.int64)
        out[start[:-1]] = (per_feature << 3) | MOVE_TO
        point_feature = feature_index[part_of_points(off)]
        local = np.arange(pts.shape[0], dtype=np.int64) - _offsets(per_feature)[point_feature]
        pos = start[point_feature] + 1 + 2 * local
        out[pos] = zigzag[:, 0]
        out[pos + 1] = zigzag[:, 1]
        return out.tolist(), start
    closing = 1 if geometry == style.POLYGON else 0
    size = 2 * lengths + 2 + closing
    part_start = np.concatenate(([0], np.cumsum(size))).astype(np.int64)
    out = np.zeros(int(part_start[-1]), dtype=np.int64)
    ps = part_start[:-1]
    out[ps] = command(MOVE_TO, 1)
    out[ps + 3] = ((lengths - 1) << 3) | LINE_TO
    if closing:
        out[part_start[1:] - 1] = command(CLOSE_PATH, 1)
    part = part_of_points(off)
    local = np.arange(pts.shape[0], dtype=np.int64) - off[part]
    pos = ps[part] + np.where(local == 0, 1, 2 + 2 * local)
    out[pos] = zigzag[:, 0]
    out[pos + 1] = zigzag[:, 1]
    starts = np.concatenate((ps[feature_starts], [part_start[-1]])).astype(np.int64)
    return out.tolist(), starts


def _offsets(counts: I64) -> I64:
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)


def _quantized(shapes: Shapes, grid: int, geometry: int) -> tuple[I64, I64, I64]:
    """Whole-unit points (on ``grid``), repeats dropped, short parts dropped; rings also
    without points along the buffer's sides, degenerate rings (and the holes of a
    dropped exterior) dropped, wound per the spec. Returns points, offsets, and the
    feature (index into ``shapes.features``) of each part."""
    pts = (np.round(shapes.pts / grid) * grid).astype(np.int64)
    off = shapes.point_off
    feature_of_part = part_of_points(shapes.part_off)
    outer = shapes.outer
    rings = geometry == style.POLYGON
    pts, off = drop_repeats(pts, off, rings)
    if rings:
        pts, off = drop_on_border(pts, off, -BUFFER, EXTENT + BUFFER)
        area = ring_areas(pts, off)
        ok = (np.diff(off) >= 3) & (area != 0)
        if outer.size:
            group = np.cumsum(outer) - 1
            ok &= ok[np.flatnonzero(outer)][group]
        wrong = np.where(outer, area < 0, area > 0)
        pts = reverse_parts(pts, off, wrong & ok)
    else:
        ok = np.diff(off) >= (2 if geometry == style.LINE else 1)
    keep_points = ok[part_of_points(off)]
    lengths = np.diff(off)[ok]
    return pts[keep_points], _offsets(lengths), feature_of_part[ok]


class _Layer:
    """One layer being written: its features, with keys and values deduplicated."""

    def __init__(self, tile: VectorTile, name: str) -> None:
        self.layer = tile.layers.add()
        self.layer.version = 2
        self.layer.name = name
        self.layer.extent = EXTENT
        self._keys: dict[str, int] = {}
        self._values: dict[tuple[type, str | bool], int] = {}

    def tag(self, key: str, value: str | bool) -> tuple[int, int]:
        k = self._keys.get(key)
        if k is None:
            k = self._keys[key] = len(self._keys)
            self.layer.keys.append(key)
        vkey = (type(value), value)
        v = self._values.get(vkey)
        if v is None:
            v = self._values[vkey] = len(self._values)
            if isinstance(value, bool):
                self.layer.values.add(bool_value=value)
            else:
                self.layer.values.add(string_value=value)
        return k, v

    def add(self, geometry: int, tags: list[int], commands: list[int]) -> None:
        feature = self.layer.features.add()
        feature.type = _GEOM_TYPES[geometry]
        feature.tags.extend(tags)
        feature.geometry.extend(commands)


def encode_tile(geometries: Sequence[TileGeometry], z: int) -> bytes:
    """The MVT bytes of a tile from each covering region's geometry."""
    tile = VectorTile()
    layers: dict[int, _Layer] = {}
    grid = snap_grid(z)
    for layer_code in range(len(style.LAYER_NAMES)):
        geometry = style.LAYER_GEOMETRY[layer_code]
        for g in geometries:
            shapes = {style.POLYGON: g.polygons, style.LINE: g.lines,
                      style.POINT: g.points}[geometry]
            if len(shapes) == 0:
                continue
            _encode_layer(tile, layers, layer_code, shapes, grid)
    return tile.SerializeToString()


def _encode_layer(tile: VectorTile, layers: dict[int, _Layer], layer_code: int,
                  shapes: Shapes, grid: int) -> None:
    store = shapes.store
    geometry = style.LAYER_GEOMETRY[layer_code]
    pts, off, feature_of_part = _quantized(shapes, grid, geometry)
    if feature_of_part.size == 0:
        return
    features = shapes.features[feature_of_part]
    in_layer = store.layer[features] == layer_code
    if not bool(in_layer.any()):
        return
    if not bool(in_layer.all()):
        keep_points = in_layer[part_of_points(off)]
        off = _offsets(np.diff(off)[in_layer])
        pts = pts[keep_points]
        feature_of_part = feature_of_part[in_layer]
    stream, starts = _commands(geometry, pts, off, feature_of_part)
    first_part = np.ones(feature_of_part.size, dtype=bool)
    first_part[1:] = feature_of_part[1:] != feature_of_part[:-1]
    ids = shapes.features[feature_of_part[first_part]].tolist()
    layer = layers.get(layer_code)
    if layer is None:
        layer = layers[layer_code] = _Layer(tile, style.LAYER_NAMES[layer_code])
    classes = style.LAYER_CLASSES[layer_code]
    cls, names, refs, oneway = (store.cls[ids].tolist(), store.name_id[ids].tolist(),
                                store.ref_id[ids].tolist(), store.oneway[ids].tolist())
    bounds = starts.tolist()
    for n in range(len(ids)):
        tags: list[int] = []
        if layer_code != style.BUILDINGS:
            tags.extend(layer.tag("class", classes[cls[n]]))
        if layer_code in (style.ROADS, style.POIS) and names[n] >= 0:
            tags.extend(layer.tag("name", store.strings[names[n]]))
        if layer_code == style.ROADS:
            if refs[n] >= 0:
                tags.extend(layer.tag("ref", store.strings[refs[n]]))
            tags.extend(layer.tag("oneway", bool(oneway[n])))
        elif layer_code == style.POIS and refs[n] >= 0:
            tags.extend(layer.tag("subclass", store.strings[refs[n]]))
        layer.add(geometry, tags, stream[bounds[n]:bounds[n + 1]])
