"""The traffic consumer group: location batches -> map matching -> UpdateTraffic.

It reads the ``locations`` topic in its own consumer group (``traffic``), so it sees every
batch the history sees and keeps its own position. Each batch, with the user's last fix
of the batch before prepended (so the step between two batches is matched too), goes to
routing's ``MatchTrace``; the traversals become speed observations in
:class:`~.traffic.SegmentSpeeds`; every ``interval_s`` the current speeds go to routing's
``UpdateTraffic`` (as an admin), valid for ``valid_s``: when observations stop, the router
fades the segments back to free flow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from geoplex.clients.broker import BrokerClient
from geoplex.clients.errors import GeoplexError
from geoplex.clients.routing import RoutingClient, observation

from geoplex.clients.broker_consumer import stop_consumer_tasks

from .consuming import consume_batches
from .locations import Fix, LastFixes
from .traffic import SegmentSpeeds, SpeedObservation

logger = logging.getLogger(__name__)

TRAFFIC_GROUP = "traffic"


class TrafficFeed:
    def __init__(self, broker: BrokerClient, routing: RoutingClient, topic: str,
                 admin_token: Callable[[], str], *, interval_s: float = 5.0, valid_s: float = 120.0,
                 window_s: float = 300.0) -> None:
        self.broker = broker
        self.routing = routing
        self.topic = topic
        self.admin_token = admin_token
        self.interval_s = interval_s
        self.valid_s = valid_s
        self.speeds = SegmentSpeeds(window_s=window_s)
        self._last = LastFixes()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, ready: asyncio.Event) -> None:
        async def consume_when_ready() -> None:
            await ready.wait()               # the topic exists
            await self._consume_forever()
        self._tasks = [asyncio.create_task(consume_when_ready(), name="traffic-consumer"),
                       asyncio.create_task(self._flush_forever(), name="traffic-flush")]

    async def stop(self) -> None:
        await stop_consumer_tasks(self._tasks)

    async def _consume_forever(self) -> None:
        await consume_batches(self.broker, TRAFFIC_GROUP, self.topic, self._observe,
                              auto_offset_reset="latest")

    async def _observe(self, user: str, batch_id: str, fixes: list[Fix]) -> None:
        # every fix of a record has its location and time (convert.location_record_from)
        trace = [(f.lat, f.lon, f.time) for f in fixes
                 if f.lat is not None and f.lon is not None and f.time is not None]
        if not trace:
            return
        before = self._last.get(user)
        if before is not None and before.lat is not None and before.lon is not None \
                and before.time is not None and 0 < trace[0][2] - before.time <= 120:
            trace.insert(0, (before.lat, before.lon, before.time))
        self._last.put(user, fixes[-1])
        if len(trace) < 2:
            return
        try:
            matched = await self.routing.match_trace(
                trace, accuracy_m=max(5.0, *(f.accuracy_m for f in fixes)), timeout=10)
        except GeoplexError as exc:
            # no road near, another region, routing down: this batch says nothing
            logger.info("a batch was not matched (%s)", type(exc).__name__)
            return
        when = trace[-1][2]
        self.speeds.add(user, batch_id, [
            SpeedObservation(matched.region, t.segment_id, t.speed_kmh, t.distance_meters,
                             when) for t in matched.traversals])

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            # medians over every observed segment: milliseconds to ~0.1 s, off the loop
            current = await asyncio.to_thread(self.speeds.current, time.time())
            for region, speeds in current.items():
                obs = [observation(segment_id=s, speed_kmh=min(max(v, 0.5), 300.0))
                       for s, v in speeds.items()]
                try:
                    await self.routing.update_traffic(region, obs, valid_for_s=self.valid_s,
                                                      token=self.admin_token(),
                                                      timeout=10)
                except GeoplexError as exc:
                    logger.warning("UpdateTraffic failed (%s); next round retries",
                                   type(exc).__name__)
