"""The mesh's registry, written: every server process registers itself in etcd.

Once a server listens, :class:`Registrar` grants a lease of ``ttl_s`` seconds and puts
the process's :class:`~geoplex.clients.registry.Registration` on it under
``<prefix>/<service>/<instance>``; a keep-alive every ``ttl_s / 3`` keeps it. A process
that dies (kill -9, a crash, a lost machine) stops renewing, and etcd deletes the entry
at most ``ttl_s`` later; a graceful stop marks the entry ``stopping`` as health goes
NOT_SERVING, then revokes the lease, so the entry goes at once.

The registry is a directory, not a dependency: a server whose etcd is away still starts
and serves, says so once, and registers when etcd answers again (retrying with a growing
pause, at most ``ttl_s``). When etcd lost the lease (it was away longer than the TTL), the
next keep-alive finds it gone and the entry is put again on a new lease.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, cast

import grpc
from etcd3aio import Etcd3Client, EtcdError

from geoplex.clients.registry import Registration, entry_key

from .config import RegistryConfig

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 2.0


class Registrar:
    """Keeps one process's entry in the registry while it runs."""

    def __init__(self, config: RegistryConfig, registration: Registration) -> None:
        self.config = config
        self.registration = registration
        self.key = entry_key(config.prefix, registration.service, registration.instance)
        self._client = Etcd3Client(list(config.endpoints))
        self._lease_id = 0
        self._task: asyncio.Task[None] | None = None
        self._registered = asyncio.Event()
        self._wake = asyncio.Event()

    @property
    def lease_id(self) -> int:
        return self._lease_id

    async def start(self) -> None:
        """Begin registering (in the background: start-up never waits for etcd)."""
        await self._client.connect()
        self._task = asyncio.create_task(self._run(), name="registry keep-alive")

    async def wait_registered(self, timeout: float) -> bool:
        """True once the entry is in etcd (within ``timeout`` seconds)."""
        try:
            await asyncio.wait_for(self._registered.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def set_health(self, health: str) -> None:
        """Put the entry again with ``health`` (on the same lease), if it is registered."""
        self.registration = dataclasses.replace(self.registration, health=health)
        if self._lease_id:
            try:
                await self._put(self._lease_id)
            except (EtcdError, grpc.aio.AioRpcError, TimeoutError, OSError):
                pass  # the entry goes with the lease anyway

    async def stop(self) -> None:
        """Stop renewing and revoke the lease (the entry goes now; or by itself within the
        TTL when etcd does not answer)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        lease_id, self._lease_id = self._lease_id, 0
        if lease_id and self._client.lease is not None:
            try:
                async with asyncio.timeout(CALL_TIMEOUT_S + 0.5):
                    await self._client.lease.revoke(lease_id, timeout=CALL_TIMEOUT_S)
            except (EtcdError, grpc.aio.AioRpcError, TimeoutError, OSError):
                log.info("registry: lease not revoked; the entry expires within %d s",
                         self.config.ttl_s)
        await self._client.close()

    # -- the keep-alive loop --------------------------------------------------------------

    async def _put(self, lease_id: int) -> None:
        kv = self._client.kv
        assert kv is not None
        async with asyncio.timeout(CALL_TIMEOUT_S + 0.5):
            await kv.put(self.key, self.registration.encode(), lease=lease_id,
                         timeout=CALL_TIMEOUT_S)

    async def _register(self) -> None:
        lease = self._client.lease
        assert lease is not None
        async with asyncio.timeout(CALL_TIMEOUT_S + 0.5):
            grant = await lease.grant(self.config.ttl_s, timeout=CALL_TIMEOUT_S)
        lease_id = int(grant.ID)
        await self._put(lease_id)
        self._lease_id = lease_id
        self._registered.set()

    async def _renew(self) -> int:
        """One keep-alive: the TTL etcd answers (0: the lease is gone)."""
        lease = self._client.lease
        assert lease is not None
        call = lease.keep_alive(self._lease_id)
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                response = await call.read()
        finally:
            call.cancel()
        if response is grpc.aio.EOF:
            raise OSError("the lease keep-alive stream ended without an answer")
        return int(cast(Any, response).TTL)

    async def _run(self) -> None:
        service = self.registration.service
        pause, away = 0.5, False
        interval = max(0.5, self.config.ttl_s / 3)
        while True:
            try:
                if not self._lease_id:
                    await self._register()
                    if away:
                        log.info("registry: %s registered (etcd answers again)", service)
                    away, pause = False, 0.5
                elif await self._renew() <= 0:
                    log.warning("registry: %s's lease expired (etcd was away longer than "
                                "%d s); registering again", service, self.config.ttl_s)
                    self._lease_id = 0
                    self._registered.clear()
                    continue
                await asyncio.sleep(interval)
            except asyncio.CancelledError:
                raise
            except (EtcdError, grpc.aio.AioRpcError, TimeoutError, OSError) as exc:
                if not away:
                    log.warning("registry: etcd at %s does not answer (%s); %s keeps serving "
                                "and registers when it does",
                                ", ".join(self.config.endpoints), _why(exc), service)
                    away = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, float(self.config.ttl_s))


def _why(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name
    return type(exc).__name__
