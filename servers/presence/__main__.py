"""``python -m geoplex.servers.presence``: wire adapters and serve."""

from __future__ import annotations

import contextlib

from geoplex.presence.v1 import presence_pb2_grpc
from geoplex.servers._runtime.config import RuntimeConfig
from geoplex.servers._runtime.server import ServiceSpec, run
from geoplex.servers._runtime.auth import TokenVerifier
from geoplex.servers._runtime.backends import open_mongo, open_redis

from .adapters import mongo_store, redis_bus
from .app import PresenceHub
from .config import PresenceConfig
from .service import SERVICE
from .servicer import PresenceServicer



async def build(runtime: RuntimeConfig, stack: contextlib.AsyncExitStack,
                config: PresenceConfig | None = None) -> list[ServiceSpec]:
    config = config or PresenceConfig.from_env()
    mongo = await open_mongo(config.mongo_uri, stack)
    redis = await open_redis(config.redis_url, stack)
    store = mongo_store.MongoPresenceStore(mongo, config.database)
    await store.ensure_indexes()
    hub = PresenceHub(store, redis_bus.RedisBus(redis, config.namespace,
                                                int(config.hub.inactive_after_s) or 1),
                      config.hub)
    await hub.start()
    stack.push_async_callback(hub.stop)
    servicer = PresenceServicer(hub, TokenVerifier(config.auth_secret))
    return [ServiceSpec(SERVICE.grpc_service_names[0],
                        lambda server: presence_pb2_grpc.add_PresenceServiceServicer_to_server(
                            servicer, server),
                        on_shutdown=hub.shutdown, instruments=hub.instruments)]


def main() -> None:
    run(SERVICE, build)


if __name__ == "__main__":
    main()
