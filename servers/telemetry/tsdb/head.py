"""The head block: the most recent samples, in memory, taking appends.

Each series keeps its samples in two growing numpy arrays (timestamps ascending, values
as float64 bits); the head's index maps ``label=value`` to series ids. An append batch is
validated whole first (:meth:`Head.prepare`, which changes nothing), then written to the
WAL by the DB, then applied (:meth:`Head.commit`): so a rejected batch leaves no trace.

Rules, as Prometheus's (with out-of-order ingestion on):

- a sample may be up to ``ooo_window_ms`` behind the head's max time, where the max time
  counts the batch's own samples too (so the order of samples within a batch does not
  matter); further behind is TOO_OLD;
- nothing may fall before ``min_valid_t``, the end of the last range cut into a block
  (OUT_OF_BOUNDS);
- a sample at a timestamp the series already has is dropped silently when its value has
  the same bits, and rejected (DUPLICATE_TIMESTAMP) when it differs.

Samples are kept uncompressed here (16 bytes each); chunks are compressed when a range
becomes a block.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from geoplex.servers._runtime.errors import InvalidArgument

from .chunks import Float64s, Int64s
from .errors import RejectReason, SampleRejected
from .index import MemPostings, select_postings
from .labels import Labels, Matcher, labels_of
from .wal import BatchRecord, encode_batch

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
_BITS = struct.Struct("<d")
_AS_U64 = struct.Struct("<Q")

LabelsInput = Labels | Mapping[str, str] | Sequence[tuple[str, str]]
SampleInput = tuple[LabelsInput, int, float]
# one series' samples as arrays: the columnar batch remote write and Write arrive as
SeriesInput = tuple[LabelsInput, Int64s, Float64s]


LABELS_CACHE = 1 << 20   # label sets remembered as validated (cleared when full)


def float_bits(value: float) -> int:
    return int(_AS_U64.unpack(_BITS.pack(value))[0])


class MemSeries:
    __slots__ = ("id", "labels", "ts", "vs", "n")

    def __init__(self, series_id: int, labels: Labels, capacity: int = 32) -> None:
        self.id = series_id
        self.labels = labels
        self.ts: Int64s = np.empty(capacity, np.int64)
        self.vs: Float64s = np.empty(capacity, np.float64)
        self.n = 0

    @property
    def last_t(self) -> int:
        return int(self.ts[self.n - 1]) if self.n else INT64_MIN

    @property
    def first_t(self) -> int:
        return int(self.ts[0]) if self.n else INT64_MAX

    def bits_at(self, t: int) -> int | None:
        """The value's bits at timestamp ``t``, None when there is no sample there."""
        if not self.n or t > self.last_t:
            return None
        i = int(np.searchsorted(self.ts[:self.n], t))
        if i < self.n and int(self.ts[i]) == t:
            return int(self.vs[i:i + 1].view(np.uint64)[0])
        return None

    def _grow(self) -> None:
        capacity = max(2 * len(self.ts), 32)
        ts = np.empty(capacity, np.int64)
        vs = np.empty(capacity, np.float64)
        ts[:self.n] = self.ts[:self.n]
        vs[:self.n] = self.vs[:self.n]
        self.ts, self.vs = ts, vs

    def extend(self, ts: Int64s, vs: Float64s) -> None:
        """Store samples all after the last one (validated, ascending)."""
        need = self.n + len(ts)
        if need > len(self.ts):
            capacity = max(2 * len(self.ts), need, 32)
            grown_ts = np.empty(capacity, np.int64)
            grown_vs = np.empty(capacity, np.float64)
            grown_ts[:self.n] = self.ts[:self.n]
            grown_vs[:self.n] = self.vs[:self.n]
            self.ts, self.vs = grown_ts, grown_vs
        self.ts[self.n:need] = ts
        self.vs[self.n:need] = vs
        self.n = need

    def add(self, t: int, bits: int) -> None:
        """Store a sample (validated: no sample at ``t`` yet)."""
        if self.n == len(self.ts):
            self._grow()
        n = self.n
        if t > self.last_t:
            i = n
        else:  # out of order: shift the later ones up
            i = int(np.searchsorted(self.ts[:n], t))
            self.ts[i + 1:n + 1] = self.ts[i:n].copy()
            self.vs[i + 1:n + 1] = self.vs[i:n].copy()
        self.ts[i] = t
        self.vs[i:i + 1].view(np.uint64)[0] = bits
        self.n = n + 1

    def span(self, mint: int, maxt: int) -> tuple[int, int]:
        """The positions of the samples in ``[mint, maxt]``."""
        ts = self.ts[:self.n]
        return int(np.searchsorted(ts, mint)), int(np.searchsorted(ts, maxt, side="right"))

    def copy(self, mint: int, maxt: int) -> tuple[Int64s, Float64s]:
        lo, hi = self.span(mint, maxt)
        return self.ts[lo:hi].copy(), self.vs[lo:hi].copy()

    def drop_before(self, t: int) -> None:
        ts = self.ts[:self.n]
        cut = int(np.searchsorted(ts, t))
        if cut:
            keep = self.n - cut
            if keep < len(self.ts) // 4:  # give back what a burst grew (a backfill)
                capacity = max(32, 2 * keep)
                self.ts, self.vs = (self.ts[cut:self.n].copy(), self.vs[cut:self.n].copy())
                self.ts.resize(capacity, refcheck=False)
                self.vs.resize(capacity, refcheck=False)
            else:
                self.ts[:keep] = self.ts[cut:self.n].copy()
                self.vs[:keep] = self.vs[cut:self.n].copy()
            self.n = keep


@dataclass
class Prepared:
    """A validated batch, not yet applied: what goes to the WAL and then to the head."""

    new_series: list[tuple[int, Labels]]
    ids: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    bits: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)  # batch positions dropped
    max_t: int = INT64_MIN
    # whole runs of one series, each after that series' last sample: (id, ts, values)
    runs: list[tuple[int, Int64s, Float64s]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.ids) + sum(len(ts) for _, ts, _ in self.runs)

    def wal_record(self) -> bytes:
        ids = [np.array(self.ids, np.int64)] + [np.full(len(ts), i, np.int64)
                                                for i, ts, _ in self.runs]
        ts = [np.array(self.timestamps, np.int64)] + [t for _, t, _ in self.runs]
        vs = [np.array(self.bits, np.uint64).view(np.float64)] + [v for _, _, v in self.runs]
        return encode_batch(self.new_series, np.concatenate(ids), np.concatenate(ts),
                            np.concatenate(vs))


class Head:
    def __init__(self, ooo_window_ms: int, max_series: int | None = None) -> None:
        if ooo_window_ms < 0:
            raise InvalidArgument("ooo_window_ms", "must be >= 0")
        self.ooo_window_ms = ooo_window_ms
        self.max_series = max_series
        self.series: dict[Labels, MemSeries] = {}
        self.by_id: dict[int, MemSeries] = {}
        self.postings = MemPostings()
        self.next_id = 1
        self.max_t = INT64_MIN
        self._min_t: int | None = INT64_MAX   # None: to be recomputed
        self.min_valid_t = INT64_MIN
        self.samples = 0
        # label sets as sent -> validated Labels: a sender repeats the same series in
        # every request, so each is validated once
        self._labels_cache: dict[object, Labels] = {}

    @property
    def min_t(self) -> int:
        """The earliest sample's timestamp (INT64_MAX when the head is empty); kept as
        samples arrive, recomputed over the series only after a truncation (every query
        choosing its tier reads it)."""
        if self._min_t is None:
            self._min_t = min((s.first_t for s in self.by_id.values() if s.n),
                              default=INT64_MAX)
        return self._min_t

    # ---- appending ------------------------------------------------------------------

    def prepare(self, batch: Sequence[SampleInput]) -> Prepared:
        """Validate ``batch`` whole; raises SampleRejected naming the first bad sample."""
        parsed: list[tuple[Labels, int, int]] = []
        batch_max = INT64_MIN
        for index, sample in enumerate(batch):
            try:
                raw_labels, raw_t, raw_value = sample
                raw_v: object = raw_value
                labels = labels_of(raw_labels)
            except InvalidArgument as error:
                raise SampleRejected(RejectReason.INVALID_LABELS, index,
                                     error.message) from error
            except (TypeError, ValueError) as error:
                raise SampleRejected(RejectReason.INVALID_SAMPLE, index,
                                     "a sample is (labels, timestamp_ms, value)") from error
            if isinstance(raw_t, bool) or not isinstance(raw_t, (int, np.integer)):
                raise SampleRejected(RejectReason.INVALID_SAMPLE, index,
                                     f"timestamp {raw_t!r} is not an integer (ms)")
            t = int(raw_t)
            if not INT64_MIN <= t <= INT64_MAX:
                raise SampleRejected(RejectReason.INVALID_SAMPLE, index,
                                     f"timestamp {t} is outside int64")
            if isinstance(raw_v, bool) or not isinstance(raw_v, (float, int, np.floating,
                                                                 np.integer)):
                raise SampleRejected(RejectReason.INVALID_SAMPLE, index,
                                     f"value {raw_v!r} is not a number")
            bits = (int(np.float64(raw_v).view(np.uint64)) if isinstance(raw_v, np.floating)
                    else float_bits(float(raw_v)))
            parsed.append((labels, t, bits))
            batch_max = max(batch_max, t)
        reference = max(self.max_t, batch_max)
        window_floor = reference - self.ooo_window_ms if reference > INT64_MIN else INT64_MIN
        prepared = Prepared(new_series=[], max_t=batch_max)
        new: dict[Labels, int] = {}
        pending: dict[tuple[int, int], int] = {}  # (series id, t) -> bits, within the batch
        for index, (labels, t, bits) in enumerate(parsed):
            if t < self.min_valid_t:
                raise SampleRejected(
                    RejectReason.OUT_OF_BOUNDS, index,
                    f"timestamp {t} is before the head's minimum valid time "
                    f"{self.min_valid_t} (that range is already in a block)")
            if t < window_floor:
                raise SampleRejected(
                    RejectReason.TOO_OLD, index,
                    f"timestamp {t} is too old: more than the out-of-order window "
                    f"({self.ooo_window_ms} ms) behind the head's max time {reference} "
                    f"(the limit is {window_floor})")
            series, series_id = self._series_for(labels, new, prepared, index)
            existing = series.bits_at(t) if series is not None else None
            if existing is None:
                existing = pending.get((series_id, t))
            if existing is not None:
                if existing == bits:
                    prepared.duplicates.append(index)
                    continue
                raise SampleRejected(
                    RejectReason.DUPLICATE_TIMESTAMP, index,
                    f"duplicate sample for timestamp {t} of {labels!r} with a different value")
            pending[(series_id, t)] = bits
            prepared.ids.append(series_id)
            prepared.timestamps.append(t)
            prepared.bits.append(bits)
        return prepared

    def _series_for(self, labels: Labels, new: dict[Labels, int], prepared: Prepared,
                    index: int) -> tuple[MemSeries | None, int]:
        """The head's series for ``labels`` and its id, or a new id (recorded in
        ``prepared``) within the active-series limit."""
        series = self.series.get(labels)
        if series is not None:
            return series, series.id
        if labels in new:
            return None, new[labels]
        if self.max_series is not None and len(self.series) + len(new) >= self.max_series:
            raise SampleRejected(
                RejectReason.SERIES_LIMIT, index,
                f"the head holds its limit of {self.max_series} active series; "
                f"{labels!r} would be a new one")
        series_id = self.next_id + len(new)
        new[labels] = series_id
        prepared.new_series.append((series_id, labels))
        return None, series_id

    def prepare_series(self, batch: Sequence[SeriesInput]) -> Prepared:
        """:meth:`prepare` for a columnar batch (each series with its samples as arrays):
        labels validated once per label set (remembered), the batch's bounds, order and
        window checked with numpy over all its samples at once, and a series whose
        samples all come after its last one — the usual case — taken whole; anything else
        (out of order, a series listed twice) goes through the per-sample checks. Sample
        positions in errors count through the batch as if flattened."""
        cache = self._labels_cache
        labels_list: list[Labels] = []
        ts_parts: list[Int64s] = []
        vs_parts: list[Float64s] = []
        offset = 0
        for raw_labels, raw_ts, raw_vs in batch:
            key = (raw_labels if isinstance(raw_labels, Labels)
                   else tuple(raw_labels.items()) if isinstance(raw_labels, Mapping)
                   else tuple(raw_labels))
            found = cache.get(key)
            if found is None:
                try:
                    found = labels_of(raw_labels)
                except InvalidArgument as error:
                    raise SampleRejected(RejectReason.INVALID_LABELS, offset,
                                         error.message) from error
                if len(cache) >= LABELS_CACHE:
                    cache.clear()
                cache[key] = found
            ts = np.asarray(raw_ts, np.int64)
            vs = np.asarray(raw_vs, np.float64)
            if ts.ndim != 1 or ts.shape != vs.shape:
                raise SampleRejected(RejectReason.INVALID_SAMPLE, offset, "a series' "
                                     "timestamps and values must be arrays of one length")
            if len(ts):
                labels_list.append(found)
                ts_parts.append(ts)
                vs_parts.append(vs)
            offset += len(ts)
        prepared = Prepared(new_series=[])
        if not labels_list:
            return prepared
        all_ts = np.concatenate(ts_parts)
        counts = np.array([len(t) for t in ts_parts], np.int64)
        starts = np.zeros(len(counts), np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        batch_max = int(all_ts.max())
        prepared.max_t = batch_max
        reference = max(self.max_t, batch_max)
        window_floor = reference - self.ooo_window_ms if reference > INT64_MIN else INT64_MIN
        low = int(all_ts.min())
        if low < self.min_valid_t or low < window_floor:
            at = int(np.argmax(all_ts < max(self.min_valid_t, window_floor)))
            t = int(all_ts[at])
            if t < self.min_valid_t:
                raise SampleRejected(
                    RejectReason.OUT_OF_BOUNDS, at,
                    f"timestamp {t} is before the head's minimum valid time "
                    f"{self.min_valid_t} (that range is already in a block)")
            raise SampleRejected(
                RejectReason.TOO_OLD, at,
                f"timestamp {t} is too old: more than the out-of-order window "
                f"({self.ooo_window_ms} ms) behind the head's max time {reference} "
                f"(the limit is {window_floor})")
        # per series: is it strictly ascending? (a step down inside it counts; a step
        # across two series' boundary does not)
        steps_down = np.zeros(len(all_ts), np.int64)
        steps_down[1:] = all_ts[1:] <= all_ts[:-1]
        steps_down[starts] = 0
        ascending = (np.add.reduceat(steps_down, starts) == 0).tolist()
        firsts = all_ts[starts].tolist()
        new: dict[Labels, int] = {}
        seen: set[Labels] = set()
        run_of: dict[Labels, int] = {}   # a series' whole run, by its index in runs
        pending: dict[tuple[int, int], int] = {}
        for i, labels in enumerate(labels_list):
            ts, vs = ts_parts[i], vs_parts[i]
            series, series_id = self._series_for(labels, new, prepared, int(starts[i]))
            last = series.last_t if series is not None else INT64_MIN
            if labels not in seen and ascending[i] and firsts[i] > last:
                run_of[labels] = len(prepared.runs)
                prepared.runs.append((series_id, ts, vs))
                seen.add(labels)
                continue
            seen.add(labels)
            if labels in run_of:  # listed twice: its run becomes per-sample entries
                index = run_of.pop(labels)
                _, run_ts, run_vs = prepared.runs[index]
                prepared.runs[index] = (series_id, run_ts[:0], run_vs[:0])
                for t, bits in zip(run_ts.tolist(), run_vs.view(np.uint64).tolist()):
                    pending[(series_id, t)] = bits
                    prepared.ids.append(series_id)
                    prepared.timestamps.append(t)
                    prepared.bits.append(bits)
            offset = int(starts[i])
            for j, (t, bits) in enumerate(zip(ts.tolist(), vs.view(np.uint64).tolist())):
                existing = series.bits_at(t) if series is not None else None
                if existing is None:
                    existing = pending.get((series_id, t))
                if existing is not None:
                    if existing == bits:
                        prepared.duplicates.append(offset + j)
                        continue
                    raise SampleRejected(
                        RejectReason.DUPLICATE_TIMESTAMP, offset + j,
                        f"duplicate sample for timestamp {t} of {labels!r} with a "
                        "different value")
                pending[(series_id, t)] = bits
                prepared.ids.append(series_id)
                prepared.timestamps.append(t)
                prepared.bits.append(bits)
        return prepared

    def commit(self, prepared: Prepared) -> None:
        """Apply a batch :meth:`prepare` accepted (and nothing changed since)."""
        for series_id, labels in prepared.new_series:
            self._create(series_id, labels)
        for series_id, ts, vs in prepared.runs:
            self.by_id[series_id].extend(ts, vs)
        for series_id, t, bits in zip(prepared.ids, prepared.timestamps, prepared.bits):
            self.by_id[series_id].add(t, bits)
        self.samples += prepared.count
        if prepared.count:
            self.max_t = max(self.max_t, prepared.max_t)
            if self._min_t is not None:
                lowest = min([int(ts[0]) for _, ts, _ in prepared.runs if len(ts)]
                             + ([min(prepared.timestamps)] if prepared.timestamps else []),
                             default=INT64_MAX)
                self._min_t = min(self._min_t, lowest)

    def _create(self, series_id: int, labels: Labels) -> MemSeries:
        series = MemSeries(series_id, labels)
        self.series[labels] = series
        self.by_id[series_id] = series
        self.postings.add(series_id, labels)
        self.next_id = max(self.next_id, series_id + 1)
        return series

    def replay(self, record: BatchRecord) -> int:
        """Apply a WAL record (accepted when it was written); samples before
        ``min_valid_t`` are in a block already and skipped. Returns the samples added."""
        for series_id, labels in record.series:
            if labels not in self.series:
                self._create(series_id, labels)
        added = 0
        bits_of = record.values.view(np.uint64)
        for series_id, t, bits in zip(record.ids.tolist(), record.timestamps.tolist(),
                                      bits_of.tolist()):
            if t < self.min_valid_t:
                continue
            series = self.by_id.get(series_id)
            if series is None:
                continue  # its series was dropped with an older head range
            if series.bits_at(t) is not None:
                continue
            series.add(t, bits)
            added += 1
            if t > self.max_t:
                self.max_t = t
            if self._min_t is not None and t < self._min_t:
                self._min_t = t
        self.samples += added
        return added

    # ---- reading --------------------------------------------------------------------

    def select_ids(self, matchers: Sequence[Matcher]) -> list[MemSeries]:
        return [self.by_id[int(i)] for i in select_postings(self.postings, matchers)]

    def select(self, matchers: Sequence[Matcher], mint: int,
               maxt: int) -> Iterator[tuple[Labels, Int64s, Float64s]]:
        for series in self.select_ids(matchers):
            ts, vs = series.copy(mint, maxt)
            if len(ts):
                yield series.labels, ts, vs

    def has_data(self, series: MemSeries, mint: int, maxt: int) -> bool:
        lo, hi = series.span(mint, maxt)
        return hi > lo

    # ---- cutting into blocks -------------------------------------------------------

    def range_data(self, mint: int, maxt: int) -> list[tuple[Labels, Int64s, Float64s]]:
        """Every series' samples in ``[mint, maxt)``, sorted by labels (a block's input)."""
        out = []
        for labels in sorted(self.series):
            ts, vs = self.series[labels].copy(mint, maxt - 1)
            if len(ts):
                out.append((labels, ts, vs))
        return out

    def truncate(self, before: int) -> None:
        """Forget the samples before ``before`` (now in a block) and the series left
        without samples; nothing before it is accepted any more."""
        dropped: set[int] = set()
        for series in self.by_id.values():
            kept = series.n
            series.drop_before(before)
            self.samples -= kept - series.n
            if not series.n:
                dropped.add(series.id)
        gone = [self.by_id.pop(i) for i in dropped]
        for series in gone:
            del self.series[series.labels]
        self.postings.remove(dropped, (s.labels for s in gone))
        self.min_valid_t = max(self.min_valid_t, before)
        self._min_t = None

    def checkpoint_records(self, per_record: int = 1 << 16) -> Iterable[bytes]:
        """The head as WAL records: each a group of series, defined, with their samples."""
        group: list[MemSeries] = []
        size = 0
        for series in self.by_id.values():
            group.append(series)
            size += series.n + 1
            if size >= per_record:
                yield _record_of(group)
                group, size = [], 0
        if group:
            yield _record_of(group)


def _record_of(group: list[MemSeries]) -> bytes:
    ids = np.concatenate([np.full(s.n, s.id, np.int64) for s in group])
    ts = np.concatenate([s.ts[:s.n] for s in group])
    vs = np.concatenate([s.vs[:s.n] for s in group])
    return encode_batch([(s.id, s.labels) for s in group], ids, ts, vs)
