"""OTLP metric and attribute names as Prometheus's OTLP receiver writes them."""

from __future__ import annotations

import pytest

from geoplex.servers.telemetry.otlp import label_name, metric_name


@pytest.mark.parametrize(("name", "unit", "gauge", "counter", "expected"), [
    ("http.server.duration", "s", False, False, "http_server_duration_seconds"),
    ("http.server.requests", "{request}", False, True, "http_server_requests_total"),
    ("process.memory.usage", "By", True, False, "process_memory_usage_bytes"),
    ("system.cpu.utilization", "1", True, False, "system_cpu_utilization_ratio"),
    ("network.io", "By/s", True, False, "network_io_bytes_per_second"),
    ("queue_depth_bytes", "By", True, False, "queue_depth_bytes"),
    ("requests_total", "", False, True, "requests_total"),
    ("2xx.count", "", True, False, "_2xx_count"),
])
def test_metric_names(name: str, unit: str, gauge: bool, counter: bool, expected: str) -> None:
    assert metric_name(name, unit, gauge=gauge, counter=counter) == expected


def test_attribute_names_become_valid_label_names() -> None:
    assert label_name("http.status_code") == "http_status_code"
    assert label_name("1st") == "key_1st"
    assert label_name("__secret") == "key__secret"
