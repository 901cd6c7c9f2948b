"""Produce and fetch over the wire: order, keys, long polls, idempotent retries, streams."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import google_crc32c
import grpc
import grpc.aio
import pytest

from broker_calls import (
    Stub,
    bad_field,
    error_info,
    make_topic,
    ms,
    offsets_of,
    records,
    values_of,
)
from geoplex.broker.v1 import broker_pb2 as pb


async def fetch_all(stub: Stub, topic: str, partition: int = 0, offset: int = 0
                    ) -> pb.FetchResponse:
    """Every batch from ``offset`` to the log end, in one response."""
    merged = pb.FetchResponse(partition=partition)
    while True:
        got = await stub.Fetch(pb.FetchRequest(topic=topic, partition=partition, offset=offset))
        merged.log_end_offset, merged.log_start_offset = got.log_end_offset, got.log_start_offset
        fresh = [b for b in got.batches if b.base_offset + len(b.records) > offset]
        if not fresh:
            return merged
        merged.batches.extend(fresh)
        last = fresh[-1]
        offset = last.base_offset + len(last.records)


async def test_records_come_back_in_the_order_produced_with_consecutive_offsets(
        stub: Stub) -> None:
    topic = await make_topic(stub)
    sent = []
    for batch in range(20):
        values = [f"{batch}-{i}" for i in range(10)]
        done = await stub.Produce(pb.ProduceRequest(topic=topic, partition=0,
                                                    records=records(*values)))
        assert done.results[0].base_offset == batch * 10
        assert done.results[0].record_count == 10
        sent.extend(values)

    got = await fetch_all(stub, topic)

    assert values_of(got) == sent
    assert offsets_of(got) == list(range(200))
    assert got.log_end_offset == 200


async def test_a_key_always_lands_on_crc32c_of_the_key_mod_partitions(stub: Stub) -> None:
    topic = await make_topic(stub, partitions=5)
    keys = [f"user-{i}".encode() for i in range(30)]
    for round_ in range(3):  # the same keys, several requests apart
        batch = [pb.Record(key=k, value=f"{k.decode()}/{round_}".encode()) for k in keys]
        batch.append(pb.Record(value=b"keyless"))
        await stub.Produce(pb.ProduceRequest(topic=topic, records=batch))

    for partition in range(5):
        got = await fetch_all(stub, topic, partition)
        for batch_ in got.batches:
            for record in batch_.records:
                if record.key:
                    assert google_crc32c.value(record.key) % 5 == partition
        keyed = [r.value.decode() for b in got.batches for r in b.records if r.key]
        for key in {v.split("/")[0] for v in keyed}:  # each key's records in order
            assert [v for v in keyed if v.startswith(key + "/")] == [
                f"{key}/{n}" for n in range(3)]


async def test_keyless_requests_take_turns_across_partitions(stub: Stub) -> None:
    topic = await make_topic(stub, partitions=3)
    chosen = set()
    for _ in range(6):
        done = await stub.Produce(pb.ProduceRequest(topic=topic, records=records("a", "b")))
        assert len(done.results) == 1  # sticky: one partition per request
        chosen.add(done.results[0].partition)
    assert chosen == {0, 1, 2}


async def test_a_long_poll_fetch_wakes_when_a_record_arrives(stub: Stub) -> None:
    topic = await make_topic(stub)
    # the call starts now (grpc.aio runs it as a task), so its stream is opened on the
    # channel before the produce's: it finds the log empty and waits
    waiting = stub.Fetch(pb.FetchRequest(topic=topic, partition=0, offset=0,
                                         max_wait=ms(10_000)))

    await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, records=records("hello")))

    got = await waiting
    # without the wake-up it would answer at its deadline with nothing
    assert values_of(got) == ["hello"]


async def test_a_fetch_at_the_end_with_a_short_wait_answers_empty(stub: Stub) -> None:
    topic = await make_topic(stub)
    await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, records=records("a")))
    got = await stub.Fetch(pb.FetchRequest(topic=topic, partition=0, offset=1,
                                           max_wait=ms(200)))
    assert list(got.batches) == [] and got.log_end_offset == 1


async def test_a_fetch_past_the_end_is_out_of_range_with_the_bounds(stub: Stub) -> None:
    topic = await make_topic(stub)
    await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, records=records("a", "b")))
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Fetch(pb.FetchRequest(topic=topic, partition=0, offset=5))
    assert excinfo.value.code() == grpc.StatusCode.OUT_OF_RANGE
    info = error_info(excinfo.value)
    assert (info.metadata["log_start_offset"], info.metadata["log_end_offset"]) == ("0", "2")


async def test_a_negative_offset_is_invalid_argument_naming_it(stub: Stub) -> None:
    topic = await make_topic(stub)
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Fetch(pb.FetchRequest(topic=topic, partition=0, offset=-1))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(excinfo.value) == "offset"


async def test_an_oversize_record_refuses_the_whole_batch(stub: Stub) -> None:
    topic = await make_topic(stub, config=pb.TopicConfig(max_message_bytes=1000))
    batch = [pb.Record(value=b"a" * 10), pb.Record(value=b"b" * 2000), pb.Record(value=b"c")]
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, records=batch))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(excinfo.value) == "records[1]"
    got = await stub.GetTopic(pb.GetTopicRequest(name=topic))
    assert got.partitions[0].log_end_offset == 0  # nothing from it written


async def test_an_empty_produce_is_invalid_argument(stub: Stub) -> None:
    topic = await make_topic(stub)
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Produce(pb.ProduceRequest(topic=topic, records=[]))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(excinfo.value) == "records"


async def test_an_idempotent_retry_is_written_once(stub: Stub) -> None:
    topic = await make_topic(stub)
    producer = random.getrandbits(63) | 1
    first = pb.ProduceRequest(topic=topic, partition=0, producer_id=producer, base_sequence=0,
                              records=records("a", "b", "c"))

    written = await stub.Produce(first)
    retried = await stub.Produce(first)  # as after a timeout: the same batch again

    assert not written.results[0].duplicate
    assert retried.results[0].duplicate
    assert retried.results[0].base_offset == written.results[0].base_offset
    nxt = await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, producer_id=producer,
                                               base_sequence=3, records=records("d")))
    assert nxt.results[0].base_offset == 3 and not nxt.results[0].duplicate
    assert values_of(await fetch_all(stub, topic)) == ["a", "b", "c", "d"]


async def test_a_sequence_gap_is_failed_precondition(stub: Stub) -> None:
    topic = await make_topic(stub)
    producer = random.getrandbits(63) | 1
    await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, producer_id=producer,
                                         base_sequence=0, records=records("a")))
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, producer_id=producer,
                                             base_sequence=5, records=records("b")))
    assert excinfo.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_produce_stream_answers_every_batch_in_order(stub: Stub) -> None:
    topic = await make_topic(stub)

    async def requests() -> AsyncIterator[pb.ProduceStreamRequest]:
        for n in range(100):
            yield pb.ProduceStreamRequest(produce=pb.ProduceRequest(
                topic=topic, partition=0, records=records(*(f"{n}.{i}" for i in range(5)))))

    answers = [a async for a in stub.ProduceStream(requests())]

    assert [a.produce.results[0].base_offset for a in answers] == list(range(0, 500, 5))
    assert values_of(await fetch_all(stub, topic)) == [
        f"{n}.{i}" for n in range(100) for i in range(5)]


async def test_a_refused_batch_ends_the_produce_stream_with_its_error(stub: Stub) -> None:
    topic = await make_topic(stub)

    async def requests() -> AsyncIterator[pb.ProduceStreamRequest]:
        yield pb.ProduceStreamRequest(produce=pb.ProduceRequest(topic=topic, partition=0,
                                                                records=records("ok")))
        yield pb.ProduceStreamRequest(produce=pb.ProduceRequest(topic=topic, partition=7,
                                                                records=records("bad")))

    call = stub.ProduceStream(requests())
    first = await call.read()
    assert isinstance(first, pb.ProduceStreamResponse)
    assert first.produce.results[0].base_offset == 0
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await call.read()
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND


async def test_acks_none_answers_without_an_offset_and_still_writes(stub: Stub) -> None:
    topic = await make_topic(stub)
    done = await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, acks=pb.ACKS_NONE,
                                                records=records("fire", "forget")))
    assert done.results[0].base_offset == -1 and done.results[0].record_count == 2
    got = await stub.Fetch(pb.FetchRequest(topic=topic, partition=0, max_wait=ms(10_000)))
    assert values_of(got) == ["fire", "forget"]


async def test_subscribe_streams_batches_as_they_arrive(stub: Stub) -> None:
    topic = await make_topic(stub)
    await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, records=records("a", "b")))
    call = stub.Subscribe(pb.SubscribeRequest(topic=topic, partition=0, offset=1))
    seen: list[str] = []

    async def read_until(count: int) -> None:
        async for response in call:
            seen.extend(values_of(response.fetch))
            if len(seen) >= count:
                return

    await asyncio.wait_for(read_until(1), 10)
    await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, records=records("c")))
    await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, records=records("d", "e")))
    await asyncio.wait_for(read_until(4), 10)
    call.cancel()
    # the first batch holds offset 1, so it comes whole ("a" too); then every later one
    assert seen == ["a", "b", "c", "d", "e"]


async def test_list_offsets_finds_the_log_end_and_a_time(stub: Stub) -> None:
    topic = await make_topic(stub, partitions=2)
    early = [pb.Record(value=b"old", timestamp_ms=1_000_000)]
    late = [pb.Record(value=b"new", timestamp_ms=2_000_000)]
    await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, records=early))
    await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, records=late))

    ends = await stub.ListOffsets(pb.ListOffsetsRequest(topic=topic))
    assert [(o.partition, o.offset) for o in ends.offsets] == [(0, 2), (1, 0)]
    at = pb.ListOffsetsRequest(topic=topic, partitions=[0])
    at.time.FromMilliseconds(1_500_000)
    assert [o.offset for o in (await stub.ListOffsets(at)).offsets] == [1]
