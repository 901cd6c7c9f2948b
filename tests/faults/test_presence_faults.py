"""Presence under faults: Redis killed with SIGKILL and restarted mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import UnavailableError
from geoplex.clients.presence import LiveSession, PresenceClient
from geoplex.infra.local import LocalInfra
from geoplex.presence.v1 import presence_pb2 as pb
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

pytestmark = pytest.mark.timeout(120)
HOME = (57.7089, 11.9746)


@pytest.fixture(scope="module")
def pair(own_infra: LocalInfra,
         server_factory: Callable[..., ServerProcess]) -> list[ServerProcess]:
    env = {**own_infra.urls.env(), "GEOPLEX_PRESENCE_PORT": "0", "GEOPLEX_LOG_LEVEL": "warning"}
    return [server_factory("presence", env, f"presence-fault-{n}")
            for n in range(2)]


async def events_for(live: LiveSession, timeout: float) -> AsyncIterator[pb.ConnectResponse]:
    """The stream's events for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            yield await live.next(0.5)
        except TimeoutError:
            continue


async def moved_to(live: LiveSession, user: str, metres: float, timeout: float) -> bool:
    async for event in events_for(live, timeout):
        kind = event.WhichOneof("event")
        friend = None
        if kind in ("friend_moved", "friend_nearby"):
            friend = getattr(event, kind).friend
        elif kind == "snapshot":
            friend = next((f for f in event.snapshot.friends if f.user_id == user), None)
        if friend is not None and abs(friend.distance_meters - metres) < 2:
            return True
    return False


@contextlib.asynccontextmanager
async def two_sharing_users(pair: list[ServerProcess], befriend: bool = True
                            ) -> AsyncIterator[tuple[str, str, PresenceClient, PresenceClient]]:
    """alice on the first server, a second user on the other; both share their location,
    and (``befriend``) they are friends."""
    tag = uuid.uuid4().hex[:6]
    alice, other = f"alice-{tag}", f"other-{tag}"
    options = lambda u: ChannelOptions(token=mint_token(DEV_SECRET, u), retry=False)  # noqa: E731
    async with PresenceClient(pair[0].address, options(alice)) as pa, \
            PresenceClient(pair[1].address, options(other)) as po:
        await pa.set_sharing(True)
        await po.set_sharing(True)
        if befriend:
            await pa.add_friend(other)
        yield alice, other, pa, po


async def test_streams_continue_after_redis_is_killed_and_restarted(own_infra, pair):
    async with two_sharing_users(pair) as (alice, bob, pa, pbob):
        async with pa.live(*HOME) as la, pbob.live(HOME[0] + 100 / 111_194.93, HOME[1]) as lb:
            assert await moved_to(la, bob, 100, 10)
            own_infra.restart("redis", kill=True)
            # the servers reconnect and resubscribe; a few updates may be lost meanwhile
            deadline = time.monotonic() + 30
            n = 0
            while True:
                n += 1
                await lb.update(HOME[0] + (200 + n) / 111_194.93, HOME[1])
                if await moved_to(la, bob, 200 + n, 1.0):
                    break
                assert time.monotonic() < deadline, "no update crossed after Redis restart"
            assert la.reconnects == 0 and lb.reconnects == 0  # same streams all along


async def test_changes_made_while_redis_is_down_reach_live_streams_when_it_is_back(
        own_infra, pair):
    """Friend changes made while Redis is down are stored but cannot be published; when the
    servers' subscriptions are back, they catch up from MongoDB."""
    async with two_sharing_users(pair, befriend=False) as (alice, carol, pa, pc):
        async with pa.live(*HOME) as la:
            assert (await la.next()).snapshot.friends == []
            redis = own_infra.procs["redis"]
            redis.kill()
            try:
                with pytest.raises(UnavailableError) as down:  # a read that needs Redis
                    await pa.nearby()
                assert down.value.reason == "LOCATIONS_UNAVAILABLE"
                await pa.add_friend(carol)  # stored; the live streams cannot hear of it now
            finally:
                redis.start()
                redis.wait_ready(30)
            async with pc.live(HOME[0] + 300 / 111_194.93, HOME[1]):
                assert await moved_to(la, carol, 300, 30), \
                    "alice's stream never learnt of the friend added while Redis was down"
                redis.kill()
                try:
                    await pa.remove_friend(carol)  # and one removed while it is down
                finally:
                    redis.start()
                    redis.wait_ready(30)
                assert await gone(la, carol, 30), \
                    "alice's stream still shows the friend removed while Redis was down"


async def test_a_stream_that_ended_while_redis_was_down_is_seen_to_go_when_it_is_back(
        own_infra, pair):
    async with two_sharing_users(pair) as (alice, bob, pa, pbob):
        async with pa.live(*HOME) as la:
            async with pbob.live(HOME[0] + 100 / 111_194.93, HOME[1]):
                assert await moved_to(la, bob, 100, 10)
                redis = own_infra.procs["redis"]
                redis.kill()
            # bob's stream ended while Redis was down, for longer than the client's retries:
            # his server could not tell anyone
            await asyncio.sleep(4)
            redis.start()
            redis.wait_ready(30)
            assert await gone(la, bob, 30, pb.GONE_REASON_DISCONNECTED), \
                "alice still shows bob, whose stream ended while Redis was down"


async def gone(live: LiveSession, user: str, timeout: float,
               reason: int = pb.GONE_REASON_UNFRIENDED) -> bool:
    async for event in events_for(live, timeout):
        if event.WhichOneof("event") == "friend_gone" and event.friend_gone.user_id == user:
            return event.friend_gone.reason == reason
    return False
