"""Replication: this broker's role per partition, followers copying from leaders, the ISR
and the high watermark.

The assignments in etcd (written by the controller and by leaders, compare-and-swap on
their version) say who leads each partition at which leader epoch and who is in sync.
Every broker follows them (``watch_assignments``):

- **Leader** (assignment.leader is this broker *and* this process: its incarnation): it
  stamps new batches with the epoch (``begin_epoch``), answers followers' fetches with its
  stored frames, tracks each follower's log end, and moves the high watermark to what
  every in-sync replica has on disk (its own durable end and each ISR follower's fetch
  offset). A follower that has not caught up with the leader's log end for
  ``replica_lag_time_ms`` (or, if set, lags by more than ``replica_lag_max_messages``)
  is removed from the ISR, and one that has caught up again is added, both by a
  compare-and-swap in etcd before the change counts for acknowledgements; a follower whose
  process restarted (new incarnation) leaves the ISR until it catches up again.
- **Follower**: a loop fetches from the leader at its log end, appends the frames as they
  were stored (synced before the next fetch says how far it is), truncates a divergent tail
  when the leader says where its last epoch ends (KIP-101 / KIP-595), and takes the
  leader's high watermark.
- Partitions of a topic with one replica on this broker (and topics from before
  replication) are led by it without etcd, as in part 1.

Acknowledgement rules (``check_writable`` before the append, ``committed`` after): only
the current leader takes writes; a replicated partition's leader acknowledges nothing
once its etcd lease may have expired (``fence_deadline``), since the controller may have
elected another; acks=ALL needs ``min_insync`` replicas in the ISR before and after.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from .config import BrokerConfig
from .domain import (
    NO_LEADER,
    BrokerInfo,
    ClusterMetadata,
    ControllerInfo,
    Fenced,
    FencedLeaderEpoch,
    LedPartition,
    LeaderNotAvailable,
    MetadataUnavailable,
    NotCoordinator,
    NotEnoughReplicas,
    NotLeader,
    PartitionAssignment,
    ReplicaChunk,
    ReplicaFetch,
    ReplicaView,
    StaleAssignment,
    TopicSpec,
    UnknownLeaderEpoch,
)
from .ports import ClusterStore, LogStore, PartitionLog, PeerError, ReplicaPeers

log = logging.getLogger(__name__)

Key = tuple[str, int]
W = TypeVar("W")
FOLLOWER_WAIT_MS = 500  # a follower's long poll at the leader's log end
FETCH_BYTES = 4 << 20
BACKOFF_S = (0.05, 1.0)
ISR_CHECK_S = 0.25
ACK_SLICE_S = 0.25


def rendezvous(group: str, brokers: list[int]) -> int:
    """The broker that coordinates ``group``: highest crc32 of group/id (moves as little as
    possible when brokers come and go)."""
    return max(brokers, key=lambda b: (zlib.crc32(f"{group}/{b}".encode()), b))


@dataclass(slots=True)
class _Follower:
    broker: int
    fetch_offset: int  # its durable log end, as its last fetch said
    caught_up: float  # monotonic: when it last had everything the leader had
    caught_up_ms: int = 0
    last_fetch: float = 0.0
    end_at_last_fetch: int = 0
    incarnation: str = ""


@dataclass(slots=True)
class _Role:
    assignment: PartitionAssignment
    kind: str  # "leader" | "follower" | "none"
    epoch: int = -1
    followers: dict[int, _Follower] = field(default_factory=dict)
    isr: set[int] = field(default_factory=set)  # as stored; grows at once, shrinks once stored
    epoch_start: int = 0  # the leader's log end when its epoch began
    task: asyncio.Task[None] | None = None  # the follower's fetch loop
    moved: asyncio.Future[None] | None = None  # set when the log end or hw moves
    writing: bool = False  # an ISR change is being stored
    replicated: bool = False
    mutating: asyncio.Future[object] | None = None  # a follower's append or truncation

    def wake(self) -> None:
        if self.moved is not None and not self.moved.done():
            self.moved.set_result(None)
        self.moved = None


class ReplicaManager:
    """See the module docstring. ``me`` is this broker's registration (its incarnation is
    this process's)."""

    def __init__(self, config: BrokerConfig, me: BrokerInfo, logs: LogStore,
                 cluster: ClusterStore, peers: ReplicaPeers,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.me = me
        self.logs = logs
        self.cluster = cluster
        self.peers = peers
        self.clock = clock
        self.brokers: dict[int, BrokerInfo] = {me.id: me}
        self.controller: ControllerInfo | None = None
        self.assignments: dict[Key, PartitionAssignment] = {}
        self.roles: dict[Key, _Role] = {}
        self._topics: Callable[[str], TopicSpec | None] = lambda name: None
        self._tasks: list[asyncio.Task[None]] = []
        self._lag_s = config.replica_lag_time_ms / 1000
        self._synced = asyncio.Event()  # the first assignment listing arrived

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self, topics: Callable[[str], TopicSpec | None]) -> None:
        self._topics = topics
        self._tasks = [
            asyncio.create_task(self._follow_brokers(), name="broker cluster watch"),
            asyncio.create_task(self._follow_controller(), name="broker controller watch"),
            asyncio.create_task(self._follow_assignments(), name="broker assignment watch"),
            asyncio.create_task(self._check_isr(), name="broker ISR check"),
        ]

    async def wait_synced(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._synced.wait()
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        for role in self.roles.values():
            if role.task is not None:
                role.task.cancel()
            role.wake()
        tasks = [*self._tasks, *(r.task for r in self.roles.values() if r.task is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        await self.peers.close()

    # ---- what etcd says -----------------------------------------------------------------

    async def _follow_brokers(self) -> None:
        async for live in _forever(self.cluster.watch_brokers, "broker list"):
            self.brokers = dict(live)
            self.brokers.setdefault(self.me.id, self.me)

    async def _follow_controller(self) -> None:
        async for controller in _forever(self.cluster.watch_controller, "controller"):
            self.controller = controller

    async def _follow_assignments(self) -> None:
        async for batch in _forever(self.cluster.watch_assignments, "assignments"):
            for item in batch:
                if isinstance(item, PartitionAssignment):
                    current = self.assignments.get(item.key)
                    if current is not None and current.version > item.version:
                        continue  # a stale repeat after a relist
                    self.assignments[item.key] = item
                    await self._take(item)
                else:
                    self.assignments.pop(item, None)
                    await self._drop(item)
            self._synced.set()

    def topic_deleted(self, topic: str) -> None:
        for key in [k for k in self.roles if k[0] == topic]:
            role = self.roles.pop(key)
            if role.task is not None:
                role.task.cancel()
            role.wake()
        for key in [k for k in self.assignments if k[0] == topic]:
            del self.assignments[key]

    async def topic_created(self, spec: TopicSpec) -> None:
        """The topic's logs exist now: take up the roles its assignments give."""
        for p in range(spec.partitions):
            a = self.assignments.get((spec.name, p))
            if a is not None:
                await self._take(a)

    async def _drop(self, key: Key) -> None:
        role = self.roles.pop(key, None)
        if role is not None:
            if role.task is not None:
                role.task.cancel()
            role.wake()

    def _log(self, key: Key) -> PartitionLog | None:
        spec = self._topics(key[0])
        if spec is None or key[1] >= spec.partitions:
            return None  # the topic's logs are made when its spec arrives
        return self.logs.partition(*key)

    async def _take(self, a: PartitionAssignment) -> None:
        """Act on a partition's new assignment: lead, follow, or neither."""
        plog = self._log(a.key)
        if plog is None:
            return
        role = self.roles.get(a.key)
        leads = self._leads(a)
        kind = "leader" if leads else (
            "follower" if self.me.id in a.replicas and a.leader != NO_LEADER else "none")
        replicated = len(a.replicas) > 1
        if role is not None and role.kind == kind and role.epoch == a.leader_epoch:
            role.assignment = a
            if kind == "leader" and not role.writing:
                role.isr = set(a.isr)
                self._advance_hw(a.key, role, plog)
            return
        if role is not None:
            if role.task is not None:
                role.task.cancel()
            role.wake()
            if role.mutating is not None and not role.mutating.done():
                # a follower's append or truncation finishes before anything else writes
                await asyncio.gather(role.mutating, return_exceptions=True)
        role = _Role(a, kind, a.leader_epoch, replicated=replicated)
        self.roles[a.key] = role
        plog.set_replicated(replicated)
        if kind == "leader":
            if plog.latest_epoch < a.leader_epoch:
                plog.begin_epoch(a.leader_epoch)
            role.epoch_start = plog.log_end_offset
            role.isr = set(a.isr)
            now = self.clock()
            hw = plog.high_watermark
            for b in a.replicas:
                if b != self.me.id:
                    role.followers[b] = _Follower(b, hw, now)
            plog.set_durable_listener(partial(self._durable, a.key))
            self._advance_hw(a.key, role, plog)
            log.info("%s-%d: leading at epoch %d (in sync: %s)", a.topic, a.partition,
                     a.leader_epoch, sorted(a.isr))
        else:
            plog.set_durable_listener(None)
            damaged = plog.damaged_offset
            if kind == "follower" and damaged >= 0:
                # never serve (or be elected with) a batch known bad: copy it again
                log.warning("%s-%d: batch at offset %d failed its CRC at recovery; truncating "
                            "there and copying the rest from broker %d", a.topic, a.partition,
                            damaged, a.leader)
                await plog.truncate_to(max(damaged, plog.log_start_offset))
            if kind == "follower":
                role.task = asyncio.create_task(self._fetch_loop(a.key, role),
                                                name=f"replica {a.topic}-{a.partition}")
                log.info("%s-%d: following broker %d at epoch %d", a.topic, a.partition,
                         a.leader, a.leader_epoch)

    def registered(self, me: BrokerInfo) -> None:
        """This broker's registration, now that its address is known."""
        self.me = me
        self.brokers[me.id] = me

    # ---- metadata -----------------------------------------------------------------------

    def live_ids(self) -> list[int]:
        return sorted(self.brokers)

    def coordinator_of(self, group: str) -> BrokerInfo:
        return self.brokers[rendezvous(group, self.live_ids())]

    def check_coordinator(self, group: str) -> None:
        chosen = self.coordinator_of(group)
        if chosen.id != self.me.id:
            raise NotCoordinator(group, chosen.id, chosen.address)

    def assignment(self, topic: str, partition: int) -> PartitionAssignment:
        a = self.assignments.get((topic, partition))
        spec = self._topics(topic)
        if a is None and spec is not None and spec.replication_factor > 1:
            return PartitionAssignment(topic, partition, (), NO_LEADER, -1, ())
        if a is None:  # a topic from before replication, or one replica: this broker's
            return PartitionAssignment(topic, partition, (self.me.id,), self.me.id, 0,
                                       (self.me.id,), 0, self.me.incarnation)
        return a

    def metadata(self, specs: list[TopicSpec], group: str) -> ClusterMetadata:
        topics = [(spec, [self.assignment(spec.name, p) for p in range(spec.partitions)])
                  for spec in specs]
        return ClusterMetadata(sorted(self.brokers.values(), key=lambda b: b.id),
                               self.controller, topics,
                               self.coordinator_of(group) if group else None, self.me.id)

    def address_of(self, broker: int) -> str:
        info = self.brokers.get(broker)
        return info.address if info is not None else ""

    # ---- the write path -----------------------------------------------------------------

    def _leads(self, a: PartitionAssignment) -> bool:
        """The assignment names this process (its only copy is always this broker's)."""
        if a.leader != self.me.id:
            return False
        return a.leader_incarnation == self.me.incarnation or a.replicas == (self.me.id,)

    def check_leader(self, topic: str, partition: int) -> None:
        """Raise unless this broker leads the partition now (reads and writes)."""
        a = self.assignment(topic, partition)
        if self._leads(a):
            return
        if a.leader == NO_LEADER or a.leader not in self.brokers:
            raise LeaderNotAvailable(topic, partition)
        raise NotLeader(topic, partition, a.leader, self.address_of(a.leader), a.leader_epoch)

    def check_writable(self, spec: TopicSpec, partition: int, acks_all: bool) -> None:
        self.check_leader(spec.name, partition)
        a = self.assignment(spec.name, partition)
        if len(a.replicas) <= 1:
            return
        if self.clock() >= self.cluster.fence_deadline:
            raise Fenced(spec.name, partition)
        role = self.roles.get(a.key)
        in_sync = len(role.isr) if role is not None else len(a.isr)
        if acks_all and in_sync < spec.min_insync:
            raise NotEnoughReplicas(spec.name, partition, in_sync, spec.min_insync)

    async def committed(self, spec: TopicSpec, partition: int, end: int, acks_all: bool,
                        plog: PartitionLog) -> None:
        """After an append ending at ``end``: wait until acks allow the answer."""
        a = self.assignment(spec.name, partition)
        if len(a.replicas) <= 1:
            return
        role = self.roles.get(a.key)
        if role is not None:
            role.wake()  # followers waiting at the log end fetch now
        if acks_all:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.config.ack_timeout_ms / 1000
            # in slices: a leadership lost meanwhile answers at once, not at the deadline
            while not await plog.wait_for(end - 1, min(ACK_SLICE_S, deadline - loop.time())):
                if self.roles.get(a.key) is not role or loop.time() >= deadline:
                    break
            role_now = self.roles.get(a.key)
            if role_now is not role or role is None or role.kind != "leader":
                current = self.assignment(spec.name, partition)
                raise NotLeader(spec.name, partition, current.leader,
                                self.address_of(current.leader), current.leader_epoch)
            if plog.high_watermark < end:
                raise NotEnoughReplicas(spec.name, partition, len(role.isr), spec.min_insync,
                                        written=True)
            if role.epoch != a.leader_epoch:
                current = self.assignment(spec.name, partition)
                raise NotLeader(spec.name, partition, current.leader,
                                self.address_of(current.leader), current.leader_epoch)
            if len(role.isr) < spec.min_insync:
                raise NotEnoughReplicas(spec.name, partition, len(role.isr),
                                        spec.min_insync, written=True)
        if self.clock() >= self.cluster.fence_deadline:
            raise Fenced(spec.name, partition)

    # ---- the leader's side --------------------------------------------------------------

    def _durable(self, key: Key, _end: int = 0) -> None:
        role = self.roles.get(key)
        plog = self._log(key)
        if role is not None and plog is not None and role.kind == "leader":
            self._advance_hw(key, role, plog)

    def _advance_hw(self, key: Key, role: _Role, plog: PartitionLog) -> None:
        if not role.replicated:
            return
        hw = plog.durable_end
        for b in role.isr:
            if b != self.me.id:
                follower = role.followers.get(b)
                hw = min(hw, follower.fetch_offset if follower is not None else 0)
        if hw > plog.high_watermark:
            plog.set_high_watermark(hw)
            role.wake()

    async def handle_fetch(self, q: ReplicaFetch) -> ReplicaChunk:
        key = (q.topic, q.partition)
        role = self.roles.get(key)
        plog = self._log(key)
        if role is None or plog is None or role.kind != "leader":
            self.check_leader(q.topic, q.partition)  # raises: not (or no longer) the leader
            raise LeaderNotAvailable(q.topic, q.partition)
        if q.leader_epoch > role.epoch:
            raise FencedLeaderEpoch(role.epoch, q.leader_epoch)
        if q.leader_epoch < role.epoch:
            raise UnknownLeaderEpoch(role.epoch, q.leader_epoch)
        if q.last_fetched_epoch >= 0:
            epoch, end = plog.end_offset_for_epoch(q.last_fetched_epoch)
            if epoch != q.last_fetched_epoch or end < q.fetch_offset:
                return ReplicaChunk(b"", plog.high_watermark, plog.log_start_offset,
                                    plog.log_end_offset, max(epoch, 0) if epoch >= 0 else 0,
                                    end if epoch >= 0 else plog.log_start_offset)
        elif q.fetch_offset > plog.log_end_offset:
            return ReplicaChunk(b"", plog.high_watermark, plog.log_start_offset,
                                plog.log_end_offset, 0, plog.log_start_offset)
        self._track(key, role, plog, q)
        if q.fetch_offset >= plog.log_end_offset and q.max_wait_ms > 0:
            await self._wait_moved(role, q.max_wait_ms / 1000, plog, q.fetch_offset)
            self._track(key, role, plog, q)
        if q.fetch_offset < plog.log_start_offset:  # retention passed it: start over there
            return ReplicaChunk(b"", plog.high_watermark, plog.log_start_offset,
                                plog.log_end_offset)
        frames = plog.read_frames(q.fetch_offset, q.max_bytes or FETCH_BYTES) \
            if q.fetch_offset < plog.log_end_offset else None
        return ReplicaChunk(frames.data if frames is not None else b"", plog.high_watermark,
                            plog.log_start_offset, plog.log_end_offset)

    async def _wait_moved(self, role: _Role, timeout: float, plog: PartitionLog,
                          offset: int) -> None:
        hw = plog.high_watermark
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while plog.log_end_offset <= offset and plog.high_watermark == hw:
            remaining = deadline - loop.time()
            if remaining <= 0 or self.roles.get(role.assignment.key) is not role:
                return
            if role.moved is None:
                role.moved = loop.create_future()
            await asyncio.wait((role.moved,), timeout=remaining)

    def _track(self, key: Key, role: _Role, plog: PartitionLog, q: ReplicaFetch) -> None:
        """A follower's fetch says how far it is: its position, caught-up time, ISR."""
        follower = role.followers.get(q.replica_id)
        if follower is None:
            if q.replica_id not in role.assignment.replicas:
                return
            follower = role.followers[q.replica_id] = _Follower(q.replica_id, 0, 0.0)
        now = self.clock()
        end = plog.log_end_offset
        restarted = bool(follower.incarnation) and follower.incarnation != q.replica_incarnation
        follower.incarnation = q.replica_incarnation
        follower.fetch_offset = q.fetch_offset
        if q.fetch_offset >= end:
            follower.caught_up = now
            follower.caught_up_ms = time.time_ns() // 1_000_000
        elif q.fetch_offset >= follower.end_at_last_fetch and follower.last_fetch:
            follower.caught_up = max(follower.caught_up, follower.last_fetch)
        follower.last_fetch, follower.end_at_last_fetch = now, end
        if restarted and q.replica_id in role.isr:
            self._change_isr(key, role, remove={q.replica_id})
        elif (q.replica_id not in role.isr and q.fetch_offset >= plog.high_watermark
              and q.fetch_offset >= role.epoch_start and not restarted):
            self._change_isr(key, role, add={q.replica_id})
        self._advance_hw(key, role, plog)

    async def _check_isr(self) -> None:
        while True:
            await asyncio.sleep(ISR_CHECK_S)  # a timer: lag is judged on time
            now = self.clock()
            for key, role in list(self.roles.items()):
                if role.kind != "leader" or not role.replicated or role.writing:
                    continue
                plog = self._log(key)
                if plog is None:
                    continue
                behind = set()
                end = plog.log_end_offset
                for b in role.isr:
                    f = role.followers.get(b)
                    if b == self.me.id or f is None:
                        continue
                    lag = end - f.fetch_offset
                    if lag > 0 and (now - f.caught_up > self._lag_s or (
                            self.config.replica_lag_max_messages
                            and lag > self.config.replica_lag_max_messages)):
                        behind.add(b)
                if behind:
                    self._change_isr(key, role, remove=behind)

    def _change_isr(self, key: Key, role: _Role, add: set[int] | None = None,
                    remove: set[int] | None = None) -> None:
        if role.writing:
            return
        wanted = (role.isr | (add or set())) - (remove or set())
        if not wanted or wanted == role.isr:
            return
        if add:  # counts at once: more replicas to wait for is never unsafe
            role.isr |= add
        role.writing = True
        task = asyncio.create_task(self._store_isr(key, role, wanted),
                                   name=f"ISR {key[0]}-{key[1]}")
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _store_isr(self, key: Key, role: _Role, wanted: set[int]) -> None:
        try:
            current = role.assignment
            ordered = tuple(b for b in current.replicas if b in wanted)
            new = PartitionAssignment(current.topic, current.partition, current.replicas,
                                      current.leader, current.leader_epoch, ordered,
                                      current.controller_epoch, current.leader_incarnation,
                                      current.version)
            try:
                stored = await self.cluster.update_assignment(new)
            except StaleAssignment as stale:
                if stale.current is not None:
                    self.assignments[key] = stale.current
                    role.writing = False
                    await self._take(stale.current)
                return
            except MetadataUnavailable:
                return
            if self.roles.get(key) is role:
                role.assignment = stored
                role.isr = set(stored.isr)
                self.assignments[key] = stored
                log.info("%s-%d: in sync now %s (epoch %d)", key[0], key[1], list(stored.isr),
                         stored.leader_epoch)
        finally:
            role.writing = False
            plog = self._log(key)
            if plog is not None and self.roles.get(key) is role:
                self._advance_hw(key, role, plog)

    def led(self, topics: set[str]) -> list[LedPartition]:
        out = []
        for (topic, p), role in sorted(self.roles.items()):
            if role.kind != "leader" or (topics and topic not in topics):
                continue
            plog = self._log((topic, p))
            if plog is None:
                continue
            end = plog.log_end_offset
            views = [ReplicaView(self.me.id, end, 0, True, time.time_ns() // 1_000_000)]
            for b in role.assignment.replicas:
                if b == self.me.id:
                    continue
                f = role.followers.get(b)
                offset = f.fetch_offset if f is not None else 0
                views.append(ReplicaView(b, offset, max(0, end - offset), b in role.isr,
                                         f.caught_up_ms if f is not None else 0))
            out.append(LedPartition(topic, p, role.epoch, plog.high_watermark, end, views))
        return out

    # ---- the follower's side ------------------------------------------------------------

    @staticmethod
    async def _mutate(role: _Role, change: Coroutine[Any, Any, object]) -> None:
        """Run a change of the follower's log to its end even if the role ends meanwhile
        (the next role waits for it: see _take)."""
        task: asyncio.Future[object] = asyncio.ensure_future(change)
        role.mutating = task
        await asyncio.shield(task)

    async def _fetch_loop(self, key: Key, role: _Role) -> None:
        a = role.assignment
        delay = BACKOFF_S[0]
        while self.roles.get(key) is role:
            plog = self._log(key)
            address = self.address_of(a.leader)
            if plog is None or not address:
                await asyncio.sleep(delay)  # a backoff: the leader is not registered yet
                delay = min(BACKOFF_S[1], delay * 2)
                continue
            query = ReplicaFetch(self.me.id, a.topic, a.partition, plog.log_end_offset,
                                 plog.last_batch_epoch, a.leader_epoch, FETCH_BYTES,
                                 FOLLOWER_WAIT_MS, self.me.incarnation)
            try:
                chunk = await self.peers.fetch(address, query, FOLLOWER_WAIT_MS / 1000 + 5.0)
            except PeerError as exc:
                log.debug("%s-%d: fetch from broker %d failed: %s", a.topic, a.partition,
                          a.leader, exc)
                await asyncio.sleep(delay * (0.5 + random.random()))  # a backoff
                delay = min(BACKOFF_S[1], delay * 2)
                continue
            delay = BACKOFF_S[0]
            if self.roles.get(key) is not role:
                return
            if chunk.diverging_epoch >= 0:
                epoch, own_end = plog.end_offset_for_epoch(chunk.diverging_epoch)
                cut = min(chunk.diverging_end_offset,
                          own_end if epoch == chunk.diverging_epoch else chunk.diverging_end_offset,
                          plog.log_end_offset)
                log.warning("%s-%d: the log diverges from the leader's after offset %d "
                            "(epoch %d); truncating %d records", a.topic, a.partition, cut,
                            chunk.diverging_epoch, plog.log_end_offset - cut)
                await self._mutate(role, plog.truncate_to(max(cut, plog.log_start_offset)))
                continue
            if not chunk.frames and chunk.log_start_offset > plog.log_end_offset:
                log.warning("%s-%d: behind the leader's log start %d; starting over there",
                            a.topic, a.partition, chunk.log_start_offset)
                await self._mutate(role, plog.truncate_fully(chunk.log_start_offset))
                continue
            if chunk.frames:
                await self._mutate(role, plog.append_frames(chunk.frames))
            plog.set_high_watermark(min(chunk.high_watermark, plog.log_end_offset))


async def _forever(watch: Callable[[], AsyncIterator[W]], what: str) -> AsyncIterator[W]:
    """A watch that reconnects by itself, followed for as long as the broker runs (the
    adapter already reconnects; this is a backstop against anything else it raises)."""
    while True:
        try:
            async for item in watch():
                yield item
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - watched again after a backoff
            log.exception("the %s watch failed; watching again", what)
        await asyncio.sleep(1.0)  # a backoff before watching again
