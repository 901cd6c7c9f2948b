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
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SpeedObservation:
    region: str
    segment: int
    speed_kmh: float
    metres: float
    time: float            # when it was driven (the later fix's time)


class SegmentSpeeds:
    """Per-segment median speeds. ``add`` runs on the event loop and only queues (O(1) per
    observation); ``current`` folds the queue in, prunes and takes the medians, and may
    run in a worker thread: the queue is a deque (its append and popleft are atomic), and
    nothing else touches the per-segment state."""

    def __init__(self, window_s: float = 300.0, min_metres: float = 5.0,
                 min_observations: int = 1, max_per_segment: int = 64) -> None:
        self.window_s = window_s
        self.min_metres = min_metres
        self.min_observations = min_observations
        self.max_per_segment = max_per_segment   # the latest ones: memory stays bounded
        self._pending: deque[tuple[tuple[str, str], SpeedObservation]] = deque()
        # (region, segment) -> {(user, batch_id): (time, speed)}
        self._by_segment: dict[tuple[str, int], dict[tuple[str, str], tuple[float, float]]] = {}

    def add(self, user: str, batch_id: str, observations: list[SpeedObservation]) -> int:
        """Queue one batch's observations (again: they replace the earlier ones)."""
        kept = [((user, batch_id), o) for o in observations if o.metres >= self.min_metres]
        self._pending.extend(kept)
        return len(kept)

    def current(self, now: float) -> dict[str, dict[int, float]]:
        """region -> segment -> median speed (km/h) over the window; old ones dropped."""
        touched: set[tuple[str, int]] = set()
        while self._pending:
            who, o = self._pending.popleft()
            key = (o.region, o.segment)
            self._by_segment.setdefault(key, {})[who] = (o.time, o.speed_kmh)
            touched.add(key)
        for key in touched:
            seen = self._by_segment[key]
            if len(seen) > self.max_per_segment:
                newest = sorted(seen.items(), key=lambda item: item[1][0])[-self.max_per_segment:]
                self._by_segment[key] = dict(newest)
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
