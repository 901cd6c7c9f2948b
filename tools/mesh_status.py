"""``geoplex mesh status``: every process of the mesh, from the registry, with its health
and a few live figures from telemetry.

Where etcd is: ``--etcd``, else ``GEOPLEX_ETCD_ENDPOINTS``, else what a running
``geoplex up`` wrote in its state directory (``mesh.json``). Each registered process is
asked for its health over gRPC (the standard health service, one second at most); the
figures (requests/s and server errors/s over the last minute, open streams, consumer
lag) are PromQL queries to telemetry — ``--telemetry``, else the telemetry process the
registry lists — keyed by the ``instance`` label every process's metrics carry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc.aio

from geoplex.clients.mesh import health_of
from geoplex.clients.registry import DEFAULT_PREFIX, MeshRegistry, Registration, \
    RegistryUnavailable
from geoplex.clients.telemetry import TelemetryClient

from .output import print_error, print_table

MESH_FILE = "mesh.json"   # written by `geoplex up` in its state directory
SERVER_ERRORS = "2|4|12|13|14|15"   # the gRPC codes counted as the server's failures
FIGURES = {
    "requests_s": "sum by (instance) (rate(rpc_server_call_duration_seconds_count[1m]))",
    "errors_s": "sum by (instance) (rate(rpc_server_call_duration_seconds_count"
                f'{{rpc_grpc_status_code=~"{SERVER_ERRORS}"}}[1m]))',
    "streams": "sum by (instance) (rpc_server_active_streams)",
    "lag": "sum by (instance) (geoplex_broker_consumer_lag)",
}


@dataclass
class ProcessStatus:
    service: str
    node: str
    slot: str                # the supervisor's name for it (presence-2), else ""
    address: str
    pid: int
    instance: str
    version: str
    uptime_s: float
    registered: str          # the health the process put in its entry
    health: str              # what it answers now: SERVING, NOT_SERVING, UNREACHABLE
    endpoints: dict[str, str]
    requests_s: float | None = None
    errors_s: float | None = None
    streams: float | None = None
    lag: float | None = None


@dataclass
class MeshStatus:
    processes: list[ProcessStatus]
    telemetry: str           # where the figures came from ("" when none)
    note: str                # why there are no figures, when there are none


def etcd_endpoints(explicit: str | None, state_dir: Path) -> tuple[str, ...]:
    """``--etcd``, GEOPLEX_ETCD_ENDPOINTS, or the running `geoplex up`'s (mesh.json)."""
    value = explicit or os.environ.get("GEOPLEX_ETCD_ENDPOINTS", "")
    if not value:
        try:
            value = json.loads((state_dir / MESH_FILE).read_text())["etcd"]
        except (OSError, ValueError, KeyError, TypeError):
            value = ""
    return tuple(p.strip().removeprefix("http://") for p in value.split(",") if p.strip())


async def _figures(target: str, timeout: float) -> dict[str, dict[str, float]]:
    """{figure: {instance: value}} from telemetry at ``target``."""
    out: dict[str, dict[str, float]] = {}
    async with TelemetryClient(target) as tm:
        answers = await asyncio.gather(*(tm.query(q, timeout=timeout)
                                         for q in FIGURES.values()))
    for name, answer in zip(FIGURES, answers):
        values: dict[str, float] = {}
        for sample in answer.vector:
            labels = {label.name: label.value for label in sample.labels}
            if "instance" in labels and math.isfinite(sample.sample.value):
                values[labels["instance"]] = sample.sample.value
        out[name] = values
    return out


async def mesh_status(endpoints: Sequence[str], prefix: str = DEFAULT_PREFIX,
                      telemetry: str | None = None, timeout: float = 1.0) -> MeshStatus:
    """The registered processes, each asked for its health, with telemetry's figures."""
    async with MeshRegistry(endpoints, prefix) as registry:
        entries: list[Registration] = await registry.processes()
    healths = await asyncio.gather(*(health_of(e.address, timeout=timeout)
                                       for e in entries))
    now = time.time()
    rows = [ProcessStatus(e.service, e.node, e.slot, e.address, e.pid, e.instance, e.version,
                          e.uptime_s(now), e.health, h, dict(e.endpoints))
            for e, h in zip(entries, healths)]
    target = telemetry or next((r.address for r in rows if r.service == "telemetry"
                                and r.health == "SERVING"), "")
    note = ""
    if not target:
        note = "no telemetry serving in the registry (or pass --telemetry)"
    else:
        try:
            figures = await _figures(target, max(timeout, 3.0))
        except grpc.aio.AioRpcError as exc:
            note = f"telemetry at {target} did not answer ({exc.code().name})"
        else:
            for row in rows:
                for name, values in figures.items():
                    setattr(row, name, values.get(row.instance, 0.0 if name != "lag"
                                                  else None))
    return MeshStatus(rows, target if not note else "", note)


def _uptime(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if value != int(value) or digits == 0 else f"{int(value):,}"


def cmd_mesh_status(args: argparse.Namespace) -> int:
    endpoints = etcd_endpoints(args.etcd, args.state_dir)
    if not endpoints:
        return print_error("where is etcd? pass --etcd HOST:PORT or set "
                           "GEOPLEX_ETCD_ENDPOINTS (a running `geoplex up` writes it to "
                           f"{args.state_dir / MESH_FILE})")
    try:
        status = asyncio.run(mesh_status(endpoints, args.prefix, args.telemetry,
                                         args.timeout))
    except RegistryUnavailable as exc:
        return print_error(exc)
    if args.json:
        print(json.dumps({"processes": [asdict(p) for p in status.processes],
                          "telemetry": status.telemetry, "note": status.note}, indent=2))
        return 0
    if not status.processes:
        print(f"no process is registered under {args.prefix} in etcd at "
              f"{', '.join(endpoints)} (is the mesh running? `geoplex up`)")
        return 0
    print_table(("service", "process", "address", "pid", "health", "uptime", "version",
                 "req/s", "err/s", "streams", "lag"),
                [(p.service, p.slot or (f"node {p.node}" if p.node else "-"), p.address, p.pid,
                  p.health if p.registered == "serving" else f"{p.health} (stopping)",
                  _uptime(p.uptime_s), p.version, _num(p.requests_s), _num(p.errors_s),
                  _num(p.streams, 0), _num(p.lag, 0)) for p in status.processes])
    serving = sum(p.health == "SERVING" for p in status.processes)
    services = len({p.service for p in status.processes})
    print(f"\n{len(status.processes)} processes of {services} services, {serving} serving. "
          + (f"Figures: the last minute, from telemetry at {status.telemetry}."
             if status.telemetry else f"No live figures: {status.note}."))
    return 0


def add_status_command(mesh_sub: argparse._SubParsersAction[argparse.ArgumentParser]
                       ) -> None:
    status = mesh_sub.add_parser(
        "status", help="every process of the mesh: health, uptime, requests/s, errors, "
                       "streams, lag",
        description="List every registered process of the mesh (from the registry in "
                    "etcd) with its health, uptime and version, and its requests/s, server "
                    "errors/s, open streams and consumer lag over the last minute (from "
                    "telemetry).")
    status.add_argument("--etcd", default=None,
                        help="etcd host:port[,host:port] (default: GEOPLEX_ETCD_ENDPOINTS, "
                             "else the running `geoplex up`'s)")
    status.add_argument("--prefix", default=os.environ.get("GEOPLEX_REGISTRY_PREFIX",
                                                           DEFAULT_PREFIX),
                        help="the registry's key prefix (default: %(default)s)")
    status.add_argument("--telemetry", default=None,
                        help="telemetry host:port for the figures (default: the one "
                             "registered)")
    status.add_argument("--timeout", type=float, default=1.0,
                        help="seconds each health check may take (default: %(default)s)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--state-dir", type=Path,
                        default=Path(os.environ.get("GEOPLEX_STATE_DIR", ".geoplex")),
                        help="where `geoplex up` keeps its state (default: %(default)s)")
    status.set_defaults(func=cmd_mesh_status)
