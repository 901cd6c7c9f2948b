"""The map matcher on Gothenburg's car graph: simulated drives along real routes, fixes
every 5 s with 5 m of GPS noise, matched back onto the roads they drove."""

from __future__ import annotations

import numpy as np
import pytest

from geoplex.servers.routing.matching import TracePoint, match
from geoplex.servers.routing.planner import shortest_path
from geoplex.servers.routing.regions import ModeGraph, Region

SPEED_MPS = 12.0
EVERY_S = 5.0
NOISE_M = 5.0


def _drive(mode: ModeGraph, rng: np.random.Generator
           ) -> tuple[list[TracePoint], list[int], set[int]] | None:
    """A random route, driven: the noisy fixes, the true segment of each, the route."""
    g = mode.graph
    lat, lon = g.seg_mid()
    e, f = (int(x) for x in rng.integers(0, g.seg_count, size=2))
    path = shortest_path(g, mode.free, mode.index.snap(lat[e], lon[e]),
                         mode.index.snap(lat[f], lon[f]))
    if path is None or path.segments.size < 30:
        return None
    segs = path.segments
    lengths = g.seg_length_m[segs].astype(np.float64)
    lengths[0] *= 1 - path.start
    lengths[-1] *= path.end
    ends = np.concatenate([[0.0], np.cumsum(lengths)])
    trace, truth = [], []
    for k, along in enumerate(np.arange(0.0, ends[-1], SPEED_MPS * EVERY_S)):
        i = min(int(np.searchsorted(ends, along, side="right")) - 1, segs.size - 1)
        frac = (along - ends[i]) / max(lengths[i], 1e-9)
        if i == 0:
            frac = path.start + frac * (1 - path.start)
        seg = int(segs[i])
        a, b = int(g.seg_tail[seg]), int(g.seg_head[seg])
        plat = g.node_lat[a] + (g.node_lat[b] - g.node_lat[a]) * frac
        plon = g.node_lon[a] + (g.node_lon[b] - g.node_lon[a]) * frac
        north, east = rng.normal(0, NOISE_M, size=2)
        trace.append(TracePoint(float(plat + north / 111_195.0),
                                float(plon + east / (111_195.0 * np.cos(np.radians(plat)))),
                                1.8e9 + k * EVERY_S, NOISE_M))
        truth.append(seg)
    return trace, truth, set(segs.tolist())


@pytest.fixture(scope="module")
def gothenburg(routing_regions: dict[str, Region]) -> ModeGraph:
    return routing_regions["gothenburg"].modes["car"]


def test_noisy_drives_match_back_onto_the_roads_driven(gothenburg: ModeGraph) -> None:
    rng = np.random.default_rng(2026)
    distances = gothenburg.distances.weighting()
    on_route = exact = total = 0
    speeds: list[float] = []
    drives = 0
    while drives < 20:
        drive = _drive(gothenburg, rng)
        if drive is None:
            continue
        drives += 1
        trace, truth, route = drive
        result = match(gothenburg.graph, gothenburg.index, distances, trace)
        assert result.chains == 1
        for fix, true_segment in zip(result.fixes, truth):
            total += 1
            on_route += fix.segment in route
            exact += fix.segment == true_segment
        metres = sum(t.metres for t in result.traversals)
        seconds = sum(t.seconds for t in result.traversals)
        speeds.append(metres / seconds)
    print(f"\n{total} fixes: {on_route / total:.1%} on the route driven, "
          f"{exact / total:.1%} on the exact segment; speeds {np.median(speeds):.2f} m/s")
    # the road and direction driven, under every fix but a few
    assert on_route / total >= 0.97
    # the exact OSM segment (they are often shorter than the noise): most
    assert exact / total >= 0.75
    assert np.median(speeds) == pytest.approx(SPEED_MPS, rel=0.05)
