"""The query paths' shortcuts give what the general paths give: rate / increase over a rollup
tier for many series at once against one series at a time (bit for bit), merge_samples'
no-overlap shortcut against sorting, and a block's chunk selection by binary search
against the samples written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.telemetry.promql import functions
from geoplex.servers.telemetry.promql.engine import Engine
from geoplex.servers.telemetry.promql.values import Matrix
from geoplex.servers.telemetry.tsdb import TSDB, Matcher, MatchOp, TSDBOptions
from geoplex.servers.telemetry.tsdb.blocks import merge_samples
from geoplex.servers.telemetry.tsdb.labels import labels_of

MIN = 60_000
HOUR = 60 * MIN
SCRAPE = 15_000
HOURS = 8
SERIES = 12  # above functions.BATCH_MIN_SERIES: the batched path is taken
T0 = 1_700_000_000_000 // (24 * HOUR) * (24 * HOUR)
Store = tuple[TSDB, dict[str, tuple[np.ndarray, np.ndarray]]]  # the store, each series' truth


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """Counters (with resets, some with gaps) cut into blocks and rolled up into both tiers."""
    db = TSDB.open(tmp_path_factory.mktemp("fast") / "db",
                   TSDBOptions(block_range_ms=HOUR, ooo_window_ms=10 * MIN,
                               rollup_window_ms=2 * HOUR))
    rng = np.random.default_rng(11)
    n = HOURS * HOUR // SCRAPE
    truth: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    batch = []
    for k in range(SERIES):
        ts = T0 + 1_000 + 37 * k + SCRAPE * np.arange(n, dtype=np.int64)
        values = np.cumsum(rng.integers(0, 40, n)).astype(np.float64)
        values[n // (k + 2):] -= values[n // (k + 2)]       # a reset, somewhere else each
        keep = np.ones(n, bool)
        if k % 3 == 0:  # a gap of 40 minutes
            keep[n // 2: n // 2 + 160] = False
        truth[f"s{k}"] = (ts[keep], values[keep])
        batch.append((labels_of({"__name__": "requests_total", "id": f"s{k}"}), ts[keep],
                      values[keep]))
    for lo in range(0, n, 40):  # in time order, as scrapes arrive
        a, b = T0 + lo * SCRAPE, T0 + (lo + 40) * SCRAPE
        db.append_series([(labels, ts[(ts >= a) & (ts < b)], vs[(ts >= a) & (ts < b)])
                          for labels, ts, vs in batch])
    db.maintain()
    yield db, truth
    db.close()


def _answer(engine: Engine, query: str, start: int, end: int, step: int,
            resolution: str) -> dict[tuple[tuple[str, str], ...], tuple[list[int], list[float]]]:
    result = engine.range(query, start, end, step, resolution)
    assert result.resolution == resolution
    assert isinstance(result.value, Matrix)
    return {tuple(s.labels.pairs): (s.timestamps.tolist(),
                                    s.values.view(np.uint64).tolist())  # bits: NaN == NaN
            for s in result.value.series}


@pytest.mark.parametrize("resolution", ["1m", "1h"])
@pytest.mark.parametrize("query", [
    "rate(requests_total[5m])",            # widened to two steps of the tier
    "increase(requests_total[5m])",        # widened, and scaled back to the range asked
    "rate(requests_total[30m])",
    "increase(requests_total[3h])",
    "sum by (id) (increase(requests_total[90m]))",
])
def test_rollup_rate_for_many_series_equals_one_series_at_a_time(
        store: Store, query: str,
        resolution: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db, _ = store
    engine = Engine(db)
    start, end = T0 + 3 * HOUR, T0 + HOURS * HOUR - MIN
    step = 5 * MIN if resolution == "1m" else HOUR
    batched = _answer(engine, query, start, end, step, resolution)
    assert len(batched) == SERIES
    monkeypatch.setattr(functions, "BATCH_MIN_SERIES", 10 ** 9)
    assert _answer(engine, query, start, end, step, resolution) == batched


def _merged_by_sorting(parts: list[tuple[np.ndarray, np.ndarray]]
                       ) -> tuple[list[int], list[float]]:
    """What merge_samples must give: every sample in time order, the first part's at a
    timestamp in more than one."""
    seen: dict[int, float] = {}
    for ts, vs in parts:
        for t, v in zip(ts.tolist(), vs.tolist()):
            seen.setdefault(t, v)
    return sorted(seen), [seen[t] for t in sorted(seen)]


@st.composite
def ascending_parts(draw: st.DrawFn) -> list[tuple[np.ndarray, np.ndarray]]:
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(draw(st.integers(1, 4))):
        stamps = sorted(draw(st.sets(st.integers(0, 60), max_size=12)))
        ts = np.array(stamps, dtype=np.int64)
        parts.append((ts, np.arange(len(ts), dtype=np.float64) + 100 * len(parts)))
    return parts


@settings(max_examples=300, deadline=None)
@given(ascending_parts())
def test_merge_samples_equals_sorting_every_part_in(
        parts: list[tuple[np.ndarray, np.ndarray]]) -> None:
    ts, vs = merge_samples(parts)
    assert (ts.tolist(), vs.tolist()) == _merged_by_sorting(parts)


@settings(max_examples=200, deadline=None)
@given(st.integers(-HOUR, HOURS * HOUR + HOUR), st.integers(0, 3 * HOUR))
def test_a_range_read_from_blocks_is_exactly_the_samples_written_in_it(
        store: Store, offset: int,
        length: int) -> None:
    db, truth = store
    mint = T0 + offset
    maxt = mint + length
    found = {s.labels.get("id"): s for s in
             db.select([Matcher("__name__", MatchOp.EQ, "requests_total")], mint, maxt)}
    for name, (ts, vs) in truth.items():
        inside = (ts >= mint) & (ts <= maxt)
        if not inside.any():
            assert name not in found
            continue
        assert found[name].timestamps.tolist() == ts[inside].tolist()
        assert found[name].values.tolist() == vs[inside].tolist()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, HOURS * HOUR // SCRAPE - 1), st.integers(0, 4 * HOUR // SCRAPE))
def test_a_range_that_starts_and_ends_on_samples_holds_both(
        store: Store, first: int,
        count: int) -> None:
    db, truth = store
    ts, vs = truth["s1"]
    mint = int(ts[min(first, len(ts) - 1)])
    maxt = int(ts[min(first + count, len(ts) - 1)])  # often a chunk's first or last sample
    [found] = db.select([Matcher("id", MatchOp.EQ, "s1")], mint, maxt)
    inside = (ts >= mint) & (ts <= maxt)
    assert found.timestamps.tolist() == ts[inside].tolist()
    assert found.values.tolist() == vs[inside].tolist()
