"""Presence's location history through the broker, on real processes: the presence
server produces each accepted update to the history topic, its consumer group stores it
in MongoDB once (by id); with the broker down, live friends go on and the history waits,
then arrives complete and without duplicates once the broker is back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pymongo import AsyncMongoClient

from geoplex.clients import ChannelOptions
from geoplex.clients.presence import LiveSession, PresenceClient
from geoplex.infra.local import BackendUrls
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.servers.presence.adapters.broker_history import decode_rows
from mesh_flows import read_topic, start_broker
from polling import eventually

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

pytestmark = pytest.mark.timeout(180)
HOME = (57.7089, 11.9746)
METRE = 1 / 111_194.93
TOPIC = "presence-locations"


def at(metres: float) -> tuple[float, float]:
    return HOME[0] + metres * METRE, HOME[1]


def presence_as(server: ServerProcess, user: str) -> PresenceClient:
    return PresenceClient(server.address, ChannelOptions(token=mint_token(DEV_SECRET, user),
                                                         retry=False))


async def history_of(backends: BackendUrls, database: str, user: str) -> list[dict[str, Any]]:
    assert backends.mongo_uri
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(backends.mongo_uri)
    try:
        cursor = client[database]["location_history"].find({"user": user}).sort("t", 1)
        return [doc async for doc in cursor]
    finally:
        await client.close()


async def topic_ids(broker: ServerProcess, user: str) -> list[str]:
    """The ids of ``user``'s rows in the topic."""
    return [r.id for value in await read_topic([broker.address], TOPIC)
            for r in decode_rows(value) if r.user == user]


def moved_to(live: LiveSession, user: str, metres: float) -> bool:
    friend = live.nearby.get(user)
    return friend is not None and round(friend.distance_meters) == round(metres)


async def test_history_goes_through_the_broker_once_each_and_waits_out_a_broker_outage(
        backends: BackendUrls, server_factory: Callable[..., ServerProcess],
        tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    broker = start_broker(server_factory, backends, tmp_path / "broker", "history-broker")
    database = f"presence_hist_{tag}"
    presence = server_factory("presence", {
        **backends.env(), "GEOPLEX_BROKER_TARGET": broker.address,
        "GEOPLEX_PRESENCE_DATABASE": database, "GEOPLEX_PRESENCE_NAMESPACE": f"ph{tag}:",
        "GEOPLEX_PRESENCE_HISTORY_FLUSH_SECONDS": "0.2",
        "GEOPLEX_PRESENCE_HISTORY_PARTITIONS": "2"}, "history-presence")
    alice, bob = f"alice-{tag}", f"bob-{tag}"
    async with presence_as(presence, alice) as pa, presence_as(presence, bob) as pb:
        for client in (pa, pb):
            await client.set_sharing(True)
        await pa.add_friend(bob)
        async with pa.live(*at(0)) as la, pb.live(*HOME) as lb:
            for n in range(1, 21):
                await la.update(*at(n))
                await eventually(lambda: moved_to(lb, alice, n), 10, every=0.005,
                                 what="bob seeing alice move")
            first = await eventually(
                lambda: _rows_when(history_of(backends, database, alice), 20), 30,
                what="alice's 20 updates in the history")

            broker.stop()
            for n in range(21, 31):             # live friends go on without the broker
                await la.update(*at(n))
                await eventually(lambda: moved_to(lb, alice, n), 10, every=0.005,
                                 what="bob seeing alice move while the broker is down")
            assert len(await history_of(backends, database, alice)) == 20
            broker.start()

            rows = await eventually(
                lambda: _rows_when(history_of(backends, database, alice), 30), 60,
                what="the rows sent while the broker was down")
    ids = [r["_id"] for r in rows]
    assert len(set(ids)) == 30                                       # each once
    assert [round((r["lat"] - HOME[0]) / METRE) for r in rows] == list(range(1, 31))
    assert [r["_id"] for r in first] == ids[:20]
    in_topic = await topic_ids(broker, alice)
    assert set(in_topic) == set(ids)          # every stored row came through the topic
    log = presence.log_path.read_text() + broker.log_path.read_text()
    assert f"{HOME[0] + 25 * METRE:.4f}" not in log                  # no location logged


async def _rows_when(rows: Any, count: int) -> list[dict[str, Any]] | None:
    found: list[dict[str, Any]] = await rows
    assert len(found) <= count, f"{len(found)} rows: more than the {count} accepted"
    return found if len(found) == count else None
