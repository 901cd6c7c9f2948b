"""Shared fixtures: real backends started once per test session, on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from geoplex.infra.local import BackendUrls, LocalInfra


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalInfra]:
    """Real redis-server, etcd and SecantusDB (or the GEOPLEX_* configured servers)."""
    state: Path = tmp_path_factory.mktemp("geoplex-state")
    local = LocalInfra.from_env(state)
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def backends(infra: LocalInfra) -> BackendUrls:
    return infra.urls
