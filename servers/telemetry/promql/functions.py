"""PromQL functions, as Prometheus 3.x computes them for float samples.

Each function evaluates its own arguments (so ``timestamp(selector)`` and ``absent``
can look at the selector itself). Range functions see, per series, the index range of
its samples in each step's window and are vectorised where the result allows it
(``rate``, ``count_over_time``, ``changes``...) or loop over the windows otherwise.
Native-histogram functions, ``info`` and the hash-based ``limitk``/``limit_ratio`` are
not supported: they raise :class:`~.values.PromQLUnsupportedError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..re2 import compile_regex
from ..tsdb.chunks import Float64s, Int64s
from ..tsdb.labels import Labels
from .aggregations import format_g, kahan_inc, kahan_sum_scalar, mean_scalar, quantile
from .ast import (
    METRIC_NAME,
    Call,
    Expr,
    MatchOp,
    MatrixSelector,
    ParenExpr,
    VectorSelector,
)
from .columns import Bools, Col, EvalValue, RangeVal, Raw, Sc, merge, nan_column
from .values import PromQLEvalError, PromQLUnsupportedError

if TYPE_CHECKING:
    from .engine import Evaluator

Fn = Callable[["Evaluator", Call, Int64s], EvalValue]
_FUNCS: dict[str, Fn] = {}


def call(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    fn = _FUNCS.get(e.func.name)
    if fn is None:
        raise PromQLUnsupportedError(f"function {e.func.name}()")
    if ev.resolution != "raw" and e.func.name == "count_over_time":
        fn = _FUNCS["sum_over_time"]  # a rollup's counts, summed
    outer, ev.function = ev.function, e.func.name
    try:
        return fn(ev, e, ts)
    finally:
        ev.function = outer


def _register(*names: str) -> Callable[[Fn], Fn]:
    def wrap(fn: Fn) -> Fn:
        for name in names:
            _FUNCS[name] = fn
        return fn
    return wrap


def _unwrap(expr: Expr) -> Expr:
    while isinstance(expr, ParenExpr):
        expr = expr.expr
    return expr


# -- element-wise functions --------------------------------------------------------------

_MATH: dict[str, Callable[[Float64s], Float64s]] = {
    "abs": np.abs, "ceil": np.ceil, "floor": np.floor, "exp": np.exp, "sqrt": np.sqrt,
    "ln": np.log, "log2": np.log2, "log10": np.log10, "sgn": np.sign,
    "acos": np.arccos, "acosh": np.arccosh, "asin": np.arcsin, "asinh": np.arcsinh,
    "atan": np.arctan, "atanh": np.arctanh, "cos": np.cos, "cosh": np.cosh, "sin": np.sin,
    "sinh": np.sinh, "tan": np.tan, "tanh": np.tanh, "deg": np.degrees, "rad": np.radians,
}


def _map(cols: list[Col], fn: Callable[[Float64s], Float64s]) -> list[Col]:
    with np.errstate(all="ignore"):
        return merge([Col(c.labels, fn(c.values), c.present, True) for c in cols])


@_register(*_MATH)
def _math(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    return _map(ev.vector(e.args[0], ts), _MATH[e.func.name])


@_register("round")
def _round(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    cols = ev.vector(e.args[0], ts)
    nearest = ev.scalar(e.args[1], ts) if len(e.args) > 1 else np.ones(len(ts))
    with np.errstate(all="ignore"):
        inverse = 1.0 / nearest
    return _map(cols, lambda v: np.floor(v * inverse + 0.5) / inverse)


@_register("clamp", "clamp_min", "clamp_max")
def _clamp(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    cols = ev.vector(e.args[0], ts)
    name = e.func.name
    low = ev.scalar(e.args[1], ts) if name != "clamp_max" else np.full(len(ts), -np.inf)
    if name == "clamp":
        high = ev.scalar(e.args[2], ts)
    elif name == "clamp_max":
        high = ev.scalar(e.args[1], ts)
    else:
        high = np.full(len(ts), np.inf)
    valid = ~(high < low)
    out = []
    for c in cols:
        if name == "clamp_min":
            values = np.maximum(c.values, low)
        elif name == "clamp_max":
            values = np.minimum(c.values, high)
        else:
            values = np.maximum(low, np.minimum(high, c.values))
        present = c.present & valid
        if present.any():
            out.append(Col(c.labels, values, present, True))
    return merge(out)


# -- scalars, vectors, time ------------------------------------------------------------

@_register("time")
def _time(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    return Sc(ts / 1000.0)


@_register("pi")
def _pi(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    return Sc(np.full(len(ts), math.pi))


@_register("start", "end", "step", "range")
def _query_bounds(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    value = {"start": ev.start_ms / 1000, "end": ev.end_ms / 1000, "step": ev.step_ms / 1000,
             "range": (ev.end_ms - ev.start_ms) / 1000}[e.func.name]
    return Sc(np.full(len(ts), value))


@_register("min_of", "max_of")
def _min_max_of(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    a, b = ev.scalar(e.args[0], ts), ev.scalar(e.args[1], ts)
    return Sc(np.minimum(a, b) if e.func.name == "min_of" else np.maximum(a, b))


@_register("vector")
def _vector(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    return [Col(Labels(), ev.scalar(e.args[0], ts), np.ones(len(ts), dtype=bool))]


@_register("scalar")
def _scalar(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    cols = ev.vector(e.args[0], ts)
    out = nan_column(len(ts))
    if cols:
        present = np.stack([c.present for c in cols])
        single = present.sum(axis=0) == 1
        values = np.stack([c.values for c in cols])
        picked = values[present.argmax(axis=0), np.arange(len(ts))]
        out = np.where(single, picked, np.nan)
    return Sc(out)


@_register("timestamp")
def _timestamp(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    arg = _unwrap(e.args[0])
    if isinstance(arg, VectorSelector):
        return merge([Col(c.labels, sample_ts / 1000.0, c.present, True)
                      for c, sample_ts in ev.select_instant(arg, ts)])
    return merge([Col(c.labels, ts / 1000.0, c.present, True)
                  for c in ev.vector(e.args[0], ts)])


def _date_parts(seconds: Float64s, part: str) -> Float64s:
    with np.errstate(all="ignore"):
        finite = np.isfinite(seconds)
        secs = np.where(finite, seconds, 0).astype(np.int64)
    moment = secs.astype("datetime64[s]")
    days = moment.astype("datetime64[D]")
    months = moment.astype("datetime64[M]")
    if part == "minute":
        out = (secs // 60) % 60
    elif part == "hour":
        out = (secs // 3600) % 24
    elif part == "day_of_week":
        out = (days.astype(np.int64) + 4) % 7
    elif part == "day_of_month":
        out = (days - months.astype("datetime64[D]")).astype(np.int64) + 1
    elif part == "day_of_year":
        years = moment.astype("datetime64[Y]")
        out = (days - years.astype("datetime64[D]")).astype(np.int64) + 1
    elif part == "days_in_month":
        out = ((months + 1).astype("datetime64[D]")
               - months.astype("datetime64[D]")).astype(np.int64)
    elif part == "month":
        out = months.astype(np.int64) % 12 + 1
    else:
        out = moment.astype("datetime64[Y]").astype(np.int64) + 1970
    result: Float64s = np.where(finite, out.astype(np.float64), np.nan)
    return result


@_register("minute", "hour", "day_of_week", "day_of_month", "day_of_year",
           "days_in_month", "month", "year")
def _date(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    if e.args:
        cols = ev.vector(e.args[0], ts)
    else:
        cols = [Col(Labels(), ts / 1000.0, np.ones(len(ts), dtype=bool))]
    return _map(cols, lambda v: _date_parts(v, e.func.name))


# -- ordering and labels ---------------------------------------------------------------

@_register("sort", "sort_desc")
def _sort(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    cols = ev.vector(e.args[0], ts)
    if ev.is_range:
        ev.warn("sort is ineffective for range queries since results are always ordered "
                "by labels", e)
        return cols
    descending = e.func.name == "sort_desc"

    def key(c: Col) -> tuple[bool, float]:
        v = float(c.values[0])
        return (True, 0.0) if math.isnan(v) else (False, -v if descending else v)
    return sorted(cols, key=key)


def _natural_key(text: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part)
            for part in re.split(r"(\d+)", text) if part]


@_register("sort_by_label", "sort_by_label_desc")
def _sort_by_label(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    cols = ev.vector(e.args[0], ts)
    names = [ev.string(a, ts) for a in e.args[1:]]
    if ev.is_range:
        ev.warn("sort is ineffective for range queries since results are always ordered "
                "by labels", e)
        return cols
    descending = e.func.name == "sort_by_label_desc"
    ordered = sorted(cols, key=lambda c: c.labels, reverse=descending)
    ordered.sort(key=lambda c: [_natural_key(c.labels.get(n, "")) for n in names],
                 reverse=descending)
    return ordered


def _check_label_name(name: str, function: str, what: str) -> None:
    try:
        name.encode()
    except UnicodeEncodeError:
        raise PromQLEvalError(f"invalid label name {_go_quote(name)}") from None
    if not name:
        raise PromQLEvalError(f"invalid {what} label name in {function}(): {name}")


def _go_quote(text: str) -> str:
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char in '"\\':
            out.append("\\" + char)
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


_TEMPLATE = re.compile(r"\$(?:\$|\{([a-zA-Z0-9_]+)\}|([a-zA-Z0-9_]+))")


def expand(template: str, match: re.Match[str]) -> str:
    """Go's ``regexp.Expand``: ``$1``, ``${1}``, ``$name``; unknown groups are empty."""
    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(2)
        try:
            value = match.group(int(name)) if name.isdigit() else match.group(name)
        except IndexError:
            return ""
        return value or ""
    return _TEMPLATE.sub(one, template)



@_register("label_replace")
def _label_replace(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    cols = ev.vector(e.args[0], ts)
    dst, replacement, src, pattern = (ev.string(a, ts) for a in e.args[1:5])
    try:
        regex = compile_regex(pattern)
    except re.error as error:
        raise PromQLEvalError(f"invalid regular expression in label_replace(): {pattern}: "
                              f"{error}") from error
    _check_label_name(dst, "label_replace", "destination")
    out = []
    for c in cols:
        match = regex.fullmatch(c.labels.get(src, ""))
        if match is None:
            out.append(c)
            continue
        value = expand(replacement, match)
        pairs = [p for p in c.labels.pairs if p[0] != dst]
        pairs.append((dst, value))
        out.append(Col(Labels(pairs), c.values, c.present,
                       c.drop_name and dst != METRIC_NAME))
    return merge(out)


@_register("label_join")
def _label_join(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    cols = ev.vector(e.args[0], ts)
    dst, separator = ev.string(e.args[1], ts), ev.string(e.args[2], ts)
    sources = [ev.string(a, ts) for a in e.args[3:]]
    for name in sources:
        _check_label_name(name, "label_join", "source")
    _check_label_name(dst, "label_join", "destination")
    out = []
    for c in cols:
        value = separator.join(c.labels.get(name, "") for name in sources)
        pairs = [p for p in c.labels.pairs if p[0] != dst]
        pairs.append((dst, value))
        out.append(Col(Labels(pairs), c.values, c.present,
                       c.drop_name and dst != METRIC_NAME))
    return merge(out)


# -- absent ----------------------------------------------------------------------------

def _absent_labels(expr: Expr) -> Labels:
    if isinstance(expr, MatrixSelector):
        expr = expr.selector
    if not isinstance(expr, VectorSelector):
        return Labels()
    labels: dict[str, str] = {}
    seen: set[str] = set()
    for m in expr.matchers:
        if m.name == METRIC_NAME:
            continue
        if m.op is MatchOp.EQ and m.name not in seen:
            labels[m.name] = m.value
            seen.add(m.name)
        else:
            labels.pop(m.name, None)
    return Labels(labels.items())


@_register("absent")
def _absent(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    cols = ev.vector(e.args[0], ts)
    some = np.zeros(len(ts), dtype=bool)
    for c in cols:
        some |= c.present
    if some.all():
        return []
    return [Col(_absent_labels(e.args[0]), np.ones(len(ts)), ~some)]


@_register("absent_over_time")
def _absent_over_time(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    rv = ev.range_arg(e.args[0], ts)
    some = np.zeros(len(ts), dtype=bool)
    for raw in rv.series:
        lo, hi = rv.bounds(raw)
        some |= hi > lo
    if some.all():
        return []
    return [Col(_absent_labels(e.args[0]), np.ones(len(ts)), ~some)]


# -- range-vector functions --------------------------------------------------------------

Window = Callable[[Raw, Int64s, Int64s, Int64s], tuple[Float64s, Bools]]


def _over_range(ev: Evaluator, e: Call, ts: Int64s, rv: RangeVal, compute: Window, *,
                keep_name: bool = False) -> list[Col]:
    out = []
    for raw in rv.series:
        lo, hi = rv.bounds(raw)
        with np.errstate(all="ignore"):
            values, present = compute(raw, lo, hi, rv.ends)
        if present.any():
            out.append(Col(raw.labels, values, present,
                           raw.drop_name if keep_name else True))
    return merge(out)


def _per_window(raw: Raw, lo: Int64s, hi: Int64s, minimum: int,
                fn: Callable[[Int64s, Float64s, int], float]) -> tuple[Float64s, Bools]:
    n = len(lo)
    values = nan_column(n)
    present = (hi - lo) >= minimum
    for i in np.flatnonzero(present):
        a, b = int(lo[i]), int(hi[i])
        values[i] = fn(raw.ts[a:b], raw.vs[a:b], int(i))
    return values, present


@_register("rate", "increase", "delta")
def _rate(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    rv = ev.range_arg(e.args[0], ts)
    counter = e.func.name != "delta"
    is_rate = e.func.name == "rate"
    if counter:
        for raw in rv.series:
            name = raw.labels.get(METRIC_NAME, "")
            if name and not raw.drop_name and not name.endswith(
                    ("_total", "_sum", "_count", "_bucket")) and len(raw.ts):
                lo, hi = rv.bounds(raw)
                if (hi > lo).any():
                    ev.info("metric might not be a counter, name does not end in "
                            f"_total/_sum/_count/_bucket: {_go_quote(name)}", e.args[0])

    if rv.rollup_step_ms and counter and len(rv.series) >= BATCH_MIN_SERIES:
        return _rollup_increase_many(rv, is_rate)
    if not rv.rollup_step_ms and len(rv.series) >= BATCH_MIN_SERIES:
        batched = extrapolated_rate_many(rv.series, rv.ends, rv.range_ms, counter, is_rate)
        if batched is not None:
            values_2d, present_2d = batched
            cols = [Col(raw.labels, values_2d[i], present_2d[i], True)
                    for i, raw in enumerate(rv.series) if present_2d[i].any()]
            return merge(cols)

    def compute(raw: Raw, lo: Int64s, hi: Int64s, ends: Int64s) -> tuple[Float64s, Bools]:
        if rv.rollup_step_ms and counter:
            # a rollup tier's buckets carry their increases: a window's increase is the
            # sum of those of the buckets ending in it, no extrapolation needed
            present = hi > lo
            total, comp = kahan_windows(raw.vs, lo, hi)
            values: Float64s = total + comp
            if is_rate:
                values = values / (rv.range_ms / 1000.0)
        else:
            values, present = extrapolated_rate(raw, lo, hi, ends, rv.range_ms, counter,
                                                is_rate)
        if rv.asked_ms and not is_rate:  # a rollup tier widened the range
            values = values * (rv.asked_ms / rv.range_ms)
        return values, present
    return _over_range(ev, e, ts, rv, compute)


def _rollup_increase_many(rv: RangeVal, is_rate: bool) -> list[Col]:
    """``rate`` / ``increase`` over a rollup tier's bucket increases for many series at
    once: every series' buckets end to end in one array and every window of every series
    summed in one :func:`kahan_windows` (the same additions, in the same order, as one
    series at a time)."""
    sizes = [len(raw.vs) for raw in rv.series]
    offsets = np.cumsum([0, *sizes[:-1]])
    bounds = [rv.bounds(raw) for raw in rv.series]
    lo = np.concatenate([b[0] + off for b, off in zip(bounds, offsets.tolist())])
    hi = np.concatenate([b[1] + off for b, off in zip(bounds, offsets.tolist())])
    with np.errstate(all="ignore"):
        total, comp = kahan_windows(np.concatenate([raw.vs for raw in rv.series]), lo, hi)
        values: Float64s = total + comp
        if is_rate:
            values = values / (rv.range_ms / 1000.0)
        elif rv.asked_ms:  # the tier widened the range
            values = values * (rv.asked_ms / rv.range_ms)
    steps = len(rv.ends)
    values_2d, present_2d = values.reshape(-1, steps), (hi > lo).reshape(-1, steps)
    cols = [Col(raw.labels, values_2d[i], present_2d[i], True)
            for i, raw in enumerate(rv.series) if present_2d[i].any()]
    return merge(cols)


def extrapolated_rate(raw: Raw, lo: Int64s, hi: Int64s, ends: Int64s, range_ms: int,
                      counter: bool, is_rate: bool) -> tuple[Float64s, Bools]:
    """Prometheus's ``extrapolatedRate`` for every step's window at once."""
    count = hi - lo
    present = count >= 2
    if not present.any() or not len(raw.ts):
        return nan_column(len(lo)), present
    last = len(raw.ts) - 1
    first_i = np.clip(lo, 0, last)
    last_i = np.clip(hi - 1, 0, last)
    first_v, last_v = raw.vs[first_i], raw.vs[last_i]
    first_t, last_t = raw.ts[first_i], raw.ts[last_i]
    result = last_v - first_v
    if counter and len(raw.vs) > 1:
        drops = np.zeros(len(raw.vs))
        drops[1:] = np.where(raw.vs[1:] < raw.vs[:-1], raw.vs[:-1], 0.0)
        resets = np.cumsum(drops > 0)   # exact: which windows hold a reset
        correction = np.zeros(len(lo))
        for i in np.flatnonzero(present & (resets[last_i] != resets[first_i])):
            correction[i] = float(np.sum(drops[int(lo[i]) + 1:int(hi[i])]))
        result = result + correction
    range_start = ends - range_ms
    to_start = (first_t - range_start) / 1000.0
    to_end = (ends - last_t) / 1000.0
    sampled = (last_t - first_t) / 1000.0
    average = sampled / np.maximum(count - 1, 1)
    threshold = average * 1.1
    to_start = np.where(to_start >= threshold, average / 2, to_start)
    if counter:
        to_zero = np.where((result > 0) & (first_v >= 0), sampled * (first_v / result),
                           to_start)
        to_start = np.where(to_zero < to_start, to_zero, to_start)
    to_end = np.where(to_end >= threshold, average / 2, to_end)
    factor = (sampled + to_start + to_end) / sampled
    if is_rate:
        factor = factor / (range_ms / 1000.0)
    values: Float64s = result * factor
    return values, present


BATCH_MIN_SERIES = 8   # from this many series, the rate family runs on all at once


def extrapolated_rate_many(raws: list[Raw], ends: Int64s, range_ms: int, counter: bool,
                           is_rate: bool) -> tuple[npt.NDArray[np.float64],
                                                   npt.NDArray[np.bool_]] | None:
    """:func:`extrapolated_rate` for every series and step at once (rows: series,
    columns: steps): one sorted key over all the series' samples finds every window with
    one ``searchsorted``; the arithmetic is the same, element for element. None when the
    key would not fit in int64 (then per series)."""
    lengths = np.array([len(r.ts) for r in raws], np.int64)
    if not lengths.all():
        return None
    ts_all = np.concatenate([r.ts for r in raws])
    vs_all = np.concatenate([r.vs for r in raws])
    base = min(int(ts_all.min()), int(ends.min()) - range_ms) - 1
    span = max(int(ts_all.max()), int(ends.max())) - base + 2
    count_s = len(raws)
    if span * count_s >= 1 << 62:
        return None
    offsets = np.zeros(count_s, np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    series_of = np.repeat(np.arange(count_s, dtype=np.int64), lengths)
    key = series_of * span + (ts_all - base)
    row = (np.arange(count_s, dtype=np.int64) * span)[:, None]
    lo = np.searchsorted(key, row + (ends - range_ms - base)[None, :], side="right")
    hi = np.searchsorted(key, row + (ends - base)[None, :], side="right")
    count = hi - lo
    present = count >= 2
    if not present.any():
        return np.full(count.shape, np.nan), present
    first_of, last_of = offsets[:, None], (offsets + lengths - 1)[:, None]
    first_i = np.clip(lo, first_of, last_of)
    last_i = np.clip(hi - 1, first_of, last_of)
    first_v, last_v = vs_all[first_i], vs_all[last_i]
    first_t, last_t = ts_all[first_i], ts_all[last_i]
    with np.errstate(all="ignore"):
        result = last_v - first_v
        if counter:
            drops = np.zeros(len(vs_all))
            drops[1:] = np.where(vs_all[1:] < vs_all[:-1], vs_all[:-1], 0.0)
            drops[offsets] = 0.0           # no step across two series
            # which windows hold a reset, counted exactly (a float running sum over all
            # the series would lose a small drop next to a large one); those windows'
            # corrections summed in order, as one series at a time does
            resets = np.cumsum(drops > 0)
            correction = np.zeros(count.shape)
            for s, t in zip(*np.nonzero(present & (resets[last_i] != resets[first_i]))):
                correction[s, t] = float(np.sum(drops[int(lo[s, t]) + 1:int(hi[s, t])]))
            result = result + correction
        range_start = (ends - range_ms)[None, :]
        to_start = (first_t - range_start) / 1000.0
        to_end = (ends[None, :] - last_t) / 1000.0
        sampled = (last_t - first_t) / 1000.0
        average = sampled / np.maximum(count - 1, 1)
        threshold = average * 1.1
        to_start = np.where(to_start >= threshold, average / 2, to_start)
        if counter:
            to_zero = np.where((result > 0) & (first_v >= 0), sampled * (first_v / result),
                               to_start)
            to_start = np.where(to_zero < to_start, to_zero, to_start)
        to_end = np.where(to_end >= threshold, average / 2, to_end)
        factor = (sampled + to_start + to_end) / sampled
        if is_rate:
            factor = factor / (range_ms / 1000.0)
        values: npt.NDArray[np.float64] = np.where(present, result * factor, np.nan)
    return values, present


@_register("irate", "idelta")
def _irate(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    rv = ev.range_arg(e.args[0], ts)
    is_rate = e.func.name == "irate"

    def compute(raw: Raw, lo: Int64s, hi: Int64s, ends: Int64s) -> tuple[Float64s, Bools]:
        if rv.rollup_step_ms and is_rate:  # the last bucket's increase over its step
            present = hi > lo
            picked: Float64s = raw.vs[np.clip(hi - 1, 0, max(len(raw.vs) - 1, 0))] / (
                rv.rollup_step_ms / 1000.0) if len(raw.vs) else nan_column(len(lo))
            return picked, present
        present = (hi - lo) >= 2
        if not present.any():
            return nan_column(len(lo)), present
        last_i = np.clip(hi - 1, 1, len(raw.ts) - 1)
        prev_i = last_i - 1
        last_v, prev_v = raw.vs[last_i], raw.vs[prev_i]
        if not is_rate:
            diff: Float64s = last_v - prev_v
            return diff, present
        dt = (raw.ts[last_i] - raw.ts[prev_i]) / 1000.0
        values: Float64s = np.where(last_v < prev_v, last_v, last_v - prev_v) / dt
        return values, present
    return _over_range(ev, e, ts, rv, compute)


def linear_regression(ts: Int64s, vs: Float64s, intercept_ms: int) -> tuple[float, float]:
    if np.all(vs == vs[0]):
        if math.isinf(float(vs[0])):
            return math.nan, math.nan
        return 0.0, float(vs[0])
    x = (ts - intercept_ms) / 1000.0
    n = float(len(vs))
    sum_x, sum_y = math.fsum(x), _fsum(vs)
    sum_xy, sum_x2 = _fsum(x * vs), math.fsum(x * x)
    cov = sum_xy - sum_x * sum_y / n
    var = sum_x2 - sum_x * sum_x / n
    with np.errstate(all="ignore"):
        slope = float(np.float64(cov) / np.float64(var))
    return slope, sum_y / n - slope * sum_x / n


def _fsum(values: Float64s) -> float:
    try:
        return math.fsum(values)
    except (OverflowError, ValueError):
        return kahan_sum_scalar([float(v) for v in values])


@_register("deriv")
def _deriv(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    rv = ev.range_arg(e.args[0], ts)

    def compute(raw: Raw, lo: Int64s, hi: Int64s, ends: Int64s) -> tuple[Float64s, Bools]:
        return _per_window(raw, lo, hi, 2,
                           lambda t, v, i: linear_regression(t, v, int(t[0]))[0])
    return _over_range(ev, e, ts, rv, compute)


@_register("predict_linear")
def _predict_linear(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    rv = ev.range_arg(e.args[0], ts)
    duration = ev.scalar(e.args[1], ts)

    def predict(t: Int64s, v: Float64s, i: int) -> float:
        slope, intercept = linear_regression(t, v, int(ts[i]))
        return intercept + slope * float(duration[i])

    def compute(raw: Raw, lo: Int64s, hi: Int64s, ends: Int64s) -> tuple[Float64s, Bools]:
        return _per_window(raw, lo, hi, 2, predict)
    return _over_range(ev, e, ts, rv, compute)


def _counted(raw: Raw, lo: Int64s, hi: Int64s, flags: Bools) -> tuple[Float64s, Bools]:
    """Per window, how many of ``flags[1:]`` (a property of consecutive pairs) hold."""
    marks = np.zeros(len(raw.vs))
    marks[1:] = flags
    cumulative = np.cumsum(marks)
    present = hi > lo
    last = max(len(raw.vs) - 1, 0)
    values: Float64s = cumulative[np.clip(hi - 1, 0, last)] - cumulative[np.clip(lo, 0, last)]
    return values, present


@_register("changes")
def _changes(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    rv = ev.range_arg(e.args[0], ts)

    def compute(raw: Raw, lo: Int64s, hi: Int64s, ends: Int64s) -> tuple[Float64s, Bools]:
        a, b = raw.vs[:-1], raw.vs[1:]
        return _counted(raw, lo, hi, (a != b) & ~(np.isnan(a) & np.isnan(b)))
    return _over_range(ev, e, ts, rv, compute)


@_register("resets")
def _resets(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    rv = ev.range_arg(e.args[0], ts)

    def compute(raw: Raw, lo: Int64s, hi: Int64s, ends: Int64s) -> tuple[Float64s, Bools]:
        return _counted(raw, lo, hi, raw.vs[1:] < raw.vs[:-1])
    return _over_range(ev, e, ts, rv, compute)


def _window_fn(fn: Callable[[Int64s, Float64s], float], minimum: int = 1) -> Window:
    def compute(raw: Raw, lo: Int64s, hi: Int64s, ends: Int64s) -> tuple[Float64s, Bools]:
        return _per_window(raw, lo, hi, minimum, lambda t, v, i: fn(t, v))
    return compute


def _fmin(t: Int64s, v: Float64s) -> float:
    return float(np.fmin.reduce(v))


def _fmax(t: Int64s, v: Float64s) -> float:
    return float(np.fmax.reduce(v))


def _var(t: Int64s, v: Float64s) -> float:
    if np.all(v == v[0]):
        return 0.0 if math.isfinite(float(v[0])) else math.nan
    return float(np.var(v))


def _mad(t: Int64s, v: Float64s) -> float:
    if np.isnan(v).any():
        return math.nan
    median = quantile(0.5, [float(x) for x in v])
    return quantile(0.5, [abs(float(x) - median) for x in v])


_OVER_TIME: dict[str, tuple[Callable[[Int64s, Float64s], float], bool]] = {
    "min_over_time": (_fmin, False),
    "max_over_time": (_fmax, False),
    "count_over_time": (lambda t, v: float(len(v)), False),
    "last_over_time": (lambda t, v: float(v[-1]), True),
    "first_over_time": (lambda t, v: float(v[0]), True),
    "present_over_time": (lambda t, v: 1.0, False),
    "stdvar_over_time": (_var, False),
    "stddev_over_time": (lambda t, v: math.sqrt(_var(t, v)), False),
    "mad_over_time": (_mad, False),
    "ts_of_first_over_time": (lambda t, v: float(t[0]) / 1000, False),
    "ts_of_last_over_time": (lambda t, v: float(t[-1]) / 1000, False),
    "ts_of_min_over_time": (lambda t, v: _ts_of(t, v, np.fmin), False),
    "ts_of_max_over_time": (lambda t, v: _ts_of(t, v, np.fmax), False),
}


def _ts_of(t: Int64s, v: Float64s, reducer: np.ufunc) -> float:
    best = float(reducer.reduce(v))
    if math.isnan(best):
        return float(t[-1]) / 1000
    hits = np.flatnonzero(v == best)
    return float(t[hits[-1]]) / 1000


def kahan_windows(vs: Float64s, lo: Int64s, hi: Int64s) -> tuple[Float64s, Float64s]:
    """Each window's Kahan sum (``kahanSumInc`` over its samples in order) and the
    compensation, all windows advanced together one sample at a time."""
    n = len(lo)
    total, comp = np.zeros(n), np.zeros(n)
    lengths = hi - lo
    for j in range(int(lengths.max(initial=0))):
        active = lengths > j
        inc = np.where(active, vs[np.clip(lo + j, 0, max(len(vs) - 1, 0))], 0.0)
        new_total, new_comp = kahan_inc(inc, total, comp)
        total = np.where(active, new_total, total)
        comp = np.where(active, new_comp, comp)
    return total, comp


@_register("sum_over_time", "avg_over_time")
def _sum_over_time(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    rv = ev.range_arg(e.args[0], ts)
    average = e.func.name == "avg_over_time"

    def compute(raw: Raw, lo: Int64s, hi: Int64s, ends: Int64s) -> tuple[Float64s, Bools]:
        present = hi > lo
        if not len(raw.vs):
            return nan_column(len(lo)), present
        total, comp = kahan_windows(raw.vs, lo, hi)
        if not average:
            summed: Float64s = np.where(np.isinf(total), total, total + comp)
            return summed, present
        count = np.maximum(hi - lo, 1)
        mean: Float64s = total / count + comp / count
        for i in np.flatnonzero(present & ~np.isfinite(mean)):
            mean[i] = mean_scalar([float(x) for x in raw.vs[int(lo[i]):int(hi[i])]])
        return mean, present
    return _over_range(ev, e, ts, rv, compute)


@_register(*_OVER_TIME)
def _over_time(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    rv = ev.range_arg(e.args[0], ts)
    fn, keep = _OVER_TIME[e.func.name]
    if e.func.name == "count_over_time":
        def count(raw: Raw, lo: Int64s, hi: Int64s, ends: Int64s) -> tuple[Float64s, Bools]:
            c = (hi - lo).astype(np.float64)
            return c, c > 0
        return _over_range(ev, e, ts, rv, count)
    if e.func.name in ("last_over_time", "first_over_time", "present_over_time"):
        first = e.func.name == "first_over_time"
        present_only = e.func.name == "present_over_time"

        def edge(raw: Raw, lo: Int64s, hi: Int64s, ends: Int64s) -> tuple[Float64s, Bools]:
            present = hi > lo
            if present_only:
                return np.ones(len(lo)), present
            index = np.clip(lo if first else hi - 1, 0, max(len(raw.vs) - 1, 0))
            values: Float64s = raw.vs[index] if len(raw.vs) else nan_column(len(lo))
            return values, present
        return _over_range(ev, e, ts, rv, edge, keep_name=keep)
    return _over_range(ev, e, ts, rv, _window_fn(fn), keep_name=keep)


@_register("quantile_over_time")
def _quantile_over_time(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    q = ev.scalar(e.args[0], ts)
    rv = ev.range_arg(e.args[1], ts)
    bad = q[(q < 0) | (q > 1) | np.isnan(q)]
    if len(bad):
        ev.warn(f"quantile value should be between 0 and 1, got {format_g(float(bad[0]))}",
                e.args[0])

    def compute(raw: Raw, lo: Int64s, hi: Int64s, ends: Int64s) -> tuple[Float64s, Bools]:
        return _per_window(raw, lo, hi, 1,
                           lambda t, v, i: quantile(float(q[i]), [float(x) for x in v]))
    return _over_range(ev, e, ts, rv, compute)


@_register("double_exponential_smoothing")
def _double_exponential_smoothing(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    rv = ev.range_arg(e.args[0], ts)
    sf, tf = ev.scalar(e.args[1], ts), ev.scalar(e.args[2], ts)

    def smooth(t: Int64s, v: Float64s, i: int) -> float:
        s, trend = float(sf[i]), float(tf[i])
        if not 0 < s < 1:
            raise PromQLEvalError(f"invalid smoothing factor. Expected: 0 < sf < 1, got: {s:f}")
        if not 0 < trend < 1:
            raise PromQLEvalError(f"invalid trend factor. Expected: 0 < tf < 1, got: {trend:f}")
        s0, s1 = 0.0, float(v[0])
        b = float(v[1] - v[0])
        for j in range(1, len(v)):
            x = s * float(v[j])
            if j > 1:
                b = trend * (s1 - s0) + (1 - trend) * b
            y = (1 - s) * (s1 + b)
            s0, s1 = s1, x + y
        return s1

    def compute(raw: Raw, lo: Int64s, hi: Int64s, ends: Int64s) -> tuple[Float64s, Bools]:
        return _per_window(raw, lo, hi, 2, smooth)
    return _over_range(ev, e, ts, rv, compute)


# -- classic histograms ------------------------------------------------------------------

_GO_FLOAT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[iI][nN][fF](?:inity)?"
                       r"|[nN][aA][nN])")


def parse_le(text: str) -> float | None:
    if not _GO_FLOAT.fullmatch(text):
        return None
    return float(text)


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> tuple[float, bool]:
    """Prometheus's ``BucketQuantile`` over (upper bound, cumulative count) pairs; also
    whether the counts had to be forced monotonic."""
    if math.isnan(q):
        return math.nan, False
    if q < 0:
        return -math.inf, False
    if q > 1:
        return math.inf, False
    buckets = sorted(buckets, key=lambda b: b[0])
    if not buckets or not (math.isinf(buckets[-1][0]) and buckets[-1][0] > 0):
        return math.nan, False
    merged: list[list[float]] = []
    for upper, count in buckets:
        if merged and merged[-1][0] == upper:
            merged[-1][1] += count
        else:
            merged.append([upper, count])
    forced = False
    prev = merged[0][1]
    for bucket in merged[1:]:
        current = bucket[1]
        if current == prev:
            continue
        if _almost_equal(prev, current, 1e-12):
            bucket[1] = prev
            continue
        if current < prev:
            bucket[1] = prev
            forced = True
            continue
        prev = current
    if len(merged) < 2:
        return math.nan, forced
    observations = merged[-1][1]
    if observations == 0:
        return math.nan, forced
    rank = q * observations
    b = next((i for i in range(len(merged) - 1) if merged[i][1] >= rank), len(merged) - 1)
    if b == len(merged) - 1:
        return merged[-2][0], forced
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0], forced
    start, end, count = 0.0, merged[b][0], merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return start + (end - start) * (rank / count), forced


def _almost_equal(a: float, b: float, epsilon: float) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    total = abs(a) + abs(b)
    diff = abs(a - b)
    min_normal = 2.2250738585072014e-308
    if a == 0 or b == 0 or total < min_normal:
        return diff < epsilon * min_normal
    return diff / min(total, 1.7976931348623157e308) < epsilon


@_register("histogram_quantile")
def _histogram_quantile(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    q = ev.scalar(e.args[0], ts)
    cols = ev.vector(e.args[1], ts)
    bad = q[(q < 0) | (q > 1) | np.isnan(q)]
    if len(bad):
        ev.warn(f"quantile value should be between 0 and 1, got {format_g(float(bad[0]))}",
                e.args[0])
    groups: dict[Labels, list[tuple[float, Col]]] = {}
    for c in cols:
        le = parse_le(c.labels.get("le", ""))
        if le is None:
            ev.warn('bucket label "le" is missing or has a malformed value of '
                    f'{_go_quote(c.labels.get("le", ""))} for metric name '
                    f'{_go_quote(c.labels.get(METRIC_NAME, ""))}', e.args[1])
            continue
        key = c.labels.without("le")
        groups.setdefault(key, []).append((le, c))
    out = []
    for labels, members in groups.items():
        values = nan_column(len(ts))
        present = np.zeros(len(ts), dtype=bool)
        for i in range(len(ts)):
            buckets = [(le, float(c.values[i])) for le, c in members if c.present[i]]
            if not buckets:
                continue
            value, forced = bucket_quantile(float(q[i]), buckets)
            if forced:
                name = next((c.labels.get(METRIC_NAME, "") for _, c in members), "")
                ev.info("input to histogram_quantile needed to be fixed for monotonicity (see "
                        "https://prometheus.io/docs/prometheus/latest/querying/functions/"
                        f"#histogram_quantile) for metric name {_go_quote(name)}", e.args[1])
            values[i] = value
            present[i] = True
        if present.any():
            out.append(Col(labels, values, present, True))
    return out


def bucket_fraction(lower: float, upper: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's ``BucketFraction``: the estimated share of observations in
    ``[lower, upper]``, interpolating linearly inside a bucket."""
    buckets = sorted(buckets, key=lambda b: b[0])
    if not buckets or not (math.isinf(buckets[-1][0]) and buckets[-1][0] > 0):
        return math.nan
    merged: list[list[float]] = []
    for bound, count in buckets:
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    total = merged[-1][1]
    if total == 0 or math.isnan(lower) or math.isnan(upper):
        return math.nan
    if lower >= upper:
        return 0.0
    rank = lower_rank = upper_rank = 0.0
    lower_set = upper_set = False
    for i, (upper_bound, count) in enumerate(merged):
        lower_bound = -math.inf if i == 0 else merged[i - 1][0]
        if i == 0 and upper_bound > 0:
            lower_bound = 0.0

        def interpolate(v: float, base: float = rank, lb: float = lower_bound,
                        ub: float = upper_bound, c: float = count) -> float:
            if math.isinf(lb):
                return c
            if math.isinf(ub):
                return base
            return base + (c - base) * (v - lb) / (ub - lb)
        if not lower_set and lower_bound >= lower:
            lower_rank, lower_set = rank, True
        if not upper_set and lower_bound >= upper:
            upper_rank, upper_set = rank, True
        if lower_set and upper_set:
            break
        if not lower_set and lower_bound < lower < upper_bound:
            lower_rank, lower_set = interpolate(lower), True
        if not upper_set and lower_bound < upper < upper_bound:
            upper_rank, upper_set = interpolate(upper), True
        if lower_set and upper_set:
            break
        rank = count
    if not lower_set or lower_rank > total:
        lower_rank = total
    if not upper_set or upper_rank > total:
        upper_rank = total
    return (upper_rank - lower_rank) / total


def _bucket_groups(ev: Evaluator, node: Expr, cols: list[Col]) -> dict[Labels, list[tuple[float, Col]]]:
    groups: dict[Labels, list[tuple[float, Col]]] = {}
    for c in cols:
        le = parse_le(c.labels.get("le", ""))
        if le is None:
            ev.warn('bucket label "le" is missing or has a malformed value of '
                    f'{_go_quote(c.labels.get("le", ""))} for metric name '
                    f'{_go_quote(c.labels.get(METRIC_NAME, ""))}', node)
            continue
        groups.setdefault(c.labels.without("le"), []).append((le, c))
    return groups


@_register("histogram_fraction")
def _histogram_fraction(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    lower, upper = ev.scalar(e.args[0], ts), ev.scalar(e.args[1], ts)
    groups = _bucket_groups(ev, e.args[2], ev.vector(e.args[2], ts))
    out = []
    for labels, members in groups.items():
        values = nan_column(len(ts))
        present = np.zeros(len(ts), dtype=bool)
        for i in range(len(ts)):
            buckets = [(le, float(c.values[i])) for le, c in members if c.present[i]]
            if buckets:
                values[i] = bucket_fraction(float(lower[i]), float(upper[i]), buckets)
                present[i] = True
        if present.any():
            out.append(Col(labels, values, present, True))
    return merge(out)


def _q_label(q: float) -> str:
    if math.isnan(q):
        return "NaN"
    if math.isinf(q):
        return "+Inf" if q > 0 else "-Inf"
    return repr(q)


@_register("histogram_quantiles")
def _histogram_quantiles(ev: Evaluator, e: Call, ts: Int64s) -> EvalValue:
    cols = ev.vector(e.args[0], ts)
    label = ev.string(e.args[1], ts)
    _check_label_name(label, "histogram_quantiles", "quantile")
    qs = [(ev.scalar(arg, ts), arg) for arg in e.args[2:]]
    for q, arg in qs:
        bad = q[(q < 0) | (q > 1) | np.isnan(q)]
        if len(bad):
            ev.warn(f"quantile value should be between 0 and 1, got {format_g(float(bad[0]))}",
                    arg)
    groups = _bucket_groups(ev, e.args[0], cols)
    out = []
    for labels, members in groups.items():
        if label in labels:
            raise PromQLEvalError(f"label {label!r} already exists in {labels!r}")
        for q, _ in qs:
            values = nan_column(len(ts))
            present = np.zeros(len(ts), dtype=bool)
            for i in range(len(ts)):
                buckets = [(le, float(c.values[i])) for le, c in members if c.present[i]]
                if buckets:
                    values[i], forced = bucket_quantile(float(q[i]), buckets)
                    present[i] = True
                    if forced:
                        ev.info("input to histogram_quantile needed to be fixed for "
                                "monotonicity (see https://prometheus.io/docs/prometheus/"
                                "latest/querying/functions/#histogram_quantile) for metric "
                                f"name {_go_quote(labels.get(METRIC_NAME, ''))}", e.args[0])
            if present.any():
                out.append(Col(Labels([*labels.pairs, (label, _q_label(float(q[0])))]), values,
                               present, True))
    return merge(out)
