"""The partition assignors: properties over random groups, checked against brute force."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Set

from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.broker.assignors import (
    ASSIGNORS,
    range_assignor,
    round_robin_assignor,
    sticky_assignor,
)

TP = tuple[str, int]
TOPICS = ("a", "b", "c")


def every_partition(members: Mapping[str, Set[str]], partitions: Mapping[str, int]) -> set[TP]:
    subscribed = {topic for topics in members.values() for topic in topics}
    return {(t, p) for t in subscribed for p in range(partitions.get(t, 0))}


def owners(assignment: Mapping[str, Set[TP]]) -> dict[TP, str]:
    return {tp: member for member, owned in assignment.items() for tp in owned}


def moved(before: Mapping[str, Set[TP]], after: Mapping[str, Set[TP]]) -> dict[TP, str]:
    """Partitions that a member still in the group had and now another has: -> new owner."""
    now = owners(after)
    return {tp: now[tp] for member, owned in before.items() if member in after
            for tp in owned if tp in now and now[tp] != member}


def assert_valid(members: Mapping[str, Set[str]], partitions: Mapping[str, int],
                 assignment: Mapping[str, Set[TP]]) -> None:
    assert set(assignment) == set(members)
    pairs = [tp for owned in assignment.values() for tp in owned]
    assert len(pairs) == len(set(pairs)), "a partition given twice"
    assert set(pairs) == every_partition(members, partitions)
    for member, owned in assignment.items():
        assert all(topic in members[member] for topic, _ in owned), member


def spread(assignment: Mapping[str, Set[TP]], among: Set[str]) -> int:
    counts = [len(assignment[m]) for m in among]
    return max(counts) - min(counts) if counts else 0


def same_subscription_classes(members: Mapping[str, Set[str]]) -> list[set[str]]:
    classes: dict[frozenset[str], set[str]] = {}
    for member, topics in members.items():
        classes.setdefault(frozenset(topics), set()).add(member)
    return list(classes.values())


member_ids = st.sampled_from([f"m{i}" for i in range(8)])
subscriptions = st.frozensets(st.sampled_from(TOPICS), min_size=1)
groups = st.dictionaries(member_ids, subscriptions, min_size=1, max_size=6)
counts = st.fixed_dictionaries({t: st.integers(0, 12) for t in TOPICS})


@st.composite
def previous_assignments(draw: st.DrawFn) -> dict[str, set[TP]]:
    """Anything a group could have had: departed members, partitions beyond today's counts,
    topics a member no longer reads, even a partition claimed twice."""
    pairs = st.tuples(st.sampled_from(TOPICS), st.integers(0, 14))
    return draw(st.dictionaries(st.sampled_from([f"m{i}" for i in range(10)]),
                                st.sets(pairs, max_size=12), max_size=8))


@st.composite
def shared_groups(draw: st.DrawFn) -> dict[str, frozenset[str]]:
    topics = draw(subscriptions)
    return {m: topics for m in draw(st.sets(member_ids, min_size=1, max_size=6))}


@settings(max_examples=150, deadline=None)
@given(groups, counts, previous_assignments(), st.sampled_from(sorted(ASSIGNORS)))
def test_every_subscribed_partition_goes_to_exactly_one_subscriber(members, partitions,
                                                                  previous, name):
    assert_valid(members, partitions, ASSIGNORS[name](members, partitions, previous))


@settings(max_examples=150, deadline=None)
@given(shared_groups(), counts, previous_assignments(),
       st.sampled_from(["sticky", "round_robin"]))
def test_members_with_one_subscription_get_counts_within_one(members, partitions, previous,
                                                             name):
    assignment = ASSIGNORS[name](members, partitions, previous)

    assert spread(assignment, set(members)) <= 1


@settings(max_examples=150, deadline=None)
@given(groups, counts, previous_assignments())
def test_range_balances_each_topic_among_its_subscribers(members, partitions, previous):
    assignment = range_assignor(members, partitions, previous)

    for topic in TOPICS:
        per_member = [sum(1 for t, _ in assignment[m] if t == topic)
                      for m in members if topic in members[m]]
        if per_member:
            assert max(per_member) - min(per_member) <= 1


def test_range_gives_contiguous_ranges_the_first_members_one_longer():
    members = {"c": {"t"}, "a": {"t"}, "b": {"t"}}

    assignment = range_assignor(members, {"t": 8}, {})

    assert {m: sorted(p for _, p in owned) for m, owned in assignment.items()} == {
        "a": [0, 1, 2], "b": [3, 4, 5], "c": [6, 7]}


def test_round_robin_deals_in_turn_skipping_members_not_subscribed():
    members = {"a": {"t", "u"}, "b": {"t"}, "c": {"u"}}

    assignment = round_robin_assignor(members, {"t": 3, "u": 3}, {})

    # t0 a, t1 b, t2 a (c skipped), u0 c (b skipped), u1 a, u2 c (b skipped)
    assert {m: sorted(owned) for m, owned in assignment.items()} == {
        "a": [("t", 0), ("t", 2), ("u", 1)], "b": [("t", 1)], "c": [("u", 0), ("u", 2)]}


@settings(max_examples=150, deadline=None)
@given(groups, counts, previous_assignments())
def test_sticky_keeps_members_with_one_subscription_within_one(members, partitions, previous):
    assignment = sticky_assignor(members, partitions, previous)

    for same in same_subscription_classes(members):
        assert spread(assignment, same) <= 1


@settings(max_examples=150, deadline=None)
@given(groups, counts, previous_assignments())
def test_sticky_moves_nothing_when_membership_and_topics_are_unchanged(members, partitions,
                                                                      previous):
    settled = sticky_assignor(members, partitions, previous)

    assert sticky_assignor(members, partitions, settled) == settled


@settings(max_examples=150, deadline=None)
@given(shared_groups(), counts, previous_assignments(),
       st.sampled_from([f"new{i}" for i in range(2)]))
def test_sticky_moves_partitions_only_to_a_member_that_joins(members, partitions, previous,
                                                            newcomer):
    settled = sticky_assignor(members, partitions, previous)
    topics = next(iter(members.values()))

    after = sticky_assignor({**members, newcomer: topics}, partitions, settled)

    assert set(moved(settled, after).values()) <= {newcomer}
    assert spread(after, set(after)) <= 1


def fewest_moves_when_balanced(members: Mapping[str, Set[str]], partitions: Mapping[str, int],
                               kept: Mapping[TP, str]) -> int:
    """The least number of kept partitions any balanced answer moves (shared subscription):
    counts are floor(n/m) or ceil, and the ceil ones best go to those that kept the most."""
    n, m = len(every_partition(members, partitions)), len(members)
    per, extra = divmod(n, m)
    had = sorted((sum(1 for owner in kept.values() if owner == member) for member in members),
                 reverse=True)
    return sum(max(0, c - (per + (i < extra))) for i, c in enumerate(had))


@st.composite
def shared_groups_with_history(draw: st.DrawFn):
    """A shared-subscription group and a previous owner (maybe departed) per partition."""
    members = draw(shared_groups())
    partitions = draw(counts)
    every = sorted(every_partition(members, partitions))
    who = st.sampled_from(sorted(members) + ["gone1", "gone2"])
    kept = {tp: draw(who) for tp in every if draw(st.booleans())}
    return members, partitions, kept


@settings(max_examples=200, deadline=None)
@given(shared_groups_with_history())
def test_sticky_moves_the_fewest_partitions_balance_needs(case):
    members, partitions, kept = case
    previous: dict[str, set[TP]] = {}
    for tp, owner in kept.items():
        previous.setdefault(owner, set()).add(tp)

    assignment = sticky_assignor(members, partitions, previous)

    assert_valid(members, partitions, assignment)
    assert spread(assignment, set(members)) <= 1
    assert len(moved(previous, assignment)) == fewest_moves_when_balanced(
        members, partitions, {tp: o for tp, o in kept.items() if o in members})


def brute_force(members: Mapping[str, Set[str]], partitions: Mapping[str, int]):
    every = sorted(every_partition(members, partitions))
    order = sorted(members)
    for choice in itertools.product(*[[m for m in order if t in members[m]] for t, _ in every]):
        answer: dict[str, set[TP]] = {m: set() for m in order}
        for tp, m in zip(every, choice):
            answer[m].add(tp)
        yield answer


def squares(assignment: Mapping[str, Set[TP]]) -> int:
    return sum(len(owned) ** 2 for owned in assignment.values())


small_groups = st.dictionaries(st.sampled_from(["m0", "m1", "m2"]),
                               st.frozensets(st.sampled_from(("a", "b")), min_size=1),
                               min_size=1, max_size=3)
small_counts = st.fixed_dictionaries({"a": st.integers(0, 3), "b": st.integers(0, 3)})


@settings(max_examples=150, deadline=None)
@given(small_groups, small_counts, previous_assignments())
def test_sticky_is_as_balanced_as_any_assignment_the_subscriptions_allow(members, partitions,
                                                                        previous):
    """Balance across different subscriptions: no assignment (all tried) has a smaller sum
    of squared counts."""
    assignment = sticky_assignor(members, partitions, previous)

    assert squares(assignment) == min(squares(a) for a in brute_force(members, partitions))


@settings(max_examples=150, deadline=None)
@given(small_groups.filter(lambda g: len(set(g.values())) == 1), small_counts,
       previous_assignments())
def test_sticky_moves_no_more_than_any_balanced_assignment(members, partitions, previous):
    """Shared subscription, against every assignment: none as balanced moves fewer."""
    assignment = sticky_assignor(members, partitions, previous)

    kept_before = {m: {tp for tp in previous.get(m, set())
                       if tp[0] in members[m] and tp[1] < partitions.get(tp[0], 0)}
                   for m in members}
    # a partition claimed twice counts for the first claimant, as the assignor keeps it
    seen: set[TP] = set()
    for m in sorted(kept_before):
        kept_before[m] -= seen
        seen |= kept_before[m]
    best = min(len(moved(kept_before, a)) for a in brute_force(members, partitions)
               if spread(a, set(members)) <= 1)

    assert len(moved(kept_before, assignment)) == best
