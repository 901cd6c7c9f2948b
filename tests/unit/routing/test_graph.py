"""build_graph: the edge-based graph, its largest SCC, U-turns, durations, CSR, persistence."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from geoplex.servers._runtime.geo import haversine_m
from geoplex.servers.routing.graph import RoadGraph, bearings, build_graph, turn_angles
from geoplex.servers.routing.network import RawWay
from geoplex.servers.routing.profiles import CarProfile, FootProfile
from road_networks import NetworkBuilder, grid, latlon, segment

CAR = CarProfile()


def _grid_with_island() -> tuple[NetworkBuilder, list[int]]:
    b = grid(3, 3)
    far = [b.node(2000, 2000), b.node(2000, 2100), b.node(2100, 2100)]
    b.way([far[0], far[1], far[2], far[0]])
    return b, far


def test_a_disconnected_island_is_dropped() -> None:
    b, island = _grid_with_island()
    graph = build_graph(b.build(), CAR)
    used = set(graph.seg_tail.tolist()) | set(graph.seg_head.tolist())
    assert used == set(range(9))
    assert not used & set(island)
    assert graph.seg_count == 2 * 12


def test_a_oneway_dead_end_is_not_in_the_graph() -> None:
    b = grid(3, 3)
    spur = b.node(0, -100)
    b.way([spur, 0], oneway="yes")  # can be left but never reached
    graph = build_graph(b.build(), CAR)
    assert segment(graph, spur, 0) < 0
    assert graph.seg_count == 2 * 12


def test_every_segment_reaches_every_other() -> None:
    b = grid(4, 4, tags_for=lambda a, c: {"highway": "residential", "oneway": "yes"}
               if (a + c) % 3 == 0 else {"highway": "residential"})
    graph = build_graph(b.build(), CAR)
    matrix = csr_matrix((np.ones(graph.arc_count), (graph.arc_tail, graph.arc_head)),
                        shape=(graph.seg_count, graph.seg_count))
    count, _ = connected_components(matrix, directed=True, connection="strong")
    assert count == 1


def test_no_network_usable_by_the_profile_is_an_error() -> None:
    b = NetworkBuilder()
    b.way([b.node(0, 0), b.node(0, 100)], {"highway": "steps"})
    with pytest.raises(ValueError, match="car"):
        build_graph(b.build(), CAR)


def test_u_turns_are_allowed_only_at_dead_ends() -> None:
    b = grid(3, 3)
    end = b.node(0, -100)
    b.way([0, end])
    graph = build_graph(b.build(), CAR)
    back = graph.seg_head[graph.arc_head] == graph.seg_tail[graph.arc_tail]
    back &= graph.seg_tail[graph.arc_head] == graph.seg_head[graph.arc_tail]
    u_turn_nodes = set(graph.seg_head[graph.arc_tail[back]].tolist())
    assert u_turn_nodes == {end}


def test_segment_durations_are_the_length_at_the_speed_rounded_up() -> None:
    b = NetworkBuilder()
    n = [b.node(0, 0), b.node(0, 137), b.node(61, 137), b.node(61, 0)]
    b.way([n[0], n[1]], {"highway": "primary"})
    b.way([n[1], n[2]], {"highway": "residential", "maxspeed": "30"})
    b.way([n[2], n[3], n[0]], {"highway": "living_street"})
    b.way([n[0], b.node(-50, -50)], {"highway": "service"})  # a dead end: both ways round
    graph = build_graph(b.build(), CAR)
    assert graph.seg_count == 10
    kmh = {0: 65.0, 1: 24.0, 2: 10.0, 3: 15.0}
    for s in range(graph.seg_count):
        speed = kmh[int(graph.seg_way[s])] / 3.6
        assert int(graph.seg_ms[s]) == int(np.ceil(graph.seg_length_m[s] / speed * 1000))
        assert graph.seg_ms[s] * speed / 1000 >= graph.seg_length_m[s]


def test_segment_lengths_are_great_circle_distances() -> None:
    b = NetworkBuilder()
    b.way([b.node(0, 0), b.node(0, 100), b.node(0, 350)])
    graph = build_graph(b.build(), CAR)
    s = segment(graph, 1, 2)
    (lat1, lon1), (lat2, lon2) = latlon(0, 100), latlon(0, 350)
    assert graph.seg_length_m[s] == pytest.approx(haversine_m(lat1, lon1, lat2, lon2))
    assert graph.seg_length_m[s] == pytest.approx(250.0, rel=1e-3)


def test_arc_first_is_a_csr_index_over_the_arc_tails() -> None:
    graph = build_graph(grid(4, 5).build(), CAR)
    first = graph.arc_first
    assert first.shape == (graph.seg_count + 1,)
    assert first[0] == 0 and first[-1] == graph.arc_count
    assert np.all(np.diff(first) >= 0)
    for s in range(graph.seg_count):
        assert np.all(graph.arc_tail[first[s]:first[s + 1]] == s)


def test_every_turn_joins_a_segment_to_one_leaving_its_end() -> None:
    graph = build_graph(grid(4, 4).build(), CAR)
    assert np.all(graph.seg_head[graph.arc_tail] == graph.seg_tail[graph.arc_head])


def test_seg_reverse_is_the_opposite_direction_or_minus_one() -> None:
    b = grid(3, 3)
    b.ways[0] = RawWay(b.ways[0].way_id, b.ways[0].nodes,
                                {"highway": "residential", "oneway": "yes"})
    graph = build_graph(b.build(), CAR)
    for s in range(graph.seg_count):
        r = int(graph.seg_reverse[s])
        if r < 0:
            assert segment(graph, int(graph.seg_head[s]), int(graph.seg_tail[s])) < 0
        else:
            assert graph.seg_tail[r] == graph.seg_head[s]
            assert graph.seg_head[r] == graph.seg_tail[s]
    assert graph.seg_reverse[segment(graph, 0, 1)] == -1


def test_arc_weight_is_the_next_segment_plus_the_turn() -> None:
    graph = build_graph(grid(3, 3).build(), CAR)
    weights = graph.arc_weights()
    assert np.array_equal(weights, graph.seg_ms[graph.arc_head] + graph.arc_turn_ms)
    doubled = graph.arc_weights(graph.seg_ms * 2)
    assert np.array_equal(doubled, graph.seg_ms[graph.arc_head] * 2 + graph.arc_turn_ms)


def test_a_junction_is_a_node_with_three_or_more_neighbours() -> None:
    graph = build_graph(grid(3, 3).build(), CAR)
    corners, edges, middle = [0, 2, 6, 8], [1, 3, 5, 7], [4]
    assert not graph.intersection[corners].any()
    assert graph.intersection[edges + middle].all()


def test_way_labels_are_kept_per_way() -> None:
    b = NetworkBuilder()
    n = [b.node(0, 0), b.node(0, 100), b.node(100, 100)]
    b.way([n[0], n[1]], {"highway": "primary", "name": "Mannerheimintie", "ref": "1"},
          way_id=7001)
    b.way([n[1], n[2], n[0]], {"highway": "residential", "name": "Kaivokatu"}, way_id=7002)
    b.way([n[0], b.node(-50, 0)], way_id=7003)
    graph = build_graph(b.build(), CAR)
    s = segment(graph, n[0], n[1])
    w = int(graph.seg_way[s])
    assert (graph.way_ids[w], graph.way_names[w], graph.way_refs[w]) == (
        7001, "Mannerheimintie", "1")


def test_save_and_load_round_trip_every_field(tmp_path: Path) -> None:
    b = grid(3, 4)
    b.ways[0] = RawWay(b.ways[0].way_id, b.ways[0].nodes,
                                {"highway": "residential", "name": "Aleksanterinkatu",
                                 "junction": "roundabout"})
    b.node_tags[5] = {"highway": "traffic_signals"}
    graph = build_graph(b.build(), FootProfile())
    path = tmp_path / "foot.npz"
    graph.save(path)
    loaded = RoadGraph.load(path)
    assert not list(tmp_path.glob("*.tmp*"))
    for f in fields(RoadGraph):
        mine, theirs = getattr(graph, f.name), getattr(loaded, f.name)
        if isinstance(mine, np.ndarray):
            assert isinstance(theirs, np.ndarray)
            assert theirs.dtype == mine.dtype, f.name
            assert np.array_equal(theirs, mine), f.name
        else:
            assert theirs == mine, f.name
    assert loaded.way_names[0] == "Aleksanterinkatu"


def test_bearings_are_clockwise_from_north() -> None:
    lat0, lon0 = latlon(0, 0)
    targets = [latlon(100, 0), latlon(0, 100), latlon(-100, 0), latlon(0, -100)]
    got = bearings(np.full(4, lat0), np.full(4, lon0), np.array([t[0] for t in targets]),
                   np.array([t[1] for t in targets]))
    assert got == pytest.approx([0.0, 90.0, 180.0, 270.0], abs=0.01)


def test_turn_angles_are_negative_to_the_left_and_positive_to_the_right() -> None:
    got = turn_angles(np.array([0.0, 0.0, 350.0, 90.0]), np.array([90.0, 270.0, 10.0, 90.0]))
    assert got.tolist() == pytest.approx([90.0, -90.0, 20.0, 0.0])
