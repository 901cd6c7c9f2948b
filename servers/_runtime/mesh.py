"""MeshService: served by every Geoplex process beside its own services."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence

import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

import geoplex
from geoplex.mesh.v1 import mesh_pb2, mesh_pb2_grpc

from .errors import InvalidArgument

MAX_PING_BYTES = 1 << 20


def _payload(size: int, field: str) -> bytes:
    if not 0 <= size <= MAX_PING_BYTES:
        raise InvalidArgument(field, f"must be in 0..{MAX_PING_BYTES}")
    return b"\x00" * size


class MeshServicer(mesh_pb2_grpc.MeshServiceServicer):
    def __init__(self, server_name: str, services: Sequence[str], start_time: Timestamp) -> None:
        self._info = mesh_pb2.GetServerInfoResponse(
            version=geoplex.__version__, services=list(services), start_time=start_time,
            pid=os.getpid(), server_name=server_name)

    async def GetServerInfo(
            self, request: mesh_pb2.GetServerInfoRequest,
            context: grpc.aio.ServicerContext[mesh_pb2.GetServerInfoRequest,
                                              mesh_pb2.GetServerInfoResponse],
    ) -> mesh_pb2.GetServerInfoResponse:
        return self._info

    async def Ping(
            self, request: mesh_pb2.PingRequest,
            context: grpc.aio.ServicerContext[mesh_pb2.PingRequest, mesh_pb2.PingResponse],
    ) -> mesh_pb2.PingResponse:
        if request.response_size == 0:
            return mesh_pb2.PingResponse()
        return mesh_pb2.PingResponse(payload=_payload(request.response_size, "response_size"))

    async def PingStream(
            self, request_iterator: AsyncIterator[mesh_pb2.PingStreamRequest],
            context: grpc.aio.ServicerContext[mesh_pb2.PingStreamRequest,
                                              mesh_pb2.PingStreamResponse],
    ) -> AsyncIterator[mesh_pb2.PingStreamResponse]:
        async for request in request_iterator:
            if request.response_size == 0:
                yield mesh_pb2.PingStreamResponse()
            else:
                yield mesh_pb2.PingStreamResponse(
                    payload=_payload(request.response_size, "response_size"))
