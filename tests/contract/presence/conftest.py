"""Real presence server processes (two sharing Redis and MongoDB) for the contract tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from geoplex.infra.local import BackendUrls, free_port
from presence_servers import presence_env

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


@pytest.fixture(scope="session")
def presence_pair(backends: BackendUrls, server_factory: Callable[..., ServerProcess]
                  ) -> dict[str, ServerProcess]:
    """Two presence processes on fixed ports (so a restarted one comes back where it was)."""
    tag = uuid.uuid4().hex[:6]
    servers: dict[str, ServerProcess] = {}
    for name in ("a", "b"):
        env = presence_env(backends, tag, GEOPLEX_PRESENCE_PORT=str(free_port()))
        servers[name] = server_factory("presence", env, f"presence-{name}")
    return servers


@pytest.fixture(scope="session")
def presence_fast_expiry(backends: BackendUrls, server_factory: Callable[..., ServerProcess]
                         ) -> ServerProcess:
    """A presence process whose 10-minute inactivity limit is configured down to 2 s."""
    env = presence_env(backends, uuid.uuid4().hex[:6],
                       GEOPLEX_PRESENCE_INACTIVE_AFTER_SECONDS="2",
                       GEOPLEX_PRESENCE_SWEEP_SECONDS="0.2")
    return server_factory("presence", env, "presence-fast")
