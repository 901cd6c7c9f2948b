"""Idempotent producers: per partition, each producer's last batches, so a retried batch is
written once.

A producer (a random non-zero uint64 the client picks) numbers its records per partition;
a batch carries the sequence of its first record. The partition remembers each producer's
last :data:`REMEMBERED` batches as (base_sequence, count, base_offset):

- a batch whose base_sequence is one of them (with the same count) is a retry: nothing
  is written, the first append's offsets are answered;
- otherwise its base_sequence must follow the newest one (``base_sequence + count``,
  wrapping at 2^31 as Kafka's do), else ``domain.OutOfSequence``;
- a producer the partition does not know may start at any sequence. Kafka asks for 0;
  we do not, because a producer's state is forgotten once retention has deleted all of
  its batches (as Kafka does) and a long-lived producer would then be refused for good.
  The cost: if a new producer's very first batch is lost and its second arrives, the
  second is taken and the retried first is refused (OutOfSequence), not reordered silently.

The state is rebuilt at open from a snapshot (``%020d.snapshot``, written at each segment
roll and at a clean shutdown: the state after every batch below that offset) and the
batch headers after it; see ``partition.py``.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import NamedTuple

import google_crc32c

from ..domain import OutOfSequence

REMEMBERED = 5
SEQUENCE_SPACE = 1 << 31
_SNAPSHOT_MAGIC = 0x53504750  # b"PGPS"
_SNAP_HEAD = struct.Struct("<IqI")  # magic, offset, producers
_SNAP_PRODUCER = struct.Struct("<QB")  # producer id, batches
_SNAP_BATCH = struct.Struct("<iIq")  # base sequence, count, base offset
_SNAP_CRC = struct.Struct("<I")


class ProducerBatch(NamedTuple):
    base_sequence: int
    records: int
    base_offset: int


class ProducerTable:
    def __init__(self) -> None:
        self._producers: dict[int, deque[ProducerBatch]] = {}

    def __len__(self) -> int:
        return len(self._producers)

    def check(self, producer_id: int, base_sequence: int, count: int) -> ProducerBatch | None:
        """The batch this one repeats, or None when it is new and in sequence.
        Raises OutOfSequence."""
        batches = self._producers.get(producer_id)
        if not batches:
            return None
        for batch in batches:
            if batch.base_sequence == base_sequence and batch.records == count:
                return batch
        newest = batches[-1]
        expected = (newest.base_sequence + newest.records) % SEQUENCE_SPACE
        if base_sequence != expected:
            raise OutOfSequence(expected, base_sequence)
        return None

    def record(self, producer_id: int, base_sequence: int, count: int, base_offset: int) -> None:
        batches = self._producers.get(producer_id)
        if batches is None:
            batches = self._producers[producer_id] = deque(maxlen=REMEMBERED)
        batches.append(ProducerBatch(base_sequence, count, base_offset))

    def forget_below(self, log_start: int) -> int:
        """Forget the producers whose every remembered batch is gone (below the log start);
        returns how many."""
        gone = [pid for pid, batches in self._producers.items()
                if batches[-1].base_offset < log_start]
        for pid in gone:
            del self._producers[pid]
        return len(gone)

    # ---- snapshots ----------------------------------------------------------------

    def snapshot(self, offset: int) -> bytes:
        parts = [_SNAP_HEAD.pack(_SNAPSHOT_MAGIC, offset, len(self._producers))]
        for pid, batches in self._producers.items():
            parts.append(_SNAP_PRODUCER.pack(pid, len(batches)))
            parts.extend(_SNAP_BATCH.pack(*batch) for batch in batches)
        body = b"".join(parts)
        return body + _SNAP_CRC.pack(int(google_crc32c.value(body)))

    @classmethod
    def from_snapshot(cls, data: bytes) -> tuple[int, ProducerTable] | None:
        """(offset, table) from a snapshot's bytes, or None when they are damaged."""
        if len(data) < _SNAP_HEAD.size + _SNAP_CRC.size:
            return None
        body, (crc,) = data[:-_SNAP_CRC.size], _SNAP_CRC.unpack(data[-_SNAP_CRC.size:])
        if int(google_crc32c.value(body)) != crc:
            return None
        magic, offset, producers = _SNAP_HEAD.unpack_from(body)
        if magic != _SNAPSHOT_MAGIC:
            return None
        table = cls()
        at = _SNAP_HEAD.size
        try:
            for _ in range(producers):
                pid, count = _SNAP_PRODUCER.unpack_from(body, at)
                at += _SNAP_PRODUCER.size
                for _ in range(count):
                    table.record(pid, *_SNAP_BATCH.unpack_from(body, at))
                    at += _SNAP_BATCH.size
        except struct.error:
            return None
        return (offset, table) if at == len(body) else None
