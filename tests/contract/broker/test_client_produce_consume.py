"""The typed producer and readers against a real broker process (real etcd, real disk)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import google_crc32c
import pytest

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.clients.broker import BrokerClient, OffsetOutOfRangeError, partition_for
from geoplex.clients.errors import DeadlineExceededError, NotFoundError
from broker_calls import unique

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


async def read_all(client: BrokerClient, topic: str, partition: int) -> list[tuple[int, bytes,
                                                                                   bytes | None]]:
    got = await client.get_topic(topic)
    start = got.partitions[partition].log_start_offset
    return [(r.offset, r.value, r.key)
            async for r in client.read(topic, partition, start, until_end=True)]


async def test_records_keep_their_order_within_each_partition(client):
    topic = unique()
    await client.create_topic(topic, 3)
    sent: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    async with client.producer(batch_records=50, linger_ms=2) as producer:
        futures = []
        for i in range(3000):
            key = b"key-%d" % (i % 17)
            value = b"%d" % i
            sent[partition_for(key, 3)].append(value)
            futures.append(await producer.send(topic, value, key=key))
    offsets = [await f for f in futures]
    for partition, values in sent.items():
        stored = await read_all(client, topic, partition)
        assert [v for _, v, _ in stored] == values  # the order they were sent in
        assert [o for o, _, _ in stored] == list(range(len(values)))
        assert all(k is not None and google_crc32c.value(k) % 3 == partition
                   for _, _, k in stored)
    assert sorted((m.partition, m.offset) for m in offsets) == sorted(
        (p, o) for p, values in sent.items() for o in range(len(values)))
    assert producer.stats.records_sent == 3000 and producer.stats.records_failed == 0


async def test_a_batch_sent_again_with_its_sequence_is_written_once(client):
    topic = unique()
    await client.create_topic(topic, 1)
    records = [pb.Record(value=b"r%d" % i) for i in range(5)]
    first = await client.produce(topic, records, partition=0, producer_id=7_777,
                                 base_sequence=0)
    again = await client.produce(topic, records, partition=0, producer_id=7_777,
                                 base_sequence=0)
    assert not first.results[0].duplicate and again.results[0].duplicate
    assert again.results[0].base_offset == first.results[0].base_offset
    assert len(await read_all(client, topic, 0)) == 5


async def test_a_retry_after_a_timed_out_attempt_is_written_once(client):
    """The first attempt gets a deadline too short to be answered in (the broker syncs
    each batch before it answers); the retry carries the same producer id and sequence."""
    topic = unique()
    await client.create_topic(topic, 1)
    producer_id, sequence, written, timed_out, duplicates = 99_001, 0, 0, 0, 0
    for trial in range(20):
        records = [pb.Record(value=b"trial %d record %d" % (trial, i)) for i in range(50)]
        try:
            await client.produce(topic, records, partition=0, producer_id=producer_id,
                                 base_sequence=sequence, timeout=0.0005)
        except DeadlineExceededError:
            timed_out += 1
        retry = await client.produce(topic, records, partition=0, producer_id=producer_id,
                                     base_sequence=sequence)
        duplicates += retry.results[0].duplicate
        sequence += len(records)
        written += len(records)
        stored = await read_all(client, topic, 0)
        assert len(stored) == written  # each trial's batch is in the log exactly once
        assert [v for _, v, _ in stored[-50:]] == [r.value for r in records]
        if timed_out and duplicates:
            break
    assert timed_out, "no first attempt timed out: the deadline was not short enough"


async def test_a_read_below_the_log_start_is_out_of_range_with_the_bounds(client):
    topic = unique()
    await client.create_topic(topic, 1)
    await client.produce(topic, [pb.Record(value=b"x")], partition=0)
    with pytest.raises(OffsetOutOfRangeError) as caught:
        await client.fetch(topic, 0, 5)
    assert (caught.value.log_start_offset, caught.value.log_end_offset) == (0, 1)


async def test_long_poll_read_wakes_when_a_record_arrives(client):
    topic = unique()
    await client.create_topic(topic, 1)
    reader = client.read(topic, 0, 0, max_wait=10.0)
    first = asyncio.create_task(anext(reader))
    await client.produce(topic, [pb.Record(value=b"late", key=b"k")], partition=0)
    record = await asyncio.wait_for(first, 15.0)
    assert (record.offset, record.value, record.key) == (0, b"late", b"k")
    await reader.aclose()


async def test_sending_to_an_unknown_topic_fails_at_once(client):
    async with client.producer() as producer:
        with pytest.raises(NotFoundError):
            await producer.send(unique("missing"), b"v")
