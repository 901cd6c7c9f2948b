"""Aggregation operators (``sum``, ``avg``, ``topk``, ``count_values``...) with ``by`` /
``without`` grouping, computed per group for all steps at once where numpy allows, and
with Prometheus's float rules (Kahan sums, NaN ignored by ``min``/``max`` unless every
value is NaN, population ``stddev``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..tsdb.chunks import Float64s, Int64s
from ..tsdb.labels import Labels
from .ast import METRIC_NAME, AggregateExpr, AggregateOp
from .columns import Bools, Col, EvalValue, nan_column
from .values import PromQLEvalError, PromQLUnsupportedError

if TYPE_CHECKING:
    from .engine import Evaluator


def kahan_inc(inc: Float64s, total: Float64s, comp: Float64s) -> tuple[Float64s, Float64s]:
    """Prometheus's ``kahanSumInc`` (Neumaier's variant), for every step at once."""
    with np.errstate(all="ignore"):
        t = total + inc
        big = np.abs(total) >= np.abs(inc)
        comp = np.where(np.isinf(t), 0.0,
                        comp + np.where(big, (total - t) + inc, (inc - t) + total))
    return t, comp


def kahan_sum_rows(rows: Float64s) -> Float64s:
    """Column sums of a 2-d array (rows added in order), Kahan-compensated."""
    total = np.zeros(rows.shape[1])
    comp = np.zeros(rows.shape[1])
    for row in rows:
        total, comp = kahan_inc(row, total, comp)
    with np.errstate(all="ignore"):
        out: Float64s = np.where(np.isinf(total), total, total + comp)
    return out


def mean_scalar(values: list[float]) -> float:
    """Prometheus's mean: a direct Kahan sum until it would overflow, then incremental."""
    if not values:
        return math.nan
    total, comp, mean = values[0], 0.0, 0.0
    incremental = False
    count = 1
    for f in values[1:]:
        count += 1
        if not incremental:
            t, c = _kahan1(f, total, comp)
            if not math.isinf(t):
                total, comp = t, c
                continue
            incremental = True
            mean = total / (count - 1)
            comp /= count - 1
        q = (count - 1) / count
        mean, comp = _kahan1(f / count, q * mean, q * comp)
    if incremental:
        return mean + comp
    return total / count + comp / count


def _kahan1(inc: float, total: float, comp: float) -> tuple[float, float]:
    t = total + inc
    if math.isinf(t):
        comp = 0.0
    elif abs(total) >= abs(inc):
        comp += (total - t) + inc
    else:
        comp += (inc - t) + total
    return t, comp


def kahan_sum_scalar(values: list[float]) -> float:
    total = comp = 0.0
    for f in values:
        total, comp = _kahan1(f, total, comp)
    return total if math.isinf(total) else total + comp


def quantile(q: float, values: list[float]) -> float:
    """Prometheus's ``quantile``: linear interpolation between the closest ranks, NaN
    sorted first."""
    if not values or math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(values, key=lambda v: (not math.isnan(v), v if not math.isnan(v) else 0))
    n = len(ordered)
    rank = q * (n - 1)
    lower = max(0, math.floor(rank))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def format_g(value: float) -> str:
    """Go's ``%g`` for the numbers in messages."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = f"{value:g}" if abs(value) < 1e21 else repr(value)
    return text.replace("e+0", "e+").replace("e-0", "e-")


def group_labels(labels: Labels, e: AggregateExpr) -> Labels:
    if e.without:
        drop = set(e.grouping) | {METRIC_NAME}
        return Labels(p for p in labels.pairs if p[0] not in drop)
    keep = set(e.grouping)
    return Labels(p for p in labels.pairs if p[0] in keep)


def aggregate(ev: Evaluator, e: AggregateExpr, ts: Int64s) -> EvalValue:
    n = len(ts)
    param: Float64s | None = None
    label = ""
    if e.op is AggregateOp.COUNT_VALUES:
        assert e.param is not None
        label = ev.string(e.param, ts)
        if not label or not _valid_utf8(label):
            raise PromQLEvalError(f"invalid label name {label!r}")
    elif e.param is not None:
        param = ev.scalar(e.param, ts)
    cols = ev.vector(e.expr, ts)
    groups: dict[Labels, list[Col]] = {}
    for col in cols:
        groups.setdefault(group_labels(col.key(), e), []).append(col)
    op = e.op
    if op in (AggregateOp.TOPK, AggregateOp.BOTTOMK):
        assert param is not None and e.param is not None
        if np.isnan(param).any():
            raise PromQLEvalError("Parameter value is NaN")
        if (np.abs(param) >= 2.0 ** 63).any():
            raise PromQLEvalError(f"Scalar value {format_g(float(param[0]))} overflows int64")
        return _topk(groups, param, op is AggregateOp.TOPK, n)
    if op in (AggregateOp.LIMITK, AggregateOp.LIMIT_RATIO):
        raise PromQLUnsupportedError(f"aggregation {op.value}()")
    if op is AggregateOp.QUANTILE:
        assert param is not None and e.param is not None
        bad = param[(param < 0) | (param > 1) | np.isnan(param)]
        if len(bad) and groups:
            ev.warn(f"quantile value should be between 0 and 1, got {format_g(float(bad[0]))}",
                    e.param)
    if op is AggregateOp.COUNT_VALUES:
        return _count_values(groups, label, n)
    out = []
    for labels, members in groups.items():
        values = np.stack([c.values for c in members])
        present = np.stack([c.present for c in members])
        any_present: Bools = np.sum(present, axis=0) > 0
        result = _reduce(op, values, present, param, n)
        out.append(Col(labels, result, any_present))
    return out


def _valid_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _reduce(op: AggregateOp, values: Float64s, present: Bools, param: Float64s | None,
            n: int) -> Float64s:
    masked = np.where(present, values, 0.0)
    counts: Float64s = np.asarray(present.sum(axis=0), dtype=np.float64)
    with np.errstate(all="ignore"):
        if op is AggregateOp.SUM:
            return kahan_sum_rows(masked)
        if op is AggregateOp.COUNT:
            return counts
        if op is AggregateOp.GROUP:
            return np.ones(n)
        if op is AggregateOp.AVG:
            total = kahan_sum_rows(masked)
            mean: Float64s = total / counts
            for i in np.flatnonzero(~np.isfinite(mean) & (counts > 0)):
                mean[i] = mean_scalar([float(v) for v in values[present[:, i], i]])
            return mean
        if op in (AggregateOp.MIN, AggregateOp.MAX):
            current = nan_column(n)
            for row, has in zip(values, present, strict=True):
                better = row < current if op is AggregateOp.MIN else row > current
                current = np.where(has & (better | np.isnan(current)), row, current)
            return current
        if op in (AggregateOp.STDDEV, AggregateOp.STDVAR):
            count = np.zeros(n)
            mean = np.zeros(n)
            aux = np.zeros(n)
            for row, has in zip(values, present, strict=True):
                count = count + has
                delta = row - mean
                mean = np.where(has, mean + delta / np.maximum(count, 1), mean)
                aux = np.where(has, aux + delta * (row - mean), aux)
            var: Float64s = aux / counts
            return np.sqrt(var) if op is AggregateOp.STDDEV else var
        if op is AggregateOp.QUANTILE:
            assert param is not None
            out = nan_column(n)
            for step in range(n):
                out[step] = quantile(float(param[step]),
                                  [float(v) for v in values[present[:, step], step]])
            return out
    raise PromQLUnsupportedError(f"aggregation {op.value}()")


def _order_key(value: float, descending: bool) -> tuple[bool, float]:
    if math.isnan(value):
        return (True, 0.0)
    return (False, -value if descending else value)


def _topk(groups: dict[Labels, list[Col]], param: Float64s, top: bool, n: int) -> list[Col]:
    out: list[Col] = []
    for members in groups.values():
        chosen = np.zeros((len(members), n), dtype=bool)
        order_at_first: list[int] = []
        for i in range(n):
            k = int(param[i])
            if k < 1:
                continue
            candidates = [j for j, c in enumerate(members) if c.present[i]]
            candidates.sort(key=lambda j: _order_key(float(members[j].values[i]), top))
            picked = candidates[:k]
            chosen[picked, i] = True
            if i == 0:
                order_at_first = picked
        rest = [j for j in range(len(members)) if j not in order_at_first]
        for j in order_at_first + rest:
            if chosen[j].any():
                c = members[j]
                out.append(Col(c.labels, c.values, chosen[j], c.drop_name))
    return out


def _go_float(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return np.format_float_positional(value, trim="-")


def _count_values(groups: dict[Labels, list[Col]], label: str, n: int) -> list[Col]:
    counts: dict[Labels, Float64s] = {}
    for labels, members in groups.items():
        for c in members:
            for i in np.flatnonzero(c.present):
                pairs = [p for p in labels.pairs if p[0] != label]
                pairs.append((label, _go_float(float(c.values[i]))))
                key = Labels(pairs)
                column = counts.get(key)
                if column is None:
                    column = counts[key] = np.zeros(n)
                column[i] += 1
    return [Col(labels, column, column > 0) for labels, column in counts.items()]
