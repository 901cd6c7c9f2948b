"""The broker's group consumer: ``async for record in consumer``, the group protocol hidden.

    async with client.consumer("billing", ["rides"], auto_offset_reset="earliest") as c:
        async for record in c:
            try:
                await bill(record.value)
            except TemporaryFailure as exc:
                await c.nack(record, delay=30, error=str(exc))   # back in 30 s

Membership: the consumer joins the group (JoinGroup, then SyncGroup for its partitions),
heartbeats at the interval the coordinator gives, syncs again when a heartbeat reports a
new generation (a member joined, left or timed out), rejoins when the coordinator no longer
knows it (its session expired), and leaves on close so its partitions move at once.

Positions: a newly assigned partition starts at the group's committed offset, else at
``auto_offset_reset`` ("earliest" or "latest"; the group's retry topic always from its
earliest). Each partition is read through a Subscribe stream (the broker sends batches
as they arrive, and keeps sending while this side works through the last ones: measured
~120-140 k records/s of 1 KB from one partition here, against ~60-100 k with long-poll
Fetch, one answer at a time) into a bounded buffer: at most ``max_buffered_fetches``
answers wait to be iterated, then the streams are not read (gRPC's flow control holds the
broker back), so a slow loop never grows memory. Records below the position are skipped
(batches are whole). When retention has moved a partition's log start past the position (OUT_OF_RANGE)
the consumer resets it by ``auto_offset_reset`` and logs a warning saying so.

Commits: a record counts as processed once the iteration moves past it (asks for the next
one), and so does the last one when ``async with`` is left without an exception. With
``auto_commit`` the processed offsets are committed every ``auto_commit_interval`` seconds,
before every sync to a new generation (while this member still owns all its partitions:
the coordinator accepts a member's commits only for partitions it owns, so a partition is
committed before it is given up), and on close. :meth:`Consumer.commit` commits everything
the iteration has handed out so far (call it after processing). A committed offset is the
next one to read.

Rebalances are cooperative (only moved partitions stop): ``on_revoked(partitions)`` is
called for partitions given up at a sync, once their fetching has stopped (their processed
offsets were committed just before the sync, with ``auto_commit``; without it, records not
committed by then are delivered again to the new owner), and ``on_assigned(partitions)``
for new ones before fetching starts. Either may be a plain function or a coroutine
function. After a lost membership (session expired) the partitions are revoked without a
commit: another member may own them already.

Retries: :meth:`Consumer.nack` hands a record back to the broker: it comes back through the
group's ``__retry.<group>`` topic (which the coordinator adds to every member's
subscription) after the delay, with ``deliveries`` counting up; after ``max_deliveries``
it goes to ``__dlq.<group>`` instead.

In a cluster each partition is read from its leader, and the stream follows leadership
when it moves (from the next offset not yet read); the group protocol goes to the group's
coordinator (the client finds it, and follows NOT_COORDINATOR). When the coordinator
moves, the new one does not know this member (UNKNOWN_MEMBER): the consumer joins again
there, as after a lost session; committed offsets live in etcd, so they are all still
there, and records processed but not yet committed may be delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Self, TypeAlias

import grpc

from geoplex.broker.v1 import broker_pb2 as pb

from .errors import GeoplexRpcError, SessionClosedError

if TYPE_CHECKING:
    from .broker import BrokerClient

log = logging.getLogger(__name__)

RETRY_PREFIX = "__retry."
DEAD_LETTER_PREFIX = "__dlq."
ORIGIN_TOPIC = "geoplex-origin-topic"
ORIGIN_PARTITION = "geoplex-origin-partition"
ORIGIN_OFFSET = "geoplex-origin-offset"
DELIVERIES = "geoplex-deliveries"
ERROR = "geoplex-error"
UNKNOWN_MEMBER = "UNKNOWN_MEMBER"
STALE_GENERATION = "STALE_GENERATION"
NOT_ASSIGNED = "PARTITION_NOT_ASSIGNED"
OFFSET_RESETS = ("earliest", "latest")


class OffsetOutOfRangeError(GeoplexRpcError):
    """A read below the log start or past the end (OUT_OF_RANGE), with the log's bounds
    (-1 where the server did not say)."""

    log_start_offset: int
    log_end_offset: int

    @classmethod
    def of(cls, error: GeoplexRpcError) -> OffsetOutOfRangeError:
        typed = cls(error.code, error.message, reason=error.reason, domain=error.domain,
                    metadata=error.metadata, field=error.field, request_id=error.request_id)
        typed.log_start_offset = _int(error.metadata.get("log_start_offset"), -1)
        typed.log_end_offset = _int(error.metadata.get("log_end_offset"), -1)
        return typed


def _int(text: str | bytes | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(slots=True)
class ConsumedRecord:
    """One record as read. ``key`` is None for a keyless record; ``deliveries`` is 1 on the
    first delivery and counts up each time the record comes back after a nack.

    (Not frozen: a frozen dataclass's ``__init__`` doubles the consumer's cost per record.)"""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int
    deliveries: int = 1

    def header(self, name: str) -> bytes | None:
        """The first header called ``name``, if any."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def origin(self) -> TopicPartition:
        """Where the record was first written (for a retried or dead-lettered record, the
        topic and partition in its origin headers)."""
        topic = self.header(ORIGIN_TOPIC)
        if topic is None:
            return TopicPartition(self.topic, self.partition)
        return TopicPartition(topic.decode(errors="replace"),
                              _int(self.header(ORIGIN_PARTITION), -1))

    @property
    def origin_offset(self) -> int:
        found = self.header(ORIGIN_OFFSET)
        return self.offset if found is None else _int(found, -1)

    @property
    def error(self) -> str:
        """Why it was nacked (dead-lettered and retried records), else ''."""
        found = self.header(ERROR)
        return "" if found is None else found.decode(errors="replace")


def records_of(topic: str, partition: int, batches: Sequence[pb.RecordBatch],
               from_offset: int = 0) -> Iterator[ConsumedRecord]:
    """The records of fetched batches at or after ``from_offset``, in offset order."""
    retried = topic.startswith((RETRY_PREFIX, DEAD_LETTER_PREFIX))
    for batch in batches:
        base = batch.base_offset
        records = batch.records
        skip = from_offset - base
        for index in range(max(0, skip), len(records)):
            record = records[index]
            headers = tuple((h.key, h.value) for h in record.headers) if record.headers else ()
            deliveries = 1
            if retried:
                for name, value in headers:
                    if name == DELIVERIES:
                        deliveries = _int(value, 0) + 1
            yield ConsumedRecord(topic, partition, base + index, record.key or None,
                                 record.value, headers, record.timestamp_ms, deliveries)


RebalanceCallback: TypeAlias = Callable[[list[TopicPartition]], "Awaitable[None] | None"]


class ConsumerState(enum.Enum):
    IDLE = "idle"        # made, not started
    RUNNING = "running"  # a member of the group (or joining again)
    FAILED = "failed"    # stopped by an error the iteration raises
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ConsumerStats:
    delivered: int  # records handed to the iteration
    rebalances: int  # assignments received (the first one included)
    rejoins: int     # joins after a lost membership
    resets: int      # positions reset by auto_offset_reset after OUT_OF_RANGE
    commits: int


class _Partition:
    """An assigned partition: where its fetcher reads, and what the iteration has done."""

    __slots__ = ("tp", "position", "delivered", "processed", "committed", "task", "active")

    def __init__(self, tp: TopicPartition, position: int, committed: int) -> None:
        self.tp = tp
        self.active = True          # assigned to this member (False once revoked)
        self.position = position    # the next offset to fetch
        self.delivered = -1         # offset after the last record handed out
        self.processed = -1         # offset after the last record moved past
        self.committed = committed  # what the group has committed (-1: nothing)
        self.task: asyncio.Task[None] | None = None


class _Chunk:
    """One fetch answer waiting in the buffer, tagged with the partition it was read for."""

    __slots__ = ("owner", "records")

    def __init__(self, owner: _Partition, records: Iterator[ConsumedRecord]) -> None:
        self.owner = owner
        self.records = records


class _Buffer:
    """A bounded FIFO of fetch answers that a closing or failing consumer wakes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: deque[_Chunk] = deque()
        self.readable = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.failure: BaseException | None = None

    async def put(self, chunk: _Chunk) -> None:
        while len(self.items) >= self.limit:
            self.writable.clear()
            await self.writable.wait()
        self.items.append(chunk)
        self.readable.set()

    async def get(self) -> _Chunk:
        while not self.items:
            if self.failure is not None:
                raise self.failure
            self.readable.clear()
            await self.readable.wait()
        chunk = self.items.popleft()
        self.writable.set()
        return chunk

    def fail(self, error: BaseException) -> None:
        self.failure = error
        self.items.clear()
        self.readable.set()
        self.writable.set()


class Consumer:
    """A member of a consumer group; see the module for what it does."""

    def __init__(self, client: BrokerClient, group: str, topics: Sequence[str], *,
                 auto_commit: bool = True, auto_commit_interval: float = 5.0,
                 auto_offset_reset: str = "latest", session_timeout: float | None = None,
                 assignor: str = "sticky", client_id: str = "", max_deliveries: int = 0,
                 fetch_max_bytes: int = 1 << 20,
                 max_buffered_fetches: int = 16, on_assigned: RebalanceCallback | None = None,
                 on_revoked: RebalanceCallback | None = None,
                 request_timeout: float | None = None) -> None:
        if auto_offset_reset not in OFFSET_RESETS:
            raise ValueError(f"auto_offset_reset must be one of {OFFSET_RESETS}, "
                             f"not {auto_offset_reset!r}")
        if not topics:
            raise ValueError("topics must name at least one topic")
        if max_buffered_fetches < 1 or auto_commit_interval <= 0:
            raise ValueError("max_buffered_fetches must be >= 1 and auto_commit_interval > 0")
        self.client = client
        self.group = group
        self.topics = list(topics)
        self.auto_commit = auto_commit
        self.auto_commit_interval = auto_commit_interval
        self.auto_offset_reset = auto_offset_reset
        self.session_timeout = session_timeout
        self.assignor = assignor
        self.client_id = client_id
        self.max_deliveries = max_deliveries
        self.fetch_max_bytes = fetch_max_bytes
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.request_timeout = request_timeout
        self.member_id = ""
        self.generation = 0
        self.heartbeat_interval = 3.0
        self._state = ConsumerState.IDLE
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._buffer = _Buffer(max_buffered_fetches)
        self._chunk: _Chunk | None = None
        self._last: _Partition | None = None  # whose record the iteration handed out last
        self._task: asyncio.Task[None] | None = None
        self._resync = asyncio.Event()
        self._sync_pending = False
        self._lock = asyncio.Lock()  # one membership change (sync, rejoin, close) at a time
        self._coordinator: str | None = None  # where this member joined
        self._delivered = self._rebalances = self._rejoins = self._resets = self._commits = 0

    # -- state -----------------------------------------------------------------------

    @property
    def state(self) -> ConsumerState:
        return self._state

    @property
    def stats(self) -> ConsumerStats:
        return ConsumerStats(self._delivered, self._rebalances, self._rejoins, self._resets,
                             self._commits)

    def assignment(self) -> list[TopicPartition]:
        """The partitions this member owns now."""
        return sorted(self._partitions)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Join the group and start reading (done by ``async with`` or the first read)."""
        if self._state is not ConsumerState.IDLE:
            self._check_open()
            return
        self._state = ConsumerState.RUNNING
        try:
            async with self._lock:
                await self._join()
        except BaseException:
            self._state = ConsumerState.IDLE
            raise
        self._task = asyncio.create_task(self._run())

    async def close(self, *, processed_last: bool = False) -> None:
        """Stop fetching, commit processed offsets (with ``auto_commit``; also the last
        record handed out when ``processed_last``), leave the group; safe to call again."""
        if self._state in (ConsumerState.CLOSED, ConsumerState.IDLE):
            self._state = ConsumerState.CLOSED
            return
        if processed_last:
            self._mark_processed()
        self._state = ConsumerState.CLOSED
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        async with self._lock:
            for owner in self._partitions.values():
                owner.active = False
            await self._stop_fetchers(list(self._partitions.values()))
            if self.auto_commit and self.member_id:
                with contextlib.suppress(GeoplexRpcError):
                    await self._commit_processed(self._partitions.values())
            if self.member_id:
                with contextlib.suppress(GeoplexRpcError):
                    await self.client.leave_group(self.group, self.member_id,
                                                  timeout=self.request_timeout)
            self._partitions.clear()
        self._buffer.fail(SessionClosedError("the consumer is closed"))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        await self.close(processed_last=exc_type is None)

    def _running(self) -> bool:
        return self._state is ConsumerState.RUNNING

    def _check_open(self) -> None:
        if self._state is ConsumerState.CLOSED:
            raise SessionClosedError("the consumer is closed")

    # -- iteration -------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[ConsumedRecord]:
        return self

    async def __anext__(self) -> ConsumedRecord:
        # the path every record takes: kept short (it is most of the consumer's cost)
        if self._state is not ConsumerState.RUNNING:
            if self._state is ConsumerState.IDLE:
                await self.start()
            self._check_open()
        last = self._last
        if last is not None:  # the record handed out before this call is processed
            last.processed = last.delivered
        chunk = self._chunk
        while True:
            if chunk is None:
                chunk = self._chunk = await self._buffer.get()
            owner = chunk.owner
            if owner.active:  # else revoked meanwhile: its records are not ours to hand out
                record = next(chunk.records, None)
                if record is not None:
                    owner.delivered = record.offset + 1
                    self._last = owner
                    self._delivered += 1
                    return record
            chunk = self._chunk = None

    def _mark_processed(self) -> None:
        if self._last is not None:
            self._last.processed = self._last.delivered

    # -- commits and nacks -----------------------------------------------------------

    async def commit(self, record: ConsumedRecord | None = None, *,
                     timeout: float | None = None) -> dict[tuple[str, int], int]:
        """Commit every record handed out so far (or, given ``record``, its partition up to
        and including it); returns what the group has committed for those partitions.
        A stale generation raises FailedPreconditionError (the consumer syncs by itself)."""
        self._check_open()
        if record is None:
            offsets = {p.tp: p.delivered for p in self._partitions.values()
                       if p.delivered > p.committed}
        else:
            offsets = {TopicPartition(record.topic, record.partition): record.offset + 1}
        return await self._commit(offsets, timeout)

    async def nack(self, record: ConsumedRecord, *, delay: float = 0.0, error: str = "",
                   max_deliveries: int | None = None,
                   timeout: float | None = None) -> pb.NackResponse:
        """Give ``record`` back to the broker: it comes again after ``delay`` seconds (via
        the group's retry topic), or goes to the dead-letter topic once delivered
        ``max_deliveries`` times (None: this consumer's setting; 0: the broker's 5).
        ``error`` (why; at most 1,000 characters) is kept in the dead letter's headers."""
        self._check_open()
        return await self.client.nack(
            self.group, self.member_id, self.generation, record.topic, record.partition,
            record.offset, delay=delay, error=error,
            max_deliveries=self.max_deliveries if max_deliveries is None else max_deliveries,
            timeout=timeout if timeout is not None else self.request_timeout)

    async def _commit(self, offsets: dict[TopicPartition, int],
                      timeout: float | None = None) -> dict[tuple[str, int], int]:
        if not offsets:
            return {}
        try:
            done = await self.client.commit_offsets(
                self.group, {(tp.topic, tp.partition): o for tp, o in offsets.items()},
                member_id=self.member_id, generation=self.generation,
                timeout=timeout if timeout is not None else self.request_timeout)
        except GeoplexRpcError as exc:
            if exc.reason in (STALE_GENERATION, UNKNOWN_MEMBER, NOT_ASSIGNED):
                self._resync.set()
            raise
        self._commits += 1
        for (topic, partition), offset in done.items():
            owner = self._partitions.get(TopicPartition(topic, partition))
            if owner is not None and offset > owner.committed:
                owner.committed = offset
        return done

    async def _commit_processed(self, owners: Iterable[_Partition]) -> None:
        offsets = {p.tp: p.processed for p in owners if p.processed > p.committed}
        await self._commit(offsets)

    # -- membership ------------------------------------------------------------------

    async def _join(self) -> None:
        """JoinGroup (a first join, or again after a lost membership), then SyncGroup."""
        response = await self.client.join_group(
            self.group, self.topics, member_id=self.member_id,
            session_timeout=self.session_timeout, assignor=self.assignor,
            client_id=self.client_id, timeout=self.request_timeout)
        self.member_id = response.member_id
        self._coordinator = self.client.router.coordinator_address(self.group)
        interval = response.heartbeat_interval.ToTimedelta().total_seconds()
        self.heartbeat_interval = interval if interval > 0 else 3.0
        await self._sync(response.generation)

    async def _sync(self, generation: int) -> None:
        """SyncGroup for ``generation``: revoke what moved away, assign what is new."""
        for _ in range(10):
            try:
                response = await self.client.sync_group(self.group, self.member_id, generation,
                                                        timeout=self.request_timeout)
                break
            except GeoplexRpcError as exc:
                if exc.reason != STALE_GENERATION:
                    raise
                generation = _int(exc.metadata.get("generation"), generation + 1)
        else:
            self._resync.set()  # the group keeps moving: try again at the next turn
            return
        self.generation = response.generation
        self._rebalances += 1
        new = {TopicPartition(t.topic, p) for t in response.assignment for p in t.partitions}
        old = set(self._partitions)
        self._sync_pending = True  # until both steps are done (a failure retries them)
        if old - new:
            await self._revoke(old - new)
        if new - old:
            await self._assign(new - old)
        self._sync_pending = False

    async def _rejoin(self) -> None:
        """The coordinator forgot this member (its session expired, or the coordinator
        moved to another broker): every partition is lost (revoked without a commit), then
        the consumer joins as a new member."""
        coordinator = self.client.router.coordinator_address(self.group)
        if coordinator is not None and coordinator != self._coordinator:
            log.warning("consumer group %s: the group's coordinator moved to %s; joining "
                        "again there", self.group, coordinator)
        else:
            log.warning("consumer group %s: membership lost (session expired); joining "
                        "again", self.group)
        await self._revoke(set(self._partitions))
        self.member_id, self.generation = "", 0
        self._rejoins += 1
        await self._join()

    async def _revoke(self, tps: set[TopicPartition]) -> None:
        owners = [self._partitions[tp] for tp in sorted(tps)]
        for owner in owners:
            owner.active = False
        await self._stop_fetchers(owners)
        for tp in tps:
            self._partitions.pop(tp, None)
        await self._call_back(self.on_revoked, sorted(tps))

    async def _assign(self, tps: set[TopicPartition]) -> None:
        topics = sorted({tp.topic for tp in tps})
        committed = await self.client.get_committed_offsets(self.group, topics,
                                                            timeout=self.request_timeout)
        starts = await self._starts([tp for tp in tps if committed.get(tp, -1) < 0])
        owners = []
        for tp in sorted(tps):
            position = committed.get(tp, -1)
            if position < 0:
                position = starts.get(tp, 0)
            owners.append(_Partition(tp, position, committed.get(tp, -1)))
        for owner in owners:
            self._partitions[owner.tp] = owner
        await self._call_back(self.on_assigned, sorted(tps))
        for owner in owners:
            if self._partitions.get(owner.tp) is owner:
                owner.task = asyncio.create_task(self._fetch(owner))

    def _reset_policy(self, tp: TopicPartition) -> str:
        # retried records wait in the retry topic before any commit: never skip them
        return "earliest" if tp.topic.startswith(RETRY_PREFIX) else self.auto_offset_reset

    async def _starts(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Where partitions without a committed offset start, by the reset policy: the log
        start (the first offset at or after time 0) or the end, from their leaders (one
        ListOffsets per topic and policy)."""
        wanted: dict[tuple[str, bool], list[int]] = {}
        for tp in tps:
            earliest = self._reset_policy(tp) == "earliest"
            wanted.setdefault((tp.topic, earliest), []).append(tp.partition)
        out: dict[TopicPartition, int] = {}
        for (topic, earliest), partitions in sorted(wanted.items()):
            found = await self.client.list_offsets(topic, sorted(partitions),
                                                   time_ms=0 if earliest else None,
                                                   timeout=self.request_timeout)
            out.update({TopicPartition(topic, p): o for p, o in found.items()})
        return out

    async def _call_back(self, callback: RebalanceCallback | None,
                         tps: list[TopicPartition]) -> None:
        if callback is None or not tps:
            return
        try:
            result = callback(tps)
            if inspect.isawaitable(result):
                await result
        except Exception:  # noqa: BLE001 - a broken callback must not stop the consumer
            log.exception("consumer group %s: rebalance callback %s failed", self.group,
                          getattr(callback, "__name__", callback))

    async def _stop_fetchers(self, owners: Sequence[_Partition]) -> None:
        tasks = [owner.task for owner in owners if owner.task is not None]
        for task in tasks:
            task.cancel()
        for owner in owners:
            owner.task = None
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- the background: heartbeats, syncs, auto commits -----------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.heartbeat_interval
        next_commit = loop.time() + self.auto_commit_interval
        backoff = 0.1
        while self._running():
            wake = min(next_beat, next_commit) if self.auto_commit else next_beat
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync.wait(), max(0.0, wake - loop.time()))
            try:
                async with self._lock:
                    if not self._running():  # closed while this waited for the lock
                        return
                    if self._resync.is_set() or loop.time() >= next_beat:
                        self._resync.clear()
                        await self._beat()
                        next_beat = loop.time() + self.heartbeat_interval
                    if self.auto_commit and loop.time() >= next_commit:
                        next_commit = loop.time() + self.auto_commit_interval
                        try:
                            await self._commit_processed(list(self._partitions.values()))
                        except GeoplexRpcError as exc:  # the next turn commits again
                            log.info("consumer group %s: auto commit failed: %s",
                                     self.group, exc)
                backoff = 0.1
            except GeoplexRpcError as exc:
                if exc.code in _FATAL:
                    self._fail(exc)
                    return
                log.info("consumer group %s: %s; trying again", self.group, exc)
                next_beat = loop.time() + backoff * (0.5 + random.random())
                backoff = min(backoff * 2, self.heartbeat_interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the iteration must hear of it
                self._fail(exc)
                return

    async def _beat(self) -> None:
        if not self.member_id:  # a rejoin failed half-way
            await self._join()
            return
        try:
            if self._sync_pending:  # the last assignment was not applied whole
                await self._sync(self.generation)
                return
            response = await self.client.heartbeat(
                self.group, self.member_id, self.generation,
                timeout=min(self.heartbeat_interval * 2,
                            self.request_timeout or self.client.options.timeout))
        except GeoplexRpcError as exc:
            if exc.reason == UNKNOWN_MEMBER:
                await self._rejoin()
            elif exc.reason == STALE_GENERATION:
                await self._commit_before_sync()
                await self._sync(_int(exc.metadata.get("generation"), self.generation + 1))
            else:
                raise
            return
        if response.generation != self.generation or response.rebalance:
            await self._commit_before_sync()
            await self._sync(response.generation)

    async def _commit_before_sync(self) -> None:
        """Commit what was processed while this member still owns every partition: the
        coordinator accepts commits at the generation a member last synced to, and only
        for partitions it owns, so once the sync has given a partition up it is too late."""
        if not self.auto_commit:
            return
        try:
            await self._commit_processed(list(self._partitions.values()))
        except GeoplexRpcError as exc:
            log.warning("consumer group %s: commit before a rebalance failed: %s",
                        self.group, exc)

    def _fail(self, error: BaseException) -> None:
        log.warning("consumer group %s stopped: %s", self.group, error)
        self._state = ConsumerState.FAILED
        self._buffer.fail(error)

    # -- fetching --------------------------------------------------------------------

    async def _fetch(self, owner: _Partition) -> None:
        """Read one partition into the buffer until revoked: a Subscribe stream (the broker
        sends batches as they come, while this side works through the last ones), opened
        again from the position after an error."""
        topic, partition = owner.tp
        backoff = 0.1
        complained = False
        while True:
            try:
                async for response in self.client.subscribe(topic, partition, owner.position,
                                                            max_bytes=self.fetch_max_bytes):
                    backoff, complained = 0.1, False
                    if response.batches:
                        last = response.batches[-1]
                        end = last.base_offset + len(last.records)
                        if end > owner.position:
                            chunk = _Chunk(owner, records_of(topic, partition,
                                                             response.batches, owner.position))
                            owner.position = end
                            await self._buffer.put(chunk)
            except OffsetOutOfRangeError as exc:
                await self._reset(owner, exc)
                continue
            except GeoplexRpcError as exc:
                if not complained:
                    log.warning("consumer group %s: reading %s/%d failed: %s; retrying",
                                self.group, topic, partition, exc)
                    complained = True
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 5.0)

    async def _reset(self, owner: _Partition, exc: OffsetOutOfRangeError) -> None:
        policy = self._reset_policy(owner.tp)
        start, end = exc.log_start_offset, exc.log_end_offset
        target = start if policy == "earliest" else end
        if start < 0 or end < 0:  # the broker did not say (-1): ask the leader
            target = (await self._starts([owner.tp])).get(owner.tp, 0)
        log.warning("consumer group %s: offset %d of %s/%d is outside the log (%d..%d; "
                    "retention may have deleted it): reset to the %s offset %d",
                    self.group, owner.position, owner.tp.topic, owner.tp.partition, start, end,
                    policy, target)
        owner.position = target
        self._resets += 1


# what no retry will mend: the consumer stops and its iteration raises the error
_FATAL = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED})


STOP_GRACE_S = 3.0


async def stop_consumer_tasks(tasks: Sequence[asyncio.Task[None]],
                              grace: float = STOP_GRACE_S) -> None:
    """Cancel tasks that run consumers and wait at most ``grace`` seconds: a consumer
    leaving its group calls the broker, which may be gone already when a service stops;
    one still leaving then is cancelled again and given a second more."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:  # cancelled again inside its close: give up on a clean leave
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=1.0)
