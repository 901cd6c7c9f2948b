"""A frozen client's stream ends on the server: keepalive pings go unanswered.

A real server process (``run_main`` + ``serve``, keepalive from GEOPLEX_KEEPALIVE_*
variables) serves one server stream; a real client process, through the SDK's
channel, opens it and reads. The test stops the client with SIGSTOP (its kernel still
ACKs TCP, so only an HTTP/2 ping can tell it is gone) and waits for the server's
one-line RPC log to say the stream ended. Without server keepalive it never does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

METHOD = "/geoplex.probe.v1.KeepaliveProbe/Watch"

# Watch (unary-stream, raw bytes): b"ready", then b"tick" every 0.2 s when the request is
# b"ticking", or nothing more (a quiet stream, like presence with no friend moving).
SERVER_CODE = """
import asyncio, grpc
from geoplex.servers._runtime.server import ServiceSpec, run_main, serve

async def watch(request, context):
    yield b"ready"
    while True:
        if request == b"ticking":
            await asyncio.sleep(0.2)
            yield b"tick"
        else:
            await asyncio.Event().wait()

async def setup(config, stack):
    handler = grpc.method_handlers_generic_handler(
        "geoplex.probe.v1.KeepaliveProbe", {"Watch": grpc.unary_stream_rpc_method_handler(watch)})
    return [ServiceSpec("geoplex.probe.v1.KeepaliveProbe",
                        lambda server: server.add_generic_rpc_handlers([handler]))]

run_main("probe", 0, lambda config: serve(config, setup))
"""

# Through the SDK's channel (its keepalive settings), as an application would.
CLIENT_CODE = """
import asyncio, sys
from geoplex.clients.channel import open_channel

async def main(target, mode):
    channel = open_channel(target)
    call = channel.unary_stream("/geoplex.probe.v1.KeepaliveProbe/Watch")(mode.encode())
    async for message in call:
        if message == b"ready":
            print("streaming", flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPLEX_")}
    return {**env, "GEOPLEX_LOG_LEVEL": "info", "GEOPLEX_EVENT_LOOP": "asyncio", **extra}


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``python -c CODE args``: stdout piped, stderr to ``<name>.log``; all stopped."""
    started: list[subprocess.Popen[str]] = []

    def start(name: str, code: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
        log = (tmp_path / f"{name}.log").open("w")
        proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        _stop(proc)


def _rpc_ended(log: Path) -> str | None:
    """The server's log line for the stream's end, once it has one."""
    for line in log.read_text(errors="replace").splitlines():
        if f"rpc {METHOD} code=" in line:
            return line
    return None


def _poll(condition: Callable[[], str | None], timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found is not None:
            return found
        time.sleep(0.1)
    return condition()


@pytest.mark.parametrize("mode", ["quiet", "ticking"])
def test_sigstopped_clients_stream_ends_on_the_server_within_keepalive(
        spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path, mode: str) -> None:
    server = spawn("server", SERVER_CODE, env=_env(
        GEOPLEX_KEEPALIVE_TIME_SECONDS="2", GEOPLEX_KEEPALIVE_TIMEOUT_SECONDS="2",
        GEOPLEX_KEEPALIVE_MIN_PING_INTERVAL_SECONDS="1"))
    assert server.stdout is not None
    ready = server.stdout.readline()
    assert ready.startswith("geoplex-probe ready on "), (tmp_path / "server.log").read_text()
    target = ready.rsplit(" ", 1)[1].strip()
    client = spawn("client", CLIENT_CODE, target, mode, env=_env())
    assert client.stdout is not None
    assert client.stdout.readline() == "streaming\n", (tmp_path / "client.log").read_text()
    server_log = tmp_path / "server.log"

    # a live client answers the pings: its stream outlives several keepalive rounds
    time.sleep(6)
    assert _rpc_ended(server_log) is None, server_log.read_text()

    os.kill(client.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        line = _poll(lambda: _rpc_ended(server_log), timeout=30)
        elapsed = time.monotonic() - stopped
    finally:
        os.kill(client.pid, signal.SIGCONT)

    assert line is not None, f"the stream outlived its frozen client:\n{server_log.read_text()}"
    assert "code=CANCELLED" in line
    assert elapsed < 15, f"took {elapsed:.1f} s with 2 s keepalive time and 2 s timeout"
    assert "Traceback" not in server_log.read_text()
