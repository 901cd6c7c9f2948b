"""What the broker's application needs from its storage and its metadata store.

``log/`` implements the partition logs on local disk; ``adapters/etcd_meta.py`` implements
topics, committed offsets and the retry scheduler's cursors on etcd;
``adapters/etcd_cluster.py`` the cluster's membership, controller election and partition
assignments on etcd. The app and the
servicer see only these interfaces and the domain types in :mod:`.domain`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from .domain import (
    AppendResult,
    BrokerInfo,
    ControllerInfo,
    PartitionAssignment,
    ReadResult,
    ReplicaChunk,
    ReplicaFetch,
    TopicSpec,
)

if TYPE_CHECKING:
    from .log.partition import FramesRead


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

    # ---- replication (part 2) ---------------------------------------------------------

    @property
    def damaged_offset(self) -> int:
        """The first kept batch that failed its CRC at recovery, or -1."""

    @property
    def durable_end(self) -> int:
        """The end that is durable on this broker: the synced end under a per-batch fsync
        policy, the log end under the others."""

    @property
    def latest_epoch(self) -> int:
        """The newest leader epoch the log knows (-1: none)."""

    @property
    def last_batch_epoch(self) -> int:
        """The leader epoch of the log's last batch (-1: no batches): a follower's
        last fetched epoch."""

    @property
    def recovery_truncated(self) -> bool:
        """Informational: opening the log cut a torn or corrupt tail or found a batch
        failing its CRC."""

    def begin_epoch(self, epoch: int) -> None:
        """Become leader at ``epoch``: it starts at the log end and later appends carry it.
        The latest epoch again is a no-op; an older one raises log.StaleLeaderEpoch
        (a ValueError). Synchronous: the epochs file is written by the next group commit
        (before any batch of the epoch is acknowledged under a per-batch policy)."""

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """(the largest known epoch <= ``epoch``, its end offset: where the next epoch
        starts, the log end for the latest); (-1, log start) when none is <= ``epoch``."""

    def read_frames(self, offset: int, max_bytes: int) -> FramesRead:
        """The raw stored frames (header + payload as on disk, concatenated) from the batch
        holding ``offset`` up to the log end (not the high watermark), about ``max_bytes``
        (at least one whole frame when there is one). Raises domain.OffsetOutOfRange
        (outside log start..log end), domain.CorruptBatch."""

    async def append_frames(self, data: bytes) -> int:
        """A follower's append of frames from :meth:`read_frames`, written verbatim once
        every one is checked (nothing written otherwise): domain.CorruptBatch (magic,
        length, CRC), log.ReplicaMismatch (a ValueError: the first must start at the log
        end, the rest follow on, epochs never older than the log's). Returns the new log end
        once durable under the fsync policy. Raises domain.StorageFull, domain.LogClosed."""

    async def truncate_to(self, offset: int) -> int:
        """Remove every batch at or after ``offset`` (cut at the boundary of the batch
        holding it); returns the new log end. Producers' state, leader epochs and the high
        watermark follow; all synced before it returns. At or past the log end: nothing.
        Below the log start: ValueError."""

    async def truncate_fully(self, start_offset: int) -> None:
        """Remove every batch and start the log again, empty, at ``start_offset`` (a
        follower whose log end is below its leader's log start); producers' state and
        leader epochs are forgotten. Synced before it returns."""

    def set_durable_listener(self, callback: Callable[[int], None] | None) -> None:
        """``callback(durable_end)`` on the event loop whenever :attr:`durable_end`
        advances; None removes it."""

    def set_replicated(self, on: bool, high_watermark: int | None = None) -> None:
        """On: the high watermark moves only by :meth:`set_high_watermark` (and down with a
        truncation); ``high_watermark`` sets it first (clamped to the log; may go down).
        Off: it follows :attr:`durable_end`, as with one replica."""

    def set_high_watermark(self, offset: int) -> None:
        """Move the high watermark up to ``offset``, clamped to [current, log end]; wakes
        :meth:`wait_for`."""


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


class ClusterStore(Protocol):
    """The cluster's shared state (etcd): who is alive, who controls, who leads what.

    Calls raise domain.MetadataUnavailable when etcd cannot be reached.
    """

    async def register(self, broker: BrokerInfo, lease_s: float) -> None:
        """Put this broker's key on a new lease of ``lease_s`` seconds and keep the lease
        alive from now on (until :meth:`deregister`); when the lease is lost (expired during
        an outage or a pause), register again on a new one by itself."""

    @property
    def fence_deadline(self) -> float:
        """Monotonic time until which this broker's lease is surely alive (the send time of
        the last answered keep-alive plus the TTL, less a margin); 0 before registering.
        A leader of a replicated partition acknowledges nothing after it."""

    async def deregister(self) -> None:
        """Stop the keep-alive and revoke the lease (a clean shutdown: the key goes now)."""

    async def brokers(self) -> dict[int, BrokerInfo]:
        """The brokers registered now, by id."""

    def watch_brokers(self) -> AsyncIterator[dict[int, BrokerInfo]]:
        """The whole live set, first as it is, then after every change; reconnects."""

    async def campaign(self, broker: BrokerInfo) -> ControllerInfo:
        """Wait until this broker is elected controller (on its registration lease);
        returns its controller epoch (one more than the last controller's)."""

    async def controller(self) -> ControllerInfo | None: ...

    def watch_controller(self) -> AsyncIterator[ControllerInfo | None]:
        """The controller, first as it is, then after every change; reconnects."""

    async def assignments(self, topic: str | None = None) -> list[PartitionAssignment]: ...

    def watch_assignments(self) -> AsyncIterator[list[PartitionAssignment | tuple[str, int]]]:
        """Batches of changes: first every assignment there is, then each change (an
        assignment, or the (topic, partition) of one deleted); reconnects, listing again
        (so a batch may repeat what was seen)."""

    async def create_topic(self, spec: TopicSpec,
                           assignments: list[PartitionAssignment]) -> TopicSpec:
        """The topic and its partitions' assignments in one transaction.
        Raises domain.TopicExists."""

    async def update_assignment(self, new: PartitionAssignment,
                                controller: ControllerInfo | None = None) -> PartitionAssignment:
        """Store ``new`` if the stored version is still ``new.version`` (and, with
        ``controller``, only while it is still the controller); returns it with its new
        version. Raises domain.StaleAssignment with what is stored now."""


class ReplicaPeers(Protocol):
    """Calls from this broker to the others (gRPC: adapters/replica_peers.py)."""

    async def fetch(self, address: str, query: ReplicaFetch, timeout: float) -> ReplicaChunk:
        """The leader at ``address`` answers a follower's fetch. Raises PeerError."""

    async def produce(self, address: str, topic: str, partition: int, records_blob: bytes,
                      timeout: float) -> None:
        """Produce ``records_blob`` (a serialised ``repeated Record``) with acks=ALL at the
        partition's leader at ``address`` (internal topics' writes). Raises PeerError."""

    async def close(self) -> None: ...


class PeerError(Exception):
    """A call to another broker failed: its status code name and ErrorInfo reason."""

    def __init__(self, code: str, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
