"""The gRPC-hop floor of the presence benchmark: the least a Python server can do.

``python -m bench._presence_floor --port P --redis URL --prefix NS --radius M``
runs one floor server process (start two on one port: SO_REUSEPORT). It does
what a presence server must and nothing else: one bidirectional gRPC stream per
user (grpc.aio, raw bytes, no protobuf, no auth, no interceptors); the first
message names the user and its friends (``<i`` user then ``<i`` friends), every
later one is a location (``<ddd`` lat, lon, time). Each location is one
``PUBLISH`` (``<iddd`` user, lat, lon, time) to the user's channel; one
multiplexed redis.asyncio PubSub per process is subscribed to the channels of
its users' friends; each message received goes, filtered by the same radius, to
a bounded queue per follower whose stream writes what is queued as one message
(``<iddd`` events concatenated; no timer, so no added wait). As ours, a user
who moved is also sent a *refresh* of every friend within the radius: each
friend's last fix seen on pub/sub (kept per process, by publisher) with user id
``-1 - friend``, all of them as one item on the mover's own queue, so about as
many events again as the fan-out. Both sides run on uvloop. It also answers
``MeshService/GetServerInfo`` with its pid, so the client can spread its
connections over the processes as the simulator does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import struct
import sys
from array import array
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import redis.asyncio as aioredis
import uvloop

from geoplex.mesh.v1 import mesh_pb2
from geoplex.servers._runtime.geo import haversine_m

SERVICE = "geoplex.bench.v1.PresenceFloor"
LIVE = f"/{SERVICE}/Live"
USER = struct.Struct("<i")
UPDATE = struct.Struct("<ddd")     # lat, lon, time (s)
EVENT = struct.Struct("<iddd")     # user, lat, lon, time (s)
QUEUE = 1024


class Floor:
    def __init__(self, redis_url: str, prefix: str, radius_m: float) -> None:
        self.prefix = prefix
        self.radius = radius_m
        # a pool that waits for a free connection (the default one raises when all are busy)
        self.pub = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=64))
        self.sub = aioredis.Redis.from_url(redis_url)
        self.pubsub = self.sub.pubsub(ignore_subscribe_messages=True)
        self.followers: dict[int, set[int]] = {}       # publisher -> local followers
        self.positions: dict[int, tuple[float, float]] = {}
        self.last: dict[int, tuple[float, float, float]] = {}   # publisher -> lat, lon, time
        self.queues: dict[int, asyncio.Queue[bytes | None]] = {}
        self.lock = asyncio.Lock()
        self.dropped = 0
        self.received = 0
        self.errors = 0
        self.queued = 0
        self.refreshed = 0

    async def fan_out(self) -> None:
        followers, positions, queues, last, radius = self.followers, self.positions, \
            self.queues, self.last, self.radius
        while True:
            if not self.pubsub.subscribed:
                await asyncio.sleep(0.05)
                continue
            message = await self.pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            data = message["data"]
            self.received += 1
            user, lat, lon, t = EVENT.unpack(data)
            last[user] = (lat, lon, t)  # every follower sees the same fix: one per process
            for friend in followers.get(user, ()):
                where = positions.get(friend)
                if where is not None and haversine_m(lat, lon, where[0], where[1]) <= radius:
                    queue = queues.get(friend)
                    if queue is not None:
                        try:
                            queue.put_nowait(data)
                            self.queued += 1
                        except asyncio.QueueFull:
                            self.dropped += 1

    async def live(self, requests: AsyncIterator[bytes],
                   context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        stream = requests.__aiter__()
        hello = await stream.__anext__()
        user = USER.unpack_from(hello)[0]
        friends = array("i")
        friends.frombytes(hello[USER.size:])
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUE)
        self.queues[user] = queue
        fresh = []
        for friend in friends:
            local = self.followers.setdefault(friend, set())
            if not local:
                fresh.append(f"{self.prefix}{friend}")
            local.add(user)
        async with self.lock:
            for n in range(0, len(fresh), 1000):
                await self.pubsub.subscribe(*fresh[n:n + 1000])
        channel = f"{self.prefix}{user}"
        last, radius = self.last, self.radius

        async def read() -> None:
            try:
                async for message in stream:
                    lat, lon, t = UPDATE.unpack(message)
                    self.positions[user] = (lat, lon)
                    await self.pub.publish(channel, EVENT.pack(user, lat, lon, t))
                    # the refreshes: every nearby friend's last fix, with the new distance
                    refreshes = []
                    for friend in friends:
                        fix = last.get(friend)
                        if fix is not None and haversine_m(lat, lon, fix[0], fix[1]) <= radius:
                            refreshes.append(EVENT.pack(-1 - friend, *fix))
                    if refreshes:
                        try:
                            queue.put_nowait(b"".join(refreshes))
                            self.refreshed += len(refreshes)
                        except asyncio.QueueFull:
                            self.dropped += len(refreshes)
            except Exception as exc:
                self.errors += 1
                if self.errors == 1:
                    print(f"first stream error: {exc!r}", file=sys.stderr, flush=True)
                raise
            finally:
                while True:  # tell the writer the client is done, even if its queue is full
                    try:
                        queue.put_nowait(None)
                        break
                    except asyncio.QueueFull:
                        queue.get_nowait()

        reader = asyncio.create_task(read())
        try:
            await context.write(b"")  # subscribed: the client may start
            while (item := await queue.get()) is not None:
                # what queued up while the last write was in flight goes as one message: no
                # timer, no added wait (one gRPC message per event would be client-bound)
                batch = [item]
                while not queue.empty():
                    more = queue.get_nowait()
                    if more is None:
                        await context.write(b"".join(batch))
                        return
                    batch.append(more)
                await context.write(b"".join(batch))
        finally:
            reader.cancel()
            self.queues.pop(user, None)
            self.positions.pop(user, None)
            for friend in friends:
                self.followers.get(friend, set()).discard(user)


async def serve(args: argparse.Namespace) -> None:
    floor = Floor(args.redis, args.prefix, args.radius)
    info = mesh_pb2.GetServerInfoResponse(pid=os.getpid(), server_name="presence-floor",
                                          services=[SERVICE]).SerializeToString()

    async def server_info(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
                          ) -> bytes:
        return info

    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(SERVICE, {
            "Live": grpc.stream_stream_rpc_method_handler(floor.live)}),
        grpc.method_handlers_generic_handler("geoplex.mesh.v1.MeshService", {
            "GetServerInfo": grpc.unary_unary_rpc_method_handler(server_info)}),
    ))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    fan_out = asyncio.create_task(floor.fan_out())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"presence floor ready on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    await server.stop(1)
    fan_out.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await fan_out
    print(f"presence floor stopped: {floor.received} messages received, {floor.queued} "
          f"queued to streams, {floor.refreshed} refreshes queued, {floor.dropped} dropped "
          f"(queue full), {floor.errors} stream errors",
          file=sys.stderr, flush=True)
    await floor.pubsub.aclose()
    await floor.sub.aclose()
    await floor.pub.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench._presence_floor",
        description="One process of the presence benchmark's gRPC-hop floor: raw "
                    "redis.asyncio pub/sub behind a minimal grpc.aio stream (started by "
                    "`python -m bench.presence`).")
    parser.add_argument("--port", type=int, required=True, help="port (shared: SO_REUSEPORT)")
    parser.add_argument("--redis", required=True, help="Redis URL")
    parser.add_argument("--prefix", required=True, help="channel name prefix")
    parser.add_argument("--radius", type=float, required=True, help="metres")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
