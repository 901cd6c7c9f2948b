"""Navigate end to end on real processes: a broker, routing (Helsinki, car) and maps. The
driver's fixes go in through ReportLocationBatch, traffic through routing's UpdateTraffic;
the stream answers with progress, traffic, a new route off the route, and arrival."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import polyline
import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import (InvalidArgumentError, UnauthenticatedError,
                                    UnavailableError)
from geoplex.clients.maps import MapsClient, NavigateResponse, batch, fix
from geoplex.clients.routing import RoutingClient, observation
from geoplex.infra.local import BackendUrls
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.servers._runtime.geo import haversine_m
from geoplex.servers.routing.config import RegionSource
from polling import eventually
from maps_mesh import start_maps_mesh  # tests/maps_mesh.py

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

ADMIN = mint_token(DEV_SECRET, "admin")
# central Helsinki: Mannerheimintie by the station -> Kaisaniemenranta; Esplanadi is
# a few hundred metres off that route
STATION = (60.1686, 24.9414)
KAISANIEMI = (60.1760, 24.9496)
ESPLANADI = (60.1676, 24.9460)
READ_TIMEOUT_S = 30.0
R = NavigateResponse


@pytest.fixture(scope="module")
def nav_mesh(backends: BackendUrls, server_factory: Callable[..., ServerProcess],
             tmp_path_factory: pytest.TempPathFactory,
             routing_sources: tuple[RegionSource, ...], routing_cache: Path
             ) -> tuple[ServerProcess, ServerProcess]:
    """A broker, a routing server (Helsinki, car) and a maps server with ingest on (no
    traffic feed: the test sets traffic itself)."""
    _, routing, maps = start_maps_mesh(
        "nav", "helsinki", backends, server_factory, tmp_path_factory, routing_sources,
        routing_cache, maps_extra={"GEOPLEX_MAPS_TRAFFIC": "false",
                                   "GEOPLEX_MAPS_NAVIGATE_POLL_SECONDS": "0.2"})
    return routing, maps


def _along(line: list[tuple[float, float]], share: float) -> tuple[float, float]:
    """The point ``share`` of the way along a polyline."""
    legs = [haversine_m(*a, *b) for a, b in zip(line, line[1:])]
    left = share * sum(legs)
    for (a, b), length in zip(zip(line, line[1:]), legs):
        if left <= length and length > 0:
            f = left / length
            return a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f
        left -= length
    return line[-1]


async def _next(stream: AsyncIterator[NavigateResponse]) -> NavigateResponse:
    return await asyncio.wait_for(anext(stream), READ_TIMEOUT_S)


async def _until(stream: AsyncIterator[NavigateResponse],
                 reasons: set[int]) -> NavigateResponse:
    """The next message with one of ``reasons`` (others may come first: ETA updates)."""
    async def read() -> NavigateResponse:
        async for message in stream:
            if message.reason in reasons:
                return message
        raise AssertionError(f"the stream ended before any of {sorted(reasons)}")
    return await asyncio.wait_for(read(), READ_TIMEOUT_S)


def _eta(message: NavigateResponse) -> float:
    return message.remaining_duration.ToNanoseconds() / 1e9


class Driver:
    """One user's fixes, each later than the one before."""

    def __init__(self, maps: MapsClient) -> None:
        self.maps = maps
        self.clock = time.time() - 400.0
        self.batches = 0

    async def report(self, *points: tuple[float, float], gap_s: float = 20.0) -> None:
        fixes = []
        for p in points:
            self.clock += gap_s
            fixes.append(fix(p, self.clock, accuracy_m=5))
        self.batches += 1
        part = batch(f"nav-{self.batches}", fixes)
        answer = await eventually(partial(self.maps.report_batch, part), timeout=60,
                                  ignore=(UnavailableError,), what="a batch accepted")
        assert answer.accepted == len(fixes), answer.rejected


async def test_a_drive_gets_progress_traffic_a_new_route_off_route_and_arrival(
        nav_mesh: tuple[ServerProcess, ServerProcess]) -> None:
    routing_server, maps_server = nav_mesh
    token = mint_token(DEV_SECRET, f"driver-{uuid.uuid4().hex[:8]}")
    async with MapsClient(maps_server.address, ChannelOptions(token=token)) as maps, \
            RoutingClient(routing_server.address) as rt:
        driver = Driver(maps)
        stream = maps.navigate(STATION, KAISANIEMI)
        started = await _next(stream)
        assert started.reason == R.REASON_STARTED
        assert started.route.polyline and started.route.segment_ids
        assert started.remaining_distance_meters == pytest.approx(
            started.route.distance_meters, abs=1.0)
        assert _eta(started) == pytest.approx(
            started.route.duration.ToNanoseconds() / 1e9, abs=0.5)
        arrival = started.arrival_time.ToNanoseconds() / 1e9
        assert arrival == pytest.approx(time.time() + _eta(started), abs=60)
        line = polyline.decode(started.route.polyline, 5)

        # driving along: the remaining distance goes down
        last = started
        for share in (0.15, 0.3):
            await driver.report(_along(line, share))
            progress = await _until(stream, {R.REASON_PROGRESS})
            assert progress.remaining_distance_meters < last.remaining_distance_meters
            assert progress.remaining_distance_meters == pytest.approx(
                (1 - share) * started.route.distance_meters, rel=0.1)
            last = progress

        # a jam on a road still ahead: a higher ETA, or a faster route
        road = (await rt.snap([_along(line, 0.7)])).points[0]
        await rt.update_traffic("helsinki", [observation(way_id=road.way_id,
                                                         speed_factor=0.05)], token=ADMIN)
        changed = await _until(stream, {R.REASON_TRAFFIC, R.REASON_FASTER_ROUTE})
        if changed.reason == R.REASON_TRAFFIC:
            assert _eta(changed) > _eta(last)
            assert not changed.HasField("route")
        else:  # the new route leaves the jammed road out
            assert changed.route.segment_ids
            assert not set(road.segment_ids) & set(changed.route.segment_ids)
        assert changed.remaining_distance_meters > 0

        # two fixes far from the route: a new route from there
        off_point = ESPLANADI
        assert min(haversine_m(*off_point, *p) for p in line) > 100
        await driver.report(off_point, (off_point[0] + 0.0001, off_point[1]))
        off = await _until(stream, {R.REASON_OFF_ROUTE})
        assert off.route.polyline and off.route.segment_ids
        new_line = polyline.decode(off.route.polyline, 5)
        assert haversine_m(*new_line[0], *off_point) < 100
        assert off.remaining_distance_meters == pytest.approx(off.route.distance_meters,
                                                              abs=1.0)

        # at the destination: arrived, and the stream ends
        await driver.report(new_line[-1], gap_s=60.0)
        arrived = await _until(stream, {R.REASON_ARRIVED})
        assert arrived.remaining_distance_meters == 0
        with pytest.raises(StopAsyncIteration):
            await _next(stream)


async def test_a_bad_request_is_an_invalid_argument_naming_the_field(
        nav_mesh: tuple[ServerProcess, ServerProcess]) -> None:
    _, maps_server = nav_mesh
    token = mint_token(DEV_SECRET, "nav-bad")
    async with MapsClient(maps_server.address, ChannelOptions(token=token)) as maps:
        with pytest.raises(InvalidArgumentError) as bad_point:
            await _next(maps.navigate(STATION, (91.0, 24.9)))
        assert bad_point.value.field == "destination.latitude"
        assert "91" not in bad_point.value.message
        with pytest.raises(InvalidArgumentError) as bad_saving:
            await _next(maps.navigate(STATION, KAISANIEMI, reroute_min_saving_s=-5))
        assert bad_saving.value.field == "reroute_min_saving_seconds"


async def test_navigate_without_a_token_is_unauthenticated(
        nav_mesh: tuple[ServerProcess, ServerProcess]) -> None:
    _, maps_server = nav_mesh
    async with MapsClient(maps_server.address) as maps:
        with pytest.raises(UnauthenticatedError):
            await _next(maps.navigate(STATION, KAISANIEMI))
