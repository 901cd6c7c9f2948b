"""Partition assignors for consumer groups: sticky (the default), range and round-robin.

Each is a pure function ``(members, partitions, previous) -> assignment``:

- ``members``: member id -> the topics it subscribes to;
- ``partitions``: topic -> its partition count (a topic missing or at 0 has none);
- ``previous``: member id -> the (topic, partition) pairs it had (members that left and
  pairs no longer valid are ignored);
- the answer: every member id -> the pairs it gets. Every partition of a subscribed topic
  goes to exactly one member subscribed to that topic.

Members are ordered by id wherever an order is needed, so the same input always gives the
same answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet

TopicPartition = tuple[str, int]
Members = Mapping[str, AbstractSet[str]]
Partitions = Mapping[str, int]
Previous = Mapping[str, AbstractSet[TopicPartition]]
Assignment = dict[str, set[TopicPartition]]
Assignor = Callable[[Members, Partitions, Previous], Assignment]


def _subscribers(members: Members, partitions: Partitions) -> dict[str, list[str]]:
    """Topic -> its subscribed members in id order (topics with partitions only)."""
    out: dict[str, list[str]] = {}
    for member in sorted(members):
        for topic in members[member]:
            if partitions.get(topic, 0) > 0:
                out.setdefault(topic, []).append(member)
    return out


def range_assignor(members: Members, partitions: Partitions,
                   previous: Previous | None = None) -> Assignment:
    """Kafka's RangeAssignor: per topic, contiguous ranges of partitions to its subscribers
    in id order, the first ``n % m`` one partition longer. (Across many topics the first
    members get the extra partition of each: balanced per topic, not overall.)"""
    out: Assignment = {member: set() for member in members}
    for topic, subscribed in sorted(_subscribers(members, partitions).items()):
        n, m = partitions[topic], len(subscribed)
        per, extra = divmod(n, m)
        for i, member in enumerate(subscribed):
            start = i * per + min(i, extra)
            out[member].update((topic, p) for p in range(start, start + per + (i < extra)))
    return out


def round_robin_assignor(members: Members, partitions: Partitions,
                         previous: Previous | None = None) -> Assignment:
    """Kafka's RoundRobinAssignor: every partition of every topic in (topic, partition)
    order, dealt in turn around the members in id order, skipping members not subscribed
    to the partition's topic."""
    out: Assignment = {member: set() for member in members}
    ring = sorted(members)
    if not ring:
        return out
    subscribed = _subscribers(members, partitions)
    at = 0
    for topic in sorted(subscribed):
        for p in range(partitions[topic]):
            while topic not in members[ring[at]]:
                at = (at + 1) % len(ring)
            out[ring[at]].add((topic, p))
            at = (at + 1) % len(ring)
    return out


def sticky_assignor(members: Members, partitions: Partitions,
                    previous: Previous | None = None) -> Assignment:
    """Keeps each member's previous partitions where still valid and moves as few as balance
    needs.

    A previous pair is kept if its topic still has that partition and the member still
    subscribes to it (a pair claimed by two members stays with the first by id).

    When every member subscribes to the same topics (the usual group), the answer is exact:
    each gets ``floor(n / m)`` or ``ceil`` partitions, the ``ceil`` ones going to the
    members that kept the most, each member keeps as many of its pairs as that allows
    (its lowest), and the rest are dealt to the members below their share. So the number
    moved is the least any balanced answer needs; with unchanged membership and topics
    nothing moves, and when a member joins, partitions move only to it.

    Otherwise (members with different subscriptions): the pairs nobody kept go, most
    constrained first, to the subscribed member with the fewest; then, while a member has
    at least two more than a member it can reach (directly, or through a chain of members
    each passing one on), one partition moves, one placed this round before a kept one.
    That leaves every set of members with the same subscription within one partition of
    each other, and the whole group as balanced as the subscriptions allow.
    """
    previous = previous or {}
    order = sorted(members)
    out: Assignment = {member: set() for member in order}
    subscribed = _subscribers(members, partitions)
    taken: set[TopicPartition] = set()
    for member in order:
        for tp in sorted(previous.get(member, ())):
            topic, p = tp
            if topic in members[member] and 0 <= p < partitions.get(topic, 0) \
                    and tp not in taken:
                out[member].add(tp)
                taken.add(tp)
    if len({frozenset(members[member]) for member in order}) == 1:
        return _sticky_shared(order, out, sorted((topic, p) for topic in subscribed
                                                 for p in range(partitions[topic])))
    original = {tp: member for member, owned in out.items() for tp in owned}
    free = sorted(((topic, p) for topic in subscribed for p in range(partitions[topic])
                   if (topic, p) not in taken),
                  key=lambda tp: (len(subscribed[tp[0]]), tp))
    for tp in free:
        target = min(subscribed[tp[0]], key=lambda member: (len(out[member]), member))
        out[target].add(tp)
    while _move_one(order, members, out, original):
        pass
    return out


def _sticky_shared(order: list[str], kept: Assignment,
                   every: list[TopicPartition]) -> Assignment:
    """The sticky answer when all members subscribe to the same topics (``kept``: what each
    keeps from before, valid and without overlaps; ``every``: all their partitions)."""
    per, extra = divmod(len(every), len(order))
    by_kept = sorted(order, key=lambda member: (-len(kept[member]), member))
    share = {member: per + (i < extra) for i, member in enumerate(by_kept)}
    out: Assignment = {}
    for member in order:
        out[member] = set(sorted(kept[member])[:share[member]])
    held = {tp for owned in out.values() for tp in owned}
    pool = iter(tp for tp in every if tp not in held)
    for member in order:
        while len(out[member]) < share[member]:
            out[member].add(next(pool))
    return out


def _move_one(order: list[str], members: Members, out: Assignment,
              original: Mapping[TopicPartition, str]) -> bool:
    """One balancing move (see :func:`sticky_assignor`); False when none is left. Each move
    lowers the sum of squared counts, so balancing ends."""
    counts = {member: len(out[member]) for member in order}

    def rank(tp: TopicPartition, giver: str) -> tuple[bool, TopicPartition]:
        """Which partition a member passes on first: one placed this round (or moved
        already) before one it kept; the highest of those."""
        return original.get(tp) != giver, tp

    # per member and topic, the partition it would pass on first
    first: dict[str, dict[str, TopicPartition]] = {}
    for member in order:
        mine: dict[str, TopicPartition] = {}
        for tp in out[member]:
            have = mine.get(tp[0])
            if have is None or rank(tp, member) > rank(have, member):
                mine[tp[0]] = tp
        first[member] = mine

    def pick(giver: str, taker: str) -> TopicPartition | None:
        found = [tp for topic, tp in first[giver].items() if topic in members[taker]]
        return max(found, key=lambda tp: rank(tp, giver)) if found else None

    reach: tuple[frozenset[str], dict[str, tuple[str, TopicPartition] | None]] | None = None
    for receiver in sorted(order, key=lambda member: (counts[member], member)):
        donors = sorted((member for member in order if counts[member] >= counts[receiver] + 2),
                        key=lambda member: (-counts[member], member))
        if not donors:
            return False  # later receivers have more, so fewer donors
        options = [(not rank(offer, donor)[0], i, donor, offer)
                   for i, donor in enumerate(donors)
                   if (offer := pick(donor, receiver)) is not None]
        if options:  # straight from a donor, a free partition first
            _, _, donor, offer = min(options)
            path = [(donor, receiver, offer)]
        else:  # through a chain; donor sets only shrink, so an unreachable one stays so
            wanted = frozenset(donors)
            if reach is not None and receiver not in reach[1] and wanted <= reach[0]:
                continue
            if reach is None or reach[0] != wanted:
                reach = wanted, _reach(order, donors, pick)
            path = _path(reach[1], receiver)
            if not path:
                continue
        for giver, taker, tp in path:
            out[giver].remove(tp)
            out[taker].add(tp)
        return True
    return False


def _reach(order: list[str], donors: list[str],
           pick: Callable[[str, str], TopicPartition | None],
           ) -> dict[str, tuple[str, TopicPartition] | None]:
    """Breadth first from the donors over "can pass a partition to": for each member
    reached, who passes it which partition (None for the donors)."""
    came: dict[str, tuple[str, TopicPartition] | None] = {donor: None for donor in donors}
    frontier = list(donors)
    while frontier:
        following: list[str] = []
        for at in frontier:
            for nxt in order:
                if nxt not in came and (tp := pick(at, nxt)) is not None:
                    came[nxt] = (at, tp)
                    following.append(nxt)
        frontier = following
    return came


def _path(came: Mapping[str, tuple[str, TopicPartition] | None],
          receiver: str) -> list[tuple[str, str, TopicPartition]]:
    """The chain of (giver, taker, partition) from a donor to ``receiver``; [] if none."""
    path: list[tuple[str, str, TopicPartition]] = []
    node = receiver
    while (step := came.get(node)) is not None:
        path.append((step[0], node, step[1]))
        node = step[0]
    return path[::-1] if node in came else []


ASSIGNORS: dict[str, Assignor] = {
    "sticky": sticky_assignor,
    "range": range_assignor,
    "round_robin": round_robin_assignor,
}
DEFAULT_ASSIGNOR = "sticky"
