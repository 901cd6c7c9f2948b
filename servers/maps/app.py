"""The maps service's operations: load the gazetteer once, answer lookups off the loop.

A lookup is a few milliseconds of numpy and rapidfuzz; it runs on one worker thread so
a burst of them never stalls the event loop's other calls (the GIL lets one run at a
time anyway, so more threads would not add throughput).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from geoplex.servers._runtime.errors import NotFound

from .adapters.geonames import read_places
from .adapters.osm_gazetteer import read_gazetteer
from .config import MapsConfig
from .domain import Candidate, Feature, ReverseAnswer, StreetLine
from .geocoding import Geocoder

logger = logging.getLogger(__name__)
T = TypeVar("T")


class GazetteerLoadError(RuntimeError):
    """A data file is missing or unreadable: start-up stops with this one line."""


@dataclass(frozen=True, slots=True)
class Loaded:
    geocoder: Geocoder
    sources: tuple[str, ...]
    memory_bytes: int      # the geocoder's, measured once (it walks every object)


def load_gazetteer(config: MapsConfig,
                   progress: Callable[[str], None] = logger.info) -> Loaded:
    """Read every extract and the places file, then build the geocoder's indexes."""
    started = time.monotonic()
    features: list[Feature] = []
    streets: list[StreetLine] = []
    sources: list[str] = []
    for extract in config.extracts:
        if not extract.path.is_file():
            raise GazetteerLoadError(
                f"maps: {extract.path} is missing; run `geoplex data fetch` (or set "
                "GEOPLEX_MAPS_EXTRACTS)")
        try:
            found, lines = read_gazetteer(extract.path, extract.city)
        except Exception as exc:  # a broken file: one clear line, not a traceback
            raise GazetteerLoadError(f"maps: cannot read {extract.path}: "
                                     f"{type(exc).__name__}: {exc}") from exc
        progress(f"gazetteer {extract.city}: {len(found):,} features, "
                 f"{len(lines):,} street lines")
        features += found
        streets += lines
        sources.append(extract.path.name)
    if config.places is not None:
        if not config.places.is_file():
            raise GazetteerLoadError(
                f"maps: {config.places} is missing; run `geoplex data fetch geonames` (or set "
                "GEOPLEX_MAPS_PLACES=none)")
        try:
            places = read_places(config.places)
        except Exception as exc:
            raise GazetteerLoadError(f"maps: cannot read {config.places}: "
                                     f"{type(exc).__name__}: {exc}") from exc
        progress(f"gazetteer places: {len(places):,} from {config.places.name}")
        features += places
        sources.append(config.places.name)
    geocoder = Geocoder(features, streets)
    took = time.monotonic() - started
    progress(f"gazetteer built in {took:.1f} s")
    return Loaded(geocoder, tuple(sources), geocoder.nbytes())


class MapsApp:
    def __init__(self, loaded: Loaded, config: MapsConfig) -> None:
        self.loaded = loaded
        self.config = config
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maps")

    async def stop(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def geocode(self, text: str, bias: tuple[float, float] | None, limit: int,
                      offset: int) -> list[Candidate]:
        """One page of candidates and one more, so the caller knows whether more follow."""
        geocoder = self.loaded.geocoder
        return await self._run(lambda: geocoder.geocode(text, bias, limit + 1, offset))

    async def reverse(self, lat: float, lon: float, max_distance_m: float | None
                      ) -> ReverseAnswer:
        limit = max_distance_m or self.config.reverse_max_m
        geocoder = self.loaded.geocoder
        found = await self._run(lambda: geocoder.reverse(lat, lon, limit))
        if found is None:
            raise NotFound("nothing is near this point: no address, street or place",
                           reason="NOTHING_NEARBY")
        return found

    def info(self) -> tuple[dict[str, int], int, tuple[str, ...]]:
        loaded = self.loaded
        return loaded.geocoder.counts(), loaded.memory_bytes, loaded.sources

