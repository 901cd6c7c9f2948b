"""The live session's pending events: bounded, newest state per friend, no server needed."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.clients.errors import GeoplexError, SessionClosedError, UnavailableError
from geoplex.clients.presence import LiveEvents, LiveStats
from geoplex.presence.v1 import presence_pb2 as pb


def friend(user_id: str, seq: int) -> pb.NearbyFriend:
    """A friend's position number ``seq`` (carried as its distance and update time)."""
    out = pb.NearbyFriend(user_id=user_id, distance_meters=float(seq))
    out.update_time.seconds = seq
    return out


def nearby(user_id: str, seq: int) -> pb.ConnectResponse:
    return pb.ConnectResponse(friend_nearby=pb.FriendNearby(friend=friend(user_id, seq)))


def moved(user_id: str, seq: int) -> pb.ConnectResponse:
    return pb.ConnectResponse(friend_moved=pb.FriendMoved(friend=friend(user_id, seq)))


def gone(user_id: str,
         reason: pb.GoneReason.ValueType = pb.GONE_REASON_LEFT_RADIUS) -> pb.ConnectResponse:
    return pb.ConnectResponse(friend_gone=pb.FriendGone(user_id=user_id, reason=reason))


def snapshot(*friends: pb.NearbyFriend) -> pb.ConnectResponse:
    return pb.ConnectResponse(snapshot=pb.Snapshot(friends=friends, radius_meters=1000))


def rejected(field: str) -> pb.ConnectResponse:
    return pb.ConnectResponse(update_rejected=pb.UpdateRejected(field=field))


def described(event: pb.ConnectResponse | Exception | None) -> tuple[object, ...]:
    assert isinstance(event, pb.ConnectResponse), event
    kind = event.WhichOneof("event")
    if kind == "snapshot":
        return (kind, tuple((f.user_id, int(f.distance_meters)) for f in event.snapshot.friends))
    if kind in ("friend_nearby", "friend_moved"):
        f = getattr(event, kind).friend
        return (kind, f.user_id, int(f.distance_meters))
    if kind == "friend_gone":
        return (kind, event.friend_gone.user_id)
    return (kind, event.update_rejected.field)


async def read_all(events: LiveEvents) -> list[tuple[object, ...]]:
    out = []
    while len(events):
        out.append(described(await events.next_item()))
    return out


def consistent(stats: LiveStats) -> bool:
    return stats.received == stats.delivered + stats.coalesced + stats.dropped + stats.pending


async def test_a_friend_who_moves_many_times_unread_is_one_event_at_the_newest_position():
    events = LiveEvents()
    events.put(snapshot(friend("bob", 0)))
    assert await read_all(events) == [("snapshot", (("bob", 0),))]
    for seq in range(1, 1001):
        events.put(moved("bob", seq))
    assert len(events) == 1
    assert await read_all(events) == [("friend_moved", "bob", 1000)]
    assert events.stats == LiveStats(received=1001, delivered=2, coalesced=999, dropped=0,
                                     pending=0)


async def test_a_friend_who_came_into_view_and_moved_unread_is_still_reported_nearby():
    events = LiveEvents()
    events.put(snapshot())
    events.put(nearby("bob", 1))
    events.put(moved("bob", 2))
    assert await read_all(events) == [("snapshot", ()), ("friend_nearby", "bob", 2)]


async def test_a_friend_who_came_and_went_unread_is_left_out_and_counted():
    events = LiveEvents()
    events.put(snapshot())
    await events.next_item()
    events.put(nearby("bob", 1))
    events.put(gone("bob"))
    assert await read_all(events) == []
    assert events.stats.coalesced == 2 and consistent(events.stats)


async def test_a_friend_shown_then_gone_and_back_unread_is_reported_moved():
    events = LiveEvents()
    events.put(snapshot(friend("bob", 1)))
    await events.next_item()
    events.put(gone("bob"))
    events.put(nearby("bob", 2))
    assert await read_all(events) == [("friend_moved", "bob", 2)]
    events.put(gone("bob", pb.GONE_REASON_STOPPED_SHARING))
    event = await events.next_item()
    assert isinstance(event, pb.ConnectResponse)
    assert event.friend_gone.reason == pb.GONE_REASON_STOPPED_SHARING


async def test_friends_are_read_in_the_order_of_their_first_unread_change():
    events = LiveEvents()
    events.put(snapshot(friend("bob", 0), friend("carol", 0)))
    await events.next_item()
    events.put(moved("bob", 1))
    events.put(moved("carol", 2))
    events.put(moved("bob", 3))
    assert await read_all(events) == [("friend_moved", "bob", 3), ("friend_moved", "carol", 2)]


async def test_a_new_snapshot_replaces_everything_pending_before_it():
    events = LiveEvents()
    events.put(snapshot(friend("bob", 0)))
    events.put(moved("bob", 1))
    events.put(nearby("carol", 2))
    events.put(snapshot(friend("carol", 3)))  # a reconnect: the new stream's view
    events.put(moved("carol", 4))
    assert await read_all(events) == [("snapshot", (("carol", 3),)),
                                      ("friend_moved", "carol", 4)]
    assert events.stats.coalesced == 3 and consistent(events.stats)


async def test_a_friend_updates_batch_counts_one_event_per_friend():
    events = LiveEvents()
    events.put(snapshot(friend("dave", 0)))
    await events.next_item()
    events.put(pb.ConnectResponse(friend_updates=pb.FriendUpdates(
        nearby=[pb.FriendNearby(friend=friend("bob", 1))],
        moved=[pb.FriendMoved(friend=friend("dave", 2))],
        gone=[pb.FriendGone(user_id="carol")])))
    assert await read_all(events) == [("friend_nearby", "bob", 1), ("friend_moved", "dave", 2)]
    assert events.stats.received == 4 and consistent(events.stats)


async def test_rejections_over_the_maximum_are_dropped_and_counted():
    events = LiveEvents(max_rejections=2)
    events.put(snapshot())
    for n in range(5):
        events.put(rejected(f"f{n}"))
    assert len(events) == 3
    assert await read_all(events) == [("snapshot", ()), ("update_rejected", "f0"),
                                      ("update_rejected", "f1")]
    assert events.stats.dropped == 3 and consistent(events.stats)
    with pytest.raises(ValueError):
        LiveEvents(max_rejections=-1)


async def test_nearby_is_the_newest_view_without_reading():
    events = LiveEvents()
    view = events.nearby
    events.put(snapshot(friend("bob", 0), friend("carol", 0)))
    events.put(moved("bob", 5))
    events.put(gone("carol"))
    assert {k: int(v.distance_meters) for k, v in view.items()} == {"bob": 5}
    events.put(snapshot(friend("dave", 6)))
    assert list(view) == ["dave"]  # the same live mapping, replaced in place


async def test_a_batch_read_in_place_keeps_the_view_current_and_coalesces_once_behind():
    events = LiveEvents()
    view = events.nearby
    events.put(snapshot(friend("bob", 0)))
    await events.next_item()  # caught up: the next batch is read where it lies
    events.put(pb.ConnectResponse(friend_updates=pb.FriendUpdates(
        gone=[pb.FriendGone(user_id="bob")],
        nearby=[pb.FriendNearby(friend=friend("carol", 1))],
        moved=[pb.FriendMoved(friend=friend("dave", 2))])))
    assert len(events) == 3
    assert described(await events.next_item()) == ("friend_gone", "bob")
    assert {k: int(v.distance_meters) for k, v in view.items()} == {"carol": 1, "dave": 2}
    events.put(moved("carol", 3))  # arrives while the batch is half read: joins the rest
    assert await read_all(events) == [("friend_nearby", "carol", 3), ("friend_nearby", "dave", 2)]
    assert events.stats == LiveStats(received=5, delivered=4, coalesced=1, dropped=0, pending=0)


async def test_what_ended_the_stream_comes_after_the_pending_events_and_stays():
    events = LiveEvents()
    events.put(snapshot())
    error = UnavailableError(__import__("grpc").StatusCode.UNAVAILABLE, "gone")
    events.end(error)
    events.put(nearby("bob", 1))  # nothing arrives after the end
    assert described(await events.next_item())[0] == "snapshot"
    assert await events.next_item() is error
    assert await events.get() is error  # as a value, like the queue it replaces


async def test_a_clean_end_is_none_for_readers_and_an_error_value_for_get():
    events = LiveEvents()
    events.end(None)
    assert await events.next_item() is None
    ended = await events.get()
    assert isinstance(ended, SessionClosedError)


async def test_reading_after_close_raises_and_wakes_a_waiting_reader():
    events = LiveEvents()
    waiting = asyncio.ensure_future(events.next_item())
    await asyncio.sleep(0)  # one turn of the loop: the reader is now waiting
    assert not waiting.done()
    events.put(snapshot(friend("bob", 1)))
    assert described(await waiting)[0] == "snapshot"  # a put wakes the reader
    waiting = asyncio.ensure_future(events.next_item())
    await asyncio.sleep(0)
    assert not waiting.done()
    events.close()
    with pytest.raises(SessionClosedError):
        await asyncio.wait_for(waiting, 1.0)
    events.put(moved("bob", 2))
    with pytest.raises(SessionClosedError) as err:
        await events.get()
    assert isinstance(err.value, GeoplexError)
    assert len(events) == 0 and dict(events.nearby) == {}


# -- against brute force -------------------------------------------------------------

FRIENDS = ("bob", "carol", "dave")
step = st.one_of(
    st.tuples(st.just("move"), st.sampled_from(FRIENDS)),
    st.tuples(st.just("leave"), st.sampled_from(FRIENDS)),
    st.tuples(st.just("batch"), st.lists(st.sampled_from(FRIENDS), max_size=3, unique=True)),
    st.just(("snapshot",)), st.just(("reject",)), st.just(("read",)))


def apply(view: dict[str, int], event: pb.ConnectResponse) -> None:
    """What an event does to a view of friend -> position number."""
    kind = event.WhichOneof("event")
    if kind == "snapshot":
        view.clear()
        view.update((f.user_id, int(f.distance_meters)) for f in event.snapshot.friends)
    elif kind in ("friend_nearby", "friend_moved"):
        f = getattr(event, kind).friend
        view[f.user_id] = int(f.distance_meters)
    elif kind == "friend_gone":
        view.pop(event.friend_gone.user_id, None)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=60), st.integers(min_value=0, max_value=3))
def test_a_reader_at_any_pace_ends_with_the_view_of_every_event(steps, max_rejections):
    asyncio.run(_run_steps(steps, max_rejections))


async def _run_steps(steps: list[tuple[object, ...]], max_rejections: int) -> None:
    events = LiveEvents(max_rejections)
    server: dict[str, int] = {}  # what the server has told the stream (its own view)
    received: dict[str, int] = {}  # every event applied: what the reader must end with
    reader: dict[str, int] = {}
    last_seen: dict[str, int] = {}
    seq = 0

    def change(user_id: str) -> pb.ConnectResponse:
        nonlocal seq
        seq += 1
        event = moved(user_id, seq) if user_id in server else nearby(user_id, seq)
        server[user_id] = seq
        return event

    def send(event: pb.ConnectResponse) -> None:
        events.put(event)
        if event.WhichOneof("event") == "friend_updates":
            u = event.friend_updates
            for single in [*(pb.ConnectResponse(friend_gone=g) for g in u.gone),
                           *(pb.ConnectResponse(friend_nearby=n) for n in u.nearby),
                           *(pb.ConnectResponse(friend_moved=m) for m in u.moved)]:
                apply(received, single)
        else:
            apply(received, event)

    async def read() -> None:
        event = await events.next_item()
        assert isinstance(event, pb.ConnectResponse)
        kind = event.WhichOneof("event")
        if kind == "friend_nearby":
            assert event.friend_nearby.friend.user_id not in reader
        elif kind == "friend_moved":
            assert event.friend_moved.friend.user_id in reader
        elif kind == "friend_gone":
            assert event.friend_gone.user_id in reader
        apply(reader, event)
        for user_id, position in reader.items():  # never an old position after a new one
            assert position >= last_seen.get(user_id, 0)
            last_seen[user_id] = position

    send(snapshot())
    for op in steps:
        if op[0] == "move":
            send(change(str(op[1])))
        elif op[0] == "leave" and op[1] in server:
            del server[str(op[1])]
            send(gone(str(op[1])))
        elif op[0] == "batch":
            assert isinstance(op[1], list)  # a batch step's friends
            batch = pb.FriendUpdates()
            for user_id in op[1]:
                one = change(user_id)
                if one.WhichOneof("event") == "friend_nearby":
                    batch.nearby.append(one.friend_nearby)
                else:
                    batch.moved.append(one.friend_moved)
            send(pb.ConnectResponse(friend_updates=batch))
        elif op[0] == "snapshot":
            send(snapshot(*(friend(u, p) for u, p in sorted(server.items()))))
        elif op[0] == "reject":
            send(rejected("location_update.location.latitude"))
        elif op[0] == "read" and len(events):
            await read()
        assert len(events) <= 1 + max_rejections + len(FRIENDS)
        assert consistent(events.stats)
        assert {u: int(f.distance_meters) for u, f in events.nearby.items()} == received
    while len(events):
        await read()
    assert reader == received
    assert consistent(events.stats)
