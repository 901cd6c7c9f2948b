"""Client keepalive pings the server accepts keep a quiet stream; too many end it.

Scaled down from the defaults (the SDK pings every 30 s, a server accepts one every
10 s): the SDK's channel pinging every second against a server that accepts one every
half second keeps a stream that carries nothing; pinging every second against one that
accepts a ping every 5 s is answered with GOAWAY too_many_pings, the failure the
defaults avoid. (The server forgives two early pings, so the third, at about 4 s, ends
the connection; gRPC's own default, a ping every 5 minutes, would end it too.)
"""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
from runtime_probe import MakeServer, ProbeStreams, chat_method

from geoplex.clients.channel import ChannelOptions, open_channel
from geoplex.servers._runtime.config import KeepaliveConfig

pytestmark = pytest.mark.slow

QUIET_SECONDS = 6.0  # six client pings: the third early one (the 4th ping) ends it


async def _quiet_stream_outcome(make_server: MakeServer, *, server_min_ping: float,
                                client_ping: float) -> grpc.StatusCode | None:
    """Hold a stream that carries nothing for QUIET_SECONDS; its code if it ended, else
    None (after checking it still carries a message)."""
    streams = ProbeStreams()
    server = await make_server(streams=streams, keepalive=KeepaliveConfig(
        time=60, timeout=10, min_ping_interval=server_min_ping))
    channel = open_channel(server.address, ChannelOptions(
        keepalive_time=client_ping, keepalive_timeout=5, retry=False))
    try:
        call = chat_method(channel)()  # Chat waits for a first request: quiet
        await asyncio.sleep(QUIET_SECONDS)
        if call.done():
            return await call.code()
        await call.write(b"hello")
        assert isinstance(await call.read(), bytes)
        call.cancel()
        return None
    finally:
        await channel.close()


async def test_client_pinging_no_more_often_than_the_server_accepts_keeps_a_quiet_stream(
        make_server: MakeServer) -> None:
    assert await _quiet_stream_outcome(make_server, server_min_ping=0.5,
                                       client_ping=1) is None


async def test_client_pinging_more_often_than_the_server_accepts_loses_its_stream(
        make_server: MakeServer) -> None:
    code = await _quiet_stream_outcome(make_server, server_min_ping=5, client_ping=1)

    assert code is grpc.StatusCode.UNAVAILABLE
