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
from collections.abc import Callable
from typing import TYPE_CHECKING

from pymongo.errors import PyMongoError

from geoplex.clients.broker import BrokerClient
from geoplex.clients.broker_producer import Acks, Producer
from geoplex.clients.errors import AlreadyExistsError, GeoplexError
from geoplex.servers._runtime.errors import Unavailable

from . import convert
from .adapters.mongo_trips import MongoTripHistory
from geoplex.clients.broker_consumer import stop_consumer_tasks

from .consuming import STOP_GRACE_S, consume_batches
from .locations import Fix, LastFixes, Rejected, check

if TYPE_CHECKING:
    from geoplex.servers._runtime.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

HISTORY_GROUP = "location-history"
RETENTION_S = 14 * 86_400.0
# told (user, accepted fixes in time order) once the broker acknowledged a batch
FixObserver = Callable[[str, list[Fix]], None]


class LocationIngest:
    def __init__(self, broker: BrokerClient, history: MongoTripHistory, topic: str,
                 partitions: int) -> None:
        self.broker = broker
        self.history = history
        self.topic = topic
        self.partitions = partitions
        self.last = LastFixes()
        self._ready = asyncio.Event()
        self._producer: Producer | None = None
        self._task: asyncio.Task[None] | None = None
        self._observers: list[FixObserver] = []
        # fixes of the batches reported here: acknowledged by the broker, and refused
        self.accepted_fixes = 0
        self.rejected_fixes = 0

    def instruments(self, metrics: ServiceMetrics) -> None:
        """The ingest's metrics (ServiceSpec.instruments): fixes taken (rate() of it is the
        ingest rate) and refused."""
        metrics.counter("geoplex.maps.ingest.fixes",
                        lambda: [(self.accepted_fixes, {"outcome": "accepted"}),
                                 (self.rejected_fixes, {"outcome": "rejected"})],
                        unit="{fix}", description="Navigation fixes reported: accepted "
                                                  "(acknowledged by the broker) or rejected")

    def observe(self, observer: FixObserver) -> None:
        """Call ``observer(user, fixes)`` with each batch's accepted fixes (time order) once
        the broker has acknowledged them (navigation follows its drivers this way)."""
        self._observers.append(observer)

    @property
    def ready(self) -> asyncio.Event:
        """Set once the topic exists and the producer is up."""
        return self._ready

    async def start(self) -> None:
        await self.history.ensure_indexes()
        self._task = asyncio.create_task(self._run(), name="location-history")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_consumer_tasks([self._task])
        if self._producer is not None:
            # a broker already gone must not hold the shutdown: what is unacknowledged
            # was never acknowledged to a client either
            with contextlib.suppress(TimeoutError, GeoplexError):
                await asyncio.wait_for(self._producer.close(), STOP_GRACE_S)

    async def report(self, user: str, batch_id: str, fixes: list[Fix]
                     ) -> tuple[int, list[Rejected]]:
        """Check a batch, write its accepted fixes to the broker; (accepted, rejected)."""
        # checking and encoding up to 1,000 fixes is milliseconds: off the event loop
        accepted, rejected, value = await asyncio.to_thread(
            self._prepare, user, batch_id, fixes, self.last.get(user))
        self.rejected_fixes += len(rejected)
        if not accepted:
            return 0, rejected
        producer = self._producer  # made once the topic exists
        if producer is None:
            raise Unavailable("location ingest is starting: the broker topic is not ready "
                              "yet; retry", reason="INGEST_STARTING")
        try:
            sent = await producer.send(self.topic, value, key=user.encode())
            await sent
        except GeoplexError as exc:
            raise Unavailable(f"the broker did not take the batch ({type(exc).__name__}); "
                              "retry with the same batch_id", reason="BROKER_UNAVAILABLE"
                              ) from exc
        self.accepted_fixes += len(accepted)
        self.last.put(user, accepted[-1][1])
        if self._observers:
            self._tell(user, [f for _, f in accepted])
        return len(accepted), rejected

    def _tell(self, user: str, fixes: list[Fix]) -> None:
        for observer in self._observers:
            try:
                observer(user, fixes)
            except Exception as exc:  # noqa: BLE001 - the batch is stored: answer all the same
                # the type only: a message or traceback could hold a location
                logger.error("a location observer failed (%s)", type(exc).__name__)

    @staticmethod
    def _prepare(user: str, batch_id: str, fixes: list[Fix], last: Fix | None
                 ) -> tuple[list[tuple[int, Fix]], list[Rejected], bytes]:
        accepted, rejected = check(fixes, time.time(), last)
        value = (convert.location_record(user, batch_id, [f for _, f in accepted],
                                         time.time()) if accepted else b"")
        return accepted, rejected, value

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
        await consume_batches(self.broker, HISTORY_GROUP, self.topic, self._store,
                              auto_offset_reset="earliest", recoverable=(PyMongoError,))

    async def _store(self, user: str, batch_id: str, fixes: list[Fix]) -> None:
        try:
            await self.history.append(user, batch_id, fixes)
        except PyMongoError:
            raise  # MongoDB is down: rejoin and take the record again
        except Exception:  # noqa: BLE001 - one bad record must not stop the history
            logger.exception("%s: skipped a batch the history cannot store", HISTORY_GROUP)
