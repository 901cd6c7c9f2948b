"""MapsService over gRPC: convert, await the application, convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio

from geoplex.maps.v1 import maps_pb2 as pb
from geoplex.maps.v1 import maps_pb2_grpc
from geoplex.servers._runtime.auth import TokenVerifier
from geoplex.servers._runtime.errors import FailedPrecondition

from . import convert
from .app import MapsApp
from .ingest import LocationIngest

Context = grpc.aio.ServicerContext


class MapsServicer(maps_pb2_grpc.MapsServiceServicer):
    def __init__(self, app: MapsApp, verifier: TokenVerifier,
                 ingest: LocationIngest | None) -> None:
        self.app = app
        self.verifier = verifier
        self.ingest = ingest

    def _ingest_for(self, metadata: tuple[tuple[str, str | bytes], ...]
                    ) -> tuple[LocationIngest, str]:
        user = self.verifier.subject(metadata)
        if self.ingest is None:
            raise FailedPrecondition("location ingest is off on this server: it needs "
                                     "GEOPLEX_MONGO_URI (for the trip history) and a broker",
                                     reason="INGEST_OFF")
        return self.ingest, user

    async def ReportLocationBatch(self, request: pb.ReportLocationBatchRequest,
                                  context: Context[pb.ReportLocationBatchRequest,
                                                   pb.ReportLocationBatchResponse]
                                  ) -> pb.ReportLocationBatchResponse:
        ingest, user = self._ingest_for(tuple(context.invocation_metadata() or ()))
        batch_id, fixes = convert.batch_from_pb(request.batch, request.HasField("batch"))
        accepted, rejected = await ingest.report(user, batch_id, fixes)
        return pb.ReportLocationBatchResponse(accepted=accepted,
                                              rejected=convert.rejected_to_pb(rejected, 0))

    async def ReportLocations(self, request_iterator: AsyncIterator[pb.ReportLocationsRequest],
                              context: Context[pb.ReportLocationsRequest,
                                               pb.ReportLocationsResponse]
                              ) -> pb.ReportLocationsResponse:
        ingest, user = self._ingest_for(tuple(context.invocation_metadata() or ()))
        out = pb.ReportLocationsResponse()
        async for request in request_iterator:
            batch_id, fixes = convert.batch_from_pb(request.batch, request.HasField("batch"),
                                                    f"batch[{out.batches}]")
            accepted, rejected = await ingest.report(user, batch_id, fixes)
            out.accepted += accepted
            out.rejected.extend(convert.rejected_to_pb(rejected, out.batches))
            out.batches += 1
        return out

    async def Geocode(self, request: pb.GeocodeRequest,
                      context: Context[pb.GeocodeRequest, pb.GeocodeResponse]
                      ) -> pb.GeocodeResponse:
        text, bias, size, offset = convert.geocode_from_pb(request)
        candidates = await self.app.geocode(text, bias, size, offset)
        return convert.geocode_to_pb(candidates, text, bias, size, offset)

    async def ReverseGeocode(self, request: pb.ReverseGeocodeRequest,
                             context: Context[pb.ReverseGeocodeRequest,
                                              pb.ReverseGeocodeResponse]
                             ) -> pb.ReverseGeocodeResponse:
        lat, lon, limit = convert.reverse_from_pb(request)
        return convert.reverse_to_pb(await self.app.reverse(lat, lon, limit))

    async def GetGazetteerInfo(self, request: pb.GetGazetteerInfoRequest,
                               context: Context[pb.GetGazetteerInfoRequest,
                                                pb.GetGazetteerInfoResponse]
                               ) -> pb.GetGazetteerInfoResponse:
        return convert.info_to_pb(*self.app.info())


def add_to_server(servicer: MapsServicer, server: grpc.aio.Server) -> None:
    maps_pb2_grpc.add_MapsServiceServicer_to_server(servicer, server)
