"""A cluster of real broker processes for fault tests and the chaos benchmark.

:class:`BrokerCluster` starts N (3) ``python -m geoplex.servers.broker`` processes with
ids 1..N, each on a fixed port (a restarted broker is found where it was) and its own data
directory, all on one etcd prefix, each run by :class:`geoplex.infra.process.Process` (the
runner ``ServerProcess`` in ``tests/conftest.py`` wraps; used here directly so that the
benchmark, which has no pytest fixtures, can start a cluster too). With ``proxies=True``
every broker advertises a proxy in front of it and reaches etcd through one of its own, so
that :meth:`BrokerCluster.partition` can cut it off (the scheme is in ``nemesis.py``).
The cluster kills what it started when it is closed, whatever happened::

    async with BrokerCluster(own_infra.urls.etcd_endpoints, tmp_path, proxies=True,
                             etcd=own_infra.procs["etcd"]) as cluster:
        topic = await cluster.create_topic("t", partitions=3, replication_factor=3,
                                           min_insync_replicas=2)
        await cluster.wait_healthy([topic])
        await cluster.kill(await cluster.leader(topic, 0))
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import grpc
import grpc.aio

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.broker.v1 import broker_pb2_grpc
from geoplex.infra.process import READY_LINE, Process

import polling  # tests/polling.py
from nemesis import ProxyLoop, Stub, TcpProxy, leaders_of, socket_owner

HOST = "127.0.0.1"
CHANNEL_OPTIONS = [
    # its own connections: gRPC otherwise shares them between channels to one address
    ("grpc.use_local_subchannel_pool", 1),
    # a restarted broker is found again within a second, not after minutes of back-off
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def stable_port(host: str = HOST) -> int:
    """A free port below the kernel's ephemeral range: no outgoing connection takes it as
    its source port while its broker is down, so the broker can always listen there again."""
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    floor = 10_000 if low > 12_000 else 1025
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(floor, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {floor} and {low}")


@dataclass(eq=False)
class BrokerNode:
    id: int
    port: int  # where it listens: the test's clients dial this
    data_dir: Path
    process: Process
    advertised: str = ""  # what other brokers dial: its peer proxy, or its own port
    peer_proxy: TcpProxy | None = None
    etcd_proxies: list[TcpProxy] = field(default_factory=list)
    paused: bool = False
    started_ms: int = 0  # wall clock at its last start: it has caught up only after that

    @property
    def label(self) -> str:
        return f"broker-{self.id}"


class BrokerCluster:
    """N broker processes on one etcd prefix; see the module's docstring.

    ``etcd`` (the etcd :class:`Process`, e.g. ``own_infra.procs["etcd"]``) is needed only by
    :meth:`restart_etcd`.
    """

    def __init__(self, etcd_endpoints: Sequence[str], root: Path, *, size: int = 3,
                 fsync: str = "batch", lease_s: float = 2.0, replica_lag_time_ms: int = 2000,
                 session_timeout_s: float | None = None, proxies: bool = False,
                 etcd: Process | None = None, prefix: str | None = None,
                 log_level: str = "warning", extra_env: Mapping[str, str] | None = None) -> None:
        if size < 1:
            raise ValueError(f"size: at least one broker, not {size}")
        if fsync not in ("batch", "interval", "never"):
            raise ValueError(f"fsync: batch, interval or never, not {fsync!r}")
        if not etcd_endpoints:
            raise ValueError("etcd_endpoints: at least one host:port")
        self.etcd_endpoints = tuple(e.removeprefix("http://") for e in etcd_endpoints)
        self.root = root
        self.size = size
        self.fsync = fsync
        self.lease_s = lease_s
        self.replica_lag_time_ms = replica_lag_time_ms
        self.session_timeout_s = session_timeout_s
        self.proxies = proxies
        self.etcd = etcd
        self.prefix = prefix or f"/broker-cluster/{uuid.uuid4().hex[:8]}"
        self.log_level = log_level
        self.extra_env = dict(extra_env or {})
        self._nodes: dict[int, BrokerNode] = {}
        self._net: ProxyLoop | None = None
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._stubs: dict[int, Stub] = {}

    # -- set-up and tear-down ------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Lay out the brokers (and their proxies), start them all, wait until they serve."""
        if self.proxies:
            self._net = ProxyLoop("broker-cluster proxies")
        for broker_id in range(1, self.size + 1):
            port = stable_port()
            data_dir = self.root / f"broker-{broker_id}"
            node = BrokerNode(broker_id, port, data_dir, Process(
                f"broker-{broker_id}", [sys.executable, "-m", "geoplex.servers.broker"],
                self.root / "logs" / f"broker-{broker_id}.log", ready_line=READY_LINE,
                ready_timeout=60.0, stop_grace=10.0))
            self._nodes[broker_id] = node
            node.advertised = f"{HOST}:{port}"
            etcd = list(self.etcd_endpoints)
            if self._net is not None:
                node.peer_proxy = await self._net.run(TcpProxy(
                    (HOST, port), name=f"peers->{node.label}",
                    resolve=self._resolver(node)).start())
                node.advertised = node.peer_proxy.address
                for endpoint in self.etcd_endpoints:
                    host, _, etcd_port = endpoint.rpartition(":")
                    proxy = await self._net.run(TcpProxy(
                        (host, int(etcd_port)), name=f"{node.label}->etcd").start())
                    node.etcd_proxies.append(proxy)
                etcd = [p.address for p in node.etcd_proxies]
            node.process.env = self._env(node, etcd)
        await self.start()

    def _env(self, node: BrokerNode, etcd: Sequence[str]) -> dict[str, str]:
        env = {
            "GEOPLEX_BROKER_ID": str(node.id),
            "GEOPLEX_BROKER_PORT": str(node.port),
            "GEOPLEX_BROKER_HOST": HOST,
            "GEOPLEX_BROKER_ADVERTISED_ADDRESS": node.advertised,
            "GEOPLEX_BROKER_DATA_DIR": str(node.data_dir),
            "GEOPLEX_BROKER_ETCD_PREFIX": self.prefix,
            "GEOPLEX_ETCD_ENDPOINTS": ",".join(etcd),
            "GEOPLEX_BROKER_LEASE_SECONDS": f"{self.lease_s:g}",
            "GEOPLEX_BROKER_REPLICA_LAG_TIME_MS": str(self.replica_lag_time_ms),
            "GEOPLEX_BROKER_FSYNC": self.fsync,
            "GEOPLEX_LOG_LEVEL": self.log_level,
        }
        if self.session_timeout_s is not None:
            env["GEOPLEX_BROKER_SESSION_TIMEOUT_SECONDS"] = f"{self.session_timeout_s:g}"
        return {**env, **self.extra_env}

    def _resolver(self, node: BrokerNode) -> Callable[[tuple[str, int]], str | None]:
        def resolve(peer: tuple[str, int]) -> str | None:
            assert node.peer_proxy is not None
            owners = {n.process.pid: n.label for n in self._nodes.values()
                      if n.process.pid is not None and n.process.running}
            owner = socket_owner(peer[1], node.peer_proxy.port, owners)
            return None if owner is None else owners[owner]

        return resolve

    async def aclose(self) -> None:
        """Kill every broker (SIGKILL: nothing to wait for), close channels and proxies."""
        try:
            await self.kill_all()
        finally:
            for channel in self._channels.values():
                await channel.close()
            self._channels.clear()
            self._stubs.clear()
            if self._net is not None:
                for node in self._nodes.values():
                    for proxy in [node.peer_proxy, *node.etcd_proxies]:
                        if proxy is not None:
                            await self._net.run(proxy.aclose())
                self._net.close()
                self._net = None

    # -- the brokers -----------------------------------------------------------------------

    @property
    def ids(self) -> list[int]:
        return sorted(self._nodes)

    def node(self, broker_id: int) -> BrokerNode:
        try:
            return self._nodes[broker_id]
        except KeyError:
            raise ValueError(f"broker id {broker_id}: the cluster has {self.ids}") from None

    def address(self, broker_id: int) -> str:
        """Where clients dial the broker: its own port, never through a proxy."""
        return f"{HOST}:{self.node(broker_id).port}"

    def advertised(self, broker_id: int) -> str:
        return self.node(broker_id).advertised

    def data_dir(self, broker_id: int) -> Path:
        return self.node(broker_id).data_dir

    def process(self, broker_id: int) -> Process:
        return self.node(broker_id).process

    def running(self, broker_id: int) -> bool:
        return self.node(broker_id).process.running

    def live(self) -> list[int]:
        """The brokers running and not paused."""
        return [i for i in self.ids if self.running(i) and not self._nodes[i].paused]

    async def start(self, *broker_ids: int, timeout: float = 60.0) -> None:
        """Start these brokers (none given: every one not running), side by side; wait until
        each serves."""
        nodes = [self.node(i) for i in broker_ids] if broker_ids else [
            n for n in self._nodes.values() if not n.process.running]
        for node in nodes:
            node.paused = False
            node.started_ms = time.time_ns() // 1_000_000
            node.process.start()
        await asyncio.gather(*(n.process.wait_ready_async(timeout) for n in nodes))

    async def kill(self, broker_id: int) -> None:
        """SIGKILL (a paused one too), and wait until it is gone."""
        node = self.node(broker_id)
        node.process.send_signal(signal.SIGKILL)
        if node.process.proc is not None:
            await node.process.wait_async()
        node.paused = False

    def pause(self, broker_id: int) -> None:
        """SIGSTOP: the process stays, silent (its lease runs out, its sockets stay open)."""
        node = self.node(broker_id)
        node.process.send_signal(signal.SIGSTOP)
        node.paused = True

    def resume(self, broker_id: int) -> None:
        node = self.node(broker_id)
        node.process.send_signal(signal.SIGCONT)
        node.paused = False

    async def restart(self, broker_id: int, *, kill: bool = True, timeout: float = 60.0) -> None:
        """SIGKILL (or SIGTERM, and SIGKILL after the grace) then start on the same port."""
        if kill:
            await self.kill(broker_id)
        else:
            await self.stop(broker_id)
        await self.start(broker_id, timeout=timeout)

    async def stop(self, broker_id: int, grace: float = 10.0) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after ``grace`` seconds."""
        node = self.node(broker_id)
        if node.paused:
            self.resume(broker_id)
        node.process.send_signal(signal.SIGTERM)
        if node.process.proc is None:
            return
        try:
            await asyncio.wait_for(node.process.wait_async(), grace)
        except asyncio.TimeoutError:
            await self.kill(broker_id)

    async def stop_all(self, grace: float = 10.0) -> None:
        await asyncio.gather(*(self.stop(i, grace) for i in self.ids))

    async def kill_all(self) -> None:
        await asyncio.gather(*(self.kill(i) for i in self.ids))

    # -- the network -----------------------------------------------------------------------

    async def partition(self, broker_id: int, *, etcd: bool = True) -> None:
        """Cut ``broker_id`` off from every other broker, both ways, and with ``etcd`` from
        etcd too; the test's clients still reach it. Needs ``proxies=True``."""
        net = self._need_net()
        victim = self.node(broker_id)
        assert victim.peer_proxy is not None

        def cut() -> None:
            assert victim.peer_proxy is not None
            victim.peer_proxy.block()
            for other in self._nodes.values():
                if other is not victim and other.peer_proxy is not None:
                    other.peer_proxy.block({victim.label})
            if etcd:
                for proxy in victim.etcd_proxies:
                    proxy.block()

        net.call(cut)

    async def heal(self) -> None:
        """Lift every block on every proxy (nothing when there are none)."""
        if self._net is None:
            return

        def heal_all() -> None:
            for node in self._nodes.values():
                for proxy in [node.peer_proxy, *node.etcd_proxies]:
                    if proxy is not None:
                        proxy.unblock()

        self._net.call(heal_all)

    def _need_net(self) -> ProxyLoop:
        if self._net is None:
            raise RuntimeError("partitions need BrokerCluster(..., proxies=True)")
        return self._net

    async def restart_etcd(self, down_s: float = 3.0, timeout: float = 30.0) -> None:
        """Stop etcd (SIGTERM), leave it down ``down_s`` seconds, start it again and wait
        until it answers. Needs ``etcd``."""
        if self.etcd is None:
            raise RuntimeError("restart_etcd needs BrokerCluster(..., etcd=<its Process>)")
        await asyncio.to_thread(self.etcd.stop)
        try:
            await asyncio.sleep(down_s)  # the outage's length
        finally:
            self.etcd.start()
            await self.etcd.wait_ready_async(timeout)

    # -- asking the brokers ----------------------------------------------------------------

    def stub(self, broker_id: int) -> Stub:
        """A stub on the broker's own port (one channel per broker, reconnecting quickly)."""
        stub = self._stubs.get(broker_id)
        if stub is None:
            channel = grpc.aio.insecure_channel(self.address(broker_id), options=CHANNEL_OPTIONS)
            self._channels[broker_id] = channel
            stub = self._stubs[broker_id] = broker_pb2_grpc.BrokerServiceStub(channel)
        return stub

    async def views(self, topics: Sequence[str] = (), timeout: float = 2.0
                    ) -> dict[int, pb.GetMetadataResponse]:
        """GetMetadata of every running broker that answers within ``timeout``, by id."""
        ids = [i for i in self.ids if self.running(i)]
        request = pb.GetMetadataRequest(topics=list(topics))
        answers = await asyncio.gather(
            *(self.stub(i).GetMetadata(request, timeout=timeout) for i in ids),
            return_exceptions=True)
        return {i: a for i, a in zip(ids, answers) if isinstance(a, pb.GetMetadataResponse)}

    async def metadata(self, topics: Sequence[str] = (), timeout: float = 2.0
                       ) -> pb.GetMetadataResponse:
        """The view of the first live broker that answers."""
        request = pb.GetMetadataRequest(topics=list(topics))
        last: Exception | None = None
        for broker_id in self.live():
            try:
                return await self.stub(broker_id).GetMetadata(request, timeout=timeout)
            except grpc.aio.AioRpcError as error:
                last = error
        raise RuntimeError(f"no broker answered GetMetadata: {last}")

    async def leader(self, topic: str, partition: int) -> int:
        """The partition's leader, by the newest view any broker has (-1: none)."""
        best = leaders_of((await self.views([topic])).values(), topic).get(partition)
        return -1 if best is None else best.leader_id

    async def wait_healthy(self, topics: Sequence[str] = (), timeout: float = 60.0
                           ) -> pb.GetMetadataResponse:
        """Until every running broker answers, sees every running broker registered and a
        controller, and sees each partition of ``topics`` (none: every topic) led by a
        running broker with every replica in sync, all at the same leader and epoch; and
        until each leader says (DescribeReplicas) that every follower has caught up with it
        since the follower last started (the ISR in etcd keeps a restarted follower until
        the leader has seen its first fetch)."""
        def fault(views: Mapping[int, pb.GetMetadataResponse]) -> str:
            running = {i for i in self.ids if self.running(i)}
            if not running:
                return "no broker is running (exit codes " + ", ".join(
                    f"{i}: {self.process(i).returncode}" for i in self.ids) + ")"
            if set(views) != running:
                return f"brokers {sorted(running - set(views))} do not answer"
            if any(n.paused for n in self._nodes.values()):
                return "a broker is paused"
            seen: dict[tuple[str, int], tuple[int, int]] = {}
            for broker_id, view in views.items():
                registered = {b.id for b in view.brokers}
                if not running <= registered:
                    return f"broker {broker_id} sees only {sorted(registered)} registered"
                if view.controller_id not in running:
                    return f"broker {broker_id} sees no live controller ({view.controller_id})"
                names = {t.name for t in view.topics}
                missing = set(topics) - names
                if missing:
                    return f"broker {broker_id} does not know {sorted(missing)}"
                for meta in view.topics:
                    for part in meta.partitions:
                        where = f"{meta.name}-{part.partition}"
                        if part.leader_id not in running:
                            return f"{where}: leader {part.leader_id} is not running"
                        if set(part.isr) != set(part.replicas):
                            return (f"{where}: ISR {list(part.isr)} of replicas "
                                    f"{list(part.replicas)}")
                        now = (part.leader_id, part.leader_epoch)
                        if seen.setdefault((meta.name, part.partition), now) != now:
                            return f"{where}: brokers disagree on its leader"
            return ""

        async def lagging(view: pb.GetMetadataResponse) -> str:
            led: dict[int, list[str]] = {}
            for meta in view.topics:
                for part in meta.partitions:
                    led.setdefault(part.leader_id, []).append(f"{meta.name}-{part.partition}")
            for leader, wanted in sorted(led.items()):
                said = await self.stub(leader).DescribeReplicas(
                    pb.DescribeReplicasRequest(topics=list(topics)), timeout=2.0)
                mine = {f"{p.topic}-{p.partition}": p for p in said.partitions}
                for where in wanted:
                    if where not in mine:
                        return f"{where}: broker {leader} does not act as its leader yet"
                    for replica in mine[where].replicas:
                        if replica.broker_id == leader or replica.broker_id not in self._nodes:
                            continue
                        if not replica.in_sync:
                            return f"{where}: broker {leader} has {replica.broker_id} out of sync"
                        since = self._nodes[replica.broker_id].started_ms
                        if replica.caught_up_time.ToMilliseconds() < since:
                            return (f"{where}: broker {replica.broker_id} has not caught up "
                                    f"with leader {leader} since it started")
            return ""

        last = ["not asked yet"]

        async def healthy() -> pb.GetMetadataResponse | None:
            views = await self.views(topics)
            last[0] = fault(views)
            if not last[0]:
                view = next(iter(views.values()))
                last[0] = await lagging(view)
                if not last[0]:
                    return view
            return None

        try:
            answer: pb.GetMetadataResponse | None = await polling.eventually(
                healthy, timeout, ignore=(grpc.aio.AioRpcError,), what="a healthy cluster")
            assert answer is not None
            return answer
        except AssertionError as error:
            raise AssertionError(f"{error}; last seen: {last[0]}") from None

    async def create_topic(self, name: str, partitions: int, *, replication_factor: int = 0,
                           min_insync_replicas: int = 0, timeout: float = 30.0) -> str:
        """CreateTopic through any live broker (retried while brokers register)."""
        request = pb.CreateTopicRequest(topic=pb.Topic(
            name=name, partitions=partitions, replication_factor=replication_factor,
            config=pb.TopicConfig(min_insync_replicas=min_insync_replicas)))
        last: list[grpc.aio.AioRpcError] = []

        async def create() -> bool:
            for broker_id in self.live():
                try:
                    await self.stub(broker_id).CreateTopic(request, timeout=5.0)
                    return True
                except grpc.aio.AioRpcError as error:
                    if error.code() == grpc.StatusCode.ALREADY_EXISTS:
                        return True  # an earlier try that timed out made it
                    if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                        raise
                    last[:] = [error]  # e.g. too few brokers registered yet: again
            return False

        try:
            created: bool = await polling.eventually(create, timeout,
                                                     what=f"topic {name} created")
            assert created
        except AssertionError as error:
            said = f"{last[0].code().name}: {last[0].details()}" if last else "no broker live"
            raise AssertionError(f"{error}; last answer: {said}") from None
        return name
