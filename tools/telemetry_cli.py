"""``geoplex telemetry ...``: what the time-series store holds — series, labels, storage."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from functools import partial

from geoplex.clients.channel import ChannelOptions
from geoplex.clients.telemetry import TelemetryClient, label_dict, series
from geoplex.telemetry.v1 import telemetry_pb2 as pb

from .commands import Subcommands, call, command_group
from .output import print_error, print_next_page, print_table
from .notifier_cli import add_silence_commands
from .telemetry_chart import add_chart_command

DEFAULT_TARGET = os.environ.get("GEOPLEX_TELEMETRY_TARGET", "127.0.0.1:50056")


def _connect(args: argparse.Namespace) -> Callable[[], TelemetryClient]:
    return partial(TelemetryClient, args.target, ChannelOptions())


def _selector_text(labels: dict[str, str]) -> str:
    name = labels.pop("__name__", "")
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


def cmd_series(args: argparse.Namespace) -> int:
    now = time.time()
    found = call(_connect(args), lambda tm: tm.list_series(
        args.match, start_s=now - args.since, end_s=now, page_size=args.limit,
        page_token=args.page_token))
    print_table(("series",), [(_selector_text(label_dict(s)),) for s in found.series])
    print_next_page(found.next_page_token)
    return 0


def cmd_labels(args: argparse.Namespace) -> int:
    now = time.time()
    values = call(_connect(args), lambda tm: tm.list_labels(
        args.name or "", match=args.match, start_s=now - args.since, end_s=now))
    print_table(("value" if args.name else "label",), [(v,) for v in values])
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    answer = call(_connect(args), lambda tm: tm.query(args.query, at_s=args.time,
                                                      resolution=args.resolution))
    kind = pb.ValueType.Name(answer.result_type).removeprefix("VALUE_TYPE_").lower()
    if answer.result_type == pb.VALUE_TYPE_VECTOR:
        print_table(("series", "value"), [
            (_selector_text({lb.name: lb.value for lb in s.labels}) or "{}",
             f"{s.sample.value:g}") for s in answer.vector])
    elif answer.result_type == pb.VALUE_TYPE_MATRIX:
        print_table(("series", "samples", "last"), [
            (_selector_text({lb.name: lb.value for lb in s.labels}) or "{}",
             f"{len(s.samples):,}", f"{s.samples[-1].value:g}" if s.samples else "-")
            for s in answer.matrix])
    elif answer.result_type == pb.VALUE_TYPE_SCALAR:
        print(f"{answer.scalar.value:g}")
    else:
        print(answer.string_value)
    for warning in answer.warnings:
        print(f"warning: {warning}")
    for info in answer.infos:
        print(f"note: {info}")
    print(f"(served from the {answer.resolution or 'raw'} tier)")
    if not (answer.vector or answer.matrix) and kind in ("vector", "matrix"):
        print(f"(empty {kind})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    info = call(_connect(args), lambda tm: tm.storage_info())
    print(f"head: {info.head_series:,} series, {info.head_samples:,} samples; "
          f"write-ahead log {info.wal_bytes / 1e6:.1f} MB")
    print_table(("tier", "blocks", "series", "samples", "bytes", "bytes/sample"),
                [(t.resolution, f"{t.blocks:,}", f"{t.series:,}", f"{t.samples:,}",
                  f"{t.bytes:,}", f"{t.bytes / t.samples:.2f}" if t.samples else "-")
                 for t in info.tiers])
    return 0


def cmd_write(args: argparse.Namespace) -> int:
    labels: dict[str, str] = {"__name__": args.metric}
    for item in args.label:
        name, sep, value = item.partition("=")
        if not sep:
            return print_error(f"--label {item!r}: expected NAME=VALUE")
        labels[name] = value
    batch = [series(labels, [(int(time.time() * 1000), args.value)])]
    answer = call(_connect(args), lambda tm: tm.write(batch))
    print(f"stored {answer.samples_written} sample(s)"
          + (f", {answer.duplicates_dropped} duplicate(s) dropped"
             if answer.duplicates_dropped else ""))
    return 0


def add_commands(sub: Subcommands) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--target", default=DEFAULT_TARGET,
                       help="host:port of the telemetry service (default: %(default)s)")

    def window(p: argparse.ArgumentParser) -> None:
        p.add_argument("--since", type=float, default=3600.0, metavar="SECONDS",
                       help="look at the last SECONDS (default: %(default)s)")

    t = command_group(sub, "telemetry", help="the time-series store: PromQL, series, labels",
                      description="Call TelemetryService: run a PromQL query, list the "
                      "series and labels the store holds, show its storage per tier, "
                      "write one sample, draw a chart, or manage silences and read the notification "
                      "log (through the notifier).")
    add_chart_command(t)
    add_silence_commands(t, target_flag="--notifier")
    s = t.add_parser("series", help="the series matching selectors",
                     description="List the series matching any SELECTOR (PromQL series "
                     "selectors such as 'up{job=\"api\"}') with samples in the window.")
    s.add_argument("match", nargs="+", metavar="SELECTOR", help="e.g. 'up{job=\"api\"}'")
    s.add_argument("--limit", type=int, default=0, help="series per page (default 1,000)")
    s.add_argument("--page-token", default="", help="the next page of an earlier listing")
    window(s)
    common(s)
    s.set_defaults(func=cmd_series)

    lb = t.add_parser("labels", help="label names, or one label's values",
                      description="Without NAME: the label names in the window; with NAME: "
                      "that label's values (--match limits the series looked at).")
    lb.add_argument("name", nargs="?", help="a label name, e.g. job")
    lb.add_argument("--match", action="append", default=[], metavar="SELECTOR",
                    help="only series matching this selector (repeatable)")
    window(lb)
    common(lb)
    lb.set_defaults(func=cmd_labels)

    q = t.add_parser("query", help="run a PromQL query at one instant",
                     description="Evaluate a PromQL QUERY (Prometheus 3 semantics) now or at "
                     "--time and print the series and their values.")
    q.add_argument("query", help="e.g. 'sum by (job) (rate(http_requests_total[5m]))'")
    q.add_argument("--time", type=float, default=None, metavar="UNIX_SECONDS",
                   help="evaluation time (default: now)")
    q.add_argument("--resolution", choices=("auto", "raw", "1m", "1h"), default="auto",
                   help="the tier to serve it from (default auto: the finest that holds "
                   "the query's range)")
    common(q)
    q.set_defaults(func=cmd_query)

    i = t.add_parser("info", help="series, samples and bytes per storage tier",
                     description="What the store holds: the in-memory head, the write-ahead "
                     "log and the blocks of each tier with their bytes per sample.")
    common(i)
    i.set_defaults(func=cmd_info)

    w = t.add_parser("write", help="write one sample now (for trying the store out)",
                     description="Write METRIC = VALUE at the current time with --label "
                     "NAME=VALUE labels.")
    w.add_argument("metric", help="the metric name, e.g. demo_temperature_celsius")
    w.add_argument("value", type=float, help="the sample's value")
    w.add_argument("--label", action="append", default=[], metavar="NAME=VALUE",
                   help="a label (repeatable)")
    common(w)
    w.set_defaults(func=cmd_write)
