"""The CCH kernel held to the Dijkstra and bidirectional A* baselines, exactly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroutingkit import INF_WEIGHT

from geoplex.servers.routing.adapters.routingkit_cch import CCHEngine
from geoplex.servers.routing.engines.baselines import BidirectionalAStarEngine, DijkstraEngine
from geoplex.servers.routing.graph import RoadGraph, build_graph
from geoplex.servers.routing.ports import UNREACHABLE, Engine, Metric
from geoplex.servers.routing.profiles import CarProfile
from road_networks import Tags, grid

CAR = CarProfile()
ROADS: list[Tags] = [
    {"highway": "residential"}, {"highway": "residential"}, {"highway": "primary"},
    {"highway": "residential", "oneway": "yes"}, {"highway": "tertiary", "oneway": "-1"},
    {"highway": "living_street"},
]


def _city(rows: int = 6, cols: int = 6) -> RoadGraph:
    """Two-way residential streets, a primary avenue and a few oneways."""
    def tags(a: int, b: int) -> Tags:
        if b == a + cols and a % cols == 2:
            return {"highway": "primary", "name": "Avenue"}
        if b == a + 1 and a // cols == 3:
            return {"highway": "residential", "oneway": "yes"}
        if b == a + cols and a % cols == 4:
            return {"highway": "residential", "oneway": "-1"}
        return {"highway": "residential"}
    return build_graph(grid(rows, cols, tags_for=tags).build(), CAR)


@pytest.fixture(scope="module")
def city() -> RoadGraph:
    return _city()


def _all(graph: RoadGraph) -> np.ndarray:
    return np.arange(graph.seg_count, dtype=np.int32)


def _without(graph: RoadGraph, removed: np.ndarray) -> RoadGraph:
    """``graph`` with the arcs where ``removed`` is true taken out (CSR rebuilt)."""
    keep = ~removed
    tail = graph.arc_tail[keep]
    first = np.zeros(graph.seg_count + 1, dtype=np.int32)
    np.cumsum(np.bincount(tail, minlength=graph.seg_count), out=first[1:])
    return replace(graph, arc_first=first, arc_tail=tail, arc_head=graph.arc_head[keep],
                   arc_turn_ms=graph.arc_turn_ms[keep])


def _assert_path(graph: RoadGraph, weights: np.ndarray, metric: Metric, s: int,
                 t: int) -> None:
    distance, arcs = metric.query(s, t)
    assert distance < UNREACHABLE
    if s == t:
        assert distance == 0 and arcs.size == 0
        return
    assert graph.arc_tail[arcs[0]] == s and graph.arc_head[arcs[-1]] == t
    assert np.array_equal(graph.arc_head[arcs[:-1]], graph.arc_tail[arcs[1:]])
    assert int(weights[arcs].astype(np.int64).sum()) == distance


def test_cch_dijkstra_and_astar_agree_on_every_pair(city: RoadGraph) -> None:
    weights = city.arc_weights()
    ids = _all(city)
    dijkstra = DijkstraEngine(city).customize(weights).many_to_many(ids, ids)
    cch = CCHEngine(city).customize(weights).many_to_many(ids, ids)
    astar = BidirectionalAStarEngine(city).customize(weights).many_to_many(ids, ids)
    assert (dijkstra < UNREACHABLE).all()  # one strongly connected component
    assert np.array_equal(cch, dijkstra)
    assert np.array_equal(astar, dijkstra)


def test_cch_query_equals_its_matrix_and_its_arcs_sum_to_the_distance(city: RoadGraph) -> None:
    weights = city.arc_weights()
    metric = CCHEngine(city).customize(weights)
    ids = _all(city)
    matrix = metric.many_to_many(ids, ids)
    for s in range(0, city.seg_count, 7):
        for t in range(0, city.seg_count, 5):
            assert metric.query(s, t)[0] == matrix[s, t]
            _assert_path(city, weights, metric, s, t)


def test_baseline_paths_sum_to_their_distances(city: RoadGraph) -> None:
    weights = city.arc_weights()
    dijkstra = DijkstraEngine(city).customize(weights)
    astar = BidirectionalAStarEngine(city).customize(weights)
    for s, t in [(0, 1), (3, 100), (57, 12), (90, 90), (city.seg_count - 1, 0)]:
        _assert_path(city, weights, dijkstra, s, t)
        _assert_path(city, weights, astar, s, t)


def test_cch_treats_inf_weight_arcs_as_removed(city: RoadGraph) -> None:
    rng = np.random.default_rng(7)
    ids = _all(city)
    cch = CCHEngine(city)
    for _ in range(5):
        removed = rng.random(city.arc_count) < 0.25
        weights = city.arc_weights()
        blocked = weights.copy()
        blocked[removed] = INF_WEIGHT
        expected = DijkstraEngine(_without(city, removed)).customize(
            weights[~removed]).many_to_many(ids, ids)
        metric = cch.customize(blocked)
        got = metric.many_to_many(ids, ids)
        assert np.array_equal(got, expected)
        cut_off = np.argwhere(expected == UNREACHABLE)
        assert cut_off.size > 0
        for s, t in cut_off[:10].tolist():
            distance, arcs = metric.query(s, t)
            assert distance == UNREACHABLE and arcs.size == 0
        for s, t in np.argwhere((expected < UNREACHABLE) & (expected > 0))[::97].tolist():
            _assert_path(city, blocked, metric, s, t)  # a finite sum: no blocked arc on it


@pytest.mark.parametrize("engine", [DijkstraEngine, BidirectionalAStarEngine, CCHEngine],
                         ids=["dijkstra", "astar", "cch"])
def test_a_segment_reached_only_over_avoided_turns_is_unreachable(
        city: RoadGraph, engine: Callable[[RoadGraph], Engine]) -> None:
    avoided = 0
    weights = city.arc_weights()
    into = city.arc_head == avoided
    expected = DijkstraEngine(_without(city, into)).customize(weights[~into])
    weights[into] = INF_WEIGHT
    metric = engine(city).customize(weights)
    others = np.arange(1, city.seg_count, dtype=np.int32)
    targets = np.array([avoided, 1, 40], dtype=np.int32)
    matrix = metric.many_to_many(others, targets)
    assert (matrix[:, 0] == UNREACHABLE).all()
    assert np.array_equal(matrix, expected.many_to_many(others, targets))
    assert (matrix[:, 1:] < UNREACHABLE).any()
    distance, arcs = metric.query(5, avoided)
    assert distance == UNREACHABLE and arcs.size == 0


def test_a_cached_cch_topology_answers_like_a_fresh_one(city: RoadGraph, tmp_path: Path) -> None:
    cache = tmp_path / "cch"
    weights = city.arc_weights()
    ids = _all(city)
    fresh = CCHEngine(city, cache).customize(weights).many_to_many(ids, ids)
    assert (cache / "complete").is_file()
    loaded = CCHEngine(city, cache).customize(weights).many_to_many(ids, ids)
    assert np.array_equal(loaded, fresh)


def test_a_new_customization_changes_the_distances_and_not_the_old_metric(
        city: RoadGraph) -> None:
    engine = CCHEngine(city)
    weights = city.arc_weights()
    before = engine.customize(weights)
    ids = _all(city)
    old = before.many_to_many(ids, ids)
    after = engine.customize(weights * 3)
    assert np.array_equal(after.many_to_many(ids, ids), old * 3)
    assert np.array_equal(before.many_to_many(ids, ids), old)


@st.composite
def random_cities(draw: st.DrawFn) -> tuple[RoadGraph, np.ndarray]:
    rows, cols = draw(st.integers(2, 5)), draw(st.integers(2, 5))
    blocks = rows * (cols - 1) + cols * (rows - 1)
    kinds = draw(st.lists(st.integers(0, len(ROADS) - 1), min_size=blocks, max_size=blocks))
    it = iter(kinds)
    graph = build_graph(grid(rows, cols, tags_for=lambda a, b: ROADS[next(it)]).build(), CAR)
    seed = draw(st.integers(0, 2**32 - 1))
    slowdown = np.random.default_rng(seed).integers(0, 5_000, graph.arc_count)
    # never below free flow, so A*'s straight-line potential stays a lower bound
    weights = (graph.arc_weights() + slowdown).astype(np.uint32)
    return graph, weights


@settings(max_examples=80, deadline=None)
@given(random_cities())
def test_cch_equals_dijkstra_and_astar_on_random_grids(
        case: tuple[RoadGraph, np.ndarray]) -> None:
    graph, weights = case
    ids = _all(graph)
    expected = DijkstraEngine(graph).customize(weights).many_to_many(ids, ids)
    cch = CCHEngine(graph).customize(weights)
    assert np.array_equal(cch.many_to_many(ids, ids), expected)
    astar = BidirectionalAStarEngine(graph).customize(weights)
    for s in range(0, graph.seg_count, 3):
        t = (s * 7 + 1) % graph.seg_count
        assert astar.query(s, t)[0] == expected[s, t]
        _assert_path(graph, weights, cch, s, t)


@settings(max_examples=80, deadline=None)
@given(random_cities(), st.integers(0, 2**32 - 1))
def test_cch_equals_dijkstra_under_arbitrary_weights(case: tuple[RoadGraph, np.ndarray],
                                                    seed: int) -> None:
    graph, _ = case
    rng = np.random.default_rng(seed)
    weights = rng.integers(1, 1_000_000, graph.arc_count).astype(np.uint32)
    removed = rng.random(graph.arc_count) < 0.1
    blocked = weights.copy()
    blocked[removed] = INF_WEIGHT
    ids = _all(graph)
    expected = DijkstraEngine(_without(graph, removed)).customize(
        weights[~removed]).many_to_many(ids, ids)
    assert np.array_equal(CCHEngine(graph).customize(blocked).many_to_many(ids, ids), expected)
