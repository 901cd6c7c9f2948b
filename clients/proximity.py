"""Typed async client for ProximityService.

    async with ProximityClient("127.0.0.1:50051", ChannelOptions(token=tok)) as px:
        page = await px.search(60.1704, 24.9522, radius_m=500)
        for hit in page.businesses:
            print(hit.business.name, round(hit.distance_meters))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc.aio
from google.protobuf.field_mask_pb2 import FieldMask

from geoplex.proximity.v1 import proximity_pb2 as pb
from geoplex.proximity.v1 import proximity_pb2_grpc
from geoplex.type.v1.geo_pb2 import LatLng

from .channel import BaseClient, ChannelOptions

Business = pb.Business
NearbyBusiness = pb.NearbyBusiness
RADII_M = (500, 1000, 2000, 5000, 20000)


class ProximityClient(BaseClient):
    def __init__(self, target: str | grpc.aio.Channel, options: ChannelOptions | None = None,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> None:
        super().__init__(target, options, interceptors)
        self.stub = proximity_pb2_grpc.ProximityServiceStub(self.channel)

    async def search(self, latitude: float, longitude: float, radius_m: int = 1000, *,
                     category: str = "", keyword: str = "", page_size: int = 0,
                     page_token: str = "", timeout: float | None = None
                     ) -> pb.SearchNearbyBusinessesResponse:
        """One page of businesses within ``radius_m`` (500/1000/2000/5000/20000), nearest first."""
        request = pb.SearchNearbyBusinessesRequest(
            location=LatLng(latitude=latitude, longitude=longitude), radius_meters=radius_m,
            category=category, keyword=keyword, page_size=page_size, page_token=page_token)
        return await self.call(self.stub.SearchNearbyBusinesses, request, timeout=timeout)

    async def search_all(self, latitude: float, longitude: float, radius_m: int = 1000, *,
                         category: str = "", keyword: str = "", page_size: int = 100,
                         timeout: float | None = None) -> AsyncIterator[pb.NearbyBusiness]:
        """Every business within the radius, following page tokens (``timeout`` per page)."""
        token = ""
        while True:
            page = await self.search(latitude, longitude, radius_m, category=category,
                                     keyword=keyword, page_size=page_size, page_token=token,
                                     timeout=timeout)
            for hit in page.businesses:
                yield hit
            token = page.next_page_token
            if not token:
                return

    async def get(self, business_id: str, *, timeout: float | None = None) -> pb.Business:
        response = await self.call(self.stub.GetBusiness, pb.GetBusinessRequest(id=business_id),
                                   timeout=timeout)
        return response.business

    async def batch_get(self, ids: Sequence[str], *, timeout: float | None = None
                        ) -> list[pb.Business]:
        response = await self.call(self.stub.BatchGetBusinesses,
                                   pb.BatchGetBusinessesRequest(ids=list(ids)), timeout=timeout)
        return list(response.businesses)

    async def create(self, business: pb.Business, *, token: str | None = None,
                     timeout: float | None = None) -> pb.Business:
        response = await self.call(self.stub.CreateBusiness,
                                   pb.CreateBusinessRequest(business=business), token=token,
                                   timeout=timeout)
        return response.business

    async def update(self, business: pb.Business, paths: Sequence[str] = (), *,
                     token: str | None = None, timeout: float | None = None) -> pb.Business:
        response = await self.call(
            self.stub.UpdateBusiness,
            pb.UpdateBusinessRequest(business=business, update_mask=FieldMask(paths=list(paths))),
            token=token, timeout=timeout)
        return response.business

    async def delete(self, business_id: str, *, token: str | None = None,
                     timeout: float | None = None) -> None:
        await self.call(self.stub.DeleteBusiness, pb.DeleteBusinessRequest(id=business_id),
                        token=token, timeout=timeout)

    async def list_own(self, *, page_size: int = 0, page_token: str = "",
                       token: str | None = None, timeout: float | None = None
                       ) -> pb.ListBusinessesResponse:
        return await self.call(self.stub.ListBusinesses,
                               pb.ListBusinessesRequest(page_size=page_size,
                                                        page_token=page_token),
                               token=token, timeout=timeout)
