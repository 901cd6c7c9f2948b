"""The controller: the one broker, elected in etcd, that decides who leads each partition.

Pure decisions first, then the loop that applies them through ``ports.ClusterStore``:

- :func:`place_replicas` puts a new topic's replicas on the live brokers as Kafka does
  without racks: first replicas round-robin from ``start``, the others shifted so that no
  broker holds two copies of a partition and followers spread evenly too.
- :func:`reelect` is the rule for one partition given the live brokers: a leader that is
  gone, or whose process is not the one elected (it restarted), is replaced by the first
  replica in the ISR that is alive (one that restarted only when no other is); brokers
  gone leave the ISR, which is never emptied; with no ISR member alive the partition has
  no leader (no unclean election) until one comes back.
- :class:`Controller` campaigns, and once elected reconciles every partition, then reacts
  to brokers leaving, restarting and (re)registering, and to assignments written by others
  (a new topic whose leader died meanwhile). Every write is a compare-and-swap that is
  also fenced by the controller's own election, so a deposed controller changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, replace
from typing import TypeVar

from geoplex.servers._runtime.errors import InvalidArgument

from .domain import (
    NO_LEADER,
    BrokerInfo,
    ControllerInfo,
    MetadataUnavailable,
    PartitionAssignment,
    StaleAssignment,
    TooFewBrokers,
    TopicSpec,
)
from .ports import ClusterStore

log = logging.getLogger(__name__)

T = TypeVar("T")
TopicPartition = tuple[str, int]

DEFAULT_MAX_REPLICATION = 3  # replication_factor 0: this many copies, or fewer brokers
WRITE_CONCURRENCY = 16  # assignment writes in flight at once
MAX_WRITE_ATTEMPTS = 10  # compare-and-swap conflicts on one partition before giving up
EVENT_QUEUE = 64
RETRY_S = (0.25, 5.0)


# ---- placement ----------------------------------------------------------------------


def replication_factor_for(requested: int, alive: int) -> int:
    """The copies a new topic gets: ``requested``, or with 0, min(3, brokers alive).
    Raises TooFewBrokers when fewer brokers are alive than asked for."""
    if requested < 0:
        raise InvalidArgument("replication_factor", f"{requested} is negative (0: the "
                              f"default, min({DEFAULT_MAX_REPLICATION}, brokers alive))")
    wanted = requested or min(DEFAULT_MAX_REPLICATION, alive)
    if wanted < 1 or wanted > alive:
        raise TooFewBrokers(max(wanted, 1), alive)
    return wanted


def place_replicas(partitions: int, replication_factor: int, brokers: Sequence[int],
                   start: int) -> list[tuple[int, ...]]:
    """Each partition's replicas (the first its preferred leader) on ``brokers``.

    Kafka's rack-unaware assignment: partition p's first replica is broker
    ``(p + start) mod n`` of the sorted ids; the j-th other one is ``1 + (shift + j) mod
    (n - 1)`` brokers further, where the shift starts at ``start`` and grows by one every
    n partitions, so followers do not always sit next to their leader.
    """
    ids = sorted(set(brokers))
    if partitions < 1:
        raise InvalidArgument("partitions", f"{partitions} must be at least 1")
    if replication_factor < 1:
        raise InvalidArgument("replication_factor", f"{replication_factor} must be at least 1")
    n = len(ids)
    if replication_factor > n:
        raise TooFewBrokers(replication_factor, n)
    placed: list[tuple[int, ...]] = []
    shift = start
    for p in range(partitions):
        if p > 0 and p % n == 0:
            shift += 1
        first = (p + start) % n
        others = ((first + 1 + (shift + j) % (n - 1)) % n for j in range(replication_factor - 1))
        placed.append((ids[first], *(ids[i] for i in others)))
    return placed


def initial_assignments(spec: TopicSpec, replicas: Sequence[tuple[int, ...]],
                        brokers_info: Mapping[int, BrokerInfo],
                        controller_epoch: int = 0) -> list[PartitionAssignment]:
    """A new topic's partitions: each led by its first replica (as its process is now),
    every replica in sync, leader epoch 0, not stored yet (version 0)."""
    if len(replicas) != spec.partitions:
        raise ValueError(f"replicas: {len(replicas)} placements for {spec.partitions} "
                         "partitions")
    out = []
    for partition, placed in enumerate(replicas):
        leader = brokers_info.get(placed[0]) if placed else None
        if leader is None:
            raise ValueError(f"replicas: partition {partition}'s first replica is not a live "
                             "broker")
        out.append(PartitionAssignment(spec.name, partition, tuple(placed), leader.id, 0,
                                       tuple(placed), controller_epoch, leader.incarnation))
    return out


def plan_topic(spec: TopicSpec, brokers_info: Mapping[int, BrokerInfo],
               start: int | None = None, controller_epoch: int = 0
               ) -> list[PartitionAssignment]:
    """:func:`place_replicas` (from a random broker unless ``start``) and
    :func:`initial_assignments` for ``spec`` on the brokers alive."""
    if start is None:
        start = random.randrange(max(1, len(brokers_info)))
    placed = place_replicas(spec.partitions, spec.replication_factor, list(brokers_info), start)
    return initial_assignments(spec, placed, brokers_info, controller_epoch)


# ---- election -----------------------------------------------------------------------


def reelect(a: PartitionAssignment, live: Mapping[int, BrokerInfo], gone: Set[int],
            restarted: Set[int], controller_epoch: int) -> PartitionAssignment | None:
    """What ``a`` must become now (None: it is right as it is).

    ``live``: the brokers registered, by id; ``gone``: brokers to take out of ISRs (their
    registration ended: the controller passes every replica not alive); ``restarted``:
    brokers whose process changed (they stay in ISRs: their leaders take them out). A
    leader not alive counts as gone.

    - Leader alive, and the process that was elected: only ``gone`` members leave the ISR
      (never its last one); the leader epoch stays.
    - Otherwise the new leader is the first replica, in replica order, that is in the ISR,
      alive and not gone, preferring any that did not restart (nor is the old leader's
      new process); leader epoch + 1; the ISR loses the gone ones (never all of them).
    - No such replica: no leader (epoch + 1 once, to fence the old one), ISR unchanged.
    """
    gone = set(gone)
    if a.leader != NO_LEADER and a.leader not in live:
        gone.add(a.leader)
    leader_ok = (a.leader != NO_LEADER and a.leader not in gone
                 and live[a.leader].incarnation == a.leader_incarnation)
    isr = tuple(r for r in a.isr if r not in gone) or a.isr
    if leader_ok:
        return None if isr == a.isr else replace(a, isr=isr, controller_epoch=controller_epoch)
    suspect = set(restarted)
    if a.leader != NO_LEADER and a.leader not in gone:
        suspect.add(a.leader)  # alive, but a new process: not the replica that was elected
    candidates = [r for r in a.replicas if r in a.isr and r in live and r not in gone]
    chosen = next((r for r in candidates if r not in suspect),
                  candidates[0] if candidates else NO_LEADER)
    if chosen == NO_LEADER:
        if a.leader == NO_LEADER:
            return None
        return replace(a, leader=NO_LEADER, leader_epoch=a.leader_epoch + 1,
                       controller_epoch=controller_epoch, leader_incarnation="")
    return replace(a, leader=chosen, leader_epoch=a.leader_epoch + 1, isr=isr,
                   controller_epoch=controller_epoch,
                   leader_incarnation=live[chosen].incarnation)


# ---- the controller loop ------------------------------------------------------------


class _Deposed(Exception):
    """This broker is not (surely) the controller any more."""


@dataclass(frozen=True, slots=True)
class _ControllerChanged:
    info: ControllerInfo | None


@dataclass(frozen=True, slots=True)
class _BrokersChanged:
    live: dict[int, BrokerInfo]


@dataclass(frozen=True, slots=True)
class _AssignmentsChanged:
    changes: list[PartitionAssignment | TopicPartition]


_Event = _ControllerChanged | _BrokersChanged | _AssignmentsChanged


async def _pump(source: AsyncIterator[T], wrap: Callable[[T], _Event],
                queue: asyncio.Queue[_Event]) -> None:
    try:
        async for item in source:
            await queue.put(wrap(item))
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
    raise RuntimeError("a cluster watch ended")  # they reconnect by themselves: a bug


class Controller:
    """Campaigns for controller on this broker's registration; while elected, keeps every
    partition led by a live in-sync replica.

    >>> controller = Controller(cluster, me)
    >>> task = asyncio.create_task(controller.run())    # cancel it to stop

    The campaign waits for ``cluster.register(me, ...)`` (the controller key lives on that
    lease).
    """

    def __init__(self, cluster: ClusterStore, broker: BrokerInfo, *,
                 concurrency: int = WRITE_CONCURRENCY) -> None:
        self._cluster = cluster
        self._broker = broker
        self._concurrency = max(1, concurrency)
        self._info: ControllerInfo | None = None
        self._assignments: dict[TopicPartition, PartitionAssignment] = {}

    @property
    def is_controller(self) -> bool:
        return self._info is not None

    @property
    def info(self) -> ControllerInfo | None:
        """This broker's election while it is the controller, else None."""
        return self._info

    async def run(self) -> None:
        """Forever: campaign; once elected, control until deposed; campaign again."""
        backoff = RETRY_S[0]
        while True:
            try:
                info = await self._cluster.campaign(self._broker)
            except Exception as exc:  # noqa: BLE001 - the loop must go on
                if not isinstance(exc, MetadataUnavailable):
                    log.exception("broker %d: the campaign for controller failed; trying "
                                  "again", self._broker.id)
                await asyncio.sleep(backoff)  # a backoff while etcd is away
                backoff = min(backoff * 2, RETRY_S[1])
                continue
            self._info = info
            log.info("broker %d is the controller (controller epoch %d)", info.id, info.epoch)
            failed = False
            try:
                await self._lead(info)
            except* MetadataUnavailable:
                failed = True
                log.warning("controller (epoch %d): etcd does not answer; campaigning again",
                            info.epoch)
            except* Exception:
                failed = True
                log.exception("controller (epoch %d) failed; campaigning again", info.epoch)
            finally:
                self._info = None
                self._assignments = {}
            log.info("broker %d is not the controller any more (controller epoch %d)",
                     info.id, info.epoch)
            # a pause before campaigning again, so a lease in doubt cannot spin the loop
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RETRY_S[1]) if failed else RETRY_S[0]

    async def _lead(self, info: ControllerInfo) -> None:
        """Until deposed: the watches feed one queue, decided on in order."""
        queue: asyncio.Queue[_Event] = asyncio.Queue(EVENT_QUEUE)
        cluster = self._cluster
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(_pump(cluster.watch_controller(), _ControllerChanged, queue))
                tasks.create_task(_pump(cluster.watch_brokers(), _BrokersChanged, queue))
                tasks.create_task(_pump(cluster.watch_assignments(), _AssignmentsChanged,
                                        queue))
                tasks.create_task(self._decide(info, queue))
        except* _Deposed:
            pass

    async def _decide(self, info: ControllerInfo, queue: asyncio.Queue[_Event]) -> None:
        """The watches only say *that* something changed: the brokers alive are read again
        (a linearizable read) before each decision. Each watch lags on its own, so the
        broker watch may not have shown yet a broker that registered before a topic the
        assignment watch shows; a read after the assignment was seen shows it."""
        live: dict[int, BrokerInfo] | None = None
        listed = brokers_seen = False
        while True:
            events = [await queue.get()]
            while not queue.empty():
                events.append(queue.get_nowait())
            changed: dict[TopicPartition, PartitionAssignment] = {}
            for event in events:
                if isinstance(event, _ControllerChanged):
                    now = event.info
                    if now is None or (now.id, now.epoch) != (info.id, info.epoch):
                        raise _Deposed()
                elif isinstance(event, _BrokersChanged):
                    brokers_seen = True
                else:
                    listed = True
                    changed.update((a.key, a) for a in self._absorb(event.changes))
            if not (listed and brokers_seen):
                continue  # the first state of each is yet to come
            before, live = live, await self._cluster.brokers()
            if before is None:
                log.info("controller (epoch %d): reconciling %d partitions; brokers alive %s",
                         info.epoch, len(self._assignments), sorted(live))
                await self._apply(info, list(self._assignments.values()), live, set())
            elif (restarted := self._brokers_moved(info, before, live)) is not None:
                await self._apply(info, list(self._assignments.values()), live, restarted)
            elif changed:
                await self._apply(info, list(changed.values()), live, set())

    def _hold(self, a: PartitionAssignment) -> bool:
        """Keep ``a`` unless what is held is newer; whether it was kept."""
        held = self._assignments.get(a.key)
        if held is not None and held.version > a.version:
            return False
        self._assignments[a.key] = a
        return True

    def _absorb(self, changes: Iterable[PartitionAssignment | TopicPartition]
                ) -> list[PartitionAssignment]:
        kept = []
        for change in changes:
            if isinstance(change, PartitionAssignment):
                if self._hold(change):
                    kept.append(change)
            else:
                self._assignments.pop(change, None)
        return kept

    @staticmethod
    def _brokers_moved(info: ControllerInfo, before: Mapping[int, BrokerInfo],
                       live: Mapping[int, BrokerInfo]) -> set[int] | None:
        """The brokers that restarted when one left, restarted or registered, else None."""
        gone = set(before) - set(live)
        restarted = {i for i in set(before) & set(live)
                     if before[i].incarnation != live[i].incarnation}
        came = set(live) - set(before)
        if not (gone or restarted or came):
            return None
        log.info("controller (epoch %d): brokers gone %s, restarted %s, registered %s",
                 info.epoch, sorted(gone), sorted(restarted), sorted(came))
        return restarted

    async def _apply(self, info: ControllerInfo, assignments: Iterable[PartitionAssignment],
                     live: Mapping[int, BrokerInfo], restarted: Set[int]) -> None:
        """:func:`reelect` each of ``assignments``, every replica not alive taken as gone (a
        read of the brokers after the assignment was seen: a replica the leader put in the
        ISR registered before, so it is there unless it has left since), and store what
        changed."""
        changes = [(a, new) for a in assignments
                   if (new := reelect(a, live, set(a.replicas) - live.keys(), restarted,
                                      info.epoch)) is not None]
        if not changes:
            return
        limit = asyncio.Semaphore(self._concurrency)
        async with asyncio.TaskGroup() as writes:
            for before, new in changes:
                writes.create_task(self._write(info, before, new, live, restarted, limit))

    async def _write(self, info: ControllerInfo, before: PartitionAssignment,
                     new: PartitionAssignment, live: Mapping[int, BrokerInfo],
                     restarted: Set[int], limit: asyncio.Semaphore) -> None:
        """Store ``new`` (derived from ``before``); on a conflict, decide again on what is
        stored. _Deposed when the write fails because this broker is not the controller."""
        async with limit:
            for _ in range(MAX_WRITE_ATTEMPTS):
                if time.monotonic() >= self._cluster.fence_deadline:
                    raise _Deposed()  # the lease may be gone: so may the election
                try:
                    stored = await self._cluster.update_assignment(new, controller=info)
                except StaleAssignment as stale:
                    current = stale.current
                    if current is None:  # the topic was deleted
                        self._assignments.pop(new.key, None)
                        return
                    if current.version == new.version:
                        raise _Deposed() from None  # unchanged: the election compare failed
                    self._hold(current)
                    before = current
                    again = reelect(current, live, set(current.replicas) - live.keys(),
                                    restarted, info.epoch)
                    if again is None:
                        return
                    new = again
                    continue
                self._hold(stored)
                self._report(info, before, stored)
                return
            log.warning("%s-%d: its assignment kept changing under the controller; left to "
                        "the next change", new.topic, new.partition)

    @staticmethod
    def _report(info: ControllerInfo, before: PartitionAssignment,
                after: PartitionAssignment) -> None:
        if (before.leader, before.leader_epoch) != (after.leader, after.leader_epoch):
            log.info("%s-%d: leader %d -> %d (leader epoch %d, controller epoch %d)",
                     after.topic, after.partition, before.leader, after.leader,
                     after.leader_epoch, info.epoch)
        if before.isr != after.isr:
            log.info("%s-%d: isr %s -> %s (controller epoch %d)", after.topic,
                     after.partition, list(before.isr), list(after.isr), info.epoch)
