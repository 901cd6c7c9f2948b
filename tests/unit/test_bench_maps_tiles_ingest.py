"""bench.maps_tiles_ingest's pure parts: statistics, the batching arithmetic and request
sizes, the GeoJSON export and Mapnik style made from our style tables, the drive helpers,
and the report from a small fake result (peer missing too). No servers, nothing timed."""

from __future__ import annotations

import copy
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from bench.maps_tiles_ingest import (
    BATCH_PERIODS_S,
    FRAMING_BYTES,
    batch_request,
    batching_rows,
    lag_summary,
    mapnik_xml,
    ping_pong,
    positions,
    ratio,
    report,
    sample_fixes,
    scale_denominator,
    size_summary,
    store_geojson,
    time_summary,
)
from geoplex.servers._runtime.geo import haversine_m
from geoplex.servers.maps.tiles import style
from geoplex.servers.maps.tiles.features import FeatureBuilder


def test_size_summary_gives_median_p90_and_max() -> None:
    got = size_summary([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 1000])
    assert got["median_bytes"] == 60
    assert got["p90_bytes"] == pytest.approx(100)
    assert got["max_bytes"] == 1000
    assert math.isnan(size_summary([])["median_bytes"])


def test_time_summary_rate_is_calls_over_their_summed_time() -> None:
    got = time_summary([0.01, 0.01, 0.02])
    assert got["n"] == 3
    assert got["per_s"] == pytest.approx(3 / 0.04)
    assert got["p50_ms"] == pytest.approx(10.0)
    assert math.isnan(time_summary([])["per_s"])


def test_lag_summary_counts_the_never_seen() -> None:
    got = lag_summary([0.1, None, 0.3, 0.2])
    assert (got["n"], got["seen"], got["missed"]) == (4, 3, 1)
    assert got["p50_ms"] == pytest.approx(200.0)
    assert got["max_ms"] == pytest.approx(300.0)
    assert lag_summary([None])["missed"] == 1


def test_ratio_is_nan_without_two_finite_numbers() -> None:
    assert ratio(3.0, 2.0) == 1.5
    for a, b in ((1.0, 0.0), (None, 1.0), (math.nan, 1.0), (1.0, None)):
        assert math.isnan(ratio(a, b))


def test_batching_rows_requests_per_hour_and_bytes_per_fix() -> None:
    sizes = {1: 60, 5: 260, 10: 510, 30: 1510}
    rows = batching_rows(sizes)
    assert [r["period_s"] for r in rows] == list(BATCH_PERIODS_S)
    assert [r["requests_per_hour"] for r in rows] == [3600, 720, 360, 120]
    assert [r["fixes_per_request"] for r in rows] == [1, 5, 10, 30]
    assert rows[2]["bytes_per_fix"] == pytest.approx(51.0)
    assert rows[0]["wire_bytes_per_hour"] == pytest.approx(3600 * (60 + FRAMING_BYTES))
    assert rows[0]["requests_saved"] == 0.0
    assert rows[3]["requests_saved"] == pytest.approx(1 - 1 / 30)


def test_batched_requests_cost_less_per_fix_than_single_ones() -> None:
    path = [(57.70, 11.97), (57.701, 11.971), (57.702, 11.972)]
    sizes = {t: batch_request(sample_fixes(path, t, 1.7e9), "a" * 32).ByteSize()
             for t in BATCH_PERIODS_S}
    per_fix = [sizes[t] / t for t in BATCH_PERIODS_S]
    assert per_fix == sorted(per_fix, reverse=True)
    one = sample_fixes(path, 1, 1.7e9)[0].ByteSize()
    # the batch id and the message wrappers are paid once per request
    assert sizes[30] < 30 * (one + 3) + 40


def test_positions_are_evenly_spaced_and_stop_at_the_limit() -> None:
    line = [(57.70, 11.97), (57.71, 11.97)]  # ~1.1 km due north
    spots = positions(line, 10.0, 300.0)
    assert len(spots) == 31
    steps = [haversine_m(*a, *b) for a, b in zip(spots, spots[1:])]
    assert all(s == pytest.approx(10.0, rel=1e-3) for s in steps)
    looped = ping_pong(spots)
    assert looped[0] == spots[0] and looped[len(spots) - 1] == spots[-1]
    # back again without a jump: the next lap starts beside where this one ends
    assert haversine_m(*looped[-1], *looped[0]) == pytest.approx(10.0, rel=1e-3)


def test_scale_denominator_halves_per_zoom() -> None:
    assert scale_denominator(0) == pytest.approx(559_082_264.03, rel=1e-9)
    assert scale_denominator(10) == pytest.approx(545_978.77, rel=1e-6)
    assert scale_denominator(11) * 2 == pytest.approx(scale_denominator(10))


def _store() -> Any:
    b = FeatureBuilder()
    road = style.class_code(style.ROADS, "primary")
    b.add(style.ROADS, road, [[24.94, 60.17, 24.95, 60.171]], name="Mannerheimintie")
    park = style.class_code(style.LANDUSE, "park")
    ring = [24.94, 60.17, 24.95, 60.17, 24.95, 60.175, 24.94, 60.175]
    hole = [24.944, 60.171, 24.946, 60.171, 24.946, 60.173]
    b.add(style.LANDUSE, park, [ring, hole], [True, False])
    b.add(style.POIS, style.class_code(style.POIS, "shop"), [[24.945, 60.172]])
    return b.build("tiny")


def test_store_geojson_keeps_classes_first_zooms_holes_and_names() -> None:
    store = _store()
    roads = store_geojson(store, style.ROADS)["features"]
    assert len(roads) == 1
    assert roads[0]["geometry"]["type"] == "LineString"
    assert roads[0]["properties"] == {"c": "primary", "mz": style.ROAD_MIN_ZOOM["primary"],
                                      "name": "Mannerheimintie"}
    (park,) = store_geojson(store, style.LANDUSE)["features"]
    assert park["geometry"]["type"] == "Polygon"
    rings = park["geometry"]["coordinates"]
    assert len(rings) == 2  # the exterior and its hole
    assert all(r[0] == r[-1] for r in rings)  # closed, as GeoJSON wants
    assert abs(rings[0][0][0]) > 1e6  # Web Mercator metres, not degrees
    (poi,) = store_geojson(store, style.POIS)["features"]
    assert poi["geometry"]["type"] == "Point"
    assert store_geojson(store, style.WATER)["features"] == []


def test_mapnik_xml_has_a_rule_per_zoom_and_class_from_our_tables(tmp_path: Path) -> None:
    files = {n: tmp_path / f"{n}.geojson" for n in ("landuse", "roads", "pois")}
    root = ET.fromstring(mapnik_xml(files, [12, 16, 18]))
    assert root.tag == "Map"
    styles = {s.get("name"): s for s in root.findall("Style")}
    fills = styles["road-fill"].findall("Rule")
    # primary shows from 7: a fill rule at each of the three zooms; minor from 13: two
    primary = [r for r in fills if "'primary'" in (r.findtext("Filter") or "")]
    minor = [r for r in fills if "'minor'" in (r.findtext("Filter") or "")]
    assert len(primary) == 3 and len(minor) == 2
    z16 = next(r for r in primary if "<= 16" in (r.findtext("Filter") or ""))
    line = z16.find("LineSymbolizer")
    assert line is not None
    assert float(line.get("stroke-width", "0")) == pytest.approx(
        style.road_width("primary", 16), abs=0.01)
    hi = float(z16.findtext("MaxScaleDenominator") or 0)
    lo = float(z16.findtext("MinScaleDenominator") or 0)
    assert lo < scale_denominator(16) < hi
    assert hi < scale_denominator(15) and lo > scale_denominator(17)
    assert len(styles["pois"].findall("Rule")) == 1  # zoom 18 only (dots from 17)
    assert len(styles["road-labels"].findall("Rule")) == 2  # 16 and 18
    layers = [(layer.get("name"), [s.text for s in layer.findall("StyleName")])
              for layer in root.findall("Layer")]
    # no water or buildings file: no such layer; labels last, over everything
    assert layers == [("landuse", ["landuse"]), ("roads", ["road-casing", "road-fill"]),
                      ("pois", ["pois"]), ("labels", ["road-labels"])]


def _cpu() -> dict[str, Any]:
    return {"server_cpu_pct": 90.0, "client_cpu_pct": 60.0, "other_cpu_pct": 3.0,
            "machine_cpu_pct": 153.0, "server_cpu_pct_each": [5.0, 20.0, 30.0, 40.0]}


def _load(calls: float) -> dict[str, Any]:
    return {"calls_per_s": calls, "p50_ms": 1.0, "p99_ms": 3.0, "errors": 0, "cpu": _cpu()}


def fake_result() -> dict[str, Any]:
    cell = {"tiles": 4, "n": 20, "p50_ms": 10.0, "p99_ms": 20.0, "per_s": 90.0,
            "median_bytes": 9000.0, "p90_bytes": 12000.0, "max_bytes": 15000.0}
    step = {"rate_batches_per_s": 20.0, "offered_fixes_per_s": 200.0, "accepted_fixes_per_s": 199.0,
            "batches_per_s": 19.9, "p50_ms": 8.0, "p99_ms": 20.0, "errors": 0,
            "rejected_fixes": 0, "cpu": _cpu(),
            "history_lag": {"n": 10, "seen": 10, "missed": 0, "p50_ms": 40.0, "max_ms": 90.0}}
    lag = {"n": 3, "seen": 3, "missed": 0, "p50_ms": 1200.0, "max_ms": 1900.0}
    dist = {"median": 3000.0, "p90": 5000.0, "max": 7000.0, "mean": 3500.0}
    return {
        "machine": {"cpu_model": "Test CPU", "nproc": 2, "python": "3.11", "packages": {},
                    "date": "2026-01-01T00:00:00+00:00"},
        "settings": {"quiet_max": 5.0, "block": 5, "zooms": [14, 16], "tile_rounds": 2,
                     "duration": 2.0, "warmup": 0.5, "batch": 10, "ingest_duration": 5.0},
        "quiet": [{"label": "http c=16", "busy_pct": 80.0, "timed_out": True},
                  {"label": "render", "busy_pct": 1.0, "timed_out": False}],
        "elapsed_s": 300.0,
        "render": {"rounds": 5, "tiles": {"helsinki": 4},
                   "cells": [{"region": "helsinki", "zoom": 16, "format": "png", **cell}],
                   "pooled": [{"zoom": 16, "format": "png", **cell},
                              {"zoom": "all", "format": "mvt", **cell}]},
        "mapnik": {"available": True, "version": "300100", "installed_now": True,
                   "features": {"roads": 2308}, "format": "png8:m=o:c=128", "rounds": 5,
                   "zooms": [{"zoom": 16, "tiles": 4, "p50_ms": 12.5, "p99_ms": 30.0,
                              "per_s": 80.0, "render_only": {"p50_ms": 11.0},
                              "median_bytes": 11000.0}]},
        "runtime_ceiling": {"date": "2026-01-01", "calls_per_s": {"16": 9000.0}},
        "tiles_e2e": {"warm_tiles": 4, "mean_tile_bytes": 9000, "start_s": 4.0,
                      "warm": {"p50_ms": 15.0, "p99_ms": 40.0},
                      "cold": {"tiles": 10, "p50_ms": 14.0, "p99_ms": 50.0, "max_ms": 60.0,
                               "median_bytes": 8000.0},
                      "cells": [{"concurrency": 16, "http": _load(1500.0),
                                 "http_304": _load(2500.0), "grpc": _load(1800.0),
                                 "ping": _load(3600.0)}]},
        "ingest": {
            "history_idle": {"n": 10, "seen": 10, "missed": 0, "p50_ms": 30.0, "max_ms": 70.0},
            "traffic_eta_lag": lag, "traffic_segments_lag": lag,
            "traffic_trials": [{"eta_before_s": 200.0, "eta_after_s": 330.0}],
            "ingest_steps": [step, {**step, "rate_batches_per_s": None,
                                    "offered_fixes_per_s": None}],
            "cpu_pids": ["etcd", "broker", "routing", "maps"], "clients": 64,
            "load_route": {"distance_m": 6400.0},
            "batching": {"fix_bytes": 50, "framing_bytes": FRAMING_BYTES,
                         "rows": batching_rows({1: 90, 5: 290, 10: 540, 30: 1540})},
            "routes": {"routes": 50, "bytes": dist, "no_steps_bytes": dist,
                       "segments_bytes": dist, "polyline_bytes": dist, "distance_m": dist,
                       "steps": dist, "points": dist,
                       "polyline_share": {"median": 0.4}, "polyline_share_no_steps": {"median": 0.9},
                       "polyline_share_of_all_bytes": 0.41, "bytes_per_km": 300.0}},
    }


def test_report_renders_every_part_with_ratios_and_noise() -> None:
    text = report(fake_result())
    for part in ("**1. Tile rendering in process**", "**2. Peer: Mapnik** 300100",
                 "installed by this run with apt-get", "**3. Cached tiles end to end**",
                 "**4. Location ingest end to end**", "**5. Route response sizes**",
                 "*Noise*"):
        assert part in text
    assert "| 0.80x |" in text              # ours 10 ms over Mapnik's 12.5 ms
    assert "50%" in text                      # GetTile 1,800/s over Ping 3,600/s
    assert "| 3,600 |" in text and "| 120 |" in text   # requests per hour, every 1 s / 30 s
    assert "all clients back to back" in text
    assert "nan" not in text


def test_report_flags_cells_other_work_disturbed() -> None:
    result = copy.deepcopy(fake_result())
    assert "*Other work*" not in report(result)
    result["tiles_e2e"]["cells"][0]["http"]["cpu"]["other_cpu_pct"] = 68.0
    assert "*Other work* took more than 25% of a core during HTTP 200 c=16 (68%)" in report(
        result)


def test_report_says_why_the_peer_did_not_run() -> None:
    result = copy.deepcopy(fake_result())
    result["mapnik"] = {"available": False, "error": "apt-get install: exit 100"}
    del result["tiles_e2e"]
    result["ingest"] = {"skipped": "no MongoDB"}
    text = report(result)
    assert "**2. Peer: Mapnik**: not run: apt-get install: exit 100." in text
    assert "not run (no MongoDB)" in text
    assert "**5." not in text
