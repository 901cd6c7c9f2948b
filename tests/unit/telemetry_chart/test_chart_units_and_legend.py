"""The chart command's pure parts: windows and steps, the legend of differing labels, the
unit a metric name suggests, gaps, and what the drawn chart says (title, legend, note)."""

from __future__ import annotations

import argparse
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from geoplex.tools import telemetry_chart as tc
from geoplex.tools.telemetry_chart import Unit

NOW = 1_750_000_000.0


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("2d", 172_800),
    ("250ms", 0.25), ("3600", 3600), ("1w", 604_800)])
def test_durations_read_as_promql_writes_them(text: str, seconds: float) -> None:
    assert tc.parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "5m3", "-5m", "1h 30m", "nan"])
def test_a_bad_duration_is_refused_by_name(text: str) -> None:
    with pytest.raises(tc.ChartError, match="is not a duration"):
        tc.parse_duration_s(text)


def test_times_are_now_a_duration_ago_unix_seconds_or_rfc3339() -> None:
    assert tc.parse_time_s("now", NOW) == NOW
    assert tc.parse_time_s("1h", NOW) == NOW - 3600
    assert tc.parse_time_s("@1700000000.5", NOW) == 1_700_000_000.5
    assert tc.parse_time_s("2025-06-15T12:00:00Z", NOW) == 1_749_988_800
    assert tc.parse_time_s("2025-06-15T14:00:00+02:00", NOW) == 1_749_988_800
    with pytest.raises(tc.ChartError, match="is not a time"):
        tc.parse_time_s("yesterday", NOW)
    with pytest.raises(tc.ChartError, match="@UNIX_SECONDS"):
        tc.parse_time_s("@soon", NOW)


@pytest.mark.parametrize(("span", "step"), [
    (3600, 15), (900, 5), (6 * 3600, 120), (86_400, 600), (7 * 86_400, 3600), (60, 1),
    (365 * 86_400, 172_800)])
def test_the_automatic_step_gives_about_250_points_on_a_readable_step(span: float,
                                                                      step: float) -> None:
    assert tc.auto_step_s(NOW - span, NOW) == step
    if span >= 3600:
        assert 100 <= span / step <= 250


def test_the_legend_names_series_by_the_labels_that_differ() -> None:
    sets = [{"__name__": "http_requests_total", "job": "api", "instance": "a", "code": "200"},
            {"__name__": "http_requests_total", "job": "api", "instance": "b", "code": "200"},
            {"__name__": "http_requests_total", "job": "api", "instance": "b", "code": "500"}]
    assert tc.differing_labels(sets) == ["code", "instance"]
    assert tc.legend_labels(sets) == ["code=200, instance=a", "code=200, instance=b",
                                      "code=500, instance=b"]


def test_the_legend_shows_a_differing_metric_name_bare_and_a_missing_label_as_absent() -> None:
    sets = [{"__name__": "a_bytes", "job": "x"}, {"__name__": "b_bytes", "job": "x"},
            {"__name__": "b_bytes", "job": "x", "device": "sda"}]
    assert tc.legend_labels(sets) == ["a_bytes", "b_bytes", "b_bytes, device=sda"]


def test_one_series_is_named_by_all_its_labels_and_a_bare_one_by_the_expression() -> None:
    assert tc.legend_labels([{"__name__": "up", "job": "api", "instance": "a"}]) == \
        ['up{instance="a", job="api"}']
    assert tc.legend_labels([{}], "sum(rate(x_total[5m]))") == ["sum(rate(x_total[5m]))"]
    assert tc.legend_labels([{"job": "a"}, {"job": "a"}]) == ["series 1", "series 2"]


@pytest.mark.parametrize(("expression", "unit"), [
    ("process_resident_memory_bytes", Unit("bytes")),
    ('node_filesystem_avail_bytes{mountpoint="/"}', Unit("bytes")),
    ("rate(node_network_receive_bytes_total[5m])", Unit("bytes", per_second=True)),
    ("sum by (job) (rate(http_requests_total[5m]))", Unit("", per_second=True)),
    ("sum(irate(http_requests_total{code=~\"5..\"}[1m])) by (job)", Unit("", per_second=True)),
    ("sum by (job) (rate(rpc_server_call_duration_seconds_count[5m]))",
     Unit("", per_second=True)),
    ("histogram_quantile(0.99, sum by (job, le) "
     "(rate(rpc_server_call_duration_seconds_bucket[5m])))", Unit("seconds")),
    ("rate(x_seconds_sum[5m]) / rate(x_seconds_count[5m])", Unit("seconds")),
    ("1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", Unit("ratio")),
    ("node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes", Unit("bytes")),
    ("rate(node_cpu_seconds_total{mode=\"idle\"}[5m])", Unit("seconds", per_second=True)),
    ("cache_hit_ratio", Unit("ratio")),
    ("disk_used_percent", Unit("percent")),
    ("http_requests_total", Unit()),
    ("up", Unit()),
    ("process_resident_memory_bytes + process_cpu_seconds_total", Unit()),   # mixed
    ("vector(1)", Unit()),
    ('label_replace(up, "dst", "$1", "src", "(.*)_bytes")', Unit()),  # a string, not a name
])
def test_the_unit_comes_from_the_metric_name_suffix(expression: str, unit: Unit) -> None:
    assert tc.guess_unit(expression) == unit


@pytest.mark.parametrize(("unit", "peak", "factor", "label"), [
    (Unit("bytes"), 512, 1, "B"),
    (Unit("bytes"), 4096, 1 / 1024, "KiB"),
    (Unit("bytes"), 300 * 2**20, 1 / 2**20, "MiB"),
    (Unit("bytes"), 3 * 2**30, 1 / 2**30, "GiB"),
    (Unit("bytes", per_second=True), 5 * 2**20, 1 / 2**20, "MiB/s"),
    (Unit("seconds"), 0.25, 1e3, "ms"),
    (Unit("seconds"), 0.0002, 1e6, "µs"),
    (Unit("seconds"), 12, 1, "s"),
    (Unit("seconds", per_second=True), 0.8, 1, "s/s"),
    (Unit("", per_second=True), 1500, 1, "/s"),
    (Unit("ratio"), 0.4, 100, "%"),
    (Unit("percent"), 40, 1, "%"),
    (Unit(), 7, 1, ""),
    (Unit("bytes"), math.nan, 1, "B"),
])
def test_the_axis_scale_keeps_readable_numbers(unit: Unit, peak: float, factor: float,
                                               label: str) -> None:
    scale = tc.axis_scale(unit, peak)
    assert scale.label == label and scale.factor == pytest.approx(factor)


def test_a_missing_stretch_breaks_the_line_and_infinities_are_not_drawn() -> None:
    xs, ys = tc.with_gaps([0, 15, 30, 90, 105], [1, 2, math.inf, 4, 5], 15)
    assert xs == [0, 15, 30, 60, 90, 105]
    assert ys[:2] == [1, 2] and math.isnan(ys[2]) and math.isnan(ys[3]) and ys[4:] == [4, 5]


def _svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


def _chart(resolution: str, lines: int = 2) -> tc.Chart:
    return tc.Chart(
        "sum by (job) (rate(x_bytes_total[5m]))",
        [tc.Line({"job": f"j{n}", "env": "prod"}, [NOW - 600 + 60 * k for k in range(11)],
                 [(n + 1) * 2**20 * (1 + k / 10) for k in range(11)]) for n in range(lines)],
        60.0, resolution, NOW - 600, NOW)


def test_a_chart_from_a_rollup_tier_says_so(tmp_path: Path) -> None:
    tc.save(_chart("1m"), tmp_path / "rollup.svg", utc=True)
    texts = _svg_texts(tmp_path / "rollup.svg")
    assert "served from the 1m rollup tier (downsampled); step 1m" in texts
    assert "sum by (job) (rate(x_bytes_total[5m]))" in texts      # the title
    assert "job=j0" in texts and "job=j1" in texts and "MiB/s" in texts
    assert not any("env=" in t for t in texts)                    # the same in both

    tc.save(_chart("raw"), tmp_path / "raw.svg", utc=True)
    assert not any("rollup" in t for t in _svg_texts(tmp_path / "raw.svg"))


def test_a_crowded_legend_counts_the_series_it_leaves_out(tmp_path: Path) -> None:
    tc.save(_chart("raw", lines=20), tmp_path / "many.svg", utc=True)
    texts = _svg_texts(tmp_path / "many.svg")
    assert "... and 9 more" in texts and "job=j10" in texts and "job=j11" not in texts


def test_help_says_what_the_command_does(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="geoplex telemetry")
    tc.add_chart_command(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["chart", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "draw it to a PNG or SVG file" in text and "--resolution {auto,raw,1m,1h}" in text
    assert "about 250 points" in text and "writes no file and exits 1" in text
