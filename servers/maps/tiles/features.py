"""A region's drawable features in compact numpy arrays, with a grid index.

Every feature is one or more parts (a road's polyline, a polygon's rings: each exterior
followed by its holes, a POI's point) in one flat array of Web Mercator metres, with
offsets (feature -> parts -> points), a layer and class code, the first zoom it shows
at, its bbox, and indexes into one string table for its name and ref. Features are
sorted by draw rank (layer, then class), so any selection in index order is in draw
order. A grid of zoom-14 tiles lists the features touching each cell; a tile looks at
the cells it overlaps (or, at low zoom, scans the bboxes), never at every vertex.

:meth:`FeatureStore.query` cuts a tile out: the features whose bbox meets the tile plus
a buffer, moved to tile units (x right, y down, ``0..extent``) and clipped to the
buffered square (lines split where they leave it, rings by Sutherland-Hodgman).
"""

from __future__ import annotations

import math
import os
import tempfile
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from . import style
from .geometry import clip_lines, clip_rings, part_of_points, ranges
from .tilemath import project, unproject

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
U8 = npt.NDArray[np.uint8]
Bool = npt.NDArray[np.bool_]

GRID_ZOOM = 14
GRID_SCAN_CELLS = 64  # a tile over more cells than this scans every bbox instead
NO_STRING = -1


@dataclass(frozen=True, slots=True)
class Shapes:
    """One geometry kind of a tile: features of one store, clipped, in tile units."""

    store: FeatureStore
    features: I64          # the store's index of each feature, ascending (draw order)
    part_off: I64          # feature i's parts are part_off[i]:part_off[i + 1]
    point_off: I64         # part j's points are pts[point_off[j]:point_off[j + 1]]
    outer: Bool            # per part: an exterior ring (polygons), else True
    pts: F64

    def __len__(self) -> int:
        return int(self.features.size)


@dataclass(frozen=True, slots=True)
class TileGeometry:
    polygons: Shapes       # landuse, water, buildings
    lines: Shapes          # roads
    points: Shapes         # POIs


@dataclass(frozen=True, slots=True)
class FeatureStore:
    name: str
    xy: F64                # (points, 2) Web Mercator metres
    point_off: I64         # part -> points
    outer: Bool            # per part
    part_off: I64          # feature -> parts
    layer: U8              # style.LANDUSE ... style.POIS
    cls: U8                # index into style.LAYER_CLASSES[layer]
    min_zoom: U8
    oneway: Bool
    name_id: I32           # into strings, NO_STRING for none
    ref_id: I32
    bbox: F64              # (features, 4) west, south, east, north in metres
    strings: tuple[str, ...]
    grid_origin: tuple[float, float]
    grid_shape: tuple[int, int]   # cells across (x), cells down (y)
    cell_start: I64        # cell c lists cell_items[cell_start[c]:cell_start[c + 1]]
    cell_items: I32

    @property
    def feature_count(self) -> int:
        return int(self.layer.size)

    def bounds(self) -> tuple[float, float, float, float]:
        """(south, west, north, east) in degrees; zeros for an empty store."""
        if self.feature_count == 0:
            return (0.0, 0.0, 0.0, 0.0)
        south, west = unproject(float(self.bbox[:, 0].min()), float(self.bbox[:, 1].min()))
        north, east = unproject(float(self.bbox[:, 2].max()), float(self.bbox[:, 3].max()))
        return (south, west, north, east)

    def extent_m(self) -> tuple[float, float, float, float] | None:
        if self.feature_count == 0:
            return None
        return (float(self.bbox[:, 0].min()), float(self.bbox[:, 1].min()),
                float(self.bbox[:, 2].max()), float(self.bbox[:, 3].max()))

    def string(self, index: int) -> str:
        return self.strings[index] if index >= 0 else ""

    def nbytes(self) -> int:
        arrays = (self.xy, self.point_off, self.outer, self.part_off, self.layer, self.cls,
                  self.min_zoom, self.oneway, self.name_id, self.ref_id, self.bbox,
                  self.cell_start, self.cell_items)
        return sum(a.nbytes for a in arrays) + sum(len(s) + 49 for s in self.strings)

    # ---- the tile cut ----

    def query(self, bounds: tuple[float, float, float, float], z: int, extent: int,
              buffer: int, layers: Sequence[int] = tuple(range(len(style.LAYER_NAMES)))
              ) -> TileGeometry:
        """The features of ``layers`` showing at zoom ``z`` in the tile ``bounds`` (west,
        south, east, north metres), in units of ``extent`` per tile side, clipped to the
        tile grown by ``buffer`` units on each side."""
        west, south, east, north = bounds
        scale = extent / (east - west)
        pad = buffer / scale
        box = (west - pad, south - pad, east + pad, north + pad)
        found = self._candidates(box)
        b = self.bbox[found]
        keep = ((b[:, 0] <= box[2]) & (b[:, 2] >= box[0]) & (b[:, 1] <= box[3])
                & (b[:, 3] >= box[1]) & (self.min_zoom[found] <= z))
        wanted = np.zeros(len(style.LAYER_NAMES), dtype=bool)
        wanted[list(layers)] = True
        keep &= wanted[self.layer[found]]
        chosen = found[keep]
        kind = np.asarray(style.LAYER_GEOMETRY)[self.layer[chosen]]
        lo, hi = float(-buffer), float(extent + buffer)
        origin = (west, north, scale)
        return TileGeometry(
            self._polygons(chosen[kind == style.POLYGON], origin, lo, hi),
            self._lines(chosen[kind == style.LINE], origin, lo, hi),
            self._points(chosen[kind == style.POINT], origin, lo, hi))

    def _candidates(self, box: tuple[float, float, float, float]) -> I64:
        gx, gy = self.grid_origin
        nx, ny = self.grid_shape
        cell = _cell_size()
        x0 = max(0, math.floor((box[0] - gx) / cell))
        x1 = min(nx - 1, math.floor((box[2] - gx) / cell))
        y0 = max(0, math.floor((box[1] - gy) / cell))
        y1 = min(ny - 1, math.floor((box[3] - gy) / cell))
        if x1 < x0 or y1 < y0 or self.feature_count == 0:
            return np.zeros(0, dtype=np.int64)
        if (x1 - x0 + 1) * (y1 - y0 + 1) > GRID_SCAN_CELLS:
            return np.arange(self.feature_count, dtype=np.int64)
        cells = (np.arange(y0, y1 + 1)[:, None] * nx + np.arange(x0, x1 + 1)[None, :]).ravel()
        starts = self.cell_start[cells]
        items = self.cell_items[ranges(starts, self.cell_start[cells + 1] - starts)]
        return np.unique(items).astype(np.int64)

    def _gather(self, chosen: I64, origin: tuple[float, float, float]
                ) -> tuple[I64, I64, Bool, F64]:
        """The chosen features' parts: per feature its part count, the part offsets into
        the points, the outer flags and the points in tile units."""
        first = self.part_off[chosen]
        part_counts = self.part_off[chosen + 1] - first
        parts = ranges(first, part_counts)
        starts = self.point_off[parts]
        lengths = self.point_off[parts + 1] - starts
        xy = self.xy[ranges(starts, lengths)]
        west, north, scale = origin
        pts = np.empty_like(xy)
        pts[:, 0] = (xy[:, 0] - west) * scale
        pts[:, 1] = (north - xy[:, 1]) * scale
        off = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        return part_counts, off, self.outer[parts], pts

    def _lines(self, chosen: I64, origin: tuple[float, float, float], lo: float,
               hi: float) -> Shapes:
        part_counts, off, _outer, pts = self._gather(chosen, origin)
        feature_of_part = np.repeat(np.arange(chosen.size, dtype=np.int64), part_counts)
        pts, off, source = clip_lines(pts, off, lo, hi)
        return self._shapes(chosen, feature_of_part[source], off,
                            np.ones(source.size, dtype=bool), pts)

    def _polygons(self, chosen: I64, origin: tuple[float, float, float], lo: float,
                  hi: float) -> Shapes:
        part_counts, off, outer, pts = self._gather(chosen, origin)
        feature_of_part = np.repeat(np.arange(chosen.size, dtype=np.int64), part_counts)
        pts, off = clip_rings(pts, off, lo, hi)
        ring_ok = np.diff(off) >= 3
        group = np.cumsum(outer) - 1  # each feature's first part is an exterior ring
        keep_part = ring_ok & ring_ok[np.flatnonzero(outer)][group] if outer.size else ring_ok
        point_keep = keep_part[part_of_points(off)]
        lengths = np.diff(off)[keep_part]
        off = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        return self._shapes(chosen, feature_of_part[keep_part], off, outer[keep_part],
                            pts[point_keep])

    def _points(self, chosen: I64, origin: tuple[float, float, float], lo: float,
                hi: float) -> Shapes:
        part_counts, off, outer, pts = self._gather(chosen, origin)
        inside = np.all((pts >= lo) & (pts <= hi), axis=1)
        first = off[:-1]
        keep = inside[first]
        feature_of_part = np.repeat(np.arange(chosen.size, dtype=np.int64), part_counts)
        kept_pts = pts[first[keep]]
        return self._shapes(chosen, feature_of_part[keep],
                            np.arange(kept_pts.shape[0] + 1, dtype=np.int64),
                            outer[keep], kept_pts)

    def _shapes(self, chosen: I64, feature_of_part: I64, point_off: I64, outer: Bool,
                pts: F64) -> Shapes:
        """Shapes from parts already in feature order (features without parts dropped)."""
        counts = np.bincount(feature_of_part, minlength=chosen.size)
        present = counts > 0
        part_off = np.concatenate(([0], np.cumsum(counts[present]))).astype(np.int64)
        return Shapes(self, chosen[present], part_off, point_off, outer, pts)

    # ---- the feature cache ----

    def save(self, path: Path) -> None:
        """Write the store to ``path`` (.npz) atomically: a temporary file renamed."""
        blob = "\0".join(self.strings).encode("utf-8")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, xy=self.xy, point_off=self.point_off, outer=self.outer,
                         part_off=self.part_off, layer=self.layer, cls=self.cls,
                         min_zoom=self.min_zoom, oneway=self.oneway, name_id=self.name_id,
                         ref_id=self.ref_id, bbox=self.bbox,
                         strings=np.frombuffer(blob, dtype=np.uint8),
                         string_count=np.asarray([len(self.strings)]))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path, name: str) -> FeatureStore:
        with np.load(path, allow_pickle=False) as data:
            count = int(data["string_count"][0])
            text = data["strings"].tobytes().decode("utf-8")
            strings = tuple(text.split("\0")) if count else ()
            return _indexed(name, data["xy"], data["point_off"], data["outer"],
                            data["part_off"], data["layer"], data["cls"], data["min_zoom"],
                            data["oneway"], data["name_id"], data["ref_id"], data["bbox"],
                            strings)


def _cell_size() -> float:
    return style.EARTH_CIRCUMFERENCE_M / (1 << GRID_ZOOM)


def _indexed(name: str, xy: F64, point_off: I64, outer: Bool, part_off: I64, layer: U8,
             cls: U8, min_zoom: U8, oneway: Bool, name_id: I32, ref_id: I32, bbox: F64,
             strings: tuple[str, ...]) -> FeatureStore:
    """The store over these arrays, with its grid built."""
    cell = _cell_size()
    if layer.size:
        gx, gy = float(bbox[:, 0].min()), float(bbox[:, 1].min())
    else:
        gx = gy = 0.0
    cx0 = np.floor((bbox[:, 0] - gx) / cell).astype(np.int64)
    cx1 = np.floor((bbox[:, 2] - gx) / cell).astype(np.int64)
    cy0 = np.floor((bbox[:, 1] - gy) / cell).astype(np.int64)
    cy1 = np.floor((bbox[:, 3] - gy) / cell).astype(np.int64)
    nx = int(cx1.max()) + 1 if layer.size else 0
    ny = int(cy1.max()) + 1 if layer.size else 0
    wide = cx1 - cx0 + 1
    counts = wide * (cy1 - cy0 + 1)
    feature = np.repeat(np.arange(layer.size, dtype=np.int64), counts)
    local = ranges(np.zeros(layer.size, dtype=np.int64), counts)
    cells = (cy0[feature] + local // wide[feature]) * nx + cx0[feature] + local % wide[feature]
    order = np.argsort(cells, kind="stable")
    cell_start = np.searchsorted(cells[order], np.arange(nx * ny + 1)).astype(np.int64)
    return FeatureStore(name, xy, point_off, outer, part_off, layer, cls, min_zoom, oneway,
                        name_id, ref_id, bbox, strings, (gx, gy), (nx, ny), cell_start,
                        feature[order].astype(np.int32))


class FeatureBuilder:
    """Collects features as they are read (coordinates in degrees), then builds the
    store: projects once, computes bboxes and zoom rules, sorts, indexes."""

    def __init__(self) -> None:
        self._lonlat = array("d")
        self._part_len = array("q")
        self._outer = array("b")
        self._parts = array("q")
        self._layer = array("B")
        self._cls = array("B")
        self._oneway = array("b")
        self._name = array("i")
        self._ref = array("i")
        self._strings: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._layer)

    def _string(self, text: str) -> int:
        if not text:
            return NO_STRING
        found = self._strings.get(text)
        if found is None:
            found = self._strings[text] = len(self._strings)
        return found

    def add(self, layer: int, cls: int, parts: Sequence[Sequence[float]],
            outer: Sequence[bool] | None = None, *, name: str = "", ref: str = "",
            oneway: bool = False) -> None:
        """One feature: ``parts`` as flat ``[lon, lat, lon, lat, ...]`` sequences (rings
        open or closed; for a polygon the first part must be an exterior ring, ``outer``
        flags each). Parts too short for their geometry are left out, and a feature with
        none left is not added."""
        geometry = style.LAYER_GEOMETRY[layer]
        need = {style.POINT: 1, style.LINE: 2, style.POLYGON: 3}[geometry]
        flags = list(outer) if outer is not None else [True] * len(parts)
        kept: list[tuple[Sequence[float], bool]] = []
        skipping = False  # the holes of an exterior ring left out
        for part, is_outer in zip(parts, flags, strict=True):
            if geometry == style.POLYGON:
                if len(part) >= 4 and part[0] == part[-2] and part[1] == part[-1]:
                    part = part[:-2]  # rings are stored open
                if is_outer:
                    skipping = len(part) // 2 < need
                elif not kept:
                    skipping = True
                if skipping:
                    continue
            if len(part) // 2 < need:
                continue
            kept.append((part, is_outer))
        if not kept:
            return
        for part, is_outer in kept:
            self._lonlat.extend(part)
            self._part_len.append(len(part) // 2)
            self._outer.append(is_outer)
        self._parts.append(len(kept))
        self._layer.append(layer)
        self._cls.append(cls)
        self._oneway.append(oneway)
        self._name.append(self._string(name))
        self._ref.append(self._string(ref))

    def build(self, name: str) -> FeatureStore:
        lonlat = np.frombuffer(self._lonlat, dtype=np.float64).reshape(-1, 2)
        x, y = project(lonlat[:, 0].copy(), lonlat[:, 1].copy())
        xy = np.column_stack((x, y))
        part_len = np.frombuffer(self._part_len, dtype=np.int64)
        point_off = np.concatenate(([0], np.cumsum(part_len))).astype(np.int64)
        parts = np.frombuffer(self._parts, dtype=np.int64)
        part_off = np.concatenate(([0], np.cumsum(parts))).astype(np.int64)
        layer = np.frombuffer(self._layer, dtype=np.uint8).copy()
        cls = np.frombuffer(self._cls, dtype=np.uint8).copy()
        count = layer.size
        # per-feature bbox: reduce over each feature's points
        feature_points = point_off[part_off]
        bbox = np.zeros((count, 4))
        if count:
            starts = feature_points[:-1]
            bbox[:, 0] = np.minimum.reduceat(xy[:, 0], starts)
            bbox[:, 1] = np.minimum.reduceat(xy[:, 1], starts)
            bbox[:, 2] = np.maximum.reduceat(xy[:, 0], starts)
            bbox[:, 3] = np.maximum.reduceat(xy[:, 1], starts)
        min_zoom = _min_zoom(layer, cls, bbox)
        order = np.argsort(layer.astype(np.int64) * 256 + cls, kind="stable")
        parts_sorted = ranges(part_off[order], parts[order])
        lengths = part_len[parts_sorted]
        points_sorted = ranges(point_off[parts_sorted], lengths)
        return _indexed(
            name, xy[points_sorted],
            np.concatenate(([0], np.cumsum(lengths))).astype(np.int64),
            np.frombuffer(self._outer, dtype=np.int8).astype(bool)[parts_sorted],
            np.concatenate(([0], np.cumsum(parts[order]))).astype(np.int64),
            layer[order], cls[order], min_zoom[order],
            np.frombuffer(self._oneway, dtype=np.int8).astype(bool)[order],
            np.frombuffer(self._name, dtype=np.int32)[order].copy(),
            np.frombuffer(self._ref, dtype=np.int32)[order].copy(),
            bbox[order], tuple(self._strings))


def _min_zoom(layer: U8, cls: U8, bbox: F64) -> U8:
    """The first zoom each feature shows at (see style.py)."""
    out = np.full(layer.size, style.MAX_ZOOM, dtype=np.int64)
    road_zoom = np.asarray([style.ROAD_MIN_ZOOM[c] for c in style.ROAD_CLASSES])
    roads = layer == style.ROADS
    out[roads] = road_zoom[cls[roads]]
    out[layer == style.POIS] = style.LAYER_MIN_ZOOM[style.POIS]
    span = np.maximum(bbox[:, 2] - bbox[:, 0], bbox[:, 3] - bbox[:, 1])
    with np.errstate(divide="ignore"):
        wanted = np.ceil(np.log2(style.AREA_MIN_PIXELS * style.EARTH_CIRCUMFERENCE_M / 256
                                 / np.maximum(span, 1e-9)))
    for area_layer in (style.LANDUSE, style.WATER, style.BUILDINGS):
        mask = layer == area_layer
        out[mask] = np.clip(wanted[mask], style.LAYER_MIN_ZOOM[area_layer], style.MAX_ZOOM)
    return out.astype(np.uint8)
