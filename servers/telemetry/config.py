"""TelemetryConfig: read once from GEOPLEX_TELEMETRY_* variables at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from geoplex.servers._runtime.config import ConfigError, Env, default_state_dir

PREFIX = "GEOPLEX_TELEMETRY_"
FSYNC_MODES = ("always", "interval")


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    data_dir: Path            # the store: WAL, head checkpoints, blocks
    fsync: str                # always | interval
    fsync_interval_ms: int
    block_hours: float        # the head is cut into a block every this many hours
    ooo_window_s: float       # how far behind the newest sample a sample may arrive
    max_future_s: float       # how far ahead of the server's clock a sample may be
    max_series: int | None    # active series in the head (None: no limit)
    write_max_series: int     # series per Write
    write_max_samples: int    # samples per Write
    http_port: int | None     # the Prometheus HTTP API (None: off)
    max_samples_per_s: float  # per tenant (0: no limit)

    @classmethod
    def from_env(cls, env: Env | None = None) -> TelemetryConfig:
        env = env or Env()
        fsync = env.str(PREFIX + "FSYNC", "always")
        if fsync not in FSYNC_MODES:
            raise ConfigError(f"{PREFIX}FSYNC: expected one of {', '.join(FSYNC_MODES)}")
        max_series = env.int(PREFIX + "MAX_SERIES", 0, lo=0, hi=1 << 40)
        return cls(
            data_dir=env.path(PREFIX + "DATA_DIR", default_state_dir(env) / "telemetry"
                              ).resolve(),
            fsync=fsync,
            fsync_interval_ms=env.int(PREFIX + "FSYNC_INTERVAL_MS", 10, lo=1, hi=10_000),
            block_hours=env.float(PREFIX + "BLOCK_HOURS", 2.0, lo=0.01, hi=168.0),
            ooo_window_s=env.float(PREFIX + "OOO_WINDOW_SECONDS", 600.0, lo=0.0,
                                   hi=86_400.0),
            max_future_s=env.float(PREFIX + "MAX_FUTURE_SECONDS", 600.0, lo=0.0,
                                   hi=86_400.0),
            max_series=max_series or None,
            write_max_series=env.int(PREFIX + "WRITE_MAX_SERIES", 10_000, lo=1, hi=1_000_000),
            write_max_samples=env.int(PREFIX + "WRITE_MAX_SAMPLES", 100_000, lo=1,
                                      hi=10_000_000),
            http_port=(None if env.str(PREFIX + "HTTP_PORT", "").lower() == "off"
                       else env.int(PREFIX + "HTTP_PORT", 8056, lo=0, hi=65_535)),
            max_samples_per_s=env.float(PREFIX + "MAX_SAMPLES_PER_SECOND", 0.0, lo=0.0,
                                        hi=1e9),
        )
