"""Presence contract tests: live streams across two server processes on real Redis/MongoDB."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
    from_rpc_error,
)
from geoplex.clients.presence import LiveSession, PresenceClient
from geoplex.presence.v1 import presence_pb2 as pb
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.type.v1.geo_pb2 import LatLng
from google.protobuf.timestamp_pb2 import Timestamp
from presence_servers import presence_env

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

pytestmark = pytest.mark.timeout(60)
HOME = (57.7089, 11.9746)  # Gothenburg


def users(*names: str) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"{n}-{tag}" for n in names]


def client(server: ServerProcess, user: str) -> PresenceClient:
    return PresenceClient(server.address, ChannelOptions(token=mint_token(DEV_SECRET, user),
                                                         retry=False))


def north(metres: float) -> tuple[float, float]:
    """A point ``metres`` due north of HOME."""
    return HOME[0] + metres / 111_194.93, HOME[1]


async def next_kind(live: LiveSession, kind: str, timeout: float = 10.0) -> pb.ConnectResponse:
    deadline = time.monotonic() + timeout
    while True:
        event = await live.next(max(0.05, deadline - time.monotonic()))
        if event.WhichOneof("event") == kind:
            return event


async def sees(live: LiveSession, user: str, timeout: float = 10.0) -> pb.NearbyFriend:
    """Wait until ``user`` is shown: in a snapshot or as FriendNearby (streams open concurrently)."""
    deadline = time.monotonic() + timeout
    while True:
        event = await live.next(max(0.05, deadline - time.monotonic()))
        kind = event.WhichOneof("event")
        if kind == "snapshot":
            for friend in event.snapshot.friends:
                if friend.user_id == user:
                    return friend
        elif kind == "friend_nearby" and event.friend_nearby.friend.user_id == user:
            return event.friend_nearby.friend


async def no_event(live: LiveSession, within: float = 0.5) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await live.next(within)


async def moved_to(live: LiveSession, metres: float, timeout: float = 10.0) -> None:
    """Wait for a FriendMoved to ``metres`` away (one sent before may still be on its way)."""
    deadline = time.monotonic() + timeout
    while True:
        moved = await next_kind(live, "friend_moved", max(0.05, deadline - time.monotonic()))
        if moved.friend_moved.friend.distance_meters == pytest.approx(metres, abs=1):
            return


def stamped(lat: float, lon: float, t: float) -> pb.ConnectRequest:
    seconds = int(t)
    return pb.ConnectRequest(location_update=pb.LocationUpdate(
        location=LatLng(latitude=lat, longitude=lon),
        time=Timestamp(seconds=seconds, nanos=int((t - seconds) * 1e9))))


async def befriend_and_share(pa: PresenceClient, pb_: PresenceClient, b_id: str) -> None:
    await pa.set_sharing(True)
    await pb_.set_sharing(True)
    await pa.add_friend(b_id)


@contextlib.asynccontextmanager
async def streaming_friends(
        server_a: ServerProcess, server_b: ServerProcess, metres: float,
) -> AsyncIterator[tuple[str, str, PresenceClient, PresenceClient, LiveSession, LiveSession]]:
    """alice (on server_a, at HOME) and bob (on server_b, ``metres`` north): friends,
    sharing, both streaming, each already shown to the other."""
    alice, bob = users("alice", "bob")
    async with client(server_a, alice) as pa, client(server_b, bob) as pbob:
        await befriend_and_share(pa, pbob, bob)
        async with pa.live(*HOME) as la, pbob.live(*north(metres)) as lb:
            await sees(la, bob)
            await sees(lb, alice)
            yield alice, bob, pa, pbob, la, lb


async def test_friend_on_the_other_server_sees_each_update(presence_pair):
    alice, bob = users("alice", "bob")
    async with client(presence_pair["a"], alice) as pa, client(presence_pair["b"], bob) as pbob:
        await befriend_and_share(pa, pbob, bob)
        async with pa.live(*HOME) as la:
            assert (await la.next()).snapshot.friends == []
            async with pbob.live(*north(1000)) as lb:
                snap = await lb.next()
                assert [f.user_id for f in snap.snapshot.friends] == [alice]
                near = await next_kind(la, "friend_nearby")
                assert near.friend_nearby.friend.user_id == bob
                assert near.friend_nearby.friend.distance_meters == pytest.approx(1000, abs=1)
                sent = time.time()
                await lb.update(*north(2500))
                moved = await next_kind(la, "friend_moved")
                friend = moved.friend_moved.friend
                assert friend.distance_meters == pytest.approx(2500, abs=1)
                assert friend.update_time.seconds + friend.update_time.nanos / 1e9 == \
                    pytest.approx(sent, abs=1.0)
            gone = await next_kind(la, "friend_gone")
            assert gone.friend_gone.reason == pb.GONE_REASON_DISCONNECTED


async def test_radius_boundary_from_both_sides(presence_pair):
    alice, bob = users("alice", "bob")
    async with client(presence_pair["a"], alice) as pa, client(presence_pair["b"], bob) as pbob:
        await befriend_and_share(pa, pbob, bob)
        assert await pa.set_radius(1000) == 1000
        async with pa.live(*HOME) as la, pbob.live(*north(990)) as lb:
            await sees(la, bob)
            await sees(lb, alice)
            await lb.update(*north(1010))  # friend steps out
            gone = await next_kind(la, "friend_gone")
            assert gone.friend_gone.reason == pb.GONE_REASON_LEFT_RADIUS
            await lb.update(*north(995))  # and back in
            assert (await next_kind(la, "friend_nearby")).friend_nearby.friend.user_id == bob
            await la.update(HOME[0] - 20 / 111_194.93, HOME[1])  # alice steps away: 1015 m
            gone = await next_kind(la, "friend_gone")
            assert gone.friend_gone.reason == pb.GONE_REASON_LEFT_RADIUS
            # bob (radius 5 miles) still sees alice the whole time
            seen = [e async for e in _drain(lb)]
            assert all(e.WhichOneof("event") != "friend_gone" for e in seen)


async def _drain(live: LiveSession, within: float = 0.3) -> AsyncIterator[pb.ConnectResponse]:
    while True:
        try:
            yield await live.next(within)
        except asyncio.TimeoutError:
            return


async def test_unfriend_removes_both_at_once(presence_pair):
    async with streaming_friends(presence_pair["a"], presence_pair["b"], 100) as (
            alice, bob, pa, pbob, la, lb):
        await pbob.remove_friend(alice)
        assert (await next_kind(la, "friend_gone")).friend_gone.reason == \
            pb.GONE_REASON_UNFRIENDED
        assert (await next_kind(lb, "friend_gone")).friend_gone.reason == \
            pb.GONE_REASON_UNFRIENDED
        await lb.update(*north(120))
        await no_event(la)
        with pytest.raises(NotFoundError):
            await pbob.remove_friend(alice)
        assert (await pa.list_friends()).user_ids == []


async def test_adding_a_friend_sends_their_latest_location_at_once(presence_pair):
    alice, bob = users("alice", "bob")
    async with client(presence_pair["a"], alice) as pa, client(presence_pair["b"], bob) as pbob:
        await pa.set_sharing(True)
        await pbob.set_sharing(True)
        async with pa.live(*HOME) as la, pbob.live(*north(300)) as lb:
            await la.next()
            await lb.next()
            await pa.add_friend(bob)
            near = await next_kind(la, "friend_nearby")
            assert near.friend_nearby.friend.distance_meters == pytest.approx(300, abs=1)
            assert (await next_kind(lb, "friend_nearby")).friend_nearby.friend.user_id == alice


async def test_sharing_off_removes_the_user_from_every_view(presence_pair):
    async with streaming_friends(presence_pair["a"], presence_pair["b"], 200) as (
            alice, bob, pa, pbob, la, lb):
        assert [f.user_id for f in (await pa.nearby()).friends] == [bob]
        assert await pbob.set_sharing(False) is False
        gone = await next_kind(la, "friend_gone")
        assert gone.friend_gone.reason == pb.GONE_REASON_STOPPED_SHARING
        await lb.update(*north(210))  # not shared any more
        await no_event(la)
        assert (await pa.nearby()).friends == []
        await pbob.set_sharing(True)  # visible again at once, at the latest location
        back = await next_kind(la, "friend_nearby")
        assert back.friend_nearby.friend.distance_meters == pytest.approx(210, abs=1)


async def test_inactive_friends_disappear(presence_fast_expiry):
    async with streaming_friends(presence_fast_expiry, presence_fast_expiry, 100) as (
            alice, bob, pa, pbob, la, lb):
        started = time.monotonic()
        gone = await next_kind(la, "friend_gone", timeout=10)  # bob is silent
        assert gone.friend_gone.reason == pb.GONE_REASON_INACTIVE
        assert time.monotonic() - started >= 1.0
        await lb.update(*north(150))  # active again
        assert (await next_kind(la, "friend_nearby")).friend_nearby.friend.user_id == bob


async def test_slow_consumer_gets_the_newest_location_not_a_backlog(presence_pair):
    async with streaming_friends(presence_pair["a"], presence_pair["b"], 10) as (
            alice, bob, pa, pbob, la, lb):
        count = 3000
        for n in range(count):
            await lb.update(*north(10 + n))  # bob walks 3 km while alice reads nothing
        await asyncio.sleep(2.0)
        received = [e async for e in _drain(la, within=1.0)]
    moves = [e.friend_moved.friend for e in received if e.WhichOneof("event") == "friend_moved"]
    assert moves and moves[-1].distance_meters == pytest.approx(10 + count - 1, abs=1)
    assert len(moves) < count  # coalesced: never a backlog of every update


async def test_a_client_that_stops_reading_and_vanishes_is_seen_to_go(presence_pair):
    """alice stops reading (the server's sends to her block on flow control), then her
    call is cancelled: bob still sees her go, promptly."""
    alice, bob = users("alice", "bob")
    async with client(presence_pair["a"], alice) as pa, client(presence_pair["b"], bob) as pbob:
        await befriend_and_share(pa, pbob, bob)
        call = pa.stub.Connect(metadata=pa.metadata())
        await call.write(pb.ConnectRequest(hello=pb.Hello(
            location=LatLng(latitude=HOME[0], longitude=HOME[1]))))
        first = await call.read()  # a ConnectResponse, or grpc.aio.EOF had the stream ended
        assert isinstance(first, pb.ConnectResponse) and first.WhichOneof("event") == "snapshot"
        async with pbob.live(*north(10)) as lb:
            await sees(lb, alice)
            for n in range(6000):  # far more than a stream's flow-control window holds
                await lb.update(*north(10 + n / 10))
            await asyncio.sleep(1.0)
            call.cancel()
            gone = await next_kind(lb, "friend_gone")
            assert gone.friend_gone.user_id == alice
            assert gone.friend_gone.reason == pb.GONE_REASON_DISCONNECTED


async def test_bad_updates_are_rejected_and_the_stream_goes_on(presence_pair):
    async with streaming_friends(presence_pair["a"], presence_pair["b"], 100) as (
            alice, bob, pa, pbob, la, lb):
        await lb.send(pb.ConnectRequest(location_update=pb.LocationUpdate(
            location=LatLng(latitude=91.5, longitude=0))))
        bad = (await next_kind(lb, "update_rejected")).update_rejected
        assert bad.field == "location_update.location.latitude"
        assert bad.reason == "INVALID_LOCATION" and "91.5" not in bad.message
        future = Timestamp(seconds=int(time.time()) + 3600)
        await lb.send(pb.ConnectRequest(location_update=pb.LocationUpdate(
            location=LatLng(latitude=HOME[0], longitude=HOME[1]), time=future)))
        late = (await next_kind(lb, "update_rejected")).update_rejected
        assert late.field == "location_update.time" and late.reason == "TIME_IN_FUTURE"
        await no_event(la)  # nothing rejected reached the friend
        await lb.update(*north(400))
        moved = await next_kind(la, "friend_moved")
        assert moved.friend_moved.friend.distance_meters == pytest.approx(400, abs=1)


async def test_calls_without_a_token_are_unauthenticated(presence_pair):
    anonymous = PresenceClient(presence_pair["a"].address, ChannelOptions(retry=False))
    async with anonymous:
        with pytest.raises(UnauthenticatedError):
            await anonymous.set_sharing(True)
        async with anonymous.live(*HOME, reconnect=False) as live:
            with pytest.raises(UnauthenticatedError):
                await live.next()


async def test_invalid_settings_and_friends_are_rejected(presence_pair):
    (alice,) = users("alice")
    async with client(presence_pair["a"], alice) as pa:
        for radius in (5, 1e9, float("nan")):
            with pytest.raises(InvalidArgumentError) as err:
                await pa.set_radius(radius)
            assert err.value.field == "radius_meters" and "100..50000" in err.value.message
        with pytest.raises(InvalidArgumentError) as me:
            await pa.add_friend(alice)
        with pytest.raises(InvalidArgumentError):
            await pa.add_friend("")
        with pytest.raises(FailedPreconditionError):
            await pa.nearby()  # no location yet
        settings = await pa.settings()
        assert settings.sharing is False and settings.radius_meters == pytest.approx(8046.72)
    assert me.value.reason == "SELF_FRIENDSHIP"


async def test_first_message_must_be_a_hello(presence_pair):
    (alice,) = users("alice")
    async with client(presence_pair["a"], alice) as pa:
        call = pa.stub.Connect(metadata=pa.metadata())
        await call.write(pb.ConnectRequest(location_update=pb.LocationUpdate(
            location=LatLng(latitude=1, longitude=1))))
        import grpc

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_nearby_and_friends_lists_page(presence_pair):
    me, *others = users("me", "f1", "f2", "f3", "f4", "f5")
    async with client(presence_pair["a"], me) as pme:
        await pme.set_sharing(True)
        for other in others:
            await pme.add_friend(other)
        lives = []
        for n, other in enumerate(others):
            c = client(presence_pair["b"], other)
            await c.set_sharing(True)
            lives.append((c, c.live(*north(100 * (n + 1)))))
        for c, live in lives:
            await live.__aenter__()
            await live.next()
        async with pme.live(*HOME) as lme:
            await lme.next()
            seen, token = [], ""
            while True:
                page = await pme.nearby(page_size=2, page_token=token)
                seen += [f.user_id for f in page.friends]
                token = page.next_page_token
                if not token:
                    break
            friends, token = [], ""
            while True:
                fpage = await pme.list_friends(page_size=2, page_token=token)
                friends += list(fpage.user_ids)
                token = fpage.next_page_token
                if not token:
                    break
        for c, live in lives:
            await live.close()
            await c.aclose()
    assert seen == others  # nearest first
    assert sorted(friends) == sorted(others)


async def test_server_shutdown_ends_streams_unavailable_and_clients_reconnect(presence_pair):
    alice, bob = users("alice", "bob")
    server = presence_pair["a"]
    async with client(server, alice) as pa, client(presence_pair["b"], bob) as pbob:
        await befriend_and_share(pa, pbob, bob)
        async with pa.live(*HOME) as la, pbob.live(*north(500)) as lb:
            await sees(la, bob)
            await sees(lb, alice)
            assert server.stop() == 0  # SIGTERM: streams end with UNAVAILABLE
            server.start()
            snap = await next_kind(la, "snapshot", timeout=20)  # reconnected by itself
            assert [f.user_id for f in snap.snapshot.friends] == [bob]
            assert la.reconnects >= 1
            await lb.update(*north(700))
            moved = await next_kind(la, "friend_moved")
            assert moved.friend_moved.friend.distance_meters == pytest.approx(700, abs=1)


def test_no_location_ever_reaches_a_server_log(presence_pair):
    text = "".join(s.log_path.read_text() for s in presence_pair.values())
    assert "rpc /geoplex.presence.v1.PresenceService/Connect" in text
    # A call's duration (ms=11.97) can spell a coordinate's digits by chance.
    text = re.sub(r"\bms=[0-9.]+", "ms=", text)
    for value in (f"{HOME[0]}", f"{HOME[1]}", "57.70", "11.97"):
        assert value not in text



async def test_a_second_device_keeps_the_user_visible_when_the_first_disconnects(presence_pair):
    alice, bob = users("alice", "bob")
    async with client(presence_pair["a"], alice) as pa, client(presence_pair["b"], bob) as pbob:
        await befriend_and_share(pa, pbob, bob)
        async with pa.live(*HOME) as la:
            await la.next()
            async with pbob.live(*north(300)) as phone:
                await sees(la, bob)
                async with client(presence_pair["a"], bob) as pbob2:
                    async with pbob2.live(*north(310)) as laptop:
                        await laptop.next()
                        await next_kind(la, "friend_moved")
                        await phone.close()  # one device goes away...
                        await no_event(la, within=1.0)  # ...bob is still shown
                        await laptop.update(*north(320))
                        moved = await next_kind(la, "friend_moved")
                        assert moved.friend_moved.friend.distance_meters == pytest.approx(320,
                                                                                        abs=1)
            gone = await next_kind(la, "friend_gone")  # the last device left
            assert gone.friend_gone.reason == pb.GONE_REASON_DISCONNECTED



@pytest.mark.parametrize("sent", ["hello", "nothing"])
async def test_shutdown_ends_a_stream_whose_client_keeps_its_side_open(backends, server_factory,
                                                                       sent):
    """A client that keeps its side of Connect open without sending (after its Hello, or
    before it): SIGTERM ends the stream with UNAVAILABLE at once, and the server exits long
    before its shutdown grace."""
    server = server_factory("presence", presence_env(
        backends, uuid.uuid4().hex[:6], GEOPLEX_SHUTDOWN_GRACE_SECONDS="20"), "presence-grace")
    (alice,) = users("alice")
    async with client(server, alice) as pa:
        call = pa.stub.Connect(metadata=pa.metadata())
        if sent == "hello":
            await call.write(pb.ConnectRequest(hello=pb.Hello(
                location=LatLng(latitude=HOME[0], longitude=HOME[1]))))
            first = await call.read()
            assert isinstance(first, pb.ConnectResponse)
            assert first.WhichOneof("event") == "snapshot"
        else:
            await call.wait_for_connection()
            await asyncio.sleep(0.5)  # the server is waiting for the Hello
        started = time.monotonic()
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))  # SIGTERM
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await stopping == 0
        assert time.monotonic() - started < 5.0  # the grace is 20 s


@pytest.mark.parametrize("location,field", [
    (LatLng(), "hello.location.latitude"),
    (LatLng(latitude=HOME[0]), "hello.location.longitude"),
    (LatLng(longitude=HOME[1]), "hello.location.latitude"),
    (None, "hello.location"),
], ids=["empty", "no-longitude", "no-latitude", "no-location"])
async def test_a_hello_without_a_location_is_refused_as_missing(presence_pair, location, field):
    """A location sent as {} (or with a coordinate unset) is missing, not (0, 0)."""
    (alice,) = users("alice")
    async with client(presence_pair["a"], alice) as pa:
        call = pa.stub.Connect(metadata=pa.metadata())
        hello = pb.Hello() if location is None else pb.Hello(location=location)
        await call.write(pb.ConnectRequest(hello=hello))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        error = from_rpc_error(err.value)
        assert error.field == field and error.reason == "REQUIRED_FIELD"
        with pytest.raises(FailedPreconditionError):
            await pa.nearby()  # nothing was recorded as the caller's location


async def test_an_update_without_a_location_is_rejected_as_missing(presence_pair):
    async with streaming_friends(presence_pair["a"], presence_pair["b"], 100) as (
            alice, bob, pa, pbob, la, lb):
        for location, field in ((LatLng(), "location_update.location.latitude"),
                                (LatLng(latitude=0.0), "location_update.location.longitude"),
                                (LatLng(longitude=0.0), "location_update.location.latitude"),
                                (None, "location_update.location")):
            update = pb.LocationUpdate() if location is None else \
                pb.LocationUpdate(location=location)
            await lb.send(pb.ConnectRequest(location_update=update))
            bad = (await next_kind(lb, "update_rejected")).update_rejected
            assert (bad.field, bad.reason) == (field, "REQUIRED_FIELD")
        await no_event(la)  # bob did not move to (0, 0)
        assert [round(f.distance_meters) for f in (await pa.nearby()).friends] == [100]
        await lb.update(*north(300))  # and the stream goes on
        await moved_to(la, 300)


async def test_an_update_older_than_the_latest_is_rejected_and_changes_nothing(presence_pair):
    async with streaming_friends(presence_pair["a"], presence_pair["b"], 100) as (
            alice, bob, pa, pbob, la, lb):
        now = time.time()
        await lb.send(stamped(*north(200), now))
        await moved_to(la, 200)
        for t, reason in ((now - 365 * 86_400, "TIME_TOO_OLD"),  # a year ago
                          (now - 5, "OUT_OF_ORDER")):            # before the latest
            await lb.send(stamped(*north(900), t))
            bad = (await next_kind(lb, "update_rejected")).update_rejected
            assert (bad.field, bad.reason) == ("location_update.time", reason)
            assert "57.7" not in bad.message and "11.97" not in bad.message
        await no_event(la)  # the friend was not moved back
        assert [round(f.distance_meters) for f in (await pa.nearby()).friends] == [200]
        await lb.send(stamped(*north(250), now))  # the same time as the latest: taken
        await moved_to(la, 250)
        await lb.update(*north(300))  # and the stream goes on
        await moved_to(la, 300)


async def test_an_update_older_than_another_devices_latest_is_rejected(presence_pair):
    """bob's phone streams to one server, his laptop to the other: the laptop's update stamped
    before the phone's latest one must not move bob back."""
    async with streaming_friends(presence_pair["a"], presence_pair["b"], 100) as (
            alice, bob, pa, pbob, la, lb):
        async with client(presence_pair["a"], bob) as pbob2:
            async with pbob2.live(*north(100)) as laptop:
                await laptop.next()
                await moved_to(la, 100)  # the laptop's Hello
                now = time.time()  # after the laptop's Hello
                await lb.send(stamped(*north(400), now + 10))  # the phone's newest
                await moved_to(la, 400)
                # newer than anything the laptop sent, older than the phone's newest
                await laptop.send(stamped(*north(900), now + 5))
                bad = (await next_kind(laptop, "update_rejected")).update_rejected
                assert (bad.field, bad.reason) == ("location_update.time", "OUT_OF_ORDER")
                await no_event(la)
                assert [round(f.distance_meters) for f in (await pa.nearby()).friends] == [400]


@pytest.mark.parametrize("age,reason", [(3600, "TIME_TOO_OLD"), (None, "OUT_OF_ORDER")])
async def test_a_stale_hello_opens_the_stream_but_does_not_move_the_user(presence_pair, age,
                                                                         reason):
    """bob's laptop says Hello with a location stamped an hour ago, or before his phone's
    newest: the laptop streams, told its location was not taken, and friends see the phone's."""
    async with streaming_friends(presence_pair["a"], presence_pair["b"], 100) as (
            alice, bob, pa, pbob, la, lb):
        now = time.time()
        await lb.send(stamped(*north(200), now + 10))  # the phone's newest
        await moved_to(la, 200)
        async with client(presence_pair["a"], bob) as pbob2:
            laptop = pbob2.live(*north(900))
            await laptop.update(*north(900), t=now - age if age else now + 5)  # the Hello's
            async with laptop:
                assert [f.user_id for f in (await laptop.next()).snapshot.friends] == [alice]
                bad = (await next_kind(laptop, "update_rejected")).update_rejected
                assert (bad.field, bad.reason) == ("hello.time", reason)
                await no_event(la)
                assert [round(f.distance_meters) for f in (await pa.nearby()).friends] == [200]
                await laptop.update(*north(300), t=now + 15)  # newer than the phone's: taken
                await moved_to(la, 300)
