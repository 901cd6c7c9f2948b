"""A real telemetry process holding seventy minutes of a small mesh's metrics (written over
gRPC), and a stand-in notifier node answering ListSilences, for the dashboard page and
the chart command."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import TYPE_CHECKING

import grpc
import pytest

from dashboard_mesh import RULES, FakeNotifier, Notifier, Telemetry, mesh_series
from geoplex.clients.telemetry import TelemetryClient
from geoplex.infra.local import free_port

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


@pytest.fixture(scope="session")
def fake_notifier() -> Iterator[Notifier]:
    """A stand-in notifier node on its own threads (so it answers while a test blocks)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = FakeNotifier()
    server.add_generic_rpc_handlers((servicer.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Notifier(f"127.0.0.1:{port}", servicer)
    finally:
        server.stop(grace=None).wait(5)


@pytest.fixture(scope="session")
def telemetry(server_factory: Callable[..., ServerProcess], fake_notifier: Notifier,
              tmp_path_factory: pytest.TempPathFactory) -> Telemetry:
    port = free_port()
    rules = tmp_path_factory.mktemp("dashboard-rules") / "rules.yml"
    rules.write_text(RULES)
    server = server_factory("telemetry", {
        "GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path_factory.mktemp("dashboard-store")),
        "GEOPLEX_TELEMETRY_RULE_FILES": str(rules),
        "GEOPLEX_TELEMETRY_RULE_INTERVAL_SECONDS": "0.5",
        "GEOPLEX_TELEMETRY_HTTP_PORT": str(port),
        "GEOPLEX_TELEMETRY_FSYNC": "interval",
        "GEOPLEX_TELEMETRY_OOO_WINDOW_SECONDS": "86400",
        "GEOPLEX_TELEMETRY_NOTIFIERS": fake_notifier.address}, "dashboard-telemetry")
    now_ms = int(time.time() * 1000) - 1000

    async def write() -> None:
        async with TelemetryClient(server.address) as tm:
            answer = await tm.write(mesh_series(now_ms), timeout=30)
            assert answer.samples_written > 5_000

    asyncio.run(write())
    http = f"http://127.0.0.1:{port}"
    # the page is opened once the rules have been evaluated: one alert firing, one pending
    deadline = time.monotonic() + 30
    states: list[str] = []
    while sorted(states) != ["firing", "pending"]:
        assert time.monotonic() < deadline, f"the rules never evaluated: {states}"
        with urllib.request.urlopen(http + "/api/v1/alerts", timeout=10) as response:
            states = [a["state"] for a in json.loads(response.read())["data"]["alerts"]]
        if sorted(states) != ["firing", "pending"]:
            time.sleep(0.1)
    return Telemetry(server, http, now_ms)
