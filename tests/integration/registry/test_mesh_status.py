"""``geoplex mesh status`` on a real mesh: the processes the registry lists, each health-
checked, with the live figures telemetry holds for them (here a telemetry server that
pushes its own metrics to itself, and a second process that is killed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from geoplex.clients.registry import MeshRegistry
from geoplex.clients.telemetry import TelemetryClient
from geoplex.infra.local import BackendUrls, free_port
from polling import eventually
from registry_helpers import etcd

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


def status(backends: BackendUrls, prefix: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "geoplex.tools.cli", "mesh", "status",
                           "--etcd", ",".join(etcd(backends)), "--prefix", prefix, *extra],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GEOPLEX_ETCD_ENDPOINTS": ""})


async def test_status_lists_every_process_with_health_and_figures_from_telemetry(
        backends: BackendUrls, server_factory: Callable[..., ServerProcess],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    prefix = f"/test-status-{uuid.uuid4().hex[:8]}"
    port = free_port()
    common = {"GEOPLEX_ETCD_ENDPOINTS": ",".join(etcd(backends)),
              "GEOPLEX_REGISTRY_PREFIX": prefix, "GEOPLEX_REGISTRY_TTL_SECONDS": "30",
              "GEOPLEX_METRICS": "otlp", "GEOPLEX_METRICS_ENDPOINT": f"127.0.0.1:{port}",
              "GEOPLEX_METRICS_INTERVAL_SECONDS": "0.5"}
    telemetry = server_factory("telemetry", {
        **common, "GEOPLEX_TELEMETRY_PORT": str(port),
        "GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path_factory.mktemp("status-store"))},
        "status-telemetry")
    other = server_factory("telemetry", {
        **common, "GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path_factory.mktemp("status-other"))},
        "status-other")
    async with MeshRegistry(etcd(backends), prefix) as registry:
        await eventually(lambda: _count(registry, 2), 20, what="both processes registered")

    # traffic, so the telemetry process has requests/s of its own to show
    async with TelemetryClient(telemetry.address) as tm:
        async def busy() -> bool:
            for _ in range(20):
                await tm.query("vector(1)", timeout=5)
            answer = await tm.query(
                f'sum(rate(rpc_server_call_duration_seconds_count{{instance=~".*:{telemetry.pid}"}}[1m]))',
                timeout=5)
            return bool(answer.vector) and answer.vector[0].sample.value > 0
        await eventually(busy, 30, what="telemetry holding its own request rate")

    done = status(backends, prefix, "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["telemetry"] == telemetry.address       # found through the registry
    by_pid = {p["pid"]: p for p in report["processes"]}
    assert set(by_pid) == {telemetry.pid, other.pid}
    mine = by_pid[telemetry.pid]
    assert mine["health"] == "SERVING" and mine["service"] == "telemetry"
    assert mine["requests_s"] > 0 and mine["errors_s"] == 0 and mine["lag"] is None

    table = status(backends, prefix)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:5] == ["service", "process", "address", "pid", "health"]
    assert any(telemetry.address in line and "SERVING" in line for line in lines)
    assert "2 processes of 1 services, 2 serving" in table.stdout

    # a process frozen (SIGSTOP) is still registered, but does not answer its health check
    assert other.proc is not None
    os.kill(other.proc.pid, signal.SIGSTOP)
    try:
        frozen = json.loads(status(backends, prefix, "--json").stdout)
        health = {p["pid"]: p["health"] for p in frozen["processes"]}
        assert health == {telemetry.pid: "SERVING", other.pid: "UNREACHABLE"}
    finally:
        os.kill(other.proc.pid, signal.SIGCONT)


async def _count(registry: MeshRegistry, n: int) -> bool:
    return len(await registry.processes()) == n


def test_status_without_etcd_says_where_to_look(tmp_path: Any) -> None:
    done = subprocess.run([sys.executable, "-m", "geoplex.tools.cli", "mesh", "status",
                           "--state-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "GEOPLEX_ETCD_ENDPOINTS": ""})
    assert done.returncode != 0 and "--etcd" in done.stderr and "mesh.json" in done.stderr


def test_status_with_an_unreachable_etcd_is_one_clear_line() -> None:
    done = subprocess.run([sys.executable, "-m", "geoplex.tools.cli", "mesh", "status",
                           "--etcd", f"127.0.0.1:{free_port()}"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "did not answer" in done.stderr
    assert "Traceback" not in done.stderr


