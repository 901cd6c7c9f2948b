"""A runner for Prometheus's PromQL test scripts (``promql/promqltest/testdata/*.test``).

The format (``load <interval>`` with the series notation ``0+10x100 _ stale``,
``clear``, ``eval instant at <t> <query>`` / ``eval range from <a> to <b> step <s>
<query>`` followed by ``expect ...`` lines and the expected series) is read as
Prometheus's ``promqltest/test.go`` reads it, and each eval case is run against
:class:`~.engine.Engine` over a :class:`MemoryStorage`.

The data lives in :class:`MemoryStorage`, an in-memory implementation of the
:class:`~..tsdb.api.Storage` protocol, rather than a :class:`~..tsdb.db.TSDB` in a
temporary folder: the scripts load samples from the epoch on, add earlier samples to a
series in a later ``load`` (which the store's out-of-order window rejects), use label
names the store reserves, and run ~1,600 cases where a WAL fsync per ``load`` would
dominate the run time. The engine only sees the protocol, so nothing is lost.

Native histograms (``{{schema:0 ...}}`` and ``load_with_nhcb``) are not stored: an eval
case whose selectors reach a series that had them is reported as unsupported, as is a
case that raises :class:`~.values.PromQLUnsupportedError` or the parser's
``PromQLUnsupported``.

    python -m geoplex.servers.telemetry.promql.promqltest DIR_OR_FILE... [--failures]
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..tsdb.api import AppendResult, Series, StoreStats
from ..tsdb.chunks import STALE_NAN
from ..tsdb.head import SampleInput, SeriesInput
from ..tsdb.labels import Labels, Matcher, matches_all
from .ast import METRIC_NAME, MatchOp, VectorSelector, walk
from .engine import Engine
from .parser import PromQLError, PromQLUnsupported, parse, parse_duration
from .values import Matrix, PromQLUnsupportedError, Result, Scalar, String, Vector


class MemoryStorage:
    """The :class:`~..tsdb.api.Storage` protocol over dictionaries (tests and scripts)."""

    def __init__(self) -> None:
        self._data: dict[Labels, dict[int, float]] = {}
        self._arrays: dict[Labels, tuple[np.ndarray, np.ndarray]] = {}

    def append(self, samples: Sequence[SampleInput]) -> AppendResult:
        for labels_in, t, v in samples:
            labels = labels_in if isinstance(labels_in, Labels) else Labels(
                labels_in.items() if hasattr(labels_in, "items") else labels_in)
            self._data.setdefault(labels, {})[int(t)] = float(v)
            self._arrays.pop(labels, None)
        return AppendResult(len(samples))

    def append_series(self, batch: Sequence[SeriesInput]) -> AppendResult:
        return self.append([(labels, int(t), float(v)) for labels, ts, vs in batch
                            for t, v in zip(np.asarray(ts).tolist(), np.asarray(vs).tolist())])

    def clear(self) -> None:
        self._data.clear()
        self._arrays.clear()

    def _series(self, labels: Labels) -> tuple[np.ndarray, np.ndarray]:
        arrays = self._arrays.get(labels)
        if arrays is None:
            points = sorted(self._data[labels].items())
            arrays = (np.array([p[0] for p in points], dtype=np.int64),
                      np.array([p[1] for p in points], dtype=np.float64))
            self._arrays[labels] = arrays
        return arrays

    def select(self, matchers: Sequence[Matcher], mint_ms: int,
               maxt_ms: int) -> Iterator[Series]:
        out = []
        for labels in sorted(self._data):
            if not matches_all(labels, matchers):
                continue
            ts, vs = self._series(labels)
            lo, hi = np.searchsorted(ts, mint_ms, "left"), np.searchsorted(ts, maxt_ms, "right")
            if hi > lo:
                out.append(Series(labels, ts[lo:hi], vs[lo:hi]))
        return iter(out)

    def series(self, matchers: Sequence[Matcher], mint_ms: int, maxt_ms: int) -> list[Labels]:
        return [s.labels for s in self.select(matchers, mint_ms, maxt_ms)]

    def label_names(self, matchers: Sequence[Matcher] = (), mint_ms: int | None = None,
                    maxt_ms: int | None = None) -> list[str]:
        names = {n for labels in self._data if matches_all(labels, matchers) for n in labels}
        return sorted(names)

    def label_values(self, name: str, matchers: Sequence[Matcher] = (),
                     mint_ms: int | None = None, maxt_ms: int | None = None) -> list[str]:
        return sorted({labels[name] for labels in self._data
                       if name in labels and matches_all(labels, matchers)})

    def stats(self) -> StoreStats:
        times = [t for points in self._data.values() for t in points]
        return StoreStats(len(self._data), len(times), min(times, default=None),
                          max(times, default=None), 0)


# -- the script format -------------------------------------------------------------------

_NUM = r"[+-]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[iI]nf|NaN|nan)"
_EXPANDED = re.compile(rf"({_NUM})(?:([+-])({_NUM}))?x(\d+)")
_HISTOGRAM = re.compile(r"\{\{.*?\}\}(?:[+-]\{\{.*?\}\})?(?:x(\d+))?")
_TOKEN = re.compile(r"\{\{.*?\}\}(?:[+-]\{\{.*?\}\})?(?:x\d+)?|\S+")
HISTOGRAM = "histogram"
Point = float | str | None  # a value, HISTOGRAM, or None for "_"


def _number(text: str) -> float:
    body = text.lstrip("+-")
    if body[:2].lower() == "0x":
        value = float(int(body, 16))
        return -value if text.startswith("-") else value
    return float(text)


def parse_points(text: str) -> list[Point]:
    """The series notation: ``1 2+3x2 _ _x3 stale -1-1x2 {{...}}x2``."""
    points: list[Point] = []
    for token in _TOKEN.findall(text):
        if token.startswith("{{"):
            match = _HISTOGRAM.fullmatch(token)
            count = int(match.group(1)) + 1 if match and match.group(1) else 1
            points.extend([HISTOGRAM] * count)
        elif token == "_":
            points.append(None)
        elif token.startswith("_x"):
            points.extend([None] * int(token[2:]))
        elif token == "stale":
            points.append(STALE_NAN)
        elif (match := _EXPANDED.fullmatch(token)) is not None:
            start, sign, step, times = match.groups()
            base = _number(start)
            inc = 0.0 if step is None else _number(step) * (-1 if sign == "-" else 1)
            points.extend(base + inc * i for i in range(int(times) + 1))
        else:
            points.append(_number(token))
    return points


def split_series(line: str) -> tuple[str, str]:
    """``metric{a="b"} 1 2 3`` -> the selector text and the points text."""
    depth = 0
    quote = ""
    i = 0
    while i < len(line):
        char = line[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return line[:i + 1], line[i + 1:]
        elif char.isspace() and depth == 0:
            return line[:i], line[i:]
        i += 1
    return line, ""


_VALUE_WORDS = re.compile(rf"(?:{_NUM}|_|stale|\{{\{{)", re.IGNORECASE)


def parse_series_line(line: str) -> tuple[Labels, list[Point]]:
    first = line.split(None, 1)[0] if line.split() else ""
    if first and not first.startswith("{") and _VALUE_WORDS.match(first) and (
            _VALUE_WORDS.fullmatch(first) or _EXPANDED.fullmatch(first)
            or first.startswith("_x") or first.startswith("{{")):
        return Labels(), parse_points(line)
    selector, rest = split_series(line)
    if selector.replace(" ", "") == "{}":
        return Labels(), parse_points(rest)
    expr = parse(selector)
    if not isinstance(expr, VectorSelector):
        raise ValueError(f"not a series: {selector!r}")
    pairs = [(m.name, m.value) for m in expr.matchers if m.op is MatchOp.EQ]
    return Labels(pairs), parse_points(rest)


def parse_time(text: str) -> int:
    if text.startswith("-"):
        return -parse_time(text[1:])
    try:
        return parse_duration(text)
    except ValueError:
        return round(float(text) * 1000)


@dataclass
class Expectation:
    kind: str  # fail warn info no_warn no_info ordered
    match: str = ""  # "", msg, regex
    text: str = ""


@dataclass
class EvalCase:
    line: int
    query: str
    instant: bool
    start: int
    end: int = 0
    step: int = 0
    expectations: list[Expectation] = field(default_factory=list)
    expected: list[tuple[Labels, list[Point]]] = field(default_factory=list)
    expected_string: str | None = None
    range_vector: tuple[int, int, int] | None = None

    def has(self, kind: str) -> bool:
        return any(x.kind == kind for x in self.expectations)


@dataclass
class Outcome:
    file: str
    line: int
    query: str
    status: str  # passed failed unsupported
    reason: str = ""


_EVAL_INSTANT = re.compile(r"eval(?:_(\w+))?\s+instant\s+at\s+(\S+)\s+(.+)")
_EVAL_RANGE = re.compile(r"eval(?:_(\w+))?\s+range\s+from\s+(\S+)\s+to\s+(\S+)\s+step\s+"
                         r"(\S+)\s+(.+)")
_EXPECT = re.compile(r"expect\s+(fail|warn|info|no_warn|no_info|ordered)"
                     r"(?:\s+(msg|regex):\s?(.*))?\s*")
_RANGE_VECTOR = re.compile(r"expect\s+range\s+vector\s+from\s+(\S+)\s+to\s+(\S+)\s+step\s+"
                           r"(\S+)\s*")


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"`":
        return text[1:-1]
    return text


class Runner:
    def __init__(self, name: str) -> None:
        self.name = name
        self.storage = MemoryStorage()
        self.histograms: list[Labels] = []
        self.engine = Engine(self.storage, default_subquery_step_ms=60_000)
        self.outcomes: list[Outcome] = []

    def run(self, text: str) -> list[Outcome]:
        lines = [(i + 1, raw.strip()) for i, raw in enumerate(text.splitlines())]
        lines = [(n, "" if line.startswith("#") else line) for n, line in lines]
        i = 0
        while i < len(lines):
            number, line = lines[i]
            i += 1
            if not line:
                continue
            block = []
            while i < len(lines) and lines[i][1] and line.split()[0] != "clear":
                block.append(lines[i])
                i += 1
            word = line.split()[0]
            if word in ("load", "load_with_nhcb"):
                self._load(line, block, nhcb=word == "load_with_nhcb")
            elif word == "clear":
                self.storage.clear()
                self.histograms.clear()
            elif word.startswith("eval"):
                self._eval(number, line, block)
        return self.outcomes

    def _load(self, line: str, block: list[tuple[int, str]], *, nhcb: bool) -> None:
        interval = parse_duration(line.split()[1])
        samples: list[SampleInput] = []
        for _, text in block:
            labels, points = parse_series_line(text)
            if nhcb and labels.name.endswith(("_bucket", "_count", "_sum")):
                base = labels.name.rsplit("_", 1)[0]
                self.histograms.append(Labels([*labels.without(METRIC_NAME, "le").pairs,
                                               (METRIC_NAME, base)]))
            for index, point in enumerate(points):
                if point is None:
                    continue
                if isinstance(point, str):
                    self.histograms.append(labels)
                    continue
                samples.append((labels, index * interval, point))
        self.storage.append(samples)

    def _parse_case(self, number: int, line: str, block: list[tuple[int, str]]) -> EvalCase:
        if (m := _EVAL_INSTANT.fullmatch(line)) is not None:
            modifier, at, query = m.groups()
            case = EvalCase(number, query, True, parse_time(at))
        elif (m := _EVAL_RANGE.fullmatch(line)) is not None:
            modifier, start, end, step, query = m.groups()
            case = EvalCase(number, query, False, parse_time(start), parse_time(end),
                            parse_time(step))
        else:
            raise ValueError(f"line {number}: cannot read {line!r}")
        if modifier in ("fail", "warn", "info", "ordered"):
            case.expectations.append(Expectation(modifier))
        for _, text in block:
            if (m := _RANGE_VECTOR.fullmatch(text)) is not None:
                case.range_vector = (parse_time(m.group(1)), parse_time(m.group(2)),
                                     parse_time(m.group(3)))
            elif text.startswith("expect string"):
                case.expected_string = _unquote(text[len("expect string"):])
            elif (m := _EXPECT.fullmatch(text)) is not None:
                kind, match, body = m.groups()
                case.expectations.append(Expectation(kind, match or "", (body or "").strip()))
            elif text.startswith("expected_fail_message"):
                case.expectations.append(Expectation("fail", "msg",
                                                     text.split(None, 1)[1].strip()))
            elif text.startswith("expected_fail_regexp"):
                case.expectations.append(Expectation("fail", "regex",
                                                     text.split(None, 1)[1].strip()))
            else:
                case.expected.append(parse_series_line(text))
        return case

    def _eval(self, number: int, line: str, block: list[tuple[int, str]]) -> None:
        try:
            case = self._parse_case(number, line, block)
        except (ValueError, PromQLError) as error:
            self.outcomes.append(Outcome(self.name, number, line, "unsupported",
                                         f"cannot read the case: {error}"))
            return
        status, reason = self._check(case)
        self.outcomes.append(Outcome(self.name, number, case.query, status, reason))

    def _touches_histograms(self, query: str) -> bool:
        try:
            expr = parse(query)
        except PromQLError:
            return False
        for node in walk(expr):
            if isinstance(node, VectorSelector):
                for labels in self.histograms:
                    if all(m.matches(labels.get(m.name, "")) for m in node.matchers):
                        return True
        return False

    def _check(self, case: EvalCase) -> tuple[str, str]:
        if any(HISTOGRAM in points for _, points in case.expected) or (
                self._touches_histograms(case.query)):
            return "unsupported", "native histograms"
        fails = [x for x in case.expectations if x.kind == "fail"]
        try:
            if case.instant:
                result = self.engine.instant(case.query, case.start)
            else:
                result = self.engine.range(case.query, case.start, case.end, case.step)
        except PromQLUnsupported as error:
            return "unsupported", str(error)
        except PromQLUnsupportedError as error:
            return "unsupported", str(error)
        except Exception as error:  # noqa: BLE001 - any failure is the case's verdict
            if not fails:
                return "failed", f"unexpected error: {type(error).__name__}: {error}"
            message = getattr(error, "message", None) or str(error)
            for x in fails:
                if x.match == "msg" and x.text != message and x.text != str(error):
                    return "failed", f"error {message!r}, expected {x.text!r}"
                if x.match == "regex" and not re.search(x.text, message):
                    return "failed", f"error {message!r} does not match {x.text!r}"
            return "passed", ""
        if fails:
            return "failed", "expected an error, got a result"
        problem = self._annotations(case, result) or self._compare(case, result)
        return ("failed", problem) if problem else ("passed", "")

    @staticmethod
    def _annotations(case: EvalCase, result: Result) -> str:
        for kind, got in (("warn", result.warnings), ("info", result.infos)):
            lines = [x for x in case.expectations if x.kind == kind]
            if case.has(f"no_{kind}") and got:
                return f"unexpected {kind}: {got}"
            for x in lines:
                if x.match == "msg" and x.text not in got:
                    return f"missing {kind} {x.text!r}, got {got}"
                if x.match == "regex" and not any(re.search(x.text, g) for g in got):
                    return f"missing {kind} matching {x.text!r}, got {got}"
                if not x.match and not got:
                    return f"expected a {kind}"
        return ""

    def _compare(self, case: EvalCase, result: Result) -> str:
        value = result.value
        if isinstance(value, String):
            if case.expected_string is None or value.v != case.expected_string:
                return f"got string {value.v!r}, expected {case.expected_string!r}"
            return ""
        if isinstance(value, Scalar):
            if len(case.expected) != 1 or len(case.expected[0][1]) != 1:
                return f"got scalar {value.v}, expected {case.expected}"
            want = case.expected[0][1][0]
            if not isinstance(want, float) or not almost_equal(want, value.v):
                return f"got scalar {value.v}, expected {want}"
            return ""
        if isinstance(value, Vector):
            got = [(s.labels, [s.v]) for s in value.samples]
            return self._compare_series(case, [(labels, [float(v) for v in vs])
                                               for labels, vs in got], None)
        assert isinstance(value, Matrix)
        if case.instant:
            if case.range_vector is None:
                return "got a range vector without 'expect range vector'"
            start, _, step = case.range_vector
        else:
            start, step = case.start, case.step
        series = []
        for s in value.series:
            points = {int(t): float(v) for t, v in zip(s.timestamps, s.values, strict=True)}
            series.append((s.labels, points))
        return self._compare_matrix(case, series, start, step)

    def _compare_series(self, case: EvalCase, got: list[tuple[Labels, list[float]]],
                        _: None) -> str:
        if len(got) != len(case.expected):
            return (f"got {len(got)} series, expected {len(case.expected)}: "
                    f"{_show(got)}")
        ordered = case.has("ordered")
        by_labels = {labels: values for labels, values in got}
        for index, (labels, points) in enumerate(case.expected):
            if ordered and got[index][0] != labels:
                return f"position {index}: got {got[index][0]!r}, expected {labels!r}"
            if labels not in by_labels:
                return f"missing {labels!r}; got {_show(got)}"
            want = [p for p in points]
            have = by_labels[labels]
            if len(want) != 1 or not isinstance(want[0], float):
                return f"{labels!r}: expected {want}, instant result {have}"
            if not almost_equal(want[0], have[0]):
                return f"{labels!r}: got {have[0]}, expected {want[0]}"
        return ""

    def _compare_matrix(self, case: EvalCase, got: list[tuple[Labels, dict[int, float]]],
                        start: int, step: int) -> str:
        if len(got) != len(case.expected):
            return f"got {len(got)} series, expected {len(case.expected)}: " + ", ".join(
                f"{labels!r} {list(points.values())}" for labels, points in got)
        by_labels = dict(got)
        for labels, points in case.expected:
            have = by_labels.get(labels)
            if have is None:
                return f"missing {labels!r}; got {[labels for labels, _ in got]}"
            want = {start + i * step: p for i, p in enumerate(points) if p is not None}
            if sorted(want) != sorted(have):
                return (f"{labels!r}: got points at {sorted(have)}, expected at "
                        f"{sorted(want)} ({list(have.values())} vs {list(want.values())})")
            for t, p in want.items():
                if not isinstance(p, float) or not almost_equal(p, have[t]):
                    return f"{labels!r} at {t}: got {have[t]}, expected {p}"
        return ""


def _show(got: list[tuple[Labels, list[float]]]) -> str:
    return ", ".join(f"{labels!r} {values}" for labels, values in got[:6])


def almost_equal(a: float, b: float, epsilon: float = 1e-6) -> bool:
    """promqltest's comparison: relative error under ``epsilon``, NaN equal to NaN."""
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    total = abs(a) + abs(b)
    diff = abs(a - b)
    min_normal = 2.2250738585072014e-308
    if a == 0 or b == 0 or total < min_normal:
        return diff < epsilon * min_normal
    return diff / min(total, 1.7976931348623157e308) < epsilon


# -- running files -----------------------------------------------------------------------

@dataclass(frozen=True)
class FileReport:
    file: str
    outcomes: list[Outcome]

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def cases(self) -> int:
        return len(self.outcomes)


def run_file(path: Path) -> FileReport:
    runner = Runner(path.name)
    return FileReport(path.name, runner.run(path.read_text()))


def run_paths(paths: Sequence[Path]) -> list[FileReport]:
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.test")) if path.is_dir() else [path])
    return [run_file(f) for f in files]


def table(reports: Sequence[FileReport]) -> str:
    rows = [f"{'file':<22}{'cases':>7}{'passed':>8}{'failed':>8}{'unsupp.':>9}{'pass %':>8}"]
    total = {"cases": 0, "passed": 0, "failed": 0, "unsupported": 0}
    for r in reports:
        counts = {"cases": r.cases, "passed": r.count("passed"), "failed": r.count("failed"),
                  "unsupported": r.count("unsupported")}
        for k, v in counts.items():
            total[k] += v
        rows.append(_row(r.file, counts))
    rows.append(_row("total", total))
    return "\n".join(rows)


def _row(name: str, c: dict[str, int]) -> str:
    rate = 100.0 * c["passed"] / c["cases"] if c["cases"] else 0.0
    return (f"{name:<22}{c['cases']:>7}{c['passed']:>8}{c['failed']:>8}"
            f"{c['unsupported']:>9}{rate:>7.1f}%")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--failures", action="store_true", help="list the failed cases")
    parser.add_argument("--unsupported", action="store_true",
                        help="list the unsupported cases")
    args = parser.parse_args(argv)
    reports = run_paths(args.paths)
    print(table(reports))
    for r in reports:
        for o in r.outcomes:
            if (o.status == "failed" and args.failures) or (
                    o.status == "unsupported" and args.unsupported):
                print(f"{o.file}:{o.line}: {o.status}: {o.query}\n    {o.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
