"""OTLP metrics in (the OpenTelemetry collector's ``MetricsService/Export`` over gRPC), as
Prometheus series, the way Prometheus's own OTLP receiver names them:

- the metric name with invalid characters as ``_``, the unit as a suffix (``s`` ->
  ``_seconds``, ``By`` -> ``_bytes``, ``1`` -> ``_ratio`` for gauges; ``{request}``-style
  annotations dropped), and ``_total`` for monotonic cumulative sums;
- the point's attributes as labels (names sanitised the same way), ``job`` from the
  resource's ``service.namespace/service.name`` and ``instance`` from
  ``service.instance.id``;
- gauges and cumulative sums as one sample per point; cumulative histograms as
  ``_bucket{le=...}`` (cumulative counts, ``+Inf`` last), ``_sum`` and ``_count``;
  summaries as ``{quantile=...}``, ``_sum`` and ``_count``.

Delta temporality and exponential histograms are not stored yet: their points are
counted as rejected in the answer's ``partial_success`` with a message naming them, and
the rest of the request is stored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

from .queries import format_value
from .tsdb.head import SampleInput

_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")
UNITS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds",
         "min": "minutes", "h": "hours", "d": "days", "By": "bytes", "KiBy": "kibibytes",
         "MiBy": "mebibytes", "GiBy": "gibibytes", "KBy": "kilobytes", "MBy": "megabytes",
         "GBy": "gigabytes", "bit": "bits", "%": "percent", "Hz": "hertz", "V": "volts",
         "A": "amperes", "J": "joules", "W": "watts", "Cel": "celsius", "m": "meters"}
CUMULATIVE = m.AGGREGATION_TEMPORALITY_CUMULATIVE


@dataclass
class Converted:
    samples: list[SampleInput] = field(default_factory=list)
    rejected_points: int = 0
    problems: set[str] = field(default_factory=set)

    def message(self) -> str:
        return "; ".join(sorted(self.problems))


def metric_name(name: str, unit: str, *, gauge: bool, counter: bool) -> str:
    out = _INVALID.sub("_", name)
    if out and out[0].isdigit():
        out = "_" + out
    suffix = ""
    if unit and not unit.startswith("{"):
        base = unit.split("{")[0]
        if base == "1":
            suffix = "ratio" if gauge else ""
        elif "/" in base:
            num, _, den = base.partition("/")
            words = [UNITS.get(num, _INVALID.sub("_", num)),
                     UNITS.get(den, _INVALID.sub("_", den)).rstrip("s") or den]
            suffix = f"{words[0]}_per_{words[1]}"
        else:
            suffix = UNITS.get(base, _INVALID.sub("_", base))
    if suffix and not out.endswith("_" + suffix):
        out = f"{out}_{suffix}"
    if counter and not out.endswith("_total"):
        out += "_total"
    return out


def label_name(key: str) -> str:
    out = _INVALID_LABEL.sub("_", key)
    if out and out[0].isdigit():
        out = "key_" + out
    if out.startswith("__") and out != "__name__":
        out = "key" + out
    return out or "key_empty"


def _value(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value)
    return str(getattr(value, kind)) if kind else ""


def _attributes(attrs: Iterable[KeyValue]) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in attrs:
        name = label_name(kv.key)
        value = _value(kv.value)
        out[name] = f"{out[name]};{value}" if name in out else value
    return out


def _resource_labels(attrs: Iterable[KeyValue]) -> dict[str, str]:
    found = {kv.key: _value(kv.value) for kv in attrs}
    out: dict[str, str] = {}
    name = found.get("service.name", "")
    if name:
        namespace = found.get("service.namespace", "")
        out["job"] = f"{namespace}/{name}" if namespace else name
    if found.get("service.instance.id"):
        out["instance"] = found["service.instance.id"]
    return out


def _ms(nanos: int) -> int:
    return nanos // 1_000_000


def _pairs(base: dict[str, str], extra: dict[str, str]) -> list[tuple[str, str]]:
    return sorted({**extra, **base}.items())


def samples_from_export(request: ExportMetricsServiceRequest) -> Converted:
    out = Converted()
    for rm in request.resource_metrics:
        resource = _resource_labels(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                _metric(metric, resource, out)
    return out


def _metric(metric: m.Metric, resource: dict[str, str], out: Converted) -> None:
    kind = metric.WhichOneof("data")
    if kind == "gauge":
        name = metric_name(metric.name, metric.unit, gauge=True, counter=False)
        _numbers(name, metric.gauge.data_points, resource, out)
    elif kind == "sum":
        s = metric.sum
        if s.aggregation_temporality != CUMULATIVE:
            out.rejected_points += len(s.data_points)
            out.problems.add(f"{metric.name}: delta temporality is not supported yet")
            return
        name = metric_name(metric.name, metric.unit, gauge=not s.is_monotonic,
                           counter=s.is_monotonic)
        _numbers(name, s.data_points, resource, out)
    elif kind == "histogram":
        h = metric.histogram
        if h.aggregation_temporality != CUMULATIVE:
            out.rejected_points += len(h.data_points)
            out.problems.add(f"{metric.name}: delta temporality is not supported yet")
            return
        base = metric_name(metric.name, metric.unit, gauge=False, counter=False)
        for p in h.data_points:
            labels = _attributes(p.attributes)
            t = _ms(p.time_unix_nano)
            running = 0
            bounds = [*p.explicit_bounds, math.inf]
            for bound, count in zip(bounds, p.bucket_counts):
                running += count
                le = format_value(float(bound))
                out.samples.append((_pairs({"__name__": base + "_bucket", "le": le},
                                           {**labels, **resource}), t, float(running)))
            if p.HasField("sum"):
                out.samples.append((_pairs({"__name__": base + "_sum"}, {**labels, **resource}),
                                    t, p.sum))
            out.samples.append((_pairs({"__name__": base + "_count"}, {**labels, **resource}),
                                t, float(p.count)))
    elif kind == "summary":
        base = metric_name(metric.name, metric.unit, gauge=False, counter=False)
        for q in metric.summary.data_points:
            labels = {**_attributes(q.attributes), **resource}
            t = _ms(q.time_unix_nano)
            for v in q.quantile_values:
                out.samples.append((_pairs({"__name__": base, "quantile": format_value(v.quantile)},
                                           labels), t, v.value))
            out.samples.append((_pairs({"__name__": base + "_sum"}, labels), t, q.sum))
            out.samples.append((_pairs({"__name__": base + "_count"}, labels), t,
                                float(q.count)))
    elif kind == "exponential_histogram":
        out.rejected_points += len(metric.exponential_histogram.data_points)
        out.problems.add(f"{metric.name}: exponential histograms are not supported yet")


def _numbers(name: str, points: Iterable[m.NumberDataPoint], resource: dict[str, str],
             out: Converted) -> None:
    for p in points:
        value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
        out.samples.append((_pairs({"__name__": name}, {**_attributes(p.attributes),
                                                        **resource}),
                            _ms(p.time_unix_nano), value))
