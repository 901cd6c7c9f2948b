"""The templates of alerting rules' labels and annotations: the part of Go's
``text/template`` Prometheus users write, interpreted safely (a parser and a tree walker;
nothing is ever evaluated as Python).

What a template sees, as in Prometheus: the data ``.`` with ``.Labels`` (the alert's
sample's labels), ``.Value`` (its value, a float64), ``.ExternalLabels`` and
``.ExternalURL``, and the variables ``$labels``, ``$value``, ``$externalLabels``,
``$externalURL`` and ``$`` (the data). A label that is not there reads as ``""`` (Go's
``missingkey=zero``, which Prometheus sets).

Supported:

- text and actions ``{{ pipeline }}``, trim markers ``{{-`` and ``-}}``, comments
  ``{{/* ... */}}``;
- pipelines of commands joined by ``|`` (the previous result is the last argument of the
  next command), parenthesised pipelines, variables (``{{ $x := ... }}``, ``$x = ...``),
  fields (``.Labels.instance``, ``$labels.instance``), strings (``"..."`` with Go escapes,
  raw `` `...` ``), numbers, ``true``, ``false``, ``nil``;
- ``{{ if }}`` / ``{{ else if }}`` / ``{{ else }}`` / ``{{ end }}``, ``{{ with }}`` and
  ``{{ range }}`` (over a map in key order, a list or an integer; ``$k, $v :=``);
- Go's functions ``and or not len index print printf println eq ne lt le gt ge html js
  urlquery`` and Prometheus's ``humanize humanize1024 humanizeDuration
  humanizePercentage humanizeTimestamp title toUpper toLower reReplaceAll match
  stripPort stripDomain parseDuration safeHtml externalURL pathPrefix graphLink
  tableLink``.

Not supported, with an error naming it when the template is parsed: ``query`` and the
functions that read its results (``first label value strvalue sortByLabel``),
``{{ define }}``, ``{{ template }}``, ``{{ block }}``, ``{{ break }}``, ``{{ continue }}``,
``call``, ``slice``, ``args``, ``tmpl``, ``toTime``. Unlike Go, ``eq``/``lt``/... compare
an integer and a float by value (``gt $value 5`` works) instead of failing.
"""

from __future__ import annotations

import ast
import html
import ipaddress
import math
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Final, TypeAlias

from ..promql.parser import parse_duration
from ..re2 import translate_re2
from .gofmt import format_g, format_value, sprintf, type_name

PREDEFINED: Final = ("$", "$labels", "$value", "$externalLabels", "$externalURL")
KEYWORDS: Final = frozenset({"if", "else", "end", "range", "with", "define", "template",
                             "block", "break", "continue", "nil", "true", "false"})
UNSUPPORTED_ACTIONS: Final = {
    "define": "{{define}} is not supported", "template": "{{template}} is not supported",
    "block": "{{block}} is not supported", "break": "{{break}} is not supported",
    "continue": "{{continue}} is not supported"}
UNSUPPORTED_FUNCTIONS: Final = {
    **{name: "queries from templates are not supported"
       for name in ("query", "first", "label", "value", "strvalue", "sortByLabel")},
    "call": "call is not supported", "slice": "slice is not supported",
    "args": "args is not supported", "tmpl": "tmpl is not supported",
    "toTime": "time values are not supported", "toDuration": "time values are not supported",
    "now": "time values are not supported"}
MAX_OUTPUT_CHARS: Final = 1 << 20  # a template's expansion (a range over a huge map...)
_SPACE = " \t\r\n"

Value: TypeAlias = object  # str | float | int | bool | None | Mapping | list


class TemplateError(Exception):
    """A template that does not parse, or fails while it is expanded; ``line`` and
    ``column`` (1-based) say where in the template."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        self.message = message
        self.line = line
        self.column = column
        where = f"{line}:{column}: " if line else ""
        super().__init__(f"template: {where}{message}")


@dataclass(frozen=True)
class TemplateData:
    """What ``.`` is: the alert's sample labels and value, the external labels and URL."""

    labels: Mapping[str, str] = field(default_factory=dict)
    value: float = 0.0
    external_labels: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""


class _Root:
    """The data ``.`` as a Go struct: its fields are fixed (an unknown one is an error)."""

    FIELDS: Final = ("Labels", "Value", "ExternalLabels", "ExternalURL")

    def __init__(self, data: TemplateData) -> None:
        self.data = data

    def field(self, name: str) -> Value:
        if name == "Labels":
            return dict(self.data.labels)
        if name == "Value":
            return self.data.value
        if name == "ExternalLabels":
            return dict(self.data.external_labels)
        if name == "ExternalURL":
            return self.data.external_url
        raise KeyError(name)


# ---- lexing -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Tok:
    kind: str   # SPACE IDENT FIELD VAR DOT STRING NUMBER PIPE LPAREN RPAREN DECLARE ASSIGN COMMA
    text: str
    pos: int
    value: object = None


@dataclass(frozen=True)
class _TextItem:
    text: str
    pos: int


@dataclass(frozen=True)
class _ActionItem:
    tokens: tuple[_Tok, ...]
    pos: int


_NUMBER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|"
                     r"(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VARIABLE = re.compile(r"\$[A-Za-z0-9_]*")


def _line_col(text: str, pos: int) -> tuple[int, int]:
    before = text[:pos]
    return before.count("\n") + 1, pos - (before.rfind("\n") + 1) + 1


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text

    def fail(self, message: str, pos: int) -> TemplateError:
        return TemplateError(message, *_line_col(self.text, pos))

    def items(self) -> list[_TextItem | _ActionItem]:
        text, i, n = self.text, 0, len(self.text)
        items: list[_TextItem | _ActionItem] = []
        while i < n:
            start = text.find("{{", i)
            if start < 0:
                items.append(_TextItem(text[i:], i))
                break
            j = start + 2
            chunk = text[i:start]
            if text.startswith("-", j) and j + 1 < n and text[j + 1] in _SPACE:
                chunk = chunk.rstrip(_SPACE)
                j += 2
            if chunk:
                items.append(_TextItem(chunk, i))
            if text.startswith("/*", j):
                end = text.find("*/", j + 2)
                if end < 0:
                    raise self.fail("unclosed comment", start)
                after = end + 2
                if text.startswith(" -}}", after):
                    i = after + 4
                    trim = True
                elif text.startswith("}}", after):
                    i, trim = after + 2, False
                else:
                    raise self.fail("comment ends before closing delimiter", after)
            else:
                tokens, i, trim = self.action(j, start)
                items.append(_ActionItem(tokens, start))
            if trim:
                while i < n and text[i] in _SPACE:
                    i += 1
        return items

    def action(self, i: int, start: int) -> tuple[tuple[_Tok, ...], int, bool]:
        """The tokens of the action from ``i``; the position after its ``}}`` and whether
        it ended with a trim marker."""
        text, n = self.text, len(self.text)
        tokens: list[_Tok] = []
        while True:
            if i >= n:
                raise self.fail("unclosed action", start)
            char = text[i]
            if text.startswith("}}", i):
                return tuple(tokens), i + 2, False
            if char in _SPACE:
                j = i
                while j < n and text[j] in _SPACE:
                    j += 1
                if text.startswith("-}}", j):
                    return tuple(tokens), j + 3, True
                tokens.append(_Tok("SPACE", text[i:j], i))
                i = j
            elif char == "|":
                tokens.append(_Tok("PIPE", char, i))
                i += 1
            elif char == "(":
                tokens.append(_Tok("LPAREN", char, i))
                i += 1
            elif char == ")":
                tokens.append(_Tok("RPAREN", char, i))
                i += 1
            elif char == ",":
                tokens.append(_Tok("COMMA", char, i))
                i += 1
            elif text.startswith(":=", i):
                tokens.append(_Tok("DECLARE", ":=", i))
                i += 2
            elif char == "=":
                tokens.append(_Tok("ASSIGN", char, i))
                i += 1
            elif char == '"':
                j = i + 1
                while j < n and text[j] != '"':
                    if text[j] == "\n":
                        break
                    j += 2 if text[j] == "\\" else 1
                if j >= n or text[j] != '"':
                    raise self.fail("unterminated quoted string", i)
                raw = text[i:j + 1]
                try:
                    value = ast.literal_eval(raw)
                except (ValueError, SyntaxError):
                    raise self.fail(f"invalid syntax: {raw}", i) from None
                if not isinstance(value, str):
                    raise self.fail(f"invalid syntax: {raw}", i)
                tokens.append(_Tok("STRING", raw, i, value))
                i = j + 1
            elif char == "`":
                j = text.find("`", i + 1)
                if j < 0:
                    raise self.fail("unterminated raw quoted string", i)
                tokens.append(_Tok("STRING", text[i:j + 1], i, text[i + 1:j]))
                i = j + 1
            elif char == "'":
                j = text.find("'", i + 1)
                raw = text[i:j + 1] if j > 0 else ""
                try:
                    rune = ast.literal_eval(raw) if raw else None
                except (ValueError, SyntaxError):
                    rune = None
                if not isinstance(rune, str) or len(rune) != 1:
                    raise self.fail("invalid character constant", i)
                tokens.append(_Tok("NUMBER", raw, i, ord(rune)))
                i = j + 1
            elif char == "$":
                match = _VARIABLE.match(text, i)
                assert match is not None
                tokens.append(_Tok("VAR", match.group(), i))
                i = match.end()
            elif char == "." and i + 1 < n and (text[i + 1].isalpha() or text[i + 1] == "_"):
                ident = _IDENT.match(text, i + 1)
                assert ident is not None
                tokens.append(_Tok("FIELD", ident.group(), i))
                i = ident.end()
            elif char.isdigit() or (char in "+-." and i + 1 < n and
                                    (text[i + 1].isdigit() or text[i + 1] == ".")):
                number = _NUMBER.match(text, i)
                if number is None or not number.group().strip("+-."):
                    raise self.fail(f"bad number syntax: {text[i:i + 8]!r}", i)
                tokens.append(_Tok("NUMBER", number.group(), i, _number(number.group())))
                i = number.end()
            elif char == ".":
                tokens.append(_Tok("DOT", char, i))
                i += 1
            elif char.isalpha() or char == "_":
                ident = _IDENT.match(text, i)
                assert ident is not None
                tokens.append(_Tok("IDENT", ident.group(), i))
                i = ident.end()
            else:
                raise self.fail(f"unrecognized character in action: U+{ord(char):04X} "
                                f"{char!r}", i)


def _number(text: str) -> int | float:
    """Go's untyped constant as a template passes it: an int unless it has a point or an
    exponent (``1e3`` is a float64)."""
    clean = text.replace("_", "")
    lowered = clean.lower().lstrip("+-")
    if lowered.startswith(("0x", "0o", "0b")):
        return int(clean, 0)
    if any(c in clean for c in ".eE"):
        return float(clean)
    return int(clean, 10)


# ---- the tree ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Func:
    name: str
    pos: int


@dataclass(frozen=True)
class _Dot:
    pos: int


@dataclass(frozen=True)
class _Fields:
    """``.A.b`` (``base`` None: from dot), ``$x.a``, ``(pipeline).a``."""

    base: _Var | _Pipe | None
    names: tuple[str, ...]
    pos: int


@dataclass(frozen=True)
class _Var:
    name: str
    pos: int


@dataclass(frozen=True)
class _Literal:
    value: object
    pos: int


_Arg: TypeAlias = "_Func | _Dot | _Fields | _Var | _Literal | _Pipe"


@dataclass(frozen=True)
class _Command:
    args: tuple[_Arg, ...]
    pos: int


@dataclass(frozen=True)
class _Pipe:
    decl: tuple[str, ...]
    assign: bool
    commands: tuple[_Command, ...]
    pos: int


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _Action:
    pipe: _Pipe


@dataclass(frozen=True)
class _Control:
    kind: str  # if | with | range
    pipe: _Pipe
    body: tuple[_Node, ...]
    otherwise: tuple[_Node, ...]
    pos: int


_Node: TypeAlias = "_Text | _Action | _Control"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.items = _Lexer(text).items()
        self.at = 0
        self.scopes: list[list[str]] = [list(PREDEFINED)]

    def fail(self, message: str, pos: int) -> TemplateError:
        return TemplateError(message, *_line_col(self.text, pos))

    def parse(self) -> tuple[_Node, ...]:
        nodes, end = self.nodes()
        if end is not None:
            word, item = end
            raise self.fail(f"unexpected {{{{{word}}}}}", item.pos)
        return nodes

    def nodes(self) -> tuple[tuple[_Node, ...], tuple[str, _ActionItem] | None]:
        """Nodes up to an ``else`` or ``end`` action (returned with it) or the end."""
        out: list[_Node] = []
        while self.at < len(self.items):
            item = self.items[self.at]
            self.at += 1
            if isinstance(item, _TextItem):
                out.append(_Text(item.text))
                continue
            tokens = _strip(item.tokens)
            if not tokens:
                raise self.fail("missing value for command", item.pos)
            first = tokens[0]
            if first.kind == "IDENT" and first.text in ("else", "end"):
                return tuple(out), (first.text, item)
            if first.kind == "IDENT" and first.text in UNSUPPORTED_ACTIONS:
                raise self.fail(UNSUPPORTED_ACTIONS[first.text], first.pos)
            if first.kind == "IDENT" and first.text in ("if", "with", "range"):
                out.append(self.control(first.text, tokens[1:], first.pos))
                continue
            out.append(_Action(self.pipe(tokens, item.pos, declare=True)))
        return tuple(out), None

    def control(self, kind: str, tokens: Sequence[_Tok], pos: int) -> _Control:
        self.scopes.append([])
        pipe = self.pipe(_strip(tokens), pos, declare=True, range_vars=kind == "range")
        if not pipe.commands:
            raise self.fail(f"missing value for {kind}", pos)
        body, end = self.nodes()
        self.scopes.pop()
        otherwise: tuple[_Node, ...] = ()
        if end is None:
            raise self.fail(f"unexpected EOF: {{{{{kind}}}}} has no {{{{end}}}}", pos)
        word, item = end
        if word == "else":
            rest = _strip(_strip(item.tokens)[1:])
            if rest and rest[0].kind == "IDENT" and rest[0].text in ("if", "with"):
                if kind == "range":
                    raise self.fail("{{else if}} after {{range}}", rest[0].pos)
                otherwise = (self.control(rest[0].text, rest[1:], rest[0].pos),)
            elif rest:
                raise self.fail(f"unexpected {rest[0].text!r} in else", rest[0].pos)
            else:
                self.scopes.append([])
                otherwise, end = self.nodes()
                self.scopes.pop()
                if end is None:
                    raise self.fail(f"unexpected EOF: {{{{{kind}}}}} has no {{{{end}}}}",
                                    pos)
                if end[0] != "end":
                    raise self.fail("expected end; found {{else}}", end[1].pos)
                extra = _strip(_strip(end[1].tokens)[1:])
                if extra:
                    raise self.fail(f"unexpected {extra[0].text!r} in end", extra[0].pos)
        else:
            extra = _strip(_strip(item.tokens)[1:])
            if extra:
                raise self.fail(f"unexpected {extra[0].text!r} in end", extra[0].pos)
        return _Control(kind, pipe, body, otherwise, pos)

    def defined(self, name: str) -> bool:
        return any(name in scope for scope in self.scopes)

    def pipe(self, tokens: Sequence[_Tok], pos: int, *, declare: bool = False,
             range_vars: bool = False, nested: bool = False) -> _Pipe:
        toks = list(tokens)
        i = _skip(toks, 0)
        decl: list[str] = []
        assign = False
        if declare and i < len(toks) and toks[i].kind == "VAR":
            j = _skip(toks, i + 1)
            names = [toks[i]]
            if range_vars and j < len(toks) and toks[j].kind == "COMMA":
                k = _skip(toks, j + 1)
                if k < len(toks) and toks[k].kind == "VAR":
                    names.append(toks[k])
                    j = _skip(toks, k + 1)
            if j < len(toks) and toks[j].kind in ("DECLARE", "ASSIGN"):
                assign = toks[j].kind == "ASSIGN"
                if assign and len(names) > 1:
                    raise self.fail("too many declarations in assignment", toks[j].pos)
                for name in names:
                    if assign and not self.defined(name.text):
                        raise self.fail(f'undefined variable "{name.text}"', name.pos)
                decl = [n.text for n in names]
                i = _skip(toks, j + 1)
        commands: list[_Command] = []
        while i < len(toks):
            command, i = self.command(toks, i)
            commands.append(command)
            i = _skip(toks, i)
            if i < len(toks):
                if toks[i].kind != "PIPE":
                    raise self.fail(f"unexpected {toks[i].text!r} in command", toks[i].pos)
                i = _skip(toks, i + 1)
                if i >= len(toks):
                    raise self.fail("missing command after |", toks[-1].pos)
        if not commands and not nested and decl:
            raise self.fail("missing value for command", pos)
        if not commands and nested:
            raise self.fail("missing value for parenthesized pipeline", pos)
        if decl and not assign:
            self.scopes[-1].extend(decl)
        return _Pipe(tuple(decl), assign, tuple(commands), pos)

    def command(self, toks: list[_Tok], i: int) -> tuple[_Command, int]:
        args: list[_Arg] = []
        start = toks[i].pos
        while True:
            i = _skip(toks, i)
            if i >= len(toks) or toks[i].kind == "PIPE":
                break
            arg, i = self.operand(toks, i)
            args.append(arg)
            if i < len(toks) and toks[i].kind not in ("SPACE", "PIPE"):
                raise self.fail(f"unexpected {toks[i].text!r} in operand (missing space?)",
                                toks[i].pos)
        if not args:
            raise self.fail("empty command", start)
        if isinstance(args[0], _Literal) and args[0].value is None and len(args) == 1:
            raise self.fail("nil is not a command", args[0].pos)
        return _Command(tuple(args), start), i

    def operand(self, toks: list[_Tok], i: int) -> tuple[_Arg, int]:
        tok = toks[i]
        base: _Arg
        if tok.kind == "IDENT":
            i += 1
            if tok.text in ("true", "false"):
                return _Literal(tok.text == "true", tok.pos), i
            if tok.text == "nil":
                return _Literal(None, tok.pos), i
            if tok.text in KEYWORDS:
                raise self.fail(f"unexpected <{tok.text}> in command", tok.pos)
            if tok.text in UNSUPPORTED_FUNCTIONS:
                raise self.fail(f'function "{tok.text}" is not supported: '
                                f"{UNSUPPORTED_FUNCTIONS[tok.text]}", tok.pos)
            if tok.text not in FUNCTIONS:
                raise self.fail(f'function "{tok.text}" not defined', tok.pos)
            if i < len(toks) and toks[i].kind == "FIELD":
                raise self.fail(f"unexpected {toks[i].text!r} after function", toks[i].pos)
            return _Func(tok.text, tok.pos), i
        if tok.kind in ("STRING", "NUMBER"):
            i += 1
            if i < len(toks) and toks[i].kind == "FIELD":
                raise self.fail(f"unexpected {toks[i].text!r} after {tok.text}", toks[i].pos)
            return _Literal(tok.value, tok.pos), i
        if tok.kind == "DOT":
            return _Dot(tok.pos), i + 1
        if tok.kind == "FIELD":
            names, i = _fields(toks, i)
            return _Fields(None, names, tok.pos), i
        if tok.kind == "VAR":
            if not self.defined(tok.text):
                raise self.fail(f'undefined variable "{tok.text}"', tok.pos)
            base = _Var(tok.text, tok.pos)
            if i + 1 < len(toks) and toks[i + 1].kind == "FIELD":
                names, i = _fields(toks, i + 1)
                return _Fields(base, names, tok.pos), i
            return base, i + 1
        if tok.kind == "LPAREN":
            depth, j = 0, i
            while j < len(toks):
                if toks[j].kind == "LPAREN":
                    depth += 1
                elif toks[j].kind == "RPAREN":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j >= len(toks):
                raise self.fail("unclosed left paren", tok.pos)
            inner = self.pipe(toks[i + 1:j], tok.pos, declare=False, nested=True)
            j += 1
            if j < len(toks) and toks[j].kind == "FIELD":
                names, j = _fields(toks, j)
                return _Fields(inner, names, tok.pos), j
            return inner, j
        if tok.kind == "RPAREN":
            raise self.fail("unexpected right paren", tok.pos)
        raise self.fail(f"unexpected {tok.text!r} in operand", tok.pos)


def _strip(tokens: Sequence[_Tok]) -> list[_Tok]:
    out = list(tokens)
    while out and out[0].kind == "SPACE":
        out.pop(0)
    while out and out[-1].kind == "SPACE":
        out.pop()
    return out


def _skip(toks: Sequence[_Tok], i: int) -> int:
    while i < len(toks) and toks[i].kind == "SPACE":
        i += 1
    return i


def _fields(toks: Sequence[_Tok], i: int) -> tuple[tuple[str, ...], int]:
    names = []
    while i < len(toks) and toks[i].kind == "FIELD":
        names.append(toks[i].text)
        i += 1
    return tuple(names), i


# ---- the functions ----------------------------------------------------------------------

class _CallError(Exception):
    """A function's failure (``error calling NAME: ...``)."""


def truth(value: Value) -> bool:
    """Go templates' truth: false, 0, nil and empty strings, maps and lists are false."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, (str, Mapping, list, tuple)):
        return len(value) > 0
    return True


def to_float(value: Value) -> float:
    """Prometheus's ``convertToFloat``: numbers and numeric strings."""
    if isinstance(value, bool):
        raise _CallError("can't convert bool to float")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if text.lower().lstrip("+-").startswith("0x"):
                return float.fromhex(text)
            if text.lower().lstrip("+-") in ("inf", "infinity", "nan"):
                return float(text)
            if not re.fullmatch(r"[+-]?(\d[\d_]*\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
                raise ValueError(text)
            return float(text.replace("_", ""))
        except ValueError:
            raise _CallError(f'strconv.ParseFloat: parsing "{value}": invalid syntax'
                             ) from None
    raise _CallError(f"can't convert {type_name(value)} to float")


def _g4(v: float) -> str:
    return format_g(v, 4)


def humanize(value: Value) -> str:
    v = to_float(value)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    if abs(v) >= 1:
        prefix = ""
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
        return _g4(v) + prefix
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return _g4(v) + prefix


def humanize1024(value: Value) -> str:
    v = to_float(value)
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix, v = p, v / 1024
    return _g4(v) + prefix


def humanize_duration(value: Value) -> str:
    v = to_float(value)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    if v == 0:
        return _g4(v) + "s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        whole = int(v)
        seconds, minutes = whole % 60, whole // 60 % 60
        hours, days = whole // 3600 % 24, whole // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{_g4(v)}{prefix}s"


def humanize_percentage(value: Value) -> str:
    return _g4(to_float(value) * 100) + "%"


def humanize_timestamp(value: Value) -> str:
    """Go's ``time.Time.String()`` of the Unix time, in UTC."""
    v = to_float(value)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    seconds, nanos = divmod(int(v * 1e9), 1_000_000_000)  # Prometheus's floatToTime
    try:
        when = datetime.fromtimestamp(seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise _CallError(f"{format_g(v)} is out of range for a timestamp") from None
    fraction = f".{nanos:09d}".rstrip("0") if nanos else ""
    return when.strftime("%Y-%m-%d %H:%M:%S") + fraction + " +0000 UTC"


def title(text: str) -> str:
    """Go's ``strings.Title``: each word's first letter upper-cased."""
    out, separated = [], True
    for char in text:
        out.append(char.upper() if separated and char.isalpha() else char)
        separated = not (char.isalnum() or char == "_")
    return "".join(out)


def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(translate_re2(pattern))
    except re.error as error:
        raise _CallError(f"error parsing regexp: {error}: `{pattern}`") from None


def _expand(template: str, match: re.Match[str]) -> str:
    """Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``."""
    out, i = [], 0
    while i < len(template):
        char = template[i]
        if char != "$" or i + 1 >= len(template):
            out.append(char)
            i += 1
            continue
        if template[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        if template[i + 1] == "{":
            end = template.find("}", i + 2)
            name = template[i + 2:end] if end > 0 else ""
            if end < 0 or not re.fullmatch(r"[A-Za-z0-9_]+", name):
                out.append(char)
                i += 1
                continue
            i = end + 1
        else:
            named = re.compile(r"[A-Za-z0-9_]+").match(template, i + 1)
            if named is None:
                out.append(char)
                i += 1
                continue
            name, i = named.group(), named.end()
        try:
            group = match.group(int(name) if name.isdigit() else name)
        except IndexError:  # no such group: Go expands it to nothing
            group = None
        out.append(group or "")
    return "".join(out)


def re_replace_all(pattern: str, replacement: str, text: str) -> str:
    regex = _regex(pattern)
    return regex.sub(lambda m: _expand(replacement, m), text)


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport.startswith(":", end + 1):
            return None
        return hostport[1:end], hostport[end + 2:]
    if hostport.count(":") != 1:
        return None
    host, _, port = hostport.partition(":")
    return host, port


def strip_port(hostport: str) -> str:
    split = _split_host_port(hostport)
    return hostport if split is None else split[0]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def strip_domain(hostport: str) -> str:
    split = _split_host_port(hostport)
    host, port = split if split is not None else (hostport, "")
    if _is_ip(host):
        return hostport
    host = host.split(".")[0]
    if port:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return host


def _compare(name: str, a: Value, b: Value) -> int:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        if isinstance(a, bool) and isinstance(b, bool) and name in ("eq", "ne"):
            return 0 if a == b else 1
        raise _CallError("incompatible types for comparison")
    if isinstance(a, numbers) and isinstance(b, numbers):
        return (a > b) - (a < b)
    if isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    if a is None or b is None:
        if name in ("eq", "ne"):
            return 0 if a is b else 1
        raise _CallError("invalid type for comparison")
    raise _CallError("incompatible types for comparison")


def _eq(a: Value, *others: Value) -> bool:
    if not others:
        raise _CallError("missing argument for comparison")
    return any(_compare("eq", a, b) == 0 for b in others)


def _print(*args: Value) -> str:
    """``fmt.Sprint``: a space between operands when neither is a string."""
    out = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(format_value(arg))
    return "".join(out)


def _len(value: Value) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, (Mapping, list, tuple)):
        return len(value)
    raise _CallError(f"len of type {type_name(value)}")


def _index(value: Value, *keys: Value) -> Value:
    for key in keys:
        if isinstance(value, Mapping):
            if not isinstance(key, str):
                raise _CallError(f"value has type {type_name(key)}; should be string")
            value = value.get(key, "")
        elif isinstance(value, (list, tuple, str)):
            if not isinstance(key, int) or isinstance(key, bool):
                raise _CallError(f"cannot index slice/array with type {type_name(key)}")
            if not 0 <= key < len(value):
                raise _CallError(f"index out of range: {key}")
            value = value[key]
        else:
            raise _CallError(f"can't index item of type {type_name(value)}")
    return value


def _js(*args: Value) -> str:
    out = []
    for char in _print(*args):
        if char in "\\'\"":
            out.append("\\" + char)
        elif char in "<>&=" or ord(char) < 0x20:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return "".join(out)


def _parse_duration(text: str) -> float:
    try:
        return parse_duration(text) / 1000
    except ValueError as error:
        raise _CallError(str(error)) from None


def _str(value: Value, function: str) -> str:
    if not isinstance(value, str):
        raise _CallError(f"wrong type for value; expected string; got {type_name(value)}")
    return value


@dataclass(frozen=True)
class _Function:
    call: Callable[..., Value]
    arity: int | None  # None: variadic
    needs_data: bool = False


def _strings(fn: Callable[..., Value], name: str) -> Callable[..., Value]:
    return lambda *args: fn(*(_str(a, name) for a in args))


FUNCTIONS: Final[Mapping[str, _Function]] = {
    "and": _Function(lambda *a: next((v for v in a if not truth(v)), a[-1]), None),
    "or": _Function(lambda *a: next((v for v in a if truth(v)), a[-1]), None),
    "not": _Function(lambda a: not truth(a), 1),
    "len": _Function(_len, 1),
    "index": _Function(_index, None),
    "print": _Function(_print, None),
    "println": _Function(lambda *a: " ".join(format_value(v) for v in a) + "\n", None),
    "printf": _Function(lambda fmt, *a: sprintf(_str(fmt, "printf"), a), None),
    "eq": _Function(_eq, None),
    "ne": _Function(lambda a, b: _compare("ne", a, b) != 0, 2),
    "lt": _Function(lambda a, b: _compare("lt", a, b) < 0, 2),
    "le": _Function(lambda a, b: _compare("le", a, b) <= 0, 2),
    "gt": _Function(lambda a, b: _compare("gt", a, b) > 0, 2),
    "ge": _Function(lambda a, b: _compare("ge", a, b) >= 0, 2),
    "html": _Function(lambda *a: html.escape(_print(*a)), None),
    "js": _Function(_js, None),
    "urlquery": _Function(lambda *a: urllib.parse.quote_plus(_print(*a)), None),
    "humanize": _Function(humanize, 1),
    "humanize1024": _Function(humanize1024, 1),
    "humanizeDuration": _Function(humanize_duration, 1),
    "humanizePercentage": _Function(humanize_percentage, 1),
    "humanizeTimestamp": _Function(humanize_timestamp, 1),
    "title": _Function(_strings(title, "title"), 1),
    "toUpper": _Function(_strings(str.upper, "toUpper"), 1),
    "toLower": _Function(_strings(str.lower, "toLower"), 1),
    "reReplaceAll": _Function(_strings(re_replace_all, "reReplaceAll"), 3),
    "match": _Function(_strings(lambda p, t: _regex(p).search(t) is not None, "match"), 2),
    "stripPort": _Function(_strings(strip_port, "stripPort"), 1),
    "stripDomain": _Function(_strings(strip_domain, "stripDomain"), 1),
    "parseDuration": _Function(_strings(_parse_duration, "parseDuration"), 1),
    "safeHtml": _Function(_strings(lambda s: s, "safeHtml"), 1),
    "externalURL": _Function(lambda data: data.external_url, 0, needs_data=True),
    "pathPrefix": _Function(lambda data: urllib.parse.urlsplit(data.external_url).path,
                            0, needs_data=True),
    "graphLink": _Function(_strings(lambda e: "/graph?g0.expr=" + urllib.parse.quote_plus(e)
                                    + "&g0.tab=0", "graphLink"), 1),
    "tableLink": _Function(_strings(lambda e: "/graph?g0.expr=" + urllib.parse.quote_plus(e)
                                    + "&g0.tab=1", "tableLink"), 1),
}


# ---- expansion --------------------------------------------------------------------------

_NONE: Final = object()  # no value passed down the pipeline


class _Expansion:
    def __init__(self, template: Template, data: TemplateData) -> None:
        self.template = template
        self.data = data
        root = _Root(data)
        self.vars: list[tuple[str, Value]] = [
            ("$", root), ("$labels", dict(data.labels)), ("$value", data.value),
            ("$externalLabels", dict(data.external_labels)),
            ("$externalURL", data.external_url)]
        self.out: list[str] = []
        self.size = 0

    def fail(self, message: str, pos: int) -> TemplateError:
        return TemplateError(message, *_line_col(self.template.text, pos))

    def emit(self, text: str, pos: int) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT_CHARS:
            raise self.fail(f"the expansion is longer than {MAX_OUTPUT_CHARS} characters", pos)
        self.out.append(text)

    def walk(self, nodes: Sequence[_Node], dot: Value) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                self.emit(node.text, 0)
            elif isinstance(node, _Action):
                value = self.pipe(node.pipe, dot)
                if not node.pipe.decl:
                    self.emit("<no value>" if value is None else format_value(value),
                              node.pipe.pos)
            else:
                self.control(node, dot)

    def scoped(self, nodes: Sequence[_Node], dot: Value) -> None:
        mark = len(self.vars)
        try:
            self.walk(nodes, dot)
        finally:
            del self.vars[mark:]

    def control(self, node: _Control, dot: Value) -> None:
        mark = len(self.vars)
        try:
            if node.kind == "range":
                self.range(node, dot)
                return
            value = self.pipe(node.pipe, dot)
            if truth(value):
                self.scoped(node.body, value if node.kind == "with" else dot)
            else:
                self.scoped(node.otherwise, dot)
        finally:
            del self.vars[mark:]

    def range(self, node: _Control, dot: Value) -> None:
        pipe = node.pipe
        value = self.pipe(_Pipe((), False, pipe.commands, pipe.pos), dot)
        items: Iterator[tuple[Value, Value]]
        if isinstance(value, Mapping):
            items = ((k, value[k]) for k in sorted(value, key=str))
        elif isinstance(value, (list, tuple)):
            items = iter(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            items = ((i, i) for i in range(value))
        elif value is None:
            items = iter(())
        else:
            raise self.fail(f"range can't iterate over {format_value(value)}", pipe.pos)
        empty = True
        mark = len(self.vars)
        for key, element in items:
            empty = False
            self.size += 1  # an iteration costs as a character does: loops are bounded
            self.emit("", pipe.pos)
            if len(pipe.decl) == 1:
                self.vars.append((pipe.decl[0], element))
            elif len(pipe.decl) == 2:
                self.vars.extend(((pipe.decl[0], key), (pipe.decl[1], element)))
            self.scoped(node.body, element)
            del self.vars[mark:]
        if empty:
            self.scoped(node.otherwise, dot)

    def pipe(self, pipe: _Pipe, dot: Value) -> Value:
        value: Value = _NONE
        for command in pipe.commands:
            value = self.command(command, dot, value)
        if value is _NONE:
            value = None
        if pipe.decl:
            if pipe.assign:
                self.assign(pipe.decl[0], value, pipe.pos)
            else:
                for name in pipe.decl:
                    self.vars.append((name, value))
        return value

    def assign(self, name: str, value: Value, pos: int) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise self.fail(f"undefined variable: {name}", pos)

    def lookup(self, name: str, pos: int) -> Value:
        for var, value in reversed(self.vars):
            if var == name:
                return value
        raise self.fail(f"undefined variable: {name}", pos)

    def command(self, command: _Command, dot: Value, final: Value) -> Value:
        first = command.args[0]
        if isinstance(first, _Func):
            args = [self.arg(a, dot) for a in command.args[1:]]
            if final is not _NONE:
                args.append(final)
            return self.call(first, args)
        if len(command.args) > 1 or final is not _NONE:
            raise self.fail(f"can't give argument to non-function "
                            f"{self.template.text[first.pos:first.pos + 20].split()[0]}",
                            first.pos)
        return self.arg(first, dot)

    def call(self, func: _Func, args: list[Value]) -> Value:
        function = FUNCTIONS[func.name]
        if function.arity is not None and len(args) != function.arity:
            raise self.fail(f"wrong number of args for {func.name}: want {function.arity} "
                            f"got {len(args)}", func.pos)
        if function.arity is None and not args and func.name not in ("print", "println"):
            raise self.fail(f"wrong number of args for {func.name}: want at least 1 got 0",
                            func.pos)
        try:
            if function.needs_data:
                return function.call(self.data)
            return function.call(*args)
        except _CallError as error:
            raise self.fail(f"error calling {func.name}: {error}", func.pos) from None
        except (ValueError, OverflowError) as error:
            raise self.fail(f"error calling {func.name}: {error}", func.pos) from None

    def arg(self, arg: _Arg, dot: Value) -> Value:
        if isinstance(arg, _Literal):
            return arg.value
        if isinstance(arg, _Dot):
            return dot
        if isinstance(arg, _Var):
            return self.lookup(arg.name, arg.pos)
        if isinstance(arg, _Func):
            return self.call(arg, [])
        if isinstance(arg, _Pipe):
            return self.pipe(arg, dot)
        base: Value
        if arg.base is None:
            base = dot
        elif isinstance(arg.base, _Var):
            base = self.lookup(arg.base.name, arg.base.pos)
        else:
            base = self.pipe(arg.base, dot)
        for name in arg.names:
            base = self.field(base, name, arg.pos)
        return base

    def field(self, value: Value, name: str, pos: int) -> Value:
        if isinstance(value, _Root):
            try:
                return value.field(name)
            except KeyError:
                raise self.fail(f"can't evaluate field {name} (the data has "
                                f"{', '.join(_Root.FIELDS)})", pos) from None
        if isinstance(value, Mapping):
            return value.get(name, "")
        if value is None:
            raise self.fail(f"nil pointer evaluating interface {{}}.{name}", pos)
        raise self.fail(f"can't evaluate field {name} in type {type_name(value)}", pos)


class Template:
    """A parsed template: ``Template(text)`` raises :class:`TemplateError` when the text
    does not parse (an unknown function, an undefined variable, an unclosed action...);
    :meth:`expand` raises it when an expansion fails."""

    __slots__ = ("text", "_nodes", "_constant")

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self._nodes = _Parser(text).parse()
        except RecursionError:
            raise TemplateError("nested too deeply") from None
        self._constant = text if "{{" not in text else None

    def expand(self, data: TemplateData) -> str:
        if self._constant is not None:
            return self._constant
        expansion = _Expansion(self, data)
        expansion.walk(self._nodes, _Root(data))
        return "".join(expansion.out)

    def expand_or_error(self, data: TemplateData) -> str:
        """Prometheus's way with a failing expansion: the text becomes
        ``<error expanding template: ...>``."""
        try:
            return self.expand(data)
        except TemplateError as error:
            return f"<error expanding template: {error}>"
        except RecursionError:
            return "<error expanding template: template: nested too deeply>"

    def __repr__(self) -> str:
        return f"Template({self.text!r})"
