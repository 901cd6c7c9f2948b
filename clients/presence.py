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

A reader that falls behind gets the newest state, never a backlog: what it has
not read yet is kept as one pending change per friend (a newer change replaces
an older one, so memory is bounded by the number of friends, as on the server),
a newer Snapshot replaces everything pending before it, and UpdateRejected
replies wait in a queue of at most ``max_rejections`` (more are dropped).
``live.stats`` counts what was coalesced and dropped; ``live.nearby`` is the
newest view of every friend without reading at all.

``await live.update(lat, lon, acknowledged=True)`` returns only once the server says the
update is kept (UpdateAccepted: durable in the location history when the user shares),
raises InvalidArgumentError if it was refused, and UnavailableError if the stream ended
first or no answer came within ``ack_timeout`` — then it may or may not have been kept,
and sending it again is safe (a newer location replaces it; an older one is refused).

When the server ends the stream with UNAVAILABLE (shutdown) or the
connection drops, the live session reconnects with exponential backoff and
sends its latest location again as the Hello; the new snapshot follows.
After ``close()``, or once the stream has ended for good, sending raises
:class:`~.errors.SessionClosedError`; after ``close()`` reading does too.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc
import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from geoplex.presence.v1 import presence_pb2 as pb
from geoplex.presence.v1 import presence_pb2_grpc
from geoplex.type.v1.geo_pb2 import LatLng

from .channel import BaseClient, ChannelOptions
from .errors import InvalidArgumentError, SessionClosedError, UnavailableError, from_rpc_error

RECONNECT_CODES = {grpc.StatusCode.UNAVAILABLE}
DEFAULT_MAX_REJECTIONS = 64


def _now_ts(t: float | None = None) -> Timestamp:
    t = time.time() if t is None else t
    seconds = int(t)
    return Timestamp(seconds=seconds, nanos=int((t - seconds) * 1e9))


class PresenceClient(BaseClient):
    def __init__(self, target: str | grpc.aio.Channel, options: ChannelOptions | None = None,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> None:
        super().__init__(target, options, interceptors)
        self.stub = presence_pb2_grpc.PresenceServiceStub(self.channel)

    async def add_friend(self, user_id: str, *, timeout: float | None = None) -> None:
        await self.call(self.stub.AddFriend, pb.AddFriendRequest(user_id=user_id),
                        timeout=timeout)

    async def remove_friend(self, user_id: str, *, timeout: float | None = None) -> None:
        await self.call(self.stub.RemoveFriend, pb.RemoveFriendRequest(user_id=user_id),
                        timeout=timeout)

    async def list_friends(self, page_size: int = 0, page_token: str = "", *,
                           timeout: float | None = None) -> pb.ListFriendsResponse:
        return await self.call(self.stub.ListFriends, pb.ListFriendsRequest(
            page_size=page_size, page_token=page_token), timeout=timeout)

    async def set_sharing(self, sharing: bool, *, timeout: float | None = None) -> bool:
        reply = await self.call(self.stub.SetSharing, pb.SetSharingRequest(sharing=sharing),
                                timeout=timeout)
        return reply.sharing

    async def set_radius(self, radius_m: float, *, timeout: float | None = None) -> float:
        reply = await self.call(self.stub.SetRadius, pb.SetRadiusRequest(radius_meters=radius_m),
                                timeout=timeout)
        return reply.radius_meters

    async def settings(self, *, timeout: float | None = None) -> pb.GetSettingsResponse:
        return await self.call(self.stub.GetSettings, pb.GetSettingsRequest(), timeout=timeout)

    async def nearby(self, page_size: int = 0, page_token: str = "", *,
                     timeout: float | None = None) -> pb.ListNearbyFriendsResponse:
        return await self.call(self.stub.ListNearbyFriends, pb.ListNearbyFriendsRequest(
            page_size=page_size, page_token=page_token), timeout=timeout)

    def live(self, latitude: float, longitude: float, *, reconnect: bool = True,
             max_backoff: float = 5.0, max_rejections: int = DEFAULT_MAX_REJECTIONS
             ) -> LiveSession:
        """A live stream (no deadline: it lasts until closed), opened by ``async with``."""
        return LiveSession(self, latitude, longitude, reconnect=reconnect,
                           max_backoff=max_backoff, max_rejections=max_rejections)


class SessionState(enum.Enum):
    """Where a live session is; every public call of :class:`LiveSession` checks it."""

    IDLE = "idle"                  # made, not opened: update() only sets the Hello's location
    CONNECTING = "connecting"      # the first stream is being opened, no snapshot yet
    CONNECTED = "connected"        # a stream is up and its snapshot has arrived
    RECONNECTING = "reconnecting"  # the stream was lost: backing off, then opening another
    ENDED = "ended"                # the stream ended for good; what arrived can still be read
    CLOSED = "closed"              # close() was called: nothing more is sent or read


@dataclass(frozen=True, slots=True)
class LiveStats:
    """Counts of a live session's events, one per friend (FriendUpdates unpacked).

    ``received == delivered + coalesced + dropped + pending`` until the session is closed.
    """

    received: int   # events that arrived on the stream
    delivered: int  # events handed to the reader
    coalesced: int  # superseded unread: by a newer state of the friend, or a newer Snapshot
    dropped: int    # UpdateRejected replies (or unknown events) over ``max_rejections``
    pending: int    # waiting to be read


class _NearbyView(Mapping[str, pb.NearbyFriend]):
    """LiveEvents.nearby: read-only, and current however long it is kept (a batch read in
    place is applied to the view when the view is looked at)."""

    __slots__ = ("_events",)

    def __init__(self, events: LiveEvents) -> None:
        self._events = events

    def _latest(self) -> dict[str, pb.NearbyFriend]:
        self._events._settle()
        return self._events._latest

    def __getitem__(self, user_id: str) -> pb.NearbyFriend:
        return self._latest()[user_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._latest())

    def __len__(self) -> int:
        return len(self._latest())


def _entries(updates: pb.FriendUpdates) -> Iterator[pb.FriendGone | pb.NearbyFriend]:
    """A batch's changes in the order they are read: gone, then nearby, then moved (the
    server names a friend at most once per batch: it coalesces per friend)."""
    yield from updates.gone
    for nearby in updates.nearby:
        yield nearby.friend
    for moved in updates.moved:
        yield moved.friend


class LiveEvents:
    """What a live stream received and its reader has not read yet, in bounded memory.

    Pending friend changes are kept as the newest state per friend, in the order of each
    friend's first unread change; when read, a state becomes FriendNearby or FriendMoved
    depending on whether the reader has been shown that friend, and a FriendGone for a
    friend the reader was never shown is left out. So a reader that falls behind sees each
    friend's newest position, never an old one after a new one, and reading everything
    pending leaves it with the same view as reading every event would have. A Snapshot
    replaces the pending snapshot and friend changes before it. Replies that belong to no
    friend (UpdateRejected) wait in arrival order, at most ``max_rejections``; more are
    dropped and counted. Reading order: snapshot, those replies, friend changes.

    While the reader keeps up (nothing pending when a FriendUpdates batch arrives), the
    batch is read where it lies, one change per read, with no per-friend bookkeeping; if
    anything arrives before it is read to the end, what is left of it joins the pending
    changes, with the same result as above.
    """

    def __init__(self, max_rejections: int = DEFAULT_MAX_REJECTIONS) -> None:
        if max_rejections < 0:
            raise ValueError(f"max_rejections must be >= 0, not {max_rejections}")
        self.max_rejections = max_rejections
        self._snapshot: pb.Snapshot | None = None
        self._snapshot_ids: set[str] = set()           # the friends in the pending snapshot
        self._replies: deque[pb.ConnectResponse] = deque()
        # friend -> its pending change, made ready to read, and whether it is a FriendNearby
        self._friends: OrderedDict[str, tuple[pb.ConnectResponse, bool]] = OrderedDict()
        self._shown: set[str] = set()                # friends the reader has been shown
        self._latest: dict[str, pb.NearbyFriend] = {}  # friends in view per what arrived
        # a FriendUpdates batch that arrived with nothing else pending, read in place
        self._lane: Iterator[pb.FriendGone | pb.NearbyFriend] | None = None
        self._lane_left = 0
        self._view = _NearbyView(self)
        self._changed = asyncio.Event()
        self._ended = False
        self._error: Exception | None = None  # what ended the stream, if it failed
        self._closed = False
        self._received = self._delivered = self._coalesced = self._dropped = 0

    # -- the stream's side ---------------------------------------------------------

    def put(self, response: pb.ConnectResponse) -> None:
        """Take one message from the stream (a FriendUpdates batch counts per friend)."""
        if self._closed or self._ended:
            return
        kind = response.WhichOneof("event")
        if kind == "friend_updates" and (self._lane is None and self._snapshot is None
                                         and not self._friends and not self._replies):
            # the reader keeps up: the batch is read in place, each change made at its turn
            updates = response.friend_updates
            count = len(updates.gone) + len(updates.nearby) + len(updates.moved)
            if count:
                self._lane, self._lane_left = _entries(updates), count
                self._received += count
                self._changed.set()
            return
        self._settle()
        if kind == "friend_updates":
            updates = response.friend_updates
            if updates.gone:
                for gone in updates.gone:
                    self._friend_gone(gone)
            seen = self._friend_seen
            for nearby in updates.nearby:
                seen(nearby.friend)
            for moved in updates.moved:
                seen(moved.friend)
        elif kind == "friend_nearby":
            self._friend_seen(response.friend_nearby.friend)
        elif kind == "friend_moved":
            self._friend_seen(response.friend_moved.friend)
        elif kind == "friend_gone":
            self._friend_gone(response.friend_gone)
        elif kind == "snapshot":
            self._received += 1
            self._coalesced += len(self._friends) + (self._snapshot is not None)
            self._friends.clear()
            self._snapshot = response.snapshot
            self._snapshot_ids = {f.user_id for f in response.snapshot.friends}
            self._latest.clear()
            self._latest.update((f.user_id, f) for f in response.snapshot.friends)
        else:  # update_rejected, or an event newer than this SDK: passed on as it came
            self._received += 1
            if len(self._replies) >= self.max_rejections:
                self._dropped += 1
            else:
                self._replies.append(response)
        self._changed.set()

    def end(self, error: Exception | None) -> None:
        """The stream ended for good: readers get what is pending, then ``error``."""
        if not self._ended:
            self._ended, self._error = True, error
            self._changed.set()

    def close(self) -> None:
        """Let go of everything pending; readers, waiting or not, get SessionClosedError."""
        self._closed = True
        self._snapshot = None
        self._snapshot_ids = set()
        self._replies.clear()
        self._friends.clear()
        self._latest.clear()
        self._lane, self._lane_left = None, 0
        self._changed.set()

    # What the reader will have been shown when it reaches a friend's change depends only
    # on the snapshot and changes read before it, so the change's kind is known now: moved
    # for a friend shown, nearby for one not (so it stays nearby when it moves again
    # unread), and a gone for a friend not shown is nothing to say. Changes are copied out
    # of their message: a part of a FriendUpdates batch would keep the whole batch alive.

    def _settle(self) -> None:
        """Something else arrived while a batch is read in place: what is left of it joins
        the pending changes (as if it had been put now: no friend of it was read since)."""
        lane = self._lane
        if lane is None:
            return
        self._lane = None
        self._received -= self._lane_left  # counted again by the slow path
        self._lane_left = 0
        for entry in lane:
            if isinstance(entry, pb.FriendGone):
                self._friend_gone(entry)
            else:
                self._friend_seen(entry)

    def _lane_event(self, entry: pb.FriendGone | pb.NearbyFriend) -> pb.ConnectResponse | None:
        """The change of a batch entry read in place: nothing else is pending, so what the
        reader has been shown decides its kind now, as _friend_seen/_friend_gone would."""
        user_id = entry.user_id
        change = pb.ConnectResponse()
        if isinstance(entry, pb.FriendGone):
            self._latest.pop(user_id, None)
            if user_id not in self._shown:
                self._coalesced += 1  # gone before it was ever shown: nothing to say
                return None
            change.friend_gone.CopyFrom(entry)
            self._shown.discard(user_id)
        else:
            is_nearby = user_id not in self._shown
            own = (change.friend_nearby if is_nearby else change.friend_moved).friend
            own.CopyFrom(entry)
            self._latest[user_id] = own
            if is_nearby:
                self._shown.add(user_id)
        self._delivered += 1
        return change

    def _friend_seen(self, friend: pb.NearbyFriend) -> None:
        # the hot path of every live stream: _pend and _shown_at_its_turn, inlined
        user_id = friend.user_id
        change = pb.ConnectResponse()
        if self._snapshot is not None:
            is_nearby = user_id not in self._snapshot_ids
        else:
            is_nearby = user_id not in self._shown
        own = (change.friend_nearby if is_nearby else change.friend_moved).friend
        own.CopyFrom(friend)
        self._latest[user_id] = own
        self._received += 1
        friends = self._friends
        if user_id in friends:
            self._coalesced += 1
        friends[user_id] = (change, is_nearby)  # in place: keeps the friend's turn

    def _friend_gone(self, gone: pb.FriendGone) -> None:
        user_id = gone.user_id
        self._latest.pop(user_id, None)
        if self._shown_at_its_turn(user_id):
            change = pb.ConnectResponse()
            change.friend_gone.CopyFrom(gone)
            self._pend(user_id, (change, False))
            return
        self._received += 1
        self._coalesced += 1 + (self._friends.pop(user_id, None) is not None)

    def _pend(self, user_id: str, change: tuple[pb.ConnectResponse, bool]) -> None:
        self._received += 1
        if user_id in self._friends:
            self._coalesced += 1
        self._friends[user_id] = change  # in place: keeps the friend's turn

    def _shown_at_its_turn(self, user_id: str) -> bool:
        """Whether the reader will have been shown this friend when it reads its change."""
        if self._snapshot is not None:  # read first, and it sets what the reader is shown
            return user_id in self._snapshot_ids
        return user_id in self._shown

    # -- the reader's side ---------------------------------------------------------

    def __len__(self) -> int:
        return ((self._snapshot is not None) + len(self._replies) + len(self._friends)
                + self._lane_left)

    @property
    def stats(self) -> LiveStats:
        return LiveStats(self._received, self._delivered, self._coalesced, self._dropped,
                         len(self))

    @property
    def nearby(self) -> Mapping[str, pb.NearbyFriend]:
        """Friends in view as of the newest event that arrived, read or not (a live view)."""
        return self._view

    def _take(self) -> pb.ConnectResponse | None:
        lane = self._lane
        if lane is not None:  # then nothing else is pending (put settles it first)
            for entry in lane:
                self._lane_left -= 1
                event = self._lane_event(entry)
                if event is not None:
                    if not self._lane_left:
                        self._lane = None
                    return event
            self._lane, self._lane_left = None, 0
        if self._snapshot is not None:
            snapshot, self._snapshot = self._snapshot, None
            self._shown, self._snapshot_ids = self._snapshot_ids, set()
            self._delivered += 1
            return pb.ConnectResponse(snapshot=snapshot)
        if self._replies:
            self._delivered += 1
            return self._replies.popleft()
        if not self._friends:
            return None
        user_id, (change, is_nearby) = self._friends.popitem(last=False)
        self._delivered += 1
        if is_nearby:
            self._shown.add(user_id)
        elif change.HasField("friend_gone"):
            self._shown.discard(user_id)
        return change

    async def next_item(self) -> pb.ConnectResponse | Exception | None:
        """The next event; then, once the stream ended, its error (None: it ended cleanly).

        Waits while nothing is pending. Raises SessionClosedError after ``close()``.
        """
        while True:
            if self._closed:
                raise SessionClosedError("the live session is closed")
            item = self._take()
            if item is not None:
                return item
            if self._ended:
                return self._error
            self._changed.clear()
            await self._changed.wait()

    async def get(self) -> pb.ConnectResponse | Exception:
        """Like ``asyncio.Queue.get``: the next event, or what ended the stream, as a value."""
        if not self._closed:  # the common case, without a second coroutine
            item = self._take()
            if item is not None:
                return item
        ended = await self.next_item()
        return SessionClosedError("the server ended the live stream") if ended is None else ended


class LiveSession:
    """One logical live stream; survives server restarts when ``reconnect`` is on."""

    def __init__(self, client: PresenceClient, latitude: float, longitude: float, *,
                 reconnect: bool, max_backoff: float,
                 max_rejections: int = DEFAULT_MAX_REJECTIONS) -> None:
        self.client = client
        self.location = (latitude, longitude, time.time())
        self.reconnect = reconnect
        self.max_backoff = max_backoff
        self.reconnects = 0
        self.events = LiveEvents(max_rejections)
        # (request, superseded by the next Hello): update()s are, raw send()s are not
        self._outgoing: asyncio.Queue[tuple[pb.ConnectRequest, bool]] = asyncio.Queue(
            maxsize=1024)
        self._task: asyncio.Task[None] | None = None
        self._call: grpc.aio.StreamStreamCall[pb.ConnectRequest, pb.ConnectResponse] | None = None
        self._state = SessionState.IDLE
        self._failure: Exception | None = None
        self.connected = asyncio.Event()
        self._sequence = 0
        # sequence -> the update() waiting for its answer, on the stream it was sent on
        self._acks: dict[int, asyncio.Future[None]] = {}

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def stats(self) -> LiveStats:
        return self.events.stats

    @property
    def nearby(self) -> Mapping[str, pb.NearbyFriend]:
        """Friends in view now (newest position each), whether their events were read or not."""
        return self.events.nearby

    async def __aenter__(self) -> LiveSession:
        if self._state is not SessionState.IDLE:
            self._check_sendable()
            raise RuntimeError("this live session is already open")
        self._state = SessionState.CONNECTING
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """End the stream and let go of pending events; safe to call again."""
        if self._state is SessionState.CLOSED:
            return
        self._state = SessionState.CLOSED
        self.connected.clear()
        self._unanswered("the live session closed")
        self.events.close()
        while not self._outgoing.empty():  # unblocks update()s waiting for room
            self._outgoing.get_nowait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _check_sendable(self) -> None:
        if self._state is SessionState.CLOSED:
            raise SessionClosedError("the live session is closed")
        if self._state is SessionState.ENDED:
            raise SessionClosedError(f"the live stream ended: {self._failure or 'by the server'}"
                                     ) from self._failure

    async def update(self, latitude: float, longitude: float, t: float | None = None, *,
                     acknowledged: bool = False, ack_timeout: float = 10.0) -> None:
        """Send a new location (remembered for the Hello of the next reconnect); with
        ``acknowledged``, wait until the server has kept it (see the module's text)."""
        self._check_sendable()
        sequence = 0
        answered: asyncio.Future[None] | None = None
        if acknowledged:
            # sent on a stream that is up: one queued while (re)connecting would be
            # superseded by the Hello, which carries no sequence
            try:
                await asyncio.wait_for(self.connected.wait(), ack_timeout)
            except TimeoutError:
                raise UnavailableError(grpc.StatusCode.UNAVAILABLE,
                                       f"the live stream is not connected after {ack_timeout:g} "
                                       "s; the location update was not sent",
                                       reason="NOT_CONNECTED") from None
            self._check_sendable()
        self.location = (latitude, longitude, time.time() if t is None else t)
        if acknowledged:
            self._sequence += 1
            sequence = self._sequence
            answered = self._acks[sequence] = asyncio.get_running_loop().create_future()
        request = pb.ConnectRequest(location_update=pb.LocationUpdate(
            location=LatLng(latitude=latitude, longitude=longitude),
            time=_now_ts(self.location[2]), sequence=sequence))
        if answered is None:
            await self._outgoing.put((request, True))
            return
        try:
            await self._outgoing.put((request, True))
            await asyncio.wait_for(asyncio.shield(answered), ack_timeout)
        except TimeoutError:
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE,
                                   f"no answer to the location update within {ack_timeout:g} s"
                                   "; it may or may not have been kept",
                                   reason="NOT_ACKNOWLEDGED") from None
        finally:
            self._acks.pop(sequence, None)

    def _answered(self, response: pb.ConnectResponse) -> bool:
        """Settle the update()s an UpdateAccepted or a numbered UpdateRejected answers;
        True if the response was only that (an acceptance)."""
        kind = response.WhichOneof("event")
        if kind == "update_accepted":
            for sequence in response.update_accepted.sequences:
                waiting = self._acks.get(sequence)
                if waiting is not None and not waiting.done():
                    waiting.set_result(None)
            return True
        if kind == "update_rejected" and response.update_rejected.sequence:
            r = response.update_rejected
            waiting = self._acks.get(r.sequence)
            if waiting is not None and not waiting.done():
                waiting.set_exception(InvalidArgumentError(
                    grpc.StatusCode.INVALID_ARGUMENT, r.message, reason=r.reason,
                    field=r.field))
        return False

    def _unanswered(self, why: str) -> None:
        """The stream ended: the updates sent on it that were not answered never will be."""
        for waiting in self._acks.values():
            if not waiting.done():
                waiting.set_exception(UnavailableError(
                    grpc.StatusCode.UNAVAILABLE, f"{why} before the location update was "
                    "answered; it may or may not have been kept", reason="NOT_ACKNOWLEDGED"))

    async def send(self, request: pb.ConnectRequest) -> None:
        """Send a raw message (tests use it to send invalid updates)."""
        self._check_sendable()
        await self._outgoing.put((request, False))

    def __aiter__(self) -> AsyncIterator[pb.ConnectResponse]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[pb.ConnectResponse]:
        """Events until the stream ends cleanly; raises what ended it otherwise."""
        while True:
            item = await self.events.next_item()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    async def next(self, timeout: float = 10.0) -> pb.ConnectResponse:
        """The next event within ``timeout`` seconds (else TimeoutError)."""
        item = await asyncio.wait_for(self.events.next_item(), timeout)
        if item is None:
            raise SessionClosedError("the server ended the live stream")
        if isinstance(item, Exception):
            raise item
        return item

    # -- the stream ----------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._one_stream()
                self._finish(None)  # the server ended the stream cleanly
                return
            except grpc.aio.AioRpcError as exc:
                self.connected.clear()
                if not self.reconnect or exc.code() not in RECONNECT_CODES:
                    self._finish(from_rpc_error(exc))
                    return
            except Exception as exc:  # noqa: BLE001 - unexpected: the reader must hear of it
                self.connected.clear()
                self._finish(exc)
                return
            self.reconnects += 1
            self._state = SessionState.RECONNECTING
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.max_backoff)

    def _finish(self, error: Exception | None) -> None:
        if self._state is SessionState.CLOSED:
            return
        self._state = SessionState.ENDED
        self._failure = error
        self.events.end(error)

    def _drop_superseded_updates(self) -> None:
        """Queued location updates are older than the Hello about to be sent: drop them."""
        kept = []
        while not self._outgoing.empty():
            item = self._outgoing.get_nowait()
            if not item[1]:
                kept.append(item)
                continue
            waiting = self._acks.get(item[0].location_update.sequence)
            if waiting is not None and not waiting.done():  # never sent: never answered
                waiting.set_exception(UnavailableError(
                    grpc.StatusCode.UNAVAILABLE, "the stream reconnected before the location "
                    "update was sent; the Hello carries the latest location",
                    reason="NOT_ACKNOWLEDGED"))
        for item in kept:
            self._outgoing.put_nowait(item)

    async def _one_stream(self) -> None:
        call = self.client.stub.Connect(metadata=self.client.metadata())
        self._call = call
        self._drop_superseded_updates()
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
                if not isinstance(response, pb.ConnectResponse):  # grpc.aio.EOF
                    await call.wait_for_connection()
                    code = await call.code()
                    if code != grpc.StatusCode.OK:
                        raise grpc.aio.AioRpcError(code, await call.initial_metadata(),
                                                   await call.trailing_metadata(),
                                                   await call.details())
                    return
                if response.WhichOneof("event") == "snapshot":
                    self._state = SessionState.CONNECTED
                    self.connected.set()
                if self._answered(response):
                    continue  # an acceptance is for update(), not for the events
                self.events.put(response)
        finally:
            self._unanswered("the stream ended")
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            call.cancel()

    async def _write(self, call: grpc.aio.StreamStreamCall[pb.ConnectRequest,
                                                           pb.ConnectResponse]) -> None:
        while True:
            request, _ = await self._outgoing.get()
            try:
                await call.write(request)
            except Exception:  # noqa: BLE001 - the call ended; read() reports how
                return
