"""MapsService over gRPC: convert, await the application, convert back."""

from __future__ import annotations

import grpc
import grpc.aio

from geoplex.maps.v1 import maps_pb2 as pb
from geoplex.maps.v1 import maps_pb2_grpc

from . import convert
from .app import MapsApp

Context = grpc.aio.ServicerContext


class MapsServicer(maps_pb2_grpc.MapsServiceServicer):
    def __init__(self, app: MapsApp) -> None:
        self.app = app

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
