"""Terminal output the CLI shares: aligned tables for people, and text safe to print.

Much of what the CLI prints was written by someone else (business names, user ids, a
server's error message), so every cell goes through :func:`printable` first: a control
or format character (ESC, BEL, a bidi override such as U+202E, a zero-width space...)
is shown as its Python escape (``\\x1b``, ``\\u202e``) instead of reaching the terminal,
where it could move the cursor, retitle the window or reorder what other users see.
Ordinary text, accents and CJK included, prints as it is; columns are aligned by the
width on screen (:func:`display_width`), not by the number of code points.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Sequence

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch.isprintable():
        return ch
    code = ord(ch)
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(value: object) -> str:
    """``str(value)`` with every character a terminal would not simply show (``str.
    isprintable`` is false: controls, format characters, separators other than the
    space, unassigned code points) written as its escape, e.g. ``\\x1b``, ``\\u202e``."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(_escape(ch) for ch in text)


def display_width(text: str) -> int:
    """Columns ``text`` (already :func:`printable`) takes on a terminal: wide and
    fullwidth East Asian characters take two, combining marks none, the rest one."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[printable(h) for h in headers], *[[printable(c) for c in row] for row in rows]]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(cell + " " * (width - display_width(cell))
                        for cell, width in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * width for width in widths))


def print_error(message: object, code: int = 2) -> int:
    """Print ``geoplex: error: MESSAGE`` (made :func:`printable`) on stderr; return ``code``,
    the exit status: 2 for a usage or configuration error."""
    print(f"geoplex: error: {printable(message)}", file=sys.stderr, flush=True)
    return code


def print_next_page(next_page_token: str) -> None:
    """After one page of a listing: how to ask for the next, when there is one."""
    if next_page_token:
        print(f"\nmore: --page-token {printable(next_page_token)}")
