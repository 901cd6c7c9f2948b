"""PromQL queries as the service answers them, for gRPC and the Prometheus HTTP API alike:
the engine's errors as the runtime's, the results as messages or Prometheus's JSON."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.telemetry.v1 import telemetry_pb2 as pb

from .promql import PromQLError
from .promql.engine import RESOLUTIONS, Engine
from .promql.values import Matrix, Result, Scalar, String, Vector
from .tsdb.api import Storage
from .tsdb.labels import Labels, Matcher

VALUE_TYPES = {"vector": pb.VALUE_TYPE_VECTOR, "matrix": pb.VALUE_TYPE_MATRIX,
               "scalar": pb.VALUE_TYPE_SCALAR, "string": pb.VALUE_TYPE_STRING}
MAX_QUERY_CHARS = 10_000


def check_query(text: str, field: str = "query") -> str:
    if not text.strip():
        raise InvalidArgument(field, "is required: a PromQL expression",
                              reason="REQUIRED_FIELD")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidArgument(field, f"must be at most {MAX_QUERY_CHARS} characters")
    return text


def check_resolution(text: str) -> str:
    """A query's resolution ("" is ``auto``: the finest tier holding its range)."""
    resolution = text.strip() or "auto"
    if resolution not in RESOLUTIONS:
        raise InvalidArgument("resolution", f"{text!r} is not a resolution",
                              allowed=list(RESOLUTIONS))
    return resolution


def instant(engine: Engine, text: str, time_ms: int, resolution: str = "") -> Result:
    """The engine's answer; a query that does not parse is InvalidArgument with its
    position (``metadata["position"]``)."""
    tier = check_resolution(resolution)
    try:
        return engine.instant(check_query(text), time_ms, tier)
    except PromQLError as exc:
        raise _parse_error(exc) from None


def range_query(engine: Engine, text: str, start_ms: int, end_ms: int, step_ms: int,
                resolution: str = "") -> Result:
    tier = check_resolution(resolution)
    try:
        return engine.range(check_query(text), start_ms, end_ms, step_ms, tier)
    except PromQLError as exc:
        raise _parse_error(exc) from None


def _parse_error(exc: PromQLError) -> InvalidArgument:
    error = InvalidArgument("query", str(exc), reason="BAD_QUERY")
    error.metadata["position"] = str(exc.position)
    return error


def _labels_pb(labels: Labels) -> list[pb.Label]:
    return [pb.Label(name=n, value=v) for n, v in labels.pairs]


def query_to_pb(result: Result) -> pb.QueryResponse:
    value = result.value
    out = pb.QueryResponse(result_type=VALUE_TYPES[str(value.type)],
                           warnings=list(result.warnings), resolution=result.resolution,
                           infos=list(result.infos))
    if isinstance(value, Vector):
        for s in value.samples:
            out.vector.add(labels=_labels_pb(s.labels),
                           sample=pb.Sample(timestamp_ms=s.t, value=s.v))
    elif isinstance(value, Matrix):
        out.matrix.extend(_series_pb(value))
    elif isinstance(value, Scalar):
        out.scalar.timestamp_ms, out.scalar.value = value.t, value.v
    elif isinstance(value, String):
        out.scalar.timestamp_ms = value.t
        out.string_value = value.v
    return out


def _series_pb(matrix: Matrix) -> list[pb.TimeSeries]:
    return [pb.TimeSeries(labels=_labels_pb(s.labels),
                          samples=[pb.Sample(timestamp_ms=int(t), value=float(v))
                                   for t, v in zip(s.timestamps.tolist(), s.values.tolist())])
            for s in matrix.series]


def range_to_pb(result: Result) -> pb.QueryRangeResponse:
    value = result.value
    out = pb.QueryRangeResponse(warnings=list(result.warnings), resolution=result.resolution,
                                infos=list(result.infos))
    if isinstance(value, Matrix):
        out.series.extend(_series_pb(value))
    return out


# ---- Prometheus's JSON ---------------------------------------------------------------

def format_value(v: float) -> str:
    """A sample value as Prometheus writes it (Go's FormatFloat(v, 'f', -1, 64))."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return np.format_float_positional(v, trim="-")


def _point(t_ms: int, v: float) -> list[Any]:
    return [t_ms / 1000.0, format_value(v)]


def query_json(result: Result) -> dict[str, Any]:
    """The ``data`` of a /api/v1/query or /api/v1/query_range answer."""
    value = result.value
    if isinstance(value, Vector):
        items: Any = [{"metric": dict(s.labels.pairs), "value": _point(s.t, s.v)}
                      for s in value.samples]
    elif isinstance(value, Matrix):
        items = [{"metric": dict(s.labels.pairs),
                  "values": [_point(t, v) for t, v in zip(s.timestamps.tolist(),
                                                           s.values.tolist())]}
                 for s in value.series]
    elif isinstance(value, Scalar):
        items = _point(value.t, value.v)
    else:
        items = [value.t / 1000.0, value.v]
    return {"resultType": str(value.type), "result": items}


# ---- series and labels over several selectors (ListSeries / ListLabels, /api/v1/...) --

def series_matching(store: Storage, selectors: list[list[Matcher]], mint: int,
                    maxt: int) -> list[Labels]:
    """The series any selector matches, sorted, each once."""
    found: set[Labels] = set()
    for matchers in selectors:
        found.update(store.series(matchers, mint, maxt))
    return sorted(found)


def labels_matching(store: Storage, name: str, selectors: list[list[Matcher]], mint: int,
                    maxt: int) -> list[str]:
    """The label names (``name`` empty) or the values of ``name`` over the series the
    selectors match (no selector: every series), sorted."""
    values: set[str] = set()
    for matchers in selectors or [[]]:
        values.update(store.label_values(name, matchers, mint, maxt) if name
                      else store.label_names(matchers, mint, maxt))
    return sorted(values)
