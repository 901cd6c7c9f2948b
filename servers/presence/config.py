"""PresenceConfig: read once from GEOPLEX_* variables at start."""

from __future__ import annotations

from dataclasses import dataclass

from geoplex.servers._runtime.auth import auth_secret
from geoplex.servers._runtime.config import ConfigError, Env, required_backend_url

from .domain import DEFAULT_RADIUS_M, HubConfig


@dataclass(frozen=True, slots=True)
class PresenceConfig:
    redis_url: str
    mongo_uri: str
    database: str
    namespace: str
    hub: HubConfig
    auth_secret: str
    # where the history goes: "mongo" (written here) or "broker" (produced to `topic`,
    # stored by the presence-history consumer group); GEOPLEX_PRESENCE_HISTORY, by
    # default broker when GEOPLEX_BROKER_TARGET is set
    history: str = "mongo"
    broker: tuple[str, ...] = ()
    history_topic: str = "presence-locations"
    history_partitions: int = 6

    @classmethod
    def from_env(cls, env: Env | None = None) -> PresenceConfig:
        env = env or Env()
        redis_url = required_backend_url(env, "GEOPLEX_REDIS_URL")
        mongo_uri = required_backend_url(env, "GEOPLEX_MONGO_URI")
        p = "GEOPLEX_PRESENCE_"
        lo = env.float(p + "MIN_RADIUS_METERS", 100.0, lo=1.0)
        hi = env.float(p + "MAX_RADIUS_METERS", 50_000.0, lo=lo)
        inactive = env.float(p + "INACTIVE_AFTER_SECONDS", 600.0, lo=1.0, hi=86_400.0)
        if env.raw(p + "DEFAULT_RADIUS_METERS") is None and not lo <= DEFAULT_RADIUS_M <= hi:
            raise ConfigError(f"{p}DEFAULT_RADIUS_METERS: the built-in 5 miles "
                              f"({DEFAULT_RADIUS_M:g} m) is outside {p}MIN/MAX_RADIUS_METERS "
                              f"{lo:g}..{hi:g}; set it inside that range")
        hub = HubConfig(
            default_radius_m=env.float(p + "DEFAULT_RADIUS_METERS", DEFAULT_RADIUS_M, lo=lo,
                                       hi=hi),
            min_radius_m=lo, max_radius_m=hi, inactive_after_s=inactive,
            sweep_interval_s=env.float(p + "SWEEP_SECONDS", min(30.0, inactive / 10), lo=0.05),
            future_tolerance_s=env.float(p + "FUTURE_TOLERANCE_SECONDS", 60.0, lo=0.0),
            history_batch=env.int(p + "HISTORY_BATCH", 1000, lo=1),
            history_flush_s=env.float(p + "HISTORY_FLUSH_SECONDS", 1.0, lo=0.01))
        broker = tuple(a.strip() for a in env.str("GEOPLEX_BROKER_TARGET", "").split(",")
                       if a.strip())
        history = env.choice(p + "HISTORY", "broker" if broker else "mongo",
                             ("mongo", "broker"))
        if history == "broker" and not broker:
            raise ConfigError(f"{p}HISTORY=broker needs GEOPLEX_BROKER_TARGET (host:port,...)")
        return cls(redis_url=redis_url, mongo_uri=mongo_uri,
                   database=env.str(p + "DATABASE", "geoplex"),
                   namespace=env.str(p + "NAMESPACE", "pr:"), hub=hub,
                   auth_secret=auth_secret(env), history=history, broker=broker,
                   history_topic=env.str(p + "HISTORY_TOPIC", "presence-locations"),
                   history_partitions=env.int(p + "HISTORY_PARTITIONS", 6, lo=1, hi=1024))
