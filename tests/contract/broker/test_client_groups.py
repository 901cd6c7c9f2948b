"""The typed consumer against a real broker: groups, commits, nacks and dead letters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import pytest

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.clients.broker import BrokerClient, ConsumedRecord, Consumer, TopicPartition
from broker_calls import unique
import polling  # tests/polling.py

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

DEADLINE_S = 30.0


async def until(condition: Callable[[], object], what: str,
                limit: float = DEADLINE_S) -> None:
    """Poll ``condition`` (a value, or an awaitable of one) until it is true."""
    await polling.eventually(condition, limit, what=what, every=0.02)


async def produce(client: BrokerClient, topic: str, values: list[bytes],
                  partition: int | None = None) -> None:
    async with client.producer(linger_ms=1) as producer:
        for value in values:
            await producer.send(topic, value, partition=partition)


async def collect(consumer: Consumer, into: list[ConsumedRecord],
                  stop: asyncio.Event | None = None) -> None:
    async for record in consumer:
        into.append(record)
        if stop is not None and stop.is_set():
            return


def main_partitions(consumer: Consumer, topic: str) -> set[int]:
    return {tp.partition for tp in consumer.assignment() if tp.topic == topic}


async def test_two_members_split_the_partitions_and_read_each_record_once(client):
    topic, group = unique("split"), unique("g")
    await client.create_topic(topic, 4)
    calls: list[tuple[str, list[TopicPartition]]] = []
    first = client.consumer(group, [topic], auto_offset_reset="earliest", session_timeout=5,
                            on_assigned=lambda tps: calls.append(("assigned", tps)),
                            on_revoked=lambda tps: calls.append(("revoked", tps)))
    second = client.consumer(group, [topic], auto_offset_reset="earliest", session_timeout=5)
    got_first: list[ConsumedRecord] = []
    got_second: list[ConsumedRecord] = []
    async with first:
        await until(lambda: len(main_partitions(first, topic)) == 4, "the first owns all four")
        async with second:
            await until(lambda: main_partitions(first, topic) and main_partitions(second, topic)
                        and not main_partitions(first, topic) & main_partitions(second, topic)
                        and len(main_partitions(first, topic)
                                | main_partitions(second, topic)) == 4,
                        "the two members own two partitions each")
            assert len(main_partitions(first, topic)) == len(main_partitions(second, topic)) == 2
            # the first was given everything, then gave up what the second now owns
            assert calls[0][0] == "assigned"
            assert {tp.partition for tp in calls[0][1] if tp.topic == topic} == {0, 1, 2, 3}
            revoked = {tp.partition for kind, tps in calls if kind == "revoked"
                       for tp in tps if tp.topic == topic}
            assert revoked == main_partitions(second, topic)
            readers = [asyncio.create_task(collect(first, got_first)),
                       asyncio.create_task(collect(second, got_second))]
            values = [b"%d" % i for i in range(400)]
            await produce(client, topic, values)
            await until(lambda: len(got_first) + len(got_second) >= 400, "all 400 read")
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    ours = [r for r in got_first + got_second if r.topic == topic]
    assert sorted(r.value for r in ours) == sorted(values)  # each exactly once
    assert not {r.partition for r in got_first} & {r.partition for r in got_second}
    for records in (got_first, got_second):
        by_partition: dict[int, list[int]] = {}
        for r in records:
            by_partition.setdefault(r.partition, []).append(r.offset)
        assert all(offsets == sorted(offsets) for offsets in by_partition.values())


async def test_committed_offsets_let_a_new_member_resume_after_them(client):
    topic, group = unique("resume"), unique("g")
    await client.create_topic(topic, 1)
    await produce(client, topic, [b"%d" % i for i in range(20)], partition=0)
    seen: list[int] = []
    async with client.consumer(group, [topic], auto_offset_reset="earliest",
                               auto_commit_interval=0.1) as consumer:
        async for record in consumer:
            seen.append(record.offset)
            if record.offset == 9:
                # records 0..8 were moved past: the interval commit says so without a close
                await until(lambda: _committed_is(client, group, topic, 9), "auto commit of 9")
                break
    assert seen == list(range(10))
    assert await _committed(client, group, topic) == 10  # left normally: 9 counts as done
    async with client.consumer(group, [topic], auto_offset_reset="earliest") as again:
        record = await asyncio.wait_for(anext(again), DEADLINE_S)
    assert record.offset == 10


async def _committed(client: BrokerClient, group: str, topic: str) -> int:
    return (await client.get_committed_offsets(group, [topic])).get((topic, 0), -1)


async def _committed_is(client: BrokerClient, group: str, topic: str, offset: int) -> bool:
    return await _committed(client, group, topic) == offset


async def test_a_nacked_record_comes_back_after_its_delay(client):
    topic, group = unique("nack"), unique("g")
    await client.create_topic(topic, 1)
    await produce(client, topic, [b"retry me"], partition=0)
    async with client.consumer(group, [topic], auto_offset_reset="earliest") as consumer:
        first = await asyncio.wait_for(anext(consumer), DEADLINE_S)
        assert (first.value, first.deliveries) == (b"retry me", 1)
        nacked_ms = time.time() * 1000
        answer = await consumer.nack(first, delay=1.0, error="try later")
        assert not answer.dead_lettered and answer.deliveries == 1
        again = await asyncio.wait_for(anext(consumer), DEADLINE_S)
        received_ms = time.time() * 1000
    assert again.topic == f"__retry.{group}"
    assert (again.value, again.deliveries) == (b"retry me", 2)
    assert again.origin == TopicPartition(topic, 0) and again.origin_offset == first.offset
    due_ms = int(again.header("geoplex-due-ms") or b"0")
    assert due_ms >= nacked_ms + 1000 - 1  # due a delay after the nack...
    assert received_ms >= due_ms           # ...and not delivered before it was due


async def test_a_record_nacked_max_deliveries_times_is_dead_lettered(client):
    topic, group = unique("dead"), unique("g")
    await client.create_topic(topic, 1)
    await produce(client, topic, [b"poison"], partition=0)
    answers: list[pb.NackResponse] = []
    async with client.consumer(group, [topic], auto_offset_reset="earliest",
                               max_deliveries=2) as consumer:
        async for record in consumer:
            answers.append(await consumer.nack(record, error=f"bad {record.deliveries}"))
            if answers[-1].dead_lettered:
                break
    assert [(a.dead_lettered, a.deliveries) for a in answers] == [(False, 1), (True, 2)]
    (dead,) = [r async for r in client.read(f"__dlq.{group}", 0, 0, until_end=True)]
    assert dead.value == b"poison"
    assert dead.origin == TopicPartition(topic, 0) and dead.origin_offset == 0
    assert dead.error == "bad 2"


async def test_a_position_that_retention_deleted_is_reset_by_policy_with_a_warning(
        client, caplog):
    topic, group = unique("retained"), unique("g")
    # every batch its own segment, kept for 1 s (the test broker checks every 0.2 s)
    await client.create_topic(topic, 1, retention=1.0, segment_bytes=1, segment_age=0.1)
    for n in range(5):
        await client.produce(topic, [pb.Record(value=b"old secret %d" % n)], partition=0)
    await client.commit_offsets(group, {(topic, 0): 1})  # from outside: no members yet

    async def log_start() -> int:
        return (await client.get_topic(topic)).partitions[0].log_start_offset

    await until(lambda: _equals(log_start(), 5), "retention deleted the five old records")
    await client.produce(topic, [pb.Record(value=b"new")], partition=0)
    with caplog.at_level("WARNING", logger="geoplex.clients.broker_consumer"):
        async with client.consumer(group, [topic], auto_offset_reset="earliest") as consumer:
            record = await asyncio.wait_for(anext(consumer), DEADLINE_S)
            assert consumer.stats.resets == 1
    assert (record.offset, record.value) == (5, b"new")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("offset 1" in w and "outside the log" in w and "earliest offset 5" in w
               for w in warnings), warnings
    assert not any("secret" in w for w in warnings)  # never a record's contents


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
