"""The controller end to end on a real etcd, with three "brokers" that are only their
registrations (an EtcdCluster each, no gRPC) and a Controller each, as in a real cluster.

A broker is killed by stopping its keep-alive and controller and revoking its lease (as
etcd does a TTL after its last keep-alive); it restarts as a new process would: a new
incarnation registered before the old lease has expired.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest
from etcd3aio import Etcd3Client, prefix_range_end
from polling import eventually

from geoplex.infra.local import BackendUrls
from geoplex.servers.broker.adapters.etcd_cluster import EtcdCluster
from geoplex.servers.broker.adapters.etcd_meta import EtcdMeta
from geoplex.servers.broker.controller import Controller, initial_assignments, plan_topic
from geoplex.servers.broker.domain import BrokerInfo, PartitionAssignment, TopicSpec

LEASE_S = 2.0
WITHIN_S = 10.0  # "within seconds": a lease of 2 s plus a keep-alive round or two


@dataclass
class Node:
    """One fake broker: its registration and its controller loop."""

    meta: EtcdMeta
    info: BrokerInfo
    cluster: EtcdCluster = field(init=False)
    controller: Controller = field(init=False)
    task: asyncio.Task[None] | None = None

    async def start(self) -> Node:
        self.cluster = EtcdCluster(self.meta)
        await self.cluster.register(self.info, LEASE_S)
        self.controller = Controller(self.cluster, self.info)
        self.task = asyncio.create_task(self.controller.run(), name=f"controller {self.info.id}")
        return self

    async def stop(self) -> None:
        """As the process dies: the keep-alive and the controller stop (the lease stays)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        await self.cluster.aclose()

    async def restart(self) -> None:
        await self.stop()
        self.info = replace(self.info, incarnation=uuid.uuid4().hex)
        await self.start()


@pytest.fixture
async def meta(backends: BackendUrls) -> AsyncIterator[EtcdMeta]:
    assert backends.etcd_endpoints
    prefix = f"/test-controller-{uuid.uuid4().hex[:12]}"
    store = EtcdMeta(backends.etcd_endpoints, prefix=prefix)
    await store.connect()
    yield store
    assert store.client.kv is not None
    await store.client.kv.delete(prefix + "/", range_end=prefix_range_end(prefix + "/"))
    await store.aclose()


@pytest.fixture
async def other(backends: BackendUrls) -> AsyncIterator[Etcd3Client]:
    assert backends.etcd_endpoints
    async with Etcd3Client(list(backends.etcd_endpoints)) as client:
        yield client


@pytest.fixture
async def nodes(meta: EtcdMeta) -> AsyncIterator[dict[int, Node]]:
    started: dict[int, Node] = {}
    try:
        for i in (1, 2, 3):
            info = BrokerInfo(i, f"127.0.0.1:{50053 + 100 * (i - 1)}", uuid.uuid4().hex,
                              int(time.time() * 1000))
            started[i] = await Node(meta, info).start()
        yield started
    finally:
        for node in started.values():
            if node.task is not None:
                await node.stop()
                await node.cluster.deregister()


async def kill(node: Node, other: Etcd3Client) -> None:
    lease = node.cluster.lease_id
    await node.stop()
    assert other.lease is not None
    await other.lease.revoke(lease)


async def the_controller(nodes: dict[int, Node], among: set[int] | None = None) -> Node:
    def elected() -> list[Node]:
        return [n for i, n in nodes.items() if n.controller.is_controller and
                n.task is not None and (among is None or i in among)]
    await eventually(lambda: len(elected()) == 1, WITHIN_S, what="one controller")
    return elected()[0]


async def create(node: Node, name: str, partitions: int = 3) -> list[PartitionAssignment]:
    """RF 3 from broker 1: partition p led by broker p + 1, the others following in order."""
    spec = TopicSpec(name, partitions, replication_factor=3)
    live = await node.cluster.brokers()
    assignments = plan_topic(spec, live, start=0)
    await node.cluster.create_topic(spec, assignments)
    return await node.cluster.assignments(name)


def state(a: PartitionAssignment) -> tuple[int, int, tuple[int, ...]]:
    return a.leader, a.leader_epoch, a.isr


async def states_become(node: Node, name: str,
                        expected: dict[int, tuple[int, int, tuple[int, ...]]],
                        what: str) -> list[PartitionAssignment]:
    found: list[PartitionAssignment] = []

    async def check() -> bool:
        found[:] = await node.cluster.assignments(name)
        return {a.partition: state(a) for a in found} == expected
    settled: bool = await eventually(check, WITHIN_S, what=what)
    assert settled
    return found


async def test_a_killed_brokers_partitions_are_led_by_the_next_isr_replica(
        nodes: dict[int, Node], other: Etcd3Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="geoplex.servers.broker.controller")
    controller = await the_controller(nodes)
    assert controller.controller.info is not None and controller.controller.info.epoch == 1
    before = await create(controller, "orders")
    assert [a.replicas for a in before] == [(1, 2, 3), (2, 3, 1), (3, 1, 2)]
    victim = next(i for i in nodes if nodes[i] is not controller)

    await kill(nodes[victim], other)

    expected = {}
    for a in before:
        rest = tuple(r for r in a.replicas if r != victim)
        isr = tuple(r for r in a.isr if r != victim)
        expected[a.partition] = (rest[0], 1, isr) if a.leader == victim else (a.leader, 0, isr)
    after = await states_become(controller, "orders", expected, "re-led without the victim")
    moved = next(a for a in after if a.leader_epoch == 1)
    assert moved.leader_incarnation == nodes[moved.leader].info.incarnation
    assert moved.controller_epoch == 1
    line = f"orders-{moved.partition}: leader {victim} -> {moved.leader} (leader epoch 1"
    # logged once the write is answered: maybe just after the state was read
    await eventually(lambda: line in caplog.text, WITHIN_S, what="the leader change logged")


async def test_a_restarted_broker_no_longer_leads_what_it_led(nodes: dict[int, Node]) -> None:
    controller = await the_controller(nodes)
    before = await create(controller, "orders")
    victim = next(i for i in nodes if nodes[i] is not controller)

    await nodes[victim].restart()  # a new process, registered before its old lease expired

    expected = {}
    for a in before:
        if a.leader == victim:
            expected[a.partition] = (next(r for r in a.replicas if r != victim), 1, a.isr)
        else:
            expected[a.partition] = state(a)
    await states_become(controller, "orders", expected, "re-led away from the restarted")


async def test_when_the_controller_dies_another_takes_over_and_re_leads(
        nodes: dict[int, Node], other: Etcd3Client) -> None:
    first = await the_controller(nodes)
    before = await create(first, "orders")
    dead = first.info.id

    await kill(first, other)

    second = await the_controller(nodes, among=set(nodes) - {dead})
    assert second.controller.info is not None and second.controller.info.epoch == 2
    expected = {}
    for a in before:
        rest = tuple(r for r in a.isr if r != dead)
        expected[a.partition] = (rest[0], 1, rest) if a.leader == dead else (a.leader, 0, rest)
    after = await states_become(second, "orders", expected, "re-led by the new controller")
    assert {a.controller_epoch for a in after if a.leader_epoch == 1} == {2}


async def test_a_new_topic_whose_leader_is_not_alive_gets_a_live_one(
        nodes: dict[int, Node]) -> None:
    controller = await the_controller(nodes)
    spec = TopicSpec("late", 1, replication_factor=3)
    absent = BrokerInfo(9, "127.0.0.1:1", "gone-already")
    live = await controller.cluster.brokers()
    assignments = initial_assignments(spec, [(9, 1, 2)], {**live, 9: absent})

    await controller.cluster.create_topic(spec, assignments)

    await states_become(controller, "late", {0: (1, 1, (1, 2))}, "re-led to a live broker")
