"""Navigation batches through a real broker into the trip history in real MongoDB."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pymongo import MongoClient

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    UnauthenticatedError,
    UnavailableError,
)
from geoplex.clients.maps import MapsClient, batch, fix
from geoplex.infra import data
from geoplex.infra.local import BackendUrls
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from polling import eventually

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

HELSINKI = (60.1699, 24.9384)


@pytest.fixture(scope="module")
def ingest_env(backends: BackendUrls, server_factory: Callable[..., ServerProcess],
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A broker of its own, and a maps server (Monaco only: it starts fast) that produces
    to it and keeps the trip history in the session's MongoDB."""
    broker = server_factory("broker", {
        **backends.env(), "GEOPLEX_BROKER_PORT": "0",
        "GEOPLEX_BROKER_DATA_DIR": str(tmp_path_factory.mktemp("ingest-broker")),
        "GEOPLEX_BROKER_ETCD_PREFIX": f"/geoplex-test/{uuid.uuid4().hex[:12]}",
        "GEOPLEX_LOG_LEVEL": "warning"}, "ingest-broker")
    monaco = data.fetch(["monaco"], progress=lambda _m: None)["monaco"]["pbf"]
    database = f"ingest_{uuid.uuid4().hex[:8]}"
    return {**backends.env(), "GEOPLEX_BROKER_TARGET": broker.address,
            "GEOPLEX_MAPS_EXTRACTS": f"Monaco={monaco}", "GEOPLEX_MAPS_PLACES": "none",
            "GEOPLEX_MAPS_DATABASE": database, "GEOPLEX_MAPS_LOCATIONS_PARTITIONS": "3",
            "GEOPLEX_LOG_LEVEL": "info"}


@pytest.fixture(scope="module")
def ingest_server(server_factory: Callable[..., ServerProcess],
                  ingest_env: dict[str, str]) -> ServerProcess:
    return server_factory("maps", ingest_env, "maps-ingest")


@pytest.fixture
async def maps(ingest_server: ServerProcess) -> AsyncIterator[MapsClient]:
    async with MapsClient(ingest_server.address, ChannelOptions(token=_token())) as client:
        yield client


def _token(user: str | None = None) -> str:
    return mint_token(DEV_SECRET, user or f"driver-{uuid.uuid4().hex[:8]}")


def _trip(n: int, start: float, dt: float = 5.0) -> list[Any]:
    """n fixes 5 s apart driving north at ~11 m/s."""
    return [fix((HELSINKI[0] + i * 0.0005, HELSINKI[1]), start + i * dt, accuracy_m=5,
                speed_mps=11.0, heading_deg=0.0) for i in range(n)]


def _history(env: dict[str, str], user: str) -> list[dict[str, Any]]:
    client: MongoClient[dict[str, Any]]
    with MongoClient(env["GEOPLEX_MONGO_URI"]) as client:
        return list(client[env["GEOPLEX_MAPS_DATABASE"]]["trip_history"].find({"user": user}))


async def _report_until_ready(maps: MapsClient, location_batch: Any) -> Any:
    """The first report waits while the server makes its topic on a fresh broker
    (UNAVAILABLE / INGEST_STARTING until then)."""
    return await eventually(lambda: maps.report_batch(location_batch), timeout=60,
                            ignore=(UnavailableError,), what="location ingest ready")


async def test_accepted_fixes_reach_the_history_once_even_when_a_batch_is_sent_twice(
        ingest_server: ServerProcess, ingest_env: dict[str, str]) -> None:
    user = f"driver-{uuid.uuid4().hex[:8]}"
    now = time.time()
    fixes = _trip(6, now - 60)
    bad = fix((91.0, 0.0), now - 30)                   # out of range
    future = fix(HELSINKI, now + 3600)                 # from the future
    async with MapsClient(ingest_server.address,
                          ChannelOptions(token=_token(user))) as maps:
        first = await _report_until_ready(maps, batch("b-1", [*fixes, bad, future]))
        assert first.accepted == 6
        assert [(r.index, r.reason) for r in first.rejected] == [(6, "OUT_OF_RANGE"),
                                                                  (7, "IN_THE_FUTURE")]
        again = await maps.report_batch(batch("b-1", fixes))   # a retry of the same batch
        assert again.accepted == 6
        # one user's batches keep their order on the topic: once this one is stored, the
        # retry before it has been consumed too
        sentinel = await maps.report_batch(batch("b-2", [fix(HELSINKI, now - 20)]))
        assert sentinel.accepted == 1

    def consumed() -> bool:
        return any("b-2" in doc["batches"] for doc in _history(ingest_env, user))

    await eventually(consumed, timeout=30, what="the batches in the history")
    buckets = _history(ingest_env, user)
    first_batch = [f for doc in buckets for f in doc["fixes"] if f["t"] < now - 25]
    assert len(first_batch) == 6   # once, not twice
    assert sorted(b for doc in buckets for b in doc["batches"]) == ["b-1", "b-2"]
    times = [f["t"] for doc in buckets for f in doc["fixes"]]
    assert times == sorted(times)


async def test_a_stream_of_batches_is_answered_with_the_totals(
        ingest_server: ServerProcess, ingest_env: dict[str, str]) -> None:
    user = f"driver-{uuid.uuid4().hex[:8]}"
    now = time.time()
    trip = _trip(9, now - 120)
    async with MapsClient(ingest_server.address,
                          ChannelOptions(token=_token(user))) as maps:
        await _report_until_ready(maps, batch("warm-up", trip[:1]))

        async def batches() -> AsyncIterator[Any]:
            yield batch("s-1", trip[1:4])
            # the second batch jumps 11 km in 5 s from the first's last fix
            yield batch("s-2", [fix((HELSINKI[0] + 0.1, HELSINKI[1]), now - 100)])
            yield batch("s-3", trip[4:9])
        answer = await maps.report_locations(batches())
    assert (answer.batches, answer.accepted) == (3, 8)
    assert [(r.batch, r.index, r.reason) for r in answer.rejected] == [
        (1, 0, "IMPOSSIBLE_JUMP")]
    await eventually(lambda: sum(d["count"] for d in _history(ingest_env, user)) >= 9,
                     timeout=30, what="the streamed batches in the history")


async def test_reporting_needs_a_token_and_a_well_formed_batch(
        ingest_server: ServerProcess) -> None:
    async with MapsClient(ingest_server.address, ChannelOptions(retry=False)) as anonymous:
        with pytest.raises(UnauthenticatedError):
            await anonymous.report_batch(batch("x", _trip(1, time.time())))
    async with MapsClient(ingest_server.address,
                          ChannelOptions(token=_token(), retry=False)) as maps:
        with pytest.raises(InvalidArgumentError) as caught:
            await maps.report_batch(batch("", _trip(1, time.time())))
        assert caught.value.field == "batch.batch_id"
        with pytest.raises(InvalidArgumentError) as caught:
            await maps.report_batch(batch("empty", []))
        assert caught.value.field == "batch.fixes"


async def test_a_malformed_batch_mid_stream_says_how_many_batches_were_stored(
        ingest_server: ServerProcess, ingest_env: dict[str, str]) -> None:
    user = f"driver-{uuid.uuid4().hex[:8]}"
    trip = _trip(4, time.time() - 60)
    async with MapsClient(ingest_server.address,
                          ChannelOptions(token=_token(user), retry=False)) as maps:
        await _report_until_ready(maps, batch("m-0", trip[:1]))

        async def batches() -> AsyncIterator[Any]:
            yield batch("m-1", trip[1:3])
            yield batch("", trip[3:])          # no batch_id
        with pytest.raises(InvalidArgumentError) as caught:
            await maps.report_locations(batches())
    assert caught.value.field == "batch[1].batch_id"
    assert caught.value.metadata["batches_stored"] == "1"
    assert caught.value.metadata["accepted"] == "2"
    assert "batches stored before it: 1 (2 fixes accepted)" in caught.value.message
    await eventually(lambda: any("m-1" in d["batches"] for d in _history(ingest_env, user)),
                     timeout=30, what="the batch before the bad one in the history")


def test_the_server_log_holds_no_coordinates(ingest_server: ServerProcess) -> None:
    text = Path(ingest_server.log_path).read_text()
    assert "60.16" not in text and "24.93" not in text


async def test_a_server_without_mongodb_says_ingest_is_off(
        server_factory: Callable[..., ServerProcess]) -> None:
    monaco = data.fetch(["monaco"], progress=lambda _m: None)["monaco"]["pbf"]
    server = server_factory("maps", {"GEOPLEX_MAPS_EXTRACTS": f"Monaco={monaco}",
                                     "GEOPLEX_MAPS_PLACES": "none"}, "maps-no-ingest")
    async with MapsClient(server.address, ChannelOptions(token=_token(), retry=False)) as maps:
        with pytest.raises(FailedPreconditionError) as caught:
            await maps.report_batch(batch("x", _trip(1, time.time())))
        assert caught.value.reason == "INGEST_OFF"
