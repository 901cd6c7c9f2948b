"""One partition's log on local disk: ``<data_dir>/<topic>-<partition>/``.

Files: segments ``%020d.log`` (named by base offset) with their ``.index`` and
``.timeindex`` (written when the segment closes; see ``index.py``), producer snapshots
``%020d.snapshot`` (the idempotent producers' state after every batch below that offset,
written at each roll and at close; the newest two are kept) and ``.clean`` while the log
is shut down cleanly.

Writes happen on the event loop (one ``pwritev`` per batch, then in-memory bookkeeping);
fsync runs in a thread, one at a time: each covers every batch written before it started
(group commit), see :class:`~.policy.FsyncPolicy`. Readers see a batch once it is synced
under the per-batch policy (the high watermark; ``ReadResult.log_end_offset`` is it), at
once under the others.

Opening recovers: the last segment is scanned and every CRC checked unless ``.clean``
says it was closed cleanly, a torn or corrupt tail is truncated (how many bytes is
logged, never what), the earlier segments are checked from their index's last entry and
their last batch's header (rebuilt by a scan when that does not match), the producers'
state is read from the newest snapshot plus the batch headers after it, and the leader
epochs from ``leader-epochs`` (see ``epochs.py``; rebuilt from the batch headers when it
is missing or does not match the last batch).

Replication (part 2) uses the same files: a follower copies the leader's frames verbatim
(:meth:`DiskPartitionLog.read_frames` on the leader, :meth:`~DiskPartitionLog.append_frames`
on the follower), cuts its log where the two diverge (:meth:`~DiskPartitionLog.truncate_to`),
and in replicated mode the high watermark is what the replication protocol says
(:meth:`~DiskPartitionLog.set_high_watermark`), not the local fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import google_crc32c

from geoplex.servers._runtime.errors import InvalidArgument, Unavailable

from ..domain import (
    AppendResult,
    CorruptBatch,
    LogClosed,
    OffsetOutOfRange,
    ReadResult,
    StorageFull,
    TopicConfig,
)
from . import frame
from .epochs import EPOCHS_FILE, MAX_EPOCH, EpochEntry, LeaderEpochCache, StaleLeaderEpoch, decode
from .frame import CRC_FROM, HEADER_SIZE, MAX_PAYLOAD, FrameHeader, read_header
from .index import SegmentIndex, write_files
from .policy import FsyncPolicy
from .producers import SEQUENCE_SPACE, ProducerTable
from .segment import MAX_SEGMENT_RECORDS, MIN_TIMESTAMP, Segment, segment_name

logger = logging.getLogger(__name__)

Clock = Callable[[], int]
CLEAN_MARKER = ".clean"
SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOTS_KEPT = 2
CACHED_SEGMENTS = 4  # closed segments whose file and index stay open after a read
_CLEAN = struct.Struct("<IqqQ")  # magic, last segment's base, log end, last segment's size
_CLEAN_MAGIC = 0x4E4C4347  # b"GCLN"
_CRC = struct.Struct("<I")
_MAX_TIMESTAMP = (1 << 63) - 1


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` whole or not at all (a temporary file, fsync, rename)."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _write_and_sync_dir(path: Path, data: bytes) -> None:
    write_durably(path, data)
    fsync_dir(path.parent)


@dataclass(frozen=True, slots=True)
class FramesRead:
    """Stored frames (header and payload each, exactly as on disk), concatenated."""

    data: bytes
    next_offset: int  # the offset after the last frame (-1: none)
    count: int  # how many frames


class ReplicaMismatch(ValueError):
    """Frames a follower cannot append where its log ends: ``field`` is the header field
    that does not follow (``base_offset``: a gap or an overlap; ``leader_epoch``: an
    epoch older than one the log holds batches of)."""

    def __init__(self, field: str, expected: int, got: int) -> None:
        super().__init__(f"{field}: expected {expected}, got {got}")
        self.field = field
        self.expected = expected
        self.got = got


def _numbered(directory: Path, suffix: str) -> list[tuple[int, Path]]:
    found = []
    for entry in os.scandir(directory):
        stem = entry.name.removesuffix(suffix)
        if stem != entry.name and len(stem) == 20 and stem.isdigit():
            found.append((int(stem), Path(entry.path)))
    return sorted(found)


def _prune_snapshots(directory: Path) -> None:
    for _, path in _numbered(directory, SNAPSHOT_SUFFIX)[:-SNAPSHOTS_KEPT]:
        path.unlink(missing_ok=True)


def _sync(fds: list[int], jobs: list[Callable[[], None]], directory: Path | None) -> None:
    """One group commit, in a thread: the roll jobs, the data, the directory."""
    for job in jobs:
        job()
    for fd in fds:
        os.fdatasync(fd)
    if directory is not None:
        fsync_dir(directory)


def _persist_roll(where: str, directory: Path, index_path: Path, time_path: Path,
                  offsets: bytes, times: bytes, snapshot_offset: int, snapshot: bytes) -> None:
    """What a roll leaves to the next group commit: the closed segment's indexes and a
    producer snapshot. Both can be rebuilt, so failing to write them is only logged."""
    try:
        write_files(index_path, time_path, offsets, times)
        write_durably(directory / (segment_name(snapshot_offset) + SNAPSHOT_SUFFIX), snapshot)
        _prune_snapshots(directory)
    except OSError as error:
        logger.warning("%s: could not write a closed segment's index or a producer snapshot "
                       "(%s); they will be rebuilt at the next start", where, error.strerror)


# ---- recovery (in a thread, before the log object exists) -----------------------------


@dataclass
class _Recovered:
    segments: list[Segment]
    producers: ProducerTable
    epochs: LeaderEpochCache
    clean: bool
    truncated: bool = False  # bytes were cut off, or a batch failing its CRC was found


def _take_clean_marker(directory: Path) -> tuple[int, int, int] | None:
    """(last base, log end, last size) from ``.clean``, which is removed: from here on a
    crash must not look like a clean shutdown."""
    path = directory / CLEAN_MARKER
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    path.unlink()
    fsync_dir(directory)
    if len(data) != _CLEAN.size + _CRC.size:
        return None
    body, (crc,) = data[:_CLEAN.size], _CRC.unpack(data[_CLEAN.size:])
    magic, base, log_end, size = _CLEAN.unpack(body)
    if magic != _CLEAN_MAGIC or int(google_crc32c.value(body)) != crc:
        return None
    return base, log_end, size


def _open_as_left(last: Segment, base: int, log_end: int, size: int) -> bool:
    """Take the last segment as the clean shutdown left it, if the marker describes it."""
    if base != last.base or size != os.stat(last.log_path).st_size:
        return False
    if not size:
        last.index = SegmentIndex()
        last.open_fd()
        return log_end == base
    return last.summarize(active=True) and last.next_offset == log_end


def _repair(segment: Segment, where: str) -> bool:
    """Scan ``segment`` checking every CRC; cut a torn or corrupt tail. Returns whether
    anything was wrong (bytes cut, or a batch failing its CRC kept)."""
    problem = segment.rebuild(verify=True)
    if problem is not None:
        dropped = segment.truncate(segment.size)
        logger.warning("%s: %s at offset %d of %s; truncated %d bytes", where, problem,
                       segment.next_offset, segment.log_path.name, dropped)
        return True
    return segment.damaged


def _recover(directory: Path, where: str) -> _Recovered:
    directory.mkdir(parents=True, exist_ok=True)
    for entry in os.scandir(directory):
        if entry.name.endswith(".tmp"):
            os.unlink(entry.path)
    bases = [base for base, _ in _numbered(directory, ".log")]
    if not bases:
        segment = Segment.create(directory, 0)
        (directory / EPOCHS_FILE).unlink(missing_ok=True)
        fsync_dir(directory)
        return _Recovered([segment], ProducerTable(),
                          LeaderEpochCache(directory / EPOCHS_FILE, _write_and_sync_dir),
                          clean=True)
    marker = _take_clean_marker(directory)
    segments = [Segment(directory, base) for base in bases]
    truncated = False
    for segment in segments[:-1]:
        if not segment.summarize():
            logger.warning("%s: the index of %s is missing, damaged or stale; rebuilding it",
                           where, segment.log_path.name)
            truncated |= _repair(segment, where)
            segment.seal()
            segment.write_index()
        segment.release()
    last = segments[-1]
    clean = marker is not None and _open_as_left(last, *marker)
    if not clean:
        if marker is None:
            logger.info("%s: not shut down cleanly; checking %s", where, last.log_path.name)
        truncated |= _repair(last, where)
        os.fsync(last.open_fd())  # what recovery serves is on disk
    last.remove_index_files()  # an active segment's indexes live in memory
    kept = []
    for segment in segments[:-1]:
        if segment.empty:
            segment.remove_files()
        else:
            kept.append(segment)
    kept.append(last)
    for before, after in zip(kept, kept[1:]):
        if before.next_offset > after.base:
            logger.error("%s: %s ends at offset %d, after %s begins", where,
                         before.log_path.name, before.next_offset, after.log_path.name)
        elif before.next_offset < after.base:
            logger.warning("%s: offsets %d..%d are missing between %s and %s", where,
                           before.next_offset, after.base - 1, before.log_path.name,
                           after.log_path.name)
    return _Recovered(kept, _restore_producers(directory, kept, where),
                      _restore_epochs(directory, kept, where), clean, truncated)


def _headers_from(segments: list[Segment], start: int) -> Iterator[FrameHeader]:
    """The headers of the batches starting at or after offset ``start``, reading headers
    only; the segments before the last are released once read."""
    for segment in segments:
        if segment.next_offset <= start:
            continue
        position = 0
        if segment.base < start:
            _, position = segment.ensure_index().floor(start - segment.base)
        for _, header in segment.headers(position):
            if header.base_offset >= start:
                yield header
        if segment is not segments[-1]:
            segment.release()


def _last_header(segments: list[Segment]) -> FrameHeader | None:
    for segment in reversed(segments):
        if not segment.empty:
            header = read_header(os.pread(segment.open_fd(), HEADER_SIZE, segment.last_pos))
            if segment is not segments[-1]:
                segment.release()
            return header
    return None


def _scan_epochs(segments: list[Segment]) -> list[EpochEntry]:
    entries: list[EpochEntry] = []
    for header in _headers_from(segments, segments[0].base):
        epoch = header.leader_epoch
        if 0 <= epoch <= MAX_EPOCH and (not entries or epoch > entries[-1].epoch):
            entries.append(EpochEntry(epoch, header.base_offset))
    return entries


def _restore_epochs(directory: Path, segments: list[Segment], where: str) -> LeaderEpochCache:
    """The leader epochs from their file, without the entries starting at or after the log
    end; rebuilt from the batch headers when the file is missing or damaged (or does not
    describe the last batch), and then written."""
    path = directory / EPOCHS_FILE
    log_start, log_end = segments[0].base, segments[-1].next_offset
    try:
        data: bytes | None = path.read_bytes()
    except FileNotFoundError:
        data = None
    entries = decode(data) if data is not None else None
    if data is not None and entries is None:
        logger.warning("%s: %s is damaged; rebuilding it from the batches", where, EPOCHS_FILE)
    cache = LeaderEpochCache(path, _write_and_sync_dir, entries or (), saved=entries is not None)
    if entries is not None:
        cache.truncate_from_end(log_end)
        cache.truncate_from_start(log_start)
        last = _last_header(segments)
        if last is not None and cache.epoch_at(last.base_offset) != last.leader_epoch:
            logger.warning("%s: %s does not describe the last batch (epoch %d); rebuilding it "
                           "from the batches", where, EPOCHS_FILE, last.leader_epoch)
            entries = None
    if entries is None:
        cache = LeaderEpochCache(path, _write_and_sync_dir,
                                 _scan_epochs(segments) if log_end > log_start else (),
                                 saved=False)
    cache.save()
    return cache


def _restore_producers(directory: Path, segments: list[Segment], where: str) -> ProducerTable:
    log_start, log_end = segments[0].base, segments[-1].next_offset
    table: ProducerTable | None = None
    start = log_start
    for offset, path in reversed(_numbered(directory, SNAPSHOT_SUFFIX)):
        if offset > log_end:  # the log was cut below it
            path.unlink()
            continue
        if table is None:
            loaded = ProducerTable.from_snapshot(path.read_bytes())
            if loaded is not None and loaded[0] == offset:
                table, start = loaded[1], max(offset, log_start)
            else:
                logger.warning("%s: producer snapshot %s is damaged; not used", where, path.name)
                path.unlink()
    if table is None:
        table = ProducerTable()
    for header in _headers_from(segments, start):
        if header.producer_id:
            table.record(header.producer_id, header.base_sequence, header.records,
                         header.base_offset)
    table.forget_below(log_start)
    return table


# ---- the log --------------------------------------------------------------------------


class DiskPartitionLog:
    """A :class:`~geoplex.servers.broker.ports.PartitionLog` on local disk; make it with
    :meth:`open`."""

    def __init__(self, directory: Path, topic: str, partition: int, config: TopicConfig,
                 policy: FsyncPolicy, clock: Clock, recovered: _Recovered) -> None:
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self.where = f"{topic}-{partition}"
        self.recovered_clean = recovered.clean
        self.recovery_truncated = recovered.truncated  # informational: see _repair
        self.sync_rounds = 0  # group commits done (each one fsync of the data written before)
        self._config = config
        self._policy = policy
        self._clock = clock
        self._segments = recovered.segments
        self._bases = [segment.base for segment in self._segments]
        self._producers = recovered.producers
        self._epochs = recovered.epochs
        self._log_end = self._segments[-1].next_offset
        self._synced_end = self._log_end
        self._visible_end = self._log_end
        self._size = sum(segment.size for segment in self._segments)
        self._closed = False
        self._failed: BaseException | None = None
        self._round: asyncio.Future[None] | None = None  # the next group commit's
        self._syncer: asyncio.Task[None] | None = None
        self._unsynced_closed: list[Segment] = []
        self._jobs: list[Callable[[], None]] = []
        self._dir_dirty = False
        self._unsynced_bytes = 0
        self._advanced: asyncio.Future[None] | None = None  # set when the visible end moves
        self._cache: OrderedDict[int, Segment] = OrderedDict()
        self._retention_lock = asyncio.Lock()  # retention and truncation, one at a time
        self._flusher: asyncio.Task[None] | None = None
        self._replicated = False  # the high watermark moves by set_high_watermark only
        self._durable_listener: Callable[[int], None] | None = None
        self._durable_told = self._log_end  # the durable end the listener last heard of

    @classmethod
    async def open(cls, directory: Path | str, topic: str, partition: int,
                   config: TopicConfig | None = None, policy: FsyncPolicy | None = None,
                   clock: Clock = now_ms) -> DiskPartitionLog:
        """Open (creating or recovering) the log in ``directory``."""
        where = f"{topic}-{partition}"
        directory = Path(directory)
        recovered = await asyncio.to_thread(_recover, directory, where)
        log = cls(directory, topic, partition, config or TopicConfig(), policy or FsyncPolicy(),
                  clock, recovered)
        if not log._policy.per_batch and log._policy.interval_ms:
            log._flusher = asyncio.create_task(log._flush_every(log._policy.interval_ms / 1000))
        return log

    # ---- state --------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self._segments[0].base

    @property
    def log_end_offset(self) -> int:
        """The offset the next record will get."""
        return self._log_end

    @property
    def high_watermark(self) -> int:
        """The end readers see: the durable end, or in replicated mode what
        :meth:`set_high_watermark` last said (at open: the log end)."""
        return self._visible_end

    @property
    def damaged_offset(self) -> int:
        """The first batch recovery found failing its CRC and kept (intact batches follow
        it), or -1. A replica truncates there and copies the rest from its leader."""
        for segment in self._segments:
            if segment.damaged and segment.damaged_at >= 0:
                return segment.damaged_at
        return -1

    @property
    def durable_end(self) -> int:
        """The end the fsync policy counts as durable: the synced end under the per-batch
        policy, the log end under the others."""
        return self._synced_end if self._policy.per_batch else self._log_end

    @property
    def latest_epoch(self) -> int:
        """The newest leader epoch the log knows (-1: none)."""
        return self._epochs.latest_epoch

    @property
    def last_batch_epoch(self) -> int:
        """The leader epoch of the last batch (-1 when the log holds none): what a follower
        sends as its last fetched epoch."""
        if self._log_end == self.log_start_offset:
            return -1
        return self._epochs.epoch_at(self._log_end - 1)

    @property
    def epoch_entries(self) -> tuple[EpochEntry, ...]:
        """The leader epoch cache: (epoch, start offset), oldest first."""
        return self._epochs.entries

    @property
    def replicated(self) -> bool:
        return self._replicated

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def config(self) -> TopicConfig:
        return self._config

    @property
    def closed(self) -> bool:
        return self._closed

    def configure(self, config: TopicConfig) -> None:
        """Take a topic's new configuration (segment sizes, retention) from now on."""
        self._config = config

    # ---- writing ------------------------------------------------------------------

    async def append(self, records_blob: bytes, count: int, max_timestamp_ms: int,
                     producer_id: int = 0, base_sequence: int = 0,
                     sync: bool | None = None) -> AppendResult:
        """See :class:`~geoplex.servers.broker.ports.PartitionLog`. ``sync``: None follows
        the policy, True waits for an fsync covering the batch, False does not wait (under
        the per-batch policy the batch is still synced, and visible only then)."""
        self._check_writable()
        if not 1 <= count <= MAX_SEGMENT_RECORDS:
            raise InvalidArgument("count", f"must be in 1..{MAX_SEGMENT_RECORDS}")
        if not MIN_TIMESTAMP <= max_timestamp_ms <= _MAX_TIMESTAMP:
            raise InvalidArgument("max_timestamp_ms", "must be a 64-bit signed integer")
        if not 0 <= producer_id < 1 << 64:
            raise InvalidArgument("producer_id", "must be a 64-bit unsigned integer")
        if not producer_id:
            base_sequence = 0
        elif not 0 <= base_sequence < SEQUENCE_SPACE:
            raise InvalidArgument("base_sequence", f"must be 0..{SEQUENCE_SPACE - 1}")
        if producer_id:
            first = self._producers.check(producer_id, base_sequence, count)
            if first is not None:
                if first.base_offset + first.records > self._synced_end and (
                        sync or (sync is None and self._policy.per_batch)):
                    await asyncio.shield(self._request_sync())
                return AppendResult(first.base_offset, first.records, duplicate=True)
        if len(records_blob) > MAX_PAYLOAD - 64:
            raise InvalidArgument("records", f"a batch must be under {MAX_PAYLOAD - 64} bytes")
        base = self._log_end
        header, prefix, fields = frame.encode(base, count, max_timestamp_ms, self._clock(),
                                              producer_id, base_sequence, records_blob,
                                              max(self._epochs.latest_epoch, 0))
        self._put((header, prefix, records_blob), fields)
        await self._settle(sync)
        return AppendResult(base, count)

    async def append_frames(self, data: bytes) -> int:
        """A follower's append: ``data`` is frames as :meth:`read_frames` returns them,
        written verbatim. Every frame is checked first (nothing is written when one fails):
        CorruptBatch for a bad magic, length or CRC; ReplicaMismatch when the first does not
        start at the log end, the rest do not follow on, or one's leader epoch is older than
        the log's batches'. Returns the new log end, once the frames are durable under the
        fsync policy. Raises domain.StorageFull (the frames before the segment that could not
        be written stay), domain.LogClosed."""
        self._check_writable()
        frames = self._parse_frames(data)
        for chunk, fields in frames:
            self._put((chunk,), fields)
        if frames:
            await self._settle(None)
        return self._log_end

    def _parse_frames(self, data: bytes) -> list[tuple[bytes, FrameHeader]]:
        frames: list[tuple[bytes, FrameHeader]] = []
        expected = self._log_end
        epochs = self._epochs
        epoch = -1
        position = 0
        while position < len(data):
            if position + HEADER_SIZE > len(data):
                raise CorruptBatch(f"{self.where}: replicated frames end in a torn header")
            fields = read_header(data, position)
            if not fields.plausible():
                raise CorruptBatch(f"{self.where}: replicated frame at offset {expected} has "
                                   "a damaged header")
            if position + fields.size > len(data):
                raise CorruptBatch(f"{self.where}: replicated frame at offset {expected} is torn")
            chunk = data[position:position + fields.size]
            if frame.crc_of(chunk[CRC_FROM:]) != fields.crc:
                raise CorruptBatch(f"{self.where}: replicated frame at offset "
                                   f"{fields.base_offset}")
            if fields.base_offset != expected:
                raise ReplicaMismatch("base_offset", expected, fields.base_offset)
            if not frames:
                if not epochs.accepts(fields.leader_epoch, fields.base_offset):
                    raise ReplicaMismatch("leader_epoch", epochs.epoch_at(expected - 1),
                                          fields.leader_epoch)
            elif fields.leader_epoch < epoch:
                raise ReplicaMismatch("leader_epoch", epoch, fields.leader_epoch)
            epoch = fields.leader_epoch
            frames.append((chunk, fields))
            expected = fields.next_offset
            position += fields.size
        return frames

    def _put(self, parts: tuple[bytes, ...], fields: FrameHeader) -> None:
        """The write path of both appends: write one frame at the log end (rolling first
        when it does not fit in the active segment or that one is old enough) and take it
        into the bookkeeping: the producers, the leader epochs."""
        active = self._segments[-1]
        if (not active.fits(fields.size, fields.records, self._config.segment_bytes)
                or self._aged(fields.append_time_ms)):
            active = self._roll()
        active.append(parts, fields)
        self._log_end = fields.next_offset
        self._size += fields.size
        self._unsynced_bytes += fields.size
        if fields.producer_id:
            self._producers.record(fields.producer_id, fields.base_sequence, fields.records,
                                   fields.base_offset)
        if fields.leader_epoch != self._epochs.latest_epoch and self._epochs.assign(
                fields.leader_epoch, fields.base_offset):
            self._jobs.append(self._epochs.saver())  # with the next group commit

    async def _settle(self, sync: bool | None) -> None:
        """After a write: sync as the policy (or ``sync``) says, and say how far it is durable."""
        if self._policy.per_batch:
            commit = self._request_sync()
            if sync is not False:
                await asyncio.shield(commit)
            return
        self._durable_moved()
        if sync:
            await asyncio.shield(self._request_sync())
        elif self._policy.interval_bytes and self._unsynced_bytes >= self._policy.interval_bytes:
            self._request_sync()

    # ---- replication --------------------------------------------------------------

    def begin_epoch(self, epoch: int) -> None:
        """Become leader at ``epoch``: it starts at the log end and the batches appended from
        now on carry it. The same epoch again changes nothing; an older one raises
        StaleLeaderEpoch (a ValueError). The epochs file is written by the next group
        commit, which this starts."""
        self._check_writable()
        if not 0 <= epoch <= MAX_EPOCH:
            raise InvalidArgument("leader_epoch", f"must be in 0..{MAX_EPOCH}")
        latest = self._epochs.latest_epoch
        if epoch == latest:
            return
        if epoch < latest:
            raise StaleLeaderEpoch(epoch, latest)
        self._epochs.assign(epoch, self._log_end)
        self._jobs.append(self._epochs.saver())
        self._request_sync()

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """(the largest epoch the log knows that is <= ``epoch``, its end offset: where the
        next epoch starts, the log end for the latest); (-1, the log start) when none is."""
        return self._epochs.end_offset_for(epoch, self.log_start_offset, self._log_end)

    async def truncate_to(self, offset: int) -> int:
        """Remove every batch at or after ``offset`` (from the batch holding it: the cut is
        at a batch boundary); returns the new log end. Later segments are deleted, the one
        holding the cut is cut, the producers' state is rebuilt from the snapshots below
        the cut and the headers after them, the epochs starting at or after the new end
        go, and the high watermark comes down to it if above. Everything is synced before
        this returns. Nothing happens at or past the log end; below the log start it raises
        ValueError."""
        async with self._retention_lock:
            self._check_writable()
            while self._syncer is not None and not self._syncer.done():
                await asyncio.wait((self._syncer,))  # no fsync may run on what is cut
            self._check_writable()
            start = self.log_start_offset
            if offset < start:
                raise ValueError(f"offset: {offset} is below the log start {start}")
            if offset >= self._log_end:
                return self._log_end
            self._cut(offset)
            await asyncio.shield(self._request_sync())
            return self._log_end

    def _cut(self, offset: int) -> None:
        """truncate_to's changes, all at once on the loop (nothing else runs in between)."""
        i = bisect_right(self._bases, offset) - 1
        segment = self._segments[i]
        size = segment.size
        end = segment.cut(offset)  # (raises before changing anything when it cannot cut)
        removed = self._segments[i + 1:]
        del self._segments[i + 1:], self._bases[i + 1:]
        dropped = size - segment.size
        for gone in removed:
            self._cache.pop(gone.base, None)
            dropped += gone.size
            gone.close()
            gone.index = None
        self._cache.pop(segment.base, None)  # the active segment from now on
        self._size -= dropped
        self._log_end = end
        self._synced_end = min(self._synced_end, end)
        self._visible_end = min(self._visible_end, end)
        self._durable_told = min(self._durable_told, self.durable_end)
        if self._epochs.truncate_from_end(end):
            self._jobs.append(self._epochs.saver())
        self._jobs.append(partial(_remove_cut_files, removed, segment))
        self._dir_dirty = True
        logger.info("%s: truncated to offset %d (%d bytes, %d segments removed)", self.where,
                    end, dropped, len(removed))
        try:
            self._producers = _restore_producers(self.directory, self._segments, self.where)
        except OSError as error:  # the files below the cut cannot be read: stop writing
            self._failed = error
            logger.error("%s: could not rebuild the producers' state after a truncation (%s); "
                         "the partition takes no more writes until the broker restarts",
                         self.where, error.strerror)
            raise self._unavailable() from error

    async def truncate_fully(self, start_offset: int) -> None:
        """Remove every batch and start the log again, empty, at ``start_offset`` (a
        follower whose log ends below its leader's log start). The producers' state and
        the leader epochs are forgotten; synced before this returns."""
        if start_offset < 0:
            raise ValueError(f"start_offset: {start_offset} is negative")
        async with self._retention_lock:
            self._check_writable()
            while self._syncer is not None and not self._syncer.done():
                await asyncio.wait((self._syncer,))
            self._check_writable()
            removed, self._segments, self._bases = self._segments, [], []
            self._cache.clear()
            for segment in removed:
                segment.close()
                segment.index = None
            try:
                for segment in removed:
                    segment.remove_files()
                for _, path in _numbered(self.directory, SNAPSHOT_SUFFIX):
                    path.unlink(missing_ok=True)
                active = Segment.create(self.directory, start_offset)
            except (OSError, StorageFull) as error:
                self._failed = error
                self._segments, self._bases = [Segment(self.directory, start_offset)], [
                    start_offset]  # (no file: reads find nothing, writes are refused)
                self._size = 0
                self._log_end = self._synced_end = self._visible_end = start_offset
                logger.error("%s: could not start the log again at offset %d (%s); the "
                             "partition takes no more writes until the broker restarts",
                             self.where, start_offset, error)
                raise self._unavailable() from error
            self._segments, self._bases = [active], [start_offset]
            self._size = 0
            self._log_end = self._synced_end = self._visible_end = start_offset
            self._durable_told = start_offset
            self._producers = ProducerTable()
            if self._epochs.truncate_from_end(-1):
                self._jobs.append(self._epochs.saver())
            self._dir_dirty = True
            self._wake()
            logger.info("%s: removed every batch (%d segments); the log starts again at "
                        "offset %d", self.where, len(removed), start_offset)
            await asyncio.shield(self._request_sync())

    def set_durable_listener(self, callback: Callable[[int], None] | None) -> None:
        """``callback(durable_end)`` on the event loop whenever :attr:`durable_end`
        advances (None: no more calls). What it raises is logged, not propagated."""
        self._durable_listener = callback

    def set_replicated(self, on: bool, high_watermark: int | None = None) -> None:
        """Replicated mode on: the high watermark moves only by :meth:`set_high_watermark`
        (and down by a truncation), never by the log's own fsync; ``high_watermark`` sets
        it to that value first (clamped to the log, and it may go down: after a restart the
        log cannot know how much of it the other replicas hold). Off: it follows the
        durable end again, as outside replication."""
        self._replicated = on
        if on and high_watermark is not None:
            self._visible_end = min(max(high_watermark, self.log_start_offset), self._log_end)
            self._wake()
        if not on:
            self._advance(self.durable_end)

    def set_high_watermark(self, offset: int) -> None:
        """Move the high watermark to ``offset``, clamped to [its current value, the log
        end] (it never moves down here), waking :meth:`wait_for`. Meant for replicated
        mode; outside it the durable end moves it as well."""
        self._advance(min(offset, self._log_end))

    def _check_writable(self) -> None:
        if self._closed:
            raise LogClosed()
        if self._failed is not None:
            raise self._unavailable()

    def _unavailable(self) -> Unavailable:
        return Unavailable(f"partition {self.where}: an fsync failed; it takes no writes until "
                           "the broker restarts", reason="LOG_FAILED")

    def _aged(self, append_time_ms: int) -> bool:
        """Whether a batch appended at ``append_time_ms`` (its header's, so that a follower
        rolls where its leader did) finds the active segment old enough to roll."""
        active = self._segments[-1]
        age = self._config.segment_age_ms
        return age > 0 and not active.empty and append_time_ms - active.first_append_ms >= age

    def _roll(self) -> Segment:
        """Close the active segment and start one at the log end (its files are synced,
        its indexes and a producer snapshot written, by the next group commit)."""
        old = self._segments[-1]
        new = Segment.create(self.directory, self._log_end)
        old.seal()
        offsets, times = old.index_bytes()
        self._jobs.append(partial(_persist_roll, self.where, self.directory, old.index_path,
                                  old.time_path, offsets, times, self._log_end,
                                  self._producers.snapshot(self._log_end)))
        self._unsynced_closed.append(old)
        self._dir_dirty = True
        self._segments.append(new)
        self._bases.append(new.base)
        self._cache_put(old)
        self._request_sync()
        return new

    # ---- group commit -------------------------------------------------------------

    def _request_sync(self) -> asyncio.Future[None]:
        """The next group commit (it covers everything written before this call)."""
        if self._round is None:
            self._round = asyncio.get_running_loop().create_future()
        if self._syncer is None or self._syncer.done():
            self._syncer = asyncio.create_task(self._commit_rounds())
        return self._round

    async def _commit_rounds(self) -> None:
        while self._round is not None:
            commit, self._round = self._round, None
            target = self._log_end
            segments = [*self._unsynced_closed, self._segments[-1]]
            self._unsynced_closed = []
            jobs, self._jobs = self._jobs, []
            directory = self.directory if self._dir_dirty else None
            self._dir_dirty = False
            self._unsynced_bytes = 0
            for segment in segments:
                segment.syncing += 1
            try:
                fds = [segment.open_fd() for segment in segments]
                await asyncio.to_thread(_sync, fds, jobs, directory)
            except asyncio.CancelledError:  # the loop is going away
                for pending in (commit, self._round):
                    if pending is not None and not pending.done():
                        pending.cancel()
                raise
            except BaseException as error:
                self._fail(error, commit)
                if not isinstance(error, OSError):
                    raise
                return
            finally:
                for segment in segments:
                    segment.syncing -= 1
            self.sync_rounds += 1
            for segment in segments[:-1]:
                segment.synced = True
            self._synced_end = max(self._synced_end, target)
            if self._policy.per_batch:
                self._durable_moved()
            commit.set_result(None)

    def _fail(self, error: BaseException, commit: asyncio.Future[None]) -> None:
        self._failed = error
        logger.error("%s: fsync failed (%s); the partition takes no more writes until the "
                     "broker restarts", self.where,
                     error.strerror if isinstance(error, OSError) else type(error).__name__)
        for pending in (commit, self._round):
            if pending is not None and not pending.done():
                pending.set_exception(self._unavailable())
                pending.exception()  # retrieved: an append that did not wait is not warned of
        self._round = None

    async def _flush_every(self, seconds: float) -> None:
        while not self._closed:
            await asyncio.sleep(seconds)  # the interval policy's period, not a wait for a state
            if self._synced_end < self._log_end and self._failed is None:
                self._request_sync()

    # ---- reading ------------------------------------------------------------------

    def _durable_moved(self) -> None:
        """The durable end may have advanced: outside replicated mode readers see up to it;
        the listener hears of it."""
        end = self.durable_end
        if not self._replicated:
            self._advance(end)
        if end > self._durable_told:
            self._durable_told = end
            listener = self._durable_listener
            if listener is not None:
                try:
                    listener(end)
                except Exception:
                    logger.exception("%s: the durable-end listener failed", self.where)

    def _advance(self, end: int) -> None:
        if end > self._visible_end:
            self._visible_end = end
            self._wake()

    def _wake(self) -> None:
        if self._advanced is not None:
            self._advanced.set_result(None)
            self._advanced = None

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        """See :class:`~geoplex.servers.broker.ports.PartitionLog`. The batches can span
        segments; at the high watermark (or beyond it, below the log end) there are none."""
        if self._closed:
            raise LogClosed()
        start, visible = self.log_start_offset, self._visible_end
        if offset < start or offset > self._log_end:
            raise OffsetOutOfRange(offset, start, visible)
        batches: list[bytes] = []
        next_offset = self._collect(offset, max_bytes, visible, batches, whole=False)
        return ReadResult(batches, start, visible, next_offset)

    def read_frames(self, offset: int, max_bytes: int) -> FramesRead:
        """What a follower fetches: the stored frames (header and payload, as on disk) from
        the batch holding ``offset`` up to the log end (not the high watermark), about
        ``max_bytes`` (always a whole first frame when there is one), CRC-checked as
        :meth:`read` does. Raises domain.OffsetOutOfRange, domain.CorruptBatch."""
        if self._closed:
            raise LogClosed()
        start, end = self.log_start_offset, self._log_end
        if offset < start or offset > end:
            raise OffsetOutOfRange(offset, start, end)
        frames: list[bytes] = []
        next_offset = self._collect(offset, max_bytes, end, frames, whole=True)
        return FramesRead(b"".join(frames), next_offset, len(frames))

    def _collect(self, offset: int, max_bytes: int, limit: int, out: list[bytes],
                 whole: bool) -> int:
        """Add to ``out`` the batches (``whole``: frames) from the one holding ``offset``
        on, those starting below ``limit``, about ``max_bytes``; they can span segments.
        Returns the offset after the last one (-1: none)."""
        next_offset = -1
        budget = max(max_bytes, 1)
        used = 0
        i = bisect_right(self._bases, offset) - 1
        while i < len(self._segments) and used < budget:
            segment = self._segments[i]
            if segment.base >= limit:
                break
            if segment.next_offset > offset:
                self._cache_put(segment)
                added, read_all, after = segment.read(max(offset, segment.base), budget - used,
                                                      limit, out, self.where, whole)
                used += added
                if after >= 0:
                    next_offset = after
                if not read_all:
                    break
            i += 1
        return next_offset

    async def wait_for(self, offset: int, timeout: float) -> bool:
        """True once the high watermark passes ``offset``, False after ``timeout`` seconds.
        Raises LogClosed when the log closes meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._visible_end <= offset:
            if self._closed:
                raise LogClosed()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if self._advanced is None:
                self._advanced = loop.create_future()
            await asyncio.wait((self._advanced,), timeout=remaining)
        return True

    def offset_for_time(self, timestamp_ms: int) -> int:
        """The first offset whose batch's max timestamp is >= ``timestamp_ms``, else the
        high watermark."""
        visible = self._visible_end
        for segment in self._segments:
            if segment.base >= visible:
                break
            if not segment.empty and segment.max_timestamp_ms >= timestamp_ms:
                self._cache_put(segment)
                return min(segment.offset_for_time(timestamp_ms), visible)
        return visible

    def _cache_put(self, segment: Segment) -> None:
        """Keep a closed segment's file and index open; release the least recently used."""
        if segment is self._segments[-1]:
            return
        self._cache[segment.base] = segment
        self._cache.move_to_end(segment.base)
        for base in list(self._cache)[:max(len(self._cache) - CACHED_SEGMENTS, 0)]:
            victim = self._cache[base]
            if victim.synced and not victim.syncing:  # (its index files are written)
                del self._cache[base]
                victim.release()

    # ---- retention ----------------------------------------------------------------

    async def enforce_retention(self, now_ms: int) -> int:
        """Delete whole segments past the retention time (by their last batch's append
        time, the broker's clock) or, oldest first, while the partition is over the
        retention bytes; never the active one: an active segment entirely past the
        retention time is rolled first. Returns how many segments went."""
        async with self._retention_lock:
            if self._closed:
                return 0
            config = self._config
            horizon = now_ms - config.retention_ms
            active = self._segments[-1]
            if (config.retention_ms > 0 and not active.empty
                    and active.last_append_ms < horizon and self._failed is None):
                try:
                    self._roll()
                except StorageFull:
                    logger.warning("%s: the disk is full; the expired active segment could "
                                   "not be rolled for deletion", self.where)
                else:
                    await asyncio.shield(self._request_sync())
            if (self._unsynced_closed or self._segments[0].syncing) and self._failed is None:
                await asyncio.shield(self._request_sync())  # a segment goes once synced
            removed: list[Segment] = []
            while len(self._segments) > 1 and not self._segments[0].syncing and (
                    (config.retention_ms > 0 and self._segments[0].last_append_ms < horizon)
                    or (config.retention_bytes > 0 and self._size > config.retention_bytes)):
                if not self._segments[0].synced:
                    break
                removed.append(self._drop_oldest())
            if not removed:
                return 0
            forgotten = self._producers.forget_below(self.log_start_offset)
            if self._epochs.truncate_from_start(self.log_start_offset):
                self._jobs.append(self._epochs.saver())  # with the next group commit
            logger.info("%s: retention deleted %d segments (%d producers forgotten); the log "
                        "starts at offset %d", self.where, len(removed), forgotten,
                        self.log_start_offset)
            await asyncio.to_thread(_remove_segments, removed)
            return len(removed)

    def _drop_oldest(self) -> Segment:
        segment = self._segments.pop(0)
        self._bases.pop(0)
        self._size -= segment.size
        self._cache.pop(segment.base, None)
        segment.close()
        segment.index = None
        return segment

    # ---- closing ------------------------------------------------------------------

    async def close(self) -> None:
        """Sync everything and leave the files so the next open needs no scan."""
        await self._shut(clean=True)

    async def discard(self) -> None:
        """Close without writing the shutdown state (the files are about to be removed)."""
        await self._shut(clean=False)

    async def _shut(self, clean: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self._wake()
        if self._syncer is not None and not self._syncer.done():
            await self._syncer
        active = self._segments[-1]
        if clean and self._failed is None:
            active.seal()
            offsets, times = active.index_bytes()
            snapshot = self._producers.snapshot(self._log_end)
            body = _CLEAN.pack(_CLEAN_MAGIC, active.base, self._log_end, active.size)
            marker = body + _CRC.pack(int(google_crc32c.value(body)))
            try:
                await asyncio.to_thread(self._write_shutdown_state, active, offsets, times,
                                        snapshot, self._epochs.saver(), marker)
            except OSError as error:
                logger.warning("%s: could not write the shutdown state (%s); the next start "
                               "checks the last segment", self.where, error.strerror)
        for segment in self._segments:
            segment.close()
        self._cache.clear()

    def _write_shutdown_state(self, active: Segment, offsets: bytes, times: bytes,
                              snapshot: bytes, save_epochs: Callable[[], None],
                              marker: bytes) -> None:
        os.fdatasync(active.open_fd())
        write_files(active.index_path, active.time_path, offsets, times)
        write_durably(self.directory / (segment_name(self._log_end) + SNAPSHOT_SUFFIX), snapshot)
        save_epochs()
        _prune_snapshots(self.directory)
        write_durably(self.directory / CLEAN_MARKER, marker)
        fsync_dir(self.directory)


def _remove_segments(segments: list[Segment]) -> None:
    for segment in segments:
        segment.remove_files()


def _remove_cut_files(removed: list[Segment], cut: Segment) -> None:
    """What a truncation leaves to its group commit: the removed segments' files, and the
    indexes of the segment it cut (the active one now: its indexes live in memory)."""
    for segment in removed:
        segment.remove_files()
    cut.remove_index_files()
