"""What the PromQL evaluator and the HTTP API need from a store: the :class:`Storage`
protocol, so another adapter (remote write to VictoriaMetrics, later) can stand in for
the local :class:`~.db.TSDB`.

Times are int64 milliseconds since the epoch and ranges ``[mint_ms, maxt_ms]`` are
inclusive at both ends, as Prometheus's querier. The calls are synchronous and
thread-safe; async callers run them with ``asyncio.to_thread`` (``append`` waits for an
fsync).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .chunks import Float64s, Int64s
from .head import SampleInput, SeriesInput
from .labels import Labels, Matcher
from .rollup import Rollup


@dataclass(frozen=True, eq=False)
class Series:
    """One series' samples in a range: ``timestamps`` ascending, ``values`` float64 (NaN
    payloads kept; the stale marker is :data:`~.chunks.STALE_NAN`)."""

    labels: Labels
    timestamps: Int64s
    values: Float64s


@dataclass(frozen=True, eq=False)
class RollupSeries:
    """One series' rollup over a queried range (``rollup.start`` ascending), from a
    downsampled tier (:mod:`.tiers`)."""

    labels: Labels
    rollup: Rollup
    resolution_ms: int

    @property
    def times(self) -> Int64s:
        """Each bucket's point time: its last millisecond."""
        stamped: Int64s = self.rollup.start + self.resolution_ms - 1
        return stamped


@dataclass(frozen=True)
class AppendResult:
    """A batch stored: how many samples were new, and the batch positions of exact
    duplicates (same timestamp, same value bits) dropped silently."""

    appended: int
    duplicates: tuple[int, ...] = ()


@dataclass(frozen=True)
class BlockStats:
    id: str
    min_time: int
    max_time: int  # exclusive
    series: int
    samples: int
    bytes: int
    level: int
    encoding: str
    resolution: str = "raw"


@dataclass(frozen=True)
class StoreStats:
    head_series: int
    head_samples: int
    head_min_time: int | None
    head_max_time: int | None
    wal_bytes: int
    blocks: tuple[BlockStats, ...] = field(default_factory=tuple)  # the raw tier's
    tier_blocks: tuple[BlockStats, ...] = field(default_factory=tuple)  # 1m and 1h

    @property
    def block_samples(self) -> int:
        return sum(b.samples for b in self.blocks)

    @property
    def block_bytes(self) -> int:
        return sum(b.bytes for b in self.blocks)


class Storage(Protocol):
    def append(self, samples: Sequence[SampleInput]) -> AppendResult:
        """Store a batch of ``(labels, timestamp_ms, value)``, all or nothing: raises
        :class:`~.errors.SampleRejected` (reason, index) and stores nothing when a sample
        cannot be stored; returns once the batch is durable."""
        ...

    def append_series(self, batch: Sequence[SeriesInput]) -> AppendResult:
        """:meth:`append` for a columnar batch: each series with its samples as arrays
        (timestamps int64 ms, values float64); sample positions count as if flattened."""
        ...

    def select(self, matchers: Sequence[Matcher], mint_ms: int,
               maxt_ms: int) -> Iterator[Series]:
        """The series every matcher selects that have samples in the range, sorted by
        label set, each with its samples in the range."""
        ...

    def series(self, matchers: Sequence[Matcher], mint_ms: int, maxt_ms: int) -> list[Labels]:
        ...

    def label_names(self, matchers: Sequence[Matcher] = (), mint_ms: int | None = None,
                    maxt_ms: int | None = None) -> list[str]:
        ...

    def label_values(self, name: str, matchers: Sequence[Matcher] = (),
                     mint_ms: int | None = None, maxt_ms: int | None = None) -> list[str]:
        ...

    def stats(self) -> StoreStats:
        ...


@runtime_checkable
class TieredStorage(Storage, Protocol):
    """A store that keeps downsampled tiers ("1m", "1h") besides the raw samples."""

    def tier_min_time(self, tier: str) -> int | None:
        """The oldest time ``tier`` ("raw", "1m", "1h") holds data for; None when empty."""
        ...

    def select_rollup(self, resolution: str, matchers: Sequence[Matcher], mint_ms: int,
                      maxt_ms: int, components: Sequence[str] = ...
                      ) -> Iterator[RollupSeries]:
        """The selected series rolled up at ``resolution``, sorted by label set, buckets
        whose point time is in the range (and up to one step past it); only
        ``components`` need be filled (default all six), the others may be NaN."""
        ...
