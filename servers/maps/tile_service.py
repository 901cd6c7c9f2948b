"""Map tiles served: checked, cached, rendered at most once per data version.

A tile is looked up in three places, cheapest first:

1. the ETag the client holds: a tile's ETag is a function of the tile set's data
   version and the tile's address, so a client (or a CDN) revalidating a tile it has
   gets ``not_modified`` without a lookup or a render;
2. this process's bytes-bounded LRU (the hot tiles of the city centre);
3. Redis (``mt:{version}:{fmt}:{z}:{x}:{y}``, shared by every maps process, with a TTL;
   a new data version changes every key, so stale tiles are never read and expire).

A miss renders in a worker thread (rendering is CPU-bound), and concurrent requests for
the same missing tile wait for one render (single flight) instead of each drawing it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from geoplex.servers._runtime.errors import InvalidArgument

logger = logging.getLogger(__name__)

FORMATS = ("png", "mvt")
CONTENT_TYPES = {"png": "image/png", "mvt": "application/vnd.mapbox-vector-tile"}
MAX_ZOOM = 18


class Renderer(Protocol):
    """What :class:`geoplex.servers.maps.tiles.TileSet` offers the service."""

    @property
    def version(self) -> str: ...

    def covers(self, z: int, x: int, y: int) -> bool: ...

    def render(self, z: int, x: int, y: int, fmt: str) -> bytes | None: ...


class TileStore(Protocol):
    """The shared cache (Redis): bytes by key, with a time to live."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Tile:
    data: bytes            # empty when not_modified
    etag: str              # quoted, as HTTP sends it
    content_type: str
    not_modified: bool = False
    empty: bool = False    # no loaded region covers it


def _transparent_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (256, 256), (0, 0, 0, 0)).save(out, format="PNG", optimize=True)
    return out.getvalue()


EMPTY = {"png": _transparent_png(), "mvt": b""}


def check_tile(z: int, x: int, y: int, fmt: str) -> None:
    """InvalidArgument naming the field for an address outside XYZ or a format we lack."""
    if not 0 <= z <= MAX_ZOOM:
        raise InvalidArgument("z", f"zoom {z} is out of range", allowed=[f"0..{MAX_ZOOM}"])
    side = 1 << z
    for name, value in (("x", x), ("y", y)):
        if not 0 <= value < side:
            raise InvalidArgument(name, f"{value} is outside zoom {z}",
                                  allowed=[f"0..{side - 1}"])
    if fmt not in FORMATS:
        raise InvalidArgument("format", f"unknown tile format {fmt!r}", allowed=FORMATS)


class BytesLru:
    """An LRU of tiles bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
        return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= len(old)
        self._items[key] = data
        self.bytes += len(data)
        while self.bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._items)


class TileService:
    def __init__(self, renderer: Renderer, store: TileStore | None, *,
                 memory_bytes: int = 64 << 20, render_threads: int = 1) -> None:
        self.renderer = renderer
        self.store = store
        self.memory = BytesLru(memory_bytes)
        self.rendered = 0              # renders done (info, tests)
        self._pool = ThreadPoolExecutor(max_workers=render_threads,
                                        thread_name_prefix="tiles")
        self._flights: dict[str, asyncio.Future[bytes | None]] = {}

    async def stop(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    def key(self, z: int, x: int, y: int, fmt: str) -> str:
        return f"mt:{self.renderer.version}:{fmt}:{z}:{x}:{y}"

    def etag(self, z: int, x: int, y: int, fmt: str) -> str:
        digest = hashlib.blake2b(self.key(z, x, y, fmt).encode(), digest_size=10).hexdigest()
        return f'"{digest}"'

    async def get(self, z: int, x: int, y: int, fmt: str, if_none_match: str = "") -> Tile:
        check_tile(z, x, y, fmt)
        etag = self.etag(z, x, y, fmt)
        kind = CONTENT_TYPES[fmt]
        if if_none_match and etag in _etags(if_none_match):
            return Tile(b"", etag, kind, not_modified=True)
        if not self.renderer.covers(z, x, y):
            return Tile(EMPTY[fmt], etag, kind, empty=True)
        key = self.key(z, x, y, fmt)
        data = self.memory.get(key)
        if data is None:
            data = await self._shared(key, z, x, y, fmt)
        if data is None:
            return Tile(EMPTY[fmt], etag, kind, empty=True)
        return Tile(data, etag, kind)

    async def _shared(self, key: str, z: int, x: int, y: int, fmt: str) -> bytes | None:
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            data = await self._fetch(key, z, x, y, fmt)
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        else:
            flight.set_result(data)
            return data
        finally:
            del self._flights[key]

    async def _fetch(self, key: str, z: int, x: int, y: int, fmt: str) -> bytes | None:
        if self.store is not None:
            try:
                data = await self.store.get(key)
            except Exception as exc:  # noqa: BLE001 - a cache outage must not fail tiles
                logger.warning("tile cache read failed (%s); rendering", type(exc).__name__)
                data = None
            if data is not None:
                self.memory.put(key, data)
                return data
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(self._pool, self.renderer.render, z, x, y, fmt)
        self.rendered += 1
        if data is None:
            return None
        self.memory.put(key, data)
        if self.store is not None:
            try:
                await self.store.put(key, data)
            except Exception as exc:  # noqa: BLE001 - served anyway; next miss renders again
                logger.warning("tile cache write failed (%s)", type(exc).__name__)
        return data


def _etags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header (weak ones compare equal, RFC 9110)."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
