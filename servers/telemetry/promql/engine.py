"""The PromQL evaluator: Prometheus 3.x semantics over a :class:`~..tsdb.api.Storage`.

``Engine(storage).instant(query, time_ms)`` and ``.range(query, start_ms, end_ms,
step_ms)`` return a :class:`~.values.Result`. Every node is evaluated once for all the
steps of the query (see :mod:`.columns`), not once per step, so numpy carries the work.

The rules followed, as in Prometheus 3:

* an instant selector takes, per step, a series' newest sample in ``(t - lookback, t]``
  unless that sample is a staleness marker; a range selector takes every sample in the
  left-open window ``(t - range, t]``, stale markers dropped;
* ``offset`` moves the window back, ``@`` pins it (``@ start()`` / ``@ end()`` are the
  range query's start and end);
* a subquery evaluates its expression at the multiples of its step (the engine's
  ``default_subquery_step_ms`` when not given) inside each window;
* the metric name is dropped by arithmetic, ``bool`` comparisons and most functions at
  the end of the query (delayed name removal), and two series left with the same label
  set at the same step are an error;
* a range query's steps are ``start, start + step, ... <= end``.

Resolution: a query is served from one tier of the store (raw, 1-minute or 1-hour
rollups, :mod:`..tsdb.tiers`): ``auto`` picks the finest tier that holds the oldest time
the query reaches back to; the result says which served it. On a rollup tier a selector
reads the rollup component its function needs — ``min_over_time`` the minimums,
``max_over_time`` the maximums, ``sum_over_time`` the sums, ``count_over_time`` the sums
of the counts, ``avg_over_time`` the bucket means, ``rate`` / ``increase`` the sum of the
increases of the buckets ending in the window (resets already accounted; no
extrapolation: buckets cover the window), ``irate`` the last bucket's increase over its
step, anything else each bucket's last value — at each bucket's last millisecond; a range shorter than two of the tier's steps is widened to two (an info
annotation says so; ``increase`` and ``delta`` are scaled back to the asked range) and
the lookback of an instant selector grows by one step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..tsdb.api import RollupSeries, Series, Storage, TieredStorage
from ..tsdb.chunks import Float64s, Int64s
from ..tsdb.labels import Labels, Matcher
from ..tsdb.labels import MatchOp as StoreMatchOp
from .ast import (
    METRIC_NAME,
    AggregateExpr,
    AtEdge,
    BinaryExpr,
    Call,
    Expr,
    MatrixSelector,
    NumberLiteral,
    ParenExpr,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    UnaryOp,
    ValueType,
    VectorSelector,
    format_duration,
)
from .columns import Col, EvalValue, RangeVal, Raw, Sc, Str, is_stale, merge
from .parser import parse
from .values import (
    Matrix,
    PromQLEvalError,
    PromQLLimitError,
    Result,
    Sample,
    Scalar,
    SeriesPoints,
    String,
    Value,
    Vector,
)

__all__ = ["Engine", "Evaluator", "PromQLEvalError", "PromQLLimitError", "Result"]


@dataclass(frozen=True)
class EngineOptions:
    lookback_delta_ms: int = 300_000
    max_points: int = 11_000
    max_samples: int = 50_000_000
    default_subquery_step_ms: int = 60_000


class Engine:
    """Evaluates PromQL against ``storage``.

    ``max_points``: most steps a range query may have (Prometheus's 11,000 points per
    series); ``max_samples``: most samples one query may read from the store.
    """

    def __init__(self, storage: Storage, *, lookback_delta_ms: int = 300_000,
                 max_points: int = 11_000, max_samples: int = 50_000_000,
                 default_subquery_step_ms: int = 60_000) -> None:
        if lookback_delta_ms <= 0 or max_points <= 0 or max_samples <= 0:
            raise PromQLEvalError("lookback_delta_ms, max_points and max_samples must be > 0")
        if default_subquery_step_ms <= 0:
            raise PromQLEvalError("default_subquery_step_ms must be > 0")
        self.storage = storage
        self.options = EngineOptions(lookback_delta_ms, max_points, max_samples,
                                     default_subquery_step_ms)

    @staticmethod
    def _parse(query: str | Expr) -> tuple[Expr, str]:
        if isinstance(query, Expr):
            return query, str(query)
        return parse(query), query

    def resolution_for(self, expr: Expr, start_ms: int, asked: str = "auto") -> str:
        """The tier a query is served from: ``asked`` unless it is ``auto``, which takes
        the finest tier holding the oldest time the query reaches back to (the tier
        reaching furthest back when none holds it)."""
        if asked not in RESOLUTIONS:
            raise PromQLEvalError(f"unknown resolution {asked!r}: expected one of "
                                  f"{', '.join(RESOLUTIONS)}")
        storage = self.storage
        if not isinstance(storage, TieredStorage):
            if asked not in ("auto", "raw"):
                raise PromQLEvalError(f"resolution {asked!r}: this store keeps raw samples "
                                      "only")
            return "raw"
        if asked != "auto":
            return asked
        earliest = start_ms - reach_ms(expr, self.options.lookback_delta_ms)
        held = {tier: storage.tier_min_time(tier) for tier in TIERS}
        for tier in TIERS:
            oldest = held[tier]
            if oldest is not None and oldest <= earliest:
                return tier
        if held["raw"] is None or all(held[t] is None for t in TIERS[1:]):
            return "raw"
        return min((t for t in TIERS if held[t] is not None),
                   key=lambda t: (held[t], TIERS.index(t)))

    def instant(self, query: str | Expr, time_ms: int, resolution: str = "auto") -> Result:
        expr, text = self._parse(query)
        ev = Evaluator(self, time_ms, time_ms, 0, text,
                       self.resolution_for(expr, time_ms, resolution))
        ts = np.array([time_ms], dtype=np.int64)
        value = ev.eval(expr, ts)
        return ev.result(_instant_value(value, time_ms))

    def range(self, query: str | Expr, start_ms: int, end_ms: int, step_ms: int,
              resolution: str = "auto") -> Result:
        expr, text = self._parse(query)
        if step_ms <= 0:
            raise PromQLEvalError("zero or negative query resolution step widths are not "
                                  "accepted. Try a positive integer")
        if end_ms < start_ms:
            raise PromQLEvalError("end timestamp must not be before start time")
        points = (end_ms - start_ms) // step_ms + 1
        if points > self.options.max_points:
            raise PromQLLimitError(
                "max_points", f"exceeded maximum resolution of {self.options.max_points} "
                "points per timeseries. Try decreasing the query resolution (?step=XX)")
        if expr.type not in (ValueType.SCALAR, ValueType.VECTOR):
            raise PromQLEvalError(f"invalid expression type {expr.type.documented!r} for "
                                  "range query, must be Scalar or instant Vector")
        ev = Evaluator(self, start_ms, end_ms, step_ms, text,
                       self.resolution_for(expr, start_ms, resolution))
        ts = start_ms + step_ms * np.arange(points, dtype=np.int64)
        value = ev.eval(expr, ts)
        return ev.result(_range_value(value, ts))


def _instant_value(value: EvalValue, time_ms: int) -> Value:
    if isinstance(value, Sc):
        return Scalar(time_ms, float(value.values[0]))
    if isinstance(value, Str):
        return String(time_ms, value.value)
    if isinstance(value, RangeVal):
        out = []
        for raw in value.series:
            lo, hi = value.bounds(raw)
            if hi[0] > lo[0]:
                labels = raw.labels.without(METRIC_NAME) if raw.drop_name else raw.labels
                out.append(SeriesPoints(labels, raw.ts[lo[0]:hi[0]], raw.vs[lo[0]:hi[0]]))
        if len({s.labels for s in out}) < len(out):
            raise PromQLEvalError("vector cannot contain metrics with the same labelset")
        return Matrix(out)
    cols = merge(value, by_key=True)
    return Vector([Sample(c.labels, time_ms, float(c.values[0])) for c in cols
                   if c.present[0]])


def _range_value(value: EvalValue, ts: Int64s) -> Matrix:
    if isinstance(value, Sc):
        return Matrix([SeriesPoints(Labels(), ts, value.values)])
    if not isinstance(value, list):
        raise PromQLEvalError("range queries need a scalar or instant vector expression")
    cols = merge(value, by_key=True)
    out = [SeriesPoints(c.labels, ts[c.present], c.values[c.present]) for c in cols
           if c.present.any()]
    out.sort(key=lambda s: s.labels)
    return Matrix(out)


TIERS = ("raw", "1m", "1h")
RESOLUTIONS = ("auto", *TIERS)
TIER_STEP_MS = {"1m": 60_000, "1h": 3_600_000}
# the rollup component a range selector reads under each function (the rest: "last")
_COMPONENT = {"min_over_time": "min", "max_over_time": "max", "sum_over_time": "sum",
              "count_over_time": "count", "avg_over_time": "mean", "rate": "increase",
              "increase": "increase", "irate": "increase"}


def reach_ms(expr: Expr, lookback_ms: int) -> int:
    """How far before its evaluation time ``expr`` reads samples (offsets, ranges,
    subqueries and the lookback)."""
    if isinstance(expr, VectorSelector):
        return expr.offset_ms + lookback_ms
    if isinstance(expr, MatrixSelector):
        return expr.selector.offset_ms + expr.range_ms
    if isinstance(expr, SubqueryExpr):
        return expr.offset_ms + expr.range_ms + reach_ms(expr.expr, lookback_ms)
    return max((reach_ms(child, lookback_ms) for child in expr.children()), default=0)


def _component(r: RollupSeries, name: str) -> Float64s:
    roll = r.rollup
    if name == "mean":
        mean: Float64s = roll.sum / np.maximum(roll.count, 1)
        return mean
    if name == "count":
        return roll.count.astype(np.float64)
    picked: Float64s = getattr(roll, name)
    return picked


def _store_matchers(vs: VectorSelector) -> list[Matcher]:
    return [Matcher(m.name, StoreMatchOp(m.op.value), m.value) for m in vs.matchers]


class Evaluator:
    """One query's evaluation: the store, the query's range (for ``@ start()``/``end()``)
    and the annotations collected."""

    def __init__(self, engine: Engine, start_ms: int, end_ms: int, step_ms: int,
                 text: str, resolution: str = "raw") -> None:
        self.storage = engine.storage
        self.resolution = resolution
        self.function: str | None = None  # the innermost function being evaluated
        self.options = engine.options
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.step_ms = step_ms
        self.text = text
        self.warnings: list[str] = []
        self.infos: list[str] = []
        self.samples = 0

    @property
    def is_range(self) -> bool:
        return self.step_ms > 0

    # -- annotations -------------------------------------------------------------------

    def _position(self, node: Expr) -> str:
        start = node.span.start
        before = self.text[:start]
        line = before.count("\n") + 1
        column = start - (before.rfind("\n") + 1) + 1
        return f"({line}:{column})"

    def warn(self, message: str, node: Expr) -> None:
        text = f"PromQL warning: {message} {self._position(node)}"
        if text not in self.warnings:
            self.warnings.append(text)

    def info(self, message: str, node: Expr) -> None:
        text = f"PromQL info: {message} {self._position(node)}"
        if text not in self.infos:
            self.infos.append(text)

    def result(self, value: Value) -> Result:
        return Result(value, list(self.warnings), list(self.infos), self.resolution)

    def _rollups(self, vs: VectorSelector, mint: int, maxt: int,
                 component: str) -> list[RollupSeries]:
        storage = self.storage
        assert isinstance(storage, TieredStorage)
        needed = ("sum", "count") if component == "mean" else (component,)
        return list(storage.select_rollup(self.resolution, _store_matchers(vs), mint, maxt,
                                          needed))

    # -- evaluation --------------------------------------------------------------------

    def eval(self, expr: Expr, ts: Int64s) -> EvalValue:
        handler = _HANDLERS.get(type(expr))
        if handler is None:
            raise PromQLEvalError(f"unexpected expression {type(expr).__name__}")
        return handler(self, expr, ts)

    def vector(self, expr: Expr, ts: Int64s) -> list[Col]:
        value = self.eval(expr, ts)
        if not isinstance(value, list):
            raise PromQLEvalError(f"expected an instant vector, got {expr.type.documented}")
        return value

    def scalar(self, expr: Expr, ts: Int64s) -> Float64s:
        value = self.eval(expr, ts)
        if not isinstance(value, Sc):
            raise PromQLEvalError(f"expected a scalar, got {expr.type.documented}")
        return value.values

    def string(self, expr: Expr, ts: Int64s) -> str:
        value = self.eval(expr, ts)
        if not isinstance(value, Str):
            raise PromQLEvalError(f"expected a string, got {expr.type.documented}")
        return value.value

    def range_arg(self, expr: Expr, ts: Int64s) -> RangeVal:
        value = self.eval(expr, ts)
        if not isinstance(value, RangeVal):
            raise PromQLEvalError(f"expected a range vector, got {expr.type.documented}")
        return value

    def at_ms(self, at: int | AtEdge | None) -> int | None:
        if at is None or isinstance(at, int):
            return at
        return self.start_ms if at is AtEdge.START else self.end_ms

    def effective_times(self, at: int | AtEdge | None, offset_ms: int,
                        ts: Int64s) -> Int64s:
        pinned = self.at_ms(at)
        base = ts if pinned is None else np.full(len(ts), pinned, dtype=np.int64)
        shifted: Int64s = base - offset_ms
        return shifted

    def _count(self, n: int) -> None:
        self.samples += n
        if self.samples > self.options.max_samples:
            raise PromQLLimitError("max_samples", "query processing would load too many "
                                   f"samples into memory in query execution (max_samples "
                                   f"{self.options.max_samples})")

    def select_instant(self, vs: VectorSelector,
                       ts: Int64s) -> list[tuple[Col, Int64s]]:
        """Per series, its value at each step and the timestamp of the sample used."""
        times = self.effective_times(vs.at, vs.offset_ms, ts)
        lookback = self.options.lookback_delta_ms + TIER_STEP_MS.get(self.resolution, 0)
        mint, maxt = int(times.min()) - lookback + 1, int(times.max())
        out = []
        if self.resolution != "raw":
            found = [Series(r.labels, r.times, r.rollup.last)
                     for r in self._rollups(vs, mint, maxt, "last")]
        else:
            found = list(self.storage.select(_store_matchers(vs), mint, maxt))
        for series in found:
            self._count(len(series.timestamps))
            if not len(series.timestamps):
                continue
            index = np.searchsorted(series.timestamps, times, side="right") - 1
            clipped = np.clip(index, 0, None)
            sample_ts = series.timestamps[clipped]
            values = series.values[clipped]
            present = (index >= 0) & (sample_ts > times - lookback) & ~is_stale(values)
            if present.any():
                out.append((Col(series.labels, np.where(present, values, np.nan), present),
                            sample_ts))
        return out

    def select_range(self, ms: MatrixSelector, ts: Int64s) -> RangeVal:
        vs = ms.selector
        ends = self.effective_times(vs.at, vs.offset_ms, ts)
        if self.resolution != "raw":
            return self._select_rollup_range(ms, ends)
        mint, maxt = int(ends.min()) - ms.range_ms + 1, int(ends.max())
        raws = []
        for series in self.storage.select(_store_matchers(vs), mint, maxt):
            self._count(len(series.timestamps))
            keep = ~is_stale(series.values)
            if keep.all():  # the common case: no stale marker, nothing to copy
                raws.append(Raw(series.labels, series.timestamps, series.values))
            elif keep.any():
                raws.append(Raw(series.labels, series.timestamps[keep], series.values[keep]))
        return RangeVal(raws, ends, ms.range_ms, ms)

    def _select_rollup_range(self, ms: MatrixSelector, ends: Int64s) -> RangeVal:
        step = TIER_STEP_MS[self.resolution]
        range_ms = ms.range_ms
        if range_ms < 2 * step:
            range_ms = 2 * step
            self.info(f"the range {format_duration(ms.range_ms)} is shorter than two steps "
                      f"of the {self.resolution} tier serving this query: widened to "
                      f"{format_duration(range_ms)}", ms)
        mint, maxt = int(ends.min()) - range_ms + 1, int(ends.max())
        component = _COMPONENT.get(self.function or "", "last")
        raws = []
        for r in self._rollups(ms.selector, mint, maxt, component):
            self._count(len(r.rollup))
            raws.append(Raw(r.labels, r.times, _component(r, component)))
        return RangeVal(raws, ends, range_ms, ms,
                        asked_ms=ms.range_ms if range_ms != ms.range_ms else 0,
                        rollup_step_ms=step if component == "increase" else 0)

    def subquery(self, sq: SubqueryExpr, ts: Int64s) -> RangeVal:
        step = sq.step_ms or self.options.default_subquery_step_ms
        ends = self.effective_times(sq.at, sq.offset_ms, ts)
        low = int(ends.min()) - sq.range_ms
        first = (low // step + 1) * step
        grid = np.arange(first, int(ends.max()) + 1, step, dtype=np.int64)
        raws: list[Raw] = []
        if len(grid):
            if len(grid) > self.options.max_samples:
                raise PromQLLimitError("max_samples", "subquery has too many steps")
            inner = self.eval(sq.expr, grid)
            if isinstance(inner, Sc):
                raws.append(Raw(Labels(), grid, inner.values))
            elif isinstance(inner, list):
                for col in merge(inner):
                    if col.present.any():
                        raws.append(Raw(col.labels, grid[col.present],
                                        col.values[col.present], col.drop_name))
            else:
                raise PromQLEvalError("subquery expression must be a scalar or an instant "
                                      "vector")
        return RangeVal(raws, ends, sq.range_ms, sq)


# -- node handlers -----------------------------------------------------------------------

def _number(ev: Evaluator, e: Expr, ts: Int64s) -> EvalValue:
    assert isinstance(e, NumberLiteral)
    return Sc(np.full(len(ts), e.value))


def _string(ev: Evaluator, e: Expr, ts: Int64s) -> EvalValue:
    assert isinstance(e, StringLiteral)
    return Str(e.value)


def _paren(ev: Evaluator, e: Expr, ts: Int64s) -> EvalValue:
    assert isinstance(e, ParenExpr)
    return ev.eval(e.expr, ts)


def _unary(ev: Evaluator, e: Expr, ts: Int64s) -> EvalValue:
    assert isinstance(e, UnaryExpr)
    value = ev.eval(e.expr, ts)
    if e.op is UnaryOp.PLUS:
        return value
    if isinstance(value, Sc):
        return Sc(-value.values)
    if isinstance(value, list):
        return merge([Col(c.labels, -c.values, c.present, True) for c in value])
    raise PromQLEvalError("unary minus needs a scalar or an instant vector")


def _vector_selector(ev: Evaluator, e: Expr, ts: Int64s) -> EvalValue:
    assert isinstance(e, VectorSelector)
    return [col for col, _ in ev.select_instant(e, ts)]


def _matrix_selector(ev: Evaluator, e: Expr, ts: Int64s) -> EvalValue:
    assert isinstance(e, MatrixSelector)
    return ev.select_range(e, ts)


def _subquery(ev: Evaluator, e: Expr, ts: Int64s) -> EvalValue:
    assert isinstance(e, SubqueryExpr)
    return ev.subquery(e, ts)


def _call(ev: Evaluator, e: Expr, ts: Int64s) -> EvalValue:
    from .functions import call

    assert isinstance(e, Call)
    return call(ev, e, ts)


def _aggregate(ev: Evaluator, e: Expr, ts: Int64s) -> EvalValue:
    from .aggregations import aggregate

    assert isinstance(e, AggregateExpr)
    return aggregate(ev, e, ts)


def _binary(ev: Evaluator, e: Expr, ts: Int64s) -> EvalValue:
    from .binary import binary

    assert isinstance(e, BinaryExpr)
    return binary(ev, e, ts)


_HANDLERS: dict[type, Callable[[Evaluator, Expr, Int64s], EvalValue]] = {
    NumberLiteral: _number, StringLiteral: _string, ParenExpr: _paren, UnaryExpr: _unary,
    VectorSelector: _vector_selector, MatrixSelector: _matrix_selector,
    SubqueryExpr: _subquery, Call: _call, AggregateExpr: _aggregate, BinaryExpr: _binary,
}
