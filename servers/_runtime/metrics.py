"""Each server's own metrics, pushed to telemetry over OTLP (GEOPLEX_METRICS=otlp) or through
the broker (GEOPLEX_METRICS=broker, ``metrics_broker.py``); off unless one is asked for.

Why a push over OTLP and not a ``/metrics`` endpoint that telemetry scrapes: a service
runs as several processes on one port (``SO_REUSEPORT``, ``processes`` in its
declaration), so a scrape of that port reaches whichever process the kernel picks, each
time another one's counters, which read as resets and jumps. A push names its process
(``service.instance.id``) in every export, so each process is its own series. Telemetry
already takes OTLP on its gRPC port (``servers/telemetry/otlp_servicer.py``), the
OpenTelemetry SDK is already here for tracing, and no process needs a second port or a
target list kept in step with ``geoplex up``.

What is recorded, with ``job`` = the service's name and ``instance`` = ``host:pid``:

- for every RPC (the runtime's interceptor), ``rpc.server.call.duration`` (seconds; a
  histogram with ``rpc.system``, ``rpc.service``, ``rpc.method`` and
  ``rpc.grpc.status_code`` as OpenTelemetry's semantic conventions name them): requests
  are its count, errors its non-zero status codes. A call whose duration is a wait by
  design also has ``geoplex.rpc.waits``: ``stream`` for a streaming RPC (its duration is
  how long the stream stayed open) and ``poll`` for the unary long polls a service names
  (``ServiceSpec.long_polls``: a broker ``Fetch`` at the end of the log waits up to its
  ``max_wait``), so a latency query or budget leaves them out with
  ``{geoplex_rpc_waits=""}``;
- ``rpc.server.active_streams``: the streaming RPCs open now, by method;
- ``process.uptime``: seconds since the metrics started, one series per process always
  there (push has no ``up`` series: alert on this one being absent, or on it going down);
- what a service registers in its ``ServiceSpec.instruments`` hook (:class:`ServiceMetrics`).

Exports are cumulative (what telemetry stores) and run on the SDK's reader thread every
``GEOPLEX_METRICS_INTERVAL_SECONDS``, each with a bounded timeout. Telemetry down or slow
never reaches a call: the next export carries the running totals again, so a failed one
loses only resolution, and failures are logged at debug, once a minute at most.

The RPC histogram is aggregated here rather than by the SDK's synchronous ``Histogram``,
whose ``record()`` measured 14 us (no attributes) to 28 us (four) per call on the
benchmark machine, about a sixth of a ``Ping``'s server time; this one costs ~2 us (~3 us
for all the interceptor adds per call, ~2 % of a ``Ping``) and is added to each export as
the same cumulative OTLP histogram the SDK would make.
"""

from __future__ import annotations

import bisect
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeter, Observation
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, HistogramDataPoint, Metric
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.view import Aggregation, ExplicitBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .config import ConfigError, MetricsConfig

log = logging.getLogger(__name__)

RUNTIME_SCOPE = "geoplex.servers._runtime"
CALL_DURATION = "rpc.server.call.duration"
ACTIVE_STREAMS = "rpc.server.active_streams"
UPTIME = "process.uptime"
# seconds: sub-millisecond calls (a Ping, a cached search) up to 10 s (a matrix, a long
# poll); longer ones (streams held open) land in +Inf
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FAILURE_LOG_EVERY_S = 60.0
SHUTDOWN_TIMEOUT_S = 2.0  # the last export at shutdown waits no longer than this
_READ_ATTEMPTS = 3

# what a service's read of its state gives: a number, or values with their attributes
Attributes = Mapping[str, str | int | float | bool]
Readings = Iterable[tuple[float, Attributes]]
Read = Callable[[], float | Readings]

_CUMULATIVE: dict[type, AggregationTemporality] = {
    kind: AggregationTemporality.CUMULATIVE
    for kind in (Counter, UpDownCounter, Histogram, ObservableCounter,
                 ObservableUpDownCounter, ObservableGauge)}
# explicit buckets even if OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION asks
# for exponential ones, which telemetry does not store
_EXPLICIT: dict[type, Aggregation] = {Histogram: ExplicitBucketHistogramAggregation()}


WAITS = "geoplex.rpc.waits"  # "stream" | "poll": the call's duration is a wait by design


def rpc_attributes(method: str, code: grpc.StatusCode | None = None, waits: str = ""
                   ) -> dict[str, str | int]:
    """The semantic conventions' attributes of ``/package.Service/Method`` (and a code),
    with :data:`WAITS` when ``waits`` says the call waits by design."""
    service, _, name = method.removeprefix("/").partition("/")
    out: dict[str, str | int] = {"rpc.system": "grpc", "rpc.service": service,
                                 "rpc.method": name}
    if code is not None:
        out["rpc.grpc.status_code"] = code.value[0]
    if waits:
        out[WAITS] = waits
    return out


class _Series:
    __slots__ = ("attributes", "counts", "total", "low", "high")

    def __init__(self, attributes: dict[str, str | int], buckets: int) -> None:
        self.attributes = attributes
        self.counts = [0] * buckets
        self.total = 0.0
        self.low = float("inf")
        self.high = float("-inf")


class RpcMetrics:
    """Every RPC's duration by method and status code, and the streams open by method.

    Written by the interceptor on the event loop, read by the export thread: the lock
    keeps each series' buckets, count and sum one consistent reading.
    """

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.bounds = bounds
        self.started_ns = time.time_ns()
        self.long_polls: set[str] = set()  # full method names (ServiceSpec.long_polls)
        self._lock = threading.Lock()
        self._series: dict[tuple[str, grpc.StatusCode, str], _Series] = {}
        self._streams: dict[str, int] = {}

    def record(self, method: str, code: grpc.StatusCode, seconds: float, waits: str = ""
               ) -> None:
        """One finished call; ``waits`` "stream" or "poll" if its duration is a wait by
        design (:data:`WAITS`)."""
        key = (method, code, waits)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = _Series(rpc_attributes(method, code, waits), len(self.bounds) + 1)
                self._series[key] = series
            # le semantics: a value equal to a bound counts in that bound's bucket
            series.counts[bisect.bisect_left(self.bounds, seconds)] += 1
            series.total += seconds
            if seconds < series.low:
                series.low = seconds
            if seconds > series.high:
                series.high = seconds

    def stream_opened(self, method: str) -> None:
        self._streams[method] = self._streams.get(method, 0) + 1

    def stream_closed(self, method: str) -> None:
        self._streams[method] = self._streams.get(method, 1) - 1

    def open_streams(self) -> list[tuple[float, Attributes]]:
        return [(float(n), rpc_attributes(method)) for method, n in list(self._streams.items())]

    def duration_metric(self, now_ns: int) -> Metric | None:
        """The histogram as an export carries it (None before the first call)."""
        with self._lock:
            points = [HistogramDataPoint(
                attributes=dict(s.attributes), start_time_unix_nano=self.started_ns,
                time_unix_nano=now_ns, count=sum(s.counts), sum=s.total,
                bucket_counts=list(s.counts), explicit_bounds=self.bounds,
                min=s.low, max=s.high) for s in self._series.values()]
        if not points:
            return None
        return Metric(name=CALL_DURATION, unit="s",
                      description="Duration of the RPCs this process served",
                      data=HistogramData(data_points=points,
                                         aggregation_temporality=AggregationTemporality.CUMULATIVE))


def _observer(name: str, read: Read) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        for _ in range(_READ_ATTEMPTS):
            try:
                got = read()
                if isinstance(got, (int, float)):
                    return [Observation(got)]
                return [Observation(value, dict(attributes)) for value, attributes in got]
            except RuntimeError:
                continue  # a dict or set changed size while this thread walked it
            except Exception as exc:  # noqa: BLE001 - one bad read must not stop the export
                log.debug("metrics: reading %s failed (%s)", name, type(exc).__name__)
                return []
        return []

    return observe


class ServiceMetrics:
    """What a service's ``ServiceSpec.instruments`` hook registers its instruments with.

    ``meter`` is the SDK's (a no-op one while metrics are off: nothing is ever read). The
    helpers make observable instruments from a ``read()`` of state the service keeps
    anyway: it runs on the export thread while the event loop goes on, so it only reads
    (plain numbers, ``list(d.items())`` before walking a dict) and is cheap.
    """

    def __init__(self, meter: Meter, enabled: bool = False, interval_s: float = 10.0) -> None:
        self.meter = meter
        self.enabled = enabled  # False: skip work (a sampler task) that only feeds metrics
        self.interval_s = interval_s

    def counter(self, name: str, read: Read, *, unit: str, description: str) -> None:
        """A running total that only grows (exported with ``_total``)."""
        self.meter.create_observable_counter(name, [_observer(name, read)], unit=unit,
                                             description=description)

    def gauge(self, name: str, read: Read, *, unit: str, description: str) -> None:
        """A value read as it is now (a size, an offset, a lag)."""
        self.meter.create_observable_gauge(name, [_observer(name, read)], unit=unit,
                                           description=description)

    def up_down_counter(self, name: str, read: Read, *, unit: str, description: str) -> None:
        """A count of things that come and go (open streams), summable across processes."""
        self.meter.create_observable_up_down_counter(name, [_observer(name, read)], unit=unit,
                                                     description=description)


class _Quiet(threading.local):
    exporting = False


_quiet = _Quiet()


class _WhileExporting(logging.Filter):
    """Drops the OTLP exporter's own lines while it exports metrics (an ERROR or WARNING
    per failed try); :class:`_Exporter` tells of failures at debug, once a minute."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _quiet.exporting


for _name in ("opentelemetry.exporter.otlp.proto.grpc.exporter",
              "opentelemetry.exporter.otlp.proto.grpc.metric_exporter"):
    logging.getLogger(_name).addFilter(_WhileExporting())


class _Exporter(MetricExporter):
    """The OTLP exporter with the runtime's RPC histogram added to each export, and its
    failures caught and logged at debug, rate-limited."""

    def __init__(self, inner: MetricExporter, rpc: RpcMetrics, resource: Resource,
                 endpoint: str) -> None:
        super().__init__(preferred_temporality=dict(_CUMULATIVE),
                         preferred_aggregation=dict(_EXPLICIT))
        self.inner = inner
        self.rpc = rpc
        self.resource = resource
        self.endpoint = endpoint
        self.failures = 0  # in a row
        self._last_line = float("-inf")

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        why = "not delivered"
        _quiet.exporting = True
        try:
            result = self.inner.export(self._with_rpc(metrics_data),
                                       timeout_millis=timeout_millis)
        except Exception as exc:  # noqa: BLE001 - telemetry's problem, not the service's
            result, why = MetricExportResult.FAILURE, type(exc).__name__
        finally:
            _quiet.exporting = False
        self._note(result is MetricExportResult.SUCCESS, why)
        return result

    def _with_rpc(self, data: MetricsData) -> MetricsData:
        metric = self.rpc.duration_metric(time.time_ns())
        if metric is None:
            return data
        if not data.resource_metrics:
            scope = ScopeMetrics(InstrumentationScope(RUNTIME_SCOPE), [metric], "")
            return MetricsData([ResourceMetrics(self.resource, [scope], "")])
        first, *rest = data.resource_metrics
        # into the runtime's own scope (the SDK's, with the other runtime instruments): the
        # OTLP encoder keeps one entry per scope, so a second one would replace the first
        scopes = list(first.scope_metrics)
        at = next((i for i, sm in enumerate(scopes) if sm.scope.name == RUNTIME_SCOPE), None)
        if at is None:
            scopes.append(ScopeMetrics(InstrumentationScope(RUNTIME_SCOPE), [metric], ""))
        else:
            scopes[at] = ScopeMetrics(scopes[at].scope, [*scopes[at].metrics, metric],
                                      scopes[at].schema_url)
        return MetricsData([ResourceMetrics(first.resource, scopes, first.schema_url), *rest])

    def _note(self, ok: bool, why: str) -> None:
        if ok:
            if self.failures:
                log.debug("metrics: exports to %s work again after %d failed", self.endpoint,
                          self.failures)
            self.failures = 0
            return
        self.failures += 1
        now = time.monotonic()
        if now - self._last_line >= FAILURE_LOG_EVERY_S:
            self._last_line = now
            log.debug("metrics: export to %s failed (%s; %d in a row); the next one sends the "
                      "running totals again", self.endpoint, why, self.failures)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis)


def instance_id() -> str:
    """This process, as ``service.instance.id``: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class RuntimeMetrics:
    """One process's metrics: a MeterProvider pushing over OTLP, or (off) nothing at all:
    no provider, no thread, no RPC bookkeeping, a no-op meter for the services' hooks."""

    def __init__(self, service: str, provider: MeterProvider | None = None,
                 rpc: RpcMetrics | None = None, interval_s: float = 10.0,
                 instance: str = "") -> None:
        self.service = service
        self.provider = provider
        self.rpc = rpc
        self.interval_s = interval_s
        self.instance = instance
        self._stopped = False

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def meter(self, scope: str) -> Meter:
        if self.provider is None:
            return NoOpMeter(scope)
        return self.provider.get_meter(scope)

    def for_service(self) -> ServiceMetrics:
        return ServiceMetrics(self.meter(f"geoplex.servers.{self.service}"), self.enabled,
                              self.interval_s)

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Collect and export now (tests; the reader does it every interval)."""
        if self.provider is None:
            return True
        return self.provider.force_flush(timeout_millis=timeout_s * 1000)

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """A last export, waited for at most ``timeout_s``; then the exporter closes."""
        if self.provider is None or self._stopped:
            return
        self._stopped = True
        self.provider.shutdown(timeout_millis=timeout_s * 1000)


def make_metrics(config: MetricsConfig, service: str, exporter: MetricExporter | None = None,
                 instance: str | None = None) -> RuntimeMetrics:
    """The process's metrics for ``config`` (off: nothing is made).

    ``exporter`` replaces the OTLP one (tests pass one that keeps what it is given).
    """
    if not config.enabled and exporter is None:
        return RuntimeMetrics(service, interval_s=config.interval_s)
    # an export waits at most this long (then the next one sends the totals again)
    timeout_s = min(max(config.interval_s, 1.0), 10.0)
    instance = instance or instance_id()
    if exporter is not None:
        inner = exporter
    elif config.mode == "broker":
        from .metrics_broker import BrokerMetricExporter  # the broker's SDK only if asked
        inner = BrokerMetricExporter(config.brokers, config.topic, f"{service}/{instance}",
                                     timeout_s, preferred_temporality=dict(_CUMULATIVE),
                                     preferred_aggregation=dict(_EXPLICIT))
    else:
        inner = _otlp_exporter(config, timeout_s)
    resource = Resource.create({"service.name": service, "service.instance.id": instance})
    rpc = RpcMetrics()
    reader = PeriodicExportingMetricReader(
        _Exporter(inner, rpc, resource, config.destination),
        export_interval_millis=config.interval_s * 1000,
        export_timeout_millis=timeout_s * 1000)
    provider = MeterProvider([reader], resource=resource,
                             exemplar_filter=AlwaysOffExemplarFilter(), shutdown_on_exit=False)
    metrics = RuntimeMetrics(service, provider, rpc, config.interval_s, instance)
    runtime = ServiceMetrics(metrics.meter(RUNTIME_SCOPE))
    runtime.up_down_counter(ACTIVE_STREAMS, rpc.open_streams, unit="{stream}",
                            description="Streaming RPCs open in this process")
    # always one point, so every collection has something to export (the SDK skips an
    # empty one, and the RPC histogram rides on the export)
    started = time.monotonic()
    runtime.gauge(UPTIME, lambda: time.monotonic() - started, unit="s",
                  description="Seconds since this process started exporting metrics")
    return metrics


def _otlp_exporter(config: MetricsConfig, timeout_s: float) -> MetricExporter:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter,
        )
    except ImportError:
        raise ConfigError("GEOPLEX_METRICS=otlp needs the opentelemetry-exporter-otlp-proto-grpc "
                          "package: pip install opentelemetry-exporter-otlp-proto-grpc"
                          ) from None
    endpoint = config.endpoint if config.secure else config.target
    # a restarted telemetry is found again within seconds: gRPC's reconnect back-off
    # otherwise grows to two minutes, and the pushes fail all that while
    # (typed as Any: the exporter declares string values, gRPC takes these as ints)
    options: Any = (("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
               ("grpc.max_reconnect_backoff_ms", max(1000, int(config.interval_s * 1000))))
    return OTLPMetricExporter(endpoint=endpoint, insecure=not config.secure, timeout=timeout_s,
                              preferred_temporality=dict(_CUMULATIVE),
                              preferred_aggregation=dict(_EXPLICIT),
                              channel_options=options)
