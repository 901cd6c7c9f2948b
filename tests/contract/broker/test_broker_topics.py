"""Topics over the wire: create, list, get, delete, and the bad requests around them."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import grpc.aio
import pytest

from broker_calls import Stub, bad_field, error_info, make_topic, ms, records, unique
from geoplex.broker.v1 import broker_pb2 as pb


async def test_a_created_topic_is_listed_got_and_deleted(stub: Stub) -> None:
    name = await make_topic(stub, partitions=3,
                            config=pb.TopicConfig(retention=ms(3_600_000)))

    got = await stub.GetTopic(pb.GetTopicRequest(name=name))
    assert got.topic.name == name and got.topic.partitions == 3
    assert got.topic.config.retention.ToSeconds() == 3600
    assert got.topic.config.max_message_bytes == 1 << 20  # the default, filled in
    assert [(p.partition, p.log_start_offset, p.log_end_offset) for p in got.partitions] == [
        (0, 0, 0), (1, 0, 0), (2, 0, 0)]
    listed = await stub.ListTopics(pb.ListTopicsRequest(page_size=1000))
    assert name in [t.name for t in listed.topics]

    await stub.DeleteTopic(pb.DeleteTopicRequest(name=name))

    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.GetTopic(pb.GetTopicRequest(name=name))
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListTopics(pb.ListTopicsRequest(page_size=1000))
    assert name not in [t.name for t in listed.topics]


async def test_topics_are_listed_in_name_order_page_by_page(stub: Stub) -> None:
    prefix = unique("page")
    names = [await make_topic(stub, name=f"{prefix}-{i}") for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListTopics(pb.ListTopicsRequest(page_size=2, page_token=token))
        assert len(page.topics) <= 2
        seen.extend(t.name for t in page.topics)
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(seen)
    assert [n for n in seen if n.startswith(prefix)] == names


async def test_a_duplicate_topic_is_already_exists(stub: Stub) -> None:
    name = await make_topic(stub)
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await make_topic(stub, name=name)
    assert excinfo.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(("topic", "field"), [
    (pb.Topic(name="zero-partitions", partitions=0), "topic.partitions"),
    (pb.Topic(name="negative", partitions=-3), "topic.partitions"),
    (pb.Topic(name="bad name!", partitions=1), "topic.name"),
    (pb.Topic(name="__retry.mine", partitions=1), "topic.name"),
    (pb.Topic(name="neg-retention", partitions=1,
              config=pb.TopicConfig(retention=ms(-1000))), "topic.config.retention"),
])
async def test_a_bad_topic_is_invalid_argument_naming_the_field(
        stub: Stub, topic: pb.Topic, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.CreateTopic(pb.CreateTopicRequest(topic=topic))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(excinfo.value) == field
    assert (excinfo.value.details() or "").startswith(field)


async def test_zero_partitions_says_the_allowed_range(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.CreateTopic(pb.CreateTopicRequest(topic=pb.Topic(name=unique(),
                                                                    partitions=0)))
    assert "1..1024" in (excinfo.value.details() or "")


async def test_an_unknown_topic_is_not_found_everywhere(stub: Stub) -> None:
    missing = unique("missing")
    calls: list[Awaitable[object]] = [
        stub.GetTopic(pb.GetTopicRequest(name=missing)),
        stub.DeleteTopic(pb.DeleteTopicRequest(name=missing)),
        stub.Produce(pb.ProduceRequest(topic=missing, records=records("x"))),
        stub.Fetch(pb.FetchRequest(topic=missing)),
        stub.ListOffsets(pb.ListOffsetsRequest(topic=missing)),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await call
        assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(excinfo.value).reason == "UNKNOWN_TOPIC"


async def test_a_partition_outside_the_topic_is_not_found(stub: Stub) -> None:
    name = await make_topic(stub, partitions=2)
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Produce(pb.ProduceRequest(topic=name, partition=2, records=records("x")))
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(excinfo.value).reason == "UNKNOWN_PARTITION"
