"""BrokerService over gRPC: convert, await the application, convert back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from geoplex.broker.v1 import broker_pb2 as pb

from . import convert
from .app import BrokerApp
from .domain import Appended, ProducePlan

Context = grpc.aio.ServicerContext
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
# batches of one ProduceStream appended concurrently, answered in order
STREAM_IN_FLIGHT = 64


class BrokerServicer:
    """Every method of BrokerService, registered by :func:`add_to_server`.

    Not a subclass of the generated ``BrokerServiceServicer``: Fetch and Subscribe return
    their responses already serialised (stored batches concatenated, never decoded), and
    Produce and ProduceStream take their requests with the records' bytes
    (:class:`convert.RawProduce`), which that base's signatures forbid; the generated
    registration, the only thing that needs the base, is not used.
    """

    def __init__(self, app: BrokerApp) -> None:
        self.app = app

    # ---- topics --------------------------------------------------------------------------

    async def CreateTopic(self, request: pb.CreateTopicRequest,
                          context: Context[pb.CreateTopicRequest, pb.CreateTopicResponse]
                          ) -> pb.CreateTopicResponse:
        spec = convert.topic_from_pb(request.topic, self.app.now_ms())
        return pb.CreateTopicResponse(topic=convert.topic_to_pb(await self.app.create_topic(spec)))

    async def DeleteTopic(self, request: pb.DeleteTopicRequest,
                          context: Context[pb.DeleteTopicRequest, pb.DeleteTopicResponse]
                          ) -> pb.DeleteTopicResponse:
        await self.app.delete_topic(convert.topic_name("name", request.name))
        return pb.DeleteTopicResponse()

    async def ListTopics(self, request: pb.ListTopicsRequest,
                         context: Context[pb.ListTopicsRequest, pb.ListTopicsResponse]
                         ) -> pb.ListTopicsResponse:
        scope = f"topics:{request.include_internal}"
        page = convert.page_from_pb(request.page_size, request.page_token, scope)
        specs = self.app.list_topics(request.include_internal)
        names, token = convert.paged([s.name for s in specs], page, scope)
        by_name = {s.name: s for s in specs}
        return pb.ListTopicsResponse(topics=[convert.topic_to_pb(by_name[n]) for n in names],
                                     next_page_token=token)

    async def GetTopic(self, request: pb.GetTopicRequest,
                       context: Context[pb.GetTopicRequest, pb.GetTopicResponse]
                       ) -> pb.GetTopicResponse:
        spec, states = self.app.get_topic(convert.topic_name("name", request.name))
        return pb.GetTopicResponse(topic=convert.topic_to_pb(spec),
                                   partitions=[convert.partition_to_pb(s) for s in states])

    async def ListOffsets(self, request: pb.ListOffsetsRequest,
                          context: Context[pb.ListOffsetsRequest, pb.ListOffsetsResponse]
                          ) -> pb.ListOffsetsResponse:
        topic = convert.topic_name("topic", request.topic)
        at = convert.time_ms(request.time) if request.HasField("time") else None
        offsets = self.app.list_offsets(topic, convert.partitions_from_pb(request.partitions),
                                        at)
        return pb.ListOffsetsResponse(offsets=convert.offsets_to_pb(offsets))

    # ---- produce and fetch ---------------------------------------------------------------

    def _plan(self, incoming: convert.RawProduce) -> ProducePlan:
        spec = self.app.topic(convert.topic_name("topic", incoming.request.topic))
        return convert.produce_plan(incoming, spec, self.app.sticky(spec), self.app.now_ms())

    async def Produce(self, request: convert.RawProduce,  # a ProduceRequest and its bytes
                      context: Context[convert.RawProduce, pb.ProduceResponse]
                      ) -> pb.ProduceResponse:
        return convert.produce_response(await self.app.produce(self._plan(request)))

    async def ProduceStream(self, request_iterator: AsyncIterator[convert.RawProduce],
                            context: Context[convert.RawProduce, pb.ProduceStreamResponse]
                            ) -> AsyncIterator[pb.ProduceStreamResponse]:
        """Each request is appended as it arrives (up to STREAM_IN_FLIGHT at once); the
        answers go back in request order. A refused batch ends the stream with its error
        (the batches after it may have been written: an idempotent producer resends them
        safely)."""
        pending: asyncio.Queue[asyncio.Future[list[Appended]] | None] = asyncio.Queue()
        room = asyncio.Semaphore(STREAM_IN_FLIGHT)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await room.acquire()
                    future: asyncio.Future[list[Appended]]
                    try:
                        future = asyncio.ensure_future(self.app.produce(self._plan(request)))
                    except Exception as exc:  # noqa: BLE001 - refused: answered in order
                        future = asyncio.get_running_loop().create_future()
                        future.set_exception(exc)
                    pending.put_nowait(future)
            finally:
                pending.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (future := await pending.get()) is not None:
                results = await future
                room.release()
                yield pb.ProduceStreamResponse(produce=convert.produce_response(results))
            await reader  # the request stream's own error, if any
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            while not pending.empty():  # appends already started finish on their own
                left = pending.get_nowait()
                if left is not None:
                    left.add_done_callback(_retrieve)

    async def Fetch(self, request: pb.FetchRequest,
                    context: Context[pb.FetchRequest, bytes]
                    ) -> bytes:  # a pre-serialised FetchResponse
        query = convert.fetch_from_pb(request)
        return convert.fetch_bytes(query.partition, await self.app.fetch(query))

    async def Subscribe(self, request: pb.SubscribeRequest,
                        context: Context[pb.SubscribeRequest, bytes]
                        ) -> AsyncIterator[bytes]:  # pre-serialised SubscribeResponses
        query = convert.subscribe_from_pb(request)
        async with contextlib.aclosing(self.app.subscribe(query)) as results:
            async for result in results:
                yield convert.subscribe_bytes(query.partition, result)

    # ---- groups --------------------------------------------------------------------------

    async def JoinGroup(self, request: pb.JoinGroupRequest,
                        context: Context[pb.JoinGroupRequest, pb.JoinGroupResponse]
                        ) -> pb.JoinGroupResponse:
        member, generation, interval = await self.app.join(convert.join_from_pb(request))
        return pb.JoinGroupResponse(member_id=member, generation=generation,
                                    heartbeat_interval=convert.duration(interval))

    async def SyncGroup(self, request: pb.SyncGroupRequest,
                        context: Context[pb.SyncGroupRequest, pb.SyncGroupResponse]
                        ) -> pb.SyncGroupResponse:
        generation, assignment = self.app.sync(
            convert.group_name("group", request.group), convert.member_id(request.member_id),
            request.generation)
        return pb.SyncGroupResponse(generation=generation,
                                    assignment=convert.assignment_to_pb(assignment))

    async def Heartbeat(self, request: pb.HeartbeatRequest,
                        context: Context[pb.HeartbeatRequest, pb.HeartbeatResponse]
                        ) -> pb.HeartbeatResponse:
        generation, rebalance = self.app.heartbeat(
            convert.group_name("group", request.group), convert.member_id(request.member_id),
            request.generation)
        return pb.HeartbeatResponse(generation=generation, rebalance=rebalance)

    async def LeaveGroup(self, request: pb.LeaveGroupRequest,
                         context: Context[pb.LeaveGroupRequest, pb.LeaveGroupResponse]
                         ) -> pb.LeaveGroupResponse:
        self.app.leave(convert.group_name("group", request.group),
                       convert.member_id(request.member_id))
        return pb.LeaveGroupResponse()

    async def CommitOffsets(self, request: pb.CommitOffsetsRequest,
                            context: Context[pb.CommitOffsetsRequest, pb.CommitOffsetsResponse]
                            ) -> pb.CommitOffsetsResponse:
        group = convert.group_name("group", request.group)
        member = convert.member_id(request.member_id) if request.member_id else ""
        committed = await self.app.commit(group, member, request.generation,
                                          convert.offsets_from_pb(request.offsets))
        return pb.CommitOffsetsResponse(offsets=convert.offsets_to_pb(committed))

    async def GetCommittedOffsets(self, request: pb.GetCommittedOffsetsRequest,
                                  context: Context[pb.GetCommittedOffsetsRequest,
                                                   pb.GetCommittedOffsetsResponse]
                                  ) -> pb.GetCommittedOffsetsResponse:
        topics = sorted({convert.topic_name(f"topics[{i}]", t)
                         for i, t in enumerate(request.topics)})
        committed = await self.app.committed(convert.group_name("group", request.group), topics)
        return pb.GetCommittedOffsetsResponse(offsets=convert.offsets_to_pb(committed))

    async def ResetOffsets(self, request: pb.ResetOffsetsRequest,
                           context: Context[pb.ResetOffsetsRequest, pb.ResetOffsetsResponse]
                           ) -> pb.ResetOffsetsResponse:
        offsets = await self.app.reset(convert.reset_from_pb(request))
        return pb.ResetOffsetsResponse(offsets=convert.offsets_to_pb(offsets))

    async def DescribeGroup(self, request: pb.DescribeGroupRequest,
                            context: Context[pb.DescribeGroupRequest, pb.DescribeGroupResponse]
                            ) -> pb.DescribeGroupResponse:
        return convert.group_to_pb(
            await self.app.describe(convert.group_name("group", request.group)))

    async def ListGroups(self, request: pb.ListGroupsRequest,
                         context: Context[pb.ListGroupsRequest, pb.ListGroupsResponse]
                         ) -> pb.ListGroupsResponse:
        page = convert.page_from_pb(request.page_size, request.page_token, "groups")
        names, token = convert.paged(await self.app.list_groups(), page, "groups")
        return pb.ListGroupsResponse(groups=names, next_page_token=token)

    async def Nack(self, request: pb.NackRequest,
                   context: Context[pb.NackRequest, pb.NackResponse]) -> pb.NackResponse:
        dead, deliveries = await self.app.nack(convert.nack_from_pb(request))
        return pb.NackResponse(dead_lettered=dead, deliveries=deliveries)


    # ---- the cluster --------------------------------------------------------------------

    async def GetMetadata(self, request: pb.GetMetadataRequest,
                          context: Context[pb.GetMetadataRequest, pb.GetMetadataResponse]
                          ) -> pb.GetMetadataResponse:
        topics = [convert.topic_name(f"topics[{i}]", t) for i, t in enumerate(request.topics)]
        group = convert.group_name("group", request.group) if request.group else ""
        return convert.metadata_to_pb(self.app.metadata(topics, group))

    async def DescribeReplicas(self, request: pb.DescribeReplicasRequest,
                               context: Context[pb.DescribeReplicasRequest,
                                                pb.DescribeReplicasResponse]
                               ) -> pb.DescribeReplicasResponse:
        topics = [convert.topic_name(f"topics[{i}]", t) for i, t in enumerate(request.topics)]
        broker, led = self.app.led_partitions(topics)
        return convert.replicas_to_pb(broker, led)

    async def ReplicaFetch(self, request: pb.ReplicaFetchRequest,
                           context: Context[pb.ReplicaFetchRequest, pb.ReplicaFetchResponse]
                           ) -> pb.ReplicaFetchResponse:
        return convert.chunk_to_pb(await self.app.replica_fetch(
            convert.replica_fetch_from_pb(request)))


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned future's exception as seen (the stream that wanted it is gone)."""
    if not future.cancelled():
        future.exception()


def _serialize(message: bytes | Message) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def add_to_server(servicer: BrokerServicer, server: grpc.aio.Server) -> None:
    """The generated registration, except that Fetch and Subscribe return pre-serialised
    bytes and Produce and ProduceStream receive :class:`convert.RawProduce`; every other
    method takes and returns messages as usual."""
    service = pb.DESCRIPTOR.services_by_name["BrokerService"]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    special: dict[str, Callable[[bytes], object]] = {
        "Produce": convert.RawProduce, "ProduceStream": convert.raw_stream_produce}
    for method in service.methods:
        behaviour = getattr(servicer, method.name)
        deserializer: Callable[[bytes], object] = special.get(
            method.name, getattr(pb, method.input_type.name).FromString)
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                behaviour, request_deserializer=deserializer, response_serializer=_serialize)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                behaviour, request_deserializer=deserializer, response_serializer=_serialize)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                behaviour, request_deserializer=deserializer, response_serializer=_serialize)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def add_replica_service(servicer: BrokerServicer, server: grpc.aio.Server) -> None:
    """ReplicaService (broker to broker) on the same server."""
    service = pb.DESCRIPTOR.services_by_name["ReplicaService"]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "ReplicaFetch": grpc.unary_unary_rpc_method_handler(
            servicer.ReplicaFetch, request_deserializer=pb.ReplicaFetchRequest.FromString,
            response_serializer=_serialize)}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
