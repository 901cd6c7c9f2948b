"""``python -m geoplex.servers.routing``: load the regions' graphs and serve."""

from __future__ import annotations

import asyncio
import contextlib

from geoplex.servers._runtime.auth import TokenVerifier
from geoplex.servers._runtime.config import RuntimeConfig
from geoplex.servers._runtime.server import ServiceSpec, StartupError, run

from .app import RoutingApp
from .config import RoutingConfig
from .regions import Region, RegionLoadError, load_region
from .service import SERVICE
from .servicer import RoutingServicer, add_to_server


async def build(runtime: RuntimeConfig, stack: contextlib.AsyncExitStack,
                config: RoutingConfig | None = None) -> list[ServiceSpec]:
    config = config or RoutingConfig.from_env()
    regions: dict[str, Region] = {}
    for source in config.regions:
        try:
            # graph builds are seconds of numpy and C++: off the event loop
            regions[source.name] = await asyncio.to_thread(
                load_region, source, config.modes, config.cache_dir, config.traffic_fade_s)
        except RegionLoadError as exc:
            raise StartupError(str(exc)) from None
    app = RoutingApp(regions, config)
    await app.start()
    stack.push_async_callback(app.stop)
    servicer = RoutingServicer(app, TokenVerifier(config.auth_secret), config.admins)
    return [ServiceSpec(SERVICE.grpc_service_names[0],
                        lambda server: add_to_server(servicer, server),
                        instruments=app.instruments)]


def main() -> None:
    run(SERVICE, build)


if __name__ == "__main__":
    main()
