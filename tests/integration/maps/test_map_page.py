"""Tiles over gRPC and HTTP, the JSON gateway, and the map page in a real browser: a routing
server (Monaco, car) and a maps server with tiles, Redis as the shared tile cache, and
Debian's Chromium driven by playwright-core (tests/browser/map_page.mjs)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import polyline
import pytest
import redis
from PIL import Image

from geoplex.clients.maps import MapsClient
from geoplex.clients.routing import RoutingClient, observation
from geoplex.infra import data
from geoplex.infra.local import BackendUrls, free_port
from geoplex.maps.v1 import maps_pb2 as pb
from geoplex.maps.v1.vector_tile_pb2 import VectorTile
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from routing_servers import routing_env  # tests/routing_servers.py

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py
    from geoplex.servers.routing.config import RegionSource

BROWSER_DIR = Path(__file__).resolve().parents[2] / "browser"
# Monaco: Fontvieille to Monte Carlo, across the principality
FROM = (43.7305, 7.4176)
TO = (43.7437, 7.4262)
ROUTE_RGB = (0x8E, 0x24, 0xAA)   # map.js ROUTE_COLOUR
JAM_RGB = (0xD5, 0x00, 0x00)     # map.js TRAFFIC: under half of free-flow speed
CENTRE_Z15 = (15, 17059, 11948)  # Monaco's old town at zoom 15


class Mesh:
    def __init__(self, maps: ServerProcess, routing: str, http: str, redis_url: str) -> None:
        self.maps, self.routing, self.http, self.redis_url = maps, routing, http, redis_url

    def get(self, path: str, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.http + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def mesh(backends: BackendUrls, server_factory: Callable[..., ServerProcess],
         routing_sources: tuple[RegionSource, ...], routing_cache: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Mesh:
    monaco = tuple(s for s in routing_sources if s.name == "monaco")
    routing = server_factory("routing", routing_env(monaco, routing_cache,
                                                    GEOPLEX_ROUTING_MODES="car"), "page-routing")
    fetched = data.fetch(["monaco", "leaflet"], progress=lambda _m: None)
    port = free_port()
    assert backends.redis_url is not None
    maps = server_factory("maps", {
        "GEOPLEX_REDIS_URL": backends.redis_url,
        "GEOPLEX_ROUTING_TARGET": routing.address,
        "GEOPLEX_MAPS_EXTRACTS": f"Monaco={fetched['monaco']['pbf']}",
        "GEOPLEX_MAPS_PLACES": "none",
        "GEOPLEX_MAPS_TILE_SOURCES": f"monaco={fetched['monaco']['pbf']}",
        "GEOPLEX_MAPS_TILE_CACHE_DIR": str(tmp_path_factory.mktemp("tile-cache")),
        "GEOPLEX_MAPS_HTTP_PORT": str(port)}, "page-maps")
    return Mesh(maps, routing.address, f"http://127.0.0.1:{port}", backends.redis_url)


async def test_get_tile_png_and_mvt_with_etag_revalidation(mesh: Mesh) -> None:
    z, x, y = CENTRE_Z15
    async with MapsClient(mesh.maps.address) as client:
        png = await client.stub.GetTile(pb.GetTileRequest(z=z, x=x, y=y))
        assert png.content_type == "image/png" and not png.empty
        image = Image.open(io.BytesIO(png.data))
        assert image.size == (256, 256)
        colours = np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)
        assert len(colours) > 10  # drawn, not one flat colour

        again = await client.stub.GetTile(pb.GetTileRequest(z=z, x=x, y=y,
                                                            if_none_match=png.etag))
        assert again.not_modified and again.data == b"" and again.etag == png.etag

        mvt = await client.stub.GetTile(pb.GetTileRequest(z=z, x=x, y=y,
                                                           format=pb.TILE_FORMAT_MVT))
        tile = VectorTile.FromString(mvt.data)
        layers = {layer.name: layer for layer in tile.layers}
        assert "roads" in layers and layers["roads"].features
        assert all(layer.version == 2 and layer.extent == 4096 for layer in tile.layers)
        assert mvt.etag != png.etag

        far = await client.stub.GetTile(pb.GetTileRequest(z=15, x=0, y=0))
        assert far.empty
        alpha = np.asarray(Image.open(io.BytesIO(far.data)).convert("RGBA"))[:, :, 3]
        assert not alpha.any()  # fully transparent

    # the rendered tile is in the shared cache, keyed by data version and address
    r = redis.Redis.from_url(mesh.redis_url)
    try:
        keys = r.keys(f"mt:*:png:{z}:{x}:{y}")
        assert len(keys) == 1 and r.get(keys[0]) == png.data
        assert 0 < r.ttl(keys[0]) <= 86_400
    finally:
        r.close()


@pytest.mark.parametrize(("z", "x", "y", "fmt", "field"), [
    (19, 0, 0, 1, "z"),
    (2, 4, 0, 1, "x"),
    (2, 0, -1, 1, "y"),
    (2, 0, 0, 7, "format"),
])
async def test_get_tile_rejects_an_address_outside_xyz(mesh: Mesh, z: int, x: int, y: int,
                                                       fmt: int, field: str) -> None:
    request = pb.GetTileRequest(z=z, x=x, y=y, format=pb.TileFormat.ValueType(fmt))
    async with MapsClient(mesh.maps.address) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.stub.GetTile(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field}:")
    assert "allowed" in (caught.value.details() or "")


def test_http_tiles_carry_cache_headers_and_answer_304(mesh: Mesh) -> None:
    z, x, y = CENTRE_Z15
    status, headers, body = mesh.get(f"/tiles/{z}/{x}/{y}.png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert "public" in headers["Cache-Control"] and headers["ETag"].startswith('"')
    assert Image.open(io.BytesIO(body)).size == (256, 256)

    status, again, body = mesh.get(f"/tiles/{z}/{x}/{y}.png",
                                   {"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b"" and again["ETag"] == headers["ETag"]

    status, headers, body = mesh.get(f"/tiles/{z}/{x}/{y}.mvt")
    assert status == 200 and headers["Content-Type"] == "application/vnd.mapbox-vector-tile"
    assert VectorTile.FromString(body).layers

    status, _, body = mesh.get("/tiles/19/0/0.png")
    error = json.loads(body)["error"]
    assert status == 400 and error["code"] == "INVALID_ARGUMENT" and error["field"] == "z"


def test_http_json_gateway_geocodes_and_routes(mesh: Mesh) -> None:
    status, _, body = mesh.get("/api/geocode?q=Bd%20des%20Moulins")
    assert status == 200
    assert json.loads(body)["candidates"][0]["label"] == "Boulevard des Moulins, Monaco"

    status, _, body = mesh.get(f"/api/route?from={FROM[0]},{FROM[1]}&to={TO[0]},{TO[1]}")
    assert status == 200
    best = json.loads(body)["routes"][0]
    assert best["distance_m"] > 1000 and best["duration_s"] > 60
    assert len(best["coordinates"]) > 10

    for path, field in (("/api/route?from=91,0&to=43.74,7.42", "from.latitude"),
                        ("/api/route?to=43.74,7.42", "from"),
                        (f"/api/route?from={FROM[0]},{FROM[1]}&to={TO[0]},{TO[1]}&mode=boat",
                         "mode"),
                        ("/api/geocode?q=", "text"),
                        ("/api/traffic?bbox=1,2,3", "bbox")):
        status, _, body = mesh.get(path)
        error = json.loads(body)["error"]
        assert (status, error["field"]) == (400, field), path

    status, _, body = mesh.get("/api/traffic?bbox=43.72,7.40,43.76,7.44")
    assert status == 200 and json.loads(body)["type"] == "FeatureCollection"


def _colour_along(image: Image.Image, pixels: list[list[float]],
                  colour: tuple[int, int, int] = ROUTE_RGB) -> float:
    """The share of a line's points with ``colour`` within 3 px."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int32)
    close = np.abs(rgb - np.array(colour)).sum(axis=2) < 60
    height, width = close.shape
    hits = inside = 0
    for px, py in pixels:
        x, y = int(px), int(py)
        if not (3 <= x < width - 3 and 3 <= y < height - 3):
            continue
        inside += 1
        hits += bool(close[y - 3:y + 4, x - 3:x + 4].any())
    assert inside > 3, "the line is not in view"
    return hits / inside


async def _slow_a_road_on_the_route(mesh: Mesh) -> None:
    """A jam on the road under the route's middle, through routing's UpdateTraffic."""
    async with RoutingClient(mesh.routing) as rt:
        route = (await rt.route(FROM, TO)).routes[0]
        line = polyline.decode(route.polyline, 5)
        road = (await rt.snap([line[len(line) // 2]])).points[0]
        done = await rt.update_traffic("monaco", [observation(way_id=road.way_id,
                                                              speed_factor=0.2)],
                                       valid_for_s=600, token=mint_token(DEV_SECRET, "admin"))
        assert done.segments_updated >= 1


async def test_map_page_searches_and_routes_in_chromium(mesh: Mesh, tmp_path: Path) -> None:
    await _slow_a_road_on_the_route(mesh)
    node, chromium = shutil.which("node"), shutil.which("chromium")
    assert node and chromium, "make test installs node and Debian's chromium (browser-deps)"
    assert (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(), \
        "make browser-deps installs playwright-core into tests/browser"
    done = subprocess.run(
        [node, str(BROWSER_DIR / "map_page.mjs"), mesh.http + "/?region=monaco", str(tmp_path),
         "Bd des Moulins", f"{FROM[0]},{FROM[1]}", f"{TO[0]},{TO[1]}"],
        capture_output=True, text=True, timeout=120, env={"CHROMIUM": chromium, "PATH": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())

    errors = [m for m in report["console"] if m["type"] in ("error", "warning")]
    assert not errors and not report["pageErrors"], (errors, report["pageErrors"])
    assert not report["failedRequests"] and not report["badResponses"], report
    assert report["firstResult"] == "Boulevard des Moulins, Monaco"
    assert "min" in report["eta"] or " s" in report["eta"]

    shot = Image.open(tmp_path / "route.png")
    assert _colour_along(shot, report["routePixels"]) > 0.9
    # and the colour is the route's, not the map's: away from the route it is rare
    rgb = np.asarray(shot.convert("RGB"), dtype=np.int32)
    assert (np.abs(rgb - np.array(ROUTE_RGB)).sum(axis=2) < 60).mean() < 0.05

    # the jam shows as a red road where it is
    assert report["trafficInfo"].startswith("Live traffic:") and "slowed" in report["trafficInfo"]
    jam = Image.open(tmp_path / "traffic.png")
    assert _colour_along(jam, report["trafficPixels"], JAM_RGB) > 0.9
