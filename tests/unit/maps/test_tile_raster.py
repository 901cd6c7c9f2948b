"""PNG tiles of the Helsinki extract: size and colours over a known road, labels, tiles no
region covers, and the validation of z/x/y/fmt."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from geoplex.infra import data
from geoplex.servers.maps.tiles import MapSource, TileSet, style
from geoplex.servers.maps.tiles.tilemath import tile_of

MANNERHEIMINTIE = (60.1699, 24.9384)  # a primary road through the tile's middle


@pytest.fixture(scope="module")
def helsinki() -> TileSet:
    fetched = data.fetch(["helsinki"], progress=lambda _m: None)
    return TileSet.load([MapSource("Helsinki", fetched["helsinki"]["pbf"])])


def rgb(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return image.convert("RGB")


def near(image: Image.Image, colour: tuple[int, int, int], tolerance: int = 10) -> int:
    """How many pixels are within ``tolerance`` of ``colour`` in every channel."""
    colours = image.getcolors(256 * 256) or []
    return sum(n for n, c in colours
               if isinstance(c, tuple) and all(abs(a - b) <= tolerance
                                               for a, b in zip(c, colour, strict=True)))


def test_png_is_256_pixels_square(helsinki: TileSet) -> None:
    x, y = tile_of(*MANNERHEIMINTIE, 16)
    png = helsinki.render(16, x, y, "png")
    assert png is not None and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(png)).size == (256, 256)


def test_tile_over_mannerheimintie_shows_a_primary_road(helsinki: TileSet) -> None:
    x, y = tile_of(*MANNERHEIMINTIE, 16)
    png = helsinki.render(16, x, y, "png")
    assert png is not None
    image = rgb(png)
    assert near(image, style.ROAD_FILL["primary"]) > 500  # a road 9 px wide across it
    assert near(image, style.ROAD_CASING["primary"], 25) > 50
    assert near(image, style.BACKGROUND, 3) > 1000


def test_high_zoom_tile_draws_street_names(helsinki: TileSet) -> None:
    x, y = tile_of(*MANNERHEIMINTIE, 16)
    png = helsinki.render(16, x, y, "png")
    assert png is not None
    assert near(rgb(png), style.LABEL_FILL[:3], 40) > 20  # dark text pixels


def test_low_zoom_tile_has_no_labels_or_minor_roads(helsinki: TileSet) -> None:
    x, y = tile_of(*MANNERHEIMINTIE, 12)
    png = helsinki.render(12, x, y, "png")
    assert png is not None
    image = rgb(png)
    assert near(image, style.LABEL_FILL[:3], 40) == 0
    assert near(image, style.ROAD_FILL["primary"], 20) > 0


def test_tile_no_region_covers_is_none(helsinki: TileSet) -> None:
    x, y = tile_of(0.0, -30.0, 16)  # the Atlantic
    assert not helsinki.covers(16, x, y)
    assert helsinki.render(16, x, y, "png") is None
    assert helsinki.render(16, x, y, "mvt") is None
    inside = tile_of(*MANNERHEIMINTIE, 16)
    assert helsinki.covers(16, *inside)


@pytest.mark.parametrize(("z", "x", "y", "fmt", "field"), [
    (19, 0, 0, "png", "z"), (-1, 0, 0, "png", "z"), (3, 8, 0, "png", "x"),
    (3, 0, 8, "mvt", "y"), (3, -1, 0, "mvt", "x"), (3, 0, 0, "jpeg", "fmt"),
    (0, 1, 0, "png", "x"),
])
def test_bad_tile_or_format_names_the_field(helsinki: TileSet, z: int, x: int, y: int,
                                            fmt: str, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        helsinki.render(z, x, y, fmt)


def test_covers_checks_the_tile_too(helsinki: TileSet) -> None:
    with pytest.raises(ValueError, match=r"^y: "):
        helsinki.covers(2, 0, 4)


def test_regions_and_size(helsinki: TileSet) -> None:
    [(name, (south, west, north, east))] = helsinki.regions()
    assert name == "Helsinki"
    assert south < MANNERHEIMINTIE[0] < north and west < MANNERHEIMINTIE[1] < east
    assert 0 < helsinki.nbytes() < 5_000_000


def test_street_labels_draw_letters_beyond_ascii() -> None:
    # "ö" must be a glyph, not the empty box of a font without it
    from PIL import ImageFont
    from geoplex.servers.maps.tiles import raster
    font = raster._font()
    assert isinstance(font, ImageFont.FreeTypeFont)
    assert font.getmask("ö").getbbox() != font.getmask("\ue000").getbbox()
