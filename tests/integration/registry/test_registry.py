"""The mesh's registry on a real etcd and real server processes: a server registers
once it listens (its address, pid, version, health), a graceful stop removes its entry
at once, a kill -9 lets it expire within the lease's TTL, and a follower sees both."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

import geoplex
from geoplex.clients.registry import HEALTH_SERVING, MeshRegistry, Registration
from geoplex.infra.local import BackendUrls
from polling import eventually
from registry_helpers import etcd

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


def telemetry_env(backends: BackendUrls, prefix: str, tmp: str, ttl: int = 10) -> dict[str, str]:
    """A telemetry server (it needs no other backend) registering under ``prefix``."""
    return {"GEOPLEX_ETCD_ENDPOINTS": ",".join(etcd(backends)),
            "GEOPLEX_REGISTRY_PREFIX": prefix, "GEOPLEX_REGISTRY_TTL_SECONDS": str(ttl),
            "GEOPLEX_TELEMETRY_DATA_DIR": tmp}


@pytest.fixture
def prefix() -> str:
    return f"/test-registry-{uuid.uuid4().hex[:8]}"


async def entries(backends: BackendUrls, prefix: str) -> list[Registration]:
    async with MeshRegistry(etcd(backends), prefix) as registry:
        return await registry.processes()


async def test_a_server_registers_once_serving_and_a_graceful_stop_removes_it(
        backends: BackendUrls, server_factory: Callable[..., ServerProcess], prefix: str,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    server = server_factory("telemetry", telemetry_env(
        backends, prefix, str(tmp_path_factory.mktemp("reg-store"))), "registry-graceful")
    found = await eventually(lambda: entries(backends, prefix), 20,
                             what="the server's registry entry")
    assert len(found) == 1
    entry = found[0]
    assert (entry.service, entry.pid, entry.address) == ("telemetry", server.pid, server.address)
    assert entry.instance.endswith(f":{server.pid}") and entry.version == geoplex.__version__
    assert entry.health == HEALTH_SERVING and 0 <= entry.uptime_s() < 120
    assert entry.endpoints["http"].startswith("127.0.0.1:")   # its Prometheus API

    assert server.stop() == 0
    assert await entries(backends, prefix) == []              # gone at once: lease revoked


async def test_a_killed_server_expires_within_the_ttl_and_a_follower_sees_it_come_and_go(
        backends: BackendUrls, server_factory: Callable[..., ServerProcess], prefix: str,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    seen: list[list[int]] = []
    async with MeshRegistry(etcd(backends), prefix) as registry:
        async def follow() -> None:
            async for processes in registry.follow():
                seen.append([p.pid for p in processes])

        follower = asyncio.create_task(follow())
        try:
            await eventually(lambda: seen == [[]], 10, what="the follower's first (empty) set")
            server = server_factory("telemetry", telemetry_env(
                backends, prefix, str(tmp_path_factory.mktemp("reg-killed")), ttl=2),
                "registry-killed")
            pid = server.pid
            await eventually(lambda: [pid] in seen, 20, what="the follower seeing the server")
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait(10)
            # no revoke: etcd drops the entry when the 2 s lease runs out
            await eventually(lambda: seen[-1] == [], 15, what="the entry expiring")
            assert await registry.processes() == []
            assert seen == [[], [pid], []]
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
