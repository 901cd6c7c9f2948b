"""The location history through the broker: presence produces, a consumer group stores.

In a mesh with a broker (``GEOPLEX_PRESENCE_HISTORY=broker``, the default when
``GEOPLEX_BROKER_TARGET`` is set), the presence servers do not write MongoDB's history
themselves. :class:`BrokerHistory` is the history writer's store: each flush sends one
record per user to the ``presence-locations`` topic, keyed by user (a user's rows stay in
order on one partition), with acks=ALL, and the batch counts as written only once every
record is acknowledged; else the writer keeps it, bounded and counted, and sends it again
(history.py). Live friends never wait on any of this.

:class:`HistoryConsumer` runs in every presence process as the consumer group
``presence-history``: it stores each record's rows in MongoDB by their ids, so a record
sent twice (a retry) or read twice (at least once: a rebalance, a restart before the
commit) is stored once. Records carry user ids and locations: never logged, only their
positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence

from pymongo.errors import PyMongoError

from geoplex.clients.broker import BrokerClient
from geoplex.clients.broker_consumer import stop_consumer_tasks
from geoplex.clients.broker_producer import Acks, Producer
from geoplex.clients.errors import AlreadyExistsError, GeoplexError

from ..domain import Fix, HistoryRow
from ..ports import HistoryStore

log = logging.getLogger(__name__)

GROUP = "presence-history"
RETENTION_S = 14 * 86_400.0
SEND_TIMEOUT_S = 10.0   # a batch not acknowledged by then is sent again next flush
STOP_GRACE_S = 3.0


def encode_rows(user: str, rows: Sequence[HistoryRow]) -> bytes:
    return json.dumps({"u": user, "r": [[r.id, r.fix.lat, r.fix.lon, r.fix.t] for r in rows]},
                      separators=(",", ":")).encode()


def decode_rows(value: bytes) -> list[HistoryRow]:
    """The rows of one record; ValueError when it is not one."""
    try:
        data = json.loads(value)
        user = str(data["u"])
        return [HistoryRow(str(i), user, Fix(float(lat), float(lon), float(t)))
                for i, lat, lon, t in data["r"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a history record ({type(exc).__name__})") from None


async def ensure_topic(broker: BrokerClient, topic: str, partitions: int) -> None:
    with contextlib.suppress(AlreadyExistsError):
        await broker.create_topic(topic, partitions, retention=RETENTION_S, timeout=5)


class BrokerHistory:
    """A HistoryStore that produces to the broker (the writer's batches, by user)."""

    def __init__(self, broker: BrokerClient, topic: str, partitions: int) -> None:
        self.broker = broker
        self.topic = topic
        self.partitions = partitions
        self.records_sent = 0
        self._producer: Producer | None = None

    async def _ready(self) -> Producer:
        """The producer, once the topic exists (made here on first use: the broker may
        start after presence)."""
        if self._producer is None:
            await ensure_topic(self.broker, self.topic, self.partitions)
            self._producer = self.broker.producer(acks=Acks.ALL, linger_ms=2.0)
            log.info("presence history: producing to topic %s", self.topic)
        return self._producer

    async def append_history(self, rows: Sequence[HistoryRow]) -> None:
        if not rows:
            return
        by_user: dict[str, list[HistoryRow]] = {}
        for row in rows:
            by_user.setdefault(row.user, []).append(row)
        async with asyncio.timeout(SEND_TIMEOUT_S):
            producer = await self._ready()
            sent = [await producer.send(self.topic, encode_rows(user, mine),
                                        key=user.encode())
                    for user, mine in by_user.items()]
            await asyncio.gather(*sent)
        self.records_sent += len(sent)

    async def aclose(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            # a broker already gone must not hold the shutdown: rows not acknowledged are
            # still in the writer's buffer, and its last flush tried them
            with contextlib.suppress(TimeoutError, GeoplexError):
                await asyncio.wait_for(producer.close(), STOP_GRACE_S)


class HistoryConsumer:
    """The consumer group that stores the history topic in MongoDB, idempotently."""

    def __init__(self, broker: BrokerClient, store: HistoryStore, topic: str,
                 partitions: int) -> None:
        self.broker = broker
        self.store = store
        self.topic = topic
        self.partitions = partitions
        self.rows_stored = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="presence-history-consumer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_consumer_tasks([task], STOP_GRACE_S)

    async def _run(self) -> None:
        while True:
            try:
                await ensure_topic(self.broker, self.topic, self.partitions)
                async with self.broker.consumer(GROUP, [self.topic],
                                                auto_offset_reset="earliest") as consumer:
                    async for record in consumer:
                        try:
                            rows = decode_rows(record.value)
                        except ValueError:
                            log.warning("%s: skipped an unreadable record at %s/%d offset %d",
                                        GROUP, record.topic, record.partition, record.offset)
                            continue
                        # MongoDB down: the error rejoins, and the record comes again
                        await self.store.append_history(rows)
                        self.rows_stored += len(rows)
            except (GeoplexError, PyMongoError) as exc:
                log.warning("%s: consumer stopped (%s); rejoining in 1 s", GROUP,
                            type(exc).__name__)
                await asyncio.sleep(1.0)
