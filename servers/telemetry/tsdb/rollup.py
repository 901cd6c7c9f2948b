"""Downsampling: one series' samples rolled up into buckets of a resolution (1 minute,
1 hour), what the downsampled tiers store (:mod:`.tiers`).

Per bucket ``[k * resolution, (k + 1) * resolution)`` holding at least one sample:
``min``, ``max`` (NaN values ignored unless all are NaN), ``sum``, ``count``, ``last`` and
``increase``: the counter increase of the samples in the bucket, counting each step from
the previous sample (which may lie in an earlier bucket) as ``v[i] - v[i-1]``, or as
``v[i]`` when the value dropped (a counter reset, as PromQL's ``increase``), so the
increases of consecutive buckets add up to the series' whole increase. ``previous``, the
last value before ``timestamps[0]`` (the end of the range rolled up before), makes the
first step count too, so the increases of consecutive ranges add up as well. Stale
markers are not samples here: they are dropped first.

:func:`coarsen` rolls a rollup up again into a coarser resolution (1 minute into 1 hour):
min of the mins, max of the maxes, sums of the sums, counts and increases, last of the
lasts — the same answer as rolling the raw samples up into the coarser buckets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .chunks import Float64s, Int64s, is_stale


@dataclass(frozen=True, eq=False)
class Rollup:
    start: Int64s  # each bucket's first millisecond
    min: Float64s
    max: Float64s
    sum: Float64s
    count: Int64s
    last: Float64s
    increase: Float64s

    def __len__(self) -> int:
        return len(self.start)


def empty_rollup() -> Rollup:
    empty = np.empty(0, np.float64)
    return Rollup(np.empty(0, np.int64), empty, empty, empty, np.empty(0, np.int64), empty,
                  empty)


def rollup(timestamps: Int64s, values: Float64s, resolution_ms: int,
           previous: float | None = None) -> Rollup:
    if resolution_ms <= 0:
        raise ValueError("resolution_ms must be > 0")
    keep = ~is_stale(values)
    ts, vs = timestamps[keep], values[keep]
    if not len(ts):
        return empty_rollup()
    buckets = ts // resolution_ms
    firsts = np.flatnonzero(np.concatenate(([True], buckets[1:] != buckets[:-1])))
    ends = np.append(firsts[1:], len(ts))
    steps = np.zeros(len(vs), np.float64)
    if len(vs) > 1:
        delta = vs[1:] - vs[:-1]
        steps[1:] = np.where(vs[1:] < vs[:-1], vs[1:], delta)
    if previous is not None and not np.isnan(previous):
        steps[0] = vs[0] if vs[0] < previous else vs[0] - previous
    return Rollup(start=buckets[firsts] * resolution_ms,
                  min=np.fmin.reduceat(vs, firsts), max=np.fmax.reduceat(vs, firsts),
                  sum=np.add.reduceat(vs, firsts), count=(ends - firsts).astype(np.int64),
                  last=vs[ends - 1], increase=np.add.reduceat(steps, firsts))


def coarsen(fine: Rollup, resolution_ms: int) -> Rollup:
    """``fine`` (ascending buckets of a resolution dividing ``resolution_ms``) rolled up
    into buckets of ``resolution_ms``."""
    if resolution_ms <= 0:
        raise ValueError("resolution_ms must be > 0")
    if not len(fine.start):
        return empty_rollup()
    buckets = fine.start // resolution_ms
    firsts = np.flatnonzero(np.concatenate(([True], buckets[1:] != buckets[:-1])))
    ends = np.append(firsts[1:], len(buckets))
    return Rollup(start=buckets[firsts] * resolution_ms,
                  min=np.fmin.reduceat(fine.min, firsts), max=np.fmax.reduceat(fine.max, firsts),
                  sum=np.add.reduceat(fine.sum, firsts),
                  count=np.add.reduceat(fine.count, firsts).astype(np.int64),
                  last=fine.last[ends - 1], increase=np.add.reduceat(fine.increase, firsts))


COMPONENTS = ("min", "max", "sum", "count", "last", "increase")  # what a bucket holds


def unread(n: int) -> tuple[Float64s, Int64s]:
    """What stands in for components not read, ``n`` buckets long: NaN values and zero
    counts, read-only (shared by every such component; slice them for shorter ones)."""
    nans, zeros = np.full(n, np.nan), np.zeros(n, np.int64)
    nans.flags.writeable = zeros.flags.writeable = False
    return nans, zeros


def concat(parts: list[Rollup], components: tuple[str, ...] = COMPONENTS) -> Rollup:
    """Rollups of one series over ranges in time order (a bucket start in more than one
    part: the first part's bucket is kept). Only ``components`` are joined where the parts
    follow one another; the others are then zero counts and NaN values."""
    parts = [p for p in parts if len(p.start)]
    if not parts:
        return empty_rollup()
    if len(parts) == 1:
        return parts[0]
    parts.sort(key=lambda p: int(p.start[0]))
    if all(int(a.start[-1]) < int(b.start[0]) for a, b in zip(parts, parts[1:])):
        # the common case, tier blocks one after another: nothing to order or drop
        nans, zeros = unread(sum(len(p.start) for p in parts))

        def joined(name: str) -> npt.NDArray[Any]:
            if name != "start" and name not in components:
                return zeros if name == "count" else nans
            out: npt.NDArray[Any] = np.concatenate([getattr(p, name) for p in parts])
            return out
        return Rollup(start=joined("start"), min=joined("min"), max=joined("max"),
                      sum=joined("sum"), count=joined("count").astype(np.int64, copy=False),
                      last=joined("last"), increase=joined("increase"))
    start = np.concatenate([p.start for p in parts])
    order = np.argsort(start, kind="stable")
    start = start[order]
    keep = np.ones(len(start), bool)
    keep[1:] = start[1:] != start[:-1]
    pick = order[keep]

    def cat(name: str) -> npt.NDArray[Any]:
        joined: npt.NDArray[Any] = np.concatenate([getattr(p, name) for p in parts])
        return joined[pick]

    return Rollup(start=start[keep], min=cat("min"), max=cat("max"), sum=cat("sum"),
                  count=cat("count").astype(np.int64), last=cat("last"),
                  increase=cat("increase"))
