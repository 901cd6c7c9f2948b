"""The maps HTTP endpoint, for browsers and CDNs (aiohttp, in the maps process).

    GET /                          the map page (Leaflet: tiles, search, click-to-route,
                                   live traffic)
    GET /tiles/{z}/{x}/{y}.png     a raster tile; .mvt for a Mapbox Vector Tile
    GET /api/geocode?q=...&limit=&bias=lat,lng
    GET /api/reverse?at=lat,lng
    GET /api/route?from=lat,lng&to=lat,lng&mode=drive|bicycle|walk
    GET /api/traffic?bbox=south,west,north,east
    GET /api/regions

Tiles carry ``Cache-Control: public`` and an ``ETag`` (a CDN and the browser keep them;
``If-None-Match`` with the current ETag answers 304 without a lookup). The JSON
endpoints are a gateway onto the gRPC API: the same checks (``convert``), the same
errors, as JSON ``{"error": {"code", "message", "reason", "field"}}`` with the HTTP
status that matches the gRPC code. Query text and coordinates are never logged: the
access log is off, and errors name fields, never values.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import polyline as polyline_codec
from aiohttp import web

from geoplex.clients.errors import GeoplexRpcError
from geoplex.clients.routing import RoutingClient, travel_mode
from geoplex.maps.v1 import maps_pb2 as pb
from geoplex.servers._runtime.errors import FailedPrecondition, GeoplexError, InvalidArgument
from geoplex.servers._runtime.geo import validate_location
from geoplex.servers._runtime.http import start_http

from . import convert
from .app import MapsApp
from .tile_service import TileService

logger = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).with_name("page")
TILE_MAX_AGE_S = 3600
STATUS = {"INVALID_ARGUMENT": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
          "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "FAILED_PRECONDITION": 422,
          "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(code: str, message: str, reason: str = "", field: str = "") -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if reason:
        body["reason"] = reason
    if field:
        body["field"] = field
    return web.json_response({"error": body}, status=STATUS.get(code, 500))


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GeoplexError as exc:
        return _error(exc.code, exc.message, exc.reason, exc.metadata.get("field", ""))
    except GeoplexRpcError as exc:  # a call to routing failed: say so in its terms
        return _error(exc.code.name, exc.message, exc.reason)


def point(raw: str | None, field: str) -> tuple[float, float]:
    """``lat,lng`` from a query parameter; InvalidArgument naming it (never the value)."""
    if raw is None or not raw.strip():
        raise InvalidArgument(field, "is required: lat,lng in degrees", reason="REQUIRED_FIELD")
    parts = raw.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        raise InvalidArgument(field, "must be lat,lng in degrees") from None
    validate_location(lat, lon, field)
    return lat, lon


def _int(raw: str | None, field: str, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(field, "must be an integer") from None


def route_json(answer: Any) -> dict[str, Any]:
    """A ComputeRouteResponse as the page draws it: [lat, lng] pairs, seconds, metres."""
    routes = []
    for r in answer.routes:
        routes.append({
            "distance_m": round(r.distance_meters, 1),
            "duration_s": round(r.duration.ToTimedelta().total_seconds(), 1),
            "static_duration_s": round(r.static_duration.ToTimedelta().total_seconds(), 1),
            "summary": r.summary,
            "polyline": r.polyline,
            "coordinates": [list(p) for p in polyline_codec.decode(r.polyline, 5)],
            "steps": [{"name": s.name, "ref": s.ref, "distance_m": round(s.distance_meters, 1),
                       "duration_s": round(s.duration.ToTimedelta().total_seconds(), 1)}
                      for s in r.steps],
        })
    return {"region": answer.region, "routes": routes,
            "metric_version": answer.metric_version}


class MapsHttp:
    def __init__(self, app: MapsApp, tiles: TileService | None,
                 routing: RoutingClient | None, vendor: dict[str, Path]) -> None:
        self.app = app
        self.tiles = tiles
        self.routing = routing
        self.vendor = vendor                  # "leaflet.js" -> fetched file
        self._runner: web.AppRunner | None = None
        self.address = ""

    def application(self) -> web.Application:
        web_app = web.Application(middlewares=[errors])
        web_app.add_routes([
            web.get("/", self.page),
            web.get("/static/{name}", self.static),
            web.get("/vendor/{name}", self.vendor_file),
            web.get(r"/tiles/{z:\d+}/{x:\d+}/{y:\d+}.{ext:png|mvt}", self.tile),
            web.get("/api/geocode", self.geocode),
            web.get("/api/reverse", self.reverse),
            web.get("/api/route", self.route),
            web.get("/api/traffic", self.traffic),
            web.get("/api/regions", self.regions),
        ])
        return web_app

    async def start(self, host: str, port: int) -> str:
        self._runner, self.address = await start_http(self.application(), host, port,
                                                      "GEOPLEX_MAPS_HTTP_PORT")
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # pages -------------------------------------------------------------------------------

    async def page(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(PAGE_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = PAGE_DIR / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def vendor_file(self, request: web.Request) -> web.StreamResponse:
        path = self.vendor.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    # tiles -------------------------------------------------------------------------------

    async def tile(self, request: web.Request) -> web.StreamResponse:
        if self.tiles is None:
            return _error("FAILED_PRECONDITION", "tiles are off on this server",
                          "TILES_OFF")
        m = request.match_info
        tile = await self.tiles.get(int(m["z"]), int(m["x"]), int(m["y"]), m["ext"],
                                    request.headers.get("If-None-Match", ""))
        headers = {"ETag": tile.etag, "Cache-Control": f"public, max-age={TILE_MAX_AGE_S}",
                   "Access-Control-Allow-Origin": "*"}
        if tile.not_modified:
            return web.Response(status=304, headers=headers)
        if tile.empty and m["ext"] == "mvt":
            return web.Response(status=204, headers=headers)
        return web.Response(body=tile.data, content_type=tile.content_type, headers=headers)

    # JSON gateway ------------------------------------------------------------------------

    async def geocode(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        message = pb.GeocodeRequest(text=q.get("q", ""),
                                    page_size=_int(q.get("limit"), "limit", 5))
        if q.get("bias"):
            lat, lon = point(q.get("bias"), "bias")
            message.bias.latitude, message.bias.longitude = lat, lon
        text, bias, size, offset = convert.geocode_from_pb(message)
        found = await self.app.geocode(text, bias, size, offset)
        return web.json_response({"candidates": [
            {"label": c.label, "kind": c.kind, "lat": c.lat, "lng": c.lon,
             "confidence": round(c.confidence, 4), "interpolated": c.interpolated}
            for c in found[:size]]})

    async def reverse(self, request: web.Request) -> web.StreamResponse:
        lat, lon = point(request.query.get("at"), "at")
        answer = await self.app.reverse(lat, lon, None)
        return web.json_response({"label": answer.label, "kind": answer.kind,
                                  "lat": answer.lat, "lng": answer.lon,
                                  "distance_m": round(answer.distance_m, 1)})

    def _routing(self) -> RoutingClient:
        if self.routing is None:
            raise FailedPrecondition("routing is not configured on this maps server "
                                     "(GEOPLEX_ROUTING_TARGET)", reason="ROUTING_OFF")
        return self.routing

    async def route(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        origin, destination = point(q.get("from"), "from"), point(q.get("to"), "to")
        mode = q.get("mode", "drive")
        try:
            travel_mode(mode)
        except ValueError:
            raise InvalidArgument("mode", "unknown travel mode",
                                  allowed=("drive", "bicycle", "walk")) from None
        answer = await self._routing().route(origin, destination, mode=mode,
                                             traffic_aware=True, timeout=10)
        return web.json_response(route_json(answer))

    async def traffic(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("bbox", "")
        try:
            south, west, north, east = (float(v) for v in raw.split(","))
        except ValueError:
            raise InvalidArgument("bbox", "must be south,west,north,east in degrees") from None
        validate_location(south, west, "bbox")
        validate_location(north, east, "bbox")
        if not (south < north and west < east) or not all(
                math.isfinite(v) for v in (south, west, north, east)):
            raise InvalidArgument("bbox", "south must be below north and west of east")
        routing = self._routing()
        features = []
        for region in await routing.regions(timeout=5):
            if region.low.latitude > north or region.high.latitude < south \
                    or region.low.longitude > east or region.high.longitude < west:
                continue
            answer = await routing.get_traffic(region.name, (south, west), (north, east),
                                               max_segments=2000, timeout=5)
            for s in answer.segments:
                ratio = s.speed_kmh / s.free_flow_speed_kmh if s.free_flow_speed_kmh else 1.0
                features.append({
                    "type": "Feature",
                    "properties": {"segment": s.segment_id, "speed_kmh": round(s.speed_kmh, 1),
                                   "free_flow_kmh": round(s.free_flow_speed_kmh, 1),
                                   "ratio": round(ratio, 3)},
                    "geometry": {"type": "LineString", "coordinates": [
                        [lng, lat] for lat, lng in polyline_codec.decode(s.polyline, 5)]}})
        return web.json_response({"type": "FeatureCollection", "features": features})

    async def regions(self, _request: web.Request) -> web.StreamResponse:
        out: list[dict[str, Any]] = []
        if self.routing is not None:
            for r in await self.routing.regions(timeout=5):
                out.append({"name": r.name, "bounds": [[r.low.latitude, r.low.longitude],
                                                       [r.high.latitude, r.high.longitude]]})
        return web.json_response({"regions": out, "tiles": self.tiles is not None})

