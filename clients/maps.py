"""Typed async client for MapsService.

    async with MapsClient("127.0.0.1:50055") as maps:
        found = await maps.geocode("Mannerheimintie 10, Helsinki")
        best = found.candidates[0]
        print(best.label, best.location.latitude, best.location.longitude)
        here = await maps.reverse((60.1699, 24.9384))
        print(here.label, here.distance_meters)
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc.aio

from geoplex.maps.v1 import maps_pb2 as pb
from geoplex.maps.v1 import maps_pb2_grpc

from .channel import BaseClient, ChannelOptions

GeocodeCandidate = pb.GeocodeCandidate
PlaceKind = pb.PlaceKind
Point = tuple[float, float]  # (latitude, longitude)


class MapsClient(BaseClient):
    def __init__(self, target: str | grpc.aio.Channel, options: ChannelOptions | None = None,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> None:
        super().__init__(target, options, interceptors)
        self.stub = maps_pb2_grpc.MapsServiceStub(self.channel)

    async def geocode(self, text: str, *, bias: Point | None = None, page_size: int = 0,
                      page_token: str = "", timeout: float | None = None
                      ) -> pb.GeocodeResponse:
        """Ranked candidates for an address, street, point of interest or place; pass
        ``next_page_token`` back as ``page_token`` (with the same text and bias) for more."""
        request = pb.GeocodeRequest(text=text, page_size=page_size, page_token=page_token)
        if bias is not None:
            request.bias.latitude, request.bias.longitude = bias
        return await self.call(self.stub.Geocode, request, timeout=timeout)

    async def reverse(self, location: Point, *, max_distance_m: float = 0.0,
                      timeout: float | None = None) -> pb.ReverseGeocodeResponse:
        """The nearest address (within ``max_distance_m``, 0 = the server's 100 m), else
        the street, else the place."""
        request = pb.ReverseGeocodeRequest(max_distance_meters=max_distance_m)
        request.location.latitude, request.location.longitude = location
        return await self.call(self.stub.ReverseGeocode, request, timeout=timeout)

    async def info(self, *, timeout: float | None = None) -> pb.GetGazetteerInfoResponse:
        """Features per kind, memory and the data files of the gazetteer."""
        return await self.call(self.stub.GetGazetteerInfo, pb.GetGazetteerInfoRequest(),
                               timeout=timeout)
