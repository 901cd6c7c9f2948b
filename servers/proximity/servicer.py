"""ProximityService over gRPC: convert, await the application, convert back."""

from __future__ import annotations

import grpc.aio

from geoplex.proximity.v1 import proximity_pb2 as pb
from geoplex.proximity.v1 import proximity_pb2_grpc
from geoplex.servers._runtime.auth import TokenVerifier

from . import convert
from .app import ProximityApp


class ProximityServicer(proximity_pb2_grpc.ProximityServiceServicer):
    def __init__(self, app: ProximityApp, verifier: TokenVerifier) -> None:
        self.app = app
        self.verifier = verifier

    def _caller(self, context: grpc.aio.ServicerContext) -> str:
        return self.verifier.subject(context.invocation_metadata())

    async def SearchNearbyBusinesses(self, request: pb.SearchNearbyBusinessesRequest,
                                     context: grpc.aio.ServicerContext
                                     ) -> pb.SearchNearbyBusinessesResponse:
        return convert.page_to_pb(await self.app.search(convert.query_from_pb(request)))

    async def GetBusiness(self, request: pb.GetBusinessRequest,
                          context: grpc.aio.ServicerContext) -> pb.GetBusinessResponse:
        return pb.GetBusinessResponse(
            business=convert.business_to_pb(await self.app.get(request.id)))

    async def BatchGetBusinesses(self, request: pb.BatchGetBusinessesRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> pb.BatchGetBusinessesResponse:
        found = await self.app.batch_get(list(request.ids))
        return pb.BatchGetBusinessesResponse(
            businesses=[convert.business_to_pb(b) for b in found])

    async def CreateBusiness(self, request: pb.CreateBusinessRequest,
                             context: grpc.aio.ServicerContext) -> pb.CreateBusinessResponse:
        owner = self._caller(context)
        draft = convert.draft_from_pb(request.business, need_location=True)
        created = await self.app.create(owner, draft)
        return pb.CreateBusinessResponse(business=convert.business_to_pb(created))

    async def UpdateBusiness(self, request: pb.UpdateBusinessRequest,
                             context: grpc.aio.ServicerContext) -> pb.UpdateBusinessResponse:
        owner = self._caller(context)
        paths = list(request.update_mask.paths)
        draft = convert.draft_from_pb(request.business,
                                      need_location=not paths or "location" in paths)
        updated = await self.app.update(owner, request.business.id, draft, paths)
        return pb.UpdateBusinessResponse(business=convert.business_to_pb(updated))

    async def DeleteBusiness(self, request: pb.DeleteBusinessRequest,
                             context: grpc.aio.ServicerContext) -> pb.DeleteBusinessResponse:
        await self.app.delete(self._caller(context), request.id)
        return pb.DeleteBusinessResponse()

    async def ListBusinesses(self, request: pb.ListBusinessesRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListBusinessesResponse:
        items, token = await self.app.list_owned(self._caller(context), request.page_size,
                                                 request.page_token)
        return pb.ListBusinessesResponse(businesses=[convert.business_to_pb(b) for b in items],
                                         next_page_token=token)
