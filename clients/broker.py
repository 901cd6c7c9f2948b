"""Typed async client for BrokerService, with a batching producer and a group consumer.

    async with BrokerClient("127.0.0.1:50053,127.0.0.1:50153") as broker:
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

A cluster: the client is given one broker or several ("host:port" strings, or one
comma-separated string: the bootstrap addresses) and learns the rest from GetMetadata:
the brokers alive, each partition's leader and leader epoch, and a group's coordinator,
cached per topic and per group (:attr:`BrokerClient.router`). It keeps one channel per
broker, opened when first needed. Calls go where they must:

- partition calls (``produce`` with a partition, ``fetch``, ``read``, ``subscribe``,
  ``list_offsets``) to the partition's leader;
- group calls (join, sync, heartbeat, leave, commits, describe, reset, nack) to the
  group's coordinator;
- the rest (topics, ``list_groups``, ``get_metadata``) to any broker, the next one when
  one does not answer.

When the broker says it is not the leader (FAILED_PRECONDITION NOT_LEADER, naming the
leader: used at once when its leader epoch is newer than the cached one) or not the
coordinator (NOT_COORDINATOR), when the partition has no leader right now
(LEADER_NOT_AVAILABLE), the leader may have lost its lease (FENCED), too few replicas are
in sync for acks=ALL (NOT_ENOUGH_REPLICAS), or the broker cannot be reached, the client
refreshes its metadata and tries again with jittered exponential backoff (50 ms doubling
up to 1 s) until the call's ``timeout`` (counted from the first attempt) has passed. A call
that may have been carried out (a produce without an idempotent producer id, a create,
a join, a nack) is not sent again unless the broker refused it (NOT_LEADER,
NOT_COORDINATOR, LEADER_NOT_AVAILABLE) or it surely never left (no connection): a
produce with ``producer_id`` and ``base_sequence`` is written once however often it is
sent. A broker that does not know GetMetadata (UNIMPLEMENTED: an older, single broker)
gets every call, as before clusters.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

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
from .channel import BaseClient, ChannelOptions, open_channel
from .errors import (
    DeadlineExceededError,
    GeoplexRpcError,
    UnavailableError,
    from_rpc_error,
)

__all__ = [
    "Acks", "Backoff", "BrokerClient", "BufferFullError", "ConsumedRecord", "Consumer",
    "DEAD_LETTER_PREFIX", "OffsetOutOfRangeError", "PartitionRoute", "Producer",
    "ProducerStats", "RETRY_PREFIX", "RebalanceCallback", "RecordFuture", "RecordMetadata",
    "Router", "TopicPartition", "partition_for", "records_of",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
# the generated .pyi types the aio stub as BrokerServiceAsyncStub (a name only it has)
Stub: TypeAlias = "broker_pb2_grpc.BrokerServiceAsyncStub"
Send: TypeAlias = "Callable[[Stub, float], Awaitable[T]]"

RESET_TO = {"earliest": pb.RESET_TO_EARLIEST, "latest": pb.RESET_TO_LATEST,
            "time": pb.RESET_TO_TIME, "offset": pb.RESET_TO_OFFSET}
ASSIGNORS = {"sticky": pb.ASSIGNOR_STICKY, "range": pb.ASSIGNOR_RANGE,
             "round_robin": pb.ASSIGNOR_ROUND_ROBIN}
MAX_FETCH_WAIT_S = 30.0  # the broker's limit on a Fetch's max_wait

# the reasons (google.rpc.ErrorInfo) the client acts on
NOT_LEADER = "NOT_LEADER"
NOT_COORDINATOR = "NOT_COORDINATOR"
LEADER_NOT_AVAILABLE = "LEADER_NOT_AVAILABLE"
FENCED = "FENCED"
NOT_ENOUGH_REPLICAS = "NOT_ENOUGH_REPLICAS"
REFUSED = frozenset({NOT_LEADER, NOT_COORDINATOR, LEADER_NOT_AVAILABLE})  # nothing was done

RETRY_BACKOFF_S = 0.05
RETRY_BACKOFF_MAX_S = 1.0
METADATA_MAX_AGE_S = 300.0  # cached routes are asked for again after this long
METADATA_ATTEMPT_S = 3.0    # at most this long for one broker's GetMetadata answer
DOWN_S = 30.0               # a broker that did not answer is asked last for this long
LAST_ATTEMPT_S = 0.05       # no attempt with less time than this before the deadline


def duration(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def timestamp_ms(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def offsets_dict(offsets: Sequence[pb.PartitionOffset]) -> dict[tuple[str, int], int]:
    return {(o.topic, o.partition): o.offset for o in offsets}


def bootstrap_addresses(target: str | Sequence[str]) -> list[str]:
    """The "host:port" addresses of a target: one, a comma-separated string, or a list."""
    items = target.split(",") if isinstance(target, str) else list(target)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"target: expected host:port strings, not {type(item).__name__}")
        address = item.strip()
        if address and address not in out:
            out.append(address)
    if not out:
        raise ValueError("target: expected a broker's host:port, or several separated by "
                         "commas")
    return out


def never_sent(error: GeoplexRpcError) -> bool:
    """The call failed before it reached a broker (no connection could be made)."""
    return (error.code is grpc.StatusCode.UNAVAILABLE and not error.reason
            and error.message.startswith(("failed to connect to all addresses",
                                          "DNS resolution failed")))


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


class Backoff:
    """Jittered exponential backoff: the n-th delay is drawn from [d/2, d] with
    d = min(cap, first * 2**n)."""

    def __init__(self, first: float = RETRY_BACKOFF_S, cap: float = RETRY_BACKOFF_MAX_S
                 ) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        ceiling = min(self.cap, self._next)
        self._next = min(self.cap, self._next * 2)
        return ceiling * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self._next = self.first


class Verdict(enum.Enum):
    """What to do after a failed attempt."""

    NOW = "now"      # the broker named where to go: try there at once
    LATER = "later"  # refresh the metadata and try again after a backoff
    NO = "no"        # raise the error


@dataclass(frozen=True, slots=True)
class PartitionRoute:
    """Who leads a partition, as the client last heard (-1: no leader right now)."""

    leader_id: int
    leader_epoch: int
    leader_address: str = ""
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()


@dataclass(slots=True)
class _TopicRoutes:
    partitions: dict[int, PartitionRoute]
    count: int
    fetched_at: float


class Router:
    """The client's view of the cluster: channels per broker, and the metadata cache.

    Addresses are the brokers' advertised "host:port"; the first bootstrap address is
    the client's own channel (``client.channel`` / ``client.stub``).
    """

    def __init__(self, client: BrokerClient, bootstrap: Sequence[str]) -> None:
        self._client = client
        self.bootstrap = list(bootstrap)
        self.primary = self.bootstrap[0]
        self.brokers: dict[int, str] = {}  # the brokers alive, id -> address
        self.controller_id = -1
        self.unsupported: str | None = None  # answered GetMetadata UNIMPLEMENTED: use it
        self.refreshes = 0  # GetMetadata calls made (all brokers tried count once)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, Stub] = {}
        self._topics: dict[str, _TopicRoutes] = {}
        self._hints: dict[tuple[str, int], PartitionRoute] = {}  # from NOT_LEADER errors
        self._coordinators: dict[str, tuple[int, str, float]] = {}
        self._down: dict[str, float] = {}
        self._refreshing: dict[tuple[tuple[str, ...], str], asyncio.Future[None]] = {}

    # -- channels ------------------------------------------------------------------------

    def channel(self, address: str) -> grpc.aio.Channel:
        if address == self.primary:
            return self._client.channel
        channel = self._channels.get(address)
        if channel is None:
            channel = open_channel(address, self._client.options, self._client.interceptors)
            self._channels[address] = channel
        return channel

    def stub(self, address: str) -> Stub:
        if address == self.primary:
            return self._client.stub
        stub = self._stubs.get(address)
        if stub is None:
            stub = self._stubs[address] = broker_pb2_grpc.BrokerServiceStub(
                self.channel(address))
        return stub

    async def aclose(self) -> None:
        for task in list(self._refreshing.values()):
            task.cancel()
        channels, self._channels = list(self._channels.values()), {}
        self._stubs.clear()
        await asyncio.gather(*(channel.close() for channel in channels),
                             return_exceptions=True)

    # -- what is known -------------------------------------------------------------------

    def candidates(self) -> list[str]:
        """Every address to try for a call any broker answers, best first: the brokers
        alive, then the bootstrap ones; those that lately did not answer go last."""
        ordered: list[str] = []
        if self.unsupported is not None:
            ordered.append(self.unsupported)
        for address in [*(self.brokers[i] for i in sorted(self.brokers)), *self.bootstrap]:
            if address not in ordered:
                ordered.append(address)
        now = _now()
        return sorted(ordered, key=lambda a: a in self._down and now - self._down[a] < DOWN_S)

    def mark_down(self, address: str) -> None:
        self._down[address] = _now()

    def mark_up(self, address: str) -> None:
        self._down.pop(address, None)

    def route(self, topic: str, partition: int) -> PartitionRoute | None:
        """The cached leader of a partition (the newest of metadata and error hints)."""
        routes = self._topics.get(topic)
        route = routes.partitions.get(partition) if routes is not None else None
        hint = self._hints.get((topic, partition))
        if hint is not None and (route is None or hint.leader_epoch > route.leader_epoch):
            return hint
        return route

    def coordinator_address(self, group: str) -> str | None:
        """The address of ``group``'s coordinator as last heard (None: not known)."""
        known = self._coordinators.get(group)
        return known[1] if known is not None else None

    def partition_count(self, topic: str) -> int | None:
        routes = self._topics.get(topic)
        return routes.count if routes is not None else None

    def forget(self, topic: str | None = None, group: str | None = None) -> None:
        """Drop what is cached of a topic (its routes and hints) or a group."""
        if topic is not None:
            self._topics.pop(topic, None)
            for key in [k for k in self._hints if k[0] == topic]:
                del self._hints[key]
        if group is not None:
            self._coordinators.pop(group, None)

    # -- lookups -------------------------------------------------------------------------

    def _legacy(self) -> str | None:
        return self.unsupported

    async def leader(self, topic: str, partition: int, deadline: float) -> str:
        """The address to send a call of this partition to: its leader, or any broker
        when the cluster does not know the topic (it then answers the error)."""
        if self.unsupported is not None:
            return self.unsupported
        routes = self._topics.get(topic)
        if routes is None or _now() - routes.fetched_at > METADATA_MAX_AGE_S:
            await self.refresh([topic], deadline=deadline)
            if (legacy := self._legacy()) is not None:  # learnt just now
                return legacy
        route = self.route(topic, partition)
        if route is None:
            return self.candidates()[0]
        address = route.leader_address or self.brokers.get(route.leader_id, "")
        if route.leader_id < 0 or not address:
            raise UnavailableError(
                grpc.StatusCode.UNAVAILABLE,
                f"{topic}-{partition} has no leader alive right now (an election is under "
                "way, or none of its in-sync replicas is up)", reason=LEADER_NOT_AVAILABLE,
                metadata={"topic": topic, "partition": str(partition)})
        return address

    async def coordinator(self, group: str, deadline: float) -> str:
        """The address of the group's coordinator (any broker while none is known)."""
        if self.unsupported is not None:
            return self.unsupported
        known = self._coordinators.get(group)
        if known is None or _now() - known[2] > METADATA_MAX_AGE_S:
            await self.refresh(group=group, deadline=deadline)
            if (legacy := self._legacy()) is not None:
                return legacy
            known = self._coordinators.get(group)
        return known[1] if known is not None else self.candidates()[0]

    async def refresh(self, topics: Sequence[str] = (), group: str = "",
                      deadline: float | None = None) -> None:
        """Ask for metadata (one GetMetadata at a time per question: callers asking the
        same wait for the same answer), at most until ``deadline`` (loop time)."""
        key = (tuple(sorted(set(topics))), group)
        task = self._refreshing.get(key)
        if task is None:
            task = asyncio.ensure_future(self._ask(key[0], group))
            self._refreshing[key] = task
            task.add_done_callback(lambda done: self._refreshed(key, done))
        remaining = None if deadline is None else max(0.0, deadline - _now())
        try:
            await asyncio.wait_for(asyncio.shield(task), remaining)
        except TimeoutError:
            raise DeadlineExceededError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                        "no broker answered GetMetadata in time") from None

    def _refreshed(self, key: tuple[tuple[str, ...], str], done: asyncio.Future[None]) -> None:
        if self._refreshing.get(key) is done:
            del self._refreshing[key]
        if not done.cancelled():
            done.exception()  # seen: every waiter gets it (or gave up first)

    async def _ask(self, topics: tuple[str, ...], group: str) -> None:
        request = pb.GetMetadataRequest(topics=list(topics), group=group)
        self.refreshes += 1
        tried: list[str] = []
        last: GeoplexRpcError | None = None
        for address in self.candidates():
            tried.append(address)
            try:
                response = await self.stub(address).GetMetadata(
                    request, timeout=min(METADATA_ATTEMPT_S, self._client.options.timeout),
                    metadata=self._client.metadata())
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                if error.code is grpc.StatusCode.UNIMPLEMENTED:
                    log.info("broker at %s does not answer GetMetadata: every call goes "
                             "there", address)
                    self.unsupported = address
                    return
                if error.code is grpc.StatusCode.NOT_FOUND:  # a topic asked for is gone
                    for topic in topics:
                        self.forget(topic)
                    return
                if error.code in (grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.DEADLINE_EXCEEDED):
                    self.mark_down(address)
                    last = error
                    continue
                raise error from None
            self.mark_up(address)
            if not response.brokers:  # a broker not (yet) in a cluster: it takes all
                self.unsupported = address
                return
            self.apply(response, topics, group)
            return
        raise UnavailableError(
            grpc.StatusCode.UNAVAILABLE,
            f"no broker answered GetMetadata (tried {', '.join(tried)})"
            + (f": {last.message}" if last is not None else ""))

    def apply(self, response: pb.GetMetadataResponse, topics: Sequence[str] = (),
              group: str = "") -> None:
        """Take a GetMetadata answer (to a question about ``topics``, empty: all, and
        ``group``) into the cache: it replaces what was known of those."""
        if not response.brokers:
            return
        self.unsupported = None
        self.brokers = {b.id: b.address for b in response.brokers}
        self.controller_id = response.controller_id
        now = _now()
        seen = set()
        for topic in response.topics:
            routes = {p.partition: PartitionRoute(
                p.leader_id, p.leader_epoch, self.brokers.get(p.leader_id, ""),
                tuple(p.replicas), tuple(p.isr)) for p in topic.partitions}
            self._topics[topic.name] = _TopicRoutes(routes, len(routes), now)
            seen.add(topic.name)
            for partition, route in routes.items():
                hint = self._hints.get((topic.name, partition))
                if hint is not None and hint.leader_epoch <= route.leader_epoch:
                    del self._hints[(topic.name, partition)]
        for name in (topics or list(self._topics)):
            if name not in seen:
                self.forget(name)
        if group:
            node = response.coordinator
            if response.HasField("coordinator") and node.address:
                self._coordinators[group] = (node.id, node.address, now)
            else:
                self._coordinators.pop(group, None)

    # -- after a failed attempt ----------------------------------------------------------

    def verdict(self, error: GeoplexRpcError, address: str, *, safe: bool,
                topic: str | None = None, partition: int | None = None,
                group: str | None = None) -> Verdict:
        """Learn what ``error`` (from the broker at ``address``) says about the cluster,
        and say whether to try again: a ``safe`` call may run twice; an unsafe one is
        sent again only if the broker refused it or it never left."""
        reason = error.reason
        if reason == NOT_LEADER and topic is not None:
            self.unsupported = None
            where = partition if partition is not None else _int(
                error.metadata.get("partition"), -1)
            if where >= 0 and self._learn_leader(topic, where, error.metadata, address):
                return Verdict.NOW
            self.forget(topic)
            return Verdict.LATER
        if reason == NOT_COORDINATOR and group is not None:
            self.unsupported = None
            if self._learn_coordinator(group, error.metadata, address):
                return Verdict.NOW
            self.forget(group=group)
            return Verdict.LATER
        if error.code is grpc.StatusCode.UNAVAILABLE:
            if reason == LEADER_NOT_AVAILABLE:
                self.forget(topic)
                return Verdict.LATER
            if reason in (FENCED, NOT_ENOUGH_REPLICAS):
                self.forget(topic)
                return Verdict.LATER if safe else Verdict.NO
            if not reason:  # the connection: the broker is down or cannot be reached
                self.mark_down(address)
                self.forget(topic, group)
                if self.unsupported == address:
                    self.unsupported = None  # ask the others (they may be newer)
                return Verdict.LATER if safe or never_sent(error) else Verdict.NO
            return Verdict.LATER if safe else Verdict.NO
        if error.code is grpc.StatusCode.NOT_FOUND and topic is not None:
            self.forget(topic)  # perhaps deleted and made again: ask afresh next time
        return Verdict.NO

    def _learn_leader(self, topic: str, partition: int, hint: Mapping[str, str],
                      asked: str) -> bool:
        """Take a NOT_LEADER error's leader when its epoch is newer than the cached one;
        whether it names a broker to try at once."""
        leader = _int(hint.get("leader_id"), -1)
        epoch = _int(hint.get("leader_epoch"), -1)
        address = hint.get("leader_address", "")
        current = self.route(topic, partition)
        if epoch < 0 or (current is not None and epoch <= current.leader_epoch):
            return False
        self._hints[(topic, partition)] = PartitionRoute(leader, epoch, address)
        if leader >= 0 and address:
            self.brokers.setdefault(leader, address)
        return leader >= 0 and bool(address) and address != asked

    def _learn_coordinator(self, group: str, hint: Mapping[str, str], asked: str) -> bool:
        address = hint.get("coordinator_address", "")
        if not address or address == asked:
            return False
        self._coordinators[group] = (_int(hint.get("coordinator_id"), -1), address, _now())
        return True


def _now() -> float:
    return asyncio.get_running_loop().time()


class BrokerClient(BaseClient):
    """BrokerService over one broker or a cluster of them (``target``: one "host:port",
    several comma-separated or in a list, or a channel of one broker)."""

    def __init__(self, target: str | Sequence[str] | grpc.aio.Channel,
                 options: ChannelOptions | None = None,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> None:
        if isinstance(target, grpc.aio.Channel):
            bootstrap = [""]  # the borrowed channel, by no address ("" is none of theirs)
            super().__init__(target, options, interceptors)
        else:
            bootstrap = bootstrap_addresses(target)
            super().__init__(bootstrap[0], options, interceptors)
        self.interceptors = tuple(interceptors)
        self.stub = broker_pb2_grpc.BrokerServiceStub(self.channel)
        self.router = Router(self, bootstrap)
        self._keyless_turn: dict[str, int] = {}

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

    async def aclose(self) -> None:
        await self.router.aclose()
        await super().aclose()

    # -- routing ---------------------------------------------------------------------

    def _typed(self, exc: grpc.aio.AioRpcError) -> GeoplexRpcError:
        error = from_rpc_error(exc)
        if error.code is grpc.StatusCode.OUT_OF_RANGE:
            return OffsetOutOfRangeError.of(error)
        return error

    async def _routed(self, route: Callable[[float], Awaitable[str]], send: Send[T],
                      timeout: float | None, *, safe: bool, topic: str | None = None,
                      partition: int | None = None, group: str | None = None) -> T:
        """Send to where ``route`` says, again after what :meth:`Router.verdict` allows,
        until ``timeout`` seconds (None: the channel's) after the first attempt."""
        budget = self.options.timeout if timeout is None else timeout
        deadline = _now() + budget
        started = False
        backoff = Backoff()
        at_once = False  # the last retry went at once (a second one backs off)
        while True:
            address: str | None = None
            try:
                address = await route(deadline)
                if not started:  # the first attempt has the whole budget
                    started, deadline, limit = True, _now() + budget, budget
                else:
                    limit = deadline - _now()
                result = await send(self.router.stub(address), limit)
            except grpc.aio.AioRpcError as exc:
                error = self._typed(exc)
                assert address is not None
                verdict = self.router.verdict(error, address, safe=safe, topic=topic,
                                              partition=partition, group=group)
            except GeoplexRpcError as exc:  # finding where to send: nothing was sent
                error = exc
                verdict = Verdict.LATER if exc.code is grpc.StatusCode.UNAVAILABLE \
                    else Verdict.NO
                if exc.reason == LEADER_NOT_AVAILABLE:
                    self.router.forget(topic)
            else:
                self.router.mark_up(address)
                return result
            if verdict is Verdict.NO:
                raise error
            wait = 0.0 if verdict is Verdict.NOW and not at_once else backoff.next()
            at_once = verdict is Verdict.NOW and not at_once
            wait = min(wait, deadline - _now() - LAST_ATTEMPT_S)  # a last try in time
            if wait < 0:
                raise error
            log.debug("retrying after %s (in %.3f s)", error.reason or error.code.name, wait)
            await asyncio.sleep(wait)

    def _rotation(self) -> Callable[[float], Awaitable[str]]:
        """Any broker: the best candidate, then the next one after each failure."""
        tried: list[str] = []

        async def route(deadline: float) -> str:
            candidates = self.router.candidates()
            for address in candidates:
                if address not in tried:
                    tried.append(address)
                    return address
            tried[:] = [candidates[0]]
            return candidates[0]
        return route

    async def _any(self, send: Send[T], timeout: float | None, *, safe: bool) -> T:
        return await self._routed(self._rotation(), send, timeout, safe=safe)

    async def _to_leader(self, topic: str, partition: int, send: Send[T],
                         timeout: float | None, *, safe: bool) -> T:
        async def route(deadline: float) -> str:
            return await self.router.leader(topic, partition, deadline)
        return await self._routed(route, send, timeout, safe=safe, topic=topic,
                                  partition=partition)

    async def _to_coordinator(self, group: str, send: Send[T], timeout: float | None, *,
                              safe: bool) -> T:
        async def route(deadline: float) -> str:
            return await self.router.coordinator(group, deadline)
        return await self._routed(route, send, timeout, safe=safe, group=group)

    async def _partitions_of(self, topic: str, timeout: float | None) -> int | None:
        """The topic's partition count when the cluster has several brokers (None on one
        broker, or when the topic is not known: then one broker takes the whole call)."""
        if self.router.unsupported is None and self.router.partition_count(topic) is None:
            budget = self.options.timeout if timeout is None else timeout
            try:
                await self.router.refresh([topic], deadline=_now() + budget)
            except GeoplexRpcError:
                return None  # the call itself goes to any broker and says what is wrong
        if self.router.unsupported is not None or len(self.router.brokers) <= 1:
            return None
        return self.router.partition_count(topic)

    # -- the cluster -----------------------------------------------------------------

    async def get_metadata(self, topics: Sequence[str] = (), *, group: str = "",
                           timeout: float | None = None) -> pb.GetMetadataResponse:
        """The brokers alive, the controller, each partition's leader, epoch, replicas and
        in-sync replicas (of ``topics``; empty: all), and ``group``'s coordinator. The
        answer also refreshes the client's cache."""
        request = pb.GetMetadataRequest(topics=list(topics), group=group)
        response: pb.GetMetadataResponse = await self._any(
            lambda stub, limit: stub.GetMetadata(request, timeout=limit,
                                                 metadata=self.metadata()),
            timeout, safe=True)
        self.router.apply(response, topics, group)
        return response

    async def describe_replicas(self, topics: Sequence[str] = (), *,
                                broker: int | str | None = None,
                                timeout: float | None = None) -> pb.DescribeReplicasResponse:
        """Replication as one broker's leaders see it: per partition it leads, each
        replica's log end, lag and whether it is in sync. ``broker``: its id (as in
        :meth:`get_metadata`), its address, or None for any broker."""
        request = pb.DescribeReplicasRequest(topics=list(topics))

        def send(stub: Stub, limit: float) -> Awaitable[pb.DescribeReplicasResponse]:
            return stub.DescribeReplicas(request, timeout=limit, metadata=self.metadata())
        if broker is None:
            return await self._any(send, timeout, safe=True)
        address = broker if isinstance(broker, str) else self.router.brokers.get(broker)
        if address is None:
            await self.get_metadata(timeout=timeout)
            address = self.router.brokers.get(int(broker))
            if address is None:
                raise ValueError(f"broker: no broker {broker} is alive (brokers: "
                                 f"{sorted(self.router.brokers)})")
        fixed = address

        async def route(deadline: float) -> str:
            return fixed
        return await self._routed(route, send, timeout, safe=True)

    # -- topics ----------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int, *,
                           retention: float | None = None, retention_bytes: int = 0,
                           max_message_bytes: int = 0, segment_bytes: int = 0,
                           segment_age: float | None = None, replication_factor: int = 0,
                           min_insync_replicas: int = 0,
                           timeout: float | None = None) -> pb.Topic:
        """A new topic; ``retention`` / ``segment_age`` in seconds (None: 14 days / 1 day),
        0 bytes meaning the broker's default (no size limit, 1 MiB records, 64 MiB
        segments). ``replication_factor`` copies of each partition (0: min(3, brokers
        alive)); acks=ALL needs ``min_insync_replicas`` in sync (0: min(2, copies))."""
        config = pb.TopicConfig(retention_bytes=retention_bytes,
                                max_message_bytes=max_message_bytes,
                                segment_bytes=segment_bytes,
                                cleanup_policy=pb.CLEANUP_POLICY_DELETE,
                                min_insync_replicas=min_insync_replicas)
        if retention is not None:
            config.retention.CopyFrom(duration(retention))
        if segment_age is not None:
            config.segment_age.CopyFrom(duration(segment_age))
        request = pb.CreateTopicRequest(topic=pb.Topic(
            name=name, partitions=partitions, config=config,
            replication_factor=replication_factor))
        response: pb.CreateTopicResponse = await self._any(
            lambda stub, limit: stub.CreateTopic(request, timeout=limit,
                                                 metadata=self.metadata()),
            timeout, safe=False)
        self.router.forget(name)
        return response.topic

    async def delete_topic(self, name: str, *, timeout: float | None = None) -> None:
        request = pb.DeleteTopicRequest(name=name)
        await self._any(lambda stub, limit: stub.DeleteTopic(request, timeout=limit,
                                                             metadata=self.metadata()),
                        timeout, safe=False)
        self.router.forget(name)

    async def list_topics(self, page_size: int = 0, page_token: str = "", *,
                          include_internal: bool = False,
                          timeout: float | None = None) -> pb.ListTopicsResponse:
        request = pb.ListTopicsRequest(page_size=page_size, page_token=page_token,
                                       include_internal=include_internal)
        return await self._any(lambda stub, limit: stub.ListTopics(
            request, timeout=limit, metadata=self.metadata()), timeout, safe=True)

    async def get_topic(self, name: str, *, timeout: float | None = None
                        ) -> pb.GetTopicResponse:
        """The topic and its partitions' log start / end offsets, sizes and segments."""
        request = pb.GetTopicRequest(name=name)
        return await self._any(lambda stub, limit: stub.GetTopic(
            request, timeout=limit, metadata=self.metadata()), timeout, safe=True)

    async def list_offsets(self, topic: str, partitions: Sequence[int] = (), *,
                           time_ms: int | None = None, timeout: float | None = None
                           ) -> dict[int, int]:
        """Partition -> the first offset at or after ``time_ms`` (None: the log end, as
        far as consumers can read: the high watermark), asked of each one's leader."""
        def request(wanted: Sequence[int]) -> pb.ListOffsetsRequest:
            out = pb.ListOffsetsRequest(topic=topic, partitions=list(wanted))
            if time_ms is not None:
                out.time.CopyFrom(timestamp_ms(time_ms))
            return out

        def send(wanted: Sequence[int]) -> Send[pb.ListOffsetsResponse]:
            message = request(wanted)
            return lambda stub, limit: stub.ListOffsets(message, timeout=limit,
                                                        metadata=self.metadata())
        count = await self._partitions_of(topic, timeout)
        if count is None:  # one broker (or the topic is unknown): it answers it all
            if len(partitions) == 1 and self.router.unsupported is None:
                answer = await self._to_leader(topic, partitions[0], send(partitions),
                                               timeout, safe=True)
            else:
                answer = await self._any(send(partitions), timeout, safe=True)
            return {o.partition: o.offset for o in answer.offsets}
        wanted = list(partitions) or list(range(count))
        answers = await asyncio.gather(*(self._to_leader(topic, p, send([p]), timeout,
                                                         safe=True) for p in wanted))
        return {o.partition: o.offset for answer in answers for o in answer.offsets}

    # -- produce and fetch -----------------------------------------------------------

    async def produce(self, topic: str, records: Sequence[pb.Record], *,
                      partition: int | None = None, acks: Acks | int = Acks.LEADER,
                      producer_id: int = 0, base_sequence: int = 0,
                      timeout: float | None = None) -> pb.ProduceResponse:
        """One ProduceRequest as it is (the :meth:`producer` batches and retries for you),
        to the partition's leader. Without ``partition`` on a cluster of several brokers
        the records are split here as the broker would (keyed: crc32c(key) mod
        partitions; keyless: one partition per call, round-robin) and each part goes to
        its leader: then a failed part raises while the others may have been written."""
        def request(part: int | None, chosen: Sequence[pb.Record]) -> pb.ProduceRequest:
            out = pb.ProduceRequest(topic=topic, records=chosen,
                                    acks=pb.Acks.ValueType(int(acks)),
                                    producer_id=producer_id, base_sequence=base_sequence)
            if part is not None:
                out.partition = part
            return out

        def send(message: pb.ProduceRequest) -> Send[pb.ProduceResponse]:
            return lambda stub, limit: stub.Produce(message, timeout=limit,
                                                    metadata=self.metadata())
        # a produce sent twice is written twice, unless the idempotent producer's
        # id and sequence let the broker recognise it
        safe = producer_id != 0
        if partition is not None:
            return await self._to_leader(topic, partition, send(request(partition, records)),
                                         timeout, safe=safe)
        count = None if producer_id or not records else await self._partitions_of(
            topic, timeout)
        if count is None or count < 1:  # one broker: it splits the records itself
            return await self._any(send(request(None, records)), timeout, safe=safe)
        parts: dict[int, list[pb.Record]] = {}
        keyless = -1
        for record in records:
            if record.key:
                part = partition_for(record.key, count)
            else:
                if keyless < 0:
                    keyless = self._keyless_turn[topic] = (
                        self._keyless_turn.get(topic, -1) + 1) % count
                part = keyless
            parts.setdefault(part, []).append(record)
        answers = await asyncio.gather(*(
            self._to_leader(topic, part, send(request(part, chosen)), timeout, safe=safe)
            for part, chosen in sorted(parts.items())))
        return pb.ProduceResponse(results=[r for answer in answers for r in answer.results])

    async def fetch(self, topic: str, partition: int, offset: int, *, max_bytes: int = 0,
                    max_wait: float = 0.0, timeout: float | None = None) -> pb.FetchResponse:
        """Whole batches from the one holding ``offset`` on, waiting up to ``max_wait``
        seconds at the log end, from the partition's leader. ``timeout`` (None: the
        channel's) is added to ``max_wait``."""
        request = pb.FetchRequest(topic=topic, partition=partition, offset=offset,
                                  max_bytes=max_bytes)
        if max_wait > 0:
            request.max_wait.CopyFrom(duration(max_wait))
        limit = self.options.timeout if timeout is None else timeout
        return await self._to_leader(
            topic, partition, lambda stub, budget: stub.Fetch(
                request, timeout=budget, metadata=self.metadata()),
            limit + max_wait, safe=True)

    async def subscribe(self, topic: str, partition: int, offset: int, *,
                        max_bytes: int = 0) -> AsyncIterator[pb.FetchResponse]:
        """Batches from ``offset`` on, as they arrive (a stream without a deadline), from
        the partition's leader; when leadership moves (or the leader cannot be reached)
        the stream is opened again on the new leader from the offset after the last
        batch, for up to the channel's timeout before the error is raised."""
        position = offset
        backoff = Backoff()
        retry_until: float | None = None
        at_once = False
        while True:
            address: str | None = None
            deadline = retry_until if retry_until is not None else \
                _now() + self.options.timeout
            try:
                address = await self.router.leader(topic, partition, deadline)
            except GeoplexRpcError as exc:
                error = exc
                verdict = Verdict.LATER if exc.code is grpc.StatusCode.UNAVAILABLE \
                    else Verdict.NO
            else:
                call = self.router.stub(address).Subscribe(pb.SubscribeRequest(
                    topic=topic, partition=partition, offset=position, max_bytes=max_bytes),
                    metadata=self.metadata())
                try:
                    async for response in call:
                        retry_until, at_once = None, False
                        backoff.reset()
                        fetch = response.fetch
                        if fetch.batches:
                            last = fetch.batches[-1]
                            position = max(position, last.base_offset + len(last.records))
                        yield fetch
                    return
                except grpc.aio.AioRpcError as exc:
                    error = self._typed(exc)
                    verdict = self.router.verdict(error, address, safe=True, topic=topic,
                                                  partition=partition)
                finally:
                    call.cancel()
            if verdict is Verdict.NO:
                raise error
            if retry_until is None:
                retry_until = _now() + self.options.timeout
            wait = 0.0 if verdict is Verdict.NOW and not at_once else backoff.next()
            at_once = verdict is Verdict.NOW and not at_once
            wait = min(wait, retry_until - _now() - LAST_ATTEMPT_S)
            if wait < 0:
                raise error
            await asyncio.sleep(wait)

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
        # a join that may have happened would leave a member behind until its session ends
        return await self._to_coordinator(group, lambda stub, limit: stub.JoinGroup(
            request, timeout=limit, metadata=self.metadata()), timeout, safe=False)

    async def sync_group(self, group: str, member_id: str, generation: int, *,
                         timeout: float | None = None) -> pb.SyncGroupResponse:
        request = pb.SyncGroupRequest(group=group, member_id=member_id, generation=generation)
        return await self._to_coordinator(group, lambda stub, limit: stub.SyncGroup(
            request, timeout=limit, metadata=self.metadata()), timeout, safe=True)

    async def heartbeat(self, group: str, member_id: str, generation: int, *,
                        timeout: float | None = None) -> pb.HeartbeatResponse:
        request = pb.HeartbeatRequest(group=group, member_id=member_id, generation=generation)
        return await self._to_coordinator(group, lambda stub, limit: stub.Heartbeat(
            request, timeout=limit, metadata=self.metadata()), timeout, safe=True)

    async def leave_group(self, group: str, member_id: str, *,
                          timeout: float | None = None) -> None:
        request = pb.LeaveGroupRequest(group=group, member_id=member_id)
        await self._to_coordinator(group, lambda stub, limit: stub.LeaveGroup(
            request, timeout=limit, metadata=self.metadata()), timeout, safe=True)

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
        response: pb.CommitOffsetsResponse = await self._to_coordinator(
            group, lambda stub, limit: stub.CommitOffsets(request, timeout=limit,
                                                          metadata=self.metadata()),
            timeout, safe=True)
        return offsets_dict(response.offsets)

    async def get_committed_offsets(self, group: str, topics: Sequence[str] = (), *,
                                    timeout: float | None = None
                                    ) -> dict[tuple[str, int], int]:
        request = pb.GetCommittedOffsetsRequest(group=group, topics=list(topics))
        response: pb.GetCommittedOffsetsResponse = await self._to_coordinator(
            group, lambda stub, limit: stub.GetCommittedOffsets(request, timeout=limit,
                                                                metadata=self.metadata()),
            timeout, safe=True)
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
        response: pb.ResetOffsetsResponse = await self._to_coordinator(
            group, lambda stub, limit: stub.ResetOffsets(request, timeout=limit,
                                                         metadata=self.metadata()),
            timeout, safe=True)
        return offsets_dict(response.offsets)

    async def describe_group(self, group: str, *, timeout: float | None = None
                             ) -> pb.DescribeGroupResponse:
        """Members, their assignment, and lag per partition."""
        request = pb.DescribeGroupRequest(group=group)
        return await self._to_coordinator(group, lambda stub, limit: stub.DescribeGroup(
            request, timeout=limit, metadata=self.metadata()), timeout, safe=True)

    async def list_groups(self, page_size: int = 0, page_token: str = "", *,
                          timeout: float | None = None) -> pb.ListGroupsResponse:
        request = pb.ListGroupsRequest(page_size=page_size, page_token=page_token)
        return await self._any(lambda stub, limit: stub.ListGroups(
            request, timeout=limit, metadata=self.metadata()), timeout, safe=True)

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
        # a nack that may have happened wrote its retry record: not sent twice
        return await self._to_coordinator(group, lambda stub, limit: stub.Nack(
            request, timeout=limit, metadata=self.metadata()), timeout, safe=False)

    # -- the typed producer and consumer ----------------------------------------------

    def producer(self, **options: Any) -> Producer:
        """A :class:`~.broker_producer.Producer` on this client (its keyword options)."""
        return Producer(self, **options)

    def consumer(self, group: str, topics: Sequence[str], **options: Any) -> Consumer:
        """A :class:`~.broker_consumer.Consumer` of ``group`` on this client."""
        return Consumer(self, group, topics, **options)
