"""ProximityConfig: read once from GEOPLEX_* variables at start."""

from __future__ import annotations

from dataclasses import dataclass

from geoplex.servers._runtime.auth import auth_secret
from geoplex.servers._runtime.config import Env, required_backend_url

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

    @classmethod
    def from_env(cls, env: Env | None = None) -> ProximityConfig:
        env = env or Env()
        redis_url = required_backend_url(env, "GEOPLEX_REDIS_URL")
        mongo_uri = required_backend_url(env, "GEOPLEX_MONGO_URI")
        return cls(
            redis_url=redis_url, mongo_uri=mongo_uri,
            database=env.str("GEOPLEX_PROXIMITY_DATABASE", "geoplex"),
            index=env.choice("GEOPLEX_PROXIMITY_INDEX", "quadtree", INDEX_KINDS),
            detail_cache_size=env.int("GEOPLEX_PROXIMITY_DETAIL_CACHE", 500_000, lo=0),
            cache_ttl=env.int("GEOPLEX_PROXIMITY_CACHE_TTL_SECONDS", 3600, lo=1),
            auth_secret=auth_secret(env),
        )
