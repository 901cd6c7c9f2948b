"""What a PromQL query returns, and the errors evaluation raises.

A :class:`Result` carries one of Prometheus's four value types: :class:`Vector` (an
instant query's samples), :class:`Matrix` (a range query's series, or an instant query
of a range vector), :class:`Scalar` and :class:`String`, plus the warnings and infos
Prometheus would attach as annotations (``"PromQL warning: ... (1:5)"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from geoplex.servers._runtime.errors import InvalidArgument, ResourceExhausted

from ..tsdb.chunks import Float64s, Int64s
from ..tsdb.labels import Labels
from .ast import ValueType


class PromQLEvalError(InvalidArgument):
    """A query that parsed but cannot be evaluated (Prometheus's execution errors:
    many-to-many matching, duplicate label sets, invalid arguments)."""

    def __init__(self, message: str) -> None:
        super().__init__("query", message, reason="PROMQL_EVAL")
        self.message = message

    def __str__(self) -> str:
        return self.message


class PromQLUnsupportedError(PromQLEvalError):
    """Valid PromQL this engine does not evaluate; ``construct`` names it."""

    def __init__(self, construct: str) -> None:
        super().__init__(f"{construct} is not supported by this engine")
        self.construct = construct


class PromQLLimitError(ResourceExhausted):
    """A query over one of the engine's limits; ``limit`` names the option."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message, reason="PROMQL_LIMIT", metadata={"limit": limit})
        self.limit = limit

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Sample:
    labels: Labels
    t: int
    v: float


@dataclass(frozen=True, eq=False)
class SeriesPoints:
    labels: Labels
    timestamps: Int64s
    values: Float64s


@dataclass(frozen=True)
class Vector:
    samples: list[Sample]
    type: ValueType = ValueType.VECTOR


@dataclass(frozen=True)
class Matrix:
    series: list[SeriesPoints]
    type: ValueType = ValueType.MATRIX


@dataclass(frozen=True)
class Scalar:
    t: int
    v: float
    type: ValueType = ValueType.SCALAR


@dataclass(frozen=True)
class String:
    t: int
    v: str
    type: ValueType = ValueType.STRING


Value = Vector | Matrix | Scalar | String


@dataclass(frozen=True)
class Result:
    value: Value
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)
    resolution: str = "raw"   # the tier that served it: "raw", "1m" or "1h"

    @property
    def type(self) -> ValueType:
        return self.value.type
