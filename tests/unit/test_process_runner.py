"""The one process runner (geoplex.infra.process), with real tiny Python children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from geoplex.infra.process import READY_LINE, Process, ProcessError

pytestmark = pytest.mark.timeout(60)

READY = "import time\nprint('starting', flush=True)\nprint('x ready on 127.0.0.1:4321', flush=True)\ntime.sleep(600)\n"


def child(tmp_path: Path, code: str, **options: Any) -> Process:
    return Process("child", [sys.executable, "-c", code], tmp_path / "child.log",
                   ready_timeout=20, **options)


def on_sigterm(handler: str) -> str:
    """A child that handles SIGTERM with ``handler``, then says it is ready and waits."""
    return ("import signal, sys, time\n"
            f"signal.signal(signal.SIGTERM, {handler})\n"
            "print('c ready on here', flush=True)\n"
            "time.sleep(600)\n")


def alive(pid: int) -> bool:
    """Exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_ready_line_gives_the_address_and_every_line_reaches_the_log_and_the_callback(
        tmp_path: Path) -> None:
    lines: list[str] = []
    with child(tmp_path, READY, ready_line=READY_LINE, on_line=lines.append) as proc:
        assert proc.address == "127.0.0.1:4321"
        assert proc.running and proc.pid is not None
        pid = proc.pid
    assert lines == ["starting", "x ready on 127.0.0.1:4321"]
    assert proc.log_path.read_text() == "starting\nx ready on 127.0.0.1:4321\n"
    assert proc.returncode == -signal.SIGTERM and not alive(pid)


def test_probe_decides_when_it_is_ready(tmp_path: Path) -> None:
    go, up = tmp_path / "go", tmp_path / "up"
    code = ("import os, pathlib, time\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
            f"pathlib.Path({str(up)!r}).touch()\n"
            "time.sleep(600)\n")
    proc = child(tmp_path, code, probe=up.exists).start()
    try:
        assert not proc.poll_ready()  # it waits for us
        go.touch()
        proc.wait_ready()
        assert up.exists()
    finally:
        proc.stop()


def test_exit_before_ready_raises_with_the_code_and_the_end_of_its_log(tmp_path: Path) -> None:
    code = "import sys\nprint('GEOPLEX_X_PORT=abc: expected an integer', file=sys.stderr)\nsys.exit(3)\n"
    proc = child(tmp_path, code, ready_line=READY_LINE).start()

    with pytest.raises(ProcessError) as info:
        proc.wait_ready()

    assert "child exited with code 3 before it was ready" in str(info.value)
    assert "GEOPLEX_X_PORT=abc: expected an integer" in str(info.value)


def test_a_silent_process_times_out_with_its_log_and_is_stopped(tmp_path: Path) -> None:
    code = "import time\nprint('loading 1 of 1000', flush=True)\ntime.sleep(600)\n"
    proc = child(tmp_path, code, ready_line=READY_LINE).start()

    with pytest.raises(ProcessError) as info:
        proc.wait_ready(timeout=1.0)

    assert "not ready within 1s" in str(info.value) and "loading 1 of 1000" in str(info.value)
    assert not proc.running


def test_stop_gives_a_child_that_ignores_sigterm_its_grace_then_kills_it(tmp_path: Path) -> None:
    proc = child(tmp_path, on_sigterm("signal.SIG_IGN"), ready_line=READY_LINE)
    proc.start().wait_ready()

    started = time.monotonic()
    returned = proc.stop(grace=1.0)

    assert returned == -signal.SIGKILL
    assert time.monotonic() - started >= 1.0


def test_stop_returns_the_exit_code_of_a_graceful_stop(tmp_path: Path) -> None:
    proc = child(tmp_path, on_sigterm("lambda *_: sys.exit(0)"), ready_line=READY_LINE)
    proc.start().wait_ready()

    assert proc.stop() == 0


def test_kill_then_start_runs_the_same_argv_again_and_appends_to_the_log(tmp_path: Path) -> None:
    proc = child(tmp_path, READY, ready_line=READY_LINE).start().wait_ready()
    first = proc.pid
    try:
        assert proc.kill() == -signal.SIGKILL
        proc.start().wait_ready()
        assert proc.pid != first and proc.running
        assert proc.log_path.read_text().count("ready on") == 2
        assert proc.log_tail().count("ready on") == 1  # this run's output only
    finally:
        proc.stop()


async def test_async_waits_see_the_ready_line_then_the_exit_code(tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = ("import os, time\n"
            "print('brief ready on 127.0.0.1:7', flush=True)\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
            "print('bye', flush=True)\n"
            "raise SystemExit(7)\n")
    lines: list[str] = []
    proc = child(tmp_path, code, ready_line=READY_LINE, on_line=lines.append).start()

    await proc.wait_ready_async()
    assert proc.address == "127.0.0.1:7"
    go.touch()
    assert await proc.wait_async() == 7
    assert lines == ["brief ready on 127.0.0.1:7", "bye"]  # all forwarded before it returns


PARENT = f"""
import sys
from pathlib import Path
from geoplex.infra.process import READY_LINE, Process
child = Process("child", [sys.executable, "-c", {READY!r}], Path(sys.argv[1]),
                ready_line=READY_LINE)
child.start().wait_ready(20)
print(child.pid, flush=True)
import time
time.sleep(600)
"""


def test_the_child_gets_sigterm_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "child.log")],
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    pid = 0
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert alive(pid)

        parent.kill()
        parent.wait()

        assert eventually(lambda: not alive(pid)), "the child outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_child_started_from_a_short_lived_thread_outlives_that_thread(tmp_path: Path) -> None:
    """The kernel sends the parent-death signal when the *thread* that forked the child
    ends; the runner forks from one long-lived thread, so ``asyncio.to_thread`` may start."""
    code = ("import signal, sys, time\n"
            "def say(word):\n"
            "    def handler(*_):\n"
            "        print(word, flush=True)\n"
            "        if word == 'TERM':\n"
            "            sys.exit(0)\n"
            "    return handler\n"
            "signal.signal(signal.SIGTERM, say('TERM'))\n"
            "signal.signal(signal.SIGWINCH, say('pong'))\n"
            "print('c ready on here', flush=True)\n"
            "while True:\n"
            "    time.sleep(1)\n")
    proc = child(tmp_path, code, ready_line=READY_LINE)
    starter: list[int] = []

    def start() -> None:
        starter.append(threading.get_native_id())
        proc.start().wait_ready()  # ready: setpriv has armed the signal

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    try:
        assert eventually(lambda: not Path(f"/proc/self/task/{starter[0]}").exists())
        # a parent-death SIGTERM would be pending by now; Python runs the handler of the
        # lower-numbered signal first, so TERM would be seen before this ping
        proc.send_signal(signal.SIGWINCH)
        assert eventually(lambda: "pong" in proc.log_path.read_text() or not proc.running)
        assert "TERM" not in proc.log_path.read_text() and proc.running
    finally:
        proc.stop()
