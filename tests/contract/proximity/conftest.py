"""Real proximity servers (separate processes) over real Redis and SecantusDB,
loaded with the real Helsinki and Monaco businesses plus a few synthetic ones
at the poles, the equator and the antimeridian."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from geoplex.infra import data
from geoplex.infra.local import BackendUrls
from geoplex.servers.proximity.domain import Business
from geoplex.servers.proximity.loader import from_pois
from px_edges import edge_businesses
from px_servers import edit_replicas, fresh_database, server_env

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


@pytest.fixture(scope="session")
def real_businesses() -> list[Business]:
    fetched = data.fetch(["helsinki", "monaco"], progress=lambda _m: None)
    businesses = []
    for name in ("helsinki", "monaco"):
        businesses.extend(from_pois(data.read_pois(fetched[name]["pbf"])))
    return businesses


@pytest.fixture(scope="session")
def search_dataset(backends: BackendUrls, real_businesses: list[Business]) -> tuple[str, list[Business]]:
    """A read-only database for the property tests."""
    businesses = real_businesses + edge_businesses()
    return fresh_database(backends, businesses, "px_search"), businesses


@pytest.fixture(scope="session")
def search_servers(backends: BackendUrls, search_dataset: tuple[str, list[Business]],
                   server_factory: Callable[..., ServerProcess]) -> dict[str, str]:
    """index kind -> address of a server answering from the read-only dataset."""
    database, _ = search_dataset
    return {index: server_factory("proximity",
                                  server_env(backends, database, index), f"px-{index}").address
            for index in ("quadtree", "geohash")}


@pytest.fixture(scope="session")
def edit_database(backends: BackendUrls, real_businesses: list[Business]) -> str:
    return fresh_database(backends, real_businesses, "px_edit")


@pytest.fixture(scope="session")
def edit_servers(backends: BackendUrls, edit_database: str,
                 server_factory: Callable[..., ServerProcess]) -> dict[str, ServerProcess]:
    """Two quadtree replicas and one geohash replica over the same writable database."""
    return edit_replicas(backends, edit_database, server_factory, "px-edit")
