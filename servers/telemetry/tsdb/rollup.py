"""Downsampling: one series' samples rolled up into buckets of a resolution (1 minute,
1 hour), the input of the downsampled tiers to come (writing them as blocks of
resolution "1m" / "1h" and choosing a tier per query are not done yet).

Per bucket ``[k * resolution, (k + 1) * resolution)`` holding at least one sample:
``min``, ``max`` (NaN values ignored unless all are NaN), ``sum``, ``count``, ``last`` and
``increase``: the counter increase of the samples in the bucket, counting each step from
the previous sample (which may lie in an earlier bucket) as ``v[i] - v[i-1]``, or as
``v[i]`` when the value dropped (a counter reset, as PromQL's ``increase``), so the
increases of consecutive buckets add up to the series' whole increase. Stale markers are
not samples here: they are dropped first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def rollup(timestamps: Int64s, values: Float64s, resolution_ms: int) -> Rollup:
    if resolution_ms <= 0:
        raise ValueError("resolution_ms must be > 0")
    keep = ~is_stale(values)
    ts, vs = timestamps[keep], values[keep]
    if not len(ts):
        empty = np.empty(0, np.float64)
        return Rollup(np.empty(0, np.int64), empty, empty, empty, np.empty(0, np.int64),
                      empty, empty)
    buckets = ts // resolution_ms
    firsts = np.flatnonzero(np.concatenate(([True], buckets[1:] != buckets[:-1])))
    ends = np.append(firsts[1:], len(ts))
    steps = np.zeros(len(vs), np.float64)
    if len(vs) > 1:
        delta = vs[1:] - vs[:-1]
        steps[1:] = np.where(vs[1:] < vs[:-1], vs[1:], delta)
    return Rollup(start=buckets[firsts] * resolution_ms,
                  min=np.fmin.reduceat(vs, firsts), max=np.fmax.reduceat(vs, firsts),
                  sum=np.add.reduceat(vs, firsts), count=(ends - firsts).astype(np.int64),
                  last=vs[ends - 1], increase=np.add.reduceat(steps, firsts))
