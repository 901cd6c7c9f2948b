"""The CLI's tables print stored text (business names, user ids, server messages): any
control or format character in it is shown escaped, never sent to the terminal."""

from __future__ import annotations

import unicodedata

import pytest

from geoplex.tools.output import print_table


def _width(text: str) -> int:
    """Terminal columns: wide East Asian characters take two, combining marks none."""
    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _table(capsys: pytest.CaptureFixture[str], headers: tuple[str, ...],
           rows: list[tuple[object, ...]]) -> list[str]:
    print_table(headers, rows)
    return capsys.readouterr().out.splitlines()


def _column_starts(line: str) -> list[int]:
    """Display columns at which the cells of ``line`` start (cells are 2+ spaces apart)."""
    starts, col, gap = [], 0, 2
    for ch in line:
        if ch != " " and gap >= 2:
            starts.append(col)
        gap = gap + 1 if ch == " " else 0
        col += _width(ch)
    return starts


def test_table_shows_escape_sequences_and_bidi_overrides_escaped(
        capsys: pytest.CaptureFixture[str]) -> None:
    lines = _table(capsys, ("name", "id"),
                   [("\x1b[2J\x1b]0;pwned\x07Cafe", "b-1"), ("evil\u202egnp.exe", "b-2")])

    out = "\n".join(lines)
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b[2J\\x1b]0;pwned\\x07Cafe" in lines[2]
    assert "evil\\u202egnp.exe" in lines[3]


def test_table_shows_newlines_tabs_and_other_invisible_characters_escaped(
        capsys: pytest.CaptureFixture[str]) -> None:
    lines = _table(capsys, ("name",), [("two\nlines\tand\rcr",), ("zero\u200bwidth\ufeff",),
                                       ("del\x7f\x9bcsi",)])

    assert lines[2:] == ["two\\nlines\\tand\\rcr", "zero\\u200bwidth\\ufeff", "del\\x7f\\x9bcsi"]


def test_table_escapes_headers_too(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _table(capsys, ("\x1b[31mred",), [("x",)])

    assert lines[0] == "\\x1b[31mred"


def test_table_keeps_accents_and_cjk_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _table(capsys, ("name", "city"), [("Café Zoë", "Göteborg"), ("東京タワー", "東京")])

    assert lines[2].split("  ")[0] == "Café Zoë"
    assert lines[3].startswith("東京タワー") and lines[3].endswith("東京")


def test_table_columns_line_up_on_screen_with_escapes_wide_and_combining_characters(
        capsys: pytest.CaptureFixture[str]) -> None:
    lines = _table(capsys, ("name", "id", "note"), [
        ("plain", "b-1", "x"),
        ("\x1b[1mbold", "b-2", "x"),
        ("東京タワー", "b-3", "x"),
        (unicodedata.normalize("NFD", "Crème brûlée"), "b-4", "x"),
    ])

    starts = {tuple(_column_starts(line)) for n, line in enumerate(lines) if n != 1}
    assert len(starts) == 1, lines
    assert lines[1].split("  ")[0] == "-" * max(_width(line.split("  ")[0])
                                                for line in lines)


def test_printable_escapes_only_what_a_terminal_would_not_show() -> None:
    from geoplex.tools.output import printable

    assert printable("Zoë 東京 a\\b") == "Zoë 東京 a\\b"
    assert printable("\x00\x1b\u202e\U000e0001") == "\\x00\\x1b\\u202e\\U000e0001"
    assert printable(42) == "42"


def test_a_server_error_message_is_printed_escaped(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    import grpc

    from geoplex.clients.errors import NotFoundError
    from geoplex.tools import cli

    def fails(_args: argparse.Namespace) -> int:
        raise NotFoundError(grpc.StatusCode.NOT_FOUND, "business \x1b[2J\u202eb-1 not found")

    monkeypatch.setattr(cli, "cmd_mesh_info", fails)

    assert cli.main(["mesh", "info"]) == 1
    assert capsys.readouterr().err == "geoplex: NOT_FOUND: business \\x1b[2J\\u202eb-1 not found\n"
