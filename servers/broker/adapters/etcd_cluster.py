"""etcd adapter: the cluster's membership, controller election and partition assignments.

Keys, under the broker's prefix P (the one of etcd_meta.py, default ``/geoplex/broker``)::

    P/brokers/<id>               {"id", "address", "incarnation", "started_ms"}: on the
                                 broker's own lease
    P/controller                 {"id", "epoch", "incarnation"}: on the controller's lease
    P/controller_epoch           the last controller epoch, in decimal
    P/partitions/<topic>/<p>     {"replicas", "leader", "leader_epoch", "isr",
                                 "controller_epoch", "leader_incarnation"}; the key's
                                 mod_revision is the assignment's ``version``

- Registration: a lease of ``ceil(lease_s)`` seconds (at least 2, etcd's minimum) and the
  broker's key on it; a keep-alive every ``lease_s / 3`` written here (the library's own
  loop does not say when it fails). ``fence_deadline`` is the send time of the last
  answered keep-alive (or of the grant) plus the TTL less 0.5 s: until then the lease is
  surely alive, whatever etcd's clock did. When a keep-alive says the lease is gone (its
  TTL is 0), or keep-alives fail past the deadline, the broker registers again on a new
  lease, with the same ``BrokerInfo`` (the same process: the same incarnation), and the
  old lease is revoked (with whatever else was on it: a controller key).
- Election: one transaction, "if P/controller was never created and P/controller_epoch
  still holds what was read, put both" (the controller key on the broker's lease, the
  epoch one more). A loser watches P/controller until it is deleted and tries again. The
  winner remembers the revision of its put: every write it makes as controller also
  compares P/controller's mod_revision with it, so a deposed controller's writes fail even
  when a new controller has not written anything yet.
- Assignments: every write is a compare-and-swap on the key's mod_revision (version 0: the
  key must not exist). A topic and its assignments are created in one transaction (nested
  in sub-transactions past etcd's ``--max-txn-ops``), deleted in one (etcd_meta.py).
- Watches list at a revision, then follow from the next one; after a broken stream or a
  compaction they list again (``Etcd.follow``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, cast

import grpc
from etcd3aio import EtcdConnectionError, EtcdError
from etcd3aio._protobuf import Compare
from etcd3aio.lease import LeaseService

from ..domain import (
    BrokerInfo,
    ControllerInfo,
    MetadataUnavailable,
    PartitionAssignment,
    StaleAssignment,
    TopicExists,
    TopicSpec,
    assignment_from_dict,
    assignment_to_dict,
    encode_spec,
)
from .etcd_meta import (
    DEFAULT_PREFIX,
    DEFAULT_TIMEOUT_S,
    ETCD_DELETE,
    WATCH_BACKOFF_S,
    Etcd,
    EtcdMeta,
    _nest,
)

log = logging.getLogger(__name__)

MIN_TTL_S = 2  # etcd refuses shorter leases (it rounds them up to its minimum)
FENCE_MARGIN_S = 0.5  # the lease is trusted until this long before it could have expired
MIN_KEEPALIVE_S = 0.1
CAMPAIGN_RECHECK_S = 5.0  # a loser reads the controller again this often, watch or not


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def encode_broker(broker: BrokerInfo) -> bytes:
    return _dumps({"id": broker.id, "address": broker.address,
                   "incarnation": broker.incarnation, "started_ms": broker.started_ms})


def decode_broker(raw: bytes) -> BrokerInfo:
    """ValueError (or KeyError, TypeError) when ``raw`` is not a broker's registration."""
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return BrokerInfo(int(doc["id"]), str(doc["address"]), str(doc["incarnation"]),
                      int(doc.get("started_ms", 0)))


def encode_controller(info: ControllerInfo) -> bytes:
    return _dumps({"id": info.id, "epoch": info.epoch, "incarnation": info.incarnation})


def decode_controller(raw: bytes) -> ControllerInfo:
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return ControllerInfo(int(doc["id"]), int(doc["epoch"]), str(doc.get("incarnation", "")))


def encode_assignment(a: PartitionAssignment) -> bytes:
    return _dumps(assignment_to_dict(a))


def check_assignment(a: PartitionAssignment) -> None:
    """ValueError naming the field when ``a`` cannot be a partition's state."""
    if a.partition < 0:
        raise ValueError(f"partition: {a.partition} is negative")
    if not a.replicas or len(set(a.replicas)) != len(a.replicas):
        raise ValueError(f"replicas: {list(a.replicas)} must be distinct broker ids, at "
                         "least one")
    if not a.isr or not set(a.isr) <= set(a.replicas) or len(set(a.isr)) != len(a.isr):
        raise ValueError(f"isr: {list(a.isr)} must be distinct replicas, at least one")
    if a.leader != -1 and a.leader not in a.isr:
        raise ValueError(f"leader: {a.leader} is not in the isr {list(a.isr)}")


def _compare_mod(key: str, revision: int) -> Compare:
    return Compare(result=Compare.EQUAL, target=Compare.MOD, key=key.encode(),
                   mod_revision=revision)


class EtcdCluster:
    """ports.ClusterStore on etcd: one per broker process (it holds the broker's lease).

    Share the metadata store's connection, ``EtcdCluster(meta)`` (or ``meta.etcd``), or
    open one of its own, ``EtcdCluster.open(endpoints, prefix)``; close with :meth:`aclose`
    (which stops the keep-alive: :meth:`deregister` first for a clean shutdown).
    """

    def __init__(self, etcd: Etcd | EtcdMeta) -> None:
        self._etcd = etcd.etcd if isinstance(etcd, EtcdMeta) else etcd
        self._owned: EtcdMeta | None = None
        # the registration: what, on which lease, trusted until when
        self._broker: BrokerInfo | None = None
        self._lease_s = 0.0
        self._lease_id = 0
        self._ttl = 0
        self._deadline = 0.0
        self._registered = asyncio.Event()  # set while the key is on a lease thought alive
        self._lost = asyncio.Event()  # wakes the keep-alive loop: the lease is gone
        self._keepalive: asyncio.Task[None] | None = None
        # the election this process won last: (epoch, revision of its P/controller put)
        self._won: tuple[int, int] | None = None

    @classmethod
    def open(cls, endpoints: Sequence[str], prefix: str = DEFAULT_PREFIX,
             timeout: float = DEFAULT_TIMEOUT_S) -> EtcdCluster:
        """A store with its own etcd client (closed by :meth:`aclose`)."""
        meta = EtcdMeta(endpoints, prefix, timeout)
        cluster = cls(meta)
        cluster._owned = meta
        return cluster

    async def connect(self) -> None:
        if self._owned is not None:
            await self._owned.connect()

    async def aclose(self) -> None:
        """Stop the keep-alive (the lease then expires by itself) and close an own client."""
        await self._stop_keepalive()
        if self._owned is not None:
            await self._owned.aclose()

    async def __aenter__(self) -> EtcdCluster:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    @property
    def prefix(self) -> str:
        return self._etcd.prefix

    # ---- registration ------------------------------------------------------------------

    @property
    def fence_deadline(self) -> float:
        return self._deadline

    @property
    def lease_id(self) -> int:
        """The lease the broker's key is on now (0: not registered)."""
        return self._lease_id

    @property
    def registered(self) -> BrokerInfo | None:
        return self._broker

    def _leases(self) -> LeaseService:
        lease = self._etcd.client.lease
        if lease is None:
            raise MetadataUnavailable("the metadata store (etcd) client is not connected")
        return lease

    async def register(self, broker: BrokerInfo, lease_s: float) -> None:
        """Raises MetadataUnavailable (nothing is kept alive then: call again)."""
        if not lease_s > 0:
            raise ValueError(f"lease_s: {lease_s} must be > 0 seconds")
        if self._keepalive is not None:
            raise RuntimeError("register: this store holds a registration already "
                               "(deregister first)")
        self._broker, self._lease_s = broker, lease_s
        try:
            await self._put_registration()
        except BaseException:
            self._broker = None
            raise
        self._keepalive = asyncio.create_task(self._keep_alive(),
                                              name=f"broker {broker.id} lease keep-alive")

    async def _put_registration(self) -> None:
        """A new lease and the broker's key on it; the old lease (if any) revoked."""
        etcd, broker = self._etcd, self._broker
        assert broker is not None
        sent = time.monotonic()
        grant = await etcd.call("grant a lease", self._leases().grant(
            max(MIN_TTL_S, math.ceil(self._lease_s)), timeout=etcd.timeout))
        lease_id, ttl = int(grant.ID), int(grant.TTL)
        await etcd.call("register the broker", etcd.kv.put(
            etcd.broker_key(broker.id), encode_broker(broker), lease=lease_id,
            timeout=etcd.timeout))
        old, self._lease_id, self._ttl = self._lease_id, lease_id, ttl
        self._deadline = sent + ttl - FENCE_MARGIN_S
        self._won = None  # a controller key was on the old lease
        self._lost.clear()
        self._registered.set()
        if old:
            await self._revoke(old)

    async def _revoke(self, lease_id: int) -> None:
        """Revoke ``lease_id`` if etcd lets us (else it expires by itself)."""
        etcd = self._etcd
        try:
            await etcd.call("revoke a lease", self._leases().revoke(lease_id,
                                                                   timeout=etcd.timeout))
        except (MetadataUnavailable, EtcdError, grpc.aio.AioRpcError) as exc:
            log.info("lease %x not revoked (%s); it expires by itself", lease_id,
                     type(exc).__name__)

    async def _keep_alive(self) -> None:
        """Every lease_s / 3: renew the lease; register again when it is gone."""
        broker = self._broker
        assert broker is not None
        while True:
            interval = max(MIN_KEEPALIVE_S, min(self._lease_s, self._ttl or self._lease_s) / 3)
            try:  # a timer, unless woken because the lease is known to be gone
                await asyncio.wait_for(self._lost.wait(), interval)
            except TimeoutError:
                pass
            try:
                if not self._lost.is_set():
                    try:
                        if await self._renew(interval) > 0:
                            continue
                        log.warning("broker %d: its etcd lease %x expired; registering "
                                    "again on a new one", broker.id, self._lease_id)
                    except MetadataUnavailable:
                        if time.monotonic() < self._deadline:
                            continue
                        log.warning("broker %d: no keep-alive of its etcd lease answered in "
                                    "time; registering again on a new lease", broker.id)
                self._registered.clear()
                await self._put_registration()
                log.info("broker %d registered again (lease %x)", broker.id, self._lease_id)
            except MetadataUnavailable:
                pass  # etcd is not back yet: the next round tries again
            except (EtcdError, grpc.aio.AioRpcError) as exc:  # never let the loop die
                log.warning("broker %d: renewing its etcd lease failed (%s); retrying",
                            broker.id, type(exc).__name__)

    async def _renew(self, timeout: float) -> int:
        """One keep-alive of the current lease: the TTL etcd answers (0: the lease is gone);
        an answered one moves the fence deadline on."""
        lease_id = self._lease_id
        sent = time.monotonic()
        ttl = await self._etcd.call("keep the lease alive", self._keep_alive_once(lease_id),
                                    timeout=timeout)
        if ttl > 0 and lease_id == self._lease_id:
            self._deadline = max(self._deadline, sent + min(ttl, self._ttl) - FENCE_MARGIN_S)
            self._registered.set()  # (again, if etcd was away past the deadline)
        return ttl

    async def _keep_alive_once(self, lease_id: int) -> int:
        call = self._leases().keep_alive(lease_id)
        try:
            response = await call.read()
        finally:
            call.cancel()
        if response is grpc.aio.EOF:
            raise EtcdConnectionError("the lease keep-alive stream ended without an answer")
        return int(cast(Any, response).TTL)  # a LeaseKeepAliveResponse (untyped)

    def _lease_gone(self) -> None:
        """etcd said the lease does not exist: register again now."""
        self._registered.clear()
        self._lost.set()

    async def _stop_keepalive(self) -> None:
        task, self._keepalive = self._keepalive, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def deregister(self) -> None:
        """The keep-alive stops and the lease is revoked (when etcd answers: else it
        expires by itself, ``lease_s`` later)."""
        await self._stop_keepalive()
        lease_id, self._lease_id = self._lease_id, 0
        self._broker, self._deadline, self._won = None, 0.0, None
        self._registered.clear()
        if lease_id:
            await self._revoke(lease_id)

    # ---- brokers -----------------------------------------------------------------------

    @staticmethod
    def _broker_from(name: str, item: Any) -> BrokerInfo | None:
        try:
            broker = decode_broker(bytes(item.value))
            if str(broker.id) != name:
                raise ValueError("its id is not its key's")
            return broker
        except (ValueError, KeyError, TypeError):
            log.warning("broker key %s in etcd is not a broker registration; ignored", name)
            return None

    async def brokers(self) -> dict[int, BrokerInfo]:
        etcd = self._etcd
        _, found = await etcd.snapshot(etcd.brokers_prefix(), self._broker_from,
                                       what="list brokers")
        return {b.id: b for b in sorted(found.values(), key=lambda b: b.id)}

    async def watch_brokers(self) -> AsyncGenerator[dict[int, BrokerInfo], None]:
        etcd = self._etcd
        changes = etcd.follow(etcd.brokers_prefix(), self._broker_from, what="broker watch")
        live: dict[str, BrokerInfo] = {}
        first = True
        try:
            async for batch in changes:
                for name, broker in batch:
                    if broker is None:
                        live.pop(name, None)
                    else:
                        live[name] = broker
                if batch or first:
                    first = False
                    yield {b.id: b for b in sorted(live.values(), key=lambda b: b.id)}
        finally:
            await changes.aclose()

    # ---- the controller ----------------------------------------------------------------

    @staticmethod
    def _controller_from(name: str, item: Any) -> ControllerInfo | None:
        try:
            return decode_controller(bytes(item.value))
        except (ValueError, KeyError, TypeError):
            log.warning("the controller key in etcd is not a controller; ignored")
            return None

    async def campaign(self, broker: BrokerInfo) -> ControllerInfo:
        """Waits for :meth:`register` of ``broker`` first (the controller key lives on its
        lease) and while it registers again; ValueError when another broker is registered
        on this store."""
        etcd = self._etcd
        kv, key, epoch_key = etcd.kv, etcd.controller_key(), etcd.controller_epoch_key()
        while True:
            await self._registered.wait()
            registered, lease_id = self._broker, self._lease_id
            if registered is None or (registered.id, registered.incarnation) != (
                    broker.id, broker.incarnation):
                raise ValueError(f"broker: {broker.id} is not the broker registered on this "
                                 "store; the controller key lives on its own lease")
            read = await etcd.call("read the controller", kv.txn(
                compare=[], success=[kv.txn_op_get(key), kv.txn_op_get(epoch_key)],
                timeout=etcd.timeout))
            held = read.responses[0].response_range.kvs
            if held:
                current = self._controller_from("", held[0])
                if (current is not None and (current.id, current.incarnation) == (
                        broker.id, broker.incarnation) and int(held[0].lease) == lease_id):
                    # ours already (a retried transaction, or a controller loop that restarts)
                    self._won = (current.epoch, int(held[0].mod_revision))
                    return current
                await self._wait_deleted(key, int(read.header.revision))
                continue
            epochs = read.responses[1].response_range.kvs
            raw = bytes(epochs[0].value) if epochs else None
            try:
                last = int(raw) if raw is not None else 0
            except ValueError:
                log.warning("the controller epoch in etcd is not a number; counting from 0")
                last = 0
            info = ControllerInfo(broker.id, last + 1, broker.incarnation)
            same_epoch = (kv.txn_compare_value(epoch_key, raw) if raw is not None
                          else kv.txn_compare_version(epoch_key, 0))
            try:
                won = await etcd.call("campaign for controller", kv.txn(
                    compare=[kv.txn_compare_create_revision(key, 0), same_epoch],
                    success=[kv.txn_op_put(key, encode_controller(info), lease=lease_id),
                             kv.txn_op_put(epoch_key, str(info.epoch))],
                    timeout=etcd.timeout))
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                self._lease_gone()  # "requested lease not found": it expired meanwhile
                continue
            if won.succeeded:
                self._won = (info.epoch, int(won.header.revision))
                return info

    async def _wait_deleted(self, key: str, revision: int) -> None:
        """Until ``key`` is deleted after ``revision`` (or the watch cannot tell, or a while
        has passed: the caller reads it again)."""
        stream = self._etcd.watcher.watch(key, start_revision=revision + 1)
        try:
            async with asyncio.timeout(CAMPAIGN_RECHECK_S):
                async for response in stream:
                    if response.canceled or response.compact_revision or any(
                            event.type == ETCD_DELETE for event in response.events):
                        return
        except TimeoutError:
            return
        except (EtcdError, grpc.aio.AioRpcError, OSError) as exc:
            log.warning("controller watch failed (%s); reading it again", type(exc).__name__)
            await asyncio.sleep(WATCH_BACKOFF_S[0])  # a backoff before reading again
        finally:
            if isinstance(stream, AsyncGenerator):
                await stream.aclose()

    async def controller(self) -> ControllerInfo | None:
        etcd = self._etcd
        response = await etcd.call("read the controller", etcd.kv.get(
            etcd.controller_key(), timeout=etcd.timeout))
        return self._controller_from("", response.kvs[0]) if response.kvs else None

    async def watch_controller(self) -> AsyncGenerator[ControllerInfo | None, None]:
        etcd = self._etcd
        changes = etcd.follow(etcd.controller_key(), self._controller_from, prefix=False,
                              what="controller watch")
        current: ControllerInfo | None = None
        first = True
        try:
            async for batch in changes:
                if batch:
                    current = batch[-1][1]
                if batch or first:
                    first = False
                    yield current
        finally:
            await changes.aclose()

    # ---- assignments -------------------------------------------------------------------

    def _assignment_decoder(self, topic: str | None
                            ) -> Callable[[str, Any], PartitionAssignment | None]:
        def decode(name: str, item: Any) -> PartitionAssignment | None:
            where = name if topic is None else f"{topic}/{name}"
            t, _, p = where.rpartition("/")
            try:
                return assignment_from_dict(t, int(p), json.loads(bytes(item.value)),
                                            version=int(item.mod_revision))
            except (ValueError, KeyError, TypeError):
                log.warning("partition %s: its assignment in etcd is not one; ignored", where)
                return None
        return decode

    @staticmethod
    def _key_of(name: str) -> tuple[str, int]:
        topic, _, partition = name.rpartition("/")
        return topic, int(partition)

    async def assignments(self, topic: str | None = None) -> list[PartitionAssignment]:
        etcd = self._etcd
        _, found = await etcd.snapshot(etcd.partitions_prefix(topic),
                                       self._assignment_decoder(topic), what="list partitions")
        return sorted(found.values(), key=lambda a: a.key)

    async def _assignment(self, topic: str, partition: int) -> PartitionAssignment | None:
        etcd = self._etcd
        response = await etcd.call("read an assignment", etcd.kv.get(
            etcd.partition_key(topic, partition), timeout=etcd.timeout))
        return (self._assignment_decoder(topic)(str(partition), response.kvs[0])
                if response.kvs else None)

    async def watch_assignments(
            self) -> AsyncGenerator[list[PartitionAssignment | tuple[str, int]], None]:
        etcd = self._etcd
        changes = etcd.follow(etcd.partitions_prefix(), self._assignment_decoder(None),
                              what="partition watch")
        first = True
        try:
            async for batch in changes:
                out: list[PartitionAssignment | tuple[str, int]] = [
                    self._key_of(name) if a is None else a for name, a in batch]
                if out or first:
                    first = False
                    yield out
        finally:
            await changes.aclose()

    async def create_topic(self, spec: TopicSpec,
                           assignments: list[PartitionAssignment]) -> TopicSpec:
        """The spec (its create time set now if 0) and every partition's assignment in one
        transaction; domain.TopicExists if the name is taken (a transaction retried after
        a lost answer finds its own spec: success)."""
        if sorted(a.partition for a in assignments) != list(range(spec.partitions)) or any(
                a.topic != spec.name for a in assignments):
            raise ValueError(f"assignments: one per partition 0..{spec.partitions - 1} of "
                             f"topic {spec.name!r} is needed")
        for a in assignments:
            check_assignment(a)
        if not spec.create_time_ms:
            spec = replace(spec, create_time_ms=int(time.time() * 1000))
        etcd = self._etcd
        kv, key, value = etcd.kv, etcd.topic_key(spec.name), encode_spec(spec)
        puts = [kv.txn_op_put(key, value)] + [
            kv.txn_op_put(etcd.partition_key(a.topic, a.partition), encode_assignment(a))
            for a in assignments]
        response = await etcd.call("create topic", kv.txn(
            compare=[kv.txn_compare_create_revision(key, 0)],
            success=_nest(puts, etcd.max_txn_ops), failure=[kv.txn_op_get(key)],
            timeout=etcd.timeout))
        if not response.succeeded:
            kvs = response.responses[0].response_range.kvs
            if not kvs or bytes(kvs[0].value) != value:
                raise TopicExists(spec.name)
        return spec

    async def update_assignment(self, new: PartitionAssignment,
                                controller: ControllerInfo | None = None
                                ) -> PartitionAssignment:
        """A controller's write (``controller`` given) fails with StaleAssignment, its
        ``current`` the stored assignment unchanged, once this process is not that
        controller any more."""
        check_assignment(new)
        etcd = self._etcd
        kv, key = etcd.kv, etcd.partition_key(new.topic, new.partition)
        compare = [_compare_mod(key, new.version) if new.version
                   else kv.txn_compare_create_revision(key, 0)]
        if controller is not None:
            won = self._won
            if won is None or won[0] != controller.epoch:
                raise StaleAssignment(await self._assignment(new.topic, new.partition))
            compare.append(_compare_mod(etcd.controller_key(), won[1]))
        value = encode_assignment(new)
        response = await etcd.call("update an assignment", kv.txn(
            compare=compare, success=[kv.txn_op_put(key, value)],
            failure=[kv.txn_op_get(key)], timeout=etcd.timeout))
        if response.succeeded:
            return replace(new, version=int(response.header.revision))
        kvs = response.responses[0].response_range.kvs
        current = (self._assignment_decoder(new.topic)(str(new.partition), kvs[0])
                   if kvs else None)
        if current is not None and bytes(kvs[0].value) == value:
            return current  # stored already (a transaction retried after a lost answer)
        raise StaleAssignment(current)
