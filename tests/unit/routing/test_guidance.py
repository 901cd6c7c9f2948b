"""Turn-by-turn steps from a path's geometry: maneuvers, modifiers, roundabout exits."""

from __future__ import annotations

import pytest

from geoplex.servers.routing.graph import RoadGraph, build_graph
from geoplex.servers.routing.guidance import Step, modifier_for, steps_for
from geoplex.servers.routing.planner import Path, path_duration_ms, path_length_m, shortest_path
from geoplex.servers.routing.profiles import CarProfile
from geoplex.servers.routing.snapping import SegmentIndex
from road_networks import NetworkBuilder, free_flow, latlon

CAR = CarProfile()


@pytest.mark.parametrize(("angle", "modifier"), [
    (0.0, "straight"), (19.9, "straight"), (-19.9, "straight"),
    (20.0, "slight right"), (59.9, "slight right"), (-20.0, "slight left"),
    (60.0, "right"), (119.9, "right"), (-90.0, "left"),
    (120.0, "sharp right"), (169.9, "sharp right"), (-150.0, "sharp left"),
    (170.0, "uturn"), (-170.0, "uturn"), (180.0, "uturn"), (-180.0, "uturn"),
])
def test_modifier_thresholds(angle: float, modifier: str) -> None:
    assert modifier_for(angle) == modifier


def _route(b: NetworkBuilder, start: tuple[float, float],
           end: tuple[float, float]) -> tuple[RoadGraph, Path, list[Step]]:
    graph = build_graph(b.build(), CAR)
    index = SegmentIndex(graph)
    origin, destination = index.snap(*latlon(*start)), index.snap(*latlon(*end))
    path = shortest_path(graph, free_flow(graph), origin, destination)
    assert path is not None
    steps = steps_for(graph, graph.seg_ms, path, (origin.lat, origin.lon),
                      (destination.lat, destination.lon))
    return graph, path, steps


def _corner() -> NetworkBuilder:
    """Main Street north 300 m to a corner; East Street goes on east, West Street west."""
    b = NetworkBuilder()
    main = [b.node(i * 100, 0) for i in range(4)]
    b.way(main, name="Main Street")
    b.way([main[3], *(b.node(300, i * 100) for i in (1, 2, 3))], name="East Street")
    b.way([main[3], *(b.node(300, -i * 100) for i in (1, 2))], name="West Street")
    return b


def _kinds(steps: list[Step]) -> list[tuple[str, str]]:
    return [(s.maneuver.type, s.maneuver.modifier) for s in steps]


def test_an_l_shaped_route_departs_turns_right_and_arrives() -> None:
    _, _, steps = _route(_corner(), (50, -5), (305, 250))
    assert _kinds(steps) == [("depart", ""), ("turn", "right"), ("arrive", "")]
    assert [s.name for s in steps] == ["Main Street", "East Street", "East Street"]
    depart, turn, arrive = (s.maneuver for s in steps)
    assert depart.bearing_after == 0
    assert turn.bearing_before == 0
    assert abs(turn.bearing_after - 90) <= 1
    assert (turn.lat, turn.lon) == pytest.approx(latlon(300, 0))
    assert steps[0].distance_m == pytest.approx(250.0, abs=0.5)
    assert steps[1].distance_m == pytest.approx(250.0, abs=0.5)
    assert arrive.bearing_after == 0 and steps[-1].distance_m == 0.0


def test_an_l_shaped_route_turning_left() -> None:
    _, _, steps = _route(_corner(), (50, -5), (305, -150))
    assert _kinds(steps) == [("depart", ""), ("turn", "left"), ("arrive", "")]
    turn = steps[1].maneuver
    assert turn.bearing_before == 0 and turn.bearing_after == 270
    assert steps[1].name == "West Street"
    assert steps[2].maneuver.bearing_before == 270


def test_bearings_are_rounded_to_the_nearest_degree() -> None:
    _, _, steps = _route(_corner(), (50, -5), (305, 250))
    assert steps[1].maneuver.bearing_after == 90
    assert steps[2].maneuver.bearing_before == 90


def test_a_new_name_straight_on_is_its_own_step() -> None:
    b = NetworkBuilder()
    nodes = [b.node(i * 100, 0) for i in range(5)]
    b.way(nodes[:3], name="Unioninkatu")
    b.way(nodes[2:], name="Liisankatu")
    _, _, steps = _route(b, (50, 5), (350, 5))
    assert _kinds(steps) == [("depart", ""), ("new name", "straight"), ("arrive", "")]
    assert [s.name for s in steps[:2]] == ["Unioninkatu", "Liisankatu"]
    assert steps[1].maneuver.bearing_before == 0 and steps[1].maneuver.bearing_after == 0


def test_going_straight_on_into_an_unnamed_link_is_no_step() -> None:
    b = NetworkBuilder()
    nodes = [b.node(i * 100, 0) for i in range(4)]
    b.way(nodes[:2], name="Unioninkatu")
    b.way(nodes[1:], {"highway": "service"})
    _, _, steps = _route(b, (50, 5), (250, 5))
    assert _kinds(steps) == [("depart", ""), ("arrive", "")]


def test_a_bend_in_one_street_without_a_junction_is_no_step() -> None:
    b = NetworkBuilder()
    nodes = [b.node(0, 0), b.node(100, 0), b.node(200, 0), b.node(200, 100), b.node(200, 200)]
    b.way(nodes, name="Bulevardi")
    _, _, steps = _route(b, (50, 5), (205, 150))
    assert _kinds(steps) == [("depart", ""), ("arrive", "")]


def test_a_sharp_turn_at_a_junction_keeping_the_street_is_a_continue() -> None:
    b = NetworkBuilder()
    nodes = [b.node(0, 0), b.node(100, 0), b.node(200, 0), b.node(200, 100), b.node(200, 200)]
    b.way(nodes, name="Bulevardi")
    b.way([nodes[2], b.node(300, 0)], name="Side Street")
    _, _, steps = _route(b, (50, 5), (205, 150))
    assert _kinds(steps) == [("depart", ""), ("continue", "right"), ("arrive", "")]
    assert steps[1].name == "Bulevardi"


def _roundabout(entry_only: str = "") -> NetworkBuilder:
    """A 4-exit roundabout of radius 30 m (anticlockwise) with an arm to each compass point;
    the arm named in ``entry_only`` is a oneway into the roundabout."""
    b = NetworkBuilder()
    ring = {"S": b.node(-30, 0), "E": b.node(0, 30), "N": b.node(30, 0), "W": b.node(0, -30)}
    b.way([ring["S"], ring["E"], ring["N"], ring["W"], ring["S"]],
          {"highway": "primary", "junction": "roundabout", "name": "Ring"})
    for key, (dn, de), name in (("S", (-1, 0), "South Road"), ("E", (0, 1), "East Road"),
                                ("N", (1, 0), "North Road"), ("W", (0, -1), "West Road")):
        north, east = b.points[ring[key]]
        far = b.node(north + dn * 200, east + de * 200)
        if key == entry_only:
            b.way([far, ring[key]], {"highway": "primary", "name": name, "oneway": "yes"})
        else:
            b.way([ring[key], far], {"highway": "primary", "name": name})
    return b


@pytest.mark.parametrize(("end", "exit_number", "road"), [
    ((5, 150), 1, "East Road"), ((150, -5), 2, "North Road"), ((5, -150), 3, "West Road"),
])
def test_a_roundabout_is_one_step_with_the_exit_to_take(end: tuple[float, float],
                                                        exit_number: int, road: str) -> None:
    _, _, steps = _route(_roundabout(), (-150, 5), end)
    assert [s.maneuver.type for s in steps] == ["depart", "roundabout", "arrive"]
    assert steps[0].name == "South Road"
    roundabout = steps[1]
    assert roundabout.maneuver.exit == exit_number
    assert roundabout.name == road
    assert (roundabout.maneuver.lat, roundabout.maneuver.lon) == pytest.approx(latlon(-30, 0))
    assert roundabout.maneuver.bearing_before == 0


def test_an_arm_that_only_enters_the_roundabout_is_not_counted_as_an_exit() -> None:
    _, _, steps = _route(_roundabout(entry_only="E"), (-150, 5), (5, -150))
    assert steps[1].maneuver.type == "roundabout"
    assert steps[1].maneuver.exit == 2
    assert steps[1].name == "West Road"


@pytest.mark.parametrize(("start", "end"), [
    ((50, -5), (305, 250)), ((50, -5), (305, -150)), ((250, 5), (-50, 0)),
])
def test_step_distances_and_durations_sum_to_the_route(start: tuple[float, float],
                                                       end: tuple[float, float]) -> None:
    graph, path, steps = _route(_corner(), start, end)
    assert sum(s.distance_m for s in steps) == pytest.approx(path_length_m(graph, path))
    assert sum(s.duration_s for s in steps) == pytest.approx(
        path_duration_ms(graph, graph.seg_ms, path) / 1000)


def test_roundabout_step_distances_sum_to_the_route() -> None:
    graph, path, steps = _route(_roundabout(), (-150, 5), (5, -150))
    assert sum(s.distance_m for s in steps) == pytest.approx(path_length_m(graph, path))
    assert sum(s.duration_s for s in steps) == pytest.approx(
        path_duration_ms(graph, graph.seg_ms, path) / 1000)


def test_depart_and_arrive_are_at_the_snapped_points() -> None:
    graph = build_graph(_corner().build(), CAR)
    index = SegmentIndex(graph)
    origin, destination = index.snap(*latlon(50, -5)), index.snap(*latlon(305, 250))
    path = shortest_path(graph, free_flow(graph), origin, destination)
    assert path is not None
    steps = steps_for(graph, graph.seg_ms, path, (origin.lat, origin.lon),
                      (destination.lat, destination.lon))
    assert (steps[0].maneuver.lat, steps[0].maneuver.lon) == (origin.lat, origin.lon)
    assert (steps[-1].maneuver.lat, steps[-1].maneuver.lon) == (destination.lat, destination.lon)
