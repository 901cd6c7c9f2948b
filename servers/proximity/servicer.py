"""ProximityService over gRPC: convert, await the application, convert back."""

from __future__ import annotations

from typing import TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from geoplex.proximity.v1 import proximity_pb2 as pb
from geoplex.servers._runtime.auth import TokenVerifier

from . import convert
from .app import ProximityApp

Context = grpc.aio.ServicerContext
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class ProximityServicer:
    """Every method of ProximityService, registered by :func:`add_to_server`.

    Not a subclass of the generated ``ProximityServiceServicer``: its search handler
    returns the response already serialised (bytes), which that base's signature
    forbids, and the generated registration, the only thing that needs the base, is
    not used.
    """

    def __init__(self, app: ProximityApp, verifier: TokenVerifier) -> None:
        self.app = app
        self.verifier = verifier

    def _caller(self, context: Context[_Request, _Response]) -> str:
        return self.verifier.subject(tuple(context.invocation_metadata() or ()))

    async def SearchNearbyBusinesses(self, request: pb.SearchNearbyBusinessesRequest,
                                     context: Context[pb.SearchNearbyBusinessesRequest, bytes]
                                     ) -> bytes:  # pre-serialised SearchNearbyBusinessesResponse
        return convert.page_to_bytes(await self.app.search(convert.query_from_pb(request)))

    async def GetBusiness(self, request: pb.GetBusinessRequest,
                          context: Context[pb.GetBusinessRequest, pb.GetBusinessResponse]
                          ) -> pb.GetBusinessResponse:
        return pb.GetBusinessResponse(
            business=convert.business_to_pb(await self.app.get(request.id)))

    async def BatchGetBusinesses(self, request: pb.BatchGetBusinessesRequest,
                                 context: Context[pb.BatchGetBusinessesRequest,
                                                  pb.BatchGetBusinessesResponse]
                                 ) -> pb.BatchGetBusinessesResponse:
        found = await self.app.batch_get(list(request.ids))
        return pb.BatchGetBusinessesResponse(
            businesses=[convert.business_to_pb(b) for b in found])

    async def CreateBusiness(self, request: pb.CreateBusinessRequest,
                             context: Context[pb.CreateBusinessRequest, pb.CreateBusinessResponse]
                             ) -> pb.CreateBusinessResponse:
        owner = self._caller(context)
        draft = convert.draft_from_pb(request.business, need_location=True)
        created = await self.app.create(owner, draft)
        return pb.CreateBusinessResponse(business=convert.business_to_pb(created))

    async def UpdateBusiness(self, request: pb.UpdateBusinessRequest,
                             context: Context[pb.UpdateBusinessRequest, pb.UpdateBusinessResponse]
                             ) -> pb.UpdateBusinessResponse:
        owner = self._caller(context)
        paths = list(request.update_mask.paths)
        draft = convert.draft_from_pb(request.business,
                                      need_location=not paths or "location" in paths)
        updated = await self.app.update(owner, request.business.id, draft, paths)
        return pb.UpdateBusinessResponse(business=convert.business_to_pb(updated))

    async def DeleteBusiness(self, request: pb.DeleteBusinessRequest,
                             context: Context[pb.DeleteBusinessRequest, pb.DeleteBusinessResponse]
                             ) -> pb.DeleteBusinessResponse:
        await self.app.delete(self._caller(context), request.id)
        return pb.DeleteBusinessResponse()

    async def ListBusinesses(self, request: pb.ListBusinessesRequest,
                             context: Context[pb.ListBusinessesRequest, pb.ListBusinessesResponse]
                             ) -> pb.ListBusinessesResponse:
        items, token = await self.app.list_owned(self._caller(context), request.page_size,
                                                 request.page_token)
        return pb.ListBusinessesResponse(businesses=[convert.business_to_pb(b) for b in items],
                                         next_page_token=token)


def _serialize(message: bytes | Message) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


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
