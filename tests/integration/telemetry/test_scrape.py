"""Pull ingestion: a ScrapeManager in this process scrapes a real aiohttp server whose
exposition the test changes between scrapes, into a real TSDB on disk; and the telemetry
server process scrapes it when GEOPLEX_TELEMETRY_SCRAPE_TARGETS says so.

What Prometheus's scrape loop does is the reference: full series names as exposed
(``_total``, ``_created``, ``_bucket``), ``job`` and ``instance`` on every series (the
exposed ones moved to ``exported_*`` unless honor_labels), the five report series, and
stale markers for a series that disappears, for all of them when the target goes down,
and when the target is removed or the scraper stops.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from aiohttp import web

from geoplex.clients import ChannelOptions
from geoplex.clients.telemetry import TelemetryClient
from geoplex.servers._runtime.http import start_http
from geoplex.servers.telemetry.limits import SampleRateLimit
from geoplex.servers.telemetry.scrape import (ACCEPT, Health, ScrapeManager,
                                              parse_exposition, scrape_offset,
                                              target_seed)
from geoplex.servers.telemetry.scrape_config import ScrapeConfig
from geoplex.servers.telemetry.tsdb.chunks import STALE_NAN_BITS
from geoplex.servers.telemetry.tsdb.db import TSDB
from geoplex.servers.telemetry.tsdb.labels import eq
from polling import eventually

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

INTERVAL_S = 0.2
TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

EXPOSITION = """\
# HELP http_requests_total Requests served.
# TYPE http_requests_total counter
http_requests_total{code="200"} 10
http_requests_total{code="500"} 1
http_requests_created{code="200"} 1.7e+09
# TYPE temperature_celsius gauge
temperature_celsius 21.5
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 3
latency_seconds_bucket{le="+Inf"} 5
latency_seconds_sum 0.9
latency_seconds_count 5
# TYPE legacy_jobs counter
legacy_jobs 7
"""
EXPOSED_SERIES = 9


class Exposition:
    """A metrics endpoint on a free port; ``body`` and ``content_type`` may change."""

    def __init__(self, body: str = EXPOSITION, content_type: str = TEXT) -> None:
        self.body = body
        self.content_type = content_type
        self.accept: list[str] = []
        self.address = ""
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        self.accept.append(request.headers.get("Accept", ""))
        return web.Response(body=self.body.encode(), headers={"Content-Type": self.content_type})

    async def start(self) -> Exposition:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner, self.address = await start_http(app, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def exposition() -> AsyncIterator[Exposition]:
    served = await Exposition().start()
    yield served
    await served.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TSDB]:
    with TSDB.open(tmp_path / "store") as db:
        yield db


def targets(address: str, job: str = "app") -> ScrapeConfig:
    return ScrapeConfig.from_targets(address, job, INTERVAL_S, INTERVAL_S)


def samples(store: TSDB, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...],
                                                          list[tuple[int, float | str]]]:
    """Every series of ``name`` with those labels: its labels (no ``__name__``) to its
    (timestamp, value) samples, a stale marker shown as ``"stale"``."""
    matchers = [eq("__name__", name), *(eq(k, v) for k, v in labels.items())]
    out: dict[tuple[tuple[str, str], ...], list[tuple[int, float | str]]] = {}
    for found in store.select(matchers, 0, 1 << 62):
        bits = found.values.view(np.uint64).tolist()
        out[found.labels.without("__name__").pairs] = [
            (t, "stale" if b == STALE_NAN_BITS else v)
            for t, v, b in zip(found.timestamps.tolist(), found.values.tolist(), bits)]
    return out


def last(store: TSDB, name: str, **labels: str) -> tuple[int, float | str] | None:
    found = samples(store, name, **labels)
    if len(found) != 1:
        return None
    return next(iter(found.values()))[-1]


async def scraped(manager: ScrapeManager, count: int) -> None:
    """Until every target has had ``count`` more scrapes than now."""
    start = {status.target: status.scrapes for status in manager.targets()}
    await eventually(lambda: all(s.scrapes >= start[s.target] + count
                                 for s in manager.targets()), 10, what=f"{count} scrapes")


async def test_samples_are_stored_with_full_names_and_target_labels(
        store: TSDB, exposition: Exposition) -> None:
    async with ScrapeManager(store, targets(exposition.address)) as manager:
        await scraped(manager, 2)
    instance = exposition.address
    target = (("instance", instance), ("job", "app"))
    requests = samples(store, "http_requests_total")
    assert set(requests) == {(("code", "200"), *target), (("code", "500"), *target)}
    assert {v for series in requests.values() for _, v in series[:-1]} == {10.0, 1.0}
    assert samples(store, "http_requests_created")  # its own series, as exposed
    assert samples(store, "http_requests") == {}
    assert last(store, "legacy_jobs") is not None  # a counter without _total keeps its name
    assert samples(store, "legacy_jobs_total") == {}
    assert len(samples(store, "latency_seconds_bucket")) == 2
    assert last(store, "latency_seconds_count") is not None
    assert exposition.accept[0] == ACCEPT

    ups = samples(store, "up", job="app", instance=instance)[target]
    assert [v for _, v in ups[:-1]] == [1.0] * (len(ups) - 1)
    assert ups[-1][1] == "stale"  # stopped: the report series go stale too
    t0 = ups[0][0]
    assert samples(store, "scrape_samples_scraped")[target][0] == (t0, EXPOSED_SERIES)
    assert samples(store, "scrape_samples_post_metric_relabeling")[target][0] == (
        t0, EXPOSED_SERIES)
    added = samples(store, "scrape_series_added")[target]
    assert (added[0], added[1][1]) == ((t0, EXPOSED_SERIES), 0.0)
    duration = samples(store, "scrape_duration_seconds")[target][0]
    assert duration[0] == t0 and isinstance(duration[1], float) and 0 < duration[1] < 5
    # every scraped sample carries the scrape's start time, the report's
    assert samples(store, "temperature_celsius")[target][0] == (t0, 21.5)


async def test_a_series_gone_from_the_exposition_gets_a_stale_marker(
        store: TSDB, exposition: Exposition) -> None:
    async with ScrapeManager(store, targets(exposition.address)) as manager:
        await scraped(manager, 1)
        exposition.body = EXPOSITION.replace('http_requests_total{code="500"} 1\n', "")
        await eventually(lambda: _stale(last(store, "http_requests_total", code="500")), 10,
                         what="a stale marker for the removed series")
        kept = last(store, "http_requests_total", code="200")
        assert kept is not None and kept[1] == 10.0
        stale_at = last(store, "http_requests_total", code="500")
        assert stale_at is not None
        up_times = [t for t, _ in next(iter(samples(store, "up").values()))]
        assert stale_at[0] in up_times  # at the time of the scrape that missed it
        await scraped(manager, 2)
        assert _stale(last(store, "http_requests_total", code="500"))  # marked once


def _stale(sample: tuple[int, float | str] | None) -> bool:
    return sample is not None and sample[1] == "stale"


def _down(up: tuple[int, float | str] | None) -> tuple[int, float | str] | None:
    return up if up is not None and up[1] == 0.0 else None


async def test_a_target_that_goes_away_is_down_and_all_its_series_stale(
        store: TSDB, exposition: Exposition) -> None:
    async with ScrapeManager(store, targets(exposition.address)) as manager:
        await scraped(manager, 1)
        await exposition.stop()
        down = await eventually(lambda: _down(last(store, "up")), 10, what="up 0")
        assert down is not None
        status = manager.targets()[0]
        assert status.health is Health.DOWN and status.last_error
        names = ["http_requests_total", "http_requests_created", "temperature_celsius",
                 "latency_seconds_bucket", "latency_seconds_sum", "latency_seconds_count",
                 "legacy_jobs"]
        for name in names:
            for series in samples(store, name).values():
                assert series[-1] == (down[0], "stale"), name
        reported = {name: last(store, name) for name in (
            "scrape_samples_scraped", "scrape_series_added", "scrape_duration_seconds")}
        assert reported["scrape_samples_scraped"] == (down[0], 0.0)
        assert reported["scrape_series_added"] == (down[0], 0.0)
        await scraped(manager, 2)  # still down: nothing more to mark
        assert [v for _, v in samples(store, "temperature_celsius")[
            (("instance", exposition.address), ("job", "app"))]].count("stale") == 1


async def test_exposed_job_and_instance_become_exported_unless_honor_labels(
        store: TSDB, exposition: Exposition) -> None:
    exposition.body = 'inner_metric{job="inner",instance="elsewhere",exported_job="x"} 4\n'
    config = ScrapeConfig.parse({"scrape_configs": [
        {"job_name": "plain", "scrape_interval": INTERVAL_S,
         "static_configs": [{"targets": [exposition.address]}]},
        {"job_name": "honoring", "scrape_interval": INTERVAL_S, "honor_labels": True,
         "static_configs": [{"targets": [exposition.address], "labels": {"team": "t"}}]}]})
    async with ScrapeManager(store, config) as manager:
        await scraped(manager, 1)
    found = {dict(labels)["job"]: dict(labels) for labels in samples(store, "inner_metric")}
    assert found["plain"] == {"job": "plain", "instance": exposition.address,
                              "exported_job": "x", "exported_exported_job": "inner",
                              "exported_instance": "elsewhere"}
    assert found["inner"] == {"job": "inner", "instance": "elsewhere", "exported_job": "x",
                              "team": "t"}
    # the report series are the target's own
    assert {dict(labels)["job"] for labels in samples(store, "up")} == {"plain", "honoring"}


async def test_openmetrics_keeps_total_and_created_and_its_own_timestamps(
        store: TSDB, exposition: Exposition) -> None:
    exposed_ms = int(time.time() * 1000) - 5_000
    exposition.content_type = OPENMETRICS
    exposition.body = (f"# TYPE jobs counter\njobs_total 5\njobs_created 1.7e+09\n"
                       f"# TYPE queue_depth gauge\nqueue_depth 3 {exposed_ms / 1000:.3f}\n"
                       "# EOF\n")
    async with ScrapeManager(store, targets(exposition.address)) as manager:
        await scraped(manager, 2)
        assert manager.targets()[0].health is Health.UP
    assert last(store, "jobs_total") is not None
    assert last(store, "jobs_created") is not None
    assert samples(store, "jobs") == {}
    depth = next(iter(samples(store, "queue_depth").values()))
    assert depth == [(exposed_ms, 3.0)]  # its own time, once, and never marked stale


async def test_a_removed_target_is_marked_stale_and_the_other_keeps_going(
        store: TSDB, exposition: Exposition) -> None:
    other = await Exposition("other_metric 1\n").start()
    try:
        async with ScrapeManager(store, ScrapeConfig.from_targets(
                f"{exposition.address},{other.address}", "app", INTERVAL_S,
                INTERVAL_S)) as manager:
            await scraped(manager, 1)
            await manager.apply(targets(other.address))
            assert _stale(last(store, "temperature_celsius"))
            assert _stale(last(store, "up", instance=exposition.address))
            removed_at = last(store, "up", instance=exposition.address)
            await scraped(manager, 2)
            assert last(store, "up", instance=exposition.address) == removed_at
            assert last(store, "up", instance=other.address) is not None
            assert [s.target.instance for s in manager.targets()] == [other.address]
    finally:
        await other.stop()


async def test_a_scrape_over_the_sample_rate_fails_and_stores_only_up_0(
        store: TSDB, exposition: Exposition) -> None:
    limit = SampleRateLimit(1.0, burst_s=2.0)  # two samples: less than one scrape
    async with ScrapeManager(store, targets(exposition.address), limit) as manager:
        await scraped(manager, 1)
        status = manager.targets()[0]
        assert status.health is Health.DOWN and "limit" in status.last_error
        up = last(store, "up")
        assert up is not None and up[1] == 0.0
        assert samples(store, "temperature_celsius") == {}


def test_the_text_parser_quirks_are_undone() -> None:
    exposed = parse_exposition(EXPOSITION)
    names = [s.name for s in exposed]
    assert names.count("http_requests_total") == 2
    assert "http_requests_created" in names and "legacy_jobs" in names
    assert len(exposed) == EXPOSED_SERIES
    timed = parse_exposition("x 1 1700000000123\n")[0]
    assert timed.timestamp_ms == 1_700_000_000_123


def test_targets_are_spread_over_the_interval_by_a_stable_hash() -> None:
    configs = ScrapeConfig.from_targets(",".join(f"h{i}:9100" for i in range(50)),
                                        interval_s=10.0).targets
    seeds = [target_seed(t) for t in configs]
    assert seeds == [target_seed(t) for t in configs]
    now = 1_700_000_000.0
    delays = [scrape_offset(now, 10.0, seed) for seed in seeds]
    assert all(0 < d <= 10.0 for d in delays)
    assert len({round(d) for d in delays}) >= 5   # not all in one second
    # the slot is fixed on the clock: a second later, the delay is a second shorter
    assert scrape_offset(now + 1, 10.0, seeds[0]) == pytest.approx(
        (delays[0] - 1) % 10.0 or 10.0)


async def test_the_telemetry_server_scrapes_its_configured_targets(
        server_factory: Callable[..., ServerProcess], exposition: Exposition,
        tmp_path: Path) -> None:
    server = server_factory("telemetry", {
        "GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path / "server-store"),
        "GEOPLEX_TELEMETRY_SCRAPE_TARGETS": exposition.address,
        "GEOPLEX_TELEMETRY_SCRAPE_JOB": "scraped",
        "GEOPLEX_TELEMETRY_SCRAPE_INTERVAL_SECONDS": str(INTERVAL_S)}, "telemetry-scrape")
    async with TelemetryClient(server.address, ChannelOptions(retry=False)) as tm:
        async def up() -> float | None:
            answer = await tm.query('up{job="scraped"}')
            return answer.vector[0].sample.value if answer.vector else None

        assert await eventually(up, 30, what="up through Query") == 1.0
        answer = await tm.query('http_requests_total{job="scraped",code="500"}')
        assert [s.sample.value for s in answer.vector] == [1.0]
