"""Helpers of the runtime metrics tests: an exporter that keeps what the SDK hands it, and
that data as telemetry stores it (the real OTLP encoder, then telemetry's own otlp.py)."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

from geoplex.servers._runtime.metrics import RuntimeMetrics
from geoplex.servers._runtime.server import GeoplexServer, ServiceSpec
from geoplex.servers.telemetry.otlp import samples_from_export

Sample = tuple[dict[str, str], float]
# the make_metered_server fixture: (services, metrics) -> a started server, stopped at the
# end of the test
MakeMeteredServer = Callable[[Sequence[ServiceSpec], RuntimeMetrics], Awaitable[GeoplexServer]]


class KeepingExporter(MetricExporter):
    """Keeps every export (thread-safe: the SDK's reader thread calls it)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.exports: list[MetricsData] = []
        self.shut_down = False

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        with self._lock:
            self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.shut_down = True

    def last_samples(self) -> list[Sample]:
        """The last export as telemetry's OTLP receiver turns it into series."""
        with self._lock:
            if not self.exports:
                return []
            last = self.exports[-1]
        converted = samples_from_export(encode_metrics(last))
        assert converted.rejected_points == 0, converted.message()
        return [(dict(labels), value) for labels, _, value in converted.samples]


def series(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [(ls, v) for ls, v in samples if ls["__name__"] == name
            and all(ls.get(k) == want for k, want in labels.items())]


def value_of(samples: list[Sample], name: str, **labels: str) -> float | None:
    found = series(samples, name, **labels)
    assert len(found) <= 1, f"{name}{labels}: {len(found)} series"
    return found[0][1] if found else None
