"""The downsampled tiers: 1-minute rollups of cut blocks, 1-hour rollups of whole windows,
queries served from them (the component each function needs), retention per tier and per
metric, and the finest tier chosen for a query's range."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from geoplex.servers.telemetry.promql.engine import Engine
from geoplex.servers.telemetry.promql.values import Matrix, PromQLEvalError, Vector
from geoplex.servers.telemetry.tsdb import TSDB, Matcher, MatchOp, TSDBOptions
from geoplex.servers.telemetry.tsdb.db import RetentionRule
from geoplex.servers.telemetry.tsdb.labels import Labels, labels_of

MIN = 60_000
HOUR = 60 * MIN
SCRAPE = 15_000
OFFSET = 7_500          # samples off the minute grid: windows and buckets line up exactly
HOURS = 10
T0 = 1_700_000_000_000 // (24 * HOUR) * (24 * HOUR)


def options(retention_ms: dict[str, int] | None = None,
            retention_rules: tuple[RetentionRule, ...] = ()) -> TSDBOptions:
    base = TSDBOptions(block_range_ms=HOUR, ooo_window_ms=10 * MIN, rollup_window_ms=2 * HOUR,
                       retention_rules=retention_rules)
    return replace(base, retention_ms=retention_ms) if retention_ms else base


def series_values(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    counter = np.cumsum(rng.integers(0, 50, n)).astype(np.float64)
    counter[n // 3:] -= counter[n // 3]          # a reset a third of the way in
    counter[2 * n // 3:] -= counter[2 * n // 3] - 3.0   # and another
    gauge = np.round(50 + 20 * np.sin(np.arange(n) / 40) + rng.normal(0, 3, n), 2)
    debug = rng.normal(0, 1, n)
    return {"requests_total": counter, "temperature": gauge, "debug_noise": debug}


def load(db: TSDB) -> dict[str, np.ndarray]:
    n = HOURS * HOUR // SCRAPE
    ts = T0 + OFFSET + SCRAPE * np.arange(n, dtype=np.int64)
    values = series_values(n)
    for lo in range(0, n, 20):
        batch = [({"__name__": name, "job": "node"}, int(ts[i]), float(vs[i]))
                 for i in range(lo, min(n, lo + 20)) for name, vs in values.items()]
        db.append(batch)
    return {"ts": ts, **values}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[TSDB, dict[str, np.ndarray]]]:
    db = TSDB.open(tmp_path / "db", options())
    data = load(db)
    db.maintain()
    yield db, data
    db.close()


def scalar_at(engine: Engine, query: str, t: int, resolution: str) -> float:
    result = engine.instant(query, t, resolution)
    assert result.resolution == resolution
    assert isinstance(result.value, Vector) and len(result.value.samples) == 1, query
    return result.value.samples[0].v


def test_cut_blocks_are_rolled_up_into_both_tiers(store: tuple[TSDB, dict[str, np.ndarray]]
                                                  ) -> None:
    db, _ = store
    stats = db.stats()
    raw_end = max(b.max_time for b in stats.blocks)
    by_tier = {"1m": [b for b in stats.tier_blocks if b.resolution == "1m"],
               "1h": [b for b in stats.tier_blocks if b.resolution == "1h"]}
    # every cut raw range has its 1-minute rollup; every whole 2-hour window its hourly one
    assert min(b.min_time for b in by_tier["1m"]) == min(b.min_time for b in stats.blocks)
    assert max(b.max_time for b in by_tier["1m"]) == raw_end
    whole_windows = (raw_end - T0) // (2 * HOUR) * 2 * HOUR
    assert min(b.min_time for b in by_tier["1h"]) == T0
    assert max(b.max_time for b in by_tier["1h"]) == T0 + whole_windows
    assert sum(b.max_time - b.min_time for b in by_tier["1h"]) == whole_windows
    # six component series per source series, one sample per minute (or hour)
    assert sum(b.samples for b in by_tier["1m"]) == 6 * 3 * (raw_end - T0) // MIN
    assert db.maintain().downsampled == ()   # nothing left to do: idempotent


@pytest.mark.parametrize("resolution", ["1m", "1h"])
def test_window_aggregates_from_a_tier_equal_the_raw_answers(
        store: tuple[TSDB, dict[str, np.ndarray]], resolution: str) -> None:
    db, _ = store
    engine = Engine(db)
    for t in (T0 + 4 * HOUR, T0 + 6 * HOUR, T0 + 8 * HOUR):  # window ends on both grids
        for fn in ("sum_over_time", "count_over_time", "min_over_time", "max_over_time",
                   "avg_over_time"):
            query = f"{fn}(temperature[2h])"
            raw = scalar_at(engine, query, t, "raw")
            assert math.isclose(scalar_at(engine, query, t, resolution), raw,
                                rel_tol=1e-9), query
        # the counter's increase across two resets and block boundaries: every step once
        query = "sum_over_time(requests_total[2h])"
        assert scalar_at(engine, query, t, resolution) == pytest.approx(
            scalar_at(engine, query, t, "raw"), rel=1e-9)


def test_rates_from_the_minute_tier_follow_the_raw_rates(
        store: tuple[TSDB, dict[str, np.ndarray]]) -> None:
    db, data = store
    engine = Engine(db)
    start, end = T0 + 2 * HOUR, T0 + 9 * HOUR
    raw = engine.range("rate(requests_total[10m])", start, end, 5 * MIN, "raw")
    rolled = engine.range("rate(requests_total[10m])", start, end, 5 * MIN, "1m")
    assert rolled.resolution == "1m"
    assert isinstance(raw.value, Matrix) and isinstance(rolled.value, Matrix)
    r, m = raw.value.series[0].values, rolled.value.series[0].values
    # a rebuilt counter never resets, so the reset steps agree too; windows differ by
    # where the minute buckets fall, within a few percent of a rate of ~1.6/s
    assert len(r) == len(m)
    assert np.allclose(m, r, rtol=0.1), (r, m)
    whole = engine.instant("increase(requests_total[6h])", T0 + 9 * HOUR, "1h")
    steps = np.diff(data["requests_total"])
    window = (data["ts"][1:] > T0 + 3 * HOUR) & (data["ts"][1:] <= T0 + 9 * HOUR)
    truth = float(np.where(steps < 0, data["requests_total"][1:], steps)[window].sum())
    assert isinstance(whole.value, Vector)
    assert whole.value.samples[0].v == pytest.approx(truth, rel=0.1)


def test_a_range_shorter_than_two_steps_is_widened_and_said(
        store: tuple[TSDB, dict[str, np.ndarray]]) -> None:
    db, _ = store
    result = Engine(db).instant("rate(requests_total[5m])", T0 + 8 * HOUR, "1h")
    assert isinstance(result.value, Vector) and len(result.value.samples) == 1
    assert any("widened to 2h" in info for info in result.infos)


def test_the_head_is_rolled_up_on_the_fly(store: tuple[TSDB, dict[str, np.ndarray]]) -> None:
    db, data = store
    newest = int(data["ts"][-1])
    assert db.stats().head_samples > 0
    t = newest // MIN * MIN
    query = "count_over_time(temperature[30m])"
    assert scalar_at(Engine(db), query, t, "1m") == scalar_at(Engine(db), query, t, "raw")


def test_auto_takes_the_finest_tier_that_holds_the_range(tmp_path: Path) -> None:
    keep = {"raw": 3 * HOUR, "1m": 6 * HOUR, "1h": 365 * 24 * HOUR}
    with TSDB.open(tmp_path / "db", options(retention_ms=keep)) as db:
        load(db)
        report = db.maintain()
        assert report.deleted
        engine = Engine(db)
        end = T0 + HOURS * HOUR
        oldest = {tier: db.tier_min_time(tier) for tier in ("raw", "1m", "1h")}
        assert oldest["1h"] == T0
        assert oldest["1m"] is not None and oldest["raw"] is not None
        # nothing went before the next tier held it: 1m from before raw, 1h from before 1m
        assert T0 < oldest["1m"] < oldest["raw"] <= end - 3 * HOUR
        assert oldest["1m"] <= end - 6 * HOUR
        window = 10 * MIN

        def served(start: int) -> str:
            return engine.range(f"max_over_time(temperature[{window // MIN}m])", start, end,
                                MIN).resolution

        assert engine.instant("temperature", end, "auto").resolution == "raw"
        assert served(oldest["raw"] + window) == "raw"
        assert served(oldest["raw"] + window - MIN) == "1m"
        assert served(oldest["1m"] + window) == "1m"
        assert served(oldest["1m"] + window - MIN) == "1h"
        with pytest.raises(PromQLEvalError, match="expected one of auto, raw, 1m, 1h"):
            engine.instant("temperature", end, "5m")


def test_a_per_metric_rule_drops_that_metric_only(tmp_path: Path) -> None:
    rule = RetentionRule((Matcher("__name__", MatchOp.EQ, "debug_noise"),),
                         {"raw": 2 * HOUR, "1m": 3 * HOUR}, '{__name__="debug_noise"}')
    with TSDB.open(tmp_path / "db", options(retention_rules=(rule,))) as db:
        load(db)
        report = db.maintain()
        assert report.rewritten
        old = T0 + 3 * HOUR
        engine = Engine(db)
        for tier in ("raw", "1m"):
            gone = engine.instant("last_over_time(debug_noise[30m])", old, tier)
            assert isinstance(gone.value, Vector) and not gone.value.samples, tier
            kept = engine.instant("last_over_time(temperature[30m])", old, tier)
            assert isinstance(kept.value, Vector) and len(kept.value.samples) == 1, tier
        recent = engine.instant("last_over_time(debug_noise[30m])", T0 + HOURS * HOUR, "raw")
        assert isinstance(recent.value, Vector) and len(recent.value.samples) == 1
        # the hourly tier keeps it: the rule names raw and 1m only
        hourly = engine.instant("last_over_time(debug_noise[2h])", old + HOUR, "1h")
        assert isinstance(hourly.value, Vector) and len(hourly.value.samples) == 1


def test_tiers_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with TSDB.open(path, options()) as db:
        load(db)
        db.maintain()
        before = Engine(db).range("max_over_time(temperature[1h])", T0 + HOUR,
                                  T0 + 8 * HOUR, HOUR, "1h").value
        assert isinstance(before, Matrix)
        tiers = sorted((b.resolution, b.min_time) for b in db.stats().tier_blocks)
    with TSDB.open(path, options()) as db:
        assert sorted((b.resolution, b.min_time) for b in db.stats().tier_blocks) == tiers
        after = Engine(db).range("max_over_time(temperature[1h])", T0 + HOUR,
                                 T0 + 8 * HOUR, HOUR, "1h").value
    assert isinstance(after, Matrix) and after.series
    assert [s.values.tolist() for s in after.series] == [s.values.tolist()
                                                         for s in before.series]


def test_rollup_series_are_not_visible_as_series(store: tuple[TSDB, dict[str, np.ndarray]]
                                                 ) -> None:
    db, _ = store
    names = {labels["__name__"] for labels in db.series([Matcher("job", MatchOp.EQ, "node")])}
    assert names == {"requests_total", "temperature", "debug_noise"}
    assert "__rollup__" not in db.label_names()
    found = list(db.select_rollup("1m", [Matcher("__name__", MatchOp.EQ, "temperature")],
                                  T0, T0 + HOUR))
    assert [s.labels for s in found] == [labels_of({"__name__": "temperature", "job": "node"})]
    assert isinstance(found[0].labels, Labels)
