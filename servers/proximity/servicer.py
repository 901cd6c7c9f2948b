"""ProximityService over gRPC: convert, await the application, convert back."""

from __future__ import annotations

import grpc
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
                                     ) -> bytes:  # pre-serialised SearchNearbyBusinessesResponse
        return convert.page_to_bytes(await self.app.search(convert.query_from_pb(request)))

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


def _serialize(message: object) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()  # type: ignore[attr-defined]


def add_to_server(servicer: ProximityServicer, server: grpc.aio.Server) -> None:
    """The generated registration, except that a handler may return pre-serialised bytes.

    The search page is assembled from cached serialised businesses
    (``convert.page_to_bytes``); every other method returns messages as usual.
    """
    service = pb.DESCRIPTOR.services_by_name["ProximityService"]
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=getattr(pb, method.input_type.name).FromString,
            response_serializer=_serialize)
        for method in service.methods}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
