"""The pace of one simulated user (shared by the simulator and the presence benchmark's
floor): one move per interval from a random start in the first one, none after the end."""

from __future__ import annotations

import random
import time

import pytest

from geoplex.tools.simulator import RoadNetwork, Walker, scheduled_moves
from geoplex.servers._runtime.geo import haversine_m

ROADS = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [
        [11.9700, 57.7000], [11.9800, 57.7000], [11.9800, 57.7100]]}}]}


async def test_moves_come_once_an_interval_until_the_end_each_a_step_along_the_road() -> None:
    walker = Walker(RoadNetwork.from_geojson(ROADS), 0, random.Random(3))
    start = walker.position()
    go = time.time()

    moves = [m async for m in scheduled_moves(walker, 10.0, 0.05, random.Random(1), go, go + 0.5)]

    times = [now for now, _, _ in moves]
    assert 5 <= len(moves) <= 11  # 10 on an idle machine; a late loop does not burst
    assert go <= times[0] and times == sorted(times) and times[-1] < go + 0.5
    assert haversine_m(*start, *moves[0][1:]) == pytest.approx(10.0, abs=0.5)
    assert (moves[-1][1], moves[-1][2]) == walker.position()
