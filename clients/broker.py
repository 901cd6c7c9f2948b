"""Typed async client for BrokerService, with a batching producer and a group consumer.

    async with BrokerClient("127.0.0.1:50053") as broker:
        await broker.create_topic("rides", partitions=6)
        async with broker.producer() as producer:
            await producer.send("rides", b'{"km": 3}', key=b"rider-7")
        async with broker.consumer("billing", ["rides"]) as consumer:
            async for record in consumer:            # ConsumedRecord
                handle(record.value)                 # committed once the loop moves on

The RPC methods return the API's messages (as the other clients do) or plain Python
values where one says it all (offsets as ``{(topic, partition): offset}``). The producer
(:mod:`.broker_producer`) and the consumer (:mod:`.broker_consumer`) are documented in
their modules; :meth:`BrokerClient.read` reads one partition without a group.

Reading outside a partition's log answers :class:`OffsetOutOfRangeError`, which carries
the log's start and end offsets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.broker.v1 import broker_pb2_grpc

from .broker_consumer import (
    DEAD_LETTER_PREFIX,
    RETRY_PREFIX,
    ConsumedRecord,
    Consumer,
    OffsetOutOfRangeError,
    RebalanceCallback,
    TopicPartition,
    records_of,
)
from .broker_producer import (
    Acks,
    BufferFullError,
    Producer,
    ProducerStats,
    RecordFuture,
    RecordMetadata,
    partition_for,
)
from .channel import BaseClient, ChannelOptions
from .errors import GeoplexRpcError, from_rpc_error

__all__ = [
    "Acks", "BrokerClient", "BufferFullError", "ConsumedRecord", "Consumer",
    "DEAD_LETTER_PREFIX", "OffsetOutOfRangeError", "Producer", "ProducerStats",
    "RETRY_PREFIX", "RebalanceCallback", "RecordFuture", "RecordMetadata", "TopicPartition",
    "partition_for", "records_of",
]

T = TypeVar("T")

RESET_TO = {"earliest": pb.RESET_TO_EARLIEST, "latest": pb.RESET_TO_LATEST,
            "time": pb.RESET_TO_TIME, "offset": pb.RESET_TO_OFFSET}
ASSIGNORS = {"sticky": pb.ASSIGNOR_STICKY, "range": pb.ASSIGNOR_RANGE,
             "round_robin": pb.ASSIGNOR_ROUND_ROBIN}
MAX_FETCH_WAIT_S = 30.0  # the broker's limit on a Fetch's max_wait


def duration(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def timestamp_ms(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def offsets_dict(offsets: Sequence[pb.PartitionOffset]) -> dict[tuple[str, int], int]:
    return {(o.topic, o.partition): o.offset for o in offsets}


class BrokerClient(BaseClient):
    def __init__(self, target: str | grpc.aio.Channel, options: ChannelOptions | None = None,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> None:
        super().__init__(target, options, interceptors)
        self.stub = broker_pb2_grpc.BrokerServiceStub(self.channel)

    async def call(self, method: Callable[..., Awaitable[T]], request: Any, *,
                   timeout: float | None = None, token: str | None = None,
                   metadata: Sequence[tuple[str, str]] = ()) -> T:
        """As :meth:`BaseClient.call`, with OUT_OF_RANGE as :class:`OffsetOutOfRangeError`."""
        try:
            return await super().call(method, request, timeout=timeout, token=token,
                                      metadata=metadata)
        except GeoplexRpcError as exc:
            if exc.code is grpc.StatusCode.OUT_OF_RANGE:
                raise OffsetOutOfRangeError.of(exc) from None
            raise

    # -- topics ----------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int, *,
                           retention: float | None = None, retention_bytes: int = 0,
                           max_message_bytes: int = 0, segment_bytes: int = 0,
                           segment_age: float | None = None,
                           timeout: float | None = None) -> pb.Topic:
        """A new topic; ``retention`` / ``segment_age`` in seconds (None: 14 days / 1 day),
        0 bytes meaning the broker's default (no size limit, 1 MiB records, 64 MiB segments)."""
        config = pb.TopicConfig(retention_bytes=retention_bytes,
                                max_message_bytes=max_message_bytes,
                                segment_bytes=segment_bytes,
                                cleanup_policy=pb.CLEANUP_POLICY_DELETE)
        if retention is not None:
            config.retention.CopyFrom(duration(retention))
        if segment_age is not None:
            config.segment_age.CopyFrom(duration(segment_age))
        response = await self.call(self.stub.CreateTopic, pb.CreateTopicRequest(
            topic=pb.Topic(name=name, partitions=partitions, config=config)), timeout=timeout)
        return response.topic

    async def delete_topic(self, name: str, *, timeout: float | None = None) -> None:
        await self.call(self.stub.DeleteTopic, pb.DeleteTopicRequest(name=name),
                        timeout=timeout)

    async def list_topics(self, page_size: int = 0, page_token: str = "", *,
                          include_internal: bool = False,
                          timeout: float | None = None) -> pb.ListTopicsResponse:
        return await self.call(self.stub.ListTopics, pb.ListTopicsRequest(
            page_size=page_size, page_token=page_token, include_internal=include_internal),
            timeout=timeout)

    async def get_topic(self, name: str, *, timeout: float | None = None
                        ) -> pb.GetTopicResponse:
        """The topic and its partitions' log start / end offsets, sizes and segments."""
        return await self.call(self.stub.GetTopic, pb.GetTopicRequest(name=name),
                               timeout=timeout)

    async def list_offsets(self, topic: str, partitions: Sequence[int] = (), *,
                           time_ms: int | None = None, timeout: float | None = None
                           ) -> dict[int, int]:
        """Partition -> the first offset at or after ``time_ms`` (None: the log end)."""
        request = pb.ListOffsetsRequest(topic=topic, partitions=list(partitions))
        if time_ms is not None:
            request.time.CopyFrom(timestamp_ms(time_ms))
        response = await self.call(self.stub.ListOffsets, request, timeout=timeout)
        return {o.partition: o.offset for o in response.offsets}

    # -- produce and fetch -----------------------------------------------------------

    async def produce(self, topic: str, records: Sequence[pb.Record], *,
                      partition: int | None = None, acks: Acks | int = Acks.LEADER,
                      producer_id: int = 0, base_sequence: int = 0,
                      timeout: float | None = None) -> pb.ProduceResponse:
        """One ProduceRequest as it is (the :meth:`producer` batches and retries for you)."""
        request = pb.ProduceRequest(topic=topic, records=records,
                                    acks=pb.Acks.ValueType(int(acks)),
                                    producer_id=producer_id, base_sequence=base_sequence)
        if partition is not None:
            request.partition = partition
        return await self.call(self.stub.Produce, request, timeout=timeout)

    async def fetch(self, topic: str, partition: int, offset: int, *, max_bytes: int = 0,
                    max_wait: float = 0.0, timeout: float | None = None) -> pb.FetchResponse:
        """Whole batches from the one holding ``offset`` on, waiting up to ``max_wait``
        seconds at the log end. ``timeout`` (None: the channel's) is added to ``max_wait``."""
        request = pb.FetchRequest(topic=topic, partition=partition, offset=offset,
                                  max_bytes=max_bytes)
        if max_wait > 0:
            request.max_wait.CopyFrom(duration(max_wait))
        limit = self.options.timeout if timeout is None else timeout
        return await self.call(self.stub.Fetch, request, timeout=limit + max_wait)

    async def subscribe(self, topic: str, partition: int, offset: int, *,
                        max_bytes: int = 0) -> AsyncIterator[pb.FetchResponse]:
        """Batches from ``offset`` on, as they arrive (a stream without a deadline)."""
        call = self.stub.Subscribe(pb.SubscribeRequest(
            topic=topic, partition=partition, offset=offset, max_bytes=max_bytes),
            metadata=self.metadata())
        try:
            async for response in call:
                yield response.fetch
        except grpc.aio.AioRpcError as exc:
            error = self._typed(exc)
            raise error from None
        finally:
            call.cancel()

    def _typed(self, exc: grpc.aio.AioRpcError) -> GeoplexRpcError:
        error = from_rpc_error(exc)
        if error.code is grpc.StatusCode.OUT_OF_RANGE:
            return OffsetOutOfRangeError.of(error)
        return error

    async def read(self, topic: str, partition: int, offset: int, *, max_bytes: int = 0,
                   max_wait: float = 1.0, until_end: bool = False,
                   timeout: float | None = None) -> AsyncIterator[ConsumedRecord]:
        """Every record of one partition from ``offset`` on, without a group (long-poll
        Fetch, ``timeout`` per call beyond ``max_wait``). With ``until_end`` it stops at
        the log end as seen when it gets there; otherwise it waits for more for ever.
        Below the log start: :class:`OffsetOutOfRangeError` (its ``log_start_offset``)."""
        position = offset
        wait = min(max_wait, MAX_FETCH_WAIT_S)
        while True:
            response = await self.fetch(topic, partition, position, max_bytes=max_bytes,
                                        max_wait=0.0 if until_end else wait, timeout=timeout)
            for record in records_of(topic, partition, response.batches, position):
                position = record.offset + 1
                yield record
            if response.batches:
                last = response.batches[-1]
                position = max(position, last.base_offset + len(last.records))
            if until_end and position >= response.log_end_offset:
                return

    # -- consumer groups -------------------------------------------------------------

    async def join_group(self, group: str, topics: Sequence[str], *, member_id: str = "",
                         session_timeout: float | None = None,
                         assignor: str = "sticky", client_id: str = "",
                         timeout: float | None = None) -> pb.JoinGroupResponse:
        """Join (a first join has no ``member_id``); ``assignor`` one of sticky, range,
        round_robin; ``session_timeout`` seconds (None: the broker's default, 10 s)."""
        if assignor not in ASSIGNORS:
            raise ValueError(f"assignor must be one of {sorted(ASSIGNORS)}, not {assignor!r}")
        request = pb.JoinGroupRequest(group=group, member_id=member_id, topics=list(topics),
                                      assignor=ASSIGNORS[assignor], client_id=client_id)
        if session_timeout is not None:
            request.session_timeout.CopyFrom(duration(session_timeout))
        return await self.call(self.stub.JoinGroup, request, timeout=timeout)

    async def sync_group(self, group: str, member_id: str, generation: int, *,
                         timeout: float | None = None) -> pb.SyncGroupResponse:
        return await self.call(self.stub.SyncGroup, pb.SyncGroupRequest(
            group=group, member_id=member_id, generation=generation), timeout=timeout)

    async def heartbeat(self, group: str, member_id: str, generation: int, *,
                        timeout: float | None = None) -> pb.HeartbeatResponse:
        return await self.call(self.stub.Heartbeat, pb.HeartbeatRequest(
            group=group, member_id=member_id, generation=generation), timeout=timeout)

    async def leave_group(self, group: str, member_id: str, *,
                          timeout: float | None = None) -> None:
        await self.call(self.stub.LeaveGroup, pb.LeaveGroupRequest(
            group=group, member_id=member_id), timeout=timeout)

    async def commit_offsets(self, group: str, offsets: Mapping[tuple[str, int], int], *,
                             member_id: str = "", generation: int = 0,
                             timeout: float | None = None) -> dict[tuple[str, int], int]:
        """Commit ``{(topic, partition): next offset to read}`` in one transaction; returns
        what is committed after the call. Without ``member_id`` (generation 0): a commit
        from outside the group, allowed only while it has no members."""
        request = pb.CommitOffsetsRequest(group=group, member_id=member_id,
                                          generation=generation, offsets=[
                                              pb.PartitionOffset(topic=t, partition=p, offset=o)
                                              for (t, p), o in offsets.items()])
        response = await self.call(self.stub.CommitOffsets, request, timeout=timeout)
        return offsets_dict(response.offsets)

    async def get_committed_offsets(self, group: str, topics: Sequence[str] = (), *,
                                    timeout: float | None = None
                                    ) -> dict[tuple[str, int], int]:
        response = await self.call(self.stub.GetCommittedOffsets, pb.GetCommittedOffsetsRequest(
            group=group, topics=list(topics)), timeout=timeout)
        return offsets_dict(response.offsets)

    async def reset_offsets(self, group: str, topic: str, to: str, *,
                            partitions: Sequence[int] = (), time_ms: int = 0, offset: int = 0,
                            timeout: float | None = None) -> dict[tuple[str, int], int]:
        """Move a member-less group's offsets (also backwards): ``to`` is earliest, latest,
        time (the first record at or after ``time_ms``) or offset (exactly ``offset``)."""
        if to not in RESET_TO:
            raise ValueError(f"to must be one of {sorted(RESET_TO)}, not {to!r}")
        request = pb.ResetOffsetsRequest(group=group, topic=topic, partitions=list(partitions),
                                         to=RESET_TO[to], offset=offset)
        if to == "time":
            request.time.CopyFrom(timestamp_ms(time_ms))
        response = await self.call(self.stub.ResetOffsets, request, timeout=timeout)
        return offsets_dict(response.offsets)

    async def describe_group(self, group: str, *, timeout: float | None = None
                             ) -> pb.DescribeGroupResponse:
        """Members, their assignment, and lag per partition."""
        return await self.call(self.stub.DescribeGroup, pb.DescribeGroupRequest(group=group),
                               timeout=timeout)

    async def list_groups(self, page_size: int = 0, page_token: str = "", *,
                          timeout: float | None = None) -> pb.ListGroupsResponse:
        return await self.call(self.stub.ListGroups, pb.ListGroupsRequest(
            page_size=page_size, page_token=page_token), timeout=timeout)

    async def nack(self, group: str, member_id: str, generation: int, topic: str,
                   partition: int, offset: int, *, delay: float = 0.0, error: str = "",
                   max_deliveries: int = 0, timeout: float | None = None) -> pb.NackResponse:
        """Give a record back: delivered again after ``delay`` seconds, or dead-lettered
        once delivered ``max_deliveries`` times (0: the broker's 5)."""
        request = pb.NackRequest(group=group, member_id=member_id, generation=generation,
                                 topic=topic, partition=partition, offset=offset, error=error,
                                 max_deliveries=max_deliveries)
        if delay > 0:
            request.delay.CopyFrom(duration(delay))
        return await self.call(self.stub.Nack, request, timeout=timeout)

    # -- the typed producer and consumer ----------------------------------------------

    def producer(self, **options: Any) -> Producer:
        """A :class:`~.broker_producer.Producer` on this client (its keyword options)."""
        return Producer(self, **options)

    def consumer(self, group: str, topics: Sequence[str], **options: Any) -> Consumer:
        """A :class:`~.broker_consumer.Consumer` of ``group`` on this client."""
        return Consumer(self, group, topics, **options)
