"""What routing tests share: the environment of a routing server over the session's regions."""

from __future__ import annotations

from pathlib import Path

from geoplex.servers.routing.config import RegionSource


def routing_env(sources: tuple[RegionSource, ...], cache: Path,
                **extra: str) -> dict[str, str]:
    """The environment of a routing server over ``sources`` and the session's graph cache."""
    return {"GEOPLEX_ROUTING_REGIONS": ",".join(f"{s.name}={s.path}" for s in sources),
            "GEOPLEX_ROUTING_CACHE_DIR": str(cache), **extra}
