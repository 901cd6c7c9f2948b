"""The typed producer without a broker: partitioning, bounded memory, batching, sequences.

The producer talks to a tiny real grpc.aio server in this process that answers GetTopic
and Produce (in-memory partitions that keep the idempotent producer's sequences, as the
broker does), so the client's batching, retries and flow control run over real gRPC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
import grpc
import grpc.aio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.clients.broker import BrokerClient, BufferFullError, partition_for
from geoplex.clients.channel import ChannelOptions
from geoplex.clients.errors import NotFoundError, SessionClosedError

PARTITIONS = 4


@dataclass
class Received:
    partition: int
    count: int
    producer_id: int
    base_sequence: int
    keys: list[bytes]


@dataclass
class TinyBroker:
    """GetTopic and ProduceStream over in-memory partitions, idempotent as the broker is."""

    topics: dict[str, int] = field(default_factory=lambda: {"t": PARTITIONS})
    logs: dict[tuple[str, int], list[pb.Record]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    # (producer id, partition) -> {base_sequence: base_offset} of batches written
    written: dict[tuple[int, int], dict[int, int]] = field(default_factory=dict)
    hold: asyncio.Event | None = None  # while set to an unset event, answers wait for it
    hold_first: bool = False  # the first Produce is written, then never answered

    async def GetTopic(self, request, context):
        if request.name not in self.topics:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"topic {request.name!r} does not exist")
        return pb.GetTopicResponse(topic=pb.Topic(name=request.name,
                                                  partitions=self.topics[request.name]))

    def write(self, request: pb.ProduceRequest) -> pb.ProduceResponse:
        partition = request.partition
        self.received.append(Received(partition, len(request.records), request.producer_id,
                                      request.base_sequence, [r.key for r in request.records]))
        log = self.logs.setdefault((request.topic, partition), [])
        seen = self.written.setdefault((request.producer_id, partition), {})
        duplicate = request.producer_id != 0 and request.base_sequence in seen
        if duplicate:
            base = seen[request.base_sequence]
        else:
            base = len(log)
            log.extend(request.records)
            if request.producer_id:
                seen[request.base_sequence] = base
        return pb.ProduceResponse(results=[pb.PartitionResult(
            partition=partition, base_offset=base, record_count=len(request.records),
            duplicate=duplicate)])

    async def ProduceStream(self, requests, context):
        """Each request is written as it arrives; the answers go back in order, each
        once ``hold`` is set (the first never, with ``hold_first``)."""
        answers: asyncio.Queue[pb.ProduceResponse | None] = asyncio.Queue()

        async def read() -> None:
            async for request in requests:
                answers.put_nowait(self.write(request.produce))
            answers.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                if self.hold_first:
                    self.hold_first = False
                    await asyncio.Event().wait()  # written, never answered: the client times out
                if self.hold is not None:
                    await self.hold.wait()
                yield pb.ProduceStreamResponse(produce=answer)
        finally:
            reader.cancel()


@pytest.fixture
async def tiny() -> AsyncIterator[tuple[TinyBroker, str]]:
    servicer = TinyBroker()
    server = grpc.aio.server()
    serialize = lambda message: message.SerializeToString()  # noqa: E731
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "GetTopic": grpc.unary_unary_rpc_method_handler(
            servicer.GetTopic, request_deserializer=pb.GetTopicRequest.FromString,
            response_serializer=serialize),
        "ProduceStream": grpc.stream_stream_rpc_method_handler(
            servicer.ProduceStream, request_deserializer=pb.ProduceStreamRequest.FromString,
            response_serializer=serialize)}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("geoplex.broker.v1.BrokerService", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        if servicer.hold is not None:
            servicer.hold.set()
        await server.stop(0)


@pytest.fixture
async def client(tiny: tuple[TinyBroker, str]) -> AsyncIterator[BrokerClient]:
    async with BrokerClient(tiny[1], ChannelOptions(timeout=5.0)) as broker:
        yield broker


async def until(condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit:g}s: {what}")
        await asyncio.sleep(0.005)


@given(key=st.binary(min_size=1, max_size=64), partitions=st.integers(1, 1024))
def test_the_partitioner_is_crc32c_of_the_key_mod_the_partition_count(key, partitions):
    assert partition_for(key, partitions) == google_crc32c.value(key) % partitions


async def test_keyed_records_land_on_crc32c_of_their_key(tiny, client):
    servicer, _ = tiny
    keys = [f"rider-{i}".encode() for i in range(200)]
    async with client.producer(linger_ms=1) as producer:
        sent = [await producer.send("t", b"v", key=key) for key in keys]
    for key, future in zip(keys, sent):
        where = await future
        assert where.partition == google_crc32c.value(key) % PARTITIONS
        assert servicer.logs[("t", where.partition)][where.offset].key == key


async def test_a_full_buffer_blocks_send_then_raises_buffer_full(tiny, client):
    servicer, _ = tiny
    servicer.hold = asyncio.Event()  # nothing is acknowledged: nothing leaves the buffer
    producer = client.producer(buffer_bytes=10_000, max_block=0.2, linger_ms=0)
    taken = 0
    with pytest.raises(BufferFullError, match="stayed full"):
        while True:
            await producer.send("t", b"x" * 1000, partition=0)
            taken += 1
            assert producer.stats.buffered_bytes <= 10_000
    assert taken == 9  # 9 x (1000 + 8 bytes counted) fit in 10,000; the 10th did not
    assert producer.stats.buffered_bytes <= 10_000

    blocked = asyncio.create_task(producer.send("t", b"y" * 1000, partition=0))
    await until(lambda: producer._waiters, "the send waits for room")
    assert not blocked.done()
    servicer.hold.set()  # acknowledgements free the buffer: the blocked send goes through
    where = await (await blocked)
    assert (where.partition, where.offset) == (0, 9)
    await producer.close()
    assert producer.stats.buffered_bytes == 0
    assert len(servicer.logs[("t", 0)]) == 10


async def test_a_record_larger_than_the_whole_buffer_is_refused_at_once(client):
    producer = client.producer(buffer_bytes=1000)
    with pytest.raises(BufferFullError, match="larger than"):
        await producer.send("t", b"x" * 2000)
    await producer.close()


async def test_batches_close_at_batch_records(tiny, client):
    servicer, _ = tiny
    producer = client.producer(batch_records=10, linger_ms=60_000)
    for i in range(25):
        await producer.send("t", b"%d" % i, partition=1)
    await until(lambda: len(servicer.received) == 2, "two full batches sent")
    assert [r.count for r in servicer.received] == [10, 10]  # the 5 linger on
    await producer.flush()
    assert [r.count for r in servicer.received] == [10, 10, 5]
    assert [r.value for r in servicer.logs[("t", 1)]] == [b"%d" % i for i in range(25)]
    await producer.close()


async def test_batches_close_at_batch_bytes(tiny, client):
    servicer, _ = tiny
    async with client.producer(batch_bytes=5_000, linger_ms=60_000) as producer:
        for _ in range(10):
            await producer.send("t", b"x" * 1000, partition=2)
    # 4 x 1,008 counted bytes fit in 5,000; a fifth record opens the next batch
    assert [r.count for r in servicer.received] == [4, 4, 2]


async def test_linger_sends_a_partial_batch_without_a_flush(tiny, client):
    servicer, _ = tiny
    producer = client.producer(batch_records=1000, linger_ms=20)
    sent = [await producer.send("t", b"v", partition=3) for _ in range(3)]
    offsets = [(await future).offset for future in sent]  # no flush: linger sends them
    assert offsets == [0, 1, 2]
    assert [r.count for r in servicer.received] == [3]
    await producer.close()


async def test_keyless_records_stick_to_one_partition_per_batch(tiny, client):
    servicer, _ = tiny
    async with client.producer(batch_records=5, linger_ms=60_000) as producer:
        for i in range(40):
            await producer.send("t", b"%d" % i)
    assert [r.count for r in servicer.received] == [5] * 8
    where = {int(record.value): partition for (_, partition), log in servicer.logs.items()
             for record in log}
    batches = [{where[i] for i in range(k * 5, k * 5 + 5)} for k in range(8)]
    assert all(len(b) == 1 for b in batches)  # a batch's records share one partition
    partitions = [b.pop() for b in batches]
    # round-robin from a random start: each next batch on the next partition
    assert all(b == (a + 1) % PARTITIONS for a, b in zip(partitions, partitions[1:]))


async def test_sequence_numbers_are_contiguous_per_partition(tiny, client):
    servicer, _ = tiny
    async with client.producer(batch_records=7, linger_ms=1) as producer:
        for i in range(500):
            await producer.send("t", b"v", key=b"k%d" % (i % 13))
            if i % 50 == 0:
                await asyncio.sleep(0)  # let some batches go out part-full
    assert {r.producer_id for r in servicer.received} == {producer.producer_id}
    assert producer.producer_id != 0
    for partition in range(PARTITIONS):
        batches = [r for r in servicer.received if r.partition == partition]
        expected = 0
        for batch in batches:
            assert batch.base_sequence == expected
            expected += batch.count
        assert expected == len(servicer.logs.get(("t", partition), []))
    assert sum(len(log) for log in servicer.logs.values()) == 500


async def test_at_most_max_in_flight_batches_per_partition_and_order_kept(tiny, client):
    servicer, _ = tiny
    servicer.hold = asyncio.Event()
    producer = client.producer(batch_records=2, linger_ms=60_000, max_in_flight=2)
    for i in range(10):
        await producer.send("t", b"%d" % i, partition=0)
    await producer.send("t", b"other", partition=1)
    await producer.send("t", b"other", partition=1)
    await until(lambda: len(servicer.received) == 3, "two batches of 0 and one of 1 sent")
    assert sorted(r.partition for r in servicer.received) == [0, 0, 1]
    servicer.hold.set()
    await producer.close()
    assert [r.value for r in servicer.logs[("t", 0)]] == [b"%d" % i for i in range(10)]
    assert [r.base_sequence for r in servicer.received if r.partition == 0] == [0, 2, 4, 6, 8]


async def test_a_batch_retried_after_a_timeout_keeps_its_sequence_and_is_written_once(
        tiny, client):
    servicer, _ = tiny
    servicer.hold_first = True  # the first attempt is written but never answered
    async with client.producer(request_timeout=0.3, linger_ms=0) as producer:
        future = await producer.send("t", b"once", partition=0)
        where = await future
    assert where.offset == 0
    attempts = [(r.producer_id, r.base_sequence) for r in servicer.received]
    assert len(attempts) == 2 and attempts[0] == attempts[1]
    assert producer.stats.retries == 1
    assert [r.value for r in servicer.logs[("t", 0)]] == [b"once"]


async def test_an_unknown_topic_fails_the_send(client):
    async with client.producer() as producer:
        with pytest.raises(NotFoundError):
            await producer.send("nope", b"v")


async def test_send_after_close_is_refused(client):
    producer = client.producer()
    await producer.close()
    with pytest.raises(SessionClosedError):
        await producer.send("t", b"v")


async def test_an_explicit_partition_outside_the_topic_is_refused(client):
    async with client.producer() as producer:
        with pytest.raises(ValueError, match="partition must be 0..3"):
            await producer.send("t", b"v", partition=4)


@given(value=st.binary(max_size=40_000), key=st.one_of(st.none(), st.binary(max_size=300)),
       headers=st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=50)), max_size=3),
       timestamp=st.integers(-(1 << 40), 1 << 45), producer_id=st.integers(0, (1 << 64) - 1),
       sequence=st.integers(0, (1 << 31) - 1), partition=st.integers(0, 1023),
       acks=st.sampled_from([pb.ACKS_NONE, pb.ACKS_LEADER, pb.ACKS_ALL]))
def test_the_hand_encoded_request_is_the_protobuf_encoding(value, key, headers, timestamp,
                                                           producer_id, sequence, partition,
                                                           acks):
    from geoplex.clients.broker_producer import _record_prefix, _request_head

    wire = (_request_head("topic.x", partition, acks, producer_id, sequence)
            + _record_prefix(len(value), key, headers, timestamp) + value)
    expected = pb.ProduceRequest(
        topic="topic.x", partition=partition, acks=acks, records=[pb.Record(
            key=key or b"", value=value, timestamp_ms=timestamp,
            headers=[pb.Header(key=k, value=v) for k, v in headers])])
    if producer_id:
        expected.producer_id, expected.base_sequence = producer_id, sequence
    assert pb.ProduceRequest.FromString(wire) == expected


async def test_close_with_a_timeout_fails_what_the_broker_never_acknowledged(tiny, client):
    servicer, _ = tiny
    servicer.hold = asyncio.Event()  # written, never answered while the producer waits
    producer = client.producer(linger_ms=0)
    sent = await producer.send("t", b"v", partition=0)
    with pytest.raises(TimeoutError):
        await producer.flush(timeout=0.2)
    await producer.close(timeout=0.2)
    assert isinstance(sent.exception(), SessionClosedError)
    assert producer.stats.records_failed == 1 and producer.stats.buffered_bytes == 0
