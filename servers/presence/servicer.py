"""PresenceService over gRPC: the live stream and the unary settings calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, TypeVar, cast

import grpc.aio

from geoplex.presence.v1 import presence_pb2 as pb
from geoplex.presence.v1 import presence_pb2_grpc
from geoplex.servers._runtime.auth import TokenVerifier
from geoplex.servers._runtime.errors import InvalidArgument

from . import convert
from .app import PresenceHub
from .domain import Rejection, Session

if TYPE_CHECKING:
    from grpc.aio import _DoneCallback

Context = grpc.aio.ServicerContext
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class PresenceServicer(presence_pb2_grpc.PresenceServiceServicer):
    def __init__(self, hub: PresenceHub, verifier: TokenVerifier) -> None:
        self.hub = hub
        self.verifier = verifier

    def _caller(self, context: Context[_Request, _Response]) -> str:
        return self.verifier.subject(tuple(context.invocation_metadata() or ()))

    async def Connect(self, request_iterator: AsyncIterator[pb.ConnectRequest],
                      context: Context[pb.ConnectRequest, pb.ConnectResponse]
                      ) -> AsyncIterator[pb.ConnectResponse]:
        # Read the Hello before judging the token: ending the call while the client's
        # first write is in flight makes grpc.aio report INTERNAL instead of our status
        # (grpc/grpc#36066). Nothing is done with the message until the token checks out.
        # A shutdown does not wait for a client that sends nothing: UNAVAILABLE at once.
        first = await self.hub.unless_closing(anext(aiter(request_iterator), None))
        user = self._caller(context)
        self.hub.ensure_serving()
        if first is None:
            return
        if first.WhichOneof("message") != "hello":
            raise InvalidArgument("hello", "the first message of a stream must be a Hello",
                                  reason="HELLO_REQUIRED")
        session = await self.hub.open(user, convert.fix_from(self.hub, first.hello, "hello"))
        reader = asyncio.create_task(self._read(session, request_iterator))
        # The RPC's end lets go of the session, not only this generator's `finally`: a
        # client cancelling while gRPC sends leaves the generator parked at a `yield`, and
        # it is finalised whenever the garbage collector gets to it.

        def on_done(_context: object) -> None:
            reader.cancel()
            self.hub.release(session)

        # types-grpcio declares the callback as a class (_DoneCallback) no function can be
        # an instance of; grpc.aio calls it with the context, as on_done takes it
        context.add_done_callback(
            cast("_DoneCallback[pb.ConnectRequest, pb.ConnectResponse]", on_done))
        try:
            yield convert.snapshot(session.snapshot(), session.radius_m)
            async for rejections, events in self.hub.outputs(session, reader):
                for r in rejections:
                    yield convert.rejection(r)
                if events:  # one message per drain: gRPC's cost is per message
                    yield convert.batch(events)
                accepted = session.take_accepted()
                if accepted:
                    yield convert.accepted(accepted)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await self.hub.close(session)

    async def _read(self, session: Session,
                    request_iterator: AsyncIterator[pb.ConnectRequest]) -> None:
        async for request in request_iterator:
            which = request.WhichOneof("message")
            message = request.location_update if which == "location_update" else request.hello
            field = which or "message"
            sequence = request.location_update.sequence if which == "location_update" else 0
            try:
                if which is None:
                    raise InvalidArgument("message", "must be a hello or a location_update",
                                          reason="EMPTY_MESSAGE")
                await self.hub.update(session, convert.fix_from(self.hub, message, field),
                                      field, sequence)
            except InvalidArgument as exc:  # refused, nothing changed; the stream goes on
                session.reject(Rejection.of(exc, sequence))

    async def AddFriend(self, request: pb.AddFriendRequest,
                        context: Context[pb.AddFriendRequest, pb.AddFriendResponse]
                        ) -> pb.AddFriendResponse:
        await self.hub.add_friend(self._caller(context), request.user_id)
        return pb.AddFriendResponse()

    async def RemoveFriend(self, request: pb.RemoveFriendRequest,
                           context: Context[pb.RemoveFriendRequest, pb.RemoveFriendResponse]
                           ) -> pb.RemoveFriendResponse:
        await self.hub.remove_friend(self._caller(context), request.user_id)
        return pb.RemoveFriendResponse()

    async def ListFriends(self, request: pb.ListFriendsRequest,
                          context: Context[pb.ListFriendsRequest, pb.ListFriendsResponse]
                          ) -> pb.ListFriendsResponse:
        items, token = await self.hub.list_friends(self._caller(context), request.page_size,
                                                   request.page_token)
        return pb.ListFriendsResponse(user_ids=items, next_page_token=token)

    async def SetSharing(self, request: pb.SetSharingRequest,
                         context: Context[pb.SetSharingRequest, pb.SetSharingResponse]
                         ) -> pb.SetSharingResponse:
        sharing = await self.hub.set_sharing(self._caller(context), request.sharing)
        return pb.SetSharingResponse(sharing=sharing)

    async def ListNearbyFriends(self, request: pb.ListNearbyFriendsRequest,
                                context: Context[pb.ListNearbyFriendsRequest,
                                                 pb.ListNearbyFriendsResponse]
                                ) -> pb.ListNearbyFriendsResponse:
        page, token, radius = await self.hub.nearby(self._caller(context), request.page_size,
                                                    request.page_token)
        return pb.ListNearbyFriendsResponse(friends=[convert.friend(s) for s in page],
                                            next_page_token=token, radius_meters=radius)

    async def SetRadius(self, request: pb.SetRadiusRequest,
                        context: Context[pb.SetRadiusRequest, pb.SetRadiusResponse]
                        ) -> pb.SetRadiusResponse:
        radius = await self.hub.set_radius(self._caller(context), request.radius_meters)
        return pb.SetRadiusResponse(radius_meters=radius)

    async def GetSettings(self, request: pb.GetSettingsRequest,
                          context: Context[pb.GetSettingsRequest, pb.GetSettingsResponse]
                          ) -> pb.GetSettingsResponse:
        sharing, radius = await self.hub.settings(self._caller(context))
        return pb.GetSettingsResponse(sharing=sharing, radius_meters=radius)
