"""Raw-stub helpers for the broker contract tests (the SDK is tested on its own)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import TypeAlias

import grpc
import grpc.aio
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.broker.v1 import broker_pb2_grpc
from geoplex.infra.local import BackendUrls

# the generated .pyi types the aio stub as BrokerServiceAsyncStub (a name only it has)
Stub: TypeAlias = "broker_pb2_grpc.BrokerServiceAsyncStub"


def broker_env(backends: BackendUrls, data_dir: Path, **extra: str) -> dict[str, str]:
    """What a test broker is given: the session's etcd, its own prefix and data directory,
    a retention check every 0.2 s (so retention tests need not wait minutes)."""
    return {**backends.env(), "GEOPLEX_BROKER_PORT": "0",
            "GEOPLEX_BROKER_DATA_DIR": str(data_dir),
            "GEOPLEX_BROKER_ETCD_PREFIX": f"/geoplex-test/{uuid.uuid4().hex[:12]}",
            "GEOPLEX_BROKER_RETENTION_CHECK_SECONDS": "0.2",
            "GEOPLEX_LOG_LEVEL": "warning", **extra}


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ms(value: float) -> Duration:
    out = Duration()
    out.FromMilliseconds(round(value))
    return out


async def make_topic(stub: Stub, partitions: int = 1, name: str | None = None,
                     config: pb.TopicConfig | None = None) -> str:
    name = name or unique()
    await stub.CreateTopic(pb.CreateTopicRequest(topic=pb.Topic(
        name=name, partitions=partitions, config=config or pb.TopicConfig())))
    return name


def records(*values: str, key: bytes = b"") -> list[pb.Record]:
    return [pb.Record(key=key, value=v.encode()) for v in values]


def values_of(response: pb.FetchResponse) -> list[str]:
    return [r.value.decode() for batch in response.batches for r in batch.records]


def offsets_of(response: pb.FetchResponse) -> list[int]:
    return [batch.base_offset + i for batch in response.batches
            for i in range(len(batch.records))]


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail of a failed call."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    raise AssertionError(f"no ErrorInfo in the trailers of {error.code().name}")


def bad_field(error: grpc.aio.AioRpcError) -> str:
    """The field a BadRequest detail names."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return bad.field_violations[0].field
    raise AssertionError(f"no BadRequest in the trailers of {error.code().name}")


async def join(stub: Stub, group: str, topics: list[str], member_id: str = "",
               session_ms: int = 30_000) -> tuple[str, int]:
    joined = await stub.JoinGroup(pb.JoinGroupRequest(
        group=group, member_id=member_id, topics=topics, session_timeout=ms(session_ms),
        client_id="contract-test"))
    return joined.member_id, joined.generation


Assignment = dict[str, list[int]]


async def settle(stub: Stub, group: str, generations: dict[str, int],
                 timeout: float = 20.0) -> dict[str, Assignment]:
    """Heartbeat and sync every member (``generations``: member -> the generation it knows,
    updated) until the group is STABLE; each member's assignment then."""
    assignments: dict[str, Assignment] = {m: {} for m in generations}
    deadline = time.monotonic() + timeout
    while True:
        for member in generations:
            beat = await stub.Heartbeat(pb.HeartbeatRequest(
                group=group, member_id=member, generation=generations[member]))
            if beat.rebalance:
                synced = await stub.SyncGroup(pb.SyncGroupRequest(
                    group=group, member_id=member, generation=beat.generation))
                generations[member] = synced.generation
                assignments[member] = {tp.topic: list(tp.partitions)
                                       for tp in synced.assignment}
        described = await stub.DescribeGroup(pb.DescribeGroupRequest(group=group))
        if described.state == "STABLE" and all(
                generations[m] == described.generation for m in generations):
            return assignments
        assert time.monotonic() < deadline, f"group {group} not stable: {described}"
        await asyncio.sleep(0.05)  # the next round of heartbeats


async def fetch_until(stub: Stub, topic: str, count: int, partition: int = 0,
                      timeout: float = 20.0) -> list[pb.RecordBatch]:
    """Long-poll ``topic`` until it holds ``count`` records; its batches."""
    deadline = time.monotonic() + timeout
    batches: list[pb.RecordBatch] = []
    offset = 0
    while sum(len(b.records) for b in batches) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"{topic} holds {sum(len(b.records) for b in batches)} of {count}"
        try:
            got = await stub.Fetch(pb.FetchRequest(topic=topic, partition=partition,
                                                   offset=offset, max_wait=ms(min(left, 5) * 1000)))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:  # the topic is made on first use
                raise
            await asyncio.sleep(0.05)  # until the broker has made it
            continue
        fresh = [b for b in got.batches if b.base_offset + len(b.records) > offset]
        batches.extend(fresh)
        if fresh:
            offset = fresh[-1].base_offset + len(fresh[-1].records)
    return batches


def headers_of(record: pb.Record) -> dict[str, str]:
    return {h.key: h.value.decode() for h in record.headers}
