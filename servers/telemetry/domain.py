"""The telemetry domain's own terms; the store itself is :mod:`.tsdb` (pure Python and
numpy, no gRPC, no backends), the query language :mod:`.promql`.

Resolution tiers, the design's: raw samples kept 7 days, 1-minute rollups 30 days,
1-hour rollups a year (the defaults of GEOPLEX_TELEMETRY_RETENTION_*); the store writes
and serves them (:mod:`.tsdb.tiers`).
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Tier:
    resolution: str        # "raw", "1m", "1h"
    step_s: int            # 0 for raw
    retention_s: int


TIERS = (Tier("raw", 0, 7 * DAY_S), Tier("1m", 60, 30 * DAY_S), Tier("1h", 3600, 365 * DAY_S))
RAW = TIERS[0]
