"""Shared fixtures: real backends started once per test session, on free ports."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from geoplex.infra import data
from geoplex.infra.local import BackendUrls, LocalInfra
from geoplex.infra.process import READY_LINE, Process, stop_all
from geoplex.servers.catalog import service
from geoplex.servers.routing.config import MODES, RegionSource
from geoplex.servers.routing.regions import Region, load_region
from geoplex.tools.backends import configured_backends


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalInfra]:
    """Real redis-server, etcd and SecantusDB (or the GEOPLEX_* configured servers)."""
    state: Path = tmp_path_factory.mktemp("geoplex-state")
    local = LocalInfra(state, configured=configured_backends())
    with local:  # started, and stopped after the session
        yield local


@pytest.fixture(scope="session")
def backends(infra: LocalInfra) -> BackendUrls:
    return infra.urls


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalInfra]:
    """A real Redis Cluster: three redis-server primaries sharing the 16,384 slots."""
    local = LocalInfra(tmp_path_factory.mktemp("redis-cluster"), backends=("redis",),
                       redis_cluster=3)
    with local:
        yield local


@pytest.fixture(scope="session")
def cluster_backends(backends: BackendUrls, redis_cluster: LocalInfra) -> BackendUrls:
    """The session's MongoDB and etcd, with the Redis Cluster instead of the single Redis."""
    return BackendUrls(redis_cluster.urls.redis_url, backends.mongo_uri, backends.etcd_endpoints)


class ServerProcess:
    """A real Geoplex server process (python -m MODULE), ready when it prints 'ready on'.

    It gets SIGTERM if pytest dies (the runner's parent-death signal), so a killed test
    run leaves no server behind.
    """

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self.process = Process(log_path.stem, [sys.executable, "-m", module], log_path,
                               env=env, ready_line=READY_LINE, stop_grace=20.0)

    @property
    def address(self) -> str:
        return self.process.address

    @property
    def env(self) -> Mapping[str, str]:
        """The variables it was given (over this environment)."""
        return self.process.env

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.proc

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def start(self, timeout: float = 90.0) -> ServerProcess:
        """Start (again, on the same port if it has a fixed one) and wait until it serves."""
        self.process.start().wait_ready(timeout)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """``sig``, SIGKILL after 20 s; the exit code (None if never started)."""
        return self.process.stop(sig=sig)


# what a test server does unless its test asks: the maps HTTP endpoint on a free port
# (never 8055, which `geoplex up` may hold) and no tiles (seconds of loading per process)
TEST_DEFAULTS = {"maps": {"GEOPLEX_MAPS_HTTP_PORT": "0", "GEOPLEX_MAPS_TILE_SOURCES": "off"},
                 "telemetry": {"GEOPLEX_TELEMETRY_HTTP_PORT": "0"}}


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """Start a declared service's server (``server_factory("presence", env, "log-name")``);
    its port is ``env``'s ``GEOPLEX_<NAME>_PORT``, else a free one. Every server is stopped
    at the end of the session."""
    started: list[ServerProcess] = []
    logs = tmp_path_factory.mktemp("server-logs")

    def start(name: str, env: dict[str, str], log_name: str = "server") -> ServerProcess:
        declared = service(name)
        env = {declared.env_prefix + "PORT": "0", **TEST_DEFAULTS.get(name, {}), **env}
        proc = ServerProcess(declared.module, env, logs / f"{log_name}-{len(started)}.log")
        started.append(proc)  # stopped at the end even if it fails to start
        return proc.start()

    yield start
    stop_all([proc.process for proc in started], grace=20.0)


@pytest.fixture(scope="session")
def routing_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One graph cache for the session: the in-process graphs and every routing server
    share it, so each region's graphs are built once."""
    return tmp_path_factory.mktemp("routing-cache")


@pytest.fixture(scope="session")
def routing_sources() -> tuple[RegionSource, ...]:
    """The three real extracts as routing regions (fetched, pinned, verified)."""
    fetched = data.fetch(["monaco", "helsinki", "gothenburg"], progress=lambda _m: None)
    return (RegionSource("monaco", fetched["monaco"]["pbf"]),
            RegionSource("helsinki", fetched["helsinki"]["pbf"]),
            RegionSource("gothenburg", fetched["gothenburg"]["network"]))


@pytest.fixture(scope="session")
def routing_regions(routing_sources: tuple[RegionSource, ...],
                    routing_cache: Path) -> dict[str, Region]:
    """Every region's car, bicycle and foot graphs, in this process."""
    return {s.name: load_region(s, MODES, routing_cache, 600.0, progress=lambda _m: None)
            for s in routing_sources}

