"""The OpenTelemetry collector's metrics service on the telemetry server's gRPC port, so
an OpenTelemetry SDK (the mesh's own services) or collector exports straight to the store."""

from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as otlp

from geoplex.servers._runtime.errors import InvalidArgument

from .config import TelemetryConfig
from .ingest_stats import UNSUPPORTED_POINT, IngestStats
from .limits import SampleRateLimit, tenant_in
from .otlp import samples_from_export
from .tsdb.api import Storage

SERVICE_NAME = "opentelemetry.proto.collector.metrics.v1.MetricsService"
Context = grpc.aio.ServicerContext


class OtlpMetricsServicer:
    def __init__(self, store: Storage, config: TelemetryConfig, limit: SampleRateLimit,
                 stats: IngestStats) -> None:
        self.store = store
        self.config = config
        self.limit = limit
        self.stats = stats

    async def Export(self, request: otlp.ExportMetricsServiceRequest,
                     context: Context[otlp.ExportMetricsServiceRequest,
                                      otlp.ExportMetricsServiceResponse]
                     ) -> otlp.ExportMetricsServiceResponse:
        converted = samples_from_export(request)
        samples = converted.samples
        with self.stats.refusals("otlp", lambda: len(samples)):
            if len(samples) > self.config.write_max_samples:
                raise InvalidArgument("resource_metrics",
                                      f"{len(samples)} samples in one export",
                                      allowed=[f"1..{self.config.write_max_samples}"])
            horizon = int(time.time() * 1000) + int(self.config.max_future_s * 1000)
            if any(t > horizon for _, t, _ in samples):
                raise InvalidArgument("resource_metrics", "a point is more than "
                                      f"{self.config.max_future_s:g} s ahead of the server's "
                                      "clock", reason="TOO_FAR_IN_FUTURE")
            if samples:
                self.limit.take(tenant_in(tuple(context.invocation_metadata() or ())),
                                len(samples))
                await asyncio.to_thread(self.store.append, samples)
        out = otlp.ExportMetricsServiceResponse()
        if converted.rejected_points:
            self.stats.rejected("otlp", UNSUPPORTED_POINT, converted.rejected_points)
            out.partial_success.rejected_data_points = converted.rejected_points
            out.partial_success.error_message = converted.message()
        return out


def add_to_server(servicer: OtlpMetricsServicer, server: grpc.aio.Server) -> None:
    # the generated add_*_to_server is untyped; the same registration, typed
    handler = grpc.unary_unary_rpc_method_handler(
        servicer.Export, request_deserializer=otlp.ExportMetricsServiceRequest.FromString,
        response_serializer=otlp.ExportMetricsServiceResponse.SerializeToString)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, {"Export": handler}),))
