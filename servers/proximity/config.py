"""ProximityConfig: read once from GEOPLEX_* variables at start."""

from __future__ import annotations

from dataclasses import dataclass

from geoplex.servers._runtime.auth import auth_secret
from geoplex.servers._runtime.config import ConfigError, Env

from .app import INDEX_KINDS

DEFAULT_PORT = 50051


@dataclass(frozen=True, slots=True)
class ProximityConfig:
    redis_url: str
    mongo_uri: str
    database: str
    index: str
    detail_cache_size: int
    cache_ttl: int
    auth_secret: str

    @classmethod
    def from_env(cls, env: Env | None = None) -> ProximityConfig:
        env = env or Env()
        redis_url = env.url("GEOPLEX_REDIS_URL", ("redis", "rediss", "unix"))
        mongo_uri = env.url("GEOPLEX_MONGO_URI", ("mongodb", "mongodb+srv"))
        if redis_url is None:
            raise ConfigError("GEOPLEX_REDIS_URL is not set: run `geoplex up`, or "
                              "`geoplex infra up` and export what it prints")
        if mongo_uri is None:
            raise ConfigError("GEOPLEX_MONGO_URI is not set: run `geoplex up`, or "
                              "`geoplex infra up` and export what it prints")
        return cls(
            redis_url=redis_url, mongo_uri=mongo_uri,
            database=env.str("GEOPLEX_PROXIMITY_DATABASE", "geoplex"),
            index=env.choice("GEOPLEX_PROXIMITY_INDEX", "quadtree", INDEX_KINDS),
            detail_cache_size=env.int("GEOPLEX_PROXIMITY_DETAIL_CACHE", 500_000, lo=0),
            cache_ttl=env.int("GEOPLEX_PROXIMITY_CACHE_TTL_SECONDS", 3600, lo=1),
            auth_secret=auth_secret(env),
        )
