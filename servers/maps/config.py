"""MapsConfig: read once from GEOPLEX_MAPS_* variables at start."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from geoplex.servers._runtime.auth import auth_secret
from geoplex.servers._runtime.config import ConfigError, Env, backend_url

PREFIX = "GEOPLEX_MAPS_"
# where `geoplex data fetch` puts them (infra/data.py; a test keeps them equal)
DEFAULT_EXTRACTS = (("Helsinki", "helsinki/Helsinki.osm.pbf"),
                    ("Monaco", "monaco/monaco.osm.pbf"))
DEFAULT_PLACES = "geonames/cities500.json"
# the broker's three nodes where `geoplex up` puts them (it sets GEOPLEX_BROKER_TARGET)
DEFAULT_BROKER = "127.0.0.1:50053,127.0.0.1:50153,127.0.0.1:50253"


@dataclass(frozen=True, slots=True)
class Extract:
    city: str              # the locality of addresses that do not name one
    path: Path


@dataclass(frozen=True, slots=True)
class MapsConfig:
    extracts: tuple[Extract, ...]
    places: Path | None    # GeoNames cities (None: no places)
    reverse_max_m: float   # default limit of a reverse lookup's address search
    mongo_uri: str | None  # set: location ingest is on (history lives in MongoDB)
    database: str
    broker: tuple[str, ...]  # bootstrap addresses of the broker
    locations_topic: str
    locations_partitions: int
    auth_secret: str
    routing: str           # where routing listens (MatchTrace, UpdateTraffic)
    traffic: bool          # the traffic consumer group (with ingest on)
    traffic_admin: str     # the token subject it calls UpdateTraffic as
    traffic_interval_s: float
    traffic_valid_s: float
    traffic_window_s: float

    @classmethod
    def from_env(cls, env: Env | None = None) -> MapsConfig:
        env = env or Env()
        base = env.path("GEOPLEX_DATA_DIR", Path(os.path.expanduser("~/.cache/geoplex/data")))
        places_raw = env.str(PREFIX + "PLACES", str(base / DEFAULT_PLACES))
        return cls(
            extracts=extracts_from(env, base),
            places=Path(places_raw).expanduser() if places_raw != "none" else None,
            reverse_max_m=env.float(PREFIX + "REVERSE_MAX_METERS", 100.0, lo=1.0, hi=1000.0),
            mongo_uri=backend_url(env, "GEOPLEX_MONGO_URI"),
            database=env.str(PREFIX + "DATABASE", "geoplex"),
            broker=tuple(a.strip() for a in env.str("GEOPLEX_BROKER_TARGET",
                                                    DEFAULT_BROKER).split(",") if a.strip()),
            locations_topic=env.str(PREFIX + "LOCATIONS_TOPIC", "locations"),
            locations_partitions=env.int(PREFIX + "LOCATIONS_PARTITIONS", 6, lo=1, hi=1024),
            auth_secret=auth_secret(env),
            routing=env.str("GEOPLEX_ROUTING_TARGET", "127.0.0.1:50054").split(",")[0].strip(),
            traffic=env.bool(PREFIX + "TRAFFIC", True),
            traffic_admin=env.str(PREFIX + "TRAFFIC_ADMIN", "admin"),
            traffic_interval_s=env.float(PREFIX + "TRAFFIC_INTERVAL_SECONDS", 5.0, lo=0.1,
                                         hi=3600.0),
            traffic_valid_s=env.float(PREFIX + "TRAFFIC_VALID_SECONDS", 120.0, lo=1.0,
                                      hi=86_400.0),
            traffic_window_s=env.float(PREFIX + "TRAFFIC_WINDOW_SECONDS", 300.0, lo=1.0,
                                       hi=86_400.0),
        )


def extracts_from(env: Env, base: Path) -> tuple[Extract, ...]:
    """``GEOPLEX_MAPS_EXTRACTS=City=path,...``; default the fetched Helsinki and Monaco."""
    raw = env.str(PREFIX + "EXTRACTS", "")
    if not raw:
        return tuple(Extract(city, base / rel) for city, rel in DEFAULT_EXTRACTS)
    out = []
    for item in raw.split(","):
        city, sep, path = item.strip().partition("=")
        if not sep or not city.strip() or not path.strip():
            raise ConfigError(f"{PREFIX}EXTRACTS: expected City=path[,City=path...] "
                              "(an .osm.pbf per city)")
        out.append(Extract(city.strip(), Path(path.strip()).expanduser()))
    return tuple(out)
