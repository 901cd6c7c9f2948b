"""Telemetry watches the mesh through the registry, with no configuration: a process
that registers is health-checked (`up{job, slot}` 1); killed, its slot's `up` turns 0
and InstanceDown fires; a new process in the same slot resolves it; a graceful stop
removes the slot's series at once, paging no one."""

from __future__ import annotations

import json
import os
import signal
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from geoplex.infra.local import BackendUrls, free_port
from geoplex.servers.telemetry.rules.files import DEFAULT_RULES
from polling import eventually
from registry_helpers import etcd

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


def get(http: str, path: str, **params: str) -> Any:
    url = f"{http}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())["data"]


def up_of(http: str, slot: str) -> list[float]:
    answer = get(http, "/api/v1/query", query=f'up{{slot="{slot}"}}')
    return [float(r["value"][1]) for r in answer["result"]]


def alert_states(http: str, slot: str, name: str = "InstanceDown") -> list[str]:
    return [a["state"] for a in get(http, "/api/v1/alerts")["alerts"]
            if a["labels"].get("alertname") == name and a["labels"].get("slot") == slot]


def unclean_exits(http: str, slot: str) -> list[float]:
    answer = get(http, "/api/v1/query",
                 query=f'geoplex_mesh_unclean_exits_total{{slot="{slot}"}}')
    return [float(r["value"][1]) for r in answer["result"]]


async def test_a_killed_process_pages_until_its_slot_serves_again_and_a_stop_pages_no_one(
        backends: BackendUrls, server_factory: Callable[..., ServerProcess],
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    prefix = f"/test-watch-{uuid.uuid4().hex[:8]}"
    registry = {"GEOPLEX_ETCD_ENDPOINTS": ",".join(etcd(backends)),
                "GEOPLEX_REGISTRY_PREFIX": prefix, "GEOPLEX_REGISTRY_TTL_SECONDS": "2"}
    # the packaged InstanceDown rule, at test speed (`for` 1 s)
    rules = tmp_path / "rules.yml"
    text = DEFAULT_RULES.read_text()
    assert "expr: up{slot!=\"\"} == 0\n        for: 15s" in text
    rules.write_text(text.replace('expr: up{slot!=""} == 0\n        for: 15s',
                                  'expr: up{slot!=""} == 0\n        for: 1s'))
    http_port = free_port()
    server_factory("telemetry", {
        **registry, "GEOPLEX_TELEMETRY_HTTP_PORT": str(http_port),
        "GEOPLEX_TELEMETRY_MESH_PROBE_SECONDS": "0.5",
        "GEOPLEX_TELEMETRY_RULE_FILES": str(rules),
        "GEOPLEX_TELEMETRY_RULE_INTERVAL_SECONDS": "0.5",
        "GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path_factory.mktemp("watch-store"))},
        "watch-telemetry")
    http = f"http://127.0.0.1:{http_port}"
    slot = f"worker-{uuid.uuid4().hex[:6]}"

    def worker(name: str) -> ServerProcess:
        return server_factory("telemetry", {
            **registry, "GEOPLEX_PROCESS_NAME": slot,
            "GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path_factory.mktemp(name))}, name)

    first = worker("watch-first")
    await eventually(lambda: up_of(http, slot) == [1.0], 20, what="the worker watched")
    assert unclean_exits(http, slot) == [0.0]
    processes = get(http, "/api/v1/query", query="geoplex_mesh_processes")["result"]
    assert {r["metric"]["job"]: r["value"][1] for r in processes} == {"telemetry": "2"}

    assert first.proc is not None
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)
    await eventually(lambda: up_of(http, slot) == [0.0], 20, what="the slot down")
    await eventually(lambda: alert_states(http, slot) == ["firing"], 20,
                     what="InstanceDown firing")
    # still down after the dead process's entry expired (2 s): it never said it stopped
    await eventually(lambda: len(get(http, "/api/v1/query",
                                     query="geoplex_mesh_processes")["result"]) == 1
                     and get(http, "/api/v1/query", query="geoplex_mesh_processes")
                     ["result"][0]["value"][1] == "1", 20, what="the entry expired")
    assert up_of(http, slot) == [0.0] and alert_states(http, slot) == ["firing"]
    # ...and counted as a death, which InstanceCrashed reports for 15 minutes
    await eventually(lambda: unclean_exits(http, slot) == [1.0], 20, what="the death counted")
    await eventually(lambda: alert_states(http, slot, "InstanceCrashed") == ["firing"], 20,
                     what="InstanceCrashed firing")

    second = worker("watch-second")   # the supervisor's restart, in the same slot
    await eventually(lambda: up_of(http, slot) == [1.0], 20, what="the slot back up")
    await eventually(lambda: alert_states(http, slot) == [], 20, what="InstanceDown resolved")
    assert alert_states(http, slot, "InstanceCrashed") == ["firing"]   # it did die
    assert unclean_exits(http, slot) == [1.0]

    assert second.stop() == 0        # graceful: the slot's series end, and nothing fires
    await eventually(lambda: up_of(http, slot) == [], 20, what="the slot's series stale")
    assert alert_states(http, slot) == []
