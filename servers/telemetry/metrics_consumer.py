"""The mesh's metrics through the broker: the consumer group ``telemetry-metrics``.

The services (``GEOPLEX_METRICS=broker``, ``servers/_runtime/metrics_broker.py``) produce
each export as an OTLP ``ExportMetricsServiceRequest`` to the ``telemetry-metrics`` topic;
this group reads it from its committed offset and stores each request as the OTLP ingest
does (``otlp.py``), then moves on (the offset is committed once a record is stored). At
least once: a record read again after a restart or a rebalance writes the same cumulative
points at the same timestamps, which the store drops as exact duplicates. A record the
store refuses (too old for the out-of-order window, a limit) is logged and skipped, so
one bad record never holds a partition. While telemetry is down the broker keeps the
exports (6 hours of them); the group's lag is the backlog, charted with every other group's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as otlp

from geoplex.clients.broker import BrokerClient
from geoplex.clients.broker_consumer import stop_consumer_tasks
from geoplex.clients.errors import GeoplexError
from geoplex.servers._runtime.metrics_broker import ensure_metrics_topic

from .ingest_stats import UNSUPPORTED_POINT, IngestStats
from .otlp import samples_from_export
from .tsdb.api import Storage
from .tsdb.errors import SampleRejected

logger = logging.getLogger(__name__)

GROUP = "telemetry-metrics"


class MetricsConsumer:
    def __init__(self, brokers: Sequence[str], store: Storage, topic: str,
                 max_future_s: float, stats: IngestStats) -> None:
        self.brokers = tuple(brokers)
        self.store = store
        self.topic = topic
        self.max_future_s = max_future_s
        self.stats = stats
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telemetry-metrics-consumer")
        logger.info("telemetry: consuming the mesh's metrics from topic %s (group %s)",
                    self.topic, GROUP)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_consumer_tasks([task])

    async def _run(self) -> None:
        async with BrokerClient(list(self.brokers)) as broker:
            while True:
                try:
                    await ensure_metrics_topic(broker, self.topic, 5.0)
                    async with broker.consumer(GROUP, [self.topic],
                                               auto_offset_reset="earliest") as consumer:
                        async for record in consumer:
                            await self._store(record.value, record.partition, record.offset)
                except GeoplexError as exc:
                    logger.warning("%s: consumer stopped (%s); rejoining in 1 s", GROUP,
                                   type(exc).__name__)
                    await asyncio.sleep(1.0)

    async def _store(self, value: bytes, partition: int, offset: int) -> None:
        """One record into the store; one it cannot take is logged and skipped."""
        try:
            request = otlp.ExportMetricsServiceRequest.FromString(value)
        except DecodeError:
            logger.warning("%s: skipped an unreadable record at %s/%d offset %d", GROUP,
                           self.topic, partition, offset)
            return
        horizon = int(time.time() * 1000) + int(self.max_future_s * 1000)
        converted = samples_from_export(request)
        self.stats.rejected("broker", UNSUPPORTED_POINT, converted.rejected_points)
        samples = [s for s in converted.samples if s[1] <= horizon]
        self.stats.rejected("broker", "TOO_FAR_IN_FUTURE", len(converted.samples) - len(samples))
        if not samples:
            return
        try:
            await asyncio.to_thread(self.store.append, samples)
        except SampleRejected as exc:
            self.stats.rejected("broker", exc.reason, len(samples))
            logger.warning("%s: the store refused the record at %s/%d offset %d: %s", GROUP,
                           self.topic, partition, offset, exc)
