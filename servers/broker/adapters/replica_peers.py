"""gRPC calls from this broker to the others: a follower's ReplicaFetch to its leader.

One channel per broker address, opened on first use and kept (gRPC reconnects by itself);
an address no longer used is closed when :meth:`GrpcPeers.forget` is told so.
"""

from __future__ import annotations

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.broker.v1 import broker_pb2_grpc

from ..domain import ReplicaChunk, ReplicaFetch
from ..ports import PeerError

_DETAILS_KEY = "grpc-status-details-bin"
# a fetch carries up to a few MiB of frames
_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]


def _reason(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


class GrpcPeers:
    """:class:`~geoplex.servers.broker.ports.ReplicaPeers` over gRPC."""

    def __init__(self) -> None:
        self._channels: dict[str, tuple[grpc.aio.Channel,
                                        broker_pb2_grpc.ReplicaServiceAsyncStub]] = {}

    def _stub(self, address: str) -> broker_pb2_grpc.ReplicaServiceAsyncStub:
        entry = self._channels.get(address)
        if entry is None:
            channel = grpc.aio.insecure_channel(address, options=_OPTIONS)
            stub: broker_pb2_grpc.ReplicaServiceAsyncStub = \
                broker_pb2_grpc.ReplicaServiceStub(channel)  # the .pyi's async stub type
            entry = self._channels[address] = (channel, stub)
        return entry[1]

    def _channel(self, address: str) -> grpc.aio.Channel:
        self._stub(address)
        return self._channels[address][0]

    async def fetch(self, address: str, query: ReplicaFetch, timeout: float) -> ReplicaChunk:
        request = pb.ReplicaFetchRequest(
            replica_id=query.replica_id, topic=query.topic, partition=query.partition,
            fetch_offset=query.fetch_offset, last_fetched_epoch=query.last_fetched_epoch,
            leader_epoch=query.leader_epoch, max_bytes=query.max_bytes,
            max_wait_ms=query.max_wait_ms, replica_incarnation=query.replica_incarnation)
        try:
            answer = await self._stub(address).ReplicaFetch(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise PeerError(exc.code().name, _reason(exc), exc.details() or "") from None
        return ReplicaChunk(answer.frames, answer.high_watermark, answer.log_start_offset,
                            answer.log_end_offset,
                            answer.diverging_epoch if answer.HasField("diverging_epoch") else -1,
                            answer.diverging_end_offset)

    async def produce(self, address: str, topic: str, partition: int, records_blob: bytes,
                      timeout: float) -> None:
        channel = self._channel(address)
        stub: broker_pb2_grpc.BrokerServiceAsyncStub = \
            broker_pb2_grpc.BrokerServiceStub(channel)  # the .pyi's async stub type
        batch = pb.RecordBatch.FromString(records_blob)  # field 6: the records
        request = pb.ProduceRequest(topic=topic, partition=partition, records=batch.records,
                                    acks=pb.ACKS_ALL)
        try:
            await stub.Produce(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise PeerError(exc.code().name, _reason(exc), exc.details() or "") from None

    async def forget(self, address: str) -> None:
        entry = self._channels.pop(address, None)
        if entry is not None:
            await entry[0].close()

    async def close(self) -> None:
        for channel, _ in self._channels.values():
            await channel.close()
        self._channels.clear()
