"""A broker, a routing server and a maps server with location ingest on: the mesh the maps
tests that follow drivers through the broker start (``start_maps_mesh``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from geoplex.infra import data
from geoplex.infra.local import BackendUrls
from geoplex.servers.routing.config import RegionSource
from routing_servers import routing_env  # tests/routing_servers.py

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


def start_maps_mesh(name: str, region: str, backends: BackendUrls,
                    server_factory: Callable[..., ServerProcess],
                    tmp_path_factory: pytest.TempPathFactory,
                    routing_sources: tuple[RegionSource, ...], routing_cache: Path, *,
                    routing_extra: dict[str, str] | None = None,
                    maps_extra: dict[str, str] | None = None
                    ) -> tuple[ServerProcess, ServerProcess, ServerProcess]:
    """(broker, routing, maps): a one-node broker on its own etcd prefix, routing over
    ``region`` (car), and maps geocoding only Monaco (a quick start) with a fresh trip
    history database, two partitions on the locations topic and ``maps_extra``."""
    broker = server_factory("broker", {
        **backends.env(), "GEOPLEX_BROKER_PORT": "0",
        "GEOPLEX_BROKER_DATA_DIR": str(tmp_path_factory.mktemp(f"{name}-broker")),
        "GEOPLEX_BROKER_ETCD_PREFIX": f"/geoplex-test/{uuid.uuid4().hex[:12]}",
        "GEOPLEX_LOG_LEVEL": "warning"}, f"{name}-broker")
    sources = tuple(s for s in routing_sources if s.name == region)
    routing = server_factory("routing", routing_env(sources, routing_cache,
                                                    GEOPLEX_ROUTING_MODES="car",
                                                    **(routing_extra or {})),
                             f"{name}-routing")
    monaco = data.fetch(["monaco"], progress=lambda _m: None)["monaco"]["pbf"]
    maps = server_factory("maps", {
        **backends.env(), "GEOPLEX_BROKER_TARGET": broker.address,
        "GEOPLEX_ROUTING_TARGET": routing.address,
        "GEOPLEX_MAPS_EXTRACTS": f"Monaco={monaco}", "GEOPLEX_MAPS_PLACES": "none",
        "GEOPLEX_MAPS_DATABASE": f"{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}",
        "GEOPLEX_MAPS_LOCATIONS_PARTITIONS": "2", **(maps_extra or {})}, f"{name}-maps")
    return broker, routing, maps
