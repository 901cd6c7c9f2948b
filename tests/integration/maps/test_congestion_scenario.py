"""`geoplex maps simulate`'s congestion scenario on real processes: simulated drivers on
Gothenburg's roads -> maps -> broker -> the traffic consumer group -> routing's
MatchTrace and UpdateTraffic. A chosen arterial is slowed to a quarter of its speed for
45 s: the ETA of the route through it rises within 60 s (the product's claim), the router
sends the trip round the detour while it lasts, and both return to normal after it ends,
within the time the traffic settings allow."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import UnavailableError
from geoplex.clients.maps import MapsClient, batch, fix
from geoplex.infra import data
from geoplex.infra.local import BackendUrls
from geoplex.servers._runtime.auth import DEV_SECRET, mint_token
from geoplex.servers.routing.config import RegionSource
from geoplex.clients.routing import RoutingClient
from geoplex.tools.navsim import NavConfig, choose_scenario, road_classes, simulate
from geoplex.tools.navsim.cli import print_result, progress_line
from polling import eventually
from maps_mesh import start_maps_mesh  # tests/maps_mesh.py

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

# the traffic feed's and the router's settings: short, so "back to normal" is bounded
INTERVAL_S, WINDOW_S, VALID_S, FADE_S = 1.0, 20.0, 15.0, 5.0
CONGESTION_START_S, CONGESTION_S = 25.0, 45.0
# after the congestion: the last slow observation leaves the median window, its update
# stays valid, then fades; plus a batch period and a tick or two of routing work
RECOVERY_BOUND_S = WINDOW_S + VALID_S + FADE_S + 5.0 + 10.0
GOTHENBURG_CENTRE = (57.7072, 11.9668)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def mesh(backends: BackendUrls, server_factory: Callable[..., ServerProcess],
         tmp_path_factory: pytest.TempPathFactory,
         routing_sources: tuple[RegionSource, ...], routing_cache: Path
         ) -> tuple[ServerProcess, ServerProcess]:
    """A broker, a routing server (Gothenburg, car) and a maps server feeding it traffic."""
    _, routing, maps = start_maps_mesh(
        "navsim", "gothenburg", backends, server_factory, tmp_path_factory, routing_sources,
        routing_cache,
        routing_extra={"GEOPLEX_ROUTING_TRAFFIC_FADE_SECONDS": str(FADE_S),
                       "GEOPLEX_ROUTING_TRAFFIC_REFRESH_SECONDS": "1"},
        maps_extra={"GEOPLEX_MAPS_TRAFFIC_INTERVAL_SECONDS": str(INTERVAL_S),
                    "GEOPLEX_MAPS_TRAFFIC_WINDOW_SECONDS": str(WINDOW_S),
                    "GEOPLEX_MAPS_TRAFFIC_VALID_SECONDS": str(VALID_S)})
    return routing, maps


async def _ingest_ready(maps_address: str) -> None:
    """Location ingest answers once its broker topic exists: wait for that."""
    token = mint_token(DEV_SECRET, f"navsim-ready-{uuid.uuid4().hex[:6]}")
    async with MapsClient(maps_address, ChannelOptions(token=token)) as maps:
        one = batch("ready", [fix(GOTHENBURG_CENTRE, time.time(), accuracy_m=5)])
        await eventually(partial(maps.report_batch, one), timeout=60,
                         ignore=(UnavailableError,), what="location ingest ready")


async def test_congested_arterial_raises_the_eta_reroutes_and_recovers(
        mesh: tuple[ServerProcess, ServerProcess]) -> None:
    routing_server, maps_server = mesh
    await _ingest_ready(maps_server.address)
    network = data.fetch(["gothenburg"], progress=lambda _m: None)["gothenburg"]["network"]
    classes = road_classes(network)  # OSM highway class by way id: arterials are trunk,
    # primary or secondary roads
    config = NavConfig(
        maps=maps_server.address, routing=routing_server.address, auth_secret=DEV_SECRET,
        drivers=24, congestion_start_s=CONGESTION_START_S, congestion_s=CONGESTION_S,
        fraction=0.25, seed=1,
        duration_s=CONGESTION_START_S + CONGESTION_S + RECOVERY_BOUND_S + 10.0,
        stop_after_recovery_s=5.0)
    lines: list[str] = []
    result = await simulate(config, classes=classes, say=lines.append,
                            progress=lambda k: lines.append(progress_line(k)))
    s = result.summary
    print("\n" + "\n".join(lines))  # shown with -s: the time line measured
    print_result(result)
    # the drivers' batches went through
    assert result.counters.batches > 0 and result.counters.failed == 0
    assert result.counters.rejected <= 0.01 * result.counters.fixes
    # before the congestion: free flow, on the arterial
    warm = [k for k in result.ticks if k.phase == "warm-up"]
    assert warm and all(not k.detour and k.probe_ratio < 1 + config.rise for k in warm)
    # the product's claim: the ETA through the slowed road rises within 60 s
    assert s.eta_rise_s is not None and s.eta_rise_s <= 60.0
    # the scenario was chosen with a detour that wins while the arterial is slowed
    assert s.detour_s is not None and s.detour_s < CONGESTION_S
    # ...and after it ends, ETA and route come back
    assert s.recovery_s is not None and s.recovery_s <= RECOVERY_BOUND_S
    # the scenario is the seed's: chosen again, it is the same road and routes
    async with RoutingClient(routing_server.address) as rt:
        again = await choose_scenario(rt, seed=1, fraction=0.25, classes=classes)
    assert again == result.scenario
    # the map matcher put the drivers' fixes on the roads they drove, crawling or not
    a = result.accuracy
    assert a.fixes > 0 and (a.on_road + a.slowed_on_road) >= 0.95 * (a.fixes + a.slowed_fixes)
