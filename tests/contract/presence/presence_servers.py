"""How the presence contract tests configure a server process."""

from __future__ import annotations

from geoplex.infra.local import BackendUrls


def presence_env(backends: BackendUrls, tag: str, **extra: str) -> dict[str, str]:
    return {**backends.env(), "GEOPLEX_PRESENCE_DATABASE": f"presence_{tag}",
            "GEOPLEX_PRESENCE_NAMESPACE": f"pr{tag}:", "GEOPLEX_PRESENCE_PORT": "0",
            "GEOPLEX_LOG_LEVEL": "info", **extra}
