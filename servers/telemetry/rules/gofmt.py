"""Go's number and value formatting, which rule templates and Prometheus's JSON rely on.

- :func:`format_g` is ``strconv.FormatFloat(v, 'g', prec, 64)`` as ``fmt`` prints it
  (``%v`` and ``%g`` of a float64: the shortest digits, ``1e+06`` from a million on);
- :func:`format_e` is ``FormatFloat(v, 'e', -1, 64)`` (the alerts API's ``"1e+00"``);
- :func:`format_value` is ``fmt.Sprint(v)`` of the values a template handles;
- :func:`sprintf` is ``fmt.Sprintf`` for the verbs templates use (``%s %v %d %f %e %g
  %x %q %t %c %%``, flags ``+ - # 0`` and space, widths and precisions), including Go's
  ``%!d(float64=1.5)`` for a value of the wrong type and ``%!v(MISSING)``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal

_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?(.)", re.DOTALL)


def _shortest(x: float) -> tuple[str, int]:
    """The shortest decimal digits of ``abs(x)`` (x finite, not 0) without trailing zeros,
    and the position of the decimal point (``digits * 10 ** (point - len(digits))``)."""
    _sign, digits, exponent = Decimal(repr(abs(x))).as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    point = len(text) + exponent
    return text.rstrip("0") or "0", point


def _special(x: float) -> str | None:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return None


def _exponent(exp: int) -> str:
    return f"e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def format_e(x: float) -> str:
    """``strconv.FormatFloat(x, 'e', -1, 64)``: ``1e+00``, ``2.5e-03``."""
    special = _special(x)
    if special is not None:
        return special
    if x == 0:
        return ("-" if math.copysign(1, x) < 0 else "") + "0e+00"
    digits, point = _shortest(x)
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return ("-" if x < 0 else "") + mantissa + _exponent(point - 1)


def format_g(x: float, precision: int = -1) -> str:
    """``strconv.FormatFloat(x, 'g', precision, 64)`` as ``fmt`` prints it (``-1``: the
    shortest digits that read back as ``x``, the exponent form from 1e+06 and below
    1e-04, as Go decides for the shortest form)."""
    special = _special(x)
    if special is not None:
        return special
    if precision >= 0:
        return f"%.{precision}g" % x  # C's rules, which Go's follow for a given precision
    if x == 0:
        return "-0" if math.copysign(1, x) < 0 else "0"
    digits, point = _shortest(x)
    sign = "-" if x < 0 else ""
    exp = point - 1
    if exp < -4 or exp >= 6:  # Go: "if precision was the shortest possible, use 6"
        return sign + digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + _exponent(exp)
    if point <= 0:
        return sign + "0." + "0" * -point + digits
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return sign + digits[:point] + "." + digits[point:]


def type_name(value: object) -> str:
    """Go's name for a template value's type, as ``%!d(float64=1.5)`` shows it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map[string]string"
    if isinstance(value, (list, tuple)):
        return "[]interface {}"
    if value is None:
        return "<nil>"
    return type(value).__name__


def format_value(value: object) -> str:
    """``fmt.Sprint(value)``: floats in their shortest form, maps as ``map[a:1 b:2]``
    (keys sorted), lists as ``[a b]``, nil as ``<nil>``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_g(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    if value is None:
        return "<nil>"
    if isinstance(value, Mapping):
        inner = " ".join(f"{format_value(k)}:{format_value(v)}"
                         for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
        return f"map[{inner}]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(format_value(v) for v in value) + "]"
    return str(value)


def quote(text: str) -> str:
    """``strconv.Quote``: a double-quoted Go string literal."""
    return json.dumps(text, ensure_ascii=False)


def _bad(verb: str, value: object) -> str:
    return f"%!{verb}({type_name(value)}={format_value(value)})"


def _pad(body: str, flags: str, width: int | None, numeric: bool) -> str:
    if width is None or len(body) >= width:
        return body
    if "-" in flags:
        return body.ljust(width)
    if "0" in flags and numeric and not body.lstrip("+- ").startswith(("I", "N")):
        sign = body[0] if body[:1] in ("+", "-", " ") else ""
        rest = body[len(sign):]
        if rest.startswith(("0x", "0X")) and "#" in flags:
            return sign + rest[:2] + rest[2:].rjust(width - len(sign) - 2, "0")
        return sign + rest.rjust(width - len(sign), "0")
    return body.rjust(width)


def _signed(body: str, negative: bool, flags: str) -> str:
    if negative:
        return "-" + body
    if "+" in flags:
        return "+" + body
    if " " in flags:
        return " " + body
    return body


def _float(verb: str, x: float, flags: str, precision: int | None) -> str:
    special = _special(x)
    if special is not None:
        if special == "NaN":
            return ("+" if "+" in flags else " " if " " in flags else "") + "NaN"
        return special
    negative = x < 0 or (x == 0 and math.copysign(1, x) < 0)
    magnitude = abs(x)
    lower = verb.lower()
    if lower == "g" or lower == "v":
        body = format_g(magnitude, -1 if precision is None else precision)
        if "#" in flags and "." not in body and "e" not in body:
            body += "."
    elif lower == "e":
        body = f"{magnitude:.{6 if precision is None else precision}e}"
    else:  # f, F
        body = f"{magnitude:.{6 if precision is None else precision}f}"
    if verb.isupper():
        body = body.upper()
    return _signed(body, negative, flags)


def _one(verb: str, flags: str, precision: int | None, value: object) -> tuple[str, bool]:
    """One verb applied to one value: the text and whether it is numeric (zero padding)."""
    if verb in "vs" and isinstance(value, str):
        return (value if precision is None else value[:precision]), False
    if verb == "v":
        if isinstance(value, float):
            return _float("g", value, flags, precision), True
        if isinstance(value, int) and not isinstance(value, bool):
            return _signed(str(abs(value)), value < 0, flags), True
        return format_value(value), False
    if verb == "s":
        return _bad(verb, value), False
    if verb == "t":
        return (format_value(value) if isinstance(value, bool) else _bad(verb, value)), False
    if verb == "q":
        if isinstance(value, str):
            return quote(value), False
        if isinstance(value, int) and not isinstance(value, bool):
            return "'" + chr(value) + "'", False
        return _bad(verb, value), False
    if verb in "dxXobc":
        if isinstance(value, int) and not isinstance(value, bool):
            if verb == "c":
                return chr(value), False
            digits = {"d": f"{abs(value)}", "x": f"{abs(value):x}", "X": f"{abs(value):X}",
                      "o": f"{abs(value):o}", "b": f"{abs(value):b}"}[verb]
            if precision is not None:
                digits = digits.rjust(precision, "0")
            if "#" in flags and verb in "xX":
                digits = "0" + verb + digits
            return _signed(digits, value < 0, flags), True
        if isinstance(value, str) and verb in "xX":
            hexed = value.encode().hex()
            return (hexed.upper() if verb == "X" else hexed), False
        return _bad(verb, value), False
    if verb in "eEfFgG":
        if isinstance(value, float):
            return _float(verb, value, flags, precision), True
        return _bad(verb, value), False
    return _bad(verb, value), False


def sprintf(fmt: str, args: Sequence[object]) -> str:
    """``fmt.Sprintf(fmt, args...)`` for the verbs listed in the module's docstring."""
    out: list[str] = []
    used = 0
    position = 0
    for match in _VERB.finditer(fmt):
        out.append(fmt[position:match.start()])
        position = match.end()
        flags, width_text, precision_text, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        width = int(width_text) if width_text else None
        precision = None if precision_text is None else int(precision_text or "0")
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        value = args[used]
        used += 1
        body, numeric = _one(verb, flags, precision, value)
        out.append(_pad(body, flags, width, numeric))
    tail = fmt[position:]
    out.append(tail[:-1] + "%!(NOVERB)" if tail.endswith("%") else tail)  # a lone last %
    if used < len(args):
        extra = ", ".join(f"{type_name(a)}={format_value(a)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
