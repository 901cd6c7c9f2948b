"""The trip history on the real MongoDB-compatible server: an append per batch and hour,
a replayed batch stored once, and batches racing to create one hour's bucket all kept."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from geoplex.infra.local import BackendUrls
from geoplex.servers.maps.adapters.mongo_trips import MongoTripHistory
from geoplex.servers.maps.locations import Fix

HOUR = 1_790_000_000 - 1_790_000_000 % 3600


@pytest.fixture
async def history(backends: BackendUrls) -> AsyncIterator[MongoTripHistory]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(backends.mongo_uri)
    database = f"trips_{uuid.uuid4().hex[:8]}"
    try:
        store = MongoTripHistory(client, database)
        await store.ensure_indexes()
        yield store
    finally:
        await client.drop_database(database)
        await client.close()


def _fixes(start: float, n: int) -> list[Fix]:
    return [Fix(60.17 + i * 1e-4, 24.94, start + i, accuracy_m=5.0) for i in range(n)]


async def test_a_replayed_batch_is_stored_once(history: MongoTripHistory) -> None:
    assert await history.append("u1", "b1", _fixes(HOUR + 10, 5)) == 5
    assert await history.append("u1", "b1", _fixes(HOUR + 10, 5)) == 0
    [bucket] = await history.hours("u1")
    assert bucket["count"] == 5 and bucket["batches"] == ["b1"]


async def test_a_batch_across_an_hour_lands_in_both_buckets(history: MongoTripHistory) -> None:
    assert await history.append("u2", "b1", _fixes(HOUR + 3597, 6)) == 6
    newest, oldest = await history.hours("u2")
    assert (newest["count"], oldest["count"]) == (3, 3)


async def test_batches_racing_to_create_one_bucket_are_all_kept(
        history: MongoTripHistory) -> None:
    added = await asyncio.gather(*(history.append("u3", f"b{i}", _fixes(HOUR + 100 * i, 4))
                                   for i in range(12)))
    [bucket] = await history.hours("u3")
    assert added == [4] * 12
    assert bucket["count"] == 48 and sorted(bucket["batches"]) == sorted(f"b{i}" for i in range(12))
