"""Samples the push paths refused, by path and reason: telemetry's own
``geoplex_telemetry_samples_rejected_total{path, reason}`` (exported with the server's
metrics, ``ServiceSpec.instruments``), which the default rule
``TelemetryIngestRefusingSamples`` watches.

A refused write is answered to its sender with the reason (INVALID_ARGUMENT,
RESOURCE_EXHAUSTED...), and nothing of it is stored; this counts how many samples it
held, so that a sender that drops what is refused (remote write drops a 400) is seen from
telemetry's side too. Paths: ``write`` (gRPC ``Write``), ``remote_write`` (the Prometheus
remote-write endpoint), ``otlp`` (OTLP ``Export``; points of a kind not supported yet are
counted with reason ``UNSUPPORTED_POINT`` although the rest of the export is stored) and
``broker`` (the mesh's metrics read from the broker). The reason is the error's
(``SAMPLE_RATE_LIMIT``, ``SERIES_LIMIT``, ``INVALID_LABELS``, ``TOO_FAR_IN_FUTURE``...).
Scrapes are not counted here: a scrape the store refuses shows as ``up`` 0, and samples a
scrape repeats show in ``scrape_samples_*`` (rule ``TelemetryIngestDroppingSamples``).
Exact duplicates (a retried batch) are not refusals and are not counted.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from geoplex.servers._runtime.errors import GeoplexError

if TYPE_CHECKING:
    from geoplex.servers._runtime.metrics import Readings, ServiceMetrics

PATHS: Final = ("write", "remote_write", "otlp", "broker")
EXPORTED: Final = "geoplex.telemetry.samples_rejected"  # -> ..._samples_rejected_total
UNSUPPORTED_POINT: Final = "UNSUPPORTED_POINT"


class IngestStats:
    """Running totals of refused samples; safe to read from the metrics export thread."""

    def __init__(self) -> None:
        self._rejected: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def rejected(self, path: str, reason: str, samples: int) -> None:
        if path not in PATHS:
            raise ValueError(f"unknown ingestion path {path!r} (allowed: {', '.join(PATHS)})")
        if samples <= 0:
            return
        with self._lock:
            key = (path, reason)
            self._rejected[key] = self._rejected.get(key, 0) + samples

    @contextlib.contextmanager
    def refusals(self, path: str, samples: Callable[[], int]) -> Iterator[None]:
        """Count the samples of a write (``samples()``, asked only when it is refused)
        that raises a GeoplexError inside, under the error's reason; re-raises it."""
        try:
            yield
        except GeoplexError as error:
            self.rejected(path, error.reason, samples())
            raise

    def readings(self) -> Readings:
        with self._lock:
            items = list(self._rejected.items())
        return [(float(n), {"path": path, "reason": reason}) for (path, reason), n in items]


def register(stats: IngestStats) -> Callable[[ServiceMetrics], None]:
    def hook(metrics: ServiceMetrics) -> None:
        metrics.counter(EXPORTED, stats.readings, unit="{sample}",
                        description="samples a push path refused (answered to the sender, "
                                    "nothing of the write stored), by path and reason")
    return hook
