"""Retention with its time configured down: old segments go, the log start advances, and a
fetch below it is OUT_OF_RANGE saying where the log starts now."""

from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio
import pytest

from broker_calls import Stub, error_info, make_topic, ms, records, values_of
from geoplex.broker.v1 import broker_pb2 as pb


async def test_retention_deletes_old_segments_and_the_log_start_advances(stub: Stub) -> None:
    # every batch its own segment (segment_bytes 1); kept for 1 s; the broker under test
    # checks retention every 0.2 s (GEOPLEX_BROKER_RETENTION_CHECK_SECONDS)
    topic = await make_topic(stub, config=pb.TopicConfig(
        retention=ms(1000), segment_bytes=1, segment_age=ms(100)))
    for n in range(5):
        await stub.Produce(pb.ProduceRequest(topic=topic, partition=0,
                                             records=records(f"old-{n}")))
    got = await stub.GetTopic(pb.GetTopicRequest(name=topic))
    assert got.partitions[0].segments >= 5

    deadline = time.monotonic() + 30
    while True:
        got = await stub.GetTopic(pb.GetTopicRequest(name=topic))
        if got.partitions[0].log_start_offset == 5:
            break
        assert time.monotonic() < deadline, got.partitions[0]
        await asyncio.sleep(0.1)  # the next look at the partition

    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Fetch(pb.FetchRequest(topic=topic, partition=0, offset=0))
    assert excinfo.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert error_info(excinfo.value).metadata["log_start_offset"] == "5"

    await stub.Produce(pb.ProduceRequest(topic=topic, partition=0, records=records("new")))
    fresh = await stub.Fetch(pb.FetchRequest(topic=topic, partition=0, offset=5))
    assert values_of(fresh) == ["new"] and fresh.log_start_offset == 5
