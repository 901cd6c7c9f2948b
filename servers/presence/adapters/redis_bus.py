"""Redis adapter: the latest-location cache (with TTL) and the per-user channels.

Keys and channels (``p`` is a namespace so several meshes can share a Redis):
- ``{p}loc:<user>``  latest location of a user who shares, TTL = inactivity limit
- ``{p}me:<user>``   the user's own latest location, for ListNearbyFriends
- ``{p}conn:<user>`` how many live streams the user has on any server (a user may
  stream from two devices through two servers), expiring with inactivity
- ``{p}ch:<user>``   channel: the user's location updates and "gone" notices
- ``{p}ctl:<user>``  channel: changes to the user's friends and settings, for the
  servers holding that user's streams
At scale: Redis Cluster with sharded pub/sub (SSUBSCRIBE/SPUBLISH, Redis 7+),
channels spread over shards by user id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..domain import Fix

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


def encode_fix(fix: Fix) -> str:
    return json.dumps([fix.lat, fix.lon, fix.t], separators=(",", ":"))


def decode_fix(raw: bytes | str) -> Fix:
    lat, lon, t = json.loads(raw)
    return Fix(float(lat), float(lon), float(t))


class RedisBus:
    def __init__(self, client: redis.Redis, namespace: str, ttl_s: int) -> None:
        self.r = client
        self.p = namespace
        self.ttl_s = ttl_s

    def channel(self, user: str) -> str:
        return f"{self.p}ch:{user}"

    def control(self, user: str) -> str:
        return f"{self.p}ctl:{user}"

    def user_of(self, channel: str) -> tuple[str, str]:
        """('ch' | 'ctl', user) of a channel name."""
        rest = channel[len(self.p):]
        kind, _, user = rest.partition(":")
        return kind, user

    async def record(self, user: str, fix: Fix, sharing: bool) -> None:
        """Cache the user's location (and share it) in one round trip."""
        raw = encode_fix(fix)
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.set(f"{self.p}me:{user}", raw, ex=self.ttl_s)
            pipe.expire(f"{self.p}conn:{user}", self.ttl_s)
            if sharing:
                pipe.set(f"{self.p}loc:{user}", raw, ex=self.ttl_s)
                pipe.publish(self.channel(user), '{"k":"loc","f":' + raw + "}")
            await pipe.execute()

    async def stream_opened(self, user: str) -> None:
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.incr(f"{self.p}conn:{user}")
            pipe.expire(f"{self.p}conn:{user}", self.ttl_s)
            await pipe.execute()

    async def stream_closed(self, user: str) -> int:
        """Streams the user still has anywhere after this one closed."""
        left = int(await self.r.decr(f"{self.p}conn:{user}"))
        if left <= 0:
            await self.r.delete(f"{self.p}conn:{user}")
        return left

    async def withdraw(self, user: str, reason: int) -> None:
        """Forget the user's shared location and tell their friends' servers."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.delete(f"{self.p}loc:{user}")
            pipe.publish(self.channel(user), json.dumps({"k": "gone", "r": reason}))
            await pipe.execute()

    async def shared_locations(self, users: Sequence[str]) -> dict[str, Fix]:
        if not users:
            return {}
        values = await self.r.mget([f"{self.p}loc:{u}" for u in users])
        return {u: decode_fix(v) for u, v in zip(users, values) if v is not None}

    async def own_location(self, user: str) -> Fix | None:
        raw = await self.r.get(f"{self.p}me:{user}")
        return None if raw is None else decode_fix(raw)

    async def tell(self, user: str, message: dict[str, Any]) -> None:
        await self.r.publish(self.control(user), json.dumps(message))
