"""Maps tiles and location ingest: rendering, Mapnik, cached tiles and ingest end to end.

``python -m bench.maps_tiles_ingest`` (``make bench-maps-tiles-ingest``), in one run:

1. Tile rendering in process: ``TileSet.load`` on the default tile sources (Helsinki,
   Monaco, Gothenburg), then for zooms 10, 12, 14, 16 and 18 the ``--block`` x
   ``--block`` tiles around each region's centre that a region covers, PNG and MVT,
   ``--rounds`` timed passes after an untimed one: render p50/p99, tiles/s on one core,
   tile bytes median/p90/max (what a client downloads).
2. The peer, Mapnik (Debian's ``python3-mapnik``, run by ``/usr/bin/python3`` in a
   subprocess, ``bench/_mapnik_peer.py``): Helsinki's features exported from our own
   feature store to GeoJSON in Web Mercator metres, a Mapnik XML style made from our style
   tables (the same colours, widths per zoom, draw order and per-feature first zoom),
   the same Helsinki tiles at 256 px to PNG, timed inside the Mapnik process; our time
   over Mapnik's per zoom. Missing, Mapnik is installed with apt-get (said so in the
   results); if it cannot be installed or run, the peer rows are left out with the reason.
3. Cached tiles end to end: one ``python -m geoplex.servers.maps`` process (tiles on,
   Redis from the local backends, a Monaco-only gazetteer for a quick start); the step 1
   PNG tiles warmed, then closed-loop HTTP GETs of them (aiohttp, ``--concurrency``),
   the same with ``If-None-Match`` (304), gRPC ``GetTile``, interleaved with the runtime
   ceiling on the same process (``MeshService/Ping`` answering as many bytes as the mean
   tile); and a cold row: the first request of never-seen tiles, one at a time.
4. Location ingest end to end: an etcd, a broker, a routing process (Gothenburg, car) and
   a maps process with ingest on (MongoDB from the local backends, a fresh database,
   traffic flushed every second). Idle history lag (sentinel batches: from the ack to the
   batch being in ``trip_history``); traffic lag (slow drivers on a route's first few
   hundred metres: from the last batch's ack to the traffic-aware ETA rising and to
   ``GetTraffic`` showing the segments); then ``--clients`` simulated clients sending
   ``ReportLocationBatch`` of ``--batch`` fixes 1 s apart along a real Gothenburg route
   at increasing rates (``--rates`` batches/s, then all clients back to back): accepted
   fixes/s, batch p50/p99, the history lag under that load. And the batching report:
   at 1 fix/s and a batch every T s, requests per hour and bytes per request and per fix.
5. Route response sizes: ``--routes`` seeded Gothenburg routes, ``ComputeRoute``'s
   response bytes as served (steps always come), without the steps (the same message
   with them cleared: the API has no switch), with ``include_segments``, the polyline's
   share.

Every timed part first waits (``--quiet-max`` s at most) for an idle machine. Writes
``bench/results/maps_tiles_ingest.json`` and the ``maps-tiles-ingest`` section of
``BENCHMARKS.md`` (``--no-write`` to skip; ``--quick`` shrinks every part and implies it;
``--report-only`` re-renders from the results file). Location fixes are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import aiohttp
import grpc.aio
import numpy as np
import polyline as polyline_codec
from pymongo import AsyncMongoClient

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import GeoplexError, UnavailableError
from geoplex.clients.maps import MapsClient, batch, fix
from geoplex.clients.routing import RoutingClient
from geoplex.infra import data
from geoplex.infra.local import BackendUrls, LocalInfra
from geoplex.maps.v1 import maps_pb2 as mpb
from geoplex.maps.v1 import maps_pb2_grpc
from geoplex.mesh.v1 import mesh_pb2, mesh_pb2_grpc
from geoplex.routing.v1 import routing_pb2 as rpb
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.servers._runtime.geo import haversine_m
from geoplex.servers.maps.adapters import osm_map
from geoplex.servers.maps.config import MapsConfig
from geoplex.servers.maps.locations import hour_of
from geoplex.servers.maps.tiles import MapSource, TileSet, raster, style
from geoplex.servers.maps.tiles.features import FeatureStore
from geoplex.servers.maps.tiles.tilemath import tile_bounds_m, tile_of, unproject

from ._common import (run_and_report, Steps, log, CpuSample, LoadResult, ServerProcesses, closed_loop, cpu_usage,
                      fmt_num, free_port, latency_summary, local_backends, machine_info,
                      machine_line, markdown_table, per_worker, percentile, read_results,
                      start_server_processes, wait_for_quiet, wait_for_quiet_async,
                      write_results, write_section)

NAME = "maps-tiles-ingest"        # the BENCHMARKS.md section
RESULTS = "maps_tiles_ingest"     # bench/results/<RESULTS>.json
TITLE = "## Maps: tiles and location ingest"
ZOOMS = (10, 12, 14, 16, 18)
FORMATS = ("png", "mvt")
PEER_REGION = "helsinki"
MAPNIK_PYTHON = "/usr/bin/python3"
MAPNIK_PACKAGE = "python3-mapnik"
MAPNIK_FORMAT = "png8:m=o:c=128"  # a 128-colour octree palette, as ours quantises
PEER_SCRIPT = Path(__file__).resolve().parent / "_mapnik_peer.py"
SCALE_Z0 = 559_082_264.028717     # Mapnik's scale denominator of a 256 px tile at zoom 0
SCALE_SLACK = 1.4                 # a zoom's rules hold within this factor of its scale
MERC = ("+proj=merc +a=6378137 +b=6378137 +lat_ts=0.0 +lon_0=0.0 +x_0=0.0 +y_0=0 +k=1.0 "
        "+units=m +nadgrids=@null +wktext +no_defs +over")
LABEL_FONT = "DejaVu Sans Book"
BATCH_PERIODS_S = (1, 5, 10, 30)
FRAMING_BYTES = 5 + 9             # gRPC message prefix + HTTP/2 DATA frame header
REGION = "gothenburg"
SLOW_MPS = 2.5                    # the traffic trials' crawling drivers
SLOW_M = 500.0                    # ... over the first this many metres of a route
SLOW_DRIVERS = 3
DRIVE_MPS = 10.0                  # the load clients' speed along their route
HISTORY_POLL_S = 0.01
HISTORY_TIMEOUT_S = 60.0
TRAFFIC_POLL_S = 0.05
TRAFFIC_TIMEOUT_S = 30.0
ROUTING_CACHE = (Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
                 / "geoplex" / "bench-maps-tiles-ingest-routing")
LOG_ENV = {"GEOPLEX_LOG_LEVEL": "warning", "GEOPLEX_TRACING": "off"}

TileId = tuple[int, int, int]
LatLon = tuple[float, float]





@dataclass
class Quiet:
    """Waits for an idle machine before each timed part; what it found each time."""

    max_wait: float
    waits: list[dict[str, Any]] = field(default_factory=list)

    def _note(self, label: str, busy: float, waited: float) -> float:
        self.waits.append({"label": label, "busy_pct": busy, "waited_s": waited,
                           "timed_out": busy >= 20.0})
        if busy >= 20.0:
            log(f"    (machine still {busy:.0f}% busy before {label})")
        return busy

    def __call__(self, label: str) -> float:
        t0 = time.perf_counter()
        busy = wait_for_quiet(max_wait=self.max_wait)
        return self._note(label, busy, time.perf_counter() - t0)

    async def wait(self, label: str) -> float:
        t0 = time.perf_counter()
        busy = await wait_for_quiet_async(max_wait=self.max_wait)
        return self._note(label, busy, time.perf_counter() - t0)


# =========================================================================== statistics

def size_summary(sizes: Sequence[int]) -> dict[str, float]:
    """Median, p90, max and mean of byte counts (nan when empty)."""
    values = sorted(float(s) for s in sizes)
    return {"median_bytes": percentile(values, 50), "p90_bytes": percentile(values, 90),
            "max_bytes": values[-1] if values else math.nan,
            "mean_bytes": sum(values) / len(values) if values else math.nan}


def time_summary(times_s: Sequence[float]) -> dict[str, float]:
    """Latency percentiles (ms) and the rate one core reaches doing them back to back."""
    total = sum(times_s)
    return {"n": len(times_s), **latency_summary(times_s),
            "per_s": len(times_s) / total if total > 0 else math.nan}


def ratio(a: Any, b: Any) -> float:
    """``a / b``, nan unless both are finite and ``b`` is not 0."""
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return math.nan
    return float(a) / float(b)


def lag_summary(lags_s: Sequence[float | None]) -> dict[str, Any]:
    """p50/p90/max in ms of the lags seen, and how many were never seen (None)."""
    seen = sorted(x for x in lags_s if x is not None)
    return {"n": len(lags_s), "seen": len(seen), "missed": len(lags_s) - len(seen),
            "p50_ms": percentile(seen, 50) * 1e3, "p90_ms": percentile(seen, 90) * 1e3,
            "max_ms": seen[-1] * 1e3 if seen else math.nan}


# =========================================================================== 1. tiles in process

def region_tiles(tileset: TileSet, zooms: Sequence[int], block: int
                 ) -> dict[str, list[TileId]]:
    """Per region, the ``block`` x ``block`` tiles around its centre at each zoom that
    some region covers."""
    out: dict[str, list[TileId]] = {}
    for name, (south, west, north, east) in tileset.regions():
        lat, lon = (south + north) / 2, (west + east) / 2
        tiles: list[TileId] = []
        for z in zooms:
            cx, cy = tile_of(lat, lon, z)
            lo = -(block // 2)
            for dx in range(lo, lo + block):
                for dy in range(lo, lo + block):
                    x, y = cx + dx, cy + dy
                    if 0 <= x < 1 << z and 0 <= y < 1 << z and tileset.covers(z, x, y):
                        tiles.append((z, x, y))
        out[name] = tiles
    return out


def render_cell(times_s: Sequence[float], sizes: Sequence[int], tiles: int) -> dict[str, Any]:
    return {"tiles": tiles, **time_summary(times_s), **size_summary(sizes)}


def render_in_process(tileset: TileSet, tiles_by_region: Mapping[str, Sequence[TileId]],
                      rounds: int, quiet: Quiet) -> dict[str, Any]:
    """Every tile in both formats: once untimed (sizes), then ``rounds`` timed passes."""
    times: dict[tuple[str, int, str], list[float]] = {}
    sizes: dict[tuple[str, int, str], list[int]] = {}
    for region, tiles in tiles_by_region.items():
        for z, x, y in tiles:
            for fmt in FORMATS:
                got = tileset.render(z, x, y, fmt) or b""
                sizes.setdefault((region, z, fmt), []).append(len(got))
                times.setdefault((region, z, fmt), [])
    busy = quiet("tile rendering")
    clock = time.perf_counter
    cpu0 = CpuSample.take()
    for k in range(rounds):
        for region, tiles in tiles_by_region.items():
            for z, x, y in tiles:
                for fmt in FORMATS:
                    t0 = clock()
                    tileset.render(z, x, y, fmt)
                    times[(region, z, fmt)].append(clock() - t0)
        log(f"    pass {k + 1}/{rounds} done")
    cpu = cpu_usage(cpu0, CpuSample.take())
    cells: list[dict[str, Any]] = []
    for (region, z, fmt), ts in sorted(times.items()):
        cells.append({"region": region, "zoom": z, "format": fmt,
                      **render_cell(ts, sizes[(region, z, fmt)], len(sizes[(region, z, fmt)]))})
    pooled: list[dict[str, Any]] = []
    for fmt in FORMATS:
        zoom_keys: list[int | str] = [*sorted({k[1] for k in times}), "all"]
        for zk in zoom_keys:
            keys = [k for k in times if k[2] == fmt and (zk == "all" or k[1] == zk)]
            ts = [t for k in keys for t in times[k]]
            ss = [s for k in keys for s in sizes[k]]
            pooled.append({"zoom": zk, "format": fmt, **render_cell(ts, ss, len(ss))})
    for c in pooled:
        log(f"    z{c['zoom']!s:<3} {c['format']}: {c['tiles']:>3} tiles, p50 "
            f"{c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms, {c['per_s']:,.0f} tiles/s, "
            f"median {c['median_bytes']:,.0f} B, max {c['max_bytes']:,.0f} B")
    return {"rounds": rounds, "busy_before_pct": busy,
            "other_cpu_pct": cpu.get("other_cpu_pct", math.nan),
            "tiles": {r: len(t) for r, t in tiles_by_region.items()},
            "cells": cells, "pooled": pooled}


# =========================================================================== 2. Mapnik

def scale_denominator(z: int) -> float:
    """Mapnik's scale denominator when a 256 px map shows one zoom ``z`` tile."""
    return SCALE_Z0 / (1 << z)


def _ring(points: np.ndarray[Any, np.dtype[np.float64]], close: bool) -> list[list[float]]:
    out = np.round(points, 2).tolist()
    if close and out and out[0] != out[-1]:
        out.append(out[0])
    return [[float(a), float(b)] for a, b in out]


def store_geojson(store: FeatureStore, layer: int) -> dict[str, Any]:
    """The store's features of ``layer`` as GeoJSON in Web Mercator metres, in the store's
    (draw) order, with their class ``c``, first zoom ``mz`` and, for roads, ``name``."""
    classes = style.LAYER_CLASSES[layer]
    kind = style.LAYER_GEOMETRY[layer]
    features: list[dict[str, Any]] = []
    for f in np.flatnonzero(store.layer == layer).tolist():
        first, last = int(store.part_off[f]), int(store.part_off[f + 1])
        parts = [store.xy[int(store.point_off[p]):int(store.point_off[p + 1])]
                 for p in range(first, last)]
        geometry: dict[str, Any]
        if kind == style.POINT:
            x, y = np.round(parts[0][0], 2).tolist()
            geometry = {"type": "Point", "coordinates": [float(x), float(y)]}
        elif kind == style.LINE:
            lines = [_ring(p, close=False) for p in parts]
            geometry = ({"type": "LineString", "coordinates": lines[0]} if len(lines) == 1
                        else {"type": "MultiLineString", "coordinates": lines})
        else:
            polygons: list[list[list[list[float]]]] = []
            for p, is_outer in zip(parts, store.outer[first:last].tolist()):
                if is_outer or not polygons:
                    polygons.append([])
                polygons[-1].append(_ring(p, close=True))
            geometry = ({"type": "Polygon", "coordinates": polygons[0]} if len(polygons) == 1
                        else {"type": "MultiPolygon", "coordinates": polygons})
        props: dict[str, Any] = {"c": classes[int(store.cls[f])],
                                 "mz": int(store.min_zoom[f])}
        if layer == style.ROADS:
            props["name"] = store.string(int(store.name_id[f]))
        features.append({"type": "Feature", "properties": props, "geometry": geometry})
    return {"type": "FeatureCollection", "features": features}


def _rgb(c: Sequence[int]) -> str:
    return f"rgb({c[0]},{c[1]},{c[2]})"


def _rule(z: int, condition: str, symbolizers: Sequence[str]) -> str:
    sd = scale_denominator(z)
    where = f"<Filter>{escape(condition)}</Filter>" if condition else ""
    return (f"<Rule><MaxScaleDenominator>{sd * SCALE_SLACK:.3f}</MaxScaleDenominator>"
            f"<MinScaleDenominator>{sd / SCALE_SLACK:.3f}</MinScaleDenominator>{where}"
            + "".join(symbolizers) + "</Rule>")


def _line(colour: Sequence[int], width: float) -> str:
    return (f'<LineSymbolizer stroke="{_rgb(colour)}" stroke-width="{width:.2f}" '
            'stroke-linecap="round" stroke-linejoin="round"/>')


def mapnik_xml(files: Mapping[str, Path], zooms: Sequence[int], labels: bool = True) -> str:
    """A Mapnik map drawing the exported layers (``files``: layer name -> GeoJSON) as our
    raster tiles do, from the tables of ``geoplex.servers.maps.tiles.style``: the
    background; land use, water and buildings (outlined from zoom 16) filled; road
    casings then fills, minor under major (the export is in class order), the widths of
    ``style.road_width``; POI dots from zoom 17; street names along their roads from
    zoom 16. A rule per zoom and class, holding only features whose first zoom ``mz``
    has come (the same selection as ours)."""
    styles: dict[str, list[str]] = {k: [] for k in
                                    ("landuse", "water", "buildings", "road-casing",
                                     "road-fill", "pois", "road-labels")}
    for z in zooms:
        if z >= style.LAYER_MIN_ZOOM[style.LANDUSE]:
            for cls in style.LAYER_CLASSES[style.LANDUSE]:
                styles["landuse"].append(_rule(
                    z, f"[c] = '{cls}' and [mz] <= {z}",
                    [f'<PolygonSymbolizer fill="{_rgb(style.LANDUSE_FILL[cls])}"/>']))
        if z >= style.LAYER_MIN_ZOOM[style.WATER]:
            styles["water"].append(_rule(z, f"[mz] <= {z}", [
                f'<PolygonSymbolizer fill="{_rgb(style.WATER_FILL)}"/>']))
        if z >= style.LAYER_MIN_ZOOM[style.BUILDINGS]:
            symbolizers = [f'<PolygonSymbolizer fill="{_rgb(style.BUILDING_FILL)}"/>']
            if z >= 16:
                symbolizers.append(f'<LineSymbolizer stroke="{_rgb(style.BUILDING_OUTLINE)}" '
                                   'stroke-width="0.5"/>')
            styles["buildings"].append(_rule(z, f"[mz] <= {z}", symbolizers))
        for cls in style.ROAD_CLASSES:
            if z < style.ROAD_MIN_ZOOM[cls]:
                continue
            width = style.road_width(cls, z)
            where = f"[c] = '{cls}' and [mz] <= {z}"
            if cls in style.ROAD_CASING and z >= style.CASING_MIN_ZOOM[cls]:
                styles["road-casing"].append(_rule(z, where, [
                    _line(style.ROAD_CASING[cls], width + 2 * style.CASING_PX)]))
            styles["road-fill"].append(_rule(z, where, [_line(style.ROAD_FILL[cls], width)]))
        if z >= style.POI_DOT_MIN_ZOOM:
            styles["pois"].append(_rule(z, f"[mz] <= {z}", [
                f'<MarkersSymbolizer fill="{_rgb(style.POI_FILL)}" stroke="rgb(255,255,255)" '
                'stroke-width="1" width="5" height="5" allow-overlap="true"/>']))
        if labels and z >= style.LABEL_MIN_ZOOM:
            fill = style.LABEL_FILL
            halo = style.LABEL_HALO
            styles["road-labels"].append(_rule(z, f"[name] != '' and [mz] <= {z}", [
                f'<TextSymbolizer face-name="{LABEL_FONT}" size="{raster_font_size()}" '
                f'fill="{_rgb(fill)}" halo-fill="rgba({halo[0]},{halo[1]},{halo[2]},'
                f'{halo[3] / 255:.2f})" halo-radius="2" placement="line" '
                'avoid-edges="true" max-char-angle-delta="25">[name]</TextSymbolizer>']))
    layers = [("landuse", "landuse", ["landuse"]), ("water", "water", ["water"]),
              ("buildings", "buildings", ["buildings"]),
              ("roads", "roads", ["road-casing", "road-fill"]), ("pois", "pois", ["pois"])]
    if labels:
        layers.append(("labels", "roads", ["road-labels"]))
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           f'<Map srs={quoteattr(MERC)} background-color="{_rgb(style.BACKGROUND)}" '
           'buffer-size="32">']
    for name, rules in styles.items():
        if rules:
            out.append(f'<Style name="{name}">' + "".join(rules) + "</Style>")
    for layer_name, source, style_names in layers:
        used = [s for s in style_names if styles[s]]
        if not used or source not in files:
            continue
        out.append(f'<Layer name="{layer_name}" srs={quoteattr(MERC)}>'
                   + "".join(f"<StyleName>{s}</StyleName>" for s in used)
                   + '<Datasource><Parameter name="type">geojson</Parameter>'
                   f"<Parameter name=\"file\">{escape(str(files[source]))}</Parameter>"
                   "</Datasource></Layer>")
    out.append("</Map>")
    return "\n".join(out)


def raster_font_size() -> int:
    return int(raster.LABEL_FONT_SIZE)


def mapnik_probe() -> tuple[bool, str]:
    """Whether Debian's Python imports mapnik, and its version or the error."""
    if not Path(MAPNIK_PYTHON).is_file():
        return False, f"{MAPNIK_PYTHON} is missing"
    try:
        done = subprocess.run([MAPNIK_PYTHON, "-c",
                               "import mapnik; print(mapnik.mapnik_version())"],
                              capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if done.returncode == 0:
        return True, done.stdout.strip()
    return False, (done.stderr.strip().splitlines() or ["import mapnik failed"])[-1]


def ensure_mapnik(install: bool) -> dict[str, Any]:
    """Mapnik for the peer: ``available``, ``version``, ``installed_now`` (apt-get ran
    here), ``error`` (why not)."""
    ok, said = mapnik_probe()
    if ok:
        return {"available": True, "version": said, "installed_now": False}
    if not install:
        return {"available": False, "error": f"not installed ({said}); --no-mapnik-install"}
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"  Mapnik missing ({said}): installing the Debian package {MAPNIK_PACKAGE} "
        "with apt-get...")
    errors: list[str] = []
    for argv in ([*sudo, "apt-get", "install", "-y", "-q", MAPNIK_PACKAGE],
                 [*sudo, "apt-get", "update", "-q"],
                 [*sudo, "apt-get", "install", "-y", "-q", MAPNIK_PACKAGE]):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900,
                                  env=env, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{' '.join(argv)}: {type(exc).__name__}: {exc}")
            break
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["failed"])[-1]
            errors.append(f"{' '.join(argv)}: exit {done.returncode}: {tail}")
            continue
        if argv[-1] == MAPNIK_PACKAGE:
            ok, said = mapnik_probe()
            if ok:
                log(f"  installed {MAPNIK_PACKAGE}: Mapnik {said}")
                return {"available": True, "version": said, "installed_now": True}
    return {"available": False, "installed_now": False,
            "error": "; ".join(errors) or f"installed, but {said}"}


def mapnik_peer(store: FeatureStore, tiles: Sequence[TileId], rounds: int, install: bool,
                quiet: Quiet, save: Path | None) -> dict[str, Any]:
    """Mapnik on the same features and tiles; its per-tile times, or why it did not run."""
    info = ensure_mapnik(install)
    if not info["available"]:
        log(f"  Mapnik unavailable: {info['error']}; the peer rows are left out")
        return info
    with tempfile.TemporaryDirectory(prefix="geoplex-bench-mapnik-") as work:
        root = Path(work)
        files: dict[str, Path] = {}
        counts: dict[str, int] = {}
        for layer, name in enumerate(style.LAYER_NAMES):
            collection = store_geojson(store, layer)
            if not collection["features"]:
                continue
            files[name] = root / f"{name}.geojson"
            files[name].write_text(json.dumps(collection, separators=(",", ":")))
            counts[name] = len(collection["features"])
        xml = root / "map.xml"
        xml.write_text(mapnik_xml(files, sorted({t[0] for t in tiles})))
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            shutil.copy(xml, save / "map.xml")
        job = {"xml": str(xml), "size": 256, "format": MAPNIK_FORMAT, "rounds": rounds,
               "tiles": [[z, x, y, *tile_bounds_m(z, x, y)] for z, x, y in tiles],
               "save": str(save) if save is not None else None}
        log(f"  exported {', '.join(f'{k} {v:,}' for k, v in counts.items())} features; "
            f"Mapnik draws {len(tiles)} tiles x {rounds} rounds...")
        busy = quiet("Mapnik")
        try:
            done = subprocess.run([MAPNIK_PYTHON, str(PEER_SCRIPT)], input=json.dumps(job),
                                  capture_output=True, text=True, timeout=900, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return {**info, "available": False, "error": f"{type(exc).__name__}: {exc}"}
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            log(f"  the Mapnik peer failed (exit {done.returncode}):\n{tail}")
            return {**info, "available": False,
                    "error": f"peer exit {done.returncode}: {tail[-400:]}"}
        answer = json.loads(done.stdout)
    per_tile = answer["tiles"]
    zooms: list[dict[str, Any]] = []
    for z in sorted({t["z"] for t in per_tile}):
        rows = [t for t in per_tile if t["z"] == z]
        total = [r + e for t in rows for r, e in zip(t["render_s"], t["encode_s"])]
        zooms.append({"zoom": z, "tiles": len(rows), **time_summary(total),
                      "render_only": time_summary([r for t in rows for r in t["render_s"]]),
                      **size_summary([t["bytes"] for t in rows])})
    for c in zooms:
        log(f"    Mapnik z{c['zoom']}: {c['tiles']} tiles, p50 {c['p50_ms']:.2f} ms, p99 "
            f"{c['p99_ms']:.2f} ms, median {c['median_bytes']:,.0f} B")
    return {**info, "mapnik_version": answer["mapnik_version"], "load_s": answer["load_s"],
            "busy_before_pct": busy, "features": counts, "format": MAPNIK_FORMAT,
            "rounds": rounds, "labels_font": LABEL_FONT,
            "scale_denominators": {str(t["z"]): t["scale_denominator"] for t in per_tile},
            "zooms": zooms}


def save_ours(tileset: TileSet, tiles: Sequence[TileId], into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    for z, x, y in tiles:
        got = tileset.render(z, x, y, "png")
        if got:
            (into / f"ours-{z}-{x}-{y}.png").write_bytes(got)


# =========================================================================== 3. cached tiles

def runtime_ceiling() -> dict[str, Any]:
    """The empty unary Ping per concurrency from ``bench/results/runtime.json`` (raw
    stub, one process, one channel), another run, for scale."""
    try:
        runtime = read_results("runtime")
    except (OSError, ValueError):
        return {}
    cells = {str(c["concurrency"]): c["calls_per_s"] for c in runtime.get("cells", [])
             if c.get("server") == "base" and c.get("call") == "unary"
             and c.get("response_size") == 0 and c.get("client") == "stub"
             and c.get("channels") == 1}
    return {"source": "bench/results/runtime.json",
            "date": runtime.get("machine", {}).get("date", ""), "calls_per_s": cells}


def cold_candidates(stores: Sequence[FeatureStore], zooms: Sequence[int], count: int,
                    exclude: set[TileId], rng: random.Random) -> list[TileId]:
    """``count`` distinct tiles under random feature points of the stores, none of
    ``exclude``: tiles nobody asked for yet."""
    out: list[TileId] = []
    seen = set(exclude)
    tries = 0
    while len(out) < count and tries < count * 200:
        tries += 1
        store = rng.choice(list(stores))
        if store.xy.shape[0] == 0:
            continue
        i = rng.randrange(store.xy.shape[0])
        lat, lon = unproject(float(store.xy[i, 0]), float(store.xy[i, 1]))
        z = rng.choice(list(zooms))
        x, y = tile_of(lat, lon, z)
        if (z, x, y) not in seen:
            seen.add((z, x, y))
            out.append((z, x, y))
    return out


def maps_tiles_env(redis_url: str | None, sources: Sequence[tuple[str, Path]], monaco: Path,
                   http_port: int, state: str) -> dict[str, str]:
    return {"GEOPLEX_MAPS_PORT": "0", "GEOPLEX_MAPS_HTTP_PORT": str(http_port),
            "GEOPLEX_MAPS_TILE_SOURCES": ",".join(f"{n}={p}" for n, p in sources),
            "GEOPLEX_MAPS_PLACES": "none", "GEOPLEX_MAPS_EXTRACTS": f"Monaco={monaco}",
            "GEOPLEX_REDIS_URL": redis_url or "", "GEOPLEX_MONGO_URI": "",
            "GEOPLEX_ROUTING_TARGET": f"127.0.0.1:{free_port()}",  # unused: nothing routes
            "GEOPLEX_STATE_DIR": state, **LOG_ENV}


async def tiles_e2e(args: argparse.Namespace, env: Mapping[str, str], http_port: int,
                    warm: Sequence[TileId], cold: Sequence[TileId], quiet: Quiet
                    ) -> dict[str, Any]:
    out: dict[str, Any] = {"warm_tiles": len(warm), "cold_tiles": len(cold), "cells": []}
    t0 = time.perf_counter()
    log("  starting one maps server process (tiles on, Monaco gazetteer)...")
    with start_server_processes([sys.executable, "-m", "geoplex.servers.maps"], 1, env,
                                ready_timeout=300) as servers:
        out["start_s"] = time.perf_counter() - t0
        base = f"http://127.0.0.1:{http_port}"
        log(f"  ready in {out['start_s']:.1f} s: gRPC {servers.address}, HTTP {base}")
        channel = grpc.aio.insecure_channel(servers.address)
        try:
            await _tiles_measure(args, servers, channel, base, warm, cold, quiet, out)
        finally:
            await channel.close()
            server = servers.processes[0]
            if not server.running:
                tail = server.log_tail(40)
                log(f"  the maps server exited ({server.returncode}):\n{tail}")
                out["server_exit"] = server.returncode
                out["server_log_tail"] = tail
    return out


def _url(base: str, tile: TileId) -> str:
    z, x, y = tile
    return f"{base}/tiles/{z}/{x}/{y}.png"


async def _tiles_measure(args: argparse.Namespace, servers: ServerProcesses,
                         channel: grpc.aio.Channel, base: str, warm: Sequence[TileId],
                         cold: Sequence[TileId], quiet: Quiet, out: dict[str, Any]) -> None:
    stub = maps_pb2_grpc.MapsServiceStub(channel)
    mesh = mesh_pb2_grpc.MeshServiceStub(channel)
    etags: dict[TileId, str] = {}
    sizes: list[int] = []
    warm_s: list[float] = []
    async with aiohttp.ClientSession() as session:
        for tile in warm:  # first requests: rendered, put in the LRU and Redis
            t0 = time.perf_counter()
            async with session.get(_url(base, tile)) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"warming a tile: HTTP {resp.status}")
                etags[tile] = resp.headers["ETag"]
            warm_s.append(time.perf_counter() - t0)
            sizes.append(len(body))
        out["warm"] = {"tiles": len(warm), **time_summary(warm_s), **size_summary(sizes)}
        log(f"  warmed {len(warm)} tiles (first requests p50 {out['warm']['p50_ms']:.1f} ms)")
        # cold: never-seen tiles, one at a time, on a warmed-up server
        await quiet.wait("cold tiles")
        cold_s: list[float] = []
        cold_sizes: list[int] = []
        for tile in cold:
            t0 = time.perf_counter()
            async with session.get(_url(base, tile)) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"a cold tile: HTTP {resp.status}")
            cold_s.append(time.perf_counter() - t0)
            cold_sizes.append(len(body))
        out["cold"] = {"tiles": len(cold), **time_summary(cold_s), **size_summary(cold_sizes)}
        log(f"  cold: {len(cold)} never-seen tiles, p50 {out['cold']['p50_ms']:.1f} ms, p99 "
            f"{out['cold']['p99_ms']:.1f} ms")
    size = int(np.mean(sizes)) if sizes else 0
    out["mean_tile_bytes"] = size
    ping_req = mesh_pb2.PingRequest(response_size=size)
    urls = [(_url(base, t), etags[t]) for t in warm]
    requests = [mpb.GetTileRequest(z=z, x=x, y=y, format=mpb.TILE_FORMAT_PNG)
                for z, x, y in warm]
    for conc in args.concurrency:
        if not servers.processes[0].running:
            break
        connector = aiohttp.TCPConnector(limit=conc, limit_per_host=conc)
        async with aiohttp.ClientSession(connector=connector) as session:
            url_cycle = itertools.cycle(urls)
            req_cycle = itertools.cycle(requests)

            async def http_200() -> None:
                url, _etag = next(url_cycle)
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}")

            async def http_304() -> None:
                url, etag = next(url_cycle)
                async with session.get(url, headers={"If-None-Match": etag}) as resp:
                    await resp.read()
                    if resp.status != 304:
                        raise RuntimeError(f"HTTP {resp.status}, expected 304")

            async def grpc_tile() -> None:
                await stub.GetTile(next(req_cycle), timeout=30)

            async def ping() -> None:
                await mesh.Ping(ping_req, timeout=30)

            ops: dict[str, Callable[[], Any]] = {"http": http_200, "http_304": http_304,
                                                 "grpc": grpc_tile, "ping": ping}
            best: dict[str, LoadResult] = {}
            for _ in range(args.tile_rounds):
                for key, op in ops.items():
                    busy = await quiet.wait(f"{key} c={conc}")
                    got = await closed_loop(per_worker(op), concurrency=conc,
                                            warmup=args.warmup, duration=args.duration,
                                            pids=servers.pids)
                    got.cpu["busy_before_pct"] = busy
                    if key not in best or got.calls_per_s > best[key].calls_per_s:
                        best[key] = got
        cell = {"concurrency": conc, **{k: v.as_dict() for k, v in best.items()}}
        out["cells"].append(cell)
        log(f"  c={conc:>2}: HTTP {best['http'].calls_per_s:,.0f}/s (p50 "
            f"{best['http'].p50_ms:.2f} ms), 304 {best['http_304'].calls_per_s:,.0f}/s, gRPC "
            f"GetTile {best['grpc'].calls_per_s:,.0f}/s, Ping {size} B "
            f"{best['ping'].calls_per_s:,.0f}/s; errors "
            f"{sum(v.errors for v in best.values())}")
        for key, got in best.items():
            if got.errors:
                log(f"    {key}: {got.errors} errors, first: {got.first_error}")


# =========================================================================== 4. ingest

def positions(points: Sequence[LatLon], step_m: float, limit_m: float) -> list[LatLon]:
    """Points every ``step_m`` along a polyline, for its first ``limit_m`` metres."""
    out = [points[0]]
    carry = 0.0
    walked = 0.0
    for a, b in zip(points, points[1:]):
        length = haversine_m(a[0], a[1], b[0], b[1])
        at = step_m - carry
        while at <= length and walked + at <= limit_m:
            f = at / length
            out.append((a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f))
            at += step_m
        carry = length - (at - step_m)
        walked += length
        if walked >= limit_m:
            break
    return out


def ping_pong(points: Sequence[LatLon]) -> list[LatLon]:
    """There and back again: a drive that can loop without a jump."""
    return [*points, *reversed(points[1:-1])] if len(points) > 2 else list(points)


@dataclass
class SimClient:
    """One simulated phone: its user, token and place along a looping drive."""

    user: str
    token: str
    path: Sequence[LatLon]
    start: float            # the time of its first fix (seconds since the epoch)
    offset: int             # where along the path it starts
    k: int = 0              # fixes sent so far

    def next_batch(self, size: int) -> mpb.LocationBatch:
        fixes = []
        for i in range(self.k, self.k + size):
            where = self.path[(self.offset + i) % len(self.path)]
            fixes.append(fix(where, self.start + i, accuracy_m=5.0, speed_mps=DRIVE_MPS))
        out = batch(f"{self.user}-{self.k}", fixes)
        self.k += size
        return out

    def first_time(self, location_batch: mpb.LocationBatch) -> float:
        t = location_batch.fixes[0].time
        return float(t.seconds + t.nanos / 1e9)


def batch_request(fixes: Sequence[mpb.LocationFix], batch_id: str
                  ) -> mpb.ReportLocationBatchRequest:
    return mpb.ReportLocationBatchRequest(batch=batch(batch_id, fixes))


def sample_fixes(path: Sequence[LatLon], count: int, start: float) -> list[mpb.LocationFix]:
    """``count`` phone-like fixes 1 s apart along ``path`` (accuracy, speed, heading)."""
    out = []
    for i in range(count):
        a = path[i % len(path)]
        b = path[(i + 1) % len(path)]
        heading = (math.degrees(math.atan2(b[1] - a[1], b[0] - a[0])) + 360.0) % 360.0
        out.append(fix(a, start + i + 0.123456, accuracy_m=4.7, speed_mps=DRIVE_MPS,
                       heading_deg=heading))
    return out


def batching_rows(request_bytes: Mapping[int, int], periods: Sequence[int] = BATCH_PERIODS_S,
                  fix_hz: float = 1.0, framing: int = FRAMING_BYTES) -> list[dict[str, Any]]:
    """At ``fix_hz`` fixes a second and a batch every T s: requests per hour, fixes per
    request, the request message's bytes (``request_bytes[T]``, serialized), per fix, and
    the body bytes per hour with ``framing`` added to every request."""
    rows = []
    base = 3600.0 / periods[0] if periods else math.nan
    for t in periods:
        per_hour = 3600.0 / t
        fixes = fix_hz * t
        size = request_bytes[t]
        rows.append({"period_s": t, "requests_per_hour": per_hour, "fixes_per_request": fixes,
                     "request_bytes": size, "bytes_per_fix": size / fixes,
                     "wire_bytes_per_request": size + framing,
                     "wire_bytes_per_hour": per_hour * (size + framing),
                     "requests_saved": 1.0 - per_hour / base})
    return rows


def batching_report(path: Sequence[LatLon]) -> dict[str, Any]:
    """Serialized request sizes for a batch every T s at 1 fix/s (batch ids as a phone
    might make them: a UUID's 32 hex digits)."""
    sizes = {t: batch_request(sample_fixes(path, t, time.time() - 600), uuid.uuid4().hex
                              ).ByteSize() for t in BATCH_PERIODS_S}
    one = sample_fixes(path, 1, time.time())[0].ByteSize()
    return {"fix_bytes": one, "framing_bytes": FRAMING_BYTES,
            "rows": batching_rows(sizes)}


@dataclass
class Mesh:
    """The processes of the ingest part and how to reach them."""

    maps: str
    routing: str
    pids: dict[str, int]
    start_s: dict[str, float]


def etcd_infra(state: Path) -> LocalInfra:
    """Our own etcd for the broker (always a fresh one: its CPU is sampled too)."""
    return LocalInfra(state, backends=("etcd",), configured=BackendUrls(),
                      progress=lambda m: log(f"    {m}"))


async def find_route(rt: RoutingClient, a: LatLon, b: LatLon, **kw: Any
                     ) -> rpb.ComputeRouteResponse | None:
    try:
        got = await rt.route(a, b, timeout=30, **kw)
    except GeoplexError:
        return None
    return got if got.routes else None


def road_points(store: FeatureStore, rng: random.Random, count: int) -> list[LatLon]:
    """Random vertices of the store's car roads (minor and up)."""
    first = style.ROAD_CLASSES.index("minor")
    roads = np.flatnonzero((store.layer == style.ROADS) & (store.cls >= first))
    out = []
    for _ in range(count):
        f = int(roads[rng.randrange(roads.size)])
        p = int(store.point_off[int(store.part_off[f])])
        lat, lon = unproject(float(store.xy[p, 0]), float(store.xy[p, 1]))
        out.append((lat, lon))
    return out


def route_pairs(points: Sequence[LatLon], rng: random.Random, count: int,
                min_m: float, max_m: float) -> list[tuple[LatLon, LatLon]]:
    """Up to ``count`` pairs of the points between ``min_m`` and ``max_m`` apart."""
    out = []
    for _ in range(count * 50):
        a, b = rng.choice(list(points)), rng.choice(list(points))
        if min_m <= haversine_m(a[0], a[1], b[0], b[1]) <= max_m:
            out.append((a, b))
            if len(out) == count:
                break
    return out


def route_sizes(answer: rpb.ComputeRouteResponse, with_segments: rpb.ComputeRouteResponse
                ) -> dict[str, Any]:
    """One route's response bytes: as served, without the steps, with segment ids."""
    bare = rpb.ComputeRouteResponse()
    bare.CopyFrom(answer)
    for r in bare.routes:
        del r.steps[:]
    route = answer.routes[0]
    poly = len(route.polyline.encode())
    return {"bytes": answer.ByteSize(), "no_steps_bytes": bare.ByteSize(),
            "segments_bytes": with_segments.ByteSize(), "polyline_bytes": poly,
            "polyline_share": poly / answer.ByteSize(),
            "polyline_share_no_steps": poly / bare.ByteSize(),
            "steps": len(route.steps), "points": len(polyline_codec.decode(route.polyline, 5)),
            "segment_ids": len(with_segments.routes[0].segment_ids),
            "distance_m": route.distance_meters}


async def routes_part(rt: RoutingClient, pairs: Sequence[tuple[LatLon, LatLon]], count: int
                      ) -> tuple[dict[str, Any], list[rpb.ComputeRouteResponse],
                                 list[tuple[LatLon, LatLon]]]:
    rows: list[dict[str, Any]] = []
    answers: list[rpb.ComputeRouteResponse] = []
    used: list[tuple[LatLon, LatLon]] = []
    failed = 0
    for a, b in pairs:
        if len(rows) == count:
            break
        got = await find_route(rt, a, b)
        seg = await find_route(rt, a, b, include_segments=True) if got else None
        if got is None or seg is None:
            failed += 1
            continue
        rows.append(route_sizes(got, seg))
        answers.append(got)
        used.append((a, b))
    summary: dict[str, Any] = {"routes": len(rows), "failed": failed}
    for key in ("bytes", "no_steps_bytes", "segments_bytes", "polyline_bytes", "steps",
                "points", "segment_ids", "distance_m"):
        values = sorted(float(r[key]) for r in rows)
        summary[key] = {"median": percentile(values, 50), "p90": percentile(values, 90),
                        "max": values[-1] if values else math.nan,
                        "mean": sum(values) / len(values) if values else math.nan}
    for key in ("polyline_share", "polyline_share_no_steps"):
        values = sorted(r[key] for r in rows)
        summary[key] = {"median": percentile(values, 50), "min": values[0] if values
                        else math.nan, "max": values[-1] if values else math.nan}
    total = sum(r["bytes"] for r in rows)
    summary["polyline_share_of_all_bytes"] = (sum(r["polyline_bytes"] for r in rows) / total
                                              if total else math.nan)
    summary["bytes_per_km"] = (total / (sum(r["distance_m"] for r in rows) / 1000)
                               if rows else math.nan)
    return summary, answers, used


class HistoryProbe:
    """Sentinel batches: ack to the batch in MongoDB ``trip_history`` (by polling)."""

    def __init__(self, maps: MapsClient, mongo: AsyncMongoClient[dict[str, Any]],
                 database: str, path: Sequence[LatLon], size: int, label: str) -> None:
        self.maps = maps
        self.buckets = mongo[database]["trip_history"]
        self.size = size
        user = f"bench-sentinel-{label}-{uuid.uuid4().hex[:6]}"
        self.client = SimClient(user, mint_token(DEV_SECRET, user), path,
                                time.time() - 4 * 3600, 0)
        self.polls: list[asyncio.Task[float | None]] = []

    async def send(self) -> None:
        b = self.client.next_batch(self.size)
        await self.maps.call(self.maps.stub.ReportLocationBatch,
                             mpb.ReportLocationBatchRequest(batch=b),
                             token=self.client.token, timeout=30)
        acked = time.perf_counter()
        key = f"{self.client.user}|{hour_of(self.client.first_time(b))}"
        self.polls.append(asyncio.create_task(self._poll(key, b.batch_id, acked)))

    async def _poll(self, key: str, batch_id: str, acked: float) -> float | None:
        deadline = acked + HISTORY_TIMEOUT_S
        while time.perf_counter() < deadline:
            if await self.buckets.find_one({"_id": key, "batches": batch_id},
                                           {"_id": 1}) is not None:
                return time.perf_counter() - acked
            await asyncio.sleep(HISTORY_POLL_S)
        return None

    async def lags(self) -> list[float | None]:
        got = list(await asyncio.gather(*self.polls))
        self.polls = []
        return got


async def send_with_retry(maps: MapsClient, request: mpb.ReportLocationBatchRequest,
                          token: str, timeout_s: float = 60.0
                          ) -> mpb.ReportLocationBatchResponse:
    """A batch accepted, retried while ingest is starting (the topic is made on start)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await maps.call(maps.stub.ReportLocationBatch, request, token=token,
                                   timeout=30)
        except UnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def traffic_trial(rt: RoutingClient, maps: MapsClient, a: LatLon, b: LatLon,
                        size: int, trial: int) -> dict[str, Any]:
    """Slow drivers on the route's first SLOW_M metres: how long after the last batch's
    ack the traffic-aware ETA rises, and GetTraffic shows slowed segments there."""
    before = await rt.route(a, b, traffic_aware=True, timeout=30)
    eta0 = before.routes[0].duration.ToTimedelta().total_seconds()
    line = polyline_codec.decode(before.routes[0].polyline, 5)
    spots = positions([(float(p[0]), float(p[1])) for p in line], SLOW_MPS, SLOW_M)
    lats = [p[0] for p in spots]
    lons = [p[1] for p in spots]
    low = (min(lats) - 0.0005, min(lons) - 0.0005)
    high = (max(lats) + 0.0005, max(lons) + 0.0005)
    seg0 = len((await rt.get_traffic(REGION, low, high, timeout=10)).segments)
    start = time.time() - len(spots) - 5.0
    acks: list[float] = []

    async def driver(d: int) -> None:
        user = f"bench-slow-{trial}-{d}-{uuid.uuid4().hex[:6]}"
        token = mint_token(DEV_SECRET, user)
        fixes = [fix(p, start + k + d * 0.3, accuracy_m=5.0) for k, p in enumerate(spots)]
        for n in range(0, len(fixes), size):
            await send_with_retry(maps, batch_request(fixes[n:n + size], f"{user}-{n}"),
                                  token)
            acks.append(time.perf_counter())

    await asyncio.gather(*(driver(d) for d in range(SLOW_DRIVERS)))
    last_ack, first_ack = max(acks), min(acks)
    eta_at: float | None = None
    traffic_at: float | None = None
    eta = eta0
    deadline = last_ack + TRAFFIC_TIMEOUT_S
    while time.perf_counter() < deadline and (eta_at is None or traffic_at is None):
        if eta_at is None:
            got = await rt.route(a, b, traffic_aware=True, timeout=10)
            eta = got.routes[0].duration.ToTimedelta().total_seconds()
            if eta > eta0 * 1.02 + 2.0:
                eta_at = time.perf_counter()
        if traffic_at is None:
            seen = await rt.get_traffic(REGION, low, high, timeout=10)
            if len(seen.segments) > seg0:
                traffic_at = time.perf_counter()
        await asyncio.sleep(TRAFFIC_POLL_S)
    return {"batches": len(acks), "fixes": len(spots) * SLOW_DRIVERS,
            "send_s": last_ack - first_ack, "eta_before_s": eta0, "eta_after_s": eta,
            "eta_lag_s": eta_at - last_ack if eta_at is not None else None,
            "traffic_lag_s": traffic_at - last_ack if traffic_at is not None else None}


async def rate_step(maps: MapsClient, clients: Sequence[SimClient], rate: float | None,
                    duration: float, size: int, probe: HistoryProbe,
                    pids: Sequence[int]) -> dict[str, Any]:
    """Every client sends its batches one after another (the next once the last is
    acknowledged), at ``rate`` batches/s over all of them (open loop: a batch due while
    its client still waits goes as soon as it can), or back to back (``rate`` None); a
    sentinel batch every half second for the history lag."""
    latencies: list[float] = []
    accepted = rejected = errors = 0
    first_error: str | None = None
    n = len(clients)
    t0 = time.perf_counter()
    end = t0 + duration
    last_done = t0

    async def run(ci: int, c: SimClient) -> None:
        nonlocal accepted, rejected, errors, first_error, last_done
        k = 0
        while True:
            if rate is not None:
                due = t0 + (ci + k * n) / rate
                if due >= end:
                    return
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            elif time.perf_counter() >= end:
                return
            b = c.next_batch(size)
            started = time.perf_counter()
            try:
                got = await maps.call(maps.stub.ReportLocationBatch,
                                      mpb.ReportLocationBatchRequest(batch=b), token=c.token,
                                      timeout=30)
            except GeoplexError as exc:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
            else:
                done = time.perf_counter()
                latencies.append(done - started)
                accepted += got.accepted
                rejected += len(got.rejected)
                last_done = max(last_done, done)
            k += 1

    async def sentinels() -> None:
        while time.perf_counter() < end:
            with contextlib.suppress(GeoplexError):
                await probe.send()
            await asyncio.sleep(0.5)

    cpu0 = CpuSample.take(pids)
    await asyncio.gather(*(run(i, c) for i, c in enumerate(clients)), sentinels())
    cpu = cpu_usage(cpu0, CpuSample.take(pids))
    elapsed = max(duration, last_done - t0)
    lags = await probe.lags()
    return {"rate_batches_per_s": rate, "offered_fixes_per_s": rate * size if rate else None,
            "duration_s": elapsed, "batches": len(latencies), "errors": errors,
            "first_error": first_error, "accepted_fixes": accepted, "rejected_fixes": rejected,
            "batches_per_s": len(latencies) / elapsed,
            "accepted_fixes_per_s": accepted / elapsed, **latency_summary(latencies),
            "history_lag": lag_summary(lags), "cpu": cpu}


async def ingest_measure(args: argparse.Namespace, mesh: Mesh, mongo_uri: str,
                         database: str, pairs: Sequence[tuple[LatLon, LatLon]],
                         quiet: Quiet) -> dict[str, Any]:
    out: dict[str, Any] = {"start_s": mesh.start_s, "pids": mesh.pids, "database": database}
    pids = list(mesh.pids.values())
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    rt = RoutingClient(mesh.routing)
    maps = MapsClient(mesh.maps, ChannelOptions(timeout=30))
    try:
        log("  5. route response sizes (ComputeRoute, seeded Gothenburg pairs)...")
        routes, answers, used = await routes_part(rt, pairs, args.routes)
        out["routes"] = routes
        log(f"    {routes['routes']} routes ({routes['failed']} pairs without one): median "
            f"{routes['bytes']['median']:,.0f} B as served, "
            f"{routes['no_steps_bytes']['median']:,.0f} B without steps, polyline "
            f"{routes['polyline_share']['median']:.0%} of the bytes")
        if not answers:
            raise RuntimeError("no Gothenburg route found: the ingest part needs one")
        # the load drive: the longest route, there and back; trials on the others
        longest = max(range(len(answers)), key=lambda i: answers[i].routes[0].distance_meters)
        line = [(float(p[0]), float(p[1]))
                for p in polyline_codec.decode(answers[longest].routes[0].polyline, 5)]
        path = ping_pong(positions(line, DRIVE_MPS, 1e9))
        out["load_route"] = {"distance_m": answers[longest].routes[0].distance_meters,
                             "fixes_per_lap": len(path)}
        out["batching"] = batching_report(path)

        log("  ingest ready? (the locations topic is made on start)...")
        warm_user = f"bench-warm-{uuid.uuid4().hex[:6]}"
        t0 = time.perf_counter()
        await send_with_retry(maps, batch_request(sample_fixes(path, args.batch,
                                                               time.time() - 3600),
                                                  f"{warm_user}-0"),
                              mint_token(DEV_SECRET, warm_user))
        out["ingest_ready_s"] = time.perf_counter() - t0

        log("  history lag, idle (sentinel batches)...")
        probe = HistoryProbe(maps, mongo, database, path, args.batch, "idle")
        await quiet.wait("history lag idle")
        for _ in range(args.sentinels):
            await probe.send()
            await asyncio.sleep(0.3)
        out["history_idle"] = lag_summary(await probe.lags())
        h = out["history_idle"]
        log(f"    {h['seen']}/{h['n']} seen: p50 {h['p50_ms']:.0f} ms, max {h['max_ms']:.0f} ms")

        log(f"  traffic lag ({args.traffic_trials} trials, {SLOW_DRIVERS} slow drivers "
            "each)...")
        trials = []
        candidates = [used[i] for i in range(len(used)) if i != longest
                      and answers[i].routes[0].distance_meters >= 2 * SLOW_M]
        for k, (a, b) in enumerate(candidates[:args.traffic_trials]):
            await quiet.wait(f"traffic trial {k + 1}")
            got = await traffic_trial(rt, maps, a, b, args.batch, k)
            trials.append(got)
            log(f"    trial {k + 1}: {got['batches']} batches acked in {got['send_s']:.2f} s; "
                f"ETA {got['eta_before_s']:.0f} -> {got['eta_after_s']:.0f} s after "
                + (f"{got['eta_lag_s'] * 1e3:.0f} ms" if got["eta_lag_s"] is not None
                   else "(never)")
                + ", GetTraffic after "
                + (f"{got['traffic_lag_s'] * 1e3:.0f} ms" if got["traffic_lag_s"] is not None
                   else "(never)"))
        out["traffic_trials"] = trials
        out["traffic_eta_lag"] = lag_summary([t["eta_lag_s"] for t in trials])
        out["traffic_segments_lag"] = lag_summary([t["traffic_lag_s"] for t in trials])

        log(f"  ingest load: {args.clients} clients, batches of {args.batch} fixes...")
        rng = random.Random(args.seed)
        base = time.time() - 86_400.0
        clients = []
        for c in range(args.clients):
            user = f"bench-client-{c}-{uuid.uuid4().hex[:6]}"
            clients.append(SimClient(user, mint_token(DEV_SECRET, user), path,
                                     base + c * 0.01, rng.randrange(len(path))))
        steps: list[dict[str, Any]] = []
        for rate in [*args.rates, None]:
            label = f"{rate:g}/s" if rate is not None else "max"
            busy = await quiet.wait(f"ingest {label}")
            probe = HistoryProbe(maps, mongo, database, path, args.batch, label.strip("/s"))
            got = await rate_step(maps, clients, rate, args.ingest_duration, args.batch,
                                  probe, pids)
            got["busy_before_pct"] = busy
            steps.append(got)
            hl = got["history_lag"]
            log(f"    {label:>6}: {got['accepted_fixes_per_s']:,.0f} fixes/s accepted "
                f"({got['batches_per_s']:,.0f} batches/s), p50 {got['p50_ms']:.1f} ms, p99 "
                f"{got['p99_ms']:.1f} ms, errors {got['errors']}; history lag p50 "
                f"{hl['p50_ms']:.0f} ms, max {hl['max_ms']:.0f} ms ({hl['missed']} missed)")
            if got["errors"]:
                log(f"      first error: {got['first_error']}")
        out["ingest_steps"] = steps
        out["clients"] = args.clients
        out["cpu_pids"] = list(mesh.pids)
    finally:
        await maps.aclose()
        await rt.aclose()
        await mongo.close()
    return out


def run_ingest(args: argparse.Namespace, backends: BackendUrls, mongo_pid: int | None,
               gothenburg: Path, monaco: Path, pairs: Sequence[tuple[LatLon, LatLon]],
               quiet: Quiet) -> dict[str, Any]:
    """Start etcd, the broker, routing and maps (ingest on), measure, stop them all."""
    if not backends.mongo_uri:
        return {"skipped": "no MongoDB"}
    database = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    cache = Path(args.routing_cache)
    cache.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="geoplex-bench-maps-ingest-")))
        start_s: dict[str, float] = {}
        pids: dict[str, int] = {}
        t0 = time.perf_counter()
        log("  starting etcd, a broker, a routing server (Gothenburg, car) and a maps server "
            "with ingest on...")
        etcd = etcd_infra(tmp / "etcd")
        urls = stack.enter_context(etcd)
        assert urls.etcd_endpoints
        proc = etcd.procs["etcd"].proc
        if proc is not None:
            pids["etcd"] = proc.pid
        start_s["etcd"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        broker = stack.enter_context(start_server_processes(
            [sys.executable, "-m", "geoplex.servers.broker"], 1,
            {"GEOPLEX_BROKER_PORT": "0", "GEOPLEX_BROKER_DATA_DIR": str(tmp / "broker"),
             "GEOPLEX_ETCD_ENDPOINTS": ",".join(urls.etcd_endpoints),
             "GEOPLEX_BROKER_ETCD_PREFIX": f"/geoplex-bench/maps-ingest/{uuid.uuid4().hex[:8]}",
             "GEOPLEX_STATE_DIR": str(tmp / "broker-state"), **LOG_ENV}, ready_timeout=60))
        start_s["broker"] = time.perf_counter() - t0
        pids["broker"] = broker.pids[0]
        t0 = time.perf_counter()
        log(f"    broker ready; routing (graph cache {cache})...")
        routing = stack.enter_context(start_server_processes(
            [sys.executable, "-m", "geoplex.servers.routing"], 1,
            {"GEOPLEX_ROUTING_PORT": "0", "GEOPLEX_ROUTING_REGIONS": f"{REGION}={gothenburg}",
             "GEOPLEX_ROUTING_CACHE_DIR": str(cache), "GEOPLEX_ROUTING_MODES": "car",
             "GEOPLEX_AUTH_SECRET": DEV_SECRET, "GEOPLEX_STATE_DIR": str(tmp / "routing"),
             **LOG_ENV}, ready_timeout=900))
        start_s["routing"] = time.perf_counter() - t0
        pids["routing"] = routing.pids[0]
        t0 = time.perf_counter()
        maps = stack.enter_context(start_server_processes(
            [sys.executable, "-m", "geoplex.servers.maps"], 1,
            {"GEOPLEX_MAPS_PORT": "0", "GEOPLEX_MAPS_HTTP_PORT": "off",
             "GEOPLEX_MAPS_TILE_SOURCES": "off", "GEOPLEX_MAPS_PLACES": "none",
             "GEOPLEX_MAPS_EXTRACTS": f"Monaco={monaco}",
             "GEOPLEX_MONGO_URI": backends.mongo_uri, "GEOPLEX_REDIS_URL": "",
             "GEOPLEX_BROKER_TARGET": broker.address,
             "GEOPLEX_ROUTING_TARGET": routing.address,
             "GEOPLEX_MAPS_DATABASE": database,
             "GEOPLEX_MAPS_TRAFFIC_INTERVAL_SECONDS": "1",
             "GEOPLEX_AUTH_SECRET": DEV_SECRET, "GEOPLEX_STATE_DIR": str(tmp / "maps"),
             **LOG_ENV}, ready_timeout=300))
        start_s["maps"] = time.perf_counter() - t0
        pids["maps"] = maps.pids[0]
        if mongo_pid is not None:
            pids["mongo"] = mongo_pid
        log("    ready: " + ", ".join(f"{k} {v:.1f} s" for k, v in start_s.items()))
        mesh = Mesh(maps.address, routing.address, pids, start_s)
        try:
            result = asyncio.run(ingest_measure(args, mesh, backends.mongo_uri, database,
                                                pairs, quiet))
        finally:
            for name, group in (("maps", maps), ("routing", routing), ("broker", broker)):
                server = group.processes[0]
                if not server.running:
                    log(f"  the {name} server exited ({server.returncode}):\n"
                        f"{server.log_tail(30)}")
        with contextlib.suppress(Exception):
            import pymongo  # drop the run's database: it is only the benchmark's

            client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                backends.mongo_uri, serverSelectionTimeoutMS=3000)
            client.drop_database(database)
            client.close()
    return result


# =========================================================================== report

def _ms(v: Any, digits: int = 2) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:,.{digits}f}"


def _x(v: Any) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.2f}x"


def _b(v: Any) -> str:
    return fmt_num(v) if v is not None else "-"


def _pct(v: Any, digits: int = 0) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v * 100:.{digits}f}%"


def _cpu(c: Mapping[str, Any]) -> str:
    return (f"{c.get('server_cpu_pct', math.nan):.0f} / {c.get('client_cpu_pct', math.nan):.0f}"
            f" / {c.get('other_cpu_pct', math.nan):.0f}")


NOISY_OTHER_PCT = 25.0


def noisy_cells(result: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The timed cells during which other work on the machine took more than
    NOISY_OTHER_PCT of a core (the quiet wait before them passed, the noise came later)."""
    out: list[tuple[str, float]] = []
    names = {"http": "HTTP 200", "http_304": "HTTP 304", "grpc": "GetTile", "ping": "Ping"}
    other = (result.get("render") or {}).get("other_cpu_pct")
    if other is not None and other > NOISY_OTHER_PCT:
        out.append(("in-process rendering", float(other)))
    for cell in (result.get("tiles_e2e") or {}).get("cells", []):
        for key, label in names.items():
            pct = (cell.get(key) or {}).get("cpu", {}).get("other_cpu_pct")
            if pct is not None and pct > NOISY_OTHER_PCT:
                out.append((f"{label} c={cell['concurrency']}", float(pct)))
    for st in (result.get("ingest") or {}).get("ingest_steps", []):
        pct = st.get("cpu", {}).get("other_cpu_pct")
        if pct is not None and pct > NOISY_OTHER_PCT:
            rate = st.get("rate_batches_per_s")
            out.append((f"ingest {rate:g} batches/s" if rate else "ingest back to back",
                        float(pct)))
    return out


def report(result: Mapping[str, Any]) -> str:
    s = result["settings"]
    lines = [
        "`python -m bench.maps_tiles_ingest` (`make bench-maps-tiles-ingest`): the maps "
        "service's tiles (`geoplex.servers.maps.tiles`, Pillow raster and Mapbox Vector "
        "Tiles) in process and against Mapnik, the cached tile endpoint end to end (HTTP "
        "and gRPC), and location ingest end to end (maps -> broker `locations` topic, "
        "acks=all -> the `location-history` group into MongoDB and the `traffic` group "
        "into routing), with the data a client downloads. Each timed part first waits up "
        f"to {s['quiet_max']:g} s for an idle machine.", "",
        f"Machine: {machine_line(result['machine'])}. Whole run: "
        f"{fmt_num(result.get('elapsed_s', math.nan) / 60, 1)} min.", ""]
    waits = result.get("quiet", [])
    busy = [w for w in waits if w.get("timed_out")]
    if busy:
        lines += [f"*Noise*: before {len(busy)} of the {len(waits)} timed parts the machine "
                  f"was still busy after the {s['quiet_max']:g} s wait (other work on this "
                  "shared 2-core machine, max "
                  f"{max(w['busy_pct'] for w in busy):.0f}% of a core: "
                  + ", ".join(sorted({w['label'].split(' c=')[0] for w in busy}))
                  + "); those parts ran anyway and may read low.", ""]

    noisy = noisy_cells(result)
    if noisy:
        lines += [f"*Other work* took more than {NOISY_OTHER_PCT:.0f}% of a core during "
                  + ", ".join(f"{label} ({pct:.0f}%)" for label, pct in noisy)
                  + " (the CPU column's last figure): those cells may read low.", ""]

    # 1. in process
    r = result.get("render")
    if r:
        rows = []
        for c in r["pooled"]:
            rows.append([c["zoom"], c["format"].upper(), c["tiles"], c["n"], _ms(c["p50_ms"]),
                         _ms(c["p99_ms"]), fmt_num(c["per_s"]), _b(c["median_bytes"]),
                         _b(c["p90_bytes"]), _b(c["max_bytes"])])
        lines += [f"**1. Tile rendering in process** (`TileSet.render`, one thread: the "
                  f"{s['block']}x{s['block']} tiles around each region's centre that a "
                  "region covers ("
                  + ", ".join(f"{k} {v}" for k, v in r["tiles"].items())
                  + f" tiles) over zooms {', '.join(str(z) for z in s['zooms'])}; "
                  f"{r['rounds']} timed passes after an untimed one; tiles/s = renders / "
                  "their summed time. The bytes are what a client downloads per tile.)", "",
                  markdown_table(["zoom", "format", "tiles", "renders", "p50 ms", "p99 ms",
                                  "tiles/s (1 core)", "bytes median", "p90", "max"], rows,
                                 "rlrrrrrrrr"), ""]

    # 2. Mapnik
    m = result.get("mapnik")
    if m is not None:
        if not m.get("available") or not m.get("zooms"):
            lines += [f"**2. Peer: Mapnik**: not run: {m.get('error', 'unavailable')}.", ""]
        else:
            ours = {c["zoom"]: c for c in (r or {}).get("cells", [])
                    if c["region"] == PEER_REGION and c["format"] == "png"}
            rows = []
            for c in m["zooms"]:
                o = ours.get(c["zoom"], {})
                rows.append([c["zoom"], c["tiles"],
                             f"{_ms(o.get('p50_ms'))} / {_ms(o.get('p99_ms'))}",
                             f"{_ms(c['p50_ms'])} / {_ms(c['p99_ms'])}",
                             _ms(c["render_only"]["p50_ms"]),
                             _x(ratio(o.get("p50_ms"), c["p50_ms"])),
                             _x(ratio(o.get("per_s"), c["per_s"])),
                             f"{_b(o.get('median_bytes'))} / {_b(c['median_bytes'])}"])
            installed = (f", installed by this run with apt-get ({MAPNIK_PACKAGE})"
                         if m.get("installed_now") else f" (Debian's {MAPNIK_PACKAGE})")
            lines += [f"**2. Peer: Mapnik** {m.get('version', '')}{installed}, in its own "
                      f"`{MAPNIK_PYTHON}` process (`bench/_mapnik_peer.py`), timed inside it "
                      "(process start and map loading excluded; each tile drawn once untimed "
                      "first). Same features: Helsinki's store exported to GeoJSON in Web "
                      "Mercator metres ("
                      + ", ".join(f"{k} {v:,}" for k, v in m.get("features", {}).items())
                      + "); a style generated from our style tables (the same fills, road "
                      "casings and widths per class and zoom, minor roads under major, the "
                      "same first zoom per feature, POI dots from 17, street names from 16); "
                      f"the same z/x/y tiles at 256 px, encoded `{m['format']}` (ours: drawn "
                      "at 512 px, Lanczos-reduced, 128-colour octree palette). Time = render "
                      f"+ PNG encoding, {m['rounds']} passes, against our Helsinki PNG cells "
                      "of step 1. ours / Mapnik p50 above 1x, or tiles/s below 1x: ours is slower.", "",
                      markdown_table(["zoom", "tiles", "ours p50 / p99 ms",
                                      "Mapnik p50 / p99 ms", "Mapnik render only p50 ms",
                                      "ours / Mapnik p50", "ours / Mapnik tiles/s",
                                      "bytes median ours / Mapnik"], rows, "rrrrrrrr"), "",
                      "What differs: Mapnik draws with AGG's analytic antialiasing at 256 px, "
                      "ours supersamples (2x, Lanczos); Mapnik's street names follow the "
                      "line's curve (placement `line`, collision-checked, kept off the edges), "
                      "ours are one straight, rotated label per name and tile, with a halo, "
                      "only where the road is straight enough; Mapnik joins and caps every "
                      "line round, ours only lines of 4+ large pixels; building outlines are "
                      "a 0.5 px stroke there, a 1 px stroke at 512 px here. Both read "
                      "in-memory data (ours the numpy store with its grid, Mapnik its GeoJSON "
                      "datasource's index).", ""]

    # 3. cached tiles end to end
    t = result.get("tiles_e2e")
    if t and t.get("cells"):
        ceilings = (result.get("runtime_ceiling") or {}).get("calls_per_s", {})
        rows = []
        labels = {"http": "HTTP GET (200, cached)", "http_304": "HTTP GET If-None-Match (304)",
                  "grpc": "gRPC GetTile (cached)", "ping": f"ceiling: Ping {t['mean_tile_bytes']:,} B"}
        for cell in t["cells"]:
            conc = cell["concurrency"]
            ping = cell.get("ping", {})
            for key, label in labels.items():
                c = cell.get(key)
                if not c:
                    continue
                vs = (_pct(ratio(c["calls_per_s"], ping.get("calls_per_s")))
                      if key == "grpc" else "")
                ref = ceilings.get(str(conc))
                rows.append([conc if key == "http" else "", label, fmt_num(c["calls_per_s"]),
                             _ms(c["p50_ms"]), _ms(c["p99_ms"]), vs,
                             f"{_pct(ratio(c['calls_per_s'], ref))} of {fmt_num(ref)}"
                             if key == "grpc" and ref else "", _cpu(c["cpu"]), c["errors"]])
        cold = t.get("cold", {})
        warm = t.get("warm", {})
        lines += [f"**3. Cached tiles end to end**: one `python -m geoplex.servers.maps` "
                  "process (tiles on; Redis as the shared tile cache; a Monaco-only "
                  "gazetteer to start quickly), one client process; the "
                  f"{t['warm_tiles']} PNG tiles of step 1 warmed by one request each, then "
                  "closed loops cycling through them (aiohttp, one connection per worker; "
                  "gRPC through the raw stub on one channel), each cell the best of "
                  f"{s['tile_rounds']} round(s) of {s['duration']:g} s after {s['warmup']:g} s, "
                  "interleaved with the ceiling on the same process. A cached tile comes "
                  "from the process's LRU; a 304 answers from the ETag alone. The last "
                  "ratio is against the empty-Ping ceiling of `bench/results/runtime.json` "
                  f"({(result.get('runtime_ceiling') or {}).get('date') or 'not found'}).", "",
                  markdown_table(["conc", "what", "tiles/s", "p50 ms", "p99 ms",
                                  "GetTile / Ping same size", "GetTile / runtime ceiling",
                                  "CPU % server / client / other", "errors"], rows,
                                 "rlrrrrrrr"), "",
                  f"Cold tiles (never requested before: {cold.get('tiles', 0)} random tiles "
                  "at zooms 14-18 under the regions' features, one at a time over HTTP; "
                  "render, Redis miss and write included): p50 "
                  f"{_ms(cold.get('p50_ms'), 1)} ms, p99 {_ms(cold.get('p99_ms'), 1)} ms, max "
                  f"{_ms(cold.get('max_ms'), 1)} ms (median {_b(cold.get('median_bytes'))} B). "
                  f"The first requests that warmed the step 1 tiles: p50 "
                  f"{_ms(warm.get('p50_ms'), 1)} ms, p99 {_ms(warm.get('p99_ms'), 1)} ms. "
                  f"Server start {t.get('start_s', math.nan):.1f} s.", ""]
    elif t:
        lines += [f"**3. Cached tiles end to end**: no cell measured "
                  f"({t.get('server_exit', 'the server did not answer')}).", ""]

    # 4. ingest
    g = result.get("ingest")
    if g and "ingest_steps" in g:
        h, te, ts = g["history_idle"], g["traffic_eta_lag"], g["traffic_segments_lag"]
        lag_rows = [
            ["history: ack -> batch in MongoDB `trip_history`, idle", h["n"],
             _ms(h["p50_ms"], 0), _ms(h["max_ms"], 0), h["missed"]],
            ["traffic: last ack -> traffic-aware ETA rises", te["n"], _ms(te["p50_ms"], 0),
             _ms(te["max_ms"], 0), te["missed"]],
            ["traffic: last ack -> GetTraffic shows the slowed segments", ts["n"],
             _ms(ts["p50_ms"], 0), _ms(ts["max_ms"], 0), ts["missed"]]]
        rows = []
        names = g.get("cpu_pids", [])
        for st in g["ingest_steps"]:
            hl = st["history_lag"]
            each = st["cpu"].get("server_cpu_pct_each", [])
            rows.append([f"{st['rate_batches_per_s']:g}" if st["rate_batches_per_s"]
                         else "all clients back to back",
                         fmt_num(st["offered_fixes_per_s"]) if st["offered_fixes_per_s"]
                         else "-",
                         fmt_num(st["accepted_fixes_per_s"]), fmt_num(st["batches_per_s"]),
                         _ms(st["p50_ms"], 1), _ms(st["p99_ms"], 1),
                         f"{_ms(hl['p50_ms'], 0)} / {_ms(hl['max_ms'], 0)}"
                         + (f" ({hl['missed']} missed)" if hl["missed"] else ""),
                         " / ".join(f"{v:.0f}" for v in each),
                         f"{st['cpu'].get('client_cpu_pct', math.nan):.0f}",
                         st["errors"] + st["rejected_fixes"]])
        bt = g["batching"]
        brows = [[b["period_s"], fmt_num(b["requests_per_hour"]), f"{b['fixes_per_request']:g}",
                  fmt_num(b["request_bytes"]), f"{b['bytes_per_fix']:.1f}",
                  fmt_num(b["wire_bytes_per_hour"] / 1024, 1), _pct(b["requests_saved"], 1)]
                 for b in bt["rows"]]
        trials = g.get("traffic_trials", [])
        eta_rise = [tr["eta_after_s"] - tr["eta_before_s"] for tr in trials]
        lines += [f"**4. Location ingest end to end**: an etcd, one broker (fsync before "
                  "every acknowledgement, its default), one routing process (Gothenburg, "
                  "car), one maps process with ingest on (a fresh MongoDB database; the "
                  "traffic group flushes to routing every 1 s), one client process with one "
                  "channel, dev tokens (one user per simulated client). Fixes are 1 s apart; "
                  f"{s['batch']} per batch. The history lag is polled (every "
                  f"{HISTORY_POLL_S * 1e3:.0f} ms) on sentinel batches, the traffic lag "
                  f"(every {TRAFFIC_POLL_S * 1e3:.0f} ms) after {SLOW_DRIVERS} drivers "
                  f"crawled at {SLOW_MPS} m/s over the first {SLOW_M:.0f} m of a route "
                  f"({len(trials)} trials on different routes; the ETA counts as risen "
                  "above 1.02x + 2 s; it rose by a median "
                  f"{percentile(sorted(eta_rise), 50):.0f} s).", "",
                  markdown_table(["lag", "n", "p50 ms", "max ms", "never seen"], lag_rows,
                                 "lrrrr"), "",
                  f"Throughput: {g['clients']} simulated clients driving a real "
                  f"{g['load_route']['distance_m'] / 1000:.1f} km Gothenburg route there and "
                  f"back at {DRIVE_MPS:g} m/s; each sends its next batch once the last is "
                  f"acknowledged, at the offered rate over all clients (open loop), "
                  f"{s['ingest_duration']:g} s per step, then all clients back to back. "
                  "Their fix times lie a day back (the rate would outrun the clock), so the "
                  "traffic group matches every batch (a MatchTrace call each) but keeps "
                  "none of it. CPU in % of one core per process ("
                  + " / ".join(names) + ").", "",
                  markdown_table(["offered batches/s", "offered fixes/s",
                                  "accepted fixes/s", "batches/s", "batch p50 ms",
                                  "batch p99 ms", "history lag p50 / max ms",
                                  "CPU % " + " / ".join(names), "client CPU %",
                                  "errors + rejected"], rows, "rrrrrrrrrr"), "",
                  f"Batching (1 fix/s; request sizes serialized: `ReportLocationBatchRequest`"
                  f" with phone-like fixes: location, time, accuracy, speed, heading; one fix "
                  f"alone {bt['fix_bytes']} B; a 32-character batch id). Wire bytes add "
                  f"{bt['framing_bytes']} B per request (gRPC prefix and HTTP/2 DATA frame); "
                  "the HEADERS frame (HPACK: the token indexed after the first call, the "
                  "SDK's fresh x-request-id literal) and the response come on top per "
                  "request, so fewer requests save more than shown.", "",
                  markdown_table(["batch every s", "requests/hour", "fixes/request",
                                  "request bytes", "bytes/fix", "KiB/hour (+ framing)",
                                  "requests saved vs every 1 s"], brows, "rrrrrrr"), ""]
    elif g:
        lines += [f"**4. Location ingest end to end**: not run ({g.get('skipped', '-')}).", ""]

    # 5. routes
    rs = (g or {}).get("routes")
    if rs and rs.get("routes"):
        def row(label: str, key: str) -> list[str]:
            v = rs[key]
            return [label, _b(v["median"]), _b(v["p90"]), _b(v["max"])]
        rows = [row("ComputeRoute response as served (with steps)", "bytes"),
                row("the same without steps (cleared client-side: no API switch)",
                    "no_steps_bytes"),
                row("with include_segments (segment ids added)", "segments_bytes"),
                row("the polyline alone", "polyline_bytes")]
        lines += [f"**5. Route response sizes** ({rs['routes']} seeded Gothenburg routes, car, "
                  f"1-8 km apart, median {rs['distance_m']['median'] / 1000:.1f} km, "
                  f"{rs['steps']['median']:.0f} steps, {rs['points']['median']:.0f} polyline "
                  "points; serialized protobuf bytes).", "",
                  markdown_table(["response", "median B", "p90 B", "max B"], rows, "lrrr"), "",
                  f"The polyline is a median {_pct(rs['polyline_share']['median'])} of a "
                  f"response ({_pct(rs['polyline_share_no_steps']['median'])} without steps; "
                  f"{_pct(rs['polyline_share_of_all_bytes'])} of all bytes); "
                  f"{fmt_num(rs['bytes_per_km'])} B per route km.", ""]
    return "\n".join(lines)


def write_report(result: Mapping[str, Any]) -> None:
    log(f"wrote the '{NAME}' section of {write_section(NAME, TITLE + chr(10) * 2 + report(result))}")


# =========================================================================== main

def amain(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    quiet = Quiet(args.quiet_max)
    result: dict[str, Any] = {
        "benchmark": NAME, "machine": machine_info(),
        "settings": {k: (list(v) if isinstance(v, (list, tuple)) else v)
                     for k, v in vars(args).items() if k not in ("report_only",)},
        "quiet": quiet.waits}
    result["settings"]["zooms"] = list(ZOOMS)
    step = Steps(5)
    step(1, "render", "tile rendering in process (TileSet.load, the default tile sources)...")
    fetched = data.fetch(["helsinki", "monaco", "gothenburg"], progress=log)
    config = MapsConfig.from_env()
    sources = [MapSource(n, p) for n, p in config.tile_sources]
    t0 = time.perf_counter()
    tileset = TileSet.load(sources, config.tile_cache_dir, lambda m: log("  " + m))
    load_s = time.perf_counter() - t0
    tiles = region_tiles(tileset, ZOOMS, args.block)
    result["render"] = render_in_process(tileset, tiles, args.rounds, quiet)
    result["render"]["load_s"] = load_s
    result["render"]["sources"] = [f"{s.name}={s.path}" for s in sources]

    step(2, "mapnik", f"peer: Mapnik ({MAPNIK_PYTHON}, {MAPNIK_PACKAGE}) on Helsinki...")
    helsinki = next(p for n, p in config.tile_sources if n == PEER_REGION)
    peer_store = osm_map.read_map(helsinki, PEER_REGION)
    save = Path(args.save_tiles) if args.save_tiles else None
    if args.no_mapnik:
        result["mapnik"] = {"available": False, "error": "--no-mapnik"}
    else:
        result["mapnik"] = mapnik_peer(peer_store, tiles[PEER_REGION], args.rounds,
                                       not args.no_mapnik_install, quiet, save)
    if save is not None:
        save_ours(tileset, tiles[PEER_REGION], save)

    monaco = fetched["monaco"]["pbf"]
    gothenburg = fetched["gothenburg"]["network"]
    stores = [osm_map.read_map(p, n) for n, p in config.tile_sources]
    warm = [t for region_list in tiles.values() for t in region_list]
    cold_seed = int.from_bytes(os.urandom(4), "big")
    cold = cold_candidates(stores, (14, 15, 16, 17, 18), args.cold_tiles, set(warm),
                           random.Random(cold_seed))
    rng = random.Random(args.seed)
    g_store = next(s for s in stores if s.name == REGION)
    pairs = route_pairs(road_points(g_store, rng, 4000), rng, args.routes * 3, 1000.0, 8000.0)
    del tileset, stores, g_store, peer_store
    result["runtime_ceiling"] = runtime_ceiling()
    with local_backends("maps-tiles-ingest", lambda m: log(f"  {m}")) as infra:
        backends = infra.urls
        mongo_proc = infra.procs.get("mongo")
        mongo_pid = mongo_proc.proc.pid if mongo_proc is not None and mongo_proc.proc else None
        step(3, "tiles_e2e", "cached tiles end to end (HTTP and gRPC)...")
        http_port = free_port()
        with tempfile.TemporaryDirectory(prefix="geoplex-bench-maps-tiles-") as state:
            env = maps_tiles_env(backends.redis_url, config.tile_sources, monaco, http_port,
                                 state)
            result["tiles_e2e"] = asyncio.run(tiles_e2e(args, env, http_port, warm, cold,
                                                        quiet))
        result["tiles_e2e"]["cold_seed"] = cold_seed
        step(4, "ingest", "location ingest end to end (and 5: route sizes on its routing)...")
        result["ingest"] = run_ingest(args, backends, mongo_pid, gothenburg, monaco, pairs,
                                      quiet)
    step.done()
    result["step_s"] = step.seconds
    result["elapsed_s"] = time.perf_counter() - started
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    return result


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


def _float_list(text: str) -> list[float]:
    return [float(x) for x in text.replace(",", " ").split()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.maps_tiles_ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--block", type=int, default=5, help="tiles a side around each centre")
    p.add_argument("--rounds", type=int, default=5,
                   help="timed passes over the tiles (in process and Mapnik)")
    p.add_argument("--concurrency", type=_int_list, default=[1, 16, 64],
                   help="closed-loop concurrencies of the cached-tile rows")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per tile window")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up per tile window")
    p.add_argument("--tile-rounds", dest="tile_rounds", type=int, default=2,
                   help="interleaved rounds of the cached-tile rows; the best is kept")
    p.add_argument("--cold-tiles", type=int, default=60, help="never-seen tiles requested")
    p.add_argument("--clients", type=int, default=64, help="simulated ingest clients")
    p.add_argument("--batch", type=int, default=10, help="fixes per batch")
    p.add_argument("--rates", type=_float_list, default=[20, 50, 100, 200, 400],
                   help="offered batches/s over all clients, one step each")
    p.add_argument("--ingest-duration", type=float, default=5.0, help="seconds per step")
    p.add_argument("--sentinels", type=int, default=10, help="idle history-lag batches")
    p.add_argument("--traffic-trials", type=int, default=5, help="traffic-lag trials")
    p.add_argument("--routes", type=int, default=50, help="Gothenburg routes for sizes")
    p.add_argument("--seed", type=int, default=20240611)
    p.add_argument("--quiet-max", type=float, default=5.0,
                   help="longest wait for an idle machine before a timed part")
    p.add_argument("--routing-cache", default=str(ROUTING_CACHE),
                   help="the routing server's graph cache (kept between runs)")
    p.add_argument("--no-mapnik", action="store_true", help="skip the Mapnik peer")
    p.add_argument("--no-mapnik-install", action="store_true",
                   help="do not apt-get install python3-mapnik when it is missing")
    p.add_argument("--save-tiles", default="",
                   help="write ours and Mapnik's Helsinki PNG tiles here, to look at")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: every part shrunk; writes nothing")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: re-render the section from the results file")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.report_only:
        write_report(read_results(RESULTS))
        return
    if args.quick:
        args.block, args.rounds, args.no_write = 3, 2, True
        args.concurrency, args.duration, args.warmup, args.tile_rounds = [1, 16], 0.5, 0.2, 1
        args.cold_tiles, args.clients, args.rates = 10, 8, [20, 50]
        args.ingest_duration, args.sentinels, args.traffic_trials = 1.5, 3, 1
        args.routes, args.quiet_max = 10, 1.0
    run_and_report(lambda: amain(args), RESULTS, report, write_report, no_write=args.no_write)


if __name__ == "__main__":
    main()
