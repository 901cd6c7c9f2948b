"""Rollups for the downsampled tiers, held to a plain loop."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.telemetry.tsdb.chunks import STALE_NAN
from geoplex.servers.telemetry.tsdb.rollup import rollup


def brute(ts: list[int], vs: list[float], resolution: int) -> dict[int, tuple]:
    pairs = [(t, v) for t, v in zip(ts, vs)
             if np.float64(v).view(np.uint64) != np.float64(STALE_NAN).view(np.uint64)]
    out: dict[int, list] = {}
    previous = None
    for t, v in pairs:
        bucket = (t // resolution) * resolution
        step = 0.0 if previous is None else (v if v < previous else v - previous)
        previous = v
        out.setdefault(bucket, []).append((v, step))
    result = {}
    for bucket, items in out.items():
        values = [v for v, _ in items]
        plain = [v for v in values if not math.isnan(v)]
        result[bucket] = (min(plain) if plain else math.nan, max(plain) if plain else math.nan,
                          math.fsum(values), len(values), values[-1],
                          math.fsum(s for _, s in items))
    return result


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-10 ** 7, 10 ** 7),
                          st.one_of(st.floats(-1e6, 1e6), st.just(STALE_NAN))),
                max_size=80, unique_by=lambda p: p[0]),
       st.sampled_from([1, 1_000, 60_000, 3_600_000]))
def test_rollup_equals_the_loop(samples: list[tuple[int, float]], resolution: int) -> None:
    samples.sort()
    ts = [t for t, _ in samples]
    vs = [v for _, v in samples]
    got = rollup(np.array(ts, np.int64), np.array(vs, np.float64), resolution)
    expected = brute(ts, vs, resolution)
    assert got.start.tolist() == sorted(expected)
    for i, bucket in enumerate(got.start.tolist()):
        mn, mx, total, count, last, increase = expected[bucket]
        assert same(got.min[i], mn) and same(got.max[i], mx) and same(got.sum[i], total)
        assert got.count[i] == count and same(got.last[i], last)
        assert same(got.increase[i], increase)


def test_increase_counts_resets_and_adds_up_across_buckets() -> None:
    ts = np.arange(8, dtype=np.int64) * 30_000
    vs = np.array([10, 20, 30, 5, 15, 25, 2, 4], np.float64)  # resets before 5 and 2
    got = rollup(ts, vs, 60_000)
    assert got.increase.tolist() == [10.0, 15.0, 20.0, 4.0]
    assert got.increase.sum() == (30 - 10) + 5 + (25 - 5) + 2 + 2
    assert got.count.tolist() == [2, 2, 2, 2] and got.last.tolist() == [20, 5, 25, 4]
