"""The consumer-group coordinator: pure logic on an injected clock, no network."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers.broker.domain import StaleGeneration, UnknownMember, UnknownTopic
from geoplex.servers.broker.groups import (
    Coordinator,
    GroupNotEmpty,
    GroupState,
    NotAssigned,
    retry_topic,
)

GROUP = "billing"
RETRY = retry_topic(GROUP)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Topics:
    """Partition counts as the app would answer them (a missing topic raises NotFound)."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = dict(counts)

    def __call__(self, topic: str) -> int:
        if topic not in self.counts:
            raise UnknownTopic(topic)
        return self.counts[topic]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def topics() -> Topics:
    return Topics({"orders": 4, RETRY: 1})


@pytest.fixture
def coordinator(clock: Clock) -> Coordinator:
    return Coordinator(clock, default_session_timeout_s=10.0, rebalance_timeout_s=30.0)


def join(c: Coordinator, topics: Topics, member: str = "",
         subscribed: tuple[str, ...] = ("orders",), session: float | None = None,
         assignor: str = "sticky") -> tuple[str, int]:
    return c.join(GROUP, member, subscribed, session, assignor, "test-client", topics)


def pairs(assignment: Mapping[str, list[int]]) -> set[tuple[str, int]]:
    return {(t, p) for t, ps in assignment.items() for p in ps}


def test_a_first_member_gets_every_partition_and_the_retry_topic(coordinator, topics):
    member, generation = join(coordinator, topics)

    assert generation == 1
    assert coordinator.sync(GROUP, member, generation) == {RETRY: [0], "orders": [0, 1, 2, 3]}
    assert coordinator.describe(GROUP).state is GroupState.STABLE


def test_an_empty_group_is_at_generation_zero(coordinator):
    info = coordinator.describe("nobody")

    assert (info.generation, info.state, info.members) == (0, GroupState.EMPTY, ())


def test_rejoining_with_the_same_topics_keeps_the_generation(coordinator, topics):
    member, generation = join(coordinator, topics)

    assert join(coordinator, topics, member) == (member, generation)
    assert join(coordinator, topics, member, subscribed=("orders", "refunds")) == (
        member, generation + 1)


def test_an_unknown_member_id_joins_as_a_new_member(coordinator, topics):
    member, _ = join(coordinator, topics, "made-up")

    assert member != "made-up" and len(member) == 32


def test_a_moved_partition_is_withheld_until_its_owner_syncs(coordinator, topics):
    a, _ = join(coordinator, topics)
    coordinator.sync(GROUP, a, 1)

    b, generation = join(coordinator, topics)
    assert generation == 2
    b_first = coordinator.sync(GROUP, b, 2)
    a_target = pairs(coordinator.describe(GROUP).members[0].target)
    b_target = pairs(coordinator.describe(GROUP).members[1].target)

    assert b_first == {}, "everything b is due still belongs to a"
    assert coordinator.heartbeat(GROUP, b, 2) == (2, False), "nothing new for b yet"
    assert coordinator.heartbeat(GROUP, a, 1) == (2, True)
    assert coordinator.describe(GROUP).state is GroupState.REBALANCING

    assert pairs(coordinator.sync(GROUP, a, 2)) == a_target
    assert coordinator.heartbeat(GROUP, b, 2) == (2, True), "a gave its partitions up"
    assert pairs(coordinator.sync(GROUP, b, 2)) == b_target
    assert a_target | b_target == {("orders", p) for p in range(4)} | {(RETRY, 0)}
    assert not a_target & b_target
    assert coordinator.heartbeat(GROUP, b, 2) == (2, False)
    assert coordinator.describe(GROUP).state is GroupState.STABLE


def test_a_withheld_partition_is_handed_over_when_its_owner_expires(coordinator, clock, topics):
    a, _ = join(coordinator, topics)
    coordinator.sync(GROUP, a, 1)
    b, _ = join(coordinator, topics)
    assert coordinator.sync(GROUP, b, 2) == {}

    for _ in range(3):  # b keeps heartbeating, a is silent past its 10 s session
        clock.advance(4)
        generation, rebalance = coordinator.heartbeat(GROUP, b, 2)

    assert (generation, rebalance) == (3, True)
    assert coordinator.sync(GROUP, b, 3) == {RETRY: [0], "orders": [0, 1, 2, 3]}
    with pytest.raises(UnknownMember):
        coordinator.heartbeat(GROUP, a, 1)


def test_a_member_that_leaves_hands_over_at_once(coordinator, topics):
    a, _ = join(coordinator, topics)
    coordinator.sync(GROUP, a, 1)
    b, _ = join(coordinator, topics)
    coordinator.sync(GROUP, b, 2)

    coordinator.leave(GROUP, a)

    generation, rebalance = coordinator.heartbeat(GROUP, b, 2)
    assert (generation, rebalance) == (3, True)
    assert coordinator.sync(GROUP, b, 3) == {RETRY: [0], "orders": [0, 1, 2, 3]}
    coordinator.leave(GROUP, a)  # leaving twice is harmless
    assert coordinator.describe(GROUP).generation == 3


def test_a_member_without_heartbeats_expires_after_its_session_timeout(coordinator, clock,
                                                                        topics):
    member, _ = join(coordinator, topics, session=5)
    coordinator.sync(GROUP, member, 1)

    clock.advance(5)
    assert coordinator.heartbeat(GROUP, member, 1) == (1, False), "exactly at the timeout"
    clock.advance(5.001)

    with pytest.raises(UnknownMember):
        coordinator.heartbeat(GROUP, member, 1)
    info = coordinator.describe(GROUP)
    assert (info.generation, info.state) == (2, GroupState.EMPTY)


def test_expire_removes_silent_members_of_every_group(coordinator, clock, topics):
    member, _ = join(coordinator, topics)
    other = coordinator.join("other", "", ["orders"], None, "", "c", topics)[0]

    assert coordinator.expire(clock.now + 10) == []
    assert sorted(coordinator.expire(clock.now + 10.5)) == sorted(
        [(GROUP, member), ("other", other)])
    assert coordinator.groups() == [GROUP, "other"]


def test_a_member_that_does_not_give_up_a_partition_is_removed_after_the_rebalance_timeout(
        coordinator, clock, topics):
    a, _ = join(coordinator, topics)
    coordinator.sync(GROUP, a, 1)
    b, _ = join(coordinator, topics)
    coordinator.sync(GROUP, b, 2)

    for _ in range(8):  # both heartbeat; a never syncs, so it never gives anything up
        clock.advance(4)
        coordinator.heartbeat(GROUP, b, 2)
        if a in {m.member_id for m in coordinator.describe(GROUP).members}:
            coordinator.heartbeat(GROUP, a, 1)

    generation, rebalance = coordinator.heartbeat(GROUP, b, 2)
    assert rebalance and generation == 3
    assert [m.member_id for m in coordinator.describe(GROUP).members] == [b]


def test_sync_at_a_stale_generation_is_refused(coordinator, topics):
    a, _ = join(coordinator, topics)
    join(coordinator, topics)

    with pytest.raises(StaleGeneration) as caught:
        coordinator.sync(GROUP, a, 1)
    assert caught.value.metadata == {"generation": "2"}


def test_an_unknown_member_is_refused(coordinator, topics):
    join(coordinator, topics)

    for call in (lambda: coordinator.sync(GROUP, "stranger", 1),
                 lambda: coordinator.heartbeat(GROUP, "stranger", 1),
                 lambda: coordinator.check_commit(GROUP, "stranger", 1),
                 lambda: coordinator.heartbeat("no-such-group", "stranger", 1)):
        with pytest.raises(UnknownMember):
            call()


def test_a_member_commits_its_own_partitions_at_the_current_generation(coordinator, topics):
    a, _ = join(coordinator, topics)
    coordinator.sync(GROUP, a, 1)

    coordinator.check_commit(GROUP, a, 1, [("orders", 0), ("orders", 3), (RETRY, 0)])
    with pytest.raises(StaleGeneration):
        coordinator.check_commit(GROUP, a, 0, [("orders", 0)])
    with pytest.raises(NotAssigned):
        coordinator.check_commit(GROUP, a, 1, [("orders", 4)])


def test_a_member_commits_at_its_old_generation_until_it_gives_the_partitions_up(
        coordinator, topics):
    a, _ = join(coordinator, topics)
    coordinator.sync(GROUP, a, 1)
    b, _ = join(coordinator, topics)
    coordinator.sync(GROUP, b, 2)
    everything = [("orders", p) for p in range(4)]

    coordinator.check_commit(GROUP, a, 1, everything)  # a still owns them all
    with pytest.raises(NotAssigned):
        coordinator.check_commit(GROUP, b, 2, everything)

    kept = pairs(coordinator.sync(GROUP, a, 2))
    with pytest.raises(StaleGeneration):
        coordinator.check_commit(GROUP, a, 1, sorted(kept))
    coordinator.check_commit(GROUP, a, 2, sorted(kept))
    with pytest.raises(NotAssigned):
        coordinator.check_commit(GROUP, a, 2, everything)


def test_a_commit_from_outside_passes_only_while_the_group_has_no_members(coordinator, topics):
    coordinator.check_commit("never-joined", "", 0)
    member, _ = join(coordinator, topics)

    with pytest.raises(GroupNotEmpty):
        coordinator.check_commit(GROUP, "", 0)
    coordinator.leave(GROUP, member)
    coordinator.check_commit(GROUP, "", 0)
    with pytest.raises(StaleGeneration):
        coordinator.check_commit(GROUP, "", 5)


def test_a_topic_created_later_is_assigned_with_a_new_generation(coordinator, topics):
    member, _ = join(coordinator, topics, subscribed=("orders", "audit"))
    assert coordinator.sync(GROUP, member, 1) == {RETRY: [0], "orders": [0, 1, 2, 3]}

    assert coordinator.topics_changed(["unrelated"]) == []
    topics.counts["audit"] = 2
    assert coordinator.topics_changed(["audit"]) == [GROUP]
    assert coordinator.topics_changed(["audit"]) == [], "nothing changed since"

    assert coordinator.heartbeat(GROUP, member, 1) == (2, True)
    assert coordinator.sync(GROUP, member, 2) == {
        RETRY: [0], "audit": [0, 1], "orders": [0, 1, 2, 3]}


def test_a_deleted_topic_is_taken_away(coordinator, topics):
    member, _ = join(coordinator, topics)
    coordinator.sync(GROUP, member, 1)

    del topics.counts["orders"]
    assert coordinator.topics_changed() == [GROUP]

    assert coordinator.sync(GROUP, member, 2) == {RETRY: [0]}


def test_the_group_uses_its_oldest_members_assignor(coordinator, topics):
    topics.counts["orders"] = 5
    a, _ = join(coordinator, topics, assignor="range")
    b, generation = join(coordinator, topics, assignor="round_robin")

    info = coordinator.describe(GROUP)
    assert info.assignor == "range"
    targets = {m.member_id: m.target for m in info.members}
    first, second = sorted((a, b))
    assert targets[first]["orders"] == [0, 1, 2] and targets[second]["orders"] == [3, 4]


def test_join_refuses_bad_input_naming_the_field(coordinator, topics):
    cases = [(lambda: join(coordinator, topics, subscribed=()), "topics"),
             (lambda: join(coordinator, topics, subscribed=("bad name",)), "topics"),
             (lambda: join(coordinator, topics, session=0.5), "session_timeout"),
             (lambda: join(coordinator, topics, session=301), "session_timeout"),
             (lambda: join(coordinator, topics, assignor="fastest"), "assignor")]
    for call, field in cases:
        with pytest.raises(InvalidArgument) as caught:
            call()
        assert caught.value.field == field
    assert coordinator.groups() == []


# ---- no two members ever own one partition, and the group settles ---------------------

operations = st.lists(st.tuples(
    st.sampled_from(["join", "rejoin_other_topics", "sync", "heartbeat", "leave", "tick",
                     "topic_grows"]),
    st.integers(0, 4)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(operations, st.sampled_from(["sticky", "range", "round_robin"]))
def test_no_partition_is_ever_owned_twice_and_the_group_settles(steps, assignor):
    clock = Clock()
    topics = Topics({"orders": 6, "refunds": 3, RETRY: 1})
    c = Coordinator(clock, rebalance_timeout_s=30.0)
    alive: list[str] = []

    def owned_all() -> list[tuple[str, int]]:
        return [tp for m in c.describe(GROUP).members for tp in pairs(m.assignment)]

    for op, n in steps:
        known = {m.member_id for m in c.describe(GROUP).members}
        alive = [m for m in alive if m in known]
        who = alive[n % len(alive)] if alive else None
        if op == "join" or who is None:
            alive.append(c.join(GROUP, "", ["orders"], 10, assignor, "x", topics)[0])
        elif op == "rejoin_other_topics":
            c.join(GROUP, who, ["orders", "refunds"][: 1 + n % 2], 10, assignor, "x", topics)
        elif op == "sync":
            c.sync(GROUP, who, c.describe(GROUP).generation)
        elif op == "heartbeat":
            c.heartbeat(GROUP, who, c.describe(GROUP).generation)
        elif op == "leave":
            c.leave(GROUP, who)
        elif op == "tick":
            clock.advance(n * 3)
        else:
            topics.counts["orders"] += 1
            c.topics_changed(["orders"])
        owned = owned_all()
        assert len(owned) == len(set(owned)), "a partition owned by two members"

    # every member follows the protocol: heartbeat, sync when told; no time passes
    for _ in range(3):
        for m in c.describe(GROUP).members:
            generation, rebalance = c.heartbeat(GROUP, m.member_id, m.synced_generation)
            if rebalance:
                c.sync(GROUP, m.member_id, generation)
    info = c.describe(GROUP)
    assert info.state in (GroupState.STABLE, GroupState.EMPTY)
    if info.members:
        subscribed = {t for m in info.members for t in m.topics}
        assert sorted(owned_all()) == sorted(
            (t, p) for t in subscribed for p in range(topics.counts.get(t, 0)))
