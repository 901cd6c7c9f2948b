"""The local backends, for real: Redis, etcd and SecantusDB (MongoDB wire protocol).

These pin down the backend behaviour later services build on (TTL expiry,
leases kept alive past their TTL, watches, transactions, 2dsphere ``$geoNear``,
unique indexes, change streams), and how ``LocalInfra`` fails when it cannot
start or reach a backend. Each test uses its own keys, prefix or database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path

import pymongo
import pytest
import redis.asyncio as aioredis
from etcd3aio import Etcd3Client, prefix_range_end
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from geoplex.infra.local import LOCK_FILE, BackendUrls, InfraError, LocalInfra, find_binary
from geoplex.tools.backends import configured_backends

# mvccpb.Event.EventType
ETCD_PUT, ETCD_DELETE = 0, 1


def _unique(label: str) -> str:
    return f"test-{label}-{uuid.uuid4().hex[:12]}"


# -- Redis ---------------------------------------------------------------------

@pytest.fixture
async def redis_client(backends: BackendUrls) -> AsyncIterator[aioredis.Redis]:
    assert backends.redis_url is not None
    client = aioredis.from_url(backends.redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_redis_returns_what_was_set(redis_client: aioredis.Redis) -> None:
    key = _unique("redis")

    await redis_client.set(key, "hello")

    assert await redis_client.get(key) == "hello"
    await redis_client.delete(key)


async def test_redis_key_with_ttl_expires(redis_client: aioredis.Redis) -> None:
    key = _unique("ttl")

    await redis_client.set(key, "v", px=200)
    assert await redis_client.get(key) == "v"
    await asyncio.sleep(0.5)

    assert await redis_client.get(key) is None


async def test_redis_geosearch_finds_members_within_a_radius_nearest_first(
        redis_client: aioredis.Redis) -> None:
    key = _unique("geo")
    await redis_client.geoadd(key, [24.9522, 60.1704, "station", 24.9600, 60.1800, "far",
                                    24.9530, 60.1710, "near"])

    found = await redis_client.geosearch(key, longitude=24.9522, latitude=60.1704,
                                         radius=200, unit="m", sort="ASC")

    assert found == ["station", "near"]
    await redis_client.delete(key)


async def test_redis_keeps_an_appendonly_key_across_a_restart(
        infra: LocalInfra, backends: BackendUrls) -> None:
    if "redis" not in infra.procs:
        pytest.skip("GEOPLEX_REDIS_URL points at an external Redis; nothing to restart")
    assert backends.redis_url is not None
    key = _unique("aof")
    client = aioredis.from_url(backends.redis_url, decode_responses=True)
    try:
        await client.set(key, "kept")
    finally:
        await client.aclose()

    await asyncio.to_thread(infra.restart, "redis")

    client = aioredis.from_url(backends.redis_url, decode_responses=True)
    try:
        assert await client.get(key) == "kept"
        await client.delete(key)
    finally:
        await client.aclose()


# -- etcd ----------------------------------------------------------------------

@pytest.fixture
async def etcd(backends: BackendUrls) -> AsyncIterator[Etcd3Client]:
    assert backends.etcd_endpoints
    client = Etcd3Client(list(backends.etcd_endpoints))
    await client.connect()
    yield client
    await client.close()


@pytest.fixture
def etcd_prefix() -> str:
    return f"/{_unique('etcd')}/"


async def _put_on_a_lease(etcd: Etcd3Client, key: str, value: str, ttl: int) -> int:
    """Put ``key`` on a new lease of ``ttl`` seconds; the lease id."""
    assert etcd.kv is not None and etcd.lease is not None
    lease = await etcd.lease.grant(ttl=ttl)
    await etcd.kv.put(key, value, lease=lease.ID)
    return int(lease.ID)


async def _wait_until_gone(etcd: Etcd3Client, key: str, within: float) -> None:
    """Poll (every 0.25 s) until ``key`` is deleted or ``within`` seconds have passed."""
    assert etcd.kv is not None
    deadline = time.monotonic() + within
    while (await etcd.kv.get(key)).kvs and time.monotonic() < deadline:
        await asyncio.sleep(0.25)


async def test_etcd_put_then_get_returns_the_value(etcd: Etcd3Client, etcd_prefix: str) -> None:
    assert etcd.kv is not None
    await etcd.kv.put(etcd_prefix + "k", "v1")

    response = await etcd.kv.get(etcd_prefix + "k")

    assert [(kv.key, kv.value) for kv in response.kvs] == [((etcd_prefix + "k").encode(), b"v1")]


async def test_etcd_prefix_get_returns_only_keys_under_the_prefix_in_order(
        etcd: Etcd3Client, etcd_prefix: str) -> None:
    assert etcd.kv is not None
    for name in ("b", "a", "c"):
        await etcd.kv.put(etcd_prefix + name, name.upper())
    await etcd.kv.put(etcd_prefix.rstrip("/") + "-sibling", "not under the prefix")

    response = await etcd.kv.get(etcd_prefix, range_end=prefix_range_end(etcd_prefix))

    assert [kv.key.decode().removeprefix(etcd_prefix) for kv in response.kvs] == ["a", "b", "c"]
    deleted = await etcd.kv.delete(etcd_prefix, range_end=prefix_range_end(etcd_prefix))
    assert deleted.deleted == 3
    await etcd.kv.delete(etcd_prefix.rstrip("/") + "-sibling")


async def test_etcd_key_on_a_lease_kept_alive_outlives_the_lease_ttl(
        etcd: Etcd3Client, etcd_prefix: str) -> None:
    """What leadership will stand on: the key lives while keepalive runs, then expires."""
    assert etcd.kv is not None and etcd.lease is not None
    key = etcd_prefix + "leader"
    lease_id = await _put_on_a_lease(etcd, key, "me", ttl=2)

    async with etcd.lease.keep_alive_context(lease_id, ttl=2) as keepalive:
        await asyncio.sleep(5)
        held = await etcd.kv.get(key)
        assert keepalive.alive
    assert [kv.value for kv in held.kvs] == [b"me"]

    await _wait_until_gone(etcd, key, within=8)
    assert (await etcd.kv.get(key)).kvs == [], "without keepalive the lease must expire"


async def test_etcd_key_on_a_lease_without_keepalive_expires(
        etcd: Etcd3Client, etcd_prefix: str) -> None:
    assert etcd.kv is not None and etcd.lease is not None
    key = etcd_prefix + "ephemeral"
    await _put_on_a_lease(etcd, key, "x", ttl=1)

    await _wait_until_gone(etcd, key, within=6)

    assert (await etcd.kv.get(key)).kvs == []


async def test_etcd_revoking_a_lease_deletes_its_keys_at_once(
        etcd: Etcd3Client, etcd_prefix: str) -> None:
    assert etcd.kv is not None and etcd.lease is not None
    lease = await etcd.lease.grant(ttl=60)
    await etcd.kv.put(etcd_prefix + "a", "1", lease=lease.ID)
    await etcd.kv.put(etcd_prefix + "b", "2", lease=lease.ID)

    await etcd.lease.revoke(lease.ID)

    response = await etcd.kv.get(etcd_prefix, range_end=prefix_range_end(etcd_prefix))
    assert response.kvs == []


async def test_etcd_watch_receives_put_and_delete_events(
        etcd: Etcd3Client, etcd_prefix: str) -> None:
    assert etcd.kv is not None and etcd.watch is not None
    kv, watch_service = etcd.kv, etcd.watch
    key = etcd_prefix + "watched"
    start = (await kv.get(key)).header.revision + 1
    events: list[tuple[int, bytes, bytes]] = []

    async def collect() -> None:
        watch = watch_service.watch(key, start_revision=start)
        assert isinstance(watch, AsyncGenerator)  # typed an AsyncIterator; it has aclose()
        try:
            async for response in watch:
                events.extend((e.type, e.kv.key, e.kv.value) for e in response.events)
                if len(events) >= 2:
                    return
        finally:
            await watch.aclose()

    watcher = asyncio.create_task(collect())
    await kv.put(key, "v1")
    await kv.delete(key)
    await asyncio.wait_for(watcher, 10)

    assert events == [(ETCD_PUT, key.encode(), b"v1"), (ETCD_DELETE, key.encode(), b"")]


async def test_etcd_transaction_creates_a_key_only_if_absent(
        etcd: Etcd3Client, etcd_prefix: str) -> None:
    assert etcd.kv is not None
    kv = etcd.kv
    key = etcd_prefix + "owner"

    async def claim(owner: str) -> bool:
        response = await kv.txn(compare=[kv.txn_compare_create_revision(key, 0)],
                                success=[kv.txn_op_put(key, owner)],
                                failure=[kv.txn_op_get(key)])
        return bool(response.succeeded)

    assert await claim("node-a") is True
    assert await claim("node-b") is False
    assert [kv.value for kv in (await etcd.kv.get(key)).kvs] == [b"node-a"]


async def test_etcd_transaction_compare_and_swap_on_value(
        etcd: Etcd3Client, etcd_prefix: str) -> None:
    assert etcd.kv is not None
    kv = etcd.kv
    key = etcd_prefix + "counter"
    await kv.put(key, "1")

    swapped = await kv.txn([kv.txn_compare_value(key, "1")], [kv.txn_op_put(key, "2")])
    stale = await kv.txn([kv.txn_compare_value(key, "1")], [kv.txn_op_put(key, "99")])

    assert swapped.succeeded and not stale.succeeded
    assert [kv.value for kv in (await etcd.kv.get(key)).kvs] == [b"2"]


# -- SecantusDB (MongoDB wire protocol) ------------------------------------------

@pytest.fixture
async def mongo_db(backends: BackendUrls) -> AsyncIterator[AsyncDatabase]:
    assert backends.mongo_uri is not None
    client: AsyncMongoClient = AsyncMongoClient(backends.mongo_uri,
                                                serverSelectionTimeoutMS=5000)
    name = _unique("db").replace("-", "_")
    yield client[name]
    await client.drop_database(name)
    await client.close()


def _point(longitude: float, latitude: float) -> dict[str, object]:
    return {"type": "Point", "coordinates": [longitude, latitude]}


async def test_mongo_insert_then_find_returns_the_document(mongo_db: AsyncDatabase) -> None:
    result = await mongo_db.places.insert_one({"name": "Kiasma", "category": "museum"})

    found = await mongo_db.places.find_one({"_id": result.inserted_id})

    assert found is not None and found["name"] == "Kiasma"


async def test_mongo_geonear_on_a_2dsphere_index_returns_the_nearest_first(
        mongo_db: AsyncDatabase) -> None:
    places = mongo_db.places
    await places.create_index([("location", "2dsphere")])
    await places.insert_many([
        {"name": "far", "location": _point(24.9600, 60.1800)},
        {"name": "near", "location": _point(24.9530, 60.1710)},
        {"name": "middle", "location": _point(24.9560, 60.1740)},
        {"name": "other-city", "location": _point(22.2666, 60.4518)},
    ])

    cursor = await places.aggregate([
        {"$geoNear": {"near": _point(24.9522, 60.1704), "distanceField": "distance",
                      "maxDistance": 2000, "spherical": True}},
    ])
    results = await cursor.to_list()

    assert [r["name"] for r in results] == ["near", "middle", "far"]
    distances = [r["distance"] for r in results]
    assert distances == sorted(distances) and 50 < distances[0] < 150


async def test_mongo_unique_compound_index_rejects_a_duplicate(mongo_db: AsyncDatabase) -> None:
    owners = mongo_db.owners
    await owners.create_index([("owner", 1), ("business_id", 1)], unique=True)
    await owners.insert_one({"owner": "u1", "business_id": "b1"})
    await owners.insert_one({"owner": "u1", "business_id": "b2"})
    await owners.insert_one({"owner": "u2", "business_id": "b1"})

    with pytest.raises(pymongo.errors.DuplicateKeyError):
        await owners.insert_one({"owner": "u1", "business_id": "b1"})

    assert await owners.count_documents({}) == 3


async def test_mongo_change_stream_sees_an_insert(mongo_db: AsyncDatabase) -> None:
    events = mongo_db.events
    async with await events.watch() as stream:
        await events.insert_one({"kind": "opened", "n": 1})
        change = await asyncio.wait_for(stream.next(), 10)

    assert change["operationType"] == "insert"
    assert change["fullDocument"]["kind"] == "opened"
    assert change["ns"] == {"db": mongo_db.name, "coll": "events"}


# -- LocalInfra failures ---------------------------------------------------------

def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_configured_redis_that_cannot_be_reached_names_its_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOPLEX_REDIS_URL", f"redis://127.0.0.1:{_closed_port()}/0")
    infra = LocalInfra(tmp_path, backends=("redis",), configured=configured_backends())

    with pytest.raises(InfraError, match="GEOPLEX_REDIS_URL") as info:
        infra.start()

    assert "unset GEOPLEX_REDIS_URL" in str(info.value)
    assert infra.procs == {}


def test_malformed_backend_url_is_an_infra_error_without_the_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOPLEX_MONGO_URI", "http://app:pa55word@db:27017")

    with pytest.raises(InfraError, match="GEOPLEX_MONGO_URI") as info:
        LocalInfra(tmp_path, configured=configured_backends())

    assert "pa55word" not in str(info.value)


def test_find_binary_that_does_not_exist_raises_with_the_hint() -> None:
    with pytest.raises(InfraError) as info:
        find_binary("no-such-binary-xyz", "install it with `apt-get install xyz`")

    message = str(info.value)
    assert "no-such-binary-xyz" in message
    assert "install it with `apt-get install xyz`" in message


def test_missing_redis_server_binary_stops_start_with_install_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEOPLEX_REDIS_URL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    infra = LocalInfra(tmp_path, backends=("redis",), configured=configured_backends())

    with pytest.raises(InfraError) as info:
        infra.start()

    assert "redis-server" in str(info.value) and "GEOPLEX_REDIS_URL" in str(info.value)
    assert infra.procs == {}


def test_unknown_backend_lists_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="allowed: redis, mongo, etcd"):
        LocalInfra(tmp_path, backends=("redis", "cassandra")).start()


# -- the state directory lock -----------------------------------------------------

OWNER = """\
import sys
from pathlib import Path
from geoplex.infra.local import LocalInfra
infra = LocalInfra(Path(sys.argv[1]), backends=())
infra.start()
print("started", flush=True)
sys.stdin.read()
infra.stop()
"""


@contextlib.contextmanager
def _started(infra: LocalInfra) -> Iterator[LocalInfra]:
    try:
        infra.start()
        yield infra
    finally:
        infra.stop()


def test_second_infra_on_a_state_dir_in_use_refuses_before_starting_a_backend(
        tmp_path: Path) -> None:
    with _started(LocalInfra(tmp_path, backends=("redis",))):
        second = LocalInfra(tmp_path, backends=("redis",))
        with pytest.raises(InfraError) as info, _started(second):
            pass

        assert second.procs == {}
        message = str(info.value)
        assert f"pid {os.getpid()}" in message and str(tmp_path) in message
        assert "GEOPLEX_STATE_DIR" in message and "--state-dir" in message
        assert "\n" not in message
    with _started(LocalInfra(tmp_path, backends=())):  # released at stop
        pass


def test_state_dir_held_by_another_process_refuses_until_that_process_dies(
        tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline() == "started\n"
        refused = LocalInfra(tmp_path, backends=("redis",))
        with pytest.raises(InfraError, match=f"in use by pid {owner.pid} "), _started(refused):
            pass
        assert refused.procs == {}
    finally:
        owner.kill()  # a crash: the lock goes with the process that held it
        owner.wait()

    with _started(LocalInfra(tmp_path, backends=())):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_lock_file_left_by_a_dead_process_does_not_block(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "command": "geoplex up"}))

    with _started(LocalInfra(tmp_path, backends=())):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
