"""BrokerClient without a server: typed errors and reading fetched batches (its shape is
checked with every client's in test_sdk_surface.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.clients.broker import ConsumedRecord, OffsetOutOfRangeError, records_of
from geoplex.clients.broker_consumer import TopicPartition, _Buffer, _Chunk, _Partition
from geoplex.clients.errors import GeoplexRpcError


def test_out_of_range_carries_the_log_bounds():
    plain = GeoplexRpcError(grpc.StatusCode.OUT_OF_RANGE, "offset: 3 is outside",
                            metadata={"log_start_offset": "10", "log_end_offset": "20"})
    typed = OffsetOutOfRangeError.of(plain)
    assert (typed.log_start_offset, typed.log_end_offset) == (10, 20)
    assert isinstance(typed, GeoplexRpcError)


def batch(base: int, values: list[bytes], **record: Any) -> pb.RecordBatch:
    return pb.RecordBatch(base_offset=base, records=[pb.Record(value=v, **record)
                                                     for v in values])


def test_records_below_the_asked_offset_are_skipped_and_offsets_follow_the_batch():
    batches = [batch(10, [b"a", b"b", b"c"]), batch(13, [b"d"])]
    got = list(records_of("t", 2, batches, 12))
    assert [(r.offset, r.value) for r in got] == [(12, b"c"), (13, b"d")]
    assert all(r.topic == "t" and r.partition == 2 and r.key is None for r in got)
    assert all(r.deliveries == 1 and r.headers == () for r in got)


def test_a_retried_record_counts_its_deliveries_and_names_its_origin():
    headers = [pb.Header(key="geoplex-origin-topic", value=b"rides"),
               pb.Header(key="geoplex-origin-partition", value=b"4"),
               pb.Header(key="geoplex-origin-offset", value=b"77"),
               pb.Header(key="geoplex-deliveries", value=b"2"),
               pb.Header(key="geoplex-error", value=b"timeout")]
    (record,) = records_of("__retry.g", 0, [batch(5, [b"v"], key=b"k", headers=headers)])
    assert record.deliveries == 3  # delivered twice before, this is the third
    assert record.origin == ("rides", 4) and record.origin_offset == 77
    assert record.error == "timeout" and record.key == b"k"
    plain = ConsumedRecord("rides", 1, 9, None, b"v", (), 0)
    assert plain.origin == ("rides", 1) and plain.origin_offset == 9 and plain.error == ""


async def test_the_fetch_buffer_is_bounded_and_a_failure_wakes_the_reader():
    buffer = _Buffer(2)
    owner = _Partition(TopicPartition("t", 0), 0, -1)
    await buffer.put(_Chunk(owner, iter(())))
    await buffer.put(_Chunk(owner, iter(())))
    third = asyncio.create_task(buffer.put(_Chunk(owner, iter(()))))
    await asyncio.sleep(0)
    assert not third.done() and len(buffer.items) == 2  # waits for room
    await buffer.get()
    await third
    assert len(buffer.items) == 2
    reader = _Buffer(1)
    waiting = asyncio.create_task(reader.get())
    await asyncio.sleep(0)
    reader.fail(RuntimeError("closed"))
    with pytest.raises(RuntimeError, match="closed"):
        await waiting
