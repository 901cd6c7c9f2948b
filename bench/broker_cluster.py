"""Replicated broker benchmark: three brokers (RF 3) against one, NATS JetStream R3 and Redis
with two replicas, in one run; then leader failover under SIGKILL.

``python -m bench.broker_cluster``, about 6 minutes on 2 cores. 1 KB records, one log per
measurement (a one-partition topic / one stream / one stream key), every system started
fresh by the benchmark on temporary directories, on loopback, the clients in this one
Python process (uvloop):

- **ours, 3 brokers**: three ``python -m geoplex.servers.broker`` processes (ids 1..3, each
  its own port and data directory) on one etcd prefix; topics with ``replication_factor``
  3 and ``min_insync_replicas`` 2; produce and fetch go to the partition's leader (from
  ``GetMetadata``), through the raw generated stubs as in ``bench.broker`` (the floor);
- **ours, 1 broker**: a one-node cluster (RF 1) on the same etcd, its own prefix;
- **NATS JetStream R3**: three ``nats-server -js`` in one cluster (routes on loopback),
  file storage, streams with ``num_replicas=3`` (a publish is acknowledged once a quorum,
  2 of 3, has it); the client is connected to server 1 (the stream leader may be another);
- **Redis, primary + 2 replicas**: ``redis-server --appendonly yes`` and two
  ``--replicaof`` it; ``XADD`` pipelined per batch (acks LEADER: replication is
  asynchronous), with ``WAIT 2`` at the end of the pipeline for acks ALL.

For each acks level (NONE / LEADER / ALL; a peer only where it has one) it measures, the
systems interleaved within each round, under one fsync policy (``--durability``, by
default every ``--fsync-interval-ms`` for ours, ``everysec`` for Redis, JetStream's
default):

1. produce throughput (records/s, MB/s) with batches of 1, 100 and 1,000 records,
   ``--inflight`` batches in flight at once (``bench.broker``'s closed loop);
2. produce latency at a fixed ``--rate`` (2,000 records/s, ``bench.broker``'s latency
   run): each record stamped with its scheduled send time; the ack latency (its batch's
   acknowledgement minus that time) and the end-to-end latency (a consumer tailing the log
   receives it) p50/p99;
3. failover (ours, 3 brokers): ``--kills`` times the leader of a partition is killed with
   SIGKILL; the time until the first acks=ALL produce to that partition is acknowledged
   (a client with the three brokers' addresses, following ``GetMetadata`` and NOT_LEADER
   answers), and until its ISR is full again once the killed broker is restarted (which
   happens as soon as the produce succeeded).

Writes ``bench/results/broker_cluster.json`` and the ``broker-cluster`` section of
``BENCHMARKS.md`` (``--report-only`` re-renders it from the results).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import os
import random
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import nats.errors
import redis
import uvloop
from nats.js.api import StorageType, StreamConfig

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.broker.v1 import broker_pb2_grpc
from geoplex.clients.errors import from_rpc_error
from geoplex.infra.local import find_binary, redis_ready
from geoplex.infra.process import READY_LINE, Process, stop_all

from . import broker as single
from ._common import (log, 
    BENCHMARKS_MD,
    RESULTS_DIR,
    ROOT,
    LoadResult,
    combine_rounds,
    fmt_num,
    free_port,
    latency_summary,
    machine_info,
    machine_line,
    markdown_table,
    read_results,
    write_results,
    write_section,
)
from .broker_systems import (
    HOST,
    NATS_READY,
    Driver,
    Durability,
    JetStream,
    OursRaw,
    Redis,
    Started,
    ValueCallback,
    connected,
    durabilities,
    etcd_server,
    have_nats,
    nats_supports_sync_always,
    nats_version,
)

NAME = "broker-cluster"  # the BENCHMARKS.md section
RESULTS = "broker_cluster"  # bench/results/broker_cluster.json
TITLE = "## Broker cluster: three replicas vs one node, JetStream R3 and Redis with replicas"
ACKS: dict[str, pb.Acks.ValueType] = {"none": pb.ACKS_NONE, "leader": pb.ACKS_LEADER,
                                      "all": pb.ACKS_ALL}
SYSTEMS = ("ours-rf3", "ours-rf1", "jetstream-r3", "redis-r3")
LABELS = {"ours-rf3": "ours, 3 brokers (RF 3)", "ours-rf1": "ours, 1 broker (RF 1)",
          "jetstream-r3": "NATS JetStream R3", "redis-r3": "Redis, primary + 2 replicas"}
PEERS = ("jetstream-r3", "redis-r3")
SYSTEM_ACKS = {"ours-rf3": ("none", "leader", "all"), "ours-rf1": ("none", "leader", "all"),
               "jetstream-r3": ("all",), "redis-r3": ("leader", "all")}
"""The acks levels each system has: JetStream acknowledges a publish once a quorum has it
(its only level with an ack), Redis without or with ``WAIT``."""
QUICK = {"warmup": 0.2, "duration": 0.5, "rounds": 1, "batches": "1000",
         "latency_duration": 0.6, "latency_warmup": 0.2, "rate": 500.0, "kills": 2,
         "quiet_wait": 0.0, "quiet_budget": 0.0}
"""--quick: the defaults it changes (a flag given beside it still wins)."""
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    # a restarted broker is reached again within a second, not after minutes of back-off
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
POLL_S = 0.02
"""How often cluster state is looked at while a failover or an ISR change is timed."""



# --------------------------------------------------------------------------- our cluster

def stable_port(host: str = HOST) -> int:
    """A free port below the kernel's ephemeral range, so that no outgoing connection takes
    it as its source port while its broker is down: a killed broker restarts on it."""
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    floor = 10_000 if low > 12_000 else 1025
    for _ in range(200):
        port = random.randrange(floor, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    return free_port(host)  # the whole range taken: an ephemeral one after all


@dataclass(eq=False)
class Node:
    id: int
    port: int
    process: Process

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass
class ClusterView:
    """One partition as one broker's ``GetMetadata`` has it."""

    leader: int
    epoch: int
    replicas: list[int]
    isr: list[int]
    controller: int
    brokers: list[int]


class LocalCluster:
    """``size`` broker processes (ids 1..size) on one etcd prefix, each on a fixed port and
    its own data directory under ``root``; started by :meth:`start`, every process stopped
    by :meth:`aclose` whatever happened. One channel per broker address."""

    def __init__(self, name: str, size: int, etcd: str, root: Path, *,
                 durability: Durability, lease_s: float, replica_lag_time_ms: int) -> None:
        self.name = name
        self.size = size
        self.prefix = f"/geoplex-bench/{os.getpid()}/{name}"
        self.lease_s = lease_s
        self.nodes: dict[int, Node] = {}
        self._stubs: dict[str, broker_pb2_grpc.BrokerServiceAsyncStub] = {}
        self._channels: list[grpc.aio.Channel] = []
        for broker_id in range(1, size + 1):
            port = stable_port()
            env = {"GEOPLEX_BROKER_ID": str(broker_id), "GEOPLEX_BROKER_PORT": str(port),
                   "GEOPLEX_BROKER_HOST": HOST,
                   "GEOPLEX_BROKER_DATA_DIR": str(root / f"{name}-{broker_id}"),
                   "GEOPLEX_BROKER_ETCD_PREFIX": self.prefix,
                   "GEOPLEX_ETCD_ENDPOINTS": etcd.removeprefix("http://"),
                   "GEOPLEX_BROKER_LEASE_SECONDS": f"{lease_s:g}",
                   "GEOPLEX_BROKER_REPLICA_LAG_TIME_MS": str(replica_lag_time_ms),
                   "GEOPLEX_LOG_LEVEL": "warning", **durability.ours_env}
            self.nodes[broker_id] = Node(broker_id, port, Process(
                f"broker {name}-{broker_id}", [sys.executable, "-m", "geoplex.servers.broker"],
                root / "logs" / f"{name}-{broker_id}.log", env=env, ready_line=READY_LINE,
                ready_timeout=60.0, stop_grace=10.0, cwd=ROOT))

    @property
    def ids(self) -> list[int]:
        return sorted(self.nodes)

    @property
    def pids(self) -> list[int]:
        """The brokers' process ids, by broker id (those running)."""
        return [n.process.pid for n in self.nodes.values()
                if n.process.pid is not None and n.process.running]

    def running(self, broker_id: int) -> bool:
        return self.nodes[broker_id].process.running

    def describe(self) -> str:
        """Each broker's state, and the end of the log of any that exited (for errors)."""
        parts = []
        for node in self.nodes.values():
            code = node.process.returncode
            parts.append(f"broker {node.id}: " + ("running" if node.process.running else
                                                  f"exited ({code}); its log ends:\n"
                                                  + node.process.log_tail(10)))
        return "; ".join(parts)

    def address(self, broker_id: int) -> str:
        return self.nodes[broker_id].address

    def stub(self, address: str) -> broker_pb2_grpc.BrokerServiceAsyncStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels.append(channel)
            stub = self._stubs[address] = broker_pb2_grpc.BrokerServiceStub(channel)
        return stub

    async def start(self, *broker_ids: int) -> None:
        """Start these brokers (none given: all), side by side; until each serves."""
        nodes = [self.nodes[i] for i in broker_ids or self.ids]
        for node in nodes:
            node.process.start()
        await asyncio.gather(*(n.process.wait_ready_async() for n in nodes))

    def kill(self, broker_id: int) -> float:
        """SIGKILL; the ``time.perf_counter()`` it was sent at (reap with :meth:`reap`)."""
        process = self.nodes[broker_id].process
        sent = time.perf_counter()
        process.send_signal(signal.SIGKILL)
        return sent

    async def reap(self, broker_id: int) -> None:
        process = self.nodes[broker_id].process
        if process.proc is not None:
            await process.wait_async()

    async def aclose(self) -> None:
        try:
            await asyncio.to_thread(stop_all, [n.process for n in self.nodes.values()], 10.0)
        finally:
            for channel in self._channels:
                await channel.close()
            self._channels.clear()
            self._stubs.clear()

    async def views(self, topic: str, timeout: float = 1.0
                    ) -> dict[int, pb.GetMetadataResponse]:
        """``GetMetadata`` of every running broker that answers within ``timeout``."""
        ids = [i for i in self.ids if self.running(i)]
        answers = await asyncio.gather(
            *(self.stub(self.address(i)).GetMetadata(pb.GetMetadataRequest(topics=[topic]),
                                                     timeout=timeout) for i in ids),
            return_exceptions=True)
        return {i: a for i, a in zip(ids, answers) if isinstance(a, pb.GetMetadataResponse)}

    async def topic_view(self, topic: str, timeout: float = 1.0, *,
                         ask_stopped: bool = False) -> dict[int, ClusterView]:
        """Every partition of ``topic`` as the first broker to answer sees it, asked in id
        order: the running ones, or (``ask_stopped``, as a client that cannot tell) every
        one; empty when none answers."""
        for broker_id in self.ids:
            if not (ask_stopped or self.running(broker_id)):
                continue
            try:
                answer = await self.stub(self.address(broker_id)).GetMetadata(
                    pb.GetMetadataRequest(topics=[topic]), timeout=timeout)
            except grpc.aio.AioRpcError:
                continue
            found = _partition_views(answer, topic)
            if found:
                return found
        return {}

    def in_sync(self, view: ClusterView | None) -> bool:
        """A running leader with every replica in sync, every running broker registered
        under a running controller."""
        running = {i for i in self.ids if self.running(i)}
        return (view is not None and view.leader in running and view.controller in running
                and running <= set(view.brokers) and set(view.isr) == set(view.replicas))

    async def wait_in_sync(self, topic: str, timeout: float = 60.0, *,
                           every_view: bool = False) -> dict[int, ClusterView]:
        """Until every partition of ``topic`` is :meth:`in_sync`, as one broker sees it, or
        (``every_view``) as every running broker does, each partition at one leader epoch."""
        deadline = time.monotonic() + timeout
        last: Any = "no answer"
        while time.monotonic() < deadline:
            if every_view:
                views = [_partition_views(v, topic) for v in (await self.views(topic)).values()]
                answered = len(views) == len([i for i in self.ids if self.running(i)])
                if (answered and views and all(v and all(self.in_sync(p) for p in v.values())
                                               for v in views)
                        and all({k: (p.leader, p.epoch) for k, p in v.items()}
                                == {k: (p.leader, p.epoch) for k, p in views[0].items()}
                                for v in views)):
                    return views[0]
                last = views
            else:
                view = await self.topic_view(topic)
                if view and all(self.in_sync(p) for p in view.values()):
                    return view
                last = view
            await asyncio.sleep(POLL_S)
        raise RuntimeError(f"{self.name}: {topic} not in sync within {timeout:g} s; "
                           f"last seen: {last}; {self.describe()}")

    async def create_topic(self, name: str, replication_factor: int,
                           min_insync_replicas: int, partitions: int = 1,
                           timeout: float = 30.0) -> None:
        """CreateTopic through any running broker (retried while brokers register)."""
        request = pb.CreateTopicRequest(topic=pb.Topic(
            name=name, partitions=partitions, replication_factor=replication_factor,
            config=pb.TopicConfig(min_insync_replicas=min_insync_replicas)))
        deadline = time.monotonic() + timeout
        error: grpc.aio.AioRpcError | None = None
        while True:
            for broker_id in self.ids:
                if not self.running(broker_id):
                    continue
                try:
                    await self.stub(self.address(broker_id)).CreateTopic(request, timeout=5)
                    return
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                        return  # an earlier try that timed out made it
                    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                        raise
                    error = exc
            if time.monotonic() > deadline:
                said = f"{error.code().name}: {error.details()}" if error else "no answer"
                raise RuntimeError(f"{self.name}: CreateTopic {name} failed ({said}); "
                                   f"{self.describe()}")
            await asyncio.sleep(0.1)  # e.g. fewer brokers registered than the RF yet

    async def ready_leaders(self, topic: str, timeout: float = 60.0) -> dict[int, ClusterView]:
        """Every partition of ``topic`` in sync (as every broker sees it) and answering at
        its leader as leader."""
        deadline = time.monotonic() + timeout
        while True:
            views = await self.wait_in_sync(topic, max(deadline - time.monotonic(), 1.0),
                                            every_view=True)
            try:
                for partition, view in views.items():
                    await self.stub(self.address(view.leader)).Fetch(pb.FetchRequest(
                        topic=topic, partition=partition, offset=0, max_bytes=1),
                        timeout=5)  # no max_wait: answered at once
                return views
            except grpc.aio.AioRpcError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: {topic}'s leaders do not lead within "
                                       f"{timeout:g} s: {exc.details()}; {self.describe()}")
            await asyncio.sleep(POLL_S)


def _partition_views(answer: pb.GetMetadataResponse, topic: str) -> dict[int, ClusterView]:
    for meta in answer.topics:
        if meta.name == topic:
            return {part.partition: ClusterView(
                part.leader_id, part.leader_epoch, list(part.replicas), list(part.isr),
                answer.controller_id, [b.id for b in answer.brokers])
                for part in meta.partitions}
    return {}


@contextlib.asynccontextmanager
async def ours_cluster(name: str, size: int, etcd: str, root: Path, durability: Durability,
                       args: argparse.Namespace) -> AsyncIterator[LocalCluster]:
    cluster = LocalCluster(name, size, etcd, root, durability=durability,
                           lease_s=args.lease_seconds,
                           replica_lag_time_ms=args.replica_lag_time_ms)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.aclose()


# --------------------------------------------------------------------------- drivers

class OursCluster(OursRaw):
    """``bench.broker``'s raw-stub driver on a cluster: each topic made with the cluster's
    replication factor, its batches sent (at this driver's acks level) to the partition's
    leader on one pipelined ``ProduceStream``, read back there with ``Fetch``."""

    def __init__(self, cluster: LocalCluster, system: str, acks: str, fsync: str,
                 pids: Sequence[int], replication_factor: int) -> None:
        super().__init__(cluster.address(1), fsync, pids, "stream")
        self.cluster = cluster
        self.system, self.acks = system, acks
        self.key = f"{system}-{acks}"
        self.label = f"{LABELS[system]}, acks {acks.upper()}"
        self.replication_factor = replication_factor
        self.min_insync = min(2, replication_factor)
        self.sent = 0  # records acknowledged by this driver so far

    async def fresh(self, name: str) -> None:
        await self._drop()
        await self.cluster.create_topic(name, self.replication_factor, self.min_insync)
        self.topic = name
        self.sent = 0
        leaders = await self.cluster.ready_leaders(name)
        self._stub = self.cluster.stub(self.cluster.address(leaders[0].leader))

    async def send(self, values: Sequence[bytes]) -> None:
        request = pb.ProduceRequest(topic=self.topic, partition=0,
                                    records=[pb.Record(value=v) for v in values],
                                    acks=ACKS[self.acks])
        if self._stream is None:
            await self.prepare(len(values))
        stream = self._stream
        assert stream is not None
        answer: asyncio.Future[pb.ProduceResponse] = asyncio.get_running_loop().create_future()
        async with self._write:  # one write at a time, answers queued in write order
            self._waiting.append(answer)
            await stream.write(pb.ProduceStreamRequest(produce=request))
        await answer
        self.sent += len(values)

    async def drained(self, timeout: float = 60.0) -> float:
        """Seconds until the leader's log end (what readers see: under RF 3 what the
        in-sync replicas have) reaches every record acknowledged; acks NONE answers before
        the append, so a backlog may be left."""
        began = time.perf_counter()
        while time.perf_counter() - began < timeout:
            listed = await self.stub.ListOffsets(pb.ListOffsetsRequest(topic=self.topic),
                                                 timeout=10)
            if listed.offsets and listed.offsets[0].offset >= self.sent:
                return time.perf_counter() - began
            await asyncio.sleep(POLL_S)
        return math.nan

    @property
    def produce_note(self) -> str:
        return (f"one ProduceRequest per batch (acks {self.acks.upper()}) to the leader on one "
                "pipelined ProduceStream, batches in flight back to back")


class RedisReplicated(Redis):
    """``bench.broker``'s Redis driver against a primary with replicas: acks LEADER is its
    plain pipelined ``XADD`` (replicated afterwards), acks ALL ends the pipeline with
    ``WAIT <replicas> <timeout>`` and fails a batch fewer replicas acknowledged."""

    def __init__(self, url: str, fsync: str, pids: Sequence[int], acks: str,
                 replicas: int, wait_timeout_ms: int = 10_000) -> None:
        super().__init__(url, fsync, pids)
        self.system, self.acks = "redis-r3", acks
        self.key = f"redis-r3-{acks}"
        self.label = f"{LABELS['redis-r3']}, " + ("XADD" if acks == "leader" else
                                                  f"XADD + WAIT {replicas}")
        self.replicas = replicas if acks == "all" else 0
        self.wait_timeout_ms = wait_timeout_ms

    async def send(self, values: Sequence[bytes]) -> None:
        if not self.replicas:
            await super().send(values)
            return
        pipe = self.r.pipeline(transaction=False)
        for v in values:
            pipe.xadd(self.stream, {"v": v})
        pipe.execute_command("WAIT", self.replicas, self.wait_timeout_ms)
        replies = await pipe.execute()
        if int(replies[-1]) < self.replicas:
            raise RuntimeError(f"WAIT: {replies[-1]} of {self.replicas} replicas acknowledged")

    @property
    def produce_note(self) -> str:
        return super().produce_note + (f", then WAIT {self.replicas} in the same round trip"
                                       if self.replicas else ", replicated asynchronously")


class JetStreamReplicated(JetStream):
    """``bench.broker``'s JetStream driver on streams of ``replicas`` copies (made once the
    cluster's meta leader is elected, used once the stream's leader is)."""

    def __init__(self, url: str, fsync: str, pids: Sequence[int], replicas: int) -> None:
        super().__init__(url, fsync, pids)
        self.system, self.acks = "jetstream-r3", "all"
        self.key = "jetstream-r3-all"
        self.label = f"{LABELS['jetstream-r3']}, publish ack (quorum)"
        self.replicas = replicas

    async def fresh(self, name: str, timeout: float = 30.0) -> None:
        await self._drop()
        name = name.replace(".", "_")
        deadline = time.monotonic() + timeout
        config = StreamConfig(name=name, subjects=[f"{name}.records"],
                              storage=StorageType.FILE, num_replicas=self.replicas)
        made = False
        while True:
            try:
                if not made:  # refused until the cluster has elected its meta leader
                    await self.js.add_stream(config)
                    made = True
                    self.stream = name
                info = await self.js.stream_info(name)
                if info.cluster is not None and info.cluster.leader:
                    return
            except nats.errors.Error as exc:  # nats.js.errors too
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JetStream stream {name}: {exc!r}") from exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"JetStream stream {name}: no leader within {timeout:g} s")
            await asyncio.sleep(0.1)  # the meta leader or the stream's leader: not yet


class AckTimed(Driver):
    """Another driver, the time each record's acknowledgement came back recorded while
    :attr:`recording` (the latency run stamps each value with its scheduled send time in
    its first 8 bytes, as ``bench.broker.measure_latency`` does)."""

    def __init__(self, inner: Driver) -> None:
        super().__init__(inner.fsync, inner.pids)
        self.inner = inner
        self.key, self.label = inner.key, inner.label
        self.recording = False
        self.acked: list[tuple[int, int]] = []  # (scheduled ns, acknowledged ns)

    async def fresh(self, name: str) -> None:
        await self.inner.fresh(name)

    async def prepare(self, batch: int | None) -> None:
        await self.inner.prepare(batch)

    async def send(self, values: Sequence[bytes]) -> None:
        await self.inner.send(values)
        if self.recording:
            now = time.perf_counter_ns()
            self.acked.extend((struct.unpack_from("<q", v)[0], now) for v in values)

    async def consume(self, count: int, batch: int) -> int:
        return await self.inner.consume(count, batch)

    async def receive(self, on_value: ValueCallback, started: asyncio.Event,
                      stop: asyncio.Event) -> None:
        await self.inner.receive(on_value, started, stop)

    def ack_latencies(self, warmup_s: float, duration_s: float) -> list[float]:
        """Seconds, of the records scheduled in the measured window (the first record is
        scheduled at the run's start, so the window is found again from the stamps)."""
        if not self.acked:
            return []
        t0 = min(s for s, _ in self.acked)
        lo, hi = t0 + warmup_s * 1e9, t0 + (warmup_s + duration_s) * 1e9
        return [(a - s) / 1e9 for s, a in self.acked if lo <= s < hi]


# --------------------------------------------------------------------------- the peers

def _nats_cluster_conf(index: int, store: Path, port: int, cluster_port: int,
                       routes: Sequence[int], sync_always: bool) -> str:
    sync = "\n  sync_interval: always" if sync_always else ""
    joined = ", ".join(f"nats-route://{HOST}:{p}" for p in routes)
    return (f'server_name: "n{index}"\nlisten: "{HOST}:{port}"\n'
            f'jetstream {{\n  store_dir: "{store}"{sync}\n}}\n'
            f'cluster {{\n  name: "bench"\n  listen: "{HOST}:{cluster_port}"\n'
            f'  routes: [{joined}]\n}}\n')


@contextlib.contextmanager
def nats_cluster(binary: str, size: int, sync_always: bool) -> Iterator[list[Started]]:
    """``size`` ``nats-server -js`` in one cluster on loopback, fresh store directories."""
    with tempfile.TemporaryDirectory(prefix="geoplex-bench-cluster-nats-") as data, \
            contextlib.ExitStack() as stack:
        ports = [(free_port(), free_port()) for _ in range(size)]
        started = []
        for i, (port, cluster_port) in enumerate(ports, 1):
            conf = Path(data) / f"n{i}.conf"
            conf.write_text(_nats_cluster_conf(i, Path(data) / f"js{i}", port, cluster_port,
                                               [c for _, c in ports], sync_always))
            proc = stack.enter_context(Process(
                f"nats-server n{i}", [binary, "-c", str(conf)], Path(data) / f"n{i}.log",
                ready_line=NATS_READY))
            assert proc.pid is not None
            started.append(Started(f"nats-{i}", f"nats://{HOST}:{port}", proc.pid))
        yield started


@contextlib.contextmanager
def redis_replicated(durability: Durability, replicas: int,
                     timeout: float = 30.0) -> Iterator[list[Started]]:
    """A ``redis-server --appendonly yes`` primary and ``replicas`` replicas of it (same
    fsync policy), fresh directories; yielded once every replica is online."""
    binary = find_binary("redis-server", "install the Debian package redis-server")
    with tempfile.TemporaryDirectory(prefix="geoplex-bench-cluster-redis-") as data, \
            contextlib.ExitStack() as stack:
        started: list[Started] = []
        primary_port = 0
        for i in range(1 + replicas):
            port = free_port()
            url = f"redis://{HOST}:{port}/0"
            where = Path(data) / f"r{i}"
            where.mkdir()
            argv = [binary, "--bind", HOST, "--port", str(port), "--dir", str(where),
                    "--appendonly", "yes", "--appendfsync", durability.redis_appendfsync,
                    "--save", "", "--protected-mode", "yes", "--daemonize", "no"]
            if i:
                argv += ["--replicaof", HOST, str(primary_port)]
            else:
                primary_port = port
            proc = stack.enter_context(Process(f"redis-server {i}", argv,
                                               Path(data) / f"r{i}.log",
                                               probe=partial(redis_ready, url)))
            assert proc.pid is not None
            started.append(Started(f"redis-{i}", url, proc.pid))
        client = redis.Redis.from_url(started[0].address, socket_timeout=2)
        try:
            deadline = time.monotonic() + timeout
            while True:
                info = client.info("replication")
                online = [k for k, v in info.items()
                          if k.startswith("slave") and isinstance(v, dict)
                          and v.get("state") == "online"]
                if len(online) >= replicas:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Redis: {len(online)} of {replicas} replicas online "
                                       f"after {timeout:g} s")
                time.sleep(0.1)  # the replicas' initial sync
        finally:
            client.close()
        yield started


# --------------------------------------------------------------------------- measurements

async def measure_throughput(drivers: Sequence[Driver], durability: Durability,
                             args: argparse.Namespace, payload: bytes,
                             result: dict[str, Any]) -> None:
    rounds: dict[tuple[str, int], list[LoadResult]] = {}
    drains: dict[tuple[str, int], list[float]] = {}
    total = len(drivers) * len(args.batches) * args.rounds
    n = 0
    for round_no in range(args.rounds):
        for batch in args.batches:
            for driver in drivers:
                n += 1
                tag = f"{driver.key}-b{batch}-r{round_no}"
                res = await single.measure_produce(driver, batch, args, payload, tag)
                rounds.setdefault((driver.key, batch), []).append(res)
                drain = await driver.drained() if isinstance(driver, OursCluster) else math.nan
                drains.setdefault((driver.key, batch), []).append(drain)
                each = res.cpu.get("server_cpu_pct_each", [])
                log(f"  [produce {n}/{total}] batch {batch:>5,} {driver.label:<45} "
                    f"{fmt_num(res.calls_per_s * batch):>9} rec/s "
                    f"({res.calls_per_s * batch * args.record_bytes / 1e6:6.1f} MB/s), ack "
                    f"p50 {res.p50_ms:.2f} / p99 {res.p99_ms:.2f} ms, servers "
                    f"{_servers_pct(driver, each):.0f} %, other "
                    f"{res.cpu.get('other_cpu_pct', math.nan):.0f} %"
                    + (f", drained {drain:.2f} s after" if drain == drain else "")
                    + (f", {res.errors} errors: {res.first_error}" if res.errors else ""))
    for batch in args.batches:
        for driver in drivers:
            cell = single.produce_cell(driver, durability, batch, rounds[(driver.key, batch)],
                                       args)
            combined = combine_rounds(rounds[(driver.key, batch)], args.noise_pct)
            each = combined["cpu"].get("server_cpu_pct_each", [])
            servers = _servers_pct(driver, each)
            cell.update(_identity(driver), server_cpu_pct=servers, server_cpu_pct_each=each,
                        cpu_s_per_million=_per_million(servers, cell["records_per_s"]),
                        etcd_cpu_pct=each[-1] if each and isinstance(driver, OursCluster)
                        else None,
                        drain_s_rounds=drains[(driver.key, batch)])
            result["produce"].append(cell)


async def measure_latencies(drivers: Sequence[Driver], durability: Durability,
                            args: argparse.Namespace, payload: bytes,
                            result: dict[str, Any]) -> None:
    for n, driver in enumerate(drivers, 1):
        timed = AckTimed(driver)
        timed.recording = True
        cell = await single.measure_latency(timed, durability, args, payload,
                                            f"{driver.key}-latency")
        acked = timed.ack_latencies(args.latency_warmup, args.latency_duration)
        ack = latency_summary(acked)
        for key in ("server_cpu_pct", "etcd_cpu_pct"):  # its first two pids': not ours
            cell.pop(key, None)
        cell.update(_identity(driver), ack=ack, acks_measured=len(acked), e2e={
            k: cell[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")})
        result["latency"].append(cell)
        log(f"  [latency {n}/{len(drivers)}] {driver.label:<45} at {cell['rate']:,.0f} rec/s: "
            f"ack p50 {ack['p50_ms']:.2f} / p99 {ack['p99_ms']:.2f} ms, end to end p50 "
            f"{cell['p50_ms']:.2f} / p99 {cell['p99_ms']:.2f} ms ({cell['measured']:,} of "
            f"{cell['expected_in_window']:,} measured, {cell['received']:,} of "
            f"{cell['scheduled']:,} received), other {cell['other_cpu_pct']:.0f} %"
            + (f"; {cell['errors']} send errors: {cell['first_error']}" if cell["errors"]
               else ""))


def _identity(driver: Driver) -> dict[str, Any]:
    system = getattr(driver, "system", driver.key)
    return {"key": driver.key, "system": system, "acks": getattr(driver, "acks", ""),
            "system_label": LABELS.get(system, system)}


def _servers_pct(driver: Driver, each: Sequence[float]) -> float:
    """The system's server processes' share of a core (for ours: the brokers, not etcd,
    the last pid sampled)."""
    brokers = len(driver.pids) - 1 if isinstance(driver, OursCluster) else len(driver.pids)
    return sum(each[:brokers]) if each else math.nan


def _per_million(cpu_pct: float, records_per_s: float) -> float:
    return cpu_pct / 100 / records_per_s * 1e6 if records_per_s > 0 else math.nan


@dataclass
class Probe:
    """What one failover's client saw: when its produce was acknowledged, and on the way."""

    acked_s: float = math.nan  # since the kill
    elected_s: float = math.nan  # since the kill: GetMetadata first names another leader
    leader: int = -1
    attempts: int = 0
    errors: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))


async def first_ack(cluster: LocalCluster, topic: str, partition: int, victim: int,
                    killed_at: float, payload: bytes, args: argparse.Namespace) -> Probe:
    """A client's first acks=ALL produce to ``partition`` of ``topic`` after the kill: to the
    last leader it knew, then wherever NOT_LEADER or ``GetMetadata`` (asked of each broker
    it knows in turn) points, a pause of ``--retry-ms`` between tries that found nothing new."""
    probe = Probe()
    request = pb.ProduceRequest(topic=topic, partition=partition,
                                records=[pb.Record(value=payload)], acks=pb.ACKS_ALL)
    address = cluster.address(victim)
    deadline = killed_at + args.failover_timeout
    while time.perf_counter() < deadline:
        probe.attempts += 1
        try:
            await cluster.stub(address).Produce(request, timeout=args.attempt_timeout)
            probe.acked_s = time.perf_counter() - killed_at
            probe.leader = next((i for i in cluster.ids if cluster.address(i) == address), -1)
            break
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            probe.errors[error.reason or error.code.name] += 1
            hint = error.metadata.get("leader_address", "")
            if error.reason == "NOT_LEADER" and hint and hint != address:
                address = hint
                continue
        view = (await cluster.topic_view(topic, timeout=args.attempt_timeout,
                                         ask_stopped=True)).get(partition)
        if view is not None and view.leader > 0:
            if view.leader != victim and probe.elected_s != probe.elected_s:
                probe.elected_s = time.perf_counter() - killed_at
            if cluster.address(view.leader) != address:
                address = cluster.address(view.leader)
                continue
        await asyncio.sleep(args.retry_ms / 1000)
    return probe


def pick_partition(views: Mapping[int, ClusterView], controller_led: bool) -> int:
    """A partition led by the controller's broker (``controller_led``) or by another one;
    the other kind when there is none of the kind asked for."""
    wanted = [p for p, v in sorted(views.items()) if (v.leader == v.controller) == controller_led]
    return (wanted or sorted(views))[0]


async def wait_isr_back(cluster: LocalCluster, topic: str, partition: int,
                        timeout: float) -> tuple[float, float]:
    """Until every partition of ``topic`` is in sync again: when ``partition`` was, and when
    all were (``time.perf_counter()``)."""
    deadline = time.perf_counter() + timeout
    first = math.nan
    while time.perf_counter() < deadline:
        views = await cluster.topic_view(topic)
        now = time.perf_counter()
        if first != first and cluster.in_sync(views.get(partition)):
            first = now
        if views and all(cluster.in_sync(v) for v in views.values()):
            return (now if first != first else first), now
        await asyncio.sleep(POLL_S)
    return first, math.nan


async def measure_failover(cluster: LocalCluster, args: argparse.Namespace,
                           payload: bytes) -> dict[str, Any]:
    """``--kills`` times: SIGKILL the leader of a partition (in turn one led by a broker that
    is not the controller and one led by the controller's), time the first acks=ALL produce
    to it acknowledged, restart the broker at once, time the ISRs full again."""
    topic = "bench-failover"
    await cluster.create_topic(topic, 3, 2, partitions=args.failover_partitions)
    await cluster.ready_leaders(topic)
    kills: list[dict[str, Any]] = []
    for n in range(1, args.kills + 1):
        before = await cluster.wait_in_sync(topic, every_view=True)
        partition = pick_partition(before, controller_led=n % 2 == 0)
        victim = before[partition].leader
        killed_at = cluster.kill(victim)
        probe = await first_ack(cluster, topic, partition, victim, killed_at, payload, args)
        await cluster.reap(victim)
        restarted_at = time.perf_counter()
        await cluster.start(victim)
        ready_at = time.perf_counter()
        back_at, all_back_at = await wait_isr_back(cluster, topic, partition,
                                                   args.failover_timeout)
        kill = {"kill": n, "partition": partition, "victim": victim,
                "victim_was_controller": before[partition].controller == victim,
                "led_before": sorted(p for p, v in before.items() if v.leader == victim),
                "epoch_before": before[partition].epoch, "new_leader": probe.leader,
                "failover_s": probe.acked_s, "elected_s": probe.elected_s,
                "attempts": probe.attempts, "errors": dict(probe.errors),
                "restart_ready_s": ready_at - restarted_at, "rejoin_s": back_at - restarted_at,
                "all_rejoin_s": all_back_at - restarted_at,
                "isr_full_after_kill_s": back_at - killed_at}
        kills.append(kill)
        log(f"  [kill {n}/{args.kills}] broker {victim}"
            + (" (the controller)" if kill["victim_was_controller"] else "")
            + f", leader of partition {partition}: acks=ALL acknowledged by broker "
            f"{probe.leader} after {probe.acked_s:.2f} s ({probe.attempts} tries; "
            + ", ".join(f"{k} {v}" for k, v in sorted(probe.errors.items()))
            + f"); restarted, serving in {kill['restart_ready_s']:.2f} s, its ISR full "
            f"{kill['rejoin_s']:.2f} s after the restart ({kill['isr_full_after_kill_s']:.2f} s "
            f"after the kill), every partition's {kill['all_rejoin_s']:.2f} s after it")
    keys = ("failover_s", "elected_s", "restart_ready_s", "rejoin_s", "all_rejoin_s",
            "isr_full_after_kill_s")

    def summary(chosen: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {key: latency_summary([k[key] for k in chosen if k[key] == k[key]])
                for key in keys}

    return {"partitions": args.failover_partitions, "replication_factor": 3,
            "min_insync_replicas": 2, "lease_s": args.lease_seconds, "kills": kills,
            "failed": sum(1 for k in kills if k["failover_s"] != k["failover_s"]),
            "summary": summary(kills),
            "summary_controller": summary([k for k in kills if k["victim_was_controller"]]),
            "summary_other": summary([k for k in kills if not k["victim_was_controller"]])}


# --------------------------------------------------------------------------- the run

def estimate_s(args: argparse.Namespace, cells: int) -> float:
    """Roughly how long a run takes: start-up, cells (a fresh log each), the kills (a
    lease, a restart and the ISR's return each)."""
    produce = cells * len(args.batches) * args.rounds * (args.warmup + args.duration + 0.6)
    latency = cells * (args.latency_warmup + args.latency_duration + 1.0)
    return 10 + produce + latency + args.kills * (args.lease_seconds + 2.0)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    info = machine_info()
    nats_bin = have_nats(args.nats_server)
    version = nats_version(nats_bin) if nats_bin else "none"
    sync_always = bool(nats_bin) and nats_supports_sync_always(nats_bin or "")
    durability = next(d for d in durabilities(args.fsync_interval_ms, sync_always, version)
                      if d.key == args.durability)
    payload = os.urandom(args.record_bytes)
    cells = sum(len([a for a in SYSTEM_ACKS[s] if a in args.acks]) for s in args.systems)
    log(f"bench.broker_cluster: {args.record_bytes:,} B records; systems "
        f"{', '.join(args.systems)}; acks {', '.join(args.acks)}; {durability.title}; batches "
        f"{', '.join(map(str, args.batches))} x {args.inflight} in flight, {args.rounds} "
        f"round(s) of {args.warmup:g} s warmup + {args.duration:g} s; latency at "
        f"{args.rate:,.0f} records/s for {args.latency_duration:g} s; {args.kills} leader "
        f"kills at a {args.lease_seconds:g} s lease")
    log(f"about {estimate_s(args, cells) / 60:.1f} min, plus up to {args.quiet_budget:g} s "
        "waiting for a quiet machine")
    log(f"machine: {machine_line(info)}; load average {info['loadavg'][0]:.2f}; "
        f"nats-server {version}")
    result: dict[str, Any] = {
        "benchmark": NAME, "machine": info,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                     if k not in ("report_only",)},
        "nats": {"binary": nats_bin, "version": version, "sync_always": sync_always},
        "durability": durability.as_dict(), "produce": [], "latency": [], "failover": None,
        "skipped": []}
    started = time.perf_counter()
    with etcd_server(lambda m: log(f"  {m}")) as (etcd, etcd_pid), \
            tempfile.TemporaryDirectory(prefix="geoplex-bench-cluster-") as tmp:
        root = Path(tmp)
        async with contextlib.AsyncExitStack() as outer:
            big: LocalCluster | None = None
            if "ours-rf3" in args.systems or args.kills:
                log("  starting three brokers (RF 3)")
                big = await outer.enter_async_context(
                    ours_cluster("rf3", 3, etcd, root, durability, args))
            async with systems(args, durability, etcd, etcd_pid, big, root, nats_bin,
                               result["skipped"]) as drivers:
                if drivers and args.duration > 0:
                    log("\n== produce throughput")
                    await measure_throughput(drivers, durability, args, payload, result)
                if drivers and args.latency_duration > 0:
                    log(f"\n== produce latency at {args.rate:,.0f} records/s")
                    await measure_latencies(drivers, durability, args, payload, result)
                for driver in drivers:  # frees the last log
                    await driver.fresh(f"bench-end-{driver.key}")
            if big is not None and args.kills:
                log(f"\n== failover: {args.kills} leader kills (SIGKILL)")
                await single.quiet(args)
                result["failover"] = await measure_failover(big, args, payload)
    result["elapsed_s"] = time.perf_counter() - started
    result["quiet_wait_spent_s"] = single._quiet_spent[0]
    return result


@contextlib.asynccontextmanager
async def systems(args: argparse.Namespace, durability: Durability, etcd: str, etcd_pid: int,
                  big: LocalCluster | None, root: Path, nats_bin: str | None,
                  skipped: list[dict[str, str]]) -> AsyncIterator[list[Driver]]:
    """A driver per selected system and acks level, connected (the peers started here,
    stopped after)."""
    with contextlib.ExitStack() as stack:
        async with contextlib.AsyncExitStack() as astack:
            drivers: list[Driver] = []

            async def add(driver: Driver) -> None:
                drivers.append(await astack.enter_async_context(connected(driver)))

            def levels(system: str) -> list[str]:
                return [a for a in SYSTEM_ACKS[system] if a in args.acks]

            if "ours-rf3" in args.systems and big is not None:
                for acks in levels("ours-rf3"):
                    await add(OursCluster(big, "ours-rf3", acks, durability.ours,
                                          [*big.pids, etcd_pid], 3))
            if "ours-rf1" in args.systems:
                log("  starting one broker (RF 1)")
                one = await astack.enter_async_context(
                    ours_cluster("rf1", 1, etcd, root, durability, args))
                for acks in levels("ours-rf1"):
                    await add(OursCluster(one, "ours-rf1", acks, durability.ours,
                                          [*one.pids, etcd_pid], 1))
            if "jetstream-r3" in args.systems and levels("jetstream-r3"):
                why = ("no nats-server binary (install the Debian package nats-server)"
                       if nats_bin is None else durability.jetstream
                       if durability.jetstream_sync_always is None else "")
                if why:
                    skipped.append({"system": "jetstream-r3", "why": why})
                    log(f"  NATS JetStream R3: skipped, {why}")
                else:
                    assert nats_bin is not None and durability.jetstream_sync_always is not None
                    log(f"  starting three nats-server -js in a cluster ({durability.jetstream})")
                    servers = stack.enter_context(
                        nats_cluster(nats_bin, 3, durability.jetstream_sync_always))
                    await add(JetStreamReplicated(servers[0].address, durability.jetstream,
                                                  [s.pid for s in servers], 3))
            if "redis-r3" in args.systems and levels("redis-r3"):
                log(f"  starting redis-server and two replicas ({durability.redis})")
                nodes = stack.enter_context(redis_replicated(durability, 2))
                for acks in levels("redis-r3"):
                    await add(RedisReplicated(nodes[0].address, durability.redis,
                                              [n.pid for n in nodes], acks, 2))
            yield drivers


# --------------------------------------------------------------------------- report

def _find(cells: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((c for c in cells if all(c.get(k) == v for k, v in match.items())), None)


def _rate(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "-"
    return f"{fmt_num(cell['records_per_s'])} ({cell['mb_per_s']:.1f})"


def _pair(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return "-"
    return f"{single._ms(summary['p50_ms'])} / {single._ms(summary['p99_ms'])}"


def _seconds(summary: Mapping[str, Any] | None) -> str:
    """``p50 / p99 (max)`` in seconds, from a :func:`latency_summary` (in milliseconds)."""
    if not summary or summary.get("p50_ms") is None or summary["p50_ms"] != summary["p50_ms"]:
        return "-"
    return (f"{summary['p50_ms'] / 1e3:.2f} / {summary['p99_ms'] / 1e3:.2f} "
            f"({summary['max_ms'] / 1e3:.2f})")


def _faster_peer(cells: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    found = [c for c in (_find(cells, system=p, **match) for p in PEERS)
             if c is not None and c.get("records_per_s") == c.get("records_per_s")]
    return max(found, key=lambda c: c["records_per_s"]) if found else None


def report(result: dict[str, Any]) -> str:
    s = result["settings"]
    d = result["durability"]
    present = [k for k in SYSTEMS if any(c["system"] == k
                                         for c in result["produce"] + result["latency"])]
    lines = [
        "`python -m bench.broker_cluster`: "
        f"{s['record_bytes']:,} B records, every system started fresh by the benchmark in "
        "the same run on loopback, one log per measurement (a one-partition topic, one "
        "stream, one stream key), all clients in one Python process on uvloop. **ours, 3 "
        "brokers**: three `python -m geoplex.servers.broker` (ids 1-3) on one etcd, topics "
        "with `replication_factor` 3 and `min_insync_replicas` 2, the client sending to the "
        "partition's leader (from `GetMetadata`) through the raw generated stubs as in "
        "`bench.broker` (each batch one `ProduceRequest` on one pipelined `ProduceStream`; "
        "acks NONE answers before the append, LEADER once the leader has it, ALL once every "
        "in-sync replica has it); **ours, 1 broker**: a one-node cluster (RF 1) on the same "
        "etcd. **NATS JetStream R3**: "
        f"three nats-server {result['nats']['version']} `-js` in one cluster, file storage, "
        "streams with `num_replicas` 3, nats-py connected to server 1 (`publish_async` per "
        "record, then the batch's acks: a publish is acknowledged once a quorum, 2 of 3, "
        "stored it; no other level). **Redis**: a primary and two `--replicaof` it, "
        "`--appendonly yes`, redis.asyncio + hiredis (`XADD` per record pipelined per "
        "batch: acks LEADER, replicated asynchronously; with `WAIT 2` ending the pipeline: "
        "acks ALL, the replicas have it in memory).",
        "",
        f"fsync: ours {d['ours']} on every broker, Redis `{d['redis']}` on every node, "
        f"JetStream {d['jetstream']}. Produce: batches of "
        f"{', '.join(f'{b:,}' for b in s['batches'])} records, {s['inflight']} in flight at "
        f"once (closed loop), {s['rounds']} round(s) of {s['warmup']:g} s warm-up + "
        f"{s['duration']:g} s measured, the systems interleaved within each round, the "
        "median round shown (of two: their mean). Latency: "
        f"{s['rate']:,.0f} records/s sent as they fall due (every ~{s['tick_ms']:g} ms, not "
        "waiting for earlier acks), each stamped with its scheduled send time; *ack* is the "
        "batch's acknowledgement minus that time, *end to end* a consumer's receipt (ours: "
        "long-poll `Fetch` at the leader, which hands out only what the in-sync replicas "
        "have; JetStream: a push consumer; Redis: `XREADGROUP BLOCK` on the primary), "
        f"over {s['latency_duration']:g} s after {s['latency_warmup']:g} s warm-up.",
        "",
        f"Machine: {machine_line(result['machine'])}; the clients and every server "
        "process (brokers, etcd, nats-servers, redis-servers) share the cores. "
        f"The whole run took {result.get('elapsed_s', 0) / 60:.1f} min.",
    ]
    produce = result["produce"]
    if produce:
        rows = []
        for acks in ACKS:
            for batch in sorted({c["batch"] for c in produce}):
                match = {"acks": acks, "batch": batch}
                if not any(_find(produce, system=k, **match) for k in present):
                    continue
                rate = (lambda c: c["records_per_s"] if c else None)
                rf3, rf1 = (_find(produce, system=k, **match) for k in ("ours-rf3", "ours-rf1"))
                peer = _faster_peer(produce, **match)
                rows.append([acks.upper(), f"{batch:,}",
                             *[_rate(_find(produce, system=k, **match)) for k in present],
                             single._x(single._ratio(rate(rf3), rate(rf1))),
                             single._x(single._ratio(rate(rf3), rate(peer)))])
        lines += ["", "**Produce throughput**, records/s (MB/s)", "",
                  markdown_table(["acks", "batch", *[LABELS[k] for k in present],
                                  "RF 3 / RF 1", "RF 3 / faster peer"],
                                 rows, "lr" + "r" * (len(present) + 2))]
        drains = []
        for system in ("ours-rf3", "ours-rf1"):
            for acks in ACKS:
                seen = [x for c in produce if c["system"] == system and c["acks"] == acks
                        for x in c.get("drain_s_rounds", []) if x is not None and x == x]
                if seen:
                    drains.append(f"{LABELS[system]} acks {acks.upper()} {max(seen):.2f} s")
        if drains:
            lines += ["", "acks NONE is answered before the append (the rate is what the "
                      "leader took in), LEADER before the followers have the batch: what a "
                      "reader sees (under RF 3 what every in-sync replica has) caught up with "
                      "every acknowledged record at most this long after a window ended: "
                      + "; ".join(drains) + "."]
    latency = result["latency"]
    if latency:
        for what, title in (("ack", "acknowledgement"), ("e2e", "end to end")):
            rows = []
            for acks in ACKS:
                cells = [_find(latency, system=k, acks=acks) for k in present]
                if any(cells):
                    rows.append([acks.upper(), *[_pair(c[what]) if c else "-" for c in cells]])
            lines += ["", f"**Produce latency, {title}**, at {s['rate']:,.0f} records/s, "
                      "p50 / p99 ms", "",
                      markdown_table(["acks", *[LABELS[k] for k in present]], rows,
                                     "l" + "r" * len(present))]
    if produce:
        top = max(c["batch"] for c in produce)
        rows = []
        for acks in ACKS:
            found = [_find(produce, system=k, acks=acks, batch=top) for k in present]
            if any(found):
                rows.append([acks.upper(), *[
                    f"{c['cpu_s_per_million']:.1f}" if c and c["cpu_s_per_million"] ==
                    c["cpu_s_per_million"] and c["cpu_s_per_million"] is not None else "-"
                    for c in found]])
        lines += ["", f"**Server CPU seconds per million records**, produce batch {top:,}, "
                  "all of a system's server processes (ours: the brokers, not etcd; lower is "
                  "better)", "", markdown_table(["acks", *[LABELS[k] for k in present]],
                                                rows, "l" + "r" * len(present))]
    failover = result.get("failover")
    if failover and failover["kills"]:
        kills = failover["kills"]
        n = len(kills)
        by_controller = sum(1 for k in kills if k["victim_was_controller"])
        groups = [("every kill", failover["summary"], n),
                  ("the controller's broker", failover["summary_controller"], by_controller),
                  ("another broker", failover["summary_other"], n - by_controller)]
        rows = [[label, *[_seconds(summary[key]) for _, summary, count in groups if count]]
                for key, label in (
                    ("failover_s", "kill -> first acks=ALL produce acknowledged"),
                    ("elected_s", "kill -> GetMetadata names the new leader"),
                    ("restart_ready_s", "restart -> the killed broker serves"),
                    ("rejoin_s", "restart -> the partition's ISR full again"),
                    ("all_rejoin_s", "restart -> every partition's ISR full again"),
                    ("isr_full_after_kill_s", "kill -> the partition's ISR full again"))]
        lines += ["", f"**Failover** (ours, 3 brokers), seconds: {n} times the leader of a "
                  f"partition of a {failover['partitions']}-partition topic (RF 3, "
                  "`min_insync_replicas` 2) killed with SIGKILL, in turn a partition led by "
                  "the controller's broker and one led by another; broker leases of "
                  f"{failover['lease_s']:g} s (`GEOPLEX_BROKER_LEASE_SECONDS`: a dead broker "
                  "is noticed when its lease runs out). After the kill a client with the three "
                  "brokers' addresses sends one acks=ALL produce to that partition, to the "
                  "leader it knew, then wherever NOT_LEADER or `GetMetadata` points "
                  f"({s['attempt_timeout']:g} s per try, {s['retry_ms']:g} ms between tries "
                  "that found nothing new); the killed broker is restarted as soon as that "
                  "produce is acknowledged, and the next kill waits until every partition's "
                  "ISR is full and every broker agrees on the leaders. p50 / p99 (max), "
                  f"over {n} kills ({by_controller} of the controller's broker); a p99 of "
                  "few kills is close to their maximum."
                  + (f" {failover['failed']} failovers did not finish within "
                     f"{s['failover_timeout']:g} s (left out)." if failover["failed"] else ""),
                  "", markdown_table(
                      ["", *[f"{label} ({count})" for label, _, count in groups if count]],
                      rows, "l" + "r" * sum(1 for *_, count in groups if count))]
    if result.get("skipped"):
        lines += ["", "Not measured: " + "; ".join(
            f"{LABELS.get(k['system'], k['system'])} ({k['why']})"
            for k in result["skipped"]) + "."]
    lines += ["", "Raw numbers (every round, every kill, the errors the failover client saw, "
              "CPU of the clients and etcd): `bench/results/broker_cluster.json`."]
    return "\n".join(lines)


def write_report(result: dict[str, Any], path: Path = BENCHMARKS_MD) -> Path:
    """The ``broker-cluster`` section of ``BENCHMARKS.md`` (or ``path``) from ``result``."""
    written = write_section(NAME, TITLE + "\n\n" + report(result), path)
    log(f"wrote the '{NAME}' section of {written}")
    return written


def rerender(directory: Path = RESULTS_DIR, path: Path = BENCHMARKS_MD) -> Path:
    """``--report-only``: the section again from ``<directory>/broker_cluster.json``."""
    result = read_results(RESULTS, directory)
    print(report(result))
    return write_report(result, path)


# --------------------------------------------------------------------------- main

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.broker_cluster", description=(__doc__ or "").split("\n\n")[0],
        epilog="A quick look: --quick (tiny sizes, writes nothing). Re-render the "
               "BENCHMARKS.md section from bench/results/broker_cluster.json: --report-only.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--systems", type=single._choices(SYSTEMS), default=",".join(SYSTEMS),
        help="systems to measure, comma-separated: " + ", ".join(SYSTEMS))
    add("--acks", type=single._choices(tuple(ACKS)), default=",".join(ACKS),
        help="acks levels, comma-separated (a peer is measured at the levels it has)")
    add("--durability", choices=("batch", "interval"), default="interval",
        help="fsync policy: batch (before every ack; JetStream is left out unless its "
             "server has sync_interval always), interval (every so often)")
    add("--fsync-interval-ms", type=int, default=1000,
        help="ours under the interval policy (Redis everysec is 1000)")
    add("--batches", type=single._int_list, default="1,100,1000",
        help="produce batch sizes in records, comma-separated")
    add("--inflight", type=int, default=4, help="produce batches in flight at once")
    add("--warmup", type=float, default=0.5, help="produce warm-up seconds per cell")
    add("--duration", type=float, default=2.0,
        help="produce seconds measured per round (0: no throughput)")
    add("--rounds", type=int, default=2, help="rounds of every produce cell")
    add("--rate", type=float, default=2000.0, help="records/s of the latency measurement")
    add("--latency-duration", type=float, default=4.0,
        help="latency seconds measured (0: none)")
    add("--latency-warmup", type=float, default=1.0,
        help="latency seconds sent before the measured ones")
    add("--tick-ms", type=float, default=1.0,
        help="the latency sender's pace: due records go out every this many ms")
    add("--record-bytes", type=int, default=1024, help="bytes per record value")
    add("--kills", type=int, default=20, help="leader kills of the failover measurement (0: none)")
    add("--failover-partitions", type=int, default=3,
        help="partitions of the failover topic (the leaders spread over the brokers)")
    add("--lease-seconds", type=float, default=2.0,
        help="the brokers' GEOPLEX_BROKER_LEASE_SECONDS (a dead broker is noticed after it)")
    add("--replica-lag-time-ms", type=int, default=10_000,
        help="the brokers' GEOPLEX_BROKER_REPLICA_LAG_TIME_MS")
    add("--attempt-timeout", type=float, default=1.0,
        help="seconds per produce or GetMetadata try of the failover client")
    add("--retry-ms", type=float, default=20.0,
        help="the failover client's pause between tries that found no new leader")
    add("--failover-timeout", type=float, default=60.0,
        help="seconds a failover (or the ISR's return) may take before it counts as failed")
    add("--nats-server", default=None,
        help="the nats-server binary to run (None: the one on PATH)")
    add("--quiet-wait", type=float, default=5.0,
        help="seconds to wait at most for the machine to go idle before each cell (0: never)")
    add("--quiet-budget", type=float, default=45.0,
        help="seconds the whole run may spend waiting for quiet")
    add("--noise-pct", type=float, default=25.0,
        help="a round where other work took more than this share of a core is left out "
             "when a clean one exists")
    add("--results-dir", type=Path, default=RESULTS_DIR,
        help="where broker_cluster.json is written (and read by --report-only)")
    add("--markdown", type=Path, default=BENCHMARKS_MD,
        help="the Markdown file whose broker-cluster section is rewritten")
    add("--quick", action="store_true",
        help="tiny sizes for a smoke run (batch 1,000 only, 0.2 s warm-up + 0.5 s cells, "
             "0.6 s of latency at 500/s, 2 kills, 1 round, no quiet wait; flags given "
             "beside it win); implies --no-write")
    add("--no-write", action="store_true",
        help="print only: write neither the results file nor the Markdown section")
    add("--report-only", action="store_true",
        help="measure nothing: re-render the Markdown section from the results file")
    if "--quick" in (sys.argv[1:] if argv is None else argv):  # its sizes, unless given
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    if args.quick:
        args.no_write = True
    if args.record_bytes < 8:
        parser.error("--record-bytes: at least 8 (the latency timestamp)")
    if args.inflight < 1 or args.rounds < 1:
        parser.error("--inflight and --rounds must be at least 1")
    if args.duration < 0 or args.warmup < 0 or args.rate <= 0 or args.tick_ms <= 0:
        parser.error("--rate and --tick-ms must be > 0, --duration and --warmup >= 0")
    if args.kills < 0:
        parser.error("--kills: 0 or more")
    if not 1 <= args.failover_partitions <= 100:
        parser.error("--failover-partitions: 1..100")
    if not 1.0 <= args.lease_seconds <= 300.0:
        parser.error("--lease-seconds: 1..300 (the broker's own bounds)")
    if not 100 <= args.replica_lag_time_ms <= 3_600_000:
        parser.error("--replica-lag-time-ms: 100..3600000 (the broker's own bounds)")
    if args.attempt_timeout <= 0 or args.retry_ms < 0 or args.failover_timeout <= 0:
        parser.error("--attempt-timeout and --failover-timeout must be > 0, --retry-ms >= 0")
    if not 1 <= args.fsync_interval_ms <= 60_000:
        parser.error("--fsync-interval-ms: 1..60000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        rerender(args.results_dir, args.markdown)
        return 0
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(run(args))
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    print("\n" + report(result))
    if args.no_write:
        log("(results not written: --no-write" + (", implied by --quick)" if args.quick
                                                  else ")"))
        return 0
    log(f"wrote {write_results(RESULTS, result, args.results_dir)}")
    write_report(result, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
