"""Jepsen-style faults for a broker cluster: a TCP proxy, a producer workload, the faults
(the nemesis) and a history checker. Shared by ``tests/faults/test_broker_cluster_faults.py``
and ``bench/broker_chaos.py`` (which puts ``tests/`` on ``sys.path``); the cluster itself
is :class:`broker_cluster.BrokerCluster`.

**How a broker is partitioned.** A broker has one address, its
``GEOPLEX_BROKER_ADVERTISED_ADDRESS``, and the other brokers dial only that. So:

- broker *i* listens on its own port P_i; its *peer proxy* (a :class:`TcpProxy`) listens on
  A_i and forwards to P_i, and A_i is what broker *i* advertises. Every connection from one
  broker to another (a follower's ``ReplicaFetch`` to its leader) goes through the peer
  proxy of the broker dialled;
- the test's own clients dial P_i directly: they route by broker *id* (GetMetadata and
  NOT_LEADER name ids, :meth:`BrokerCluster.address` gives the port), so they never cross
  a proxy and a partitioned broker stays reachable by clients (the classic case: an
  isolated leader that clients still write to);
- each broker reaches etcd through an *etcd proxy* of its own (its ``GEOPLEX_ETCD_ENDPOINTS``);
- a peer proxy knows which broker opened a connection: the dialling socket's owner,
  looked up in ``/proc`` among the brokers' pids (:func:`socket_owner`).

``partition(x)`` then blocks x's peer proxy for everyone (no broker reaches x), the other
peer proxies for connections from x (x reaches no broker) and, with ``etcd=True``, x's
etcd proxy; ``heal()`` lifts every block. A blocked path behaves like a dead network, not a
closed port: connections open through it are cut (reset), new ones are accepted and held
unanswered (the dialler's handshake hangs, as on a blackholed link) and go through once the
block is lifted.

**History.** Each producer operation (one batch of unique values to one partition) is
recorded when invoked and finished once: ok (with its base offset), fail (surely not
written: every attempt was refused before writing) or unknown (a timeout or an error after
sending; a retry with the same idempotent sequence is what makes a retried batch land once).
:meth:`History.check` compares the history with what a consumer read back.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeAlias, TypeVar

import grpc
import grpc.aio

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.broker.v1 import broker_pb2_grpc
from geoplex.clients.errors import from_rpc_error

import polling  # tests/polling.py

if TYPE_CHECKING:
    from broker_cluster import BrokerCluster

T = TypeVar("T")
# the generated .pyi types the aio stub as BrokerServiceAsyncStub (a name only it has)
Stub: TypeAlias = "broker_pb2_grpc.BrokerServiceAsyncStub"

# --------------------------------------------------------------------------- TCP proxy

_CHUNK = 64 * 1024


def socket_owner(peer_port: int, listen_port: int, pids: Iterable[int]) -> int | None:
    """Which of ``pids`` owns the loopback socket that connected from ``peer_port`` to
    ``listen_port`` (None: none of them, or it is gone). Reads ``/proc/net/tcp`` and
    ``tcp6`` (gRPC dials IPv4 from dual-stack sockets) for the socket's inode, then each
    pid's ``/proc/<pid>/fd``."""
    inode = ""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10:
                continue
            local, remote = cols[1], cols[2]
            if (int(local.rsplit(":", 1)[1], 16) == peer_port
                    and int(remote.rsplit(":", 1)[1], 16) == listen_port):
                inode = cols[9]
                break
        if inode:
            break
    if not inode or inode == "0":
        return None
    wanted = f"socket:[{inode}]"
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(f"{fd_dir}/{name}") == wanted:
                    return pid
            except OSError:
                continue
    return None


class _Link:
    """One proxied connection: the accepted side and, once forwarded, the upstream side."""

    def __init__(self, source: str | None, client: asyncio.StreamWriter) -> None:
        self.source = source
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None

    def cut(self) -> None:
        """Reset both sides at once (no FIN: the peers see the link die)."""
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class TcpProxy:
    """``host:port`` forwarding to ``target``, with blocks the test controls.

    :meth:`block` with no sources blocks every connection, with sources only those whose
    :attr:`resolve` label is among them (``resolve(peer_address)`` runs once per accepted
    connection). A blocked connection that is open is cut; a new one is accepted and held
    unanswered until the block is lifted, then forwarded (see the module's docstring).
    Everything runs on the event loop :meth:`start` was awaited on; call :meth:`block`
    and :meth:`unblock` there (:class:`ProxyLoop` runs proxies on a thread of their own).
    """

    def __init__(self, target: tuple[str, int], *, host: str = "127.0.0.1", port: int = 0,
                 name: str = "proxy",
                 resolve: Callable[[tuple[str, int]], str | None] | None = None) -> None:
        self.target = target
        self.host = host
        self.name = name
        self.resolve = resolve
        self._port = port
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._all_blocked = False
        self._blocked: set[str] = set()
        self._closing = False
        self._changed = asyncio.Event()
        self.accepted = 0  # connections accepted
        self.cut_count = 0  # open connections cut by a block
        self.held = 0  # connections that had to wait for a block to lift

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"{self.host}:{self._port}"

    async def start(self) -> Self:
        self._changed = asyncio.Event()  # bound to this loop
        self._server = await asyncio.start_server(self._serve, self.host, self._port,
                                                  reuse_address=True)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    def is_blocked(self, source: str | None) -> bool:
        return self._all_blocked or (source is not None and source in self._blocked)

    def block(self, sources: Iterable[str] | None = None) -> None:
        """Block every connection (``sources`` None) or those from ``sources``; open ones
        that are now blocked are cut."""
        if sources is None:
            self._all_blocked = True
        else:
            self._blocked.update(sources)
        for link in list(self._links):
            if link.upstream is not None and self.is_blocked(link.source):
                self.cut_count += 1
                link.cut()

    def unblock(self, sources: Iterable[str] | None = None) -> None:
        """Lift every block (``sources`` None) or those on ``sources``; held connections
        whose block is gone are forwarded."""
        if sources is None:
            self._all_blocked = False
            self._blocked.clear()
        else:
            self._blocked.difference_update(sources)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.accepted += 1
        source = None
        if self.resolve is not None:
            peer = writer.get_extra_info("peername")
            try:
                source = self.resolve((str(peer[0]), int(peer[1])))
            except Exception:  # noqa: BLE001 - an unknown source is blocked only by a block-all
                source = None
        link = _Link(source, writer)
        self._links.add(link)
        try:
            if self.is_blocked(source):
                self.held += 1
                while self.is_blocked(source) and not self._closing:  # blackholed
                    await self._changed.wait()
            if self._closing:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return  # nothing listens there: the dialler sees the link close
            link.upstream = up_writer
            if self.is_blocked(source):  # blocked while it connected
                self.cut_count += 1
                link.cut()
                return
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._links.discard(link)
            for side in (writer, link.upstream):
                if side is not None:
                    side.close()
            if task is not None:
                self._tasks.discard(task)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(_CHUNK):
                sink.write(data)
                await sink.drain()
            if sink.can_write_eof() and not sink.is_closing():
                sink.write_eof()  # a half-close passes through
        except OSError:
            sink.transport.abort()  # one side died: so does the other

    async def aclose(self) -> None:
        """Stop listening, cut every connection, wait until each handler has ended."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.cut()
        self._changed.set()  # held connections end
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=5.0)
            for task in late:  # an upstream connect still under way
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


class ProxyLoop:
    """An event loop on a daemon thread of its own, for the proxies: nothing the test's
    loop does (a blocking wait, a busy producer) delays the brokers' traffic."""

    def __init__(self, name: str = "proxies") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    async def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Await ``coro`` on the proxy loop, from another loop."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """``fn()`` on the proxy loop; its result (blocks the caller for as long as it runs)."""
        if threading.current_thread() is self._thread:
            return fn()
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return done.result(timeout)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()


# --------------------------------------------------------------------------- history

class Outcome(enum.Enum):
    PENDING = "pending"
    OK = "ok"
    FAIL = "fail"  # surely not written
    UNKNOWN = "unknown"  # maybe written


@dataclass(eq=False)
class Op:
    """One produce operation: a batch of unique values to one partition."""

    id: int
    producer: str  # the logical producer (it may change its idempotent producer id)
    partition: int
    values: tuple[str, ...]
    phase: str  # the fault under way when it was invoked
    invoked: float  # time.monotonic()
    outcome: Outcome = Outcome.PENDING
    offset: int = -1  # the base offset acknowledged (OK only)
    completed: float = 0.0
    acked_by: int = 0  # the broker that acknowledged it
    attempts: int = 0
    error: str = ""  # the last error seen (for the report)


@dataclass
class Counts:
    ops: int = 0
    produced: int = 0  # values sent
    acked: int = 0
    failed: int = 0
    unknown: int = 0  # outcome unknown (a timeout, an error after sending, never finished)
    lost: int = 0  # acknowledged but not read back
    duplicated: int = 0  # read back more than once
    unknown_present: int = 0  # outcome unknown, read back
    failed_present: int = 0  # refused before writing, yet read back
    moved: int = 0  # read back, but not at the partition and offset acknowledged
    order: int = 0  # acknowledged after a batch of the same producer, read back before it

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


COLUMNS = ("ops", "produced", "acked", "failed", "unknown", "lost", "duplicated",
           "unknown_present", "failed_present", "moved", "order")
HEADERS = ("fault", "ops", "records", "acked", "failed", "unknown", "lost", "dup",
           "unknown kept", "failed kept", "moved", "order")


@dataclass
class CheckResult:
    total: Counts
    by_phase: dict[str, Counts]
    unexpected: int  # read back, never produced
    examples: dict[str, list[str]]  # a few values (and where) per kind of anomaly

    @property
    def valid(self) -> bool:
        """Nothing acknowledged lost or misplaced, nothing invented, order kept."""
        return (self.total.lost == 0 and self.unexpected == 0 and self.total.order == 0
                and self.total.moved == 0)

    def rows(self) -> list[list[str]]:
        out = [[phase, *(str(getattr(c, k)) for k in COLUMNS)]
               for phase, c in self.by_phase.items()]
        out.append(["all", *(str(getattr(self.total, k)) for k in COLUMNS)])
        return out

    def table(self) -> str:
        """A plain-text table, one row per fault kind and the total; then the anomalies."""
        text = format_table(HEADERS, self.rows())
        text += f"\nunexpected (read back, never produced): {self.unexpected}"
        for kind, values in self.examples.items():
            if values:
                text += f"\n{kind}: " + ", ".join(values[:5])
        return text


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w)
                       for i, (h, w) in enumerate(zip(headers, widths)))]
    lines += ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    return "\n".join(lines)


class History:
    """Every produce operation of a run, and the checker."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.phase = "warmup"  # the label new operations get (the fault under way)
        self._acks: dict[int, list[tuple[float, int]]] = defaultdict(list)  # (time, broker)

    def invoke(self, producer: str, partition: int, values: Sequence[str]) -> Op:
        op = Op(len(self.ops), producer, partition, tuple(values), self.phase, time.monotonic())
        self.ops.append(op)
        return op

    def _finish(self, op: Op, outcome: Outcome) -> None:
        if op.outcome is not Outcome.PENDING:
            raise ValueError(f"op {op.id} already finished as {op.outcome.value}")
        op.outcome = outcome
        op.completed = time.monotonic()

    def ok(self, op: Op, base_offset: int, acked_by: int = 0) -> None:
        self._finish(op, Outcome.OK)
        op.offset, op.acked_by = base_offset, acked_by
        self._acks[op.partition].append((op.completed, acked_by))

    def fail(self, op: Op, error: str = "") -> None:
        self._finish(op, Outcome.FAIL)
        op.error = error or op.error

    def unknown(self, op: Op, error: str = "") -> None:
        self._finish(op, Outcome.UNKNOWN)
        op.error = error or op.error

    @property
    def acked(self) -> int:
        return sum(len(op.values) for op in self.ops if op.outcome is Outcome.OK)

    def first_ack_after(self, partition: int, after: float,
                        not_by: int | None = None) -> float | None:
        """When the first operation on ``partition`` was acknowledged after ``after``
        (monotonic), by a broker other than ``not_by``; None: none yet."""
        acks = self._acks.get(partition, [])
        start = bisect.bisect_right(acks, (after, float("inf")))
        for when, broker in acks[start:]:
            if broker != not_by:
                return when
        return None

    def check(self, consumed: Mapping[int, Sequence[tuple[int, str]]]) -> CheckResult:
        """Compare with what was read back: per partition, ``(offset, value)`` in log order."""
        where: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for partition, items in consumed.items():
            for offset, value in items:
                where[value].append((partition, offset))
        examples: dict[str, list[str]] = defaultdict(list)
        by_phase: dict[str, Counts] = {}
        produced: set[str] = set()
        for op in self.ops:
            counts = by_phase.setdefault(op.phase, Counts())
            counts.ops += 1
            for i, value in enumerate(op.values):
                produced.add(value)
                seen = where.get(value, [])
                counts.produced += 1
                if len(seen) > 1:
                    counts.duplicated += 1
                    examples["duplicated"].append(f"{value} at {seen}")
                if op.outcome is Outcome.OK:
                    counts.acked += 1
                    if not seen:
                        counts.lost += 1
                        examples["lost"].append(f"{value} (acked at {op.partition}/"
                                                f"{op.offset + i} by broker {op.acked_by})")
                    elif (op.partition, op.offset + i) not in seen:
                        counts.moved += 1
                        examples["moved"].append(f"{value} acked at {op.partition}/"
                                                 f"{op.offset + i}, read at {seen}")
                elif op.outcome is Outcome.FAIL:
                    counts.failed += 1
                    if seen:
                        counts.failed_present += 1
                        examples["failed kept"].append(f"{value} ({op.error})")
                else:
                    counts.unknown += 1
                    if seen:
                        counts.unknown_present += 1
        self._check_order(where, by_phase, examples)
        unexpected = [v for v in where if v not in produced]
        examples["unexpected"].extend(unexpected[:5])
        total = Counts()
        for counts in by_phase.values():
            total.add(counts)
        return CheckResult(total, by_phase, len(unexpected), dict(examples))

    def _check_order(self, where: Mapping[str, list[tuple[int, int]]],
                     by_phase: dict[str, Counts], examples: dict[str, list[str]]) -> None:
        """Per producer and partition, in acknowledgement order: the acknowledged offsets,
        and the offsets the values were read back at, only grow."""
        streams: dict[tuple[str, int], list[Op]] = defaultdict(list)
        for op in self.ops:
            if op.outcome is Outcome.OK:
                streams[(op.producer, op.partition)].append(op)
        for (producer, partition), ops in streams.items():
            ops.sort(key=lambda o: o.completed)
            last_acked = last_read = -1
            for op in ops:
                read = [off for value in op.values for p, off in where.get(value, [])
                        if p == partition]
                first_read = min(read) if read else None
                broken = op.offset <= last_acked or (
                    first_read is not None and first_read <= last_read)
                if broken:
                    by_phase[op.phase].order += 1
                    examples["order"].append(
                        f"{producer} on {partition}: op {op.id} acked at {op.offset} "
                        f"(read at {first_read}) after {last_acked} (read at {last_read})")
                last_acked = max(last_acked, op.offset)
                if read:
                    last_read = max(last_read, max(read))


# --------------------------------------------------------------------------- routing and load

NOT_WRITTEN = frozenset({"NOT_LEADER", "LEADER_NOT_AVAILABLE", "OUT_OF_ORDER_SEQUENCE",
                         "NOT_FOUND", "INVALID_REPLICATION_FACTOR"})
"""Error reasons that mean the broker refused the batch before writing anything."""


def never_sent(error: grpc.aio.AioRpcError) -> bool:
    """The channel had no connection: the request never left this process."""
    return (error.code() == grpc.StatusCode.UNAVAILABLE
            and "failed to connect to all addresses" in (error.details() or ""))


def leaders_of(views: Iterable[pb.GetMetadataResponse], topic: str
               ) -> dict[int, pb.PartitionMetadata]:
    """Per partition of ``topic``, the newest view (highest leader epoch) among ``views``:
    a broker cut off from etcd answers with what it saw last."""
    best: dict[int, pb.PartitionMetadata] = {}
    for view in views:
        for meta in view.topics:
            if meta.name != topic:
                continue
            for part in meta.partitions:
                known = best.get(part.partition)
                if known is None or part.leader_epoch > known.leader_epoch:
                    best[part.partition] = part
    return best


class Router:
    """Where to send one topic's produce and fetch: its partitions' leaders, from the
    GetMetadata of every broker (the newest epoch wins), refreshed after errors and taught
    by NOT_LEADER. Calls go to the broker's own port (:meth:`BrokerCluster.stub`)."""

    def __init__(self, cluster: BrokerCluster, topic: str) -> None:
        self.cluster = cluster
        self.topic = topic
        self._leaders: dict[int, tuple[int, int]] = {}  # partition -> (leader, epoch)
        self._lock = asyncio.Lock()
        self._refreshed = 0.0

    def leader(self, partition: int) -> int | None:
        known = self._leaders.get(partition)
        return None if known is None or known[0] < 0 else known[0]

    def learn(self, partition: int, leader: int, epoch: int) -> None:
        known = self._leaders.get(partition)
        if known is None or epoch >= known[1]:
            self._leaders[partition] = (leader, epoch)

    def forget(self, partition: int, leader: int) -> None:
        """``leader`` did not serve ``partition``: ask the metadata again before using it."""
        known = self._leaders.get(partition)
        if known is not None and known[0] == leader:
            self._leaders[partition] = (-1, known[1])

    async def refresh(self, min_age: float = 0.05) -> None:
        async with self._lock:
            if time.monotonic() - self._refreshed < min_age:
                return  # another producer has just done it
            views = await self.cluster.views([self.topic], timeout=1.0)
            for partition, meta in leaders_of(views.values(), self.topic).items():
                self.learn(partition, meta.leader_id, meta.leader_epoch)
            self._refreshed = time.monotonic()

    async def stub_for(self, partition: int) -> tuple[int, Stub] | None:
        leader = self.leader(partition)
        if leader is None:
            await self.refresh()
            leader = self.leader(partition)
        return None if leader is None else (leader, self.cluster.stub(leader))


@dataclass
class WorkloadConfig:
    producers_per_partition: int = 2
    batch: int = 5  # values per produce
    acks: pb.Acks.ValueType = pb.ACKS_ALL
    attempt_timeout_s: float = 2.0  # one Produce call
    op_timeout_s: float = 15.0  # retrying one batch before its outcome is left unknown
    pace_s: float = 0.02  # at least this long between one producer's batches


class _ProducerId:
    """An idempotent producer's id and its next sequence in its one partition."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.id = 0
        self.sequence = 0
        self.renew()

    def renew(self) -> None:
        self.id = self._rng.randrange(1, 1 << 63)
        self.sequence = 0


class Workload:
    """Producers writing unique values, one batch in flight each, retried with the same
    idempotent sequence until acknowledged or ``op_timeout_s`` passes."""

    def __init__(self, router: Router, history: History, partitions: int,
                 config: WorkloadConfig | None = None, *, seed: int = 0) -> None:
        self.router = router
        self.history = history
        self.partitions = partitions
        self.config = config or WorkloadConfig()
        self._rng = random.Random(seed)
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.errors: dict[str, int] = defaultdict(int)  # error reason -> times seen

    def start(self) -> None:
        for partition in range(self.partitions):
            for k in range(self.config.producers_per_partition):
                name = f"p{partition}.{k}"
                self._tasks.append(asyncio.create_task(self._producer(name, partition),
                                                       name=f"producer {name}"))

    async def stop(self, timeout: float | None = None) -> None:
        """No new batch; the ones in flight finish (retried as usual) within ``timeout``
        (default: the op timeout and a little), else are cancelled (outcome unknown)."""
        self._stopping = True
        limit = self.config.op_timeout_s + 5.0 if timeout is None else timeout
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=limit)
            for task in pending:
                task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for op in self.history.ops:
            if op.outcome is Outcome.PENDING:
                self.history.unknown(op, "cancelled at the end of the run")
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise failed[0]  # a producer's own bug, not a broker's error

    async def _producer(self, name: str, partition: int) -> None:
        producer = _ProducerId(self._rng)
        n = 0
        while not self._stopping:
            began = time.monotonic()
            values = [f"{name}:{n}:{i}" for i in range(self.config.batch)]
            n += 1
            op = self.history.invoke(name, partition, values)
            await self._send(producer, op)
            rest = self.config.pace_s - (time.monotonic() - began)
            if rest > 0:
                await asyncio.sleep(rest)  # pacing the load, not waiting for a condition

    async def _send(self, producer: _ProducerId, op: Op) -> None:
        config = self.config
        deadline = op.invoked + config.op_timeout_s
        maybe_written = False
        records = [pb.Record(value=v.encode()) for v in op.values]
        while True:
            pause = 0.1
            target = await self._target(op.partition)
            if target is not None:
                leader, stub = target
                left = deadline - time.monotonic()
                request = pb.ProduceRequest(
                    topic=self.router.topic, partition=op.partition, records=records,
                    acks=config.acks, producer_id=producer.id, base_sequence=producer.sequence)
                op.attempts += 1
                try:
                    answer = await stub.Produce(request,
                                                timeout=max(0.05, min(config.attempt_timeout_s,
                                                                      left)))
                except grpc.aio.AioRpcError as error:
                    reason, written, pause = self._judge(error, op.partition, leader)
                    maybe_written = maybe_written or written
                    op.error = reason
                    self.errors[reason] += 1
                    if reason == "OUT_OF_ORDER_SEQUENCE":
                        break  # this producer id's sequence is lost: give the batch up
                else:
                    result = answer.results[0]
                    self.history.ok(op, result.base_offset, acked_by=leader)
                    producer.sequence = (producer.sequence + len(records)) % (1 << 31)
                    return
            if time.monotonic() + pause >= deadline:
                break
            await asyncio.sleep(pause)  # a retry's back-off
        if maybe_written:
            self.history.unknown(op)
        else:
            self.history.fail(op)
        producer.renew()  # where the old id's sequence stands is not known

    async def _target(self, partition: int) -> tuple[int, Stub] | None:
        try:
            return await self.router.stub_for(partition)
        except (grpc.aio.AioRpcError, asyncio.TimeoutError):
            return None

    def _judge(self, error: grpc.aio.AioRpcError, partition: int, leader: int
               ) -> tuple[str, bool, float]:
        """(reason, maybe written, pause before the retry) for a failed attempt."""
        if never_sent(error):
            self.router.forget(partition, leader)
            return "NOT_CONNECTED", False, 0.1
        rpc = from_rpc_error(error)
        reason = rpc.reason or error.code().name
        if reason == "NOT_LEADER":
            hint = rpc.metadata.get("leader_id", "")
            epoch = rpc.metadata.get("leader_epoch", "")
            if hint.lstrip("-").isdigit() and epoch.lstrip("-").isdigit() and int(hint) > 0:
                self.router.learn(partition, int(hint), int(epoch))
                if int(hint) != leader:
                    return reason, False, 0.0  # straight to the one named
            self.router.forget(partition, leader)
            return reason, False, 0.05
        if reason in NOT_WRITTEN or error.code() == grpc.StatusCode.NOT_FOUND:
            if reason != "OUT_OF_ORDER_SEQUENCE":  # that one is the leader's answer
                self.router.forget(partition, leader)
            return reason, False, 0.1
        if reason != "NOT_ENOUGH_REPLICAS":  # the leader, short of followers: ask it again
            # FENCED, a deadline, a cut connection...: maybe another leads now
            self.router.forget(partition, leader)
        return reason, True, 0.1  # maybe written


async def read_partition(stub: Stub, topic: str, partition: int,
                         timeout: float = 10.0) -> list[tuple[int, str]]:
    """Every record below the high watermark, as (offset, value), in log order."""
    out: list[tuple[int, str]] = []
    offset = 0
    while True:
        got = await stub.Fetch(pb.FetchRequest(topic=topic, partition=partition, offset=offset),
                               timeout=timeout)
        fresh = [b for b in got.batches if b.base_offset + len(b.records) > offset]
        if not fresh:
            if offset < got.log_start_offset:
                offset = got.log_start_offset
                continue
            return out
        for batch in fresh:
            for i, record in enumerate(batch.records):
                at = batch.base_offset + i
                if at >= offset:
                    out.append((at, record.value.decode(errors="replace")))
            offset = batch.base_offset + len(batch.records)


async def consume_all(router: Router, partitions: int, timeout: float = 60.0
                      ) -> dict[int, list[tuple[int, str]]]:
    """Every partition read back from its leader (retried until one serves it; a leader
    answering DATA_LOSS fails at once: AssertionError)."""
    out: dict[int, list[tuple[int, str]]] = {}
    for partition in range(partitions):
        last = ["no leader known"]

        async def read(p: int = partition) -> list[list[tuple[int, str]]] | None:
            await router.refresh(min_age=0.0)
            leader = router.leader(p)
            if leader is None:
                return None
            try:
                return [await read_partition(router.cluster.stub(leader), router.topic, p)]
            except grpc.aio.AioRpcError as error:
                rpc = from_rpc_error(error)
                last[0] = f"broker {leader}: {rpc.reason or rpc.code.name}: {rpc.message}"
                if rpc.code == grpc.StatusCode.DATA_LOSS:  # no retry will make it readable
                    raise AssertionError(f"{router.topic}-{p} cannot be read back from its "
                                         f"leader: {last[0]}") from None
                return None

        try:
            got: list[list[tuple[int, str]]] | None = await polling.eventually(
                read, timeout, what=f"a leader serving {router.topic}-{partition}")
        except AssertionError as error:
            raise AssertionError(f"{error}; last: {last[0]}") from None
        assert got is not None
        out[partition] = got[0]
    return out


# --------------------------------------------------------------------------- the nemesis

@dataclass
class FaultContext:
    """What every fault gets: the cluster, the topic under load and the history."""

    cluster: BrokerCluster
    topic: str
    partitions: int
    history: History
    rng: random.Random = field(default_factory=random.Random)
    hold_s: float = 4.0  # a pause or a partition (twice the tests' 2 s lease)
    down_s: float = 0.5  # a killed broker stays down this long after its partitions moved
    etcd_down_s: float = 3.0
    failover_timeout_s: float = 30.0
    healthy_timeout_s: float = 60.0


@dataclass
class FaultReport:
    kind: str
    victims: tuple[int, ...] = ()
    detail: str = ""
    started: float = 0.0  # monotonic
    # per partition the victim led: fault -> first acknowledgement by another broker
    # (kill-leader), or by any (kill-all: the cluster back)
    failover_s: list[float] = field(default_factory=list)
    healthy_s: float = 0.0  # fault -> every partition led, every ISR full again

    def line(self) -> str:
        parts = [self.kind, f"broker {','.join(map(str, self.victims))}" if self.victims
                 else ""]
        if self.detail:
            parts.append(self.detail)
        if self.failover_s:
            parts.append("failover " + "/".join(f"{s:.2f}" for s in self.failover_s) + " s")
        parts.append(f"healthy after {self.healthy_s:.1f} s")
        return ", ".join(p for p in parts if p)


Fault = Callable[[FaultContext], Awaitable[FaultReport]]


async def _layout(ctx: FaultContext) -> dict[int, pb.PartitionMetadata]:
    views = await ctx.cluster.views([ctx.topic])
    layout = leaders_of(views.values(), ctx.topic)
    if len(layout) < ctx.partitions or any(m.leader_id < 0 for m in layout.values()):
        raise AssertionError(f"{ctx.topic}: not every partition has a leader: {layout}")
    return layout


async def _leader(ctx: FaultContext) -> tuple[int, list[int]]:
    """A random partition's leader, and every partition it leads."""
    layout = await _layout(ctx)
    leader = layout[ctx.rng.randrange(ctx.partitions)].leader_id
    return leader, sorted(p for p, m in layout.items() if m.leader_id == leader)


async def _follower(ctx: FaultContext) -> tuple[int, int]:
    """(a broker that follows a random partition, that partition)."""
    layout = await _layout(ctx)
    partition = ctx.rng.randrange(ctx.partitions)
    meta = layout[partition]
    followers = [r for r in meta.replicas if r != meta.leader_id]
    if not followers:
        raise AssertionError(f"{ctx.topic}-{partition} has no follower: {meta}")
    return ctx.rng.choice(followers), partition


async def _failovers(ctx: FaultContext, partitions: Iterable[int], since: float,
                     not_by: int | None) -> list[float]:
    out = []
    for partition in partitions:
        def acked(p: int = partition) -> float | None:
            return ctx.history.first_ack_after(p, since, not_by)

        try:
            when: float | None = await polling.eventually(
                acked, ctx.failover_timeout_s,
                what=f"an acknowledged produce to {ctx.topic}-{partition} after the fault")
        except AssertionError as error:
            raise AssertionError(f"{error}; {await _situation(ctx, partition)}") from None
        assert when is not None
        out.append(when - since)
    return out


async def _situation(ctx: FaultContext, partition: int) -> str:
    """What the brokers say of ``partition`` now, and the producers' last errors there."""
    views = await ctx.cluster.views([ctx.topic])
    said = []
    for broker_id, view in sorted(views.items()):
        for meta in view.topics:
            for part in meta.partitions:
                if meta.name == ctx.topic and part.partition == partition:
                    said.append(f"broker {broker_id} says leader {part.leader_id} epoch "
                                f"{part.leader_epoch} isr {list(part.isr)}")
    errors = [op.error for op in ctx.history.ops[-200:]
              if op.partition == partition and op.error]
    return ("; ".join(said) or "no broker answers GetMetadata") + (
        f"; the producers' last errors there: {', '.join(errors[-5:])}" if errors else "")


async def kill_leader(ctx: FaultContext) -> FaultReport:
    """kill -9 a partition's leader; once its partitions are acknowledged by others, start it."""
    leader, led = await _leader(ctx)
    report = FaultReport("kill-leader", (leader,), f"led {led}", time.monotonic())
    await ctx.cluster.kill(leader)
    try:
        report.failover_s = await _failovers(ctx, led, report.started, not_by=leader)
        await asyncio.sleep(ctx.down_s)  # the fault's length
    finally:
        await ctx.cluster.start(leader)
    return report


async def kill_follower(ctx: FaultContext) -> FaultReport:
    follower, partition = await _follower(ctx)
    report = FaultReport("kill-follower", (follower,), f"follower of {partition}",
                         time.monotonic())
    await ctx.cluster.kill(follower)
    try:
        await asyncio.sleep(ctx.down_s + 1.0)  # the fault's length
    finally:
        await ctx.cluster.start(follower)
    return report


async def kill_all(ctx: FaultContext) -> FaultReport:
    """kill -9 every broker, then start them all."""
    ids = tuple(ctx.cluster.ids)
    report = FaultReport("kill-all", ids, "", time.monotonic())
    try:
        await asyncio.gather(*(ctx.cluster.kill(i) for i in ids))
        dead = time.monotonic()  # an answer on its way from the last one killed is older
        await asyncio.sleep(ctx.down_s)  # the fault's length
    finally:
        await ctx.cluster.start(*ids)
    report.failover_s = await _failovers(ctx, range(ctx.partitions), dead, None)
    return report


async def pause_leader(ctx: FaultContext) -> FaultReport:
    """SIGSTOP a leader for longer than its lease, then SIGCONT: it must not acknowledge
    anything once another broker may lead."""
    leader, led = await _leader(ctx)
    report = FaultReport("pause-leader", (leader,), f"led {led}, {ctx.hold_s:g} s",
                         time.monotonic())
    ctx.cluster.pause(leader)
    try:
        await asyncio.sleep(ctx.hold_s)  # the fault's length
    finally:
        ctx.cluster.resume(leader)
    return report


async def partition_leader(ctx: FaultContext) -> FaultReport:
    """A leader cut off from the other brokers and from etcd (clients still reach it)."""
    leader, led = await _leader(ctx)
    report = FaultReport("partition-leader", (leader,),
                         f"led {led}, cut from brokers and etcd {ctx.hold_s:g} s",
                         time.monotonic())
    await ctx.cluster.partition(leader, etcd=True)
    try:
        await asyncio.sleep(ctx.hold_s)  # the fault's length
    finally:
        await ctx.cluster.heal()
    return report


async def partition_follower(ctx: FaultContext) -> FaultReport:
    """A follower cut off from the other brokers (it still has etcd): the leader must drop
    it from the ISR, and take it back once it has caught up."""
    follower, partition = await _follower(ctx)
    report = FaultReport("partition-follower", (follower,),
                         f"follower of {partition}, cut from brokers {ctx.hold_s:g} s",
                         time.monotonic())
    await ctx.cluster.partition(follower, etcd=False)
    try:
        await asyncio.sleep(ctx.hold_s)  # the fault's length
    finally:
        await ctx.cluster.heal()
    return report


def damage_tail(data_dir: Path, topic: str, rng: random.Random) -> list[str]:
    """Truncate, or flip bits in, the last few KiB of the active segment of each of
    ``topic``'s partitions in a stopped broker's ``data_dir``; what was done."""
    done = []
    for directory in sorted(data_dir.glob(f"{topic}-*")):
        if not directory.name[len(topic) + 1:].isdigit():
            continue
        segments = sorted(directory.glob("*.log"))  # %020d.log: by name is by base offset
        if not segments:
            continue
        active = segments[-1]
        size = active.stat().st_size
        if size == 0:
            continue
        span = min(size, rng.randint(1, 4096))
        if rng.random() < 0.5:
            os.truncate(active, size - span)
            done.append(f"{directory.name} cut {span} B")
        else:
            with open(active, "r+b") as segment:
                for _ in range(rng.randint(1, 4)):
                    position = size - 1 - rng.randrange(span)
                    segment.seek(position)
                    byte = segment.read(1)[0]
                    segment.seek(position)
                    segment.write(bytes([byte ^ (1 << rng.randrange(8))]))
            done.append(f"{directory.name} bits flipped in the last {span} B")
    return done


async def corrupt_follower(ctx: FaultContext) -> FaultReport:
    """kill -9 a follower, damage the tail of its active segments, start it: it must
    truncate what is torn and fetch it again from the leader."""
    follower, partition = await _follower(ctx)
    report = FaultReport("corrupt-follower", (follower,), "", time.monotonic())
    await ctx.cluster.kill(follower)
    try:
        report.detail = "; ".join(damage_tail(ctx.cluster.data_dir(follower), ctx.topic,
                                              ctx.rng)) or "nothing on disk yet"
    finally:
        await ctx.cluster.start(follower)
    return report


async def restart_etcd(ctx: FaultContext) -> FaultReport:
    report = FaultReport("restart-etcd", (), f"down {ctx.etcd_down_s:g} s", time.monotonic())
    await ctx.cluster.restart_etcd(ctx.etcd_down_s)
    return report


FAULTS: dict[str, Fault] = {
    "kill-leader": kill_leader,
    "kill-follower": kill_follower,
    "kill-all": kill_all,
    "pause-leader": pause_leader,
    "partition-leader": partition_leader,
    "partition-follower": partition_follower,
    "corrupt-follower": corrupt_follower,
    "restart-etcd": restart_etcd,
}
FAULT_KINDS = tuple(FAULTS)


def schedule(rounds: int, kinds: Sequence[str] = FAULT_KINDS,
             leader_kill_every: int = 0) -> list[str]:
    """``rounds`` fault kinds: ``kinds`` in turn; with ``leader_kill_every`` n, every n-th
    round is a leader kill and the others take the remaining kinds in turn."""
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(FAULTS)}")
    if leader_kill_every <= 0:
        return [kinds[r % len(kinds)] for r in range(rounds)]
    others = [k for k in kinds if k != "kill-leader"] or ["kill-leader"]
    out, k = [], 0
    for r in range(rounds):
        if r % leader_kill_every == 0:
            out.append("kill-leader")
        else:
            out.append(others[k % len(others)])
            k += 1
    return out


async def run_fault(ctx: FaultContext, kind: str) -> FaultReport:
    """One fault: it runs and heals itself; then until every partition has a live leader
    and a full ISR again. New operations are counted under ``kind`` from now on."""
    ctx.history.phase = kind
    report = await FAULTS[kind](ctx)
    await ctx.cluster.wait_healthy([ctx.topic], timeout=ctx.healthy_timeout_s)
    report.healthy_s = time.monotonic() - report.started
    return report


async def run_faults(ctx: FaultContext, kinds: Sequence[str], *, calm_s: float = 1.0,
                     progress: Callable[[int, FaultReport], None] | None = None
                     ) -> list[FaultReport]:
    """Each of ``kinds`` in order, ``calm_s`` of healthy load after each."""
    reports = []
    for number, kind in enumerate(kinds, 1):
        report = await run_fault(ctx, kind)
        reports.append(report)
        if progress is not None:
            progress(number, report)
        await asyncio.sleep(calm_s)  # load on a healthy cluster between faults
    return reports
