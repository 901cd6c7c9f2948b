"""Maps congestion: the ETA rising, the detour and the recovery; map matching's speed and accuracy.

``python -m bench.maps_congestion`` (``make bench-maps-congestion``), in one run:

1. The congestion scenario on real processes: an etcd, a broker, then per run a routing
   process (Gothenburg, car) and a maps process with location ingest and the traffic
   feed on (MongoDB from the local backends, a fresh database and locations topic), and
   the navigation simulator (:mod:`geoplex.tools.navsim`) in this process: ``--drivers``
   seeded drivers, a chosen arterial slowed to a quarter of its speed from
   ``--congestion-start`` s for ``--congestion`` s. Two traffic profiles, one after the
   other, each on fresh processes:

   - ``defaults``: what ``geoplex up`` runs (the servers' defaults: a traffic update every
     5 s, median speeds over 300 s, valid 120 s; routing fades an expired update over
     600 s): the realistic one, whose recovery can take minutes, so the run stops at most
     ``--defaults-after`` s after the congestion ends;
   - ``short``: the integration test's settings (update every 1 s, window 20 s, valid 15 s,
     routing fade 5 s, refresh 1 s), stopping at most ``--short-after`` s after the end.

   Per run: seconds from the congestion's start to the probe ETA rising more than 20 %
   over free flow and to the detour being preferred, from its end to back to normal (and
   the ETA and the route apart), the peak ETA ratio, the fixes sent / accepted / rejected,
   batches failed, and the simulator's own MatchTrace accuracy against its ground truth
   (overall and for the cars crawling in the jam). ``--seeds`` seeds per profile while
   the whole stays within ``--budget-min`` minutes (the first seed always runs).
2. Map-matching throughput: drives along seeded Gothenburg routes made with the
   simulator's drive model (a fix a second, drifting GPS noise), cut into traces of
   ``--trace-fixes`` fixes, sent to ``MatchTrace`` of a fresh routing process (nothing
   else calling it) in a closed loop at ``--concurrency``: fixes/s, p50/p99 per call,
   the routing process's CPU per million fixes and so fixes/s per core; and the share of
   fixes matched onto the road driven near the car (the simulator's test) and onto a
   directed segment of the route driven (the edge, from ``include_segments``).

Each timed part first waits (``--quiet-max`` s at most) for an idle machine. Writes
``bench/results/maps_congestion.json`` and the ``maps-congestion`` section of
``BENCHMARKS.md`` (``--no-write`` to skip; ``--quick`` shrinks every part and implies
it; ``--report-only`` re-renders from the results file). Fixes are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import GeoplexError
from geoplex.clients.maps import MapsClient, batch, fix
from geoplex.clients.routing import RoutingClient
from geoplex.infra import data
from geoplex.infra.process import ProcessError
from geoplex.maps.v1 import maps_pb2 as mpb
from geoplex.routing.v1 import routing_pb2 as rpb
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.servers._runtime.config import Env
from geoplex.servers.maps.config import MapsConfig
from geoplex.servers.routing.config import RoutingConfig
from geoplex.tools.navsim import (Driver, Line, NavConfig, NavResult, NoScenario, Tick,
                                  Timeline, profile_from_segments, road_classes, simulate,
                                  table_ticks)
from geoplex.tools.navsim.drive import TrueFix, Trip
from geoplex.tools.navsim.geometry import Point, distance_m
from geoplex.tools.navsim.results import ON_ROUTE_FROM
from geoplex.tools.navsim.run import on_route
from geoplex.tools.navsim.scenario import decode, region_box, seconds, step_infos

from ._common import (run_and_report, CpuSample, ServerProcesses, Steps, log, WorkerFactory, WorkerOp, closed_loop,
                      combine_rounds, cpu_usage, fmt_num, local_backends, machine_info,
                      machine_line, markdown_table, read_results, start_server_processes,
                      write_results, write_section)
from .maps_tiles_ingest import (LOG_ENV, REGION, ROUTING_CACHE, Quiet, etcd_infra, ratio,
                                send_with_retry)

NAME = "maps-congestion"          # the BENCHMARKS.md section
RESULTS = "maps_congestion"       # bench/results/<RESULTS>.json
TITLE = "## Maps: congestion, rerouting and map matching"
RISE = 0.2                        # the probe ETA "rose": more than this over free flow
NORMAL = 0.05                     # ...and is normal again within this of it
CLAIM_S = 60.0                    # the product's claim: the ETA rises within this
FRACTION = 0.25                   # the arterial's speed while congested
HOLD_S = 10.0                     # a run stops once normal this long
ACCURACY_M = 5.0                  # the fixes' stated accuracy (as the simulator sends)
TOLERANCE_M = 5.0                 # a matched point this near the route driven is on it
NOISY_OTHER_PCT = 25.0
GOTHENBURG_CENTRE = (57.7072, 11.9668)


def _defaults() -> dict[str, float]:
    """The traffic settings ``geoplex up`` runs with: the servers' own defaults."""
    m, r = MapsConfig.from_env(Env({})), RoutingConfig.from_env(Env({}))
    return {"interval_s": m.traffic_interval_s, "window_s": m.traffic_window_s,
            "valid_s": m.traffic_valid_s, "routing_valid_s": r.traffic_valid_s,
            "fade_s": r.traffic_fade_s, "refresh_s": r.traffic_refresh_s}


# the integration test's (tests/integration/maps/test_congestion_scenario.py)
SHORT = {"interval_s": 1.0, "window_s": 20.0, "valid_s": 15.0, "fade_s": 5.0,
         "refresh_s": 1.0}


@dataclass(frozen=True, slots=True)
class Profile:
    """One set of traffic settings and how long a run of it may go on after the end."""

    key: str
    label: str
    traffic: dict[str, float]
    after_s: float

    def maps_env(self) -> dict[str, str]:
        t = self.traffic
        return {"GEOPLEX_MAPS_TRAFFIC_INTERVAL_SECONDS": f"{t['interval_s']:g}",
                "GEOPLEX_MAPS_TRAFFIC_WINDOW_SECONDS": f"{t['window_s']:g}",
                "GEOPLEX_MAPS_TRAFFIC_VALID_SECONDS": f"{t['valid_s']:g}"}

    def routing_env(self) -> dict[str, str]:
        t = self.traffic
        env = {"GEOPLEX_ROUTING_TRAFFIC_FADE_SECONDS": f"{t['fade_s']:g}",
               "GEOPLEX_ROUTING_TRAFFIC_REFRESH_SECONDS": f"{t['refresh_s']:g}"}
        if "routing_valid_s" in t:
            env["GEOPLEX_ROUTING_TRAFFIC_VALID_SECONDS"] = f"{t['routing_valid_s']:g}"
        return env

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "traffic": dict(self.traffic),
                "after_s": self.after_s, "maps_env": self.maps_env(),
                "routing_env": self.routing_env()}


def profiles(args: argparse.Namespace) -> list[Profile]:
    return [Profile("defaults", "geoplex up's defaults", _defaults(), args.defaults_after),
            Profile("short", "the integration test's short settings", dict(SHORT),
                    args.short_after)]


# =========================================================================== summary arithmetic

def back_for_good(ticks: Sequence[Tick], end_s: float, ok: Callable[[Tick], bool]
                  ) -> float | None:
    """Seconds from ``end_s`` to the first tick after which every tick is ``ok`` (None if
    the last tick is not)."""
    since: float | None = None
    for k in ticks:
        if k.t < end_s:
            continue
        if ok(k):
            if since is None:
                since = k.t - end_s
        else:
            since = None
    return since


def timing(ticks: Sequence[Tick], timeline: Timeline, normal: float = NORMAL
           ) -> dict[str, Any]:
    """What the summary of the simulator does not split: ETA and route back apart, the
    probe's free-flow ETA and the ticks' count in each phase."""
    end = timeline.congestion_end_s
    phases: dict[str, int] = {}
    for k in ticks:
        phases[k.phase] = phases.get(k.phase, 0) + 1
    return {"eta_normal_s": back_for_good(ticks, end,
                                          lambda k: k.probe_ratio <= 1.0 + normal),
            "route_back_s": back_for_good(ticks, end,
                                          lambda k: k.trip_coverage >= ON_ROUTE_FROM),
            "last_t_s": ticks[-1].t if ticks else None,
            "after_end_s": ticks[-1].t - end if ticks else None,
            "ticks": phases}


def within(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def run_record(result: NavResult, profile: Profile, cpu: Mapping[str, Any],
               start_s: Mapping[str, float]) -> dict[str, Any]:
    """One simulator run as the results file keeps it (the ticks thinned to one every 5 s
    and each change of phase or route)."""
    s, c, a = result.summary, result.counters, result.accuracy
    sc = result.scenario
    extra = timing(result.ticks, result.config.timeline)
    total = a.fixes + a.slowed_fixes
    return {
        "profile": profile.key, "seed": result.config.seed, "ok": True,
        "timeline": {"congestion_start_s": result.config.congestion_start_s,
                     "congestion_s": result.config.congestion_s,
                     "duration_s": result.config.duration_s,
                     "stop_after_recovery_s": result.config.stop_after_recovery_s},
        "drivers": result.config.drivers, "fraction": result.config.fraction,
        "scenario": {"road": sc.road, "arterial_m": sc.arterial_m,
                     "probe_free_s": sc.probe_free_s, "trip_free_s": sc.trip_free_s,
                     "detour_free_s": sc.detour_free_s, "road_classes": sc.road_classes,
                     "attempts": sc.attempts},
        "summary": s.as_dict(), **extra,
        "eta_rise_within_claim": within(s.eta_rise_s, CLAIM_S),
        "counters": {"fixes": c.fixes, "accepted": c.accepted, "rejected": c.rejected,
                     "batches": c.batches, "failed": c.failed, "trips": c.trips,
                     "reasons": c.reasons, "first_error": c.first_error},
        "accuracy": {**a.as_dict(),
                     "all_share": (a.on_road + a.slowed_on_road) / total if total else None},
        "elapsed_s": result.elapsed_s, "cpu": dict(cpu), "start_s": dict(start_s),
        "ticks": [k.as_dict() for k in table_ticks(result.ticks, 5.0)],
    }


# =========================================================================== 1. the congestion runs

@dataclass
class Shared:
    """What every run stands on: the broker, MongoDB, the data."""

    broker: str
    mongo_uri: str
    gothenburg: Path
    monaco: Path
    classes: dict[int, str]
    cache: Path
    tmp: Path
    pids: dict[str, int] = field(default_factory=dict)


def start_routing(shared: Shared, extra: Mapping[str, str], state: Path) -> ServerProcesses:
    return start_server_processes(
        [sys.executable, "-m", "geoplex.servers.routing"], 1,
        {"GEOPLEX_ROUTING_PORT": "0", "GEOPLEX_ROUTING_REGIONS": f"{REGION}={shared.gothenburg}",
         "GEOPLEX_ROUTING_CACHE_DIR": str(shared.cache), "GEOPLEX_ROUTING_MODES": "car",
         "GEOPLEX_AUTH_SECRET": DEV_SECRET, "GEOPLEX_STATE_DIR": str(state), **extra,
         **LOG_ENV}, ready_timeout=900)


def start_maps(shared: Shared, routing: str, database: str, topic: str,
               extra: Mapping[str, str], state: Path) -> ServerProcesses:
    return start_server_processes(
        [sys.executable, "-m", "geoplex.servers.maps"], 1,
        {"GEOPLEX_MAPS_PORT": "0", "GEOPLEX_MAPS_HTTP_PORT": "off",
         "GEOPLEX_MAPS_TILE_SOURCES": "off", "GEOPLEX_MAPS_PLACES": "none",
         "GEOPLEX_MAPS_EXTRACTS": f"Monaco={shared.monaco}",
         "GEOPLEX_MONGO_URI": shared.mongo_uri, "GEOPLEX_REDIS_URL": "",
         "GEOPLEX_BROKER_TARGET": shared.broker, "GEOPLEX_ROUTING_TARGET": routing,
         "GEOPLEX_MAPS_DATABASE": database, "GEOPLEX_MAPS_LOCATIONS_TOPIC": topic,
         "GEOPLEX_AUTH_SECRET": DEV_SECRET, "GEOPLEX_STATE_DIR": str(state), **extra,
         **LOG_ENV}, ready_timeout=300)


async def ingest_ready(maps_address: str) -> float:
    """Location ingest answers once its topic exists: seconds until a batch is accepted."""
    user = f"bench-congestion-ready-{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    async with MapsClient(maps_address, ChannelOptions(timeout=30)) as maps:
        request = batch(f"{user}-0", [fix(GOTHENBURG_CENTRE, time.time(), accuracy_m=5.0)])
        await send_with_retry(maps, mpb.ReportLocationBatchRequest(batch=request),
                              mint_token(DEV_SECRET, user))
    return time.perf_counter() - t0


def _drop_database(uri: str, database: str) -> None:
    with contextlib.suppress(Exception):
        import pymongo

        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=3000)
        client.drop_database(database)
        client.close()


def congestion_run(args: argparse.Namespace, shared: Shared, profile: Profile, seed: int,
                   quiet: Quiet) -> dict[str, Any]:
    """Fresh routing and maps processes with ``profile``'s settings, one simulator run."""
    tag = f"{profile.key}-{seed}-{uuid.uuid4().hex[:6]}"
    database = f"bench_congestion_{tag.replace('-', '_')}"
    topic = f"locations-bench-{tag}"
    start_s: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        state = shared.tmp / tag
        t0 = time.perf_counter()
        routing = stack.enter_context(start_routing(shared, profile.routing_env(),
                                                    state / "routing"))
        start_s["routing"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        maps = stack.enter_context(start_maps(shared, routing.address, database, topic,
                                              profile.maps_env(), state / "maps"))
        start_s["maps"] = time.perf_counter() - t0
        stack.callback(_drop_database, shared.mongo_uri, database)
        start_s["ingest_ready"] = asyncio.run(ingest_ready(maps.address))
        log(f"    routing {start_s['routing']:.1f} s, maps {start_s['maps']:.1f} s, ingest "
            f"{start_s['ingest_ready']:.1f} s")
        timeline = Timeline(args.congestion_start, args.congestion,
                            args.congestion_start + args.congestion + profile.after_s)
        config = NavConfig(maps=maps.address, routing=routing.address, auth_secret=DEV_SECRET,
                           drivers=args.drivers, congestion_start_s=timeline.congestion_start_s,
                           congestion_s=timeline.congestion_s, fraction=FRACTION,
                           duration_s=timeline.duration_s, seed=seed, rise=RISE, normal=NORMAL,
                           stop_after_recovery_s=HOLD_S)
        pids = [*routing.pids, *maps.pids, *shared.pids.values()]
        busy = quiet(f"congestion {profile.key} seed {seed}")
        cpu0 = CpuSample.take(pids)
        last = [-1e9]

        def progress(k: Tick) -> None:
            if k.t - last[0] >= 15.0:
                last[0] = k.t
                log(f"      t={k.t:4.0f} s {k.phase:<10} probe {k.probe_ratio - 1:+5.0%} "
                    f"{'detour' if k.detour else 'arterial':<8} fixes {k.fixes:,} "
                    f"rejected {k.rejected:,} failed {k.failed:,}")

        try:
            result = asyncio.run(simulate(config, classes=shared.classes,
                                          say=lambda m: log(f"    {m}"), progress=progress))
        finally:
            for label, group in (("routing", routing), ("maps", maps)):
                server = group.processes[0]
                if not server.running:
                    log(f"    the {label} server exited ({server.returncode}):\n"
                        f"{server.log_tail(30)}")
        cpu = cpu_usage(cpu0, CpuSample.take(pids))
        cpu["busy_before_pct"] = busy
        cpu["pids"] = ["routing", "maps", *shared.pids]
    return run_record(result, profile, cpu, start_s)


def run_line(run: Mapping[str, Any]) -> str:
    s, c, a = run["summary"], run["counters"], run["accuracy"]
    return (f"ETA +20% after {_s(s['eta_rise_s'], 'never')}, detour after "
            f"{_s(s['detour_s'], 'never')}, normal {_s(s['recovery_s'], 'not in the run')} "
            f"after the end, peak x{s['peak_ratio']:.2f}; fixes {c['fixes']:,} "
            f"(rejected {c['rejected']:,}), failed batches {c['failed']}; matching "
            f"{_pct(a['share'], 1)} / crawling "
            + (_pct(a["slowed_share"], 1) if a["slowed_fixes"] else "none in the traces"))


def congestion_part(args: argparse.Namespace, shared: Shared, quiet: Quiet,
                    budget_s: float, started: float) -> list[dict[str, Any]]:
    """The first seed of every profile, then further seeds while they fit the budget
    (a run's cost: what the same profile's first run took)."""
    runs: list[dict[str, Any]] = []
    cost: dict[str, float] = {}
    plan = [(p, seed) for seed in args.seeds for p in profiles(args)]
    for n, (profile, seed) in enumerate(plan):
        first = seed == args.seeds[0]
        spent = time.perf_counter() - started
        if not first:
            guess = cost.get(profile.key, math.inf)
            if spent + guess + args.matching_reserve > budget_s:
                log(f"  {profile.key} seed {seed}: skipped ({spent / 60:.1f} min spent, "
                    f"a run takes ~{guess / 60:.1f} min, budget {budget_s / 60:.0f} min)")
                runs.append({"profile": profile.key, "seed": seed, "ok": False,
                             "skipped": "over the time budget"})
                continue
        log(f"  run {n + 1}/{len(plan)}: {profile.key} ({profile.label}), seed {seed}...")
        t0 = time.perf_counter()
        try:
            run = congestion_run(args, shared, profile, seed, quiet)
        except (NoScenario, GeoplexError, ProcessError) as exc:
            log(f"    failed: {type(exc).__name__}: {exc}"[:600])
            run = {"profile": profile.key, "seed": seed, "ok": False,
                   "error": f"{type(exc).__name__}: {exc}"[:600]}
        else:
            log("    " + run_line(run))
        took = time.perf_counter() - t0
        run["wall_s"] = took
        cost.setdefault(profile.key, took)
        runs.append(run)
    return runs


# =========================================================================== 2. map matching

@dataclass
class Drive:
    """Fixes along one route, what the car knew of each, and the route's segments."""

    fixes: list[TrueFix]
    segments: frozenset[int]
    distance_m: float


def drive_route(route: rpb.Route, rng: random.Random, t0: float, fix_s: float = 1.0,
                crawl_m: float = 0.0) -> list[TrueFix]:
    """The simulator's drive model along ``route``: a fix every ``fix_s``, at free flow
    but for ``crawl_m`` metres in the middle driven at FRACTION of the speed (a jam)."""
    line = Line(decode(route))
    mid = line.length_m / 2
    slowed = [(mid - crawl_m / 2, mid + crawl_m / 2)] if 0 < crawl_m < line.length_m else []
    profile = profile_from_segments(route.segment_distances_meters,
                                    route.segment_free_flow_speeds_kmh, step_infos(route),
                                    line.length_m)
    trip = Trip(line, profile, slowed, seconds(route))
    driver = Driver(0, False, rng)
    driver.start("bench-trace", trip, 0.0, t0)
    out: list[TrueFix] = []
    now = t0
    while True:
        driver.take_fix(now, congested=bool(slowed))
        out.append(driver.recent[-1])
        driver.pending.clear()
        if driver.along_m >= line.length_m:
            return out
        driver.advance(fix_s, bool(slowed), FRACTION)
        now += fix_s


async def make_drives(rt: RoutingClient, count: int, seed: int, crawl_m: float = 0.0
                      ) -> list[Drive]:
    """``count`` seeded drives of 1.5..6 km in the middle of the region (``crawl_m`` of
    each in a jam: :func:`drive_route`)."""
    low, high = await region_box(rt, REGION)
    rng = random.Random(seed)
    t0 = time.time() - 7200.0
    out: list[Drive] = []
    for _ in range(count * 20):
        if len(out) == count:
            break
        a, b = _draw(rng, low, high), _draw(rng, low, high)
        if not 1500.0 <= distance_m(a, b) <= 6000.0:
            continue
        try:
            answer = await rt.route(a, b, include_segments=True, timeout=30)
        except GeoplexError:
            continue
        if not answer.routes:
            continue
        route = answer.routes[0]
        fixes = drive_route(route, random.Random(rng.random()), t0, crawl_m=crawl_m)
        out.append(Drive(fixes, frozenset(int(s) for s in route.segment_ids),
                         route.distance_meters))
        t0 += len(fixes) + 600.0
    return out


def _draw(rng: random.Random, low: Point, high: Point, inner: float = 0.6) -> Point:
    lat_mid, lon_mid = (low[0] + high[0]) / 2, (low[1] + high[1]) / 2
    half_lat, half_lon = (high[0] - low[0]) * inner / 2, (high[1] - low[1]) * inner / 2
    return (rng.uniform(lat_mid - half_lat, lat_mid + half_lat),
            rng.uniform(lon_mid - half_lon, lon_mid + half_lon))


@dataclass(frozen=True, slots=True)
class Trace:
    fixes: tuple[TrueFix, ...]
    segments: frozenset[int]

    def request(self) -> rpb.MatchTraceRequest:
        request = rpb.MatchTraceRequest(travel_mode=rpb.TRAVEL_MODE_DRIVE)
        for f in self.fixes:
            p = request.points.add(accuracy_meters=ACCURACY_M)
            p.location.latitude, p.location.longitude = f.noisy
            p.time.FromNanoseconds(int(round(f.time * 1e9)))
        return request


def cut_traces(drives: Sequence[Drive], size: int) -> list[Trace]:
    """Each drive cut into consecutive traces of ``size`` fixes (a short tail dropped)."""
    return [Trace(tuple(d.fixes[i:i + size]), d.segments)
            for d in drives for i in range(0, len(d.fixes) - size + 1, size)]


@dataclass
class MatchScore:
    """Fixes of matched traces against the ground truth of the drive."""

    traces: int = 0
    fixes: int = 0
    matched: int = 0
    on_road: int = 0        # within TOLERANCE_M of the route driven, near the car
    on_edge: int = 0        # ...and on a directed segment the route drives
    chains: int = 0
    crawling: int = 0       # of the fixes, those of the car in the jam
    crawling_on_road: int = 0
    crawling_on_edge: int = 0

    def add(self, trace: Trace, answer: rpb.MatchTraceResponse,
            tolerance_m: float = TOLERANCE_M) -> None:
        self.traces += 1
        self.chains += answer.chains
        for f, m in zip(trace.fixes, answer.points):
            self.fixes += 1
            self.crawling += f.slowed
            if not m.matched:
                continue
            self.matched += 1
            near = on_route((m.location.latitude, m.location.longitude), f.line, f.along_m,
                            tolerance_m)
            edge = near and int(m.segment_id) in trace.segments
            self.on_road += near
            self.on_edge += edge
            if f.slowed:
                self.crawling_on_road += near
                self.crawling_on_edge += edge

    def as_dict(self) -> dict[str, Any]:
        n, c = self.fixes, self.crawling
        return {"traces": self.traces, "fixes": n, "matched": self.matched,
                "on_road": self.on_road, "on_edge": self.on_edge, "chains": self.chains,
                "crawling": c, "crawling_on_road": self.crawling_on_road,
                "crawling_on_edge": self.crawling_on_edge,
                "matched_share": self.matched / n if n else None,
                "on_road_share": self.on_road / n if n else None,
                "on_edge_share": self.on_edge / n if n else None,
                "crawling_on_road_share": self.crawling_on_road / c if c else None,
                "crawling_on_edge_share": self.crawling_on_edge / c if c else None}


def throughput(cell: Mapping[str, Any], trace_fixes: int) -> dict[str, Any]:
    """Fixes/s, routing CPU seconds per million fixes and fixes/s per routing core, from a
    combined closed-loop cell whose ``cpu.server_cpu_pct`` is the routing process."""
    fixes_per_s = cell["calls_per_s"] * trace_fixes
    cpu_pct = (cell.get("cpu") or {}).get("server_cpu_pct", math.nan)
    cores = cpu_pct / 100.0 if cpu_pct is not None else math.nan
    return {"trace_fixes": trace_fixes, "fixes_per_s": fixes_per_s,
            "routing_cpu_pct": cpu_pct,
            "routing_cpu_s_per_mfix": ratio(cores * 1e6, fixes_per_s),
            "fixes_per_s_per_core": ratio(fixes_per_s, cores)}


def trace_worker(rt: RoutingClient, requests: Sequence[rpb.MatchTraceRequest]
                 ) -> WorkerFactory:
    """Each worker sends the traces round, starting at its own place."""

    @contextlib.asynccontextmanager
    async def factory(index: int) -> AsyncIterator[WorkerOp]:
        start = index * len(requests) // 7 % len(requests)
        order = itertools.cycle([*requests[start:], *requests[:start]])

        async def op() -> object:
            return await rt.call(rt.stub.MatchTrace, next(order), timeout=30)
        yield op

    return factory


async def matching_measure(args: argparse.Namespace, routing: ServerProcesses, quiet: Quiet
                           ) -> dict[str, Any]:
    out: dict[str, Any] = {"routing_pid": routing.pids[0]}
    async with RoutingClient(routing.address) as rt:
        t0 = time.perf_counter()
        drives = await make_drives(rt, args.drives, args.seed, args.crawl_m)
        out["drives"] = {"count": len(drives), "fixes": sum(len(d.fixes) for d in drives),
                         "crawling_fixes": sum(f.slowed for d in drives for f in d.fixes),
                         "crawl_m": args.crawl_m,
                         "distance_m": sum(d.distance_m for d in drives),
                         "made_s": time.perf_counter() - t0}
        log(f"    {len(drives)} drives, {out['drives']['fixes']:,} fixes, "
            f"{out['drives']['distance_m'] / 1000:,.1f} km")
        if not drives:
            raise RuntimeError("no Gothenburg route found for the drives")
        out["accuracy"] = []
        out["cells"] = []
        for size in args.trace_fixes:
            traces = cut_traces(drives, size)
            requests = [t.request() for t in traces]
            score = MatchScore()
            for trace, request in zip(traces, requests):  # untimed: the accuracy
                answer = await rt.call(rt.stub.MatchTrace, request, timeout=30)
                score.add(trace, answer)
            acc = {"trace_fixes": size, **score.as_dict()}
            out["accuracy"].append(acc)
            log(f"    {size}-fix traces: {acc['traces']:,} traces, on the road "
                f"{_pct(acc['on_road_share'], 1)}, on the edge {_pct(acc['on_edge_share'], 1)}")
            for conc in args.concurrency:
                rounds = []
                for _ in range(args.rounds):
                    await quiet.wait(f"MatchTrace {size} fixes c={conc}")
                    rounds.append(await closed_loop(trace_worker(rt, requests),
                                                    concurrency=conc, warmup=args.warmup,
                                                    duration=args.duration,
                                                    pids=routing.pids))
                cell = combine_rounds(rounds, max_other_pct=NOISY_OTHER_PCT)
                cell.update(throughput(cell, size))
                out["cells"].append(cell)
                log(f"      c={conc}: {cell['fixes_per_s']:,.0f} fixes/s "
                    f"({cell['calls_per_s']:,.0f} calls/s), p50 {cell['p50_ms']:.1f} ms, "
                    f"p99 {cell['p99_ms']:.1f} ms, routing CPU "
                    f"{cell['routing_cpu_pct']:.0f}% -> {cell['fixes_per_s_per_core']:,.0f} "
                    f"fixes/s per core, errors {cell['errors']}")
    return out


def matching_part(args: argparse.Namespace, shared: Shared, quiet: Quiet) -> dict[str, Any]:
    """A fresh routing process (no traffic feed calling it) for the closed loop."""
    t0 = time.perf_counter()
    with start_routing(shared, {}, shared.tmp / "matching-routing") as routing:
        start_s = time.perf_counter() - t0
        try:
            result = asyncio.run(matching_measure(args, routing, quiet))
        finally:
            server = routing.processes[0]
            if not server.running:
                log(f"    the routing server exited ({server.returncode}):\n"
                    f"{server.log_tail(30)}")
    result["start_s"] = start_s
    return result


# =========================================================================== report

def _s(v: Any, never: str = "-") -> str:
    return never if v is None else f"{v:.0f} s"


def _pct(v: Any, digits: int = 0) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v * 100:.{digits}f}%"


def _yes(v: Any) -> str:
    return "-" if v is None else ("yes" if v else "**no**")


def noisy_parts(result: Mapping[str, Any]) -> list[str]:
    """Quiet waits that timed out, and timed parts where other work took a core share."""
    out = [f"{w['label']} ({w['busy_pct']:.0f}% busy after {w['waited_s']:.0f} s)"
           for w in result.get("quiet", []) if w.get("timed_out")]
    for run in result.get("runs", []):
        other = (run.get("cpu") or {}).get("other_cpu_pct")
        if other is not None and other > NOISY_OTHER_PCT:
            out.append(f"congestion {run['profile']} seed {run['seed']}: other work "
                       f"{other:.0f}% of a core during the run")
    for cell in (result.get("matching") or {}).get("cells", []):
        other = (cell.get("cpu") or {}).get("other_cpu_pct")
        if other is not None and other > NOISY_OTHER_PCT:
            out.append(f"MatchTrace {cell['trace_fixes']} fixes c={cell['concurrency']}: "
                       f"other work {other:.0f}% of a core")
    return out


def _traffic_line(p: Mapping[str, Any]) -> str:
    t = p["traffic"]
    return (f"**{p['key']}** ({p['label']}): maps sends the segments' median speed over the "
            f"last {t['window_s']:g} s to routing every {t['interval_s']:g} s, each update "
            f"valid {t['valid_s']:g} s; routing swaps in a new metric every "
            f"{t['refresh_s']:g} s and fades an expired update back to free flow over "
            f"{t['fade_s']:g} s; a run stops {HOLD_S:g} s after being back to normal, or "
            f"{p['after_s']:g} s after the congestion ends.")


def report(result: Mapping[str, Any]) -> str:
    st = result["settings"]
    runs = [r for r in result.get("runs", []) if r.get("ok")]
    missing = [r for r in result.get("runs", []) if not r.get("ok")]
    lines = [
        "`python -m bench.maps_congestion` (`make bench-maps-congestion`): the navigation "
        "simulator (`geoplex maps simulate`, `tools/navsim`) in the benchmark's process "
        f"drives {st['drivers']} seeded cars on Gothenburg's roads (half of them through a "
        "chosen arterial), a fix a second and a batch every 5 s to a real maps process "
        "(location ingest -> broker -> the traffic consumer group -> routing's MatchTrace "
        f"and UpdateTraffic); from {st['congestion_start']:g} s for {st['congestion']:g} s "
        f"the arterial runs at {FRACTION:g} of its speed. Every second it asks routing "
        "(traffic-aware) for the ETA of a probe route along the arterial and for the best "
        "route of a trip whose free-flow route drives it. Each run has fresh routing "
        "(Gothenburg, car) and maps processes on one broker and etcd.",
        "",
        "Traffic settings (the two profiles):",
        "",
        *[f"- {_traffic_line(p)}" for p in result.get("profiles", [])],
        "",
        f"Machine: {machine_line(result['machine'])}. The whole run took "
        f"{result.get('elapsed_s', math.nan) / 60:.1f} min.",
        "",
        f"**1. Congestion: time line** (`ETA +{RISE:.0%}`: from the congestion's start to the "
        f"probe's ETA more than {RISE:.0%} over free flow, `<= {CLAIM_S:.0f} s` the issue's "
        "claim; `detour`: to the trip's best route leaving the arterial; `normal`: from the "
        f"congestion's end to the ETA within {NORMAL:.0%} of free flow and the trip back on "
        "the arterial for good, then each apart).",
        "",
    ]
    rows = []
    for r in runs:
        s, sc = r["summary"], r["scenario"]
        rows.append([r["profile"], r["seed"],
                     f"{sc['road']} ({fmt_num(sc['arterial_m'])} m, {sc['probe_free_s']:.0f} s)",
                     _s(s["eta_rise_s"], "not seen"), _yes(r["eta_rise_within_claim"]),
                     _s(s["detour_s"], "not seen"),
                     _s(s["recovery_s"], "not within the run"),
                     _s(r["eta_normal_s"], "not within the run"),
                     _s(r["route_back_s"], "not within the run"),
                     f"{s['peak_ratio']:.2f}", _s(r["after_end_s"])])
    lines += [markdown_table(
        ["profile", "seed", "arterial (length, free flow)", f"ETA +{RISE:.0%}",
         f"<= {CLAIM_S:.0f} s", "detour", "normal", "ETA normal", "route back",
         "peak ETA / free", "ran after end"], rows, "lrlrcrrrrrr"), ""]
    for r in missing:
        lines.append(f"- {r['profile']} seed {r['seed']}: "
                     + (r.get("skipped") or r.get("error") or "not run"))
    if missing:
        lines.append("")
    lines += [
        "**2. Congestion: ingest and the simulator's map-matching accuracy** (at the end of "
        "each run, MatchTrace on a few drivers' last up to 120 fixes; a fix is right when "
        f"its matched point is within {TOLERANCE_M:g} m of the route the car drove, no more "
        "than 40 m before or after the car; `crawling`: fixes of cars in the jam, a few "
        "metres a second, counted only when the jam is in those last fixes: a run that "
        "ends more than 120 s after the congestion has none, see table 4 for crawling "
        "cars; CPU over the run in % of one core).",
        "",
    ]
    rows = []
    for r in runs:
        c, a, cpu = r["counters"], r["accuracy"], r.get("cpu", {})
        rows.append([r["profile"], r["seed"], fmt_num(c["fixes"]), fmt_num(c["accepted"]),
                     fmt_num(c["rejected"]), f"{fmt_num(c['batches'])} / {c['failed']}",
                     f"{_pct(a['share'], 1)} of {fmt_num(a['fixes'])}",
                     (f"{_pct(a['slowed_share'], 1)} of {fmt_num(a['slowed_fixes'])}"
                      if a["slowed_fixes"] else "none in the traces"),
                     _pct(a.get("all_share"), 1),
                     f"{cpu.get('client_cpu_pct', math.nan):.0f} / "
                     f"{cpu.get('server_cpu_pct', math.nan):.0f} / "
                     f"{cpu.get('other_cpu_pct', math.nan):.0f}"])
    lines += [markdown_table(
        ["profile", "seed", "fixes sent", "accepted", "rejected", "batches ok / failed",
         "matched right", "crawling right", "all", "CPU % sim / servers / other"],
        rows, "lrrrrrrrrr"), ""]
    m = result.get("matching") or {}
    if m.get("cells"):
        d = m["drives"]
        lines += [
            f"**3. Map matching: throughput** (`MatchTrace` on a routing process of its own, "
            f"nothing else calling it: {d['count']} seeded drives of "
            f"{d['distance_m'] / 1000:,.1f} km in all, {fmt_num(d['fixes'])} fixes from the "
            "simulator's drive model at free flow but for "
            f"{d.get('crawl_m', 0):g} m in the middle of each drive crawling at "
            f"{FRACTION:g} of the speed ({fmt_num(d.get('crawling_fixes', math.nan))} fixes), "
            "cut into traces of the given size; 6 is "
            "what the traffic feed sends: a 5 s batch and the fix before it. Closed loop, "
            f"{st['rounds']} x ({st['warmup']:g} s warmup + {st['duration']:g} s) per row; "
            "`per core`: fixes/s over the routing process's CPU in cores).",
            "",
        ]
        rows = []
        for c in m["cells"]:
            rows.append([c["trace_fixes"], c["concurrency"], fmt_num(c["calls_per_s"]),
                         fmt_num(c["fixes_per_s"]), f"{c['p50_ms']:.1f}",
                         f"{c['p99_ms']:.1f}", f"{c['routing_cpu_pct']:.0f}",
                         f"{c['routing_cpu_s_per_mfix']:,.0f}",
                         fmt_num(c["fixes_per_s_per_core"]),
                         f"{(c.get('cpu') or {}).get('other_cpu_pct', math.nan):.0f}",
                         c["errors"]])
        lines += [markdown_table(
            ["fixes / trace", "conc.", "calls/s", "fixes/s", "p50 ms", "p99 ms",
             "routing CPU %", "CPU s / M fixes", "fixes/s per core", "other CPU %",
             "errors"], rows, "rrrrrrrrrrr"), ""]
        lines += [
            "**4. Map matching: accuracy against the drives' ground truth** (`on the road`: "
            f"the matched point within {TOLERANCE_M:g} m of the route driven and no more "
            "than 40 m from the car, the simulator's test; `on the edge`: that, and its "
            "directed segment is one the route drives (`ComputeRoute` `include_segments`); "
            "the issue aims at 95 % on the right edge; `crawling`: the fixes of the jammed "
            "stretch alone).",
            "",
        ]
        rows = []
        for a in m["accuracy"]:
            rows.append([a["trace_fixes"], fmt_num(a["traces"]), fmt_num(a["fixes"]),
                         _pct(a["matched_share"], 1), _pct(a["on_road_share"], 1),
                         _pct(a["on_edge_share"], 1),
                         _yes(a["on_edge_share"] is not None
                              and a["on_edge_share"] >= 0.95),
                         (f"{_pct(a.get('crawling_on_road_share'), 1)} / "
                          f"{_pct(a.get('crawling_on_edge_share'), 1)} of "
                          f"{fmt_num(a['crawling'])}" if a.get("crawling") else "-"),
                         fmt_num(a["chains"])])
        lines += [markdown_table(
            ["fixes / trace", "traces", "fixes", "matched", "on the road", "on the edge",
             ">= 95 %", "crawling: road / edge", "chains"], rows, "rrrrrrcrr"), ""]
        if m.get("remeasured"):
            lines += [f"Tables 3 and 4 were measured again on {m['remeasured']} "
                      "(`--matching-only`), after the congestion runs above.", ""]
    elif m.get("error"):
        lines += [f"Map-matching throughput not measured: {m['error']}", ""]
    noisy = noisy_parts(result)
    if noisy:
        lines += ["Noise: the machine was not idle for every part (another run, e.g. `make "
                  "test`, shared it), so those numbers may be low or slow: "
                  + "; ".join(noisy) + ".", ""]
    lines.append(f"Raw numbers, every run's thinned time line included: "
                 f"`bench/results/{RESULTS}.json`.")
    return "\n".join(lines)


def write_report(result: Mapping[str, Any]) -> None:
    path = write_section(NAME, TITLE + "\n\n" + report(result))
    log(f"wrote the '{NAME}' section of {path}")


# =========================================================================== main

def amain(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    quiet = Quiet(args.quiet_max)
    result: dict[str, Any] = {
        "benchmark": NAME, "machine": machine_info(),
        "settings": {k: (list(v) if isinstance(v, (list, tuple)) else v)
                     for k, v in vars(args).items() if k != "report_only"},
        "profiles": [p.as_dict() for p in profiles(args)], "quiet": quiet.waits}
    step = Steps(2)
    fetched = data.fetch(["gothenburg", "monaco"], progress=log)
    gothenburg = fetched["gothenburg"]["network"]
    classes = road_classes(gothenburg)
    cache = Path(args.routing_cache)
    cache.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        infra = stack.enter_context(local_backends("maps-congestion", lambda m: log(f"  {m}")))
        if not infra.urls.mongo_uri:
            raise RuntimeError("no MongoDB: maps' location ingest needs one")
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="geoplex-bench-maps-congestion-")))
        log("  starting etcd and a broker...")
        etcd = etcd_infra(tmp / "etcd")
        urls = stack.enter_context(etcd)
        assert urls.etcd_endpoints
        broker = stack.enter_context(start_server_processes(
            [sys.executable, "-m", "geoplex.servers.broker"], 1,
            {"GEOPLEX_BROKER_PORT": "0", "GEOPLEX_BROKER_DATA_DIR": str(tmp / "broker"),
             "GEOPLEX_ETCD_ENDPOINTS": ",".join(urls.etcd_endpoints),
             "GEOPLEX_BROKER_ETCD_PREFIX":
                 f"/geoplex-bench/maps-congestion/{uuid.uuid4().hex[:8]}",
             "GEOPLEX_STATE_DIR": str(tmp / "broker-state"), **LOG_ENV}, ready_timeout=60))
        shared = Shared(broker.address, infra.urls.mongo_uri, gothenburg,
                        fetched["monaco"]["pbf"], classes, cache, tmp,
                        {"broker": broker.pids[0]})
        for label, key in (("mongo", "mongo"), ("etcd", "etcd")):
            procs = infra.procs if key == "mongo" else etcd.procs
            proc = procs.get(key)
            if proc is not None and proc.proc is not None:
                shared.pids[label] = proc.proc.pid
        if not args.no_congestion:
            step(1, "congestion", f"congestion runs: {len(profiles(args))} profiles x up to "
                 f"{len(args.seeds)} seeds, {args.drivers} drivers...")
            result["runs"] = congestion_part(args, shared, quiet, args.budget_min * 60,
                                             started)
        step(2, "matching", "map-matching throughput and accuracy (MatchTrace)...")
        try:
            result["matching"] = matching_part(args, shared, quiet)
        except (GeoplexError, ProcessError, RuntimeError) as exc:
            log(f"    failed: {type(exc).__name__}: {exc}"[:600])
            result["matching"] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
    step.done()
    result["step_s"] = step.seconds
    result["elapsed_s"] = time.perf_counter() - started
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    return result


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.maps_congestion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--drivers", type=int, default=40, help="simulated drivers per run")
    p.add_argument("--seeds", type=_int_list, default=[1, 2],
                   help="scenario seeds per profile (the first always runs)")
    p.add_argument("--congestion-start", type=float, default=30.0,
                   help="seconds into a run the congestion starts")
    p.add_argument("--congestion", type=float, default=120.0, help="seconds it lasts")
    p.add_argument("--defaults-after", type=float, default=240.0,
                   help="longest a defaults run goes on after the congestion ends")
    p.add_argument("--short-after", type=float, default=120.0,
                   help="longest a short-settings run goes on after the congestion ends")
    p.add_argument("--budget-min", type=float, default=12.0,
                   help="more seeds only while the whole run stays within this")
    p.add_argument("--matching-reserve", type=float, default=90.0,
                   help="seconds kept for the map-matching part when budgeting seeds")
    p.add_argument("--no-congestion", action="store_true", help="only the matching part")
    p.add_argument("--drives", type=int, default=12, help="seeded drives for MatchTrace")
    p.add_argument("--crawl-m", type=float, default=300.0,
                   help="metres in the middle of each drive driven in a jam")
    p.add_argument("--trace-fixes", type=_int_list, default=[6, 60],
                   help="fixes per MatchTrace call")
    p.add_argument("--concurrency", type=_int_list, default=[1, 4])
    p.add_argument("--rounds", type=int, default=2, help="rounds per matching row")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per round")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up per round")
    p.add_argument("--seed", type=int, default=20240611, help="the drives' seed")
    p.add_argument("--quiet-max", type=float, default=10.0,
                   help="longest wait for an idle machine before a timed part")
    p.add_argument("--routing-cache", default=str(ROUTING_CACHE),
                   help="the routing servers' graph cache (kept between runs)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: short runs, one seed, writes nothing")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--matching-only", action="store_true",
                   help="measure part 2 again into the last results, keeping part 1")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: re-render the section from the results file")
    return p


def matching_only(args: argparse.Namespace) -> dict[str, Any]:
    """Part 2 measured again into the last results (part 1 kept as it was)."""
    result = read_results(RESULTS)
    quiet = Quiet(args.quiet_max)
    fetched = data.fetch(["gothenburg"], progress=log)
    with tempfile.TemporaryDirectory(prefix="geoplex-bench-maps-congestion-") as tmp:
        shared = Shared("", "", fetched["gothenburg"]["network"], Path(), {},
                        Path(args.routing_cache), Path(tmp))
        result["matching"] = matching_part(args, shared, quiet)
    info = machine_info()
    result["matching"]["remeasured"] = info["date"]
    result["matching"]["machine"] = info
    result["matching"]["quiet"] = quiet.waits
    result["quiet"] = [*(w for w in result.get("quiet", []) if not
                         str(w.get("label", "")).startswith("MatchTrace")), *quiet.waits]
    result["matching_settings"] = {k: (list(v) if isinstance(v, (list, tuple)) else v)
                                   for k, v in vars(args).items()}
    for key in ("drives", "trace_fixes", "concurrency", "rounds", "duration", "warmup",
                "seed", "crawl_m"):
        result["settings"][key] = result["matching_settings"][key]
    return result


def main() -> None:
    args = parser().parse_args()
    if args.report_only:
        write_report(read_results(RESULTS))
        return
    if args.matching_only:
        result = matching_only(args)
        print("\n" + report(result), flush=True)
        if not args.no_write:
            log(f"wrote {write_results(RESULTS, result)}")
            write_report(result)
        return
    if args.quick:
        args.no_write, args.drivers, args.seeds = True, 12, args.seeds[:1]
        args.congestion_start, args.congestion = 20.0, 40.0
        args.defaults_after, args.short_after = 30.0, 60.0
        args.drives, args.rounds, args.duration, args.warmup = 3, 1, 1.5, 0.3
        args.quiet_max = 1.0
    run_and_report(lambda: amain(args), RESULTS, report, write_report, no_write=args.no_write)


if __name__ == "__main__":
    main()
