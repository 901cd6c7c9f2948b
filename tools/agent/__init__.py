"""``geoplex agent``: a small process per host that pushes the host's metrics to telemetry.

It reads CPU, load, memory, file systems, disks, network and process counts with psutil
under node_exporter's metric names and units (:mod:`.collect`), optionally process
groups under process-exporter's names, and writes them to TelemetryService every
``--interval`` seconds, labelled ``job`` and ``instance``. While telemetry is down or
busy it keeps a bounded backlog in memory (:mod:`.buffer`) and sends it, oldest first,
once telemetry is back (:mod:`.run`). Telemetry refuses samples more than its
out-of-order window (10 minutes by default) behind the newest it holds: such a backlog
is dropped and counted, not retried.

    geoplex agent                           # every 10 s to 127.0.0.1:50056
    geoplex agent --once                    # one collection, written, and a table of it
    geoplex agent --process postgres --process nginx --interval 15
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
from typing import TYPE_CHECKING

from ..commands import Subcommands

if TYPE_CHECKING:
    from .run import AgentConfig

TARGET_ENV = "GEOPLEX_TELEMETRY_TARGET"


def default_target() -> str:
    """``$GEOPLEX_TELEMETRY_TARGET``, else telemetry's declared port on this host."""
    from geoplex.servers.telemetry.service import SERVICE

    return os.environ.get(TARGET_ENV) or f"127.0.0.1:{SERVICE.default_port}"


DESCRIPTION = """\
Collect this host's metrics every INTERVAL seconds and write them to the telemetry
service: CPU seconds per mode, load, memory and swap, file systems (not the pseudo and
memory-backed ones: proc, sysfs, tmpfs, overlay, cgroup...), disks, network interfaces,
running and blocked processes, boot time, under node_exporter's metric names and units
(node_cpu_seconds_total, node_memory_MemAvailable_bytes, node_filesystem_avail_bytes...),
labelled job and instance; with --process, process-exporter's namedprocess_namegroup_*
for the processes of that name; and the agent's own geoplex_agent_* metrics.

It prints one line at start, then only when telemetry becomes unreachable or comes back.
While telemetry is unreachable or answers UNAVAILABLE / RESOURCE_EXHAUSTED, collections
wait in memory (at most --buffer-samples samples; the oldest are dropped first and
counted in geoplex_agent_dropped_samples_total) and are sent oldest first, in order,
once it is back. Telemetry refuses samples more than its out-of-order window (10
minutes by default, GEOPLEX_TELEMETRY_OOO_WINDOW_SECONDS) behind the newest sample it
holds, so after a longer outage the older part of the backlog may be refused: refused
batches (and any other INVALID_ARGUMENT) are dropped, counted in
geoplex_agent_rejected_samples_total and not retried. SIGTERM or Ctrl-C: it flushes what
it can for up to 2 s and exits 0."""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text.replace(",", "").replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def cmd_agent(args: argparse.Namespace) -> int:
    from ..output import print_error
    from .run import AgentConfig

    try:
        config = AgentConfig(target=args.target or default_target(),
                             interval_s=args.interval, job=args.job,
                             instance=args.instance or socket.gethostname(),
                             processes=tuple(args.process), buffer_samples=args.buffer_samples)
    except ValueError as exc:
        return print_error(exc)
    if args.once:
        return asyncio.run(_once(config))
    return asyncio.run(_forever(config))


async def _forever(config: AgentConfig) -> int:
    from .run import Agent

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    groups = f", processes {', '.join(config.processes)}" if config.processes else ""
    # "ready on <target>": the line a supervisor (geoplex up) waits for, as a server's
    print(f"geoplex agent: {config.instance} (job {config.job}{groups}) ready on "
          f"{config.target}: pushing every {config.interval_s:g} s", flush=True)
    agent = Agent(config)
    await agent.run(stop)
    if agent.backlog.samples:
        print(f"geoplex agent: stopped; {agent.backlog.samples:,} samples not sent",
              flush=True)
    return 0


async def _once(config: AgentConfig) -> int:
    from ..output import print_error, print_table
    from .run import family_counts, run_once

    collection, error = await run_once(config)
    families = family_counts(collection.samples)
    print_table(("metric", "samples"), [(name, f"{n:,}") for name, n in families])
    print(f"\n{len(collection.samples):,} samples in {len(families)} metric families, "
          f"collected in {collection.duration_s * 1000:.0f} ms")
    if error is not None:
        return print_error(f"not written to telemetry at {config.target}: "
                           f"{error.code.name}: {error.message}", code=1)
    print(f"written to telemetry at {config.target} (job={config.job}, "
          f"instance={config.instance})")
    return 0


def add_commands(sub: Subcommands) -> None:
    """Register ``geoplex agent``."""
    from geoplex.servers.telemetry.service import SERVICE

    p = sub.add_parser("agent", help="push this host's metrics to telemetry (node_exporter "
                       "names)", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default=None, metavar="HOST:PORT",
                   help=f"the telemetry service (default: ${TARGET_ENV}, else "
                   f"127.0.0.1:{SERVICE.default_port})")
    p.add_argument("--interval", type=_positive_float, default=10.0, metavar="SECONDS",
                   help="seconds between collections (default: %(default)g)")
    p.add_argument("--job", type=_non_empty, default="node",
                   help="the job label (default: %(default)s)")
    p.add_argument("--instance", type=_non_empty, default=None,
                   help="the instance label (default: this host's name, "
                   f"{socket.gethostname()})")
    p.add_argument("--process", action="append", default=[], metavar="NAME",
                   help="also report the processes named NAME (as ps -o comm shows it) as "
                   "namedprocess_namegroup_*{groupname=NAME}; repeatable")
    p.add_argument("--buffer-samples", type=_positive_int, default=1_000_000, metavar="N",
                   help="samples kept while telemetry is unreachable, about 10 bytes each; "
                   "the oldest are dropped past that (default: %(default)s)")
    p.add_argument("--once", action="store_true",
                   help="collect once, write it, print a table of the metric families "
                   "collected and exit (1 if it could not be written)")
    p.set_defaults(func=cmd_agent)
