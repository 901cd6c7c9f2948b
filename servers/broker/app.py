"""BrokerApp: one broker node — its partition logs, the topics it knows, its consumer groups.

- Topics are read from the metadata store (etcd) at start and watched; the app serves
  from that cache, so produce and fetch of known topics go on while etcd is down (admin
  calls and commits answer UNAVAILABLE then). A copy of the cache is kept in the data
  directory, so a broker restarted during an etcd outage still serves its topics.
- Produce: an explicit partition, else crc32c(key) mod partitions per record (a request
  split into one batch per partition), else one partition per request, round-robin
  across requests (sticky). ``acks=NONE`` answers before the append completes (it still
  happens, in order).
- Fetch waits at the end of the log up to ``max_wait`` (long polling on
  ``PartitionLog.wait_for``); Subscribe loops over the same.
- Consumer groups go through the in-memory :class:`~.groups.Coordinator` (a timer expires
  silent members); commits go to the offset store after the coordinator fences them.
- A retention task deletes old segments on an interval; :mod:`.retries` runs the delay
  schedulers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
import zlib
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping, Sequence
from typing import Any

from geoplex.servers._runtime.errors import Unavailable

from .config import BrokerConfig
from .domain import (
    Appended,
    FetchQuery,
    Join,
    MetadataUnavailable,
    NackQuery,
    NotLeader,
    OffsetOutOfRange,
    OffsetsView,
    PartitionBatch,
    PartitionLag,
    PartitionState,
    ProducePlan,
    ClusterMetadata,
    LedPartition,
    PartitionAssignment,
    ReadResult,
    ReplicaChunk,
    ReplicaFetch,
    Reset,
    TooFewBrokers,
    TopicExists,
    TopicSpec,
    UnknownPartition,
    UnknownTopic,
    spec_from_dict,
    spec_to_dict,
)
from .controller import place_replicas
from .groups import Coordinator, GroupNotEmpty, GroupView, retry_topic
from .ports import (
    ClusterStore,
    CursorStore,
    LogStore,
    OffsetStore,
    PartitionLog,
    PeerError,
    TopicStore,
)
from .replication import ReplicaManager
from .retries import Retries, dead_letter_topic, group_of_delay_topic, internal_config

log = logging.getLogger(__name__)

SUBSCRIBE_WAIT_S = 30.0
NACK_COPY_WAIT_S = 5.0
SNAPSHOT_FILE = "topics.json"
WATCH_RETRY_S = 1.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class BrokerApp:
    def __init__(self, config: BrokerConfig, logs: LogStore, topics: TopicStore,
                 offsets: OffsetStore, cursors: CursorStore,
                 clock: Callable[[], float] = time.monotonic,
                 now_ms: Callable[[], int] = wall_ms,
                 replicas: ReplicaManager | None = None,
                 cluster: ClusterStore | None = None) -> None:
        self.config = config
        self.replicas = replicas  # None: a broker on its own (no cluster in etcd)
        self.cluster = cluster
        self.logs = logs
        self.topic_store = topics
        self.offsets = offsets
        self.clock = clock
        self.now_ms = now_ms
        self.coordinator = Coordinator(clock, config.session_timeout_s)
        self.retries = Retries(logs, cursors, self._ensure_internal, now_ms,
                               append=self._append_internal if replicas is not None else None,
                               leads=self._leads)
        self._topics: dict[str, TopicSpec] = {}
        self._sticky: dict[str, int] = {}
        self._topic_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[object]] = set()  # acks=NONE appends
        self._closing = asyncio.Event()
        self._closing_wait: asyncio.Task[bool] | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.logs.open()
        listed = True
        try:
            specs = list(await self.topic_store.list())
        except MetadataUnavailable:
            listed = False
            specs = self._read_snapshot()
            log.warning("etcd cannot be reached at start: serving the %d topics this broker "
                        "knew last (from %s) until it is back", len(specs),
                        self.config.data_dir / SNAPSHOT_FILE)
        for spec in specs:
            await self._apply(spec.name, spec, save=False)
        known = set(self._topics)
        strays = sorted(set(self.logs.topics()) - known)
        if strays:
            log.warning("partition logs of %d topics not in the metadata store are kept but "
                        "not served: %s", len(strays), ", ".join(strays[:10]))
        self._save_snapshot()
        if self.replicas is not None:
            await self.replicas.start(self._topics.get)
        self._closing_wait = asyncio.create_task(self._closing.wait())
        self._tasks.extend([
            asyncio.create_task(self._follow_topics(listed), name="broker topic watch"),
            asyncio.create_task(self._expire_members(), name="broker group expiry"),
            asyncio.create_task(self._retention(), name="broker retention"),
        ])

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` in the background until the broker stops (stop() cancels it)."""
        self._tasks.append(asyncio.create_task(work, name=name))

    async def begin_shutdown(self) -> None:
        """Health is NOT_SERVING: long polls answer, Subscribe streams end (UNAVAILABLE)."""
        self._closing.set()

    async def stop(self) -> None:
        self._closing.set()
        if self._background:  # acks=NONE appends finish before the logs close
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.retries.close()
        for task in self._tasks:
            task.cancel()
        if self._closing_wait is not None:
            self._closing_wait.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.replicas is not None:
            await self.replicas.stop()
        await self.logs.close()

    # ---- topics -------------------------------------------------------------------------

    def topic(self, name: str) -> TopicSpec:
        spec = self._topics.get(name)
        if spec is None:
            raise UnknownTopic(name)
        return spec

    def partitions_of(self, name: str) -> int:
        spec = self._topics.get(name)
        return 0 if spec is None else spec.partitions

    def _partition(self, topic: str, partition: int) -> PartitionLog:
        spec = self.topic(topic)
        if not 0 <= partition < spec.partitions:
            raise UnknownPartition(topic, partition, spec.partitions)
        return self.logs.partition(topic, partition)

    def sticky(self, spec: TopicSpec) -> Callable[[], int]:
        """The partition of a request's keyless records: the next one round-robin."""
        def choose() -> int:
            turn = self._sticky.get(spec.name, -1) + 1
            self._sticky[spec.name] = turn
            return turn % spec.partitions
        return choose

    async def create_topic(self, spec: TopicSpec, leader_first: bool = False) -> TopicSpec:
        """Store the topic (in a cluster: with its partitions placed on the brokers alive,
        leaders spread; ``leader_first`` puts this broker first for partition 0)."""
        if self.replicas is None or self.cluster is None:
            stored = await self.topic_store.create(spec)
        else:
            live = self.replicas.live_ids()
            factor = spec.replication_factor or min(3, len(live))
            if factor > len(live):
                raise TooFewBrokers(factor, len(live))
            spec = dataclasses.replace(spec, replication_factor=factor)
            start = live.index(self.replicas.me.id) if leader_first else \
                zlib.crc32(spec.name.encode()) % len(live)
            placed = place_replicas(spec.partitions, factor, live, start)
            assignments = [PartitionAssignment(
                spec.name, p, replicas, replicas[0], 0, replicas, 0,
                self.replicas.brokers[replicas[0]].incarnation) for p, replicas in
                enumerate(placed)]
            stored = await self.cluster.create_topic(spec, assignments)
            for a in assignments:
                self.replicas.assignments.setdefault(a.key, a)
        await self._apply(stored.name, stored)
        return stored

    async def delete_topic(self, name: str) -> None:
        await self.topic_store.delete(name)
        await self.offsets.delete_topic(name)
        await self._apply(name, None)

    def list_topics(self, include_internal: bool) -> list[TopicSpec]:
        return [s for _, s in sorted(self._topics.items())
                if include_internal or not s.internal]

    def get_topic(self, name: str) -> tuple[TopicSpec, list[PartitionState]]:
        spec = self.topic(name)
        states = []
        for p in range(spec.partitions):
            plog = self.logs.partition(name, p)
            states.append(PartitionState(p, plog.log_start_offset, plog.high_watermark,
                                         plog.size_bytes, plog.segment_count))
        return spec, states

    def list_offsets(self, topic: str, partitions: Sequence[int],
                     at_ms: int | None) -> dict[tuple[str, int], int]:
        spec = self.topic(topic)
        out = {}
        for p in partitions or range(spec.partitions):
            plog = self._partition(topic, p)
            out[(topic, p)] = plog.high_watermark if at_ms is None else plog.offset_for_time(at_ms)
        return out

    async def _ensure_internal(self, name: str) -> None:
        """Create an internal topic (one partition) unless it exists."""
        if name in self._topics:
            return
        spec = TopicSpec(name, 1, internal_config(name), self.now_ms(),
                         replication_factor=0 if self.replicas is not None else 1)
        try:
            await self.create_topic(spec, leader_first=True)
        except TopicExists:
            pass  # made meanwhile (the watch brings the stored spec too)

    async def _apply(self, name: str, spec: TopicSpec | None, save: bool = True) -> None:
        """Take a created, changed or (None) deleted topic into the logs and the cache."""
        async with self._topic_lock:
            current = self._topics.get(name)
            if spec is None:
                if current is None:
                    return
                del self._topics[name]
                self._sticky.pop(name, None)
                if self.replicas is not None:
                    self.replicas.topic_deleted(name)
                group = group_of_delay_topic(name)
                if group is not None:
                    self.retries.stop(group)
                await self.logs.delete(name)
            else:
                if current == spec:
                    return
                await self.logs.create(spec)
                self._topics[name] = spec
                if self.replicas is not None:
                    await self.replicas.topic_created(spec)
                group = group_of_delay_topic(name)
                if group is not None:
                    self.retries.start(group)
            self.coordinator.topics_changed([name], self.partitions_of)
            if save:
                self._save_snapshot()

    async def _follow_topics(self, listed: bool) -> None:
        """Watch the topics; first, after a start from the snapshot, list them once etcd
        answers and take what changed meanwhile (deletions included)."""
        while not listed:
            try:
                specs = await self.topic_store.list()
            except MetadataUnavailable:
                await asyncio.sleep(WATCH_RETRY_S)  # a timer: etcd is not back yet
                continue
            names = {spec.name for spec in specs}
            for gone in sorted(set(self._topics) - names):
                await self._apply(gone, None, save=False)
            for spec in specs:
                await self._apply(spec.name, spec, save=False)
            self._save_snapshot()
            listed = True
            log.info("etcd answers again: %d topics", len(specs))
        await self._watch_topics()

    async def _watch_topics(self) -> None:
        while True:
            try:
                async for name, spec in self.topic_store.watch():
                    await self._apply(name, spec)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the adapter reconnects; this is a backstop
                log.exception("topic watch failed; watching again")
            await asyncio.sleep(WATCH_RETRY_S)  # a backoff before watching again

    def _read_snapshot(self) -> list[TopicSpec]:
        path = self.config.data_dir / SNAPSHOT_FILE
        try:
            items = json.loads(path.read_bytes())
            return [spec_from_dict(item) for item in items]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s cannot be read (%s); no topics until etcd is back", path,
                        type(exc).__name__)
            return []

    def _save_snapshot(self) -> None:
        path = self.config.data_dir / SNAPSHOT_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch = path.with_suffix(".tmp")
            scratch.write_text(json.dumps([spec_to_dict(s) for s in self._topics.values()]))
            os.replace(scratch, path)
        except OSError as exc:
            log.warning("cannot save the topic list to %s (%s)", path, exc.strerror)

    # ---- produce ------------------------------------------------------------------------

    async def produce(self, plan: ProducePlan) -> list[Appended]:
        if self.replicas is not None:
            spec = self.topic(plan.topic)
            for batch in plan.batches:  # before anything is written
                self.replicas.check_writable(spec, batch.partition, plan.acks_all)
        if plan.acks_none:
            task: asyncio.Task[object] = asyncio.ensure_future(self._append_all(plan))
            self._background.add(task)
            task.add_done_callback(self._appended_in_background)
            return [Appended(b.partition, -1, b.count) for b in plan.batches]
        return await self._append_all(plan)

    def _appended_in_background(self, task: asyncio.Task[object]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("an acks=NONE produce failed: %s", task.exception())

    async def _append_all(self, plan: ProducePlan) -> list[Appended]:
        if len(plan.batches) == 1:
            return [await self._append(plan.topic, plan.batches[0], plan.acks_all,
                                       plan.producer_id, plan.base_sequence)]
        return list(await asyncio.gather(*(self._append(plan.topic, b, plan.acks_all)
                                           for b in plan.batches)))

    async def _append(self, topic: str, batch: PartitionBatch, acks_all: bool = False,
                      producer_id: int = 0, base_sequence: int = 0) -> Appended:
        plog = self._partition(topic, batch.partition)
        if self.replicas is not None:  # again: a gathered batch starts after a suspension
            self.replicas.check_writable(self.topic(topic), batch.partition, acks_all)
        result = await plog.append(batch.records_blob, batch.count, batch.max_timestamp_ms,
                                   producer_id, base_sequence)
        if self.replicas is not None:
            await self.replicas.committed(self.topic(topic), batch.partition,
                                          result.base_offset + result.count, acks_all, plog)
        return Appended(batch.partition, result.base_offset, result.count, result.duplicate)

    async def _append_internal(self, topic: str, partition: int, blob: bytes, count: int,
                               max_timestamp_ms: int) -> None:
        """A retry or dead letter, written as a produce with acks=ALL: here when this broker
        leads the internal topic (the group's coordinator does, as placed when it was made),
        else at its leader (leadership moved with a failure)."""
        spec = self.topic(topic)
        if self.replicas is not None:
            try:
                self.replicas.check_writable(spec, partition, True)
            except NotLeader as moved:
                address = moved.metadata.get("leader_address", "")
                if not address:
                    raise
                try:
                    await self.replicas.peers.produce(address, topic, partition, blob,
                                                      self.config.ack_timeout_ms / 1000)
                except PeerError as exc:
                    raise Unavailable(f"{topic}-{partition}: its leader did not take the "
                                      f"record ({exc.code} {exc.reason}); retry",
                                      reason="INTERNAL_WRITE_FAILED") from None
                return
        await self._append(topic, PartitionBatch(partition, blob, count, max_timestamp_ms),
                           acks_all=True)

    # ---- fetch --------------------------------------------------------------------------

    async def fetch(self, query: FetchQuery) -> ReadResult:
        plog = self._partition(query.topic, query.partition)
        if self.replicas is not None:
            self.replicas.check_leader(query.topic, query.partition)
        result = plog.read(query.offset, query.max_bytes)
        if result.batches or query.max_wait_s <= 0 or self._closing.is_set():
            return result
        if await self._wait(plog, query.offset, query.max_wait_s):
            return plog.read(query.offset, query.max_bytes)
        return result

    async def _wait(self, plog: PartitionLog, offset: int, timeout: float) -> bool:
        """Until the log passes ``offset`` (True), ``timeout`` passes or the broker begins
        shutting down (False)."""
        waiter = asyncio.ensure_future(plog.wait_for(offset, timeout))
        assert self._closing_wait is not None
        try:
            await asyncio.wait((waiter, self._closing_wait),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiter.done():
                waiter.cancel()
        return waiter.done() and not waiter.cancelled() and waiter.result()

    async def subscribe(self, query: FetchQuery) -> AsyncGenerator[ReadResult, None]:
        """Batches from ``query.offset`` on, as they arrive, until the client leaves or the
        broker shuts down (UNAVAILABLE, so the client resumes elsewhere or later)."""
        offset = query.offset
        while True:
            if self._closing.is_set():
                raise Unavailable("the broker is shutting down; subscribe again",
                                  reason="SHUTTING_DOWN")
            plog = self._partition(query.topic, query.partition)
            if self.replicas is not None:
                self.replicas.check_leader(query.topic, query.partition)
            result = plog.read(offset, query.max_bytes)
            if result.batches:
                yield result
                offset = max(offset, result.next_offset)
            else:
                await self._wait(plog, offset, SUBSCRIBE_WAIT_S)

    # ---- groups -------------------------------------------------------------------------

    def _coordinate(self, group: str) -> None:
        if self.replicas is not None:
            self.replicas.check_coordinator(group)

    async def join(self, join: Join) -> tuple[str, int, float]:
        self._coordinate(join.group)
        for topic in join.topics:
            self.topic(topic)
        retry = retry_topic(join.group)
        if retry not in self._topics:
            try:
                await self._ensure_internal(retry)
            except MetadataUnavailable:
                log.warning("group %s: its retry topic cannot be created while etcd is down; "
                            "members get it once it exists", join.group)
        member, generation = self.coordinator.join(
            join.group, join.member_id, join.topics, join.session_timeout_s, join.assignor,
            join.client_id, self.partitions_of)
        timeout = join.session_timeout_s or self.config.session_timeout_s
        return member, generation, max(0.1, timeout / 3)

    def sync(self, group: str, member_id: str, generation: int
             ) -> tuple[int, dict[str, list[int]]]:
        self._coordinate(group)
        assignment = self.coordinator.sync(group, member_id, generation)
        return generation, assignment

    def heartbeat(self, group: str, member_id: str, generation: int) -> tuple[int, bool]:
        self._coordinate(group)
        return self.coordinator.heartbeat(group, member_id, generation)

    def leave(self, group: str, member_id: str) -> None:
        self._coordinate(group)
        self.coordinator.leave(group, member_id)

    async def commit(self, group: str, member_id: str, generation: int,
                     offsets: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        self._coordinate(group)
        self.coordinator.check_commit(group, member_id, generation, offsets.keys())
        for (topic, partition), offset in offsets.items():
            plog = self._partition(topic, partition)
            if not self._leads(topic, partition):
                continue  # the bound is the leader's; a copy here may lag behind it
            end = plog.high_watermark
            if offset > end:
                plog = self.logs.partition(topic, partition)
                raise OffsetOutOfRange(offset, plog.log_start_offset, end)
        return await self.offsets.commit(group, offsets)

    async def committed(self, group: str, topics: Sequence[str]
                        ) -> dict[tuple[str, int], int]:
        return await self.offsets.committed(group, topics)

    async def reset(self, reset: Reset) -> dict[tuple[str, int], int]:
        self._coordinate(reset.group)
        members = len(self.coordinator.describe(reset.group).members)
        if members:
            raise GroupNotEmpty(members, "a reset of its offsets")
        spec = self.topic(reset.topic)
        targets = {}
        for p in reset.partitions or range(spec.partitions):
            plog = self._partition(reset.topic, p)
            if reset.to == "earliest":
                offset = plog.log_start_offset
            elif reset.to == "latest":
                offset = plog.high_watermark
            elif reset.to == "time":
                offset = plog.offset_for_time(reset.time_ms)
            else:
                offset = reset.offset
                if offset > plog.high_watermark:
                    raise OffsetOutOfRange(offset, plog.log_start_offset, plog.high_watermark)
            targets[(reset.topic, p)] = offset
        return await self.offsets.commit(reset.group, targets, allow_backwards=True)

    async def describe(self, group: str) -> GroupView:
        self._coordinate(group)
        info = self.coordinator.describe(group)
        committed = await self.offsets.committed(group)
        owners: dict[tuple[str, int], str] = {}
        subscribed: set[str] = set()
        for member in info.members:
            subscribed.update(member.topics)
            for topic, parts in member.assignment.items():
                for p in parts:
                    owners[(topic, p)] = member.member_id
        keys = set(committed)
        for topic in subscribed:
            keys.update((topic, p) for p in range(self.partitions_of(topic)))
        lag = []
        for topic, p in sorted(keys):
            spec = self._topics.get(topic)
            if spec is None or p >= spec.partitions:
                continue
            plog = self.logs.partition(topic, p)
            end = plog.high_watermark
            done = committed.get((topic, p), -1)
            lag.append(PartitionLag(topic, p, done, end,
                                    max(0, end - (done if done >= 0 else plog.log_start_offset)),
                                    owners.get((topic, p), "")))
        clock, wall = self.clock(), self.now_ms()
        beats = {m.member_id: wall - round((clock - m.last_heartbeat) * 1000)
                 for m in info.members}
        return GroupView(info, beats, lag, dead_letter_topic(group))

    async def committed_offsets(self) -> dict[str, dict[tuple[str, int], int]]:
        """Every consumer group's committed offsets (etcd: MetadataUnavailable)."""
        return {group: dict(await self.offsets.committed(group))
                for group in await self.offsets.groups()}

    def offsets_view(self, committed: Mapping[str, Mapping[tuple[str, int], int]]
                     ) -> OffsetsView:
        """The end offset of each partition this broker leads, and, for each of them, the
        committed offset and lag of each group that committed one (``committed``) or that
        this broker coordinates and is subscribed to its topic (lag from the log start).
        Lag is counted where the partition is led, so in a cluster each is counted once."""
        ends: list[tuple[str, int, int]] = []
        led: dict[tuple[str, int], PartitionLog] = {}
        for topic, spec in sorted(self._topics.items()):
            for p in range(spec.partitions):
                if self._leads(topic, p):
                    plog = self.logs.partition(topic, p)
                    led[(topic, p)] = plog
                    ends.append((topic, p, plog.high_watermark))
        groups: list[tuple[str, PartitionLag]] = []
        seen: set[tuple[str, str, int]] = set()
        for group, offsets in sorted(committed.items()):
            for (topic, p), done in sorted(offsets.items()):
                found = led.get((topic, p))
                if found is not None:
                    end = found.high_watermark
                    groups.append((group, PartitionLag(topic, p, done, end,
                                                       max(0, end - done), "")))
                    seen.add((group, topic, p))
        for group in self.coordinator.groups():
            topics = {t for m in self.coordinator.describe(group).members for t in m.topics}
            for (topic, p), plog in led.items():
                if topic in topics and (group, topic, p) not in seen:
                    end = plog.high_watermark
                    groups.append((group, PartitionLag(topic, p, -1, end,
                                                       max(0, end - plog.log_start_offset),
                                                       "")))
        return OffsetsView(tuple(ends), tuple(groups))

    async def list_groups(self) -> list[str]:
        names = set(self.coordinator.groups())
        names.update(await self.offsets.groups())
        return sorted(names)

    async def _expire_members(self) -> None:
        interval = max(0.05, min(1.0, self.config.session_timeout_s / 10))
        while True:
            await asyncio.sleep(interval)  # a timer: sessions end on time without calls
            for group, member in self.coordinator.expire(self.clock()):
                log.info("group %s: member %s's session ended", group, member)

    # ---- retries ------------------------------------------------------------------------

    async def nack(self, query: NackQuery) -> tuple[bool, int]:
        self._coordinate(query.group)
        self.coordinator.check_commit(query.group, query.member_id, query.generation,
                                      [(query.topic, query.partition)])
        plog = self._partition(query.topic, query.partition)
        if plog.high_watermark <= query.offset and not self._leads(query.topic,
                                                                    query.partition):
            # the record is read from this broker's copy: a follower learns that the leader's
            # high watermark passed it with its next fetch (a fetch's long poll at most)
            await plog.wait_for(query.offset, NACK_COPY_WAIT_S)
        outcome = await self.retries.nack(query.group, query.topic, query.partition,
                                          query.offset, query.delay_ms, query.error,
                                          query.max_deliveries)
        return outcome.dead_lettered, outcome.deliveries

    # ---- the cluster --------------------------------------------------------------------

    def _leads(self, topic: str, partition: int) -> bool:
        if self.replicas is None:
            return True
        try:
            self.replicas.check_leader(topic, partition)
        except Exception:  # noqa: BLE001 - NotLeader / LeaderNotAvailable: not here
            return False
        return True

    def metadata(self, topics: Sequence[str], group: str) -> ClusterMetadata:
        specs = [self.topic(name) for name in topics] if topics else \
            [s for _, s in sorted(self._topics.items())]
        if self.replicas is None:
            raise Unavailable("this broker runs without a cluster", reason="NO_CLUSTER")
        return self.replicas.metadata(specs, group)

    def led_partitions(self, topics: Sequence[str]) -> tuple[int, list[LedPartition]]:
        if self.replicas is None:
            raise Unavailable("this broker runs without a cluster", reason="NO_CLUSTER")
        return self.replicas.me.id, self.replicas.led(set(topics))

    async def replica_fetch(self, query: ReplicaFetch) -> ReplicaChunk:
        if self.replicas is None:
            raise Unavailable("this broker runs without a cluster", reason="NO_CLUSTER")
        self.topic(query.topic)
        return await self.replicas.handle_fetch(query)

    # ---- retention ----------------------------------------------------------------------

    async def _retention(self) -> None:
        while True:
            await asyncio.sleep(self.config.retention_check_s)  # the configured interval
            try:
                removed = await self.logs.enforce_retention(self.now_ms())
                if removed:
                    log.info("retention deleted %d segments", removed)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - tried again next interval
                log.exception("retention failed")

