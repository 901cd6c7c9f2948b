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
    # the cluster: this broker's id, the address others dial, its etcd lease
    broker_id: int = 1  # GEOPLEX_BROKER_ID, 1..2^31-1, unique in the cluster
    advertised_address: str = ""  # GEOPLEX_BROKER_ADVERTISED_ADDRESS, default 127.0.0.1:<port>
    lease_s: float = 6.0  # GEOPLEX_BROKER_LEASE_SECONDS: gone this long after its last renewal
    # a follower leaves the in-sync replicas when it has not caught up with the leader's
    # log end for this long (GEOPLEX_BROKER_REPLICA_LAG_TIME_MS) ...
    replica_lag_time_ms: int = 10_000
    # ... or, if non-zero, lags by more than this many records
    # (GEOPLEX_BROKER_REPLICA_LAG_MAX_MESSAGES; 0: off, see docs/architecture.md)
    replica_lag_max_messages: int = 0
    # how long an acks=ALL produce waits for the in-sync replicas
    # (GEOPLEX_BROKER_ACK_TIMEOUT_MS)
    ack_timeout_ms: int = 30_000

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
            broker_id=env.int(PREFIX + "ID", 1, lo=1, hi=(1 << 31) - 1),
            advertised_address=advertised(env.str(PREFIX + "ADVERTISED_ADDRESS", "")),
            lease_s=env.float(PREFIX + "LEASE_SECONDS", 6.0, lo=1.0, hi=300.0),
            replica_lag_time_ms=env.int(PREFIX + "REPLICA_LAG_TIME_MS", 10_000, lo=100,
                                        hi=3_600_000),
            replica_lag_max_messages=env.int(PREFIX + "REPLICA_LAG_MAX_MESSAGES", 0, lo=0),
            ack_timeout_ms=env.int(PREFIX + "ACK_TIMEOUT_MS", 30_000, lo=10, hi=600_000),
        )

    def address(self, port: int) -> str:
        """What other brokers and clients dial: the advertised address, else loopback."""
        return self.advertised_address or f"127.0.0.1:{port}"


def advertised(value: str) -> str:
    if not value:
        return ""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{PREFIX}ADVERTISED_ADDRESS={value!r}: expected host:port")
    return value
