"""The PromQL evaluator against small stores: selectors, windows, the rate family,
aggregations, binary matching, limits and errors, with Prometheus 3.x semantics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers.telemetry.promql.engine import Engine
from geoplex.servers.telemetry.promql.promqltest import MemoryStorage, Runner
from geoplex.servers.telemetry.promql.values import (
    Matrix,
    PromQLEvalError,
    PromQLLimitError,
    PromQLUnsupportedError,
    Scalar,
    Vector,
)
from geoplex.servers.telemetry.tsdb import STALE_NAN, TSDB, Labels, TSDBOptions, labels_of

MIN = 60_000


def series(name: str, **labels: str) -> Labels:
    return labels_of({"__name__": name, **labels})


def store_with(points: dict[Labels, list[float | None]], interval_ms: int = 5 * MIN,
               ) -> MemoryStorage:
    store = MemoryStorage()
    store.append([(labels, i * interval_ms, v) for labels, values in points.items()
                  for i, v in enumerate(values) if v is not None])
    return store


def vector(engine: Engine, query: str, t: int) -> dict[Labels, float]:
    value = engine.instant(query, t).value
    assert isinstance(value, Vector), value
    return {s.labels: s.v for s in value.samples}


def counter_engine() -> Engine:
    return Engine(store_with({
        series("http_requests_total", job="api", instance="0"): [float(10 * i) for i in range(11)],
        series("http_requests_total", job="api", instance="1"): [float(20 * i) for i in range(11)],
        series("http_requests_total", job="db", instance="0"): [float(30 * i) for i in range(11)],
    }))


def test_instant_selector_takes_the_newest_sample_within_the_lookback() -> None:
    engine = Engine(store_with({series("up"): [1.0, 2.0]}))
    assert vector(engine, "up", 5 * MIN + 4 * MIN) == {series("up"): 2.0}
    # (t - 5m, t] is left-open: the sample at 5m is out of the window at 10m
    assert vector(engine, "up", 10 * MIN) == {}


def test_staleness_marker_ends_a_series() -> None:
    engine = Engine(store_with({series("up"): [1.0, STALE_NAN, None, 3.0]}, MIN))
    assert vector(engine, "up", 30_000) == {series("up"): 1.0}
    assert vector(engine, "up", MIN + 30_000) == {}
    assert vector(engine, "up", 3 * MIN) == {series("up"): 3.0}


def test_range_window_is_left_open() -> None:
    engine = Engine(store_with({series("x"): [1.0, 2.0, 3.0]}, MIN))
    assert vector(engine, "count_over_time(x[1m])", 2 * MIN) == {Labels(): 1.0}
    assert vector(engine, "count_over_time(x[61s])", 2 * MIN) == {Labels(): 2.0}


def test_rate_extrapolates_to_the_window_edges() -> None:
    engine = counter_engine()
    got = vector(engine, 'rate(http_requests_total{job="api"}[50m])', 50 * MIN)
    assert got[Labels([("instance", "0"), ("job", "api")])] == pytest.approx(10 / 300)
    increase = vector(engine, 'increase(http_requests_total{instance="1", job="api"}[50m])',
                      50 * MIN)
    assert list(increase.values()) == [pytest.approx(200.0)]


def test_rate_corrects_counter_resets() -> None:
    engine = Engine(store_with({series("c_total"): [0.0, 10.0, 20.0, 5.0, 15.0]}))
    # (0, 20m] holds 10 20 5 15: 25 after the reset, extrapolated by 5m to the start
    assert list(vector(engine, "increase(c_total[20m])", 20 * MIN).values()) == [
        pytest.approx(25.0 * 20 / 15)]
    assert vector(engine, "resets(c_total[30m])", 20 * MIN) == {Labels(): 1.0}
    assert vector(engine, "irate(c_total[10m])", 20 * MIN) == {Labels(): 10 / 300}


def test_offset_and_at_move_the_evaluation_time() -> None:
    engine = Engine(store_with({series("x"): [0.0, 1.0, 2.0, 3.0]}))
    assert vector(engine, "x offset 10m", 15 * MIN) == {series("x"): 1.0}
    assert vector(engine, "x @ 600", 15 * MIN) == {series("x"): 2.0}
    result = engine.range("x @ end()", 0, 15 * MIN, 5 * MIN).value
    assert isinstance(result, Matrix)
    assert list(result.series[0].values) == [3.0, 3.0, 3.0, 3.0]


def test_range_query_steps_and_name_dropping() -> None:
    engine = counter_engine()
    result = engine.range("sum by (job) (rate(http_requests_total[10m]))", 10 * MIN,
                          20 * MIN, 5 * MIN).value
    assert isinstance(result, Matrix)
    assert [s.labels for s in result.series] == [Labels([("job", "api")]),
                                                 Labels([("job", "db")])]
    assert list(result.series[0].timestamps) == [10 * MIN, 15 * MIN, 20 * MIN]
    np.testing.assert_allclose(result.series[0].values, 0.1)


def test_aggregations_group_by_and_without() -> None:
    engine = counter_engine()
    t = 10 * MIN
    assert vector(engine, "sum(http_requests_total)", t) == {Labels(): 120.0}
    assert vector(engine, "count without (instance) (http_requests_total)", t) == {
        Labels([("job", "api")]): 2.0, Labels([("job", "db")]): 1.0}
    assert vector(engine, "max by (instance) (http_requests_total)", t)[
        Labels([("instance", "0")])] == 60.0
    assert vector(engine, "stddev(http_requests_total)", t)[Labels()] == pytest.approx(
        float(np.std([20.0, 40.0, 60.0])))
    assert vector(engine, "quantile(0.5, http_requests_total)", t) == {Labels(): 40.0}
    assert vector(engine, 'count_values("v", http_requests_total)', t) == {
        Labels([("v", "20")]): 1.0, Labels([("v", "40")]): 1.0, Labels([("v", "60")]): 1.0}


def test_topk_returns_the_largest_first_for_instant_queries() -> None:
    engine = counter_engine()
    value = engine.instant("topk(2, http_requests_total)", 10 * MIN).value
    assert isinstance(value, Vector)
    assert [s.v for s in value.samples] == [60.0, 40.0]


def test_vector_matching_with_group_left_copies_labels_from_the_one_side() -> None:
    engine = Engine(store_with({
        series("cpu", instance="a", mode="user"): [1.0],
        series("cpu", instance="a", mode="idle"): [3.0],
        series("node_info", instance="a", role="db"): [1.0],
    }))
    got = vector(engine, "cpu * on (instance) group_left (role) node_info", 0)
    assert got == {series("cpu", instance="a", mode="user", role="db").without("__name__"): 1.0,
                   series("cpu", instance="a", mode="idle", role="db").without("__name__"): 3.0}
    with pytest.raises(PromQLEvalError, match="many-to-many matching not allowed"):
        engine.instant("node_info * on (instance) cpu", 0)
    with pytest.raises(PromQLEvalError, match="many-to-one matching must be explicit"):
        engine.instant("cpu * on (instance) node_info", 0)


def test_comparison_filters_and_bool_returns_zero_or_one() -> None:
    engine = counter_engine()
    t = 10 * MIN
    assert set(vector(engine, "http_requests_total > 30", t).values()) == {40.0, 60.0}
    assert set(vector(engine, "http_requests_total > bool 30", t).values()) == {0.0, 1.0}
    assert len(vector(engine, 'http_requests_total and on (job) '
                              'http_requests_total{job="db"}', t)) == 1
    scalar = engine.instant("1 + 2 * 3", t).value
    assert isinstance(scalar, Scalar) and scalar.v == 7.0


def test_histogram_quantile_over_classic_buckets() -> None:
    engine = Engine(store_with({
        series("lat_bucket", le="0.1"): [10.0],
        series("lat_bucket", le="0.5"): [30.0],
        series("lat_bucket", le="+Inf"): [40.0],
    }))
    assert vector(engine, "histogram_quantile(0.5, lat_bucket)", 0) == {
        Labels(): pytest.approx(0.1 + 0.4 * (10 / 20))}


def test_subquery_evaluates_at_multiples_of_its_step() -> None:
    engine = Engine(store_with({series("x"): [float(i) for i in range(13)]}, MIN))
    assert vector(engine, "max_over_time(x[5m:2m])", 10 * MIN) == {Labels(): 10.0}
    # (5m, 10m] holds the steps 6m, 8m and 10m
    assert vector(engine, "count_over_time(x[5m:2m])", 10 * MIN) == {Labels(): 3.0}


def test_absent_and_label_functions() -> None:
    engine = counter_engine()
    assert vector(engine, 'absent(nope{job="x"})', 0) == {Labels([("job", "x")]): 1.0}
    got = vector(engine, 'label_replace(http_requests_total{job="db"}, "j", "$1-x", "job", '
                         '"(.*)")', 10 * MIN)
    assert list(got) == [series("http_requests_total", instance="0", job="db", j="db-x")]


def test_date_functions_use_utc() -> None:
    engine = Engine(MemoryStorage())
    assert vector(engine, "hour(vector(3600 * 25))", 0) == {Labels(): 1.0}
    assert vector(engine, "days_in_month(vector(86400 * 40))", 0) == {Labels(): 28.0}


def test_range_query_over_max_points_names_the_limit() -> None:
    engine = Engine(MemoryStorage(), max_points=10)
    with pytest.raises(PromQLLimitError) as error:
        engine.range("vector(1)", 0, 100_000, 1000)
    assert error.value.limit == "max_points"


def test_unsupported_function_is_named() -> None:
    engine = Engine(MemoryStorage())
    with pytest.raises(PromQLUnsupportedError, match="histogram_count"):
        engine.instant("histogram_count(x)", 0)


def test_duplicate_label_sets_after_dropping_the_name_are_an_error() -> None:
    engine = Engine(store_with({series("a", job="x"): [1.0], series("b", job="x"): [2.0]}))
    with pytest.raises(PromQLEvalError, match="same labelset") as error:
        engine.instant('-{job="x"}', 0)
    assert isinstance(error.value, InvalidArgument)


def test_engine_reads_the_real_tsdb(tmp_path: Path) -> None:
    base = 1_700_000_000_000
    with TSDB.open(tmp_path / "db", TSDBOptions()) as db:
        db.append([(series("req_total"), base + i * 15_000, float(i)) for i in range(41)])
        engine = Engine(db)
        got = vector(engine, "rate(req_total[5m])", base + 600_000)
        assert list(got.values()) == [pytest.approx(1 / 15)]


def test_runner_reads_the_script_format() -> None:
    outcomes = Runner("inline").run(
        "load 1m\n  m{a=\"b\"} 0+1x4 _ stale\n\n"
        "eval instant at 2m m\n  m{a=\"b\"} 2\n\n"
        "eval range from 0 to 4m step 2m m * 2\n  {a=\"b\"} 0 4 8\n\n"
        "eval instant at 1m nope(\n  expect fail\n")
    assert [o.status for o in outcomes] == ["passed", "passed", "passed"], outcomes
