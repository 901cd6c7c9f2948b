"""The PromQL syntax tree: frozen dataclasses, one per node, and the function table.

The shapes follow Prometheus's ``promql/parser/ast.go`` so an engine written against
that model maps over directly:

* every node is an :class:`Expr` with a static :attr:`Expr.type` (scalar, instant vector,
  range vector or string) and a ``str()`` that prints canonical PromQL, the way
  Prometheus's ``String()`` does; ``parse(str(node)) == node`` for every parsed node;
* durations and offsets are whole milliseconds (``int``); an ``@`` modifier is a
  timestamp in milliseconds or :class:`AtEdge` (``@ start()`` / ``@ end()``);
* a selector's label matchers include the metric name (``__name__="name"``) when the
  name was written outside the braces; the matchers a ``foo[5m]`` or ``foo offset 5m``
  selects with live on the inner :class:`VectorSelector` (as in Prometheus);
* :class:`ParenExpr` is kept, so printing needs no precedence logic;
* ``span`` (start, end) character offsets into the query are carried for messages but
  left out of equality and ``repr``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from ..re2 import compile_regex, translate_re2


class Span(NamedTuple):
    """Character offsets ``[start, end)`` of a node in the query text."""

    start: int
    end: int


NO_SPAN = Span(0, 0)


def _span() -> Span:
    return field(default=NO_SPAN, compare=False, repr=False, kw_only=True)


class ValueType(enum.StrEnum):
    """The static type of an expression; values are Prometheus's ``ValueType`` names."""

    SCALAR = "scalar"
    VECTOR = "vector"
    MATRIX = "matrix"
    STRING = "string"

    @property
    def documented(self) -> str:
        """The name Prometheus's messages use: "instant vector", "range vector"..."""
        return _DOCUMENTED[self]


_DOCUMENTED = {ValueType.SCALAR: "scalar", ValueType.VECTOR: "instant vector",
               ValueType.MATRIX: "range vector", ValueType.STRING: "string"}


class BinaryOp(enum.StrEnum):
    ADD = "+"
    SUB = "-"
    MUL = "*"
    DIV = "/"
    MOD = "%"
    POW = "^"
    ATAN2 = "atan2"
    EQL = "=="
    NEQ = "!="
    GTR = ">"
    LSS = "<"
    GTE = ">="
    LTE = "<="
    AND = "and"
    OR = "or"
    UNLESS = "unless"

    @property
    def is_comparison(self) -> bool:
        return self in _COMPARISONS

    @property
    def is_set(self) -> bool:
        return self in _SET_OPERATORS

    @property
    def precedence(self) -> int:
        """Binding strength, higher binds tighter (``or`` 1 ... ``^`` 6)."""
        return _PRECEDENCE[self]

    @property
    def right_associative(self) -> bool:
        return self is BinaryOp.POW


_COMPARISONS = frozenset({BinaryOp.EQL, BinaryOp.NEQ, BinaryOp.GTR, BinaryOp.LSS,
                          BinaryOp.GTE, BinaryOp.LTE})
_SET_OPERATORS = frozenset({BinaryOp.AND, BinaryOp.OR, BinaryOp.UNLESS})
_PRECEDENCE = {BinaryOp.OR: 1, BinaryOp.AND: 2, BinaryOp.UNLESS: 2,
               **{op: 3 for op in _COMPARISONS}, BinaryOp.ADD: 4, BinaryOp.SUB: 4,
               BinaryOp.MUL: 5, BinaryOp.DIV: 5, BinaryOp.MOD: 5, BinaryOp.ATAN2: 5,
               BinaryOp.POW: 6}


class UnaryOp(enum.StrEnum):
    PLUS = "+"
    MINUS = "-"


class AggregateOp(enum.StrEnum):
    SUM = "sum"
    AVG = "avg"
    COUNT = "count"
    MIN = "min"
    MAX = "max"
    GROUP = "group"
    STDDEV = "stddev"
    STDVAR = "stdvar"
    TOPK = "topk"
    BOTTOMK = "bottomk"
    COUNT_VALUES = "count_values"
    QUANTILE = "quantile"
    LIMITK = "limitk"
    LIMIT_RATIO = "limit_ratio"

    @property
    def has_param(self) -> bool:
        """Whether the operator takes a first parameter (``topk(5, x)``)."""
        return self in _WITH_PARAM

    @property
    def param_type(self) -> ValueType | None:
        if self is AggregateOp.COUNT_VALUES:
            return ValueType.STRING
        return ValueType.SCALAR if self in _WITH_PARAM else None


_WITH_PARAM = frozenset({AggregateOp.TOPK, AggregateOp.BOTTOMK, AggregateOp.QUANTILE,
                         AggregateOp.COUNT_VALUES, AggregateOp.LIMITK,
                         AggregateOp.LIMIT_RATIO})


class MatchOp(enum.StrEnum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


class Cardinality(enum.StrEnum):
    ONE_TO_ONE = "one-to-one"
    MANY_TO_ONE = "many-to-one"  # group_left
    ONE_TO_MANY = "one-to-many"  # group_right
    MANY_TO_MANY = "many-to-many"  # set operators


class AtEdge(enum.StrEnum):
    """``@ start()`` / ``@ end()``: the start or end of the query's range."""

    START = "start"
    END = "end"


# -- printing helpers ------------------------------------------------------------------

_LEGACY_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_LEGACY_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
# bare words that do not lex back as a metric or grouping label name
_NOT_A_METRIC_NAME = frozenset({"bool", "on", "ignoring", "group_left", "group_right",
                                "atan2", "inf", "nan"})
_NOT_A_GROUPING_LABEL = frozenset({"inf", "nan"})
_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def quote(value: str) -> str:
    """``value`` as a double-quoted PromQL (Go) string literal.

    Bytes that were not valid UTF-8 in the query (kept as ``surrogateescape`` code points
    by the parser) are printed back as ``\\xHH``.
    """
    out = ['"']
    for char in value:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not char.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def label_name(name: str) -> str:
    """A label name as written inside braces: bare when legacy-valid, else quoted."""
    return name if _LEGACY_LABEL.match(name) else quote(name)


def grouping_label(name: str) -> str:
    if _LEGACY_LABEL.match(name) and name.lower() not in _NOT_A_GROUPING_LABEL:
        return name
    return quote(name)


def _labels(names: tuple[str, ...]) -> str:
    return ", ".join(grouping_label(name) for name in names)


_UNITS = (("y", 365 * 86_400_000, True), ("w", 7 * 86_400_000, True),
          ("d", 86_400_000, False), ("h", 3_600_000, False), ("m", 60_000, False),
          ("s", 1000, False), ("ms", 1, False))


def format_duration(ms: int) -> str:
    """Milliseconds as Prometheus prints a duration: ``90m`` -> ``1h30m``, 0 -> ``0s``."""
    if ms == 0:
        return "0s"
    sign = "-" if ms < 0 else ""
    rest = abs(ms)
    parts = []
    for unit, size, exact in _UNITS:
        if exact and rest % size:
            continue
        if count := rest // size:
            parts.append(f"{count}{unit}")
            rest -= count * size
    return sign + "".join(parts)


def format_number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        # "Inf", not "+Inf": a unary plus binds looser than ^, so "+Inf ^ 1" would read
        # back as +(Inf ^ 1)
        return "Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value)) if value or math.copysign(1, value) > 0 else "-0"
    return repr(value)


def _modifiers(offset_ms: int, at: int | AtEdge | None) -> str:
    text = ""
    if isinstance(at, AtEdge):
        text += f" @ {at.value}()"
    elif at is not None:
        text += f" @ {at / 1000:.3f}"
    if offset_ms:
        text += f" offset {format_duration(offset_ms)}"
    return text


# -- nodes -----------------------------------------------------------------------------


class Expr:
    """Base of every node. ``type`` is the static value type; ``str()`` prints PromQL."""

    __slots__ = ()
    span: Span

    @property
    def type(self) -> ValueType:
        raise NotImplementedError

    def children(self) -> tuple[Expr, ...]:
        return ()


def walk(expr: Expr) -> Iterator[Expr]:
    """``expr`` and every node below it, parents before children."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children()))


@dataclass(frozen=True, slots=True, eq=False)
class NumberLiteral(Expr):
    """A float; ``duration`` marks one written as a duration (``5m`` is 300.0)."""

    value: float
    duration: bool = False
    span: Span = _span()

    @property
    def type(self) -> ValueType:
        return ValueType.SCALAR

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NumberLiteral):
            return NotImplemented
        same = self.value == other.value or (math.isnan(self.value) and math.isnan(other.value))
        return same and self.duration == other.duration

    def __hash__(self) -> int:
        return hash(("number", "nan" if math.isnan(self.value) else self.value, self.duration))

    def __str__(self) -> str:
        if self.duration and math.isfinite(self.value):
            return format_duration(round(self.value * 1000))
        return format_number(self.value)


@dataclass(frozen=True, slots=True)
class StringLiteral(Expr):
    value: str
    span: Span = _span()

    @property
    def type(self) -> ValueType:
        return ValueType.STRING

    def __str__(self) -> str:
        return quote(self.value)


@dataclass(frozen=True, slots=True)
class LabelMatcher:
    name: str
    op: MatchOp
    value: str

    def matches(self, value: str) -> bool:
        """Whether a label value (``""`` for an absent label) satisfies the matcher."""
        if self.op is MatchOp.EQ:
            return value == self.value
        if self.op is MatchOp.NE:
            return value != self.value
        found = compile_regex(self.value).fullmatch(value) is not None
        return found if self.op is MatchOp.RE else not found

    def __str__(self) -> str:
        return f"{label_name(self.name)}{self.op.value}{quote(self.value)}"


METRIC_NAME = "__name__"


@dataclass(frozen=True, slots=True)
class VectorSelector(Expr):
    """``name{matchers} @ at offset offset_ms``; ``matchers`` include the name's matcher."""

    name: str | None
    matchers: tuple[LabelMatcher, ...]
    offset_ms: int = 0
    at: int | AtEdge | None = None
    span: Span = _span()

    @property
    def type(self) -> ValueType:
        return ValueType.VECTOR

    def selector_str(self) -> str:
        """The selector without its ``@`` and offset modifiers."""
        shown = [str(m) for m in self.matchers
                 if not (self.name and m.name == METRIC_NAME and m.op is MatchOp.EQ
                         and m.value == self.name)]
        name = self.name or ""
        if name and (not _LEGACY_METRIC.match(name) or name.lower() in _NOT_A_METRIC_NAME):
            shown.insert(0, quote(name))
            name = ""
        if shown or not name:
            return f"{name}{{{', '.join(shown)}}}"
        return name

    def __str__(self) -> str:
        return self.selector_str() + _modifiers(self.offset_ms, self.at)


@dataclass(frozen=True, slots=True)
class MatrixSelector(Expr):
    """``selector[range]``; the selector carries the offset and ``@`` modifiers."""

    selector: VectorSelector
    range_ms: int
    span: Span = _span()

    @property
    def type(self) -> ValueType:
        return ValueType.MATRIX

    def children(self) -> tuple[Expr, ...]:
        return (self.selector,)

    def __str__(self) -> str:
        vs = self.selector
        return (f"{vs.selector_str()}[{format_duration(self.range_ms)}]"
                f"{_modifiers(vs.offset_ms, vs.at)}")


@dataclass(frozen=True, slots=True)
class SubqueryExpr(Expr):
    """``expr[range:step]``; ``step_ms`` None means the query's default step."""

    expr: Expr
    range_ms: int
    step_ms: int | None = None
    offset_ms: int = 0
    at: int | AtEdge | None = None
    span: Span = _span()

    @property
    def type(self) -> ValueType:
        return ValueType.MATRIX

    def children(self) -> tuple[Expr, ...]:
        return (self.expr,)

    def __str__(self) -> str:
        step = "" if self.step_ms is None else format_duration(self.step_ms)
        return (f"{self.expr}[{format_duration(self.range_ms)}:{step}]"
                f"{_modifiers(self.offset_ms, self.at)}")


@dataclass(frozen=True, slots=True)
class Function:
    """A function's signature, as in Prometheus's ``Functions`` table.

    ``variadic`` 0: exactly ``arg_types``; n > 0: the last argument is optional and may
    repeat up to n times in all; -1: the last argument may repeat without limit.
    """

    name: str
    arg_types: tuple[ValueType, ...]
    return_type: ValueType
    variadic: int = 0
    experimental: bool = False

    @property
    def min_args(self) -> int:
        return len(self.arg_types) - (1 if self.variadic else 0)

    @property
    def max_args(self) -> int | None:
        if self.variadic < 0:
            return None
        return len(self.arg_types) - 1 + self.variadic if self.variadic else len(self.arg_types)

    def arg_type(self, index: int) -> ValueType:
        return self.arg_types[min(index, len(self.arg_types) - 1)]


@dataclass(frozen=True, slots=True)
class Call(Expr):
    func: Function
    args: tuple[Expr, ...]
    span: Span = _span()

    @property
    def type(self) -> ValueType:
        return self.func.return_type

    def children(self) -> tuple[Expr, ...]:
        return self.args

    def __str__(self) -> str:
        return f"{self.func.name}({', '.join(str(arg) for arg in self.args)})"


@dataclass(frozen=True, slots=True)
class AggregateExpr(Expr):
    """``op by|without (grouping) ([param, ] expr)``."""

    op: AggregateOp
    expr: Expr
    param: Expr | None = None
    grouping: tuple[str, ...] = ()
    without: bool = False
    span: Span = _span()

    @property
    def type(self) -> ValueType:
        return ValueType.VECTOR

    def children(self) -> tuple[Expr, ...]:
        return (self.expr,) if self.param is None else (self.param, self.expr)

    def __str__(self) -> str:
        text = self.op.value
        if self.without:
            text += f" without ({_labels(self.grouping)}) "
        elif self.grouping:
            text += f" by ({_labels(self.grouping)}) "
        param = "" if self.param is None else f"{self.param}, "
        return f"{text}({param}{self.expr})"


@dataclass(frozen=True, slots=True)
class VectorMatching:
    """How the two sides of a vector/vector operation pair up.

    ``on`` with ``labels`` is ``on(labels)``; otherwise ``labels`` are ignored
    (``ignoring(labels)``, or nothing for the default). ``include`` are the
    ``group_left``/``group_right`` labels copied from the "one" side.
    """

    card: Cardinality = Cardinality.ONE_TO_ONE
    labels: tuple[str, ...] = ()
    on: bool = False
    include: tuple[str, ...] = ()

    def __str__(self) -> str:
        grouped = self.card in (Cardinality.MANY_TO_ONE, Cardinality.ONE_TO_MANY)
        if not (self.on or self.labels or grouped):
            return ""
        text = f" {'on' if self.on else 'ignoring'}({_labels(self.labels)})"
        if grouped:
            side = "left" if self.card is Cardinality.MANY_TO_ONE else "right"
            text += f" group_{side}({_labels(self.include)})"
        return text


@dataclass(frozen=True, slots=True)
class BinaryExpr(Expr):
    """``lhs op [bool] [on|ignoring(...) [group_left|group_right(...)]] rhs``.

    ``matching`` is set exactly when both sides are instant vectors (many-to-many for
    the set operators); ``return_bool`` only on comparisons.
    """

    op: BinaryOp
    lhs: Expr
    rhs: Expr
    matching: VectorMatching | None = None
    return_bool: bool = False
    span: Span = _span()

    @property
    def type(self) -> ValueType:
        if self.lhs.type is ValueType.SCALAR and self.rhs.type is ValueType.SCALAR:
            return ValueType.SCALAR
        return ValueType.VECTOR

    def children(self) -> tuple[Expr, ...]:
        return (self.lhs, self.rhs)

    def __str__(self) -> str:
        flag = " bool" if self.return_bool else ""
        matching = "" if self.matching is None else str(self.matching)
        return f"{self.lhs} {self.op.value}{flag}{matching} {self.rhs}"


@dataclass(frozen=True, slots=True)
class UnaryExpr(Expr):
    op: UnaryOp
    expr: Expr
    span: Span = _span()

    @property
    def type(self) -> ValueType:
        return self.expr.type

    def children(self) -> tuple[Expr, ...]:
        return (self.expr,)

    def __str__(self) -> str:
        return f"{self.op.value}{self.expr}"


@dataclass(frozen=True, slots=True)
class ParenExpr(Expr):
    expr: Expr
    span: Span = _span()

    @property
    def type(self) -> ValueType:
        return self.expr.type

    def children(self) -> tuple[Expr, ...]:
        return (self.expr,)

    def __str__(self) -> str:
        return f"({self.expr})"


# -- the function table ----------------------------------------------------------------

def _table() -> dict[str, Function]:
    s, v, m, t = ValueType.SCALAR, ValueType.VECTOR, ValueType.MATRIX, ValueType.STRING
    specs: list[Function] = []

    def add(names: str, args: tuple[ValueType, ...], returns: ValueType = v,
            variadic: int = 0, experimental: bool = False) -> None:
        specs.extend(Function(name, args, returns, variadic, experimental)
                     for name in names.split())

    add("abs absent ceil exp floor ln log2 log10 sgn sqrt timestamp sort sort_desc "
        "acos acosh asin asinh atan atanh cos cosh sin sinh tan tanh deg rad "
        "histogram_avg histogram_count histogram_sum histogram_stddev histogram_stdvar",
        (v,))
    add("absent_over_time avg_over_time changes count_over_time delta deriv "
        "first_over_time idelta increase irate last_over_time max_over_time min_over_time "
        "present_over_time rate resets stddev_over_time stdvar_over_time sum_over_time", (m,))
    add("mad_over_time ts_of_first_over_time ts_of_last_over_time ts_of_max_over_time "
        "ts_of_min_over_time", (m,), experimental=True)
    add("days_in_month day_of_month day_of_week day_of_year hour minute month year", (v,),
        variadic=1)
    add("clamp", (v, s, s))
    add("clamp_max clamp_min", (v, s))
    add("round", (v, s), variadic=1)
    add("histogram_fraction", (s, s, v))
    add("histogram_quantile", (s, v))
    add("histogram_quantiles", (v, t, s, s), variadic=9, experimental=True)
    add("double_exponential_smoothing", (m, s, s), experimental=True)
    add("info", (v, v), variadic=1, experimental=True)
    add("label_replace", (v, t, t, t, t))
    add("label_join", (v, t, t, t), variadic=-1)
    add("sort_by_label sort_by_label_desc", (v, t), variadic=-1, experimental=True)
    add("predict_linear", (m, s))
    add("quantile_over_time", (s, m))
    add("scalar", (v,), s)
    add("vector", (s,))
    add("pi time", (), s)
    add("start end step range", (), s, experimental=True)
    add("min_of max_of", (s, s), s, experimental=True)
    add("start_timestamp", (v,), experimental=True)
    return {spec.name: spec for spec in sorted(specs, key=lambda spec: spec.name)}


FUNCTIONS: dict[str, Function] = _table()
"""Every function the parser accepts, by name (Prometheus's table, experimental ones
included and marked)."""
