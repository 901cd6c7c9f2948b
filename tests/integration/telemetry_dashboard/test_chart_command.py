"""`geoplex telemetry chart` against a real telemetry process: a PNG with the lines drawn,
an SVG that parses with the legend and units as text, and no file for a query with no
data."""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dashboard_mesh import JOBS, Telemetry
from geoplex.tools.telemetry_chart import add_chart_command

# matplotlib's first three line colours (tab:blue, tab:orange, tab:green)
LINE_RGB = ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0x2C, 0xA0, 0x2C))
SVG = "{http://www.w3.org/2000/svg}"


def chart(*argv: str) -> int:
    """Run `... telemetry chart ARGV` as the CLI does (its parser and its function)."""
    parser = argparse.ArgumentParser(prog="geoplex telemetry")
    add_chart_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["chart", *argv])
    return int(args.func(args))


def test_chart_writes_a_png_with_one_line_per_series(telemetry: Telemetry, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    out = tmp_path / "rps.png"
    code = chart("sum by (job) (rate(rpc_server_call_duration_seconds_count[5m]))",
                 "--since", "1h", "--target", telemetry.server.address, "-o", str(out))
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "3 series" in printed.out and "step 15s" in printed.out  # 1 h / ~250 points
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (1000, 500)
    rgb = np.asarray(image.convert("RGB"), dtype=np.int32)
    for colour in LINE_RGB:   # each series drew a line of its own colour
        share = float((np.abs(rgb - np.array(colour)).sum(axis=2) < 40).mean())
        assert share > 0.002, colour
    assert float((rgb.sum(axis=2) > 720).mean()) > 0.6   # and the rest is mostly white


def test_chart_writes_an_svg_with_legend_and_units_as_text(telemetry: Telemetry,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "memory.svg"
    code = chart("process_resident_memory_bytes", "--since", "30m", "--until", "now",
                 "--step", "30s", "--utc", "--target", telemetry.server.address,
                 "-o", str(out))
    assert code == 0
    root = ET.parse(out).getroot()
    assert root.tag == f"{SVG}svg"
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    # the legend: only the label that differs (job), not __name__ or the full set
    assert sorted(t for t in texts if t.startswith("job=")) == sorted(f"job={j}" for j in JOBS)
    assert "MiB" in texts and "UTC" in texts and "step 30s" in texts
    assert "process_resident_memory_bytes" in texts
    strokes = " ".join(p.get("style", "") for p in root.iter(f"{SVG}path"))
    assert all(f"stroke: #{r:02x}{g:02x}{b:02x}" in strokes for r, g, b in LINE_RGB)


def test_chart_with_no_data_writes_nothing_and_exits_1(telemetry: Telemetry, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    out = tmp_path / "none.png"
    code = chart("no_such_metric_total", "--target", telemetry.server.address, "-o", str(out))
    assert code == 1 and not out.exists()
    assert "no data: no_such_metric_total has no series" in capsys.readouterr().err


def test_chart_refuses_an_unknown_format_and_a_bad_window(telemetry: Telemetry,
                                                          tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    target = telemetry.server.address
    assert chart("up", "--target", target, "-o", str(tmp_path / "x.jpg")) == 2
    assert "must end in .png or .svg" in capsys.readouterr().err
    assert chart("up", "--since", "10m", "--until", "1h", "--target", target,
                 "-o", str(tmp_path / "x.png")) == 2
    assert "is not before --until" in capsys.readouterr().err
    assert chart("up", "--since", "yesterday", "--target", target,
                 "-o", str(tmp_path / "x.png")) == 2
    assert "'yesterday' is not a time" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
