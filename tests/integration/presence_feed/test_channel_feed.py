"""Presence's pub/sub feed on a real Redis (and a real Redis Cluster): ``add`` returns only
once Redis has the subscription, so a read of the cache that follows it and a publish
after that read cannot both miss each other (the stream-open race)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster

from geoplex.infra.local import BackendUrls, LocalInfra
from geoplex.servers._runtime.backends import RedisClient
from geoplex.servers.presence.adapters.redis_bus import ChannelFeed
from polling import eventually

ROUNDS = 200


@contextlib.asynccontextmanager
async def running(client: RedisClient) -> AsyncIterator[tuple[ChannelFeed, list[str]]]:
    heard: list[str] = []
    feed = ChannelFeed(client, lambda channel, data: heard.append(channel))
    task = asyncio.create_task(feed.run())
    try:
        yield feed, heard
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def subscribers(client: RedisClient, channel: str, cluster: bool) -> int:
    if cluster:  # a shard channel lives on its slot's primary
        assert isinstance(client, RedisCluster)
        node = client.get_node_from_key(channel)
        answer = await client.execute_command("PUBSUB SHARDNUMSUB", channel,
                                              target_nodes=node)
    else:
        answer = await client.execute_command("PUBSUB NUMSUB", channel)
    # redis-py answers NUMSUB as [(channel, n)], SHARDNUMSUB as [channel, n]
    pairs = answer if answer and isinstance(answer[0], (list, tuple)) else \
        list(zip(answer[::2], answer[1::2]))
    counts: dict[bytes | str, int] = dict(pairs)
    return int(counts.get(channel.encode()) or counts.get(channel) or 0)


async def every_add_is_in_place_when_it_returns(client: RedisClient, cluster: bool) -> None:
    tag = uuid.uuid4().hex[:8]
    async with running(client) as (feed, heard):
        for n in range(ROUNDS):
            channel = f"feedtest:{tag}:{{u{n}}}"
            await feed.add([channel])
            # another connection, at once: Redis has served the SUBSCRIBE already
            assert await subscribers(client, channel, cluster) == 1, (n, channel)
        # a second add of what is subscribed returns at once and subscribes nothing more
        await asyncio.wait_for(feed.add([f"feedtest:{tag}:{{u0}}"]), 1.0)
        assert await subscribers(client, f"feedtest:{tag}:{{u0}}", cluster) == 1
        last = f"feedtest:{tag}:{{u{ROUNDS - 1}}}"
        await (client.spublish(last, b"x") if cluster else client.publish(last, b"x"))
        await eventually(lambda: last in heard, 10, what="the published message")


async def test_an_add_returns_once_redis_has_the_subscription(backends: BackendUrls) -> None:
    assert backends.redis_url
    client = redis.Redis.from_url(backends.redis_url)
    try:
        await every_add_is_in_place_when_it_returns(client, cluster=False)
    finally:
        await client.aclose()


async def test_an_add_returns_once_each_shard_has_the_subscription(
        redis_cluster: LocalInfra) -> None:
    assert redis_cluster.urls.redis_url
    client = RedisCluster.from_url(redis_cluster.urls.redis_url)
    await client.initialize()  # the slot map, for PUBSUB SHARDNUMSUB on a slot's primary
    try:
        await every_add_is_in_place_when_it_returns(client, cluster=True)
    finally:
        await client.aclose()
