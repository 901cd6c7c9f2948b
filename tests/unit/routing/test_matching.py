"""The HMM map matcher on synthetic streets: the right road under noise, turns, a car
standing still, a fix far from every road, and speeds from the matched path."""

from __future__ import annotations

import numpy as np
import pytest

from geoplex.servers.routing.engines.baselines import DijkstraEngine
from geoplex.servers.routing.graph import RoadGraph, build_graph
from geoplex.servers.routing.matching import DistanceMetric, TracePoint, match
from geoplex.servers.routing.profiles import CarProfile
from geoplex.servers.routing.snapping import SegmentIndex
from road_networks import NetworkBuilder, latlon

CAR = CarProfile()


def _parallel() -> tuple[RoadGraph, list[int], list[int]]:
    """Two parallel east-west streets 30 m apart, 600 m long, joined at both ends and in
    the middle (without the middle link the graph would be a loop, one way round: U-turns
    are only allowed at dead ends)."""
    b = NetworkBuilder()
    south = [b.node(0, e) for e in range(0, 601, 50)]
    north = [b.node(30, e) for e in range(0, 601, 50)]
    b.way(south, name="South Street")
    b.way(north, name="North Street")
    b.way([south[0], north[0]], name="West Link")
    b.way([south[-1], north[-1]], name="East Link")
    b.way([south[6], north[6]], name="Middle Link")
    return build_graph(b.build(), CAR), south, north


def _match(graph: RoadGraph, points: list[tuple[float, float, float]],
           accuracy: float = 5.0) -> list[str]:
    index = SegmentIndex(graph)
    distances = DistanceMetric(graph, DijkstraEngine(graph)).weighting()
    trace = [TracePoint(*latlon(n, e), t, accuracy) for n, e, t in points]
    result = match(graph, index, distances, trace)
    return [graph.way_names[int(graph.seg_way[f.segment])] if f.segment >= 0 else ""
            for f in result.fixes]


def test_a_noisy_trace_along_one_street_stays_on_it() -> None:
    graph, _, _ = _parallel()
    rng = np.random.default_rng(7)
    # driving east on South Street, fixes pulled up to 12 m towards North Street
    points = [(float(rng.uniform(0, 12)), 20.0 + 40 * k, 4.0 * k) for k in range(14)]
    assert set(_match(graph, points)) == {"South Street"}


def test_the_matched_direction_is_the_direction_driven() -> None:
    graph, south, _ = _parallel()
    index = SegmentIndex(graph)
    distances = DistanceMetric(graph, DijkstraEngine(graph)).weighting()
    # westbound: east -> west along South Street
    trace = [TracePoint(*latlon(2, 580 - 40 * k), 4.0 * k, 5.0) for k in range(12)]
    result = match(graph, index, distances, trace)
    heads = [int(graph.seg_head[f.segment]) for f in result.fixes]
    tails = [int(graph.seg_tail[f.segment]) for f in result.fixes]
    east = {n: i for i, n in enumerate(south)}
    assert all(east[h] < east[t] for h, t in zip(heads, tails))


def test_speeds_come_from_the_time_between_fixes() -> None:
    graph, _, _ = _parallel()
    index = SegmentIndex(graph)
    distances = DistanceMetric(graph, DijkstraEngine(graph)).weighting()
    trace = [TracePoint(*latlon(0, 25.0 + 50 * k), 5.0 * k, 5.0) for k in range(11)]
    result = match(graph, index, distances, trace)   # 50 m every 5 s: 10 m/s
    assert result.chains == 1 and result.confidence == pytest.approx(1.0)
    assert result.traversals
    for t in result.traversals:
        assert t.speed_mps == pytest.approx(10.0, rel=0.02)
    assert sum(t.metres for t in result.traversals) == pytest.approx(500.0, abs=1.0)


def test_a_car_standing_still_drives_nowhere() -> None:
    graph, _, _ = _parallel()
    index = SegmentIndex(graph)
    distances = DistanceMetric(graph, DijkstraEngine(graph)).weighting()
    trace = [TracePoint(*latlon(1, 300), 10.0 * k, 5.0) for k in range(6)]
    result = match(graph, index, distances, trace)
    assert all(f.segment == result.fixes[0].segment for f in result.fixes)
    assert sum(t.metres for t in result.traversals) < 1.0


def test_a_fix_far_from_every_road_is_unmatched_and_the_rest_still_match() -> None:
    graph, _, _ = _parallel()
    points = [(0.0, 20.0 + 40 * k, 4.0 * k) for k in range(6)]
    points.insert(3, (400.0, 130.0, 9.0))   # 400 m off: no road within reach
    names = _match(graph, points)
    assert names[3] == ""
    assert names[:3] + names[4:] == ["South Street"] * 6


def test_a_turn_onto_the_link_is_followed() -> None:
    graph, _, _ = _parallel()
    # east along South Street, then north up East Link and west on North Street
    points = ([(0.0, 450.0 + 30 * k, 3.0 * k) for k in range(5)]
              + [(15.0, 600.0, 16.0)]
              + [(30.0, 570.0 - 30 * k, 19.0 + 3.0 * k) for k in range(5)])
    names = _match(graph, points)
    assert names[0] == "South Street" and names[-1] == "North Street"
    assert names[5] == "East Link"


def _dual_carriageway() -> RoadGraph:
    """A dual carriageway: eastbound and westbound oneways 12 m apart, 600 m long, joined
    at both ends (where the road turns back)."""
    b = NetworkBuilder()
    east = [b.node(0, e) for e in range(0, 601, 20)]
    west = [b.node(12, e) for e in range(600, -1, -20)]
    b.way(east, name="Eastbound", oneway="yes")
    b.way(west, name="Westbound", oneway="yes")
    b.way([east[-1], west[0]], name="East Turn", oneway="yes")
    b.way([west[-1], east[0]], name="West Turn", oneway="yes")
    return build_graph(b.build(), CAR)


def test_a_car_crawling_in_a_jam_with_gps_jitter_stays_on_its_carriageway() -> None:
    # 0.7 m/s east, a fix a second, each pulled up to 4 m back or ahead and up to 5 m
    # towards the other carriageway: a backwards step is noise, not a U-turn
    graph = _dual_carriageway()
    rng = np.random.default_rng(11)
    points = [(float(rng.uniform(0, 5)), 150.0 + 0.7 * k + float(rng.uniform(-4, 4)),
               float(k)) for k in range(60)]
    names = _match(graph, points)
    assert names.count("Eastbound") >= 57, names


def test_speeds_on_a_curved_road_are_along_the_road_not_the_chord_between_fixes() -> None:
    # a hairpin bend: a half circle of radius 40 m, a node every 15 degrees (10.5 m
    # segments), between two straights; a car drives it at 12 m/s along the road and
    # takes a fix every 3 s (36 m apart along the road, about 3.5 % less in a straight
    # line): every segment's speed is the car's, the distance is the road's
    b = NetworkBuilder()
    radius, speed, every_s = 40.0, 12.0, 3.0
    points = [(0.0, float(e)) for e in range(-200, 0, 50)]
    points += [(radius - radius * np.cos(np.radians(a)), radius * np.sin(np.radians(a)))
               for a in range(0, 181, 15)]
    points += [(2 * radius, float(-e)) for e in range(50, 201, 50)]
    b.way([b.node(n, e) for n, e in points], name="Hairpin Road")
    graph = build_graph(b.build(), CAR)
    xy = np.array(points)
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])

    def at(along_m: float) -> tuple[float, float]:
        k = min(int(np.searchsorted(cum, along_m, side="right")) - 1, len(cum) - 2)
        f = (along_m - cum[k]) / (cum[k + 1] - cum[k])
        n, e = xy[k] + (xy[k + 1] - xy[k]) * f
        return float(n), float(e)

    start = 150.0                          # 50 m before the bend
    fixes = [at(start + speed * every_s * k) for k in range(9)]   # to 50 m past it
    chords = [float(np.hypot(b_[0] - a[0], b_[1] - a[1])) for a, b_ in zip(fixes, fixes[1:])]
    assert min(chords) < 0.97 * speed * every_s   # the test would catch a chord estimate
    index = SegmentIndex(graph)
    distances = DistanceMetric(graph, DijkstraEngine(graph)).weighting()
    trace = [TracePoint(*latlon(n, e), every_s * k, 5.0) for k, (n, e) in enumerate(fixes)]
    result = match(graph, index, distances, trace)
    assert result.chains == 1
    assert len(result.traversals) > 13     # the bend's 12 segments and the straights
    for t in result.traversals:
        assert t.speed_mps == pytest.approx(speed, rel=0.01)
    assert sum(t.metres for t in result.traversals) == pytest.approx(8 * speed * every_s,
                                                                     abs=0.5)
