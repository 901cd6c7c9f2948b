"""The coordinator: starts the worker processes, paces them, gathers what they measure."""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import queue
import time
from array import array
from collections.abc import Callable, Sequence
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from .config import SimConfig
from .friends import FriendGraph
from .results import SimResult, latency_summary_ms
from .roads import RoadNetwork
from .worker import COUNTERS, WorkerSpec, worker_main


class Simulator:
    """Runs the users in worker processes and gathers what they measure."""

    def __init__(self, config: SimConfig, net: RoadNetwork, graph: FriendGraph) -> None:
        if graph.n != config.users:
            raise ValueError(f"the graph has {graph.n} users, the config {config.users}")
        if config.interval_s <= 0 or config.duration_s <= 0 or config.users < 1:
            raise ValueError("users, interval and duration must be positive")
        self.config = config
        self.net = net
        self.graph = graph
        self.worker_pids: list[int] = []

    def run(self, progress: Callable[[str], None] = print,
            on_phase: Callable[[str], None] = lambda _p: None) -> SimResult:
        """Connect every user, send updates, measure one window; blocks until done.

        ``on_phase`` is called with ``"connected"`` (every stream open, before any
        update), ``"window_start"`` and ``"window_end"``, from this thread, so a
        benchmark can sample memory and CPU at those moments.
        """
        cfg = self.config
        k = max(1, min(cfg.processes, cfg.users))
        rng = np.random.default_rng(cfg.seed + 7)
        starts = rng.integers(0, self.net.nodes, size=cfg.users)
        shm = shared_memory.SharedMemory(create=True, size=cfg.users * 2 * 8)
        positions = np.ndarray((cfg.users, 2), dtype=np.float64, buffer=shm.buf)
        positions[:, 0] = self.net.lat[starts]
        positions[:, 1] = self.net.lon[starts]
        ctx = mp.get_context("spawn")
        outbox: Any = ctx.Queue()
        inboxes: list[Any] = [ctx.Queue() for _ in range(k)]
        procs = []
        try:
            for w in range(k):
                mine = tuple(range(w, cfg.users, k))
                spec = WorkerSpec(w, cfg, mine, tuple(int(starts[i]) for i in mine), shm.name,
                                   self.net, self.graph)
                proc = ctx.Process(target=worker_main, args=(spec, inboxes[w], outbox),
                                   name=f"presence-sim-{w}", daemon=True)
                proc.start()
                procs.append(proc)
            self.worker_pids = [p.pid for p in procs if p.pid is not None]
            return self._coordinate(k, procs, inboxes, outbox, progress, on_phase)
        finally:
            for inbox in inboxes:
                with contextlib.suppress(Exception):
                    inbox.put(("stop",))
            for proc in procs:
                proc.join(timeout=15)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
            del positions
            shm.close()
            shm.unlink()

    def _coordinate(self, k: int, procs: list[Any], inboxes: list[Any], outbox: Any,
                    progress: Callable[[str], None],
                    on_phase: Callable[[str], None]) -> SimResult:
        cfg = self.config
        t0 = time.perf_counter()
        connected: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + cfg.connect_timeout_s + 60
        last_note = 0.0
        while len(connected) < k:
            msg = self._get(outbox, procs, deadline)
            if msg[0] == "connected":
                connected[msg[1]] = msg[2]
            elif msg[0] == "connecting" and time.monotonic() - last_note > 1.0:
                last_note = time.monotonic()
                progress(f"  connecting... {msg[2]:,} streams open in worker {msg[1]}")
            elif msg[0] == "failed":
                raise RuntimeError(f"simulator worker {msg[1]} failed: {msg[2]}")
        connect_s = time.perf_counter() - t0
        n_connected = sum(c["connected"] for c in connected.values())
        per_server: dict[str, int] = {}
        for c in connected.values():
            for pid, count in c["per_server"].items():
                per_server[pid] = per_server.get(pid, 0) + count
        progress(f"  {n_connected:,}/{cfg.users:,} streams open in {connect_s:.1f} s "
                 f"(per server process: {per_server})")
        on_phase("connected")
        go = time.time() + 0.5
        w0 = go + cfg.warmup_s
        w1 = w0 + cfg.duration_s
        for inbox in inboxes:
            inbox.put(("go", go, w0, w1))
        ticks: dict[int, dict[int, dict[str, Any]]] = {}
        finals: dict[int, dict[str, Any]] = {}
        lines: list[dict[str, Any]] = []
        previous: dict[str, float] = {}
        phase = "warmup"
        cpu0 = cpu1 = (math.nan, 0.0)
        deadline = w1 + cfg.connect_timeout_s
        while len(finals) < k:
            now = time.time()
            if phase == "warmup" and now >= w0:
                phase = "window"
                cpu0 = (_cpu_seconds(self.worker_pids), time.perf_counter())
                on_phase("window_start")
            if phase == "window" and now >= w1:
                phase = "done"
                cpu1 = (_cpu_seconds(self.worker_pids), time.perf_counter())
                on_phase("window_end")
            wait_until = w0 if phase == "warmup" else w1 if phase == "window" else now + 1
            try:
                msg = outbox.get(timeout=max(0.01, min(0.5, wait_until - now)))
            except queue.Empty:
                self._check_alive(procs)
                if time.time() > deadline:
                    raise TimeoutError("simulator workers did not finish in time") from None
                continue
            if msg[0] == "tick":
                _, w, sec, data = msg
                ticks.setdefault(sec, {})[w] = data
                if len(ticks[sec]) == k:
                    line = _progress_line(sec, list(ticks.pop(sec).values()), previous,
                                          w0 - go, cfg.duration_s)
                    lines.append(line)
                    progress(line["text"])
            elif msg[0] == "done":
                finals[msg[1]] = msg[2]
            elif msg[0] == "failed":
                raise RuntimeError(f"simulator worker {msg[1]} failed: {msg[2]}")
        if phase != "done":
            cpu1 = (_cpu_seconds(self.worker_pids), time.perf_counter())
        return self._result(finals, connect_s, n_connected, per_server, lines, cpu0, cpu1, k)

    def _result(self, finals: dict[int, dict[str, Any]], connect_s: float, connected: int,
                per_server: dict[str, int], lines: list[dict[str, Any]],
                cpu0: tuple[float, float], cpu1: tuple[float, float], k: int) -> SimResult:
        cfg = self.config
        result = SimResult(users=cfg.users, connected=connected, processes=k,
                           interval_s=cfg.interval_s, acceleration=cfg.acceleration,
                           window_s=cfg.duration_s, connect_s=connect_s,
                           graph=self.graph.summary(), sessions_per_server=per_server)
        latencies = array("d")
        for final in finals.values():
            for key in ("updates_sent", "updates_rejected", "deliveries", "expected_deliveries",
                        "refreshes", "gone_events", "reconnects", "errors"):
                setattr(result, key, getattr(result, key) + final[key])
            result.first_error = result.first_error or final["first_error"]
            latencies.frombytes(final["latencies"])
        result.latencies_s = latencies.tolist()
        result.latency_ms = latency_summary_ms(result.latencies_s)
        wall = cpu1[1] - cpu0[1]
        if wall > 0:
            result.client_cpu_pct = (cpu1[0] - cpu0[0]) / wall * 100
        result.progress = [{k: v for k, v in line.items() if k != "text"} for line in lines]
        return result

    @staticmethod
    def _check_alive(procs: list[Any]) -> None:
        dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
        if dead:
            raise RuntimeError(f"simulator worker {dead[0].name} died "
                               f"(exit code {dead[0].exitcode})")

    @classmethod
    def _get(cls, outbox: Any, procs: list[Any], deadline: float) -> tuple[Any, ...]:
        while True:
            try:
                return outbox.get(timeout=0.5)
            except queue.Empty:
                cls._check_alive(procs)
                if time.monotonic() > deadline:
                    raise TimeoutError("simulator workers did not answer in time") from None


def _progress_line(sec: int, ticks: list[dict[str, Any]], previous: dict[str, float],
                   warmup_s: float, duration_s: float) -> dict[str, Any]:
    total = {key: sum(t[key] for t in ticks) for key in (*COUNTERS, "reconnects", "open")}
    delta = {key: total[key] - previous.get(key, 0) for key in COUNTERS}
    previous.update(total)
    sample = [x for t in ticks for x in t["sample"]]
    lat = latency_summary_ms(sample)
    phase = "warmup" if sec <= warmup_s else "window" if sec <= warmup_s + duration_s + 0.5 \
        else "drain"
    text = (f"  {sec:>3}s {phase:<6} open {total['open']:,}  updates/s {delta['sent']:,}"
            f"  fan-out/s {delta['deliveries']:,} (expected {delta['expected']:,})"
            f"  refreshes/s {delta['refreshes']:,}"
            f"  p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms"
            + (f"  rejected {delta['rejected']}" if delta["rejected"] else "")
            + (f"  reconnects {total['reconnects']}" if total["reconnects"] else ""))
    return {"second": sec, "phase": phase, "updates": delta["sent"],
            "deliveries": delta["deliveries"], "expected": delta["expected"],
            "refreshes": delta["refreshes"], "p50_ms": lat["p50"], "p99_ms": lat["p99"],
            "text": text}


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these processes so far (``/proc/<pid>/stat``)."""
    total = 0.0
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return math.nan
        fields = raw[raw.rindex(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total
