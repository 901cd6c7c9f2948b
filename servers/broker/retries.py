"""Retries and dead letters: Nack, and the scheduler that brings delayed records back.

A nacked record is copied, with its key, value, timestamp and headers, to the group's
delay topic ``__delay.<group>`` with headers saying where it came from
(``geoplex-origin-topic``, ``-origin-partition``, ``-origin-offset``), how many times it
has been delivered (``geoplex-deliveries``), when it is due (``geoplex-due-ms``) and why
it failed (``geoplex-error``). One scheduler task per group reads its delay topic, keeps
the pending records' (due time, offset) in a heap and, when they are due, appends them to
``__retry.<group>``, which every member of the group reads (the coordinator adds it to
each subscription). The scheduler's cursor in the delay topic (etcd) is the lowest offset
not yet moved, so a restart rebuilds the heap from it and moves nothing twice except what
was moved after the cursor was last saved (at-least-once, as everything else).

Once a record has been delivered ``max_deliveries`` times, a nack sends it to
``__dlq.<group>`` instead (kept with no time limit), from where the CLI replays it.

Off the hot path: a nack decodes the one stored batch holding its record.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from geoplex.broker.v1 import broker_pb2 as pb

from .domain import (
    DAY_MS,
    MetadataUnavailable,
    OffsetOutOfRange,
    TopicConfig,
)
from .groups import retry_topic
from .ports import CursorStore, LogStore, PartitionLog

log = logging.getLogger(__name__)

DELAY_PREFIX = "__delay."
DLQ_PREFIX = "__dlq."
H_ORIGIN_TOPIC = "geoplex-origin-topic"
H_ORIGIN_PARTITION = "geoplex-origin-partition"
H_ORIGIN_OFFSET = "geoplex-origin-offset"
# deliveries made so far: a record read from its own topic has none (its first delivery is
# delivery 1); the copy a nack of delivery n writes says n, so its redelivery is n + 1
H_DELIVERIES = "geoplex-deliveries"
H_DUE_MS = "geoplex-due-ms"
H_ERROR = "geoplex-error"
OWN_HEADERS = frozenset({H_ORIGIN_TOPIC, H_ORIGIN_PARTITION, H_ORIGIN_OFFSET, H_DELIVERIES,
                         H_DUE_MS, H_ERROR})
# dead letters are never deleted by age (a partition's size limit still applies if set);
# a hundred years stands for "no time limit" in every place a retention is a duration
NO_TIME_RETENTION_MS = 100 * 365 * DAY_MS
DELAY_CONFIG = TopicConfig()
RETRY_CONFIG = TopicConfig()
DLQ_CONFIG = TopicConfig(retention_ms=NO_TIME_RETENTION_MS)
READ_BYTES = 1 << 20
MAX_IDLE_WAIT_S = 30.0
CURSOR_RETRY_S = 1.0


def delay_topic(group: str) -> str:
    return f"{DELAY_PREFIX}{group}"


def dead_letter_topic(group: str) -> str:
    return f"{DLQ_PREFIX}{group}"


def group_of_delay_topic(topic: str) -> str | None:
    return topic[len(DELAY_PREFIX):] if topic.startswith(DELAY_PREFIX) else None


def internal_config(topic: str) -> TopicConfig:
    if topic.startswith(DLQ_PREFIX):
        return DLQ_CONFIG
    return DELAY_CONFIG if topic.startswith(DELAY_PREFIX) else RETRY_CONFIG


@dataclass(frozen=True, slots=True)
class NackOutcome:
    dead_lettered: bool
    deliveries: int  # which delivery was nacked (1 for the first)


def _header(record: pb.Record, key: str) -> bytes | None:
    for header in record.headers:
        if header.key == key:
            return header.value
    return None


def _int_header(record: pb.Record, key: str, default: int) -> int:
    raw = _header(record, key)
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def read_record(partition_log: PartitionLog, offset: int) -> tuple[pb.Record, int]:
    """The record at ``offset`` and its batch's append time. OffsetOutOfRange when the
    log does not hold it."""
    result = partition_log.read(offset, 1)
    for payload in result.batches:
        batch = pb.RecordBatch.FromString(payload)
        index = offset - batch.base_offset
        if 0 <= index < len(batch.records):
            return batch.records[index], batch.append_time_ms
    raise OffsetOutOfRange(offset, result.log_start_offset, result.log_end_offset)


def nacked_copy(record: pb.Record, append_time_ms: int, topic: str, partition: int,
                offset: int, deliveries: int, error: str, due_ms: int | None) -> pb.Record:
    """The record as the delay or dead-letter topic keeps it: the origin stays the first
    topic's (a record nacked again from the retry topic keeps where it came from)."""
    origin = (_header(record, H_ORIGIN_TOPIC), _header(record, H_ORIGIN_PARTITION),
              _header(record, H_ORIGIN_OFFSET))
    if None in origin:
        origin = (topic.encode(), str(partition).encode(), str(offset).encode())
    headers = [h for h in record.headers if h.key not in OWN_HEADERS]
    ours = [(H_ORIGIN_TOPIC, origin[0]), (H_ORIGIN_PARTITION, origin[1]),
            (H_ORIGIN_OFFSET, origin[2]), (H_DELIVERIES, str(deliveries).encode()),
            (H_ERROR, error.encode())]
    if due_ms is not None:
        ours.append((H_DUE_MS, str(due_ms).encode()))
    headers.extend(pb.Header(key=k, value=v or b"") for k, v in ours)
    return pb.Record(key=record.key, value=record.value, headers=headers,
                     timestamp_ms=record.timestamp_ms or append_time_ms)


def records_blob(records: Iterable[pb.Record]) -> bytes:
    return pb.RecordBatch(records=records).SerializeToString()


EnsureTopic = Callable[[str], Awaitable[None]]
Append = Callable[[str, int, bytes, int, int], Awaitable[None]]


class Retries:
    """Nack and the per-group schedulers."""

    def __init__(self, logs: LogStore, cursors: CursorStore, ensure_topic: EnsureTopic,
                 now_ms: Callable[[], int], append: Append | None = None,
                 leads: Callable[[str, int], bool] = lambda topic, partition: True) -> None:
        """``append(topic, partition, records_blob, count, max_timestamp_ms)`` writes as a
        produce with acks=ALL does (in a cluster: at the leader, acknowledged by the ISR);
        a delay topic's scheduler runs where ``leads`` says its partition is led."""
        self.logs = logs
        self.append = append or self._append_here
        self.leads = leads
        self.cursors = cursors
        self.ensure_topic = ensure_topic
        self.now_ms = now_ms
        self._schedulers: dict[str, asyncio.Task[None]] = {}

    async def nack(self, group: str, topic: str, partition: int, offset: int, delay_ms: int,
                   error: str, max_deliveries: int) -> NackOutcome:
        record, append_time = read_record(self.logs.partition(topic, partition), offset)
        deliveries = _int_header(record, H_DELIVERIES, 0) + 1
        if deliveries >= max_deliveries:
            target, due = dead_letter_topic(group), None
        else:
            target, due = delay_topic(group), self.now_ms() + delay_ms
        copy = nacked_copy(record, append_time, topic, partition, offset, deliveries, error,
                           due)
        await self.ensure_topic(target)
        await self.append(target, 0, records_blob([copy]), 1, copy.timestamp_ms)
        if due is not None:
            self.start(group)
        return NackOutcome(due is None, deliveries)

    async def _append_here(self, topic: str, partition: int, blob: bytes, count: int,
                           max_timestamp_ms: int) -> None:
        await self.logs.partition(topic, partition).append(blob, count, max_timestamp_ms)

    # ---- schedulers ---------------------------------------------------------------------

    def start(self, group: str) -> None:
        """Run the group's scheduler (once; it lives until :meth:`stop` or the topic goes)."""
        task = self._schedulers.get(group)
        if task is None or task.done():
            self._schedulers[group] = asyncio.create_task(
                self._run(group), name=f"broker retry scheduler {group}")

    def stop(self, group: str) -> None:
        task = self._schedulers.pop(group, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._schedulers.values())
        self._schedulers.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, group: str) -> None:
        try:
            await Scheduler(self, group).run()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - logged; the next nack starts it again
            log.exception("retry scheduler of group %s stopped", group)


class Scheduler:
    """One group's: delay topic -> (due, offset) heap -> retry topic."""

    def __init__(self, retries: Retries, group: str) -> None:
        self.retries = retries
        self.group = group
        self.delay = delay_topic(group)
        self.retry = retry_topic(group)
        self.heap: list[tuple[int, int]] = []  # (due ms, offset in the delay topic)
        self.position = 0  # the next delay-topic offset to read
        self.saved: int | None = None  # the cursor as stored

    async def run(self) -> None:
        logs = self.retries.logs
        self.saved = await self._load_cursor()
        self.position = self.saved or 0
        while True:
            delay_log = logs.partition(self.delay, 0)  # UnknownTopic ends the task
            if not self.retries.leads(self.delay, 0):  # another broker moves them
                self.heap.clear()
                self.saved = None
                await delay_log.wait_for(delay_log.high_watermark, MAX_IDLE_WAIT_S)
                self.position = self.saved = await self._load_cursor() or 0
                continue
            self._read_new(delay_log)
            now = self.retries.now_ms()
            moved = await self._move_due(delay_log, now)
            cursor = self.heap[0][1] if self.heap else self.position
            if cursor != self.saved:
                try:
                    await self.retries.cursors.set_cursor(self.group, cursor)
                    self.saved = cursor
                except MetadataUnavailable:
                    pass  # saved again next round; a restart meanwhile moves some twice
            wait = MAX_IDLE_WAIT_S
            if self.heap:
                wait = min(wait, max(0.0, (self.heap[0][0] - now) / 1000))
            if cursor != self.saved or not moved:
                wait = CURSOR_RETRY_S if not moved else min(wait, CURSOR_RETRY_S)
            if wait > 0:
                await delay_log.wait_for(self.position, wait)

    async def _load_cursor(self) -> int | None:
        while True:
            try:
                return await self.retries.cursors.get_cursor(self.group)
            except MetadataUnavailable:
                await asyncio.sleep(CURSOR_RETRY_S)  # a timer: etcd is not back yet

    def _read_new(self, delay_log: PartitionLog) -> None:
        while self.position < delay_log.high_watermark:
            try:
                result = delay_log.read(self.position, READ_BYTES)
            except OffsetOutOfRange as exc:  # retention went past it
                self.position = exc.log_start_offset
                continue
            if not result.batches:
                return
            for payload in result.batches:
                batch = pb.RecordBatch.FromString(payload)
                for index, record in enumerate(batch.records):
                    offset = batch.base_offset + index
                    if offset < self.position:
                        continue
                    due = _int_header(record, H_DUE_MS, 0)
                    heapq.heappush(self.heap, (due, offset))
                    self.position = offset + 1

    async def _move_due(self, delay_log: PartitionLog, now: int) -> bool:
        """Move what is due; False when it must wait for etcd (the retry topic)."""
        due: list[int] = []
        while self.heap and self.heap[0][0] <= now:
            due.append(heapq.heappop(self.heap)[1])
        if not due:
            return True
        records = []
        for offset in due:
            try:
                record, _ = read_record(delay_log, offset)
            except OffsetOutOfRange:
                log.warning("retry of group %s: delay record %d is gone (retention)",
                            self.group, offset)
                continue
            records.append(record)  # as kept, due time included
        if not records:
            return True
        try:
            await self.retries.ensure_topic(self.retry)
            await self.retries.append(self.retry, 0, records_blob(records), len(records),
                                      max(r.timestamp_ms for r in records))
        except BaseException as exc:
            for offset in due:  # not moved: due again at once
                heapq.heappush(self.heap, (now, offset))
            if isinstance(exc, MetadataUnavailable):  # the retry topic cannot be made yet
                return False
            raise
        return True
