"""Proximity on a real Redis Cluster (three primaries): the shared business and geohash-cell
caches spread over the shards. The same scenarios as on one Redis run unchanged against
replicas whose GEOPLEX_REDIS_URL is a cluster node."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest
import redis as sync_redis
import test_proximity_api as scenarios
from px_servers import edit_replicas, fresh_database

from geoplex.infra.local import BackendUrls, LocalInfra
from geoplex.servers.proximity.domain import Business

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster_database(cluster_backends: BackendUrls, real_businesses: list[Business]) -> str:
    return fresh_database(cluster_backends, real_businesses, "px_cluster")


@pytest.fixture(scope="module")
def cluster_servers(cluster_backends: BackendUrls, cluster_database: str,
                    server_factory: Callable[..., ServerProcess]) -> dict[str, ServerProcess]:
    return edit_replicas(cluster_backends, cluster_database, server_factory, "px-cluster")


@pytest.mark.parametrize("scenario", [
    scenarios.test_search_returns_nearest_first_with_distances,
    scenarios.test_pages_neither_repeat_nor_skip_a_business,
    scenarios.test_get_and_batch_get_return_details,
    scenarios.test_new_business_is_searchable_on_another_replica_within_5_seconds,
], ids=lambda f: f.__name__.removeprefix("test_"))
async def test_scenario_on_a_redis_cluster(
        cluster_servers: dict[str, ServerProcess],
        scenario: Callable[[dict[str, ServerProcess]], Awaitable[None]]) -> None:
    await scenario(cluster_servers)


async def test_move_and_delete_invalidate_every_cache_on_a_cluster(
        cluster_servers: dict[str, ServerProcess], cluster_backends: BackendUrls,
        cluster_database: str) -> None:
    await scenarios.test_move_and_delete_invalidate_every_cache(
        cluster_servers, cluster_backends, cluster_database)


async def test_cached_businesses_and_cells_are_on_every_shard(
        cluster_servers: dict[str, ServerProcess], redis_cluster: LocalInfra) -> None:
    async with scenarios.client(cluster_servers["geohash"]) as gh:
        for lat, lon in ((60.1704, 24.9522), (60.2055, 24.6559), (43.7384, 7.4246)):
            await scenarios.ids_near(gh, lat, lon, 2000)
    counts = []
    for proc in redis_cluster.procs.values():
        node = sync_redis.Redis(host="127.0.0.1", port=int(proc.argv[proc.argv.index("--port") + 1]))
        try:
            counts.append(node.dbsize())
        finally:
            node.close()
    assert all(c > 0 for c in counts), counts
