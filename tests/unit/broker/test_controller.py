"""The controller's decisions (placement, re-election) and its loop over an in-memory store."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from polling import eventually

from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers.broker.controller import (
    Controller,
    initial_assignments,
    place_replicas,
    plan_topic,
    reelect,
    replication_factor_for,
)
from geoplex.servers.broker.domain import (
    NO_LEADER,
    BrokerInfo,
    ControllerInfo,
    PartitionAssignment,
    StaleAssignment,
    TooFewBrokers,
    TopicSpec,
)
from geoplex.servers.broker.ports import ClusterStore


def broker(i: int, incarnation: str = "") -> BrokerInfo:
    return BrokerInfo(i, f"127.0.0.1:{50000 + i}", incarnation or f"inc{i}")


def alive(*ids: int, **incarnations: str) -> dict[int, BrokerInfo]:
    return {i: broker(i, incarnations.get(f"b{i}", "")) for i in ids}


def part(replicas: tuple[int, ...], leader: int, isr: tuple[int, ...] | None = None,
         epoch: int = 3, incarnation: str = "") -> PartitionAssignment:
    return PartitionAssignment("orders", 0, replicas, leader, epoch,
                               replicas if isr is None else isr, 1,
                               incarnation or (f"inc{leader}" if leader != NO_LEADER else ""),
                               version=7)


# ---- placement ------------------------------------------------------------------------

def test_placement_matches_kafkas_documented_example() -> None:
    """AdminUtils' example: 5 brokers, 10 partitions, 3 replicas, start 0."""
    placed = place_replicas(10, 3, [0, 1, 2, 3, 4], start=0)

    assert [r[0] for r in placed] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert [r[1] for r in placed[:5]] == [1, 2, 3, 4, 0]  # p0..p4: next broker
    assert [r[1] for r in placed[5:]] == [2, 3, 4, 0, 1]  # p5..p9: shifted once more
    assert [r[2] for r in placed[:5]] == [2, 3, 4, 0, 1]
    assert [r[2] for r in placed[5:]] == [3, 4, 0, 1, 2]


def test_placement_starts_at_the_given_broker_of_the_sorted_ids() -> None:
    assert place_replicas(3, 1, [30, 10, 20], start=1) == [(20,), (30,), (10,)]
    assert place_replicas(2, 1, [7], start=5) == [(7,), (7,)]


@given(n=st.integers(1, 7), data=st.data())
def test_placement_gives_distinct_replicas_and_spreads_leaders(n: int, data: st.DataObject
                                                                ) -> None:
    brokers = data.draw(st.lists(st.integers(0, 99), min_size=n, max_size=n, unique=True))
    rf = data.draw(st.integers(1, n))
    partitions = data.draw(st.integers(1, 40))
    start = data.draw(st.integers(0, 20))

    placed = place_replicas(partitions, rf, brokers, start)

    assert len(placed) == partitions
    assert all(len(r) == rf == len(set(r)) and set(r) <= set(brokers) for r in placed)
    leaders = Counter(r[0] for r in placed)
    assert max(leaders.values()) - min(leaders.get(b, 0) for b in brokers) <= 1
    copies = Counter(b for r in placed for b in r)  # every broker holds about as many
    assert max(copies.values()) <= math.ceil(partitions * rf / n) + rf


def test_more_copies_than_brokers_is_too_few_brokers_naming_both() -> None:
    with pytest.raises(TooFewBrokers, match="3 copies .* 2 are alive"):
        place_replicas(4, 3, [1, 2], start=0)
    with pytest.raises(InvalidArgument, match="partitions"):
        place_replicas(0, 1, [1], start=0)
    with pytest.raises(InvalidArgument, match="replication_factor"):
        place_replicas(1, 0, [1], start=0)


def test_replication_factor_zero_is_three_or_fewer_when_fewer_are_alive() -> None:
    assert replication_factor_for(0, 1) == 1
    assert replication_factor_for(0, 2) == 2
    assert replication_factor_for(0, 5) == 3
    assert replication_factor_for(2, 5) == 2
    with pytest.raises(TooFewBrokers, match="5 copies"):
        replication_factor_for(5, 3)
    with pytest.raises(InvalidArgument, match="replication_factor"):
        replication_factor_for(-1, 3)


def test_a_new_topic_is_led_by_each_first_replica_all_in_sync() -> None:
    spec = TopicSpec("orders", 3, replication_factor=2)
    live = alive(1, 2, 3)

    made = initial_assignments(spec, place_replicas(3, 2, list(live), 0), live, 4)

    assert [(a.partition, a.replicas, a.leader, a.isr) for a in made] == [
        (0, (1, 2), 1, (1, 2)), (1, (2, 3), 2, (2, 3)), (2, (3, 1), 3, (3, 1))]
    assert all(a.leader_epoch == 0 and a.controller_epoch == 4 and a.version == 0 and
               a.leader_incarnation == f"inc{a.leader}" for a in made)
    assert [a.replicas for a in plan_topic(spec, live, start=0)] == [a.replicas for a in made]


# ---- re-election ------------------------------------------------------------------------

def test_a_gone_leader_is_replaced_by_the_first_live_isr_replica() -> None:
    a = part((1, 2, 3), leader=1)

    new = reelect(a, alive(2, 3), {1}, set(), controller_epoch=9)

    assert new is not None
    assert (new.leader, new.leader_epoch, new.isr) == (2, 4, (2, 3))
    assert (new.leader_incarnation, new.controller_epoch, new.version) == ("inc2", 9, 7)


def test_the_new_leader_comes_from_the_isr_in_replica_order_never_from_outside() -> None:
    a = part((1, 2, 3, 4), leader=1, isr=(1, 4, 3))

    new = reelect(a, alive(2, 3, 4), {1}, set(), 9)

    assert new is not None and (new.leader, new.isr) == (3, (4, 3))


def test_a_gone_follower_leaves_the_isr_and_the_leader_epoch_stays() -> None:
    new = reelect(part((1, 2, 3), leader=1), alive(1, 3), {2}, set(), 9)

    assert new is not None
    assert (new.leader, new.leader_epoch, new.isr, new.controller_epoch) == (1, 3, (1, 3), 9)


def test_with_no_isr_member_alive_there_is_no_leader_and_the_isr_stays() -> None:
    a = part((1, 2, 3), leader=1, isr=(1, 2))

    new = reelect(a, alive(3), {1, 2}, set(), 9)

    assert new is not None
    assert (new.leader, new.leader_epoch, new.isr, new.leader_incarnation) == (
        NO_LEADER, 4, (1, 2), "")
    assert reelect(new, alive(3), {1, 2}, set(), 9) is None  # and so it stays


def test_an_isr_member_that_registers_again_leads_a_leaderless_partition() -> None:
    a = part((1, 2, 3), leader=NO_LEADER, isr=(2,), epoch=5)

    assert reelect(a, alive(1, 3), set(), set(), 9) is None  # 1 and 3 are not in sync
    new = reelect(a, alive(1, 2, 3, b2="fresh"), set(), set(), 9)

    assert new is not None
    assert (new.leader, new.leader_epoch, new.isr, new.leader_incarnation) == (
        2, 6, (2,), "fresh")


def test_a_restarted_leader_hands_over_to_another_live_isr_member_and_stays_in_sync() -> None:
    a = part((1, 2, 3), leader=1)
    live = alive(1, 2, 3, b1="new")

    new = reelect(a, live, set(), {1}, 9)

    assert new is not None and (new.leader, new.leader_epoch, new.isr) == (2, 4, (1, 2, 3))
    # found the same way in a reconciliation, without being told who restarted
    assert reelect(a, live, set(), set(), 9) == new


def test_a_restarted_broker_leads_again_only_when_no_other_isr_member_is_alive() -> None:
    a = part((1, 2, 3), leader=1, isr=(1, 2))

    new = reelect(a, alive(1, 3, b1="new"), {2}, {1}, 9)

    assert new is not None
    assert (new.leader, new.leader_epoch, new.isr, new.leader_incarnation) == (
        1, 4, (1,), "new")


def test_a_restarted_follower_is_passed_over_for_one_that_did_not_restart() -> None:
    a = part((1, 2, 3), leader=1)

    new = reelect(a, alive(2, 3, b2="new"), {1}, {2}, 9)

    assert new is not None and new.leader == 3


def test_a_partition_led_by_its_elected_process_is_left_alone() -> None:
    assert reelect(part((1, 2, 3), leader=2), alive(1, 2, 3), set(), set(), 99) is None
    assert reelect(part((1, 2), leader=1, isr=(1,)), alive(1), {2}, set(), 9) is None


ids = st.integers(1, 5)


@st.composite
def situations(draw: st.DrawFn) -> tuple[PartitionAssignment, dict[int, BrokerInfo], set[int],
                                          set[int]]:
    replicas = tuple(draw(st.lists(ids, min_size=1, max_size=4, unique=True)))
    isr = tuple(r for r in replicas if draw(st.booleans())) or replicas[:1]
    leader = draw(st.sampled_from([*isr, NO_LEADER]))
    live_ids = draw(st.sets(ids))
    restarted = {i for i in live_ids if draw(st.booleans())}
    live = {i: broker(i, "new" if i in restarted else "") for i in live_ids}
    gone = draw(st.sets(ids)) - live_ids
    return part(replicas, leader, isr), live, gone, restarted


@given(situations())
def test_reelection_keeps_its_invariants_and_settles_in_one_step(
        situation: tuple[PartitionAssignment, dict[int, BrokerInfo], set[int], set[int]]
) -> None:
    a, live, gone, restarted = situation

    new = reelect(a, live, gone, restarted, 9)

    if new is None:
        return
    assert new.isr and set(new.isr) <= set(a.isr)  # never emptied, never grown
    assert new.replicas == a.replicas and new.version == a.version
    if new.leader == NO_LEADER:
        assert new.isr == a.isr and not any(r in live and r not in gone for r in a.isr)
    else:
        assert new.leader in new.isr and new.leader in live
        assert new.leader_incarnation == live[new.leader].incarnation
    if new.leader != a.leader:
        assert new.leader_epoch == a.leader_epoch + 1
    assert reelect(new, live, gone, restarted, 9) is None


# ---- the loop, over an in-memory store ----------------------------------------------------

class FakeCluster:
    """Enough of ports.ClusterStore for the controller: a dict with watch queues."""

    def __init__(self, brokers: dict[int, BrokerInfo]) -> None:
        self.live = dict(brokers)
        self.parts: dict[tuple[str, int], PartitionAssignment] = {}
        self.current: ControllerInfo | None = None
        self.revision = 0
        self.fence = math.inf
        self.writes: list[PartitionAssignment] = []
        self.before_write: Callable[[PartitionAssignment], object] | None = None
        self._watchers: list[asyncio.Queue[object]] = []

    @property
    def fence_deadline(self) -> float:
        return self.fence

    def _notify(self, what: object) -> None:
        for queue in self._watchers:
            queue.put_nowait(what)

    async def _follow(self, kind: str, first: object) -> AsyncIterator[object]:
        """``first``, then what is notified of ``kind`` (subscribed before ``first``)."""
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            yield first
            while True:
                item = await queue.get()
                if isinstance(item, tuple) and item[0] == kind:
                    yield item[1]
        finally:
            self._watchers.remove(queue)

    def put(self, a: PartitionAssignment) -> PartitionAssignment:
        self.revision += 1
        stored = replace(a, version=self.revision)
        self.parts[a.key] = stored
        self._notify(("assignments", [stored]))
        return stored

    def set_brokers(self, brokers: dict[int, BrokerInfo]) -> None:
        self.live = dict(brokers)
        self._notify(("brokers", dict(brokers)))

    def depose(self, by: ControllerInfo) -> None:
        self.current = by
        self._notify(("controller", by))

    async def register(self, broker: BrokerInfo, lease_s: float) -> None:
        raise NotImplementedError

    async def deregister(self) -> None:
        raise NotImplementedError

    async def brokers(self) -> dict[int, BrokerInfo]:
        return dict(self.live)

    async def watch_brokers(self) -> AsyncIterator[dict[int, BrokerInfo]]:
        async for live in self._follow("brokers", dict(self.live)):
            assert isinstance(live, dict)
            yield live

    async def campaign(self, broker: BrokerInfo) -> ControllerInfo:
        while self.current is not None and self.current.id != broker.id:
            await asyncio.sleep(0.01)  # a poll of the fake's state
        if self.current is None:
            self.current = ControllerInfo(broker.id, 1, broker.incarnation)
        return self.current

    async def controller(self) -> ControllerInfo | None:
        return self.current

    async def watch_controller(self) -> AsyncIterator[ControllerInfo | None]:
        async for info in self._follow("controller", self.current):
            assert info is None or isinstance(info, ControllerInfo)
            yield info

    async def assignments(self, topic: str | None = None) -> list[PartitionAssignment]:
        return [a for a in self.parts.values() if topic in (None, a.topic)]

    async def watch_assignments(self) -> AsyncIterator[list[PartitionAssignment |
                                                            tuple[str, int]]]:
        async for batch in self._follow("assignments", list(self.parts.values())):
            assert isinstance(batch, list)
            yield batch

    async def create_topic(self, spec: TopicSpec,
                           assignments: list[PartitionAssignment]) -> TopicSpec:
        for a in assignments:
            self.put(a)
        return spec

    async def update_assignment(self, new: PartitionAssignment,
                                controller: ControllerInfo | None = None
                                ) -> PartitionAssignment:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook(new)
        current = self.parts.get(new.key)
        if (current is None or current.version != new.version or
                (controller is not None and controller != self.current)):
            raise StaleAssignment(current)
        self.writes.append(new)
        return self.put(new)


def store_of(fake: FakeCluster) -> ClusterStore:
    return fake  # the fake implements the port (checked by mypy)


async def running(controller: Controller) -> asyncio.Task[None]:
    task = asyncio.create_task(controller.run())
    await eventually(lambda: controller.is_controller, 5, what="elected")
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_once_elected_the_controller_re_leads_partitions_of_dead_leaders() -> None:
    fake = FakeCluster(alive(1, 2))
    fake.put(part((3, 1, 2), leader=3))  # 3 died before anyone was controller
    fake.put(replace(part((1, 2), leader=1), partition=1))
    controller = Controller(store_of(fake), broker(1))
    task = await running(controller)
    try:
        def led() -> PartitionAssignment:
            return fake.parts[("orders", 0)]
        await eventually(lambda: led().leader == 1, 5, what="partition 0 re-led")
        assert (led().leader_epoch, led().isr, led().controller_epoch) == (4, (1, 2), 1)
        assert controller.info == ControllerInfo(1, 1, "inc1")
        assert [w.partition for w in fake.writes] == [0]  # partition 1 was right
    finally:
        await stop(task)


async def test_a_conflicting_write_is_decided_again_on_what_is_stored() -> None:
    fake = FakeCluster(alive(1, 2, 3))
    fake.put(part((1, 2, 3), leader=1))
    controller = Controller(store_of(fake), broker(2))
    task = await running(controller)
    try:
        # the leader shrinks its ISR just before the controller's write lands
        fake.before_write = lambda new: fake.put(replace(fake.parts[new.key], isr=(1, 2)))
        fake.set_brokers(alive(2, 3))

        def state() -> tuple[int, tuple[int, ...]]:
            a = fake.parts[("orders", 0)]
            return a.leader, a.isr
        await eventually(lambda: state() == (2, (2,)), 5, what="re-led on the stored ISR")
    finally:
        await stop(task)


async def test_a_controller_that_sees_another_elected_steps_down() -> None:
    fake = FakeCluster(alive(1, 2))
    controller = Controller(store_of(fake), broker(1))
    task = await running(controller)
    try:
        fake.depose(ControllerInfo(2, 2, "inc2"))

        await eventually(lambda: not controller.is_controller, 5, what="stepped down")
    finally:
        await stop(task)


async def test_a_write_refused_by_the_election_fence_makes_the_controller_step_down() -> None:
    fake = FakeCluster(alive(1, 2))
    fake.put(part((1, 2), leader=2))
    controller = Controller(store_of(fake), broker(1))
    task = await running(controller)
    try:
        fake.current = ControllerInfo(2, 2, "inc2")  # elected, not seen by the watch yet
        fake.set_brokers(alive(1))

        await eventually(lambda: not controller.is_controller, 5, what="stepped down")
        assert fake.writes == [] and fake.parts[("orders", 0)].leader == 2
    finally:
        await stop(task)


async def test_a_controller_whose_lease_is_in_doubt_writes_nothing() -> None:
    fake = FakeCluster(alive(1, 2))
    fake.put(part((1, 2), leader=2))
    controller = Controller(store_of(fake), broker(1))
    task = await running(controller)
    try:
        fake.fence = 0.0  # the fence deadline has passed
        fake.set_brokers(alive(1))
        await eventually(lambda: not controller.is_controller, 5, what="stepped down")
        assert fake.writes == []
    finally:
        await stop(task)
