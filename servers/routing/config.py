"""RoutingConfig: read once from GEOPLEX_ROUTING_* variables at start."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from geoplex.servers._runtime.auth import auth_secret
from geoplex.servers._runtime.config import ConfigError, Env, default_state_dir

PREFIX = "GEOPLEX_ROUTING_"
MODES = ("car", "bicycle", "foot")
# where `geoplex data fetch` puts the three extracts (infra/data.py; a test keeps them equal)
DEFAULT_REGIONS = (("monaco", "monaco/monaco.osm.pbf"),
                   ("helsinki", "helsinki/Helsinki.osm.pbf"),
                   ("gothenburg", "gothenburg/large-network.json"))


@dataclass(frozen=True, slots=True)
class RegionSource:
    name: str
    path: Path


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    regions: tuple[RegionSource, ...]
    modes: tuple[str, ...]
    cache_dir: Path
    max_snap_m: float
    matrix_max: int
    traffic_valid_s: float
    traffic_fade_s: float
    traffic_refresh_s: float
    admins: frozenset[str]
    workers: int
    auth_secret: str

    @classmethod
    def from_env(cls, env: Env | None = None) -> RoutingConfig:
        env = env or Env()
        modes = tuple(m.strip() for m in env.str(PREFIX + "MODES", ",".join(MODES)).split(",")
                      if m.strip())
        unknown = [m for m in modes if m not in MODES]
        if not modes or unknown:
            raise ConfigError(f"{PREFIX}MODES: expected a comma-separated list of "
                              f"{', '.join(MODES)}")
        return cls(
            regions=regions_from(env),
            modes=modes,
            cache_dir=env.path(PREFIX + "CACHE_DIR", default_state_dir(env) / "routing").resolve(),
            max_snap_m=env.float(PREFIX + "MAX_SNAP_METERS", 500.0, lo=1.0, hi=100_000.0),
            matrix_max=env.int(PREFIX + "MATRIX_MAX", 100, lo=1, hi=1000),
            traffic_valid_s=env.float(PREFIX + "TRAFFIC_VALID_SECONDS", 600.0, lo=1.0,
                                      hi=86_400.0),
            traffic_fade_s=env.float(PREFIX + "TRAFFIC_FADE_SECONDS", 600.0, lo=0.0,
                                     hi=86_400.0),
            traffic_refresh_s=env.float(PREFIX + "TRAFFIC_REFRESH_SECONDS", 5.0, lo=0.1,
                                        hi=3600.0),
            admins=frozenset(a.strip() for a in env.str(PREFIX + "ADMINS", "admin").split(",")
                             if a.strip()),
            workers=env.int(PREFIX + "WORKERS", 1, lo=0, hi=64),
            auth_secret=auth_secret(env),
        )


def data_dir(env: Env) -> Path:
    """``$GEOPLEX_DATA_DIR`` or ``~/.cache/geoplex/data``, as `geoplex data fetch` uses."""
    return env.path("GEOPLEX_DATA_DIR", Path(os.path.expanduser("~/.cache/geoplex/data")))


def regions_from(env: Env) -> tuple[RegionSource, ...]:
    """``GEOPLEX_ROUTING_REGIONS=name=path,...``; default the three fetched extracts."""
    raw = env.str(PREFIX + "REGIONS", "")
    if not raw:
        base = data_dir(env)
        return tuple(RegionSource(name, base / rel) for name, rel in DEFAULT_REGIONS)
    regions = []
    for item in raw.split(","):
        name, sep, path = item.strip().partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"{PREFIX}REGIONS: expected name=path[,name=path...] "
                              "(a .osm.pbf or a GeoJSON road network per region)")
        regions.append(RegionSource(name.strip(), Path(path.strip()).expanduser()))
    names = [r.name for r in regions]
    if len(set(names)) != len(names):
        raise ConfigError(f"{PREFIX}REGIONS: a region name appears twice")
    return tuple(regions)
