"""ProximityConfig: read once from GEOPLEX_* variables at start."""

from __future__ import annotations

from dataclasses import dataclass

from geoplex.servers._runtime.auth import auth_secret
from geoplex.servers._runtime.config import ConfigError, Env, required_backend_url

from .indexes import INDEX_KINDS


@dataclass(frozen=True, slots=True)
class ProximityConfig:
    redis_url: str
    mongo_uri: str
    database: str
    index: str
    detail_cache_size: int
    cache_ttl: int
    auth_secret: str
    # owner edits as events on the broker (outbox.py): GEOPLEX_PROXIMITY_EVENTS, by
    # default on when GEOPLEX_BROKER_TARGET is set
    events: bool = False
    broker: tuple[str, ...] = ()
    events_topic: str = "business-events"
    events_partitions: int = 3

    @classmethod
    def from_env(cls, env: Env | None = None) -> ProximityConfig:
        env = env or Env()
        redis_url = required_backend_url(env, "GEOPLEX_REDIS_URL")
        mongo_uri = required_backend_url(env, "GEOPLEX_MONGO_URI")
        broker = tuple(a.strip() for a in env.str("GEOPLEX_BROKER_TARGET", "").split(",")
                       if a.strip())
        events = env.choice("GEOPLEX_PROXIMITY_EVENTS", "on" if broker else "off",
                            ("on", "off"))
        if events == "on" and not broker:
            raise ConfigError("GEOPLEX_PROXIMITY_EVENTS=on needs GEOPLEX_BROKER_TARGET "
                              "(host:port,...)")
        return cls(
            redis_url=redis_url, mongo_uri=mongo_uri,
            database=env.str("GEOPLEX_PROXIMITY_DATABASE", "geoplex"),
            index=env.choice("GEOPLEX_PROXIMITY_INDEX", "quadtree", INDEX_KINDS),
            detail_cache_size=env.int("GEOPLEX_PROXIMITY_DETAIL_CACHE", 500_000, lo=0),
            cache_ttl=env.int("GEOPLEX_PROXIMITY_CACHE_TTL_SECONDS", 3600, lo=1),
            auth_secret=auth_secret(env),
            events=events == "on", broker=broker,
            events_topic=env.str("GEOPLEX_PROXIMITY_EVENTS_TOPIC", "business-events"),
            events_partitions=env.int("GEOPLEX_PROXIMITY_EVENTS_PARTITIONS", 3, lo=1,
                                      hi=1024),
        )
