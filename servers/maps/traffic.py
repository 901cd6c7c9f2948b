"""Live traffic from matched traces: per-segment speeds, smoothed, robust, idempotent.

Each matched step of a user's trace gives a speed on every segment it covered. A segment's
speed is the median over the observations of the last ``window_s`` (robust to an outlier
and to one car standing at a light while others drive), from at least
``min_observations``. Covering less than ``min_metres`` of a segment says nothing about it
(a standing car's noise). Observations are keyed by (user, batch id): a batch delivered
again (the consumer is at least once) replaces its own observations instead of adding
to them. Segments whose observations all age out are left to the router, which fades
them back to free flow when their validity ends.

Pure: no gRPC, broker or backend here.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SpeedObservation:
    region: str
    segment: int
    speed_kmh: float
    metres: float
    time: float            # when it was driven (the later fix's time)


@dataclass
class SegmentSpeeds:
    window_s: float = 300.0
    min_metres: float = 5.0
    min_observations: int = 1
    # (region, segment) -> {(user, batch_id): (time, speed)}
    _by_segment: dict[tuple[str, int], dict[tuple[str, str], tuple[float, float]]] = field(
        default_factory=dict)

    def add(self, user: str, batch_id: str, observations: list[SpeedObservation]) -> int:
        """Record one batch's observations (again: they replace the earlier ones)."""
        kept = 0
        for o in observations:
            if o.metres < self.min_metres:
                continue
            self._by_segment.setdefault((o.region, o.segment), {})[(user, batch_id)] = (
                o.time, o.speed_kmh)
            kept += 1
        return kept

    def current(self, now: float) -> dict[str, dict[int, float]]:
        """region -> segment -> median speed (km/h) over the window; old ones dropped."""
        out: dict[str, dict[int, float]] = {}
        horizon = now - self.window_s
        for key in list(self._by_segment):
            seen = self._by_segment[key]
            for k in [k for k, (t, _) in seen.items() if t < horizon]:
                del seen[k]
            if not seen:
                del self._by_segment[key]
                continue
            if len(seen) < self.min_observations:
                continue
            region, segment = key
            out.setdefault(region, {})[segment] = statistics.median(s for _, s in
                                                                    seen.values())
        return out
