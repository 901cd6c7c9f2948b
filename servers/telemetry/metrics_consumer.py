"""The mesh's metrics through the broker: the consumer group ``telemetry-metrics``.

The services (``GEOPLEX_METRICS=broker``, ``servers/_runtime/metrics_broker.py``) produce
each export as an OTLP ``ExportMetricsServiceRequest`` to the ``telemetry-metrics`` topic;
this group reads it from its committed offset and stores each request as the OTLP ingest
does (``otlp.py``), then moves on (the offset is committed once a record is stored). At
least once: a record read again after a restart or a rebalance writes the same cumulative
points at the same timestamps, which the store drops as exact duplicates. A record the
store refuses (too old for the out-of-order window, a limit) is counted and skipped, so
one bad record never holds a partition. While telemetry is down the broker keeps the
exports (6 hours of them); the group's lag is the backlog, charted with every other group's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as otlp

from geoplex.clients.broker import BrokerClient
from geoplex.clients.errors import AlreadyExistsError, GeoplexError

from .otlp import samples_from_export
from .tsdb.api import Storage
from .tsdb.errors import SampleRejected

logger = logging.getLogger(__name__)

GROUP = "telemetry-metrics"
PARTITIONS = 3                 # as the producers create it (metrics_broker.py)
RETENTION_S = 6 * 3600.0
MAX_MESSAGE_BYTES = 4 << 20
STOP_GRACE_S = 3.0


class MetricsConsumer:
    def __init__(self, brokers: Sequence[str], store: Storage, topic: str,
                 max_future_s: float) -> None:
        self.brokers = tuple(brokers)
        self.store = store
        self.topic = topic
        self.max_future_s = max_future_s
        self.records = 0            # stored
        self.samples = 0
        self.rejected_records = 0   # unreadable, or refused by the store
        self._task: asyncio.Task[None] | None = None

    def metrics(self) -> dict[str, float]:
        return {"geoplex_telemetry_broker_metrics_records_total": self.records,
                "geoplex_telemetry_broker_metrics_samples_total": self.samples,
                "geoplex_telemetry_broker_metrics_rejected_records_total":
                    self.rejected_records}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telemetry-metrics-consumer")
        logger.info("telemetry: consuming the mesh's metrics from topic %s (group %s)",
                    self.topic, GROUP)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=STOP_GRACE_S)
        if not done:  # leaving the group calls a broker that may be gone: give up on it
            task.cancel()
            await asyncio.wait([task], timeout=1.0)

    async def _run(self) -> None:
        async with BrokerClient(list(self.brokers)) as broker:
            while True:
                try:
                    with contextlib.suppress(AlreadyExistsError):
                        await broker.create_topic(self.topic, PARTITIONS,
                                                  retention=RETENTION_S,
                                                  max_message_bytes=MAX_MESSAGE_BYTES,
                                                  timeout=5)
                    async with broker.consumer(GROUP, [self.topic],
                                               auto_offset_reset="earliest") as consumer:
                        async for record in consumer:
                            await self._store(record.value, record.partition, record.offset)
                except GeoplexError as exc:
                    logger.warning("%s: consumer stopped (%s); rejoining in 1 s", GROUP,
                                   type(exc).__name__)
                    await asyncio.sleep(1.0)

    async def _store(self, value: bytes, partition: int, offset: int) -> None:
        try:
            request = otlp.ExportMetricsServiceRequest.FromString(value)
        except DecodeError:
            self.rejected_records += 1
            logger.warning("%s: skipped an unreadable record at %s/%d offset %d", GROUP,
                           self.topic, partition, offset)
            return
        samples = samples_from_export(request).samples
        horizon = int(time.time() * 1000) + int(self.max_future_s * 1000)
        samples = [s for s in samples if s[1] <= horizon]
        if not samples:
            return
        try:
            await asyncio.to_thread(self.store.append, samples)
        except SampleRejected as exc:
            self.rejected_records += 1
            logger.warning("%s: the store refused the record at %s/%d offset %d: %s", GROUP,
                           self.topic, partition, offset, exc)
            return
        self.records += 1
        self.samples += len(samples)
