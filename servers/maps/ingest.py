"""Navigation location batches: checked, written to the broker, consumed into history.

A batch's accepted fixes go to the ``locations`` topic as one record keyed by user (so
one user's batches stay in order on one partition), produced with acks=ALL: the call
answers only once every in-sync replica has it, so an acknowledged fix is never lost.
Consumers read the topic in their own consumer groups: here the trip history
(``location-history``: MongoDB buckets per user and hour); the traffic matcher is another
group on the same topic. Consumption is at least once; the history applies a batch once
(by its ``batch_id``), so a replay never counts twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pymongo.errors import PyMongoError

from geoplex.clients.broker import BrokerClient
from geoplex.clients.broker_producer import Acks, Producer
from geoplex.clients.errors import AlreadyExistsError, GeoplexError
from geoplex.servers._runtime.errors import Unavailable

from . import convert
from .adapters.mongo_trips import MongoTripHistory
from .locations import Fix, LastFixes, Rejected, check

logger = logging.getLogger(__name__)

HISTORY_GROUP = "location-history"
STOP_GRACE_S = 3.0
RETENTION_S = 14 * 86_400.0


async def stop_tasks(tasks: list[asyncio.Task[None]], grace: float = STOP_GRACE_S) -> None:
    """Cancel consumer tasks and wait at most ``grace`` seconds: a consumer leaving its
    group calls the broker, which may be gone already when the mesh stops."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:  # cancelled again inside its close: give up on a clean leave
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=1.0)


class LocationIngest:
    def __init__(self, broker: BrokerClient, history: MongoTripHistory, topic: str,
                 partitions: int) -> None:
        self.broker = broker
        self.history = history
        self.topic = topic
        self.partitions = partitions
        self.last = LastFixes()
        self.stored = 0              # fixes the history consumer wrote (tests, info)
        self._ready = asyncio.Event()
        self._producer: Producer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> asyncio.Event:
        """Set once the topic exists and the producer is up."""
        return self._ready

    async def start(self) -> None:
        await self.history.ensure_indexes()
        self._task = asyncio.create_task(self._run(), name="location-history")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
        if self._producer is not None:
            # a broker already gone must not hold the shutdown: what is unacknowledged
            # was never acknowledged to a client either
            with contextlib.suppress(TimeoutError, GeoplexError):
                await asyncio.wait_for(self._producer.close(), STOP_GRACE_S)

    async def report(self, user: str, batch_id: str, fixes: list[Fix]
                     ) -> tuple[int, list[Rejected]]:
        """Check a batch, write its accepted fixes to the broker; (accepted, rejected)."""
        accepted, rejected = check(fixes, time.time(), self.last.get(user))
        if not accepted:
            return 0, rejected
        producer = self._producer
        if not self._ready.is_set() or producer is None:
            raise Unavailable("location ingest is starting: the broker topic is not ready "
                              "yet; retry", reason="INGEST_STARTING")
        value = convert.location_record(user, batch_id, [f for _, f in accepted], time.time())
        try:
            sent = await producer.send(self.topic, value, key=user.encode())
            await sent
        except GeoplexError as exc:
            raise Unavailable(f"the broker did not take the batch ({type(exc).__name__}); "
                              "retry with the same batch_id", reason="BROKER_UNAVAILABLE"
                              ) from exc
        self.last.put(user, accepted[-1][1])
        return len(accepted), rejected

    async def _run(self) -> None:
        """Make sure the topic exists (the broker may start after us), then consume."""
        delay = 0.2
        while True:
            try:
                with contextlib.suppress(AlreadyExistsError):
                    await self.broker.create_topic(self.topic, self.partitions,
                                                   retention=RETENTION_S, timeout=10)
                break
            except GeoplexError as exc:
                logger.warning("locations topic not ready (%s); retrying in %.1f s",
                               type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._producer = self.broker.producer(acks=Acks.ALL, linger_ms=2.0)
        self._ready.set()
        logger.info("location ingest ready on topic %s", self.topic)
        while True:
            try:
                await self._consume()
            except (GeoplexError, PyMongoError) as exc:
                logger.warning("history consumer stopped (%s); rejoining", type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _consume(self) -> None:
        async with self.broker.consumer(HISTORY_GROUP, [self.topic],
                                        auto_offset_reset="earliest") as consumer:
            async for record in consumer:
                try:
                    user, batch_id, fixes = convert.location_record_from(record.value)
                except ValueError:
                    # not ours to repair, and its content is never logged: skip it
                    logger.warning("skipped an unreadable record at %s/%d offset %d",
                                   record.topic, record.partition, record.offset)
                    continue
                try:
                    self.stored += await self.history.append(user, batch_id, fixes)
                except PyMongoError:
                    raise  # MongoDB is down: rejoin and take the record again
                except Exception:  # noqa: BLE001 - one bad record must not stop history
                    logger.exception("skipped a record the history cannot store at %s/%d "
                                     "offset %d", record.topic, record.partition,
                                     record.offset)
