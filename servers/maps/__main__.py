"""``python -m geoplex.servers.maps``: build the gazetteer and serve."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging

from geoplex.clients.broker import BrokerClient
from geoplex.clients.routing import RoutingClient
from geoplex.servers._runtime.auth import TokenVerifier, mint_token
from geoplex.servers._runtime.backends import open_mongo, open_redis
from geoplex.servers._runtime.config import RuntimeConfig
from geoplex.servers._runtime.server import ServiceSpec, StartupError, run

from .adapters.mongo_trips import MongoTripHistory
from .adapters.redis_tiles import RedisTileStore
from .app import GazetteerLoadError, MapsApp, load_gazetteer
from .config import MapsConfig
from .http import MapsHttp
from .ingest import LocationIngest
from .navigation import Navigator
from .service import SERVICE
from .servicer import MapsServicer, add_to_server
from .tile_service import TileService
from .tiles import MapSource, TileSet
from .traffic_feed import TrafficFeed

logger = logging.getLogger(__name__)


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
    # one channel to routing for the traffic feed, navigation and the HTTP gateway;
    # it connects on first use, so a maps server starts before routing does
    routing = RoutingClient(config.routing)
    stack.push_async_callback(routing.aclose)
    ingest: LocationIngest | None = None
    navigator: Navigator | None = None
    if config.mongo_uri is not None:
        mongo = await open_mongo(config.mongo_uri, stack)
        broker = BrokerClient(list(config.broker))
        stack.push_async_callback(broker.aclose)
        ingest = LocationIngest(broker, MongoTripHistory(mongo, config.database),
                                config.locations_topic, config.locations_partitions)
        await ingest.start()
        stack.push_async_callback(ingest.stop)
        # Navigate follows the drivers' fixes, so it lives only where ingest does
        navigator = Navigator(routing, max_sessions=config.navigate_max_sessions,
                              max_per_user=config.navigate_max_per_user,
                              poll_s=config.navigate_poll_s)
        await navigator.start()
        stack.push_async_callback(navigator.stop)
        ingest.observe(navigator.on_fixes)
        if config.traffic:
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
    tiles = await start_tiles(config, stack)
    servicer = MapsServicer(app, TokenVerifier(config.auth_secret), ingest, tiles,
                            navigator)
    endpoints: dict[str, str] = {}
    if config.http_port is not None:
        vendor = {name: config.web_vendor_dir / name for name in ("leaflet.js", "leaflet.css")}
        http = MapsHttp(app, tiles, routing, vendor)
        address = await http.start(runtime.host, config.http_port)
        stack.push_async_callback(http.stop)
        if not all(p.is_file() for p in vendor.values()):
            logger.warning("the map page needs Leaflet: run `geoplex data fetch leaflet`")
        print(f"geoplex-maps http on http://{address}/", flush=True)
        endpoints["http"] = address
    return [ServiceSpec(SERVICE.grpc_service_names[0],
                        lambda server: add_to_server(servicer, server),
                        endpoints=lambda: endpoints,  # the map page, in its registry entry
                        on_shutdown=navigator.shutdown if navigator is not None else None,
                        instruments=ingest.instruments if ingest is not None else None)]


async def start_tiles(config: MapsConfig, stack: contextlib.AsyncExitStack
                      ) -> TileService | None:
    """Load the map features (from the on-disk cache when the extracts have not changed)
    and the tile caches; None when tiles are off."""
    if not config.tile_sources:
        return None
    missing = [str(path) for _, path in config.tile_sources if not path.is_file()]
    if missing:
        raise StartupError(f"tile sources missing: {', '.join(missing)}; run `geoplex data "
                           "fetch` or set GEOPLEX_MAPS_TILE_SOURCES (off: no tiles)")
    sources = [MapSource(name, path) for name, path in config.tile_sources]
    tileset = await asyncio.to_thread(TileSet.load, sources, config.tile_cache_dir,
                                      lambda m: logger.info("tiles: %s", m))
    store = None
    if config.tile_redis_url is not None:
        redis = await open_redis(config.tile_redis_url, stack)
        store = RedisTileStore(redis, config.tile_ttl_s)
    service = TileService(tileset, store, memory_bytes=config.tile_memory_bytes)
    stack.push_async_callback(service.stop)
    return service


def main() -> None:
    run(SERVICE, build)


if __name__ == "__main__":
    main()
