"""Typed async client for MapsService.

    async with MapsClient("127.0.0.1:50055") as maps:
        found = await maps.geocode("Mannerheimintie 10, Helsinki")
        best = found.candidates[0]
        print(best.label, best.location.latitude, best.location.longitude)
        here = await maps.reverse((60.1699, 24.9384))
        print(here.label, here.distance_meters)
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence

import grpc.aio

from geoplex.maps.v1 import maps_pb2 as pb
from geoplex.maps.v1 import maps_pb2_grpc

from .channel import BaseClient, ChannelOptions
from .errors import from_rpc_error
from .routing import travel_mode

GeocodeCandidate = pb.GeocodeCandidate
PlaceKind = pb.PlaceKind
LocationFix = pb.LocationFix
NavigateResponse = pb.NavigateResponse
Point = tuple[float, float]  # (latitude, longitude)


def fix(location: Point, time: float, *, accuracy_m: float = 0.0,
        speed_mps: float | None = None, heading_deg: float | None = None) -> pb.LocationFix:
    """One location fix taken at ``time`` (seconds since the epoch)."""
    out = pb.LocationFix(accuracy_meters=accuracy_m)
    out.location.latitude, out.location.longitude = location
    out.time.FromNanoseconds(int(round(time * 1e9)))
    if speed_mps is not None:
        out.speed_mps = speed_mps
    if heading_deg is not None:
        out.heading_degrees = heading_deg
    return out


def batch(batch_id: str, fixes: Iterable[pb.LocationFix]) -> pb.LocationBatch:
    """A batch of fixes under a client-chosen id (a retry with the same id is stored once)."""
    return pb.LocationBatch(batch_id=batch_id, fixes=list(fixes))


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

    async def report_batch(self, location_batch: pb.LocationBatch, *,
                           timeout: float | None = None) -> pb.ReportLocationBatchResponse:
        """Report one batch of fixes (needs a token: the user is its subject); returns
        once the accepted ones are durably in the broker. Retried on UNAVAILABLE: the
        batch_id makes a repeat harmless."""
        return await self.call(self.stub.ReportLocationBatch,
                               pb.ReportLocationBatchRequest(batch=location_batch),
                               timeout=timeout)

    async def report_locations(self, batches: AsyncIterable[pb.LocationBatch], *,
                               timeout: float | None = None) -> pb.ReportLocationsResponse:
        """Report batches over one client stream (a navigation session): one answer with
        the totals when ``batches`` ends. A stream is never retried."""
        async def requests() -> AsyncIterable[pb.ReportLocationsRequest]:
            async for b in batches:
                yield pb.ReportLocationsRequest(batch=b)
        return await self.call(self.stub.ReportLocations, requests(), timeout=timeout)

    async def navigate(self, origin: Point, destination: Point, *, mode: str | int = "drive",
                       token: str | None = None, reroute_min_saving_s: float = 0.0,
                       timeout: float | None = None) -> AsyncIterator[pb.NavigateResponse]:
        """Navigate from ``origin`` to ``destination`` (needs a token: the driver is its
        subject): the route first (REASON_STARTED), then the remaining ETA as the same
        user's reported fixes advance or traffic on the rest changes, a new route when a
        clearly faster one appears (saving ``reroute_min_saving_s``, 0 = the server's 60 s,
        and 10 %) or the driver leaves the route; it ends after REASON_ARRIVED.

        No deadline unless ``timeout``: a drive lasts as long as it lasts. Leaving the
        ``async for`` early cancels the stream, which ends the session."""
        request = pb.NavigateRequest(travel_mode=travel_mode(mode),
                                     reroute_min_saving_seconds=reroute_min_saving_s)
        request.origin.latitude, request.origin.longitude = origin
        request.destination.latitude, request.destination.longitude = destination
        call = self.stub.Navigate(request, timeout=timeout, metadata=self.metadata(token=token))
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def info(self, *, timeout: float | None = None) -> pb.GetGazetteerInfoResponse:
        """Features per kind, memory and the data files of the gazetteer."""
        return await self.call(self.stub.GetGazetteerInfo, pb.GetGazetteerInfoRequest(),
                               timeout=timeout)
