"""One way to run a child process: the backends, the servers under test, ``geoplex up``, the benchmarks.

A :class:`Process` is started with a parent-death signal (util-linux ``setpriv
--pdeathsig``), in its own session (a Ctrl-C in the terminal reaches only us, and we
stop it), with stdin on ``/dev/null`` and our environment plus ``env``. Everything it
writes goes to ``log_path`` (appended to, across restarts); with ``on_line`` each line
is also handed to that callback, from a reader thread. It is ready when ``probe()``
says so, or when it prints a line matching ``ready_line`` (:data:`READY_LINE`, the
servers' ``... ready on HOST:PORT``, whose address is kept in :attr:`Process.address`),
or both; a process that exits first, or stays silent past the timeout, raises
:class:`ProcessError` with the end of its log::

    with Process("server", [sys.executable, "-m", "geoplex.servers.presence"],
                 Path("presence.log"), env={"GEOPLEX_PRESENCE_PORT": "0"},
                 ready_line=READY_LINE) as server:   # started and ready
        call(server.address)
    # stopped: SIGTERM, SIGKILL after the grace period

The same object stops (:meth:`Process.stop`), kills (:meth:`Process.kill`, for fault
tests), and starts again on the same argv (:meth:`Process.start`,
:meth:`Process.restart`); :meth:`Process.wait_ready_async` and
:meth:`Process.wait_async` serve an asyncio caller without blocking its loop.
This module imports nothing from the rest of Geoplex.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

log = logging.getLogger(__name__)

READY_LINE = re.compile(r" ready on (\S+)")
"""The line a Geoplex server prints once it serves; group 1 is its ``host:port``."""
POLL_S = 0.05
"""How often readiness is checked."""
TAIL_LINES = 20
"""How many lines of its log an error quotes."""
_TAIL_BYTES = 64 * 1024


class ProcessError(RuntimeError):
    """A process exited or stayed silent before it was ready; the message ends with its log."""


def with_parent_death_signal(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that the child gets SIGTERM when its parent dies, so nothing is orphaned.

    Uses util-linux ``setpriv --pdeathsig`` (an exec, no Python between fork and
    exec: a ``preexec_fn`` is unsafe in a process with gRPC threads and was seen
    to crash the child).
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else list(argv)


# The kernel sends the parent-death signal when the *thread* that forked the child ends,
# not the process: a child started from a short-lived thread (``asyncio.to_thread``, a
# thread pool) would get SIGTERM as soon as that thread finishes. So every child is forked
# by one thread that lives as long as this process.
_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _forget_spawner() -> None:  # a forked child has no threads: it makes its own
    global _spawner, _spawner_lock
    _spawner, _spawner_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_spawner)


def _popen(argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(1, thread_name_prefix="geoplex-spawner")
        spawner = _spawner

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, **options)

    return spawner.submit(spawn).result()


@dataclass(eq=False)
class Process:
    """A child process: started, ready, stopped, killed and restarted the same way everywhere."""

    name: str
    argv: list[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)  # over os.environ
    probe: Callable[[], bool] | None = None  # ready when it returns True
    ready_line: re.Pattern[str] | None = None  # ready once a line matches; group 1: address
    on_line: Callable[[str], None] | None = None  # each output line too (a reader thread)
    cwd: Path | None = None
    ready_timeout: float = 30.0
    stop_grace: float = 10.0  # SIGTERM, then SIGKILL after this many seconds
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    address: str = field(default="", init=False)  # what the ready line said, e.g. host:port
    _ready: bool = field(default=False, init=False)
    _run_start: int = field(default=0, init=False)  # where this run's output begins in the log
    _scanned: int = field(default=0, init=False)  # how far the log was searched for ready_line
    _pump: threading.Thread | None = field(default=None, init=False)

    # -- state ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def returncode(self) -> int | None:
        """None while it runs (or before it started); negative: the signal that ended it."""
        return None if self.proc is None else self.proc.poll()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines this run wrote (since the last :meth:`start`)."""
        try:
            with open(self.log_path, "rb") as out:
                size = out.seek(0, os.SEEK_END)
                out.seek(max(self._run_start, size - _TAIL_BYTES))
                text = out.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- start and readiness -------------------------------------------------------------

    def start(self) -> Self:
        """Start (again, on the same argv) without waiting; see :meth:`wait_ready`."""
        if self.running:
            raise ProcessError(f"{self.name} is already running (pid {self.pid})")
        self._join_pump()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        self._run_start = self._scanned = out.seek(0, os.SEEK_END)
        self._ready, self.address = False, ""
        options: dict[str, Any] = dict(
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env}, cwd=self.cwd,
            stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True)  # a Ctrl-C reaches us, not the child: we stop it
        try:
            self.proc = _popen(with_parent_death_signal(self.argv),
                               stdout=out if self.on_line is None else subprocess.PIPE, **options)
        except BaseException:
            out.close()
            raise
        if self.on_line is None:
            out.close()  # the child writes its log itself: no Python in between
        else:
            assert self.proc.stdout is not None
            self._pump = threading.Thread(target=self._forward,
                                          args=(self.proc.stdout, out, self.on_line),
                                          name=f"output of {self.name}", daemon=True)
            self._pump.start()
        return self

    def poll_ready(self) -> bool:
        """Whether it is ready now; raises :class:`ProcessError` if it has exited."""
        proc = self._started()
        code = proc.poll()
        if code is not None:
            raise ProcessError(f"{self.name} exited with code {code} before it was ready; "
                               f"{self._log_says()}")
        if not self._ready:
            self._ready = ((self.ready_line is None or self._saw_ready_line())
                           and (self.probe is None or self.probe()))
        return self._ready

    def wait_ready(self, timeout: float | None = None) -> Self:
        """Block until ready; a process not ready within ``timeout`` is stopped, and raises."""
        for pause in self._until_ready(timeout):
            time.sleep(pause)
        return self

    async def wait_ready_async(self, timeout: float | None = None) -> Self:
        """:meth:`wait_ready` for a coroutine (a probe, and stopping a process that timed
        out, run in the loop's thread: a ready line suits a loop best)."""
        for pause in self._until_ready(timeout):
            await asyncio.sleep(pause)
        return self

    def _until_ready(self, timeout: float | None) -> Iterator[float]:
        """The pauses between readiness checks, until ready; raises once ``timeout`` passed."""
        limit = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while not self.poll_ready():
            if time.monotonic() >= deadline:
                self.stop(grace=2.0)
                raise ProcessError(f"{self.name} was not ready within {limit:g}s; "
                                   f"{self._log_says()}")
            yield POLL_S

    def _saw_ready_line(self) -> bool:
        assert self.ready_line is not None
        try:
            with open(self.log_path, "rb") as out:
                out.seek(self._scanned)
                new = out.read()
        except OSError:
            return False
        whole = new.rfind(b"\n") + 1  # a line still being written is read next time
        for line in new[:whole].decode(errors="replace").splitlines():
            match = self.ready_line.search(line)
            if match:
                self.address = match.group(1) if match.re.groups else ""
                return True
        self._scanned += whole
        return False

    # -- stop ----------------------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float | None = None, sig: int = signal.SIGTERM) -> int | None:
        """``sig`` (SIGTERM: a graceful stop), SIGKILL if still alive after ``grace`` seconds.

        Returns the exit code (negative: the signal that ended it), None if never started.
        """
        self.send_signal(sig)
        return self._reap(self.stop_grace if grace is None else grace)

    def kill(self) -> int | None:
        """SIGKILL, for fault tests: no chance to flush anything."""
        self.send_signal(signal.SIGKILL)
        return self._reap(None)

    def restart(self, *, kill: bool = False, timeout: float | None = None) -> Self:
        """Stop (or SIGKILL) it, start it on the same argv, wait until it is ready."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start().wait_ready(timeout)

    def wait(self, timeout: float | None = None) -> int:
        """Block until it exits (``subprocess.TimeoutExpired`` after ``timeout``); its code."""
        code = self._started().wait(timeout)
        self._join_pump()
        return code

    async def wait_async(self) -> int:
        """Until it exits, without blocking the event loop (a pidfd); its exit code."""
        proc = self._started()
        if proc.poll() is None:
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()

            def on_exit() -> None:
                if not exited.done():
                    exited.set_result(None)

            try:
                pidfd = os.pidfd_open(proc.pid)
            except ProcessLookupError:  # reaped meanwhile
                pidfd = -1
            if pidfd >= 0:
                loop.add_reader(pidfd, on_exit)
                try:
                    await exited
                finally:
                    loop.remove_reader(pidfd)
                    os.close(pidfd)
        code = proc.wait()
        if self._pump is not None:  # its last lines are forwarded before we return
            await asyncio.to_thread(self._join_pump)
        return code

    def _reap(self, grace: float | None) -> int | None:
        """Wait for the exit (SIGKILL after ``grace`` seconds; None: for as long as it takes)."""
        if self.proc is None:
            return None
        try:
            self.proc.wait(None if grace is None else max(grace, 0.0))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs of a signal; SIGKILL", self.name, grace)
            self.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._join_pump()
        return self.proc.returncode

    def _join_pump(self) -> None:
        if self._pump is not None:
            self._pump.join(5.0)  # a grandchild may hold the pipe open: do not hang on it
            if not self._pump.is_alive():
                self._pump = None

    def __enter__(self) -> Self:
        return self.start().wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers -------------------------------------------------------------------------

    def _started(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise ProcessError(f"{self.name} was never started")
        return self.proc

    def _log_says(self) -> str:
        tail = self.log_tail()
        return f"its log {self.log_path} ends:\n{tail}" if tail else \
            f"it wrote nothing to {self.log_path}"

    def _forward(self, pipe: IO[bytes], out: IO[bytes], on_line: Callable[[str], None]) -> None:
        """The reader thread: every line into the log, then to ``on_line``."""
        with pipe, out:
            for raw in pipe:
                out.write(raw)
                out.flush()
                try:
                    on_line(raw.decode(errors="replace").rstrip("\r\n"))
                except Exception:  # noqa: BLE001 - a broken callback must not stall the child
                    log.exception("output callback of %s failed", self.name)


def stop_all(processes: Iterable[Process], grace: float = 10.0) -> None:
    """Stop several at once: SIGTERM to all, then wait ``grace`` seconds in all, SIGKILL the rest."""
    group = list(processes)
    for process in group:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in group:
        process._reap(deadline - time.monotonic())
