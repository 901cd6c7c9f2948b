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

import numpy as np

from geoplex.servers._runtime.errors import FailedPrecondition, InvalidArgument

from .api import AppendResult, BlockStats, RollupSeries, Series, StoreStats
from .blocks import Block, BlockMeta, compact, merge_samples, open_blocks, write_block
from .chunks import ChunkEncoding, Float64s, Int64s
from .head import INT64_MAX, INT64_MIN, Head, Prepared, SampleInput, SeriesInput
from .labels import Labels, Matcher
from .rollup import COMPONENTS, Rollup, rollup
from .tiers import (
    FINER,
    RESOLUTION_MS,
    TIER_DIRS,
    block_rollups,
    coarsened,
    merge_rollups,
    raw_rollups,
    sorted_components,
    uncovered,
)
from .wal import WAL, FsyncPolicy, decode_batch, replay

logger = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
TIER_NAMES = ("raw", "1m", "1h")


@dataclass(frozen=True, eq=False)
class RetentionRule:
    """Series every matcher selects are kept, per tier, for ``keep_ms`` (a tier missing
    from it keeps the store's retention) — a per-metric override."""

    matchers: tuple[Matcher, ...]
    keep_ms: dict[str, int]
    text: str = ""   # as configured, for logs


def default_retention() -> dict[str, int]:
    return {"raw": 7 * DAY_MS, "1m": 30 * DAY_MS, "1h": 365 * DAY_MS}


@dataclass(frozen=True)
class MaintenanceReport:
    """What one :meth:`TSDB.maintain` pass did (block ids)."""

    compacted: tuple[str, ...] = ()
    downsampled: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    rewritten: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.compacted or self.downsampled or self.deleted or self.rewritten)


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
    # the downsampled tiers: 1-minute rollups of every cut block, 1-hour rollups of every
    # window of this many milliseconds (a multiple of an hour) once data passed its end
    downsample: bool = True
    rollup_window_ms: int = 6 * HOUR_MS
    retention_ms: dict[str, int] = field(default_factory=default_retention)
    retention_rules: tuple[RetentionRule, ...] = ()
    # cut head ranges into blocks in :meth:`TSDB.maintain` (a server's background job),
    # not in the append that passed them: a cut's compression never delays a write
    cut_in_background: bool = False

    def __post_init__(self) -> None:
        if self.block_range_ms <= 0:
            raise InvalidArgument("block_range_ms", "must be > 0")
        if self.downsample and self.block_range_ms % RESOLUTION_MS["1m"]:
            raise InvalidArgument("block_range_ms", "must be a whole number of minutes (the "
                                  "1-minute tier rolls up whole blocks)")
        if self.rollup_window_ms <= 0 or self.rollup_window_ms % HOUR_MS:
            raise InvalidArgument("rollup_window_ms", "must be a whole number of hours")
        for tier, keep in self.retention_ms.items():
            if tier not in TIER_NAMES or keep <= 0:
                raise InvalidArgument("retention_ms", f"tiers are {', '.join(TIER_NAMES)}, "
                                      "each kept > 0 ms")
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
        self.tiers: dict[str, list[Block]] = {tier: [] for tier in TIER_DIRS}
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
        self.blocks = [b for b in open_blocks(self.path) if b.meta.resolution == "raw"]
        for tier, directory in TIER_DIRS.items():
            (self.path / directory).mkdir(exist_ok=True)
            self.tiers[tier] = open_blocks(self.path / directory)
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
            for block in [*self.blocks, *(b for bs in self.tiers.values() for b in bs)]:
                block.close()
            self.blocks = []
            self.tiers = {tier: [] for tier in TIER_DIRS}
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
            token, result = self._store(wal, self.head.prepare(samples))
        if token is not None:
            wal.commit(token)   # the fsync the policy promises, outside the lock
        return result

    def append_series(self, batch: Sequence[SeriesInput]) -> AppendResult:
        """:meth:`append` for a columnar batch: each series once, its samples as arrays
        (what remote write and ``Write`` carry) — validated with numpy per series."""
        with self._lock:
            wal = self._wal()
            token, result = self._store(wal, self.head.prepare_series(batch))
        if token is not None:
            wal.commit(token)
        return result

    def _store(self, wal: WAL, prepared: Prepared) -> tuple[int | None, AppendResult]:
        """A validated batch into the WAL and the head (the caller holds the lock); the
        WAL token to wait on, None when nothing was written."""
        count = prepared.count
        if not count and not prepared.new_series:
            return None, AppendResult(0, tuple(prepared.duplicates))
        token = wal.append(prepared.wal_record())
        self.head.commit(prepared)
        self._cut_ready()
        return token, AppendResult(count, tuple(prepared.duplicates))

    def _cut_ready(self) -> None:
        """Write every head range the out-of-order window has passed as a block (the
        caller holds the lock; ``cut_in_background`` leaves this to :meth:`maintain`)."""
        if self.options.cut_in_background:
            return
        while (ready := self._next_cut()) is not None:
            self._cut(*ready)

    def _next_cut(self) -> tuple[int, int] | None:
        step = self.options.block_range_ms
        head_min = self.head.min_t
        if head_min == INT64_MAX:
            return None
        start = _floor(head_min, step)
        end = start + step
        if self.head.max_t - self.options.ooo_window_ms < end:
            return None
        return start, end

    def _cut(self, start: int, end: int) -> None:
        self._install_cut(start, end, self._write_cut(start, end, self.head.range_data(start,
                                                                                      end)))

    def _write_cut(self, start: int, end: int,
                   data: list[tuple[Labels, Int64s, Float64s]]) -> BlockMeta | None:
        return write_block(self.path, data, start, end, encoding=self.options.encoding,
                           chunk_samples=self.options.chunk_samples,
                           page_bytes=self.options.page_bytes)

    def _install_cut(self, start: int, end: int, meta: BlockMeta | None) -> None:
        if meta is not None:
            self.blocks.append(Block(self.path / meta.id))
            self.blocks.sort(key=lambda b: (b.meta.min_time, b.meta.max_time))
            logger.info("%s: head range [%d, %d) written as block %s (%d series, %d samples)",
                        self.path, start, end, meta.id, meta.num_series, meta.num_samples)
        self.head.truncate(end)
        self._wal().checkpoint(self.head.checkpoint_records())

    def cut_ready(self) -> int:
        """Cut every ready head range, each block written outside the lock (appends go
        on meanwhile: none can land in a range the window has passed); returns how many
        ranges were cut."""
        cut = 0
        while True:
            with self._lock:
                ready = self._next_cut()
                if ready is None:
                    return cut
                data = self.head.range_data(*ready)   # copies: the head may move on
            meta = self._write_cut(*ready, data)
            with self._lock:
                self._install_cut(*ready, meta)
            cut += 1

    def compact(self) -> list[BlockMeta]:
        """Merge the adjacent raw blocks that share an aligned window of
        ``compaction_ranges`` block ranges into one block each; returns the new blocks."""
        window = self.options.block_range_ms * self.options.compaction_ranges
        return self._compact(self.blocks, self.path, window)

    def _compact(self, blocks: list[Block], parent: Path, window: int) -> list[BlockMeta]:
        """Merge ``blocks`` (a tier's list, updated in place) by aligned windows; the new
        block is written outside the store's lock and swapped in under it."""
        made = []
        with self._lock:
            groups: dict[int, list[Block]] = {}
            for block in blocks:
                first = _floor(block.meta.min_time, window)
                if _floor(block.meta.max_time - 1, window) == first:
                    groups.setdefault(first, []).append(block)
        for group in groups.values():
            if len(group) < 2:
                continue
            meta = compact(parent, group, encoding=self.options.encoding,
                           chunk_samples=self.options.chunk_samples)
            if meta is None:
                continue
            with self._lock:
                for block in group:
                    blocks.remove(block)
                    block.close()
                    shutil.rmtree(block.path)
                blocks.append(Block(parent / meta.id))
                blocks.sort(key=lambda b: (b.meta.min_time, b.meta.max_time))
            made.append(meta)
        return made

    # ---- the downsampled tiers and retention ----------------------------------------

    def maintain(self) -> MaintenanceReport:
        """One pass of the background job: cut ready head ranges, compact raw blocks, roll
        cut blocks up into the 1-minute tier and whole windows into the 1-hour tier,
        compact the tiers, then apply retention (the store's and the per-metric rules). Readers and writers go on
        meanwhile: blocks are written outside the store's lock and swapped in under it."""
        self.cut_ready()
        compacted = [m.id for m in self.compact()]
        downsampled: list[str] = []
        if self.options.downsample:
            downsampled += self._downsample_1m()
            downsampled += self._downsample_1h()
            window = self.options.rollup_window_ms
            for tier, span in (("1m", window), ("1h", window * 30)):
                compacted += [m.id for m in self._compact(
                    self.tiers[tier], self.path / TIER_DIRS[tier], span)]
        deleted, rewritten = self._apply_retention()
        report = MaintenanceReport(tuple(compacted), tuple(downsampled), tuple(deleted),
                                   tuple(rewritten))
        if report:
            logger.info("%s: maintenance: %d blocks compacted, %d rollup blocks written, "
                        "%d blocks deleted, %d rewritten by retention rules", self.path,
                        len(compacted), len(downsampled), len(deleted), len(rewritten))
        return report

    def _add_tier_block(self, tier: str, meta: BlockMeta) -> None:
        with self._lock:
            blocks = self.tiers[tier]
            blocks.append(Block(self.path / TIER_DIRS[tier] / meta.id))
            blocks.sort(key=lambda b: (b.meta.min_time, b.meta.max_time))

    def _downsample_1m(self) -> list[str]:
        """Every raw range no 1-minute block covers yet, rolled up."""
        made = []
        resolution = RESOLUTION_MS["1m"]
        with self._lock:
            raws = list(self.blocks)
        for block in raws:
            with self._lock:
                spans = [(b.meta.min_time, b.meta.max_time) for b in self.tiers["1m"]]
            for lo, hi in uncovered(block.meta.min_time, block.meta.max_time - 1, spans):
                previous = self._last_values("1m", lo)
                rollups = []
                for labels, ts, vs in block.all_series():
                    a, b = np.searchsorted(ts, lo), np.searchsorted(ts, hi, side="right")
                    if b > a:
                        rollups.append((labels, rollup(ts[a:b], vs[a:b], resolution,
                                                       previous.get(labels))))
                meta = write_block(self.path / TIER_DIRS["1m"],
                                   sorted_components(rollups, resolution), lo, hi + 1,
                                   encoding=self.options.encoding,
                                   chunk_samples=self.options.chunk_samples,
                                   page_bytes=self.options.page_bytes, resolution="1m")
                if meta is not None:
                    self._add_tier_block("1m", meta)
                    made.append(meta.id)
        return made

    def _last_values(self, tier: str, before: int) -> dict[Labels, float]:
        """Each series' last value in the tier block that ends at ``before`` (the value
        before the next range, for its first counter step)."""
        with self._lock:
            found = next((b for b in self.tiers[tier] if b.meta.max_time == before), None)
        if found is None:
            return {}
        resolution = RESOLUTION_MS[tier]
        return {labels: float(r.last[-1]) for labels, r in
                block_rollups(found, (), before - resolution, before - 1).items() if len(r)}

    def _downsample_1h(self) -> list[str]:
        """Every whole window that raw data has passed and no 1-hour block holds, rolled
        up from the 1-minute tier."""
        window = self.options.rollup_window_ms
        made: list[str] = []
        with self._lock:
            if not self.blocks or not self.tiers["1m"]:
                return made
            raw_end = max(b.meta.max_time for b in self.blocks)
            done = [(b.meta.min_time, b.meta.max_time) for b in self.tiers["1h"]]
            first = _floor(min(b.meta.min_time for b in self.tiers["1m"]), window)
        for start in range(first, raw_end, window):
            end = start + window
            if end > raw_end or not uncovered(start, end - 1, done):
                continue
            with self._lock:
                sources = [b for b in self.tiers["1m"] if b.meta.overlaps(start, end - 1)]
            found = merge_rollups(block_rollups(b, (), start, end - 1) for b in sources)
            hourly = coarsened(found, RESOLUTION_MS["1h"])
            meta = write_block(self.path / TIER_DIRS["1h"],
                               sorted_components(sorted(hourly.items(), key=lambda i: i[0]),
                                                 RESOLUTION_MS["1h"]), start, end,
                               encoding=self.options.encoding,
                               chunk_samples=self.options.chunk_samples,
                               page_bytes=self.options.page_bytes, resolution="1h")
            if meta is not None:
                self._add_tier_block("1h", meta)
                made.append(meta.id)
        return made

    def newest_time(self) -> int | None:
        """The newest sample time the store holds: what retention counts back from (as
        Prometheus's, not the wall clock, so a store restored from a backup keeps its
        data)."""
        with self._lock:
            times = [b.meta.max_time - 1 for b in self.blocks]
            if self.head.max_t != INT64_MIN:
                times.append(self.head.max_t)
            return max(times) if times else None

    def _apply_retention(self) -> tuple[list[str], list[str]]:
        newest = self.newest_time()
        if newest is None:
            return [], []
        keep = self.options.retention_ms
        deleted: list[str] = []
        rewritten: list[str] = []
        tiers: dict[str, tuple[list[Block], Path]] = {"raw": (self.blocks, self.path)}
        for tier, directory in TIER_DIRS.items():
            tiers[tier] = (self.tiers[tier], self.path / directory)
        coarser = {"raw": "1m", "1m": "1h", "1h": None}
        for tier, (blocks, _) in tiers.items():
            cutoff = newest - keep[tier]
            with self._lock:
                old = [b for b in blocks if b.meta.max_time <= cutoff]
                next_tier = coarser[tier] if self.options.downsample else None
                spans = ([(b.meta.min_time, b.meta.max_time) for b in self.tiers[next_tier]]
                         if next_tier else [])
                for block in old:
                    # never drop what the next tier does not hold yet (a job behind)
                    if next_tier and uncovered(block.meta.min_time, block.meta.max_time - 1,
                                               spans):
                        continue
                    blocks.remove(block)
                    block.close()
                    shutil.rmtree(block.path)
                    deleted.append(block.id)
        for rule in self.options.retention_rules:
            for tier, ms in rule.keep_ms.items():
                blocks, parent = tiers[tier]
                with self._lock:
                    old = [b for b in blocks if b.meta.max_time <= newest - ms
                           and len(b.select_refs(rule.matchers))]
                for block in old:
                    rewritten.append(self._rewrite_without(block, blocks, parent, rule))
        return deleted, rewritten

    def _rewrite_without(self, block: Block, blocks: list[Block], parent: Path,
                         rule: RetentionRule) -> str:
        """``block`` written again without the series ``rule`` selects (a higher level
        with the same sources, so a crash between the two leaves the old one to be
        deleted at the next open)."""
        drop = set(block.select_refs(rule.matchers).tolist())
        kept = ((block.labels(ref), *block.samples(ref, block.meta.min_time,
                                                   block.meta.max_time - 1))
                for ref in range(block.meta.num_series) if ref not in drop)
        meta = write_block(parent, kept, block.meta.min_time, block.meta.max_time,
                           encoding=self.options.encoding,
                           chunk_samples=self.options.chunk_samples,
                           page_bytes=self.options.page_bytes, level=block.meta.level + 1,
                           sources=block.meta.sources, resolution=block.meta.resolution)
        logger.info("%s: retention rule %s: block %s rewritten without %d series", self.path,
                    rule.text, block.id, len(drop))
        with self._lock:
            blocks.remove(block)
            block.close()
            shutil.rmtree(block.path)
            if meta is not None:
                blocks.append(Block(parent / meta.id))
                blocks.sort(key=lambda b: (b.meta.min_time, b.meta.max_time))
        return block.id

    def tier_min_time(self, tier: str) -> int | None:
        """The oldest time a tier holds data for (raw: blocks and head)."""
        with self._lock:
            if tier == "raw":
                times = [b.meta.min_time for b in self.blocks]
                if self.head.min_t != INT64_MAX:
                    times.append(self.head.min_t)
            else:
                times = [b.meta.min_time for b in self.tiers[tier]]
            return min(times) if times else None

    def select_rollup(self, resolution: str, matchers: Sequence[Matcher], mint_ms: int,
                      maxt_ms: int, components: Sequence[str] = COMPONENTS
                      ) -> Iterator[RollupSeries]:
        """The selected series rolled up at ``resolution`` ("1m", "1h"), buckets whose
        point time (last millisecond) is in ``[mint_ms, maxt_ms]``: the tier's blocks where
        they cover the range, the finer data rolled up on the fly where they do not."""
        found = self._rollups(resolution, matchers, mint_ms, maxt_ms, tuple(components))
        step = RESOLUTION_MS[resolution]
        return iter([RollupSeries(labels, found[labels], step) for labels in sorted(found)
                     if len(found[labels])])

    def _rollups(self, resolution: str, matchers: Sequence[Matcher], mint: int,
                 maxt: int, components: tuple[str, ...] = COMPONENTS) -> dict[Labels, Rollup]:
        step = RESOLUTION_MS[resolution]
        lo = _floor(mint, step)
        with self._lock:
            blocks = [b for b in self.tiers[resolution] if b.meta.overlaps(lo, maxt)]
            parts = [block_rollups(b, matchers, lo, maxt + step, components) for b in blocks]
        spans = [(b.meta.min_time, b.meta.max_time) for b in blocks]
        for gap_lo, gap_hi in uncovered(lo, maxt + step - 1, spans):
            gap_lo = _floor(gap_lo, step)
            finer = FINER[resolution]
            if finer == "raw":
                # from a little before: the first bucket's first counter step
                raw = self.select(matchers, gap_lo - self.options.ooo_window_ms - step,
                                  gap_hi)
                parts.append(raw_rollups(raw, step, gap_lo))
            else:
                parts.append(coarsened(self._rollups(finer, matchers, gap_lo, gap_hi,
                                                     components), step))
        merged = merge_rollups(parts, components)
        out = {}
        for labels, r in merged.items():
            point = r.start + step - 1
            keep = (point >= mint) & (point <= maxt + step - 1)
            if keep.all():
                out[labels] = r
                continue
            out[labels] = Rollup(r.start[keep], r.min[keep], r.max[keep], r.sum[keep],
                                 r.count[keep], r.last[keep], r.increase[keep])
        return out

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
            blocks = tuple(_block_stats(b) for b in self.blocks)
            tier_blocks = tuple(_block_stats(b) for tier in TIER_DIRS for b in self.tiers[tier])
            return StoreStats(
                head_series=len(self.head.series), head_samples=self.head.samples,
                head_min_time=None if head_min == INT64_MAX else head_min,
                head_max_time=None if self.head.max_t == INT64_MIN else self.head.max_t,
                wal_bytes=self.wal.size_bytes() if self.wal is not None else 0, blocks=blocks,
                tier_blocks=tier_blocks)


def _block_stats(b: Block) -> BlockStats:
    return BlockStats(b.id, b.meta.min_time, b.meta.max_time, b.meta.num_series,
                      b.meta.num_samples, b.size_bytes(), b.meta.level, b.meta.encoding,
                      b.meta.resolution)


def _range(mint: int | None, maxt: int | None) -> tuple[int, int]:
    return (INT64_MIN if mint is None else mint, INT64_MAX if maxt is None else maxt)
