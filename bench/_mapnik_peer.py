"""Mapnik's side of ``bench/maps_tiles_ingest.py``: one map loaded, the same tiles timed.

Runs under Debian's ``/usr/bin/python3`` with ``python3-mapnik`` (the Debian binding is
built for that interpreter, not for the project's venv), and uses only the standard
library and ``mapnik``. ``bench/maps_tiles_ingest.py`` writes the map's XML (its
GeoJSON datasources beside it, in Web Mercator metres) and starts this as::

    /usr/bin/python3 bench/_mapnik_peer.py < job.json > answer.json

The job (JSON on stdin)::

    {"xml": ".../map.xml", "size": 256, "format": "png8:m=o:c=128",
     "tiles": [[z, x, y, west, south, east, north], ...],   # bounds in metres
     "rounds": 5,                        # timed passes over every tile
     "save": ".../dir" or null}          # write each tile's PNG there (to look at)

Every tile is drawn once untimed first (the datasources load lazily, on first use).
The answer (JSON on stdout): ``mapnik_version``, ``load_s`` (``mapnik.load_map``), per
tile ``render_s`` / ``encode_s`` (one list each, a value per round: seconds in
``mapnik.render`` and in ``Image.tostring``), ``bytes`` and ``scale_denominator``.
Nothing else is printed on stdout.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Any


def main() -> None:
    job = json.load(sys.stdin)
    mapnik: Any = importlib.import_module("mapnik")  # Debian's binding: no type stubs
    size = int(job["size"])
    fmt = str(job["format"])
    started = time.perf_counter()
    m = mapnik.Map(size, size)
    mapnik.load_map(m, job["xml"], True)
    load_s = time.perf_counter() - started
    tiles: list[list[float]] = job["tiles"]
    save = job.get("save")

    def draw(tile: list[float]) -> tuple[float, float, bytes, float]:
        _z, _x, _y, west, south, east, north = tile
        t0 = time.perf_counter()
        m.zoom_to_box(mapnik.Box2d(west, south, east, north))
        image = mapnik.Image(size, size)
        mapnik.render(m, image)
        t1 = time.perf_counter()
        data = image.tostring(fmt)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, bytes(data), float(m.scale_denominator())

    out: list[dict[str, Any]] = []
    for tile in tiles:  # untimed: the datasources load on first use
        _r, _e, data, scale = draw(tile)
        out.append({"z": int(tile[0]), "x": int(tile[1]), "y": int(tile[2]),
                    "bytes": len(data), "scale_denominator": scale,
                    "render_s": [], "encode_s": []})
        if save:
            name = f"{int(tile[0])}-{int(tile[1])}-{int(tile[2])}.png"
            with open(os.path.join(save, name), "wb") as f:
                f.write(data)
    for _round in range(int(job["rounds"])):
        for tile, row in zip(tiles, out):
            render_s, encode_s, _data, _scale = draw(tile)
            row["render_s"].append(render_s)
            row["encode_s"].append(encode_s)
    json.dump({"mapnik_version": str(mapnik.mapnik_version()), "load_s": load_s,
               "tiles": out}, sys.stdout)


if __name__ == "__main__":
    main()
