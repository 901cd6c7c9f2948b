"""Run each service in its own process, restart crashed ones, stop them all cleanly.

Used by ``geoplex up``. A process is ready when it prints the runtime's ready
line; its other output is forwarded with a ``[name]`` prefix. A process that
exits while the mesh is up is logged and restarted with exponential backoff
(capped), so one crash never takes the mesh down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str  # e.g. "proximity-1"
    argv: Sequence[str]
    env: Mapping[str, str]


@dataclass
class _Child:
    spec: ProcessSpec
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: int = 0
    started_at: float = 0.0
    pump: asyncio.Task[None] | None = None


class SupervisorError(RuntimeError):
    pass


class Supervisor:
    def __init__(self, specs: Sequence[ProcessSpec], *,
                 output: Callable[[str], None] = lambda line: print(line, flush=True),
                 ready_timeout: float = 60.0, max_backoff: float = 30.0) -> None:
        self.children = [_Child(spec) for spec in specs]
        self.output = output
        self.ready_timeout = ready_timeout
        self.max_backoff = max_backoff
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []

    async def _spawn(self, child: _Child) -> None:
        env = {**os.environ, **child.spec.env, "PYTHONUNBUFFERED": "1"}
        child.ready.clear()
        from geoplex.infra.local import with_parent_death_signal

        child.proc = await asyncio.create_subprocess_exec(
            *with_parent_death_signal(list(child.spec.argv)), env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        child.started_at = time.monotonic()
        child.pump = asyncio.create_task(self._pump(child))

    async def _pump(self, child: _Child) -> None:
        assert child.proc is not None and child.proc.stdout is not None
        async for raw in child.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if " ready on " in line:
                child.ready.set()
            self.output(f"[{child.spec.name}] {line}")

    async def start(self) -> None:
        """Start every process and wait until each says it is ready."""
        for child in self.children:
            await self._spawn(child)
        try:
            for child in self.children:
                await self._wait_ready(child)
        except BaseException:
            await self.stop()
            raise
        self._watchers = [asyncio.create_task(self._watch(c)) for c in self.children]

    async def _wait_ready(self, child: _Child) -> None:
        assert child.proc is not None
        ready = asyncio.create_task(child.ready.wait())
        exited = asyncio.create_task(child.proc.wait())
        done, _ = await asyncio.wait({ready, exited}, timeout=self.ready_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        for task in (ready, exited):
            if task not in done:
                task.cancel()
        if ready in done:
            return
        if exited in done:
            if child.pump:
                await child.pump
            raise SupervisorError(f"{child.spec.name} exited with code "
                                  f"{child.proc.returncode} before it was ready (see its output "
                                  "above)")
        raise SupervisorError(f"{child.spec.name} was not ready within {self.ready_timeout:.0f}s")

    async def _watch(self, child: _Child) -> None:
        while not self._stopping:
            assert child.proc is not None
            code = await child.proc.wait()
            if child.pump:
                await child.pump
            if self._stopping:
                return
            uptime = time.monotonic() - child.started_at
            child.restarts = 0 if uptime > 60 else child.restarts + 1
            delay = min(self.max_backoff, 0.5 * 2 ** child.restarts)
            log.warning("%s exited with code %s after %.1fs; restarting in %.1fs",
                        child.spec.name, code, uptime, delay)
            self.output(f"[supervisor] {child.spec.name} exited with code {code}; "
                        f"restarting in {delay:.1f}s")
            await asyncio.sleep(delay)
            if self._stopping:
                return
            await self._spawn(child)
            try:
                await self._wait_ready(child)
                self.output(f"[supervisor] {child.spec.name} restarted")
            except SupervisorError as exc:
                self.output(f"[supervisor] {exc}")

    def pids(self) -> dict[str, int]:
        return {c.spec.name: c.proc.pid for c in self.children
                if c.proc is not None and c.proc.returncode is None}

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every process (they drain in-flight calls), SIGKILL after ``timeout``."""
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        live = [c for c in self.children if c.proc is not None and c.proc.returncode is None]
        for child in live:
            assert child.proc is not None
            try:
                child.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        for child in live:
            assert child.proc is not None
            try:
                await asyncio.wait_for(child.proc.wait(), timeout)
            except TimeoutError:
                child.proc.kill()
                await child.proc.wait()
        for child in self.children:
            if child.pump is not None:
                try:
                    await asyncio.wait_for(child.pump, 2)
                except (TimeoutError, asyncio.CancelledError):
                    pass


def python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]
