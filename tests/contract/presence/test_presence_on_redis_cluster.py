"""Presence on a real Redis Cluster (three primaries): sharded pub/sub, one slot per user.

The same scenarios as on one Redis (the scenario functions of test_presence_streams run
unchanged against servers whose GEOPLEX_REDIS_URL is a cluster node), plus what only a
cluster has: keys and subscriptions spread over the shards, and a shard restarting.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest
import redis as sync_redis

from geoplex.infra.local import BackendUrls, LocalInfra

import test_presence_streams as scenarios
from presence_servers import presence_env
from test_presence_streams import client, next_kind, north, streaming_friends

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def cluster_pair(cluster_backends: BackendUrls, server_factory: Callable[..., ServerProcess]
                 ) -> dict[str, ServerProcess]:
    tag = uuid.uuid4().hex[:6]
    return {name: server_factory("presence",
                                 presence_env(cluster_backends, tag), f"presence-cluster-{name}")
            for name in ("a", "b")}


@pytest.mark.parametrize("scenario", [
    scenarios.test_friend_on_the_other_server_sees_each_update,
    scenarios.test_radius_boundary_from_both_sides,
    scenarios.test_unfriend_removes_both_at_once,
    scenarios.test_adding_a_friend_sends_their_latest_location_at_once,
    scenarios.test_sharing_off_removes_the_user_from_every_view,
    scenarios.test_a_second_device_keeps_the_user_visible_when_the_first_disconnects,
], ids=lambda f: f.__name__.removeprefix("test_"))
async def test_scenario_on_a_redis_cluster(
        cluster_pair: dict[str, ServerProcess],
        scenario: Callable[[dict[str, ServerProcess]], Awaitable[None]]) -> None:
    await scenario(cluster_pair)


def _nodes(cluster: LocalInfra) -> list[sync_redis.Redis]:
    ports = [int(p.argv[p.argv.index("--port") + 1]) for p in cluster.procs.values()]
    return [sync_redis.Redis(host="127.0.0.1", port=port) for port in ports]


async def test_users_spread_over_the_shards(cluster_pair: dict[str, ServerProcess],
                                            redis_cluster: LocalInfra) -> None:
    """Twenty streaming friends: their keys and the subscriptions to their channels are on
    every primary, not on one."""
    # independent random ids: ids sharing a suffix have related CRC16s (slots)
    names = [f"u{i}-{uuid.uuid4().hex}" for i in range(20)]
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(client(cluster_pair["ab"[i % 2]], name))
                   for i, name in enumerate(names)]
        for c in clients:
            await c.set_sharing(True)
        for name in names[1:]:
            await clients[0].add_friend(name)
        lives = [await stack.enter_async_context(c.live(*north(10 * i)))
                 for i, c in enumerate(clients)]
        for live in lives:
            await live.connected.wait()
        nodes = _nodes(redis_cluster)
        try:
            keys = [n.dbsize() for n in nodes]

            shard_subs = [len(n.execute_command("PUBSUB", "SHARDCHANNELS")) for n in nodes]
        finally:
            for n in nodes:
                n.close()
    assert all(k > 0 for k in keys), keys
    assert all(s > 0 for s in shard_subs), shard_subs  # SSUBSCRIBE on every shard
    assert sum(shard_subs) >= len(names)  # everyone's control channel, the friends' channels


async def test_a_restarted_shard_is_resubscribed_and_updates_flow_again(
        cluster_pair: dict[str, ServerProcess], redis_cluster: LocalInfra) -> None:
    async with streaming_friends(cluster_pair["a"], cluster_pair["b"], 300) as (
            alice, bob, pa, pbob, la, lb):
        # the shard that owns bob's channel: alice's server listens there for bob
        owner = None
        for name, proc in redis_cluster.procs.items():
            port = int(proc.argv[proc.argv.index("--port") + 1])
            node = sync_redis.Redis(host="127.0.0.1", port=port)
            try:
                if node.execute_command("PUBSUB", "SHARDNUMSUB",
                                        f"pr{_namespace(cluster_pair)}ch:{{{bob}}}")[1]:
                    owner = name
            finally:
                node.close()
        assert owner is not None
        redis_cluster.restart(owner, kill=True)  # SIGKILL, then back on the same port
        # updates get through again once the shard is back and the feed resubscribed
        for step in range(60):
            await lb.update(*north(400 + step))
            try:
                moved = await next_kind(la, "friend_moved", timeout=0.5)
            except TimeoutError:
                continue
            if moved.friend_moved.friend.distance_meters > 399:
                break
        else:
            pytest.fail("no update from bob reached alice after the shard restarted")
        await la.update(*north(-50))  # and the other way, through the other shards
        moved = await next_kind(lb, "friend_moved")
        assert moved.friend_moved.friend.user_id == alice


def _namespace(pair: dict[str, ServerProcess]) -> str:
    return pair["a"].env["GEOPLEX_PRESENCE_NAMESPACE"].removeprefix("pr")
