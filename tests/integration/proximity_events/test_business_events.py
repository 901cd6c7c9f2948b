"""Business edits as events through the broker, on real processes: every committed edit
(created, updated, deleted) is published once by id, in order per business, from the
transactional outbox; a refused edit publishes nothing; with the broker down edits still
commit and their events follow once it is back; `geoplex proximity events` shows them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pymongo import AsyncMongoClient

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import InvalidArgumentError
from geoplex.clients.proximity import ProximityClient
from geoplex.infra.local import BackendUrls
from geoplex.proximity.v1 import proximity_pb2 as pb
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.type.v1.geo_pb2 import LatLng
from mesh_flows import read_topic, start_broker
from polling import eventually

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

pytestmark = pytest.mark.timeout(180)
TOPIC = "business-events"


async def events_in(broker: ServerProcess) -> list[dict[str, Any]]:
    """Every event on the topic."""
    return [json.loads(value) for value in await read_topic([broker.address], TOPIC)]


async def pending(backends: BackendUrls, database: str) -> int:
    assert backends.mongo_uri
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(backends.mongo_uri)
    try:
        return await client[database]["outbox"].count_documents({"published": False})
    finally:
        await client.close()


def business(name: str, lat: float, lon: float) -> pb.Business:
    return pb.Business(name=name, category="cafe", location=LatLng(latitude=lat, longitude=lon))


async def test_every_committed_edit_is_published_once_in_order_and_survives_a_broker_outage(
        backends: BackendUrls, server_factory: Callable[..., ServerProcess],
        tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    broker = start_broker(server_factory, backends, tmp_path / "broker", "events-broker")
    database = f"px_events_{tag}"
    proximity = server_factory("proximity", {
        **backends.env(), "GEOPLEX_BROKER_TARGET": broker.address,
        "GEOPLEX_PROXIMITY_DATABASE": database}, "events-proximity")
    token = mint_token(DEV_SECRET, f"owner-{tag}")
    async with ProximityClient(proximity.address, ChannelOptions(token=token)) as px:
        a = await px.create(business("Kafé A", 60.17, 24.94))
        b = await px.create(business("Kafé B", 60.18, 24.95))
        a.name = "Kafé A2"
        await px.update(a, ["name"])
        await px.delete(b.id)
        with pytest.raises(InvalidArgumentError):      # refused: changes nothing
            await px.create(business("", 60.17, 24.94))
        await eventually(lambda: _none_pending(backends, database), 30,
                         what="the outbox published")
        first = await events_in(broker)
        # (partitions by business: an order across businesses is not promised)
        assert sorted((e["kind"], e["business_id"]) for e in first) == sorted([
            ("created", a.id), ("created", b.id), ("updated", a.id), ("deleted", b.id)])
        for business_id in (a.id, b.id):      # in commit order per business
            kinds = [e["kind"] for e in first if e["business_id"] == business_id]
            assert kinds == (["created", "updated"] if business_id == a.id
                             else ["created", "deleted"])
        assert len({e["id"] for e in first}) == 4
        assert [e["business"]["name"] for e in first if e["kind"] == "updated"] == ["Kafé A2"]

        broker.stop()
        c = await px.create(business("Kafé C", 60.19, 24.96))     # commits without it
        assert await pending(backends, database) == 1
        broker.start()
        await eventually(lambda: _none_pending(backends, database), 60,
                         what="the event of the edit made while the broker was down")
    events = await events_in(broker)
    assert ("created", c.id) in {(e["kind"], e["business_id"]) for e in events}
    assert len({e["id"] for e in events}) == 5

    done = subprocess.run([sys.executable, "-m", "geoplex.tools.cli", "proximity", "events",
                           "--broker", broker.address, "--group", f"cli-{tag}",
                           "--idle", "3"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["at", "event", "business", "name"]
    assert sum(c.id in line and "created" in line for line in lines) == 1
    assert "5 event(s)" in lines[-1]


async def _none_pending(backends: BackendUrls, database: str) -> bool:
    return await pending(backends, database) == 0
