"""The time line of a run, what each tick saw, and the summary a person reads.

Time is seconds since the run started. :class:`Timeline`: warm-up until
``congestion_start_s``, congestion for ``congestion_s``, then recovery until
``duration_s``. Each tick (:class:`Tick`) holds the probe route's ETA against its free
flow and whether the best route of the trip still drives the arterial. :func:`summarize`
reads the ticks: seconds from the congestion's start to the probe ETA rising more than
``rise`` above free flow and to the router preferring the detour, and from its end to
being back to normal (ETA within ``normal`` of free flow and the trip on the arterial
again) for good: the first such tick after which every tick is normal.

Pure: no gRPC.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

DETOUR_BELOW = 0.5     # the trip drives under half of the arterial: it took a detour
ON_ROUTE_FROM = 0.9    # ...and at least this much of it: the arterial route is back


class Phase(enum.Enum):
    WARMUP = "warm-up"
    CONGESTION = "congestion"
    RECOVERY = "recovery"


@dataclass(frozen=True, slots=True)
class Timeline:
    congestion_start_s: float
    congestion_s: float
    duration_s: float

    def __post_init__(self) -> None:
        if self.congestion_start_s < 0 or self.congestion_s <= 0:
            raise ValueError("the congestion must start at 0 s or later and last a while")
        if self.duration_s < self.congestion_end_s:
            raise ValueError(f"the run ({self.duration_s:g} s) ends before the congestion "
                             f"does ({self.congestion_end_s:g} s)")

    @property
    def congestion_end_s(self) -> float:
        return self.congestion_start_s + self.congestion_s

    def phase(self, t: float) -> Phase:
        if t < self.congestion_start_s:
            return Phase.WARMUP
        if t < self.congestion_end_s:
            return Phase.CONGESTION
        return Phase.RECOVERY

    def congested(self, t: float) -> bool:
        return self.phase(t) is Phase.CONGESTION


@dataclass(frozen=True, slots=True)
class Tick:
    t: float                 # seconds since the start
    phase: str
    probe_eta_s: float       # the probe route (through the arterial), with traffic
    probe_free_s: float
    trip_eta_s: float        # A -> B, with traffic
    trip_coverage: float     # share of the arterial the trip's best route drives
    fixes: int               # so far
    batches: int
    rejected: int
    failed: int
    on_arterial: int         # drivers on the slowed stretch now
    metric_version: int

    @property
    def probe_ratio(self) -> float:
        return self.probe_eta_s / self.probe_free_s if self.probe_free_s > 0 else 1.0

    @property
    def detour(self) -> bool:
        return self.trip_coverage < DETOUR_BELOW

    def normal(self, within: float) -> bool:
        return self.probe_ratio <= 1.0 + within and self.trip_coverage >= ON_ROUTE_FROM

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "probe_ratio": self.probe_ratio, "detour": self.detour}


@dataclass(frozen=True, slots=True)
class Summary:
    eta_rise_s: float | None       # congestion start -> probe ETA > (1 + rise) x free flow
    detour_s: float | None         # congestion start -> the trip leaves the arterial
    recovery_s: float | None       # congestion end -> normal for good
    peak_ratio: float              # highest probe ETA / free flow in the congestion
    rise: float
    normal: float
    detour_seen: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(ticks: Sequence[Tick], timeline: Timeline, *, rise: float = 0.2,
              normal: float = 0.05) -> Summary:
    start, end = timeline.congestion_start_s, timeline.congestion_end_s
    after_start = [k for k in ticks if k.t >= start]
    rose = next((k.t - start for k in after_start if k.probe_ratio > 1.0 + rise), None)
    detoured = next((k.t - start for k in after_start if k.detour), None)
    recovered: float | None = None
    for k in ticks:
        if k.t < end:
            continue
        if k.normal(normal):
            if recovered is None:
                recovered = k.t - end
        else:
            recovered = None
    congested = [k.probe_ratio for k in ticks if start <= k.t < end]
    return Summary(eta_rise_s=rose, detour_s=detoured, recovery_s=recovered,
                   peak_ratio=max(congested, default=1.0), rise=rise, normal=normal,
                   detour_seen=detoured is not None)


def _seconds(value: float | None, what: str) -> str:
    return f"{value:.0f} s" if value is not None else f"not {what}"


def summary_rows(summary: Summary, timeline: Timeline) -> list[tuple[str, str]]:
    return [
        ("congestion", f"{timeline.congestion_start_s:g} s .. {timeline.congestion_end_s:g} s"),
        (f"ETA > +{summary.rise:.0%} after the start", _seconds(summary.eta_rise_s, "seen")),
        ("detour preferred after the start", _seconds(summary.detour_s, "seen")),
        (f"normal (ETA within {summary.normal:.0%}, arterial route) after the end",
         _seconds(summary.recovery_s, "within the run")),
        ("peak probe ETA / free flow", f"{summary.peak_ratio:.2f}"),
    ]


TICK_HEADERS = ("t", "phase", "probe ETA", "vs free", "trip ETA", "detour", "on road",
                "fixes", "batches", "rejected")


def tick_row(k: Tick) -> tuple[str, ...]:
    return (f"{k.t:.0f}", k.phase, f"{k.probe_eta_s:.0f} s", f"{k.probe_ratio - 1:+.0%}",
            f"{k.trip_eta_s:.0f} s", "yes" if k.detour else "no", str(k.on_arterial),
            f"{k.fixes:,}", f"{k.batches:,}", f"{k.rejected:,}")


def table_ticks(ticks: Sequence[Tick], every_s: float = 10.0) -> list[Tick]:
    """The ticks a person wants to read: one every ``every_s`` seconds, and each change
    of phase or of detour."""
    out: list[Tick] = []
    for k in ticks:
        last = out[-1] if out else None
        if last is None or k.phase != last.phase or k.detour != last.detour \
                or k.t - last.t >= every_s:
            out.append(k)
    if ticks and out[-1] is not ticks[-1]:
        out.append(ticks[-1])
    return out


@dataclass
class Accuracy:
    """Map matching of a few drivers' recent traces against what they know they drove:
    fixes at their route's speed, and apart the fixes crawling on the congested arterial
    (a few metres a second: GPS noise then jitters a car backwards)."""

    drivers: int = 0
    fixes: int = 0
    on_road: int = 0        # matched onto the route driven, near where the car was
    slowed_fixes: int = 0
    slowed_on_road: int = 0
    unmatched: int = 0      # the matcher found no road for it (either kind)
    same_street: int = 0    # matched onto a street of the name the driver was on
    tolerance_m: float = 5.0

    @property
    def share(self) -> float:
        return self.on_road / self.fixes if self.fixes else 0.0

    @property
    def slowed_share(self) -> float:
        return self.slowed_on_road / self.slowed_fixes if self.slowed_fixes else 0.0

    def add(self, on_road: bool, slowed: bool) -> None:
        if slowed:
            self.slowed_fixes += 1
            self.slowed_on_road += on_road
        else:
            self.fixes += 1
            self.on_road += on_road

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share": self.share, "slowed_share": self.slowed_share}


@dataclass
class Counters:
    fixes: int = 0
    batches: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    trips: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None
