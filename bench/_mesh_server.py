"""A Geoplex server with no service of its own, only what the runtime always adds.

``python -m bench._mesh_server`` serves MeshService (plus health and
reflection) through the real runtime (:class:`GeoplexServer`, its interceptors,
its config), the way every service does, so ``Ping`` measures the runtime's
own ceiling. Configured like any service, as ``bench``:

- ``GEOPLEX_BENCH_PORT`` (0 = any free port), ``GEOPLEX_BENCH_REUSE_PORT``,
  ``GEOPLEX_LOG_LEVEL``, ``GEOPLEX_TRACING`` (``off|console|otlp``) as read by
  :class:`RuntimeConfig`;
- ``GEOPLEX_BENCH_TRACING=discard`` (read only here): tracing on, with every
  span built and handed to a ``BatchSpanProcessor`` whose exporter drops it, so
  the benchmark measures the instrumentation, not a collector or a console.

Prints the runtime's ready line (``geoplex-bench ready on host:port``) and stops
gracefully on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from geoplex.servers._runtime import tracing
from geoplex.servers._runtime.config import Env, RuntimeConfig
from geoplex.servers._runtime.server import GeoplexServer, run_main

NAME = "bench"


class DiscardingSpanExporter(SpanExporter):
    """Accepts every batch and keeps nothing; counts spans for a sanity check."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def tracer_provider(config: RuntimeConfig, env: Env) -> TracerProvider | None:
    """``GEOPLEX_BENCH_TRACING`` if set (off | discard), else the runtime's own choice."""
    mode = env.choice("GEOPLEX_BENCH_TRACING", "", ("off", "discard"))
    if mode == "discard":
        return tracing.make_tracer_provider(
            "off", NAME, processor=BatchSpanProcessor(DiscardingSpanExporter()))
    if mode == "off":
        return None
    return tracing.make_tracer_provider(config.tracing, NAME)


async def serve(config: RuntimeConfig, env: Env) -> None:
    provider = tracer_provider(config, env)
    server = GeoplexServer(config, [], tracer_provider=provider)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The same ready line as the runtime's serve(), which the benchmark waits for.
    print(f"geoplex-{NAME} ready on {server.address} pid={os.getpid()}", flush=True)
    await stop.wait()
    await server.stop(0.5)  # also shuts the tracer provider down, flushing its spans
    exporters = [getattr(p, "span_exporter", None) for p in
                 getattr(getattr(provider, "_active_span_processor", None),
                         "_span_processors", ())]
    dropped = sum(e.exported for e in exporters if isinstance(e, DiscardingSpanExporter))
    if provider is not None:
        print(f"geoplex-{NAME}: {dropped} spans built and dropped", file=sys.stderr, flush=True)


def main() -> None:
    run_main(NAME, 0, lambda config: serve(config, Env()))

if __name__ == "__main__":
    main()
