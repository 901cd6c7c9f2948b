"""Telemetry alerting: rule evaluation against Prometheus, and alert-to-email latency.

``python -m bench.telemetry_alerting`` (``make bench-telemetry-alerting``), in one run:

1. Data: ``--hosts`` node-exporter-like hosts of 100 series each (``bench.telemetry``'s
   generator: CPU, network, disk and HTTP-histogram counters with resets, memory,
   filesystem, load and temperature gauges), 15 s scrapes over ``--hours`` ending now.
2. Rules: one Prometheus rule file, 100 rules per 10 hosts (a team): for each team five
   groups (cpu, network, disk, http, host) of 8 recording rules
   (``sum by (job, instance) (rate(node_cpu_seconds_total{...}[5m]))``, histogram
   quantiles, ratios over other recorded series) and 12 alerting rules (thresholds on
   raw and recorded series, ``predict_linear``, ``increase``, ``resets``, ``for`` from
   0s to 1h, templated annotations). ``promtool check rules`` accepts it.
3. Prometheus: Debian's ``prometheus`` (2.42) on blocks ``promtool tsdb
   create-blocks-from openmetrics`` made from the data, with the rule file at an
   ``evaluation_interval`` of ``--eval-interval`` s. Each whole evaluation (a round:
   every group has run again) is the sum over groups of
   ``prometheus_rule_group_last_duration_seconds`` from its ``/metrics``; per rule,
   ``evaluationTime`` from ``/api/v1/rules``; its CPU seconds per round from
   ``/proc/<pid>/stat``. The first ``--warmup`` rounds are left out.
4. Geoplex, in this process: the same samples written with ``append_series`` in time
   order into a real ``TSDB`` (a temporary directory), the same rule file loaded by a
   ``RuleManager`` whose clock is set to the times Prometheus evaluated at (so both see
   the same data), ``evaluate_once()`` repeated: wall time per whole evaluation, CPU
   time, each group's and each rule's own time.
5. Notification latency, real processes: etcd (``LocalInfra``), a notifier node
   (``group_wait`` ``--group-wait``, routing by ``[alertname, probe]`` to email), an SMTP
   server (aiosmtpd) in this process, and a telemetry server with one alerting rule
   (``bench_probe_value > 100``, ``for: 0s``) evaluated every ``--rule-interval`` s.
   ``--reps`` times: a sample below the threshold, a random pause, then a sample above it
   for a new ``probe`` label, written with ``TelemetryClient.write``; the latency is from
   that write to the email's arrival (its DATA), p50 / p99. The rule interval and the
   group wait bound it from below: ``overhead`` = latency - (interval / 2 + group_wait).
6. The host agent's cost: ``bench.telemetry_agent.steady`` (``geoplex agent`` at
   ``--agent-interval`` s against a telemetry server of its own): CPU % of a core, RSS.

Every timed part first waits (``--quiet-wait`` s at most) for an idle machine and records
what it found. Writes ``bench/results/telemetry_alerting.json`` and the
``telemetry-alerting`` section of ``BENCHMARKS.md`` (``--no-write`` to skip; ``--quick``
shrinks everything and implies it; ``--report-only`` re-renders from the results file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from aiosmtpd.smtp import SMTP, Envelope, Session

from geoplex.clients import ChannelOptions
from geoplex.clients.telemetry import TelemetryClient, series
from geoplex.infra.local import BackendUrls, LocalInfra
from geoplex.infra.process import Process
from geoplex.servers.telemetry.promql.engine import Engine
from geoplex.servers.telemetry.promql.parser import parse
from geoplex.servers.telemetry.rules import AlertState, Health, RuleManager
from geoplex.servers.telemetry.rules.evaluator import AlertingRule
from geoplex.servers.telemetry.tsdb import TSDB, FsyncMode, FsyncPolicy, Labels, TSDBOptions

from . import telemetry_agent
from ._common import (Steps, fmt_num, free_port, latency_summary, log, machine_info,
                      machine_line, markdown_table, process_cpu_seconds,
                      read_results, run_and_report, start_server_processes, wait_for_quiet,
                      write_section)
from .telemetry import SERIES_PER_HOST, Dataset, generate

NAME = "telemetry-alerting"
RESULTS = "telemetry_alerting"
TITLE = "## Telemetry: rule evaluation and alert notification latency"
HOST = "127.0.0.1"
HOSTS_PER_TEAM = 10
LOG_ENV = {"GEOPLEX_LOG_LEVEL": "warning", "GEOPLEX_TRACING": "off"}
BUSY_PCT = 20.0  # wait_for_quiet's default threshold
QUICK = {"hosts": 20, "rounds": 3, "prom_rounds": 4, "warmup": 1, "reps": 5,
         "agent_interval": 1.0, "agent_duration": 5.0, "quiet_wait": 0.0}
"""--quick: the defaults it changes (a flag given beside it still wins)."""


# =========================================================================== the rules

@dataclass(frozen=True)
class RuleTemplate:
    """One rule of a team's group: ``SEL`` in ``expr`` becomes the team's instance
    matcher, ``TEAM`` its ``team`` matcher (on series its recording rules wrote)."""

    name: str
    expr: str
    alert: bool = False
    hold: str = "0s"          # the alert's ``for``
    severity: str = "warning"


def _r(name: str, expr: str) -> RuleTemplate:
    return RuleTemplate(name, expr)


def _a(name: str, expr: str, hold: str, severity: str = "warning") -> RuleTemplate:
    return RuleTemplate(name, expr, True, hold, severity)


CPU_BUSY = 'node_cpu_seconds_total{SEL,mode!="idle"}'
HTTP_BUCKETS = "http_request_duration_seconds_bucket{SEL}"
CONCERNS: dict[str, tuple[RuleTemplate, ...]] = {
    "cpu": (
        _r("instance:node_cpu_busy:rate5m", f"sum by (job, instance) (rate({CPU_BUSY}[5m]))"),
        _r("instance:node_cpus:count",
           'count by (job, instance) (node_cpu_seconds_total{SEL,mode="idle"})'),
        _r("instance:node_cpu_utilisation:ratio",
           "instance:node_cpu_busy:rate5m{TEAM} / on (job, instance) "
           "instance:node_cpus:count{TEAM}"),
        _r("instance_mode:node_cpu_seconds:rate5m",
           "sum by (job, instance, mode) (rate(node_cpu_seconds_total{SEL}[5m]))"),
        _r("job:node_cpu_busy:rate5m", f"sum by (job) (rate({CPU_BUSY}[5m]))"),
        _r("instance:node_cpu_iowait:ratio",
           'avg by (job, instance) (rate(node_cpu_seconds_total{SEL,mode="iowait"}[5m]))'),
        _r("instance:node_load1_per_cpu:ratio",
           "node_load1{SEL} / on (job, instance) instance:node_cpus:count{TEAM}"),
        _r("job:node_load5:avg", "avg by (job) (node_load5{SEL})"),
        _a("HostCpuBusy", "instance:node_cpu_utilisation:ratio{TEAM} > 0.25", "5m"),
        _a("HostCpuBusyCritical", "instance:node_cpu_utilisation:ratio{TEAM} > 0.5", "10m",
           "critical"),
        _a("HostCpuBusyBrief", "instance:node_cpu_utilisation:ratio{TEAM} > 0.35", "1m"),
        _a("HostIowaitHigh", "instance:node_cpu_iowait:ratio{TEAM} > 0.04", "5m"),
        _a("HostStealHigh", 'avg by (job, instance) '
           '(rate(node_cpu_seconds_total{SEL,mode="steal"}[5m])) > 0.01', "10m"),
        _a("HostSystemCpuHigh", 'avg by (job, instance) '
           '(rate(node_cpu_seconds_total{SEL,mode="system"}[5m])) > 0.1', "5m"),
        _a("HostLoadHigh", "instance:node_load1_per_cpu:ratio{TEAM} > 0.5", "5m"),
        _a("HostLoadCritical", "instance:node_load1_per_cpu:ratio{TEAM} > 0.8", "15m",
           "critical"),
        _a("HostLoad15High", "node_load15{SEL} > 2.5", "15m"),
        _a("JobCpuBusy", "job:node_cpu_busy:rate5m{TEAM} > 10", "5m"),
        _a("HostContextSwitchesHigh", "rate(node_context_switches_total{SEL}[5m]) > 4000",
           "10m"),
        _a("HostInterruptsHigh", "rate(node_intr_total{SEL}[5m]) > 2500", "10m"),
    ),
    "network": (
        _r("instance:node_network_receive_bytes:rate5m", "sum by (job, instance) "
           '(rate(node_network_receive_bytes_total{SEL,device!="lo"}[5m]))'),
        _r("instance:node_network_transmit_bytes:rate5m", "sum by (job, instance) "
           '(rate(node_network_transmit_bytes_total{SEL,device!="lo"}[5m]))'),
        _r("job:node_network_receive_bytes:rate5m",
           "sum by (job) (rate(node_network_receive_bytes_total{SEL}[5m]))"),
        _r("job:node_network_transmit_bytes:rate5m",
           "sum by (job) (rate(node_network_transmit_bytes_total{SEL}[5m]))"),
        _r("instance:node_network_receive_packets:rate5m",
           "sum by (job, instance) (rate(node_network_receive_packets_total{SEL}[5m]))"),
        _r("instance:node_network_transmit_packets:rate5m",
           "sum by (job, instance) (rate(node_network_transmit_packets_total{SEL}[5m]))"),
        _r("instance:node_network_errors:rate5m",
           "sum by (job, instance) (rate(node_network_receive_errs_total{SEL}[5m]) "
           "+ rate(node_network_transmit_errs_total{SEL}[5m]))"),
        _r("instance:node_network_bytes_per_packet:ratio",
           "instance:node_network_receive_bytes:rate5m{TEAM} "
           "/ instance:node_network_receive_packets:rate5m{TEAM}"),
        _a("NetReceiveHigh", "instance:node_network_receive_bytes:rate5m{TEAM} > 5e5", "5m"),
        _a("NetReceiveCritical", "instance:node_network_receive_bytes:rate5m{TEAM} > 2e6",
           "15m", "critical"),
        _a("NetTransmitHigh", "instance:node_network_transmit_bytes:rate5m{TEAM} > 5e5",
           "5m"),
        _a("NetTransmitCritical", "instance:node_network_transmit_bytes:rate5m{TEAM} > 2e6",
           "15m", "critical"),
        _a("NetErrors", "instance:node_network_errors:rate5m{TEAM} > 0", "5m"),
        _a("NetReceiveErrs", "increase(node_network_receive_errs_total{SEL}[10m]) > 1", "1m"),
        _a("NetTransmitErrs", "increase(node_network_transmit_errs_total{SEL}[10m]) > 1",
           "1m"),
        _a("NetPacketsHigh", "instance:node_network_receive_packets:rate5m{TEAM} > 500",
           "10m"),
        _a("NetLoopbackBusy",
           'rate(node_network_transmit_bytes_total{SEL,device="lo"}[5m]) > 5000', "10m"),
        _a("JobNetReceiveHigh", "job:node_network_receive_bytes:rate5m{TEAM} > 5e6", "10m"),
        _a("NetReceiveBurst",
           'rate(node_network_receive_bytes_total{SEL,device="eth0"}[1m]) '
           '> 3 * rate(node_network_receive_bytes_total{SEL,device="eth0"}[15m])', "2m"),
        _a("NetTransmitBurst",
           'rate(node_network_transmit_bytes_total{SEL,device="eth0"}[1m]) '
           '> 3 * rate(node_network_transmit_bytes_total{SEL,device="eth0"}[15m])', "2m"),
    ),
    "disk": (
        _r("instance_device:node_disk_read_bytes:rate5m",
           "rate(node_disk_read_bytes_total{SEL}[5m])"),
        _r("instance_device:node_disk_written_bytes:rate5m",
           "rate(node_disk_written_bytes_total{SEL}[5m])"),
        _r("instance:node_disk_read_bytes:rate5m",
           "sum by (job, instance) (rate(node_disk_read_bytes_total{SEL}[5m]))"),
        _r("instance:node_disk_written_bytes:rate5m",
           "sum by (job, instance) (rate(node_disk_written_bytes_total{SEL}[5m]))"),
        _r("instance_device:node_disk_io_time:ratio",
           "rate(node_disk_io_time_seconds_total{SEL}[5m])"),
        _r("instance:node_filesystem_avail:ratio",
           "node_filesystem_avail_bytes{SEL} / node_filesystem_size_bytes{SEL}"),
        _r("job:node_disk_written_bytes:rate5m",
           "sum by (job) (rate(node_disk_written_bytes_total{SEL}[5m]))"),
        _r("instance:node_filesystem_used_bytes:sum", "sum by (job, instance) "
           "(node_filesystem_size_bytes{SEL} - node_filesystem_avail_bytes{SEL})"),
        _a("DiskBusy", "instance_device:node_disk_io_time:ratio{TEAM} > 0.2", "5m"),
        _a("DiskSaturated", "instance_device:node_disk_io_time:ratio{TEAM} > 0.5", "15m",
           "critical"),
        _a("DiskReadHigh", "instance:node_disk_read_bytes:rate5m{TEAM} > 1e6", "10m"),
        _a("DiskWriteHigh", "instance:node_disk_written_bytes:rate5m{TEAM} > 1e6", "10m"),
        _a("FilesystemAlmostFull", "instance:node_filesystem_avail:ratio{TEAM} < 0.25", "5m"),
        _a("FilesystemFull", "instance:node_filesystem_avail:ratio{TEAM} < 0.1", "1m",
           "critical"),
        _a("FilesystemFillingUp",
           "predict_linear(node_filesystem_avail_bytes{SEL}[30m], 4 * 3600) < 0 "
           "and on (job, instance, mountpoint) "
           "instance:node_filesystem_avail:ratio{TEAM} < 0.4", "1h"),
        _a("FilesystemFillingFast",
           "predict_linear(node_filesystem_avail_bytes{SEL}[1h], 3600) < 0", "5m", "critical"),
        _a("DiskWriteBurst", "rate(node_disk_written_bytes_total{SEL}[1m]) "
           "> 4 * rate(node_disk_written_bytes_total{SEL}[30m])", "2m"),
        _a("BootFilesystemLow",
           'instance:node_filesystem_avail:ratio{TEAM,mountpoint="/boot"} < 0.3', "10m"),
        _a("VarFilesystemLow",
           'instance:node_filesystem_avail:ratio{TEAM,mountpoint="/var"} < 0.3', "10m"),
        _a("DiskIoTimeGrowing", "increase(node_disk_io_time_seconds_total{SEL}[10m]) > 120",
           "5m"),
    ),
    "http": (
        _r("instance_handler:http_request_duration_seconds:p90", "histogram_quantile(0.9, "
           f"sum by (job, instance, handler, le) (rate({HTTP_BUCKETS}[5m])))"),
        _r("instance_handler:http_request_duration_seconds:p99", "histogram_quantile(0.99, "
           f"sum by (job, instance, handler, le) (rate({HTTP_BUCKETS}[5m])))"),
        _r("job:http_request_duration_seconds:p90",
           f"histogram_quantile(0.9, sum by (job, le) (rate({HTTP_BUCKETS}[5m])))"),
        _r("job:http_request_duration_seconds:p50",
           f"histogram_quantile(0.5, sum by (job, le) (rate({HTTP_BUCKETS}[5m])))"),
        _r("instance_handler:http_requests:rate5m", "sum by (job, instance, handler) "
           "(rate(http_request_duration_seconds_count{SEL}[5m]))"),
        _r("instance_handler:http_request_duration_seconds:mean5m",
           "rate(http_request_duration_seconds_sum{SEL}[5m]) "
           "/ rate(http_request_duration_seconds_count{SEL}[5m])"),
        _r("job:http_requests:rate5m",
           "sum by (job) (rate(http_request_duration_seconds_count{SEL}[5m]))"),
        _r("instance:http_requests_slow:rate5m",
           'sum by (job, instance) (rate(http_request_duration_seconds_bucket{SEL,le="+Inf"}'
           '[5m])) - sum by (job, instance) (rate(http_request_duration_seconds_bucket'
           '{SEL,le="0.25"}[5m]))'),
        _a("HttpLatencyP90High",
           "instance_handler:http_request_duration_seconds:p90{TEAM} > 0.25", "5m"),
        _a("HttpLatencyP99High",
           "instance_handler:http_request_duration_seconds:p99{TEAM} > 1", "5m"),
        _a("HttpLatencyP99Critical",
           "instance_handler:http_request_duration_seconds:p99{TEAM} > 2", "10m", "critical"),
        _a("JobLatencyP90High", "job:http_request_duration_seconds:p90{TEAM} > 0.2", "10m"),
        _a("HttpMeanLatencyHigh",
           "instance_handler:http_request_duration_seconds:mean5m{TEAM} > 0.15", "5m"),
        _a("HttpSlowRequests", "instance:http_requests_slow:rate5m{TEAM} > 2", "5m"),
        _a("HttpTrafficLow", "instance_handler:http_requests:rate5m{TEAM} < 1", "10m"),
        _a("HttpTrafficHigh", "instance_handler:http_requests:rate5m{TEAM} > 40", "5m"),
        _a("HttpNoTraffic", "sum by (job, instance) "
           "(increase(http_request_duration_seconds_count{SEL}[5m])) == 0", "5m", "critical"),
        _a("JobTrafficDrop",
           "sum by (job) (rate(http_request_duration_seconds_count{SEL}[5m])) < 0.5 * "
           "sum by (job) (rate(http_request_duration_seconds_count{SEL}[5m] offset 30m))",
           "10m"),
        _a("QueryLatencyP50High", "histogram_quantile(0.5, sum by (job, instance, le) "
           '(rate(http_request_duration_seconds_bucket{SEL,handler="/api/v1/query"}[5m]))) '
           "> 0.1", "5m"),
        _a("HttpCountersReset", "resets(http_request_duration_seconds_count{SEL}[30m]) > 0",
           "1m", "info"),
    ),
    "host": (
        _r("instance:node_memory_available:ratio",
           "node_memory_MemAvailable_bytes{SEL} / node_memory_MemTotal_bytes{SEL}"),
        _r("instance:node_memory_used_bytes",
           "node_memory_MemTotal_bytes{SEL} - node_memory_MemAvailable_bytes{SEL}"),
        _r("job:node_memory_used_bytes:sum", "sum by (job) (instance:node_memory_used_bytes{TEAM})"),
        _r("instance:node_hwmon_temp_celsius:max",
           "max by (job, instance) (node_hwmon_temp_celsius{SEL})"),
        _r("job:up:ratio", "avg by (job) (up{SEL})"),
        _r("instance:node_uptime_seconds", "time() - node_boot_time_seconds{SEL}"),
        _r("instance:node_scrape_collector_duration_seconds:max",
           "max by (job, instance) (node_scrape_collector_duration_seconds{SEL})"),
        _r("instance:node_memory_cache:ratio", "(node_memory_Cached_bytes{SEL} "
           "+ node_memory_Buffers_bytes{SEL}) / node_memory_MemTotal_bytes{SEL}"),
        _a("HostMemoryLow", "instance:node_memory_available:ratio{TEAM} < 0.3", "5m"),
        _a("HostMemoryCritical", "instance:node_memory_available:ratio{TEAM} < 0.1", "5m",
           "critical"),
        _a("HostOutOfMemorySoon",
           "predict_linear(node_memory_MemAvailable_bytes{SEL}[30m], 3600) < 0", "10m"),
        _a("HostTemperatureHigh", "instance:node_hwmon_temp_celsius:max{TEAM} > 55", "5m"),
        _a("HostTemperatureCritical", "instance:node_hwmon_temp_celsius:max{TEAM} > 65", "1m",
           "critical"),
        _a("InstanceDown", "up{SEL} == 0", "1m", "critical"),
        _a("JobDegraded", "job:up:ratio{TEAM} < 0.9", "5m"),
        _a("HostRebooted", "instance:node_uptime_seconds{TEAM} < 3600", "0s", "info"),
        _a("HostBootTimeChanged", "changes(node_boot_time_seconds{SEL}[1h]) > 0", "0s", "info"),
        _a("SlowCollector",
           "instance:node_scrape_collector_duration_seconds:max{TEAM} > 0.002", "10m"),
        _a("HostTemperatureRising", "deriv(node_hwmon_temp_celsius{SEL}[15m]) > 0.01", "10m"),
        _a("HostMemoryDropping", "delta(node_memory_MemAvailable_bytes{SEL}[15m]) < -1e8",
           "5m"),
    ),
}
RULES_PER_TEAM = sum(len(t) for t in CONCERNS.values())


def _q(text: str) -> str:
    """A YAML scalar (a JSON string is a YAML double-quoted one)."""
    return json.dumps(text)


def rule_file_text(teams: int) -> str:
    """The rule file: for each team, one group per concern."""
    lines = ["groups:"]
    for t in range(teams):
        team = f"t{t:02d}"
        sel = f'instance=~"host-{t:02d}[0-9]:9100"'
        for concern, templates in CONCERNS.items():
            lines += [f"  - name: {_q(f'{concern}-{team}')}", "    rules:"]
            for rule in templates:
                expr = rule.expr.replace("SEL", sel).replace("TEAM", f'team="{team}"')
                if not rule.alert:
                    lines += [f"      - record: {_q(rule.name)}", f"        expr: {_q(expr)}",
                              f"        labels: {{team: {_q(team)}}}"]
                    continue
                lines += [f"      - alert: {_q(rule.name)}", f"        expr: {_q(expr)}",
                          f"        for: {rule.hold}",
                          f"        labels: {{severity: {_q(rule.severity)}, team: {_q(team)}}}",
                          "        annotations:",
                          "          summary: " + _q(f"{rule.name} on {{{{ $labels.instance }}}}"
                                                     " ({{ $labels.job }})"),
                          "          description: " + _q("value {{ $value | humanize }}, "
                                                         f"threshold in {concern}-{team}")]
    return "\n".join(lines) + "\n"


def rule_counts(teams: int) -> dict[str, int]:
    alerting = sum(r.alert for t in CONCERNS.values() for r in t) * teams
    total = RULES_PER_TEAM * teams
    return {"rules": total, "recording": total - alerting, "alerting": alerting,
            "groups": len(CONCERNS) * teams}


# =========================================================================== helpers

def _http_get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _version(argv: Sequence[str], pattern: str) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    found = re.search(pattern, done.stdout + done.stderr)
    return found.group(1) if found else "unknown"


def _rfc3339_s(text: str) -> float:
    """Unix seconds of Go's RFC 3339 (nanosecond fractions cut to microseconds)."""
    head, _, rest = text.rstrip("Z").partition(".")
    fraction = rest[:6].ljust(6, "0") if rest else "000000"
    stamp = datetime.strptime(f"{head}.{fraction}", "%Y-%m-%dT%H:%M:%S.%f")
    return stamp.replace(tzinfo=timezone.utc).timestamp()


def quiet(args: argparse.Namespace, label: str) -> dict[str, Any]:
    """Wait (at most ``--quiet-wait`` s) for an idle machine; what it found."""
    if args.quiet_wait <= 0:
        return {"label": label, "busy_pct": math.nan, "waited_s": 0.0, "timed_out": False,
                "skipped": True}
    t0 = time.perf_counter()
    busy = wait_for_quiet(max_wait=args.quiet_wait, busy_pct=BUSY_PCT)
    waited = time.perf_counter() - t0
    if busy >= BUSY_PCT:
        log(f"    (machine still {busy:.0f}% busy before {label})")
    return {"label": label, "busy_pct": busy, "waited_s": waited,
            "timed_out": busy >= BUSY_PCT, "skipped": False}


def _ms_stats(values_s: Sequence[float]) -> dict[str, float]:
    stats = latency_summary(values_s)
    return {"count": float(len(values_s)), **stats}


# =========================================================================== the data

def write_openmetrics(dataset: Dataset, path: Path) -> int:
    """The samples as OpenMetrics text, one metric name after another (families must not
    interleave), each series in time order; the number of samples written."""
    host_of = np.arange(dataset.series) // SERIES_PER_HOST
    order = sorted(range(dataset.series), key=lambda i: dataset.labels[i])
    by_name = sorted(order, key=lambda i: dict(dataset.labels[i])["__name__"])
    written = 0
    with path.open("w", encoding="utf-8") as out:
        for i in by_name:
            pairs = dict(dataset.labels[i])
            name = pairs.pop("__name__")
            head = name + "{" + ",".join(f'{k}="{v}"' for k, v in pairs.items()) + "} "
            stamps = dataset.timestamps[host_of[i]].tolist()
            values = dataset.values[i].tolist()
            out.write("".join(f"{head}{v!r} {t // 1000}.{t % 1000:03d}\n"
                              for t, v in zip(stamps, values)))
            written += len(values)
        out.write("# EOF\n")
    return written


def load_geoplex(dataset: Dataset, path: Path, fsync: str,
                 slice_scrapes: int = 20) -> tuple[TSDB, float]:
    """A TSDB at ``path`` holding the dataset, written with ``append_series`` slice by
    slice in time order (every series' next ``slice_scrapes`` samples a call), its WAL
    synced as ``fsync`` says (the server's ``GEOPLEX_TELEMETRY_FSYNC``; ``interval``:
    every 10 ms, the server's default interval); the store and the seconds it took."""
    started = time.perf_counter()
    db = TSDB.open(path, TSDBOptions(fsync=FsyncPolicy(FsyncMode(fsync), 10)))
    try:
        labels = [Labels(pairs) for pairs in dataset.labels]
        host_of = np.arange(dataset.series) // SERIES_PER_HOST
        scrapes = dataset.values.shape[1]
        for a in range(0, scrapes, slice_scrapes):
            b = min(a + slice_scrapes, scrapes)
            db.append_series([(labels[i], dataset.timestamps[host_of[i], a:b],
                               dataset.values[i, a:b]) for i in range(dataset.series)])
    except BaseException:
        db.close()
        raise
    return db, time.perf_counter() - started


# =========================================================================== Prometheus

_GROUP_METRIC = re.compile(r'^(prometheus_rule_\w+)\{rule_group="([^"]*)"\} (\S+)$')


def _group_metrics(url: str) -> dict[str, dict[str, float]]:
    """``prometheus_rule_*{rule_group=...}`` from ``/metrics``: metric -> group -> value."""
    out: dict[str, dict[str, float]] = {}
    for line in _http_get(url + "/metrics").decode().splitlines():
        found = _GROUP_METRIC.match(line)
        if found:
            out.setdefault(found[1], {})[found[2]] = float(found[3])
    return out


def _rules_api(url: str) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = json.loads(_http_get(url + "/api/v1/rules"))["data"]["groups"]
    return groups


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and Path(f"/usr/bin/{name}").exists():
        found = f"/usr/bin/{name}"
    return found


def prometheus_rules(args: argparse.Namespace, work: Path, dataset: Dataset,
                     rule_path: Path, groups: int, result: dict[str, Any]) -> dict[str, Any]:
    """Prometheus on promtool's blocks of the dataset, evaluating the rule file."""
    promtool, binary = _binary("promtool"), _binary("prometheus")
    if promtool is None or binary is None:
        return {"available": False, "error": "prometheus or promtool missing (`make "
                                             "system-deps` installs Debian's prometheus)"}
    version = _version([binary, "--version"], r"version (\S+)")
    cell: dict[str, Any] = {"available": True, "version": version,
                            "interval_s": args.eval_interval}
    check = subprocess.run([promtool, "check", "rules", str(rule_path)], capture_output=True,
                           text=True, timeout=120)
    cell["promtool_check"] = (check.stdout + check.stderr).strip()[-400:]
    if check.returncode != 0:
        cell.update(available=False, error=f"promtool check rules: {cell['promtool_check']}")
        return cell
    source, blocks = work / "samples.om.txt", work / "prometheus"
    t0 = time.perf_counter()
    written = write_openmetrics(dataset, source)
    cell["openmetrics_bytes"] = source.stat().st_size
    cell["openmetrics_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    convert = Process("promtool", [promtool, "tsdb", "create-blocks-from", "openmetrics",
                                   str(source), str(blocks)], work / "promtool.log")
    try:
        code = convert.start().wait(timeout=900)
    finally:
        convert.stop(grace=2.0)
    source.unlink()
    cell["create_blocks_s"] = time.perf_counter() - t0
    if code != 0:
        cell.update(available=False, error=f"promtool create-blocks-from openmetrics "
                                           f"exited {code}: {convert.log_tail(5)}")
        return cell
    log(f"    {written:,} samples as OpenMetrics ({cell['openmetrics_bytes'] / 2**20:,.0f} "
        f"MiB, {cell['openmetrics_s']:.0f} s), blocks by promtool in "
        f"{cell['create_blocks_s']:.0f} s")
    config = work / "prometheus.yml"
    config.write_text(f"global:\n  evaluation_interval: {args.eval_interval:g}s\n"
                      f"rule_files:\n  - {_q(str(rule_path))}\n")
    port = free_port()
    url = f"http://{HOST}:{port}"
    result["quiet"].append(quiet(args, "the Prometheus rounds"))
    server = Process("prometheus", [
        binary, f"--config.file={config}", f"--storage.tsdb.path={blocks}",
        f"--web.listen-address={HOST}:{port}", "--storage.tsdb.retention.time=10y",
        "--log.level=warn"], work / "prometheus.log", probe=lambda: _http_ok(url + "/-/ready"),
        stop_grace=15.0)
    with server:
        server.wait_ready(120)
        assert server.pid is not None
        cell.update(measure_prometheus(args, url, server.pid, groups, dataset.last_ms))
        cell["rss_bytes"] = telemetry_agent.memory_kb(server.pid).get("VmRSS", 0) * 1024
    return cell


def measure_prometheus(args: argparse.Namespace, url: str, pid: int, groups: int,
                       data_end_ms: int) -> dict[str, Any]:
    """Rounds of evaluation, each recorded once every group has run again since the last."""
    interval = args.eval_interval
    wanted = args.warmup + args.prom_rounds
    rounds: list[dict[str, Any]] = []
    last: dict[str, float] = {}
    deadline = time.monotonic() + 120 + wanted * interval * 4
    while len(rounds) < wanted and time.monotonic() < deadline:
        time.sleep(interval / 5 if rounds else 0.5)
        metrics = _group_metrics(url)
        iterations = metrics.get("prometheus_rule_group_iterations_total", {})
        if len(iterations) < groups or any(v < 1 for v in iterations.values()):
            continue
        if last and not all(iterations[g] > last[g] for g in iterations):
            continue
        api = _rules_api(url)
        rounds.append({"cpu_s": process_cpu_seconds(pid), "iterations": dict(iterations),
                       "metrics": metrics, "api": api})
        last = dict(iterations)
        if len(rounds) % 4 == 0 or len(rounds) == wanted:
            log(f"    Prometheus: {len(rounds)} of {wanted} rounds")
    if len(rounds) <= args.warmup:
        return {"available": False, "error": f"only {len(rounds)} rounds in time"}
    kept = rounds[args.warmup:]
    whole = [sum(r["metrics"]["prometheus_rule_group_last_duration_seconds"].values())
             for r in kept]
    per_rule: dict[str, list[float]] = {"all": [], "recording": [], "alerting": []}
    deltas: list[float] = []
    for r in kept:
        for group in r["api"]:
            deltas.append(_rfc3339_s(group["lastEvaluation"]) - data_end_ms / 1000)
            for rule in group["rules"]:
                seconds = float(rule["evaluationTime"])
                per_rule["all"].append(seconds)
                per_rule[str(rule["type"])].append(seconds)
    first, end = kept[0], kept[-1]
    iterations = sum(end["iterations"].values()) - sum(first["iterations"].values())
    cpu_s = end["cpu_s"] - first["cpu_s"]
    unhealthy = [(g["name"], rule["name"], rule.get("lastError", ""))
                 for g in end["api"] for rule in g["rules"] if rule.get("health") != "ok"]
    states = [str(alert.get("state")) for g in end["api"] for rule in g["rules"]
              for alert in rule.get("alerts", [])]
    samples = end["metrics"].get("prometheus_rule_group_last_evaluation_samples", {})
    missed = end["metrics"].get("prometheus_rule_group_iterations_missed_total", {})
    return {
        "rounds": len(kept), "warmup_rounds": args.warmup,
        "whole_s": whole, "whole": _ms_stats(whole),
        "group_sum_is": "sum over groups of prometheus_rule_group_last_duration_seconds",
        "cpu_per_round_s": cpu_s / (iterations / groups) if iterations else math.nan,
        "per_rule": {k: _ms_stats(v) for k, v in per_rule.items()},
        "samples_per_round": sum(samples.values()),
        "iterations_missed": sum(missed.values()),
        "unhealthy_rules": len(unhealthy), "unhealthy_examples": unhealthy[:5],
        "alerts_firing": states.count("firing"), "alerts_pending": states.count("pending"),
        "eval_delta_s": [min(deltas), max(deltas)] if deltas else [],
    }


# =========================================================================== Geoplex rules

async def geoplex_rules(args: argparse.Namespace, db: TSDB, rule_path: Path,
                        deltas: Sequence[float], data_end_ms: int) -> dict[str, Any]:
    """The rule file through a RuleManager over ``db``, its clock at ``data_end_ms`` +
    each of ``deltas`` (seconds) in turn: one ``evaluate_once()`` each."""
    clock = [data_end_ms / 1000]
    engine = Engine(db)
    manager = RuleManager(db, engine, rule_files=[rule_path],
                          interval_s=args.eval_interval, clock=lambda: clock[0])
    await manager.load()
    if manager.load_errors:
        raise RuntimeError(f"the rule file does not load: {manager.load_errors[:3]}")
    groups = manager.groups()
    whole: list[float] = []
    cpu: list[float] = []
    group_sum: list[float] = []
    per_rule: dict[str, list[float]] = {"all": [], "recording": [], "alerting": []}
    slowest: dict[str, float] = {}
    samples = 0
    alerts_sent = 0
    for k, delta in enumerate(deltas):
        clock[0] = data_end_ms / 1000 + delta
        c0, t0 = time.process_time(), time.perf_counter()
        sent = await manager.evaluate_once()
        wall, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        warm = k < args.warmup
        log(f"    Geoplex: evaluation {k + 1} of {len(deltas)}"
            f"{' (warm-up)' if warm else ''}: {wall:.2f} s wall, {cpu_s:.2f} s CPU")
        if warm:
            continue
        whole.append(wall)
        cpu.append(cpu_s)
        group_sum.append(sum(g.metrics.last_duration_s for g in groups))
        samples = sum(g.metrics.last_samples for g in groups)
        alerts_sent += len(sent)
        for group in groups:
            for rule in group.rules:
                kind = "alerting" if isinstance(rule, AlertingRule) else "recording"
                per_rule["all"].append(rule.evaluation_s)
                per_rule[kind].append(rule.evaluation_s)
                key = f"{group.name}/{rule.name}"
                slowest[key] = max(slowest.get(key, 0.0), rule.evaluation_s)
    rules = [r for g in groups for r in g.rules]
    unhealthy = [(r.name, r.last_error) for r in rules if r.health is Health.ERR]
    states = [a.state for r in rules if isinstance(r, AlertingRule) for a in r.alerts()]
    firing, pending = states.count(AlertState.FIRING), states.count(AlertState.PENDING)
    top = sorted(slowest.items(), key=lambda kv: -kv[1])[:5]
    # what every query pays before it reads a sample: the engine picks the tier to read
    # from (Engine.resolution_for asks the store each tier's oldest time)
    probe, at_ms = parse("up"), int(clock[0] * 1000)
    choosing: list[float] = []
    for _ in range(10):
        t0 = time.perf_counter()
        engine.resolution_for(probe, at_ms)
        choosing.append(time.perf_counter() - t0)
    choosing.sort()
    return {
        "resolution_for_ms": choosing[len(choosing) // 2] * 1000,
        "head_series_after": db.stats().head_series,
        "rounds": len(whole), "warmup_rounds": args.warmup,
        "eval_delta_s": [deltas[args.warmup], deltas[-1]] if len(deltas) > args.warmup else [],
        "whole_s": whole, "whole": _ms_stats(whole),
        "group_sum": _ms_stats(group_sum),
        "cpu_per_round_s": sum(cpu) / len(cpu) if cpu else math.nan,
        "per_rule": {k: _ms_stats(v) for k, v in per_rule.items()},
        "samples_per_round": samples, "alerts_handed_to_sender": alerts_sent,
        "alerts_firing": firing, "alerts_pending": pending,
        "unhealthy_rules": len(unhealthy), "unhealthy_examples": unhealthy[:5],
        "slowest_rules_ms": {k: v * 1000 for k, v in top},
    }


# =========================================================================== notifications

@dataclass
class Mailbox:
    """aiosmtpd's handler: each message's arrival time (at the end of DATA) resolves the
    futures waiting for a probe token it contains."""

    token: re.Pattern[bytes]
    waiting: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    received: int = 0
    unmatched: int = 0

    def expect(self, token: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[token] = future
        return future

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        arrived = time.perf_counter()
        self.received += 1
        content = envelope.original_content or b""
        tokens = {m.decode() for m in self.token.findall(content)}
        matched = False
        for token in tokens:
            future = self.waiting.pop(token, None)
            if future is not None and not future.done():
                future.set_result(arrived)
                matched = True
        self.unmatched += not matched
        return "250 OK: queued"


PROBE_RULES = """\
groups:
  - name: bench-probe
    rules:
      - alert: BenchProbeHigh
        expr: bench_probe_value > 100
        for: 0s
        labels:
          severity: page
        annotations:
          summary: "probe {{ $labels.probe }} at {{ $value }}"
"""


def notifier_config(group_wait: float, smtp_port: int) -> str:
    return (
        "route:\n"
        "  receiver: mail\n"
        "  group_by: [alertname, probe]\n"
        f"  group_wait: {group_wait * 1000:.0f}ms\n"
        "  group_interval: 5m\n"
        "  repeat_interval: 4h\n"
        "receivers:\n"
        "  - name: mail\n"
        "    email_configs:\n"
        f"      - {{to: oncall@example.com, from: notifier@example.com, "
        f"smarthost: '{HOST}:{smtp_port}', require_tls: false}}\n")


async def notification_latency(args: argparse.Namespace, work: Path,
                               result: dict[str, Any]) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    mailbox = Mailbox(re.compile(rb"probe-" + run.encode() + rb"-\d+"))
    smtp_port = free_port()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(lambda: SMTP(mailbox, hostname="localhost", loop=loop),
                                    HOST, smtp_port)
    rules, routes = work / "probe-rules.yml", work / "notifier.yml"
    rules.write_text(PROBE_RULES)
    routes.write_text(notifier_config(args.group_wait, smtp_port))
    cell: dict[str, Any] = {"rule_interval_s": args.rule_interval,
                            "group_wait_s": args.group_wait, "reps": args.reps}
    try:
        with contextlib.ExitStack() as stack:
            infra = LocalInfra(work / "infra", backends=("etcd",), configured=BackendUrls(),
                               progress=lambda msg: log(f"    {msg}"))
            urls = stack.enter_context(infra)
            assert urls.etcd_endpoints
            notifier = stack.enter_context(start_server_processes(
                [sys.executable, "-m", "geoplex.servers.notifier"], 1, {
                    "GEOPLEX_NOTIFIER_PORT": "0", "GEOPLEX_NOTIFIER_CONFIG": str(routes),
                    "GEOPLEX_ETCD_ENDPOINTS": ",".join(urls.etcd_endpoints),
                    "GEOPLEX_NOTIFIER_ETCD_PREFIX": f"/geoplex-bench/{run}", **LOG_ENV},
                ready_timeout=60))
            telemetry = stack.enter_context(start_server_processes(
                [sys.executable, "-m", "geoplex.servers.telemetry"], 1, {
                    "GEOPLEX_TELEMETRY_PORT": "0", "GEOPLEX_TELEMETRY_HTTP_PORT": "off",
                    "GEOPLEX_TELEMETRY_DATA_DIR": str(work / "probe-store"),
                    "GEOPLEX_TELEMETRY_RULE_FILES": str(rules),
                    "GEOPLEX_TELEMETRY_RULE_INTERVAL_SECONDS": f"{args.rule_interval:g}",
                    "GEOPLEX_TELEMETRY_NOTIFIERS": notifier.address, **LOG_ENV},
                ready_timeout=60))
            log(f"    etcd {urls.etcd_endpoints[0]}, notifier {notifier.address}, telemetry "
                f"{telemetry.address}, SMTP {HOST}:{smtp_port}")
            latencies: list[float] = []
            write_s: list[float] = []
            timeouts = 0
            async with TelemetryClient(telemetry.address, ChannelOptions(retry=False)) as tm:
                for k in range(args.reps + 1):  # the first one warms the path up
                    token = f"probe-{run}-{k:03d}"
                    labels = {"__name__": "bench_probe_value", "probe": token}
                    await tm.write([series(labels, [(int(time.time() * 1000), 10.0)])],
                                   timeout=10)
                    await asyncio.sleep(random.uniform(0.3, 0.3 + args.rule_interval))
                    arrived = mailbox.expect(token)
                    started = time.perf_counter()
                    await tm.write([series(labels, [(int(time.time() * 1000), 250.0)])],
                                   timeout=10)
                    written = time.perf_counter()
                    try:
                        at = await asyncio.wait_for(arrived, args.mail_timeout)
                    except asyncio.TimeoutError:
                        timeouts += k > 0
                        log(f"    {token}: no email within {args.mail_timeout:g} s")
                        continue
                    if k == 0:
                        log(f"    warm-up: {(at - started) * 1000:,.0f} ms")
                        continue
                    latencies.append(at - started)
                    write_s.append(written - started)
                    if k % 5 == 0 or k == args.reps:
                        log(f"    {k} of {args.reps}: last {(at - started) * 1000:,.0f} ms")
            # stopped here, not by the exit stack, to time the notifier's graceful stop
            t0 = time.perf_counter()
            telemetry.stop(timeout=30)
            t1 = time.perf_counter()
            notifier.stop(timeout=30)
            cell["stop_s"] = {"telemetry": t1 - t0, "notifier": time.perf_counter() - t1}
            bound_s = args.rule_interval / 2 + args.group_wait
            stats = latency_summary(latencies)
            cell.update(
                latencies_s=latencies, timeouts=timeouts, emails=mailbox.received,
                unmatched_emails=mailbox.unmatched, bound_ms=bound_s * 1000,
                write=latency_summary(write_s), **stats,
                overhead_p50_ms=stats["p50_ms"] - bound_s * 1000,
                overhead_p99_ms=stats["p99_ms"] - bound_s * 1000,
                overhead_mean_ms=stats["mean_ms"] - bound_s * 1000)
    finally:
        smtp.close()
        await smtp.wait_closed()
    return cell


# =========================================================================== agent

def agent_cost(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``bench.telemetry_agent.steady``: ``geoplex agent`` against its own server."""
    logs = work / "agent-logs"
    logs.mkdir()
    with start_server_processes([sys.executable, "-m", "geoplex.servers.telemetry"], 1, {
            "GEOPLEX_TELEMETRY_PORT": "0", "GEOPLEX_TELEMETRY_HTTP_PORT": "off",
            "GEOPLEX_TELEMETRY_DATA_DIR": str(work / "agent-store"), **LOG_ENV}) as servers:
        options = argparse.Namespace(interval=args.agent_interval,
                                     duration=args.agent_duration,
                                     quiet_max=max(args.quiet_wait, 0.5))
        return telemetry_agent.steady("geoplex agent", servers.address, options, logs)


# =========================================================================== the run

def _deltas(prom: Mapping[str, Any], args: argparse.Namespace) -> list[float]:
    """When Geoplex evaluates, in seconds after the data's end: from where Prometheus's
    kept rounds began (the warm-up rounds before), one interval apart."""
    span = prom.get("eval_delta_s") or []
    start = float(span[0]) if span else 30.0
    first = start - args.warmup * args.eval_interval
    return [first + k * args.eval_interval for k in range(args.warmup + args.rounds)]


def measure(args: argparse.Namespace, work: Path, step: Steps, result: dict[str, Any]) -> None:
    teams = max(1, args.hosts // HOSTS_PER_TEAM)
    hosts = teams * HOSTS_PER_TEAM
    end_ms = int(time.time() * 1000)
    step(1, "data", f"generating {hosts} hosts x {SERIES_PER_HOST} series, {args.hours:g} h "
         "of 15 s scrapes, and the rule file...")
    dataset = generate(hosts, args.hours, end_ms, args.seed)
    rule_path = work / "rules.yml"
    rule_path.write_text(rule_file_text(teams))
    counts = rule_counts(teams)
    result["data"] = {"hosts": hosts, "series": dataset.series, "samples": dataset.samples,
                      "scrapes": int(dataset.values.shape[1]), "hours": args.hours,
                      "first_ms": dataset.first_ms, "last_ms": dataset.last_ms,
                      "hosts_rebooted": dataset.resets}
    result["rules"] = {**counts, "teams": teams, "per_group": RULES_PER_TEAM // len(CONCERNS),
                       "file_bytes": rule_path.stat().st_size}
    log(f"    {dataset.series:,} series, {dataset.samples:,} samples; {counts['rules']:,} "
        f"rules ({counts['recording']} recording, {counts['alerting']} alerting) in "
        f"{counts['groups']} groups")

    step(2, "prometheus", f"Prometheus: blocks from promtool, the rules every "
         f"{args.eval_interval:g} s, {args.warmup} + {args.prom_rounds} rounds...")
    prom = prometheus_rules(args, work, dataset, rule_path, counts["groups"], result)
    result["prometheus"] = prom
    if prom.get("available") and "whole" in prom:
        log(f"    Prometheus {prom['version']}: whole evaluation p50 "
            f"{prom['whole']['p50_ms']:.1f} ms, CPU {prom['cpu_per_round_s'] * 1000:.1f} ms "
            f"a round, {prom['unhealthy_rules']} rules failing")
    else:
        log(f"    Prometheus not measured: {prom.get('error')}")

    step(3, "geoplex", "Geoplex: the same samples into a TSDB, the same rules through a "
         f"RuleManager, {args.warmup} + {args.rounds} evaluations...")
    with tempfile.TemporaryDirectory(prefix="geoplex-bench-alerting-tsdb-",
                                     dir=work) as store:
        db, load_s = load_geoplex(dataset, Path(store), args.fsync)
        try:
            stats = db.stats()
            log(f"    loaded in {load_s:.1f} s (head {stats.head_series:,} series, "
                f"{stats.head_samples:,} samples; {len(stats.blocks)} blocks)")
            result["quiet"].append(quiet(args, "the Geoplex evaluations"))
            geo = asyncio.run(geoplex_rules(args, db, rule_path, _deltas(prom, args),
                                            dataset.last_ms))
        finally:
            db.close()
    geo["load_s"] = load_s
    geo["store"] = {"head_series": stats.head_series, "head_samples": stats.head_samples,
                    "blocks": len(stats.blocks)}
    result["geoplex"] = geo
    log(f"    whole evaluation p50 {geo['whole']['p50_ms']:,.0f} ms, "
        f"{geo['unhealthy_rules']} rules failing")
    del dataset

    step(4, "notify", f"notification latency: rule interval {args.rule_interval:g} s, "
         f"group_wait {args.group_wait:g} s, {args.reps} alerts to email...")
    result["quiet"].append(quiet(args, "the notification latency"))
    result["notify"] = asyncio.run(notification_latency(args, work, result))
    n = result["notify"]
    log(f"    p50 {n['p50_ms']:,.0f} ms, p99 {n['p99_ms']:,.0f} ms (overhead mean "
        f"{n['overhead_mean_ms']:,.0f} ms); stopping took telemetry "
        f"{n['stop_s']['telemetry']:.1f} s, the notifier {n['stop_s']['notifier']:.1f} s")

    step(5, "agent", f"the host agent's cost at {args.agent_interval:g} s for "
         f"{args.agent_duration:g} s...")
    result["agent"] = agent_cost(args, work)
    a = result["agent"]
    log(f"    {a['cpu_pct']:.2f} % of a core, RSS {a['rss_mb']:.1f} MB")


def ratios(result: Mapping[str, Any]) -> dict[str, float]:
    geo, prom = result.get("geoplex", {}), result.get("prometheus", {})

    def over(a: Any, b: Any) -> float:
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
            return math.nan
        return float(a) / float(b)

    if "whole" not in prom:
        return {}
    out = {"whole_p50": over(geo["whole"]["p50_ms"], prom["whole"]["p50_ms"]),
           "whole_p99": over(geo["whole"]["p99_ms"], prom["whole"]["p99_ms"]),
           "cpu_per_round": over(geo["cpu_per_round_s"], prom["cpu_per_round_s"])}
    for kind in ("all", "recording", "alerting"):
        for q in ("p50_ms", "p99_ms"):
            out[f"rule_{kind}_{q.removesuffix('_ms')}"] = over(
                geo["per_rule"][kind][q], prom["per_rule"][kind][q])
    return out


def amain(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": NAME, "machine": machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k != "report_only"},
        "quiet": []}
    step = Steps(5)
    with tempfile.TemporaryDirectory(prefix="geoplex-bench-alerting-") as work:
        measure(args, Path(work), step, result)
    step.done()
    result["ratios"] = ratios(result)
    result["step_s"] = step.seconds
    result["elapsed_s"] = time.perf_counter() - started
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    return result


# =========================================================================== report

def _pair(cell: Mapping[str, Any], digits: int = 1) -> str:
    return f"{fmt_num(cell.get('p50_ms', math.nan), digits)} / " \
           f"{fmt_num(cell.get('p99_ms', math.nan), digits)}"


def _x(value: float | None) -> str:
    return f"{value:.1f}x" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def report(result: Mapping[str, Any]) -> str:
    d, r, s = result["data"], result["rules"], result["settings"]
    geo, prom = result["geoplex"], result.get("prometheus", {})
    x = result.get("ratios", {})
    have_prom = "whole" in prom
    pv = prom.get("version", "2.42")
    lines = [
        "`python -m bench.telemetry_alerting` (`make bench-telemetry-alerting`). "
        f"Rule evaluation: {r['rules']:,} rules ({r['recording']} recording, "
        f"{r['alerting']} alerting with thresholds, `for` 0s-1h and templated annotations) "
        f"in {r['groups']} groups of {r['per_group']} (per team of {HOSTS_PER_TEAM} hosts: "
        "cpu, network, disk, http, host; recording rules such as `sum by (job, instance) "
        "(rate(node_cpu_seconds_total[5m]))` and histogram quantiles, alerts on raw and "
        f"recorded series) over {d['series']:,} node-exporter-like series, 15 s samples "
        f"over {d['hours']:g} h ({d['samples']:,} samples). Prometheus {pv} (Debian) "
        "serves them from blocks made by `promtool tsdb create-blocks-from openmetrics` and "
        f"evaluates the rule file every {s['eval_interval']:g} s; a *whole evaluation* is "
        "the sum over groups of `prometheus_rule_group_last_duration_seconds` once every "
        "group has run again, per rule its `evaluationTime` (`/api/v1/rules`), CPU from "
        "`/proc/<pid>/stat`. Geoplex: the same samples written in time order with "
        "`append_series` into a real TSDB in a temporary directory (in its head, as a "
        f"server holds its last hours; WAL policy `{s.get('fsync', 'always')}`: with "
        "`always`, the server's default, each rule's output is synced to disk before the "
        "next rule runs, which Prometheus does not do), the same file loaded by a "
        "`RuleManager` in this "
        "process whose clock is set to the times Prometheus evaluated at (each round one "
        "interval later), `evaluate_once()` timed (wall and CPU; groups one after another, "
        f"each off the event loop). Rounds kept: Prometheus {prom.get('rounds', 0)}, "
        f"Geoplex {geo['rounds']}, after {s['warmup']} warm-up round(s) each; p50 / p99 "
        "over them (with so few rounds p99 is close to the slowest).", "",
        f"Machine: {machine_line(result['machine'])}. Whole run: "
        f"{fmt_num(result.get('elapsed_s', math.nan) / 60, 1)} min.", ""]
    waits = result.get("quiet", [])
    busy = [w for w in waits if w.get("timed_out")]
    if busy:
        lines += ["*Noise*: the machine was still busy (other work on it) before "
                  + ", ".join(f"{w['label']} ({w['busy_pct']:.0f}% of a core after "
                              f"{w['waited_s']:.0f} s)" for w in busy)
                  + ": those numbers may be high.", ""]
    if any(w.get("skipped") for w in waits):
        lines += ["*Noise*: no wait for an idle machine in this run (`--quiet-wait 0`).", ""]

    def pc(key: str, digits: int = 1) -> str:
        return _pair(prom.get("per_rule", {}).get(key, {}), digits) if have_prom else "-"

    rows = [
        ["whole evaluation (all groups), p50 / p99 ms", _pair(geo["whole"], 0),
         _pair(prom["whole"], 1) if have_prom else "-",
         f"{_x(x.get('whole_p50'))} / {_x(x.get('whole_p99'))}"],
        ["CPU per whole evaluation, ms", fmt_num(geo["cpu_per_round_s"] * 1000, 0),
         fmt_num(prom.get("cpu_per_round_s", math.nan) * 1000, 1), _x(x.get("cpu_per_round"))],
        ["per rule, p50 / p99 ms", _pair(geo["per_rule"]["all"], 2), pc("all", 2),
         f"{_x(x.get('rule_all_p50'))} / {_x(x.get('rule_all_p99'))}"],
        ["recording rule, p50 / p99 ms", _pair(geo["per_rule"]["recording"], 2),
         pc("recording", 2),
         f"{_x(x.get('rule_recording_p50'))} / {_x(x.get('rule_recording_p99'))}"],
        ["alerting rule, p50 / p99 ms", _pair(geo["per_rule"]["alerting"], 2),
         pc("alerting", 2),
         f"{_x(x.get('rule_alerting_p50'))} / {_x(x.get('rule_alerting_p99'))}"],
        ["samples written per evaluation", fmt_num(geo["samples_per_round"]),
         fmt_num(prom.get("samples_per_round", math.nan)), ""],
        ["rules failing", str(geo["unhealthy_rules"]),
         str(prom.get("unhealthy_rules", "-")), ""],
    ]
    lines += [markdown_table(["rule evaluation", "Geoplex", f"Prometheus {pv}",
                              "Geoplex / Prometheus"], rows, "lrrr"), ""]
    if not have_prom:
        lines += [f"Prometheus was not measured: {prom.get('error', '?')}.", ""]
    slow = ", ".join(f"`{k}` {v:,.0f} ms" for k, v in list(geo["slowest_rules_ms"].items())[:3])
    choose = geo.get("resolution_for_ms", math.nan)
    lines += [f"Geoplex's slowest rules (their slowest evaluation): {slow}. Of every "
              f"rule's time, {fmt_num(choose, 1)} ms goes before any sample is read: "
              "the engine choosing the tier to read from (`Engine.resolution_for`, "
              "whose `TSDB.tier_min_time` walks every series of the head, "
              f"{fmt_num(geo.get('head_series_after', math.nan))} here with the rules' "
              f"output) — {fmt_num(choose * r['rules'] / 1000, 1)} s of each whole "
              f"evaluation. Loading the {d['samples']:,} samples took {geo['load_s']:.1f} s. "
              f"At the end Geoplex had {geo['alerts_firing']} alerts firing and "
              f"{geo['alerts_pending']} pending, Prometheus "
              f"{prom.get('alerts_firing', '-')} and {prom.get('alerts_pending', '-')} "
              "(a sanity check, not a comparison: the two evaluate at slightly different "
              "times, and Geoplex's range windows are left-open as in Prometheus 3, so "
              "an alert near its threshold can differ).", ""]

    n = result["notify"]
    lines += [
        "Notification latency, real processes on loopback: a telemetry server (one alerting "
        "rule, `bench_probe_value > 100`, `for: 0s`), a notifier node (its state in etcd "
        "from `LocalInfra`; `group_by: [alertname, probe]`, so each alert starts a group "
        "and waits `group_wait`) sending email to an aiosmtpd SMTP server in the benchmark "
        f"process. {n['reps']} times: a sample below the threshold, a random pause, then "
        "one above it under a new `probe` label, by `TelemetryClient.write`; the latency "
        "runs from that write to the end of the email's DATA. It cannot be below the wait "
        "for the next evaluation (uniform over the interval, interval / 2 on average) plus "
        "`group_wait`; *overhead* is the latency minus that bound (it holds on average, "
        "so a single latency, or the median, can fall below it: the mean is the figure "
        "to read).", "",
        markdown_table(
            ["rule interval", "group_wait", "alerts", "latency p50 / p99 ms",
             "bound: interval / 2 + group_wait, ms", "overhead p50 / p99 / mean ms",
             "emails missing"],
            [[f"{n['rule_interval_s']:g} s", f"{n['group_wait_s']:g} s",
              str(len(n["latencies_s"])), _pair(n, 0), fmt_num(n["bound_ms"]),
              f"{fmt_num(n['overhead_p50_ms'])} / {fmt_num(n['overhead_p99_ms'])} / "
              f"{fmt_num(n['overhead_mean_ms'])}",
              str(n["timeouts"])]], "rrrrrrr"), ""]

    a = result["agent"]
    lines += [
        "The host agent (`bench.telemetry_agent`'s steady-state measurement, against a "
        "telemetry server of its own):", "",
        markdown_table(["started as", "interval", "CPU % of a core", "CPU ms / collection",
                        "RSS MB", "peak RSS MB", "samples / collection"],
                       [[a["entry"], f"{a['interval_s']:g} s", fmt_num(a["cpu_pct"], 2),
                         fmt_num(a["cpu_ms_per_collection"], 1), fmt_num(a["rss_mb"], 1),
                         fmt_num(a["peak_rss_mb"], 1),
                         fmt_num(a["samples_per_collection"])]], "llrrrrr"), "",
        f"Over {fmt_num(a['duration_s'])} s after one interval of warm-up.", "",
        f"Raw numbers: `bench/results/{RESULTS}.json`."]
    return "\n".join(lines)


def write_report(result: Mapping[str, Any]) -> None:
    path = write_section(NAME, TITLE + "\n\n" + report(result))
    log(f"wrote the '{NAME}' section of {path}")


# =========================================================================== main

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.telemetry_alerting", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--hosts", type=int, default=100,
        help=f"hosts of {SERIES_PER_HOST} series (default 100: 10,000 series and, "
             f"{RULES_PER_TEAM} rules per {HOSTS_PER_TEAM} hosts, 1,000 rules)")
    add("--hours", type=float, default=1.0, help="hours of 15 s samples (default 1)")
    add("--eval-interval", type=float, default=5.0,
        help="Prometheus's evaluation_interval and the Geoplex rounds' spacing (default 5 s)")
    add("--fsync", choices=[m.value for m in FsyncMode], default="always",
        help="the Geoplex store's WAL policy (default always, the server's default: each "
             "rule's output is synced before the next rule runs)")
    add("--warmup", type=int, default=1, help="rounds left out at the start (default 1)")
    add("--rounds", type=int, default=3,
        help="Geoplex evaluations kept (default 3: about a minute each at 1,000 rules)")
    add("--prom-rounds", type=int, default=10, help="Prometheus rounds kept (default 10)")
    add("--reps", type=int, default=20, help="alerts timed to email (default 20)")
    add("--rule-interval", type=float, default=1.0,
        help="the notification part's rule interval (default 1 s)")
    add("--group-wait", type=float, default=1.0,
        help="the notifier route's group_wait (default 1 s)")
    add("--mail-timeout", type=float, default=30.0,
        help="longest wait for one email (default 30 s)")
    add("--agent-interval", type=float, default=10.0,
        help="the agent's collection interval (default 10 s)")
    add("--agent-duration", type=float, default=60.0,
        help="seconds the agent is measured (default 60)")
    add("--seed", type=int, default=20240614, help="the data's seed")
    add("--quiet-wait", type=float, default=10.0,
        help="longest wait in seconds for an idle machine before each timed part "
             "(0: do not wait; default 10)")
    add("--quick", action="store_true",
        help="smoke run: 20 hosts (200 rules), few rounds, 5 alerts, the agent for 5 s "
             "at 1 s, no quiet wait; implies --no-write (flags given beside it win)")
    add("--no-write", action="store_true",
        help=f"print only: do not write bench/results/{RESULTS}.json or BENCHMARKS.md")
    add("--report-only", action="store_true",
        help=f"measure nothing: re-render the section from bench/results/{RESULTS}.json")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    if args.quick:
        args.no_write = True
    if (args.hosts < 1 or args.hours < 0.5 or args.rounds < 1 or args.prom_rounds < 1
            or args.warmup < 0 or args.reps < 1 or args.eval_interval <= 0
            or args.rule_interval <= 0 or args.group_wait <= 0):
        parser.error("--hosts, --rounds, --prom-rounds, --reps >= 1; --warmup >= 0; "
                     "--hours >= 0.5; intervals and group wait > 0")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report_only:
        write_report(read_results(RESULTS))
        return
    run_and_report(lambda: amain(args), RESULTS, report, write_report, no_write=args.no_write)


if __name__ == "__main__":
    main()
