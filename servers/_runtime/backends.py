"""One way for every service to open its MongoDB and Redis clients.

A backend that cannot be reached stops start-up with one line naming the
variable to fix; the client is closed with the service (the exit stack closes
in reverse order of opening).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ClusterError, RedisError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .server import StartupError


async def connect_mongo(uri: str) -> AsyncMongoClient[dict[str, Any]]:
    """A client that answered a ping; StartupError naming GEOPLEX_MONGO_URI otherwise."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    try:
        await client.admin.command("ping")
    except Exception as exc:  # noqa: BLE001
        await client.close()
        raise StartupError(f"GEOPLEX_MONGO_URI: cannot reach MongoDB ({type(exc).__name__}); "
                           "start it or fix the URI") from None
    return client


async def open_mongo(uri: str,
                     stack: contextlib.AsyncExitStack) -> AsyncMongoClient[dict[str, Any]]:
    """:func:`connect_mongo`, closed with the service."""
    client = await connect_mongo(uri)
    stack.push_async_callback(client.close)
    return client


RedisClient = redis.Redis | RedisCluster
# Redis, or a part of a Redis Cluster, cannot serve right now (down, failing over, slots
# not covered): callers degrade (a lost update, a cache miss) instead of failing a call.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, OSError, ClusterError, SlotNotCoveredError,
    TryAgainError)
_RETRY_ON_ERROR: list[type[RedisError]] = [RedisConnectionError, RedisTimeoutError]


def redis_client(url: str) -> redis.Redis:
    """A client that retries a dropped connection briefly (a Redis restart)."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=3, health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3), retry_on_error=_RETRY_ON_ERROR)


def redis_cluster_client(url: str) -> RedisCluster:
    """A Redis Cluster client seeded with the node in ``url``; it discovers the others and
    follows slot moves and failovers."""
    return RedisCluster.from_url(
        url, socket_connect_timeout=3, health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3), retry_on_error=_RETRY_ON_ERROR)


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)


async def connect_redis(url: str) -> RedisClient:
    """A client for the Redis at ``url`` that answered a ping: a cluster client when that
    server is a node of a Redis Cluster (``cluster_enabled:1``), a plain one otherwise.
    StartupError naming GEOPLEX_REDIS_URL when it cannot be reached."""
    client: RedisClient = redis_client(url)
    try:
        clustered = bool((await client.info("cluster")).get("cluster_enabled"))
        if clustered:
            await client.aclose()
            client = redis_cluster_client(url)
            await client.initialize()
        await client.ping()
    except Exception as exc:  # noqa: BLE001
        await client.aclose()
        raise StartupError(f"GEOPLEX_REDIS_URL: cannot reach Redis ({type(exc).__name__}); "
                           "start it or fix the URL") from None
    return client


async def open_redis(url: str, stack: contextlib.AsyncExitStack) -> RedisClient:
    """:func:`connect_redis`, closed with the service."""
    client = await connect_redis(url)
    stack.push_async_callback(client.aclose)
    return client


# (collection, [(field, direction or index type such as "2dsphere")], create_index options)
IndexSpec = tuple[AsyncCollection[dict[str, Any]], Sequence[tuple[str, int | str]],
                  dict[str, Any]]


async def ensure_indexes(specs: Sequence[IndexSpec]) -> None:
    """Create the missing indexes only (re-creating one with other options is an error)."""
    for collection, keys, options in specs:
        existing = {index["name"] async for index in await collection.list_indexes()}
        name = "_".join(f"{field}_{kind}" for field, kind in keys)
        if name not in existing:
            await collection.create_index(list(keys), name=name, **options)
