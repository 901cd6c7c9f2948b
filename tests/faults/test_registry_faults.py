"""The registry is a directory, not a dependency: a server whose etcd is down starts and
serves anyway, then registers once etcd is back; a lease lost (etcd away longer than
the TTL) takes the entry, and the server puts it back on a new lease."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from etcd3aio import prefix_range_end

from geoplex.clients.mesh import MeshClient
from geoplex.clients.registry import MeshRegistry, Registration
from geoplex.infra.local import LocalInfra
from polling import eventually
from registry_helpers import etcd

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

OWN_BACKENDS = ("etcd",)


async def entries(infra: LocalInfra, prefix: str) -> list[Registration]:
    async with MeshRegistry(etcd(infra.urls), prefix, timeout=1.0) as registry:
        return await registry.processes()


async def test_a_server_started_while_etcd_is_down_serves_and_registers_when_it_is_back(
        own_infra: LocalInfra, server_factory: Callable[..., ServerProcess],
        tmp_path_factory: object) -> None:
    prefix = f"/test-registry-{uuid.uuid4().hex[:8]}"
    etcd_process = own_infra.procs["etcd"]
    etcd_process.stop()
    try:
        server = server_factory("telemetry", {
            "GEOPLEX_ETCD_ENDPOINTS": ",".join(etcd(own_infra.urls)),
            "GEOPLEX_REGISTRY_PREFIX": prefix, "GEOPLEX_REGISTRY_TTL_SECONDS": "2",
            "GEOPLEX_TELEMETRY_DATA_DIR": str(own_infra.state_dir / f"tm-{prefix[-8:]}")},
            "registry-etcd-down")
        async with MeshClient(server.address) as mesh:   # it serves without etcd
            assert (await mesh.server_info(timeout=10)).pid == server.pid
        await eventually(lambda: "does not answer" in server.log_path.read_text(), 20,
                         what="the server saying etcd is away")
    finally:
        etcd_process.start().wait_ready(30)
    found = await eventually(lambda: entries(own_infra, prefix), 30, ignore=(Exception,),
                             what="the entry once etcd is back")
    assert [e.pid for e in found] == [server.pid]

    # the lease lost (as when etcd was away longer than the TTL): the entry goes, and the
    # server's next keep-alive finds out and registers again on a new lease
    async with MeshRegistry(etcd(own_infra.urls), prefix) as registry:
        client = registry._client
        assert client.kv is not None and client.lease is not None
        start = f"{prefix}/".encode()
        held = (await client.kv.get(start, prefix_range_end(start))).kvs
        assert len(held) == 1 and held[0].lease
        await client.lease.revoke(held[0].lease)
        assert await registry.processes() == []
        again = await eventually(registry.processes, 30, what="the entry on a new lease")
        assert [e.pid for e in again] == [server.pid]
        assert (await client.kv.get(start, prefix_range_end(start))).kvs[0].lease != \
            held[0].lease
    assert "registering again" in server.log_path.read_text()
    server.stop()
    assert await entries(own_infra, prefix) == []
