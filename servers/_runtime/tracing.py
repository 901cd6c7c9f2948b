"""OpenTelemetry tracing for servers and clients; off unless GEOPLEX_TRACING says otherwise.

Spans come from the gRPC instrumentation (method, status), with the W3C trace
context carried in metadata from client to server. Request bodies are never
recorded, so a location never reaches a span.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import grpc.aio
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from .config import ConfigError


def make_tracer_provider(mode: str, service_name: str,
                         processor: SpanProcessor | None = None) -> TracerProvider | None:
    """A provider for ``mode`` (off|console|otlp), or None when tracing is off.

    ``processor`` overrides the exporter (tests pass an in-memory one).
    """
    if mode == "off" and processor is None:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": f"geoplex-{service_name}"}))
    if processor is not None:
        provider.add_span_processor(processor)
    elif mode == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif mode == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter,
            )
        except ImportError:
            raise ConfigError("GEOPLEX_TRACING=otlp needs the opentelemetry-exporter-otlp "
                              "package: pip install opentelemetry-exporter-otlp") from None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def server_interceptors(provider: TracerProvider | None) -> list[grpc.aio.ServerInterceptor]:
    if provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    # the instrumentation ships py.typed but leaves its factories unannotated
    make = cast("Callable[..., grpc.aio.ServerInterceptor]", aio_server_interceptor)
    return [make(tracer_provider=provider)]


def client_interceptors(provider: TracerProvider | None) -> list[grpc.aio.ClientInterceptor]:
    if provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    # unannotated too: a list of the four grpc.aio client interceptors
    make = cast("Callable[..., list[grpc.aio.ClientInterceptor]]", aio_client_interceptors)
    return list(make(tracer_provider=provider))
