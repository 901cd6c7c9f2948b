"""The mesh's registry, read: which Geoplex server processes run now, from etcd.

Every server process registers itself (``servers/_runtime/registry.py``) under a lease
it keeps alive, so its entry disappears by itself when the process dies::

    <prefix>/<service>/<instance>     a Registration as JSON

``instance`` is the process's ``host:pid``, the ``instance`` label of the metrics it
pushes to telemetry, so an entry and the process's series meet on it. The prefix is
``/geoplex/registry`` unless ``GEOPLEX_REGISTRY_PREFIX`` says otherwise.

:class:`MeshRegistry` lists the entries (:meth:`~MeshRegistry.processes`) and follows
them (:meth:`~MeshRegistry.follow`: the whole set again after every change, starting
with the current one), for ``geoplex mesh status`` and for telemetry's discovery.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

import grpc
from etcd3aio import Etcd3Client, EtcdError, prefix_range_end

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/geoplex/registry"
HEALTH_SERVING, HEALTH_STOPPING = "serving", "stopping"


class RegistryUnavailable(Exception):
    """etcd did not answer; the message says which endpoints were tried."""


@dataclass(frozen=True, slots=True)
class Registration:
    """One server process as it registered itself."""

    service: str            # the catalog's name: proximity, presence, broker...
    instance: str           # host:pid, the `instance` label of its metrics
    address: str            # host:port of its gRPC server
    pid: int
    host: str
    version: str
    started: float          # unix seconds
    health: str = HEALTH_SERVING   # serving | stopping (a graceful shutdown began)
    node: str = ""          # a cluster member's id (the broker's, a notifier's), else ""
    slot: str = ""          # the supervisor's name for it (proximity-1), the same across
    #                         restarts; else ""
    endpoints: dict[str, str] = field(default_factory=dict)  # e.g. {"http": "host:port"}

    @property
    def job(self) -> str:
        """The ``job`` label of its metrics in telemetry."""
        return self.service

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Registration:
        """The entry in ``raw``; ValueError when it is not one."""
        try:
            data: dict[str, Any] = json.loads(raw)
            return cls(service=str(data["service"]), instance=str(data["instance"]),
                       address=str(data["address"]), pid=int(data["pid"]),
                       host=str(data["host"]), version=str(data["version"]),
                       started=float(data["started"]),
                       health=str(data.get("health", HEALTH_SERVING)),
                       node=str(data.get("node", "")), slot=str(data.get("slot", "")),
                       endpoints={str(k): str(v) for k, v in
                                  dict(data.get("endpoints") or {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a registry entry: {exc}") from None

    def uptime_s(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.started)


def entry_key(prefix: str, service: str, instance: str) -> str:
    return f"{prefix.rstrip('/')}/{service}/{instance}"


class MeshRegistry:
    """Reads the registry in etcd (``async with MeshRegistry(endpoints) as registry``)."""

    def __init__(self, endpoints: Sequence[str], prefix: str = DEFAULT_PREFIX, *,
                 timeout: float = 3.0) -> None:
        if not endpoints:
            raise ValueError("endpoints: at least one etcd host:port is needed "
                             "(GEOPLEX_ETCD_ENDPOINTS)")
        self.endpoints = tuple(endpoints)
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        self._client = Etcd3Client(list(endpoints))
        self._connected = False

    async def __aenter__(self) -> MeshRegistry:
        await self._client.connect()
        self._connected = True
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._connected:
            self._connected = False
            await self._client.close()

    def _unavailable(self, exc: BaseException) -> RegistryUnavailable:
        detail = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else \
            type(exc).__name__
        return RegistryUnavailable(f"the registry (etcd at {', '.join(self.endpoints)}) did "
                                   f"not answer ({detail})")

    async def _range(self) -> tuple[list[Registration], int]:
        kv = self._client.kv
        if kv is None:
            raise RegistryUnavailable("the registry client is not connected (use async with)")
        start = (self.prefix + "/").encode()
        try:
            async with asyncio.timeout(self.timeout + 0.5):
                answer = await kv.get(start, prefix_range_end(start), timeout=self.timeout)
        except (EtcdError, grpc.aio.AioRpcError, TimeoutError, OSError) as exc:
            raise self._unavailable(exc) from None
        out = []
        for item in answer.kvs:
            try:
                out.append(Registration.decode(item.value))
            except ValueError as exc:  # someone else's key under our prefix: skipped
                log.warning("registry: skipping %s: %s", item.key.decode(errors="replace"), exc)
        out.sort(key=lambda r: (r.service, r.node, r.instance))
        return out, int(answer.header.revision)

    async def processes(self, service: str | None = None) -> list[Registration]:
        """Every registered process (of ``service``), by service, node and instance."""
        found, _ = await self._range()
        return [r for r in found if service is None or r.service == service]

    async def follow(self, *, retry_s: float = 1.0) -> AsyncIterator[list[Registration]]:
        """The registered processes now, then again after every change. When etcd is away
        it keeps trying (every ``retry_s``) and yields the set once it answers again."""
        watch_from = 0
        last: list[Registration] | None = None
        start = (self.prefix + "/").encode()
        while True:
            try:
                current, revision = await self._range()
            except RegistryUnavailable as exc:
                log.warning("%s; trying again in %.0f s", exc, retry_s)
                await asyncio.sleep(retry_s)
                continue
            if current != last:
                last = current
                yield current
            watch_from = revision + 1
            watcher = self._client.watch
            if watcher is None:
                raise RegistryUnavailable("the registry client is not connected")
            try:
                changes = watcher.watch(start, range_end=prefix_range_end(start),
                                        start_revision=watch_from)
                try:
                    async for response in changes:
                        if response.events or response.compact_revision:
                            break  # something changed: list again (a few entries, one read)
                finally:  # end the watch stream now, not when the generator is collected
                    close = getattr(changes, "aclose", None)
                    if close is not None:
                        await close()
            except (EtcdError, grpc.aio.AioRpcError, OSError) as exc:
                log.warning("%s; listing again", self._unavailable(exc))
                await asyncio.sleep(retry_s)
