"""``python -m geoplex.servers.proximity``: wire adapters and serve."""

from __future__ import annotations

import contextlib
import logging

from geoplex.proximity.v1 import proximity_pb2, proximity_pb2_grpc
from geoplex.servers._runtime import RuntimeConfig, ServiceSpec, run
from geoplex.servers._runtime.auth import TokenVerifier
from geoplex.servers._runtime.server import StartupError

from .adapters import mongo_store, redis_cache
from .app import ProximityApp
from .config import DEFAULT_PORT, ProximityConfig
from .servicer import ProximityServicer

log = logging.getLogger("geoplex.servers.proximity")
SERVICE_NAME = proximity_pb2.DESCRIPTOR.services_by_name["ProximityService"].full_name


async def build(runtime: RuntimeConfig, stack: contextlib.AsyncExitStack,
                config: ProximityConfig | None = None) -> list[ServiceSpec]:
    config = config or ProximityConfig.from_env()
    try:
        mongo = await mongo_store.connect(config.mongo_uri)
    except Exception as exc:  # noqa: BLE001
        raise StartupError(f"GEOPLEX_MONGO_URI: cannot reach MongoDB ({type(exc).__name__}); "
                           "start it or fix the URI") from None
    stack.push_async_callback(mongo.close)
    try:
        redis = await redis_cache.connect(config.redis_url)
    except Exception as exc:  # noqa: BLE001
        raise StartupError(f"GEOPLEX_REDIS_URL: cannot reach Redis ({type(exc).__name__}); "
                           "start it or fix the URL") from None
    stack.push_async_callback(redis.aclose)
    store = mongo_store.MongoBusinessStore(mongo, config.database)
    await store.ensure_indexes()
    cache = redis_cache.RedisBusinessCache(redis, config.database, config.cache_ttl)
    app = ProximityApp(store, cache, index=config.index,
                       detail_capacity=config.detail_cache_size)
    await app.start()
    stack.push_async_callback(app.stop)
    servicer = ProximityServicer(app, TokenVerifier(config.auth_secret))
    return [ServiceSpec(SERVICE_NAME,
                        lambda server: proximity_pb2_grpc.add_ProximityServiceServicer_to_server(
                            servicer, server))]


def main() -> None:
    run("proximity", DEFAULT_PORT, build)


if __name__ == "__main__":
    main()
