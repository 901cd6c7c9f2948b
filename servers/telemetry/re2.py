"""Regular expressions as Prometheus writes them (RE2, Go's syntax) for Python's ``re``:
the PromQL parser checks a matcher's pattern with them and the store selects with them,
so both match alike."""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=4096)
def compile_regex(pattern: str) -> re.Pattern[str]:
    """A matcher's regular expression as Prometheus compiles it (``^(?s:pattern)$``:
    use ``fullmatch``), written in RE2 syntax and translated by :func:`translate_re2`.
    Raises ``re.error`` when it does not compile."""
    return re.compile(f"(?s:{translate_re2(pattern)})")


_INLINE_FLAGS = re.compile(r"\(\?([imsU]*(?:-[imsU]*)?)\)")
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z",
    "print": " -~", "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z", "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f"}


def translate_re2(pattern: str) -> str:
    """The RE2 (Go) constructs Python's ``re`` spells differently, rewritten: flags set
    mid-pattern (``a(?i)b``, which apply to the rest of the group), ``\\z``,
    ``\\Q...\\E`` and POSIX classes (``[[:alpha:]]``). Others pass through unchanged."""
    if not any(mark in pattern for mark in ("(?", "\\z", "\\Q", "[:")):
        return pattern
    out: list[str] = []
    scopes: list[list[str]] = [[]]  # per open group: the flag groups opened inside it
    i, size = 0, len(pattern)
    while i < size:
        char = pattern[i]
        if char == "\\":
            code = pattern[i + 1:i + 2]
            if code == "Q":
                end = pattern.find("\\E", i + 2)
                out.append(re.escape(pattern[i + 2:] if end < 0 else pattern[i + 2:end]))
                i = size if end < 0 else end + 2
            else:
                out.append("\\Z" if code == "z" else pattern[i:i + 2])
                i += 2
        elif char == "[":
            i = _char_class(pattern, i, out)
        elif char == "(":
            flags = _INLINE_FLAGS.match(pattern, i)
            if flags is not None:
                opener = f"(?{flags.group(1)}:"
                out.append(opener)
                scopes[-1].append(opener)
                i = flags.end()
                continue
            scopes.append([])
            out.append(char)
            i += 1
        elif char == ")":
            if len(scopes) > 1:
                out.append(")" * len(scopes.pop()))
            out.append(char)
            i += 1
        elif char == "|" and scopes[-1]:
            out.append(")" * len(scopes[-1]) + "|" + "".join(scopes[-1]))
            i += 1
        else:
            out.append(char)
            i += 1
    out.append(")" * len(scopes[0]))
    return "".join(out)


def _char_class(pattern: str, i: int, out: list[str]) -> int:
    size = len(pattern)
    parts = ["["]
    j = i + 1
    if pattern[j:j + 1] == "^":
        parts.append("^")
        j += 1
    if pattern[j:j + 1] == "]":
        parts.append("\\]")
        j += 1
    while j < size and pattern[j] != "]":
        if pattern.startswith("[:", j):
            end = pattern.find(":]", j + 2)
            name = pattern[j + 2:end] if end >= 0 else ""
            if name in _POSIX_CLASSES:
                parts.append(_POSIX_CLASSES[name])
                j = end + 2
                continue
        if pattern[j] == "\\":
            parts.append(pattern[j:j + 2])
            j += 2
            continue
        parts.append("\\[" if pattern[j] == "[" else pattern[j])
        j += 1
    parts.append("]")
    out.append("".join(parts))
    return j + 1
