"""Binary operators: arithmetic, comparisons (filtering or ``bool``) and the set
operators, between scalars and vectors, with Prometheus's vector matching (``on``,
``ignoring``, ``group_left``, ``group_right``) and its errors for ambiguous matches."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..tsdb.chunks import Float64s, Int64s
from ..tsdb.labels import Labels
from .ast import METRIC_NAME, BinaryExpr, BinaryOp, Cardinality, VectorMatching
from .columns import Bools, Col, EvalValue, Sc, merge
from .values import PromQLEvalError

if TYPE_CHECKING:
    from .engine import Evaluator

_ARITHMETIC = frozenset({BinaryOp.ADD, BinaryOp.SUB, BinaryOp.MUL, BinaryOp.DIV,
                         BinaryOp.MOD, BinaryOp.POW, BinaryOp.ATAN2})


def arithmetic(op: BinaryOp, lhs: Float64s, rhs: Float64s) -> Float64s:
    with np.errstate(all="ignore"):
        if op is BinaryOp.ADD:
            out: Float64s = lhs + rhs
        elif op is BinaryOp.SUB:
            out = lhs - rhs
        elif op is BinaryOp.MUL:
            out = lhs * rhs
        elif op is BinaryOp.DIV:
            out = lhs / rhs
        elif op is BinaryOp.MOD:
            out = np.fmod(lhs, rhs)
        elif op is BinaryOp.POW:
            out = np.power(lhs, rhs)
        elif op is BinaryOp.ATAN2:
            out = np.arctan2(lhs, rhs)
        else:
            raise PromQLEvalError(f"operator {op.value!r} is not an arithmetic operator")
    return out


def compare(op: BinaryOp, lhs: Float64s, rhs: Float64s) -> Bools:
    with np.errstate(all="ignore"):
        if op is BinaryOp.EQL:
            out: Bools = lhs == rhs
        elif op is BinaryOp.NEQ:
            out = lhs != rhs
        elif op is BinaryOp.GTR:
            out = lhs > rhs
        elif op is BinaryOp.LSS:
            out = lhs < rhs
        elif op is BinaryOp.GTE:
            out = lhs >= rhs
        elif op is BinaryOp.LTE:
            out = lhs <= rhs
        else:
            raise PromQLEvalError(f"operator {op.value!r} is not a comparison operator")
    return out


def binary(ev: Evaluator, e: BinaryExpr, ts: Int64s) -> EvalValue:
    lhs = ev.eval(e.lhs, ts)
    rhs = ev.eval(e.rhs, ts)
    if isinstance(lhs, Sc) and isinstance(rhs, Sc):
        if e.op.is_comparison:
            return Sc(compare(e.op, lhs.values, rhs.values).astype(np.float64))
        return Sc(arithmetic(e.op, lhs.values, rhs.values))
    if isinstance(lhs, list) and isinstance(rhs, Sc):
        return _vector_scalar(e, lhs, rhs.values, scalar_left=False)
    if isinstance(lhs, Sc) and isinstance(rhs, list):
        return _vector_scalar(e, rhs, lhs.values, scalar_left=True)
    if isinstance(lhs, list) and isinstance(rhs, list):
        matching = e.matching or VectorMatching(card=Cardinality.ONE_TO_ONE)
        if e.op.is_set:
            return _set_operation(e.op, matching, lhs, rhs)
        return _vector_vector(e, matching, lhs, rhs)
    raise PromQLEvalError(f"operator {e.op.value!r} needs scalar or instant vector operands")


def _vector_scalar(e: BinaryExpr, cols: list[Col], scalar: Float64s, *,
                   scalar_left: bool) -> list[Col]:
    out = []
    for col in cols:
        left, right = (scalar, col.values) if scalar_left else (col.values, scalar)
        if e.op.is_comparison:
            keep = compare(e.op, left, right) & col.present
            if e.return_bool:
                out.append(Col(col.labels, keep.astype(np.float64), col.present, True))
            elif keep.any():
                out.append(Col(col.labels, col.values, keep, col.drop_name))
        else:
            out.append(Col(col.labels, arithmetic(e.op, left, right), col.present, True))
    return merge(out)


def signature(labels: Labels, matching: VectorMatching) -> Labels:
    """The labels two series must share to match."""
    if matching.on:
        keep = set(matching.labels)
        return Labels(p for p in labels.pairs if p[0] in keep)
    drop = set(matching.labels) | {METRIC_NAME}
    return Labels(p for p in labels.pairs if p[0] not in drop)


def _presence_by_signature(cols: list[Col], matching: VectorMatching) -> dict[Labels, Bools]:
    found: dict[Labels, Bools] = {}
    for col in cols:
        sig = signature(col.labels, matching)
        seen = found.get(sig)
        found[sig] = col.present if seen is None else seen | col.present
    return found


def _set_operation(op: BinaryOp, matching: VectorMatching, lhs: list[Col],
                   rhs: list[Col]) -> list[Col]:
    n = len(lhs[0].present) if lhs else len(rhs[0].present) if rhs else 0
    none = np.zeros(n, dtype=bool)
    out = []
    if op is BinaryOp.AND or op is BinaryOp.UNLESS:
        right = _presence_by_signature(rhs, matching)
        for col in lhs:
            other = right.get(signature(col.labels, matching), none)
            present = col.present & (other if op is BinaryOp.AND else ~other)
            if present.any():
                out.append(Col(col.labels, col.values, present, col.drop_name))
        return out
    left = _presence_by_signature(lhs, matching)
    out = list(lhs)
    for col in rhs:
        present = col.present & ~left.get(signature(col.labels, matching), none)
        if present.any():
            out.append(Col(col.labels, col.values, present, col.drop_name))
    return out


def _labels_string(labels: Labels) -> str:
    inner = ", ".join(f'{name}="{value}"' for name, value in labels.pairs)
    return "{" + inner + "}"


def _result_labels(many: Labels, one: Labels, matching: VectorMatching) -> Labels:
    pairs = dict(many.pairs)
    if matching.card is Cardinality.ONE_TO_ONE:
        if matching.on:
            pairs = {k: v for k, v in pairs.items() if k in matching.labels}
        else:
            for name in matching.labels:
                pairs.pop(name, None)
    for name in matching.include:
        value = one.get(name, "")
        if value:
            pairs[name] = value
        else:
            pairs.pop(name, None)
    return Labels(pairs.items())


def _vector_vector(e: BinaryExpr, matching: VectorMatching, lhs: list[Col],
                   rhs: list[Col]) -> list[Col]:
    swapped = matching.card is Cardinality.ONE_TO_MANY
    many_side, one_side = (rhs, lhs) if swapped else (lhs, rhs)
    ones: dict[Labels, list[Col]] = {}
    for col in one_side:
        group = ones.setdefault(signature(col.labels, matching), [])
        for other in group:
            if np.any(other.present & col.present):
                side = "left" if swapped else "right"
                pair = sorted([col.labels, other.labels])
                raise PromQLEvalError(
                    f"found duplicate series for the match group "
                    f"{_labels_string(signature(col.labels, matching))} on the {side} "
                    f"hand-side of the operation: [{_labels_string(pair[0])}, "
                    f"{_labels_string(pair[1])}];many-to-many matching not allowed: "
                    "matching labels must be unique on one side")
        group.append(col)
    drop = e.op in _ARITHMETIC or e.return_bool
    results: dict[tuple[Labels, Labels], list[Bools]] = {}
    out: list[Col] = []
    for col in many_side:
        sig = signature(col.labels, matching)
        for one in ones.get(sig, ()):
            present = col.present & one.present
            if not present.any():
                continue
            labels = _result_labels(col.labels, one.labels, matching)
            key = (sig, labels if matching.card is not Cardinality.ONE_TO_ONE else Labels())
            for seen in results.setdefault(key, []):
                if np.any(seen & present):
                    if matching.card is Cardinality.ONE_TO_ONE:
                        raise PromQLEvalError("multiple matches for labels: many-to-one "
                                              "matching must be explicit "
                                              "(group_left/group_right)")
                    raise PromQLEvalError("multiple matches for labels: grouping labels "
                                          "must ensure unique matches")
            results[key].append(present)
            left, right = (one.values, col.values) if swapped else (col.values, one.values)
            if e.op.is_comparison:
                keep = compare(e.op, left, right) & present
                if e.return_bool:
                    values, present = keep.astype(np.float64), present
                else:
                    values, present = left, keep
            else:
                values = arithmetic(e.op, left, right)
            if not present.any():
                continue
            out.append(Col(labels, values, present, drop or col.drop_name))
    return merge(out)
