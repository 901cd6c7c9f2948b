"""The only module that knows both presence protobuf messages and domain types."""

from __future__ import annotations

from geoplex.presence.v1 import presence_pb2 as pb
from geoplex.servers._runtime.errors import InvalidArgument

from .domain import Event, Fix, Rejection, Seen
from .ports import FixValidator

GONE = {1: pb.GONE_REASON_LEFT_RADIUS, 2: pb.GONE_REASON_INACTIVE,
        3: pb.GONE_REASON_STOPPED_SHARING, 4: pb.GONE_REASON_UNFRIENDED,
        5: pb.GONE_REASON_DISCONNECTED}


def fix_from(validator: FixValidator, message: pb.Hello | pb.LocationUpdate,
             field: str) -> Fix:
    """The fix a Hello or LocationUpdate carries. Its location and both coordinates are
    required: one not sent is missing, never 0 (``{}`` is not the point (0, 0))."""
    if not message.HasField("location"):
        raise _missing(f"{field}.location")
    if not message.location.HasField("latitude"):
        raise _missing(f"{field}.location.latitude")
    if not message.location.HasField("longitude"):
        raise _missing(f"{field}.location.longitude")
    t = None
    if message.HasField("time"):
        t = message.time.seconds + message.time.nanos / 1e9
    return validator.validate(message.location.latitude, message.location.longitude, t, field)


def _missing(field: str) -> InvalidArgument:
    return InvalidArgument(field, "is required", reason="REQUIRED_FIELD")


def friend(seen: Seen) -> pb.NearbyFriend:
    return _fill(pb.NearbyFriend(), seen)


def _fill(out: pb.NearbyFriend, seen: Seen) -> pb.NearbyFriend:
    """``seen`` written into ``out`` field by field: no nested message built and then
    copied in (a stream's batch adds one per friend; this is the per-event hot path)."""
    fix = seen.fix
    out.user_id = seen.user_id
    location = out.location
    location.latitude = fix.lat
    location.longitude = fix.lon
    out.distance_meters = seen.distance_m
    seconds = int(fix.t)
    update_time = out.update_time
    update_time.seconds = seconds
    update_time.nanos = int((fix.t - seconds) * 1e9)
    return out


def snapshot(friends: list[Seen], radius_m: float) -> pb.ConnectResponse:
    return pb.ConnectResponse(snapshot=pb.Snapshot(friends=[friend(s) for s in friends],
                                                   radius_meters=radius_m))


def event(e: Event) -> pb.ConnectResponse:
    if e.kind == "nearby":
        assert e.seen is not None
        return pb.ConnectResponse(friend_nearby=pb.FriendNearby(friend=friend(e.seen)))
    if e.kind == "moved":
        assert e.seen is not None
        return pb.ConnectResponse(friend_moved=pb.FriendMoved(friend=friend(e.seen)))
    assert e.reason is not None
    return pb.ConnectResponse(friend_gone=pb.FriendGone(user_id=e.user_id,
                                                        reason=GONE[e.reason.value]))


def batch(events: list[Event]) -> pb.ConnectResponse:
    """One message for many friends' changes (one per friend), or the single event itself."""
    if len(events) == 1:
        return event(events[0])
    updates = pb.FriendUpdates()
    for e in events:
        if e.kind == "nearby":
            assert e.seen is not None
            _fill(updates.nearby.add().friend, e.seen)
        elif e.kind == "moved":
            assert e.seen is not None
            _fill(updates.moved.add().friend, e.seen)
        else:
            assert e.reason is not None
            updates.gone.add(user_id=e.user_id, reason=GONE[e.reason.value])
    return pb.ConnectResponse(friend_updates=updates)


def rejection(r: Rejection) -> pb.ConnectResponse:
    return pb.ConnectResponse(update_rejected=pb.UpdateRejected(field=r.field, reason=r.reason,
                                                                message=r.message,
                                                                sequence=r.sequence))


def accepted(sequences: list[int]) -> pb.ConnectResponse:
    return pb.ConnectResponse(update_accepted=pb.UpdateAccepted(sequences=sequences))
