"""etcd adapter: what the notifier nodes share (ports.SharedState).

Keys, under a configurable prefix (default ``/geoplex/notifier``)::

    <prefix>/silences/<id>              the silence as JSON
    <prefix>/nflog/<idempotency key>    a claim on a notification: {"node", "at"}, on a lease
    <prefix>/log/<ns:020d>-<node>-<n>   one notification log record as JSON

- A silence is created by a transaction that puts it only if the key was never created;
  it is changed (expired) by one that puts it only if its mod revision is the one read.
  Every node follows ``silences/`` (a list, then a watch from that revision; after a
  broken stream or a compaction it lists again and yields the differences).
- **Claims**: before a node sends a notification it creates ``nflog/<key>`` in a
  transaction that succeeds only if the key does not exist, so of two nodes flushing the
  same group at once exactly one sends. The key is on a lease of a few repeat intervals
  (so a node that restarts does not send again what was sent); a claim older than
  ``reclaim_after`` (half the repeat interval) may be taken over by a second transaction
  comparing its mod revision, which is how a repeat of the same notification is claimed
  once too. A node whose delivery failed gives its claim back (a transaction comparing the
  value it wrote), so the next flush may try again. Leases are shared: one per TTL,
  granted again when half of it has passed.
- **The log**: each record is put under a key that sorts by time; ``trim(keep)`` deletes
  the oldest beyond ``keep`` with one range delete.
- Every call has a deadline (``timeout``, 3 s); an etcd that cannot be reached becomes
  ``Unavailable`` (UNAVAILABLE to a caller).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
from etcd3aio import (
    Etcd3Client,
    EtcdConnectionError,
    EtcdError,
    EtcdTransientError,
    SortOrder,
    prefix_range_end,
)
from etcd3aio._protobuf import Compare
from etcd3aio.kv import KVService
from etcd3aio.lease import LeaseService
from etcd3aio.watch import WatchService

from geoplex.servers._runtime.errors import Unavailable

from ..domain import Silence, silence_from_json, silence_to_json
from ..notification import Kind
from ..ports import DeliveryState, NotificationRecord, StoredSilence

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/geoplex/notifier"
DEFAULT_TIMEOUT_S = 3.0
WATCH_BACKOFF_S = (0.25, 5.0)
ETCD_DELETE = 1  # mvccpb.Event.EventType
MIN_TTL_S = 2
T = TypeVar("T")
UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                               grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
                               grpc.StatusCode.CANCELLED})


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says etcd cannot answer now (down, partitioned, overloaded), as
    opposed to a request etcd refuses (a bug)."""
    if isinstance(exc, (EtcdConnectionError, EtcdTransientError, TimeoutError, OSError)):
        return True
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in UNREACHABLE_CODES


def record_to_json(record: NotificationRecord) -> bytes:
    return json.dumps({
        "id": record.id, "receiver": record.receiver, "integration": record.integration,
        "group_key": record.group_key, "kind": record.kind.value,
        "fingerprints": list(record.fingerprints), "created_at": record.created_at,
        "state": record.state.value, "attempts": record.attempts, "error": record.error,
        "node": record.node}, separators=(",", ":")).encode()


def record_from_json(raw: bytes) -> NotificationRecord:
    data = json.loads(raw)
    return NotificationRecord(
        str(data["id"]), str(data["receiver"]), str(data["integration"]),
        str(data["group_key"]), Kind(data["kind"]), tuple(str(f) for f in data["fingerprints"]),
        float(data["created_at"]), DeliveryState(data["state"]), int(data["attempts"]),
        str(data["error"]), str(data["node"]))


class EtcdState:
    """ports.SharedState on etcd: one per notifier process.

    >>> state = EtcdState(["127.0.0.1:2379"], "/geoplex/notifier")
    >>> await state.connect(); await state.ping()
    """

    def __init__(self, endpoints: Sequence[str], prefix: str = DEFAULT_PREFIX,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if not endpoints:
            raise ValueError("endpoints: at least one host:port is needed")
        self.client = Etcd3Client(list(endpoints))
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        self._leases: dict[int, tuple[int, float]] = {}  # ttl -> (lease id, granted at)
        self._lease_lock = asyncio.Lock()

    # -- the connection -------------------------------------------------------------------

    async def connect(self) -> None:
        """Opens the channel (it connects lazily: a down etcd is found by the first call)."""
        await self.client.connect()

    async def aclose(self) -> None:
        await self.client.close()

    @property
    def kv(self) -> KVService:
        if self.client.kv is None:
            raise Unavailable("the notifier's shared state (etcd) client is not connected")
        return self.client.kv

    @property
    def _lease_service(self) -> LeaseService:
        if self.client.lease is None:
            raise Unavailable("the notifier's shared state (etcd) client is not connected")
        return self.client.lease

    @property
    def _watcher(self) -> WatchService:
        if self.client.watch is None:
            raise Unavailable("the notifier's shared state (etcd) client is not connected")
        return self.client.watch

    async def call(self, what: str, op: Awaitable[T]) -> T:
        """``op``'s answer; Unavailable when etcd cannot answer within the deadline."""
        try:
            async with asyncio.timeout(self.timeout + 0.5):  # the library's deadline first
                return await op
        except (EtcdError, grpc.aio.AioRpcError, TimeoutError, OSError) as exc:
            if not unreachable(exc):
                raise
            detail = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else \
                type(exc).__name__
            raise Unavailable(f"the notifier's shared state (etcd) did not answer ({what}: "
                              f"{detail}); silences and the notification log are "
                              "unavailable until it is back") from None

    async def ping(self) -> None:
        await self.call("ping", self.kv.get(self._key("silences", ""), timeout=self.timeout))

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}/{kind}/{name}"

    # -- silences -------------------------------------------------------------------------

    async def create_silence(self, silence: Silence) -> None:
        key, kv = self._key("silences", silence.id), self.kv
        response = await self.call("create a silence", kv.txn(
            compare=[kv.txn_compare_create_revision(key, 0)],
            success=[kv.txn_op_put(key, silence_to_json(silence))], timeout=self.timeout))
        if not response.succeeded:
            raise RuntimeError(f"silence id {silence.id} exists already")  # a uuid4: a bug

    async def get_silence(self, silence_id: str) -> StoredSilence | None:
        response = await self.call("read a silence", self.kv.get(
            self._key("silences", silence_id), timeout=self.timeout))
        if not response.kvs:
            return None
        item = response.kvs[0]
        silence = self._decode_silence(silence_id, bytes(item.value))
        return None if silence is None else StoredSilence(silence, int(item.mod_revision))

    async def replace_silence(self, silence: Silence, revision: int) -> bool:
        key, kv = self._key("silences", silence.id), self.kv
        response = await self.call("change a silence", kv.txn(
            compare=[Compare(result=Compare.EQUAL, target=Compare.MOD, key=key.encode(),
                             mod_revision=revision)],
            success=[kv.txn_op_put(key, silence_to_json(silence))], timeout=self.timeout))
        return bool(response.succeeded)

    async def delete_silence(self, silence_id: str, revision: int) -> bool:
        key, kv = self._key("silences", silence_id), self.kv
        response = await self.call("delete a silence", kv.txn(
            compare=[Compare(result=Compare.EQUAL, target=Compare.MOD, key=key.encode(),
                             mod_revision=revision)],
            success=[kv.txn_op_delete(key)], timeout=self.timeout))
        return bool(response.succeeded)

    @staticmethod
    def _decode_silence(name: str, raw: bytes) -> Silence | None:
        try:
            return silence_from_json(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("silence %s: what etcd holds is not a silence; ignored", name)
            return None

    async def _list_silences(self) -> tuple[int, dict[str, Silence]]:
        start = self._key("silences", "")
        response = await self.call("list silences", self.kv.get(
            start, range_end=prefix_range_end(start), timeout=self.timeout))
        found: dict[str, Silence] = {}
        for item in response.kvs:
            name = bytes(item.key).decode().removeprefix(start)
            silence = self._decode_silence(name, bytes(item.value))
            if silence is not None:
                found[name] = silence
        return int(response.header.revision), found

    async def follow_silences(self) -> AsyncGenerator[list[tuple[str, Silence | None]], None]:
        """Every silence (one batch), then the changes; see ports.SilenceStore."""
        start = self._key("silences", "")
        known: dict[str, Silence] = {}
        revision = 0
        relist = True
        backoff = WATCH_BACKOFF_S[0]
        while True:
            if relist:
                try:
                    revision, now = await self._list_silences()
                except Unavailable:
                    await asyncio.sleep(backoff)  # a timer: etcd is not back yet
                    backoff = min(backoff * 2, WATCH_BACKOFF_S[1])
                    continue
                batch: list[tuple[str, Silence | None]] = [
                    (name, None) for name in sorted(known.keys() - now.keys())]
                batch += [(name, now[name]) for name in sorted(now) if known.get(name) != now[name]]
                known, relist = now, False
                yield batch
            stream = self._watcher.watch(start, range_end=prefix_range_end(start),
                                         start_revision=revision + 1)
            created = 0
            try:
                async for response in stream:
                    backoff = WATCH_BACKOFF_S[0]
                    created += bool(response.created)
                    if response.canceled or response.compact_revision or created > 1:
                        relist = True  # history is gone, or the library reconnected itself
                        break
                    revision = max(revision, int(response.header.revision))
                    batch = []
                    for event in response.events:
                        name = bytes(event.kv.key).decode().removeprefix(start)
                        if event.type == ETCD_DELETE:
                            if known.pop(name, None) is not None:
                                batch.append((name, None))
                            continue
                        silence = self._decode_silence(name, bytes(event.kv.value))
                        if silence is not None and known.get(name) != silence:
                            known[name] = silence
                            batch.append((name, silence))
                    if batch:
                        yield batch
                else:
                    relist = True
            except (EtcdError, grpc.aio.AioRpcError, OSError) as exc:
                log.warning("the silence watch failed (%s); listing again in %.2f s",
                            type(exc).__name__, backoff)
                await asyncio.sleep(backoff)  # a timer before reconnecting
                backoff = min(backoff * 2, WATCH_BACKOFF_S[1])
                relist = True
            finally:
                closer = getattr(stream, "aclose", None)
                if closer is not None:
                    await closer()

    # -- claims ---------------------------------------------------------------------------

    async def _lease(self, ttl: float) -> int:
        """A lease of ``ttl`` seconds with at least half of it left, shared by claims."""
        seconds = max(MIN_TTL_S, math.ceil(ttl))
        async with self._lease_lock:
            held = self._leases.get(seconds)
            if held is not None and time.monotonic() - held[1] < seconds / 2:
                return held[0]
            grant = await self.call("grant a lease", self._lease_service.grant(
                seconds, timeout=self.timeout))
            self._leases[seconds] = (int(grant.ID), time.monotonic())
            return int(grant.ID)

    async def claim(self, key: str, node: str, now: float, ttl: float,
                    reclaim_after: float | None) -> str | None:
        name, kv = self._key("nflog", key), self.kv
        value = json.dumps({"node": node, "at": now}, separators=(",", ":")).encode()
        lease = await self._lease(ttl)
        response = await self.call("claim a notification", kv.txn(
            compare=[kv.txn_compare_create_revision(name, 0)],
            success=[kv.txn_op_put(name, value, lease=lease)],
            failure=[kv.txn_op_get(name)], timeout=self.timeout))
        if response.succeeded:
            return None
        kvs = response.responses[0].response_range.kvs
        if not kvs:  # gone meanwhile (its lease ran out): try once more
            return await self._create_again(name, value, lease)
        held = kvs[0]
        holder, at = _claim_of(bytes(held.value))
        if reclaim_after is None or now - at < reclaim_after:
            return holder
        taken = await self.call("claim a repeat", kv.txn(
            compare=[Compare(result=Compare.EQUAL, target=Compare.MOD, key=name.encode(),
                             mod_revision=int(held.mod_revision))],
            success=[kv.txn_op_put(name, value, lease=lease)],
            failure=[kv.txn_op_get(name)], timeout=self.timeout))
        if taken.succeeded:
            return None
        again = taken.responses[0].response_range.kvs
        return _claim_of(bytes(again[0].value))[0] if again else "another node"

    async def _create_again(self, name: str, value: bytes, lease: int) -> str | None:
        kv = self.kv
        response = await self.call("claim a notification", kv.txn(
            compare=[kv.txn_compare_create_revision(name, 0)],
            success=[kv.txn_op_put(name, value, lease=lease)],
            failure=[kv.txn_op_get(name)], timeout=self.timeout))
        if response.succeeded:
            return None
        kvs = response.responses[0].response_range.kvs
        return _claim_of(bytes(kvs[0].value))[0] if kvs else "another node"

    async def release(self, key: str, node: str) -> None:
        name, kv = self._key("nflog", key), self.kv
        response = await self.call("read a claim", kv.get(name, timeout=self.timeout))
        if not response.kvs:
            return
        held = response.kvs[0]
        if _claim_of(bytes(held.value))[0] != node:
            return
        await self.call("release a claim", kv.txn(
            compare=[Compare(result=Compare.EQUAL, target=Compare.MOD, key=name.encode(),
                             mod_revision=int(held.mod_revision))],
            success=[kv.txn_op_delete(name)], timeout=self.timeout))

    # -- the notification log -------------------------------------------------------------

    async def record(self, record: NotificationRecord) -> None:
        await self.call("write the notification log", self.kv.put(
            self._key("log", record.id), record_to_json(record), timeout=self.timeout))

    async def records(self) -> list[NotificationRecord]:
        start = self._key("log", "")
        response = await self.call("read the notification log", self.kv.get(
            start, range_end=prefix_range_end(start), sort_order=SortOrder.DESCEND,
            timeout=self.timeout))
        out = []
        for item in response.kvs:
            try:
                out.append(record_from_json(bytes(item.value)))
            except (ValueError, KeyError, TypeError):
                log.warning("a notification log record in etcd is malformed; ignored")
        return out

    async def trim(self, keep: int) -> int:
        start = self._key("log", "")
        end = prefix_range_end(start)
        counted = await self.call("count the notification log", self.kv.get(
            start, range_end=end, count_only=True, timeout=self.timeout))
        extra = int(counted.count) - keep
        if extra <= 0:
            return 0
        oldest = await self.call("read the notification log", self.kv.get(
            start, range_end=end, keys_only=True, limit=extra + 1,
            sort_order=SortOrder.ASCEND, timeout=self.timeout))
        cutoff = bytes(oldest.kvs[-1].key)  # the oldest record kept
        deleted = await self.call("trim the notification log", self.kv.delete(
            start, range_end=cutoff, timeout=self.timeout))
        return int(deleted.deleted)


def _claim_of(raw: bytes) -> tuple[str, float]:
    try:
        data: Any = json.loads(raw)
        return str(data["node"]), float(data["at"])
    except (ValueError, KeyError, TypeError):
        return "another node", math.inf

