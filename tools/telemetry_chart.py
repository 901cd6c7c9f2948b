"""``geoplex telemetry chart 'EXPR' -o chart.png``: a PromQL range query drawn to a PNG or
SVG file with matplotlib (the Agg renderer: no display needed).

One line per series; the legend names each series by the labels whose values differ
between the series (``job=api`` / ``job=maps``, not the whole label set); the y axis
takes its unit from the metric name's suffix (``_bytes`` in binary prefixes, ``_seconds``
in s / ms / µs, a ``_total`` counter under ``rate()`` per second, ``_ratio`` and
``_percent`` in %); the time axis is in local time (``--utc``: UTC); the title is the
expression, and a note says when the answer came from a rollup tier (1m, 1h).

The pure parts (times, steps, legend, units) are functions of their own, for the tests.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from geoplex.clients.channel import ChannelOptions
from geoplex.clients.telemetry import TelemetryClient
from geoplex.telemetry.v1 import telemetry_pb2 as pb

from .commands import Subcommands, call
from .output import print_error, printable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# the same default as the other `geoplex telemetry` commands (telemetry_cli imports this
# module, so the value is read here rather than imported from there)
DEFAULT_TARGET = os.environ.get("GEOPLEX_TELEMETRY_TARGET", "127.0.0.1:50056")
TARGET_POINTS = 250           # what an automatic step aims at
FORMATS = {".png": "png", ".svg": "svg"}
MAX_LEGEND = 12               # legend entries shown; the rest are counted
_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0,
            "y": 31_536_000.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
# steps an automatic step is rounded up to: whole, readable intervals
NICE_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800,
                21_600, 43_200, 86_400, 172_800, 604_800)


class ChartError(ValueError):
    """A bad argument; the message names it."""


# -- times and steps -------------------------------------------------------------------

def parse_duration_s(text: str) -> float:
    """``90s``, ``5m``, ``1h30m``, ``2d``, ``250ms``, or bare seconds (``3600``)."""
    raw = text.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(raw):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS_S[match.group(2)]
            pos = match.end()
        if pos != len(raw) or not raw:
            raise ChartError(f"{text!r} is not a duration such as 90s, 15m, 1h or 2d"
                             ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ChartError(f"{text!r} is not a duration such as 90s, 15m, 1h or 2d")
    return seconds


def parse_time_s(text: str, now_s: float) -> float:
    """``now``; a duration before now (``1h``: an hour ago); ``@UNIX_SECONDS``; or an RFC
    3339 / ISO 8601 time (``2026-05-01T12:00:00Z``; without a zone: local time)."""
    raw = text.strip()
    if raw == "now":
        return now_s
    if raw.startswith("@"):
        try:
            value = float(raw[1:])
        except ValueError:
            raise ChartError(f"{text!r}: expected @UNIX_SECONDS") from None
        if not math.isfinite(value):
            raise ChartError(f"{text!r}: expected @UNIX_SECONDS")
        return value
    try:
        return now_s - parse_duration_s(raw)
    except ChartError:
        pass
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ChartError(f"{text!r} is not a time: expected now, a duration before now "
                         "(1h), @UNIX_SECONDS or an RFC 3339 time") from None


def auto_step_s(start_s: float, end_s: float, points: int = TARGET_POINTS) -> float:
    """About ``points`` points over the range: its length over ``points``, rounded up to
    a readable step (15 s, 1 m, 5 m...), at least 1 s."""
    wanted = max(end_s - start_s, 0.0) / points
    for step in NICE_STEPS_S:
        if step >= wanted:
            return float(step)
    return float(math.ceil(wanted / 86_400) * 86_400)


# -- legend ----------------------------------------------------------------------------

def selector_text(labels: Mapping[str, str]) -> str:
    rest = {k: v for k, v in labels.items() if k != "__name__"}
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(rest.items()))
    name = labels.get("__name__", "")
    return f"{name}{{{inner}}}" if inner else (name or "{}")


def differing_labels(label_sets: Sequence[Mapping[str, str]]) -> list[str]:
    """The label names whose value (or absence) is not the same in every series, sorted
    (``__name__`` first)."""
    names = sorted({k for labels in label_sets for k in labels},
                   key=lambda k: (k != "__name__", k))
    return [k for k in names if len({labels.get(k) for labels in label_sets}) > 1]


def legend_labels(label_sets: Sequence[Mapping[str, str]], expression: str = "") -> list[str]:
    """A legend entry per series: the labels that tell it from the others
    (``job=api, code=500``); one series alone is named by all its labels (or the
    expression when it has none)."""
    if len(label_sets) == 1:
        only = label_sets[0]
        return [selector_text(only) if only else (expression or "{}")]
    keys = differing_labels(label_sets)
    out = []
    for n, labels in enumerate(label_sets):
        parts = [(labels[k] if k == "__name__" else f"{k}={labels[k]}")
                 for k in keys if k in labels]
        out.append(", ".join(parts) or f"series {n + 1}")
    return out


# -- units -----------------------------------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                       "offset", "and", "or", "unless", "atan2", "inf", "nan", "start",
                       "end"})
_PER_SECOND = frozenset({"rate", "irate", "deriv"})
BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


@dataclass(frozen=True, slots=True)
class Unit:
    """What a chart's values are: ``bytes``, ``seconds``, ``ratio`` (0..1), ``percent``
    or ``""`` (a plain number), and whether they are per second."""

    kind: str = ""
    per_second: bool = False


@dataclass(frozen=True, slots=True)
class Scale:
    factor: float   # values are multiplied by this for the axis
    label: str      # the axis's unit text


def metric_names(expression: str) -> list[tuple[str, list[str]]]:
    """The metric names in ``expression``, each with the functions it sits inside
    (innermost last), e.g. ``[("x_total", ["sum", "rate"])]``; a rough reading (not
    the parser), enough to guess a unit."""
    text = _clean(expression)
    found: list[tuple[str, list[str]]] = []
    stack: list[str] = []
    pos = 0
    pending = ""
    while pos < len(text):
        ch = text[pos]
        match = _IDENT.match(text, pos)
        if match and (pos == 0 or not (text[pos - 1].isalnum() or text[pos - 1] in "_.")):
            word = match.group(0)
            pos = match.end()
            rest = text[pos:].lstrip()
            if rest.startswith("("):
                pending = word
            elif word.lower() not in _KEYWORDS:
                found.append((word, list(stack)))
            continue
        if ch == "(":
            stack.append(pending)
            pending = ""
        elif ch == ")" and stack:
            stack.pop()
        elif not ch.isspace():
            pending = ""
        pos += 1
    return found


def _clean(expression: str) -> str:
    """``expression`` without strings, label matchers, range brackets and grouping."""
    text = _STRINGS.sub('""', expression)
    text = _GROUPING.sub(" ", text)
    for _ in range(3):
        text = _BRACES.sub("", text)
    return _BRACKETS.sub("", text)


def _name_unit(name: str, functions: Sequence[str]) -> tuple[str, Unit]:
    """A metric's base name (counter suffix off) and the unit its values have there."""
    base, counter = name, ""
    for suffix in ("_bucket", "_sum", "_count", "_total", "_created"):
        if name.endswith(suffix):
            base, counter = name.removesuffix(suffix), suffix
            break
    if counter == "_bucket" or "histogram_quantile" in functions:
        return base, Unit(unit_of(base))     # a quantile is in the observations' unit
    per_second = any(f in _PER_SECOND for f in functions)
    if counter == "_count":
        return base, Unit("", per_second)    # observations (per second)
    return base, Unit(unit_of(base), per_second)


def guess_unit(expression: str) -> Unit:
    """The unit the metric name's suffix says (Prometheus naming: ``_bytes``,
    ``_seconds``, ``_ratio``, ``_percent``; ``_total`` / ``_count`` counters), per second
    under ``rate()``. A division: ``X_sum / X_count`` is in X's unit, two metrics of one
    unit make a ratio. A plain number when the expression names no metric or mixes
    units."""
    names = [(name, _name_unit(name, functions))
             for name, functions in metric_names(expression)]
    units = {unit for _, (_, unit) in names}
    if "/" in _clean(expression) and len(names) >= 2:
        suffixes = {name.rsplit("_", 1)[-1] for name, _ in names}
        bases = {base for _, (base, _) in names}
        if suffixes == {"sum", "count"} and len(bases) == 1:
            return Unit(unit_of(bases.pop()))        # a mean: sum over count
        kinds = {unit.kind for unit in units}
        if len(units) == 1 and kinds != {""}:
            return Unit("ratio")                     # like over like
        return Unit()
    return units.pop() if len(units) == 1 else Unit()


def unit_of(name: str) -> str:
    for suffix, kind in (("_bytes", "bytes"), ("_seconds", "seconds"), ("_ratio", "ratio"),
                         ("_percent", "percent")):
        if name.endswith(suffix):
            return kind
    return ""


def axis_scale(unit: Unit, peak: float) -> Scale:
    """How to show values up to ``peak`` (absolute): bytes in the binary prefix that
    keeps the peak under 1024, seconds in s / ms / µs, a ratio in %."""
    peak = abs(peak) if math.isfinite(peak) else 0.0
    rate = "/s" if unit.per_second else ""
    if unit.kind == "bytes":
        power = 0
        while power < len(BINARY) - 1 and peak >= 1024 ** (power + 1):
            power += 1
        return Scale(1 / 1024 ** power, BINARY[power] + rate)
    if unit.kind == "seconds":
        if unit.per_second:         # seconds per second: a busy fraction, e.g. CPU
            return Scale(1.0, "s/s")
        if 0 < peak < 1e-3:
            return Scale(1e6, "µs")
        if 0 < peak < 1:
            return Scale(1e3, "ms")
        return Scale(1.0, "s")
    if unit.kind == "ratio":
        return Scale(100.0, "%")
    if unit.kind == "percent":
        return Scale(1.0, "%")
    return Scale(1.0, rate)


# -- the chart -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Line:
    labels: dict[str, str]
    times_s: list[float]
    values: list[float]


@dataclass(frozen=True, slots=True)
class Chart:
    expression: str
    lines: list[Line]
    step_s: float
    resolution: str      # the tier that served it: raw, 1m, 1h
    start_s: float
    end_s: float


def lines_from(answer: pb.QueryRangeResponse) -> list[Line]:
    return [Line({lb.name: lb.value for lb in s.labels},
                 [sample.timestamp_ms / 1000 for sample in s.samples],
                 [sample.value for sample in s.samples])
            for s in answer.series if s.samples]


def with_gaps(times_s: Sequence[float], values: Sequence[float], step_s: float
              ) -> tuple[list[float], list[float]]:
    """The points with a NaN between two that are more than 1.5 steps apart, so the line
    breaks where the series has no value; infinities become NaN (not drawn)."""
    xs: list[float] = []
    ys: list[float] = []
    for n, (t, v) in enumerate(zip(times_s, values)):
        if n and t - times_s[n - 1] > 1.5 * step_s:
            xs.append((t + times_s[n - 1]) / 2)
            ys.append(math.nan)
        xs.append(t)
        ys.append(v if math.isfinite(v) else math.nan)
    return xs, ys


def tier_note(resolution: str, step_s: float) -> str:
    if resolution and resolution != "raw":
        return (f"served from the {resolution} rollup tier (downsampled); "
                f"step {format_step(step_s)}")
    return f"step {format_step(step_s)}"


def format_step(step_s: float) -> str:
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "m")):
        if step_s >= size and step_s % size == 0:
            return f"{int(step_s // size)}{unit}"
    return f"{step_s:g}s"


def local_zone() -> tzinfo:
    zone = datetime.now().astimezone().tzinfo
    return zone if zone is not None else timezone.utc


def draw(chart: Chart, utc: bool = False, size: tuple[float, float] = (10.0, 5.0)
         ) -> Figure:
    """The chart as a matplotlib Figure (no pyplot: nothing global, no display)."""
    from matplotlib import dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    zone = timezone.utc if utc else local_zone()
    unit = guess_unit(chart.expression)
    finite = [abs(v) for line in chart.lines for v in line.values if math.isfinite(v)]
    scale = axis_scale(unit, max(finite, default=0.0))
    names = legend_labels([line.labels for line in chart.lines], chart.expression)

    figure = Figure(figsize=size, dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for line, name in zip(chart.lines, names):
        xs, ys = with_gaps(line.times_s, line.values, chart.step_s)
        axes.plot(mdates.date2num([datetime.fromtimestamp(x, zone) for x in xs]),
                  [y * scale.factor for y in ys], linewidth=1.6,
                  label=printable(name)[:80])
    axes.xaxis_date(zone)
    locator = mdates.AutoDateLocator(tz=zone)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=zone))
    axes.set_xlim(float(mdates.date2num(datetime.fromtimestamp(chart.start_s, zone))),
                  float(mdates.date2num(datetime.fromtimestamp(chart.end_s, zone))))
    axes.yaxis.set_major_locator(MaxNLocator(nbins=8))
    axes.set_xlabel("UTC" if utc else f"local time ({datetime.now(zone).strftime('%Z')})")
    if scale.label:
        axes.set_ylabel(scale.label)
    axes.grid(True, color="#dddddd", linewidth=0.6)
    axes.set_title("\n".join(textwrap.wrap(printable(chart.expression), 100)[:3]),
                   fontsize=10, loc="left")
    if len(chart.lines) <= MAX_LEGEND:
        axes.legend(fontsize=8, loc="upper left")
    else:
        handles, labels = axes.get_legend_handles_labels()
        axes.legend(handles[:MAX_LEGEND],
                    labels[:MAX_LEGEND - 1] + [f"... and {len(labels) - MAX_LEGEND + 1} more"],
                    fontsize=8, loc="upper left")
    figure.text(0.005, 0.003, tier_note(chart.resolution, chart.step_s), fontsize=8,
                ha="left", va="bottom", color="#b35900" if chart.resolution
                not in ("", "raw") else "#777777")
    return figure


def save(chart: Chart, path: Path, utc: bool = False) -> None:
    """Write the chart to ``path`` (.png or .svg; an SVG keeps its text as text)."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "geoplex"}):
        figure = draw(chart, utc)
        figure.savefig(path, format=FORMATS[path.suffix.lower()])


# -- the command -----------------------------------------------------------------------

def cmd_chart(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix.lower() not in FORMATS:
        return print_error(f"-o {args.output}: the file name must end in .png or .svg")
    try:
        now = time.time()
        start, end = parse_time_s(args.since, now), parse_time_s(args.until, now)
        if end <= start:
            raise ChartError(f"--since {args.since} is not before --until {args.until}")
        step = (auto_step_s(start, end) if args.step == "auto"
                else parse_duration_s(args.step))
        if step <= 0:
            raise ChartError(f"--step {args.step}: must be more than 0")
    except ChartError as exc:
        return print_error(exc)
    connect = partial(TelemetryClient, args.target, ChannelOptions(timeout=args.timeout))
    answer = call(connect, lambda tm: tm.query_range(args.query, start, end, step,
                                                    resolution=args.resolution))
    for warning in answer.warnings:
        print(f"warning: {printable(warning)}", file=sys.stderr)
    lines = lines_from(answer)
    if not lines:
        return print_error(f"no data: {args.query} has no series between "
                           f"{datetime.fromtimestamp(start):%Y-%m-%d %H:%M:%S} and "
                           f"{datetime.fromtimestamp(end):%Y-%m-%d %H:%M:%S}; "
                           f"nothing written", code=1)
    chart = Chart(args.query, lines, step, answer.resolution, start, end)
    save(chart, out, args.utc)
    points = sum(len(line.values) for line in lines)
    print(f"wrote {printable(out)}: {len(lines)} series, {points:,} points, step "
          f"{format_step(step)}, {answer.resolution or 'raw'} tier")
    return 0


def add_chart_command(group: Subcommands) -> None:
    """``geoplex telemetry chart``, on the telemetry command group."""
    c = group.add_parser(
        "chart", help="draw a PromQL query over time to a PNG or SVG file",
        description="Run the PromQL range query EXPR over the window --since .. --until "
        "(QueryRange) and draw it to a PNG or SVG file: one line per series, a legend of "
        "the labels that differ between the series, the y axis in the unit the metric "
        "name says (_bytes, _seconds, _ratio; per second under rate()), the time axis in "
        "local time (or --utc), and a note when a rollup tier answered. A query with no "
        "data writes no file and exits 1.",
        epilog="example: geoplex telemetry chart 'sum by (job) "
        "(rate(rpc_server_call_duration_seconds_count[5m]))' --since 6h -o rps.png")
    c.add_argument("query", metavar="EXPR",
                   help="e.g. 'sum by (job) (rate(http_requests_total[5m]))'")
    c.add_argument("--since", default="1h", metavar="WHEN",
                   help="start: a duration before now (1h, 90m, 2d), @UNIX_SECONDS or an "
                   "RFC 3339 time (default: %(default)s)")
    c.add_argument("--until", default="now", metavar="WHEN",
                   help="end, in the same forms (default: %(default)s)")
    c.add_argument("--step", default="auto", metavar="DURATION",
                   help="time between points, e.g. 15s or 5m (default auto: about "
                   f"{TARGET_POINTS} points)")
    c.add_argument("--resolution", choices=("auto", "raw", "1m", "1h"), default="auto",
                   help="the tier to serve it from (default auto: the finest that holds "
                   "the range)")
    c.add_argument("--utc", action="store_true", help="time axis in UTC (default: local)")
    c.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="where to write the chart: a .png or .svg file name")
    c.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="deadline of the query (default: %(default)s)")
    c.add_argument("--target", default=DEFAULT_TARGET,
                   help="host:port of the telemetry service (default: %(default)s)")
    c.set_defaults(func=cmd_chart)
