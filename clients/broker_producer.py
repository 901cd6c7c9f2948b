"""The broker's typed producer: batching per partition, bounded memory, safe retries.

    async with client.producer(linger_ms=5) as producer:
        sent = await producer.send("rides", b'{"km": 3}', key=b"rider-7")
        where = await sent                      # RecordMetadata(topic, partition, offset)

``send`` puts the record in its partition's open batch and returns at once with a
:class:`RecordFuture` (awaiting it gives the record's partition and offset once the broker
has written it). A batch goes to the broker when it holds ``batch_records`` records or
``batch_bytes`` bytes, or ``linger_ms`` after its first record, whichever comes first
(``linger_ms=0``: as soon as the event loop turns); while a partition's window of batches
in flight is full, the next one keeps filling, so a busy producer sends bigger batches by
itself.

Partitions: a record with a key goes to ``google_crc32c.value(key) % partitions`` (the
broker's documented partitioner; partition counts come from GetTopic, cached), one with
``partition=`` there, and keyless records stick to one partition per batch (Kafka's sticky
partitioner), moving on round-robin when that batch closes.

Memory: records waiting to be acknowledged take at most ``buffer_bytes`` (their encoded
size: key, value, headers and a few bytes of framing). When the buffer is full ``send``
waits for room up to ``max_block`` seconds, then raises :class:`BufferFullError`; it never
grows past the bound.

Sending: each busy partition has one ProduceStream, with up to ``max_in_flight`` (at most
5) batches on it at once, acknowledged in order; partitions go in parallel. Measured on
the development machine (2 cores shared with the broker and other work, 1 KB records,
1,000-record batches, one partition, 100,000 records): with the broker's fsync per batch,
``max_in_flight=1`` ~81-83 k records/s and 5 ~139-166 k (the broker's group commit covers
several batches per fsync); with fsync on an interval both ~200 k. Batches are encoded by
hand (the protobuf wire format of ``ProduceRequest``, checked against protobuf by a test):
building them message by message cost ~17 us per 1 KB record, the bytes ~2 us.

Retries are safe: the producer is idempotent by default (a random non-zero 64-bit
``producer_id`` and a sequence number per partition on every batch). When a stream fails
with UNAVAILABLE, or the first batch in flight is not acknowledged within
``request_timeout``, every batch in flight is sent again, in order, on a new stream, with
the same ``base_sequence``: the broker writes each once (it remembers a producer's last 5
batches per partition, hence the limit on ``max_in_flight``) and order is kept. A batch is
retried until ``delivery_timeout`` after it was opened. One that fails for good fails its
records' futures (and is logged, without contents); its partition then goes on under a
fresh producer id from sequence 0, so what follows is never refused as out of sequence.

In a cluster each partition's stream goes to the partition's leader (from the client's
metadata cache, :class:`~.broker.Router`). When the leader changes (NOT_LEADER, at once
to the leader it names when that is news; LEADER_NOT_AVAILABLE, FENCED,
NOT_ENOUGH_REPLICAS, or the leader cannot be reached: after a metadata refresh and a
backoff of ``retry_backoff`` doubling up to ``max_retry_backoff``), the stream is opened
on the new leader and the unacknowledged batches are sent there, in order, with their
sequence numbers: the producer's state is replicated with the log, so the new leader
recognises what the old one had written. Should it not know the producer's sequence
(OUT_OF_ORDER_SEQUENCE: with acks=LEADER an acknowledged batch can be lost with its
leader), the batches are numbered again under a fresh producer id, as above. With
``acks=Acks.ALL`` a batch is acknowledged once every in-sync replica has it, and refused
(retried, until ``delivery_timeout``) while fewer than the topic's
``min_insync_replicas`` are in sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections import deque
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeAlias

import google_crc32c
import grpc
import grpc.aio

from geoplex.broker.v1 import broker_pb2 as pb

from .errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    GeoplexError,
    GeoplexRpcError,
    SessionClosedError,
    UnavailableError,
    from_rpc_error,
)

if TYPE_CHECKING:
    from .broker import BrokerClient, Verdict

log = logging.getLogger(__name__)

Headers: TypeAlias = "Mapping[str, bytes] | Sequence[tuple[str, bytes]]"

MAX_BATCH_RECORDS = 10_000  # the broker's limit per ProduceRequest
MAX_SEQUENCE = (1 << 31) - 1  # base_sequence is an int32
RETRIABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
NOT_LEADER = "NOT_LEADER"  # FAILED_PRECONDITION: refused, nothing written; the leader named
CORE_WRITE_ERROR = "Internal error from Core"  # grpc.aio: a write after the stream ended
OUT_OF_SEQUENCE = "OUT_OF_ORDER_SEQUENCE"
PRODUCE_STREAM_METHOD = (f"/{pb.DESCRIPTOR.services_by_name['BrokerService'].full_name}"
                         "/ProduceStream")
MAX_IN_FLIGHT = 5  # the broker remembers an idempotent producer's last 5 batches
STREAM_IDLE_S = 5.0  # a partition's stream stays open this long without anything to send


class Acks(enum.IntEnum):
    """When the broker answers a produce (``pb.Acks``)."""

    NONE = pb.ACKS_NONE      # before writing: no offsets come back (they read -1)
    LEADER = pb.ACKS_LEADER  # once written (and synced under a per-batch fsync policy)
    ALL = pb.ACKS_ALL        # once every in-sync replica has it (min_insync_replicas of them)


class BufferFullError(GeoplexError):
    """The producer's buffer stayed full for ``max_block`` seconds (the broker is slow or
    unreachable), or a record is larger than the whole buffer; the record was not taken."""


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a keyed record: ``crc32c(key) mod partitions`` (as the broker does)."""
    return int(google_crc32c.value(key)) % partitions


def new_producer_id() -> int:
    """A random non-zero unsigned 64-bit producer id."""
    return random.getrandbits(64) or 1


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where a sent record was written (``offset`` is -1 when acks is NONE)."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class ProducerStats:
    records_sent: int    # acknowledged by the broker
    records_failed: int  # their batch failed for good
    batches_sent: int
    retries: int         # streams opened again to resend (UNAVAILABLE, DEADLINE_EXCEEDED,
                         # NOT_LEADER)
    buffered_bytes: int  # taken by records not yet acknowledged


class _Batch:
    """Records for one partition, sent as one ProduceRequest (and resent as the same one).

    The records are kept as their wire encoding (``ProduceRequest.records`` entries), so a
    record costs one small bytes concatenation here and the request is never built
    message by message: its bytes are the header fields plus these parts joined.
    """

    __slots__ = ("topic", "partition", "parts", "count", "size", "future", "closed",
                 "lingered", "timer", "request", "records_at", "deadline", "sent_at",
                 "renumbered")

    def __init__(self, topic: str, partition: int, loop: asyncio.AbstractEventLoop) -> None:
        self.topic = topic
        self.partition = partition
        self.parts: list[bytes] = []
        self.count = 0
        self.size = 0  # bytes of the encoded records
        self.future: asyncio.Future[int] = loop.create_future()  # the base offset
        self.future.add_done_callback(_retrieve)
        self.closed = False    # no more records: queued or on its way
        self.lingered = False  # linger_ms passed: send it as soon as the partition is free
        self.timer: asyncio.Handle | None = None
        self.request = b""     # the serialised ProduceStreamRequest, made when first sent
        self.records_at = 0    # where in it the records start
        self.deadline = 0.0    # loop time by which it must be acknowledged
        self.sent_at = 0.0     # loop time of the latest attempt
        self.renumbered = False


# -- the wire encoding of ProduceRequest and Record (protobuf, by hand: see _Batch) -------

def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 as protobuf encodes it
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_varint(n) for n in range(1 << 14)]


def _length(n: int) -> bytes:
    return _SMALL[n] if n < 16384 else _varint(n)


def _field(tag: bytes, data: bytes) -> bytes:
    return tag + _length(len(data)) + data


def _record_prefix(value_length: int, key: bytes | None,
                   headers: Sequence[tuple[str, bytes]], timestamp_ms: int) -> bytes:
    """A ``records`` entry of ProduceRequest up to (not including) the value's bytes: the
    value is the last field, so the record is this prefix followed by the value."""
    extra = b""
    if key:
        extra += _field(b"\x0a", key)
    for name, data in headers:
        extra += _field(b"\x1a", _field(b"\x0a", name.encode()) + _field(b"\x12", data))
    if timestamp_ms:
        extra += b"\x20" + _varint(timestamp_ms)
    value_tag = b"\x12" + _length(value_length)
    return b"\x1a" + _length(len(extra) + len(value_tag) + value_length) + extra + value_tag


def _request_head(topic: str, partition: int, acks: int, producer_id: int,
                  base_sequence: int) -> bytes:
    head = _field(b"\x0a", topic.encode()) + b"\x10" + _varint(partition)
    if acks:
        head += b"\x20" + _varint(acks)
    if producer_id:
        head += b"\x28" + _varint(producer_id) + b"\x30" + _varint(base_sequence)
    return head


def _stream_error(error: GeoplexRpcError) -> GeoplexRpcError:
    """The error a ProduceStream ended with. When the broker ends the stream (NOT_LEADER,
    a crash) while a batch is being written, grpc.aio reports INTERNAL "Internal error
    from Core" instead of the broker's status (grpc/grpc#36066): taken as the stream
    being cut (UNAVAILABLE), so the batches are sent again after a metadata refresh."""
    if error.code is grpc.StatusCode.INTERNAL and error.message == CORE_WRITE_ERROR:
        return UnavailableError(grpc.StatusCode.UNAVAILABLE,
                                "the produce stream ended while a batch was being written "
                                "(the broker's answer was lost)", request_id=error.request_id)
    return error


def _retrieve(future: asyncio.Future[int]) -> None:
    """Mark a batch's failure as seen: it is reported on its records' futures and logged,
    so asyncio need not warn that nobody retrieved it."""
    if not future.cancelled():
        future.exception()


class RecordFuture:
    """One sent record: ``await`` it for its :class:`RecordMetadata` (or the batch's error)."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self._batch = batch
        self._index = index

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        base = yield from self._batch.future.__await__()
        return self._metadata(base)

    def _metadata(self, base: int) -> RecordMetadata:
        return RecordMetadata(self._batch.topic, self._batch.partition,
                              -1 if base < 0 else base + self._index)

    def done(self) -> bool:
        return self._batch.future.done()

    def result(self) -> RecordMetadata:
        """The record's metadata; raises the batch's error, or InvalidStateError if not done."""
        return self._metadata(self._batch.future.result())

    def exception(self) -> BaseException | None:
        return self._batch.future.exception()


class _PartitionState:
    """One partition's batches: the open one, closed ones queued, those in flight."""

    __slots__ = ("topic", "partition", "open", "ready", "in_flight", "producer_id",
                 "next_sequence", "pump", "wake", "address", "hinted")

    def __init__(self, topic: str, partition: int, producer_id: int) -> None:
        self.topic = topic
        self.partition = partition
        self.open: _Batch | None = None
        self.ready: deque[_Batch] = deque()      # closed (or put back after a failure)
        self.in_flight: deque[_Batch] = deque()  # sent on the stream, acknowledged in order
        self.producer_id = producer_id
        self.next_sequence = 0
        self.pump: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.address = ""     # the leader the current stream went to ("" while looking)
        self.hinted = False   # the last retry went at once to a leader an error named


class Producer:
    """Batches records per partition and sends them with safe retries; see the module."""

    def __init__(self, client: BrokerClient, *, acks: Acks | int = Acks.LEADER,
                 batch_records: int = 5_000, batch_bytes: int = 1 << 20,
                 linger_ms: float = 5.0, buffer_bytes: int = 32 << 20, max_block: float = 60.0,
                 idempotent: bool = True, request_timeout: float | None = None,
                 delivery_timeout: float = 120.0, retry_backoff: float = 0.05,
                 max_retry_backoff: float = 1.0, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        if not 1 <= batch_records <= MAX_BATCH_RECORDS:
            raise ValueError(f"batch_records must be 1..{MAX_BATCH_RECORDS}, not {batch_records}")
        if batch_bytes < 1:
            raise ValueError(f"batch_bytes must be at least 1, not {batch_bytes}")
        if buffer_bytes < 1:
            raise ValueError(f"buffer_bytes must be at least 1, not {buffer_bytes}")
        if not 1 <= max_in_flight <= MAX_IN_FLIGHT:
            # a retry resends what is in flight; the broker recognises the last 5 only
            raise ValueError(f"max_in_flight must be 1..{MAX_IN_FLIGHT}, not {max_in_flight}")
        if linger_ms < 0 or max_block < 0 or delivery_timeout <= 0:
            raise ValueError("linger_ms and max_block must be >= 0, delivery_timeout > 0")
        self.client = client
        self.acks = int(acks)
        if self.acks not in tuple(Acks):
            raise ValueError(f"acks must be one of {[a.name for a in Acks]}, not {acks}")
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.linger = linger_ms / 1000.0
        self.buffer_bytes = buffer_bytes
        self.max_block = max_block
        self.idempotent = idempotent
        self.request_timeout = request_timeout
        self.delivery_timeout = delivery_timeout
        self.retry_backoff = retry_backoff
        self.max_retry_backoff = max_retry_backoff
        self.max_in_flight = max_in_flight
        self.producer_id = new_producer_id() if idempotent else 0
        self._partitions: dict[str, int] = {}
        self._metadata_calls: dict[str, asyncio.Future[int]] = {}
        self._states: dict[tuple[str, int], _PartitionState] = {}
        self._sticky: dict[str, _Batch] = {}
        self._round_robin: dict[str, int] = {}
        self._used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._unfinished: set[_Batch] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # per broker address: ProduceStream taking each request's bytes as they are
        self._produce_streams: dict[str, grpc.aio.StreamStreamMultiCallable[
            bytes, pb.ProduceStreamResponse]] = {}
        self._closing = False
        self._sent = self._failed = self._batches = self._retries = 0
        self.last_error: BaseException | None = None  # what failed the latest failed batch

    # -- public --------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def stats(self) -> ProducerStats:
        return ProducerStats(self._sent, self._failed, self._batches, self._retries, self._used)

    async def partitions(self, topic: str) -> int:
        """The topic's partition count (GetTopic once, then cached)."""
        known = self._partitions.get(topic)
        if known is not None:
            return known
        pending = self._metadata_calls.get(topic)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch_partitions(topic))
            self._metadata_calls[topic] = pending
            pending.add_done_callback(lambda _: self._metadata_calls.pop(topic, None))
        return await asyncio.shield(pending)

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   headers: Headers | None = None, partition: int | None = None,
                   timestamp_ms: int = 0) -> RecordFuture:
        """Buffer one record; returns once it is buffered (waiting for room up to
        ``max_block`` seconds, then :class:`BufferFullError`). Await the returned future for
        where it was written. ``timestamp_ms`` 0 means the broker's append time."""
        if self._closing:
            raise SessionClosedError("the producer is closed")
        keyless = False  # sticky: the partition of the topic's current keyless batch
        count = self._partitions.get(topic)
        if count is None:
            count = await self.partitions(topic)
        if partition is not None:
            if not 0 <= partition < count:
                raise ValueError(f"partition must be 0..{count - 1} for topic {topic!r}, "
                                 f"not {partition}")
        elif key:
            partition = int(google_crc32c.value(key)) % count
        else:
            keyless = True
            sticky = self._sticky.get(topic)
            if sticky is None or sticky.closed:
                partition = self._next_sticky(topic, count)
            else:
                partition = sticky.partition
        header_items: Sequence[tuple[str, bytes]] = ()
        if headers:
            header_items = list(headers.items() if isinstance(headers, Mapping) else headers)
        length = len(value)
        if key or header_items or timestamp_ms or length >= 16000:
            prefix = _record_prefix(length, key, header_items, timestamp_ms)
        else:  # the common case, without a call
            prefix = b"\x1a" + _SMALL[length + 1 + len(_SMALL[length])] + b"\x12" + \
                _SMALL[length]
        size = len(prefix) + length
        if self._used + size > self.buffer_bytes or self._waiters:
            await self._reserve(size)
            if self.closed:  # closed while this waited
                self._release(size)
                raise SessionClosedError("the producer was closed")
        else:
            self._used += size

        state = self._states.get((topic, partition))
        if state is None:
            state = self._states[(topic, partition)] = _PartitionState(
                topic, partition, self.producer_id)
        batch = state.open
        if batch is not None and batch.count and batch.size + size > self.batch_bytes:
            self._close(state, batch)
            batch = None
        if batch is None:
            batch = self._open(state)
        if keyless:
            self._sticky[topic] = batch
        parts = batch.parts
        parts.append(prefix)
        parts.append(value)
        index = batch.count
        batch.count = index + 1
        batch.size += size
        if batch.count >= self.batch_records or batch.size >= self.batch_bytes:
            self._close(state, batch)
            await asyncio.sleep(0)  # let the partition's sender go out before filling on
        return RecordFuture(batch, index)

    async def flush(self, timeout: float | None = None) -> None:
        """Send every buffered record now and wait until each batch is acknowledged or has
        failed (failures are on the records' futures and in :attr:`stats`); TimeoutError
        if that takes longer than ``timeout`` seconds (None: as long as retries go on)."""
        for state in list(self._states.values()):
            if state.open is not None:
                self._close(state, state.open)
        pending = [batch.future for batch in self._unfinished]
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            if late:
                raise TimeoutError(f"{len(late)} batches were not acknowledged within "
                                   f"{timeout:g} s")

    async def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` seconds; what is still unacknowledged then fails with
        SessionClosedError), then refuse further sends; safe to call again."""
        self._closing = True
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(SessionClosedError("the producer was closed"))
        self._waiters.clear()
        try:
            await self.flush(timeout)
        except TimeoutError:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            gone = SessionClosedError("the producer was closed before the broker "
                                      "acknowledged this record")
            for state in self._states.values():
                state.ready.extendleft(reversed(state.in_flight))
                state.in_flight.clear()
                while state.ready:
                    self._fail(state, state.ready.popleft(), gone)
        for state in self._states.values():
            state.wake.set()  # idle pumps end their streams now
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- partitions and memory -------------------------------------------------------

    async def _fetch_partitions(self, topic: str) -> int:
        response = await self.client.get_topic(topic, timeout=self.request_timeout)
        count = response.topic.partitions
        self._partitions[topic] = count
        return count

    def _next_sticky(self, topic: str, count: int) -> int:
        turn = self._round_robin.get(topic)
        turn = random.randrange(count) if turn is None else (turn + 1) % count
        self._round_robin[topic] = turn
        return turn

    async def _reserve(self, size: int) -> None:
        """Wait (first come, first served) until ``size`` bytes fit in the buffer."""
        if size > self.buffer_bytes:
            raise BufferFullError(f"a record of {size} bytes is larger than the producer's "
                                  f"whole buffer (buffer_bytes={self.buffer_bytes})")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((size, waiter))
        granted = False
        try:
            await asyncio.wait_for(waiter, self.max_block)
            granted = True
        except TimeoutError:
            raise BufferFullError(
                f"the producer's buffer ({self.buffer_bytes} bytes) stayed full for "
                f"{self.max_block:g} s: the broker is not keeping up or cannot be reached; "
                "the record was not sent") from None
        finally:
            if not granted:  # timed out, closed, or the caller was cancelled
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._used -= size  # room granted that nobody will take
                elif not waiter.done():
                    waiter.cancel()
                try:
                    self._waiters.remove((size, waiter))
                except ValueError:
                    pass
                self._grant()  # the waiter behind this one may fit now

    def _release(self, size: int) -> None:
        self._used -= size
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            need, waiter = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
                continue
            if self._used + need > self.buffer_bytes:
                break
            self._waiters.popleft()
            self._used += need
            waiter.set_result(None)

    # -- batches ---------------------------------------------------------------------

    def _open(self, state: _PartitionState) -> _Batch:
        loop = asyncio.get_running_loop()
        batch = _Batch(state.topic, state.partition, loop)
        batch.deadline = loop.time() + self.delivery_timeout
        state.open = batch
        self._unfinished.add(batch)
        if self.linger > 0:
            batch.timer = loop.call_later(self.linger, self._lingered, state, batch)
        else:
            batch.timer = loop.call_soon(self._lingered, state, batch)
        return batch

    def _lingered(self, state: _PartitionState, batch: _Batch) -> None:
        batch.timer = None
        if not batch.closed:
            batch.lingered = True
            self._kick(state)

    def _close(self, state: _PartitionState, batch: _Batch) -> None:
        batch.closed = True
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if state.open is batch:
            state.open = None
        state.ready.append(batch)
        self._kick(state)

    def _kick(self, state: _PartitionState) -> None:
        """There is something to send: start the partition's pump, or wake it."""
        if not (state.ready or (state.open is not None and state.open.lingered)):
            return
        if state.pump is None:
            state.pump = asyncio.get_running_loop().create_task(self._pump(state))
            self._tasks.add(state.pump)
            state.pump.add_done_callback(self._tasks.discard)
        else:
            state.wake.set()

    def _take(self, state: _PartitionState) -> _Batch | None:
        """The partition's next batch to send: a closed one, else a lingered open one."""
        if state.ready:
            return state.ready.popleft()
        batch = state.open
        if batch is not None and batch.lingered and batch.count:
            batch.closed = True
            state.open = None
            return batch
        return None

    def _busy(self, state: _PartitionState) -> bool:
        return bool(state.in_flight or state.ready
                    or (state.open is not None and state.open.lingered))

    # -- numbering ---------------------------------------------------------------------

    def _number(self, state: _PartitionState, batch: _Batch) -> None:
        """Give the batch the partition's producer id and next sequence numbers and make
        its request's bytes (a ProduceStreamRequest); a retry resends them unchanged."""
        if self.idempotent and state.next_sequence + batch.count > MAX_SEQUENCE:
            self._new_identity(state)  # the int32 sequence would wrap: start afresh
        head = _request_head(batch.topic, batch.partition, self.acks,
                             state.producer_id if self.idempotent else 0,
                             state.next_sequence)
        if batch.parts:
            records = batch.parts
            batch.parts = []  # the records live on in the request only
        else:  # numbered again (a new producer id): the records follow the old head
            records = [batch.request[batch.records_at:]]
        size = len(head) + sum(len(part) for part in records)
        wrapper = b"\x0a" + _length(size)  # ProduceStreamRequest.produce
        batch.records_at = len(wrapper) + len(head)
        batch.request = b"".join([wrapper, head, *records])
        if self.idempotent:
            state.next_sequence += batch.count

    def _new_identity(self, state: _PartitionState) -> None:
        if self.idempotent:
            state.producer_id = new_producer_id()
            state.next_sequence = 0

    def _renumber(self, state: _PartitionState) -> None:
        """A fresh producer id for the partition, and the batches numbered but not yet
        acknowledged (all at the front of ``ready``) numbered again under it, in order."""
        self._new_identity(state)
        for batch in state.ready:
            if not batch.request:
                break
            self._number(state, batch)

    # -- the pump: one ProduceStream per busy partition --------------------------------

    async def _pump(self, state: _PartitionState) -> None:
        """Send the partition's batches on a ProduceStream, at most ``max_in_flight`` at
        once, until it has nothing to send; after a failure, resend in order."""
        backoff = self.retry_backoff
        try:
            while self._busy(state):
                try:
                    await self._stream(state)
                    backoff = self.retry_backoff
                except GeoplexRpcError as exc:
                    if self._after_failure(state, exc):
                        await asyncio.sleep(backoff * (0.5 + random.random()))
                        backoff = min(backoff * 2, self.max_retry_backoff)
                except Exception as exc:  # noqa: BLE001 - reported on the records' futures
                    state.ready.extendleft(reversed(state.in_flight))
                    state.in_flight.clear()
                    while state.ready:
                        self._fail(state, state.ready.popleft(), exc)
        finally:
            state.pump = None

    def _produce_stream(self, address: str) -> grpc.aio.StreamStreamMultiCallable[
            bytes, pb.ProduceStreamResponse]:
        """ProduceStream on the broker at ``address``, taking requests' bytes (see _Batch)."""
        stream = self._produce_streams.get(address)
        if stream is None:
            stream = self._produce_streams[address] = self.client.router.channel(
                address).stream_stream(PRODUCE_STREAM_METHOD,
                                       response_deserializer=pb.ProduceStreamResponse.FromString)
        return stream

    async def _stream(self, state: _PartitionState) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.request_timeout or self.client.options.timeout
        state.address = ""
        address = await self.client.router.leader(state.topic, state.partition,
                                                  loop.time() + timeout)
        state.address = address
        call = self._produce_stream(address)(metadata=self.client.metadata())
        reading: asyncio.Future[Any] | None = None
        try:
            while True:
                while len(state.in_flight) < self.max_in_flight:
                    batch = self._take(state)
                    if batch is None:
                        break
                    if not batch.request:
                        self._number(state, batch)
                    batch.sent_at = loop.time()
                    state.in_flight.append(batch)
                    try:
                        await call.write(batch.request)
                    except asyncio.InvalidStateError:  # the broker ended the stream
                        raise await self._ended(call) from None
                if not state.in_flight:
                    if self._busy(state):
                        continue
                    if not self._closing:  # keep the stream a while for what comes next
                        state.wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(state.wake.wait(), STREAM_IDLE_S)
                    if self._busy(state):
                        continue
                    await call.done_writing()
                    return
                if reading is None:
                    reading = asyncio.ensure_future(call.read())
                state.wake.clear()
                waking = asyncio.ensure_future(state.wake.wait())
                head = state.in_flight[0]
                done, _ = await asyncio.wait(
                    (reading, waking), timeout=max(0.0, head.sent_at + timeout - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED)
                if not waking.done():
                    waking.cancel()
                if reading in done:
                    response = reading.result()
                    reading = None
                    if not isinstance(response, pb.ProduceStreamResponse):  # the stream ended
                        raise await self._ended(call)
                    self._acknowledged(state, response.produce)
                elif not done:
                    raise DeadlineExceededError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"no acknowledgement within {timeout:g} s")
        except grpc.aio.AioRpcError as exc:
            raise _stream_error(from_rpc_error(exc)) from None
        finally:
            if reading is not None:
                reading.cancel()
            call.cancel()

    async def _ended(self, call: Any) -> GeoplexRpcError:
        code = await call.code()
        if code == grpc.StatusCode.OK:
            return UnavailableError(grpc.StatusCode.UNAVAILABLE,
                                    "the broker ended the produce stream")
        return _stream_error(from_rpc_error(grpc.aio.AioRpcError(
            code, await call.initial_metadata(), await call.trailing_metadata(),
            await call.details())))

    def _acknowledged(self, state: _PartitionState, response: pb.ProduceResponse) -> None:
        batch = state.in_flight.popleft()
        state.hinted = False
        self._sent += batch.count
        self._batches += 1
        base = response.results[0].base_offset if response.results else -1
        self._finish(batch)
        if not batch.future.done():
            batch.future.set_result(base)

    def _route_verdict(self, state: _PartitionState, exc: GeoplexRpcError) -> Verdict | None:
        """What the failure says about the partition's leader (the client's cache learns
        it); None when it came from finding the leader, not from a broker."""
        router = self.client.router
        if exc.code is grpc.StatusCode.DEADLINE_EXCEEDED:
            router.forget(state.topic)  # a leader that does not answer: ask who leads now
        if not state.address:
            if exc.reason == "LEADER_NOT_AVAILABLE":
                router.forget(state.topic)
            return None
        # resending is safe: an idempotent producer's batches are written once, and the
        # others are retried after UNAVAILABLE as on one broker (at least once)
        return router.verdict(exc, state.address, safe=True, topic=state.topic,
                              partition=state.partition)

    def _at_once(self, state: _PartitionState, verdict: Verdict | None) -> bool:
        """Whether to retry without a backoff: the error named the new leader (but not
        twice in a row: two brokers naming each other back off)."""
        at_once = verdict is not None and verdict.name == "NOW" and not state.hinted
        state.hinted = at_once
        return at_once

    def _after_failure(self, state: _PartitionState, exc: GeoplexRpcError) -> bool:
        """Put what was in flight back, in order, ahead of what waits; fail the first
        batch if it cannot be retried. Whether to back off before the next stream."""
        state.ready.extendleft(reversed(state.in_flight))
        state.in_flight.clear()
        verdict = self._route_verdict(state, exc)
        retriable = exc.code in RETRIABLE or (
            isinstance(exc, FailedPreconditionError) and exc.reason == NOT_LEADER)
        if not state.ready:
            return not self._at_once(state, verdict)
        head = state.ready[0]
        if (exc.reason == OUT_OF_SEQUENCE and self.idempotent and head.request
                and not head.renumbered):
            # the broker does not know what came before (it lost unsynced batches, or
            # forgot this producer): nothing from the head on was written; start afresh
            head.renumbered = True
            self._renumber(state)
            return False
        if retriable and asyncio.get_running_loop().time() < head.deadline:
            self._retries += 1
            return not self._at_once(state, verdict)
        self._fail(state, state.ready.popleft(), exc)
        if head.request:
            # whether or not the broker wrote it, nothing after it may follow its sequence
            # numbers: the partition goes on under a fresh producer id from sequence 0
            self._renumber(state)
        return retriable

    def _finish(self, batch: _Batch) -> None:
        self._unfinished.discard(batch)
        self._release(batch.size)
        batch.request = b""

    def _fail(self, state: _PartitionState, batch: _Batch, exc: BaseException) -> None:
        self._failed += batch.count
        self.last_error = exc
        log.warning("produce to %s partition %d failed for good (%d records): %s",
                    batch.topic, batch.partition, batch.count, exc)
        self._finish(batch)
        if not batch.future.done():
            batch.future.set_exception(exc)
