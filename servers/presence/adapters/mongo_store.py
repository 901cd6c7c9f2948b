"""MongoDB adapter: friendships, per-user settings, and the location history.

At scale the history is the write-heavy part (334 k updates/s): it is written
behind, in batches, and belongs in a write-optimised store (a time-series
collection on a sharded cluster keyed by user, or Cassandra); friendships and
settings are small and read at connect time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient, UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError

from geoplex.servers._runtime.backends import ensure_indexes

from ..domain import Fix, HistoryRow, Settings

DUPLICATE_KEY = 11000

Document = dict[str, Any]


class MongoPresenceStore:
    def __init__(self, client: AsyncMongoClient[Document], database: str) -> None:
        self.client = client
        db = client[database]
        self.friendships = db["friendships"]
        self.settings_ = db["presence_settings"]
        self.history = db["location_history"]

    async def ensure_indexes(self) -> None:
        await ensure_indexes([
            (self.friendships, [("user", 1), ("friend", 1)], {"unique": True}),
            (self.history, [("user", 1), ("t", -1)], {}),
        ])

    async def settings(self, user: str, default_radius_m: float) -> Settings:
        doc = await self.settings_.find_one({"_id": user})
        if doc is None:
            return Settings(sharing=False, radius_m=default_radius_m)
        return Settings(bool(doc.get("sharing", False)),
                        float(doc.get("radius_m", default_radius_m)))

    async def set_sharing(self, user: str, sharing: bool) -> None:
        await self.settings_.update_one({"_id": user}, {"$set": {"sharing": sharing}},
                                        upsert=True)

    async def set_radius(self, user: str, radius_m: float) -> None:
        await self.settings_.update_one({"_id": user}, {"$set": {"radius_m": radius_m}},
                                        upsert=True)

    async def friends(self, user: str) -> set[str]:
        return {doc["friend"] async for doc in self.friendships.find({"user": user},
                                                                     {"friend": 1})}

    async def friends_page(self, user: str, limit: int, after: str) -> list[str]:
        query: dict[str, Any] = {"user": user}
        if after:
            query["friend"] = {"$gt": after}
        cursor = self.friendships.find(query, {"friend": 1}).sort("friend", 1).limit(limit)
        return [doc["friend"] async for doc in cursor]

    async def add_friendship(self, a: str, b: str) -> None:
        now = datetime.now(UTC)
        await self.friendships.bulk_write([
            UpdateOne({"user": a, "friend": b}, {"$setOnInsert": {"since": now}}, upsert=True),
            UpdateOne({"user": b, "friend": a}, {"$setOnInsert": {"since": now}}, upsert=True),
        ], ordered=False)

    async def add_friendships(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Bulk form for loading a friend graph (simulator, tests)."""
        now = datetime.now(UTC)
        docs = []
        for a, b in pairs:
            docs.append({"user": a, "friend": b, "since": now})
            docs.append({"user": b, "friend": a, "since": now})
        for n in range(0, len(docs), 5000):
            try:
                await self.friendships.insert_many(docs[n:n + 5000], ordered=False)
            except PyMongoError:
                pass  # duplicates of existing friendships

    async def remove_friendship(self, a: str, b: str) -> int:
        result = await self.friendships.delete_many(
            {"$or": [{"user": a, "friend": b}, {"user": b, "friend": a}]})
        return int(result.deleted_count)

    async def append_history(self, rows: Sequence[HistoryRow]) -> None:
        """Inserted by the rows' ids: a row stored already is a duplicate key error, which
        is the answer wanted (stored once), and the rest of the batch goes in regardless."""
        if not rows:
            return
        try:
            await self.history.insert_many(
                [{"_id": row.id, "user": row.user, "lat": row.fix.lat, "lon": row.fix.lon,
                  "t": datetime.fromtimestamp(row.fix.t, UTC)} for row in rows],
                ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors) \
                    or exc.details.get("writeConcernErrors"):
                raise
