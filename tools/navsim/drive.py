"""One simulated driver: a route driven in real time, GPS fixes, batches to send.

A :class:`Trip` is a route from ComputeRoute as the driver sees it: its polyline
(:class:`~.geometry.Line`), the speed along it (:class:`SpeedProfile`): each road segment
driven at the free-flow speed the router gives that segment (the route's
``segment_free_flow_speeds_kmh``), the road label of each step (what the driver knows it
drove, for judging the map matcher) and the stretches of it that run along the arterial.

Per segment, not per step: a step is one street, and its average speed (its distance
over its duration) mixes the street's faster and slower stretches and the time the
router counts for the turn into it, so a car driving a whole step at that average is
slower than free flow on some segments and faster on others, and live traffic would
(rightly) report the difference. Nor from a traffic-aware route's durations: a car drives
at the road's speed, not at the router's estimate of it, or that estimate would feed
itself. Turn costs are not driven: the router's estimate of the time a turn takes. :func:`advance_along` moves a position along it for some seconds at a speed
that is constant between breaks (step ends, the arterial's ends), exactly: no time step
error. A :class:`Driver` takes a fix every second (true position plus bounded GPS
noise) and hands the fixes it holds over as one batch every ``batch_s`` seconds.

Pure: no gRPC; the run loop (:mod:`.run`) does the calls.
"""

from __future__ import annotations

import bisect
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .geometry import GpsNoise, Line, Point, in_stretches
from .scenario import StepInfo

MIN_SPEED_MPS = 1.0    # a step that claims less (a zero-length turn) is driven at this


@dataclass(frozen=True, slots=True)
class SpeedProfile:
    """Piecewise constant speed along a line: piece k ends at ``ends[k]`` metres."""

    ends: tuple[float, ...]
    mps: tuple[float, ...]
    labels: tuple[str, ...]    # the street of each piece (what the driver knows it drove)

    def piece(self, along_m: float) -> int:
        return min(bisect.bisect_right(self.ends, along_m), len(self.ends) - 1)

    def speed_at(self, along_m: float) -> float:
        return self.mps[self.piece(along_m)]

    def label_at(self, along_m: float) -> str:
        return self.labels[self.piece(along_m)]


def profile_from_steps(steps: Sequence[StepInfo], line_length_m: float) -> SpeedProfile:
    """Each step driven at its own free-flow speed, its distance scaled onto the line."""
    pieces = [s for s in steps if s.distance_m > 0]
    total = sum(s.distance_m for s in pieces)
    if not pieces or total <= 0:
        return SpeedProfile((line_length_m,), (10.0,), ("",))
    scale = line_length_m / total
    ends: list[float] = []
    at = 0.0
    for s in pieces:
        at += s.distance_m * scale
        ends.append(at)
    ends[-1] = line_length_m
    speeds = tuple(max(MIN_SPEED_MPS, s.distance_m / s.seconds) if s.seconds > 0 else 10.0
                   for s in pieces)
    return SpeedProfile(tuple(ends), speeds, tuple(s.name for s in pieces))


def profile_from_segments(distances_m: Sequence[float], speeds_kmh: Sequence[float],
                          steps: Sequence[StepInfo], line_length_m: float) -> SpeedProfile:
    """Each segment driven at its own free-flow speed (``speeds_kmh``), its distance driven
    (``distances_m``) scaled onto the line; each piece labelled with the street of the
    step it is in. Without segments: :func:`profile_from_steps`."""
    pieces = [(d, v) for d, v in zip(distances_m, speeds_kmh) if d > 0]
    total = sum(d for d, _ in pieces)
    if not pieces or total <= 0:
        return profile_from_steps(steps, line_length_m)
    scale = line_length_m / total
    ends: list[float] = []
    at = 0.0
    for d, _ in pieces:
        at += d * scale
        ends.append(at)
    ends[-1] = line_length_m
    named = [s for s in steps if s.distance_m > 0]
    step_total = sum(s.distance_m for s in named)
    step_ends: list[float] = []
    at = 0.0
    for s in named:
        at += s.distance_m * line_length_m / step_total if step_total > 0 else 0.0
        step_ends.append(at)
    labels: list[str] = []
    start = 0.0
    for end in ends:
        k = bisect.bisect_right(step_ends, (start + end) / 2)
        labels.append(named[min(k, len(named) - 1)].name if named else "")
        start = end
    speeds = tuple(max(MIN_SPEED_MPS, v / 3.6) for _, v in pieces)
    return SpeedProfile(tuple(ends), speeds, tuple(labels))


def advance_along(along_m: float, seconds: float, speed_at: Callable[[float], float],
                  breaks: Sequence[float], end_m: float) -> tuple[float, float]:
    """Drive from ``along_m`` for ``seconds`` where the speed (``speed_at``, m/s > 0) is
    constant from each of the sorted ``breaks`` to the next: (where it gets to, seconds
    left over when it reaches ``end_m`` first)."""
    left = seconds
    while left > 0 and along_m < end_m:
        v = speed_at(along_m)
        k = bisect.bisect_right(breaks, along_m)
        nxt = min(breaks[k], end_m) if k < len(breaks) else end_m
        need = (nxt - along_m) / v
        if need > left:
            return along_m + v * left, 0.0
        along_m, left = nxt, left - need
    return min(along_m, end_m), left


@dataclass
class Trip:
    line: Line
    profile: SpeedProfile
    slowed: list[tuple[float, float]]   # along the arterial, in its direction
    free_s: float                       # the route's free-flow duration

    def breaks(self) -> list[float]:
        return sorted({*self.profile.ends, *(x for s in self.slowed for x in s)})


@dataclass(frozen=True, slots=True)
class PendingFix:
    point: Point           # as the receiver measured it (noisy)
    time: float


@dataclass(frozen=True, slots=True)
class TrueFix:
    """What the driver knows about a fix it sent: where it really was, on what road."""

    noisy: Point
    true: Point
    time: float
    label: str             # the street
    line: Line             # the route it was on...
    along_m: float         # ...and where along it
    slowed: bool           # driving the congested arterial at a fraction of its speed


@dataclass
class Driver:
    """One car: ``user`` is who its token is for (a through driver gets a new one per trip)."""

    index: int
    through: bool
    rng: random.Random
    user: str = ""
    trip: Trip | None = None
    along_m: float = 0.0
    batch_s: float = 5.0
    next_batch_at: float = 0.0
    batch_seq: int = 0
    trips: int = 0
    noise_m: float = 3.0
    noise_tau_s: float = 10.0
    pending: list[PendingFix] = field(default_factory=list)
    recent: deque[TrueFix] = field(default_factory=lambda: deque(maxlen=120))
    last_fix_at: float | None = None
    _noise: GpsNoise | None = None

    @property
    def noise(self) -> GpsNoise:
        if self._noise is None:
            self._noise = GpsNoise(self.rng, self.noise_m, 3.0 * self.noise_m, self.noise_tau_s)
        return self._noise

    def start(self, user: str, trip: Trip, along_m: float, now: float) -> None:
        if user != self.user:
            self.recent.clear()
        self.user, self.trip, self.along_m = user, trip, along_m
        self.trips += 1
        if self.next_batch_at <= now:
            self.next_batch_at = now + self.rng.uniform(0.0, self.batch_s)

    @property
    def on_arterial(self) -> bool:
        return self.trip is not None and in_stretches(self.along_m, self.trip.slowed)

    def speed_factor(self, congested: bool, fraction: float) -> Callable[[float], float]:
        trip = self.trip
        assert trip is not None

        def speed(along_m: float) -> float:
            v = trip.profile.speed_at(along_m)
            return v * fraction if congested and in_stretches(along_m, trip.slowed) else v
        return speed

    def advance(self, seconds: float, congested: bool, fraction: float) -> bool:
        """Drive on; True when the trip is over (the driver is at its destination)."""
        trip = self.trip
        if trip is None:
            return False
        self.along_m, _ = advance_along(self.along_m, seconds,
                                           self.speed_factor(congested, fraction),
                                           trip.breaks(), trip.line.length_m)
        return self.along_m >= trip.line.length_m

    def take_fix(self, now: float, congested: bool = False) -> PendingFix | None:
        """A fix where the car is now, with the receiver's error (``noise_m`` per axis,
        at most 3x, drifting over ``noise_tau_s``: :class:`~.geometry.GpsNoise`)."""
        trip = self.trip
        if trip is None:
            return None
        true = trip.line.at(self.along_m)
        since = now - self.last_fix_at if self.last_fix_at is not None else 1.0
        self.last_fix_at = now
        fix = PendingFix(self.noise.apply(true, max(since, 0.0)), now)
        self.pending.append(fix)
        self.recent.append(TrueFix(fix.point, true, now, trip.profile.label_at(self.along_m),
                                   trip.line, self.along_m, congested and self.on_arterial))
        return fix

    def due_batch(self, now: float, final: bool = False) -> tuple[str, list[PendingFix]] | None:
        """The fixes held, as (batch id, fixes), when a batch is due (or ``final``)."""
        if not self.pending or (now < self.next_batch_at and not final):
            return None
        self.next_batch_at += self.batch_s
        if self.next_batch_at <= now:  # fell behind: the next one a whole period on
            self.next_batch_at = now + self.batch_s
        self.batch_seq += 1
        fixes, self.pending = self.pending, []
        return f"{self.user}-b{self.batch_seq}", fixes
