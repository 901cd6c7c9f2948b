"""The process's metrics through the broker (``GEOPLEX_METRICS=broker``).

Each export is the OTLP ``ExportMetricsServiceRequest`` the OTLP exporter would send,
produced as one record to the ``telemetry-metrics`` topic (``GEOPLEX_METRICS_TOPIC``),
keyed by the process's ``service.instance.id`` so one process's exports stay in order on
one partition, with acks=all. Telemetry's consumer group ``telemetry-metrics``
(``servers/telemetry/metrics_consumer.py``) stores them as its OTLP ingest does.

Why through the broker: telemetry can be down, restarting or slow without a single export
being lost — the broker holds them (it is the buffer the design puts between the fleet
and the store), telemetry catches up from its committed offset, and the backlog is the
group's lag, which telemetry itself charts. Exports are cumulative and a point's
timestamp is its collection time, so a record read twice (at least once) writes the same
samples again, which the store drops as exact duplicates: idempotent at the consumer.

The broker down: the export fails after its bounded timeout (as an OTLP export to a
down telemetry does), the next export carries the running totals again, and only
resolution is lost. The producer runs on an event loop of its own, in a thread, because
the SDK's reader calls ``export`` from its thread; the service's loop is never touched.

The broker's own processes and telemetry's keep pushing OTLP straight to telemetry (`geoplex
up` sets them so): the broker's metrics must reach telemetry when the broker is what is
failing, and telemetry's own must not wait on the broker to say that telemetry is fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.metrics.view import Aggregation

# the broker's SDK: what a producer is (this module is the runtime's one use of it)
from geoplex.clients.broker import BrokerClient
from geoplex.clients.broker_producer import Acks, Producer
from geoplex.clients.errors import AlreadyExistsError

TOPIC_PARTITIONS = 3
TOPIC_RETENTION_S = 6 * 3600.0      # the backlog telemetry can catch up on
TOPIC_MAX_MESSAGE_BYTES = 4 << 20   # one export of a busy process fits


async def ensure_metrics_topic(client: BrokerClient, topic: str, timeout: float) -> None:
    """The metrics topic, made if missing: by whichever side comes first, the services
    producing or telemetry consuming (servers/telemetry/metrics_consumer.py)."""
    with contextlib.suppress(AlreadyExistsError):
        await client.create_topic(topic, TOPIC_PARTITIONS, retention=TOPIC_RETENTION_S,
                                  max_message_bytes=TOPIC_MAX_MESSAGE_BYTES, timeout=timeout)


class BrokerMetricExporter(MetricExporter):
    """A MetricExporter that produces each export to a broker topic."""

    def __init__(self, brokers: Sequence[str], topic: str, key: str, timeout_s: float, *,
                 preferred_temporality: dict[type, AggregationTemporality],
                 preferred_aggregation: dict[type, Aggregation]) -> None:
        super().__init__(preferred_temporality=preferred_temporality,
                         preferred_aggregation=preferred_aggregation)
        self.brokers = tuple(brokers)
        self.topic = topic
        self.key = key.encode()
        self.timeout_s = timeout_s
        self._client: BrokerClient | None = None
        self._producer: Producer | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="geoplex-metrics-broker", daemon=True)
        self._thread.start()
        self._closed = False

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        if self._closed:
            return MetricExportResult.FAILURE
        payload = encode_metrics(metrics_data).SerializeToString()
        timeout = min(self.timeout_s, timeout_millis / 1000)
        future = asyncio.run_coroutine_threadsafe(self._send(payload, timeout), self._loop)
        try:
            future.result(timeout + 1.0)
        except Exception:  # noqa: BLE001 - the caller (metrics._Exporter) logs and goes on
            future.cancel()
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    async def _ready(self) -> Producer:
        if self._producer is None:
            client = self._client = self._client or BrokerClient(list(self.brokers))
            await ensure_metrics_topic(client, self.topic, self.timeout_s)
            # a record not delivered within a few intervals is stale: let it go
            self._producer = client.producer(acks=Acks.ALL, linger_ms=0.0,
                                             delivery_timeout=max(30.0, 3 * self.timeout_s))
        return self._producer

    async def _send(self, payload: bytes, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            producer = await self._ready()
            delivered = await producer.send(self.topic, payload, key=self.key)
            await delivered

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True  # each export waits for its acknowledgement

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._closed:
            return
        self._closed = True
        future = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout_millis / 1000)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_millis / 1000)
        if not self._thread.is_alive():
            self._loop.close()

    async def _close(self) -> None:
        producer, self._producer = self._producer, None
        client, self._client = self._client, None
        with contextlib.suppress(Exception):
            if producer is not None:
                await asyncio.wait_for(producer.close(), 2.0)
        with contextlib.suppress(Exception):
            if client is not None:
                await asyncio.wait_for(client.aclose(), 2.0)
