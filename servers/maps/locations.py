"""Location fixes from navigation clients: which to accept, and where history keeps them.

Pure: no protobuf, gRPC or backend here. A fix is refused, with a reason and never its
coordinates, when it is out of range, has no time, is from the future (beyond a minute
of clock skew) or over 7 days old, has a nonsensical accuracy, speed or heading, repeats
the time of another fix, or would need a jump faster than any vehicle from the fix
before it (the user's last accepted one included).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from geoplex.servers._runtime.geo import haversine_m

MAX_FIXES = 1000
MAX_FUTURE_S = 60.0
MAX_AGE_S = 7 * 86_400.0
MAX_SPEED_MPS = 100.0         # 360 km/h: faster is no road vehicle
MAX_ACCURACY_M = 10_000.0
HOUR_S = 3600

OUT_OF_RANGE, MISSING_LOCATION, MISSING_TIME = "OUT_OF_RANGE", "MISSING_LOCATION", "MISSING_TIME"
IN_THE_FUTURE, TOO_OLD, BAD_ACCURACY = "IN_THE_FUTURE", "TOO_OLD", "BAD_ACCURACY"
BAD_SPEED, BAD_HEADING, DUPLICATE_TIME = "BAD_SPEED", "BAD_HEADING", "DUPLICATE_TIME"
IMPOSSIBLE_JUMP = "IMPOSSIBLE_JUMP"


@dataclass(frozen=True, slots=True)
class Fix:
    lat: float | None          # None: the fix came without a location
    lon: float | None
    time: float | None         # seconds since the epoch; None: without a time
    accuracy_m: float = 0.0
    speed_mps: float | None = None
    heading_deg: float | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int                 # the fix's position in its batch
    reason: str


def check(fixes: list[Fix], now: float, last: Fix | None = None
          ) -> tuple[list[tuple[int, Fix]], list[Rejected]]:
    """(accepted (index, fix) in time order, rejected in index order). ``last``: the
    user's latest accepted fix before this batch, for the jump test."""
    rejected: list[Rejected] = []
    candidates: list[tuple[int, Fix]] = []
    for i, fix in enumerate(fixes):
        reason = _field_problem(fix, now)
        if reason:
            rejected.append(Rejected(i, reason))
        else:
            candidates.append((i, fix))
    candidates.sort(key=lambda item: (item[1].time or 0.0, item[0]))
    accepted: list[tuple[int, Fix]] = []
    previous = last
    seen_times: set[float] = set()
    for i, fix in candidates:
        assert fix.time is not None
        if fix.time in seen_times:
            rejected.append(Rejected(i, DUPLICATE_TIME))
            continue
        if previous is not None and _jump(previous, fix):
            rejected.append(Rejected(i, IMPOSSIBLE_JUMP))
            continue
        seen_times.add(fix.time)
        accepted.append((i, fix))
        previous = fix
    rejected.sort(key=lambda r: r.index)
    return accepted, rejected


def _field_problem(fix: Fix, now: float) -> str:
    if fix.lat is None or fix.lon is None:
        return MISSING_LOCATION
    if not (math.isfinite(fix.lat) and math.isfinite(fix.lon)
            and -90.0 <= fix.lat <= 90.0 and -180.0 <= fix.lon <= 180.0):
        return OUT_OF_RANGE
    if fix.time is None:
        return MISSING_TIME
    if fix.time > now + MAX_FUTURE_S:
        return IN_THE_FUTURE
    if fix.time < now - MAX_AGE_S:
        return TOO_OLD
    if not (math.isfinite(fix.accuracy_m) and 0.0 <= fix.accuracy_m <= MAX_ACCURACY_M):
        return BAD_ACCURACY
    if fix.speed_mps is not None and not (math.isfinite(fix.speed_mps)
                                          and 0.0 <= fix.speed_mps <= MAX_SPEED_MPS):
        return BAD_SPEED
    if fix.heading_deg is not None and not (math.isfinite(fix.heading_deg)
                                            and 0.0 <= fix.heading_deg <= 360.0):
        return BAD_HEADING
    return ""


def _jump(a: Fix, b: Fix) -> bool:
    """Would going from ``a`` to ``b`` take more than MAX_SPEED_MPS (beyond what the two
    fixes' accuracies could explain)? Out of order in time counts by the gap's size."""
    assert a.lat is not None and a.lon is not None and b.lat is not None and b.lon is not None
    assert a.time is not None and b.time is not None
    metres = haversine_m(a.lat, a.lon, b.lat, b.lon) - a.accuracy_m - b.accuracy_m
    seconds = abs(b.time - a.time)
    return metres > MAX_SPEED_MPS * max(seconds, 1.0)


def hour_of(time: float) -> int:
    """The hour bucket a fix belongs to (seconds since the epoch, floored to the hour)."""
    return int(time // HOUR_S) * HOUR_S


class LastFixes:
    """The latest accepted fix per user, for the jump test across batches (bounded: the
    least recently seen users go first). Per process: a user whose batches reach two
    processes is checked within each batch and against what each process saw."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._last: OrderedDict[str, Fix] = OrderedDict()

    def get(self, user: str) -> Fix | None:
        return self._last.get(user)

    def put(self, user: str, fix: Fix) -> None:
        known = self._last.get(user)
        if known is not None and known.time is not None and fix.time is not None \
                and known.time > fix.time:
            return  # an older batch arrived late: keep the newest
        self._last[user] = fix
        self._last.move_to_end(user)
        while len(self._last) > self.capacity:
            self._last.popitem(last=False)
