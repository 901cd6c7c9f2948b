"""BrokerClient's shape (a timeout on every call) and reading fetched batches, no server."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.clients.broker import (
    BrokerClient,
    ConsumedRecord,
    OffsetOutOfRangeError,
    records_of,
)
from geoplex.clients.channel import BaseClient, ChannelOptions
from geoplex.clients.broker_consumer import TopicPartition, _Buffer, _Chunk, _Partition
from geoplex.clients.errors import GeoplexRpcError

NO_DEADLINE = {"subscribe", "producer", "consumer"}  # streams and factories
CALLS: dict[str, Callable[[BrokerClient, float | None], Any]] = {
    "create_topic": lambda c, t: c.create_topic("t", 3, retention=60, timeout=t),
    "delete_topic": lambda c, t: c.delete_topic("t", timeout=t),
    "list_topics": lambda c, t: c.list_topics(timeout=t),
    "get_topic": lambda c, t: c.get_topic("t", timeout=t),
    "list_offsets": lambda c, t: c.list_offsets("t", time_ms=0, timeout=t),
    "produce": lambda c, t: c.produce("t", [pb.Record(value=b"v")], partition=0, timeout=t),
    "fetch": lambda c, t: c.fetch("t", 0, 0, timeout=t),
    "read": lambda c, t: _first(c.read("t", 0, 0, until_end=True, timeout=t)),
    "join_group": lambda c, t: c.join_group("g", ["t"], timeout=t),
    "sync_group": lambda c, t: c.sync_group("g", "m", 1, timeout=t),
    "heartbeat": lambda c, t: c.heartbeat("g", "m", 1, timeout=t),
    "leave_group": lambda c, t: c.leave_group("g", "m", timeout=t),
    "commit_offsets": lambda c, t: c.commit_offsets("g", {("t", 0): 1}, timeout=t),
    "get_committed_offsets": lambda c, t: c.get_committed_offsets("g", timeout=t),
    "reset_offsets": lambda c, t: c.reset_offsets("g", "t", "earliest", timeout=t),
    "describe_group": lambda c, t: c.describe_group("g", timeout=t),
    "list_groups": lambda c, t: c.list_groups(timeout=t),
    "nack": lambda c, t: c.nack("g", "m", 1, "t", 0, 5, delay=1.5, timeout=t),
}


async def _first(items: Any) -> None:
    async for _ in items:
        break


class RecordingStub:
    """Stands in for the generated stub: records each call's deadline, answers empty."""

    def __init__(self) -> None:
        (service,) = pb.DESCRIPTOR.services_by_name.values()
        self._methods = service.methods_by_name
        self.deadlines: list[tuple[str, float | None]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        reply = message_factory.GetMessageClass(self._methods[name].output_type)

        async def call(request: Any, *, timeout: float | None = None,
                       metadata: Any = ()) -> Any:
            self.deadlines.append((name, timeout))
            return reply()
        return call


def test_the_constructor_takes_target_options_and_interceptors_explicitly():
    params = inspect.signature(BrokerClient.__init__).parameters
    assert list(params) == ["self", "target", "options", "interceptors"]


def test_every_call_takes_a_timeout_keyword():
    public = sorted(name for name, member in inspect.getmembers(BrokerClient)
                    if (inspect.isfunction(member) or inspect.isasyncgenfunction(member))
                    and not name.startswith("_") and not hasattr(BaseClient, name))
    assert public == sorted([*CALLS, *NO_DEADLINE])
    for name in CALLS:
        timeout = inspect.signature(getattr(BrokerClient, name)).parameters.get("timeout")
        assert timeout is not None and timeout.kind is timeout.KEYWORD_ONLY, name
        assert timeout.default is None, name


async def test_every_call_passes_its_timeout_or_the_default_deadline_to_grpc():
    async with BrokerClient("127.0.0.1:9", ChannelOptions(timeout=7.0)) as client:
        stub = RecordingStub()
        setattr(client, "stub", stub)  # every call goes through self.stub
        for name, call in CALLS.items():
            await call(client, 2.5)
            await call(client, None)
            assert [d for _, d in stub.deadlines[-2:]] == [2.5, 7.0], name


def test_out_of_range_carries_the_log_bounds():
    plain = GeoplexRpcError(grpc.StatusCode.OUT_OF_RANGE, "offset: 3 is outside",
                            metadata={"log_start_offset": "10", "log_end_offset": "20"})
    typed = OffsetOutOfRangeError.of(plain)
    assert (typed.log_start_offset, typed.log_end_offset) == (10, 20)
    assert isinstance(typed, GeoplexRpcError)


def batch(base: int, values: list[bytes], **record: Any) -> pb.RecordBatch:
    return pb.RecordBatch(base_offset=base, records=[pb.Record(value=v, **record)
                                                     for v in values])


def test_records_below_the_asked_offset_are_skipped_and_offsets_follow_the_batch():
    batches = [batch(10, [b"a", b"b", b"c"]), batch(13, [b"d"])]
    got = list(records_of("t", 2, batches, 12))
    assert [(r.offset, r.value) for r in got] == [(12, b"c"), (13, b"d")]
    assert all(r.topic == "t" and r.partition == 2 and r.key is None for r in got)
    assert all(r.deliveries == 1 and r.headers == () for r in got)


def test_a_retried_record_counts_its_deliveries_and_names_its_origin():
    headers = [pb.Header(key="geoplex-origin-topic", value=b"rides"),
               pb.Header(key="geoplex-origin-partition", value=b"4"),
               pb.Header(key="geoplex-origin-offset", value=b"77"),
               pb.Header(key="geoplex-deliveries", value=b"2"),
               pb.Header(key="geoplex-error", value=b"timeout")]
    (record,) = records_of("__retry.g", 0, [batch(5, [b"v"], key=b"k", headers=headers)])
    assert record.deliveries == 3  # delivered twice before, this is the third
    assert record.origin == ("rides", 4) and record.origin_offset == 77
    assert record.error == "timeout" and record.key == b"k"
    plain = ConsumedRecord("rides", 1, 9, None, b"v", (), 0)
    assert plain.origin == ("rides", 1) and plain.origin_offset == 9 and plain.error == ""


async def test_the_fetch_buffer_is_bounded_and_a_failure_wakes_the_reader():
    buffer = _Buffer(2)
    owner = _Partition(TopicPartition("t", 0), 0, -1)
    await buffer.put(_Chunk(owner, iter(())))
    await buffer.put(_Chunk(owner, iter(())))
    third = asyncio.create_task(buffer.put(_Chunk(owner, iter(()))))
    await asyncio.sleep(0)
    assert not third.done() and len(buffer.items) == 2  # waits for room
    await buffer.get()
    await third
    assert len(buffer.items) == 2
    reader = _Buffer(1)
    waiting = asyncio.create_task(reader.get())
    await asyncio.sleep(0)
    reader.fail(RuntimeError("closed"))
    with pytest.raises(RuntimeError, match="closed"):
        await waiting
