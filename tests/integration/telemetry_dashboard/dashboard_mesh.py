"""What the dashboard and chart tests share: seventy minutes of a small mesh's metrics, a
stand-in notifier node answering ListSilences, and the handles the fixtures give."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from geoplex.clients.telemetry import TimeSeries, series
from geoplex.notifier.v1 import notifier_pb2 as npb

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

STEP_MS = 15_000
SPAN_MS = 70 * 60_000
JOBS = {"geoplex-maps": 12.0, "geoplex-routing": 5.0, "geoplex-proximity": 2.0}  # req/s
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, math.inf)
HOSTS = {"host-a:9100": (0.35, 16 << 30), "host-b:9100": (0.6, 8 << 30)}  # busy, memory
SERVICE = npb.DESCRIPTOR.services_by_name["NotifierService"].full_name
# a silence whose text is HTML: the page must show it as text
HTML_COMMENT = '<img src="x" id="injected"> deploy <b>window</b>'
# the alerts the page lists: one firing from the first evaluation, one pending for an hour
RULES = """
groups:
  - name: dashboard
    rules:
      - alert: MeshBusy
        expr: sum(rate(rpc_server_call_duration_seconds_count[2h])) > 0
        labels:
          severity: info
        annotations:
          summary: "<b>busy</b> mesh"
      - alert: MeshQuiet
        expr: vector(1)
        for: 1h
"""


def _cumulative(steps: list[float]) -> list[float]:
    out, total = [], 0.0
    for increment in steps:
        total += increment
        out.append(total)
    return out


def mesh_series(now_ms: int) -> list[TimeSeries]:
    """RPC counters and latency histograms per job (OTLP names), node_exporter CPU and
    memory per host, and a resident-memory gauge per job, a sample every 15 s."""
    times = list(range(now_ms - SPAN_MS, now_ms + 1, STEP_MS))
    out: list[TimeSeries] = []
    name = "rpc_server_call_duration_seconds"
    for j, (job, rps) in enumerate(JOBS.items()):
        base = {"job": job, "rpc_system": "grpc"}
        calls = [rps * 15 * (1 + 0.3 * math.sin(n / 12 + 2 * j)) for n in range(len(times))]
        ok = _cumulative(calls)
        errors = _cumulative([c * (0.01 + 0.01 * (1 + math.sin(n / 7 + j)))
                              for n, c in enumerate(calls)])
        out.append(series({"__name__": f"{name}_count", **base, "rpc_grpc_status_code": "0"},
                          zip(times, ok)))
        out.append(series({"__name__": f"{name}_count", **base, "rpc_grpc_status_code": "14"},
                          zip(times, errors)))
        for le in BUCKETS:
            # the typical latency drifts: (j + 1) x 10 ms, up to twice that
            def share(n: int) -> float:
                if math.isinf(le):
                    return 1.0
                typical = 0.01 * (j + 1) * (1.5 + 0.5 * math.sin(n / 15 + j))
                return min(1.0, (le / (2 * typical)) ** 1.5)
            out.append(series({"__name__": f"{name}_bucket", **base,
                               "le": "+Inf" if math.isinf(le) else repr(le)},
                              zip(times, _cumulative([c * share(n)
                                                      for n, c in enumerate(calls)]))))
        out.append(series({"__name__": "process_resident_memory_bytes", "job": job},
                          [(t, (80 + 40 * j) * 2**20 + 2**20 * 10 * math.sin(n / 25 + j))
                           for n, t in enumerate(times)]))
    for h, (instance, (busy, memory)) in enumerate(HOSTS.items()):
        load = [busy + 0.15 * math.sin(n / 10 + 3 * h) for n in range(len(times))]
        for mode, shares in (("idle", [1 - b for b in load]), ("user", load)):
            out.append(series({"__name__": "node_cpu_seconds_total", "instance": instance,
                               "job": "node", "cpu": "0", "mode": mode},
                              zip(times, _cumulative([15 * x for x in shares]))))
        out.append(series({"__name__": "node_memory_MemTotal_bytes", "instance": instance,
                           "job": "node"}, [(t, float(memory)) for t in times]))
        out.append(series({"__name__": "node_memory_MemAvailable_bytes", "instance": instance,
                           "job": "node"},
                          [(t, memory * (0.6 - 0.25 * h + 0.08 * math.sin(n / 20 + h)))
                           for n, t in enumerate(times)]))
    return out


class FakeNotifier:
    """A notifier node's ListSilences, two pages of one silence each (the other methods of
    NotifierService answer UNIMPLEMENTED)."""

    def __init__(self) -> None:
        self.calls: list[npb.ListSilencesRequest] = []
        now = int(time.time())
        first = npb.Silence(id="s-1", created_by="ops@example.org", comment=HTML_COMMENT,
                            state=npb.SILENCE_STATE_ACTIVE, matchers=[
                                npb.Matcher(name="alertname", value="HighLatency",
                                            type=npb.MATCH_TYPE_EQUAL),
                                npb.Matcher(name="job", value="geoplex-.*",
                                            type=npb.MATCH_TYPE_REGEX)])
        first.starts_at.FromSeconds(now - 600)
        first.ends_at.FromSeconds(now + 3600)
        second = npb.Silence(id="s-2", created_by="dev", comment="maintenance",
                             state=npb.SILENCE_STATE_PENDING, matchers=[
                                 npb.Matcher(name="instance", value="host-b:9100",
                                             type=npb.MATCH_TYPE_NOT_EQUAL)])
        second.starts_at.FromSeconds(now + 600)
        second.ends_at.FromSeconds(now + 7200)
        self.pages = {"": ([first], "page-2"), "page-2": ([second], "")}

    def list_silences(self, request: npb.ListSilencesRequest,
                      context: grpc.ServicerContext) -> npb.ListSilencesResponse:
        self.calls.append(request)
        silences, token = self.pages[request.page_token]
        return npb.ListSilencesResponse(silences=silences, next_page_token=token)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "ListSilences": grpc.unary_unary_rpc_method_handler(
                self.list_silences, request_deserializer=npb.ListSilencesRequest.FromString,
                response_serializer=npb.ListSilencesResponse.SerializeToString)})


@dataclass
class Notifier:
    address: str
    servicer: FakeNotifier


@dataclass
class Telemetry:
    server: ServerProcess
    http: str           # http://127.0.0.1:PORT
    now_ms: int         # the newest sample written


