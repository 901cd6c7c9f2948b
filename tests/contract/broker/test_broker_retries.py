"""Nack over the wire: a delayed redelivery through __retry.<group>, then dead letters."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from broker_calls import (
    Stub,
    fetch_until,
    headers_of,
    join,
    make_topic,
    ms,
    settle,
    unique,
)
from geoplex.broker.v1 import broker_pb2 as pb


async def a_member(stub: Stub, topic: str) -> tuple[str, str, int]:
    group = unique("g")
    member, generation = await join(stub, group, [topic])
    generations = {member: generation}
    await settle(stub, group, generations)
    return group, member, generations[member]


async def test_a_nacked_record_comes_back_through_the_retry_topic_after_its_delay(
        stub: Stub) -> None:
    topic = await make_topic(stub)
    await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, records=[
        pb.Record(key=b"k", value=b"payload", headers=[pb.Header(key="trace", value=b"t1")])]))
    group, member, generation = await a_member(stub, topic)

    nacked = await stub.Nack(pb.NackRequest(
        group=group, member_id=member, generation=generation, topic=topic, partition=0,
        offset=0, delay=ms(1000), error="boom", max_deliveries=3))

    assert (nacked.dead_lettered, nacked.deliveries) == (False, 1)
    (batch,) = await fetch_until(stub, f"__retry.{group}", 1)
    (record,) = batch.records
    assert (record.key, record.value) == (b"k", b"payload")
    headers = headers_of(record)
    assert headers["trace"] == "t1"  # the record's own headers are kept
    assert (headers["geoplex-origin-topic"], headers["geoplex-origin-partition"],
            headers["geoplex-origin-offset"]) == (topic, "0", "0")
    assert headers["geoplex-deliveries"] == "1" and headers["geoplex-error"] == "boom"
    # moved once it was due, by the broker's own clock
    assert batch.append_time_ms >= int(headers["geoplex-due-ms"])
    # the retry topic is part of every member's assignment
    synced = await stub.SyncGroup(pb.SyncGroupRequest(group=group, member_id=member,
                                                      generation=generation))
    assert f"__retry.{group}" in [tp.topic for tp in synced.assignment]


async def test_a_record_is_dead_lettered_after_max_deliveries_with_its_origin(
        stub: Stub) -> None:
    topic = await make_topic(stub, partitions=2)
    await stub.Produce(pb.ProduceRequest(topic=topic, partition=1, records=[
        pb.Record(value=b"first"), pb.Record(value=b"poison")]))
    group, member, generation = await a_member(stub, topic)
    retry = f"__retry.{group}"

    def nack(on: str, partition: int, offset: int, error: str) -> pb.NackRequest:
        return pb.NackRequest(group=group, member_id=member, generation=generation, topic=on,
                              partition=partition, offset=offset, error=error,
                              max_deliveries=3)

    first = await stub.Nack(nack(topic, 1, 1, "try 1"))  # delivery 1, at once
    await fetch_until(stub, retry, 1)
    second = await stub.Nack(nack(retry, 0, 0, "try 2"))  # delivery 2, from the retry topic
    await fetch_until(stub, retry, 2)
    third = await stub.Nack(nack(retry, 0, 1, "try 3"))  # delivery 3 of 3: dead

    assert [(n.dead_lettered, n.deliveries) for n in (first, second, third)] == [
        (False, 1), (False, 2), (True, 3)]
    (batch,) = await fetch_until(stub, f"__dlq.{group}", 1)
    (record,) = batch.records
    headers = headers_of(record)
    assert record.value == b"poison"
    assert (headers["geoplex-origin-topic"], headers["geoplex-origin-partition"],
            headers["geoplex-origin-offset"]) == (topic, "1", "1")
    assert (headers["geoplex-deliveries"], headers["geoplex-error"]) == ("3", "try 3")
    listed = await stub.ListTopics(pb.ListTopicsRequest(include_internal=True, page_size=1000))
    assert f"__dlq.{group}" in [t.name for t in listed.topics]
    hidden = await stub.ListTopics(pb.ListTopicsRequest(page_size=1000))
    assert not [t.name for t in hidden.topics if t.name.startswith("__")]


async def test_a_nack_from_a_stale_member_is_refused(stub: Stub) -> None:
    topic = await make_topic(stub)
    await stub.Produce(pb.ProduceRequest(topic=topic, partition=0,
                                         records=[pb.Record(value=b"x")]))
    group, member, generation = await a_member(stub, topic)
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Nack(pb.NackRequest(group=group, member_id=member,
                                       generation=generation + 5, topic=topic, offset=0))
    assert excinfo.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Nack(pb.NackRequest(group=group, member_id=member, generation=generation,
                                       topic=topic, offset=7))
    assert excinfo.value.code() == grpc.StatusCode.OUT_OF_RANGE
