"""The local time-series store: a head block with its WAL, and immutable blocks.

``<path>/`` holds ``lock`` (an exclusive ``flock``: one process per store), ``wal/`` and
one directory per block. Opening removes unfinished block writes, deletes blocks a
compacted block replaced, opens the blocks, then replays the WAL into the head (samples
before the newest block's end are skipped: they are in it).

An append takes the store's lock to validate the batch against the head (nothing is
stored when a sample is rejected), write its WAL record and apply it to the head, then
waits outside the lock for the fsync the policy promises. Readers see a sample once it is
in the head, which may be a moment before its append returns.

Once the head's max time is an out-of-order window past the end of the oldest block
range it holds (ranges of ``block_range_ms``, aligned to multiples of it), that range is
written as a block, dropped from the head and the WAL is checkpointed: every sample the
window could still accept lies after the range, so a cut range never changes again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from geoplex.servers._runtime.errors import FailedPrecondition, InvalidArgument

from .api import AppendResult, BlockStats, Series, StoreStats
from .blocks import Block, BlockMeta, compact, merge_samples, open_blocks, write_block
from .chunks import ChunkEncoding, Float64s, Int64s
from .head import INT64_MAX, INT64_MIN, Head, SampleInput
from .labels import Labels, Matcher
from .wal import WAL, FsyncPolicy, decode_batch, replay

logger = logging.getLogger(__name__)

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TSDBOptions:
    block_range_ms: int = 2 * HOUR_MS
    ooo_window_ms: int = 10 * 60_000
    fsync: FsyncPolicy = field(default_factory=FsyncPolicy)
    wal_segment_bytes: int = 32 << 20
    encoding: ChunkEncoding = ChunkEncoding.COLUMNAR
    chunk_samples: int = 480  # 2 h of 15 s scrapes
    page_bytes: int = 256 << 10
    max_series: int | None = None  # the head's active series limit (None: none)
    # compaction merges adjacent blocks within aligned windows of this many block ranges
    compaction_ranges: int = 3

    def __post_init__(self) -> None:
        if self.block_range_ms <= 0:
            raise InvalidArgument("block_range_ms", "must be > 0")
        if self.ooo_window_ms < 0:
            raise InvalidArgument("ooo_window_ms", "must be >= 0")
        if self.chunk_samples <= 0 or self.page_bytes <= 0:
            raise InvalidArgument("chunk_samples", "chunk_samples and page_bytes must be > 0")


def _floor(t: int, step: int) -> int:
    return (t // step) * step


class TSDB:
    """The store; see :class:`~.api.Storage` for the reading and writing contract."""

    def __init__(self, path: Path, options: TSDBOptions, lock_fd: int) -> None:
        self.path = path
        self.options = options
        self._lock_fd = lock_fd
        self._lock = threading.RLock()
        self.head = Head(options.ooo_window_ms, options.max_series)
        self.blocks: list[Block] = []
        self.wal: WAL | None = None
        self.replayed_samples = 0

    @classmethod
    def open(cls, path: Path | str, options: TSDBOptions | None = None) -> TSDB:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            os.close(lock_fd)
            raise FailedPrecondition(f"the store at {path} is open in another process") from error
        db = cls(path, options or TSDBOptions(), lock_fd)
        try:
            db._recover()
        except BaseException:
            db.close()
            raise
        return db

    def _recover(self) -> None:
        self.blocks = open_blocks(self.path)
        if self.blocks:
            self.head.min_valid_t = max(b.meta.max_time for b in self.blocks)
        wal_dir = self.path / "wal"
        for payload in replay(wal_dir):
            self.replayed_samples += self.head.replay(decode_batch(payload))
        self.wal = WAL(wal_dir, self.options.fsync, self.options.wal_segment_bytes)
        if self.replayed_samples:
            logger.info("%s: replayed %d samples of %d series from the WAL", self.path,
                        self.replayed_samples, len(self.head.series))
        with self._lock:
            self._cut_ready()

    def __enter__(self) -> TSDB:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self.wal is not None:
                self.wal.close()
                self.wal = None
            for block in self.blocks:
                block.close()
            self.blocks = []
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1

    def _wal(self) -> WAL:
        if self.wal is None:
            raise FailedPrecondition("the store is closed")
        return self.wal

    # ---- writing --------------------------------------------------------------------

    def append(self, samples: Sequence[SampleInput]) -> AppendResult:
        with self._lock:
            wal = self._wal()
            prepared = self.head.prepare(samples)
            if not prepared.ids and not prepared.new_series:
                return AppendResult(0, tuple(prepared.duplicates))
            token = wal.append(prepared.wal_record())
            self.head.commit(prepared)
            self._cut_ready()
        wal.commit(token)
        return AppendResult(len(prepared.ids), tuple(prepared.duplicates))

    def _cut_ready(self) -> None:
        """Write every head range the out-of-order window has passed as a block."""
        step = self.options.block_range_ms
        while True:
            head_min = self.head.min_t
            if head_min == INT64_MAX:
                return
            start = _floor(head_min, step)
            end = start + step
            if self.head.max_t - self.options.ooo_window_ms < end:
                return
            self._cut(start, end)

    def _cut(self, start: int, end: int) -> None:
        meta = write_block(self.path, self.head.range_data(start, end), start, end,
                           encoding=self.options.encoding,
                           chunk_samples=self.options.chunk_samples,
                           page_bytes=self.options.page_bytes)
        if meta is not None:
            self.blocks.append(Block(self.path / meta.id))
            self.blocks.sort(key=lambda b: (b.meta.min_time, b.meta.max_time))
            logger.info("%s: head range [%d, %d) written as block %s (%d series, %d samples)",
                        self.path, start, end, meta.id, meta.num_series, meta.num_samples)
        self.head.truncate(end)
        self._wal().checkpoint(self.head.checkpoint_records())

    def compact(self) -> list[BlockMeta]:
        """Merge the adjacent blocks that share an aligned window of ``compaction_ranges``
        block ranges into one block each; returns the new blocks."""
        window = self.options.block_range_ms * self.options.compaction_ranges
        made = []
        with self._lock:
            groups: dict[int, list[Block]] = {}
            for block in self.blocks:
                first = _floor(block.meta.min_time, window)
                if _floor(block.meta.max_time - 1, window) == first:
                    groups.setdefault(first, []).append(block)
            for group in groups.values():
                if len(group) < 2:
                    continue
                meta = compact(self.path, group, encoding=self.options.encoding,
                               chunk_samples=self.options.chunk_samples)
                if meta is None:
                    continue
                for block in group:
                    self.blocks.remove(block)
                    block.close()
                    shutil.rmtree(block.path)
                self.blocks.append(Block(self.path / meta.id))
                made.append(meta)
            self.blocks.sort(key=lambda b: (b.meta.min_time, b.meta.max_time))
        return made

    # ---- reading --------------------------------------------------------------------

    def select(self, matchers: Sequence[Matcher], mint_ms: int,
               maxt_ms: int) -> Iterator[Series]:
        """See :meth:`~.api.Storage.select`. The result is gathered under the lock and
        then iterated (a streaming reader with block reference counts is for later)."""
        found: dict[Labels, list[tuple[Int64s, Float64s]]] = {}
        with self._lock:
            for block in self.blocks:
                if block.meta.overlaps(mint_ms, maxt_ms):
                    for labels, ts, vs in block.select(matchers, mint_ms, maxt_ms):
                        found.setdefault(labels, []).append((ts, vs))
            for labels, ts, vs in self.head.select(matchers, mint_ms, maxt_ms):
                found.setdefault(labels, []).append((ts, vs))
        out = []
        for labels in sorted(found):
            ts, vs = merge_samples(found[labels])
            out.append(Series(labels, ts, vs))
        return iter(out)

    def series(self, matchers: Sequence[Matcher], mint_ms: int = INT64_MIN,
               maxt_ms: int = INT64_MAX) -> list[Labels]:
        """The label sets of the selected series that have a sample in the range (a block's
        series by its chunks' time spans, without decoding them)."""
        found: set[Labels] = set()
        with self._lock:
            for block in self.blocks:
                if block.meta.overlaps(mint_ms, maxt_ms):
                    for ref in block.select_refs(matchers).tolist():
                        if block.has_data(ref, mint_ms, maxt_ms):
                            found.add(block.labels(ref))
            for series in self.head.select_ids(matchers):
                if self.head.has_data(series, mint_ms, maxt_ms):
                    found.add(series.labels)
        return sorted(found)

    def label_names(self, matchers: Sequence[Matcher] = (), mint_ms: int | None = None,
                    maxt_ms: int | None = None) -> list[str]:
        if not matchers:
            mint, maxt = _range(mint_ms, maxt_ms)
            names: set[str] = set()
            with self._lock:
                for block in self.blocks:
                    if block.meta.overlaps(mint, maxt):
                        names.update(block.label_names())
                names.update(self.head.postings.label_names())
            return sorted(names)
        return sorted({name for labels in self.series(matchers, *_range(mint_ms, maxt_ms))
                       for name in labels})

    def label_values(self, name: str, matchers: Sequence[Matcher] = (),
                     mint_ms: int | None = None, maxt_ms: int | None = None) -> list[str]:
        if not matchers:
            mint, maxt = _range(mint_ms, maxt_ms)
            values: set[str] = set()
            with self._lock:
                for block in self.blocks:
                    if block.meta.overlaps(mint, maxt):
                        values.update(block.values_of(name))
                values.update(self.head.postings.values_of(name))
            return sorted(values)
        return sorted({labels[name] for labels in self.series(matchers, *_range(mint_ms, maxt_ms))
                       if name in labels})

    def stats(self) -> StoreStats:
        with self._lock:
            head_min = self.head.min_t
            blocks = tuple(BlockStats(b.id, b.meta.min_time, b.meta.max_time,
                                      b.meta.num_series, b.meta.num_samples, b.size_bytes(),
                                      b.meta.level, b.meta.encoding) for b in self.blocks)
            return StoreStats(
                head_series=len(self.head.series), head_samples=self.head.samples,
                head_min_time=None if head_min == INT64_MAX else head_min,
                head_max_time=None if self.head.max_t == INT64_MIN else self.head.max_t,
                wal_bytes=self.wal.size_bytes() if self.wal is not None else 0, blocks=blocks)


def _range(mint: int | None, maxt: int | None) -> tuple[int, int]:
    return (INT64_MIN if mint is None else mint, INT64_MAX if maxt is None else maxt)
