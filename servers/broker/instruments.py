"""The broker's own metrics (``ServiceSpec.instruments``): partition end offsets, and each
consumer group's committed offset and lag, the design's "messages in the queue".

Committed offsets live in etcd, which the metrics' export thread cannot await: while
metrics are on, a task on the event loop reads them every metrics interval and keeps a
view of the partitions this broker leads, which the instruments read. With etcd down the
view keeps the offsets read last, against the current end offsets.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .app import BrokerApp
from .domain import MetadataUnavailable, OffsetsView

if TYPE_CHECKING:
    from geoplex.servers._runtime.metrics import Readings, ServiceMetrics

log = logging.getLogger(__name__)

END_OFFSET = "geoplex.broker.partition.end_offset"
COMMITTED_OFFSET = "geoplex.broker.consumer.committed_offset"
LAG = "geoplex.broker.consumer.lag"


class OffsetInstruments:
    def __init__(self, app: BrokerApp) -> None:
        self.app = app
        self.view = OffsetsView()  # replaced whole by sample(), read by the export thread
        self._committed: dict[str, dict[tuple[str, int], int]] = {}

    def register(self, metrics: ServiceMetrics) -> None:
        metrics.gauge(END_OFFSET, self._ends, unit="{offset}",
                      description="The offset the next record written to a partition this "
                                  "broker leads gets (its high watermark)")
        metrics.gauge(COMMITTED_OFFSET, self._committed_offsets, unit="{offset}",
                      description="A consumer group's committed offset on a partition")
        metrics.gauge(LAG, self._lags, unit="{message}",
                      description="Records of a partition a consumer group has not "
                                  "committed yet (end offset - committed offset)")
        if metrics.enabled:
            self.app.spawn(self.run(metrics.interval_s), "broker offset metrics")

    async def run(self, interval_s: float) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # noqa: BLE001 - the metrics must never stop the broker
                log.debug("broker offset metrics: a sample failed", exc_info=True)
            await asyncio.sleep(interval_s)  # the metrics' own interval

    async def sample(self) -> None:
        try:
            self._committed = await self.app.committed_offsets()
        except MetadataUnavailable:
            pass  # etcd is down: the offsets read last
        self.view = self.app.offsets_view(self._committed)

    def _ends(self) -> Readings:
        return [(end, {"topic": topic, "partition": p}) for topic, p, end in self.view.ends]

    def _committed_offsets(self) -> Readings:
        return [(lag.committed, {"topic": lag.topic, "partition": lag.partition,
                                 "group": group})
                for group, lag in self.view.groups if lag.committed >= 0]

    def _lags(self) -> Readings:
        return [(lag.lag, {"topic": lag.topic, "partition": lag.partition, "group": group})
                for group, lag in self.view.groups]
