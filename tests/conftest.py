"""Shared fixtures: real backends started once per test session, on free ports."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from geoplex.infra.local import BackendUrls, LocalInfra


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalInfra]:
    """Real redis-server, etcd and SecantusDB (or the GEOPLEX_* configured servers)."""
    state: Path = tmp_path_factory.mktemp("geoplex-state")
    local = LocalInfra.from_env(state)
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
    """A real Geoplex server process (python -m MODULE), ready when it prints 'ready on'."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        import os

        self.module = module
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self, timeout: float = 90.0) -> ServerProcess:
        import time

        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", self.module], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            ready = [line for line in text.splitlines() if " ready on " in line]
            if len(ready) > self.starts:
                self.address = ready[-1].rsplit(" ready on ", 1)[1].strip()
                self.starts += 1
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.proc.returncode}: "
                                   f"{text[-2000:]}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.module} not ready in {timeout}s: {self.log_path}")

    starts = 0

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """Start server processes; every one is stopped at the end of the session."""
    started: list[ServerProcess] = []
    logs = tmp_path_factory.mktemp("server-logs")

    def start(module: str, env: dict[str, str], name: str = "server") -> ServerProcess:
        proc = ServerProcess(module, env, logs / f"{name}-{len(started)}.log").start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
