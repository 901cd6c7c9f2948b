"""Replication on three real broker processes over the session's etcd, through raw stubs:
who answers what, acks=ALL with min in-sync replicas, the ISR shrinking and growing back.

The cluster kills what it started when the test ends (tests/broker_cluster.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from broker_calls import unique
from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.clients.errors import from_rpc_error
from geoplex.infra.local import BackendUrls

import polling  # tests/polling.py

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def cluster(backends: BackendUrls, tmp_path: Path) -> AsyncIterator[object]:
    from broker_cluster import BrokerCluster  # tests/broker_cluster.py

    assert backends.etcd_endpoints
    async with BrokerCluster(backends.etcd_endpoints, tmp_path, lease_s=2.0,
                             replica_lag_time_ms=1500) as running:
        await running.wait_healthy()
        yield running


def produce(topic: str, partition: int, value: bytes,
            acks: pb.Acks.ValueType = pb.ACKS_ALL) -> pb.ProduceRequest:
    return pb.ProduceRequest(topic=topic, partition=partition, acks=acks,
                             records=[pb.Record(value=value)])


async def test_metadata_leaders_and_not_leader_answers(cluster) -> None:  # noqa: ANN001
    topic = unique("meta")
    await cluster.create_topic(topic, 3, replication_factor=3, min_insync_replicas=2)
    view = await cluster.wait_healthy([topic])
    # any broker answers the same metadata: three brokers, a controller, leaders spread
    answers = [await cluster.stub(i).GetMetadata(pb.GetMetadataRequest(topics=[topic]))
               for i in cluster.ids]
    assert {a.answered_by for a in answers} == set(cluster.ids)
    for answer in answers:
        assert [b.id for b in answer.brokers] == cluster.ids
        assert answer.controller_id in cluster.ids
        (meta,) = answer.topics
        assert (meta.replication_factor, meta.min_insync_replicas) == (3, 2)
        assert sorted(p.leader_id for p in meta.partitions) == cluster.ids  # one each
        for part in meta.partitions:
            assert sorted(part.replicas) == cluster.ids and set(part.isr) == set(part.replicas)
    (meta,) = view.topics
    part = meta.partitions[0]
    follower = next(i for i in cluster.ids if i != part.leader_id)
    # a produce and a fetch at a follower name the leader, and change nothing
    for call in (cluster.stub(follower).Produce(produce(topic, 0, b"x")),
                 cluster.stub(follower).Fetch(pb.FetchRequest(topic=topic, partition=0))):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        error = from_rpc_error(caught.value)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error.reason == "NOT_LEADER"
        assert error.metadata["leader_id"] == str(part.leader_id)
        assert error.metadata["leader_address"] == cluster.advertised(part.leader_id)
    ends = await cluster.stub(part.leader_id).ListOffsets(
        pb.ListOffsetsRequest(topic=topic, partitions=[0]))
    assert ends.offsets[0].offset == 0
    # a group call away from its coordinator names the coordinator
    group = unique("g")
    where = await cluster.stub(1).GetMetadata(pb.GetMetadataRequest(group=group))
    other = next(i for i in cluster.ids if i != where.coordinator.id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cluster.stub(other).JoinGroup(pb.JoinGroupRequest(group=group, topics=[topic]))
    error = from_rpc_error(caught.value)
    assert error.reason == "NOT_COORDINATOR"
    assert error.metadata["coordinator_id"] == str(where.coordinator.id)


async def test_acks_all_needs_min_insync_replicas_and_recovers_with_them(cluster) -> None:  # noqa: ANN001
    topic = unique("isr")
    await cluster.create_topic(topic, 1, replication_factor=3, min_insync_replicas=2)
    await cluster.wait_healthy([topic])
    leader = await cluster.leader(topic, 0)
    stub = cluster.stub(leader)
    first = await stub.Produce(produce(topic, 0, b"before"))
    assert first.results[0].base_offset == 0
    followers = [i for i in cluster.ids if i != leader]

    async def isr() -> list[int]:
        meta = await stub.GetMetadata(pb.GetMetadataRequest(topics=[topic]))
        return list(meta.topics[0].partitions[0].isr)

    async def two_in_sync() -> bool:
        return len(await isr()) == 2

    async def leader_alone() -> bool:
        return len(await isr()) == 1

    async def other_leader() -> int:
        now = await cluster.leader(topic, 0)
        return now if now not in (leader, -1) else 0

    # one follower down: the ISR shrinks to two, and acks=ALL still works
    await cluster.kill(followers[0])
    shrunk: bool = await polling.eventually(two_in_sync, 30, what="the ISR shrinks to two")
    assert shrunk
    second = await stub.Produce(produce(topic, 0, b"two in sync"))
    assert second.results[0].base_offset == 1

    # both down: the ISR is the leader alone; acks=ALL is refused and writes nothing
    await cluster.kill(followers[1])
    alone_now: bool = await polling.eventually(leader_alone, 30, what="the ISR shrinks to one")
    assert alone_now
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Produce(produce(topic, 0, b"refused"))
    error = from_rpc_error(caught.value)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error.reason == "NOT_ENOUGH_REPLICAS"
    assert (error.metadata["in_sync"], error.metadata["needed"]) == ("1", "2")
    assert error.metadata["written"] == "false"
    ends = await stub.ListOffsets(pb.ListOffsetsRequest(topic=topic, partitions=[0]))
    assert ends.offsets[0].offset == 2
    # acks=LEADER is the leader's word alone, and is taken
    alone = await stub.Produce(produce(topic, 0, b"leader only", pb.ACKS_LEADER))
    assert alone.results[0].base_offset == 2

    # the followers come back, catch up, rejoin the ISR; acks=ALL works again
    await cluster.start(*followers)
    await cluster.wait_healthy([topic])
    assert sorted(await isr()) == cluster.ids
    third = await stub.Produce(produce(topic, 0, b"after"))
    assert third.results[0].base_offset == 3
    # every replica has every record: the followers' copies serve them after a failover
    await cluster.kill(leader)
    new_leader: int = await polling.eventually(other_leader, 30, what="a new leader")
    fetched = await cluster.stub(new_leader).Fetch(
        pb.FetchRequest(topic=topic, partition=0, offset=0))
    values = [r.value for b in fetched.batches for r in b.records]
    assert values == [b"before", b"two in sync", b"leader only", b"after"]



async def test_a_nack_on_a_cluster_dead_letters_through_the_replicated_path(cluster) -> None:  # noqa: ANN001
    topic, group = unique("nack"), unique("g")
    await cluster.create_topic(topic, 1, replication_factor=3, min_insync_replicas=2)
    await cluster.wait_healthy([topic])
    leader = cluster.stub(await cluster.leader(topic, 0))
    await leader.Produce(produce(topic, 0, b"poison"))
    where = await leader.GetMetadata(pb.GetMetadataRequest(group=group))
    coordinator = cluster.stub(where.coordinator.id)
    joined = await coordinator.JoinGroup(pb.JoinGroupRequest(group=group, topics=[topic]))
    assignment = await coordinator.SyncGroup(pb.SyncGroupRequest(
        group=group, member_id=joined.member_id, generation=joined.generation))
    assert assignment.generation == joined.generation
    nacked = await coordinator.Nack(pb.NackRequest(
        group=group, member_id=joined.member_id, generation=joined.generation, topic=topic,
        partition=0, offset=0, error="cannot parse", max_deliveries=1))
    assert nacked.dead_lettered
    dead = f"__dlq.{group}"
    # the dead-letter topic is replicated too, and its leader serves the record
    await cluster.wait_healthy([dead])
    dlq_leader = cluster.stub(await cluster.leader(dead, 0))
    fetched = await dlq_leader.Fetch(pb.FetchRequest(topic=dead, partition=0, offset=0))
    values = [r.value for b in fetched.batches for r in b.records]
    assert values == [b"poison"]
    meta = await dlq_leader.GetMetadata(pb.GetMetadataRequest(topics=[dead]))
    assert meta.topics[0].replication_factor == 3
