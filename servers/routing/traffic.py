"""Live traffic as per-segment speed factors that expire and fade back to free flow.

An observation says "this segment runs at ``factor`` of its free-flow speed
until ``valid_until``". After that the factor fades linearly back to 1 over
``fade_seconds``, so a stale jam does not linger and a road with no reports is
free flowing again. Pure numpy: the app turns :meth:`TrafficState.seg_ms` into a
new customized metric and swaps it in.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .graph import MAX_MS, U32

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

MIN_FACTOR = 0.02   # 2 % of free flow: a standstill still has an ETA
MAX_FACTOR = 1.5    # faster than the profile's estimate, within reason


class TrafficState:
    def __init__(self, free_ms: U32, fade_seconds: float) -> None:
        self.free_ms = free_ms
        self.fade_seconds = fade_seconds
        self.factor: F64 = np.ones(free_ms.shape[0])
        self.valid_until: F64 = np.zeros(free_ms.shape[0])
        self.version = 0
        self.updated_at = 0.0

    @property
    def segment_count(self) -> int:
        return int(self.free_ms.shape[0])

    def apply(self, segments: I64, factors: F64, valid_until: float, now: float) -> int:
        """Record observations; returns how many segments they touched."""
        if segments.size == 0:
            return 0
        self.factor[segments] = np.clip(factors, MIN_FACTOR, MAX_FACTOR)
        self.valid_until[segments] = valid_until
        self.version += 1
        self.updated_at = now
        return int(np.unique(segments).size)

    def effective(self, now: float) -> F64:
        """Each segment's factor at ``now``: as observed while valid, then fading to 1."""
        fade = np.clip((now - self.valid_until) / max(self.fade_seconds, 1e-9), 0.0, 1.0)
        result: F64 = self.factor + (1.0 - self.factor) * fade
        return result

    def seg_ms(self, now: float) -> U32:
        factor = self.effective(now)
        self.factor[factor == 1.0] = 1.0  # faded out: free flow again
        ms = np.ceil(self.free_ms / factor)
        return np.minimum(np.maximum(ms, 1), MAX_MS).astype(np.uint32)

    def changed_between(self, since: float, now: float) -> bool:
        """Whether any segment's effective factor moved in (since, now]: it was fading, or
        its window ended (a metric made at ``since`` is then out of date)."""
        active = self.factor != 1.0
        if not active.any():
            return False
        start = self.valid_until[active]
        return bool(((start < now) & (start + self.fade_seconds > since)).any())

    def active_segments(self, now: float) -> int:
        return int(np.count_nonzero(self.effective(now) != 1.0))
