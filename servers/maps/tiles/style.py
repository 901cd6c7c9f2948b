"""What the tiles show and how: layers, classes, draw order, zoom rules, colours, widths.

Both formats read the same rules: a feature appears in a tile from its class's
:data:`MIN_ZOOM` on (areas later while they would be smaller than a few pixels), so a
vector tile never holds what the raster tile of that zoom leaves out.

Raise :data:`STYLE_VERSION` whenever a table here or what the renderer draws from it
changes: it goes into :attr:`TileSet.version` (ETags, tile caches) and the feature
cache's file names.
"""

from __future__ import annotations

import math

STYLE_VERSION = 2

# layers, in draw order (a layer's code is its index)
LANDUSE, WATER, BUILDINGS, ROADS, POIS = range(5)
LAYER_NAMES = ("landuse", "water", "buildings", "roads", "pois")
POINT, LINE, POLYGON = 1, 2, 3  # the MVT geometry types
LAYER_GEOMETRY = (POLYGON, POLYGON, POLYGON, LINE, POINT)

# the classes of each layer, in draw order within it (a class's code is its index):
# roads minor under major
LAYER_CLASSES: tuple[tuple[str, ...], ...] = (
    ("forest", "grass", "meadow", "park", "cemetery", "pitch"),
    ("water", "riverbank", "reservoir"),
    ("building",),
    ("track", "path", "steps", "service", "minor", "tertiary", "secondary", "primary",
     "trunk", "motorway"),
    ("amenity", "shop", "tourism", "leisure", "historic", "office", "station"),
)
ROAD_CLASSES = LAYER_CLASSES[ROADS]


def class_code(layer: int, name: str) -> int:
    return LAYER_CLASSES[layer].index(name)


# OSM highway=* -> road class
HIGHWAY_CLASS = {
    "motorway": "motorway", "motorway_link": "motorway",
    "trunk": "trunk", "trunk_link": "trunk",
    "primary": "primary", "primary_link": "primary",
    "secondary": "secondary", "secondary_link": "secondary",
    "tertiary": "tertiary", "tertiary_link": "tertiary",
    "residential": "minor", "unclassified": "minor", "living_street": "minor",
    "road": "minor",
    "service": "service",
    "footway": "path", "cycleway": "path", "path": "path", "pedestrian": "path",
    "bridleway": "path", "corridor": "path",
    "steps": "steps",
    "track": "track",
}
# (key, value) -> (layer, class) for areas, first match wins
AREA_CLASS: tuple[tuple[str, str, int, str], ...] = (
    ("natural", "water", WATER, "water"),
    ("waterway", "riverbank", WATER, "riverbank"),
    ("landuse", "reservoir", WATER, "reservoir"),
    ("landuse", "basin", WATER, "reservoir"),
    ("leisure", "park", LANDUSE, "park"),
    ("leisure", "garden", LANDUSE, "park"),
    ("landuse", "park", LANDUSE, "park"),
    ("landuse", "recreation_ground", LANDUSE, "park"),
    ("landuse", "village_green", LANDUSE, "grass"),
    ("landuse", "grass", LANDUSE, "grass"),
    ("landuse", "forest", LANDUSE, "forest"),
    ("natural", "wood", LANDUSE, "forest"),
    ("landuse", "meadow", LANDUSE, "meadow"),
    ("natural", "grassland", LANDUSE, "meadow"),
    ("landuse", "cemetery", LANDUSE, "cemetery"),
    ("leisure", "pitch", LANDUSE, "pitch"),
)

# the first zoom a class appears at, per layer (roads by class)
ROAD_MIN_ZOOM = {"motorway": 5, "trunk": 5, "primary": 7, "secondary": 11, "tertiary": 11,
                 "minor": 13, "service": 14, "path": 14, "steps": 15, "track": 14}
LAYER_MIN_ZOOM = {LANDUSE: 8, WATER: 6, BUILDINGS: 15, POIS: 15}
AREA_MIN_PIXELS = 3.0  # an area shows from the zoom its bbox spans this many pixels
LABEL_MIN_ZOOM = 16    # street names on the raster tiles
POI_DOT_MIN_ZOOM = 17
MAX_ZOOM = 18
EARTH_CIRCUMFERENCE_M = 2 * math.pi * 6_378_137.0


# ---- raster colours (RGB) and widths (pixels at 1x) ----
Rgb = tuple[int, int, int]
BACKGROUND: Rgb = (242, 239, 233)
LANDUSE_FILL: dict[str, Rgb] = {
    "forest": (173, 209, 158), "grass": (205, 235, 176), "meadow": (205, 235, 176),
    "park": (200, 250, 204), "cemetery": (170, 203, 175), "pitch": (170, 224, 203),
}
WATER_FILL: Rgb = (170, 211, 223)
BUILDING_FILL: Rgb = (217, 208, 201)
BUILDING_OUTLINE: Rgb = (196, 182, 171)
ROAD_FILL: dict[str, Rgb] = {
    "motorway": (232, 146, 162), "trunk": (249, 178, 156), "primary": (252, 214, 164),
    "secondary": (247, 250, 191), "tertiary": (255, 255, 255), "minor": (255, 255, 255),
    "service": (255, 255, 255), "path": (250, 128, 114), "steps": (250, 128, 114),
    "track": (172, 131, 39),
}
ROAD_CASING: dict[str, Rgb] = {
    "motorway": (220, 42, 103), "trunk": (200, 82, 40), "primary": (160, 109, 0),
    "secondary": (112, 125, 5), "tertiary": (140, 140, 140), "minor": (190, 185, 180),
    "service": (190, 185, 180),
}
# the road's width at zoom 16; it halves every two zooms below and doubles every two
# above (clamped), a casing adds CASING_PX each side
ROAD_WIDTH_Z16: dict[str, float] = {
    "motorway": 10.0, "trunk": 10.0, "primary": 9.0, "secondary": 8.0, "tertiary": 7.0,
    "minor": 6.0, "service": 3.0, "path": 1.3, "steps": 2.5, "track": 1.5,
}
CASING_MIN_ZOOM = {"motorway": 9, "trunk": 9, "primary": 11, "secondary": 12, "tertiary": 13,
                   "minor": 15, "service": 16}
CASING_PX = 1.0
LABEL_FILL = (51, 51, 51, 255)
LABEL_HALO = (255, 255, 255, 230)
POI_FILL: Rgb = (115, 74, 8)


def road_width(road_class: str, z: int) -> float:
    """The fill width in pixels at 1x of a road of ``road_class`` at zoom ``z``."""
    w = ROAD_WIDTH_Z16[road_class] * math.pow(2.0, (z - 16) / 2.0)
    thin = road_class in ("path", "steps", "track")
    return max(0.6 if thin else 0.8, min(w, 3 * ROAD_WIDTH_Z16[road_class]))
