"""MongoDB adapter: the ``businesses`` collection and the ``geohash_index`` collection.

``businesses`` holds a GeoJSON point with a 2dsphere index (at scale: sharded
by ``_id``, i.e. business id). ``geohash_index`` holds one document per
(geohash, business_id) under a unique compound index: moving a business
deletes one small document and inserts another, no array is rewritten.

With events on (``outbox=True``), every edit's transaction also inserts its event into
``outbox`` (a transactional outbox: an edit is never stored without its event, nor an
event without its edit); ``outbox.py`` relays the events to the broker and marks them
published. A TTL index drops an event 14 days after its edit (the broker keeps it as
long).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError
from pymongo.asynchronous.change_stream import AsyncCollectionChangeStream

from geoplex.servers._runtime.backends import ensure_indexes

from ..domain import Business
from ..ports import Change

log = logging.getLogger(__name__)


def to_doc(b: Business) -> dict[str, Any]:
    return {
        "_id": b.id, "name": b.name, "name_lower": b.name.lower(), "category": b.category,
        "location": {"type": "Point", "coordinates": [b.lon, b.lat]},
        "geohash": b.geohash, "address": b.address, "phone": b.phone, "website": b.website,
        "opening_hours": b.opening_hours, "owner": b.owner, "source": b.source,
        "create_time": b.create_time, "update_time": b.update_time,
    }


def from_doc(doc: dict[str, Any]) -> Business:
    lon, lat = doc["location"]["coordinates"]
    return Business(
        id=doc["_id"], name=doc["name"], category=doc.get("category", ""), lat=float(lat),
        lon=float(lon), address=doc.get("address", ""), phone=doc.get("phone", ""),
        website=doc.get("website", ""), opening_hours=doc.get("opening_hours", ""),
        owner=doc.get("owner", ""), source=doc.get("source", ""),
        create_time=_utc(doc.get("create_time")), update_time=_utc(doc.get("update_time")))


def _utc(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(0, UTC)


OUTBOX_KEEP_S = 14 * 86_400   # an event is dropped this long after its edit, published or not
EVENT_KINDS = ("created", "updated", "deleted")


class MongoBusinessStore:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str, *,
                 outbox: bool = False) -> None:
        self.client = client
        self.db = client[database]
        self.businesses = self.db["businesses"]
        self.cells = self.db["geohash_index"]
        self.outbox = self.db["outbox"]
        self.leases = self.db["leases"]
        self.with_outbox = outbox

    async def _event(self, kind: str, business: Business, session: AsyncClientSession) -> None:
        """The edit's event, in the edit's transaction (when events are on)."""
        if not self.with_outbox:
            return
        await self.outbox.insert_one({
            "_id": ObjectId(), "kind": kind, "business_id": business.id,
            "owner": business.owner, "at": datetime.now(UTC), "published": False,
            "business": None if kind == "deleted" else to_doc(business)}, session=session)

    async def pending_events(self, limit: int) -> list[dict[str, Any]]:
        """Events not published yet, oldest first (ObjectIds grow with time)."""
        cursor = self.outbox.find({"published": False}).sort("_id", 1).limit(limit)
        return [doc async for doc in cursor]

    async def mark_published(self, ids: Sequence[ObjectId]) -> None:
        await self.outbox.update_many({"_id": {"$in": list(ids)}},
                                      {"$set": {"published": True,
                                                "published_at": datetime.now(UTC)}})

    async def hold_lease(self, name: str, holder: str, seconds: float) -> bool:
        """Take or renew lease ``name`` for ``seconds`` if free, expired or ours."""
        now = datetime.now(UTC)
        until = datetime.fromtimestamp(now.timestamp() + seconds, UTC)
        try:
            found = await self.leases.find_one_and_update(
                {"_id": name, "$or": [{"until": {"$lt": now}}, {"holder": holder}]},
                {"$set": {"holder": holder, "until": until}}, upsert=True,
                return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            return False   # another holds it (the upsert found the key taken)
        return found is not None and found.get("holder") == holder

    async def ensure_indexes(self) -> None:
        await ensure_indexes([
            (self.businesses, [("location", pymongo.GEOSPHERE)], {}),
            (self.businesses, [("owner", 1), ("_id", 1)], {}),
            (self.cells, [("geohash", 1), ("business_id", 1)], {"unique": True}),
            (self.cells, [("business_id", 1)], {}),
            (self.outbox, [("published", 1), ("_id", 1)], {}),
            (self.outbox, [("at", 1)], {"expireAfterSeconds": OUTBOX_KEEP_S}),
        ])

    async def get_many(self, ids: Sequence[str]) -> dict[str, Business]:
        if not ids:
            return {}
        cursor = self.businesses.find({"_id": {"$in": list(ids)}})
        return {doc["_id"]: from_doc(doc) async for doc in cursor}

    async def create(self, business: Business) -> Business:
        async with self.client.start_session() as session:
            async with await session.start_transaction():
                await self.businesses.insert_one(to_doc(business), session=session)
                await self.cells.insert_one({"geohash": business.geohash,
                                             "business_id": business.id}, session=session)
                await self._event("created", business, session)
        return business

    async def replace(self, business: Business, previous_geohash: str) -> Business:
        async with self.client.start_session() as session:
            async with await session.start_transaction():
                await self.businesses.replace_one({"_id": business.id}, to_doc(business),
                                                  session=session)
                if previous_geohash != business.geohash:
                    await self.cells.delete_one({"geohash": previous_geohash,
                                                 "business_id": business.id}, session=session)
                    await self.cells.insert_one({"geohash": business.geohash,
                                                 "business_id": business.id}, session=session)
                await self._event("updated", business, session)
        return business

    async def delete(self, business: Business) -> None:
        async with self.client.start_session() as session:
            async with await session.start_transaction():
                await self.businesses.delete_one({"_id": business.id}, session=session)
                await self.cells.delete_many({"business_id": business.id}, session=session)
                await self._event("deleted", business, session)

    async def list_by_owner(self, owner: str, limit: int, after_id: str) -> list[Business]:
        query: dict[str, Any] = {"owner": owner}
        if after_id:
            query["_id"] = {"$gt": after_id}
        cursor = self.businesses.find(query).sort("_id", 1).limit(limit)
        return [from_doc(doc) async for doc in cursor]

    async def ids_in_cell(self, prefix: str) -> list[str]:
        """Business ids whose stored geohash starts with ``prefix`` (a range scan)."""
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        cursor = self.cells.find({"geohash": {"$gte": prefix, "$lt": upper}},
                                 {"business_id": 1, "_id": 0})
        return [doc["business_id"] async for doc in cursor]

    async def scan_points(self) -> AsyncIterator[tuple[str, float, float, str, str]]:
        """(id, lat, lon, category, name) of every business: only what the in-memory index
        holds is read (at 200 M businesses, ~60 B a document instead of the whole one)."""
        projection = {"location.coordinates": 1, "category": 1, "name": 1}
        async for doc in self.businesses.find({}, projection, batch_size=10_000):
            lon, lat = doc["location"]["coordinates"]
            yield doc["_id"], float(lat), float(lon), doc.get("category", ""), doc["name"]

    async def scan_some(self, limit: int) -> AsyncIterator[Business]:
        """Up to ``limit`` whole businesses (to warm a detail cache); none for 0."""
        if limit <= 0:
            return  # (MongoDB reads limit(0) as "no limit")
        async for doc in self.businesses.find({}, batch_size=5000).limit(limit):
            yield from_doc(doc)

    async def open_change_stream(self) -> AsyncCollectionChangeStream[dict[str, Any]]:
        """A change stream on businesses, opened now so nothing after this call is missed."""
        return await self.businesses.watch(full_document="updateLookup")

    @staticmethod
    def decode_change(event: dict[str, Any]) -> Change | None:
        op = event.get("operationType")
        key = event.get("documentKey", {}).get("_id")
        if op == "delete" and key is not None:
            return Change(key, None)
        if op in ("insert", "replace", "update") and event.get("fullDocument"):
            doc = event["fullDocument"]
            return Change(doc["_id"], from_doc(doc))
        return None
