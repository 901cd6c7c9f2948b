"""``python -m geoplex.servers.telemetry``: open the store (replaying its WAL) and serve."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from geoplex.servers._runtime.config import ConfigError, RuntimeConfig
from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers._runtime.server import ServiceSpec, run

from .adapters.victoria import open_victoria
from .config import PREFIX, TelemetryConfig
from .discovery import MeshWatch
from .http import PrometheusApi, load_api_rules
from . import ingest_stats
from . import otlp_servicer as otlp_servicer_module
from .ingest_stats import IngestStats
from .limits import SampleRateLimit
from .metrics_consumer import MetricsConsumer
from .otlp_servicer import OtlpMetricsServicer
from .promql.engine import Engine
from .rules.manager import RuleManager
from .scrape import ScrapeManager
from .scrape_config import ScrapeConfig
from .selectors import parse_selector
from .service import SERVICE
from .servicer import TelemetryServicer, add_to_server
from .tsdb import blocks
from .tsdb.api import Storage
from .tsdb.db import HOUR_MS, TSDB, RetentionRule, TSDBOptions, default_retention
from .tsdb.wal import FsyncMode, FsyncPolicy

logger = logging.getLogger(__name__)


def options_from(config: TelemetryConfig) -> TSDBOptions:
    """The store's options; a retention rule's selector that does not parse is an error
    naming the variable."""
    rules = []
    for rule in config.retention_rules:
        try:
            matchers = tuple(parse_selector(rule.selector))
        except InvalidArgument as error:
            raise ConfigError(f"{PREFIX}RETENTION_RULES: {rule.selector!r}: "
                              f"{error.description}") from error
        rules.append(RetentionRule(matchers, dict(rule.keep_ms), rule.selector))
    # blocks are whole minutes (the 1-minute tier rolls whole blocks up)
    block_ms = max(60_000, round(config.block_hours * HOUR_MS / 60_000) * 60_000)
    return TSDBOptions(block_range_ms=block_ms,
                       ooo_window_ms=int(config.ooo_window_s * 1000),
                       fsync=FsyncPolicy(FsyncMode(config.fsync), config.fsync_interval_ms),
                       max_series=config.max_series, downsample=config.downsample,
                       rollup_window_ms=config.rollup_window_hours * HOUR_MS,
                       retention_ms=dict(config.retention_ms) or default_retention(),
                       retention_rules=tuple(rules), cut_in_background=True)


async def maintain_forever(store: TSDB, interval_s: float) -> None:
    """The store's background job (compaction, downsampling, retention) every
    ``interval_s``, off the event loop; a failed pass is logged and retried."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(store.maintain)
        except Exception:  # noqa: BLE001 - the job must outlive one bad pass
            logger.exception("telemetry: the maintenance pass failed; retrying in %.0f s",
                             interval_s)


async def open_store(config: TelemetryConfig, stack: contextlib.AsyncExitStack) -> Storage:
    if config.backend == "victoriametrics":
        assert config.victoriametrics_url is not None
        return await asyncio.to_thread(open_victoria, config.victoriametrics_url, 10.0)
    blocks.DECODED.max_samples = config.chunk_cache_samples
    # replaying the WAL reads every acknowledged sample since the last block: off the loop
    store = await asyncio.to_thread(TSDB.open, config.data_dir, options_from(config))
    stack.callback(store.close)
    task = asyncio.create_task(maintain_forever(store, config.maintenance_interval_s),
                               name="telemetry-maintenance")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    stack.push_async_callback(stop)
    return store


async def build(runtime: RuntimeConfig, stack: contextlib.AsyncExitStack,
                config: TelemetryConfig | None = None) -> list[ServiceSpec]:
    config = config or TelemetryConfig.from_env()
    scrape_config = ScrapeConfig.from_env()  # a bad target list stops start-up first
    store = await open_store(config, stack)
    engine = Engine(store)
    limit = SampleRateLimit(config.max_samples_per_s)
    stats = IngestStats()  # what the push paths refuse: telemetry's own metrics
    scrape = ScrapeManager(store, scrape_config, limit)
    await scrape.start()
    stack.push_async_callback(scrape.stop)  # before the store closes: stale markers
    if runtime.registry.enabled and config.mesh_probe_interval_s > 0:
        # every process of the mesh, found in the registry and health-checked (up{slot})
        watch = MeshWatch(store, runtime.registry, interval_s=config.mesh_probe_interval_s)
        await watch.start()
        stack.push_async_callback(watch.stop)
    # rules over any Storage (the local store or VictoriaMetrics): stopped before the
    # store closes; stopping writes no stale markers, so alerts restore at the next start
    rules = RuleManager.from_config(store, engine, config)
    await rules.start()
    await load_api_rules(rules, config.data_dir)
    stack.push_async_callback(rules.stop)
    if config.metrics_brokers:  # the mesh's metrics through the broker, stopped before
        #                         the store closes
        consumer = MetricsConsumer(config.metrics_brokers, store, config.metrics_topic,
                                   config.max_future_s, stats)
        await consumer.start()
        stack.push_async_callback(consumer.stop)
    servicer = TelemetryServicer(store, engine, config, parse_selector, limit, stats)
    endpoints: dict[str, str] = {}
    if config.http_port is not None:
        http = PrometheusApi(store, engine, parse_selector, config, limit, stats, rules=rules)
        address = await http.start(runtime.host, config.http_port)
        stack.push_async_callback(http.stop)
        print(f"geoplex-telemetry http on http://{address}/api/v1/", flush=True)
        endpoints["http"] = address
    otlp_servicer = OtlpMetricsServicer(store, config, limit, stats)
    return [ServiceSpec(SERVICE.grpc_service_names[0],
                        lambda server: add_to_server(servicer, server),
                        endpoints=lambda: endpoints,  # in its registry entry
                        instruments=ingest_stats.register(stats)),
            # OTLP metrics on the same port: OpenTelemetry SDKs and collectors export here
            ServiceSpec(otlp_servicer_module.SERVICE_NAME,
                        lambda server: otlp_servicer_module.add_to_server(otlp_servicer,
                                                                          server))]


def main() -> None:
    run(SERVICE, build)


if __name__ == "__main__":
    main()
