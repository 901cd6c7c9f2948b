"""The cluster store on a real etcd: registration and its lease, the controller election,
partition assignments (compare-and-swap) and the watches.

Each test works under its own key prefix on the session's etcd and removes it afterwards.
Leases are the shortest etcd grants (2 s), so the tests see them expire or be renewed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest
from etcd3aio import Etcd3Client, prefix_range_end
from polling import eventually

from geoplex.infra.local import BackendUrls, free_port
from geoplex.servers.broker.adapters.etcd_cluster import EtcdCluster
from geoplex.servers.broker.adapters.etcd_meta import EtcdMeta
from geoplex.servers.broker.controller import initial_assignments, place_replicas
from geoplex.servers.broker.domain import (
    BrokerInfo,
    ControllerInfo,
    MetadataUnavailable,
    PartitionAssignment,
    StaleAssignment,
    TopicExists,
    TopicSpec,
)
from geoplex.servers.broker.ports import ClusterStore

HANG_GUARD_S = 30  # a bound on a wait that must end, far above any expected duration
LEASE_S = 2.0
WITHIN_S = 10.0  # "within seconds": a lease of 2 s plus a keep-alive round or two

Change = PartitionAssignment | tuple[str, int]
MakeCluster = Callable[[int], Awaitable[tuple[EtcdCluster, BrokerInfo]]]


def port_of(cluster: EtcdCluster) -> ClusterStore:
    return cluster  # the adapter implements the port (checked by mypy)


def broker(i: int) -> BrokerInfo:
    return BrokerInfo(i, f"127.0.0.1:{50053 + 100 * (i - 1)}", uuid.uuid4().hex,
                      int(time.time() * 1000))


@pytest.fixture
async def meta(backends: BackendUrls) -> AsyncIterator[EtcdMeta]:
    assert backends.etcd_endpoints
    prefix = f"/test-cluster-{uuid.uuid4().hex[:12]}"
    store = EtcdMeta(backends.etcd_endpoints, prefix=prefix)
    await store.connect()
    yield store
    assert store.client.kv is not None
    await store.client.kv.delete(prefix + "/", range_end=prefix_range_end(prefix + "/"))
    await store.aclose()


@pytest.fixture
async def other(backends: BackendUrls) -> AsyncIterator[Etcd3Client]:
    """Another etcd client: what an operator, or etcd itself, does to our keys."""
    assert backends.etcd_endpoints
    async with Etcd3Client(list(backends.etcd_endpoints)) as client:
        yield client


@pytest.fixture
async def make_cluster(meta: EtcdMeta) -> AsyncIterator[MakeCluster]:
    """A registered broker's store (on the shared connection); all closed at the end."""
    made: list[EtcdCluster] = []

    async def make(i: int) -> tuple[EtcdCluster, BrokerInfo]:
        cluster, info = EtcdCluster(meta), broker(i)
        made.append(cluster)
        await cluster.register(info, LEASE_S)
        return cluster, info

    yield make
    for cluster in made:
        await cluster.deregister()
        await cluster.aclose()


async def revoke(other: Etcd3Client, lease_id: int) -> None:
    assert other.lease is not None and lease_id
    await other.lease.revoke(lease_id)


def topic(name: str, partitions: int, brokers: dict[int, BrokerInfo],
          replication: int = 2) -> tuple[TopicSpec, list[PartitionAssignment]]:
    spec = TopicSpec(name, partitions, replication_factor=replication)
    placed = place_replicas(partitions, replication, list(brokers), start=0)
    return spec, initial_assignments(spec, placed, brokers)


def unversioned(assignments: list[PartitionAssignment]) -> list[PartitionAssignment]:
    return [replace(a, version=0) for a in assignments]


async def changes_until(watch: AsyncGenerator[list[Change], None],
                        done: Callable[[list[Change]], bool]) -> list[Change]:
    seen: list[Change] = []
    async with asyncio.timeout(HANG_GUARD_S):
        while not done(seen):
            seen += await anext(watch)
    return seen


# ---- registration ---------------------------------------------------------------------

async def test_a_kept_alive_registration_outlives_twice_its_ttl(make_cluster: MakeCluster
                                                                 ) -> None:
    cluster, me = await make_cluster(1)
    lease, deadline = cluster.lease_id, cluster.fence_deadline
    assert await cluster.brokers() == {1: me}
    assert time.monotonic() < deadline <= time.monotonic() + LEASE_S

    end = time.monotonic() + 2 * LEASE_S + 1
    while time.monotonic() < end:  # sampled: the key must never be missing meanwhile
        assert await cluster.brokers() == {1: me}
        await asyncio.sleep(0.2)  # the sampling interval

    assert cluster.lease_id == lease
    assert cluster.fence_deadline > deadline + LEASE_S  # the keep-alives moved it on
    assert cluster.fence_deadline > time.monotonic()


async def test_a_lost_lease_is_replaced_and_the_broker_registers_again_by_itself(
        make_cluster: MakeCluster, other: Etcd3Client) -> None:
    cluster, me = await make_cluster(1)
    lease, deadline = cluster.lease_id, cluster.fence_deadline

    await revoke(other, lease)  # as etcd does when keep-alives stop for a TTL

    await eventually(lambda: cluster.lease_id not in (lease, 0), WITHIN_S,
                     what="a new lease")
    async def registered_again() -> bool:
        return await cluster.brokers() == {1: me}
    again: bool = await eventually(registered_again, WITHIN_S, what="registered again")
    assert again
    assert cluster.fence_deadline > deadline


async def test_deregistering_removes_the_key_at_once(make_cluster: MakeCluster) -> None:
    cluster, me = await make_cluster(1)
    second, you = await make_cluster(2)

    await cluster.deregister()

    assert await second.brokers() == {2: you}
    assert (cluster.fence_deadline, cluster.lease_id) == (0.0, 0)


async def test_the_broker_watch_yields_the_live_set_on_every_change(
        meta: EtcdMeta, make_cluster: MakeCluster) -> None:
    watcher = EtcdCluster(meta)
    watch = watcher.watch_brokers()
    async with asyncio.timeout(HANG_GUARD_S):
        assert await anext(watch) == {}
        first, one = await make_cluster(1)
        assert await anext(watch) == {1: one}
        _, two = await make_cluster(2)
        assert await anext(watch) == {1: one, 2: two}
        # a restart: the same id, a new process, before the old lease expired
        await first.aclose()
        restarted = EtcdCluster(meta)
        again = replace(one, incarnation=uuid.uuid4().hex)
        await restarted.register(again, LEASE_S)
        assert await anext(watch) == {1: again, 2: two}
        await restarted.deregister()
        assert await anext(watch) == {2: two}
    await watch.aclose()


# ---- the controller election ----------------------------------------------------------

async def test_one_of_two_campaigners_wins_and_the_other_takes_over_when_it_goes(
        make_cluster: MakeCluster, other: Etcd3Client) -> None:
    (c1, b1), (c2, b2) = await make_cluster(1), await make_cluster(2)
    spec, assignments = topic("orders", 1, {1: b1, 2: b2})
    await c1.create_topic(spec, assignments)
    stored = (await c1.assignments("orders"))[0]
    watch = c1.watch_controller()
    assert await anext(watch) is None
    campaigns = {asyncio.create_task(c1.campaign(b1)): c1,
                 asyncio.create_task(c2.campaign(b2)): c2}

    done, pending = await asyncio.wait(campaigns, timeout=HANG_GUARD_S,
                                       return_when=asyncio.FIRST_COMPLETED)

    assert len(done) == 1 and len(pending) == 1
    won_task, lost_task = done.pop(), pending.pop()
    winner, loser = campaigns[won_task], campaigns[lost_task]
    first = won_task.result()
    assert winner.registered is not None and loser.registered is not None
    assert first.epoch == 1 and first.id == winner.registered.id
    assert await c1.controller() == first
    async with asyncio.timeout(HANG_GUARD_S):
        assert await anext(watch) == first
    assert not lost_task.done()

    await revoke(other, winner.lease_id)  # the winner's lease ends: so does its election

    second = await asyncio.wait_for(lost_task, WITHIN_S)
    assert second.id == loser.registered.id and second.epoch == 2
    async with asyncio.timeout(HANG_GUARD_S):
        while (seen := await anext(watch)) != second:
            assert seen is None  # deleted, then the new one
    await watch.aclose()
    moved = replace(stored, leader=stored.isr[1], leader_epoch=1, controller_epoch=1)
    with pytest.raises(StaleAssignment) as refused:
        await winner.update_assignment(moved, controller=first)
    assert refused.value.current == stored  # the deposed controller changed nothing
    updated = await loser.update_assignment(replace(moved, controller_epoch=2),
                                            controller=second)
    assert updated.version > stored.version
    with pytest.raises(StaleAssignment):  # nor can it write with the new epoch
        await winner.update_assignment(replace(updated, isr=(updated.leader,)),
                                       controller=second)


async def test_a_campaign_retried_by_the_winner_finds_its_own_election(
        make_cluster: MakeCluster) -> None:
    cluster, me = await make_cluster(1)
    first = await cluster.campaign(me)

    assert await asyncio.wait_for(cluster.campaign(me), HANG_GUARD_S) == first
    assert first == ControllerInfo(1, 1, me.incarnation)


async def test_a_campaign_waits_for_the_brokers_registration(meta: EtcdMeta) -> None:
    cluster, me = EtcdCluster(meta), broker(1)
    campaign = asyncio.create_task(cluster.campaign(me))
    try:
        await asyncio.sleep(0)  # the campaign starts before the registration
        assert not campaign.done()
        await cluster.register(me, LEASE_S)

        assert await asyncio.wait_for(campaign, HANG_GUARD_S) == ControllerInfo(
            1, 1, me.incarnation)
        with pytest.raises(ValueError, match="broker"):
            await cluster.campaign(broker(2))
    finally:
        campaign.cancel()
        await cluster.deregister()


# ---- assignments ----------------------------------------------------------------------

async def test_a_topic_and_its_assignments_are_created_together(meta: EtcdMeta) -> None:
    cluster = EtcdCluster(meta)
    brokers = {i: broker(i) for i in (1, 2, 3)}
    spec, assignments = topic("orders", 3, brokers, replication=3)

    created = await cluster.create_topic(spec, assignments)

    assert created.create_time_ms > 0
    assert [t.name for t in await meta.topics.list()] == ["orders"]
    stored = await cluster.assignments("orders")
    assert unversioned(stored) == assignments
    assert all(a.version > 0 for a in stored) and await cluster.assignments() == stored
    with pytest.raises(TopicExists):
        await cluster.create_topic(replace(created, partitions=1), assignments[:1])
    assert await cluster.create_topic(created, assignments) == created  # a retry: its own


async def test_a_topic_of_many_partitions_fits_one_transaction(meta: EtcdMeta) -> None:
    cluster = EtcdCluster(meta)
    spec, assignments = topic("wide", 1024, {i: broker(i) for i in (1, 2, 3)})

    await cluster.create_topic(spec, assignments)

    assert unversioned(await cluster.assignments("wide")) == assignments


async def test_compare_and_swap_conflicts_raise_stale_assignment_with_what_is_stored(
        meta: EtcdMeta) -> None:
    cluster = EtcdCluster(meta)
    spec, assignments = topic("orders", 2, {1: broker(1), 2: broker(2)})
    await cluster.create_topic(spec, assignments)
    stored = (await cluster.assignments("orders"))[0]

    shrunk = await cluster.update_assignment(replace(stored, isr=(stored.leader,)))

    assert shrunk.version > stored.version
    assert (await cluster.assignments("orders"))[0] == shrunk
    with pytest.raises(StaleAssignment) as stale:
        await cluster.update_assignment(replace(stored, leader_epoch=5))
    assert stale.value.current == shrunk
    with pytest.raises(StaleAssignment) as exists:
        await cluster.update_assignment(replace(stored, version=0))
    assert exists.value.current == shrunk
    assert await cluster.update_assignment(replace(shrunk, version=stored.version)) == shrunk
    with pytest.raises(ValueError, match="isr"):
        await cluster.update_assignment(replace(shrunk, isr=()))


async def test_deleting_a_topic_deletes_its_assignments(meta: EtcdMeta) -> None:
    cluster = EtcdCluster(meta)
    brokers = {1: broker(1), 2: broker(2)}
    for name in ("orders", "audit"):
        spec, assignments = topic(name, 2, brokers)
        await cluster.create_topic(spec, assignments)
    gone = (await cluster.assignments("orders"))[0]

    await meta.topics.delete("orders")

    assert {a.topic for a in await cluster.assignments()} == {"audit"}
    with pytest.raises(StaleAssignment) as stale:
        await cluster.update_assignment(replace(gone, leader_epoch=1))
    assert stale.value.current is None


async def test_the_assignment_watch_sees_creates_updates_and_deletes(meta: EtcdMeta) -> None:
    cluster = EtcdCluster(meta)
    watch = cluster.watch_assignments()
    async with asyncio.timeout(HANG_GUARD_S):
        assert await anext(watch) == []
    spec, assignments = topic("orders", 2, {1: broker(1), 2: broker(2)})

    await cluster.create_topic(spec, assignments)
    created = await changes_until(watch, lambda seen: len(seen) >= 2)
    assert unversioned([c for c in created if isinstance(c, PartitionAssignment)]) == \
        assignments
    updated = await cluster.update_assignment(replace(partition_zero(created), isr=(1,)))
    assert await changes_until(watch, lambda seen: bool(seen)) == [updated]
    await meta.topics.delete("orders")
    assert sorted(map(str, await changes_until(watch, lambda seen: len(seen) >= 2))) == [
        "('orders', 0)", "('orders', 1)"]
    await watch.aclose()


def partition_zero(changes: list[Change]) -> PartitionAssignment:
    first = next(c for c in changes if isinstance(c, PartitionAssignment) and c.partition == 0)
    assert isinstance(first, PartitionAssignment)
    return first


async def test_the_assignment_watch_lists_again_across_a_compaction(meta: EtcdMeta) -> None:
    assert meta.client.kv is not None
    cluster = EtcdCluster(meta)
    brokers = {1: broker(1), 2: broker(2)}
    for name in ("gone", "kept"):
        spec, assignments = topic(name, 1, brokers)
        await cluster.create_topic(spec, assignments)
    watch = cluster.watch_assignments()
    async with asyncio.timeout(HANG_GUARD_S):
        listed = await anext(watch)  # listed at a revision; it follows from the next one
    assert [a.key for a in listed if isinstance(a, PartitionAssignment)] == [
        ("gone", 0), ("kept", 0)]
    kept = next(a for a in listed if isinstance(a, PartitionAssignment) and a.topic == "kept")

    spec, assignments = topic("new", 1, brokers)
    await cluster.create_topic(spec, assignments)
    updated = await cluster.update_assignment(replace(kept, isr=(kept.leader,)))
    await meta.topics.delete("gone")
    head = (await meta.client.kv.get(meta.prefix)).header.revision
    await meta.client.kv.compact(head)

    seen = await changes_until(watch, lambda seen: len(seen) >= 3)

    assert ("gone", 0) in seen and updated in seen
    assert unversioned([c for c in seen if isinstance(c, PartitionAssignment) and
                        c.topic == "new"]) == assignments
    await watch.aclose()


# ---- etcd unreachable -------------------------------------------------------------------

async def test_an_unreachable_etcd_is_metadata_unavailable_for_every_call() -> None:
    cluster = EtcdCluster.open([f"127.0.0.1:{free_port()}"], timeout=1.0)
    await cluster.connect()
    spec, assignments = topic("orders", 1, {1: broker(1)}, replication=1)
    calls = [cluster.register(broker(1), LEASE_S), cluster.brokers(), cluster.controller(),
             cluster.assignments(), cluster.create_topic(spec, assignments),
             cluster.update_assignment(assignments[0])]
    try:
        for call in calls:
            with pytest.raises(MetadataUnavailable, match="etcd"):
                async with asyncio.timeout(HANG_GUARD_S):
                    await call
        assert cluster.fence_deadline == 0.0
    finally:
        await cluster.aclose()
