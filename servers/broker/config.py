"""BrokerConfig: read once from GEOPLEX_* variables at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from geoplex.servers._runtime.config import ConfigError, Env, default_state_dir

FSYNC_POLICIES = ("batch", "interval", "never")
PREFIX = "GEOPLEX_BROKER_"


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    # the node's partition logs; one broker process per directory
    data_dir: Path  # GEOPLEX_BROKER_DATA_DIR, default <GEOPLEX_STATE_DIR>/broker
    etcd_endpoints: tuple[str, ...]  # GEOPLEX_ETCD_ENDPOINTS
    etcd_prefix: str  # GEOPLEX_BROKER_ETCD_PREFIX: where topics and offsets live
    # "batch": every produce is synced before its acknowledgement (group commit: one
    # fsync covers every batch written meanwhile); "interval": synced every
    # fsync_interval_ms or every fsync_bytes, whichever comes first; "never": only at
    # segment rolls and at close (the OS writes back; a benchmark row)
    fsync: str  # GEOPLEX_BROKER_FSYNC
    fsync_interval_ms: int  # GEOPLEX_BROKER_FSYNC_INTERVAL_MS
    fsync_bytes: int  # GEOPLEX_BROKER_FSYNC_BYTES (0: no limit by size)
    retention_check_s: float  # GEOPLEX_BROKER_RETENTION_CHECK_SECONDS
    session_timeout_s: float  # GEOPLEX_BROKER_SESSION_TIMEOUT_SECONDS: a group member's default

    @property
    def fsync_per_batch(self) -> bool:
        return self.fsync == "batch"

    @classmethod
    def from_env(cls, env: Env | None = None) -> BrokerConfig:
        env = env or Env()
        endpoints = env.endpoints("GEOPLEX_ETCD_ENDPOINTS")
        if endpoints is None:
            raise ConfigError("GEOPLEX_ETCD_ENDPOINTS is not set: run `geoplex up`, or "
                              "`geoplex infra up` and export what it prints")
        prefix = env.str(PREFIX + "ETCD_PREFIX", "/geoplex/broker").rstrip("/")
        if not prefix.startswith("/") or not prefix.isprintable() or " " in prefix:
            raise ConfigError(f"{PREFIX}ETCD_PREFIX={prefix!r}: expected a key prefix "
                              "starting with / (no spaces or control characters)")
        return cls(
            data_dir=env.path(PREFIX + "DATA_DIR", default_state_dir(env) / "broker").resolve(),
            etcd_endpoints=endpoints,
            etcd_prefix=prefix,
            fsync=env.choice(PREFIX + "FSYNC", "batch", FSYNC_POLICIES),
            fsync_interval_ms=env.int(PREFIX + "FSYNC_INTERVAL_MS", 200, lo=1, hi=60_000),
            fsync_bytes=env.int(PREFIX + "FSYNC_BYTES", 0, lo=0),
            retention_check_s=env.float(PREFIX + "RETENTION_CHECK_SECONDS", 300.0,
                                        lo=0.05, hi=86_400.0),
            session_timeout_s=env.float(PREFIX + "SESSION_TIMEOUT_SECONDS", 10.0,
                                        lo=1.0, hi=300.0),
        )
