"""The PromQL parser: precedence, selectors and their modifiers, type checks, errors with
positions, printing back, and Prometheus's own test corpus (read in place)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.telemetry.promql import (FUNCTIONS, PromQLSyntaxError, PromQLUnsupported,
                                              ValueType, parse)
from geoplex.servers.telemetry.promql.ast import (AggregateExpr, AggregateOp, AtEdge,
                                                  BinaryExpr, BinaryOp, Call, Cardinality,
                                                  Expr, LabelMatcher, MatchOp,
                                                  MatrixSelector, NumberLiteral, ParenExpr,
                                                  StringLiteral, SubqueryExpr, UnaryExpr,
                                                  UnaryOp, VectorMatching, VectorSelector,
                                                  format_duration, walk)
from geoplex.servers.telemetry.promql.parser import parse_duration, parse_number

CORPUS = Path("/work/shared/promqltest/head")


def selector(name: str, *matchers: LabelMatcher, offset_ms: int = 0,
             at: int | AtEdge | None = None) -> VectorSelector:
    return VectorSelector(name, (LabelMatcher("__name__", MatchOp.EQ, name), *matchers),
                          offset_ms, at)


def num(value: float) -> NumberLiteral:
    return NumberLiteral(value)


def error_of(text: str) -> PromQLSyntaxError:
    with pytest.raises(PromQLSyntaxError) as caught:
        parse(text)
    return caught.value


# -- literals --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("1", 1.0), ("1.5", 1.5), (".5", 0.5), ("1e3", 1000.0), ("1.5E-3", 0.0015),
    ("0x1F", 31.0), ("0X_ff", 255.0), ("017", 15.0), ("1_000", 1000.0), ("Inf", math.inf),
    ("+inf", math.inf), ("-Inf", -math.inf), ("5m", 300.0), ("1h30m", 5400.0),
    ("250ms", 0.25), ("1y", 365 * 86400.0),
])
def test_number_literals_read_as_prometheus_does(text: str, value: float) -> None:
    expr = parse(text)
    assert isinstance(expr, NumberLiteral)
    assert expr.value == value


def test_nan_literal_equals_itself() -> None:
    expr = parse("NaN")
    assert isinstance(expr, NumberLiteral) and math.isnan(expr.value)
    assert parse("nan") == expr


def test_duration_literal_is_a_scalar_that_prints_as_a_duration() -> None:
    assert parse("5m") == NumberLiteral(300.0, duration=True)
    assert str(parse("time() - 90m")) == "time() - 1h30m"
    assert str(parse("-5m")) == "-5m"


@pytest.mark.parametrize(("text", "value"), [
    ('"a\\nb"', "a\nb"), ("'it\\'s'", "it's"), ("`raw\\n`", "raw\\n"),
    ('"\\u00e9\\x41\\101"', "éAA"), ('"tab\\there"', "tab\there"),
])
def test_string_literals_unquote_go_escapes(text: str, value: str) -> None:
    assert parse(text) == StringLiteral(value)


def test_invalid_utf8_escape_survives_printing() -> None:
    expr = parse('"a\\xc5z"')
    assert str(expr) == '"a\\xc5z"'
    assert parse(str(expr)) == expr


@pytest.mark.parametrize(("text", "ms"), [
    ("0", 0), ("5m", 300_000), ("1h30m", 5_400_000), ("1w2d", 777_600_000),
    ("1s500ms", 1500),
])
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["1.5h", "30m1h", "5mm", "", "1hs"])
def test_parse_duration_rejects_what_prometheus_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("ms", "text"), [
    (0, "0s"), (5_400_000, "1h30m"), (90 * 86_400_000, "90d"), (14 * 86_400_000, "2w"),
    (1500, "1s500ms"), (365 * 86_400_000, "1y"),
])
def test_format_duration_like_prometheus(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def test_parse_number_hex_and_octal() -> None:
    assert parse_number("0x10") == 16.0
    assert parse_number("010") == 8.0
    assert parse_number("09") == 9.0


# -- precedence and associativity ------------------------------------------------------

def test_power_binds_tighter_than_unary_minus() -> None:
    assert parse("-2^2") == UnaryExpr(UnaryOp.MINUS, BinaryExpr(BinaryOp.POW, num(2), num(2)))


def test_power_is_right_associative() -> None:
    assert parse("2 ^ 3 ^ 2") == BinaryExpr(
        BinaryOp.POW, num(2), BinaryExpr(BinaryOp.POW, num(3), num(2)))


def test_power_right_operand_takes_a_unary_minus() -> None:
    assert parse("2 ^ -1 * 3") == BinaryExpr(
        BinaryOp.MUL, BinaryExpr(BinaryOp.POW, num(2), num(-1)), num(3))


def test_unary_minus_on_a_number_folds_into_the_literal() -> None:
    assert parse("-1") == num(-1)
    assert parse("- -1") == num(1)
    assert isinstance(parse("-(1)"), UnaryExpr)


def test_unary_minus_binds_like_multiplication() -> None:
    a, b = selector("a"), selector("b")
    assert parse("-a * b") == BinaryExpr(BinaryOp.MUL, UnaryExpr(UnaryOp.MINUS, a), b,
                                         VectorMatching())
    assert parse("-a + b") == BinaryExpr(BinaryOp.ADD, UnaryExpr(UnaryOp.MINUS, a), b,
                                         VectorMatching())


@pytest.mark.parametrize(("text", "shape"), [
    ("a + b * c", "(a + (b * c))"),
    ("a * b + c", "((a * b) + c)"),
    ("a - b - c", "((a - b) - c)"),
    ("a / b % c atan2 d", "(((a / b) % c) atan2 d)"),
    ("a + b > c - d", "((a + b) > (c - d))"),
    ("a > b and c < d", "((a > b) and (c < d))"),
    ("a and b or c unless d", "((a and b) or (c unless d))"),
    ("a or b and c", "(a or (b and c))"),
    ("a unless b and c", "((a unless b) and c)"),
    ("a == b != c", "((a == b) != c)"),
])
def test_binary_precedence(text: str, shape: str) -> None:
    assert _shape(parse(text)) == shape


def _shape(expr: Expr) -> str:
    if isinstance(expr, BinaryExpr):
        return f"({_shape(expr.lhs)} {expr.op.value} {_shape(expr.rhs)})"
    return str(expr)


def test_offset_binds_to_the_nearest_selector() -> None:
    expr = parse("a + b offset 5m")
    assert isinstance(expr, BinaryExpr)
    assert expr.rhs == selector("b", offset_ms=300_000)
    assert parse("-a offset 1m") == UnaryExpr(UnaryOp.MINUS, selector("a", offset_ms=60_000))


# -- selectors -------------------------------------------------------------------------

def test_selector_with_every_matcher_kind() -> None:
    expr = parse('http_requests{job="api", code!="500", path=~"/v1/.*", method!~"GET|HEAD"}')
    assert expr == selector("http_requests", LabelMatcher("job", MatchOp.EQ, "api"),
                            LabelMatcher("code", MatchOp.NE, "500"),
                            LabelMatcher("path", MatchOp.RE, "/v1/.*"),
                            LabelMatcher("method", MatchOp.NRE, "GET|HEAD"))


def test_selector_by_name_matcher_only() -> None:
    expr = parse('{__name__=~"job:.*"}')
    assert expr == VectorSelector(None, (LabelMatcher("__name__", MatchOp.RE, "job:.*"),))
    assert expr.type is ValueType.VECTOR


def test_quoted_utf8_names() -> None:
    assert parse('{"my.metric"}') == VectorSelector(
        None, (LabelMatcher("__name__", MatchOp.EQ, "my.metric"),))
    expr = parse('foo{"service.name"="geo"}')
    assert expr == selector("foo", LabelMatcher("service.name", MatchOp.EQ, "geo"))
    assert str(expr) == 'foo{"service.name"="geo"}'


def test_trailing_commas_in_matchers_and_grouping() -> None:
    assert parse('foo{a="b",}') == selector("foo", LabelMatcher("a", MatchOp.EQ, "b"))
    assert parse("sum by (a,) (foo)") == parse("sum by (a) (foo)")


@pytest.mark.parametrize("text", ["{}", '{a=""}', '{a=~".*"}', '{a!~"x"}', '{a=~"|x"}'])
def test_selector_needs_a_non_empty_matcher(text: str) -> None:
    error = error_of(text)
    assert error.message == "vector selector must contain at least one non-empty matcher"
    assert error.position == 0


def test_selector_with_only_one_non_empty_matcher_is_accepted() -> None:
    assert isinstance(parse('{a=~".*", b="x"}'), VectorSelector)


def test_metric_name_set_twice() -> None:
    assert "metric name must not be set twice" in error_of('foo{__name__="bar"}').message


def test_keywords_as_metric_and_label_names() -> None:
    assert parse("sum") == selector("sum")
    assert parse("by") == selector("by")
    assert parse("foo and and") == BinaryExpr(BinaryOp.AND, selector("foo"), selector("and"),
                                              VectorMatching(Cardinality.MANY_TO_MANY))
    assert parse('foo{sum="x", by="y", on="z"}') == selector(
        "foo", LabelMatcher("sum", MatchOp.EQ, "x"), LabelMatcher("by", MatchOp.EQ, "y"),
        LabelMatcher("on", MatchOp.EQ, "z"))
    expr = parse("sum by (by, on, offset) (foo)")
    assert isinstance(expr, AggregateExpr) and expr.grouping == ("by", "on", "offset")


def test_keywords_are_case_insensitive() -> None:
    assert parse("SUM BY (a) (x)") == parse("sum by (a) (x)")
    assert parse("x Offset 5m") == selector("x", offset_ms=300_000)


def test_regex_matcher_uses_re2_inline_flags() -> None:
    expr = parse('foo{group=~".*((?i)DUC).*"}')
    assert isinstance(expr, VectorSelector)
    assert expr.matchers[1].matches("production")
    assert not expr.matchers[1].matches("prod")


def test_regex_matchers_are_anchored() -> None:
    matcher = LabelMatcher("a", MatchOp.RE, "b|c")
    assert matcher.matches("b") and not matcher.matches("abc")
    assert LabelMatcher("a", MatchOp.NRE, "b").matches("bb")


def test_invalid_regex_is_a_parse_error() -> None:
    error = error_of('foo{a=~"(x"}')
    assert error.message.startswith("error parsing regexp")
    assert error.position == 7


# -- ranges, subqueries, offset and @ --------------------------------------------------

def test_range_selector() -> None:
    expr = parse("foo[5m]")
    assert expr == MatrixSelector(selector("foo"), 300_000)
    assert expr.type is ValueType.MATRIX


def test_plain_number_range_is_seconds() -> None:
    assert parse("foo[300]") == parse("foo[5m]")
    assert parse("foo[1.5]") == MatrixSelector(selector("foo"), 1500)


def test_offset_and_at_in_either_order() -> None:
    expected = MatrixSelector(selector("foo", offset_ms=-60_000, at=100_000), 300_000)
    assert parse("foo[5m] offset -1m @ 100") == expected
    assert parse("foo[5m] @ 100 offset -1m") == expected
    assert str(expected) == "foo[5m] @ 100.000 offset -1m"


def test_at_start_end_and_number_offsets() -> None:
    assert parse("foo @ start()") == selector("foo", at=AtEdge.START)
    assert parse("foo @ end() offset 50") == selector("foo", offset_ms=50_000, at=AtEdge.END)
    assert parse("foo @ 1.5") == selector("foo", at=1500)
    assert parse("foo @ -10") == selector("foo", at=-10_000)


def test_subqueries() -> None:
    inner = Call(FUNCTIONS["rate"], (MatrixSelector(selector("foo"), 60_000),))
    assert parse("rate(foo[1m])[30m:1m]") == SubqueryExpr(inner, 1_800_000, 60_000)
    assert parse("rate(foo[1m])[30m:]") == SubqueryExpr(inner, 1_800_000, None)
    expr = parse("max_over_time(rate(foo[1m])[30m:] @ end() offset 5m)")
    assert isinstance(expr, Call)
    assert expr.args[0] == SubqueryExpr(inner, 1_800_000, None, 300_000, AtEdge.END)
    assert str(expr) == "max_over_time(rate(foo[1m])[30m:] @ end() offset 5m)"


@pytest.mark.parametrize(("text", "message"), [
    ("(foo)[5m]", "ranges only allowed for vector selectors"),
    ("foo offset 5m [5m]", "no offset modifiers allowed before range"),
    ("foo @ 1 [5m]", "no @ modifiers allowed before range"),
    ("foo[5m][5m]", "ranges only allowed for vector selectors"),
    ("foo offset 1m offset 2m", "offset may not be set multiple times"),
    ("foo @ 1 @ 2", "@ <timestamp> may not be set multiple times"),
    ("sum(foo) offset 1m", "offset modifier must be preceded by an instant vector selector"
                           " or range vector selector or a subquery"),
    ("1 @ 5", "@ modifier must be preceded by an instant vector selector or range vector"
              " selector or a subquery"),
    ("foo[0s]", "duration must be greater than 0"),
    ("foo[1m:0]", "duration must be greater than 0"),
    ("foo[1.5h]", 'not a valid duration string: "1.5h"'),
    ("foo @ Inf", "timestamp out of bounds for @ modifier: inf"),
    ("foo[5m][10m:]", "subquery is only allowed on instant vector, got range vector instead"),
])
def test_modifier_errors(text: str, message: str) -> None:
    assert error_of(text).message == message


# -- functions and aggregations ---------------------------------------------------------

def test_function_table_covers_the_evaluators_list() -> None:
    wanted = ("rate irate increase delta idelta deriv predict_linear resets changes "
              "avg_over_time min_over_time max_over_time sum_over_time count_over_time "
              "last_over_time quantile_over_time stddev_over_time stdvar_over_time "
              "present_over_time absent absent_over_time histogram_quantile abs ceil floor "
              "round sqrt exp ln log2 log10 clamp clamp_min clamp_max time timestamp vector "
              "scalar sort sort_desc label_replace label_join minute hour day_of_week "
              "day_of_month days_in_month month year sgn").split()
    assert [name for name in wanted if name not in FUNCTIONS] == []
    assert FUNCTIONS["quantile_over_time"].arg_types == (ValueType.SCALAR, ValueType.MATRIX)
    assert FUNCTIONS["scalar"].return_type is ValueType.SCALAR


def test_optional_and_variadic_arguments() -> None:
    assert isinstance(parse("hour()"), Call)
    assert isinstance(parse("hour(foo)"), Call)
    assert isinstance(parse("round(foo, 5)"), Call)
    assert isinstance(parse('label_join(foo, "dst", ",", "a", "b", "c")'), Call)
    assert error_of("hour(foo, bar)").message == (
        'expected at most 1 argument(s) in call to "hour", got 2')
    assert error_of('label_join(foo, "dst")').message == (
        'expected at least 3 argument(s) in call to "label_join", got 2')
    assert error_of("rate()").message == 'expected 1 argument(s) in call to "rate", got 0'


@pytest.mark.parametrize(("text", "message", "position"), [
    ("rate(foo)", 'expected type range vector in call to function "rate", got instant vector',
     5),
    ("abs(foo[5m])", 'expected type instant vector in call to function "abs", got range '
                     "vector", 4),
    ('label_replace(foo, "a", "b", "c", 1)', 'expected type string in call to function '
                                             '"label_replace", got scalar', 34),
    ("vector(foo)", 'expected type scalar in call to function "vector", got instant vector',
     7),
    ("foo(bar)", 'unknown function with name "foo"', 0),
    ("sum(foo[5m])", "expected type instant vector in aggregation expression, got range "
                     "vector", 4),
    ('topk("a", foo)', "expected type scalar in aggregation parameter, got string", 5),
    ("count_values(1, foo)", "expected type string in aggregation parameter, got scalar", 13),
    ("sum()", "no arguments for aggregate expression provided", 0),
    ("sum(a, b)", "wrong number of arguments for aggregate expression provided, expected 1, "
                  "got 2", 0),
    ("quantile(a)", "wrong number of arguments for aggregate expression provided, expected 2,"
                    " got 1", 0),
])
def test_type_errors(text: str, message: str, position: int) -> None:
    error = error_of(text)
    assert (error.message, error.position) == (message, position)


def test_aggregation_grouping_before_or_after() -> None:
    expected = AggregateExpr(AggregateOp.SUM, selector("foo"), None, ("job",), False)
    assert parse("sum by (job) (foo)") == expected
    assert parse("sum(foo) by (job)") == expected
    assert parse("topk without (a) (5, foo)") == AggregateExpr(
        AggregateOp.TOPK, selector("foo"), num(5), ("a",), True)
    assert parse('count_values("v", foo)') == AggregateExpr(
        AggregateOp.COUNT_VALUES, selector("foo"), StringLiteral("v"))
    assert str(parse("quantile(0.9, foo) without (a, b)")) == (
        "quantile without (a, b) (0.9, foo)")


def test_every_aggregation_operator_parses() -> None:
    for op in AggregateOp:
        text = f"{op.value}(1, foo)" if op.has_param else f"{op.value}(foo)"
        if op is AggregateOp.COUNT_VALUES:
            text = 'count_values("x", foo)'
        expr = parse(text)
        assert isinstance(expr, AggregateExpr) and expr.op is op


# -- binary operator checks -------------------------------------------------------------

def test_vector_matching_modifiers() -> None:
    expr = parse("a * on(x, y) group_left(z) b")
    assert isinstance(expr, BinaryExpr)
    assert expr.matching == VectorMatching(Cardinality.MANY_TO_ONE, ("x", "y"), True, ("z",))
    expr = parse("a / ignoring(code) group_right b")
    assert isinstance(expr, BinaryExpr)
    assert expr.matching == VectorMatching(Cardinality.ONE_TO_MANY, ("code",), False, ())
    assert str(expr) == "a / ignoring(code) group_right() b"


def test_bool_modifier_and_scalar_sides() -> None:
    expr = parse("a > bool on(x) b")
    assert isinstance(expr, BinaryExpr) and expr.return_bool
    assert expr.matching == VectorMatching(labels=("x",), on=True)
    expr = parse("1 < bool 2")
    assert isinstance(expr, BinaryExpr) and expr.type is ValueType.SCALAR
    assert expr.matching is None
    expr = parse("foo + 1")
    assert isinstance(expr, BinaryExpr) and expr.matching is None


def test_set_operators_are_many_to_many() -> None:
    expr = parse("a and on(x) b")
    assert isinstance(expr, BinaryExpr)
    assert expr.matching == VectorMatching(Cardinality.MANY_TO_MANY, ("x",), True)


@pytest.mark.parametrize(("text", "message"), [
    ("1 > 2", "comparisons between scalars must use BOOL modifier"),
    ("a + bool b", "bool modifier can only be used on comparison operators"),
    ("a and 1", 'set operator "and" not allowed in binary scalar expression'),
    ("1 or a", 'set operator "or" not allowed in binary scalar expression'),
    ("a and on(x) group_left b", 'no grouping allowed for "and" operation'),
    ("a + on(x) 1", "vector matching only allowed between instant vectors"),
    ("a * on(x) group_left(x) b", 'label "x" must not occur in ON and GROUP clause at once'),
    ("foo[5m] + 1", "binary expression must contain only scalar and instant vector types"),
    ('"a" + 1', "binary expression must contain only scalar and instant vector types"),
    ("-foo[5m]", "unary expression only allowed on expressions of type scalar or instant "
                 'vector, got "range vector"'),
])
def test_binary_and_unary_type_errors(text: str, message: str) -> None:
    assert error_of(text).message == message


# -- syntax errors and positions ----------------------------------------------------------

@pytest.mark.parametrize(("text", "message", "position"), [
    ("foo +", "unexpected end of input", 5),
    ("sum(foo", "unclosed left parenthesis", 7),
    ("foo)", "unexpected right parenthesis ')'", 3),
    ('foo{a="b"', "unexpected end of input inside braces", 9),
    ("foo{a.b}", "unexpected character inside braces: '.'", 5),
    ("foo bar", 'unexpected identifier "bar"', 4),
    ("sum by (a b) (x)", 'unexpected identifier "b", expected ")" or ","', 10),
    ("foo[5m", "unclosed left bracket", 6),
    ("foo $", "unexpected character: '$'", 4),
    ('"abc', "unterminated quoted string", 0),
    ('"a\\qb"', "unknown escape sequence 'q'", 2),
    ("1x", "bad number or duration syntax: '1x'", 0),
    ("", "no expression found in input", 0),
    ("# only a comment", "no expression found in input", 0),
])
def test_syntax_errors_with_positions(text: str, message: str, position: int) -> None:
    error = error_of(text)
    assert (error.message, error.position) == (message, position)


def test_error_reports_line_and_column() -> None:
    error = error_of("sum(\n  rate(foo)\n)")
    assert (error.position, error.line, error.column) == (12, 2, 8)
    assert str(error).startswith("2:8: parse error: expected type range vector")


def test_comments_run_to_the_end_of_the_line() -> None:
    assert parse("foo # the numerator\n/ bar # and the denominator") == parse("foo / bar")
    assert parse('foo{a="b", # comment\n c="d"}') == parse('foo{a="b", c="d"}')


@pytest.mark.parametrize(("text", "construct"), [
    ("{{schema:1 sum:3}}", "native histogram literal"),
    ("foo[5m+1m]", "duration expression"),
    ("foo[step()]", "duration expression"),
    ("foo offset (1m * 2)", "duration expression"),
    ("a + fill(0) b", "fill modifier"),
    ("rate(foo[5m] anchored)", "anchored modifier"),
    ("rate(foo[5m] smoothed)", "smoothed modifier"),
    ("a </ b", "trim operator </"),
])
def test_unsupported_constructs_are_named(text: str, construct: str) -> None:
    with pytest.raises(PromQLUnsupported) as caught:
        parse(text)
    assert caught.value.construct == construct


def test_fill_is_still_a_metric_name() -> None:
    assert parse("fill + fill") == BinaryExpr(BinaryOp.ADD, selector("fill"),
                                              selector("fill"), VectorMatching())


# -- printing ----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "printed"), [
    ('sum by(job)(rate(foo{a="b"}[5m]))', 'sum by (job) (rate(foo{a="b"}[5m]))'),
    ("foo offset 5m @ 10", "foo @ 10.000 offset 5m"),
    ("a*on(x)group_left(y)b", "a * on(x) group_left(y) b"),
    ("a > BOOL b", "a > bool b"),
    ("-(a)", "-(a)"),
    ("a + ignoring() b", "a + b"),
    ("1e20 + 0.1", "1e+20 + 0.1"),
    ("foo[90m:1m]", "foo[1h30m:1m]"),
    ('{__name__="foo"}', '{__name__="foo"}'),
    ("'single'", '"single"'),
])
def test_canonical_printing(text: str, printed: str) -> None:
    assert str(parse(text)) == printed
    assert parse(printed) == parse(text)


def test_spans_are_ignored_by_equality_but_kept() -> None:
    expr = parse("  foo  +  bar")
    assert isinstance(expr, BinaryExpr)
    assert (expr.lhs.span.start, expr.rhs.span.start, expr.span.end) == (2, 10, 13)
    assert expr == parse("foo+bar")


def test_walk_visits_every_node() -> None:
    kinds = [type(node).__name__ for node in walk(parse("sum(rate(foo[5m])) / 2"))]
    assert kinds == ["BinaryExpr", "AggregateExpr", "Call", "MatrixSelector",
                     "VectorSelector", "NumberLiteral"]


# -- generated expressions round-trip through str() -------------------------------------

_NAMES = st.sampled_from(["foo", "bar", "job:rate5m", "sum", "by", "offset", "Up"])
_LABELS = st.sampled_from(["job", "instance", "le", "on", "sum", "service.name"])
_INCLUDE = st.sampled_from(["extra", "team"])
_VALUES = st.text(alphabet=st.characters(codec="utf-8"),
                  max_size=6)
_DURATIONS = st.sampled_from(["5m", "1h30m", "30s", "250ms", "1d", "2w", "300", "1.5"])


@st.composite
def _matchers(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        label = draw(_LABELS)
        name = label if "." not in label else f'"{label}"'
        op = draw(st.sampled_from(["=", "!=", "=~", "!~"]))
        value = draw(_VALUES)
        if op in ("=~", "!~"):
            value = re.escape(value)
        parts.append(f"{name}{op}{_quote(value)}")
    return ", ".join(parts)


def _quote(value: str) -> str:
    from geoplex.servers.telemetry.promql.ast import quote
    return quote(value)


@st.composite
def _selector(draw: st.DrawFn) -> str:
    matchers = draw(_matchers())
    return f"{draw(_NAMES)}{{{matchers}}}" if matchers or draw(st.booleans()) else draw(_NAMES)


@st.composite
def _modifiers(draw: st.DrawFn) -> str:
    parts = []
    if draw(st.booleans()):
        parts.append(f"offset {draw(st.sampled_from(['', '-']))}{draw(_DURATIONS)}")
    if draw(st.booleans()):
        parts.append("@ " + draw(st.sampled_from(["start()", "end()", "100", "-5.5", "1e3"])))
    if draw(st.booleans()):
        parts.reverse()
    return "".join(f" {part}" for part in parts)


@dataclass
class _Typed:
    text: str
    kind: ValueType
    binary: bool = False


def _wrap(item: _Typed) -> str:
    return f"({item.text})" if item.binary else item.text


@st.composite
def _expr(draw: st.DrawFn, depth: int = 3) -> _Typed:
    leaves = ["selector", "number", "range_call"]
    choice = draw(st.sampled_from(leaves + (["binary", "aggregate", "unary", "paren",
                                             "subquery", "call"] if depth > 0 else [])))
    if choice == "selector":
        return _Typed(draw(_selector()) + draw(_modifiers()), ValueType.VECTOR)
    if choice == "number":
        return _Typed(draw(st.sampled_from(["1", "0.5", "1e3", "0x1f", "Inf", "NaN", "5m",
                                            "-2", "time()", "pi()"])), ValueType.SCALAR)
    if choice == "range_call":
        func = draw(st.sampled_from(["rate", "increase", "avg_over_time", "changes"]))
        return _Typed(f"{func}({draw(_selector())}[{draw(_DURATIONS)}]{draw(_modifiers())})",
                      ValueType.VECTOR)
    inner = draw(_expr(depth - 1))
    if choice == "unary":
        return _Typed(draw(st.sampled_from(["-", "+"])) + _wrap(inner), inner.kind)
    if choice == "paren":
        return _Typed(f"({inner.text})", inner.kind)
    if choice == "subquery":
        vector = inner if inner.kind is ValueType.VECTOR else _Typed("foo", ValueType.VECTOR)
        step = draw(st.sampled_from(["", "1m", "10s"]))
        func = draw(st.sampled_from(["max_over_time", "deriv", "absent_over_time"]))
        return _Typed(f"{func}(({vector.text})[{draw(_DURATIONS)}:{step}]"
                      f"{draw(_modifiers())})", ValueType.VECTOR)
    if choice == "call":
        if inner.kind is ValueType.SCALAR:
            return _Typed(f"vector({inner.text})", ValueType.VECTOR)
        func = draw(st.sampled_from(["abs", "sort", "timestamp", "scalar", "hour",
                                     "clamp_min", "label_replace"]))
        if func == "clamp_min":
            return _Typed(f"clamp_min({inner.text}, 0)", ValueType.VECTOR)
        if func == "label_replace":
            return _Typed(f'label_replace({inner.text}, "dst", "$1", "src", "(.*)")',
                          ValueType.VECTOR)
        kind = ValueType.SCALAR if func == "scalar" else ValueType.VECTOR
        return _Typed(f"{func}({inner.text})", kind)
    if choice == "aggregate":
        vector = inner if inner.kind is ValueType.VECTOR else _Typed("bar", ValueType.VECTOR)
        op = draw(st.sampled_from(["sum", "avg", "topk", "quantile", "count_values",
                                   "limitk", "group"]))
        param = {"topk": "3, ", "quantile": "0.9, ", "count_values": '"v", ',
                 "limitk": "2, "}.get(op, "")
        grouping = ""
        if draw(st.booleans()):
            labels = ", ".join(draw(st.lists(st.sampled_from(["job", "by", "on", "le"]),
                                             max_size=3)))
            grouping = f"{draw(st.sampled_from(['by', 'without']))} ({labels})"
        if draw(st.booleans()):
            return _Typed(f"{op} {grouping} ({param}{vector.text})", ValueType.VECTOR)
        return _Typed(f"{op}({param}{vector.text}) {grouping}", ValueType.VECTOR)
    other = draw(_expr(depth - 1))
    both_vectors = inner.kind is other.kind is ValueType.VECTOR
    ops = ["+", "-", "*", "/", "%", "^", "atan2", "==", "!=", ">", "<", ">=", "<="]
    if both_vectors:
        ops += ["and", "or", "unless"]
    op = draw(st.sampled_from(ops))
    modifier = ""
    comparison = op in ("==", "!=", ">", "<", ">=", "<=")
    if comparison and (not both_vectors or draw(st.booleans())):
        modifier += " bool"
    if both_vectors and draw(st.booleans()):
        labels = ", ".join(draw(st.lists(_LABELS.filter(lambda name: "." not in name),
                                         max_size=2)))
        modifier += f" {draw(st.sampled_from(['on', 'ignoring']))}({labels})"
        if op not in ("and", "or", "unless") and draw(st.booleans()):
            modifier += f" {draw(st.sampled_from(['group_left', 'group_right']))}"
            modifier += f"({draw(_INCLUDE)})"
    kind = ValueType.VECTOR if ValueType.VECTOR in (inner.kind, other.kind) else \
        ValueType.SCALAR
    return _Typed(f"{_wrap(inner)} {op}{modifier} {_wrap(other)}", kind, binary=True)


@settings(max_examples=300, deadline=None)
@given(_expr())
def test_printed_expression_parses_back_to_the_same_tree(generated: _Typed) -> None:
    expr = parse(generated.text)
    assert expr.type is generated.kind
    printed = str(expr)
    assert parse(printed) == expr, printed
    assert str(parse(printed)) == printed


# -- speed -------------------------------------------------------------------------------

# -- Prometheus's test corpus ------------------------------------------------------------

_EVAL = re.compile(r"^eval(?:_fail|_warn|_info|_ordered)?\s+(?:instant\s+at\s+\S+|"
                   r"range\s+from\s+\S+\s+to\s+\S+\s+step\s+\S+)\s+(?P<expr>.+)$")
_EXPECT_FAIL = re.compile(r"^\s+(?:expect\s+fail(?:\s+(?:msg|regex):\s*(?P<msg>.*))?|"
                          r"expected_fail_(?:message|regexp)\s+(?P<old>.*))\s*$")
# what Prometheus's parse errors say (an expected failure naming one is a parse error)
_PARSE_ERROR = re.compile(
    r"parse error|unexpected |unknown function|expected type|expected \d+ argument|"
    r"expected at (?:least|most)|no arguments for aggregate|wrong number of arguments|"
    r"vector selector must contain|bool modifier|comparisons between scalars|"
    r"set operator|vector matching only|ranges only allowed|offset may not|"
    r"may not be set multiple|must be preceded by|not a valid duration|bad number|"
    r"unterminated|unclosed|subquery is only allowed|binary expression must|"
    r"duration must be greater")


@dataclass
class _Case:
    where: str
    expr: str
    fails: bool = False
    message: str | None = None

    @property
    def parse_error_expected(self) -> bool:
        return self.message is not None and _PARSE_ERROR.search(self.message) is not None


def _corpus() -> list[_Case]:
    cases: list[_Case] = []
    for path in sorted(CORPUS.glob("*.test")):
        current: _Case | None = None
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if (found := _EVAL.match(line)) is not None:
                current = _Case(f"{path.name}:{number}", found.group("expr").strip(),
                                fails=line.startswith("eval_fail"))
                cases.append(current)
            elif current is not None and (fail := _EXPECT_FAIL.match(line)) is not None:
                current.fails = True
                current.message = fail.group("msg") or fail.group("old")
            elif not line.startswith((" ", "\t")):
                current = None
    return cases


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"the Prometheus test corpus {CORPUS} "
                                                 "is not on this machine")
def test_prometheus_corpus_expressions_parse() -> None:
    cases = _corpus()
    must_parse = [case for case in cases if not case.parse_error_expected]
    must_fail = [case for case in cases if case.parse_error_expected]
    assert len(must_parse) > 1000
    failures: dict[str, list[str]] = {}
    for case in must_parse:
        try:
            parse(case.expr)
        except PromQLUnsupported as error:
            failures.setdefault(f"unsupported: {error.construct}", []).append(case.where)
        except PromQLSyntaxError as error:
            failures.setdefault(error.message.split(":")[0], []).append(
                f"{case.where} {case.expr}")
    failed = sum(len(where) for where in failures.values())
    rate = 1 - failed / len(must_parse)
    print(f"corpus: {len(must_parse) - failed}/{len(must_parse)} eval expressions parse "
          f"({rate:.2%}); {len(must_fail)} expect a parse error; failing: {failures}")
    assert rate >= 0.995, failures
    wrongly_parsed = []
    for case in must_fail:
        try:
            parse(case.expr)
        except PromQLSyntaxError:
            continue
        wrongly_parsed.append(case.where)
    assert wrongly_parsed == []


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the Prometheus test corpus is absent")
def test_prometheus_corpus_expressions_round_trip() -> None:
    for case in _corpus():
        try:
            expr = parse(case.expr)
        except (PromQLSyntaxError, PromQLUnsupported):
            continue
        assert parse(str(expr)) == expr, (case.where, case.expr, str(expr))


def test_every_function_type_checks_with_arguments_of_its_types() -> None:
    samples = {ValueType.SCALAR: "1", ValueType.VECTOR: "foo",
               ValueType.MATRIX: "foo[5m]", ValueType.STRING: '"s"'}
    for func in FUNCTIONS.values():
        args = ", ".join(samples[kind] for kind in func.arg_types)
        if func.name == "info":
            args = 'foo, {k="v"}'
        expr = parse(f"{func.name}({args})")
        assert isinstance(expr, Call) and expr.type is func.return_type
        assert parse(str(expr)) == expr


def test_node_types() -> None:
    assert parse("1").type is ValueType.SCALAR
    assert parse('"x"').type is ValueType.STRING
    assert parse("scalar(foo) * 2").type is ValueType.SCALAR
    assert parse("foo[5m:]").type is ValueType.MATRIX
    assert isinstance(parse("(foo)"), ParenExpr)


_QUERY_CHARS = st.sampled_from(list("abfmsx019._:{}[]()\"'`,=!~<>+-*/%^@# \n\\") + [
    "sum", "by", "on", "offset", "bool", "rate", "Inf", "5m", "group_left", "{{", "ā"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_QUERY_CHARS, max_size=25).map("".join))
def test_any_text_parses_or_raises_a_promql_error(text: str) -> None:
    from geoplex.servers.telemetry.promql import PromQLError
    try:
        expr = parse(text)
    except PromQLError as error:
        assert 0 <= error.position <= len(text)
        return
    assert parse(str(expr)) == expr
