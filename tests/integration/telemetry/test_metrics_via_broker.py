"""The mesh's metrics through the broker, on real processes: a server with
GEOPLEX_METRICS=broker produces each export to the `telemetry-metrics` topic and
telemetry's consumer group stores it; telemetry killed with SIGKILL loses none of the
exports made while it was down: the broker holds them and the restarted telemetry
stores them, with their own timestamps, from its committed offset."""

from __future__ import annotations

import json
import signal
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from geoplex.clients.broker import BrokerClient
from geoplex.infra.local import BackendUrls, free_port
from mesh_flows import start_broker
from polling import eventually

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

pytestmark = pytest.mark.timeout(180)
TOPIC = "telemetry-metrics"
UPTIME = 'process_uptime_seconds{job="telemetry"}'  # the worker's (the store exports none)


def query(http: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
    url = f"{http}/api/v1/query?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
    return result


async def records_in_topic(broker: ServerProcess) -> int:
    async with BrokerClient(broker.address) as client:
        return sum((await client.list_offsets(TOPIC, timeout=5)).values())


async def test_exports_made_while_telemetry_is_down_are_stored_once_it_is_back(
        backends: BackendUrls, server_factory: Callable[..., ServerProcess],
        tmp_path: Path) -> None:
    broker = start_broker(server_factory, backends, tmp_path / "broker", "metrics-broker")
    http_port = free_port()
    store = server_factory("telemetry", {
        "GEOPLEX_BROKER_TARGET": broker.address, "GEOPLEX_REGISTRY": "off",
        "GEOPLEX_TELEMETRY_PORT": str(free_port()),   # a restart keeps its ports
        "GEOPLEX_TELEMETRY_HTTP_PORT": str(http_port),
        "GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path / "store")}, "metrics-store")
    http = f"http://127.0.0.1:{http_port}"
    # the worker: any Geoplex server; this one is a telemetry server of its own, whose
    # metrics go through the broker (and which consumes nothing: no GEOPLEX_BROKER_TARGET)
    worker = server_factory("telemetry", {
        "GEOPLEX_METRICS": "broker", "GEOPLEX_METRICS_BROKERS": broker.address,
        "GEOPLEX_METRICS_INTERVAL_SECONDS": "0.5", "GEOPLEX_REGISTRY": "off",
        "GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path / "worker")}, "metrics-worker")

    await eventually(lambda: bool(query(http, UPTIME)), 30, ignore=(OSError,),
                     what="the worker's metrics stored through the broker")
    [series] = query(http, UPTIME)
    assert series["metric"]["instance"].endswith(f":{worker.pid}")

    # telemetry killed: the worker's exports go on into the topic
    store.stop(signal.SIGKILL)
    down_at = time.time()
    produced = await records_in_topic(broker)
    await eventually(lambda: records_in_topic_grew(broker, produced, 6), 30,
                     what="exports produced while telemetry is down")
    up_from = time.time()
    store.start()

    # the exports of the outage are stored, with their own timestamps (0.5 s apart)
    outage = up_from - down_at
    window = f"{max(1, int(outage))}s"

    def outage_samples() -> int:
        found = query(http, f"count_over_time({UPTIME}[{window}])", at=up_from)
        return int(float(found[0]["value"][1])) if found else 0
    await eventually(lambda: outage_samples() >= 4, 30, ignore=(OSError,),
                     what="the outage's exports stored after the restart")
    # and the flow goes on after it
    before = float(query(http, UPTIME)[0]["value"][1])
    await eventually(lambda: float(query(http, UPTIME)[0]["value"][1]) > before, 30,
                     what="new exports stored")


async def records_in_topic_grew(broker: ServerProcess, start: int, by: int) -> bool:
    return await records_in_topic(broker) >= start + by
