"""The systems ``bench.broker`` compares, each started fresh by the benchmark and driven the
same way: ours (the broker process on a real etcd, through raw generated stubs or the typed
SDK), NATS JetStream (``nats-server -js``, file storage, nats-py) and Redis Streams
(``redis-server`` with an append-only file, redis.asyncio with hiredis).

Every driver offers the same four operations, on one log (one partition / stream / key)
at a time:

- :meth:`Driver.fresh`: an empty log for the next measurement (the previous one deleted);
- :meth:`Driver.send`: one batch of record values, written and acknowledged;
- :meth:`Driver.consume`: read ``count`` records back from the start in reads of
  ``batch`` records, acknowledging each read the system's own way;
- :meth:`Driver.receive`: from the log's end on, hand every value to a callback as it
  arrives (the end-to-end latency measurement), until cancelled.

A :class:`Durability` is one fsync policy per system, matched as closely as each allows.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import nats
import nats.errors
import nats.js
import redis.asyncio as aioredis
from google.protobuf.duration_pb2 import Duration
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.broker.v1 import broker_pb2_grpc
from geoplex.infra.local import BackendUrls, LocalInfra, find_binary, redis_ready
from geoplex.infra.process import Process

from ._common import ServerProcesses, free_port, start_server_processes

HOST = "127.0.0.1"
NATS_READY = re.compile(r"Server is ready")
ValueCallback = Callable[[bytes], None]
ProduceCall = grpc.aio.StreamStreamCall[pb.ProduceStreamRequest, pb.ProduceStreamResponse]
POLL_S = 0.2
"""How long a tailing read blocks at most, so it sees the end of a measurement."""


# --------------------------------------------------------------------------- durability

@dataclass(frozen=True, slots=True)
class Durability:
    """One fsync policy, as each system spells it; ``None``: the system cannot do it."""

    key: str
    title: str
    ours_env: dict[str, str]
    ours: str
    redis_appendfsync: str
    redis: str
    jetstream_sync_always: bool | None  # True: sync_interval always; False: the default
    jetstream: str

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "ours": self.ours, "redis": self.redis,
                "jetstream": self.jetstream, "ours_env": self.ours_env}


def durabilities(interval_ms: int, nats_sync_always: bool, nats_version: str
                 ) -> list[Durability]:
    """The two policies measured: synced before the acknowledgement, and synced every so often.

    JetStream's file store syncs every 2 minutes unless ``sync_interval: always`` is set
    in the server's ``jetstream`` block, an option nats-server 2.9 does not have (2.10
    added it): with such a server JetStream is left out of the per-batch policy.
    """
    always = (f"sync_interval: always ({nats_version})" if nats_sync_always
              else f"n/a: nats-server {nats_version} has no sync_interval option")
    return [
        Durability("batch", "fsync before every acknowledgement",
                   {"GEOPLEX_BROKER_FSYNC": "batch"},
                   "fsync per batch (group commit)", "always", "appendfsync always",
                   True if nats_sync_always else None, always),
        Durability("interval", "fsync every so often (acknowledged before the sync)",
                   {"GEOPLEX_BROKER_FSYNC": "interval",
                    "GEOPLEX_BROKER_FSYNC_INTERVAL_MS": str(interval_ms)},
                   f"fsync every {interval_ms:,} ms", "everysec", "appendfsync everysec",
                   False, f"default: fsync every 2 min ({nats_version})"),
    ]


# --------------------------------------------------------------------------- processes

def nats_version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    match = re.search(r"v(\d+\.\d+\.\d+\S*)", done.stdout + done.stderr)
    return match.group(1) if match else "unknown"


def nats_supports_sync_always(binary: str) -> bool:
    """Whether this nats-server accepts ``sync_interval: always`` (``-t`` checks a config)."""
    with tempfile.TemporaryDirectory(prefix="geoplex-bench-nats-") as tmp:
        conf = Path(tmp) / "test.conf"
        conf.write_text(_nats_conf(Path(tmp) / "js", free_port(), True))
        done = subprocess.run([binary, "-t", "-c", str(conf)], capture_output=True,
                              text=True, timeout=10)
        return done.returncode == 0


def _nats_conf(store: Path, port: int, sync_always: bool) -> str:
    sync = "\n  sync_interval: always" if sync_always else ""
    return (f'listen: "{HOST}:{port}"\n'
            f'jetstream {{\n  store_dir: "{store}"{sync}\n}}\n')


@dataclass
class Started:
    """A server process this benchmark started, where it listens, its pid for CPU."""

    name: str
    address: str
    pid: int


@contextlib.contextmanager
def etcd_server(progress: Callable[[str], None]) -> Iterator[tuple[str, int]]:
    """A fresh etcd (always the benchmark's own, so its CPU is measured): (endpoint, pid)."""
    with tempfile.TemporaryDirectory(prefix="geoplex-bench-broker-etcd-") as state:
        infra = LocalInfra(Path(state), backends=("etcd",), configured=BackendUrls(),
                           progress=progress)
        with infra as urls:
            assert urls.etcd_endpoints
            proc = infra.procs["etcd"].proc
            assert proc is not None
            yield urls.etcd_endpoints[0], proc.pid


@contextlib.contextmanager
def broker_server(etcd: str, durability: Durability, extra_env: dict[str, str] | None = None
                  ) -> Iterator[ServerProcesses]:
    """Our broker process on a fresh data directory (``python -m geoplex.servers.broker``)."""
    with tempfile.TemporaryDirectory(prefix="geoplex-bench-broker-data-") as data:
        env = {"GEOPLEX_BROKER_PORT": "0", "GEOPLEX_BROKER_DATA_DIR": data,
               "GEOPLEX_ETCD_ENDPOINTS": etcd, "GEOPLEX_LOG_LEVEL": "warning",
               "GEOPLEX_BROKER_ETCD_PREFIX": f"/geoplex-bench/{os.getpid()}/{durability.key}",
               **durability.ours_env, **(extra_env or {})}
        with start_server_processes([sys.executable, "-m", "geoplex.servers.broker"], 1, env,
                                    ready_timeout=60) as servers:
            yield servers


@contextlib.contextmanager
def redis_server(durability: Durability) -> Iterator[Started]:
    """``redis-server --appendonly yes --appendfsync always|everysec`` on a fresh directory."""
    binary = find_binary("redis-server", "install the Debian package redis-server")
    with tempfile.TemporaryDirectory(prefix="geoplex-bench-broker-redis-") as data:
        port = free_port()
        url = f"redis://{HOST}:{port}/0"
        proc = Process("redis-server", [
            binary, "--bind", HOST, "--port", str(port), "--dir", data,
            "--appendonly", "yes", "--appendfsync", durability.redis_appendfsync,
            "--save", "", "--protected-mode", "yes", "--daemonize", "no"],
            Path(data) / "redis.log", probe=partial(redis_ready, url))
        with proc:
            assert proc.pid is not None
            yield Started("redis", url, proc.pid)


@contextlib.contextmanager
def nats_server(binary: str, sync_always: bool) -> Iterator[Started]:
    """``nats-server`` with JetStream on a fresh store directory (file storage)."""
    with tempfile.TemporaryDirectory(prefix="geoplex-bench-broker-nats-") as data:
        port = free_port()
        conf = Path(data) / "nats.conf"
        conf.write_text(_nats_conf(Path(data) / "js", port, sync_always))
        proc = Process("nats-server", [binary, "-c", str(conf)], Path(data) / "nats.log",
                       ready_line=NATS_READY)
        with proc:
            assert proc.pid is not None
            yield Started("nats", f"nats://{HOST}:{port}", proc.pid)


# --------------------------------------------------------------------------- drivers

class Driver(abc.ABC):
    """One system under test, connected; see the module docstring for the operations."""

    key: str = ""
    label: str = ""

    def __init__(self, fsync: str, pids: Sequence[int]) -> None:
        self.fsync = fsync
        self.pids = list(pids)  # server processes whose CPU is the system's

    async def open(self) -> None:
        """Connect."""

    async def close(self) -> None:
        """Disconnect (and delete the last log)."""

    @abc.abstractmethod
    async def fresh(self, name: str) -> None: ...

    async def prepare(self, batch: int | None) -> None:
        """Set up for sending batches of ``batch`` records (None: the latency run)."""

    @abc.abstractmethod
    async def send(self, values: Sequence[bytes]) -> None: ...

    @abc.abstractmethod
    async def consume(self, count: int, batch: int) -> int: ...

    @abc.abstractmethod
    async def receive(self, on_value: ValueCallback, started: asyncio.Event,
                      stop: asyncio.Event) -> None:
        """Tail the log until ``stop`` is set (checked at least every :data:`POLL_S`:
        a read blocked in redis-py does not always survive being cancelled)."""

    @property
    def produce_note(self) -> str:
        """How a batch is sent and acknowledged."""
        return ""


class OursRaw(Driver):
    """Our broker through the generated stubs: each batch one ``ProduceRequest``, on one
    pipelined ``ProduceStream`` (``mode="stream"``: requests written back to back, answers
    in order) or as unary ``Produce`` calls side by side (``mode="unary"``); ``Fetch``
    loops; ``CommitOffsets`` per read."""

    key = "ours"
    label = "ours (raw stubs)"

    def __init__(self, address: str, fsync: str, pids: Sequence[int],
                 mode: str = "stream") -> None:
        super().__init__(fsync, pids)
        if mode not in ("stream", "unary"):
            raise ValueError(f"mode must be stream or unary, not {mode!r}")
        self.address = address
        self.mode = mode
        self.topic = ""
        self._channel: grpc.aio.Channel | None = None
        self._stub: broker_pb2_grpc.BrokerServiceAsyncStub | None = None
        self._group = 0
        self._stream: ProduceCall | None = None  # the open ProduceStream call
        self._answers: asyncio.Task[None] | None = None
        self._waiting: collections.deque[asyncio.Future[pb.ProduceResponse]] = \
            collections.deque()
        self._write = asyncio.Lock()

    @property
    def stub(self) -> broker_pb2_grpc.BrokerServiceAsyncStub:
        assert self._stub is not None, "open() first"
        return self._stub

    async def open(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.address, options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20)])
        await asyncio.wait_for(self._channel.channel_ready(), 30)
        self._stub = broker_pb2_grpc.BrokerServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._drop()
            await self._channel.close()
            self._channel = self._stub = None

    async def _end_stream(self) -> None:
        stream, answers, self._stream, self._answers = self._stream, self._answers, None, None
        if stream is not None:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await stream.done_writing()
        if answers is not None:
            await asyncio.wait([answers], timeout=30)
            answers.cancel()

    async def prepare(self, batch: int | None) -> None:
        await self._end_stream()
        if self.mode == "stream":
            self._stream = self.stub.ProduceStream()
            self._answers = asyncio.create_task(self._read_answers(self._stream))

    async def _read_answers(self, stream: ProduceCall) -> None:
        error: BaseException = RuntimeError("the ProduceStream ended early")
        try:
            async for answer in stream:
                self._waiting.popleft().set_result(answer.produce)
        except grpc.aio.AioRpcError as exc:
            error = exc
        finally:
            while self._waiting:
                waiter = self._waiting.popleft()
                if not waiter.done():
                    waiter.set_exception(error)

    async def _drop(self) -> None:
        await self._end_stream()
        if self.topic:
            topic, self.topic = self.topic, ""
            await self.stub.DeleteTopic(pb.DeleteTopicRequest(name=topic), timeout=30)

    async def fresh(self, name: str) -> None:
        await self._drop()
        await self.stub.CreateTopic(pb.CreateTopicRequest(
            topic=pb.Topic(name=name, partitions=1)), timeout=30)
        self.topic = name

    async def send(self, values: Sequence[bytes]) -> None:
        request = pb.ProduceRequest(topic=self.topic, partition=0,
                                    records=[pb.Record(value=v) for v in values],
                                    acks=pb.ACKS_LEADER)
        if self._stream is None:
            await self.stub.Produce(request, timeout=60)
            return
        answer: asyncio.Future[pb.ProduceResponse] = asyncio.get_running_loop().create_future()
        async with self._write:  # one write at a time, answers queued in write order
            self._waiting.append(answer)
            await self._stream.write(pb.ProduceStreamRequest(produce=request))
        await answer

    @property
    def produce_note(self) -> str:
        if self.mode == "stream":
            return ("one ProduceRequest per batch (acks LEADER) on one pipelined "
                    "ProduceStream, batches in flight back to back")
        return "one unary Produce per batch (acks LEADER), calls in flight side by side"

    async def consume(self, count: int, batch: int, record_bytes: int = 1024) -> int:
        self._group += 1
        group = f"bench-{self._group}"
        offset = read = 0
        commit: asyncio.Task[Any] | None = None
        max_bytes = max(batch * (record_bytes + 16), 1)
        try:
            while read < count:
                response = await self.stub.Fetch(pb.FetchRequest(
                    topic=self.topic, partition=0, offset=offset, max_bytes=max_bytes,
                    max_wait=Duration(seconds=5)), timeout=60)
                for stored in response.batches:
                    n = len(stored.records)
                    skip = max(offset - stored.base_offset, 0)  # a batch may start before it
                    read += max(n - skip, 0)
                    offset = max(offset, stored.base_offset + n)
                # acknowledge the read: a commit, one in flight at a time (coalesced)
                if commit is None or commit.done():
                    if commit is not None:
                        commit.result()
                    commit = asyncio.create_task(self._commit(group, offset))
        finally:
            if commit is not None:
                await commit
        await self._commit(group, offset)
        return read

    async def _commit(self, group: str, offset: int) -> None:
        await self.stub.CommitOffsets(pb.CommitOffsetsRequest(
            group=group, offsets=[pb.PartitionOffset(topic=self.topic, partition=0,
                                                     offset=offset)]), timeout=30)

    async def receive(self, on_value: ValueCallback, started: asyncio.Event,
                      stop: asyncio.Event) -> None:
        listed = await self.stub.ListOffsets(pb.ListOffsetsRequest(topic=self.topic),
                                             timeout=30)
        offset = listed.offsets[0].offset if listed.offsets else 0
        started.set()
        wait = Duration(nanos=int(POLL_S * 1e9))
        while not stop.is_set():
            response = await self.stub.Fetch(pb.FetchRequest(
                topic=self.topic, partition=0, offset=offset, max_bytes=1 << 20,
                max_wait=wait), timeout=30)
            for stored in response.batches:
                for i, record in enumerate(stored.records):
                    if stored.base_offset + i >= offset:
                        on_value(record.value)
                offset = max(offset, stored.base_offset + len(stored.records))


class Redis(Driver):
    """Redis Streams: ``XADD`` pipelined per batch, ``XREADGROUP`` + ``XACK`` per read."""

    key = "redis"
    label = "Redis Streams"

    def __init__(self, url: str, fsync: str, pids: Sequence[int]) -> None:
        super().__init__(fsync, pids)
        self.url = url
        self.stream = ""
        self._r: aioredis.Redis | None = None
        self._group = 0

    @property
    def r(self) -> aioredis.Redis:
        assert self._r is not None, "open() first"
        return self._r

    async def open(self) -> None:
        self._r = aioredis.Redis.from_url(self.url, max_connections=256)
        await self.r.ping()

    async def close(self) -> None:
        if self._r is not None:
            with contextlib.suppress(Exception):
                await self._drop()
            await self._r.aclose()
            self._r = None

    async def _drop(self) -> None:
        if self.stream:
            stream, self.stream = self.stream, ""
            await self.r.delete(stream)

    async def fresh(self, name: str) -> None:
        await self._drop()
        self.stream = name

    async def send(self, values: Sequence[bytes]) -> None:
        if len(values) == 1:
            await self.r.xadd(self.stream, {"v": values[0]})
            return
        pipe = self.r.pipeline(transaction=False)
        for v in values:
            pipe.xadd(self.stream, {"v": v})
        await pipe.execute()

    @property
    def produce_note(self) -> str:
        return "XADD per record, pipelined per batch (one round trip), pipelines side by side"

    async def _new_group(self, start: str) -> str:
        self._group += 1
        group = f"bench-{self._group}"
        await self.r.xgroup_create(self.stream, group, id=start, mkstream=True)
        return group

    async def _read(self, group: str, ids: list[bytes], count: int,
                    block: int | None) -> list[Any]:
        """Acknowledge the last read and read the next in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        if ids:
            pipe.xack(self.stream, group, *ids)
        pipe.xreadgroup(group, "c", {self.stream: ">"}, count=count, block=block)
        replies = await pipe.execute()
        entries: list[Any] = replies[-1][0][1] if replies[-1] else []
        return entries

    async def consume(self, count: int, batch: int) -> int:
        group = await self._new_group("0")
        read = 0
        ids: list[bytes] = []
        while read < count:
            entries = await self._read(group, ids, batch, None)
            if not entries:
                raise RuntimeError(f"Redis stream {self.stream} ended after {read} records "
                                   f"of {count}")
            ids = [entry_id for entry_id, _ in entries]
            read += len(entries)
        if ids:
            await self.r.xack(self.stream, group, *ids)
        return read

    async def receive(self, on_value: ValueCallback, started: asyncio.Event,
                      stop: asyncio.Event) -> None:
        group = await self._new_group("$")
        started.set()
        ids: list[bytes] = []
        while not stop.is_set():
            entries = await self._read(group, ids, 1000, int(POLL_S * 1000))
            for _, fields in entries:
                on_value(fields[b"v"])
            ids = [entry_id for entry_id, _ in entries]


class JetStream(Driver):
    """NATS JetStream, file storage: ``publish`` (batch of 1) or ``publish_async`` for every
    record of a batch then await its acks; a push consumer with AckAll, one ack per read."""

    key = "jetstream"
    label = "NATS JetStream"

    def __init__(self, url: str, fsync: str, pids: Sequence[int]) -> None:
        super().__init__(fsync, pids)
        self.url = url
        self.stream = ""
        self._nc: NatsClient | None = None
        self._js: nats.js.JetStreamContext | None = None

    @property
    def js(self) -> nats.js.JetStreamContext:
        assert self._js is not None, "open() first"
        return self._js

    async def open(self) -> None:
        self._nc = await nats.connect(self.url, max_reconnect_attempts=0,
                                      pending_size=256 << 20)
        self._js = self._nc.jetstream(timeout=30, publish_async_max_pending=1 << 20)

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._drop()
            await self._nc.close()
            self._nc = self._js = None

    @property
    def subject(self) -> str:
        return f"{self.stream}.records"

    async def _drop(self) -> None:
        if self.stream:
            stream, self.stream = self.stream, ""
            await self.js.delete_stream(stream)

    async def fresh(self, name: str) -> None:
        await self._drop()
        name = name.replace(".", "_")
        await self.js.add_stream(StreamConfig(name=name, subjects=[f"{name}.records"],
                                              storage=StorageType.FILE, num_replicas=1))
        self.stream = name

    async def send(self, values: Sequence[bytes]) -> None:
        if len(values) == 1:
            await self.js.publish(self.subject, values[0])
            return
        futures = [await self.js.publish_async(self.subject, v) for v in values]
        await asyncio.gather(*futures)

    @property
    def produce_note(self) -> str:
        return ("publish (batch of 1, waits for its ack) or publish_async per record and "
                "await the batch's acks; batches side by side")

    async def consume(self, count: int, batch: int) -> int:
        """A push consumer (nats-py's fastest way in: a pull ``fetch`` waits per message and
        was 4x slower here) with AckAll, the last record of every ``batch`` acknowledged."""
        done = asyncio.Event()
        read = 0

        async def on_msg(msg: Msg) -> None:
            nonlocal read
            read += 1
            if read % batch == 0 or read == count:
                await msg.ack()  # AckAll: acknowledges every record before it too
            if read >= count:
                done.set()

        sub = await self.js.subscribe(
            self.subject, stream=self.stream, cb=on_msg, manual_ack=True,
            config=ConsumerConfig(ack_policy=AckPolicy.ALL, deliver_policy=DeliverPolicy.ALL,
                                  max_ack_pending=max(4 * batch, 1000), flow_control=True,
                                  idle_heartbeat=5.0),
            pending_msgs_limit=1 << 20, pending_bytes_limit=1 << 30)
        try:
            await asyncio.wait_for(done.wait(), timeout=max(60.0, count / 1000))
        finally:
            await sub.unsubscribe()
        return read

    async def receive(self, on_value: ValueCallback, started: asyncio.Event,
                      stop: asyncio.Event) -> None:
        sub = await self.js.subscribe(
            self.subject, stream=self.stream, manual_ack=True,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT,
                                  deliver_policy=DeliverPolicy.NEW))
        started.set()
        try:
            while not stop.is_set():
                try:
                    msg = await sub.next_msg(timeout=POLL_S)
                except nats.errors.TimeoutError:
                    continue
                on_value(msg.data)
                await msg.ack()
        finally:
            await sub.unsubscribe()


@contextlib.asynccontextmanager
async def connected(driver: Driver) -> AsyncIterator[Driver]:
    await driver.open()
    try:
        yield driver
    finally:
        await driver.close()


def have_nats(given: str | None) -> str | None:
    """The nats-server binary, or None when there is none (JetStream is then skipped)."""
    if given:
        return given
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)
