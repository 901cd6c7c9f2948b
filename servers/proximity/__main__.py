"""``python -m geoplex.servers.proximity``: wire adapters and serve."""

from __future__ import annotations

import contextlib

from geoplex.servers._runtime.config import RuntimeConfig
from geoplex.servers._runtime.server import ServiceSpec, run
from geoplex.servers._runtime.auth import TokenVerifier
from geoplex.servers._runtime.backends import open_mongo, open_redis

from geoplex.clients.broker import BrokerClient

from . import convert
from .adapters import mongo_store, redis_cache
from .outbox import OutboxRelay
from .app import ProximityApp
from .config import ProximityConfig
from .service import SERVICE
from .servicer import ProximityServicer, add_to_server


async def build(runtime: RuntimeConfig, stack: contextlib.AsyncExitStack,
                config: ProximityConfig | None = None) -> list[ServiceSpec]:
    config = config or ProximityConfig.from_env()
    mongo = await open_mongo(config.mongo_uri, stack)
    redis = await open_redis(config.redis_url, stack)
    store = mongo_store.MongoBusinessStore(mongo, config.database, outbox=config.events)
    await store.ensure_indexes()
    if config.events:  # every committed edit, from the outbox to the broker (outbox.py)
        broker = BrokerClient(list(config.broker))
        stack.push_async_callback(broker.aclose)
        relay = OutboxRelay(store, broker, config.events_topic, config.events_partitions)
        await relay.start()
        stack.push_async_callback(relay.stop)
    cache = redis_cache.RedisBusinessCache(redis, config.database, config.cache_ttl)
    # the cached businesses' response bytes are made as they load, not by the first searches
    app = ProximityApp(store, cache, index=config.index,
                       detail_capacity=config.detail_cache_size, on_loaded=convert.prime_heads)
    await app.start()
    stack.push_async_callback(app.stop)
    servicer = ProximityServicer(app, TokenVerifier(config.auth_secret))
    return [ServiceSpec(SERVICE.grpc_service_names[0],
                        lambda server: add_to_server(servicer, server),
                        instruments=app.instruments)]


def main() -> None:
    run(SERVICE, build)


if __name__ == "__main__":
    main()
