"""The tile service's own logic: address checks, ETags, the bytes-bounded LRU, and a tile
rendered once however many ask for it at the same time."""

from __future__ import annotations

import asyncio
import threading

import pytest

from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers.maps.tile_service import EMPTY, BytesLru, TileService, check_tile


class CountingRenderer:
    """Draws a tile's address as its bytes and counts the draws; a gate holds renders
    until the test opens it."""

    def __init__(self, version: str = "v1") -> None:
        self.version = version
        self.renders = 0
        self.gate = threading.Event()
        self.gate.set()

    def covers(self, z: int, x: int, y: int) -> bool:
        return x < (1 << z) // 2  # the western half of the world

    def render(self, z: int, x: int, y: int, fmt: str) -> bytes | None:
        self.gate.wait(10)
        self.renders += 1
        return f"{fmt}:{z}/{x}/{y}".encode()


class DictStore:
    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.items.get(key)

    async def put(self, key: str, data: bytes) -> None:
        self.items[key] = data


@pytest.mark.parametrize(("z", "x", "y", "fmt", "field"), [
    (-1, 0, 0, "png", "z"), (19, 0, 0, "png", "z"), (3, 8, 0, "png", "x"),
    (3, 0, 8, "png", "y"), (3, -1, 0, "png", "x"), (3, 0, 0, "jpg", "format")])
def test_check_tile_names_the_field_and_the_allowed_values(z: int, x: int, y: int, fmt: str,
                                                           field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_tile(z, x, y, fmt)
    assert caught.value.metadata["field"] == field
    assert "allowed" in caught.value.message


def test_lru_stays_within_its_bytes_and_drops_the_coldest() -> None:
    lru = BytesLru(10)
    lru.put("a", b"1234")
    lru.put("b", b"1234")
    assert lru.get("a") == b"1234"          # a is now the most recent
    lru.put("c", b"1234")                   # 12 bytes: b goes
    assert lru.get("b") is None and lru.get("a") and lru.get("c")
    assert lru.bytes == 8
    lru.put("huge", b"x" * 11)               # larger than the bound: not kept
    assert lru.get("huge") is None and len(lru) == 2


async def test_a_tile_renders_once_then_comes_from_memory_and_the_shared_store() -> None:
    renderer, store = CountingRenderer(), DictStore()
    service = TileService(renderer, store)
    try:
        first = await service.get(3, 1, 2, "png")
        second = await service.get(3, 1, 2, "png")
        assert first.data == second.data == b"png:3/1/2" and renderer.renders == 1
        assert list(store.items.values()) == [b"png:3/1/2"]

        other = TileService(renderer, store)  # another process: the shared store serves it
        try:
            assert (await other.get(3, 1, 2, "png")).data == b"png:3/1/2"
            assert renderer.renders == 1
        finally:
            await other.stop()
    finally:
        await service.stop()


async def test_concurrent_requests_for_one_missing_tile_share_one_render() -> None:
    renderer = CountingRenderer()
    renderer.gate.clear()
    service = TileService(renderer, None)
    try:
        waiting = [asyncio.create_task(service.get(4, 2, 3, "mvt")) for _ in range(20)]
        renderer.gate.set()
        tiles = await asyncio.gather(*waiting)
        assert {t.data for t in tiles} == {b"mvt:4/2/3"} and renderer.renders == 1
    finally:
        await service.stop()


async def test_etag_revalidation_answers_without_rendering_and_changes_with_the_data() -> None:
    renderer = CountingRenderer("v1")
    service = TileService(renderer, None)
    try:
        etag = service.etag(5, 3, 4, "png")
        held = await service.get(5, 3, 4, "png", if_none_match=f'W/{etag}, "other"')
        assert held.not_modified and held.data == b"" and renderer.renders == 0
        assert service.etag(5, 3, 4, "mvt") != etag
        renderer.version = "v2"                # a new extract: every ETag and key changes
        assert service.etag(5, 3, 4, "png") != etag
        assert not (await service.get(5, 3, 4, "png", if_none_match=etag)).not_modified
    finally:
        await service.stop()


async def test_a_tile_outside_every_region_is_the_empty_tile_without_a_render() -> None:
    renderer = CountingRenderer()
    service = TileService(renderer, None)
    try:
        tile = await service.get(1, 1, 0, "png")
        assert tile.empty and tile.data == EMPTY["png"] and renderer.renders == 0
    finally:
        await service.stop()
