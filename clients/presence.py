"""Typed async client for PresenceService, with a live session that reconnects.

    async with PresenceClient(target, ChannelOptions(token=tok)) as presence:
        await presence.set_sharing(True)
        async with presence.live(60.17, 24.95) as live:
            await live.update(60.171, 24.951)
            async for event in live:          # ConnectResponse, one friend each
                print(event.WhichOneof("event"))

The server packs several friends' changes into one FriendUpdates message
(gRPC's cost is per message); the live session unpacks them, so callers see
one event per friend.

When the server ends the stream with UNAVAILABLE (shutdown) or the
connection drops, the live session reconnects with exponential backoff and
sends its latest location again as the Hello; the new snapshot follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

import grpc
import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from geoplex.presence.v1 import presence_pb2 as pb
from geoplex.presence.v1 import presence_pb2_grpc
from geoplex.type.v1.geo_pb2 import LatLng

from .channel import BaseClient
from .errors import from_rpc_error

RECONNECT_CODES = {grpc.StatusCode.UNAVAILABLE}


def _now_ts(t: float | None = None) -> Timestamp:
    t = time.time() if t is None else t
    seconds = int(t)
    return Timestamp(seconds=seconds, nanos=int((t - seconds) * 1e9))


def unpack(updates: pb.FriendUpdates) -> list[pb.ConnectResponse]:
    """A FriendUpdates batch as single events (gone first, then nearby, then moved)."""
    out = [pb.ConnectResponse(friend_gone=g) for g in updates.gone]
    out += [pb.ConnectResponse(friend_nearby=n) for n in updates.nearby]
    out += [pb.ConnectResponse(friend_moved=m) for m in updates.moved]
    return out


class PresenceClient(BaseClient):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.stub = presence_pb2_grpc.PresenceServiceStub(self.channel)

    async def add_friend(self, user_id: str) -> None:
        await self.call(self.stub.AddFriend, pb.AddFriendRequest(user_id=user_id))

    async def remove_friend(self, user_id: str) -> None:
        await self.call(self.stub.RemoveFriend, pb.RemoveFriendRequest(user_id=user_id))

    async def list_friends(self, page_size: int = 0, page_token: str = ""
                           ) -> pb.ListFriendsResponse:
        return await self.call(self.stub.ListFriends, pb.ListFriendsRequest(
            page_size=page_size, page_token=page_token))

    async def set_sharing(self, sharing: bool) -> bool:
        reply = await self.call(self.stub.SetSharing, pb.SetSharingRequest(sharing=sharing))
        return reply.sharing

    async def set_radius(self, radius_m: float) -> float:
        reply = await self.call(self.stub.SetRadius, pb.SetRadiusRequest(radius_meters=radius_m))
        return reply.radius_meters

    async def settings(self) -> pb.GetSettingsResponse:
        return await self.call(self.stub.GetSettings, pb.GetSettingsRequest())

    async def nearby(self, page_size: int = 0, page_token: str = ""
                     ) -> pb.ListNearbyFriendsResponse:
        return await self.call(self.stub.ListNearbyFriends, pb.ListNearbyFriendsRequest(
            page_size=page_size, page_token=page_token))

    def live(self, latitude: float, longitude: float, *, reconnect: bool = True,
             max_backoff: float = 5.0) -> LiveSession:
        return LiveSession(self, latitude, longitude, reconnect=reconnect,
                           max_backoff=max_backoff)


class LiveSession:
    """One logical live stream; survives server restarts when ``reconnect`` is on."""

    def __init__(self, client: PresenceClient, latitude: float, longitude: float, *,
                 reconnect: bool, max_backoff: float) -> None:
        self.client = client
        self.location = (latitude, longitude, time.time())
        self.reconnect = reconnect
        self.max_backoff = max_backoff
        self.reconnects = 0
        self.events: asyncio.Queue[pb.ConnectResponse | BaseException] = asyncio.Queue()
        self._outgoing: asyncio.Queue[pb.ConnectRequest] = asyncio.Queue(maxsize=1024)
        self._task: asyncio.Task[None] | None = None
        self._call: grpc.aio.StreamStreamCall | None = None
        self.connected = asyncio.Event()

    async def __aenter__(self) -> LiveSession:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def update(self, latitude: float, longitude: float, t: float | None = None) -> None:
        """Send a new location (remembered for the Hello of the next reconnect)."""
        self.location = (latitude, longitude, time.time() if t is None else t)
        await self._outgoing.put(pb.ConnectRequest(location_update=pb.LocationUpdate(
            location=LatLng(latitude=latitude, longitude=longitude),
            time=_now_ts(self.location[2]))))

    async def send(self, request: pb.ConnectRequest) -> None:
        """Send a raw message (tests use it to send invalid updates)."""
        await self._outgoing.put(request)

    def __aiter__(self) -> AsyncIterator[pb.ConnectResponse]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[pb.ConnectResponse]:
        while True:
            item = await self.events.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def next(self, timeout: float = 10.0) -> pb.ConnectResponse:
        item = await asyncio.wait_for(self.events.get(), timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._one_stream()
                return  # the server ended the stream cleanly
            except grpc.aio.AioRpcError as exc:
                self.connected.clear()
                if not self.reconnect or exc.code() not in RECONNECT_CODES:
                    await self.events.put(from_rpc_error(exc))
                    return
            self.reconnects += 1
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.max_backoff)

    async def _one_stream(self) -> None:
        call = self.client.stub.Connect(metadata=self.client.metadata())
        self._call = call
        lat, lon, t = self.location
        try:
            await call.write(pb.ConnectRequest(hello=pb.Hello(
                location=LatLng(latitude=lat, longitude=lon), time=_now_ts(t))))
        except Exception:  # noqa: BLE001 - the call already ended (e.g. UNAUTHENTICATED):
            pass           # its real status comes from read() below, not from the write

        writer = asyncio.create_task(self._write(call))
        try:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    await call.wait_for_connection()
                    code = await call.code()
                    if code != grpc.StatusCode.OK:
                        raise grpc.aio.AioRpcError(code, await call.initial_metadata(),
                                                   await call.trailing_metadata(),
                                                   await call.details())
                    return
                kind = response.WhichOneof("event")
                if kind == "snapshot":
                    self.connected.set()
                if kind == "friend_updates":
                    for single in unpack(response.friend_updates):
                        self.events.put_nowait(single)
                else:
                    self.events.put_nowait(response)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            call.cancel()

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            request = await self._outgoing.get()
            try:
                await call.write(request)
            except Exception:  # noqa: BLE001 - the call ended; read() reports how
                return
