"""256x256 PNG tiles drawn with Pillow from a tile's clipped geometry.

Drawn at twice the size and reduced with a Lanczos filter (antialiasing), in order:
background, landuse, water, buildings (outlined from zoom 16), road casings (major
classes, minor under major), road fills, POI dots (zoom 17 on); then, on the reduced
image, street names along their road (zoom 16 on): straight, rotated to the road's
direction at the middle of its longest stretch in the tile, upright, with a halo, one
per name and tile, never over another label, never cut by the tile's edge. The image
is quantised to an adaptive palette (fast octree, at most :data:`PALETTE_COLOURS`, no
dithering) before encoding: a quarter of the RGB PNG's bytes, and faster to compress.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from functools import cache, lru_cache

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from . import style
from .features import Shapes, TileGeometry
from .geometry import clip_lines, part_of_points

SIZE = 256
SCALE = 2               # drawn at SCALE x SIZE, then reduced
EXTENT = SIZE * SCALE   # the query's units: pixels of the large image
BUFFER = 64             # large-image pixels: wider than the widest road's half-width
PALETTE_COLOURS = 128
LABEL_FONT_SIZE = 11
LABEL_MARGIN = 2        # pixels kept free around a label and from the tile's edge
Box = tuple[float, float, float, float]


logger = logging.getLogger(__name__)

@lru_cache(maxsize=4096)
def _text_box(name: str) -> tuple[float, float, float, float, float]:
    """The label's advance width and its ink box (left, top, right, bottom)."""
    font = _font()
    left, top, right, bottom = font.getbbox(name)
    return float(font.getlength(name)), float(left), float(top), float(right), float(bottom)


# DejaVu Sans (Debian's fonts-dejavu-core, which the Makefile installs) covers the Latin,
# Greek and Cyrillic letters of street names ("Töölönlahdenkatu"); Pillow's built-in font
# draws only ASCII, so it is the last resort
LABEL_FONTS = ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


@cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in LABEL_FONTS:
        try:
            return ImageFont.truetype(name, LABEL_FONT_SIZE)
        except OSError:
            continue
    logger.warning("no DejaVu Sans font: street labels keep to ASCII letters (install "
                   "fonts-dejavu-core)")
    return ImageFont.load_default(size=LABEL_FONT_SIZE)


def render_png(geometries: Sequence[TileGeometry], z: int) -> bytes:
    image = Image.new("RGB", (EXTENT, EXTENT), style.BACKGROUND)
    draw = ImageDraw.Draw(image)
    for layer in (style.LANDUSE, style.WATER, style.BUILDINGS):
        for g in geometries:
            _draw_areas(image, draw, g.polygons, layer, z)
    roads = [g.lines for g in geometries if len(g.lines)]
    _draw_roads(draw, roads, z)
    if z >= style.POI_DOT_MIN_ZOOM:
        for g in geometries:
            _draw_pois(draw, g.points)
    small = image.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    if z >= style.LABEL_MIN_ZOOM:
        _draw_labels(small, roads)
    out = io.BytesIO()
    small.quantize(PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE,
                   dither=Image.Dither.NONE).save(out, "PNG", optimize=False)
    return out.getvalue()


def _fill(layer: int, cls: str) -> style.Rgb:
    if layer == style.LANDUSE:
        return style.LANDUSE_FILL[cls]
    if layer == style.WATER:
        return style.WATER_FILL
    return style.BUILDING_FILL


def _draw_areas(image: Image.Image, draw: ImageDraw.ImageDraw, shapes: Shapes, layer: int,
                z: int) -> None:
    if len(shapes) == 0:
        return
    store = shapes.store
    layers = store.layer[shapes.features]
    chosen = np.flatnonzero(layers == layer)
    if chosen.size == 0:
        return
    classes = style.LAYER_CLASSES[layer]
    outline = style.BUILDING_OUTLINE if layer == style.BUILDINGS and z >= 16 else None
    flat = shapes.pts.ravel().tolist()
    point_off = shapes.point_off.tolist()
    part_off = shapes.part_off.tolist()
    outer = shapes.outer.tolist()
    cls = store.cls[shapes.features].tolist()
    for i in chosen.tolist():
        colour = _fill(layer, classes[cls[i]])
        first, last = part_off[i], part_off[i + 1]
        rings = [flat[2 * point_off[p]:2 * point_off[p + 1]] for p in range(first, last)]
        if all(outer[first:last]):
            for ring in rings:
                draw.polygon(ring, fill=colour, outline=outline)
            continue
        # holes: a mask of the exteriors less the holes, over the feature's pixels only
        points = shapes.pts[point_off[first]:point_off[last]]
        x0, y0 = (max(0, int(v)) for v in points.min(axis=0))
        x1, y1 = (min(EXTENT, int(v) + 2) for v in points.max(axis=0))
        if x1 <= x0 or y1 <= y0:
            continue
        mask = Image.new("L", (x1 - x0, y1 - y0), 0)
        mask_draw = ImageDraw.Draw(mask)
        for ring, is_outer in zip(rings, outer[first:last], strict=True):
            moved = [v - (x0 if k % 2 == 0 else y0) for k, v in enumerate(ring)]
            mask_draw.polygon(moved, fill=255 if is_outer else 0)
        image.paste(colour, (x0, y0, x1, y1), mask)
        if outline is not None:
            for ring in rings:
                draw.polygon(ring, outline=outline)


def _draw_roads(draw: ImageDraw.ImageDraw, roads: Sequence[Shapes], z: int) -> None:
    """Casings of every road first, then fills, each pass minor classes first. Lines
    have round caps and, where they turn sharply, round joins (a disc at the vertex:
    Pillow's own curved joins cost a Python call per vertex)."""
    order = sorted((int(s.store.cls[f]), r, i) for r, s in enumerate(roads)
                   for i, f in enumerate(s.features.tolist()))
    flats = [s.pts.ravel().tolist() for s in roads]
    point_offs = [s.point_off.tolist() for s in roads]
    part_offs = [s.part_off.tolist() for s in roads]
    joins = [_sharp_vertices(s).tolist() for s in roads]
    for casing in (True, False):
        for cls, r, i in order:
            name = style.ROAD_CLASSES[cls]
            if casing and (name not in style.ROAD_CASING or z < style.CASING_MIN_ZOOM[name]):
                continue
            width = style.road_width(name, z) * SCALE
            colour = style.ROAD_FILL[name]
            if casing:
                width += 2 * style.CASING_PX * SCALE
                colour = style.ROAD_CASING[name]
            w = max(1, round(width))
            h = w / 2 - 0.5
            flat, point_off, sharp = flats[r], point_offs[r], joins[r]
            for p in range(part_offs[r][i], part_offs[r][i + 1]):
                start, end = point_off[p], point_off[p + 1]
                line = flat[2 * start:2 * end]
                draw.line(line, fill=colour, width=w)
                if w < 4:
                    continue
                for k in (start, end - 1, *(v for v in range(start + 1, end - 1) if sharp[v])):
                    x, y = flat[2 * k], flat[2 * k + 1]
                    draw.ellipse((x - h, y - h, x + h, y + h), fill=colour)


SHARP_TURN_COS = math.cos(math.radians(25))


def _sharp_vertices(shapes: Shapes) -> npt.NDArray[np.bool_]:
    """Per point: an inner vertex of its line where the line turns by more than 25°."""
    pts = shapes.pts
    sharp = np.zeros(pts.shape[0], dtype=bool)
    if pts.shape[0] < 3:
        return sharp
    d = np.diff(pts, axis=0)
    d /= np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)[:, None]
    cos = np.einsum("ij,ij->i", d[:-1], d[1:])  # at points 1..n-2
    sharp[1:-1] = cos < SHARP_TURN_COS
    return sharp


def _draw_pois(draw: ImageDraw.ImageDraw, shapes: Shapes) -> None:
    r = 2.5 * SCALE
    for x, y in shapes.pts.tolist():
        draw.ellipse((x - r, y - r, x + r, y + r), fill=style.POI_FILL,
                     outline=(255, 255, 255))


def _draw_labels(image: Image.Image, roads: Sequence[Shapes]) -> None:
    font = _font()
    occupied: list[Box] = []
    done: set[str] = set()
    candidates: list[tuple[int, float, str, np.ndarray]] = []
    for shapes in roads:
        names = shapes.store.name_id[shapes.features]
        if not bool((names >= 0).any()):
            continue
        # the stretches inside the tile itself, each road's longest one
        pts, off, source = clip_lines(shapes.pts / SCALE, shapes.point_off, 0.0, float(SIZE))
        if source.size == 0:
            continue
        feature = part_of_points(shapes.part_off)[source]
        step = np.hypot(*np.diff(pts, axis=0).T)
        step[(off[1:] - 1)[:-1]] = 0.0  # no step from one part to the next
        chain = np.concatenate(([0.0], np.cumsum(step)))
        lengths = chain[off[1:] - 1] - chain[off[:-1]]
        for part in np.argsort(-lengths, kind="stable").tolist():
            f = int(feature[part])
            name_id = int(names[f])
            if name_id < 0:
                continue
            candidates.append((-int(shapes.store.cls[shapes.features[f]]),
                               -float(lengths[part]), shapes.store.strings[name_id],
                               pts[off[part]:off[part + 1]]))
    # major roads first, then long stretches: they win the space
    candidates.sort(key=lambda c: (c[0], c[1]))
    for _rank, neg_length, name, line in candidates:
        if name in done:
            continue
        if _place(image, font, name, line, -neg_length, occupied):
            done.add(name)


def _place(image: Image.Image, font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
           name: str, line: np.ndarray, length: float, occupied: list[Box]) -> bool:
    """Draw ``name`` along the middle of ``line`` if it fits there; True if drawn."""
    text_width, left, top, right, bottom = _text_box(name)
    if text_width + 8 > length:
        return False
    chain = np.concatenate(([0.0], np.cumsum(np.hypot(*np.diff(line, axis=0).T))))
    a = _along(line, chain, (length - text_width) / 2)
    b = _along(line, chain, (length + text_width) / 2)
    chord = math.hypot(b[0] - a[0], b[1] - a[1])
    if chord < 0.92 * text_width:
        return False  # too curved for straight text
    angle = math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))
    if angle > 90:
        angle -= 180
    elif angle <= -90:
        angle += 180
    pad = 3
    width, height = int(right - left) + 2 * pad, int(bottom - top) + 2 * pad
    # the turned text's box, checked before anything is drawn
    rad = math.radians(angle)
    turned_w = math.ceil(width * abs(math.cos(rad)) + height * abs(math.sin(rad)))
    turned_h = math.ceil(width * abs(math.sin(rad)) + height * abs(math.cos(rad)))
    cx, cy = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
    x0, y0 = round(cx - turned_w / 2), round(cy - turned_h / 2)
    box = (x0 - LABEL_MARGIN, y0 - LABEL_MARGIN, x0 + turned_w + LABEL_MARGIN,
           y0 + turned_h + LABEL_MARGIN)
    if box[0] < 0 or box[1] < 0 or box[2] > SIZE or box[3] > SIZE:
        return False
    if any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3]
           for o in occupied):
        return False
    text = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    ImageDraw.Draw(text).text((pad - left, pad - top), name, font=font, fill=style.LABEL_FILL,
                              stroke_width=2, stroke_fill=style.LABEL_HALO)
    turned = text.rotate(-angle, resample=Image.Resampling.BICUBIC, expand=True)
    x0, y0 = round(cx - turned.width / 2), round(cy - turned.height / 2)
    image.paste(turned, (x0, y0), turned)
    occupied.append(box)
    return True


def _along(line: np.ndarray, chain: np.ndarray, s: float) -> tuple[float, float]:
    i = int(np.clip(np.searchsorted(chain, s, side="right") - 1, 0, len(chain) - 2))
    span = chain[i + 1] - chain[i]
    t = (s - chain[i]) / span if span > 0 else 0.0
    return (float(line[i, 0] + t * (line[i + 1, 0] - line[i, 0])),
            float(line[i, 1] + t * (line[i + 1, 1] - line[i, 1])))
