"""Telemetry watches the whole mesh through the registry, with no configuration.

Every process of the mesh registers in etcd (``servers/_runtime/registry.py``) and pushes
its own metrics here over OTLP. :class:`MeshWatch` follows the registry and, every
``interval`` seconds, asks each registered process for its health over gRPC (the
standard health service), as Prometheus probes the targets its service discovery finds.
Each round writes, at one timestamp:

- ``up{job=<service>, slot=<slot>}``: 1 when a process holding the slot answers SERVING,
  else 0. A slot is the supervisor's name for the process (``proximity-1``: the same
  across restarts, as a StatefulSet's pod name), else the process's own ``host:pid``.
- ``geoplex_mesh_processes{job=<service>}``: how many processes of the service are
  registered.
- ``geoplex_mesh_probe_duration_seconds{job, slot}``: how long the health check took.
- ``geoplex_mesh_unclean_exits_total{job, slot}``: processes of the slot that left the
  registry without a graceful stop (their lease expired), counted from 0 since telemetry
  started; a death is seen even when the supervisor's restart is back before any probe
  (the default rule ``InstanceCrashed``).

A slot whose process vanished without a graceful stop (kill -9, a crash: its entry
expired while it still said ``serving``, or it stopped answering) stays, with ``up`` 0,
until a process takes the slot again, or ``forget_s`` passes; so the default rule
``InstanceDown`` fires for it and resolves when the supervisor's restart is back. A slot
whose process stopped gracefully (its entry said ``stopping``) is marked stale at once:
a deliberate stop pages no one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from geoplex.clients.mesh import health_of
from geoplex.clients.registry import HEALTH_STOPPING, MeshRegistry, Registration
from geoplex.servers._runtime.config import RegistryConfig

from .tsdb.api import Storage
from .tsdb.chunks import STALE_NAN
from .tsdb.labels import Labels, labels_of

logger = logging.getLogger(__name__)

UP, PROCESSES = "up", "geoplex_mesh_processes"
PROBE_DURATION, UNCLEAN_EXITS = ("geoplex_mesh_probe_duration_seconds",
                                 "geoplex_mesh_unclean_exits_total")


def slot_of(entry: Registration) -> str:
    return entry.slot or entry.instance


@dataclass
class _Slot:
    job: str
    slot: str
    lost_at: float = 0.0     # when its process vanished uncleanly (0: it has one)
    unclean_exits: int = 0   # processes of the slot that left without stopping


class MeshWatch:
    def __init__(self, store: Storage, registry: RegistryConfig, *, interval_s: float = 15.0,
                 timeout_s: float = 2.0, forget_s: float = 3600.0) -> None:
        self.store = store
        self.config = registry
        self.interval_s = interval_s
        self.timeout_s = min(timeout_s, interval_s)
        self.forget_s = forget_s
        self.entries: list[Registration] = []
        self.slots: dict[tuple[str, str], _Slot] = {}
        self.jobs: set[str] = set()
        self.rounds = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._registry: MeshRegistry | None = None
        self._changed = asyncio.Event()
        self._pending_stale: list[_Slot] = []   # slots to mark stale in the next round

    async def start(self) -> None:
        self._registry = MeshRegistry(self.config.endpoints, self.config.prefix)
        await self._registry.__aenter__()
        self._tasks = [asyncio.create_task(self._follow(), name="mesh-watch registry"),
                       asyncio.create_task(self._probe_forever(), name="mesh-watch probes")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._registry is not None:
            await self._registry.aclose()
            self._registry = None

    async def _follow(self) -> None:
        assert self._registry is not None
        async for entries in self._registry.follow():
            self._seen(entries, time.time())
            self._changed.set()

    def _seen(self, entries: Sequence[Registration], now: float) -> list[_Slot]:
        """Take the registry's new set; the slots that left gracefully (to mark stale)."""
        kept = {e.instance for e in entries}
        after = {(e.service, slot_of(e)) for e in entries}
        gone: list[_Slot] = []
        for entry in self.entries:
            if entry.instance in kept:
                continue
            key = (entry.service, slot_of(entry))
            slot = self.slots.get(key)
            if slot is None:
                continue
            if entry.health == HEALTH_STOPPING:
                if key not in after:
                    gone.append(self.slots.pop(key))
                continue
            # its lease expired while it said serving: killed, crashed, or cut off
            slot.unclean_exits += 1
            logger.warning("mesh: %s %s (pid %d) left the registry without stopping "
                           "(killed, or crashed)", entry.service, key[1], entry.pid)
            if key not in after and not slot.lost_at:
                slot.lost_at = now
        for entry in entries:
            key = (entry.service, slot_of(entry))
            slot = self.slots.setdefault(key, _Slot(*key))
            if entry.health != HEALTH_STOPPING:
                slot.lost_at = 0.0
        self.entries = list(entries)
        self._pending_stale += gone
        return gone

    async def _probe_forever(self) -> None:
        while True:
            started = time.time()
            try:
                await self.probe_once(started)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop must outlive one bad round
                logger.exception("mesh: a probe round failed; the next one tries again")
            # on the interval's grid; a registry change probes at once (a new process is
            # watched within a second, not an interval)
            delay = self.interval_s - (time.time() - started) % self.interval_s
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), delay)

    async def probe_once(self, now: float | None = None) -> None:
        """One round: every registered process health-checked, the samples written."""
        now = time.time() if now is None else now
        t_ms = int(now * 1000)
        # a process stopping gracefully is not probed: it is going, not down
        stopping = {(e.service, slot_of(e)) for e in self.entries
                    if e.health == HEALTH_STOPPING}
        entries = [e for e in self.entries if e.health != HEALTH_STOPPING]
        checks = await asyncio.gather(*(self._check(e) for e in entries))
        best: dict[tuple[str, str], tuple[float, float]] = {}
        counts: dict[str, int] = {}
        for entry, (healthy, seconds) in zip(entries, checks):
            key = (entry.service, slot_of(entry))
            counts[entry.service] = counts.get(entry.service, 0) + 1
            up = 1.0 if healthy else 0.0
            if key not in best or up > best[key][0]:
                best[key] = (up, seconds)
        batch: list[tuple[Labels, int, float]] = []
        for key, slot in list(self.slots.items()):
            if slot.lost_at and now - slot.lost_at > self.forget_s:
                del self.slots[key]
                self._pending_stale.append(slot)
                continue
            if key in stopping and key not in best:
                continue
            up, seconds = best.get(key, (0.0, math.nan))
            batch.append((self._labels(UP, slot), t_ms, up))
            batch.append((self._labels(UNCLEAN_EXITS, slot), t_ms, float(slot.unclean_exits)))
            if not math.isnan(seconds):
                batch.append((self._labels(PROBE_DURATION, slot), t_ms, seconds))
        self.jobs |= set(counts)
        for job in sorted(self.jobs):
            batch.append((labels_of({"__name__": PROCESSES, "job": job}), t_ms,
                          float(counts.get(job, 0))))
        stale, self._pending_stale = self._pending_stale, []
        for slot in stale:
            batch += [(self._labels(name, slot), t_ms, STALE_NAN)
                      for name in (UP, PROBE_DURATION, UNCLEAN_EXITS)]
        if batch:
            await asyncio.to_thread(self.store.append, batch)
        self.rounds += 1

    async def _check(self, entry: Registration) -> tuple[bool, float]:
        started = time.monotonic()
        health = await health_of(entry.address, timeout=self.timeout_s)
        return health == "SERVING", time.monotonic() - started

    @staticmethod
    def _labels(name: str, slot: _Slot) -> Labels:
        return labels_of({"__name__": name, "job": slot.job, "slot": slot.slot})
