"""Tiles of the real extracts: Helsinki and Monaco (PBF), Gothenburg (GeoJSON roads).

Every region's centre tile renders in both formats at zooms 12-16; the set's version
follows the data; the on-disk feature cache gives the same tiles and is keyed by the
file's content.
"""

from __future__ import annotations

import io
import shutil
from itertools import pairwise
from pathlib import Path

import pytest
from PIL import Image

from geoplex.infra import data
from geoplex.maps.v1.vector_tile_pb2 import VectorTile
from geoplex.servers.maps.tiles import MapSource, TileSet
from geoplex.servers.maps.tiles.tilemath import tile_of


@pytest.fixture(scope="module")
def sources() -> list[MapSource]:
    fetched = data.fetch(["helsinki", "monaco", "gothenburg"], progress=lambda _m: None)
    return [MapSource("Helsinki", fetched["helsinki"]["pbf"]),
            MapSource("Monaco", fetched["monaco"]["pbf"]),
            MapSource("Gothenburg", fetched["gothenburg"]["network"])]


@pytest.fixture(scope="module")
def tiles(sources: list[MapSource]) -> TileSet:
    return TileSet.load(sources)


def centre(bounds: tuple[float, float, float, float]) -> tuple[float, float]:
    south, west, north, east = bounds
    return (south + north) / 2, (west + east) / 2


@pytest.mark.parametrize("z", [12, 13, 14, 15, 16])
def test_every_region_centre_tile_renders_in_both_formats(tiles: TileSet, z: int) -> None:
    regions = tiles.regions()
    assert [name for name, _b in regions] == ["Helsinki", "Monaco", "Gothenburg"]
    for name, bounds in regions:
        x, y = tile_of(*centre(bounds), z)
        assert tiles.covers(z, x, y), name
        png = tiles.render(z, x, y, "png")
        assert png is not None, name
        image = Image.open(io.BytesIO(png))
        assert image.size == (256, 256)
        colours = image.convert("RGB").getcolors(256 * 256) or []
        assert len(colours) > 4, f"{name} z{z}: a blank PNG"
        mvt = tiles.render(z, x, y, "mvt")
        assert mvt is not None, name
        layers = {layer.name: len(layer.features) for layer in VectorTile.FromString(mvt).layers}
        assert layers.get("roads", 0) > 0, f"{name} z{z}: {layers}"


def test_buildings_show_where_the_data_has_them(tiles: TileSet) -> None:
    x, y = tile_of(43.7384, 7.4246, 16)  # Monte Carlo
    mvt = tiles.render(16, x, y, "mvt")
    assert mvt is not None
    layers = {layer.name: len(layer.features) for layer in VectorTile.FromString(mvt).layers}
    assert layers["buildings"] > 50 and layers["roads"] > 20


def test_version_follows_the_data(tmp_path: Path, sources: list[MapSource]) -> None:
    helsinki, monaco = sources[0].path, sources[1].path
    region = tmp_path / "region.osm.pbf"
    shutil.copyfile(helsinki, region)
    first = TileSet.load([MapSource("Region", region)])
    again = TileSet.load([MapSource("Region", region)])
    assert first.version == again.version and len(first.version) == 16
    shutil.copyfile(monaco, region)
    changed = TileSet.load([MapSource("Region", region)])
    assert changed.version != first.version


def test_feature_cache_gives_the_same_tiles_and_follows_the_file(
        tmp_path: Path, sources: list[MapSource]) -> None:
    region = tmp_path / "region.osm.pbf"
    shutil.copyfile(sources[0].path, region)
    cache = tmp_path / "cache"
    said: list[str] = []
    built = TileSet.load([MapSource("Region", region)], cache, said.append)
    loaded = TileSet.load([MapSource("Region", region)], cache, said.append)
    assert "read" in said[0] and "loaded" in said[1]
    assert len(list(cache.glob("*.npz"))) == 1 and not list(cache.glob("*.tmp"))
    assert loaded.version == built.version
    for z in (13, 16):
        x, y = tile_of(60.1699, 24.9384, z)
        for fmt in ("png", "mvt"):
            assert loaded.render(z, x, y, fmt) == built.render(z, x, y, fmt)
    shutil.copyfile(sources[1].path, region)
    said.clear()
    TileSet.load([MapSource("Region", region)], cache, said.append)
    assert "read" in said[0] and len(list(cache.glob("*.npz"))) == 2


def test_real_vector_tiles_are_well_formed(tiles: TileSet) -> None:
    """Inside the buffer, no repeated points, rings closed and wound as the spec says,
    every tag pair pointing at the layer's keys and values."""
    checked = 0
    for lat, lon in ((60.1699, 24.9384), (43.7384, 7.4246), (57.7065, 11.967)):
        for z in (11, 14, 16, 18):
            x, y = tile_of(lat, lon, z)
            mvt = tiles.render(z, x, y, "mvt")
            assert mvt is not None
            for layer in VectorTile.FromString(mvt).layers:
                for feature in layer.features:
                    assert len(feature.tags) % 2 == 0
                    assert all(k < len(layer.keys) for k in feature.tags[::2])
                    assert all(v < len(layer.values) for v in feature.tags[1::2])
                    for part, closed in _parts(list(feature.geometry)):
                        checked += 1
                        assert all(-64 <= c <= 4096 + 64 for p in part for c in p)
                        assert all(a != b for a, b in pairwise(part))
                        if feature.type == VectorTile.GEOM_TYPE_POLYGON:
                            assert closed and len(part) >= 3
                        elif feature.type == VectorTile.GEOM_TYPE_LINESTRING:
                            assert not closed and len(part) >= 2
                    if feature.type == VectorTile.GEOM_TYPE_POLYGON:
                        rings = [part for part, _c in _parts(list(feature.geometry))]
                        assert _area(rings[0]) > 0  # the first ring is an exterior
    assert checked > 1000


def _parts(stream: list[int]) -> list[tuple[list[tuple[int, int]], bool]]:
    parts: list[tuple[list[tuple[int, int]], bool]] = []
    x = y = i = 0
    while i < len(stream):
        command, count = stream[i] & 7, stream[i] >> 3
        i += 1
        if command == 7:
            parts[-1] = (parts[-1][0], True)
            continue
        for _ in range(count):
            x += (stream[i] >> 1) ^ -(stream[i] & 1)
            y += (stream[i + 1] >> 1) ^ -(stream[i + 1] & 1)
            i += 2
            if command == 1:
                parts.append(([], False))
            parts[-1][0].append((x, y))
    return parts


def _area(ring: list[tuple[int, int]]) -> int:
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1)
               in zip(ring, ring[1:] + ring[:1], strict=True))
