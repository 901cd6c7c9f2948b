"""A server process started through ``run()``: its ready line, clean SIGTERM, start-up errors.

Each test runs a real ``python -c`` process that does what ``run(SERVICE, setup)`` does
(``run_main('test', PORT, ...)`` then ``serve(config, setup)``) with a trivial setup.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_CODE = """
import sys
from geoplex.servers._runtime.config import ConfigError
from geoplex.servers._runtime.server import run_main, serve

async def setup(config, stack):
    mode = sys.argv[2] if len(sys.argv) > 2 else ""
    if mode == "bad-adapter-config":
        raise ConfigError("GEOPLEX_TEST_THING_URL='x': expected a URL starting with thing://")
    if mode == "adapters":
        for name in ("first", "second"):
            async def close(name=name):
                print("closed", name, flush=True)
            stack.push_async_callback(close)
    return []

run_main("test", int(sys.argv[1]), lambda config: serve(config, setup))
"""


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The environment without any GEOPLEX_* variable of the caller."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GEOPLEX_")}


def _run(port: int, env: dict[str, str], cwd: Path,
         mode: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SERVER_CODE, str(port), mode], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=30)


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_port_already_taken_exits_2_with_one_line_naming_the_port_variable(
        listening_port: int, clean_env: dict[str, str], tmp_path: Path) -> None:
    result = _run(listening_port, clean_env, tmp_path)

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got: {result.stderr!r}"
    assert "port" in lines[0]
    assert "GEOPLEX_TEST_PORT" in lines[0]
    assert str(listening_port) in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(("variable", "value"), [
    ("GEOPLEX_TEST_PORT", "notaport"),
    ("GEOPLEX_TRACING", "bogus"),
    ("GEOPLEX_SHUTDOWN_GRACE_SECONDS", "forever"),
])
def test_bad_variable_exits_2_with_one_line_naming_it(
        clean_env: dict[str, str], tmp_path: Path, variable: str, value: str) -> None:
    result = _run(0, {**clean_env, variable: value}, tmp_path)

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got: {result.stderr!r}"
    assert lines[0].startswith("geoplex-test: error: ")
    assert variable in lines[0] and value in lines[0]


def test_config_error_raised_by_setup_exits_2_with_one_line(
        clean_env: dict[str, str], tmp_path: Path) -> None:
    result = _run(0, clean_env, tmp_path, "bad-adapter-config")

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "geoplex-test: error: GEOPLEX_TEST_THING_URL='x': expected a URL starting with thing://"]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_sigterm_after_ready_stops_the_server_and_closes_adapters_in_reverse_order(
        clean_env: dict[str, str], tmp_path: Path, loop: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SERVER_CODE, "0", "adapters"],
                            env={**clean_env, "GEOPLEX_SHUTDOWN_GRACE_SECONDS": "2",
                                 "GEOPLEX_EVENT_LOOP": loop},
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert ready.startswith("geoplex-test ready on 127.0.0.1:")
    port = int(ready.rsplit(":", 1)[1])
    assert port > 0
    assert proc.returncode == 0
    assert out.splitlines() == ["closed second", "closed first"]
    assert "Traceback" not in err
    assert "geoplex-test stopped" in err
