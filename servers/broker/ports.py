"""What the broker's application needs from its storage and its metadata store.

``log/`` implements the partition logs on local disk; ``adapters/etcd_meta.py`` implements
topics, committed offsets and the retry scheduler's cursors on etcd. The app and the
servicer see only these interfaces and the domain types in :mod:`.domain`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

from .domain import AppendResult, ReadResult, TopicSpec


class PartitionLog(Protocol):
    """One partition: an append-only segmented log of whole batches."""

    @property
    def log_start_offset(self) -> int: ...

    @property
    def log_end_offset(self) -> int:
        """The offset the next record will get."""

    @property
    def high_watermark(self) -> int:
        """The end readers see: every offset below it is durable under the log's fsync
        policy (and, in part 2, on every in-sync replica). Lag, "latest" and commits are
        bounded by it, never by the log end."""

    @property
    def size_bytes(self) -> int: ...

    @property
    def segment_count(self) -> int: ...

    async def append(self, records_blob: bytes, count: int, max_timestamp_ms: int,
                     producer_id: int = 0, base_sequence: int = 0,
                     sync: bool | None = None) -> AppendResult:
        """Append one batch as a unit: ``records_blob`` is the serialised ``repeated Record``
        field of a ``RecordBatch`` (its other fields are written by the log). Returns once
        the batch is written (and synced, under a per-batch fsync policy or ``sync=True``).
        A batch an idempotent producer already wrote returns its first append with
        ``duplicate=True``. Raises domain.OutOfSequence, domain.StorageFull (nothing
        written), domain.LogClosed."""

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        """Whole stored batches from the one holding ``offset`` on, about ``max_bytes``
        (always at least one batch when there is one). Each is the serialised
        ``RecordBatch``, CRC-checked. Raises domain.OffsetOutOfRange, domain.CorruptBatch."""

    async def wait_for(self, offset: int, timeout: float) -> bool:
        """Until the log end passes ``offset`` (True) or ``timeout`` seconds pass (False)."""

    def offset_for_time(self, timestamp_ms: int) -> int:
        """The first offset whose batch's max timestamp is >= ``timestamp_ms``, or the log end."""


class LogStore(Protocol):
    """Every partition log on this broker's disk."""

    async def open(self) -> None:
        """Open (and recover) every partition found on disk."""

    async def close(self) -> None: ...

    async def create(self, topic: TopicSpec) -> None:
        """Make the topic's partition logs (idempotent: existing ones are kept)."""

    async def delete(self, topic: str) -> None:
        """Close and remove the topic's partition logs."""

    def partition(self, topic: str, partition: int) -> PartitionLog:
        """Raises domain.UnknownTopic / domain.UnknownPartition."""

    def topics(self) -> Sequence[str]: ...

    async def enforce_retention(self, now_ms: int) -> int:
        """Delete whole segments past each topic's retention; returns how many."""


class TopicStore(Protocol):
    """Topic metadata (etcd). Every call raises domain.MetadataUnavailable when the store
    cannot be reached."""

    async def create(self, topic: TopicSpec) -> TopicSpec:
        """Raises domain.TopicExists."""

    async def delete(self, name: str) -> None:
        """Raises domain.UnknownTopic."""

    async def list(self) -> Sequence[TopicSpec]: ...

    def watch(self) -> AsyncIterator[tuple[str, TopicSpec | None]]:
        """(name, spec) when a topic is created or changed, (name, None) when deleted;
        reconnects by itself."""


class OffsetStore(Protocol):
    """Consumer groups' committed offsets (etcd): one transaction per commit."""

    async def commit(self, group: str, offsets: Mapping[tuple[str, int], int],
                     allow_backwards: bool = False) -> dict[tuple[str, int], int]:
        """Store each (topic, partition) -> offset unless it is below the stored one
        (unless ``allow_backwards``); returns the stored offsets after the call.
        Raises domain.MetadataUnavailable."""

    async def committed(self, group: str,
                        topics: Sequence[str] = ()) -> dict[tuple[str, int], int]: ...

    async def groups(self) -> Sequence[str]: ...

    async def delete_topic(self, topic: str) -> None:
        """Forget every group's offsets of a deleted topic."""


class CursorStore(Protocol):
    """The retry scheduler's position per group in the group's delay topic (etcd)."""

    async def get_cursor(self, group: str) -> int | None:
        """The saved offset, None when none was saved. Raises domain.MetadataUnavailable."""

    async def set_cursor(self, group: str, offset: int) -> None:
        """Raises domain.MetadataUnavailable."""
