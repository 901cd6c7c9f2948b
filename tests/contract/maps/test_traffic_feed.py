"""Live traffic from navigation clients, end to end on real processes: location batches ->
maps -> broker -> the traffic consumer group -> routing's MatchTrace -> UpdateTraffic ->
a slower ETA on the road the slow drivers drove."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import polyline
import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import UnavailableError
from geoplex.clients.maps import MapsClient, batch, fix
from geoplex.clients.routing import RoutingClient
from geoplex.infra.local import BackendUrls
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.servers._runtime.geo import haversine_m
from geoplex.servers.routing.config import RegionSource
from polling import eventually
from maps_mesh import start_maps_mesh  # tests/maps_mesh.py

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

# central Helsinki: Mannerheimintie by the station -> Kaisaniemenranta
STATION = (60.1686, 24.9414)
KAISANIEMI = (60.1760, 24.9496)
SLOW_MPS = 2.5


@pytest.fixture(scope="module")
def mesh(backends: BackendUrls, server_factory: Callable[..., ServerProcess],
         tmp_path_factory: pytest.TempPathFactory,
         routing_sources: tuple[RegionSource, ...], routing_cache: Path
         ) -> tuple[ServerProcess, ServerProcess]:
    """A broker, a routing server (Helsinki, car) and a maps server feeding it traffic."""
    _, routing, maps = start_maps_mesh(
        "traffic", "helsinki", backends, server_factory, tmp_path_factory, routing_sources,
        routing_cache, maps_extra={"GEOPLEX_MAPS_TRAFFIC_INTERVAL_SECONDS": "0.5"})
    return routing, maps


def _positions(points: list[tuple[float, float]], step_m: float,
               limit_m: float) -> list[tuple[float, float]]:
    """Points every ``step_m`` along a polyline, for its first ``limit_m``."""
    out = [points[0]]
    carry = 0.0
    walked = 0.0
    for a, b in zip(points, points[1:]):
        length = haversine_m(*a, *b)
        at = step_m - carry
        while at <= length and walked + at <= limit_m:
            f = at / length
            out.append((a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f))
            at += step_m
        carry = length - (at - step_m)
        walked += length
        if walked >= limit_m:
            break
    return out


async def test_slow_drivers_make_the_eta_of_their_road_rise(
        mesh: tuple[ServerProcess, ServerProcess]) -> None:
    routing_server, maps_server = mesh
    async with RoutingClient(routing_server.address) as rt:
        before = (await rt.route(STATION, KAISANIEMI, traffic_aware=True)).routes[0]
        free = before.duration.ToTimedelta().total_seconds()
        line = polyline.decode(before.polyline, 5)
        # three drivers crawl along the route's first 700 m, a fix every 2 s, in the last
        # few minutes; each sends batches of 10 fixes
        spots = _positions(line, SLOW_MPS * 2.0, 700.0)
        start = time.time() - 2.0 * len(spots) - 5
        for driver in range(3):
            token = mint_token(DEV_SECRET, f"slow-{driver}-{uuid.uuid4().hex[:6]}")
            async with MapsClient(maps_server.address, ChannelOptions(token=token)) as maps:
                fixes = [fix(p, start + 2.0 * k + driver * 0.3, accuracy_m=5)
                         for k, p in enumerate(spots)]
                for n in range(0, len(fixes), 10):
                    part = batch(f"b{n}", fixes[n:n + 10])
                    await eventually(partial(maps.report_batch, part), timeout=60,
                                     ignore=(UnavailableError,), what="a batch accepted")

        async def slower() -> float | None:
            now = (await rt.route(STATION, KAISANIEMI, traffic_aware=True)).routes[0]
            eta = now.duration.ToTimedelta().total_seconds()
            return eta if eta > free * 1.3 else None

        eta = await eventually(slower, timeout=60, what="the ETA rising under slow traffic")
        assert eta is not None and eta > free * 1.3
        # routes that ignore traffic are as they were
        plain = (await rt.route(STATION, KAISANIEMI)).routes[0]
        assert plain.polyline == before.polyline
        assert plain.duration.ToTimedelta().total_seconds() == pytest.approx(
            before.static_duration.ToTimedelta().total_seconds())
