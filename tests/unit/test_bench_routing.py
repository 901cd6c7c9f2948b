"""bench.routing's pure helpers: the GeoJSON -> OSM conversion (checked against our own
GeoJSON reader and read back with pyosmium), the accuracy statistics, the OSRM speed file
and log parsing, the ceiling lookup, and the report with OSRM missing. No OSRM install,
no network, nothing timed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import osmium
import pytest

from bench.routing import (
    OsmData,
    ceiling_cells,
    geojson_to_osm,
    osrm_large_components,
    ratio_stats,
    report,
    speed_rows,
    time_summary,
    write_osm_xml,
)
from geoplex.servers.routing.adapters.geojson_roads import read_geojson


def _line(coords: list[tuple[float, float]], props: dict[str, Any],
          fid: str | None = None) -> dict[str, Any]:
    feature: dict[str, Any] = {"type": "Feature", "properties": props,
                               "geometry": {"type": "LineString",
                                            "coordinates": [list(c) for c in coords]}}
    if fid is not None:
        feature["id"] = fid
    return feature


def tiny_collection() -> dict[str, Any]:
    """Two streets meeting at (11.96, 57.70), an area, a polygon, a one-point line."""
    return {"type": "FeatureCollection", "features": [
        _line([(11.95, 57.69), (11.96, 57.70), (11.96, 57.70), (11.97, 57.71)],
              {"@id": "way/10", "highway": "residential", "name": 'Kungsgatan "K" & co'},
              "way/10"),
        {"type": "Feature", "id": "way/11",
         "properties": {"highway": "pedestrian", "area": "yes"},
         "geometry": {"type": "Polygon", "coordinates": [[[11.9, 57.6], [11.91, 57.6],
                                                          [11.91, 57.61], [11.9, 57.6]]]}},
        _line([(11.80, 57.80), (11.81, 57.81)], {"highway": "service", "area": "yes"},
              "way/12"),
        _line([(11.5, 57.5), (11.5, 57.5)], {"highway": "service"}, "way/13"),
        _line([(11.96, 57.70), (11.98, 57.72)], {"highway": "tertiary", "oneway": "yes"}),
    ]}


def test_geojson_to_osm_numbers_nodes_as_our_reader_does(tmp_path: Path) -> None:
    collection = tiny_collection()
    path = tmp_path / "roads.json"
    path.write_text(json.dumps(collection))
    network = read_geojson(path)
    osm = geojson_to_osm(collection)

    # OSM node i + 1 is our base node i, at the same coordinate
    assert len(osm.nodes) == network.node_count
    lats = np.array([lat for lat, _ in osm.nodes]) / 1e7
    lons = np.array([lon for _, lon in osm.nodes]) / 1e7
    assert np.array_equal(lats, network.lat) and np.array_equal(lons, network.lon)
    # the same ways, with the same nodes (ids = index + 1), the shared node once
    assert [refs for _, refs, _ in osm.ways] == [(w.nodes + 1).tolist() for w in network.ways]
    assert osm.ways[0][1] == [1, 2, 3] and osm.ways[1][1][0] == 2
    assert osm.ways[0][0] == 10
    assert osm.ways[1][0] > 10**12  # no id: a synthetic one, far above OSM's
    # "@" keys are not tags; areas, polygons and one-point lines are not ways
    assert osm.ways[0][2] == {"highway": "residential", "name": 'Kungsgatan "K" & co'}
    assert len(osm.ways) == 2


def test_osm_xml_reads_back_with_pyosmium(tmp_path: Path) -> None:
    osm = geojson_to_osm(tiny_collection())
    path = write_osm_xml(osm, tmp_path / "roads.osm")
    nodes: dict[int, tuple[float, float]] = {}
    ways: dict[int, tuple[list[int], dict[str, str]]] = {}
    for obj in osmium.FileProcessor(str(path)):
        if isinstance(obj, osmium.osm.Node):
            nodes[obj.id] = (obj.location.lat, obj.location.lon)
        elif isinstance(obj, osmium.osm.Way):
            ways[obj.id] = ([n.ref for n in obj.nodes], {t.k: t.v for t in obj.tags})
    assert sorted(nodes) == list(range(1, len(osm.nodes) + 1))
    for i, (lat, lon) in enumerate(osm.nodes, start=1):
        assert nodes[i] == pytest.approx((lat / 1e7, lon / 1e7), abs=1e-7)
    assert ways == {way_id: (refs, tags) for way_id, refs, tags in osm.ways}


def test_empty_network_still_writes_a_valid_file(tmp_path: Path) -> None:
    path = write_osm_xml(OsmData(), tmp_path / "empty.osm")
    assert list(osmium.FileProcessor(str(path))) == []


def test_ratio_stats_over_pairs_both_answered() -> None:
    ours: list[float | None] = [100.5, 99.5, 110.0, None, 50.0, 0.0, 5.0]
    theirs: list[float | None] = [100.0, 100.0, 100.0, 100.0, None, 0.0, 0.0]
    stats = ratio_stats(ours, theirs)
    # compared: 1.005, 0.995, 1.1 and the zero-length route (ratio 1); 5 vs 0 is left out
    assert stats["n"] == 4
    assert stats["within_1pct"] == pytest.approx(3 / 4)
    assert stats["within_5pct"] == pytest.approx(3 / 4)
    assert stats["median"] == pytest.approx(0.005)
    assert stats["p95"] == pytest.approx(0.005 + 0.85 * 0.095)
    assert stats["median_ratio"] == pytest.approx(1.0025)


def test_ratio_stats_with_nothing_to_compare_is_nan() -> None:
    stats = ratio_stats([None, 1.0], [2.0, None])
    assert stats["n"] == 0 and math.isnan(stats["median"]) and math.isnan(stats["within_1pct"])


def test_time_summary_units() -> None:
    s = time_summary([0.001, 0.002, 0.003], "ms")
    assert s["p50"] == pytest.approx(2.0) and s["n"] == 3
    assert time_summary([0.000_010], "us")["p99"] == pytest.approx(10.0)
    assert math.isnan(time_summary([])["p50"])


def test_speed_rows_use_osm_ids_of_each_directed_segment() -> None:
    tail = np.array([0, 1, 2], dtype=np.int32)
    head = np.array([1, 2, 0], dtype=np.int32)
    ids = np.array([1001, 1002, 1003], dtype=np.int64)
    kmh = np.array([12.4, 0.2, 49.6])
    rows = speed_rows(tail, head, ids, kmh, np.array([2, 0, 1], dtype=np.int64))
    assert rows == ["1003,1001,50", "1001,1002,12", "1002,1003,1"]


def test_osrm_large_components_from_extract_log() -> None:
    log = ("[info] Computing strictly connected components ...\n"
           "[info] Found 72 SCC (0 large, 72 small)\n")
    assert osrm_large_components(log) == 0
    assert osrm_large_components("Found 226 SCC (1 large, 225 small)") == 1
    assert osrm_large_components("nothing here") is None


def test_ceiling_cells_keep_the_plain_unary_stub_cells() -> None:
    base = {"server": "base", "call": "unary", "response_size": 0, "client": "stub",
            "channels": 1}
    runtime = {"cells": [
        {**base, "concurrency": 1, "calls_per_s": 2000.0},
        {**base, "concurrency": 16, "calls_per_s": 7000.0},
        {**base, "concurrency": 16, "channels": 2, "calls_per_s": 9000.0},
        {**base, "concurrency": 16, "response_size": 2048, "calls_per_s": 6000.0},
        {**base, "concurrency": 16, "server": "tracing", "calls_per_s": 5000.0},
        {**base, "concurrency": 16, "call": "stream", "calls_per_s": 20000.0},
    ]}
    cells = ceiling_cells(runtime)
    assert {c: cell["calls_per_s"] for c, cell in cells.items()} == {1: 2000.0, 16: 7000.0}


def _timing(p50: float, n: int = 10) -> dict[str, float]:
    return {"p50": p50, "p99": p50 * 2, "mean": p50, "n": n}


def sample_result(osrm: dict[str, Any]) -> dict[str, Any]:
    engines = {key: {**_timing(p50), "pairs": 10, "mismatches": 0}
               for key, p50 in (("dijkstra", 50_000.0), ("networkx", 20_000.0),
                                ("astar", 30_000.0), ("cch", 100.0))}
    region = {
        "source": "roads.json", "nodes": 10, "nodes_used": 8, "segments": 20, "turns": 30,
        "prep": {"read_s": 1.0, "build_graph_s": 0.5, "index_s": 0.1, "cch_build_s": 1.5,
                 "customize_s": 0.01, "load_region_s": 3.0},
        "memory": {"graph_bytes": 2**20, "index_bytes": 2**20,
                   "cch_topology_disk_bytes": 2**20, "bytes_per_node": 300.0,
                   "bytes_per_segment": 200.0},
        "pairs": 10, "engines": engines, "route": {**_timing(900.0), "failures": 0},
        "route_parts": {"snap_both": _timing(200.0), "shortest_path": _timing(200.0),
                        "steps_and_polyline": _timing(400.0)},
        "matrix": {"25": {**_timing(12.0), "cells_ok": 625}},
        "traffic": {"segments": 2, "share": 0.01, "apply": _timing(0.1),
                    "customize_and_swap": _timing(10.0), "total": _timing(10.1)},
        "osrm": osrm,
    }
    return {"machine": {"cpu_model": "test CPU", "nproc": 2, "python": "3.11",
                        "packages": {"grpcio": "1"}, "date": "2026-01-01"},
            "settings": {"pairs": 10, "baseline_pairs": 10, "seed": 1, "matrix_sizes": [25],
                         "matrix_runs": 3, "traffic_share": 0.01, "rounds": 2,
                         "duration": 3.0},
            "elapsed_s": 120.0, "regions": {"gothenburg": region}, "e2e": [],
            "runtime_ceiling": {}}


def test_report_without_osrm_shows_dashes_and_says_why() -> None:
    text = report(sample_result({"errors": {}, "unavailable": "no Python 3.12 found"}))
    assert "| CCH (ours, RoutingKit C++) | 10 | 100 / 200 |" in text
    assert "- [1]" in text
    assert "[1] OSRM not run: no Python 3.12 found" in text


def test_report_footnotes_a_failed_osrm_step() -> None:
    osrm = {"errors": {"extract": "osrm-extract exited 1: bad input"}, "convert_s": 1.0}
    text = report(sample_result(osrm))
    assert "[1] Gothenburg, OSRM extract: osrm-extract exited 1: bad input" in text
    assert "| OSRM: GeoJSON -> OSM XML (Gothenburg only) | 1.00 |" in text
