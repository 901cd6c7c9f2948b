"""The host agent's own cost: CPU and memory of ``geoplex agent`` while it pushes.

``python -m bench.telemetry_agent``, in one run:

1. A telemetry server (``python -m geoplex.servers.telemetry``, a fresh directory).
2. Steady state, for each way to start the agent (``geoplex agent``: the whole CLI, and
   ``python -m geoplex.tools.agent``: the agent alone): the agent at ``--interval``
   (default 10 s, its default) writing to that server; after a warm-up of one interval,
   its CPU seconds (``/proc/<pid>/stat``, all threads) over ``--duration`` seconds as a
   percentage of one core, its RSS at the end and its peak (``VmHWM``), and from what it
   wrote: samples per collection and the collection's own duration.
3. Backlog: the agent alone against a port nobody listens on, collecting every
   ``--backlog-interval`` s for ``--backlog-duration`` s: RSS growth over the samples
   buffered (what ``--buffer-samples`` costs per sample).

Every timed part first waits (``--quiet-max`` s at most) for an idle machine. Writes
``bench/results/telemetry_agent.json`` and the ``telemetry-agent`` section of
``BENCHMARKS.md`` (``--no-write`` to skip; ``--quick`` shortens every part and implies
it; ``--report-only`` re-renders from the results file).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from geoplex.clients import ChannelOptions
from geoplex.clients.telemetry import TelemetryClient
from geoplex.infra.process import Process

from ._common import (fmt_num, free_port, log, machine_info, machine_line, markdown_table,
                      process_cpu_seconds, read_results, run_and_report,
                      start_server_processes, wait_for_quiet, write_section)

NAME = "telemetry-agent"
RESULTS = "telemetry_agent"
TITLE = "## Telemetry: the host agent's own cost"
ENTRIES = {"geoplex agent": [sys.executable, "-m", "geoplex.tools.cli", "agent"],
           "python -m geoplex.tools.agent": [sys.executable, "-m", "geoplex.tools.agent"]}
STARTED = re.compile(r"^geoplex agent: ")
NOT_SENT = re.compile(r"stopped; ([\d,]+) samples not sent")


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


async def _wrote(target: str, instance: str) -> dict[str, float]:
    async with TelemetryClient(target, ChannelOptions(retry=False)) as tm:
        series = await tm.query(f'count({{instance="{instance}"}})')
        took = await tm.query(f'geoplex_agent_collect_duration_seconds{{instance="{instance}"}}')
        sent = await tm.query(f'geoplex_agent_sent_samples_total{{instance="{instance}"}}')
    return {"samples_per_collection": series.vector[0].sample.value if series.vector else 0.0,
            "collect_ms": took.vector[0].sample.value * 1000 if took.vector else 0.0,
            "sent_samples": sent.vector[0].sample.value if sent.vector else 0.0}


def steady(entry: str, target: str, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    instance = f"bench-agent-{uuid.uuid4().hex[:6]}"
    wait_for_quiet(args.quiet_max)
    agent = Process(f"agent ({entry})", [*ENTRIES[entry], "--target", target, "--interval",
                                         f"{args.interval:g}", "--instance", instance],
                    logs / f"agent-{len(list(logs.iterdir()))}.log", ready_line=STARTED)
    with agent:
        agent.wait_ready(30)
        assert agent.pid is not None
        time.sleep(args.interval + 1.0)  # the first collection and write are behind it
        cpu0, wall0 = process_cpu_seconds(agent.pid), time.perf_counter()
        time.sleep(args.duration)
        cpu1, wall1 = process_cpu_seconds(agent.pid), time.perf_counter()
        memory = memory_kb(agent.pid)
        wrote = asyncio.run(_wrote(target, instance))
    cpu_s = cpu1 - cpu0
    return {"entry": entry, "interval_s": args.interval, "duration_s": wall1 - wall0,
            "cpu_s": cpu_s, "cpu_pct": cpu_s / (wall1 - wall0) * 100,
            "cpu_ms_per_collection": cpu_s * 1000 / ((wall1 - wall0) / args.interval),
            "rss_mb": memory["VmRSS"] / 1024, "peak_rss_mb": memory["VmHWM"] / 1024,
            **wrote}


def backlog(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    wait_for_quiet(args.quiet_max)
    agent = Process("agent (backlog)", [*ENTRIES["python -m geoplex.tools.agent"],
                                        "--target", target, "--interval",
                                        f"{args.backlog_interval:g}"],
                    logs / "agent-backlog.log", ready_line=STARTED)
    with agent:
        agent.wait_ready(30)
        assert agent.pid is not None
        time.sleep(2.0)  # imports done, the first collections made
        rss0 = memory_kb(agent.pid)["VmRSS"]
        time.sleep(args.backlog_duration)
        rss1 = memory_kb(agent.pid)["VmRSS"]
        agent.stop()
    found = NOT_SENT.search(agent.log_path.read_text())
    buffered = int(found[1].replace(",", "")) if found else 0
    return {"interval_s": args.backlog_interval, "buffered_samples": buffered,
            "rss_start_mb": rss0 / 1024, "rss_end_mb": rss1 / 1024,
            "bytes_per_sample": (rss1 - rss0) * 1024 / buffered if buffered else float("nan")}


def amain(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": NAME, "machine": machine_info(),
                              "settings": {k: v for k, v in vars(args).items()
                                           if k != "report_only"}}
    with tempfile.TemporaryDirectory(prefix="geoplex-bench-agent-") as tmp:
        logs = Path(tmp) / "logs"
        logs.mkdir()
        log("[1/3] a telemetry server...")
        with start_server_processes([sys.executable, "-m", "geoplex.servers.telemetry"], 1,
                                    {"GEOPLEX_TELEMETRY_PORT": "0",
                                     "GEOPLEX_TELEMETRY_HTTP_PORT": "off",
                                     "GEOPLEX_TELEMETRY_DATA_DIR": str(Path(tmp) / "store")}
                                    ) as servers:
            result["steady"] = []
            for entry in ENTRIES:
                log(f"[2/3] {entry} every {args.interval:g} s for {args.duration:g} s...")
                result["steady"].append(steady(entry, servers.address, args, logs))
        log(f"[3/3] backlog: collecting every {args.backlog_interval:g} s with telemetry "
            f"unreachable for {args.backlog_duration:g} s...")
        result["backlog"] = backlog(args, logs)
    result["elapsed_s"] = time.perf_counter() - started
    return result


def report(result: Mapping[str, Any]) -> str:
    rows = [(r["entry"], f"{r['interval_s']:g} s", fmt_num(r["cpu_pct"], 2),
             fmt_num(r["cpu_ms_per_collection"], 1), fmt_num(r["rss_mb"], 1),
             fmt_num(r["peak_rss_mb"], 1), fmt_num(r["samples_per_collection"]),
             fmt_num(r["collect_ms"], 1)) for r in result["steady"]]
    b = result["backlog"]
    return "\n".join([
        f"Measured on {machine_line(result['machine'])}.", "",
        markdown_table(("started as", "interval", "CPU % of a core", "CPU ms / collection",
                        "RSS MB", "peak RSS MB", "samples / collection", "reading ms"),
                       rows, "llrrrrrr"), "",
        f"Over {fmt_num(result['steady'][0]['duration_s'])} s each. Backlog: "
        f"{fmt_num(b['buffered_samples'])} samples buffered with telemetry unreachable took "
        f"RSS from {fmt_num(b['rss_start_mb'], 1)} to {fmt_num(b['rss_end_mb'], 1)} MB, "
        f"{fmt_num(b['bytes_per_sample'], 1)} bytes per buffered sample.", ""])


def write_report(result: Mapping[str, Any]) -> None:
    log(f"wrote the '{NAME}' section of "
        f"{write_section(NAME, TITLE + chr(10) * 2 + report(result))}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.telemetry_agent", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interval", type=float, default=10.0, help="the agent's --interval")
    p.add_argument("--duration", type=float, default=60.0, help="seconds measured per entry")
    p.add_argument("--backlog-interval", type=float, default=0.01)
    p.add_argument("--backlog-duration", type=float, default=20.0)
    p.add_argument("--quiet-max", type=float, default=5.0,
                   help="longest wait for an idle machine before a timed part")
    p.add_argument("--quick", action="store_true", help="smoke run, shortened; writes nothing")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: re-render the section from the results file")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.report_only:
        write_report(read_results(RESULTS))
        return
    if args.quick:
        args.interval, args.duration, args.no_write = 1.0, 5.0, True
        args.backlog_duration, args.quiet_max = 3.0, 1.0
    run_and_report(lambda: amain(args), RESULTS, report, write_report, no_write=args.no_write)


if __name__ == "__main__":
    main()
