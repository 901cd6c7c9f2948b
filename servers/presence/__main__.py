"""``python -m geoplex.servers.presence``: wire adapters and serve."""

from __future__ import annotations

import contextlib

from geoplex.presence.v1 import presence_pb2, presence_pb2_grpc
from geoplex.servers._runtime import RuntimeConfig, ServiceSpec, run
from geoplex.servers._runtime.auth import TokenVerifier
from geoplex.servers._runtime.server import StartupError

from .adapters import mongo_store, redis_bus
from .app import PresenceHub
from .config import DEFAULT_PORT, PresenceConfig
from .servicer import PresenceServicer

SERVICE_NAME = presence_pb2.DESCRIPTOR.services_by_name["PresenceService"].full_name


async def build(runtime: RuntimeConfig, stack: contextlib.AsyncExitStack,
                config: PresenceConfig | None = None) -> list[ServiceSpec]:
    config = config or PresenceConfig.from_env()
    try:
        mongo = await mongo_store.connect(config.mongo_uri)
    except Exception as exc:  # noqa: BLE001
        raise StartupError(f"GEOPLEX_MONGO_URI: cannot reach MongoDB ({type(exc).__name__}); "
                           "start it or fix the URI") from None
    stack.push_async_callback(mongo.close)
    try:
        redis = await redis_bus.connect(config.redis_url)
    except Exception as exc:  # noqa: BLE001
        raise StartupError(f"GEOPLEX_REDIS_URL: cannot reach Redis ({type(exc).__name__}); "
                           "start it or fix the URL") from None
    stack.push_async_callback(redis.aclose)
    store = mongo_store.MongoPresenceStore(mongo, config.database)
    await store.ensure_indexes()
    hub = PresenceHub(store, redis_bus.RedisBus(redis, config.namespace,
                                                int(config.hub.inactive_after_s) or 1),
                      config.hub)
    await hub.start()
    stack.push_async_callback(hub.stop)
    servicer = PresenceServicer(hub, TokenVerifier(config.auth_secret))
    return [ServiceSpec(SERVICE_NAME,
                        lambda server: presence_pb2_grpc.add_PresenceServiceServicer_to_server(
                            servicer, server),
                        on_shutdown=hub.shutdown)]


def main() -> None:
    run("presence", DEFAULT_PORT, build)


if __name__ == "__main__":
    main()
