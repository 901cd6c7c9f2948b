"""TelemetryService over gRPC: convert, run the store's call off the event loop, convert
back. The store's calls are synchronous (a write waits for its fsync)."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio

from geoplex.telemetry.v1 import telemetry_pb2 as pb
from geoplex.telemetry.v1 import telemetry_pb2_grpc

from . import convert, queries
from .config import TelemetryConfig
from .ingest_stats import IngestStats
from .limits import SampleRateLimit, tenant_in
from .promql.engine import Engine
from .tsdb.api import Storage

Context = grpc.aio.ServicerContext


class TelemetryServicer(telemetry_pb2_grpc.TelemetryServiceServicer):
    def __init__(self, store: Storage, engine: Engine, config: TelemetryConfig,
                 parse_selector: convert.SelectorParser, limit: SampleRateLimit,
                 stats: IngestStats) -> None:
        self.store = store
        self.engine = engine
        self.config = config
        self.parse_selector = parse_selector
        self.limit = limit
        self.stats = stats

    async def Query(self, request: pb.QueryRequest,
                    context: Context[pb.QueryRequest, pb.QueryResponse]) -> pb.QueryResponse:
        time_ms = convert.instant_from_pb(request.time, request.HasField("time"))
        result = await asyncio.to_thread(queries.instant, self.engine, request.query, time_ms,
                                         request.resolution)
        return queries.query_to_pb(result)

    async def QueryRange(self, request: pb.QueryRangeRequest,
                         context: Context[pb.QueryRangeRequest, pb.QueryRangeResponse]
                         ) -> pb.QueryRangeResponse:
        start, end, step = convert.query_range_from_pb(request)
        result = await asyncio.to_thread(queries.range_query, self.engine, request.query,
                                         start, end, step, request.resolution)
        return queries.range_to_pb(result)

    async def Write(self, request: pb.WriteRequest,
                    context: Context[pb.WriteRequest, pb.WriteResponse]) -> pb.WriteResponse:
        with self.stats.refusals("write", lambda: sum(len(ts.samples)
                                                      for ts in request.series)):
            samples = convert.write_from_pb(
                request, max_series=self.config.write_max_series,
                max_samples=self.config.write_max_samples,
                max_future_ms=int(self.config.max_future_s * 1000))
            self.limit.take(tenant_in(tuple(context.invocation_metadata() or ())),
                            sum(len(ts) for _, ts, _ in samples))
            result = await asyncio.to_thread(self.store.append_series, samples)
        return pb.WriteResponse(samples_written=result.appended,
                                duplicates_dropped=len(result.duplicates))

    async def ListSeries(self, request: pb.ListSeriesRequest,
                         context: Context[pb.ListSeriesRequest, pb.ListSeriesResponse]
                         ) -> pb.ListSeriesResponse:
        selectors = convert.selectors_from_pb(request.match, self.parse_selector,
                                              required=True)
        mint, maxt = convert.range_from_pb(request.start, request.HasField("start"),
                                           request.end, request.HasField("end"))
        size, offset = convert.series_page(request)
        found = await asyncio.to_thread(queries.series_matching, self.store, selectors, mint,
                                        maxt)
        return convert.series_to_pb(request, found, size, offset)

    async def ListLabels(self, request: pb.ListLabelsRequest,
                         context: Context[pb.ListLabelsRequest, pb.ListLabelsResponse]
                         ) -> pb.ListLabelsResponse:
        selectors = convert.selectors_from_pb(request.match, self.parse_selector,
                                              required=False)
        mint, maxt = convert.range_from_pb(request.start, request.HasField("start"),
                                           request.end, request.HasField("end"))
        values = await asyncio.to_thread(queries.labels_matching, self.store, request.name,
                                         selectors, mint, maxt)
        return pb.ListLabelsResponse(values=values)

    async def GetStorageInfo(self, request: pb.GetStorageInfoRequest,
                             context: Context[pb.GetStorageInfoRequest,
                                              pb.GetStorageInfoResponse]
                             ) -> pb.GetStorageInfoResponse:
        return convert.stats_to_pb(await asyncio.to_thread(self.store.stats),
                                  dict(self.config.retention_ms))


def add_to_server(servicer: TelemetryServicer, server: grpc.aio.Server) -> None:
    telemetry_pb2_grpc.add_TelemetryServiceServicer_to_server(servicer, server)
