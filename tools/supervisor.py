"""Run each service in its own process, restart crashed ones, stop them all cleanly.

Used by ``geoplex up``. Each process is a :class:`~geoplex.infra.process.Process`: ready
when it prints the runtime's ready line, its output kept in ``<log_dir>/<name>.log``
and forwarded with a ``[name]`` prefix. A process that exits while the mesh is up is
logged and restarted with exponential backoff (capped), so one crash never takes the
mesh down.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from geoplex.infra.process import READY_LINE, Process, ProcessError, stop_all

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str  # e.g. "proximity-1"
    argv: Sequence[str]
    env: Mapping[str, str]
    # the processes stop in rounds of rising stop_order, each round once the one before
    # has exited: what others write to (the broker) stops after its writers, so their
    # last flush on the way down still finds it
    stop_order: int = 0


@dataclass
class _Child:
    process: Process
    stop_order: int = 0
    restarts: int = 0
    started_at: float = 0.0

    @property
    def name(self) -> str:
        return self.process.name


class SupervisorError(RuntimeError):
    pass


class Supervisor:
    def __init__(self, specs: Sequence[ProcessSpec], *,
                 output: Callable[[str], None] = lambda line: print(line, flush=True),
                 log_dir: Path | None = None,
                 ready_timeout: float = 60.0, max_backoff: float = 30.0) -> None:
        """``log_dir``: where each process's log is kept (default: a temporary directory,
        removed by :meth:`stop`)."""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="geoplex-supervisor-")
            log_dir = Path(self._tmp.name)
        self.output = output
        self._output_lock = threading.Lock()  # lines come from each process's reader thread
        self.children = [_Child(Process(
            # GEOPLEX_PROCESS_NAME: the process's slot in the registry, kept across restarts
            spec.name, list(spec.argv), log_dir / f"{spec.name}.log",
            env={**spec.env, "GEOPLEX_PROCESS_NAME": spec.name},
            ready_line=READY_LINE, ready_timeout=ready_timeout,
            on_line=self._forward_as(spec.name)), spec.stop_order) for spec in specs]
        self.max_backoff = max_backoff
        self._watchers: list[asyncio.Task[None]] = []

    def _say(self, line: str) -> None:
        with self._output_lock:
            self.output(line)

    def _forward_as(self, name: str) -> Callable[[str], None]:
        return lambda line: self._say(f"[{name}] {line}")

    def _spawn(self, child: _Child) -> None:
        child.process.start()
        child.started_at = time.monotonic()

    async def start(self) -> None:
        """Start every process and wait until each says it is ready."""
        try:
            for child in self.children:
                self._spawn(child)
            for child in self.children:
                await self._wait_ready(child)
        except BaseException:
            await self.stop()
            raise
        self._watchers = [asyncio.create_task(self._watch(c)) for c in self.children]

    @staticmethod
    async def _wait_ready(child: _Child) -> None:
        try:
            await child.process.wait_ready_async()
        except ProcessError as exc:
            raise SupervisorError(str(exc)) from None

    async def _watch(self, child: _Child) -> None:
        while True:
            code = await child.process.wait_async()
            uptime = time.monotonic() - child.started_at
            child.restarts = 0 if uptime > 60 else child.restarts + 1
            delay = min(self.max_backoff, 0.5 * 2 ** child.restarts)
            log.warning("%s exited with code %s after %.1fs; restarting in %.1fs",
                        child.name, code, uptime, delay)
            self._say(f"[supervisor] {child.name} exited with code {code}; "
                      f"restarting in {delay:.1f}s")
            await asyncio.sleep(delay)
            self._spawn(child)
            try:
                await self._wait_ready(child)
                self._say(f"[supervisor] {child.name} restarted")
            except SupervisorError as exc:  # stopped; the next turn restarts it again
                self._say(f"[supervisor] {exc}")

    def pids(self) -> dict[str, int]:
        return {c.name: c.process.proc.pid for c in self.children
                if c.process.proc is not None and c.process.running}

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the processes (they drain in-flight calls) a round of ``stop_order`` at
        a time, SIGKILL what is left of a round after ``timeout``."""
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        self._watchers = []
        for order in sorted({c.stop_order for c in self.children}):
            await asyncio.to_thread(stop_all, [c.process for c in self.children
                                               if c.stop_order == order], timeout)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]
