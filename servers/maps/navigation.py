"""Navigate: a driver's active route, kept up to date from their fixes and live traffic.

Pure parts (no I/O; unit-tested without servers):

- :class:`Track`: one route's geometry. Routing's polyline has one point per segment
  boundary (its start, the head of every segment but the last, its end), so polyline edge
  ``k`` *is* the directed segment ``segment_ids[k]``. Each edge gets a duration: the
  route's steps (distance and time, with traffic) spread over the edges they cover, scaled
  to the route's duration. The remaining ETA from a point is the rest of its edge plus the
  edges after it; a traffic change on segment ``s`` rescales that edge's time by
  ``old speed / new speed``.
- :class:`Guidance`: a session's state machine: fixes are projected onto the track
  (progress only moves forward), off route after two fixes more than ``OFF_ROUTE_M`` away
  (or one beyond ``FAR_OFF_ROUTE_M``), arrived within ``ARRIVED_M`` of the destination.
- :func:`should_reroute`: a new route is offered only when it saves at least
  ``max(min_saving, 10 % of the remaining time)``, so it cannot flap between two routes
  whose times differ by noise.
- :class:`SessionIndex`: the inverted index ``segment -> sessions`` over each session's
  *remaining* segments, so a traffic change re-evaluates only the sessions it concerns.
- :func:`speed_changes`: the diff of two traffic snapshots (new, gone, or speed moved by
  more than ``SPEED_CHANGE_SHARE``).
- :class:`LatestQueue`: a session's outgoing queue, bounded to one pending update:
  a newer update replaces an older one (a new route keeps its route and takes the newer
  ETA), counting what it coalesced.

:class:`Navigator` does the I/O: ComputeRoute through routing, the watcher that polls
routing's ListRegions (about once a second) and on a new metric diffs GetTraffic against
its previous snapshot, per-session debounced re-evaluation, and the limits. It learns of
fixes from :meth:`LocationIngest.observe` (the same user's accepted fixes, once the
broker acknowledged them). Positions are never logged nor put into errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import AsyncGenerator, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from geoplex.clients.errors import (FailedPreconditionError, GeoplexError, GeoplexRpcError,
                                    InvalidArgumentError, NotFoundError)
from geoplex.maps.v1 import maps_pb2 as pb
from geoplex.routing.v1 import routing_pb2 as rpb
from geoplex.servers._runtime.errors import (FailedPrecondition, InvalidArgument, NotFound,
                                             ResourceExhausted, Unavailable)
from geoplex.servers._runtime.errors import GeoplexError as ServiceError
from geoplex.servers._runtime.geo import EARTH_RADIUS_M, haversine_m
from geoplex.servers._runtime.latlng import location_from_pb

from .locations import Fix

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
Point = tuple[float, float]  # (latitude, longitude)

OFF_ROUTE_M = 45.0          # farther than this from the route, twice in a row: off route
FAR_OFF_ROUTE_M = 250.0     # farther than this once: off route at once
ARRIVED_M = 30.0            # this near the destination: arrived
BACKTRACK_M = 50.0          # a fix may project this far behind the progress (GPS noise)
DEFAULT_MIN_SAVING_S = 60.0
MIN_SAVING_SHARE = 0.10
MAX_MIN_SAVING_S = 86_400.0
SPEED_CHANGE_SHARE = 0.03   # a segment's speed moving less than this is no change
TRAFFIC_SEGMENTS = 10_000   # what one GetTraffic of a region's box asks for
ROUTE_TIMEOUT_S = 10.0

STARTED, PROGRESS, TRAFFIC = pb.NavigateResponse.REASON_STARTED, \
    pb.NavigateResponse.REASON_PROGRESS, pb.NavigateResponse.REASON_TRAFFIC
FASTER_ROUTE, OFF_ROUTE, ARRIVED = pb.NavigateResponse.REASON_FASTER_ROUTE, \
    pb.NavigateResponse.REASON_OFF_ROUTE, pb.NavigateResponse.REASON_ARRIVED
Reason: TypeAlias = pb.NavigateResponse.Reason.ValueType
MODE_NAMES = ("TRAVEL_MODE_DRIVE", "TRAVEL_MODE_BICYCLE", "TRAVEL_MODE_WALK")


# -- the route's geometry and time ---------------------------------------------------------

def decode_polyline(text: str, precision: int = 5) -> list[Point]:
    """Google's encoded polyline as (lat, lon) points."""
    points: list[Point] = []
    index = lat = lon = 0
    factor = 10.0 ** precision
    n = len(text)
    while index < n:
        deltas = []
        for _ in range(2):
            shift = result = 0
            while True:
                b = ord(text[index]) - 63
                index += 1
                result |= (b & 0x1F) << shift
                shift += 5
                if b < 0x20:
                    break
            deltas.append(~(result >> 1) if result & 1 else result >> 1)
        lat += deltas[0]
        lon += deltas[1]
        points.append((lat / factor, lon / factor))
    return points


@dataclass(frozen=True, slots=True)
class Projection:
    along_m: float    # from the route's start, along it, to the projected point
    offset_m: float   # from the fix to the route
    edge: int


class Track:
    """One route: its polyline edges (each one of its segments), their lengths and times."""

    def __init__(self, route: rpb.Route) -> None:
        points = decode_polyline(route.polyline)
        if len(points) < 2:
            points = points * 2 if points else [(0.0, 0.0), (0.0, 0.0)]
        lat = np.array([p[0] for p in points])
        lon = np.array([p[1] for p in points])
        self.lat0, self.lon0 = float(lat[0]), float(lon[0])
        self.x, self.y = self._xy(lat, lon)
        self.end: Point = points[-1]
        self.edge_m: F64 = np.hypot(np.diff(self.x), np.diff(self.y))
        self.cum: F64 = np.concatenate([[0.0], np.cumsum(self.edge_m)])
        self.length_m = float(self.cum[-1])
        distance = float(route.distance_meters)
        self.distance_m = distance if distance > 0 else self.length_m
        # reported distances are the route's own: the polyline's rounding scaled away
        self.scale = self.distance_m / self.length_m if self.length_m > 0 else 1.0
        self.duration_s = route.duration.ToNanoseconds() / 1e9
        self.edge_s: F64 = self._edge_times(route)
        ids = list(route.segment_ids)
        edges = self.edge_m.size
        # one segment per edge, as routing draws it; anything else: the route is one block
        self.segment_of_edge: list[int] | None = ids if len(ids) == edges else None
        self.all_segments = ids

    def _xy(self, lat: F64, lon: F64) -> tuple[F64, F64]:
        k = math.radians(1.0) * EARTH_RADIUS_M
        x: F64 = (lon - self.lon0) * k * math.cos(math.radians(self.lat0))
        y: F64 = (lat - self.lat0) * k
        return x, y

    def _edge_times(self, route: rpb.Route) -> F64:
        edges = self.edge_m.size
        if self.duration_s <= 0 or edges == 0:
            return np.zeros(edges)
        bounds = [0.0]
        times = [0.0]
        for step in route.steps:
            bounds.append(bounds[-1] + max(float(step.distance_meters), 0.0))
            times.append(times[-1] + max(step.duration.ToNanoseconds() / 1e9, 0.0))
        at = self.cum * self.scale
        edge_s: F64
        if bounds[-1] > 0 and times[-1] > 0:
            edge_s = np.diff(np.interp(at, np.array(bounds), np.array(times)))
        else:
            edge_s = self.edge_m.copy()
        total = float(edge_s.sum())
        if total <= 0:  # no usable steps: the time spread by length
            edge_s = self.edge_m.copy()
            total = float(edge_s.sum())
        if total <= 0:
            return np.full(edges, self.duration_s / edges)
        scaled: F64 = edge_s * (self.duration_s / total)
        return scaled

    def project(self, lat: float, lon: float, from_m: float = 0.0) -> Projection:
        """The nearest point of the route to (lat, lon), looking no further back than
        ``BACKTRACK_M`` behind ``from_m`` (so a route passing near itself keeps its order)."""
        px, py = self._xy(np.array([lat]), np.array([lon]))
        x0, y0 = self.x[:-1], self.y[:-1]
        dx, dy = np.diff(self.x), np.diff(self.y)
        length2 = dx * dx + dy * dy
        t = np.where(length2 > 0, ((px[0] - x0) * dx + (py[0] - y0) * dy)
                     / np.maximum(length2, 1e-12), 0.0)
        t = np.clip(t, 0.0, 1.0)
        dist = np.hypot(x0 + t * dx - px[0], y0 + t * dy - py[0])
        dist[self.cum[1:] < from_m - BACKTRACK_M] = np.inf
        k = int(np.argmin(dist))
        if not math.isfinite(float(dist[k])):  # nothing ahead (cannot happen: last edge)
            k = int(self.edge_m.size - 1)
        return Projection(float(self.cum[k] + t[k] * self.edge_m[k]), float(dist[k]), k)

    def edge_at(self, along_m: float) -> int:
        k = int(np.searchsorted(self.cum, along_m, side="right")) - 1
        return min(max(k, 0), int(self.edge_m.size) - 1)

    def remaining_s(self, along_m: float) -> float:
        k = self.edge_at(along_m)
        part = (float(self.cum[k + 1]) - along_m) / float(self.edge_m[k]) \
            if self.edge_m[k] > 0 else 0.0
        return float(self.edge_s[k]) * min(max(part, 0.0), 1.0) + float(self.edge_s[k + 1:].sum())

    def remaining_m(self, along_m: float) -> float:
        return max(self.length_m - along_m, 0.0) * self.scale

    def remaining_segments(self, along_m: float) -> list[int]:
        """The segments still to drive (the one under ``along_m`` first)."""
        if self.segment_of_edge is None:
            return list(self.all_segments)
        return self.segment_of_edge[self.edge_at(along_m):]

    def apply_speeds(self, changes: dict[int, tuple[float, float]], from_m: float) -> bool:
        """Rescale the time of every edge still ahead whose segment's speed changed from
        ``old`` to ``new`` km/h (``changes[segment] = (old, new)``); True if any did."""
        if self.segment_of_edge is None:
            return False
        touched = False
        for k in range(self.edge_at(from_m), len(self.segment_of_edge)):
            change = changes.get(self.segment_of_edge[k])
            if change is not None and change[0] > 0 and change[1] > 0:
                self.edge_s[k] *= change[0] / change[1]
                touched = True
        return touched


# -- one session's logic -------------------------------------------------------------------

class Guidance:
    """Where the driver is on their route, and what a new fix means."""

    def __init__(self, route: rpb.Route, metric_version: int, origin: Point,
                 destination: Point) -> None:
        self.destination = destination
        self.position = origin
        self.off_count = 0
        self.route = route
        self.track = Track(route)
        self.metric_version = metric_version
        self.along_m = 0.0

    def adopt(self, route: rpb.Route, metric_version: int) -> None:
        """Drive ``route`` from now on (it starts where the driver is)."""
        self.route = route
        self.track = Track(route)
        self.metric_version = metric_version
        self.along_m = 0.0
        self.off_count = 0

    def observe(self, lat: float, lon: float) -> Reason | None:
        """PROGRESS, OFF_ROUTE, ARRIVED, or None (nothing to tell) for a new fix."""
        self.position = (lat, lon)
        if min(haversine_m(lat, lon, *self.destination),
               haversine_m(lat, lon, *self.track.end)) <= ARRIVED_M:
            return ARRIVED
        p = self.track.project(lat, lon, self.along_m)
        if p.offset_m > OFF_ROUTE_M:
            self.off_count += 1
            if self.off_count >= 2 or p.offset_m > FAR_OFF_ROUTE_M:
                return OFF_ROUTE
            return None
        self.off_count = 0
        if p.along_m > self.along_m:
            self.along_m = p.along_m
            return PROGRESS
        return None

    def remaining(self) -> tuple[float, float]:
        """(seconds, metres) from the driver's progress to the destination."""
        return self.track.remaining_s(self.along_m), self.track.remaining_m(self.along_m)

    def remaining_segments(self) -> list[int]:
        return self.track.remaining_segments(self.along_m)

    def apply_speeds(self, changes: dict[int, tuple[float, float]]) -> bool:
        return self.track.apply_speeds(changes, self.along_m)

    def drives_same_road(self, route: rpb.Route) -> bool:
        """Whether ``route`` (from the driver's position) is the rest of the current one."""
        ids = list(route.segment_ids)
        rest = self.remaining_segments()
        return bool(ids) and (ids == rest or ids == rest[1:] or ids[1:] == rest)


def min_saving_s(requested: float) -> float:
    return requested if requested > 0 else DEFAULT_MIN_SAVING_S


def should_reroute(current_s: float, candidate_s: float, min_saving: float) -> bool:
    """A candidate replaces the current route only when it saves at least ``min_saving``
    seconds and at least 10 % of the current remaining time."""
    return current_s - candidate_s >= max(min_saving, MIN_SAVING_SHARE * current_s)


# -- the index and the traffic diff ----------------------------------------------------------

GraphKey = tuple[str, int]  # (region, routing TravelMode)


class SessionIndex:
    """``(region, mode, segment) -> sessions`` over each session's remaining segments."""

    def __init__(self) -> None:
        self._by_segment: dict[GraphKey, dict[int, set[int]]] = {}
        self._of_session: dict[int, tuple[GraphKey, frozenset[int]]] = {}

    def put(self, session: int, key: GraphKey, segments: Iterable[int]) -> None:
        """Index ``session`` under exactly ``segments`` (replacing what it had)."""
        new = frozenset(segments)
        old_key, old = self._of_session.get(session, (key, frozenset()))
        if old_key != key:
            self.remove(session)
            old = frozenset()
        table = self._by_segment.setdefault(key, {})
        for s in old - new:
            holders = table.get(s)
            if holders is not None:
                holders.discard(session)
                if not holders:
                    del table[s]
        for s in new - old:
            table.setdefault(s, set()).add(session)
        self._of_session[session] = (key, new)

    def remove(self, session: int) -> None:
        found = self._of_session.pop(session, None)
        if found is None:
            return
        key, segments = found
        table = self._by_segment.get(key, {})
        for s in segments:
            holders = table.get(s)
            if holders is not None:
                holders.discard(session)
                if not holders:
                    del table[s]
        if not table:
            self._by_segment.pop(key, None)

    def sessions_on(self, key: GraphKey, segments: Iterable[int]) -> set[int]:
        table = self._by_segment.get(key)
        if not table:
            return set()
        out: set[int] = set()
        for s in segments:
            holders = table.get(s)
            if holders:
                out |= holders
        return out

    def keys(self) -> set[GraphKey]:
        """The graphs some session drives on."""
        return {key for key, _ in self._of_session.values()}

    def segments_of(self, session: int) -> frozenset[int]:
        return self._of_session.get(session, (("", 0), frozenset()))[1]


Speeds = dict[int, tuple[float, float]]  # segment -> (live km/h, free-flow km/h)


def speed_changes(old: Speeds, new: Speeds) -> dict[int, tuple[float, float]]:
    """``segment -> (old km/h, new km/h)`` for every segment that appeared, went back to
    free flow, or whose speed moved by more than ``SPEED_CHANGE_SHARE``."""
    out: dict[int, tuple[float, float]] = {}
    for s, (speed, free) in new.items():
        before = old.get(s)
        if before is None:
            out[s] = (free, speed)
        elif abs(speed - before[0]) > SPEED_CHANGE_SHARE * max(before[0], 1e-6):
            out[s] = (before[0], speed)
    for s, (speed, free) in old.items():
        if s not in new:
            out[s] = (speed, free)
    return out


# -- the outgoing queue ----------------------------------------------------------------------

@dataclass(slots=True)
class Update:
    reason: Reason
    remaining_s: float
    remaining_m: float
    route: rpb.Route | None = None


class LatestQueue:
    """At most one pending update: a newer one replaces it; a pending new route is kept
    and takes the newer ETA; ARRIVED (or close) ends the queue after what is pending."""

    def __init__(self) -> None:
        self._pending: Update | None = None
        self._closed = False
        self._error: Exception | None = None
        self._ready = asyncio.Event()
        self.coalesced = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, update: Update) -> None:
        if self._closed:
            return
        pending = self._pending
        if pending is None:
            self._pending = update
        else:
            self.coalesced += 1
            if update.route is None and pending.route is not None \
                    and update.reason != ARRIVED:
                pending.remaining_s, pending.remaining_m = update.remaining_s, update.remaining_m
            else:
                self._pending = update
        if update.reason == ARRIVED:
            self._closed = True
        self._ready.set()

    def close(self, error: Exception | None = None) -> None:
        """No more updates; ``error``: what the reader gets once the pending one is read."""
        if not self._closed:
            self._closed = True
            self._error = error
        self._ready.set()

    async def get(self) -> Update | None:
        """The next update; None once closed and drained (or the close's error, raised)."""
        while True:
            if self._pending is not None:
                update, self._pending = self._pending, None
                if not self._closed:
                    self._ready.clear()
                return update
            if self._closed:
                if self._error is not None:
                    raise self._error
                return None
            self._ready.clear()
            await self._ready.wait()


# -- requests and responses ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NavigateQuery:
    origin: Point
    destination: Point
    mode: int              # routing TravelMode
    min_saving_s: float


def query_from_pb(request: pb.NavigateRequest) -> NavigateQuery:
    origin = location_from_pb(request.origin, request.HasField("origin"), "origin")
    destination = location_from_pb(request.destination, request.HasField("destination"),
                                   "destination")
    mode = int(request.travel_mode)
    if mode not in (rpb.TRAVEL_MODE_UNSPECIFIED, rpb.TRAVEL_MODE_DRIVE,
                    rpb.TRAVEL_MODE_BICYCLE, rpb.TRAVEL_MODE_WALK):
        raise InvalidArgument("travel_mode", "unknown travel mode", allowed=MODE_NAMES)
    saving = request.reroute_min_saving_seconds
    if not (math.isfinite(saving) and 0.0 <= saving <= MAX_MIN_SAVING_S):
        raise InvalidArgument("reroute_min_saving_seconds",
                              f"must be in 0..{MAX_MIN_SAVING_S:.0f} (0 means "
                              f"{DEFAULT_MIN_SAVING_S:.0f})")
    return NavigateQuery(origin, destination, mode or rpb.TRAVEL_MODE_DRIVE,
                         min_saving_s(saving))


def update_to_pb(update: Update, now: float) -> pb.NavigateResponse:
    out = pb.NavigateResponse(reason=update.reason,
                              remaining_distance_meters=round(update.remaining_m, 1))
    if update.route is not None:
        out.route.CopyFrom(update.route)
    seconds = max(update.remaining_s, 0.0)
    out.remaining_duration.FromNanoseconds(int(round(seconds * 1e9)))
    out.arrival_time.FromNanoseconds(int(round((now + seconds) * 1e9)))
    return out


# -- the I/O side ----------------------------------------------------------------------------

class RoutingPort(Protocol):
    """What navigation asks of routing (RoutingClient has these)."""

    async def route(self, origin: Point, destination: Point, *, mode: str | int = ...,
                    traffic_aware: bool = ..., include_segments: bool = ...,
                    timeout: float | None = ...) -> rpb.ComputeRouteResponse: ...

    async def get_traffic(self, region: str, low: Point, high: Point, *,
                          mode: str | int = ..., max_segments: int = ...,
                          timeout: float | None = ...) -> rpb.GetTrafficResponse: ...

    async def regions(self, *, timeout: float | None = ...) -> list[rpb.Region]: ...


@dataclass(eq=False)
class Session:
    id: int
    user: str
    query: NavigateQuery
    queue: LatestQueue = field(default_factory=LatestQueue)
    key: GraphKey = ("", 0)
    guidance: Guidance | None = None
    last_fix_time: float = -math.inf
    rerouting: bool = False
    dirty: bool = False
    worker: asyncio.Task[None] | None = None


def _routing_failed(exc: GeoplexError) -> ServiceError:
    """Routing's answer to a bad route request, as this service's error (routing's
    messages name fields and distances, never a location)."""
    if isinstance(exc, InvalidArgumentError):
        return InvalidArgument(exc.field or "origin", exc.message)
    if isinstance(exc, NotFoundError):
        return NotFound(exc.message, reason=exc.reason or None)
    if isinstance(exc, FailedPreconditionError):
        return FailedPrecondition(exc.message, reason=exc.reason or None, metadata=exc.metadata)
    name = exc.code.name if isinstance(exc, GeoplexRpcError) else type(exc).__name__
    return Unavailable(f"routing did not answer ({name}); retry", reason="ROUTING_UNAVAILABLE")


class Navigator:
    """The navigation sessions of this process, their index, and the traffic watcher."""

    def __init__(self, routing: RoutingPort, *, max_sessions: int = 10_000,
                 max_per_user: int = 4, poll_s: float = 1.0, debounce_s: float = 0.3) -> None:
        self.routing = routing
        self.max_sessions = max_sessions
        self.max_per_user = max_per_user
        self.poll_s = poll_s
        self.debounce_s = debounce_s
        self.index = SessionIndex()
        self.sessions: dict[int, Session] = {}
        self._by_user: dict[str, set[int]] = {}
        self._ids = itertools.count(1)
        self._snapshots: dict[GraphKey, tuple[Speeds, int]] = {}  # speeds, metric version
        self._stamps: dict[GraphKey, tuple[int, int]] = {}  # (metric version, metric time)
        self._boxes: dict[str, tuple[Point, Point]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.evaluations = 0  # re-evaluations run (for tests and metrics)

    async def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch_forever(), name="navigation-traffic")

    async def shutdown(self) -> None:
        """End every stream with UNAVAILABLE (the server is stopping)."""
        for session in list(self.sessions.values()):
            session.queue.close(Unavailable("the server is shutting down; navigate again",
                                            reason="SHUTTING_DOWN"))

    async def stop(self) -> None:
        await self.shutdown()
        tasks = [t for t in (self._watcher, *self._tasks) if t is not None]
        for session in self.sessions.values():
            if session.worker is not None:
                tasks.append(session.worker)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- sessions --------------------------------------------------------------------------

    async def navigate(self, user: str, query: NavigateQuery) -> AsyncGenerator[Update, None]:
        """The session's updates until the driver arrives; the session is gone after."""
        session = self._admit(user, query)
        try:
            await self._start(session)
            while (update := await session.queue.get()) is not None:
                yield update
        finally:
            self.close(session)

    def _admit(self, user: str, query: NavigateQuery) -> Session:
        if len(self.sessions) >= self.max_sessions:
            raise ResourceExhausted(
                f"this server holds its limit of {self.max_sessions} navigation sessions "
                "(GEOPLEX_MAPS_NAVIGATE_MAX_SESSIONS); retry later",
                reason="TOO_MANY_SESSIONS", metadata={"limit": str(self.max_sessions)})
        mine = self._by_user.setdefault(user, set())
        if len(mine) >= self.max_per_user:
            raise ResourceExhausted(
                f"at most {self.max_per_user} navigation sessions per user "
                "(GEOPLEX_MAPS_NAVIGATE_MAX_PER_USER); end one first",
                reason="TOO_MANY_USER_SESSIONS", metadata={"limit": str(self.max_per_user)})
        session = Session(next(self._ids), user, query)
        self.sessions[session.id] = session
        mine.add(session.id)
        return session

    def close(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        session.queue.close()
        mine = self._by_user.get(session.user)
        if mine is not None:
            mine.discard(session.id)
            if not mine:
                del self._by_user[session.user]
        self.index.remove(session.id)
        if session.worker is not None and session.worker is not asyncio.current_task():
            session.worker.cancel()
        live = self.index.keys()
        for key in [k for k in self._snapshots if k not in live]:
            del self._snapshots[key]  # nobody drives there: the next session fetches anew
            self._stamps.pop(key, None)

    async def _route_from(self, session: Session, origin: Point) -> rpb.ComputeRouteResponse:
        try:
            return await self.routing.route(origin, session.query.destination,
                                            mode=session.query.mode, traffic_aware=True,
                                            include_segments=True, timeout=ROUTE_TIMEOUT_S)
        except GeoplexError as exc:
            raise _routing_failed(exc) from None

    async def _start(self, session: Session) -> None:
        answer = await self._route_from(session, session.query.origin)
        if not answer.routes:
            raise NotFound("no route: routing found none", reason="NO_ROUTE")
        route = answer.routes[0]
        guidance = Guidance(route, answer.metric_version, session.query.origin,
                            session.query.destination)
        session.guidance = guidance
        session.key = (answer.region, session.query.mode)
        self.index.put(session.id, session.key, guidance.remaining_segments())
        remaining_s, remaining_m = guidance.remaining()
        session.queue.put(Update(STARTED, remaining_s, remaining_m, route))
        await self._ensure_snapshot(session.key)
        snapshot = self._snapshots.get(session.key)
        if snapshot is not None and snapshot[1] != answer.metric_version:
            self._mark(session)  # traffic moved between the route and the snapshot

    # -- fixes -----------------------------------------------------------------------------

    def on_fixes(self, user: str, fixes: Sequence[Fix]) -> None:
        """The user's accepted fixes (time order), from the ingest once the broker has them."""
        for sid in list(self._by_user.get(user, ())):
            session = self.sessions.get(sid)
            if session is not None:
                self._observe(session, fixes)

    def _observe(self, session: Session, fixes: Sequence[Fix]) -> None:
        guidance = session.guidance
        if guidance is None or session.queue.closed:
            return
        progressed = False
        for f in fixes:
            if f.lat is None or f.lon is None or f.time is None \
                    or f.time <= session.last_fix_time:
                continue  # a late batch: older than what the session has seen
            session.last_fix_time = f.time
            if session.rerouting:
                guidance.position = (f.lat, f.lon)
                continue
            verdict = guidance.observe(f.lat, f.lon)
            if verdict == ARRIVED:
                session.queue.put(Update(ARRIVED, 0.0, 0.0))
                return
            if verdict == OFF_ROUTE:
                session.rerouting = True
                self._spawn(self._reroute(session))
                return
            progressed |= verdict == PROGRESS
        if progressed:
            self.index.put(session.id, session.key, guidance.remaining_segments())
            remaining_s, remaining_m = guidance.remaining()
            session.queue.put(Update(PROGRESS, remaining_s, remaining_m))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reroute(self, session: Session) -> None:
        guidance = session.guidance
        assert guidance is not None
        try:
            answer = await self._route_from(session, guidance.position)
        except ServiceError as exc:  # no road near the driver, routing down: next fix retries
            logger.info("navigation: no new route off the route (%s)", type(exc).__name__)
            guidance.off_count = 1
            session.rerouting = False
            return
        session.rerouting = False
        if session.id not in self.sessions or not answer.routes:
            return
        route = answer.routes[0]
        guidance.adopt(route, answer.metric_version)
        self.index.put(session.id, session.key, guidance.remaining_segments())
        remaining_s, remaining_m = guidance.remaining()
        session.queue.put(Update(OFF_ROUTE, remaining_s, remaining_m, route))

    # -- traffic ---------------------------------------------------------------------------

    def _mark(self, session: Session) -> None:
        """Re-evaluate ``session`` soon: changes within ``debounce_s`` make one evaluation."""
        session.dirty = True
        if session.worker is None or session.worker.done():
            session.worker = asyncio.create_task(self._evaluate_when_quiet(session),
                                                 name="navigation-evaluate")

    async def _evaluate_when_quiet(self, session: Session) -> None:
        await asyncio.sleep(self.debounce_s)
        while session.dirty and session.id in self.sessions:
            session.dirty = False
            try:
                await self._evaluate(session)
            except Exception:  # noqa: BLE001 - one session's failure must not stop others
                logger.exception("navigation: re-evaluating a session failed")

    async def _evaluate(self, session: Session) -> None:
        guidance = session.guidance
        if guidance is None or session.rerouting or session.queue.closed:
            return
        self.evaluations += 1
        current_s, current_m = guidance.remaining()
        try:
            answer = await self._route_from(session, guidance.position)
        except ServiceError as exc:
            logger.info("navigation: traffic re-evaluation without a route (%s)",
                        type(exc).__name__)
            session.queue.put(Update(TRAFFIC, current_s, current_m))
            return
        if not answer.routes or session.id not in self.sessions or session.rerouting:
            return
        best = answer.routes[0]
        best_s = best.duration.ToNanoseconds() / 1e9
        if guidance.drives_same_road(best):
            # the same road from where the driver is: routing's time on the new metric is
            # exactly the current route's
            guidance.adopt(best, answer.metric_version)
            self.index.put(session.id, session.key, guidance.remaining_segments())
            remaining_s, remaining_m = guidance.remaining()
            session.queue.put(Update(TRAFFIC, remaining_s, remaining_m))
        elif should_reroute(current_s, best_s, session.query.min_saving_s):
            guidance.adopt(best, answer.metric_version)
            self.index.put(session.id, session.key, guidance.remaining_segments())
            remaining_s, remaining_m = guidance.remaining()
            session.queue.put(Update(FASTER_ROUTE, remaining_s, remaining_m, best))
        else:
            session.queue.put(Update(TRAFFIC, current_s, current_m))

    def traffic_changed(self, key: GraphKey, changes: dict[int, tuple[float, float]],
                        version: int) -> set[int]:
        """Tell the sessions whose remaining route holds a changed segment; their ids."""
        affected = self.index.sessions_on(key, changes)
        for sid in affected:
            session = self.sessions[sid]
            guidance = session.guidance
            # a route made on this metric (or a newer one) already has these speeds
            if guidance is not None and version > guidance.metric_version:
                guidance.apply_speeds(changes)
            self._mark(session)
        return affected

    async def _box(self, region: str) -> tuple[Point, Point] | None:
        if region not in self._boxes:
            for r in await self.routing.regions(timeout=ROUTE_TIMEOUT_S):
                self._boxes[r.name] = ((r.low.latitude, r.low.longitude),
                                       (r.high.latitude, r.high.longitude))
        return self._boxes.get(region)

    async def _fetch(self, key: GraphKey) -> tuple[Speeds, int] | None:
        box = await self._box(key[0])
        if box is None:
            return None
        answer = await self.routing.get_traffic(key[0], box[0], box[1], mode=key[1],
                                                max_segments=TRAFFIC_SEGMENTS,
                                                timeout=ROUTE_TIMEOUT_S)
        if answer.truncated:
            logger.warning("navigation: traffic in %s exceeds %d segments; watching the "
                           "slowest", key[0], TRAFFIC_SEGMENTS)
        return ({s.segment_id: (s.speed_kmh, s.free_flow_speed_kmh) for s in answer.segments},
                answer.metric_version)

    async def _ensure_snapshot(self, key: GraphKey) -> None:
        if key in self._snapshots:
            return
        try:
            fetched = await self._fetch(key)
        except GeoplexError as exc:
            logger.warning("navigation: no traffic snapshot yet (%s)", type(exc).__name__)
            return
        if fetched is not None and key not in self._snapshots:
            self._snapshots[key] = fetched

    async def poll_once(self) -> None:
        """One look at routing's metrics: for each graph a session drives on whose metric
        changed, fetch its traffic, diff it with the last snapshot, tell the sessions."""
        watched = self.index.keys()
        if not watched:
            return
        for region in await self.routing.regions(timeout=ROUTE_TIMEOUT_S):
            self._boxes[region.name] = ((region.low.latitude, region.low.longitude),
                                        (region.high.latitude, region.high.longitude))
            for graph in region.graphs:
                key = (region.name, int(graph.travel_mode))
                if key not in watched:
                    continue
                stamp = (graph.metric_version, graph.metric_time.ToNanoseconds())
                if self._stamps.get(key) == stamp:
                    continue
                fetched = await self._fetch(key)
                if fetched is None:
                    continue
                self._stamps[key] = stamp
                old = self._snapshots.get(key)
                self._snapshots[key] = fetched
                if old is None:
                    continue  # the first look: the base for the next diff
                changes = speed_changes(old[0], fetched[0])
                if changes:
                    self.traffic_changed(key, changes, fetched[1])

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll_once()
            except GeoplexError as exc:
                logger.warning("navigation: traffic watch failed (%s); next round retries",
                               type(exc).__name__)
            except Exception:  # noqa: BLE001 - the watcher must outlive one bad round
                logger.exception("navigation: traffic watch round failed")

