"""The Prometheus HTTP API (aiohttp, in the telemetry process), so Grafana's Prometheus
data source and other Prometheus tools read from the store:

    GET|POST /api/v1/query?query=...&time=...
    GET|POST /api/v1/query_range?query=...&start=...&end=...&step=...
    GET|POST /api/v1/series?match[]=...&start=...&end=...
    GET|POST /api/v1/labels?match[]=...
    GET      /api/v1/label/<name>/values?match[]=...
    GET      /api/v1/metadata          (no metadata is kept yet: an empty object)
    GET      /api/v1/status/buildinfo
    GET      /api/v1/rules             rule groups, their rules' health and alerts
    GET      /api/v1/alerts            pending and firing alerts
    POST     /api/v1/rules/<namespace> a rule file's text (YAML) replaces that namespace's
                                       groups, validated as files are (400 naming each
                                       problem, nothing changed); Mimir's ruler API shape
    DELETE   /api/v1/rules/<namespace> removes them
    POST     /api/v1/write             Prometheus remote write 1.0 (protobuf + snappy)

Answers are Prometheus's JSON (``{"status": "success", "data": ...}``); errors are
``{"status": "error", "errorType": "bad_data" | "execution" | ..., "error": "..."}`` with
Prometheus's HTTP codes (400 bad input, 422 a query that cannot run, 503 limits). Times
are Unix seconds (fractions allowed) or RFC 3339; steps a duration (``15s``) or seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import MultiDict, MultiMapping

from geoplex import __version__
from geoplex.servers._runtime.errors import FailedPrecondition, GeoplexError, InvalidArgument
from geoplex.servers._runtime.http import start_http
from geoplex.servers._runtime.validate import is_id


from . import convert, queries
from .adapters import snappy_codec
from .ingest_stats import IngestStats
from .remote_write import MalformedWriteRequest, decode_write_request
from .config import TelemetryConfig
from .convert import DEFAULT_RANGE_MS, SelectorParser
from .limits import TENANT_HEADER, SampleRateLimit, tenant_of
from .promql.engine import Engine
from .promql.parser import parse_duration
from .rules import api as rules_api
from .rules.manager import RuleManager
from .tsdb.api import Storage
from .tsdb.labels import Matcher, validate_label_name

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ERROR_TYPES = {"INVALID_ARGUMENT": ("bad_data", 400), "RESOURCE_EXHAUSTED": ("execution", 422),
               "SAMPLE_RATE_LIMIT": ("too_many_requests", 429),
               "FAILED_PRECONDITION": ("execution", 422), "UNAVAILABLE": ("unavailable", 503),
               "DEADLINE_EXCEEDED": ("timeout", 503), "NOT_FOUND": ("not_found", 404)}
MAX_BODY_BYTES = 32 << 20          # a compressed remote-write body
MAX_UNCOMPRESSED_BYTES = 256 << 20  # ... and what it may expand to
MIN_TIME_MS = -(1 << 62) // 1000
MAX_TIME_MS = (1 << 62) // 1000


def _error(error_type: str, message: str, status: int) -> web.Response:
    return web.json_response({"status": "error", "errorType": error_type, "error": message},
                             status=status)


logger = logging.getLogger(__name__)
API_RULES_DIR = "rules-api"   # under the data directory: groups set through the API


def _namespace(text: str) -> str:
    if not is_id(text) or "/" in text or text.startswith("."):
        raise InvalidArgument("namespace", "must be 1..128 printable characters, no '/' "
                              "and not starting with '.'")
    return f"api:{text}"


def save_api_rules(data_dir: Path, name: str, text: str | None) -> None:
    """Keep (or with None, forget) a namespace's rule text, so a restart loads it again."""
    directory = data_dir / API_RULES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yml"
    if text is None:
        path.unlink(missing_ok=True)
        return
    temporary = directory / f".{name}.yml.tmp"
    with temporary.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


async def load_api_rules(rules: RuleManager, data_dir: Path) -> None:
    """The namespaces set through the API before a restart."""
    directory = data_dir / API_RULES_DIR
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.yml")):
        try:
            await rules.set_group(f"api:{path.stem}", path.read_text(encoding="utf-8"))
        except InvalidArgument as error:
            logger.warning("rule namespace %s from the API no longer loads: %s", path.stem,
                           error)


def success(data: Any, warnings: Sequence[str] = (), infos: Sequence[str] = (),
            resolution: str | None = None) -> web.Response:
    """Prometheus's answer; ``resolution`` (the tier that served a query: "raw", "1m",
    "1h") is a field of our own beside ``data``, which Prometheus clients ignore."""
    body: dict[str, Any] = {"status": "success", "data": data}
    if warnings:
        body["warnings"] = list(warnings)
    if infos:
        body["infos"] = list(infos)
    if resolution is not None:
        body["resolution"] = resolution
    return web.json_response(body)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GeoplexError as exc:
        # a rate limit is 429, which remote-write senders retry with backoff
        kind, status = ERROR_TYPES.get(exc.reason, ERROR_TYPES.get(exc.code,
                                                                   ("internal", 500)))
        # the query's problem in Prometheus's words, where the engine gave them
        return _error(kind, exc.message.removeprefix("query: "), status)


def parse_time(raw: str, field: str) -> int:
    """Unix seconds (``1700000000.5``) or RFC 3339 to milliseconds."""
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise InvalidArgument(field, f"cannot parse {raw!r} to a valid timestamp"
                                  ) from None
    if not math.isfinite(seconds):
        raise InvalidArgument(field, f"cannot parse {raw!r} to a valid timestamp")
    return max(MIN_TIME_MS, min(MAX_TIME_MS, round(seconds * 1000)))


def parse_step(raw: str) -> int:
    """A duration (``15s``, ``1m30s``) or seconds (``15``, ``0.5``) to milliseconds."""
    try:
        seconds = float(raw)
    except ValueError:
        try:
            return parse_duration(raw)
        except Exception:  # noqa: BLE001 - any failure is the same bad input
            raise InvalidArgument("step", f"cannot parse {raw!r} to a valid duration"
                                  ) from None
    if not math.isfinite(seconds):
        raise InvalidArgument("step", f"cannot parse {raw!r} to a valid duration")
    return round(seconds * 1000)


class PrometheusApi:
    def __init__(self, store: Storage, engine: Engine, parse_selector: SelectorParser,
                 config: TelemetryConfig, limit: SampleRateLimit, stats: IngestStats,
                 rules: RuleManager | None = None) -> None:
        self.store = store
        self.engine = engine
        self.parse_selector = parse_selector
        self.config = config
        self.limit = limit
        self.rules = rules
        self.stats = stats
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        app = web.Application(middlewares=[errors], client_max_size=MAX_BODY_BYTES)
        # --- dashboard: GET / and /dashboard (the page), /dashboard/..., GET /api/v1/silences
        # (servers/telemetry/dashboard/__init__.py holds the handlers and their docs)
        from .dashboard import Dashboard
        Dashboard(self.config.notifiers).add_routes(app)
        # --- end dashboard
        app.router.add_post("/api/v1/write", self.remote_write)
        for path, handler in (("/api/v1/query", self.query),
                              ("/api/v1/query_range", self.query_range),
                              ("/api/v1/series", self.series),
                              ("/api/v1/labels", self.labels)):
            app.router.add_get(path, handler)
            app.router.add_post(path, handler)
        app.router.add_get("/api/v1/label/{name}/values", self.label_values)
        app.router.add_get("/api/v1/metadata", self.metadata)
        app.router.add_get("/api/v1/status/buildinfo", self.buildinfo)
        app.router.add_get("/api/v1/rules", self.rule_groups)
        app.router.add_get("/api/v1/alerts", self.alerts)
        app.router.add_post("/api/v1/rules/{namespace}", self.set_rules)
        app.router.add_delete("/api/v1/rules/{namespace}", self.delete_rules)
        return app

    async def start(self, host: str, port: int) -> str:
        self._runner, address = await start_http(self.application(), host, port,
                                                 "GEOPLEX_TELEMETRY_HTTP_PORT")
        return address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    async def _params(request: web.Request) -> MultiMapping[str]:
        if request.method == "POST":
            form = await request.post()
            return MultiDict((k, v) for k, v in form.items() if isinstance(v, str))
        return request.query

    def _range(self, params: MultiMapping[str]) -> tuple[int, int]:
        now = int(time.time() * 1000)
        end = parse_time(params["end"], "end") if params.get("end") else now
        start = (parse_time(params["start"], "start") if params.get("start")
                 else end - DEFAULT_RANGE_MS)
        if end < start:
            raise InvalidArgument("end", "end timestamp must not be before start time")
        return start, end

    def _selectors(self, params: MultiMapping[str], required: bool) -> list[list[Matcher]]:
        match = params.getall("match[]", [])
        if required and not match:
            raise InvalidArgument("match[]", "no match[] parameter provided")
        return [self.parse_selector(m) for m in match]

    async def query(self, request: web.Request) -> web.StreamResponse:
        params = await self._params(request)
        at = (parse_time(params["time"], "time") if params.get("time")
              else int(time.time() * 1000))
        result = await asyncio.to_thread(queries.instant, self.engine,
                                         params.get("query", ""), at,
                                         params.get("resolution", ""))
        return success(queries.query_json(result), result.warnings, result.infos,
                       result.resolution)

    async def query_range(self, request: web.Request) -> web.StreamResponse:
        params = await self._params(request)
        for name in ("start", "end", "step"):
            if not params.get(name):
                raise InvalidArgument(name, f"missing {name} parameter")
        start, end = parse_time(params["start"], "start"), parse_time(params["end"], "end")
        step = parse_step(params["step"])
        if step <= 0:
            raise InvalidArgument("step", "zero or negative query resolution step widths "
                                  "are not accepted. Try a positive integer")
        result = await asyncio.to_thread(queries.range_query, self.engine,
                                         params.get("query", ""), start, end, step,
                                         params.get("resolution", ""))
        return success(queries.query_json(result), result.warnings, result.infos,
                       result.resolution)

    async def series(self, request: web.Request) -> web.StreamResponse:
        params = await self._params(request)
        selectors = self._selectors(params, required=True)
        start, end = self._range(params)
        found = await asyncio.to_thread(queries.series_matching, self.store, selectors, start,
                                        end)
        return success([dict(labels.pairs) for labels in found])

    async def labels(self, request: web.Request) -> web.StreamResponse:
        params = await self._params(request)
        return await self._labels(params, "")

    async def label_values(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        validate_label_name(name, internal=True)
        return await self._labels(request.query, name)

    async def _labels(self, params: MultiMapping[str], name: str) -> web.StreamResponse:
        selectors = self._selectors(params, required=False)
        start, end = self._range(params)
        return success(await asyncio.to_thread(queries.labels_matching, self.store, name,
                                               selectors, start, end))

    async def remote_write(self, request: web.Request) -> web.StreamResponse:
        """Remote write 1.0: answers 204 once the samples are in the write-ahead log; a
        body that cannot be stored is 400 (the sender drops it instead of retrying), and
        nothing of it is stored."""
        encoding = request.headers.get("Content-Encoding", "")
        if encoding.lower() != "snappy":
            raise InvalidArgument("Content-Encoding", f"{encoding or 'none'}: remote write "
                                  "bodies are snappy-compressed", allowed=["snappy"])
        raw = snappy_codec.uncompress(await request.read(), MAX_UNCOMPRESSED_BYTES)
        try:
            decoded = decode_write_request(raw)
        except MalformedWriteRequest as error:
            raise InvalidArgument("body", f"is not a remote-write WriteRequest protobuf: "
                                  f"{error}", reason="BAD_PROTOBUF") from None
        with self.stats.refusals("remote_write",
                                 lambda: len(decoded.timestamps)):
            samples = convert.remote_write_series(
                decoded, max_series=self.config.write_max_series,
                max_samples=self.config.write_max_samples,
                max_future_ms=int(self.config.max_future_s * 1000))
            if samples:
                self.limit.take(tenant_of(request.headers.get(TENANT_HEADER)),
                                sum(len(ts) for _, ts, _ in samples))
                await asyncio.to_thread(self.store.append_series, samples)
        return web.Response(status=204)

    async def metadata(self, _request: web.Request) -> web.StreamResponse:
        return success({})

    async def buildinfo(self, _request: web.Request) -> web.StreamResponse:
        # Grafana reads the version to choose its query features: speak as Prometheus 3
        return success({"version": "3.0.0", "revision": f"geoplex-{__version__}",
                        "branch": "", "buildUser": "", "buildDate": "", "goVersion": ""})

    async def rule_groups(self, request: web.Request) -> web.StreamResponse:
        data, warnings = rules_api.rules_data(self.rules, request.query, self.parse_selector)
        return success(data, warnings)

    def _rule_manager(self) -> RuleManager:
        if self.rules is None:
            raise FailedPrecondition("rule evaluation is off on this server")
        return self.rules

    async def set_rules(self, request: web.Request) -> web.StreamResponse:
        """A namespace's groups from a rule file's text, as if a file of that name."""
        name = request.match_info["namespace"]
        namespace = _namespace(name)
        text = await request.text()
        groups = await self._rule_manager().set_group(namespace, text)
        await asyncio.to_thread(save_api_rules, self.config.data_dir, name, text)
        return success({"namespace": namespace, "groups": groups})

    async def delete_rules(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["namespace"]
        namespace = _namespace(name)
        await self._rule_manager().remove_file(namespace)
        await asyncio.to_thread(save_api_rules, self.config.data_dir, name, None)
        return success({"namespace": namespace, "groups": []})

    async def alerts(self, _request: web.Request) -> web.StreamResponse:
        return success(rules_api.alerts_data(self.rules))
