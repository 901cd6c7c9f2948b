"""shortest_path and alternatives_for: mid-segment starts and ends, on one metric."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pyroutingkit import INF_WEIGHT

from geoplex.servers._runtime.geo import haversine_m
from geoplex.servers.routing.adapters.routingkit_cch import CCHEngine
from geoplex.servers.routing.graph import RoadGraph, build_graph
from geoplex.servers.routing.planner import (
    Path,
    Weighting,
    alternatives_for,
    path_duration_ms,
    path_length_m,
    path_points,
    shortest_path,
)
from geoplex.servers.routing.profiles import (
    CLASS_RESTRICTED,
    LOCAL_ACCESS_PENALTY_S,
    CarProfile,
)
from geoplex.servers.routing.snapping import SegmentIndex, Snap
from road_networks import NetworkBuilder, free_flow, grid, latlon, segment

CAR = CarProfile()


def _snap(graph: RoadGraph, north: float, east: float) -> Snap:
    return SegmentIndex(graph).snap(*latlon(north, east))


def _line(oneway: bool = False) -> tuple[RoadGraph, list[int]]:
    """Nodes a(0, 0) -> m(0, 250) -> z(0, 500) along one street; a oneway has a loop back."""
    b = NetworkBuilder()
    a, m, z = b.node(0, 0), b.node(0, 250), b.node(0, 500)
    if oneway:
        b.way([a, m, z], oneway="yes")
        b.way([z, b.node(200, 500), b.node(200, 0), a], oneway="yes")
    else:
        b.way([a, m, z])
    return build_graph(b.build(), CAR), [a, m, z]


def _assert_chain(graph: RoadGraph, path: Path) -> None:
    assert path.arcs.size == path.segments.size - 1
    assert np.array_equal(graph.arc_tail[path.arcs], path.segments[:-1])
    assert np.array_equal(graph.arc_head[path.arcs], path.segments[1:])


def _along_the_oneway(start_m: float, end_m: float) -> tuple[RoadGraph, Path, int]:
    """The path from ``start_m`` to ``end_m`` along the first segment of the oneway line."""
    graph, (a, m, _) = _line(oneway=True)
    path = shortest_path(graph, free_flow(graph), _snap(graph, 5, start_m),
                         _snap(graph, 5, end_m))
    assert path is not None
    return graph, path, segment(graph, a, m)


def test_both_points_on_one_segment_with_the_target_ahead_is_that_segment_alone() -> None:
    graph, path, e = _along_the_oneway(50, 200)
    assert path.segments.tolist() == [e]
    assert path.arcs.size == 0
    assert (path.start, path.end) == pytest.approx((0.2, 0.8), abs=1e-3)
    assert path.cost_ms == pytest.approx((path.end - path.start) * float(graph.seg_ms[e]))


def test_target_behind_on_a_oneway_goes_round_the_block() -> None:
    graph, path, e = _along_the_oneway(200, 50)
    assert path.segments[0] == e and path.segments[-1] == e
    _assert_chain(graph, path)
    loop = [s for s in range(graph.seg_count) if s != e]
    assert sorted(path.segments[1:-1].tolist()) == sorted(loop)
    ms = graph.seg_ms.astype(float)
    expected = ((1 - path.start) + path.end) * ms[e] + ms[loop].sum() + float(
        graph.arc_turn_ms[path.arcs].sum())
    assert path.cost_ms == pytest.approx(expected)
    assert path.cost_ms == pytest.approx(path_duration_ms(graph, graph.seg_ms, path))


def test_target_behind_on_a_two_way_street_drives_the_other_way() -> None:
    graph, (a, m, _) = _line()
    path = shortest_path(graph, free_flow(graph), _snap(graph, 5, 200), _snap(graph, 5, 50))
    assert path is not None
    back = segment(graph, m, a)
    assert path.segments.tolist() == [back]
    assert path.cost_ms == pytest.approx(0.6 * float(graph.seg_ms[back]), rel=1e-3)


def test_mid_segment_start_and_end_cost_their_fractions_of_the_segments() -> None:
    graph, (a, m, z) = _line(oneway=True)
    path = shortest_path(graph, free_flow(graph), _snap(graph, -3, 100), _snap(graph, -3, 400))
    assert path is not None
    e, f = segment(graph, a, m), segment(graph, m, z)
    assert path.segments.tolist() == [e, f]
    assert path.start == pytest.approx(0.4, abs=1e-3) and path.end == pytest.approx(0.6, abs=1e-3)
    turn = float(graph.arc_turn_ms[path.arcs[0]])
    expected = (1 - path.start) * float(graph.seg_ms[e]) + turn + path.end * float(graph.seg_ms[f])
    assert path.cost_ms == pytest.approx(expected)
    assert path_duration_ms(graph, graph.seg_ms, path) == pytest.approx(expected)


def test_path_length_sums_the_partial_lengths() -> None:
    graph, _ = _line(oneway=True)
    origin, destination = _snap(graph, -3, 100), _snap(graph, -3, 400)
    path = shortest_path(graph, free_flow(graph), origin, destination)
    assert path is not None
    assert path_length_m(graph, path) == pytest.approx(300.0, abs=0.5)
    lats, lons = path_points(graph, path, origin, destination)
    polyline = sum(haversine_m(lats[i], lons[i], lats[i + 1], lons[i + 1])
                   for i in range(len(lats) - 1))
    assert path_length_m(graph, path) == pytest.approx(polyline, abs=1e-3)


def test_path_length_of_one_partial_segment_is_its_fraction() -> None:
    graph, _ = _line(oneway=True)
    path = shortest_path(graph, free_flow(graph), _snap(graph, 5, 50), _snap(graph, 5, 200))
    assert path is not None
    assert path_length_m(graph, path) == pytest.approx(150.0, abs=0.5)


def test_path_duration_follows_the_segment_durations_it_is_given() -> None:
    graph, _ = _line(oneway=True)
    path = shortest_path(graph, free_flow(graph), _snap(graph, -3, 100), _snap(graph, -3, 400))
    assert path is not None
    turns = float(graph.arc_turn_ms[path.arcs].sum())
    free = path_duration_ms(graph, graph.seg_ms, path)
    slow = path_duration_ms(graph, graph.seg_ms * 2, path)
    assert slow - turns == pytest.approx(2 * (free - turns))


def test_the_cheaper_of_two_ways_round_is_taken_on_every_engine() -> None:
    graph = build_graph(grid(4, 4).build(), CAR)
    origin, destination = _snap(graph, -5, 30), _snap(graph, 305, 270)
    paths: list[Path] = []
    for engine in (None, CCHEngine(graph)):
        path = shortest_path(graph, free_flow(graph, engine), origin, destination)
        assert path is not None
        paths.append(path)
    assert paths[0].cost_ms == pytest.approx(paths[1].cost_ms)
    for path in paths:
        _assert_chain(graph, path)
        assert path.cost_ms == pytest.approx(path_duration_ms(graph, graph.seg_ms, path))
    # the best of every pair of directions, by brute force over the snaps' candidates
    metric = free_flow(graph).metric
    best = min((1 - s) * float(graph.seg_ms[e]) + metric.query(e, f)[0]
               - (1 - t) * float(graph.seg_ms[f])
               for (e, s), (f, t) in itertools.product(origin.candidates(),
                                                      destination.candidates()))
    assert paths[0].cost_ms == pytest.approx(best)


def test_no_path_when_every_turn_is_avoided() -> None:
    graph = build_graph(grid(3, 3).build(), CAR)
    weights = np.full(graph.arc_count, INF_WEIGHT, dtype=np.uint32)
    weighting = Weighting(CCHEngine(graph).customize(weights), graph.seg_ms, graph.seg_weight(),
                          weights, 0)
    assert shortest_path(graph, weighting, _snap(graph, -5, 50), _snap(graph, 205, 150)) is None


def _shared_m(graph: RoadGraph, one: Path, other: Path) -> float:
    common = set(one.segments.tolist()) & set(other.segments.tolist())
    return float(graph.seg_length_m[list(common)].sum())


def _links(graph: RoadGraph, path: Path) -> list[tuple[int, int]]:
    a, b = graph.seg_tail[path.segments], graph.seg_head[path.segments]
    return [(min(int(x), int(y)), max(int(x), int(y))) for x, y in zip(a, b)]


@pytest.mark.parametrize(("start", "end"), [((-5, 50), (505, 450)), ((105, -5), (395, 505)),
                                            ((250, 205), (-5, 450))])
def test_alternatives_differ_stay_close_to_the_best_and_never_reuse_a_road(
        start: tuple[float, float], end: tuple[float, float]) -> None:
    graph = build_graph(grid(6, 6).build(), CAR)
    weighting = free_flow(graph, CCHEngine(graph))
    origin, destination = _snap(graph, *start), _snap(graph, *end)
    best = shortest_path(graph, weighting, origin, destination)
    assert best is not None
    alternatives = alternatives_for(graph, weighting, origin, destination, best, 3)
    assert 1 <= len(alternatives) <= 3
    starts = dict(origin.candidates())
    ends = dict(destination.candidates())
    taken = [best]
    for alt in alternatives:
        _assert_chain(graph, alt)
        assert alt.start == pytest.approx(starts[int(alt.segments[0])])
        assert alt.end == pytest.approx(ends[int(alt.segments[-1])])
        duration = path_duration_ms(graph, graph.seg_ms, alt)
        assert alt.cost_ms == pytest.approx(duration)
        assert best.cost_ms <= duration <= 1.3 * best.cost_ms
        links = _links(graph, alt)
        assert len(set(links)) == len(links)
        own = path_length_m(graph, alt)
        for earlier in taken:
            assert not np.array_equal(alt.segments, earlier.segments)
            assert _shared_m(graph, alt, earlier) <= 0.8 * own
        taken.append(alt)


def test_no_alternative_where_there_is_no_other_road() -> None:
    graph, _ = _line()
    weighting = free_flow(graph)
    origin, destination = _snap(graph, 5, 50), _snap(graph, 5, 450)
    best = shortest_path(graph, weighting, origin, destination)
    assert best is not None
    assert alternatives_for(graph, weighting, origin, destination, best, 2) == []


def test_an_alternative_much_longer_than_the_best_is_not_offered() -> None:
    # a direct street a-z and a detour 1.75 times as long, reached from dead-end spurs
    b = NetworkBuilder()
    a, z = b.node(0, 0), b.node(0, 400)
    b.way([a, z])
    b.way([a, b.node(150, 0), b.node(150, 400), z])
    b.way([b.node(0, -100), a])
    b.way([z, b.node(0, 500)])
    graph = build_graph(b.build(), CAR)
    weighting = free_flow(graph)
    origin, destination = _snap(graph, -5, -50), _snap(graph, -5, 450)
    best = shortest_path(graph, weighting, origin, destination)
    assert best is not None
    assert path_length_m(graph, best) == pytest.approx(500.0, abs=0.5)
    assert alternatives_for(graph, weighting, origin, destination, best, 2) == []
    detours = alternatives_for(graph, weighting, origin, destination, best, 2, max_stretch=3.0)
    assert len(detours) == 1
    assert path_length_m(graph, detours[0]) == pytest.approx(800.0, abs=0.5)


def _square_with_a_private_diagonal() -> tuple[RoadGraph, NetworkBuilder]:
    """A 400 m square of public streets, its diagonal a much shorter private road."""
    b = NetworkBuilder()
    sw, se, ne, nw = b.node(0, 0), b.node(0, 400), b.node(400, 400), b.node(400, 0)
    b.way([b.node(-100, 0), sw])  # dead-end spurs: no corner is a loop-only node
    b.way([sw, se, ne])
    b.way([sw, nw, ne])
    b.way([ne, b.node(500, 400)])
    mid = b.node(200, 200)
    b.way([sw, mid, ne], access="private")
    return build_graph(b.build(), CAR), b


def test_a_car_route_does_not_cut_through_a_local_access_road() -> None:
    graph, _ = _square_with_a_private_diagonal()
    weighting = free_flow(graph)
    path = shortest_path(graph, weighting, _snap(graph, -50, 0), _snap(graph, 450, 400))
    assert path is not None
    private = (graph.seg_classes[path.segments] & CLASS_RESTRICTED) != 0
    assert not private.any()  # round the square, though the diagonal is shorter


def test_a_car_may_end_on_a_local_access_road_and_its_eta_has_no_penalty() -> None:
    graph, _ = _square_with_a_private_diagonal()
    weighting = free_flow(graph)
    path = shortest_path(graph, weighting, _snap(graph, -50, 0), _snap(graph, 180, 190))
    assert path is not None
    assert (graph.seg_classes[path.segments[-1]] & CLASS_RESTRICTED) != 0
    duration = path_duration_ms(graph, graph.seg_ms, path)
    assert path.cost_ms - duration == pytest.approx(LOCAL_ACCESS_PENALTY_S * 1000, abs=1)
    assert duration < 120_000  # a minute or so of driving, not the 55-minute penalty


def test_a_car_route_keeps_to_streets_rather_than_a_faster_parking_aisle() -> None:
    b = NetworkBuilder()
    west, east = b.node(0, 0), b.node(0, 600)
    b.way([b.node(0, -100), west])
    b.way([east, b.node(0, 700)])
    # round the block: 800 m at 16 km/h (maxspeed 20 at 80 %), 180 s
    b.way([west, b.node(100, 0), b.node(100, 600), east], maxspeed="20")
    # across the car park: 603 m at 15 km/h, 145 s, but it weighs twice that
    b.way([west, b.node(-30, 300), east], highway="service", service="parking_aisle")
    graph = build_graph(b.build(), CAR)
    path = shortest_path(graph, free_flow(graph), _snap(graph, 0, -50), _snap(graph, 0, 650))
    assert path is not None
    assert not (graph.seg_weight_factor[path.segments] > 1).any()
    # its ETA is the time driven round the block, not a weight
    assert path_duration_ms(graph, graph.seg_ms, path) == pytest.approx(path.cost_ms, abs=1)
    assert 180_000 < path.cost_ms < 230_000  # plus the 50 m spurs at each end and two turns
