"""Alerting rules in a real telemetry process: samples written over gRPC cross a
threshold, ``/api/v1/alerts`` shows the alert pending and then firing, the firing alert
is posted to a real NotifierService server run by the test (a receiver of ours that
records what it is sent), and after a restart mid-firing the alert is firing again with
the same active-since time and is posted with the same start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
import grpc.aio
import pytest
from polling import eventually

from geoplex.clients import ChannelOptions
from geoplex.clients.telemetry import TelemetryClient, series
from geoplex.infra.local import free_port
from geoplex.notifier.v1 import notifier_pb2 as npb
from geoplex.notifier.v1 import notifier_pb2_grpc

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

Context = grpc.aio.ServicerContext

RULES = """\
groups:
  - name: queues
    interval: 200ms
    rules:
      - record: queue:depth:max
        expr: max by (queue) (test_queue_depth)
      - alert: QueueBacklog
        expr: queue:depth:max > 100
        for: 1s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.queue }} holds {{ $value }} messages"
"""


@dataclass(frozen=True)
class Posted:
    received_s: float
    alerts: tuple[npb.Alert, ...]


class RecordingNotifier(notifier_pb2_grpc.NotifierServiceServicer):
    """The notifier's API served by the test: it keeps every PostAlerts it receives."""

    def __init__(self) -> None:
        self.posted: list[Posted] = []

    async def PostAlerts(self, request: npb.PostAlertsRequest,
                         context: Context[npb.PostAlertsRequest, npb.PostAlertsResponse]
                         ) -> npb.PostAlertsResponse:
        self.posted.append(Posted(time.time(), tuple(request.alerts)))
        return npb.PostAlertsResponse(accepted=len(request.alerts))

    def alerts(self, since: int = 0) -> list[npb.Alert]:
        return [a for p in self.posted[since:] for a in p.alerts]

    # the rest of the API is not this receiver's
    async def ListAlerts(self, request: npb.ListAlertsRequest,
                         context: Context[npb.ListAlertsRequest, npb.ListAlertsResponse]
                         ) -> npb.ListAlertsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a recording receiver")

    async def CreateSilence(self, request: npb.CreateSilenceRequest,
                            context: Context[npb.CreateSilenceRequest,
                                             npb.CreateSilenceResponse]
                            ) -> npb.CreateSilenceResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a recording receiver")

    async def GetSilence(self, request: npb.GetSilenceRequest,
                         context: Context[npb.GetSilenceRequest, npb.GetSilenceResponse]
                         ) -> npb.GetSilenceResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a recording receiver")

    async def ListSilences(self, request: npb.ListSilencesRequest,
                           context: Context[npb.ListSilencesRequest, npb.ListSilencesResponse]
                           ) -> npb.ListSilencesResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a recording receiver")

    async def ExpireSilence(self, request: npb.ExpireSilenceRequest,
                            context: Context[npb.ExpireSilenceRequest,
                                             npb.ExpireSilenceResponse]
                            ) -> npb.ExpireSilenceResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a recording receiver")

    async def ListNotifications(self, request: npb.ListNotificationsRequest,
                                context: Context[npb.ListNotificationsRequest,
                                                 npb.ListNotificationsResponse]
                                ) -> npb.ListNotificationsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a recording receiver")


@pytest.fixture
async def notifier() -> AsyncIterator[tuple[RecordingNotifier, str]]:
    server = grpc.aio.server()
    receiver = RecordingNotifier()
    notifier_pb2_grpc.add_NotifierServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield receiver, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def get(session: aiohttp.ClientSession, port: int, path: str) -> dict[str, Any]:
    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        assert body["status"] == "success"
        return body


async def alerts(session: aiohttp.ClientSession, port: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await get(session, port, "/api/v1/alerts"))["data"]["alerts"]
    return found


def start_rules_telemetry(server_factory: Callable[..., ServerProcess], tmp_path: Path,
                          notifiers: str, name: str) -> tuple[ServerProcess, int]:
    """A telemetry process evaluating RULES (its store in ``tmp_path``) and posting to
    ``notifiers``; the process and its HTTP API's port."""
    rule_file = tmp_path / "queues.yml"
    rule_file.write_text(RULES)
    http_port = free_port()
    server = server_factory("telemetry", {
        "GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path / "store"),
        "GEOPLEX_TELEMETRY_HTTP_PORT": str(http_port),
        "GEOPLEX_TELEMETRY_RULE_FILES": str(rule_file),
        "GEOPLEX_TELEMETRY_NOTIFIERS": notifiers}, name)
    return server, http_port


async def test_an_alert_goes_pending_then_firing_is_posted_and_survives_a_restart(
        server_factory: Callable[..., ServerProcess], tmp_path: Path,
        notifier: tuple[RecordingNotifier, str]) -> None:
    receiver, notifier_address = notifier
    server, http_port = start_rules_telemetry(server_factory, tmp_path, notifier_address,
                                              "telemetry-rules")
    async with aiohttp.ClientSession() as http:
        async def evaluated() -> bool:
            groups = (await get(http, http_port, "/api/v1/rules"))["data"]["groups"]
            return bool(groups) and all(r["health"] == "ok" for r in groups[0]["rules"])
        await eventually(evaluated, 30, what="the group's first evaluation")
        groups = (await get(http, http_port, "/api/v1/rules"))["data"]["groups"]
        assert [(g["name"], g["file"], g["interval"]) for g in groups] == [
            ("queues", str(tmp_path / "queues.yml"), 0.2)]
        assert [(r["name"], r["type"]) for r in groups[0]["rules"]] == [
            ("queue:depth:max", "recording"), ("QueueBacklog", "alerting")]
        assert await alerts(http, http_port) == []

        async with TelemetryClient(server.address, ChannelOptions(retry=False)) as tm:
            now = int(time.time() * 1000)
            await tm.write([series({"__name__": "test_queue_depth", "queue": "orders"},
                                   [(now, 40.0)])])
            await tm.write([series({"__name__": "test_queue_depth", "queue": "orders"},
                                   [(now + 1, 250.0)])])   # over the threshold

        pending = await eventually(lambda: _state(http, http_port, "pending"), 10,
                                   what="the alert pending", every=0.02)
        assert pending["labels"] == {"alertname": "QueueBacklog", "queue": "orders",
                                     "severity": "page"}
        assert pending["annotations"] == {"summary": "orders holds 250 messages"}
        assert pending["value"] == "2.5e+02"
        firing = await eventually(lambda: _state(http, http_port, "firing"), 10,
                                  what="the alert firing (for: 1s)", every=0.02)
        assert firing["activeAt"] == pending["activeAt"]
        [rule] = [r for r in (await get(http, http_port, "/api/v1/rules"))["data"]["groups"][0]
                  ["rules"] if r["type"] == "alerting"]
        assert (rule["state"], rule["duration"], rule["alerts"][0]["state"]) == (
            "firing", 1.0, "firing")

        [first] = await eventually(lambda: receiver.alerts(), 10, what="the alert posted")
        assert dict(first.labels) == pending["labels"]
        assert dict(first.annotations) == pending["annotations"]
        starts_at = first.starts_at.ToMilliseconds()
        assert starts_at >= _ms(firing["activeAt"]) + 1000      # fired after for: 1s
        ends_ahead = first.ends_at.ToMilliseconds() - starts_at  # 4 x the 1 m resend delay
        assert 239_000 <= ends_ahead <= 241_000
        assert first.generator_url.startswith("/graph?g0.expr=")

        # a restart mid-firing: still firing, same active-since, posted with the same start
        posted_before = len(receiver.posted)
        await asyncio.to_thread(server.stop)   # SIGTERM: a graceful stop
        await asyncio.to_thread(server.start)  # the loop serves the notifier meanwhile
        again = await eventually(lambda: _state(http, http_port, "firing"), 30,
                                 what="the alert firing after the restart",
                                 ignore=(aiohttp.ClientError,), every=0.05)
        assert again["activeAt"] == firing["activeAt"]
        [reposted, *_] = await eventually(lambda: receiver.alerts(posted_before), 10,
                                          what="the alert posted after the restart")
        assert dict(reposted.labels) == dict(first.labels)
        assert reposted.starts_at.ToMilliseconds() == starts_at
        assert reposted.ends_at.ToMilliseconds() > first.ends_at.ToMilliseconds()
    await asyncio.to_thread(server.stop)


async def _state(http: aiohttp.ClientSession, port: int, state: str) -> dict[str, Any] | None:
    found = await alerts(http, port)
    return found[0] if len(found) == 1 and found[0]["state"] == state else None


def _ms(rfc3339: str) -> int:
    return round(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


async def test_rules_set_through_the_api_are_validated_kept_and_removable(
        server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """POST /api/v1/rules/<namespace> (Mimir's ruler API shape): a bad file is refused
    whole naming its problem; a good one runs and survives a restart; DELETE removes it."""
    http_port = free_port()
    env = {"GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path / "store"),
           "GEOPLEX_TELEMETRY_HTTP_PORT": str(http_port),
           "GEOPLEX_TELEMETRY_RULE_FILES": str(tmp_path / "none.yml")}
    (tmp_path / "none.yml").write_text("groups: []\n")
    server = server_factory("telemetry", env, "telemetry-rules-api")
    base = f"http://127.0.0.1:{http_port}/api/v1/rules"

    async def names(http: aiohttp.ClientSession) -> list[tuple[str, str]]:
        groups = (await get(http, http_port, "/api/v1/rules"))["data"]["groups"]
        return [(g["file"], g["name"]) for g in groups]

    async with aiohttp.ClientSession() as http:
        bad = "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: up ==\n"
        async with http.post(f"{base}/team-a", data=bad) as response:
            body = await response.json()
            assert response.status == 400 and body["errorType"] == "bad_data", body
            assert 'group "g"' in body["error"] and "parse error" in body["error"]
        assert await names(http) == []
        good = RULES.replace("name: queues", "name: api-queues")
        async with http.post(f"{base}/team-a", data=good) as response:
            assert response.status == 200, await response.text()
        assert await names(http) == [("api:team-a", "api-queues")]
    server.stop()
    server = server_factory("telemetry", env, "telemetry-rules-api-again")
    async with aiohttp.ClientSession() as http:
        assert await names(http) == [("api:team-a", "api-queues")]
        async with http.delete(f"{base}/team-a") as response:
            assert response.status == 200
        assert await names(http) == []
