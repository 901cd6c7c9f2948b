"""MapsService over gRPC: convert, await the application, convert back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import grpc.aio

from geoplex.maps.v1 import maps_pb2 as pb
from geoplex.maps.v1 import maps_pb2_grpc
from geoplex.servers._runtime.auth import TokenVerifier
from geoplex.servers._runtime.errors import FailedPrecondition, InvalidArgument

from . import convert
from .app import MapsApp
from .ingest import LocationIngest
from .navigation import Navigator, query_from_pb, update_to_pb
from .tile_service import TileService

Context = grpc.aio.ServicerContext


class MapsServicer(maps_pb2_grpc.MapsServiceServicer):
    def __init__(self, app: MapsApp, verifier: TokenVerifier,
                 ingest: LocationIngest | None, tiles: TileService | None = None,
                 navigator: Navigator | None = None) -> None:
        self.app = app
        self.verifier = verifier
        self.ingest = ingest
        self.tiles = tiles
        self.navigator = navigator

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
            try:
                batch_id, fixes = convert.batch_from_pb(request.batch, request.HasField("batch"),
                                                        f"batch[{out.batches}]")
            except InvalidArgument as exc:
                # the batches before it are stored: say how many, so the client resends
                # from this one only (a resend of a stored batch is harmless anyway)
                exc.message += (f"; batches stored before it: {out.batches} "
                                f"({out.accepted} fixes accepted)")
                exc.metadata.update(batches_stored=str(out.batches),
                                    accepted=str(out.accepted))
                raise
            accepted, rejected = await ingest.report(user, batch_id, fixes)
            out.accepted += accepted
            out.rejected.extend(convert.rejected_to_pb(rejected, out.batches))
            out.batches += 1
        return out

    async def Navigate(self, request: pb.NavigateRequest,
                       context: Context[pb.NavigateRequest, pb.NavigateResponse]
                       ) -> AsyncIterator[pb.NavigateResponse]:
        user = self.verifier.subject(tuple(context.invocation_metadata() or ()))
        if self.navigator is None:
            raise FailedPrecondition("navigation is off on this server: it follows the "
                                     "driver's reported fixes, so it needs location ingest "
                                     "(GEOPLEX_MONGO_URI and a broker)",
                                     reason="NAVIGATION_OFF")
        query = query_from_pb(request)
        async for update in self.navigator.navigate(user, query):
            yield update_to_pb(update, time.time())

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

    async def GetTile(self, request: pb.GetTileRequest,
                      context: Context[pb.GetTileRequest, pb.GetTileResponse]
                      ) -> pb.GetTileResponse:
        if self.tiles is None:
            raise FailedPrecondition("tiles are off on this server (GEOPLEX_MAPS_TILE_SOURCES)",
                                     reason="TILES_OFF")
        z, x, y, fmt = convert.tile_from_pb(request)
        tile = await self.tiles.get(z, x, y, fmt, request.if_none_match)
        return pb.GetTileResponse(data=tile.data, content_type=tile.content_type,
                                  etag=tile.etag, not_modified=tile.not_modified,
                                  empty=tile.empty)


def add_to_server(servicer: MapsServicer, server: grpc.aio.Server) -> None:
    maps_pb2_grpc.add_MapsServiceServicer_to_server(servicer, server)
