"""Fault tests own their backends (not the session's), so killing one disturbs no other test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from geoplex.infra.local import LocalInfra


@pytest.fixture(scope="module")
def own_infra(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalInfra]:
    """Backends private to one test module: the module's ``OWN_BACKENDS`` (default Redis
    and MongoDB), started for its first test and stopped after its last."""
    backends = getattr(request.module, "OWN_BACKENDS", ("redis", "mongo"))
    name = request.module.__name__.rsplit(".", 1)[-1]
    infra = LocalInfra(tmp_path_factory.mktemp(f"{name}-state"), backends=backends)
    with infra:  # started, and stopped after the module
        yield infra
