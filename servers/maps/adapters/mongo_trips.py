"""MongoDB adapter: navigation location history, one document per user and hour.

A write is an append to the hour's bucket (``$push`` of the batch's fixes), not a
document per fix: ~3,600 fixes an hour at one a second make a ~300 KB document, and
reading a user's trip is one document per hour. A batch is applied once: the update only
matches a bucket that does not list its ``batch_id`` yet, so a replay (the consumer is at
least once) finds none, tries to insert the bucket, and the duplicate ``_id`` says it was
already there (or that another writer made the bucket first: then the append is
retried on the existing bucket, still only if it lacks the batch).

At the design's scale (1 B DAU) this is a wide-column table: Cassandra / ScyllaDB with
partition key ``(user, hour)`` and clustering key ``time``, where an append is an insert
of one row per fix and a replay writes the same rows again (the primary key makes it
idempotent by itself); or a MongoDB time-series collection on a cluster sharded by user.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from geoplex.servers._runtime.backends import ensure_indexes

from ..locations import Fix, hour_of

Document = dict[str, Any]


class MongoTripHistory:
    def __init__(self, client: AsyncMongoClient[Document], database: str) -> None:
        self.buckets = client[database]["trip_history"]

    async def ensure_indexes(self) -> None:
        await ensure_indexes([(self.buckets, [("user", 1), ("hour", -1)], {})])

    async def append(self, user: str, batch_id: str, fixes: Sequence[Fix]) -> int:
        """Append one batch's fixes to their hour buckets; returns how many were new
        (0 when the batch was applied before)."""
        by_hour: dict[int, list[Document]] = {}
        for fix in fixes:
            assert fix.time is not None
            doc: Document = {"t": fix.time, "lat": fix.lat, "lon": fix.lon,
                             "acc": fix.accuracy_m}
            if fix.speed_mps is not None:
                doc["spd"] = fix.speed_mps
            if fix.heading_deg is not None:
                doc["hdg"] = fix.heading_deg
            by_hour.setdefault(hour_of(fix.time), []).append(doc)
        added = 0
        for hour, docs in sorted(by_hour.items()):
            match = {"_id": f"{user}|{hour}", "batches": {"$ne": batch_id}}
            append = {"$push": {"fixes": {"$each": docs}, "batches": batch_id},
                      "$inc": {"count": len(docs)}}
            try:
                await self.buckets.update_one(
                    match, {**append, "$setOnInsert": {
                        "user": user, "hour": datetime.fromtimestamp(hour, UTC)}},
                    upsert=True)
            except DuplicateKeyError:
                # the bucket exists: it has the batch already, or another writer made it
                # between our match and our insert; append to it unless it has the batch
                done = await self.buckets.update_one(match, append)
                if done.matched_count == 0:
                    continue  # this hour already has the batch
            added += len(docs)
        return added

    async def hours(self, user: str) -> list[Document]:
        """A user's buckets, newest hour first (for tests and tools)."""
        return [doc async for doc in self.buckets.find({"user": user}).sort("hour", -1)]
