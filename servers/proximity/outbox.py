"""Business edits as events on the broker, from the transactional outbox.

Every owner edit's transaction inserts its event into MongoDB's ``outbox`` collection
(adapters/mongo_store.py), so an edit is stored if and only if its event is. The relay
publishes them: one proximity process at a time holds the relay lease (a MongoDB
document renewed every few seconds; a process that dies loses it within
``lease_s``), reads the unpublished events oldest first, produces each to the
``business-events`` topic keyed by business id (one business's events stay in order on
one partition) with acks=ALL, and marks them published once every one is acknowledged.

Delivery is at least once: a relay that dies between the broker's acknowledgement and
the mark leaves events the next holder sends again. Each event carries its id (the
outbox document's), so a consumer applies it once: ``geoplex proximity events`` shows
them. Businesses are public data; the events hold no user's location.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from datetime import datetime
from typing import Any

from geoplex.clients.broker import BrokerClient
from geoplex.clients.broker_producer import Acks, Producer
from geoplex.clients.errors import AlreadyExistsError, GeoplexError

from .adapters.mongo_store import MongoBusinessStore

log = logging.getLogger(__name__)

LEASE = "outbox-relay"
RETENTION_S = 14 * 86_400.0
STOP_GRACE_S = 3.0


def event_value(doc: dict[str, Any]) -> bytes:
    """An outbox document as the record's value (JSON)."""
    business = doc.get("business")
    if business is not None:
        lon, lat = business["location"]["coordinates"]
        business = {"id": business["_id"], "name": business["name"],
                    "category": business.get("category", ""), "lat": lat, "lon": lon,
                    "address": business.get("address", ""), "phone": business.get("phone", ""),
                    "website": business.get("website", ""),
                    "opening_hours": business.get("opening_hours", ""),
                    "update_time": _iso(business.get("update_time"))}
    return json.dumps({"id": str(doc["_id"]), "kind": doc["kind"],
                       "business_id": doc["business_id"], "owner": doc.get("owner", ""),
                       "at": _iso(doc.get("at")), "business": business},
                      separators=(",", ":")).encode()


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return ""


class OutboxRelay:
    def __init__(self, store: MongoBusinessStore, broker: BrokerClient, topic: str,
                 partitions: int, *, lease_s: float = 10.0, batch: int = 500,
                 poll_s: float = 0.2) -> None:
        self.store = store
        self.broker = broker
        self.topic = topic
        self.partitions = partitions
        self.lease_s = lease_s
        self.batch = batch
        self.poll_s = poll_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.published = 0
        self.leading = False
        self._producer: Producer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="proximity-outbox-relay")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(TimeoutError, GeoplexError):
                await asyncio.wait_for(producer.close(), STOP_GRACE_S)

    async def _ensure(self) -> Producer:
        if self._producer is None:
            with contextlib.suppress(AlreadyExistsError):
                await self.broker.create_topic(self.topic, self.partitions,
                                               retention=RETENTION_S, timeout=5)
            self._producer = self.broker.producer(acks=Acks.ALL, linger_ms=1.0)
        return self._producer

    async def _run(self) -> None:
        renewed = 0.0
        loop = asyncio.get_running_loop()
        pause = 0.5
        while True:
            try:
                if loop.time() - renewed > self.lease_s / 3:
                    leading = await self.store.hold_lease(LEASE, self.holder, self.lease_s)
                    if leading != self.leading:
                        log.info("outbox relay: %s", "publishing (this process holds the "
                                 "relay lease)" if leading else "another process publishes")
                    self.leading, renewed = leading, loop.time()
                if not self.leading:
                    await asyncio.sleep(self.lease_s / 3)
                    continue
                sent = await self.relay_once()
                pause = 0.5
                if sent < self.batch:
                    await asyncio.sleep(self.poll_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker or MongoDB away: try again
                log.warning("outbox relay: %s; retrying in %.1f s", type(exc).__name__, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def relay_once(self) -> int:
        """Publish one batch of pending events; how many."""
        pending = await self.store.pending_events(self.batch)
        if not pending:
            return 0
        producer = await self._ensure()
        async with asyncio.timeout(10.0):
            acks = [await producer.send(self.topic, event_value(doc),
                                        key=str(doc["business_id"]).encode())
                    for doc in pending]
            await asyncio.gather(*acks)
        await self.store.mark_published([doc["_id"] for doc in pending])
        self.published += len(pending)
        return len(pending)
