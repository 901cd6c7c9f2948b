"""Columnar appends (remote write's and Write's shape) agree with per-sample appends:
series listed twice, out of order, exact repeats dropped, a changed value or an old sample
refused with its position counted through the batch as if flattened."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.telemetry.tsdb import TSDB, Matcher, MatchOp, SampleRejected
from geoplex.servers.telemetry.tsdb.head import SeriesInput

ALL = [Matcher("__name__", MatchOp.RE, ".+")]


def columns(*series: tuple[str, list[int], list[float]]) -> list[SeriesInput]:
    return [([("__name__", name)], np.array(ts, np.int64), np.array(vs, np.float64))
            for name, ts, vs in series]


def contents(db: TSDB) -> dict[str, list[tuple[int, float]]]:
    return {s.labels["__name__"]: list(zip(s.timestamps.tolist(), s.values.tolist()))
            for s in db.select(ALL, 0, 10 ** 12)}


batches = st.lists(st.lists(st.tuples(st.sampled_from("abc"),
                                      st.lists(st.integers(0, 40), min_size=1, max_size=6)),
                            min_size=1, max_size=4), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(batches)
def test_columns_store_what_samples_store(tmp_path_factory: pytest.TempPathFactory,
                                          spec: list[list[tuple[str, list[int]]]]) -> None:
    one, two = (TSDB.open(tmp_path_factory.mktemp("db")) for _ in range(2))
    with one, two:
        for batch in spec:
            # values are a function of the time, so repeats are exact and never refused
            series = [(name, ts, [float(t * 10) for t in ts]) for name, ts in batch]
            flat = [({"__name__": name}, t, v) for name, ts, vs in series
                    for t, v in zip(ts, vs)]
            a = one.append_series(columns(*series))
            b = two.append(flat)
            assert (a.appended, a.duplicates) == (b.appended, b.duplicates)
        assert contents(one) == contents(two)


def test_a_changed_value_and_an_old_sample_name_their_flattened_position(tmp_path: Path
                                                                         ) -> None:
    with TSDB.open(tmp_path / "db") as db:
        db.append_series(columns(("a", [1_000_000, 1_015_000], [1.0, 2.0])))
        with pytest.raises(SampleRejected, match="sample 3: duplicate sample for timestamp "
                           "1015000"):
            db.append_series(columns(("b", [1_020_000, 1_030_000], [1.0, 1.0]),
                                     ("a", [1_030_000, 1_015_000], [3.0, 9.0])))
        with pytest.raises(SampleRejected, match="sample 2: timestamp 1 is too old"):
            db.append_series(columns(("b", [1_040_000, 1_041_000], [1.0, 1.0]),
                                     ("a", [1], [3.0])))
        assert contents(db) == {"a": [(1_000_000, 1.0), (1_015_000, 2.0)]}
