"""Typed client for MeshService, served by every Geoplex process."""

from __future__ import annotations

from geoplex.mesh.v1 import mesh_pb2, mesh_pb2_grpc

from .channel import BaseClient


class MeshClient(BaseClient):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.stub = mesh_pb2_grpc.MeshServiceStub(self.channel)

    async def server_info(self, *, timeout: float | None = None) -> mesh_pb2.GetServerInfoResponse:
        return await self.call(self.stub.GetServerInfo, mesh_pb2.GetServerInfoRequest(),
                               timeout=timeout)

    async def ping(self, response_size: int = 0, *, timeout: float | None = None) -> bytes:
        response = await self.call(self.stub.Ping, mesh_pb2.PingRequest(
            response_size=response_size), timeout=timeout)
        return response.payload
