"""etcd adapter: topic metadata, consumer groups' committed offsets, retry cursors.

Keys, under a configurable prefix (default ``/geoplex/broker``)::

    <prefix>/topics/<name>                                  the TopicSpec as JSON
    <prefix>/partitions/<name>/<partition>                  its assignments (etcd_cluster.py)
    <prefix>/groups/<group>/offsets/<topic>/<partition>     the committed offset
    <prefix>/cursors/<group>                                the retry scheduler's cursor

(offsets and cursors in decimal, zero-padded to 20 digits so that etcd's byte-wise value
compare orders them; topic and group names follow ``domain.NAME_RE``, so hold no ``/``).

- A topic is created by one transaction that puts it only if the key was never created
  (``create_revision == 0``). The watch follows the ``topics/`` prefix from the revision
  of the last list; when the stream breaks or etcd has compacted that revision away it
  lists again and yields the differences, so no change is lost or repeated
  (:meth:`Etcd.follow`, which the cluster's watches use too). A topic is deleted with its
  partitions' assignments in one transaction.
- A commit is ONE transaction and one round trip, with no read before it: per partition a
  nested conditional put, "if the key is absent put; else if its value is lower put; else
  read it" (under ``allow_backwards``, plain puts). etcd evaluates it atomically, so
  concurrent commits never conflict and never move an offset back, and a transaction
  the client library resends after a lost answer changes nothing more. etcd limits each
  level of a transaction to ``max_txn_ops`` operations (128 unless the server says
  otherwise) counted with its parents' levels, so bigger commits nest deeper; and a
  request to 1.5 MiB, so a commit of more than about 2,000 partitions is split into
  transactions of at most ``max_txn_bytes`` (each partition's offset still only moves
  forward).
- Every call has a deadline (``timeout``, 3 s), so a down etcd answers quickly; an etcd
  that cannot be reached, or answers "unavailable", "timed out", "too busy", becomes
  domain.MetadataUnavailable (an error of the request itself stays what it is: a bug).

Each commit is one Raft write (an fsync on the etcd leader). That bounds commits/s per etcd
cluster (measured figures are in docs/architecture.md); beyond it, offsets belong in a
compacted internal topic, as Kafka moved them from ZooKeeper to ``__consumer_offsets``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, TypeVar

import grpc
from etcd3aio import (
    Etcd3Client,
    EtcdConnectionError,
    EtcdError,
    EtcdTransientError,
    prefix_range_end,
)
from etcd3aio._protobuf import Compare, RequestOp, TxnRequest
from etcd3aio.kv import KVService
from etcd3aio.watch import WatchService

from geoplex.servers._runtime.errors import InvalidArgument

from ..domain import (
    MetadataUnavailable,
    TopicExists,
    TopicSpec,
    UnknownTopic,
    decode_spec,
    encode_spec,
)

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/geoplex/broker"
DEFAULT_TIMEOUT_S = 3.0
DEFAULT_MAX_TXN_OPS = 128  # etcd's --max-txn-ops default
DEFAULT_MAX_TXN_BYTES = 1 << 20  # below etcd's --max-request-bytes default, 1.5 MiB
OFFSET_DIGITS = 20  # an int64 has at most 19
WATCH_BACKOFF_S = (0.25, 5.0)
ETCD_PUT, ETCD_DELETE = 0, 1  # mvccpb.Event.EventType

T = TypeVar("T")
V = TypeVar("V")
TopicPartition = tuple[str, int]
# what a call may fail with when etcd is down, slow or busy (not a bad request)
UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                               grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
                               grpc.StatusCode.CANCELLED})


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says etcd cannot answer now (down, partitioned, overloaded, electing),
    as opposed to a request etcd refuses (a bug, a missing lease, a permission)."""
    if isinstance(exc, (EtcdConnectionError, EtcdTransientError, TimeoutError, OSError)):
        return True
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in UNREACHABLE_CODES


@functools.cache
def _capacity(budget: int, need: int) -> int:
    """The most operations one level with ``budget`` can hold, nesting as needed, when each
    needs ``need`` of the budget left below it (a conditional put: 2)."""
    return max([budget - need, 0] + [k * _capacity(budget - k, need) for k in range(2, budget)])


def _nest(ops: list[RequestOp], budget: int, need: int = 0) -> list[RequestOp]:
    """``ops`` as one level that passes etcd's ``--max-txn-ops`` check: at most ``budget``
    operations, nested in unconditional sub-transactions (so the whole stays one atomic
    transaction) where there are too many. etcd checks each nested transaction against
    what its parents left: ``budget`` minus each parent level's operation count."""
    if len(ops) <= budget - need:
        return ops
    for k in range(2, budget):
        if k * _capacity(budget - k, need) >= len(ops):
            size = -(-len(ops) // k)
            return [RequestOp(request_txn=TxnRequest(success=_nest(ops[i:i + size],
                                                                   budget - k, need)))
                    for i in range(0, len(ops), size)]
    raise ValueError(f"{len(ops)} operations do not fit one etcd transaction")


def _leaves(ops: Iterable[RequestOp], responses: Iterable[Any]) -> Iterator[Any]:
    """The responses of the leaf operations of a tree built by :func:`_nest`, in order
    (a nesting level is a sub-transaction without compares)."""
    for op, response in zip(ops, responses):
        if op.HasField("request_txn") and not op.request_txn.compare:
            yield from _leaves(op.request_txn.success, response.response_txn.responses)
        else:
            yield response


def _byte_chunks(ops: Sequence[RequestOp], limit: int) -> Iterator[int]:
    """Where to cut ``ops`` so that each transaction stays under ``limit`` bytes (the end
    index of each part; one part unless the operations are bigger)."""
    size = 0
    for i, op in enumerate(ops):
        grows = op.ByteSize() + 8  # the field's tag and length, and the nesting around it
        if size and size + grows > limit:
            yield i
            size = 0
        size += grows
    yield len(ops)


def encode_offset(offset: int) -> str:
    """Zero-padded to one width, so etcd's byte-wise value compare orders offsets."""
    return f"{offset:0{OFFSET_DIGITS}d}"


def _advance(key: str, value: str) -> RequestOp:
    """Put ``value`` at ``key`` if the key is absent or holds a lower offset; else read it.
    (Nested: etcd compares have no "or".)"""
    raw, put = key.encode(), KVService.txn_op_put(key, value)
    higher = TxnRequest(compare=[Compare(result=Compare.LESS, target=Compare.VALUE, key=raw,
                                         value=value.encode())],
                        success=[put], failure=[KVService.txn_op_get(key)])
    absent = TxnRequest(compare=[Compare(result=Compare.EQUAL, target=Compare.CREATE, key=raw,
                                         create_revision=0)],
                        success=[put], failure=[RequestOp(request_txn=higher)])
    return RequestOp(request_txn=absent)


class Etcd:
    """The client, the key layout and the one way every call is made (deadline, errors);
    one per broker process, shared by the metadata stores and the cluster store."""

    def __init__(self, client: Etcd3Client, prefix: str, timeout: float,
                 max_txn_ops: int, max_txn_bytes: int) -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        self.max_txn_ops = max(4, max_txn_ops)
        self.max_txn_bytes = max_txn_bytes

    @property
    def kv(self) -> KVService:
        if self.client.kv is None:
            raise MetadataUnavailable("the metadata store (etcd) client is not connected")
        return self.client.kv

    @property
    def watcher(self) -> WatchService:
        if self.client.watch is None:
            raise MetadataUnavailable("the metadata store (etcd) client is not connected")
        return self.client.watch

    async def call(self, what: str, op: Awaitable[T], timeout: float | None = None) -> T:
        """``op``'s answer; domain.MetadataUnavailable when etcd cannot answer (see
        :func:`unreachable`) within ``timeout`` (the store's deadline unless given)."""
        try:
            # the library's own deadline first
            async with asyncio.timeout((timeout or self.timeout) + 0.5):
                return await op
        except (EtcdError, grpc.aio.AioRpcError, TimeoutError, OSError) as exc:
            if not unreachable(exc):
                raise
            detail = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else \
                type(exc).__name__
            raise MetadataUnavailable(
                f"the metadata store (etcd) did not answer ({what}: {detail}); "
                "admin calls and commits fail until it is back") from None

    # keys
    def topic_key(self, name: str) -> str:
        return f"{self.prefix}/topics/{name}"

    def topics_prefix(self) -> str:
        return f"{self.prefix}/topics/"

    def groups_prefix(self) -> str:
        return f"{self.prefix}/groups/"

    def offsets_prefix(self, group: str, topic: str | None = None) -> str:
        base = f"{self.prefix}/groups/{group}/offsets/"
        return base if topic is None else f"{base}{topic}/"

    def offset_key(self, group: str, topic: str, partition: int) -> str:
        return f"{self.offsets_prefix(group, topic)}{partition}"

    def cursor_key(self, group: str) -> str:
        return f"{self.prefix}/cursors/{group}"

    def partitions_prefix(self, topic: str | None = None) -> str:
        base = f"{self.prefix}/partitions/"
        return base if topic is None else f"{base}{topic}/"

    def partition_key(self, topic: str, partition: int) -> str:
        return f"{self.partitions_prefix(topic)}{partition}"

    def brokers_prefix(self) -> str:
        return f"{self.prefix}/brokers/"

    def broker_key(self, broker_id: int) -> str:
        return f"{self.brokers_prefix()}{broker_id}"

    def controller_key(self) -> str:
        return f"{self.prefix}/controller"

    def controller_epoch_key(self) -> str:
        return f"{self.prefix}/controller_epoch"

    # reading and following a part of the key space

    async def snapshot(self, key: str, decode: Callable[[str, Any], V | None], *,
                       prefix: bool = True, what: str) -> tuple[int, dict[str, V]]:
        """The etcd revision and every key below ``key`` (or the one key, unless ``prefix``)
        that ``decode(name, kv)`` accepts, by name (the rest of the key after ``key``)."""
        response = await self.call(what, self.kv.get(
            key, range_end=prefix_range_end(key) if prefix else None, timeout=self.timeout))
        found: dict[str, V] = {}
        for item in response.kvs:
            name = bytes(item.key).decode().removeprefix(key)
            value = decode(name, item)
            if value is not None:
                found[name] = value
        return int(response.header.revision), found

    async def follow(self, key: str, decode: Callable[[str, Any], V | None], *,
                     prefix: bool = True, what: str,
                     listed: tuple[int, dict[str, V]] | None = None
                     ) -> AsyncGenerator[list[tuple[str, V | None]], None]:
        """The changes below ``key`` (or of the one key, unless ``prefix``) in batches of
        (name, value) for a key put and (name, None) for one deleted, names as in
        :meth:`snapshot`; a value ``decode`` refuses is skipped.

        Without ``listed`` (a snapshot taken before), the first batch is everything there
        is (empty when nothing is); then one batch per etcd answer, in order. Runs until
        closed: while etcd is down it waits; after a broken stream or a compaction it
        lists again and yields the differences (a batch, empty when nothing changed), so
        no change is lost and none is repeated."""
        revision, known = listed if listed is not None else (0, {})
        known = dict(known)
        backoff = WATCH_BACKOFF_S[0]
        relist = listed is None
        range_end = prefix_range_end(key) if prefix else None
        while True:
            if relist:
                try:
                    revision, now = await self.snapshot(key, decode, prefix=prefix, what=what)
                except MetadataUnavailable:
                    await asyncio.sleep(backoff)  # a timer: etcd is not back yet
                    backoff = min(backoff * 2, WATCH_BACKOFF_S[1])
                    continue
                batch: list[tuple[str, V | None]] = [
                    (name, None) for name in sorted(known.keys() - now.keys())]
                batch += [(name, now[name]) for name in sorted(now)
                          if known.get(name) != now[name]]
                known, relist = now, False
                yield batch
            stream = self.watcher.watch(key, range_end=range_end, start_revision=revision + 1)
            created = 0
            try:
                async for response in stream:
                    backoff = WATCH_BACKOFF_S[0]
                    created += bool(response.created)
                    if response.canceled or response.compact_revision or created > 1:
                        # the history we need is gone, or the library reconnected on its
                        # own (from a revision we cannot check): read it all again
                        relist = True
                        break
                    batch = []
                    for event in response.events:
                        name = bytes(event.kv.key).decode().removeprefix(key)
                        if event.type == ETCD_DELETE:
                            if known.pop(name, None) is not None:
                                batch.append((name, None))
                            continue
                        value = decode(name, event.kv)
                        if value is not None and known.get(name) != value:
                            known[name] = value
                            batch.append((name, value))
                    if batch:
                        yield batch
                else:
                    relist = True  # the stream ended (not expected): start again
            except (EtcdError, grpc.aio.AioRpcError, OSError) as exc:
                log.warning("%s failed (%s); listing again in %.2f s",
                            what, type(exc).__name__, backoff)
                await asyncio.sleep(backoff)  # a timer before reconnecting
                backoff = min(backoff * 2, WATCH_BACKOFF_S[1])
                relist = True
            finally:
                if isinstance(stream, AsyncGenerator):
                    await stream.aclose()



class EtcdTopicStore:
    """ports.TopicStore on etcd."""

    def __init__(self, etcd: Etcd) -> None:
        self._etcd = etcd
        # what the last list() saw, so a watch started after it misses nothing and
        # repeats nothing: (revision, name -> spec)
        self._listed: tuple[int, dict[str, TopicSpec]] | None = None

    async def create(self, topic: TopicSpec) -> TopicSpec:
        """Stores the spec (its create time set now if 0); domain.TopicExists if the name
        is taken. A transaction retried after a lost answer finds its own spec: success."""
        if not topic.create_time_ms:
            topic = TopicSpec(topic.name, topic.partitions, topic.config,
                              int(time.time() * 1000))
        etcd, key, value = self._etcd, self._etcd.topic_key(topic.name), encode_spec(topic)
        kv = etcd.kv
        response = await etcd.call("create topic", kv.txn(
            compare=[kv.txn_compare_create_revision(key, 0)],
            success=[kv.txn_op_put(key, value)],
            failure=[kv.txn_op_get(key)], timeout=etcd.timeout))
        if not response.succeeded:
            kvs = response.responses[0].response_range.kvs
            if not kvs or bytes(kvs[0].value) != value:
                raise TopicExists(topic.name)
        return topic

    async def delete(self, name: str) -> None:
        """The topic and its partitions' assignments, in one transaction."""
        etcd = self._etcd
        kv, key, partitions = etcd.kv, etcd.topic_key(name), etcd.partitions_prefix(name)
        response = await etcd.call("delete topic", kv.txn(
            compare=[kv.txn_compare_version(key, 0, result=Compare.GREATER)],
            success=[kv.txn_op_delete(key),
                     kv.txn_op_delete(partitions, range_end=prefix_range_end(partitions))],
            timeout=etcd.timeout))
        if not response.succeeded:
            raise UnknownTopic(name)

    async def get(self, name: str) -> TopicSpec | None:
        etcd = self._etcd
        response = await etcd.call("get topic", etcd.kv.get(etcd.topic_key(name),
                                                            timeout=etcd.timeout))
        return self._decode(name, bytes(response.kvs[0].value)) if response.kvs else None

    async def list(self) -> Sequence[TopicSpec]:
        revision, specs = await self._list()
        self._listed = revision, specs
        return [specs[name] for name in sorted(specs)]

    async def _list(self) -> tuple[int, dict[str, TopicSpec]]:
        return await self._etcd.snapshot(self._etcd.topics_prefix(), self._decode_kv,
                                         what="list topics")

    @staticmethod
    def _decode(name: str, raw: bytes) -> TopicSpec | None:
        try:
            return decode_spec(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("topic %s: its metadata in etcd is not a topic spec; ignored", name)
            return None

    @classmethod
    def _decode_kv(cls, name: str, item: Any) -> TopicSpec | None:
        return cls._decode(name, bytes(item.value))

    async def watch(self) -> AsyncGenerator[tuple[str, TopicSpec | None], None]:
        """(name, spec) for each topic created or changed, (name, None) for each deleted,
        from the last list() on (without one, first every topic that exists). Runs until
        closed: while etcd is down it waits; after a broken stream or a compaction it
        lists again and yields the differences."""
        changes = self._etcd.follow(self._etcd.topics_prefix(), self._decode_kv,
                                    what="topic watch", listed=self._listed)
        try:
            async for batch in changes:
                for change in batch:
                    yield change
        finally:
            await changes.aclose()


class EtcdOffsetStore:
    """ports.OffsetStore on etcd: one transaction per commit."""

    def __init__(self, etcd: Etcd) -> None:
        self._etcd = etcd

    async def commit(self, group: str, offsets: Mapping[TopicPartition, int],
                     allow_backwards: bool = False) -> dict[TopicPartition, int]:
        """Store each offset unless the stored one is higher (any offset, under
        ``allow_backwards``), all in one transaction; returns the stored offset of every
        partition asked for after it."""
        if not offsets:
            return {}
        if any(offset < 0 for offset in offsets.values()):
            raise InvalidArgument("offsets", "an offset must be >= 0")
        etcd = self._etcd
        order = sorted(offsets)
        keys = [etcd.offset_key(group, t, p) for t, p in order]
        values = [encode_offset(offsets[tp]) for tp in order]
        if allow_backwards:
            ops = [KVService.txn_op_put(k, v) for k, v in zip(keys, values)]
        else:
            ops = [_advance(k, v) for k, v in zip(keys, values)]
        stored: dict[TopicPartition, int] = {}
        start = 0
        for end in _byte_chunks(ops, etcd.max_txn_bytes):
            part = order[start:end]
            success = _nest(ops[start:end], etcd.max_txn_ops, need=0 if allow_backwards else 2)
            response = await etcd.call("commit offsets", etcd.kv.txn(
                compare=[], success=success, timeout=etcd.timeout))
            if allow_backwards:
                stored.update((tp, offsets[tp]) for tp in part)
            else:
                for tp, leaf in zip(part, _leaves(success, response.responses)):
                    absent = leaf.response_txn
                    higher = absent.responses[0].response_txn
                    if absent.succeeded or higher.succeeded:
                        stored[tp] = offsets[tp]
                    else:  # the stored one is at least as high
                        value = higher.responses[0].response_range.kvs[0].value
                        stored[tp] = int(bytes(value))
            start = end
        return stored

    def _parse(self, group: str, kvs: Iterable[Any]) -> dict[TopicPartition, int]:
        base = self._etcd.offsets_prefix(group)
        out: dict[TopicPartition, int] = {}
        for item in kvs:
            topic, _, partition = bytes(item.key).decode().removeprefix(base).rpartition("/")
            try:
                out[(topic, int(partition))] = int(bytes(item.value))
            except ValueError:
                log.warning("group %s: a committed offset in etcd is not a number; ignored",
                            group)
        return out

    async def committed(self, group: str,
                        topics: Sequence[str] = ()) -> dict[TopicPartition, int]:
        """The group's committed offsets (of ``topics``, or all)."""
        etcd = self._etcd
        wanted = set(topics)
        start = etcd.offsets_prefix(group, topics[0] if len(wanted) == 1 else None)
        response = await etcd.call("read offsets", etcd.kv.get(
            start, range_end=prefix_range_end(start), timeout=etcd.timeout))
        found = self._parse(group, response.kvs)
        return {tp: offset for tp, offset in sorted(found.items())
                if not wanted or tp[0] in wanted}

    async def groups(self) -> Sequence[str]:
        """Every group with a committed offset, by name."""
        etcd = self._etcd
        start = etcd.groups_prefix()
        response = await etcd.call("list groups", etcd.kv.get(
            start, range_end=prefix_range_end(start), keys_only=True, timeout=etcd.timeout))
        names = {bytes(item.key).decode().removeprefix(start).partition("/")[0]
                 for item in response.kvs}
        return sorted(names)

    async def delete_topic(self, topic: str) -> None:
        """Forget every group's offsets of ``topic`` (one transaction, unless there are so
        many groups that it would be too big)."""
        etcd = self._etcd
        kv = etcd.kv
        deletes = [kv.txn_op_delete(prefix, range_end=prefix_range_end(prefix))
                   for prefix in (etcd.offsets_prefix(group, topic)
                                  for group in await self.groups())]
        start = 0
        for end in _byte_chunks(deletes, etcd.max_txn_bytes) if deletes else ():
            await etcd.call("delete offsets", kv.txn(
                compare=[], success=_nest(deletes[start:end], etcd.max_txn_ops),
                timeout=etcd.timeout))
            start = end


class EtcdCursorStore:
    """ports.CursorStore on etcd."""

    def __init__(self, etcd: Etcd) -> None:
        self._etcd = etcd

    async def get_cursor(self, group: str) -> int | None:
        etcd = self._etcd
        response = await etcd.call("read cursor", etcd.kv.get(etcd.cursor_key(group),
                                                              timeout=etcd.timeout))
        if not response.kvs:
            return None
        try:
            return int(bytes(response.kvs[0].value))
        except ValueError:
            log.warning("group %s: its retry cursor in etcd is not a number; ignored", group)
            return None

    async def set_cursor(self, group: str, offset: int) -> None:
        etcd = self._etcd
        await etcd.call("save cursor", etcd.kv.put(etcd.cursor_key(group), encode_offset(offset),
                                                   timeout=etcd.timeout))


class EtcdMeta:
    """One etcd connection for the broker's metadata: ``topics``, ``offsets``, ``cursors``.

    >>> async with EtcdMeta(["127.0.0.1:2379"]) as meta:
    ...     await meta.topics.list()
    """

    def __init__(self, endpoints: Sequence[str], prefix: str = DEFAULT_PREFIX,
                 timeout: float = DEFAULT_TIMEOUT_S,
                 max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
                 max_txn_bytes: int = DEFAULT_MAX_TXN_BYTES) -> None:
        if not endpoints:
            raise ValueError("endpoints: at least one host:port is needed")
        # the calls' own deadline bounds the retries of the library (3 attempts)
        self.client = Etcd3Client(list(endpoints))
        self._etcd = Etcd(self.client, prefix, timeout, max_txn_ops, max_txn_bytes)
        self.topics = EtcdTopicStore(self._etcd)
        self.offsets = EtcdOffsetStore(self._etcd)
        self.cursors = EtcdCursorStore(self._etcd)

    @property
    def prefix(self) -> str:
        return self._etcd.prefix

    @property
    def etcd(self) -> Etcd:
        """The connection, to share with the cluster store (one etcd client per process)."""
        return self._etcd

    async def connect(self) -> None:
        """Opens the channel (it connects lazily: a down etcd is found by the first call)."""
        await self.client.connect()

    async def ping(self) -> None:
        """A read of one key: domain.MetadataUnavailable when etcd does not answer."""
        etcd = self._etcd
        await etcd.call("ping", etcd.kv.get(etcd.topic_key(""), timeout=etcd.timeout))

    async def aclose(self) -> None:
        await self.client.close()

    async def __aenter__(self) -> EtcdMeta:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
