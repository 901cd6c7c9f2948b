"""The SDK's cluster routing without a real cluster: metadata cache, leaders, coordinators,
retries with backoff, and the producer and consumer moving with leadership.

Each "broker" here is a real grpc.aio server on loopback in this process, answering from
one shared, canned cluster state (:class:`Cluster`): GetMetadata as the cluster says;
partition calls only on the partition's leader (elsewhere FAILED_PRECONDITION NOT_LEADER
with the leader in the ErrorInfo, as the broker does); group calls only on the group's
coordinator (elsewhere NOT_COORDINATOR). The partitions' logs are shared by every broker
(replication as if instant), so the idempotent producer's sequences are known to a new
leader, as they are in the real cluster.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
import grpc
import grpc.aio
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.clients.broker import Backoff, BrokerClient, bootstrap_addresses, never_sent
from geoplex.clients.channel import ChannelOptions
from geoplex.clients.errors import GeoplexRpcError, UnavailableError

import polling  # tests/polling.py

SERVICE = "geoplex.broker.v1.BrokerService"
TOPIC = "t"


def dead_address() -> str:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def trailers(code: grpc.StatusCode, message: str, reason: str,
             metadata: dict[str, str]) -> tuple[tuple[str, bytes], ...]:
    """A rich status (google.rpc.Status with an ErrorInfo) as the broker sends it."""
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(
        reason=reason, domain="broker.geoplex", metadata=metadata))
    return (("grpc-status-details-bin", status.SerializeToString()),)


async def abort(context: Any, code: grpc.StatusCode, message: str, reason: str,
                **metadata: str) -> None:
    await context.abort(code, message, trailing_metadata=trailers(code, message, reason,
                                                                  metadata))


@dataclass
class Cluster:
    """The canned state every fake broker answers from."""

    partitions: dict[str, int] = field(default_factory=lambda: {TOPIC: 2})
    leaders: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    coordinator: int = 1
    addresses: dict[int, str] = field(default_factory=dict)
    servers: dict[int, grpc.aio.Server] = field(default_factory=dict)
    logs: dict[tuple[str, int], list[pb.RecordBatch]] = field(default_factory=dict)
    seen: dict[tuple[int, str, int], dict[int, int]] = field(default_factory=dict)
    calls: list[tuple[int, str, Any]] = field(default_factory=list)  # (broker, method, request)
    # one-shot failures: (broker, method) -> (code, reason), raised on the next such call
    failures: dict[tuple[int, str], list[tuple[grpc.StatusCode, str]]] = field(
        default_factory=dict)
    stale_hint: bool = False  # NOT_LEADER names the broker's stale view, not the leader
    members: dict[int, set[str]] = field(default_factory=dict)  # coordinator -> members
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)
    # ProduceStream: after this many requests written on a broker, it loses leadership
    # of the partition to the other broker and ends the stream without answering the last
    move_after: int | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def leader(self, topic: str, partition: int) -> tuple[int, int]:
        return self.leaders.get((topic, partition), (1, 0))

    def move(self, topic: str, partition: int, to: int) -> None:
        _, epoch = self.leader(topic, partition)
        self.leaders[(topic, partition)] = (to, epoch + 1)
        self.pulse()

    def pulse(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def count(self, method: str, broker: int | None = None) -> int:
        return sum(1 for b, m, _ in self.calls if m == method and broker in (None, b))

    def requests(self, method: str, broker: int | None = None) -> list[Any]:
        return [r for b, m, r in self.calls if m == method and broker in (None, b)]

    def end(self, topic: str, partition: int) -> int:
        batches = self.logs.get((topic, partition), [])
        return batches[-1].base_offset + len(batches[-1].records) if batches else 0

    def append(self, topic: str, partition: int, records: list[pb.Record],
               producer_id: int = 0, sequence: int = 0) -> tuple[int, bool]:
        seen = self.seen.setdefault((producer_id, topic, partition), {})
        if producer_id and sequence in seen:
            return seen[sequence], True
        base = self.end(topic, partition)
        self.logs.setdefault((topic, partition), []).append(pb.RecordBatch(
            base_offset=base, records=records, producer_id=producer_id,
            base_sequence=sequence))
        if producer_id:
            seen[sequence] = base
        self.pulse()
        return base, False


class FakeBroker:
    """One broker of the cluster: the BrokerService methods the SDK routes."""

    def __init__(self, cluster: Cluster, broker_id: int) -> None:
        self.cluster = cluster
        self.id = broker_id

    def _record(self, method: str, request: Any) -> None:
        self.cluster.calls.append((self.id, method, request))

    async def _injected(self, method: str, context: Any) -> None:
        pending = self.cluster.failures.get((self.id, method))
        if pending:
            code, reason = pending.pop(0)
            await abort(context, code, f"injected {reason or code.name}", reason)

    async def _lead(self, topic: str, partition: int, context: Any) -> None:
        leader, epoch = self.cluster.leader(topic, partition)
        if leader == self.id:
            return
        if leader < 0:
            await abort(context, grpc.StatusCode.UNAVAILABLE, "no leader",
                        "LEADER_NOT_AVAILABLE", topic=topic, partition=str(partition))
        if self.cluster.stale_hint:  # this broker has not heard of the new epoch yet
            leader, epoch = self.id, epoch - 1
        await abort(context, grpc.StatusCode.FAILED_PRECONDITION, "not the leader",
                    "NOT_LEADER", topic=topic, partition=str(partition),
                    leader_id=str(leader), leader_address=self.cluster.addresses.get(leader, ""),
                    leader_epoch=str(epoch))

    async def _coordinate(self, group: str, context: Any) -> None:
        coordinator = self.cluster.coordinator
        if coordinator != self.id:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, "not the coordinator",
                        "NOT_COORDINATOR", group=group, coordinator_id=str(coordinator),
                        coordinator_address=self.cluster.addresses.get(coordinator, ""))

    async def GetMetadata(self, request: pb.GetMetadataRequest, context: Any
                          ) -> pb.GetMetadataResponse:
        self._record("GetMetadata", request)
        c = self.cluster
        names = list(request.topics) or sorted(c.partitions)
        topics = []
        for name in names:
            if name not in c.partitions:
                continue
            parts = []
            for p in range(c.partitions[name]):
                leader, epoch = c.leader(name, p)
                parts.append(pb.PartitionMetadata(partition=p, leader_id=leader,
                                                  leader_epoch=epoch, replicas=sorted(c.servers),
                                                  isr=sorted(c.servers)))
            topics.append(pb.TopicMetadata(name=name, partitions=parts, replication_factor=2))
        response = pb.GetMetadataResponse(
            brokers=[pb.BrokerNode(id=i, address=a) for i, a in sorted(c.addresses.items())
                     if i in c.servers],
            controller_id=1, controller_epoch=1, topics=topics, answered_by=self.id)
        if request.group:
            response.coordinator.CopyFrom(pb.BrokerNode(
                id=c.coordinator, address=c.addresses[c.coordinator]))
        return response

    async def GetTopic(self, request: pb.GetTopicRequest, context: Any) -> pb.GetTopicResponse:
        self._record("GetTopic", request)
        if request.name not in self.cluster.partitions:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no topic {request.name!r}")
        count = self.cluster.partitions[request.name]
        return pb.GetTopicResponse(topic=pb.Topic(name=request.name, partitions=count))

    async def CreateTopic(self, request: pb.CreateTopicRequest, context: Any
                          ) -> pb.CreateTopicResponse:
        self._record("CreateTopic", request)
        self.cluster.partitions[request.topic.name] = request.topic.partitions
        return pb.CreateTopicResponse(topic=request.topic)

    async def Produce(self, request: pb.ProduceRequest, context: Any) -> pb.ProduceResponse:
        self._record("Produce", request)
        await self._injected("Produce", context)
        await self._lead(request.topic, request.partition, context)
        base, duplicate = self.cluster.append(request.topic, request.partition,
                                              list(request.records), request.producer_id,
                                              request.base_sequence)
        return pb.ProduceResponse(results=[pb.PartitionResult(
            partition=request.partition, base_offset=base, record_count=len(request.records),
            duplicate=duplicate)])

    async def ProduceStream(self, requests: Any, context: Any
                            ) -> AsyncIterator[pb.ProduceStreamResponse]:
        written = 0
        async for item in requests:
            request = item.produce
            self._record("ProduceStream", request)
            await self._lead(request.topic, request.partition, context)
            base, duplicate = self.cluster.append(
                request.topic, request.partition, list(request.records), request.producer_id,
                request.base_sequence)
            written += 1
            if self.cluster.move_after is not None and written >= self.cluster.move_after:
                self.cluster.move_after = None
                self.cluster.move(request.topic, request.partition, 3 - self.id)
                await self._lead(request.topic, request.partition, context)  # not answered
            yield pb.ProduceStreamResponse(produce=pb.ProduceResponse(results=[
                pb.PartitionResult(partition=request.partition, base_offset=base,
                                   record_count=len(request.records), duplicate=duplicate)]))

    def _batches(self, topic: str, partition: int, offset: int) -> list[pb.RecordBatch]:
        return [b for b in self.cluster.logs.get((topic, partition), [])
                if b.base_offset + len(b.records) > offset]

    async def Fetch(self, request: pb.FetchRequest, context: Any) -> pb.FetchResponse:
        self._record("Fetch", request)
        await self._injected("Fetch", context)
        await self._lead(request.topic, request.partition, context)
        return pb.FetchResponse(batches=self._batches(request.topic, request.partition,
                                                      request.offset),
                                partition=request.partition,
                                log_end_offset=self.cluster.end(request.topic,
                                                                request.partition))

    async def Subscribe(self, request: pb.SubscribeRequest, context: Any
                        ) -> AsyncIterator[pb.SubscribeResponse]:
        self._record("Subscribe", request)
        position = request.offset
        while True:
            await self._lead(request.topic, request.partition, context)
            changed = self.cluster.changed
            batches = self._batches(request.topic, request.partition, position)
            if batches:
                position = batches[-1].base_offset + len(batches[-1].records)
                yield pb.SubscribeResponse(fetch=pb.FetchResponse(
                    batches=batches, partition=request.partition,
                    log_end_offset=position))
            else:
                await changed.wait()

    async def ListOffsets(self, request: pb.ListOffsetsRequest, context: Any
                          ) -> pb.ListOffsetsResponse:
        self._record("ListOffsets", request)
        wanted = list(request.partitions) or list(range(self.cluster.partitions[request.topic]))
        for p in wanted:
            await self._lead(request.topic, p, context)
        return pb.ListOffsetsResponse(offsets=[pb.PartitionOffset(
            topic=request.topic, partition=p,
            offset=0 if request.HasField("time") else self.cluster.end(request.topic, p))
            for p in wanted])

    async def JoinGroup(self, request: pb.JoinGroupRequest, context: Any
                        ) -> pb.JoinGroupResponse:
        self._record("JoinGroup", request)
        await self._coordinate(request.group, context)
        members = self.cluster.members.setdefault(self.id, set())
        member = request.member_id if request.member_id in members else \
            f"m{self.id}-{len(members) + 1}"
        members.add(member)
        return pb.JoinGroupResponse(member_id=member, generation=1,
                                    heartbeat_interval=Duration(nanos=50_000_000))

    async def _member(self, group: str, member: str, context: Any) -> None:
        await self._coordinate(group, context)
        if member not in self.cluster.members.get(self.id, set()):
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, "not a member",
                        "UNKNOWN_MEMBER")

    async def SyncGroup(self, request: pb.SyncGroupRequest, context: Any
                        ) -> pb.SyncGroupResponse:
        self._record("SyncGroup", request)
        await self._member(request.group, request.member_id, context)
        return pb.SyncGroupResponse(generation=1, assignment=[pb.TopicPartitions(
            topic=TOPIC, partitions=list(range(self.cluster.partitions[TOPIC])))])

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any
                        ) -> pb.HeartbeatResponse:
        self._record("Heartbeat", request)
        await self._member(request.group, request.member_id, context)
        return pb.HeartbeatResponse(generation=1)

    async def LeaveGroup(self, request: pb.LeaveGroupRequest, context: Any
                         ) -> pb.LeaveGroupResponse:
        self._record("LeaveGroup", request)
        await self._coordinate(request.group, context)
        self.cluster.members.get(self.id, set()).discard(request.member_id)
        return pb.LeaveGroupResponse()

    async def CommitOffsets(self, request: pb.CommitOffsetsRequest, context: Any
                            ) -> pb.CommitOffsetsResponse:
        self._record("CommitOffsets", request)
        await self._member(request.group, request.member_id, context)
        for o in request.offsets:
            self.cluster.committed[(request.group, o.topic, o.partition)] = o.offset
        return pb.CommitOffsetsResponse(offsets=request.offsets)

    async def GetCommittedOffsets(self, request: pb.GetCommittedOffsetsRequest, context: Any
                                  ) -> pb.GetCommittedOffsetsResponse:
        self._record("GetCommittedOffsets", request)
        await self._coordinate(request.group, context)
        return pb.GetCommittedOffsetsResponse(offsets=[
            pb.PartitionOffset(topic=t, partition=p, offset=o)
            for (g, t, p), o in sorted(self.cluster.committed.items()) if g == request.group])


UNARY: dict[str, Any] = {
    "GetMetadata": pb.GetMetadataRequest, "GetTopic": pb.GetTopicRequest,
    "CreateTopic": pb.CreateTopicRequest, "Produce": pb.ProduceRequest,
    "Fetch": pb.FetchRequest, "ListOffsets": pb.ListOffsetsRequest,
    "JoinGroup": pb.JoinGroupRequest, "SyncGroup": pb.SyncGroupRequest,
    "Heartbeat": pb.HeartbeatRequest, "LeaveGroup": pb.LeaveGroupRequest,
    "CommitOffsets": pb.CommitOffsetsRequest,
    "GetCommittedOffsets": pb.GetCommittedOffsetsRequest}


def handlers(broker: FakeBroker, without: frozenset[str] = frozenset()
             ) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    serialize = lambda message: message.SerializeToString()  # noqa: E731
    out: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        name: grpc.unary_unary_rpc_method_handler(getattr(broker, name),
                                                  request_deserializer=kind.FromString,
                                                  response_serializer=serialize)
        for name, kind in UNARY.items() if name not in without}
    out["ProduceStream"] = grpc.stream_stream_rpc_method_handler(
        broker.ProduceStream, request_deserializer=pb.ProduceStreamRequest.FromString,
        response_serializer=serialize)
    out["Subscribe"] = grpc.unary_stream_rpc_method_handler(
        broker.Subscribe, request_deserializer=pb.SubscribeRequest.FromString,
        response_serializer=serialize)
    return out


async def start(cluster: Cluster, broker_id: int, without: frozenset[str] = frozenset()
                ) -> str:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, handlers(FakeBroker(cluster, broker_id), without)),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    cluster.servers[broker_id] = server
    cluster.addresses[broker_id] = f"127.0.0.1:{port}"
    return cluster.addresses[broker_id]


async def stop(cluster: Cluster, broker_id: int) -> None:
    await cluster.servers.pop(broker_id).stop(0)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """Two brokers: broker 1 leads t-0 and coordinates groups, broker 2 leads t-1."""
    state = Cluster()
    state.leaders[(TOPIC, 1)] = (2, 0)
    await start(state, 1)
    await start(state, 2)
    try:
        yield state
    finally:
        state.pulse()
        for server in list(state.servers.values()):
            await server.stop(0)


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[BrokerClient]:
    """Bootstrapped with a dead address first, then broker 1 only."""
    async with BrokerClient([dead_address(), cluster.addresses[1]],
                            ChannelOptions(timeout=5.0)) as broker:
        yield broker


def records(*values: bytes, key: bytes = b"") -> list[pb.Record]:
    return [pb.Record(value=v, key=key) for v in values]


# -- pure pieces ------------------------------------------------------------------------

def test_a_target_is_one_address_a_comma_separated_list_or_a_sequence():
    assert bootstrap_addresses("a:1") == ["a:1"]
    assert bootstrap_addresses(" a:1, b:2 ,,a:1") == ["a:1", "b:2"]
    assert bootstrap_addresses(["a:1", "b:2"]) == ["a:1", "b:2"]
    with pytest.raises(ValueError, match="target"):
        bootstrap_addresses(" , ")
    with pytest.raises(ValueError, match="target"):
        BrokerClient([])


def test_backoff_is_jittered_exponential_from_50_ms_up_to_a_1_s_cap():
    backoff = Backoff()
    delays = [backoff.next() for _ in range(12)]
    ceilings = [min(1.0, 0.05 * 2 ** n) for n in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings))
    assert len({round(d, 6) for d in delays[6:]}) > 1  # jittered, even at the cap
    backoff.reset()
    assert backoff.next() <= 0.05


def test_only_a_failure_to_connect_counts_as_never_sent():
    refused = GeoplexRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all "
                              "addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: refused")
    assert never_sent(refused)
    assert not never_sent(GeoplexRpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    assert not never_sent(GeoplexRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect",
                                          reason="FENCED"))


# -- routing ----------------------------------------------------------------------------

async def test_metadata_skips_a_dead_bootstrap_address_and_calls_go_to_each_leader(
        cluster, client):
    await client.produce(TOPIC, records(b"a"), partition=0)
    await client.produce(TOPIC, records(b"b"), partition=1)
    assert [r.partition for r in cluster.requests("Produce", 1)] == [0]
    assert [r.partition for r in cluster.requests("Produce", 2)] == [1]
    fetched = await client.fetch(TOPIC, 1, 0)
    assert [r.value for b in fetched.batches for r in b.records] == [b"b"]
    assert cluster.count("Fetch", 2) == 1 and cluster.count("Fetch", 1) == 0
    assert cluster.count("GetMetadata") == 1  # asked once (of broker 1), then cached
    assert client.router.brokers == {1: cluster.addresses[1], 2: cluster.addresses[2]}


async def test_list_offsets_asks_each_partitions_leader(cluster, client):
    await client.produce(TOPIC, records(b"a", b"b"), partition=0)
    await client.produce(TOPIC, records(b"c"), partition=1)
    assert await client.list_offsets(TOPIC) == {0: 2, 1: 1}
    assert [list(r.partitions) for r in cluster.requests("ListOffsets", 1)] == [[0]]
    assert [list(r.partitions) for r in cluster.requests("ListOffsets", 2)] == [[1]]


async def test_not_leader_with_a_newer_epoch_is_followed_at_once_without_a_refresh(
        cluster, client):
    await client.produce(TOPIC, records(b"a"), partition=0)
    asked = cluster.count("GetMetadata")
    cluster.move(TOPIC, 0, 2)  # broker 1 now answers NOT_LEADER naming broker 2, epoch 1
    started = time.monotonic()
    answer = await client.produce(TOPIC, records(b"b"), partition=0)
    assert answer.results[0].base_offset == 1
    assert time.monotonic() - started < 0.5
    assert cluster.count("Produce", 1) == 2 and cluster.count("Produce", 2) == 1
    assert cluster.count("GetMetadata") == asked  # the error said it all
    route = client.router.route(TOPIC, 0)
    assert route is not None and (route.leader_id, route.leader_epoch) == (2, 1)


async def test_not_leader_with_a_stale_epoch_refreshes_the_metadata(cluster, client):
    await client.produce(TOPIC, records(b"a"), partition=0)
    asked = cluster.count("GetMetadata")
    cluster.move(TOPIC, 0, 2)
    cluster.stale_hint = True  # broker 1 knows no better than the client
    await client.produce(TOPIC, records(b"b"), partition=0)
    assert cluster.count("GetMetadata") == asked + 1
    assert cluster.count("Produce", 2) == 1


async def test_a_partition_without_a_leader_is_retried_until_one_is_elected(cluster, client):
    await client.fetch(TOPIC, 0, 0)
    cluster.leaders[(TOPIC, 0)] = (-1, 1)
    fetching = asyncio.create_task(client.fetch(TOPIC, 0, 0))
    await polling.eventually(lambda: cluster.count("GetMetadata") >= 3, 5.0,
                             what="the client asks for metadata again, backing off")
    assert not fetching.done()
    cluster.leaders[(TOPIC, 0)] = (2, 2)
    await asyncio.wait_for(fetching, 5.0)
    assert cluster.count("Fetch", 2) == 1


async def test_without_a_leader_the_call_fails_once_its_timeout_has_passed(cluster, client):
    cluster.leaders[(TOPIC, 0)] = (-1, 1)
    await client.get_metadata()  # (past the dead bootstrap address first)
    asked = cluster.count("GetMetadata")
    started = time.monotonic()
    with pytest.raises(UnavailableError) as caught:
        await client.fetch(TOPIC, 0, 0, timeout=0.6)
    assert caught.value.reason == "LEADER_NOT_AVAILABLE"
    assert 0.5 < time.monotonic() - started < 2.0  # the budget used, not more
    assert cluster.count("GetMetadata") >= asked + 2  # refreshed between the backoffs


async def test_a_produce_that_may_have_been_written_is_not_sent_again(cluster, client):
    await client.produce(TOPIC, records(b"a"), partition=0)
    cluster.failures[(1, "Produce")] = [(grpc.StatusCode.UNAVAILABLE, "FENCED")]
    with pytest.raises(UnavailableError) as caught:
        await client.produce(TOPIC, records(b"b"), partition=0)
    assert caught.value.reason == "FENCED"
    assert cluster.count("Produce") == 2  # the first, and the fenced one: not again


async def test_an_idempotent_produce_is_sent_again_after_fenced_and_written_once(
        cluster, client):
    await client.produce(TOPIC, records(b"a"), partition=0, producer_id=5)
    cluster.failures[(1, "Produce")] = [(grpc.StatusCode.UNAVAILABLE, "FENCED"),
                                        (grpc.StatusCode.UNAVAILABLE, "NOT_ENOUGH_REPLICAS")]
    answer = await client.produce(TOPIC, records(b"b"), partition=0, producer_id=5,
                                  base_sequence=1)
    assert answer.results[0].base_offset == 1
    assert cluster.count("Produce") == 4
    assert len(cluster.logs[(TOPIC, 0)]) == 2


async def test_a_dead_leader_is_left_for_the_new_one_after_a_refresh(cluster, client):
    await client.fetch(TOPIC, 0, 0)
    await stop(cluster, 1)
    cluster.move(TOPIC, 0, 2)
    cluster.coordinator = 2
    await client.fetch(TOPIC, 0, 0)
    assert cluster.count("Fetch", 2) == 1
    assert cluster.requests("GetMetadata", 2)  # broker 2, learnt from the first answer
    # and a group call finds the coordinator the same way
    joined = await client.join_group("g", [TOPIC])
    assert joined.member_id.startswith("m2-")


async def test_a_server_without_get_metadata_gets_every_call(cluster):
    await start(cluster, 9, without=frozenset({"GetMetadata"}))
    async with BrokerClient(cluster.addresses[9], ChannelOptions(timeout=5.0)) as client:
        cluster.leaders[(TOPIC, 0)] = (9, 0)
        cluster.leaders[(TOPIC, 1)] = (9, 0)
        cluster.coordinator = 9
        for partition in (0, 1, 0):
            await client.produce(TOPIC, records(b"v"), partition=partition)
        await client.join_group("g", [TOPIC])
        assert client.router.unsupported == cluster.addresses[9]
        assert cluster.count("Produce", 9) == 3 and cluster.count("JoinGroup", 9) == 1
        assert not cluster.requests("GetMetadata")  # (UNIMPLEMENTED is not recorded)


async def test_keyed_records_without_a_partition_go_to_their_partitions_leader(
        cluster, client):
    keys = [b"rider-%d" % i for i in range(20)]
    answer = await client.produce(TOPIC, [pb.Record(key=k, value=k) for k in keys])
    expected = {p: [k for k in keys if google_crc32c.value(k) % 2 == p] for p in (0, 1)}
    assert sorted(r.partition for r in answer.results) == [0, 1]
    for broker, partition in ((1, 0), (2, 1)):
        (request,) = cluster.requests("Produce", broker)
        assert request.partition == partition
        assert [r.key for r in request.records] == expected[partition]
    # keyless records: one partition per call, round-robin
    for _ in range(4):
        await client.produce(TOPIC, records(b"x", b"y"))
    keyless = [r.partition for r in cluster.requests("Produce")[2:]]
    assert keyless in ([0, 1, 0, 1], [1, 0, 1, 0])


async def test_group_calls_follow_not_coordinator_to_the_coordinator(cluster, client):
    await client.join_group("g", [TOPIC])
    assert client.router.coordinator_address("g") == cluster.addresses[1]
    cluster.coordinator = 2
    joined = await client.join_group("g", [TOPIC])
    assert joined.member_id.startswith("m2-")
    assert client.router.coordinator_address("g") == cluster.addresses[2]
    assert cluster.count("JoinGroup", 1) == 2 and cluster.count("JoinGroup", 2) == 1


async def test_admin_calls_move_to_the_next_broker_when_one_cannot_be_reached(cluster):
    dead = dead_address()
    async with BrokerClient(f"{dead},{cluster.addresses[2]}",
                            ChannelOptions(timeout=5.0)) as client:
        topic = await client.create_topic("fresh", 3)  # not retried blindly: it never left
        assert topic.name == "fresh"
        assert cluster.count("CreateTopic", 2) == 1
        assert (await client.get_topic("fresh")).topic.partitions == 3
        assert client.router.candidates()[-1] == dead  # asked last from now on


# -- the producer and the consumer --------------------------------------------------------

async def test_the_producer_resends_what_was_not_acknowledged_to_the_new_leader_in_order(
        cluster, client):
    cluster.move_after = 3  # broker 1 writes 3 batches, answers 2, then loses leadership
    async with client.producer(batch_records=10, linger_ms=60_000, max_in_flight=1) as producer:
        sent = [await producer.send(TOPIC, b"%d" % i, partition=0) for i in range(100)]
    offsets = [(await future).offset for future in sent]
    assert offsets == list(range(100))
    log = [r.value for batch in cluster.logs[(TOPIC, 0)] for r in batch.records]
    assert log == [b"%d" % i for i in range(100)]  # each once, in order
    on_new_leader = cluster.requests("ProduceStream", 2)
    assert on_new_leader[0].base_sequence == 20  # the third batch again, same sequence
    sequences = [r.base_sequence for r in cluster.requests("ProduceStream")]
    assert sequences == [0, 10, 20, 20, 30, 40, 50, 60, 70, 80, 90]
    assert producer.stats.records_failed == 0 and producer.stats.retries == 1


async def test_the_producer_recovers_when_the_leader_moves_under_pipelined_batches(
        cluster, client):
    cluster.move_after = 3  # the stream ends while later batches are being written
    async with client.producer(batch_records=10, linger_ms=60_000, max_in_flight=5
                               ) as producer:
        sent = [await producer.send(TOPIC, b"%d" % i, partition=0) for i in range(300)]
    assert [(await future).offset for future in sent] == list(range(300))
    log = [r.value for batch in cluster.logs[(TOPIC, 0)] for r in batch.records]
    assert log == [b"%d" % i for i in range(300)]
    # from the first batch not acknowledged yet (the 3rd at the latest), same sequences
    assert cluster.requests("ProduceStream", 2)[0].base_sequence in (0, 10, 20)
    assert producer.stats.records_failed == 0


async def test_subscribe_follows_the_leader_and_resumes_after_the_last_batch(cluster, client):
    cluster.append(TOPIC, 0, records(b"a", b"b"))
    stream = client.subscribe(TOPIC, 0, 0)
    first = await anext(stream)
    assert [r.value for b in first.batches for r in b.records] == [b"a", b"b"]
    cluster.move(TOPIC, 0, 2)  # broker 1's stream ends with NOT_LEADER
    cluster.append(TOPIC, 0, records(b"c"))
    second = await asyncio.wait_for(anext(stream), 5.0)
    assert [r.value for b in second.batches for r in b.records] == [b"c"]
    assert [r.offset for r in cluster.requests("Subscribe", 2)] == [2]
    await stream.aclose()


async def test_a_consumer_rejoins_at_the_new_coordinator_and_reads_on_from_its_commits(
        cluster, client):
    for i in range(3):
        cluster.append(TOPIC, 0, records(b"p0-%d" % i))
        cluster.append(TOPIC, 1, records(b"p1-%d" % i))
    got: list[bytes] = []
    consumer = client.consumer("g", [TOPIC], auto_offset_reset="earliest",
                               auto_commit_interval=0.05)

    async def collect() -> None:
        async for record in consumer:
            got.append(record.value)

    async with consumer:
        reading = asyncio.create_task(collect())
        await polling.eventually(lambda: len(got) == 6, 10.0, what="the first six records")
        await polling.eventually(
            lambda: cluster.committed.get(("g", TOPIC, 0)) == 3
            and cluster.committed.get(("g", TOPIC, 1)) == 3, 10.0, what="committed")
        cluster.coordinator = 2  # broker 2 does not know the member: it joins again there
        await polling.eventually(lambda: consumer.stats.rejoins == 1, 10.0,
                                 what="the consumer rejoins")
        cluster.append(TOPIC, 0, records(b"p0-3"))
        cluster.move(TOPIC, 1, 1)  # and partition 1's leader moves while it reads
        cluster.append(TOPIC, 1, records(b"p1-3"))
        await polling.eventually(lambda: {b"p0-3", b"p1-3"} <= set(got), 10.0,
                                 what="records after the move")
        reading.cancel()
    assert cluster.count("JoinGroup", 2) == 1
    assert client.router.coordinator_address("g") == cluster.addresses[2]
    # resumed at the committed offsets: nothing read twice
    assert sorted(got) == sorted({*got}) and len(got) == 8
    assert cluster.committed[("g", TOPIC, 0)] == 4 and cluster.committed[("g", TOPIC, 1)] == 4
