"""One worker process: its users' streams, their moves, and what they receive.

The coordinator spawns :func:`worker_main` (by this module's path) with a
:class:`WorkerSpec`; they talk through two queues: the worker reports
``connecting``, ``connected``, a ``tick`` every second and ``done`` (or
``failed``); the coordinator sends ``go`` (or ``stop``).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from array import array
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import uvloop

from geoplex.clients.mesh import open_spread_channels
from geoplex.servers._runtime.geo import haversine_np

from .config import SimConfig
from .friends import FriendGraph
from .roads import RoadNetwork, Walker, scheduled_moves


COUNTERS = ("sent", "rejected", "deliveries", "expected", "refreshes", "gone")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    index: int
    config: SimConfig
    users: tuple[int, ...]
    starts: tuple[int, ...]
    shm_name: str
    net: RoadNetwork
    graph: FriendGraph


def worker_main(spec: WorkerSpec, inbox: Any, outbox: Any) -> None:
    """Entry point of one worker process (spawned; imports nothing from its parent)."""
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_Worker(spec, inbox, outbox).run())
    except BaseException as exc:  # noqa: BLE001 - reported to the coordinator
        outbox.put(("failed", spec.index, f"{type(exc).__name__}: {exc}"[:1000]))
        raise SystemExit(1) from None


class _User:
    __slots__ = ("index", "id", "walker", "live", "last", "friends", "pid", "consumer", "mover",
                 "moved_at")

    def __init__(self, index: int, user_id: str, walker: Walker, friends: np.ndarray) -> None:
        self.index = index
        self.id = user_id
        self.walker = walker
        self.friends = friends
        self.live: Any = None
        self.last: dict[str, float] = {}
        self.pid = 0
        self.moved_at = time.time()  # when this user's latest location was taken
        self.consumer: asyncio.Task[None] | None = None
        self.mover: asyncio.Task[None] | None = None


class _Worker:
    def __init__(self, spec: WorkerSpec, inbox: Any, outbox: Any) -> None:
        self.spec = spec
        self.cfg = spec.config
        self.inbox = inbox
        self.outbox = outbox
        self.all = dict.fromkeys(COUNTERS, 0)   # since the start, for progress lines
        self.win = dict.fromkeys(COUNTERS, 0)   # inside the measured window
        self.window = (math.inf, math.inf)
        self.latencies = array("d")
        self.sample: list[float] = []
        self.errors = 0
        self.first_error: str | None = None
        self.rng = random.Random(self.cfg.seed * 1009 + spec.index)

    async def run(self) -> None:
        from geoplex.servers._runtime.auth import DEV_SECRET, mint_token

        from geoplex.clients.channel import ChannelOptions
        from geoplex.clients.presence import PresenceClient

        cfg, spec = self.cfg, self.spec
        shm = shared_memory.SharedMemory(name=spec.shm_name)
        self.positions = np.ndarray((cfg.users, 2), dtype=np.float64, buffer=shm.buf)
        loop = asyncio.get_running_loop()
        try:
            n_channels = max(1, math.ceil(len(spec.users) / cfg.users_per_channel))
            channels = await open_spread_channels(cfg.targets, n_channels)
            secret = cfg.auth_secret or DEV_SECRET
            users = []
            for local, (index, start) in enumerate(zip(spec.users, spec.starts)):
                user = _User(index, cfg.user_id(index), Walker(spec.net, start, self.rng),
                             spec.graph.friends(index))
                channel, user.pid = channels[local % len(channels)]
                client = PresenceClient(channel, ChannelOptions(
                    token=mint_token(secret, user.id, 24 * 3600)))
                lat, lon = user.walker.position()
                user.live = client.live(lat, lon)
                users.append(user)
            self.users = users
            await self._connect(users)
            per_server: dict[str, int] = {}
            for user in users:
                if user.live.connected.is_set():
                    per_server[str(user.pid)] = per_server.get(str(user.pid), 0) + 1
            self.outbox.put(("connected", spec.index,
                             {"connected": sum(per_server.values()), "per_server": per_server}))
            command = await loop.run_in_executor(None, self.inbox.get)
            if command[0] != "go":
                return
            _, go, w0, w1 = command
            self.window = (w0, w1)
            for user in users:
                user.mover = asyncio.create_task(self._move(user, go, w1))
            ticker = asyncio.create_task(self._ticks(go, w1))
            await asyncio.sleep(max(0.0, w1 - time.time()))
            await asyncio.sleep(0.3)  # let the last second's tick go out
            ticker.cancel()
            self.outbox.put(("done", spec.index, {
                "updates_sent": self.win["sent"], "updates_rejected": self.win["rejected"],
                "deliveries": self.win["deliveries"], "expected_deliveries": self.win["expected"],
                "refreshes": self.win["refreshes"], "gone_events": self.win["gone"],
                "reconnects": sum(u.live.reconnects for u in users), "errors": self.errors,
                "first_error": self.first_error, "latencies": self.latencies.tobytes()}))
            await self._close(users, channels)
        finally:
            del self.positions
            shm.close()

    async def _connect(self, users: list[_User]) -> None:
        gate = asyncio.Semaphore(self.cfg.connect_concurrency)
        opened = 0
        last_note = time.monotonic()

        async def connect(user: _User) -> None:
            nonlocal opened, last_note
            async with gate:
                user.consumer = asyncio.create_task(self._consume(user))
                await user.live.__aenter__()
                try:
                    await asyncio.wait_for(user.live.connected.wait(),
                                           self.cfg.connect_timeout_s)
                except TimeoutError:
                    self._error(f"{user.id}: no snapshot within "
                                f"{self.cfg.connect_timeout_s:.0f} s")
                    return
            opened += 1
            if time.monotonic() - last_note > 1.0:
                last_note = time.monotonic()
                self.outbox.put(("connecting", self.spec.index, opened))

        await asyncio.gather(*(connect(u) for u in users))

    async def _close(self, users: list[_User], channels: list[tuple[Any, int]]) -> None:
        tasks = [t for u in users for t in (u.mover, u.consumer) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(u.live.close() for u in users), return_exceptions=True)
        for channel, _ in channels:
            await channel.close()

    def _error(self, text: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = text[:500]

    async def _move(self, user: _User, go: float, end: float) -> None:
        cfg = self.cfg
        radius = cfg.radius_m
        positions = self.positions
        friends = user.friends
        w0, w1 = self.window
        step_m = cfg.speed_mps * cfg.sim_interval_s
        moves = scheduled_moves(user.walker, step_m, cfg.interval_s, self.rng, go, end)
        async for now, lat, lon in moves:
            positions[user.index, 0] = lat
            positions[user.index, 1] = lon
            if len(friends):
                near = int(np.count_nonzero(haversine_np(
                    lat, lon, positions[friends, 0], positions[friends, 1]) <= radius))
            else:
                near = 0
            user.moved_at = now
            await user.live.update(lat, lon, now)
            self.all["sent"] += 1
            self.all["expected"] += near
            if w0 <= now < w1:
                self.win["sent"] += 1
                self.win["expected"] += near

    async def _consume(self, user: _User) -> None:
        events = user.live.events
        last = user.last
        clock = time.time
        every, win = self.all, self.win
        latencies, sample = self.latencies, self.sample
        while True:
            item = await events.get()
            now = clock()
            if isinstance(item, BaseException):
                self._error(f"{user.id}: {type(item).__name__}: {item}")
                return
            kind = item.WhichOneof("event")
            if kind == "friend_moved":
                friend = item.friend_moved.friend
            elif kind == "friend_nearby":
                friend = item.friend_nearby.friend
            elif kind == "snapshot":
                for f in item.snapshot.friends:
                    last[f.user_id] = f.update_time.seconds + f.update_time.nanos * 1e-9
                continue
            elif kind == "friend_gone":
                every["gone"] += 1
                if self.window[0] <= now < self.window[1]:
                    win["gone"] += 1
                continue
            else:  # update_rejected
                every["rejected"] += 1
                if self.window[0] <= now < self.window[1]:
                    win["rejected"] += 1
                continue
            ts = friend.update_time
            t = ts.seconds + ts.nanos * 1e-9
            inside = self.window[0] <= now < self.window[1]
            # A fan-out delivery carries a location of the friend this user has not seen.
            # FriendMoved: the friend was in view all along, so any newer time is new.
            # FriendNearby: the friend may have been out of view when it moved, and come
            # into view because *this* user moved since: then it is not the friend's
            # update arriving (its latency would be up to an interval), but a refresh.
            if t > last.get(friend.user_id, 0.0) and (kind == "friend_moved"
                                                      or t > user.moved_at):
                last[friend.user_id] = t
                every["deliveries"] += 1
                sample.append(now - t)
                if inside:
                    win["deliveries"] += 1
                    latencies.append(now - t)
            else:
                last[friend.user_id] = max(t, last.get(friend.user_id, 0.0))
                every["refreshes"] += 1
                if inside:
                    win["refreshes"] += 1

    async def _ticks(self, go: float, end: float) -> None:
        sec = 0
        while True:
            sec += 1
            await asyncio.sleep(max(0.0, go + sec - time.time()))
            sample, self.sample[:] = self.sample[:], []
            if len(sample) > 2000:
                sample = self.rng.sample(sample, 2000)
            opened = sum(1 for u in self.users if u.live.connected.is_set())
            self.outbox.put(("tick", self.spec.index, sec, {
                **self.all, "sample": sample, "open": opened,
                "reconnects": sum(u.live.reconnects for u in self.users)}))
            if go + sec >= end:
                return
