"""The SDK's live session against real presence servers: a slow reader stays bounded and
ends at each friend's newest position; a closed (or ended) session says so."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from pymongo import AsyncMongoClient

from geoplex.clients import ChannelOptions, GeoplexError, SessionClosedError
from geoplex.clients.errors import InvalidArgumentError, UnauthenticatedError, UnavailableError
from geoplex.infra.local import BackendUrls
from geoplex.clients.presence import LiveSession, PresenceClient, SessionState
from geoplex.presence.v1 import presence_pb2 as pb
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.type.v1.geo_pb2 import LatLng

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

pytestmark = pytest.mark.timeout(60)
HOME = (57.7089, 11.9746)  # Gothenburg
METRE = 1 / 111_194.93     # degrees of latitude


def presence_as(server: ServerProcess, user: str) -> PresenceClient:
    options = ChannelOptions(token=mint_token(DEV_SECRET, user), retry=False)
    return PresenceClient(server.address, options)


def at(metres: float) -> tuple[float, float]:
    """``metres`` north of HOME (south when negative)."""
    return HOME[0] + metres * METRE, HOME[1]


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``condition()`` holds (checked every few milliseconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def distances(live: LiveSession) -> dict[str, int]:
    return {user: round(f.distance_meters) for user, f in live.nearby.items()}


async def read_pending(live: LiveSession) -> list[pb.ConnectResponse]:
    return [await live.next() for _ in range(live.stats.pending)]


async def test_a_slow_reader_holds_one_change_per_friend_and_ends_at_each_newest_position(
        presence_pair):
    tag = uuid.uuid4().hex[:6]
    alice, bob, carol = (f"{name}-{tag}" for name in ("alice", "bob", "carol"))
    async with presence_as(presence_pair["a"], alice) as pa, \
            presence_as(presence_pair["b"], bob) as pbob, \
            presence_as(presence_pair["b"], carol) as pcarol:
        for presence in (pa, pbob, pcarol):
            await presence.set_sharing(True)
        await pa.add_friend(bob)
        await pa.add_friend(carol)
        async with pa.live(*HOME) as la, pbob.live(*at(10)) as lb, pcarol.live(*at(-10)) as lc:
            await until(lambda: distances(la) == {bob: 10, carol: 10})
            await read_pending(la)  # the reader has been shown both friends
            before = la.stats
            steps = 1500
            for n in range(1, steps + 1):  # both walk away while alice reads nothing
                await lb.update(*at(10 + n))
                await lc.update(*at(-10 - n))
                assert la.stats.pending <= 2  # one pending change per friend, at most
            await until(lambda: distances(la) == {bob: 10 + steps, carol: 10 + steps})
            stats = la.stats
            assert stats.pending <= 2
            read = await read_pending(la)
    assert sorted((e.WhichOneof("event"), e.friend_moved.friend.user_id,
                   round(e.friend_moved.friend.distance_meters)) for e in read) == \
        sorted(("friend_moved", user, 10 + steps) for user in (bob, carol))
    assert stats.received - before.received > len(read)  # more arrived than was read...
    assert stats.coalesced > before.coalesced  # ...and the rest is reported coalesced
    assert stats.dropped == 0
    assert stats.received == stats.delivered + stats.coalesced + stats.dropped + stats.pending


async def test_rejections_a_reader_leaves_unread_are_bounded_and_counted(presence_pair):
    loner = f"loner-{uuid.uuid4().hex[:6]}"
    async with presence_as(presence_pair["a"], loner) as presence:
        async with presence.live(*HOME, max_rejections=3) as live:
            assert (await live.next()).WhichOneof("event") == "snapshot"
            for n in range(8):
                await live.send(pb.ConnectRequest(location_update=pb.LocationUpdate(
                    location=LatLng(latitude=91 + n, longitude=0))))
            await until(lambda: live.stats.received == 1 + 8)
            assert live.stats.pending == 3 and live.stats.dropped == 5
            kept = await read_pending(live)
    assert [e.update_rejected.reason for e in kept] == ["INVALID_LOCATION"] * 3


async def test_sending_or_reading_after_close_raises_session_closed(presence_pair):
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    async with presence_as(presence_pair["a"], alice) as presence:
        live = presence.live(*HOME)
        async with live:
            assert (await live.next()).WhichOneof("event") == "snapshot"
            state = live.state  # a copy: mypy would keep live.state narrowed past the close
            assert state is SessionState.CONNECTED
            reader = asyncio.ensure_future(live.next(30))
        assert live.state is SessionState.CLOSED
        with pytest.raises(SessionClosedError):
            await reader
        with pytest.raises(SessionClosedError):
            await live.update(*at(5))
        with pytest.raises(SessionClosedError):
            await live.next()
        with pytest.raises(SessionClosedError) as err:
            async for _ in live:
                pass
        assert isinstance(err.value, GeoplexError)
        assert live.stats.pending == 0
        assert await presence.set_sharing(True) is True  # the client itself goes on


async def test_sending_after_the_stream_failed_raises_session_closed_with_the_cause(
        presence_pair):
    anonymous = PresenceClient(presence_pair["a"].address, ChannelOptions(retry=False))
    async with anonymous, anonymous.live(*HOME, reconnect=False) as live:
        with pytest.raises(UnauthenticatedError):
            await live.next()
        assert live.state is SessionState.ENDED
        with pytest.raises(SessionClosedError) as err:
            await live.update(*at(5))
        assert isinstance(err.value.__cause__, UnauthenticatedError)


async def history_of(server: ServerProcess, backends: BackendUrls, user: str) -> list[float]:
    """``user``'s history as metres north of HOME, oldest first."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(backends.mongo_uri)
    try:
        rows = client[server.env["GEOPLEX_PRESENCE_DATABASE"]]["location_history"]
        return [round((r["lat"] - HOME[0]) / METRE)
                async for r in rows.find({"user": user}).sort("t", 1)]
    finally:
        await client.close()


async def test_an_acknowledged_update_returns_once_it_is_in_the_history(
        presence_pair, backends: BackendUrls):
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"alice-{tag}", f"bob-{tag}"
    server = presence_pair["a"]
    async with presence_as(server, alice) as pa, presence_as(server, bob) as pbob:
        await pa.set_sharing(True)
        async with pa.live(*at(0)) as live:
            for n in range(1, 6):
                await live.update(*at(n), acknowledged=True)
            # read at once: each was in the history before its update() returned
            assert (await history_of(server, backends, alice))[-5:] == [1, 2, 3, 4, 5]
            # refused: raised, with the field and the reason, and nothing stored
            with pytest.raises(InvalidArgumentError) as refused:
                await live.update(*at(9), t=time.time() - 365 * 86_400, acknowledged=True)
            assert (refused.value.field, refused.value.reason) == ("location_update.time",
                                                                   "TIME_TOO_OLD")
            await live.update(*at(6), acknowledged=True)
            assert (await history_of(server, backends, alice))[-2:] == [5, 6]
        # not sharing: acknowledged once recorded (friends would see it), no history
        async with pbob.live(*at(0)) as live:
            await live.update(*at(1), acknowledged=True)
        assert await history_of(server, backends, bob) == []


async def test_an_acknowledged_update_on_a_stream_the_server_ended_raises_and_never_hangs(
        presence_pair):
    """The server stops: the update raises (UNAVAILABLE, or the session has ended) at once."""
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    server = presence_pair["b"]
    async with presence_as(server, alice) as pa:
        await pa.set_sharing(True)
        async with pa.live(*at(0), reconnect=False) as live:
            await live.update(*at(1), acknowledged=True)
            server.stop()
            try:
                with pytest.raises((UnavailableError, SessionClosedError)):
                    await live.update(*at(2), acknowledged=True, ack_timeout=30)
            finally:
                server.start()
