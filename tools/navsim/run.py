"""The run: drivers on real routes, batches to maps, the probe asked every tick.

:func:`simulate` chooses the scenario (:func:`~.scenario.choose_scenario`), plans every
driver's first trip, then runs three loops in one event loop until the run's duration
(or, with ``stop_after_recovery_s``, until the roads have been back to normal that long;
with ``stop_after_rise_s``, until the probe's ETA has been risen that long):

- **movement**, every ``fix_s``: each driver drives on (on the arterial at ``fraction``
  of its speed while congested), takes a fix, and when its batch is due sends what it
  holds with ``ReportLocationBatch`` under its own token, without holding the loop; a
  driver that arrives sends what it has left and starts a new trip;
- **probe**, every ``tick_s``: the probe route's ETA (traffic-aware) and whether the best
  route of the trip still drives the arterial, recorded as a :class:`~.results.Tick`;
- the sends themselves, bounded by a semaphore.

Drivers: ``through_share`` of them are *through* drivers: trips from near the arterial's
start to near its end whose free-flow route drives it (they keep to it whatever the
traffic, as a driver without navigation would; each trip is a new car, a new user);
the others are *local* drivers on traffic-aware routes between random points, who
continue from where they arrived. Every driver starts somewhere along its first trip,
so the roads are busy from the first second. Drivers' positions never reach a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc.aio

from geoplex.clients.channel import ChannelOptions, open_channel
from geoplex.clients.errors import (FailedPreconditionError, GeoplexError, GeoplexRpcError,
                                    NotFoundError)
from geoplex.clients.maps import MapsClient, batch, fix
from geoplex.clients.routing import Route, RoutingClient
from geoplex.servers._runtime.auth import mint_token

from .drive import Driver, Trip, profile_from_segments
from .geometry import Line, Point, coverage, distance_m, stretches_along
from .results import Accuracy, Counters, Summary, Tick, Timeline, summarize
from .scenario import Scenario, choose_scenario, decode, region_box, seconds, step_infos

THROUGH_COVERAGE = 0.8     # a through trip drives at least this much of the arterial


@dataclass(frozen=True, slots=True)
class NavConfig:
    maps: str
    routing: str
    auth_secret: str
    drivers: int = 40
    through_share: float = 0.5
    congestion_start_s: float = 60.0
    congestion_s: float = 120.0
    fraction: float = 0.25
    duration_s: float = 300.0
    seed: int = 1
    region: str = "gothenburg"
    tick_s: float = 1.0
    fix_s: float = 1.0
    batch_s: float = 5.0
    noise_m: float = 3.0
    noise_tau_s: float = 10.0
    accuracy_m: float = 5.0
    rise: float = 0.2
    normal: float = 0.05
    stop_after_recovery_s: float | None = None
    stop_after_rise_s: float | None = None
    accuracy_drivers: int = 5
    prefix: str = field(default_factory=lambda: f"nav-{uuid.uuid4().hex[:6]}-")

    @property
    def timeline(self) -> Timeline:
        return Timeline(self.congestion_start_s, self.congestion_s, self.duration_s)

    def check(self) -> None:
        if self.drivers < 1:
            raise ValueError("--drivers must be at least 1")
        if not 0.0 < self.fraction < 1.0:
            raise ValueError("--fraction must be between 0 and 1 (0.25: a quarter of the "
                             "speed)")
        if not 0.0 <= self.through_share <= 1.0:
            raise ValueError("the through share must be between 0 and 1")
        for name in ("tick_s", "fix_s", "batch_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        _ = self.timeline  # raises for a time line that does not fit


@dataclass
class NavResult:
    config: NavConfig
    scenario: Scenario
    ticks: list[Tick]
    summary: Summary
    counters: Counters
    accuracy: Accuracy
    elapsed_s: float

    def as_dict(self) -> dict[str, Any]:
        config = asdict(self.config)
        del config["auth_secret"]
        return {"config": config, "scenario": self.scenario.as_dict(),
                "summary": self.summary.as_dict(), "counters": asdict(self.counters),
                "accuracy": self.accuracy.as_dict(), "elapsed_s": self.elapsed_s,
                "ticks": [k.as_dict() for k in self.ticks]}


def through_count(config: NavConfig) -> int:
    return round(config.drivers * config.through_share)


class Planner:
    """Trips for drivers, from ComputeRoute (seeded draws; a draw in the sea is redrawn)."""

    def __init__(self, routing: RoutingClient, scenario: Scenario, box: tuple[Point, Point]
                 ) -> None:
        self.routing = routing
        self.scenario = scenario
        self.arterial = scenario.arterial_line
        self.box = box

    def trip_of(self, route: Route) -> Trip:
        """The route as driven at free flow, segment by segment (asked with
        ``include_segments``; a route without them is driven step by step)."""
        line = Line(decode(route), self.arterial.frame)
        profile = profile_from_segments(route.segment_distances_meters,
                                        route.segment_free_flow_speeds_kmh,
                                        step_infos(route), line.length_m)
        return Trip(line, profile, stretches_along(line, self.arterial), seconds(route))

    async def through(self, rng: random.Random) -> Trip:
        """A trip from near the arterial's start to near its end, driving it."""
        s = self.scenario
        for _ in range(20):
            a = _near(rng, s.probe_origin, 200.0, 900.0)
            b = _near(rng, s.probe_destination, 200.0, 900.0)
            try:
                route = (await self.routing.route(a, b, include_segments=True,
                                                  timeout=10)).routes[0]
            except (FailedPreconditionError, NotFoundError):
                continue
            trip = self.trip_of(route)
            if coverage(trip.line, self.arterial) >= THROUGH_COVERAGE:
                return trip
        route = (await self.routing.route(s.probe_origin, s.probe_destination,
                                          include_segments=True, timeout=10)).routes[0]
        return self.trip_of(route)

    async def local(self, rng: random.Random, origin: Point | None) -> Trip:
        """A traffic-aware trip from ``origin`` (or a random point) to a random point."""
        low, high = self.box
        for _ in range(30):
            a = origin or _in_box(rng, low, high, 0.6)
            b = _in_box(rng, low, high, 0.6)
            if not 1500.0 <= distance_m(a, b) <= 6000.0:
                continue
            try:
                route = (await self.routing.route(a, b, traffic_aware=True,
                                                  include_segments=True,
                                                  timeout=10)).routes[0]
            except (FailedPreconditionError, NotFoundError):
                continue
            return self.trip_of(route)
        return await self.through(rng)  # nowhere to go from here: drive the arterial


def _in_box(rng: random.Random, low: Point, high: Point, inner: float) -> Point:
    lat_mid, lon_mid = (low[0] + high[0]) / 2, (low[1] + high[1]) / 2
    half_lat, half_lon = (high[0] - low[0]) * inner / 2, (high[1] - low[1]) * inner / 2
    return (rng.uniform(lat_mid - half_lat, lat_mid + half_lat),
            rng.uniform(lon_mid - half_lon, lon_mid + half_lon))


def _near(rng: random.Random, p: Point, lo_m: float, hi_m: float) -> Point:
    r, angle = rng.uniform(lo_m, hi_m), rng.uniform(0.0, 2 * math.pi)
    return (p[0] + r * math.sin(angle) / 111_195.0,
            p[1] + r * math.cos(angle) / (111_195.0 * math.cos(math.radians(p[0]))))


class NavSim:
    """One run over a chosen scenario (see the module doc)."""

    def __init__(self, config: NavConfig, scenario: Scenario, routing: RoutingClient,
                 box: tuple[Point, Point]) -> None:
        config.check()
        self.config = config
        self.timeline = config.timeline
        self.scenario = scenario
        self.routing = routing
        self.planner = Planner(routing, scenario, box)
        self.counters = Counters()
        self.ticks: list[Tick] = []
        self.drivers: list[Driver] = []
        self._reasons: Counter[str] = Counter()
        self._sends: set[asyncio.Task[None]] = set()
        self._plans: dict[int, asyncio.Task[None]] = {}
        self._limit = asyncio.Semaphore(64)
        self._clients: dict[str, MapsClient] = {}
        self._channel: grpc.aio.Channel | None = None
        self._started = 0.0

    # -- drivers -----------------------------------------------------------------------

    def _user(self, driver: Driver) -> str:
        if driver.through:
            return f"{self.config.prefix}t{driver.index}-{driver.trips + 1}"
        return f"{self.config.prefix}d{driver.index}"

    async def _plan(self, driver: Driver, first: bool) -> None:
        if driver.through:
            trip = await self.planner.through(driver.rng)
        else:
            origin = None
            if not first and driver.trip is not None:
                origin = driver.trip.line.at(driver.trip.line.length_m)
            trip = await self.planner.local(driver.rng, origin)
        along = 0.0
        if first:  # somewhere along it already: busy roads from the first second
            end = trip.slowed[-1][1] if driver.through and trip.slowed else trip.line.length_m
            along = driver.rng.uniform(0.0, 0.9 * end)
        driver.start(self._user(driver), trip, along, time.time())
        self.counters.trips += 1

    def _client(self, user: str) -> MapsClient:
        client = self._clients.get(user)
        if client is None:
            assert self._channel is not None, "run() opens the channel"
            token = mint_token(self.config.auth_secret, user, 3600)
            client = MapsClient(self._channel, ChannelOptions(token=token))
            self._clients[user] = client
        return client

    def _send(self, driver: Driver, final: bool = False) -> None:
        """Send what ``driver`` holds when its batch is due (or it is ``final``: the trip
        is over), without waiting for the answer."""
        due = driver.due_batch(time.time(), final)
        if due is None:
            return
        batch_id, fixes = due
        client = self._client(driver.user)
        message = batch(batch_id, [fix(f.point, f.time, accuracy_m=self.config.accuracy_m)
                                   for f in fixes])
        task = asyncio.create_task(self._report(client, message, len(fixes)))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)
        if final and driver.through:
            self._clients.pop(driver.user, None)  # that car is done: the next is another

    async def _report(self, client: MapsClient, message: Any, n: int) -> None:
        async with self._limit:
            c = self.counters
            c.fixes += n
            try:
                answer = await client.report_batch(message, timeout=10)
            except GeoplexError as exc:
                c.failed += 1
                if c.first_error is None:
                    c.first_error = (f"{exc.code.name}: {exc.reason or type(exc).__name__}"
                                     if isinstance(exc, GeoplexRpcError) else type(exc).__name__)
                return
            c.batches += 1
            c.accepted += answer.accepted
            c.rejected += len(answer.rejected)
            self._reasons.update(r.reason for r in answer.rejected)

    async def _move_forever(self) -> None:
        cfg = self.config
        last = time.time()
        due = time.monotonic()
        while True:
            due += cfg.fix_s
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            now = time.time()
            dt, last = min(now - last, 5 * cfg.fix_s), now
            congested = self.timeline.congested(now - self._started)
            for d in self.drivers:
                if d.trip is None or d.index in self._plans:
                    continue
                arrived = d.advance(dt, congested, cfg.fraction)
                d.take_fix(now, congested)
                self._send(d, final=arrived)
                if arrived:
                    self._replan(d)

    def _replan(self, driver: Driver) -> None:
        task = asyncio.create_task(self._plan(driver, first=False))
        self._plans[driver.index] = task

        def done(t: asyncio.Task[None]) -> None:
            self._plans.pop(driver.index, None)
            if not t.cancelled() and t.exception() is not None:
                driver.trip = None  # routing failed: this car stays parked
        task.add_done_callback(done)

    # -- the probe ---------------------------------------------------------------------

    async def _probe(self, t: float) -> Tick:
        s = self.scenario
        probe, trip = await asyncio.gather(
            self.routing.route(s.probe_origin, s.probe_destination, traffic_aware=True,
                               timeout=10),
            self.routing.route(s.trip_origin, s.trip_destination, traffic_aware=True,
                               timeout=10))
        best = trip.routes[0]
        c = self.counters
        return Tick(t=round(t, 2), phase=self.timeline.phase(t).value,
                    probe_eta_s=seconds(probe.routes[0]), probe_free_s=s.probe_free_s,
                    trip_eta_s=seconds(best),
                    trip_coverage=coverage(Line(decode(best)), self.planner.arterial),
                    fixes=c.fixes, batches=c.batches, rejected=c.rejected, failed=c.failed,
                    on_arterial=sum(d.on_arterial for d in self.drivers),
                    metric_version=trip.metric_version)

    def _settled(self) -> bool:
        hold, rise_hold = self.config.stop_after_recovery_s, self.config.stop_after_rise_s
        if (hold is None and rise_hold is None) or not self.ticks:
            return False
        summary = summarize(self.ticks, self.timeline, rise=self.config.rise,
                            normal=self.config.normal)
        last = self.ticks[-1].t
        if rise_hold is not None and summary.eta_rise_s is not None and \
                last - self.timeline.congestion_start_s - summary.eta_rise_s >= rise_hold:
            return True
        end = self.timeline.congestion_end_s
        return hold is not None and summary.recovery_s is not None and \
            last - end - summary.recovery_s >= hold

    # -- the run -----------------------------------------------------------------------

    async def run(self, progress: Callable[[Tick], None] = lambda _t: None) -> NavResult:
        cfg = self.config
        self._channel = channel = open_channel(cfg.maps, ChannelOptions())
        through = through_count(cfg)
        self.drivers = [Driver(i, i < through, random.Random(f"{cfg.seed}-driver-{i}"),
                               batch_s=cfg.batch_s, noise_m=cfg.noise_m,
                               noise_tau_s=cfg.noise_tau_s) for i in range(cfg.drivers)]
        mover: asyncio.Task[None] | None = None
        try:
            await asyncio.gather(*(self._plan(d, first=True) for d in self.drivers))
            self._started = time.time()
            mover = asyncio.create_task(self._move_forever(), name="navsim-move")
            due = time.monotonic()
            while True:
                t = time.time() - self._started
                if t > cfg.duration_s or self._settled():
                    break
                try:
                    tick = await self._probe(t)
                except GeoplexError:
                    tick = None  # routing busy: this tick says nothing
                if tick is not None:
                    self.ticks.append(tick)
                    progress(tick)
                due += cfg.tick_s
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if mover.done():
                    mover.result()  # the movement loop failed: say why
            elapsed = time.time() - self._started
            for d in self.drivers:
                self._send(d, final=True)
            if self._sends:
                await asyncio.wait(set(self._sends), timeout=15)
            accuracy = await self._accuracy()
        finally:
            if mover is not None:
                mover.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await mover
            for task in [*self._plans.values(), *self._sends]:
                task.cancel()
            await channel.close()
        self.counters.reasons = dict(self._reasons)
        return NavResult(cfg, self.scenario, self.ticks,
                         summarize(self.ticks, self.timeline, rise=cfg.rise, normal=cfg.normal),
                         self.counters, accuracy, elapsed)

    async def _accuracy(self) -> Accuracy:
        """MatchTrace on a few drivers' last fixes against where they really were."""
        out = Accuracy()
        ready = [d for d in self.drivers if len(d.recent) >= 30]
        n = min(self.config.accuracy_drivers, len(ready))
        chosen = [ready[k * len(ready) // n] for k in range(n)]  # through and local ones
        for d in chosen:
            fixes = list(d.recent)
            try:
                matched = await self.routing.match_trace(
                    [(f.noisy[0], f.noisy[1], f.time) for f in fixes],
                    accuracy_m=self.config.accuracy_m, timeout=20)
            except GeoplexError:
                continue
            out.drivers += 1
            for f, m in zip(fixes, matched.points):
                if not m.matched:
                    out.unmatched += 1
                    out.add(False, f.slowed)
                    continue
                at = (m.location.latitude, m.location.longitude)
                out.add(on_route(at, f.line, f.along_m, out.tolerance_m), f.slowed)
                out.same_street += bool(f.label) and f.label == m.name
        return out


def on_route(at: Point, line: Line, along_m: float, tolerance_m: float,
             window_m: float = 40.0) -> bool:
    """A matched point on the road the car was driving: within ``tolerance_m`` of its
    route (road centre lines both) no more than ``window_m`` before or after the car."""
    near = line.sub(along_m - window_m, along_m + window_m)
    x, y = near.frame.to_xy([at])
    dist, _ = near.nearest(x, y)
    return bool(dist[0] <= tolerance_m)


async def simulate(config: NavConfig, *, classes: dict[int, str] | None = None,
                   say: Callable[[str], None] = lambda _m: None,
                   progress: Callable[[Tick], None] = lambda _t: None) -> NavResult:
    """Choose the scenario on ``config.routing``, then run it (see the module doc)."""
    config.check()
    async with RoutingClient(config.routing) as routing:
        scenario = await choose_scenario(routing, seed=config.seed, fraction=config.fraction,
                                         region=config.region, classes=classes, progress=say)
        box = await region_box(routing, config.region)
        sim = NavSim(config, scenario, routing, box)
        say(f"{config.drivers} drivers ({through_count(config)} through the arterial), a fix "
            f"every {config.fix_s:g} s, a batch every {config.batch_s:g} s; congestion at "
            f"{config.congestion_start_s:g} s for {config.congestion_s:g} s "
            f"(x{config.fraction:g} speed)")
        return await sim.run(progress)

