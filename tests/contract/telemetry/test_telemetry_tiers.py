"""The downsampled tiers through a real telemetry process: its background job rolls cut
blocks up, the HTTP API and gRPC serve a query from the tier asked for (or the finest
that holds the range) and say which, and storage info reports every tier."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import InvalidArgumentError
from geoplex.clients.telemetry import TelemetryClient, series
from geoplex.infra.local import free_port
from geoplex.telemetry.v1 import telemetry_pb2 as pb

from polling import eventually

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

MIN = 60_000
HOUR = 60 * MIN
SCRAPE = 15_000
SPAN = 30 * MIN


@pytest.fixture(scope="module")
def http_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess],
           tmp_path_factory: pytest.TempPathFactory, http_port: int) -> ServerProcess:
    store: Path = tmp_path_factory.mktemp("telemetry-tiers")
    rules = store / "no-rules.yml"
    rules.write_text("groups: []\n")
    return server_factory("telemetry", {
        "GEOPLEX_TELEMETRY_DATA_DIR": str(store),
        "GEOPLEX_TELEMETRY_HTTP_PORT": str(http_port),
        "GEOPLEX_TELEMETRY_BLOCK_HOURS": str(1 / 60),       # one-minute blocks
        "GEOPLEX_TELEMETRY_OOO_WINDOW_SECONDS": "60",
        "GEOPLEX_TELEMETRY_MAINTENANCE_INTERVAL_SECONDS": "0.2",
        "GEOPLEX_TELEMETRY_RETENTION_RAW": "2d",
        # no rules: the default ones write ALERTS at the wall clock, and the 60 s
        # out-of-order window would then refuse this test's older samples
        "GEOPLEX_TELEMETRY_RULE_FILES": str(rules)}, "telemetry-tiers")


@pytest.fixture
async def tm(server: ServerProcess) -> AsyncIterator[TelemetryClient]:
    async with TelemetryClient(server.address, ChannelOptions(retry=False)) as client:
        yield client


def _get(port: int, path: str, **params: str) -> tuple[int, dict[str, Any]]:
    query = urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}?{query}",
                                    timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def _tiers(tm: TelemetryClient) -> dict[str, pb.TierInfo]:
    return {t.resolution: t for t in (await tm.storage_info()).tiers}


@pytest.fixture(scope="module")
def end_ms() -> int:
    """A minute-aligned end at most an hour ago whose half hour of data crosses an hour
    boundary at least 10 minutes before it, so the 1-hour tier has a whole bucket ending
    inside the 10-minute window the test asks about, whatever the wall clock says."""
    now = int(time.time() * 1000) // MIN * MIN - MIN
    into_hour = now % HOUR
    if into_hour >= 11 * MIN:
        return now - into_hour + min(into_hour, 29 * MIN)
    return now - into_hour - HOUR + 29 * MIN


@pytest.fixture
async def loaded(tm: TelemetryClient, end_ms: int) -> int:
    """Half an hour of a gauge, 15 s apart off the minute grid, written in one-minute
    slices; returns once the job has rolled the cut blocks up."""
    if (await _tiers(tm))["1m"].blocks:
        return end_ms
    start = end_ms - SPAN
    for lo in range(start, end_ms, MIN):
        await tm.write([series({"__name__": "tier_gauge", "job": "node"},
                               [(t + 7_500, float((t // SCRAPE) % 17))
                                for t in range(lo, lo + MIN, SCRAPE)])])

    async def rolled_up() -> bool:
        tiers = await _tiers(tm)
        return bool(tiers["1m"].blocks and tiers["1m"].bytes)

    await eventually(rolled_up, 60, what="a 1-minute block from the maintenance job")
    return end_ms


async def test_storage_info_reports_every_tier_and_its_retention(
        tm: TelemetryClient, loaded: int) -> None:
    tiers = await _tiers(tm)
    assert list(tiers) == ["raw", "1m", "1h"]
    assert tiers["raw"].blocks and tiers["raw"].bytes and tiers["1m"].samples
    assert tiers["raw"].retention.seconds == 2 * 86_400
    assert tiers["1m"].retention.seconds == 30 * 86_400


async def test_a_query_is_served_from_the_tier_asked_for_and_says_so(
        tm: TelemetryClient, loaded: int, http_port: int) -> None:
    at = loaded - 10 * MIN    # minute-aligned: raw windows and minute buckets coincide
    query = "count_over_time(tier_gauge[10m])"
    answers = {}
    for resolution in ("raw", "1m", "1h"):
        status, body = _get(http_port, "/api/v1/query", query=query, time=str(at / 1000),
                            resolution=resolution)
        assert status == 200 and body["resolution"] == resolution, body
        answers[resolution] = [float(r["value"][1]) for r in body["data"]["result"]]
    assert answers["raw"] == answers["1m"] == [40.0]
    assert len(answers["1h"]) == 1                     # rolled up on the fly from 1m
    status, body = _get(http_port, "/api/v1/query", query="tier_gauge", time=str(at / 1000))
    assert status == 200 and body["resolution"] == "raw"   # auto: raw holds the range

    grpc_answer = await tm.query(query, at_s=at / 1000, resolution="1m")
    assert grpc_answer.resolution == "1m"
    assert [s.sample.value for s in grpc_answer.vector] == [40.0]
    ranged = await tm.query_range("max_over_time(tier_gauge[5m])", (at - 5 * MIN) / 1000,
                                  at / 1000, 60, resolution="1m")
    assert ranged.resolution == "1m" and ranged.series


async def test_an_unknown_resolution_names_the_allowed_ones(
        tm: TelemetryClient, http_port: int) -> None:
    status, body = _get(http_port, "/api/v1/query", query="up", resolution="5m")
    assert status == 400 and body["errorType"] == "bad_data"
    assert "resolution" in body["error"] and "auto, raw, 1m, 1h" in body["error"]
    with pytest.raises(InvalidArgumentError, match="resolution.*auto, raw, 1m, 1h"):
        await tm.query("up", resolution="daily")
