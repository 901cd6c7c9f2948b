"""The telemetry dashboard: a page on the Prometheus HTTP endpoint showing the mesh at a
glance, and the one JSON route of its own that the page needs.

    GET /  and  GET /dashboard         the page (index.html, app.js, style.css here)
    GET /dashboard/static/{name}       its files
    GET /dashboard/config.json         whether the chart library is installed
    GET /dashboard/vendor/{name}       the chart library (uPlot, from npm: see below)
    GET /api/v1/silences[?expired=1]   the silences of the notifier nodes
                                       (GEOPLEX_TELEMETRY_NOTIFIERS), through their gRPC
                                       ListSilences; ``[]`` when none is configured

The panels are PromQL over ``/api/v1/query_range``, run by the page itself; the firing
alerts come from ``/api/v1/alerts``. The chart library is not in git: ``make
browser-deps`` runs ``npm ci`` in ``vendor/`` (uPlot's version and sha512 pinned in
``vendor/package-lock.json``). Without it the page says how to install it and shows the
alerts and silences all the same.

The page sends a Content-Security-Policy that allows only its own scripts and styles (no
inline script, no inline event handlers), and writes every label with ``textContent``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp

from geoplex.clients.channel import ChannelOptions
from geoplex.clients.errors import GeoplexRpcError
from geoplex.clients.notifier import NotifierClient
from geoplex.notifier.v1 import notifier_pb2 as npb

logger = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).resolve().parent
VENDOR_DIR = PAGE_DIR / "vendor" / "node_modules" / "uplot" / "dist"
VENDOR_FILES = ("uPlot.iife.min.js", "uPlot.min.css")
STATIC_FILES = ("app.js", "style.css")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
NOTIFIER_TIMEOUT_S = 5.0
MAX_SILENCE_PAGES = 20          # x 1,000 silences per notifier
MATCH_OPS = {npb.MATCH_TYPE_EQUAL: "=", npb.MATCH_TYPE_NOT_EQUAL: "!=",
             npb.MATCH_TYPE_REGEX: "=~", npb.MATCH_TYPE_NOT_REGEX: "!~"}
STATES = {npb.SILENCE_STATE_PENDING: "pending", npb.SILENCE_STATE_ACTIVE: "active",
          npb.SILENCE_STATE_EXPIRED: "expired"}


def _time(ts: Timestamp) -> str | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime().isoformat(timespec="milliseconds") + "Z"


def silence_json(silence: npb.Silence) -> dict[str, Any]:
    """A silence in Alertmanager's API v2 shape (``matchers`` with ``isRegex`` and
    ``isEqual``, ``status.state``), plus ``text``: the matchers as a selector."""
    matchers = [{"name": m.name, "value": m.value,
                 "isRegex": m.type in (npb.MATCH_TYPE_REGEX, npb.MATCH_TYPE_NOT_REGEX),
                 "isEqual": m.type in (npb.MATCH_TYPE_EQUAL, npb.MATCH_TYPE_REGEX,
                                       npb.MATCH_TYPE_UNSPECIFIED)}
                for m in silence.matchers]
    text = ", ".join(f'{m.name}{MATCH_OPS.get(m.type, "=")}"{m.value}"'
                     for m in silence.matchers)
    out: dict[str, Any] = {
        "id": silence.id, "matchers": matchers, "text": "{" + text + "}",
        "startsAt": _time(silence.starts_at), "endsAt": _time(silence.ends_at),
        "updatedAt": _time(silence.updated_at), "createdBy": silence.created_by,
        "comment": silence.comment,
        "status": {"state": STATES.get(silence.state, "unknown")}}
    if silence.expired_by:
        out["expiredBy"] = silence.expired_by
        out["expireComment"] = silence.expire_comment
    return out


class Dashboard:
    """The page's routes; one SDK client per notifier node, opened on first use and
    closed with the application."""

    def __init__(self, notifiers: Sequence[str]) -> None:
        self.notifiers = tuple(notifiers)
        self._clients: dict[str, NotifierClient] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/dashboard", self.page)
        app.router.add_get("/dashboard/config.json", self.page_config)
        app.router.add_get("/dashboard/static/{name}", self.static)
        app.router.add_get("/dashboard/vendor/{name}", self.vendor)
        app.router.add_get("/api/v1/silences", self.silences)
        app.on_cleanup.append(self._close)

    async def _close(self, _app: web.Application) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    # the page ----------------------------------------------------------------------------

    async def page(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(PAGE_DIR / "index.html",
                                headers={"Cache-Control": "no-cache",
                                         "Content-Security-Policy": CSP,
                                         "X-Content-Type-Options": "nosniff"})

    async def page_config(self, _request: web.Request) -> web.StreamResponse:
        present = all((VENDOR_DIR / name).is_file() for name in VENDOR_FILES)
        return web.json_response({
            "chartLibrary": present,
            "install": "make browser-deps (npm ci --prefix servers/telemetry/dashboard/vendor)",
            "notifiers": len(self.notifiers)}, headers={"Cache-Control": "no-cache"})

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.FileResponse(PAGE_DIR / name, headers={"Cache-Control": "no-cache",
                                                          "X-Content-Type-Options": "nosniff"})

    async def vendor(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = VENDOR_DIR / name
        if name not in VENDOR_FILES or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "public, max-age=86400",
                                               "X-Content-Type-Options": "nosniff"})

    # silences ----------------------------------------------------------------------------

    def _client(self, address: str) -> NotifierClient:
        client = self._clients.get(address)
        if client is None:   # no retries: a node down is a warning on the page, at once
            client = self._clients[address] = NotifierClient(
                address, ChannelOptions(timeout=NOTIFIER_TIMEOUT_S, retry=False))
        return client

    async def _list(self, address: str, include_expired: bool) -> list[npb.Silence]:
        client, token = self._client(address), ""
        found: list[npb.Silence] = []
        for _ in range(MAX_SILENCE_PAGES):
            answer = await client.list_silences(include_expired=include_expired,
                                                page_size=1000, page_token=token,
                                                timeout=NOTIFIER_TIMEOUT_S)
            found.extend(answer.silences)
            token = answer.next_page_token
            if not token:
                break
        return found

    async def silences(self, request: web.Request) -> web.StreamResponse:
        """Every notifier node's silences, one entry per id (nodes share them: the most
        recently updated copy wins); a node that does not answer is a warning, and all
        of them not answering is 503."""
        include_expired = request.query.get("expired", "").lower() in ("1", "true", "yes")
        answers = await asyncio.gather(*(self._list(a, include_expired)
                                         for a in self.notifiers), return_exceptions=True)
        by_id: dict[str, npb.Silence] = {}
        warnings = []
        for address, answer in zip(self.notifiers, answers):
            if isinstance(answer, GeoplexRpcError):
                warnings.append(f"notifier {address}: {answer}".rstrip(": "))
                continue
            if isinstance(answer, BaseException):
                raise answer
            for silence in answer:
                kept = by_id.get(silence.id)
                if kept is None or silence.updated_at.ToNanoseconds() > \
                        kept.updated_at.ToNanoseconds():
                    by_id[silence.id] = silence
        if self.notifiers and len(warnings) == len(self.notifiers):
            logger.warning("dashboard: no notifier answered ListSilences: %s",
                           "; ".join(warnings))
            return web.json_response({"status": "error", "errorType": "unavailable",
                                      "error": "; ".join(warnings)}, status=503)
        ordered = sorted(by_id.values(), key=lambda s: (s.ends_at.ToNanoseconds(), s.id))
        body: dict[str, Any] = {"status": "success",
                                "data": {"silences": [silence_json(s) for s in ordered],
                                         "notifiers": len(self.notifiers)}}
        if warnings:
            body["warnings"] = warnings
        return web.json_response(body)
