"""The maps service's tile renderer: Web Mercator XYZ tiles, as PNG or Mapbox Vector Tiles,
of the regions' OSM data (roads, water, landuse, buildings, POIs).

:meth:`TileSet.load` reads each :class:`MapSource` once (an ``.osm.pbf`` with pyosmium,
or a GeoJSON road network) into a compact per-region feature store (see
:mod:`.features`), through an on-disk cache when given a directory; :meth:`TileSet.render`
cuts a tile out of the stores covering it and draws (:mod:`.raster`) or encodes
(:mod:`.vector`, which documents the MVT layers) it. Rendering only reads the stores:
it is safe from a worker thread while nothing replaces them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from geoplex.servers._runtime.files import file_checksum

from ..adapters import osm_map
from . import raster, style, vector
from .features import FeatureStore
from .style import STYLE_VERSION
from .tilemath import tile_bounds_m

logger = logging.getLogger(__name__)

# raise when what the readers or the feature store produce changes (the cache's names)
FEATURES_VERSION = 1
FORMATS = ("png", "mvt")
MAX_ZOOM = style.MAX_ZOOM

__all__ = ["FORMATS", "MAX_ZOOM", "STYLE_VERSION", "MapSource", "TileSet", "TileSetError"]


class TileSetError(Exception):
    """A region's map data cannot be read; the message says which and why."""


@dataclass(frozen=True, slots=True)
class MapSource:
    name: str
    path: Path             # .osm.pbf or GeoJSON (by suffix, else by content)


class TileSet:
    """The regions' feature stores and the tiles made from them."""

    def __init__(self, stores: Sequence[FeatureStore], checksums: Sequence[str]) -> None:
        self._stores = tuple(stores)
        self._extents = [s.extent_m() for s in self._stores]
        digest = hashlib.sha256()
        for store, checksum in zip(self._stores, checksums, strict=True):
            digest.update(f"{store.name}\0{checksum}\n".encode())
        digest.update(f"style {STYLE_VERSION} features {FEATURES_VERSION}".encode())
        # changes with any region's data, the style or the renderer: ETags, cache keys
        self.version: str = digest.hexdigest()[:16]

    @classmethod
    def load(cls, sources: Sequence[MapSource], cache_dir: Path | None = None,
             progress: Callable[[str], None] = lambda _m: None) -> TileSet:
        """Every source read (or taken from ``cache_dir``, keyed by the file's sha256 and
        :data:`FEATURES_VERSION`). Raises :class:`TileSetError` naming the region."""
        stores: list[FeatureStore] = []
        checksums: list[str] = []
        for source in sources:
            started = time.perf_counter()
            if not source.path.is_file():
                raise TileSetError(f"map region {source.name}: {source.path} is missing; "
                                   f"run `geoplex data fetch`")
            try:
                checksum = file_checksum(source.path)
                store, how = _load_store(source, checksum, cache_dir)
            except Exception as exc:  # a broken file: one clear line, not a traceback
                raise TileSetError(f"map region {source.name}: cannot read {source.path}: "
                                   f"{type(exc).__name__}: {exc}") from exc
            stores.append(store)
            checksums.append(checksum)
            progress(f"map region {source.name}: {how} {store.feature_count:,} features, "
                     f"{store.xy.shape[0]:,} points in "
                     f"{time.perf_counter() - started:.2f} s")
        return cls(stores, checksums)

    def regions(self) -> list[tuple[str, tuple[float, float, float, float]]]:
        """Each region's name and (south, west, north, east) in degrees."""
        return [(s.name, s.bounds()) for s in self._stores]

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self._stores)

    def covers(self, z: int, x: int, y: int) -> bool:
        _check_tile(z, x, y)
        return bool(self._covering(tile_bounds_m(z, x, y)))

    def render(self, z: int, x: int, y: int, fmt: str) -> bytes | None:
        """The tile as ``fmt`` ("png" or "mvt"), None when no region covers it. Raises
        ValueError naming the field for a tile outside the pyramid or another format."""
        _check_tile(z, x, y)
        if fmt not in FORMATS:
            raise ValueError(f"fmt: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        bounds = tile_bounds_m(z, x, y)
        stores = self._covering(bounds)
        if not stores:
            return None
        if fmt == "png":
            geometries = [s.query(bounds, z, raster.EXTENT, raster.BUFFER) for s in stores]
            return raster.render_png(geometries, z)
        geometries = [s.query(bounds, z, vector.EXTENT, vector.BUFFER) for s in stores]
        return vector.encode_tile(geometries, z)

    def _covering(self, bounds: tuple[float, float, float, float]) -> list[FeatureStore]:
        west, south, east, north = bounds
        return [store for store, ext in zip(self._stores, self._extents, strict=True)
                if ext is not None and west <= ext[2] and ext[0] <= east
                and south <= ext[3] and ext[1] <= north]


def _check_tile(z: int, x: int, y: int) -> None:
    """ValueError naming the first of z, x, y outside the tile pyramid."""
    for field, value in (("z", z), ("x", x), ("y", y)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{field}: expected an integer, got {value!r}")
        high = MAX_ZOOM if field == "z" else (1 << z) - 1  # z is checked first
        if not 0 <= value <= high:
            raise ValueError(f"{field}: expected 0..{high}, got {value}")


def _load_store(source: MapSource, checksum: str,
                cache_dir: Path | None) -> tuple[FeatureStore, str]:
    if cache_dir is None:
        return osm_map.read_map(source.path, source.name), "read"
    cached = cache_dir / (f"tiles-{source.name}-{checksum[:16]}-"
                          f"v{FEATURES_VERSION}s{STYLE_VERSION}.npz")
    if cached.is_file():
        try:
            return FeatureStore.load(cached, source.name), "loaded"
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("map region %s: cache %s unreadable (%s); reading the source",
                           source.name, cached.name, exc)
    store = osm_map.read_map(source.path, source.name)
    store.save(cached)
    return store, "read"
