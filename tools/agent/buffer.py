"""The agent's backlog: collections waiting to be written, oldest first, bounded in samples.

Ordering. Collections go in with strictly increasing times and leave from the front, as
batches that are each a prefix of what waits (:meth:`Backlog.take`); one batch is out at
a time and the next is taken only once it is written, refused or given back. So the
samples of any one series reach telemetry in time order, and a batch given back after a
failure is sent again whole (telemetry drops the exact repeats of a batch it had
stored after all).

Bounds. At most ``max_samples`` samples wait; past that the oldest samples go first
(counted in ``dropped_total``), the batch out at the moment included: if it is then
written its samples count as sent, if it comes back they count as dropped.

Batches. At most ``max_series`` series and ``max_samples`` samples (telemetry's
``WRITE_MAX_SERIES`` / ``WRITE_MAX_SAMPLES``), and a batch's samples lie within
``max_span_ms`` of each other: telemetry measures its out-of-order window from the
newest sample of the same write as well, so a batch spanning more than the window would
be refused whole.

The series of a collection are kept once per distinct set (a host's collections mostly
repeat it) and the values as 8-byte floats, so a sample waits in about 10 bytes.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .collect import Labels, Sample

SeriesKey = tuple[str, Labels]  # metric name, its own labels


@dataclass(slots=True)
class _Entry:
    seq: int
    time_ms: int
    keys: tuple[SeriesKey, ...]
    values: array[float]
    offset: int = 0  # the samples before it are gone (sent, refused or dropped)

    @property
    def waiting(self) -> int:
        return len(self.keys) - self.offset


@dataclass(frozen=True, slots=True)
class Batch:
    """One write: the series with their (timestamp ms, value) samples in time order."""

    parts: tuple[tuple[int, int, int], ...]  # (collection seq, first sample, end)
    series: dict[SeriesKey, list[tuple[int, float]]]
    samples: int
    first_ms: int
    last_ms: int


class Backlog:
    def __init__(self, max_samples: int) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, not {max_samples}")
        self.max_samples = max_samples
        self.dropped_total = 0   # made room for newer samples
        self.rejected_total = 0  # refused by telemetry
        self.sent_total = 0
        self._entries: deque[_Entry] = deque()
        self._samples = 0
        self._seq = 0
        self._last_ms: int | None = None
        self._last_keys: tuple[SeriesKey, ...] = ()
        self._out: Batch | None = None
        self._out_dropped = 0  # samples of the batch out that were dropped meanwhile

    @property
    def samples(self) -> int:
        """Samples waiting, the batch out at the moment included."""
        return self._samples

    @property
    def collections(self) -> int:
        return len(self._entries)

    @property
    def oldest_ms(self) -> int | None:
        return self._entries[0].time_ms if self._entries else None

    @property
    def last_ms(self) -> int | None:
        """The time of the newest collection pushed (None before the first)."""
        return self._last_ms

    @property
    def out(self) -> Batch | None:
        return self._out

    def push(self, time_ms: int, samples: Sequence[Sample]) -> int:
        """Queue one collection (its samples stamped ``time_ms``, later than the last
        one's); a series repeated within it keeps its first value. Returns the samples
        dropped to make room."""
        if self._last_ms is not None and time_ms <= self._last_ms:
            raise ValueError(f"collection at {time_ms} ms is not after the last one "
                             f"({self._last_ms} ms): a series would go out of order")
        self._last_ms = time_ms
        values: dict[SeriesKey, float] = {}
        for sample in samples:
            values.setdefault((sample.name, sample.labels), sample.value)
        if not values:
            return 0
        keys = tuple(values)
        if keys == self._last_keys:
            keys = self._last_keys  # one copy of the series for every collection alike
        self._last_keys = keys
        self._seq += 1
        self._entries.append(_Entry(self._seq, time_ms, keys, array("d", values.values())))
        self._samples += len(keys)
        return self._make_room()

    def _make_room(self) -> int:
        dropped = 0
        while self._samples > self.max_samples:
            entry = self._entries[0]
            n = min(self._samples - self.max_samples, entry.waiting)
            lost = self._overlap_out(entry.seq, entry.offset, entry.offset + n)
            self._out_dropped += lost
            self.dropped_total += n - lost
            dropped += n
            entry.offset += n
            self._samples -= n
            if not entry.waiting:
                self._entries.popleft()
        return dropped

    def _overlap_out(self, seq: int, start: int, end: int) -> int:
        if self._out is None:
            return 0
        return sum(max(0, min(end, p_end) - max(start, p_start))
                   for p_seq, p_start, p_end in self._out.parts if p_seq == seq)

    def take(self, max_series: int, max_samples: int, max_span_ms: int) -> Batch | None:
        """The next batch from the front (None when nothing waits); it is out until
        :meth:`sent`, :meth:`refused` or :meth:`retry`."""
        if self._out is not None:
            raise RuntimeError("a batch is out already: sent(), refused() or retry() first")
        if not self._entries:
            return None
        series: dict[SeriesKey, list[tuple[int, float]]] = {}
        parts: list[tuple[int, int, int]] = []
        taken = 0
        first_ms = self._entries[0].time_ms
        last_ms = first_ms
        for entry in self._entries:
            if taken and entry.time_ms - first_ms > max_span_ms:
                break
            end = entry.offset
            t = entry.time_ms
            full = False
            for i in range(entry.offset, len(entry.keys)):
                key = entry.keys[i]
                if taken >= max_samples:
                    full = True
                    break
                points = series.get(key)
                if points is None:
                    if len(series) >= max_series:
                        full = True
                        break
                    points = series[key] = []
                points.append((t, entry.values[i]))
                taken += 1
                end = i + 1
            if end > entry.offset:
                parts.append((entry.seq, entry.offset, end))
                last_ms = t
            if full:
                break
        self._out = Batch(tuple(parts), series, taken, first_ms, last_ms)
        self._out_dropped = 0
        return self._out

    def _settle(self, batch: Batch) -> None:
        if batch is not self._out:
            raise RuntimeError("not the batch that is out")
        self._out = None
        self._out_dropped = 0
        for seq, _start, end in batch.parts:
            if not self._entries or self._entries[0].seq != seq:
                continue  # dropped while it was out
            entry = self._entries[0]
            if end > entry.offset:
                self._samples -= end - entry.offset
                entry.offset = end
            if not entry.waiting:
                self._entries.popleft()

    def sent(self, batch: Batch) -> None:
        """Telemetry stored the batch: it leaves the backlog."""
        self._settle(batch)
        self.sent_total += batch.samples

    def refused(self, batch: Batch) -> None:
        """Telemetry refused the batch for good: it leaves the backlog, counted rejected."""
        self._settle(batch)
        self.rejected_total += batch.samples

    def retry(self, batch: Batch) -> None:
        """The batch was not written (telemetry unreachable or busy): it waits again at
        the front; what was dropped of it meanwhile now counts as dropped."""
        if batch is not self._out:
            raise RuntimeError("not the batch that is out")
        self.dropped_total += self._out_dropped
        self._out = None
        self._out_dropped = 0
