"""The consumer-group coordinator: membership, generations and server-side assignment.

As Kafka's KIP-848 protocol, the assignment is computed here, not by a group leader:

- ``join`` registers a member (or updates one) and, when membership or a subscription
  changed, recomputes every member's *target* assignment and bumps the generation;
- members learn of a new generation from ``heartbeat`` and call ``sync``, which answers
  the member's target *minus the partitions another member still owns*. A member owns
  what its last ``sync`` answered, until its next ``sync``, its ``leave`` or the end of
  its session. So a partition moving from A to B reaches B only after A has synced to a
  generation whose target leaves it out (A stops reading it first), or A is gone: no two
  members ever own one partition at once. ``heartbeat`` tells B to sync again as soon as
  such a withheld partition is free;
- a member that sends nothing for its session timeout is removed; so is one that keeps
  heartbeating but has not given up a revoked partition within the rebalance timeout
  (it would hold the group back for ever);
- commits are fenced: only a live member, at the group's generation or at the one it last
  synced to (it still owns those partitions), for partitions it owns.

Every member subscribes to the group's retry topic ``__retry.<group>`` as well; whether
that topic exists is the caller's business (``partitions_of`` answers 0 or raises
NotFound while it does not).

Pure logic: no I/O, no clock of its own (time comes from the injected ``clock``), not
thread-safe (the broker calls it from its one event loop).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from geoplex.servers._runtime.errors import FailedPrecondition, InvalidArgument, NotFound

from .assignors import ASSIGNORS, DEFAULT_ASSIGNOR, TopicPartition
from .domain import PartitionLag, StaleGeneration, UnknownMember, check_name

RETRY_TOPIC_PREFIX = "__retry."
MIN_SESSION_TIMEOUT_S = 1.0
MAX_SESSION_TIMEOUT_S = 300.0
DEFAULT_REBALANCE_TIMEOUT_S = 60.0

PartitionsOf = Callable[[str], int]
Assignment = dict[str, list[int]]  # topic -> sorted partitions


def retry_topic(group: str) -> str:
    """The group's retry topic, which every member of the group subscribes to."""
    return f"{RETRY_TOPIC_PREFIX}{group}"


class GroupState(Enum):
    EMPTY = "EMPTY"              # no members
    STABLE = "STABLE"            # every member synced to the generation and owns its target
    REBALANCING = "REBALANCING"  # some member has yet to sync, give up or receive partitions


class NotAssigned(FailedPrecondition):
    default_reason = "PARTITION_NOT_ASSIGNED"

    def __init__(self, topic: str, partition: int) -> None:
        super().__init__(f"offsets: partition {partition} of topic {topic!r} is not assigned "
                         "to this member (sync to learn its assignment)",
                         metadata={"topic": topic, "partition": str(partition)})


class GroupNotEmpty(FailedPrecondition):
    default_reason = "GROUP_NOT_EMPTY"

    def __init__(self, members: int,
                 what: str = "a commit from outside the group (no member_id, generation 0)"
                 ) -> None:
        super().__init__(f"member_id: {what} needs a group without members; it has "
                         f"{members} (stop its consumers first)",
                         metadata={"members": str(members)})


@dataclass(frozen=True)
class MemberInfo:
    member_id: str
    client_id: str
    topics: tuple[str, ...]      # as subscribed, with the retry topic
    session_timeout_s: float
    assignor: str
    last_heartbeat: float        # a clock() reading
    synced_generation: int       # -1 before its first sync
    assignment: Assignment       # what it owns now
    target: Assignment           # what it gets once hand-overs are done


@dataclass(frozen=True)
class GroupInfo:
    group: str
    generation: int
    state: GroupState
    assignor: str                # the one in use: the oldest member's choice
    members: tuple[MemberInfo, ...]  # oldest first


@dataclass
class _Member:
    member_id: str
    client_id: str
    topics: frozenset[str]       # with the retry topic
    session_timeout: float
    assignor: str
    last_heartbeat: float
    synced_generation: int = -1
    owned: frozenset[TopicPartition] = frozenset()
    revoking_since: float | None = None  # since when it owns a partition not in its target


@dataclass
class _Group:
    name: str
    generation: int = 0
    members: dict[str, _Member] = field(default_factory=dict)  # join order
    target: dict[str, frozenset[TopicPartition]] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)   # the counts target used

    def owned_by_others(self, member_id: str) -> set[TopicPartition]:
        return {tp for other in self.members.values() if other.member_id != member_id
                for tp in other.owned}

    def answer(self, member_id: str) -> frozenset[TopicPartition]:
        """What a sync would give the member now: its target minus others' partitions."""
        target = self.target.get(member_id, frozenset())
        member = self.members[member_id]
        if target == member.owned:  # owned sets never overlap: nothing is withheld
            return target
        return target - self.owned_by_others(member_id)


def _as_assignment(pairs: Iterable[TopicPartition]) -> Assignment:
    out: Assignment = {}
    for topic, p in sorted(pairs):
        out.setdefault(topic, []).append(p)
    return out


class Coordinator:
    """Every consumer group this broker coordinates."""

    def __init__(self, clock: Callable[[], float], default_session_timeout_s: float = 10.0,
                 rebalance_timeout_s: float = DEFAULT_REBALANCE_TIMEOUT_S) -> None:
        self._clock = clock
        self._default_session_timeout = default_session_timeout_s
        self._rebalance_timeout = rebalance_timeout_s
        self._groups: dict[str, _Group] = {}
        self._partitions_of: PartitionsOf = lambda _topic: 0

    # ---- membership -------------------------------------------------------------------

    def join(self, group: str, member_id: str, topics: Iterable[str],
             session_timeout: float | None, assignor: str, client_id: str,
             partitions_of: PartitionsOf) -> tuple[str, int]:
        """Join (empty or unknown ``member_id``: a new member with a fresh id) or re-join;
        returns (member id, generation). A re-join with the same topics and assignor only
        refreshes the member's session; anything else bumps the generation.
        ``partitions_of`` is kept for later rebalances (leave, expiry, topic changes)."""
        subscribed = frozenset(check_name("topics", topic) for topic in topics)
        if not subscribed:
            raise InvalidArgument("topics", "at least one topic is needed")
        timeout = float(session_timeout or self._default_session_timeout)
        if not MIN_SESSION_TIMEOUT_S <= timeout <= MAX_SESSION_TIMEOUT_S:
            raise InvalidArgument("session_timeout", f"must be {MIN_SESSION_TIMEOUT_S:g}.."
                                  f"{MAX_SESSION_TIMEOUT_S:g} s (unset means "
                                  f"{self._default_session_timeout:g} s)")
        assignor = assignor or DEFAULT_ASSIGNOR
        if assignor not in ASSIGNORS:
            raise InvalidArgument("assignor", "unknown assignor", allowed=sorted(ASSIGNORS))
        subscribed |= {retry_topic(group)}

        self._partitions_of = partitions_of
        now = self._clock()
        g = self._groups.setdefault(group, _Group(group))
        self._expire_group(g, now)
        member = g.members.get(member_id) if member_id else None
        if member is not None:
            member.last_heartbeat = now
            member.client_id = client_id
            member.session_timeout = timeout
            if member.topics != subscribed or member.assignor != assignor:
                member.topics, member.assignor = subscribed, assignor
                self._rebalance(g, now, membership_changed=True)
            return member.member_id, g.generation
        new_id = uuid.uuid4().hex
        g.members[new_id] = _Member(new_id, client_id, subscribed, timeout, assignor, now)
        self._rebalance(g, now, membership_changed=True)
        return new_id, g.generation

    def sync(self, group: str, member_id: str, generation: int) -> Assignment:
        """The member's assignment at ``generation`` (the group's current one): its target
        less any partition another member still owns. What it answers is what the member
        owns from now on; anything it owned and is not in the answer is given up."""
        now = self._clock()
        g, member = self._member(group, member_id, now)
        member.last_heartbeat = now
        if generation != g.generation:
            raise StaleGeneration(generation, g.generation)
        answer = g.answer(member_id)
        member.owned = answer
        member.synced_generation = generation
        member.revoking_since = None  # owned is within its target now
        return _as_assignment(answer)

    def heartbeat(self, group: str, member_id: str, generation: int) -> tuple[int, bool]:
        """Keeps the member alive; (the group's generation, whether to call sync): true when
        the generation moved on, or when a sync would now hand over a partition that was
        withheld at the member's last sync."""
        now = self._clock()
        g, member = self._member(group, member_id, now)
        member.last_heartbeat = now
        rebalance = (generation != g.generation or member.synced_generation != g.generation
                     or g.answer(member_id) != member.owned)
        return g.generation, rebalance

    def leave(self, group: str, member_id: str) -> None:
        """The member leaves at once; its partitions go to others. Unknown: nothing to do."""
        now = self._clock()
        g = self._groups.get(group)
        if g is None:
            return
        self._expire_group(g, now)
        if g.members.pop(member_id, None) is not None:
            self._rebalance(g, now, membership_changed=True)

    def expire(self, now: float | None = None) -> list[tuple[str, str]]:
        """Remove, in every group, the members whose session timed out (or who did not give
        up a revoked partition within the rebalance timeout); (group, member id) removed.
        Every other call does this for its own group, so a timer is needed only for groups
        nobody calls."""
        now = self._clock() if now is None else now
        removed: list[tuple[str, str]] = []
        for g in self._groups.values():
            removed.extend((g.name, member) for member in self._expire_group(g, now))
        return removed

    def topics_changed(self, topics: Iterable[str] | None = None,
                       partitions_of: PartitionsOf | None = None) -> list[str]:
        """Re-read partition counts (of ``topics``, or all) and re-assign the groups whose
        counts changed; a group whose target changed gets a new generation. Returns those
        groups' names."""
        if partitions_of is not None:
            self._partitions_of = partitions_of
        wanted = None if topics is None else set(topics)
        now = self._clock()
        bumped: list[str] = []
        for g in self._groups.values():
            self._expire_group(g, now)
            subscribed = {topic for member in g.members.values() for topic in member.topics}
            if wanted is not None and not subscribed & wanted:
                continue
            if self._counts(subscribed) != g.partitions:
                before = g.generation
                self._rebalance(g, now, membership_changed=False)
                if g.generation != before:
                    bumped.append(g.name)
        return bumped

    # ---- commits and views ------------------------------------------------------------

    def check_commit(self, group: str, member_id: str, generation: int,
                     partitions: Iterable[TopicPartition] = ()) -> None:
        """Raise unless the commit may go ahead.

        A member commits at the group's generation or at the one it last synced to (until
        its next sync it still owns those partitions), and only for partitions it owns now:
        NotAssigned otherwise. An unknown or expired member: UnknownMember; another
        generation: StaleGeneration. ``member_id`` "" with generation 0 is a commit from
        outside the group (a tool, a reset): allowed only while the group has no members
        (GroupNotEmpty)."""
        now = self._clock()
        g = self._groups.get(group)
        if g is not None:
            self._expire_group(g, now)
        if not member_id:
            if g is not None and g.members:
                raise GroupNotEmpty(len(g.members))
            if generation != 0:
                raise StaleGeneration(generation, 0 if g is None else g.generation)
            return
        g, member = self._member(group, member_id, now)
        if generation not in (g.generation, member.synced_generation):
            raise StaleGeneration(generation, g.generation)
        for topic, p in partitions:
            if (topic, p) not in member.owned:
                raise NotAssigned(topic, p)

    def describe(self, group: str) -> GroupInfo:
        now = self._clock()
        g = self._groups.get(group)
        if g is None:
            return GroupInfo(group, 0, GroupState.EMPTY, DEFAULT_ASSIGNOR, ())
        self._expire_group(g, now)
        members = tuple(
            MemberInfo(m.member_id, m.client_id, tuple(sorted(m.topics)), m.session_timeout,
                       m.assignor, m.last_heartbeat, m.synced_generation,
                       _as_assignment(m.owned),
                       _as_assignment(g.target.get(m.member_id, frozenset())))
            for m in g.members.values())
        if not g.members:
            state = GroupState.EMPTY
        elif all(m.synced_generation == g.generation
                 and m.owned == g.target.get(m.member_id, frozenset())
                 for m in g.members.values()):
            state = GroupState.STABLE
        else:
            state = GroupState.REBALANCING
        return GroupInfo(group, g.generation, state, self._assignor_of(g), members)

    def groups(self) -> list[str]:
        """Every group this coordinator has seen (with members or not), by name."""
        return sorted(self._groups)

    # ---- internals --------------------------------------------------------------------

    def _member(self, group: str, member_id: str, now: float) -> tuple[_Group, _Member]:
        g = self._groups.get(group)
        if g is not None:
            self._expire_group(g, now)
            member = g.members.get(member_id)
            if member is not None:
                return g, member
        raise UnknownMember(member_id)

    def _expire_group(self, g: _Group, now: float) -> list[str]:
        gone = [m.member_id for m in g.members.values()
                if now - m.last_heartbeat > m.session_timeout
                or (m.revoking_since is not None
                    and now - m.revoking_since > self._rebalance_timeout)]
        if gone:
            for member_id in gone:
                del g.members[member_id]
            self._rebalance(g, now, membership_changed=True)
        return gone

    def _counts(self, topics: Iterable[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for topic in topics:
            try:
                counts[topic] = max(0, int(self._partitions_of(topic)))
            except NotFound:  # not created yet, or deleted
                counts[topic] = 0
        return counts

    @staticmethod
    def _assignor_of(g: _Group) -> str:
        oldest = next(iter(g.members.values()), None)
        return DEFAULT_ASSIGNOR if oldest is None else oldest.assignor

    def _rebalance(self, g: _Group, now: float, membership_changed: bool) -> None:
        """Recompute every target; bump the generation if membership changed or a target
        did. Members that now own a partition outside their target start their rebalance
        timeout."""
        g.target = {m: t for m, t in g.target.items() if m in g.members}
        subscriptions = {m.member_id: m.topics for m in g.members.values()}
        g.partitions = self._counts({t for topics in subscriptions.values() for t in topics})
        assign = ASSIGNORS[self._assignor_of(g)]
        new = assign(subscriptions, g.partitions, g.target)
        target = {member: frozenset(new.get(member, ())) for member in g.members}
        if membership_changed or target != g.target:
            g.generation += 1
        g.target = target
        for m in g.members.values():
            if m.owned - target[m.member_id]:
                if m.revoking_since is None:
                    m.revoking_since = now
            else:
                m.revoking_since = None


@dataclass(frozen=True, slots=True)
class GroupView:
    info: GroupInfo
    heartbeat_ms: Mapping[str, int]  # member -> wall time of its last heartbeat
    lag: list[PartitionLag]
    dead_letter_topic: str
