"""Appending to the store's head: out-of-order within the window, duplicates, whole-batch
validation, and what select sees."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geoplex.servers.telemetry.tsdb import (
    STALE_NAN,
    STALE_NAN_BITS,
    TSDB,
    Matcher,
    MatchOp,
    RejectReason,
    SampleRejected,
    TSDBOptions,
    labels_of,
)

UP = labels_of({"__name__": "up", "job": "node"})
DOWN = labels_of({"__name__": "up", "job": "api"})
ALL = [Matcher("__name__", MatchOp.EQ, "up")]
MIN = 60_000


@pytest.fixture
def db(tmp_path: Path) -> Iterator[TSDB]:
    with TSDB.open(tmp_path / "db", TSDBOptions(ooo_window_ms=10 * MIN)) as store:
        yield store


def samples_of(db: TSDB, labels: object = UP) -> list[tuple[int, float]]:
    for series in db.select(ALL, -(1 << 62), 1 << 62):
        if series.labels == labels:
            return list(zip(series.timestamps.tolist(), series.values.tolist()))
    return []


def test_appends_are_selected_in_time_order(db: TSDB) -> None:
    result = db.append([(UP, 2_000, 2.0), (UP, 1_000, 1.0), ({"__name__": "up", "job": "api"},
                                                            1_000, 7.0)])
    assert result.appended == 3 and result.duplicates == ()
    assert samples_of(db) == [(1_000, 1.0), (2_000, 2.0)]
    assert [s.labels for s in db.select(ALL, 0, 10_000)] == [DOWN, UP]


def test_out_of_order_within_the_window_is_accepted(db: TSDB) -> None:
    db.append([(UP, 20 * MIN, 1.0)])
    db.append([(UP, 11 * MIN, 0.5)])
    db.append([(UP, 15 * MIN, 0.7)])
    assert samples_of(db) == [(11 * MIN, 0.5), (15 * MIN, 0.7), (20 * MIN, 1.0)]


def test_older_than_the_window_is_rejected_naming_the_limit(db: TSDB) -> None:
    db.append([(UP, 20 * MIN, 1.0)])
    with pytest.raises(SampleRejected) as caught:
        db.append([(UP, 20 * MIN + 1, 2.0), (UP, 9 * MIN, 0.5)])
    assert caught.value.reject_reason is RejectReason.TOO_OLD
    assert caught.value.index == 1
    assert "600000 ms" in caught.value.message and str(10 * MIN) in caught.value.message
    assert samples_of(db) == [(20 * MIN, 1.0)]  # nothing of the batch stored


def test_the_window_counts_the_batchs_own_max_time(db: TSDB) -> None:
    with pytest.raises(SampleRejected, match="too old"):
        db.append([(UP, 0, 1.0), (UP, 11 * MIN, 2.0)])


def test_an_exact_duplicate_is_dropped_silently(db: TSDB) -> None:
    db.append([(UP, 1_000, 1.5)])
    result = db.append([(UP, 1_000, 1.5), (UP, 2_000, 2.0), (UP, 2_000, 2.0)])
    assert result.appended == 1 and result.duplicates == (0, 2)
    assert samples_of(db) == [(1_000, 1.5), (2_000, 2.0)]


def test_same_timestamp_other_value_is_rejected(db: TSDB) -> None:
    db.append([(UP, 1_000, 1.5)])
    with pytest.raises(SampleRejected, match="duplicate sample for timestamp") as caught:
        db.append([(DOWN, 1_000, 3.0), (UP, 1_000, 1.6)])
    assert caught.value.reject_reason is RejectReason.DUPLICATE_TIMESTAMP
    assert caught.value.index == 1
    assert samples_of(db, DOWN) == []
    with pytest.raises(SampleRejected, match="duplicate sample"):
        db.append([(DOWN, 5, 1.0), (DOWN, 5, 2.0)])


def test_nan_payloads_differ_as_values(db: TSDB) -> None:
    """Duplicates compare bits: a stale marker is not the same value as a plain NaN."""
    db.append([(UP, 1_000, STALE_NAN)])
    assert db.append([(UP, 1_000, STALE_NAN)]).duplicates == (0,)
    with pytest.raises(SampleRejected):
        db.append([(UP, 1_000, float("nan"))])
    series = next(db.select(ALL, 0, 2_000))
    assert series.values.view(np.uint64).tolist() == [STALE_NAN_BITS]


def test_invalid_samples_are_rejected_with_their_index(db: TSDB) -> None:
    bad: Any
    for bad, reason in [((UP, 1.5, 1.0), RejectReason.INVALID_SAMPLE),
                        ((UP, 1 << 63, 1.0), RejectReason.INVALID_SAMPLE),
                        ((UP, 1, "x"), RejectReason.INVALID_SAMPLE),
                        (({"__name__": "up", "__x": "1"}, 1, 1.0), RejectReason.INVALID_LABELS),
                        (({"job": "x"}, 1, 1.0), RejectReason.INVALID_LABELS)]:
        with pytest.raises(SampleRejected) as caught:
            batch: list[Any] = [(UP, 0, 0.0), bad]
            db.append(batch)
        assert caught.value.reject_reason is reason and caught.value.index == 1
    assert db.stats().head_samples == 0


def test_the_active_series_limit_rejects_a_new_series(tmp_path: Path) -> None:
    with TSDB.open(tmp_path, TSDBOptions(max_series=1)) as db:
        db.append([(UP, 1, 1.0)])
        with pytest.raises(SampleRejected) as caught:
            db.append([(UP, 2, 1.0), (DOWN, 2, 1.0)])
        assert caught.value.reject_reason is RejectReason.SERIES_LIMIT
        assert caught.value.code == "RESOURCE_EXHAUSTED"
        assert db.append([(UP, 2, 1.0)]).appended == 1


def test_select_honours_the_inclusive_range_and_matchers(db: TSDB) -> None:
    db.append([(UP, t, float(t)) for t in range(0, 10_000, 1_000)] + [(DOWN, 5_000, 1.0)])
    series = list(db.select([Matcher("job", MatchOp.EQ, "node")], 2_000, 4_000))
    assert len(series) == 1 and series[0].timestamps.tolist() == [2_000, 3_000, 4_000]
    assert list(db.select([Matcher("job", MatchOp.EQ, "api")], 0, 4_999)) == []
    assert db.series(ALL, 0, 4_999) == [UP]
    assert db.label_names() == ["__name__", "job"]
    assert db.label_values("job") == ["api", "node"]
    assert db.label_values("job", [Matcher("job", MatchOp.NRE, "a.*")]) == ["node"]


def test_a_second_process_cannot_open_the_same_store(db: TSDB) -> None:
    from geoplex.servers._runtime.errors import FailedPrecondition
    with pytest.raises(FailedPrecondition):
        TSDB.open(db.path)
