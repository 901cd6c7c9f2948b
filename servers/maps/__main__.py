"""``python -m geoplex.servers.maps``: build the gazetteer and serve."""

from __future__ import annotations

import asyncio
import contextlib
import gc

from geoplex.servers._runtime.config import RuntimeConfig
from geoplex.servers._runtime.server import ServiceSpec, StartupError, run

from .app import GazetteerLoadError, MapsApp, load_gazetteer
from .config import MapsConfig
from .service import SERVICE
from .servicer import MapsServicer, add_to_server


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
    servicer = MapsServicer(app)
    return [ServiceSpec(SERVICE.grpc_service_names[0],
                        lambda server: add_to_server(servicer, server))]


def main() -> None:
    run(SERVICE, build)


if __name__ == "__main__":
    main()
