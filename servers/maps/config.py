"""MapsConfig: read once from GEOPLEX_MAPS_* variables at start."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from geoplex.servers._runtime.auth import auth_secret
from geoplex.servers._runtime.validate import is_id
from geoplex.servers._runtime.config import ConfigError, Env, backend_url

PREFIX = "GEOPLEX_MAPS_"
# where `geoplex data fetch` puts them (infra/data.py; a test keeps them equal)
DEFAULT_EXTRACTS = (("Helsinki", "helsinki/Helsinki.osm.pbf"),
                    ("Monaco", "monaco/monaco.osm.pbf"))
DEFAULT_PLACES = "geonames/cities500.json"
# what the tiles draw by default: the routing regions' extracts
DEFAULT_TILE_SOURCES = (("helsinki", "helsinki/Helsinki.osm.pbf"),
                        ("monaco", "monaco/monaco.osm.pbf"),
                        ("gothenburg", "gothenburg/large-network.json"))
DEFAULT_LEAFLET = "leaflet"
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
    navigate_max_sessions: int   # Navigate streams this process holds at most
    navigate_max_per_user: int   # ... and per user (token subject)
    navigate_poll_s: float       # how often navigation looks at routing's traffic metrics
    http_port: int | None  # the HTTP endpoint (tiles, JSON, the map page); None: off
    tile_sources: tuple[tuple[str, Path], ...]   # (region, .osm.pbf or GeoJSON); () off
    tile_redis_url: str | None  # the shared tile cache (None: this process's LRU only)
    tile_ttl_s: int
    tile_memory_bytes: int
    tile_cache_dir: Path   # extracted map features, keyed by source checksum
    web_vendor_dir: Path   # the fetched Leaflet files (geoplex data fetch leaflet)

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
            broker=broker_from(env),
            locations_topic=env.str(PREFIX + "LOCATIONS_TOPIC", "locations"),
            locations_partitions=env.int(PREFIX + "LOCATIONS_PARTITIONS", 6, lo=1, hi=1024),
            auth_secret=auth_secret(env),
            routing=env.str("GEOPLEX_ROUTING_TARGET", "127.0.0.1:50054").split(",")[0].strip(),
            traffic=env.bool(PREFIX + "TRAFFIC", True),
            traffic_admin=admin_from(env),
            traffic_interval_s=env.float(PREFIX + "TRAFFIC_INTERVAL_SECONDS", 5.0, lo=0.1,
                                         hi=3600.0),
            traffic_valid_s=env.float(PREFIX + "TRAFFIC_VALID_SECONDS", 120.0, lo=1.0,
                                      hi=86_400.0),
            traffic_window_s=env.float(PREFIX + "TRAFFIC_WINDOW_SECONDS", 300.0, lo=1.0,
                                       hi=86_400.0),
            navigate_max_sessions=env.int(PREFIX + "NAVIGATE_MAX_SESSIONS", 10_000, lo=1,
                                          hi=1_000_000),
            navigate_max_per_user=env.int(PREFIX + "NAVIGATE_MAX_PER_USER", 4, lo=1, hi=100),
            navigate_poll_s=env.float(PREFIX + "NAVIGATE_POLL_SECONDS", 1.0, lo=0.1, hi=60.0),
            http_port=http_port_from(env),
            tile_sources=tile_sources_from(env, base),
            tile_redis_url=(env.url(PREFIX + "TILE_REDIS_URL", ("redis", "rediss", "unix"))
                            or backend_url(env, "GEOPLEX_REDIS_URL")),
            tile_ttl_s=env.int(PREFIX + "TILE_TTL_SECONDS", 86_400, lo=1, hi=30 * 86_400),
            tile_memory_bytes=env.int(PREFIX + "TILE_MEMORY_MB", 64, lo=0, hi=65_536) << 20,
            tile_cache_dir=env.path(PREFIX + "TILE_CACHE_DIR",
                                    Path(os.path.expanduser("~/.cache/geoplex/tiles"))),
            web_vendor_dir=base / DEFAULT_LEAFLET,
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


def http_port_from(env: Env) -> int | None:
    """``GEOPLEX_MAPS_HTTP_PORT``: 8055 by default, 0 for a free port, ``off`` for none."""
    if env.str(PREFIX + "HTTP_PORT", "").lower() == "off":
        return None
    return env.int(PREFIX + "HTTP_PORT", 8055, lo=0, hi=65_535)


def tile_sources_from(env: Env, base: Path) -> tuple[tuple[str, Path], ...]:
    """``GEOPLEX_MAPS_TILE_SOURCES=region=path,...`` (``off``: no tiles); default the
    fetched Helsinki, Monaco and Gothenburg."""
    raw = env.str(PREFIX + "TILE_SOURCES", "")
    if raw.lower() == "off":
        return ()
    if not raw:
        return tuple((name, base / rel) for name, rel in DEFAULT_TILE_SOURCES)
    out = []
    for item in raw.split(","):
        name, sep, path = item.strip().partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"{PREFIX}TILE_SOURCES: expected region=path[,region=path...] "
                              "(an .osm.pbf or a GeoJSON road network), or off")
        out.append((name.strip(), Path(path.strip()).expanduser()))
    return tuple(out)


def broker_from(env: Env) -> tuple[str, ...]:
    """``GEOPLEX_BROKER_TARGET=host:port,...``: the broker's bootstrap addresses."""
    addresses = tuple(a.strip() for a in env.str("GEOPLEX_BROKER_TARGET", DEFAULT_BROKER)
                      .split(",") if a.strip())
    if not addresses:
        raise ConfigError("GEOPLEX_BROKER_TARGET: expected host:port[,host:port...] "
                          f"(default {DEFAULT_BROKER})")
    return addresses


def admin_from(env: Env) -> str:
    """``GEOPLEX_MAPS_TRAFFIC_ADMIN``: the user the traffic feed calls UpdateTraffic as."""
    subject = env.str(PREFIX + "TRAFFIC_ADMIN", "admin")
    if not is_id(subject):
        raise ConfigError(f"{PREFIX}TRAFFIC_ADMIN: expected a user id of 1..128 printable "
                          "characters (default admin)")
    return subject
