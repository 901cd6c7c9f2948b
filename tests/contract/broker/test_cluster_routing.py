"""The SDK's cluster routing against real brokers: the session's single broker (a cluster
of one, as part 1 left it), bootstrapped with dead addresses in the list; and a cluster of
three broker processes (tests/broker_cluster.py) whose partition leader and group
coordinator are killed while a producer and a consumer work."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.clients.broker import Acks, BrokerClient, ConsumedRecord
from geoplex.clients.channel import ChannelOptions
from geoplex.clients.errors import FailedPreconditionError
from geoplex.infra.local import BackendUrls

import polling  # tests/polling.py
from broker_calls import unique


def dead_address() -> str:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def geoplex(target: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "geoplex.tools.cli", "broker", *argv,
                           "--target", target], capture_output=True, text=True, timeout=60,
                          check=False)


# -- one broker ---------------------------------------------------------------------------

async def test_the_metadata_of_a_single_broker_lists_it_leading_every_partition(
        client, broker_address):
    topic = unique("meta")
    await client.create_topic(topic, 3)
    meta = await client.get_metadata([topic], group=unique("g"))
    (node,) = meta.brokers
    assert node.address == broker_address
    assert meta.answered_by == node.id and meta.controller_id == node.id
    assert meta.coordinator.id == node.id and meta.coordinator.address == broker_address
    (described,) = meta.topics
    assert described.name == topic and described.replication_factor == 1
    assert [p.partition for p in described.partitions] == [0, 1, 2]
    for part in described.partitions:
        assert part.leader_id == node.id and part.leader_epoch >= 0
        assert list(part.replicas) == [node.id] and list(part.isr) == [node.id]
    route = client.router.route(topic, 1)  # the answer filled the client's cache
    assert route is not None and route.leader_address == broker_address


async def test_everything_works_with_dead_addresses_first_in_the_bootstrap_list(
        broker_address):
    target = f"{dead_address()},{dead_address()},{broker_address}"
    async with BrokerClient(target, ChannelOptions(timeout=10.0)) as client:
        topic, group = unique("dead-first"), unique("g")
        created = await client.create_topic(topic, 2, replication_factor=1,
                                            min_insync_replicas=1)
        assert created.partitions == 2
        names = [t.name for t in (await client.list_topics(page_size=1000)).topics]
        assert topic in names
        keyed = await client.produce(topic, [pb.Record(key=b"k%d" % i, value=b"v%d" % i)
                                             for i in range(10)])
        assert sum(r.record_count for r in keyed.results) == 10
        await client.produce(topic, [pb.Record(value=b"direct")], partition=1,
                             producer_id=4242, base_sequence=0)
        async with client.producer(acks=Acks.ALL, linger_ms=1) as producer:
            sent = [await producer.send(topic, b"p%d" % i, key=b"k%d" % (i % 3))
                    for i in range(100)]
        assert all(s.exception() is None for s in sent)
        ends = await client.list_offsets(topic)
        assert sum(ends.values()) == 111
        read = [[r async for r in client.read(topic, p, 0, until_end=True)] for p in (0, 1)]
        assert sum(map(len, read)) == 111

        got: list[ConsumedRecord] = []
        async with client.consumer(group, [topic], auto_offset_reset="earliest") as consumer:
            async for record in consumer:
                got.append(record)
                if len(got) == 111:
                    break
        committed = await client.get_committed_offsets(group, [topic])
        assert committed == {(topic, p): o for p, o in ends.items()}
        assert (await client.describe_group(group)).group == group
        assert group in (await client.list_groups(page_size=1000)).groups
        await client.delete_topic(topic)
        assert client.router.candidates()[0] == broker_address  # the dead ones go last
        assert len(client.router.brokers) == 1


async def test_the_cli_shows_the_cluster_and_creates_replicated_topics(broker_address):
    target = f"{dead_address()},{broker_address}"
    topic = unique("cli-cluster")
    done = geoplex(target, "topics", "create", topic, "--partitions", "2",
                   "--replication-factor", "1", "--min-insync-replicas", "1")
    assert done.returncode == 0, done.stderr
    assert "1 replicas each" in done.stdout
    too_many = geoplex(target, "topics", "create", unique("cli-rf"), "--partitions", "1",
                       "--replication-factor", "2")
    assert too_many.returncode == 1 and "replication_factor" in too_many.stderr

    shown = geoplex(target, "cluster", "--json", "--topic", topic)
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    (node,) = view["brokers"]
    assert node["address"] == broker_address and node["controller"]
    (described,) = view["topics"]
    assert [p["leader"] for p in described["partitions"]] == [node["id"]] * 2
    for part in described["partitions"]:
        assert [r["broker"] for r in part["replica_states"]] == [node["id"]]
        assert part["replica_states"][0]["lag"] == 0

    table = geoplex(target, "cluster")
    assert table.returncode == 0, table.stderr
    assert "controller" in table.stdout and "isr" in table.stdout and topic in table.stdout
    helped = subprocess.run([sys.executable, "-m", "geoplex.tools.cli", "broker", "cluster",
                             "--help"], capture_output=True, text=True, check=True)
    assert "leader" in helped.stdout and "lag" in helped.stdout


async def test_more_replicas_than_brokers_is_refused_naming_both_numbers(client):
    with pytest.raises(FailedPreconditionError) as caught:
        await client.create_topic(unique("rf"), 1, replication_factor=3)
    assert "3" in caught.value.message and "1" in caught.value.message


# -- three brokers ------------------------------------------------------------------------

@pytest.mark.timeout(240)
async def test_producer_consumer_and_group_calls_follow_leader_and_coordinator_changes(
        backends: BackendUrls, tmp_path: Path):
    from broker_cluster import BrokerCluster  # tests/broker_cluster.py

    assert backends.etcd_endpoints
    async with BrokerCluster(backends.etcd_endpoints, tmp_path, lease_s=2.0) as cluster:
        await cluster.wait_healthy()
        target = ",".join([dead_address(), *(cluster.address(i) for i in cluster.ids)])
        async with BrokerClient(target, ChannelOptions(timeout=15.0)) as client:
            topic, group = unique("moving"), unique("g")
            await client.create_topic(topic, 2, replication_factor=3, min_insync_replicas=2)
            await cluster.wait_healthy([topic])
            assert len((await client.get_metadata([topic])).brokers) == 3

            # 1. the leader of partition 0 is killed while the producer writes to it
            async with client.producer(acks=Acks.ALL, linger_ms=1, batch_records=20
                                       ) as producer:
                before = [await producer.send(topic, b"a%d" % i, partition=0)
                          for i in range(200)]
                await producer.flush()
                leader = await cluster.leader(topic, 0)
                await cluster.kill(leader)
                after = [await producer.send(topic, b"b%d" % i, partition=0)
                         for i in range(200)]
            assert [(await f).offset for f in before + after] == list(range(400))
            assert producer.stats.records_failed == 0
            values = [r.value async for r in client.read(topic, 0, 0, until_end=True)]
            assert values == [b"a%d" % i for i in range(200)] + [b"b%d" % i for i in range(200)]
            moved = client.router.route(topic, 0)
            assert moved is not None and moved.leader_id not in (leader, -1)
            await cluster.start(leader)
            await cluster.wait_healthy([topic])

            # 2. the group's coordinator is killed while a consumer reads
            got: list[bytes] = []
            consumer = client.consumer(group, [topic], auto_offset_reset="earliest",
                                       auto_commit_interval=0.2, session_timeout=6.0)

            async def collect() -> None:
                async for record in consumer:
                    got.append(record.value)

            async def all_committed() -> bool:
                committed = await client.get_committed_offsets(group, [topic])
                ends = await client.list_offsets(topic)
                return all(committed.get((topic, p), 0) == o for p, o in ends.items())

            async with consumer:
                reading = asyncio.create_task(collect())
                await polling.eventually(lambda: len(got) == 400, 60, what="all 400 read")
                committed: bool = await polling.eventually(all_committed, 30,
                                                           what="the 400 committed")
                address = client.router.coordinator_address(group)
                (coordinator,) = [i for i in cluster.ids if cluster.address(i) == address]
                await cluster.kill(coordinator)
                async with client.producer(acks=Acks.ALL, linger_ms=1) as producer:
                    late = [await producer.send(topic, b"c%d" % i) for i in range(100)]
                assert all(f.exception() is None for f in late)
                await polling.eventually(
                    lambda: consumer.stats.rejoins >= 1
                    and {b"c%d" % i for i in range(100)} <= set(got), 90,
                    what="the consumer joined the new coordinator and read on")
                committed = await polling.eventually(all_committed, 30,
                                                     what="commits at the new one")
                assert committed
                reading.cancel()
            assert client.router.coordinator_address(group) not in (None, address)
            first = [v for v in got if not v.startswith(b"c")]
            assert len(first) == len(set(first)) == 400  # committed before: not read again
