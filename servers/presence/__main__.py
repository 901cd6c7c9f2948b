"""``python -m geoplex.servers.presence``: wire adapters and serve."""

from __future__ import annotations

import contextlib

from geoplex.presence.v1 import presence_pb2_grpc
from geoplex.servers._runtime.config import RuntimeConfig
from geoplex.servers._runtime.server import ServiceSpec, run
from geoplex.servers._runtime.auth import TokenVerifier
from geoplex.servers._runtime.backends import open_mongo, open_redis

from geoplex.clients.broker import BrokerClient

from .adapters import mongo_store, redis_bus
from .adapters.broker_history import BrokerHistory, HistoryConsumer
from .app import PresenceHub
from .config import PresenceConfig
from .ports import HistoryStore
from .service import SERVICE
from .servicer import PresenceServicer



async def build(runtime: RuntimeConfig, stack: contextlib.AsyncExitStack,
                config: PresenceConfig | None = None) -> list[ServiceSpec]:
    config = config or PresenceConfig.from_env()
    mongo = await open_mongo(config.mongo_uri, stack)
    redis = await open_redis(config.redis_url, stack)
    store = mongo_store.MongoPresenceStore(mongo, config.database)
    await store.ensure_indexes()
    history: HistoryStore = store
    if config.history == "broker":
        # accepted locations go to the broker; this process's share of the history
        # topic's partitions comes back through the consumer group into MongoDB
        broker = BrokerClient(list(config.broker))
        stack.push_async_callback(broker.aclose)
        consumer = HistoryConsumer(broker, store, config.history_topic,
                                   config.history_partitions)
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        history = produced = BrokerHistory(broker, config.history_topic,
                                           config.history_partitions)
        stack.push_async_callback(produced.aclose)
    hub = PresenceHub(store, redis_bus.RedisBus(redis, config.namespace,
                                                int(config.hub.inactive_after_s) or 1),
                      config.hub, history=history)
    await hub.start()
    stack.push_async_callback(hub.stop)  # first: its last flush goes out before the above
    servicer = PresenceServicer(hub, TokenVerifier(config.auth_secret))
    return [ServiceSpec(SERVICE.grpc_service_names[0],
                        lambda server: presence_pb2_grpc.add_PresenceServiceServicer_to_server(
                            servicer, server),
                        on_shutdown=hub.shutdown, instruments=hub.instruments)]


def main() -> None:
    run(SERVICE, build)


if __name__ == "__main__":
    main()
