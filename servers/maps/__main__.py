"""``python -m geoplex.servers.maps``: build the gazetteer and serve."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc

from geoplex.clients.broker import BrokerClient
from geoplex.clients.routing import RoutingClient
from geoplex.servers._runtime.auth import TokenVerifier, mint_token
from geoplex.servers._runtime.backends import open_mongo
from geoplex.servers._runtime.config import RuntimeConfig
from geoplex.servers._runtime.server import ServiceSpec, StartupError, run

from .adapters.mongo_trips import MongoTripHistory
from .app import GazetteerLoadError, MapsApp, load_gazetteer
from .config import MapsConfig
from .ingest import LocationIngest
from .service import SERVICE
from .servicer import MapsServicer, add_to_server
from .traffic_feed import TrafficFeed


async def build(runtime: RuntimeConfig, stack: contextlib.AsyncExitStack,
                config: MapsConfig | None = None) -> list[ServiceSpec]:
    config = config or MapsConfig.from_env()
    try:
        # seconds of parsing and index building: off the event loop
        loaded = await asyncio.to_thread(load_gazetteer, config)
    except GazetteerLoadError as exc:
        raise StartupError(str(exc)) from None
    # ~1 M long-lived objects: keep them out of the collector's full passes, which
    # otherwise add 15-25 ms pauses to queries now and then
    gc.freeze()
    app = MapsApp(loaded, config)
    stack.push_async_callback(app.stop)
    ingest: LocationIngest | None = None
    if config.mongo_uri is not None:
        mongo = await open_mongo(config.mongo_uri, stack)
        broker = BrokerClient(list(config.broker))
        stack.push_async_callback(broker.aclose)
        ingest = LocationIngest(broker, MongoTripHistory(mongo, config.database),
                                config.locations_topic, config.locations_partitions)
        await ingest.start()
        stack.push_async_callback(ingest.stop)
        if config.traffic:
            routing = RoutingClient(config.routing)
            stack.push_async_callback(routing.aclose)
            # a fresh token each round: one minted once would expire and stop traffic
            admin_token = functools.partial(mint_token, config.auth_secret,
                                            config.traffic_admin, ttl_seconds=3600)
            admin_token()  # a bad subject stops start-up here, not at the first round
            feed = TrafficFeed(broker, routing, config.locations_topic, admin_token,
                               interval_s=config.traffic_interval_s,
                               valid_s=config.traffic_valid_s,
                               window_s=config.traffic_window_s)
            await feed.start(ingest.ready)
            stack.push_async_callback(feed.stop)
    servicer = MapsServicer(app, TokenVerifier(config.auth_secret), ingest)
    return [ServiceSpec(SERVICE.grpc_service_names[0],
                        lambda server: add_to_server(servicer, server))]


def main() -> None:
    run(SERVICE, build)


if __name__ == "__main__":
    main()
