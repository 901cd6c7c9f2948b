"""The broker under faults: ``kill -9`` mid-write, a torn tail on disk, etcd restarted.

The broker gets its own etcd (``OWN_BACKENDS``), data directory and fixed port (so a
restarted broker is found where it was); raw gRPC stubs call it.
"""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, TypeVar

import grpc
import grpc.aio
import pytest
from google.protobuf.duration_pb2 import Duration

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.broker.v1 import broker_pb2_grpc
from geoplex.infra.local import LocalInfra, free_port
from geoplex.infra.process import ProcessError

import polling  # tests/polling.py

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

pytestmark = pytest.mark.timeout(180)
OWN_BACKENDS = ("etcd",)
T = TypeVar("T")
# the generated .pyi types the aio stub as BrokerServiceAsyncStub (a name only it has)
Stub: TypeAlias = "broker_pb2_grpc.BrokerServiceAsyncStub"


def start_broker(own_infra: LocalInfra, server_factory: Callable[..., ServerProcess],
                 data_dir: Path, name: str) -> ServerProcess:
    env = {**own_infra.urls.env(), "GEOPLEX_BROKER_PORT": str(free_port()),
           "GEOPLEX_BROKER_DATA_DIR": str(data_dir), "GEOPLEX_BROKER_FSYNC": "batch",
           "GEOPLEX_BROKER_ETCD_PREFIX": f"/broker-fault/{uuid.uuid4().hex[:8]}",
           "GEOPLEX_LOG_LEVEL": "warning"}
    return server_factory("broker", env, name)


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """``check()``'s first truthy answer; an RPC error counts as not yet."""
    return await polling.eventually(check, timeout, ignore=(grpc.aio.AioRpcError,), what="the broker's answer")


@pytest.fixture
async def channel_to() -> AsyncIterator[Callable[[ServerProcess], Stub]]:
    """Stubs on channels closed at the end of the test. Each channel has its own
    connections: gRPC otherwise shares them between channels to one address, and a new
    channel to a restarted broker would inherit the old one's reconnect backoff."""
    channels: list[grpc.aio.Channel] = []

    def make(server: ServerProcess) -> Stub:
        channel = grpc.aio.insecure_channel(server.address,
                                            options=[("grpc.use_local_subchannel_pool", 1)])
        channels.append(channel)
        return broker_pb2_grpc.BrokerServiceStub(channel)

    yield make
    for channel in channels:
        await channel.close()


async def make_topic(stub: Stub, partitions: int = 1) -> str:
    name = f"fault-{uuid.uuid4().hex[:8]}"
    await stub.CreateTopic(pb.CreateTopicRequest(topic=pb.Topic(name=name,
                                                                partitions=partitions)))
    return name


async def read_all(stub: Stub, topic: str, partition: int = 0) -> list[bytes]:
    values: list[bytes] = []
    offset = 0
    while True:
        got = await stub.Fetch(pb.FetchRequest(topic=topic, partition=partition, offset=offset))
        fresh = [b for b in got.batches if b.base_offset + len(b.records) > offset]
        if not fresh:
            assert offset == got.log_end_offset
            return values
        for batch in fresh:
            skip = max(0, offset - batch.base_offset)
            values.extend(r.value for r in batch.records[skip:])
            offset = batch.base_offset + len(batch.records)


def wait(seconds: float) -> Duration:
    out = Duration()
    out.FromMilliseconds(round(seconds * 1000))
    return out


async def test_every_acknowledged_record_survives_kill_9_mid_write(
        own_infra: LocalInfra, server_factory: Callable[..., ServerProcess],
        channel_to: Callable[[ServerProcess], Stub], tmp_path: Path) -> None:
    broker = start_broker(own_infra, server_factory, tmp_path / "data", "broker-kill")
    stub = channel_to(broker)
    topic = await make_topic(stub, partitions=2)
    acked: dict[int, list[bytes]] = {w: [] for w in range(6)}  # per writer, in its order
    enough = asyncio.Event()

    async def produce(writer: int) -> None:
        partition = writer % 2
        for n in range(100_000):
            values = [f"w{writer}-{n}-{i}".encode() for i in range(20)]
            try:
                await stub.Produce(pb.ProduceRequest(
                    topic=topic, partition=partition, acks=pb.ACKS_LEADER,
                    records=[pb.Record(value=v, key=b"k") for v in values]))
            except grpc.aio.AioRpcError:
                return  # the broker died under this one: not acknowledged
            acked[writer].extend(values)
            if sum(len(v) for v in acked.values()) >= 4000:
                enough.set()

    writers = [asyncio.create_task(produce(w)) for w in range(6)]
    await asyncio.wait_for(enough.wait(), 60)
    broker.stop(signal.SIGKILL)  # while the writers are still writing
    await asyncio.wait_for(asyncio.gather(*writers), 30)
    broker.start()

    stub = channel_to(broker)
    stored = {p: await read_all(stub, topic, p) for p in (0, 1)}
    for writer, values in acked.items():
        mine = [v for v in stored[writer % 2] if v.startswith(f"w{writer}-".encode())]
        assert mine[:len(values)] == values  # every acknowledged one, in the writer's order
        assert len(mine) <= len(values) + 20  # and at most its last, unanswered batch
    for values in stored.values():
        assert len(values) == len(set(values))  # nothing twice
    # the log goes on where it ended
    done = await stub.Produce(pb.ProduceRequest(topic=topic, partition=0,
                                                records=[pb.Record(value=b"after")]))
    assert done.results[0].base_offset == len(await read_all(stub, topic, 0)) - 1


async def test_a_torn_tail_is_truncated_and_everything_before_is_served(
        own_infra: LocalInfra, server_factory: Callable[..., ServerProcess],
        channel_to: Callable[[ServerProcess], Stub], tmp_path: Path) -> None:
    data = tmp_path / "data"
    broker = start_broker(own_infra, server_factory, data, "broker-torn")
    stub = channel_to(broker)
    topic = await make_topic(stub)
    written = []
    for n in range(30):
        values = [f"{n}-{i}".encode() for i in range(10)]
        await stub.Produce(pb.ProduceRequest(topic=topic, partition=0,
                                             records=[pb.Record(value=v) for v in values]))
        written.extend(values)
    broker.stop(signal.SIGKILL)

    active = max((data / f"{topic}-0").glob("*.log"))
    with open(active, "ab") as segment:  # a torn write: a frame's start, then garbage
        segment.write(b"GPB1" + random.randbytes(300))
    broker.start()

    stub = channel_to(broker)
    assert await read_all(stub, topic) == written
    done = await stub.Produce(pb.ProduceRequest(topic=topic, partition=0,
                                                records=[pb.Record(value=b"next")]))
    assert done.results[0].base_offset == len(written)
    assert (await read_all(stub, topic))[-1] == b"next"


async def test_produce_and_fetch_go_on_while_etcd_is_down_and_admin_waits_for_it(
        own_infra: LocalInfra, server_factory: Callable[..., ServerProcess],
        channel_to: Callable[[ServerProcess], Stub], tmp_path: Path) -> None:
    broker = start_broker(own_infra, server_factory, tmp_path / "data", "broker-etcd")
    stub = channel_to(broker)
    topic = await make_topic(stub)
    group = f"g-{uuid.uuid4().hex[:8]}"
    joined = await stub.JoinGroup(pb.JoinGroupRequest(group=group, topics=[topic],
                                                      session_timeout=wait(120)))
    synced = await stub.SyncGroup(pb.SyncGroupRequest(group=group, member_id=joined.member_id,
                                                      generation=joined.generation))
    await stub.Produce(pb.ProduceRequest(topic=topic, partition=0,
                                         records=[pb.Record(value=b"before")]))
    etcd = own_infra.procs["etcd"]

    etcd.stop()
    try:
        done = await stub.Produce(pb.ProduceRequest(topic=topic, partition=0,
                                                    records=[pb.Record(value=b"during")]))
        assert done.results[0].base_offset == 1
        assert await read_all(stub, topic) == [b"before", b"during"]
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await make_topic(stub)
        assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE
        commit = pb.CommitOffsetsRequest(
            group=group, member_id=joined.member_id, generation=synced.generation,
            offsets=[pb.PartitionOffset(topic=topic, partition=0, offset=2)])
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await stub.CommitOffsets(commit)
        assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        etcd.start().wait_ready(30)

    async def created() -> bool:
        return bool(await make_topic(stub))

    await eventually(created)
    await stub.Heartbeat(pb.HeartbeatRequest(group=group, member_id=joined.member_id,
                                             generation=synced.generation))
    committed = await eventually(lambda: stub.CommitOffsets(commit))
    assert [o.offset for o in committed.offsets] == [2]
    assert await read_all(stub, topic) == [b"before", b"during"]


async def test_a_broker_restarted_while_etcd_is_down_serves_the_topics_it_knew(
        own_infra: LocalInfra, server_factory: Callable[..., ServerProcess],
        channel_to: Callable[[ServerProcess], Stub], tmp_path: Path) -> None:
    broker = start_broker(own_infra, server_factory, tmp_path / "data", "broker-etcd-start")
    stub = channel_to(broker)
    topic = await make_topic(stub)
    await stub.Produce(pb.ProduceRequest(topic=topic, partition=0,
                                         records=[pb.Record(value=b"kept")]))
    etcd = own_infra.procs["etcd"]

    etcd.stop()
    try:
        broker.stop(signal.SIGKILL)
        broker.start()
        stub = channel_to(broker)
        await stub.Produce(pb.ProduceRequest(topic=topic, partition=0,
                                             records=[pb.Record(value=b"offline")]))
        assert await read_all(stub, topic) == [b"kept", b"offline"]
    finally:
        etcd.start().wait_ready(30)
    await eventually(lambda: make_topic(stub))  # and admin works once etcd is back


def test_a_second_broker_on_the_same_data_directory_refuses_to_start(
        own_infra: LocalInfra, server_factory: Callable[..., ServerProcess],
        tmp_path: Path) -> None:
    start_broker(own_infra, server_factory, tmp_path / "data", "broker-owner")
    with pytest.raises(ProcessError, match="in use by another broker"):
        start_broker(own_infra, server_factory, tmp_path / "data", "broker-second")
