"""``python -m geoplex.servers.telemetry``: open the store (replaying its WAL) and serve."""

from __future__ import annotations

import asyncio
import contextlib

from geoplex.servers._runtime.config import RuntimeConfig
from geoplex.servers._runtime.server import ServiceSpec, run

from .config import TelemetryConfig
from .http import PrometheusApi
from . import otlp_servicer as otlp_servicer_module
from .limits import SampleRateLimit
from .otlp_servicer import OtlpMetricsServicer
from .promql.engine import Engine
from .scrape import ScrapeManager
from .scrape_config import ScrapeConfig
from .selectors import parse_selector
from .service import SERVICE
from .servicer import TelemetryServicer, add_to_server
from .tsdb.db import HOUR_MS, TSDB, TSDBOptions
from .tsdb.wal import FsyncMode, FsyncPolicy


def options_from(config: TelemetryConfig) -> TSDBOptions:
    return TSDBOptions(block_range_ms=int(config.block_hours * HOUR_MS),
                       ooo_window_ms=int(config.ooo_window_s * 1000),
                       fsync=FsyncPolicy(FsyncMode(config.fsync), config.fsync_interval_ms),
                       max_series=config.max_series)


async def build(runtime: RuntimeConfig, stack: contextlib.AsyncExitStack,
                config: TelemetryConfig | None = None) -> list[ServiceSpec]:
    config = config or TelemetryConfig.from_env()
    scrape_config = ScrapeConfig.from_env()  # a bad target list stops start-up first
    # replaying the WAL reads every acknowledged sample since the last block: off the loop
    store = await asyncio.to_thread(TSDB.open, config.data_dir, options_from(config))
    stack.callback(store.close)
    engine = Engine(store)
    limit = SampleRateLimit(config.max_samples_per_s)
    scrape = ScrapeManager(store, scrape_config, limit)
    await scrape.start()
    stack.push_async_callback(scrape.stop)  # before the store closes: stale markers
    servicer = TelemetryServicer(store, engine, config, parse_selector, limit)
    if config.http_port is not None:
        http = PrometheusApi(store, engine, parse_selector, config, limit)
        address = await http.start(runtime.host, config.http_port)
        stack.push_async_callback(http.stop)
        print(f"geoplex-telemetry http on http://{address}/api/v1/", flush=True)
    otlp_servicer = OtlpMetricsServicer(store, config, limit)
    return [ServiceSpec(SERVICE.grpc_service_names[0],
                        lambda server: add_to_server(servicer, server)),
            # OTLP metrics on the same port: OpenTelemetry SDKs and collectors export here
            ServiceSpec(otlp_servicer_module.SERVICE_NAME,
                        lambda server: otlp_servicer_module.add_to_server(otlp_servicer,
                                                                          server))]


def main() -> None:
    run(SERVICE, build)


if __name__ == "__main__":
    main()
