"""The evaluator's internal values, one column per series over the query's step grid.

Prometheus evaluates a range query step by step; here every node is evaluated once for
all steps: an instant vector is a list of :class:`Col` (a series' value at each step and
whether it has one), a scalar a :class:`Sc` (one value per step), a range vector a
:class:`RangeVal` (each series' raw samples and, per step, the end of its window
``(end - range, end]``). Numpy does the per-step work where it can.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..tsdb.chunks import STALE_NAN_BITS, Float64s, Int64s
from ..tsdb.labels import Labels
from .ast import METRIC_NAME, Expr
from .values import PromQLEvalError

Bools = npt.NDArray[np.bool_]


@dataclass(eq=False)
class Col:
    """One series of an instant vector: ``values[i]`` counts only where ``present[i]``.

    ``drop_name``: the metric name goes at the end of the query (Prometheus 3's delayed
    name removal), so a later ``label_replace`` or ``or`` still sees it.
    """

    labels: Labels
    values: Float64s
    present: Bools
    drop_name: bool = False

    def key(self) -> Labels:
        """The label set the series will have in the result."""
        return self.labels.without(METRIC_NAME) if self.drop_name else self.labels


@dataclass(eq=False)
class Raw:
    """One series' samples (stale markers removed) for a range-vector argument."""

    labels: Labels
    ts: Int64s
    vs: Float64s
    drop_name: bool = False


@dataclass(eq=False)
class RangeVal:
    """A range vector: per step ``i`` the window is ``(ends[i] - range_ms, ends[i]]``."""

    series: list[Raw]
    ends: Int64s
    range_ms: int
    node: Expr
    # the range the query asked for, when a rollup tier widened it to two of its steps
    asked_ms: int = 0
    # a rollup tier's step when the values are its buckets' counter increases
    rollup_step_ms: int = 0

    def bounds(self, raw: Raw) -> tuple[Int64s, Int64s]:
        """Per step, the index range ``[lo, hi)`` of ``raw``'s samples in the window."""
        lo = np.searchsorted(raw.ts, self.ends - self.range_ms, side="right")
        hi = np.searchsorted(raw.ts, self.ends, side="right")
        return lo.astype(np.int64), hi.astype(np.int64)


@dataclass(eq=False)
class Sc:
    """A scalar: one value per step."""

    values: Float64s


@dataclass(eq=False)
class Str:
    value: str


EvalValue = list[Col] | Sc | Str | RangeVal


def is_stale(values: Float64s) -> Bools:
    flags: Bools = values.view(np.uint64) == np.uint64(STALE_NAN_BITS)
    return flags


def merge(cols: list[Col], *, by_key: bool = False) -> list[Col]:
    """Columns with the same label set joined into one (first seen first); two present
    at the same step is Prometheus's duplicate-labelset error. ``by_key``: compare the
    label sets the result will have (names dropped), and drop the names."""
    out: dict[Labels, Col] = {}
    for col in cols:
        labels = col.key() if by_key else col.labels
        seen = out.get(labels)
        if seen is None:
            out[labels] = Col(labels, col.values, col.present,
                              False if by_key else col.drop_name) if by_key else col
            continue
        if np.any(seen.present & col.present):
            raise PromQLEvalError("vector cannot contain metrics with the same labelset")
        present = seen.present | col.present
        values = np.where(col.present, col.values, seen.values)
        out[labels] = Col(labels, values, present, seen.drop_name and col.drop_name)
    return list(out.values())


def nan_column(n: int) -> Float64s:
    return np.full(n, np.nan)


def ints(values: list[int] | Int64s) -> Int64s:
    return np.asarray(values, dtype=np.int64)
