"""OSRM's side of ``bench/routing.py``: one OSRM dataset loaded in-process, queries timed.

Runs under the Python 3.12 venv that holds ``osrm-bindings`` (its wheels are abi3 for
3.12 and up), never under the project's own interpreter, and uses only the standard
library and ``osrm``. ``bench/routing.py`` starts it as::

    <osrm venv>/bin/python bench/_osrm_peer.py < job.json > answer.json

The job (JSON on stdin)::

    {"path": ".../input.osrm", "algorithm": "CH" | "MLD",
     "pairs": [[lon1, lat1, lon2, lat2], ...],   # Route() for each, timed
     "full_pairs": 1000,                         # of those, again with steps + full geometry
     "warmup": 20,                               # untimed Route() calls first
     "matrices": [{"key": "25", "origins": [[lon, lat], ...],
                   "destinations": [[lon, lat], ...], "runs": 5}]}

The answer (JSON on stdout): ``load_s`` (constructing ``osrm.OSRM``), the resident set
after ``import osrm``, after loading (the files are mapped, so little) and after every
query (``rss_import_kib``, ``rss_loaded_kib``, ``rss_end_kib``), and
per query ``route_s`` (seconds inside ``Route()``), ``distance_m``, ``duration_s`` and
``snap_m`` (how far OSRM moved the farther point; ``null`` where OSRM answered no
route), ``full_s``; per matrix
``table_s`` (seconds per ``Table()`` run) and ``cells_ok``. Nothing else is printed on
stdout; OSRM's own log goes to stderr.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time
from typing import Any


def _route_params(osrm: Any, pair: list[float], full: bool) -> Any:
    lon1, lat1, lon2, lat2 = pair
    if full:
        return osrm.RouteParameters(coordinates=[(lon1, lat1), (lon2, lat2)], steps=True,
                                    overview="full", geometries="polyline",
                                    generate_hints=False)
    return osrm.RouteParameters(coordinates=[(lon1, lat1), (lon2, lat2)], overview="false",
                                generate_hints=False)


def _first_route(answer: Any) -> tuple[float, float, float] | None:
    """Distance, duration and the farther of the two snapping distances."""
    if str(answer["code"]) != "Ok":
        return None
    route = answer["routes"][0]
    snap = max(float(w["distance"]) for w in answer["waypoints"])
    return float(route["distance"]), float(route["duration"]), snap


def _rss_kib() -> int:
    """This process's resident set now (KiB), from /proc; 0 where there is none."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * (resource.getpagesize() // 1024)


def run(job: dict[str, Any]) -> dict[str, Any]:
    osrm = importlib.import_module("osrm")
    rss_before = _rss_kib()
    started = time.perf_counter()
    engine = osrm.OSRM(storage_config=job["path"], algorithm=job["algorithm"],
                       use_shared_memory=False, max_locations_distance_table=-1,
                       max_locations_viaroute=-1)
    load_s = time.perf_counter() - started
    rss_loaded = _rss_kib()
    pairs: list[list[float]] = job.get("pairs", [])
    clock = time.perf_counter

    plain = [_route_params(osrm, p, False) for p in pairs]
    for params in plain[:int(job.get("warmup", 20))]:
        try:
            engine.Route(params)
        except RuntimeError:
            pass
    route_s: list[float] = []
    distance: list[float | None] = []
    duration: list[float | None] = []
    snap_m: list[float | None] = []
    errors: list[str] = []
    for params in plain:
        t0 = clock()
        try:
            answer = engine.Route(params)
        except RuntimeError as exc:  # NoRoute / NoSegment come back as exceptions
            route_s.append(clock() - t0)
            distance.append(None)
            duration.append(None)
            snap_m.append(None)
            if len(errors) < 5:
                errors.append(str(exc)[:200])
            continue
        route_s.append(clock() - t0)
        got = _first_route(answer)
        distance.append(got[0] if got else None)
        duration.append(got[1] if got else None)
        snap_m.append(got[2] if got else None)

    full_s: list[float] = []
    for pair in pairs[:int(job.get("full_pairs", len(pairs)))]:
        params = _route_params(osrm, pair, True)
        t0 = clock()
        try:
            engine.Route(params)
        except RuntimeError:
            pass
        full_s.append(clock() - t0)

    matrices: dict[str, Any] = {}
    for matrix in job.get("matrices", []):
        origins, destinations = matrix["origins"], matrix["destinations"]
        coordinates = [(p[0], p[1]) for p in [*origins, *destinations]]
        params = osrm.TableParameters(
            coordinates=coordinates, sources=list(range(len(origins))),
            destinations=list(range(len(origins), len(coordinates))),
            annotations=["duration", "distance"], generate_hints=False)
        times: list[float] = []
        ok = 0
        for _ in range(int(matrix.get("runs", 3))):
            t0 = clock()
            answer = engine.Table(params)
            times.append(clock() - t0)
            ok = sum(1 for row in answer["durations"] for cell in row if cell is not None)
        matrices[str(matrix["key"])] = {"table_s": times, "cells_ok": ok}

    return {"load_s": load_s, "rss_import_kib": rss_before, "rss_loaded_kib": rss_loaded,
            "rss_end_kib": _rss_kib(),
            "route_s": route_s, "distance_m": distance, "duration_s": duration,
            "snap_m": snap_m, "full_s": full_s,
            "errors": errors, "matrices": matrices}


def main() -> None:
    job = json.load(sys.stdin)
    json.dump(run(job), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
