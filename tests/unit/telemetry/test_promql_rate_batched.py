"""The rate family over many series at once gives, value for value, what it gives one
series at a time (Prometheus's extrapolation, counter resets, windows at the edges)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.telemetry.promql.columns import RangeVal, Raw
from geoplex.servers.telemetry.promql.functions import extrapolated_rate, extrapolated_rate_many
from geoplex.servers.telemetry.promql.parser import parse
from geoplex.servers.telemetry.tsdb.labels import Labels

series_st = st.lists(st.tuples(st.integers(0, 600_000), st.floats(0, 1e4)),
                     min_size=1, max_size=40, unique_by=lambda p: p[0])


@settings(max_examples=200, deadline=None)
@given(st.lists(series_st, min_size=1, max_size=12), st.sampled_from([30_000, 60_000, 300_000]),
       st.booleans(), st.booleans())
def test_many_at_once_equals_one_at_a_time(spec: list[list[tuple[int, float]]], range_ms: int,
                                           counter: bool, is_rate: bool) -> None:
    raws = []
    for i, points in enumerate(spec):
        points.sort()
        raws.append(Raw(Labels([("__name__", f"s{i}")]), np.array([t for t, _ in points],
                                                                    np.int64),
                        np.array([v for _, v in points], np.float64)))
    ends = np.arange(0, 700_000, 17_000, dtype=np.int64)
    batched = extrapolated_rate_many(raws, ends, range_ms, counter, is_rate)
    assert batched is not None
    values, present = batched
    node = parse("x[5m]")
    for i, raw in enumerate(raws):
        rv = RangeVal([raw], ends, range_ms, node)
        lo, hi = rv.bounds(raw)
        with np.errstate(all="ignore"):
            one, one_present = extrapolated_rate(raw, lo, hi, ends, range_ms, counter, is_rate)
        assert present[i].tolist() == one_present.tolist()
        assert np.array_equal(values[i][one_present], one[one_present], equal_nan=True)
