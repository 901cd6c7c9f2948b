"""Consumer groups over the wire: assignment, rebalances, fencing, committed offsets."""

from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio
import pytest

from broker_calls import (
    Assignment,
    Stub,
    error_info,
    join,
    make_topic,
    records,
    settle,
    unique,
)
from geoplex.broker.v1 import broker_pb2 as pb


def owned(assignments: dict[str, Assignment], topic: str) -> dict[str, set[int]]:
    return {m: set(a.get(topic, [])) for m, a in assignments.items()}


def assert_split(assignments: dict[str, Assignment], topic: str, partitions: int) -> None:
    """Every partition of ``topic`` to exactly one member, and every member gets some."""
    split = owned(assignments, topic)
    every = [p for parts in split.values() for p in parts]
    assert sorted(every) == list(range(partitions))
    assert all(split.values()), split


async def fill(stub: Stub, topic: str, partitions: int, count: int = 20) -> None:
    for p in range(partitions):
        await stub.Produce(pb.ProduceRequest(topic=topic, partition=p,
                                             records=records(*(str(i) for i in range(count)))))


async def test_members_split_partitions_and_rebalance_on_join_and_leave(stub: Stub) -> None:
    topic = await make_topic(stub, partitions=6)
    group = unique("g")
    a, gen_a = await join(stub, group, [topic])
    b, gen_b = await join(stub, group, [topic])
    generations = {a: gen_a, b: gen_b}

    two = await settle(stub, group, generations)
    assert_split(two, topic, 6)
    retry = f"__retry.{group}"
    assert sorted(p for m in two.values() for p in m.get(retry, [])) == [0]
    before = generations[a]

    c, gen_c = await join(stub, group, [topic])  # a third joins: a rebalance
    generations[c] = gen_c
    three = await settle(stub, group, generations)
    assert_split(three, topic, 6)
    assert generations[a] > before

    await stub.LeaveGroup(pb.LeaveGroupRequest(group=group, member_id=c))  # and leaves
    del generations[c]
    again = await settle(stub, group, generations)
    assert_split(again, topic, 6)
    described = await stub.DescribeGroup(pb.DescribeGroupRequest(group=group))
    assert sorted(m.member_id for m in described.members) == sorted([a, b])
    assert described.dead_letter_topic == f"__dlq.{group}"


async def test_a_stale_generation_commit_is_failed_precondition(stub: Stub) -> None:
    topic = await make_topic(stub, partitions=2)
    await fill(stub, topic, 2)
    group = unique("g")
    a, gen = await join(stub, group, [topic])
    generations = {a: gen}
    await settle(stub, group, generations)
    old = generations[a]
    b, gen_b = await join(stub, group, [topic])
    generations[b] = gen_b
    mine = (await settle(stub, group, generations))[a][topic]
    assert generations[a] > old

    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.CommitOffsets(pb.CommitOffsetsRequest(
            group=group, member_id=a, generation=old,
            offsets=[pb.PartitionOffset(topic=topic, partition=mine[0], offset=1)]))
    assert excinfo.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(excinfo.value).reason == "STALE_GENERATION"

    done = await stub.CommitOffsets(pb.CommitOffsetsRequest(
        group=group, member_id=a, generation=generations[a],
        offsets=[pb.PartitionOffset(topic=topic, partition=mine[0], offset=1)]))
    assert [o.offset for o in done.offsets] == [1]


async def test_a_partition_the_member_does_not_own_is_not_committed(stub: Stub) -> None:
    topic = await make_topic(stub, partitions=2)
    await fill(stub, topic, 2)
    group = unique("g")
    a, gen_a = await join(stub, group, [topic])
    b, gen_b = await join(stub, group, [topic])
    generations = {a: gen_a, b: gen_b}
    theirs = (await settle(stub, group, generations))[b][topic][0]
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.CommitOffsets(pb.CommitOffsetsRequest(
            group=group, member_id=a, generation=generations[a],
            offsets=[pb.PartitionOffset(topic=topic, partition=theirs, offset=1)]))
    assert excinfo.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_committed_offsets_never_go_backwards_unless_reset(stub: Stub) -> None:
    topic = await make_topic(stub, partitions=1)
    await fill(stub, topic, 1, count=20)
    group = unique("g")
    a, gen = await join(stub, group, [topic])
    generations = {a: gen}
    await settle(stub, group, generations)

    def commit(offset: int) -> pb.CommitOffsetsRequest:
        return pb.CommitOffsetsRequest(
            group=group, member_id=a, generation=generations[a],
            offsets=[pb.PartitionOffset(topic=topic, partition=0, offset=offset)])

    assert [o.offset for o in (await stub.CommitOffsets(commit(10))).offsets] == [10]
    assert [o.offset for o in (await stub.CommitOffsets(commit(4))).offsets] == [10]
    got = await stub.GetCommittedOffsets(pb.GetCommittedOffsetsRequest(group=group))
    assert [(o.topic, o.partition, o.offset) for o in got.offsets] == [(topic, 0, 10)]
    described = await stub.DescribeGroup(pb.DescribeGroupRequest(group=group))
    lag = {(x.topic, x.partition): x for x in described.lag}
    assert (lag[(topic, 0)].committed_offset, lag[(topic, 0)].lag,
            lag[(topic, 0)].member_id) == (10, 10, a)

    with pytest.raises(grpc.aio.AioRpcError) as excinfo:  # members: no reset
        await stub.ResetOffsets(pb.ResetOffsetsRequest(group=group, topic=topic,
                                                       to=pb.RESET_TO_EARLIEST))
    assert excinfo.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    await stub.LeaveGroup(pb.LeaveGroupRequest(group=group, member_id=a))
    reset = await stub.ResetOffsets(pb.ResetOffsetsRequest(group=group, topic=topic,
                                                           to=pb.RESET_TO_OFFSET, offset=3))
    assert [o.offset for o in reset.offsets] == [3]
    outside = await stub.CommitOffsets(pb.CommitOffsetsRequest(  # a tool's commit: no member
        group=group, offsets=[pb.PartitionOffset(topic=topic, partition=0, offset=2)]))
    assert [o.offset for o in outside.offsets] == [3]
    listed = await stub.ListGroups(pb.ListGroupsRequest(page_size=1000))
    assert group in listed.groups


async def test_a_member_that_stops_heartbeating_leaves_after_its_session(stub: Stub) -> None:
    topic = await make_topic(stub, partitions=2)
    group = unique("g")
    a, gen_a = await join(stub, group, [topic], session_ms=1000)
    b, gen_b = await join(stub, group, [topic])
    generations = {a: gen_a, b: gen_b}
    await settle(stub, group, generations)

    deadline = time.monotonic() + 20
    while True:  # b heartbeats, a is silent
        beat = await stub.Heartbeat(pb.HeartbeatRequest(group=group, member_id=b,
                                                        generation=generations[b]))
        described = await stub.DescribeGroup(pb.DescribeGroupRequest(group=group))
        if [m.member_id for m in described.members] == [b] and beat.rebalance:
            break
        assert time.monotonic() < deadline, described
        await asyncio.sleep(0.1)  # b's next heartbeat
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Heartbeat(pb.HeartbeatRequest(group=group, member_id=a,
                                                 generation=generations[a]))
    assert excinfo.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(excinfo.value).reason == "UNKNOWN_MEMBER"
    del generations[a]
    alone = await settle(stub, group, {b: generations[b]})
    assert sorted(alone[b][topic]) == [0, 1]


async def test_joining_an_unknown_topic_is_not_found(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await join(stub, unique("g"), [unique("missing")])
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
