"""PromQL text -> :mod:`ast` nodes: a hand-written lexer feeding a lark LALR grammar.

The lexer follows Prometheus's ``promql/parser/lex.go`` (keywords are recognised
case-insensitively outside braces and may still serve as metric and label names;
inside braces every word is a label name; ``Inf``/``NaN`` are numbers; durations are
``1h30m``-style; strings use Go escapes). The grammar mirrors
``generated_parser.y`` with its precedence table written out as one rule per level:

    or  <  and unless  <  == != <= < >= >  <  + -  <  * / % atan2  <  unary + -  <  ^

``^`` is right-associative and binds tighter than a unary minus (``-2 ^ 2`` is -4);
``[range]``, ``[range:step]``, ``offset`` and ``@`` bind tighter than every operator.
The tree is built while parsing (lark's inline transformer), and each node is checked
as it is built, the way Prometheus's ``checkAST`` does: types of function and
aggregation arguments, ``bool`` only on comparisons, set operators only between
instant vectors, and so on. The first error found is raised.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import replace
from collections.abc import Iterator
from typing import Any, NoReturn, cast

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, UnexpectedToken
from lark.lexer import Lexer, LexerState

from ..re2 import compile_regex
from .ast import (
    FUNCTIONS,
    METRIC_NAME,
    AggregateExpr,
    AggregateOp,
    AtEdge,
    BinaryExpr,
    BinaryOp,
    Call,
    Cardinality,
    Expr,
    LabelMatcher,
    MatchOp,
    MatrixSelector,
    NumberLiteral,
    ParenExpr,
    Span,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    UnaryOp,
    ValueType,
    VectorMatching,
    VectorSelector,
    quote,
)


class PromQLError(Exception):
    """Root of the parser's errors; ``position`` is a 0-based character offset,
    ``line`` and ``column`` are 1-based (Prometheus prints ``line:column``)."""

    def __init__(self, message: str, position: int, text: str = "") -> None:
        self.message = message
        self.position = position
        before = text[:position]
        self.line = before.count("\n") + 1
        self.column = position - (before.rfind("\n") + 1) + 1
        super().__init__(f"{self.line}:{self.column}: parse error: {message}")


class PromQLSyntaxError(PromQLError):
    """The query is not valid PromQL (a syntax or a type error)."""


class PromQLUnsupported(PromQLError):
    """Valid PromQL that this implementation does not support; ``construct`` names it."""

    def __init__(self, construct: str, position: int, text: str = "") -> None:
        self.construct = construct
        super().__init__(f"{construct} is not supported", position, text)


class _Fail(Exception):
    """Raised inside the lexer and the tree builder, which do not see the query text;
    :func:`parse` turns it into a :class:`PromQLError` with line and column."""

    def __init__(self, message: str, position: int, unsupported: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.unsupported = unsupported


def _fail(message: str, position: int) -> NoReturn:
    raise _Fail(message, position)


# -- tokens ----------------------------------------------------------------------------

_KEYWORDS = {
    "and": "LAND", "or": "LOR", "unless": "LUNLESS", "atan2": "ATAN2",
    **{op.value: op.name for op in AggregateOp},
    "offset": "OFFSET", "smoothed": "SMOOTHED", "anchored": "ANCHORED", "by": "BY",
    "without": "WITHOUT", "on": "ON", "ignoring": "IGNORING", "group_left": "GROUP_LEFT",
    "group_right": "GROUP_RIGHT", "fill": "FILL", "fill_left": "FILL_LEFT",
    "fill_right": "FILL_RIGHT", "bool": "BOOL",
    "start": "START", "end": "END", "step": "STEP", "range": "RANGE",
    "max_of": "MAX_OF", "min_of": "MIN_OF",
    "inf": "NUMBER", "nan": "NUMBER",
}
_AGGREGATORS = [op.name for op in AggregateOp]
_PREPROCESSORS = ["START", "END", "STEP", "RANGE", "MAX_OF", "MIN_OF"]
_OPERATOR_KEYWORDS = ["LAND", "LOR", "LUNLESS", "ATAN2"]
_OTHER_KEYWORDS = ["OFFSET", "SMOOTHED", "ANCHORED", "BY", "WITHOUT", "ON", "IGNORING",
                   "GROUP_LEFT", "GROUP_RIGHT", "FILL", "FILL_LEFT", "FILL_RIGHT", "BOOL"]
_PUNCTUATION = {"(": "LEFT_PAREN", ")": "RIGHT_PAREN", "{": "LEFT_BRACE",
                "}": "RIGHT_BRACE", "[": "LEFT_BRACKET", "]": "RIGHT_BRACKET", ",": "COMMA",
                ":": "COLON"}
_OPERATORS = {"+": "ADD", "-": "SUB", "*": "MUL", "/": "DIV", "%": "MOD", "^": "POW",
              "@": "AT", "==": "EQLC", "!=": "NEQ", "<=": "LTE", "<": "LSS", ">=": "GTE",
              ">": "GTR", "</": "TRIM_UPPER", ">/": "TRIM_LOWER", "=": "EQL",
              "=~": "EQL_REGEX", "!~": "NEQ_REGEX"}
_VALUES = ["NUMBER", "DURATION", "STRING", "IDENTIFIER", "METRIC_IDENTIFIER"]
_ALL_TERMINALS = sorted({*_VALUES, *_PUNCTUATION.values(), *_OPERATORS.values(),
                         *_KEYWORDS.values()})

_SPACE = re.compile(r"[ \t\r\n]+")
_COMMENT = re.compile(r"#[^\n]*")
_WORD = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_WORD = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_DIGITS = r"[0-9]+(?:_[0-9]+)*"
_NUMBER = re.compile(rf"0[xX]_?[0-9a-fA-F]+(?:_[0-9a-fA-F]+)*|(?:{_DIGITS})?"
                     rf"(?:\.(?:{_DIGITS})?)?(?:[eE][+-]?{_DIGITS})?")
_DURATION_LEXEME = re.compile(r"[0-9][0-9.]*[smhdwy]s?(?:[0-9]+[smhdw]s?)*(?![a-zA-Z0-9_])")
_ALNUM = re.compile(r"[a-zA-Z0-9_]")
_FOLLOWED_BY_PAREN = re.compile(r"\s*\(")
_SIMPLE_STRING = {'"': re.compile(r'"([^"\\\n]*)"'), "'": re.compile(r"'([^'\\\n]*)'")}
_OPERATOR_START = "+-*/%^@=!<>"
_DIGIT_CHARS = "0123456789"


def _token(kind: str, text: str, start: int, end: int) -> Token:
    return Token(kind, text[start:end], start_pos=start, end_pos=end)


def _tokens(text: str) -> Iterator[Token]:
    """Prometheus's lexer: tokens with ``start_pos``/``end_pos``; a STRING token's
    ``value`` is the decoded string (``str(token)`` stays the raw text)."""
    pos, size = 0, len(text)
    parens = 0
    brace = bracket = False
    while True:
        if (space := _SPACE.match(text, pos)) is not None:
            pos = space.end()
        if pos >= size:
            if brace:
                _fail("unexpected end of input inside braces", pos)
            if parens:
                _fail("unclosed left parenthesis", pos)
            if bracket:
                _fail("unclosed left bracket", pos)
            return
        char = text[pos]
        if char == "#":
            pos = cast(re.Match[str], _COMMENT.match(text, pos)).end()
            continue
        if char in "\"'`":
            end, value = _scan_string(text, pos)
            token = _token("STRING", text, pos, end)
            token.value = value
            yield token
            pos = end
            continue
        if brace:
            token = _brace_token(text, pos)
            yield token
            brace = char != "}"
            pos = cast(int, token.end_pos)
            continue
        if char in _DIGIT_CHARS or (char == "." and text[pos + 1:pos + 2] in _DIGIT_CHARS
                                    and pos + 1 < size):
            kind, end = _scan_number(text, pos)
            yield _token(kind, text, pos, end)
            pos = end
            continue
        word = (_LABEL_WORD if bracket else _WORD).match(text, pos)
        if word is not None:
            end = word.end()
            lowered = word.group().lower()
            keyword = _KEYWORDS.get(lowered)
            if keyword in ("FILL", "FILL_LEFT", "FILL_RIGHT") and not _FOLLOWED_BY_PAREN.match(
                    text, end):
                keyword = None  # "fill" is a keyword only before "(" (Prometheus too)
            if keyword is None:
                keyword = "METRIC_IDENTIFIER" if ":" in word.group() else "IDENTIFIER"
            yield _token(keyword, text, pos, end)
            pos = end
            continue
        if char in _PUNCTUATION:
            if char == "(":
                parens += 1
            elif char == ")":
                parens -= 1
                if parens < 0:
                    _fail("unexpected right parenthesis ')'", pos)
            elif char == "{":
                if text.startswith("{{", pos):
                    raise _Fail("native histogram literal", pos, unsupported=True)
                brace = True
            elif char == "[":
                if bracket:
                    _fail("unexpected left bracket '['", pos)
                bracket = True
            elif char == "]":
                if not bracket:
                    _fail("unexpected right bracket ']'", pos)
                bracket = False
            yield _token(_PUNCTUATION[char], text, pos, pos + 1)
            pos += 1
            continue
        if char in _OPERATOR_START:
            two = text[pos:pos + 2]
            if two in ("==", "!=", "<=", ">=", "</", ">/"):
                yield _token(_OPERATORS[two], text, pos, pos + 2)
                pos += 2
                continue
            if char == "!":
                _fail(f"unexpected character after '!': {text[pos + 1:pos + 2]!r}", pos)
            if two == "=~":
                _fail("unexpected character after '=': '~'", pos)
            yield _token(_OPERATORS[char], text, pos, pos + 1)
            pos += 1
            continue
        _fail(f"unexpected character: {char!r}", pos)


def _brace_token(text: str, pos: int) -> Token:
    char = text[pos]
    if char in ",}":
        return _token(_PUNCTUATION[char], text, pos, pos + 1)
    if char in "=!":
        two = text[pos:pos + 2]
        if two in ("=~", "!~", "!="):
            return _token(_OPERATORS[two], text, pos, pos + 2)
        if char == "=":
            return _token("EQL", text, pos, pos + 1)
        _fail(f"unexpected character after '!' inside braces: {text[pos + 1:pos + 2]!r}",
              pos)
    if (word := _LABEL_WORD.match(text, pos)) is not None:
        return _token("IDENTIFIER", text, pos, word.end())
    if char == "{":
        _fail("unexpected left brace '{'", pos)
    _fail(f"unexpected character inside braces: {char!r}", pos)


def _scan_number(text: str, pos: int) -> tuple[str, int]:
    end = cast(re.Match[str], _NUMBER.match(text, pos)).end()
    if not _ALNUM.match(text, end):
        return "NUMBER", end
    if (duration := _DURATION_LEXEME.match(text, pos)) is not None:
        return "DURATION", duration.end()
    _fail(f"bad number or duration syntax: {text[pos:end + 1]!r}", pos)


_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
_HEX_LENGTH = {"x": 2, "u": 4, "U": 8}


def _scan_string(text: str, pos: int) -> tuple[int, str]:
    """The end of the string literal at ``pos`` and its value (Go unquoting: ``\\xHH``
    and octal escapes are bytes, kept as ``surrogateescape`` code points when they are
    not valid UTF-8)."""
    quote = text[pos]
    if quote == "`":
        end = text.find("`", pos + 1)
        if end < 0:
            _fail("unterminated raw string", pos)
        return end + 1, text[pos + 1:end]
    if (simple := _SIMPLE_STRING[quote].match(text, pos)) is not None:
        return simple.end(), simple.group(1)
    out = bytearray()
    i, size = pos + 1, len(text)
    while True:
        if i >= size or text[i] == "\n":
            _fail("unterminated quoted string", pos)
        char = text[i]
        if char == quote:
            return i + 1, out.decode("utf-8", "surrogateescape")
        if char != "\\":
            out += char.encode("utf-8", "surrogateescape")
            i += 1
            continue
        if i + 1 >= size:
            _fail("escape sequence not terminated", i)
        code = text[i + 1]
        if code in _SIMPLE_ESCAPES or code == quote:
            out.append(_SIMPLE_ESCAPES.get(code, ord(code)))
            i += 2
        elif code in _HEX_LENGTH:
            digits = text[i + 2:i + 2 + _HEX_LENGTH[code]]
            if len(digits) < _HEX_LENGTH[code] or not all(
                    d in "0123456789abcdefABCDEF" for d in digits):
                _fail("illegal character in escape sequence", i)
            value = int(digits, 16)
            if code == "x":
                out.append(value)
            elif value > 0x10FFFF or 0xD800 <= value < 0xE000:
                _fail("escape sequence is an invalid Unicode code point", i)
            else:
                out += chr(value).encode("utf-8")
            i += 2 + len(digits)
        elif code in "01234567":
            digits = text[i + 1:i + 4]
            if len(digits) < 3 or not all(d in "01234567" for d in digits) or int(
                    digits, 8) > 255:
                _fail("illegal character in escape sequence", i)
            out.append(int(digits, 8))
            i += 4
        else:
            _fail(f"unknown escape sequence {code!r}", i)


_DURATION_PARTS = re.compile(r"(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?"
                             r"(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?\Z")
_UNIT_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)
_MAX_DURATION_MS = (2**63 - 1) // 1_000_000  # Go's time.Duration, in milliseconds


def parse_duration(text: str) -> int:
    """A Prometheus duration (``1h30m``, ``5m``, ``250ms``; units y w d h m s ms, each
    at most once and largest first) in milliseconds; ValueError when it is not one."""
    if text == "0":
        return 0
    match = _DURATION_PARTS.match(text)
    if not text or match is None:
        raise ValueError(f"not a valid duration string: {_go_quote(text)}")
    total = sum(int(count) * unit for count, unit in zip(match.groups(), _UNIT_MS)
                if count is not None)
    if total > _MAX_DURATION_MS:
        raise ValueError("duration out of range")
    return total


def parse_number(text: str) -> float:
    """A NUMBER token's value, as Prometheus reads it (Go's ``ParseInt(s, 0, 64)`` then
    ``ParseFloat``: hex ``0x1f``, octal ``017``, ``1_000``, ``1e3``, ``Inf``, ``NaN``)."""
    lowered = text.lower()
    if lowered in ("inf", "+inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    if lowered == "nan":
        return math.nan
    digits = text.replace("_", "")
    try:
        if re.fullmatch(r"0[0-7]+", digits):
            return float(int(digits, 8))
        return float(int(text, 0))
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"error parsing number: {_go_quote(text)}") from None


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _describe(token: Token) -> str:
    """A token as Prometheus's messages name it (``identifier "foo"``, ``<op:+>``...)."""
    kind, text = token.type, str(token)
    if kind == "$END":
        return "end of input"
    if kind in _VALUES:
        words = {"METRIC_IDENTIFIER": "metric identifier"}.get(kind, kind.lower())
        shown = _go_quote(text if len(text) <= 10 else text[:10])
        return f"{words} {shown}{'...' if len(text) > 10 else ''}"
    if kind in _AGGREGATORS:
        return f"<aggr:{text.lower()}>"
    if kind in _OPERATOR_KEYWORDS or (kind in _OPERATORS.values()
                                      and kind not in ("EQL", "EQL_REGEX", "NEQ_REGEX")):
        return f"<op:{text.lower()}>"
    if kind in _OTHER_KEYWORDS or kind in _PREPROCESSORS:
        return f"<{text.lower()}>"
    return _go_quote(text)


# -- grammar ---------------------------------------------------------------------------

def _alternatives(names: list[str]) -> str:
    return " | ".join(names)


_METRIC_KEYWORDS = [*_AGGREGATORS, "BY", "FILL", "FILL_LEFT", "FILL_RIGHT", "LAND", "LOR",
                    "LUNLESS", "OFFSET", "WITHOUT", *_PREPROCESSORS, "ANCHORED", "SMOOTHED"]
_LABEL_KEYWORDS = [*_METRIC_KEYWORDS, "BOOL", "GROUP_LEFT", "GROUP_RIGHT", "IGNORING", "ON",
                   "ATAN2"]

GRAMMAR = rf"""
%declare {" ".join(_ALL_TERMINALS)}

?start: expr

?expr: or_expr
?or_expr: and_expr
        | or_expr LOR bin_modifier and_expr -> binary
?and_expr: cmp_expr
         | and_expr (LAND | LUNLESS) bin_modifier cmp_expr -> binary
?cmp_expr: add_expr
         | cmp_expr (EQLC | NEQ | LTE | LSS | GTE | GTR) bin_modifier add_expr -> binary
?add_expr: mul_expr
         | add_expr (ADD | SUB) bin_modifier mul_expr -> binary
?mul_expr: unary_expr
         | mul_expr (MUL | DIV | MOD | ATAN2) bin_modifier unary_expr -> binary
?unary_expr: pow_expr
           | (ADD | SUB) unary_expr -> unary
?pow_expr: postfix_expr
         | postfix_expr POW bin_modifier unary_expr -> binary

bin_modifier: [BOOL] [matching]
matching: (ON | IGNORING) grouping_labels [group_side]
group_side: (GROUP_LEFT | GROUP_RIGHT) [grouping_labels]

?postfix_expr: primary
    | postfix_expr LEFT_BRACKET number_duration RIGHT_BRACKET -> matrix
    | postfix_expr LEFT_BRACKET number_duration COLON [number_duration] RIGHT_BRACKET -> subquery
    | postfix_expr OFFSET signed_number -> offset
    | postfix_expr AT signed_number -> at
    | postfix_expr AT (START | END) LEFT_PAREN RIGHT_PAREN -> at_edge

signed_number: [ADD | SUB] number_duration
?number_duration: NUMBER | DURATION

?primary: number_literal
        | string_literal
        | vector_selector
        | paren_expr
        | function_call
        | aggregate_expr

number_literal: NUMBER | DURATION
string_literal: STRING
paren_expr: LEFT_PAREN expr RIGHT_PAREN

function_call: func_name call_body
?func_name: IDENTIFIER | {_alternatives(_PREPROCESSORS)}
call_body: LEFT_PAREN [call_args] RIGHT_PAREN
call_args: expr (COMMA expr)*

aggregate_expr: aggregate_op grouping call_body -> aggregate_before
              | aggregate_op call_body [grouping] -> aggregate_after
?aggregate_op: {_alternatives(_AGGREGATORS)}
grouping: (BY | WITHOUT) grouping_labels
grouping_labels: LEFT_PAREN RIGHT_PAREN
               | LEFT_PAREN label_list RIGHT_PAREN
               | LEFT_PAREN label_list COMMA RIGHT_PAREN
label_list: grouping_label -> label_first
          | label_list COMMA grouping_label -> label_more
?grouping_label: IDENTIFIER | METRIC_IDENTIFIER | STRING | {_alternatives(_LABEL_KEYWORDS)}

vector_selector: metric_identifier [label_matchers]
               | label_matchers
?metric_identifier: IDENTIFIER | METRIC_IDENTIFIER | {_alternatives(_METRIC_KEYWORDS)}
label_matchers: LEFT_BRACE RIGHT_BRACE
              | LEFT_BRACE matcher_list RIGHT_BRACE
              | LEFT_BRACE matcher_list COMMA RIGHT_BRACE
matcher_list: label_matcher -> matcher_first
            | matcher_list COMMA label_matcher -> matcher_more
label_matcher: (IDENTIFIER | STRING) (EQL | NEQ | EQL_REGEX | NEQ_REGEX) STRING
             | STRING -> name_matcher
"""


# -- tree building ---------------------------------------------------------------------

def _start(item: Token | Expr) -> int:
    return item.span.start if isinstance(item, Expr) else cast(int, item.start_pos)


def _end(item: Token | Expr) -> int:
    return item.span.end if isinstance(item, Expr) else cast(int, item.end_pos)


def _expect(node: Expr, want: ValueType, context: str) -> None:
    got = node.type
    if got is not want:
        _fail(f"expected type {want.documented} in {context}, got {got.documented}",
              node.span.start)


def _seconds(sign: Token | None, number: Token) -> float:
    if number.type == "DURATION":
        try:
            value = parse_duration(str(number)) / 1000
        except ValueError as error:
            _fail(str(error), cast(int, number.start_pos))
    else:
        try:
            value = parse_number(str(number))
        except ValueError as error:
            _fail(str(error), cast(int, number.start_pos))
    return -value if sign is not None and sign.type == "SUB" else value


def _positive_ms(number: Token) -> int:
    value = _seconds(None, number)
    if not value > 0:
        _fail("duration must be greater than 0", cast(int, number.start_pos))
    return round(value * 1000)


_Grouping = tuple[bool, tuple[str, ...], Token]  # without, labels, keyword
_Matching = tuple[bool, tuple[str, ...], Cardinality, tuple[str, ...]]
_ARGS = tuple[tuple[Expr, ...], Token]  # arguments, closing parenthesis


@v_args(inline=True)
class _Builder(Transformer[Token, Expr]):
    """Builds and checks the AST while the LALR parser reduces (no parse tree)."""

    # literals
    def number_literal(self, token: Token) -> NumberLiteral:
        span = Span(cast(int, token.start_pos), cast(int, token.end_pos))
        return NumberLiteral(_seconds(None, token), token.type == "DURATION", span=span)

    def string_literal(self, token: Token) -> StringLiteral:
        return StringLiteral(cast(str, token.value),
                             span=Span(cast(int, token.start_pos), cast(int, token.end_pos)))

    def paren_expr(self, left: Token, expr: Expr, right: Token) -> ParenExpr:
        return ParenExpr(expr, span=Span(_start(left), _end(right)))

    # operators
    def unary(self, op: Token, expr: Expr) -> Expr:
        span = Span(_start(op), _end(expr))
        if isinstance(expr, NumberLiteral):
            value = -expr.value if op.type == "SUB" else expr.value
            return NumberLiteral(value, expr.duration, span=span)
        if expr.type not in (ValueType.SCALAR, ValueType.VECTOR):
            _fail("unary expression only allowed on expressions of type scalar or instant "
                  f'vector, got "{expr.type.documented}"', span.start)
        return UnaryExpr(UnaryOp(str(op)), expr, span=span)

    def bin_modifier(self, flag: Token | None,
                     matching: _Matching | None) -> tuple[bool, _Matching | None]:
        return flag is not None, matching

    def matching(self, keyword: Token, labels: tuple[str, ...],
                 side: tuple[Cardinality, tuple[str, ...]] | None) -> _Matching:
        card, include = side or (Cardinality.ONE_TO_ONE, ())
        return keyword.type == "ON", labels, card, include

    def group_side(self, keyword: Token,
                   labels: tuple[str, ...] | None) -> tuple[Cardinality, tuple[str, ...]]:
        card = Cardinality.MANY_TO_ONE if keyword.type == "GROUP_LEFT" else \
            Cardinality.ONE_TO_MANY
        return card, labels or ()

    def binary(self, lhs: Expr, op_token: Token,
               modifier: tuple[bool, _Matching | None], rhs: Expr) -> BinaryExpr:
        op = BinaryOp(str(op_token).lower())
        at = cast(int, op_token.start_pos)
        return_bool, written = modifier
        lt, rt = lhs.type, rhs.type
        if return_bool and not op.is_comparison:
            _fail("bool modifier can only be used on comparison operators", at)
        if op.is_comparison and not return_bool and lt is rt is ValueType.SCALAR:
            _fail("comparisons between scalars must use BOOL modifier", at)
        on, labels, card, include = written or (False, (), Cardinality.ONE_TO_ONE, ())
        if op.is_set and card is Cardinality.ONE_TO_ONE:
            card = Cardinality.MANY_TO_MANY
        if on:
            for label in labels:
                if label in include:
                    _fail(f'label "{label}" must not occur in ON and GROUP clause at once',
                          at)
        for side, kind in ((lhs, lt), (rhs, rt)):
            if kind not in (ValueType.SCALAR, ValueType.VECTOR):
                _fail("binary expression must contain only scalar and instant vector types",
                      side.span.start)
        matching: VectorMatching | None = VectorMatching(card, labels, on, include)
        if lt is not ValueType.VECTOR or rt is not ValueType.VECTOR:
            if labels:
                _fail("vector matching only allowed between instant vectors", at)
            matching = None
            if op.is_set:
                _fail(f'set operator "{op.value}" not allowed in binary scalar expression', at)
        elif op.is_set and card is not Cardinality.MANY_TO_MANY:
            _fail(f'no grouping allowed for "{op.value}" operation', at)
        return BinaryExpr(op, lhs, rhs, matching, return_bool,
                          span=Span(lhs.span.start, rhs.span.end))

    # selectors and their modifiers
    def label_matcher(self, name: Token, op: Token, value: Token) -> LabelMatcher:
        label = cast(str, name.value) if name.type == "STRING" else str(name)
        matcher = LabelMatcher(label, MatchOp(str(op)), cast(str, value.value))
        if matcher.op in (MatchOp.RE, MatchOp.NRE):
            try:
                compile_regex(matcher.value)
            except re.error as error:
                _fail(f"error parsing regexp: {error}", cast(int, value.start_pos))
        return matcher

    def name_matcher(self, name: Token) -> LabelMatcher:
        return LabelMatcher(METRIC_NAME, MatchOp.EQ, cast(str, name.value))

    def matcher_first(self, matcher: LabelMatcher) -> list[LabelMatcher]:
        return [matcher]

    def matcher_more(self, matchers: list[LabelMatcher], comma: Token,
                     matcher: LabelMatcher) -> list[LabelMatcher]:
        matchers.append(matcher)
        return matchers

    def label_matchers(self, left: Token, *rest: Any) -> tuple[tuple[LabelMatcher, ...], Span]:
        matchers = tuple(rest[0]) if len(rest) > 1 else ()
        return matchers, Span(_start(left), _end(rest[-1]))

    def vector_selector(self, first: Token | tuple[tuple[LabelMatcher, ...], Span],
                        braces: tuple[tuple[LabelMatcher, ...], Span] | None = None,
                        ) -> VectorSelector:
        if isinstance(first, Token):
            name = str(first)
            matchers, end = (braces[0], braces[1].end) if braces else ((), _end(first))
            span = Span(_start(first), end)
            for matcher in matchers:
                if matcher.name == METRIC_NAME:
                    _fail(f'metric name must not be set twice: "{name}" or "{matcher.value}"',
                          span.start)
            return VectorSelector(name, (LabelMatcher(METRIC_NAME, MatchOp.EQ, name),
                                         *matchers), span=span)
        matchers, span = first
        if not any(not matcher.matches("") for matcher in matchers):
            _fail("vector selector must contain at least one non-empty matcher", span.start)
        return VectorSelector(None, matchers, span=span)

    def matrix(self, expr: Expr, left: Token, number: Token, right: Token) -> MatrixSelector:
        message = ""
        if not isinstance(expr, VectorSelector):
            message = "ranges only allowed for vector selectors"
        elif expr.offset_ms:
            message = "no offset modifiers allowed before range"
        elif expr.at is not None:
            message = "no @ modifiers allowed before range"
        if message:
            _fail(message, _start(left))
        return MatrixSelector(cast(VectorSelector, expr), _positive_ms(number),
                              span=Span(expr.span.start, _end(right)))

    def subquery(self, expr: Expr, left: Token, range_: Token, colon: Token,
                 step: Token | None, right: Token) -> SubqueryExpr:
        if expr.type is not ValueType.VECTOR:
            _fail(f"subquery is only allowed on instant vector, got {expr.type.documented} "
                  "instead", expr.span.start)
        step_ms = None if step is None else _positive_ms(step)
        return SubqueryExpr(expr, _positive_ms(range_), step_ms,
                            span=Span(expr.span.start, _end(right)))

    def signed_number(self, sign: Token | None, number: Token) -> tuple[float, int]:
        return _seconds(sign, number), _end(number)

    def offset(self, expr: Expr, keyword: Token, number: tuple[float, int]) -> Expr:
        offset_ms = round(number[0] * 1000)
        target = _modified(expr, "offset modifier")
        if target.offset_ms:
            _fail("offset may not be set multiple times", expr.span.start)
        return _with_modifier(expr, Span(expr.span.start, number[1]), offset_ms=offset_ms)

    def at(self, expr: Expr, keyword: Token, number: tuple[float, int]) -> Expr:
        seconds = number[0]
        if not math.isfinite(seconds) or abs(seconds) >= 2**63 / 1000:
            _fail(f"timestamp out of bounds for @ modifier: {seconds:f}", _start(keyword))
        return self._at(expr, round(seconds * 1000), number[1])

    def at_edge(self, expr: Expr, keyword: Token, edge: Token, left: Token,
                right: Token) -> Expr:
        return self._at(expr, AtEdge(edge.type.lower()), _end(right))

    def _at(self, expr: Expr, at: int | AtEdge, end: int) -> Expr:
        if _modified(expr, "@ modifier").at is not None:
            _fail("@ <timestamp> may not be set multiple times", expr.span.start)
        return _with_modifier(expr, Span(expr.span.start, end), at=at)

    # calls and aggregations
    def call_args(self, *items: Expr | Token) -> tuple[Expr, ...]:
        return tuple(item for item in items if isinstance(item, Expr))

    def call_body(self, left: Token, args: tuple[Expr, ...] | None, right: Token) -> _ARGS:
        return args or (), right

    def function_call(self, name: Token, body: _ARGS) -> Call:
        args, right = body
        start = cast(int, name.start_pos)
        func = FUNCTIONS.get(str(name))
        if func is None:
            _fail(f'unknown function with name "{name}"', start)
        count = len(args)
        if not func.variadic:
            if count != len(func.arg_types):
                _fail(f"expected {len(func.arg_types)} argument(s) in call to "
                      f'"{func.name}", got {count}', start)
        elif count < func.min_args:
            _fail(f'expected at least {func.min_args} argument(s) in call to "{func.name}", '
                  f"got {count}", start)
        elif func.max_args is not None and count > func.max_args:
            _fail(f'expected at most {func.max_args} argument(s) in call to "{func.name}", '
                  f"got {count}", start)
        if func.name == "info" and count > 1 and not isinstance(args[1], VectorSelector):
            _fail('expected label selectors as the second argument to "info" function',
                  args[1].span.start)
        for index, arg in enumerate(args):
            _expect(arg, func.arg_type(index), f'call to function "{func.name}"')
        return Call(func, args, span=Span(start, _end(right)))

    def grouping(self, keyword: Token, labels: tuple[str, ...]) -> _Grouping:
        return keyword.type == "WITHOUT", labels, keyword

    def grouping_labels(self, *items: Any) -> tuple[str, ...]:
        return tuple(cast(list[str], items[1])) if len(items) > 2 else ()

    def label_first(self, label: Token) -> list[str]:
        return [_grouping_label(label)]

    def label_more(self, labels: list[str], comma: Token, label: Token) -> list[str]:
        labels.append(_grouping_label(label))
        return labels

    def aggregate_before(self, op: Token, grouping: _Grouping, body: _ARGS) -> AggregateExpr:
        return _aggregate(op, grouping, body)

    def aggregate_after(self, op: Token, body: _ARGS,
                        grouping: _Grouping | None) -> AggregateExpr:
        return _aggregate(op, grouping, body)


def _grouping_label(token: Token) -> str:
    name = cast(str, token.value) if token.type == "STRING" else str(token)
    if not name or any(0xDC80 <= ord(char) <= 0xDCFF for char in name):
        _fail(f"invalid label name for grouping: {quote(name)}", cast(int, token.start_pos))
    return name


def _modified(expr: Expr, what: str) -> VectorSelector | SubqueryExpr:
    if isinstance(expr, MatrixSelector):
        return expr.selector
    if isinstance(expr, VectorSelector | SubqueryExpr):
        return expr
    _fail(f"{what} must be preceded by an instant vector selector or range vector selector "
          "or a subquery", expr.span.start)


def _with_modifier(expr: Expr, span: Span, **change: Any) -> Expr:
    if isinstance(expr, MatrixSelector):
        return replace(expr, selector=replace(expr.selector, **change), span=span)
    if isinstance(expr, VectorSelector | SubqueryExpr):
        return replace(expr, **change, span=span)
    raise AssertionError(f"no modifiers on {type(expr).__name__}")


def _aggregate(op_token: Token, grouping: _Grouping | None, body: _ARGS) -> AggregateExpr:
    args, right = body
    op = AggregateOp(str(op_token).lower())
    start = cast(int, op_token.start_pos)
    if not args:
        _fail("no arguments for aggregate expression provided", start)
    wanted = 2 if op.has_param else 1
    if len(args) != wanted:
        _fail("wrong number of arguments for aggregate expression provided, expected "
              f"{wanted}, got {len(args)}", start)
    expr = args[-1]
    _expect(expr, ValueType.VECTOR, "aggregation expression")
    param = args[0] if op.has_param else None
    if param is not None:
        _expect(param, cast(ValueType, op.param_type), "aggregation parameter")
    without, labels = (grouping[0], grouping[1]) if grouping else (False, ())
    return AggregateExpr(op, expr, param, labels, without, span=Span(start, _end(right)))


# -- the parser ------------------------------------------------------------------------

class _PromQLLexer(Lexer):
    __future_interface__ = 2

    def __init__(self, conf: Any) -> None:
        pass

    def lex(self, lexer_state: LexerState, parser_state: Any) -> Iterator[Token]:
        return _tokens(str(lexer_state.text.text))


_LOCK = threading.Lock()
_PARSER: Lark | None = None


def _lark() -> Lark:
    global _PARSER
    if _PARSER is None:
        with _LOCK:
            if _PARSER is None:
                _PARSER = Lark(GRAMMAR, parser="lalr", lexer=_PromQLLexer,
                               transformer=_Builder(), maybe_placeholders=True)
    return _PARSER


_UNSUPPORTED_TOKENS = {"FILL": "fill modifier", "FILL_LEFT": "fill modifier",
                       "FILL_RIGHT": "fill modifier", "ANCHORED": "anchored modifier",
                       "SMOOTHED": "smoothed modifier", "TRIM_UPPER": "trim operator </",
                       "TRIM_LOWER": "trim operator >/"}
_DURATION_EXPRESSION_TOKENS = {"LEFT_PAREN", "ADD", "SUB", "MUL", "DIV", "MOD", "POW",
                               *_PREPROCESSORS}


def _unexpected(text: str, error: UnexpectedToken) -> PromQLError:
    token = cast(Token, error.token)
    position = len(text) if token.type == "$END" else cast(int, token.start_pos)
    construct = _UNSUPPORTED_TOKENS.get(token.type)
    if construct is None and token.type in _DURATION_EXPRESSION_TOKENS:
        previous, in_bracket = _context(text, position)
        if previous in ("FILL", "FILL_LEFT", "FILL_RIGHT"):  # lexed as keywords before "("
            construct = "fill modifier"
        elif in_bracket or previous == "OFFSET" or (previous == "SUB"
                                                    and token.type != "SUB"):
            construct = "duration expression"
    if construct is not None:
        return PromQLUnsupported(construct, position, text)
    message = f"unexpected {_describe(token)}"
    expected = sorted(_describe(Token(name, _EXPECTED_TEXT.get(name, name.lower())))
                      for name in error.expected if name != "$END")
    if "$END" in error.expected:
        expected.append("end of input")
    if 0 < len(expected) <= 3:
        message += f", expected {' or '.join(expected)}"
    return PromQLSyntaxError(message, position, text)


_EXPECTED_TEXT = {**{kind: text for text, kind in _PUNCTUATION.items()},
                  **{kind: text for text, kind in _OPERATORS.items()}}


def _context(text: str, position: int) -> tuple[str, bool]:
    """The kind of the token before ``position`` and whether ``position`` is inside
    ``[...]`` (read again from the text: only on the error path)."""
    previous, depth = "", False
    try:
        for token in _tokens(text):
            if cast(int, token.start_pos) >= position:
                break
            if token.type == "LEFT_BRACKET":
                depth = True
            elif token.type == "RIGHT_BRACKET":
                depth = False
            previous = token.type
    except _Fail:
        pass
    return previous, depth


def parse(text: str) -> Expr:
    """Parse a PromQL expression. Raises :class:`PromQLSyntaxError` for invalid input
    and :class:`PromQLUnsupported` for valid constructs this implementation lacks."""
    try:
        return cast(Expr, _lark().parse(text))
    except _Fail as error:
        if error.unsupported:
            raise PromQLUnsupported(error.message, error.position, text) from None
        raise PromQLSyntaxError(error.message, error.position, text) from None
    except UnexpectedToken as error:
        if not text.strip() or (error.token.type == "$END" and _only_comments(text)):
            raise PromQLSyntaxError("no expression found in input", 0, text) from None
        raise _unexpected(text, error) from None
    except UnexpectedInput as error:
        position = error.pos_in_stream or 0
        raise PromQLSyntaxError(f"unexpected input: {error}", position, text) from None


def _only_comments(text: str) -> bool:
    try:
        return next(_tokens(text), None) is None
    except _Fail:
        return False
