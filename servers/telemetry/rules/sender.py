"""Alerts to the notifier nodes (``NotifierService.PostAlerts``), as Prometheus's notifier
sends to its Alertmanagers: best effort, never in the evaluation's way.

:meth:`AlertSender.send` only queues (a bounded queue, 10,000 alerts as Prometheus's
``--alertmanager.notification-queue-capacity``; when it is full the oldest are dropped
and counted). A background task takes batches of up to 256 and posts each batch to every
node at once, each call with a timeout; a node that fails is logged when it starts and
stops failing (each failure at DEBUG) and counted per node. On close what is queued gets
one last try within the drain timeout.

This posts through the generated stub; ``clients/notifier.py`` (the SDK) can replace it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from geoplex.clients.channel import ChannelOptions
from geoplex.clients.errors import GeoplexError
from geoplex.clients.notifier import NotifierClient
from geoplex.notifier.v1 import notifier_pb2 as pb

from .evaluator import OutgoingAlert

logger = logging.getLogger(__name__)

QUEUE_CAPACITY = 10_000
BATCH_SIZE = 256
TIMEOUT_S = 10.0


def alert_pb(alert: OutgoingAlert) -> pb.Alert:
    message = pb.Alert(labels=dict(alert.labels), annotations=dict(alert.annotations),
                       generator_url=alert.generator_url)
    message.starts_at.FromMilliseconds(alert.starts_at_ms)
    message.ends_at.FromMilliseconds(alert.ends_at_ms)
    return message


@dataclass
class NodeStats:
    sent: int = 0          # alerts the node accepted
    errors: int = 0        # alerts in batches the node failed
    seconds: float = 0.0   # time spent in calls
    calls: int = 0
    failing: bool = False
    last_error: str = ""


class _Node:
    def __init__(self, address: str, options: ChannelOptions) -> None:
        self.address = address
        self.client = NotifierClient(address, options)   # the SDK: deadlines, typed errors
        self.stats = NodeStats()


class AlertSender:
    def __init__(self, nodes: Sequence[str], *, capacity: int = QUEUE_CAPACITY,
                 batch_size: int = BATCH_SIZE, timeout_s: float = TIMEOUT_S) -> None:
        self.addresses = tuple(nodes)
        self.capacity = capacity
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self._queue: collections.deque[OutgoingAlert] = collections.deque()
        self._nodes: list[_Node] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    def stats(self) -> dict[str, NodeStats]:
        return {node.address: node.stats for node in self._nodes}

    async def start(self) -> None:
        if self._task is not None or not self.addresses:
            return
        options = ChannelOptions(timeout=self.timeout_s)
        self._nodes = [_Node(address, options) for address in self.addresses]
        self._task = asyncio.create_task(self._run(), name="telemetry-alert-sender")

    def send(self, alerts: Sequence[OutgoingAlert]) -> None:
        """Queue ``alerts`` for every node (the oldest dropped beyond the capacity)."""
        if not alerts or not self.addresses:
            return
        self._queue.extend(alerts)
        over = len(self._queue) - self.capacity
        if over > 0:
            for _ in range(over):
                self._queue.popleft()
            self.dropped += over
            logger.warning("telemetry: the alert queue is full: %d alerts dropped", over)
        self._wakeup.set()

    async def flush(self) -> None:
        """Post everything queued now (the background task does this by itself)."""
        while self._queue and self._nodes:
            batch = [self._queue.popleft()
                     for _ in range(min(self.batch_size, len(self._queue)))]
            request = pb.PostAlertsRequest(alerts=[alert_pb(a) for a in batch])
            await asyncio.gather(*(self._post(node, request, len(batch))
                                   for node in self._nodes))

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.flush()  # everything queued, what came meanwhile too
            except Exception:  # noqa: BLE001 - the sender must outlive one bad batch
                logger.exception("telemetry: posting alerts failed")
            if self._closing:
                return

    async def _post(self, node: _Node, request: pb.PostAlertsRequest, count: int) -> None:
        started = time.perf_counter()
        try:
            await node.client.post_alerts(request.alerts, timeout=self.timeout_s)
        except GeoplexError as error:
            node.stats.errors += count
            node.stats.last_error = str(error)
            if not node.stats.failing:
                logger.warning("telemetry: notifier %s: posting %d alerts failed: %s",
                               node.address, count, node.stats.last_error)
            else:
                logger.debug("telemetry: notifier %s: posting %d alerts failed: %s",
                             node.address, count, node.stats.last_error)
            node.stats.failing = True
        else:
            node.stats.sent += count
            if node.stats.failing:
                logger.info("telemetry: notifier %s takes alerts again", node.address)
            node.stats.failing = False
        finally:
            node.stats.calls += 1
            node.stats.seconds += time.perf_counter() - started

    async def aclose(self, drain_timeout_s: float = 5.0) -> None:
        """Stop: what is queued gets a last try (within ``drain_timeout_s``), then the
        channels close."""
        task, self._task = self._task, None
        if task is not None:
            self._closing = True
            self._wakeup.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), drain_timeout_s)
            except asyncio.TimeoutError:
                logger.warning("telemetry: %d queued alerts not posted at shutdown",
                               len(self._queue))
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for node in self._nodes:
            await node.client.aclose()
        self._nodes = []
