"""Travel-mode profiles: speeds, access, oneways, barriers, turn restrictions, turn costs.

The numbers are OSRM's public defaults (car.lua, bicycle.lua, foot.lua); where a rule
only shows in the graph (barriers, restrictions, turn costs) it is checked there.
"""

from __future__ import annotations

import numpy as np
import pytest

from geoplex.servers.routing.graph import build_graph
from geoplex.servers.routing.profiles import (
    CLASS_FERRY,
    CLASS_MOTORWAY,
    CLASS_NO_START,
    CLASS_TOLL,
    BicycleProfile,
    CarProfile,
    FootProfile,
    Profile,
    WayRule,
    car_rate_factor,
    osrm_turn_seconds,
    parse_maxspeed,
)
from road_networks import NetworkBuilder, arc, crossroads, grid, segment, turn_allowed

CAR = CarProfile()
BIKE = BicycleProfile()
FOOT = FootProfile()


def speeds(profile: Profile, **tags: str) -> tuple[float, float]:
    """(forward, backward) km/h of a way with ``tags`` (0, 0 when it is not usable)."""
    rule = profile.way(tags, "")
    return (0.0, 0.0) if rule is None else (rule.forward_kmh, rule.backward_kmh)


# -- maxspeed ------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "kmh"), [
    ("50", 50.0), ("50 km/h", 50.0), ("30 mph", 48.27), ("none", 140.0),
    ("SE:urban", 50.0), ("DE:rural", 100.0), ("FR:rural", 80.0), ("RU:urban", 60.0),
    ("XX:rural", 90.0), ("walk", 0.0), ("signals", 0.0), ("", 0.0), (None, 0.0),
])
def test_maxspeed_is_read_in_kmh_from_numbers_units_and_zones(value: str | None,
                                                              kmh: float) -> None:
    assert parse_maxspeed(value) == pytest.approx(kmh, abs=0.01)


def test_maxspeed_without_zones_ignores_zone_codes_and_none() -> None:
    assert parse_maxspeed("SE:urban", zones=False) == 0.0
    assert parse_maxspeed("none", zones=False) == 0.0
    assert parse_maxspeed("20", zones=False) == 20.0


# -- class speeds and maxspeed ------------------------------------------------------------

@pytest.mark.parametrize(("highway", "kmh"), [
    ("motorway", 90.0), ("trunk", 85.0), ("primary", 65.0), ("secondary", 55.0),
    ("tertiary", 40.0), ("residential", 25.0), ("living_street", 10.0), ("service", 15.0),
    ("winter_road", 20.0), ("ice_road", 15.0),
])
def test_car_drives_each_road_class_at_its_osrm_speed(highway: str, kmh: float) -> None:
    assert speeds(CAR, highway=highway)[0] == kmh


def test_car_drives_at_80_percent_of_a_posted_limit() -> None:
    assert speeds(CAR, highway="residential", maxspeed="50") == (40.0, 40.0)
    assert speeds(CAR, highway="motorway", maxspeed="120")[0] == pytest.approx(96.0)
    assert speeds(CAR, highway="residential", maxspeed="30 mph")[0] == pytest.approx(
        30 * 1.609 * 0.8)


def test_car_limit_none_is_a_fast_motorway_and_the_top_speed() -> None:
    forward, _ = speeds(CAR, highway="motorway", maxspeed="none")
    assert forward == pytest.approx(112.0)
    assert forward <= CAR.top_speed_kmh


def test_no_car_road_is_faster_than_the_profile_top_speed() -> None:
    assert speeds(CAR, highway="motorway", maxspeed="160")[0] <= CAR.top_speed_kmh


def test_bicycle_never_rides_faster_than_its_top_speed() -> None:
    assert speeds(BIKE, highway="primary", maxspeed="100")[0] <= BIKE.top_speed_kmh
    assert speeds(BIKE, route="ferry")[0] <= BIKE.top_speed_kmh


def test_car_reads_zone_limits_by_country_code() -> None:
    assert speeds(CAR, highway="primary", maxspeed="SE:urban")[0] == pytest.approx(40.0)
    assert speeds(CAR, highway="primary", maxspeed="DE:rural")[0] == pytest.approx(80.0)


def test_car_ignores_a_limit_that_is_not_a_number() -> None:
    assert speeds(CAR, highway="residential", maxspeed="walk") == (25.0, 25.0)
    assert speeds(CAR, highway="primary", maxspeed="signals") == (65.0, 65.0)


def test_car_takes_a_directional_limit_per_direction() -> None:
    tags = {"highway": "primary", "maxspeed:forward": "50", "maxspeed:backward": "30"}
    assert speeds(CAR, **tags) == pytest.approx((40.0, 24.0))


def test_bicycle_rides_at_15_kmh_and_under_a_lower_limit() -> None:
    assert speeds(BIKE, highway="residential") == (15.0, 15.0)
    assert speeds(BIKE, highway="cycleway") == (15.0, 15.0)
    assert speeds(BIKE, highway="living_street", maxspeed="10") == (10.0, 10.0)


def test_foot_walks_at_5_kmh() -> None:
    assert speeds(FOOT, highway="residential") == (5.0, 5.0)
    assert speeds(FOOT, highway="footway") == (5.0, 5.0)


def test_no_mode_uses_a_road_under_construction() -> None:
    for profile in (CAR, BIKE, FOOT):
        assert profile.way({"highway": "construction"}, "") is None


@pytest.mark.parametrize(("tags", "expected"), [
    ({"maxheight": "1.8"}, (0.0, 0.0)),
    ({"maxheight": "6'6\""}, (0.0, 0.0)),           # 1.98 m
    ({"maxheight": "2.0"}, (25.0, 25.0)),
    ({"maxheight": "default"}, (25.0, 25.0)),
    ({"maxheight:physical": "1.9", "maxheight": "3"}, (0.0, 0.0)),
    ({"maxwidth": "1.9"}, (0.0, 0.0)),
    ({"width": "1,5"}, (0.0, 0.0)),
    ({"maxwidth:backward": "1.8"}, (25.0, 0.0)),
    ({"maxlength": "4"}, (0.0, 0.0)),
    ({"maxweight": "1.5"}, (0.0, 0.0)),
    ({"maxweight": "1500 kg"}, (0.0, 0.0)),
    ({"maxweight": "3.5"}, (25.0, 25.0)),
], ids=lambda v: str(v))
def test_car_does_not_drive_where_it_does_not_fit(tags: dict[str, str],
                                                  expected: tuple[float, float]) -> None:
    assert speeds(CAR, highway="residential", **tags) == expected


def test_car_reads_a_zone_limit_from_source_maxspeed_when_maxspeed_is_absent() -> None:
    assert speeds(CAR, highway="residential", **{"source:maxspeed": "FI:urban"}) == (40.0, 40.0)
    assert speeds(CAR, highway="residential", **{"maxspeed:type": "DE:rural"}) == (80.0, 80.0)
    assert speeds(CAR, highway="residential", maxspeed="30",
                  **{"source:maxspeed": "FI:urban"}) == (24.0, 24.0)
    assert speeds(CAR, highway="residential", **{"source:maxspeed": "sign"}) == (25.0, 25.0)


@pytest.mark.parametrize(("tags", "no_start"), [
    ({"highway": "service", "access": "private"}, True),
    ({"highway": "service", "motorcar": "private", "access": "yes"}, True),
    ({"highway": "service", "access": "destination"}, False),
    ({"highway": "residential", "access": "private"}, False),
    ({"highway": "service"}, False),
], ids=lambda v: str(v))
def test_a_private_service_road_is_no_place_to_start_a_car_route(tags: dict[str, str],
                                                                no_start: bool) -> None:
    rule = CAR.way(tags, "")
    assert rule is not None
    assert bool(rule.classes & CLASS_NO_START) is no_start


# -- access ---------------------------------------------------------------------------------

def test_motor_vehicle_no_blocks_the_car_but_not_bicycle_or_foot() -> None:
    tags = {"highway": "residential", "motor_vehicle": "no"}
    assert CAR.way(tags, "") is None
    assert speeds(BIKE, **tags) == (15.0, 15.0)
    assert speeds(FOOT, **tags) == (5.0, 5.0)


def test_car_may_use_a_private_residential_street_for_local_access() -> None:
    assert speeds(CAR, highway="residential", access="private") == (25.0, 25.0)
    assert speeds(CAR, highway="service", access="destination") == (15.0, 15.0)


def test_car_may_not_use_a_street_closed_to_all_traffic() -> None:
    assert CAR.way({"highway": "residential", "access": "no"}, "") is None
    assert CAR.way({"highway": "residential", "motorcar": "no"}, "") is None


def test_a_more_specific_access_tag_overrides_a_general_one() -> None:
    assert speeds(CAR, highway="residential", access="no", motorcar="yes") == (25.0, 25.0)
    assert speeds(BIKE, highway="residential", access="no", bicycle="yes") == (15.0, 15.0)
    assert speeds(FOOT, highway="residential", access="no", foot="yes") == (5.0, 5.0)


def test_foot_no_blocks_the_pedestrian() -> None:
    assert FOOT.way({"highway": "residential", "foot": "no"}, "") is None
    assert speeds(CAR, highway="residential", foot="no") == (25.0, 25.0)


def test_bicycle_no_blocks_the_bicycle() -> None:
    assert BIKE.way({"highway": "residential", "bicycle": "no"}, "") is None


def test_bicycle_is_pushed_at_walking_pace_on_a_footway() -> None:
    assert speeds(BIKE, highway="footway") == (4.0, 4.0)
    assert speeds(BIKE, highway="pedestrian") == (4.0, 4.0)


def test_bicycle_rides_a_footway_where_bicycles_are_allowed() -> None:
    assert speeds(BIKE, highway="footway", bicycle="yes") == (15.0, 15.0)


def test_car_never_uses_steps() -> None:
    assert CAR.way({"highway": "steps"}, "") is None


def test_bicycle_is_carried_up_steps_at_2_kmh() -> None:
    assert speeds(BIKE, highway="steps") == (2.0, 2.0)


def test_pedestrian_walks_steps_at_5_kmh() -> None:
    assert speeds(FOOT, highway="steps") == (5.0, 5.0)


def test_neither_bicycle_nor_pedestrian_uses_a_motorway() -> None:
    assert BIKE.way({"highway": "motorway"}, "") is None
    assert FOOT.way({"highway": "motorway"}, "") is None


def test_car_steps_way_leaves_no_segment_in_the_car_graph() -> None:
    b = NetworkBuilder()
    a, m, z = b.node(0, 0), b.node(0, 100), b.node(0, 200)
    b.way([a, m])
    b.way([m, z], {"highway": "steps"})
    graph = build_graph(b.build(), CAR)
    assert segment(graph, m, z) < 0 and segment(graph, z, m) < 0
    bike = build_graph(b.build(), BIKE)
    s = segment(bike, m, z)
    assert s >= 0
    expected_ms = np.ceil(bike.seg_length_m[s] / (2.0 / 3.6) * 1000)
    assert int(bike.seg_ms[s]) == int(expected_ms)


# -- surfaces ---------------------------------------------------------------------------------

def test_car_speed_is_capped_by_a_rough_surface() -> None:
    assert speeds(CAR, highway="primary", surface="cobblestone") == (30.0, 30.0)
    assert speeds(CAR, highway="residential", maxspeed="100", surface="gravel") == (40.0, 40.0)
    assert speeds(CAR, highway="primary", tracktype="grade5") == (20.0, 20.0)


def test_a_surface_cap_above_the_speed_changes_nothing() -> None:
    assert speeds(CAR, highway="residential", surface="gravel") == (25.0, 25.0)


def test_bicycle_and_foot_slow_down_on_gravel() -> None:
    assert speeds(BIKE, highway="residential", surface="gravel") == (6.0, 6.0)
    assert speeds(FOOT, highway="residential", surface="gravel") == (3.75, 3.75)


def test_an_impassable_road_is_not_driven() -> None:
    rule = CAR.way({"highway": "residential", "smoothness": "impassable"}, "")
    assert rule is None or (rule.forward_kmh <= 0 and rule.backward_kmh <= 0)


# -- oneways ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("tags", "expected"), [
    ({"oneway": "yes"}, (25.0, 0.0)),
    ({"oneway": "1"}, (25.0, 0.0)),
    ({"oneway": "-1"}, (0.0, 25.0)),
    ({"junction": "roundabout"}, (25.0, 0.0)),
    ({"oneway": "no"}, (25.0, 25.0)),
])
def test_car_follows_oneway_tags(tags: dict[str, str], expected: tuple[float, float]) -> None:
    assert speeds(CAR, highway="residential", **tags) == expected


def test_a_motorway_is_oneway_unless_tagged_otherwise() -> None:
    assert speeds(CAR, highway="motorway") == (90.0, 0.0)
    assert speeds(CAR, highway="motorway", oneway="no") == (90.0, 90.0)


def test_car_never_drives_against_a_oneway() -> None:
    b = grid(3, 3, tags_for=lambda a, c: {"highway": "residential", "oneway": "yes"}
             if (a, c) == (4, 5) else {"highway": "residential"})
    graph = build_graph(b.build(), CAR)
    assert segment(graph, 4, 5) >= 0
    assert segment(graph, 5, 4) < 0
    assert segment(graph, 3, 4) >= 0 and segment(graph, 4, 3) >= 0


def test_pedestrian_walks_a_oneway_both_ways() -> None:
    assert speeds(FOOT, highway="residential", oneway="yes") == (5.0, 5.0)
    assert speeds(FOOT, highway="residential", oneway="-1") == (5.0, 5.0)
    assert speeds(FOOT, highway="residential", junction="roundabout") == (5.0, 5.0)


def test_pedestrian_follows_a_oneway_for_pedestrians() -> None:
    assert speeds(FOOT, highway="footway", **{"oneway:foot": "yes"}) == (5.0, 0.0)


def test_bicycle_rides_both_ways_where_a_oneway_excepts_bicycles() -> None:
    assert speeds(BIKE, highway="residential", oneway="yes",
                  **{"oneway:bicycle": "no"}) == (15.0, 15.0)


def test_bicycle_rides_both_ways_with_a_contraflow_lane() -> None:
    assert speeds(BIKE, highway="residential", oneway="yes", cycleway="opposite") == (15.0, 15.0)
    assert speeds(BIKE, highway="residential", oneway="yes",
                  **{"cycleway:left": "opposite_lane"}) == (15.0, 15.0)


def test_bicycle_is_pushed_against_a_plain_oneway() -> None:
    assert speeds(BIKE, highway="residential", oneway="yes") == (15.0, 4.0)
    assert speeds(BIKE, highway="residential", oneway="-1") == (4.0, 15.0)


def test_bicycle_never_goes_backwards_round_a_roundabout() -> None:
    assert speeds(BIKE, highway="residential", junction="roundabout") == (15.0, 0.0)


# -- way labels and classes --------------------------------------------------------------------

def test_way_rule_carries_name_ref_and_road_classes() -> None:
    rule = CAR.way({"highway": "motorway", "name": " Ring I ", "ref": "E18", "toll": "yes"},
                   "")
    assert rule == WayRule(90.0, 0.0, "Ring I", "E18", CLASS_MOTORWAY | CLASS_TOLL, False)
    ferry = CAR.way({"route": "ferry"}, "")
    assert ferry is not None and ferry.classes == CLASS_FERRY


# -- barriers and node delays -----------------------------------------------------------------

def _through_node(**node_tags: str) -> tuple[NetworkBuilder, int, int, int, int]:
    """A straight street a -> x -> z with tagged node x, a detour a -> d -> z, and a
    dead-end spur beyond each of a and z (where a car may turn)."""
    b = NetworkBuilder()
    a, x, z = b.node(0, 0), b.node(0, 100, **node_tags), b.node(0, 200)
    d = b.node(150, 100)
    b.way([a, x, z], name="Through Street")
    b.way([a, d, z], name="Detour")
    b.way([b.node(0, -100), a], name="West Spur")
    b.way([z, b.node(0, 300)], name="East Spur")
    return b, a, x, z, d


def test_a_bollard_blocks_the_car_but_not_bicycle_or_foot() -> None:
    b, a, x, z, _ = _through_node(barrier="bollard")
    assert not turn_allowed(build_graph(b.build(), CAR), a, x, z)
    assert turn_allowed(build_graph(b.build(), BIKE), a, x, z)
    assert turn_allowed(build_graph(b.build(), FOOT), a, x, z)


def test_a_bollard_sends_the_car_round_by_the_detour() -> None:
    b, a, x, z, d = _through_node(barrier="bollard")
    graph = build_graph(b.build(), CAR)
    assert turn_allowed(graph, a, d, z) and turn_allowed(graph, z, d, a)
    assert not turn_allowed(graph, z, x, a)


def test_a_car_may_drive_up_to_a_bollard_and_turn_back() -> None:
    b, a, x, z, _ = _through_node(barrier="bollard")
    graph = build_graph(b.build(), CAR)
    assert segment(graph, a, x) >= 0 and segment(graph, z, x) >= 0
    assert turn_allowed(graph, a, x, a)
    assert turn_allowed(graph, z, x, z)
    assert not turn_allowed(graph, a, x, z)


def test_a_rising_bollard_lets_the_car_pass() -> None:
    b, a, x, z, _ = _through_node(barrier="bollard", bollard="rising")
    assert turn_allowed(build_graph(b.build(), CAR), a, x, z)


def test_a_wall_blocks_every_mode() -> None:
    for profile in (BIKE, FOOT):
        b, a, x, z, _ = _through_node(barrier="wall")
        assert not turn_allowed(build_graph(b.build(), profile), a, x, z)


def test_a_gate_costs_the_car_60_seconds() -> None:
    b, a, x, z, _ = _through_node(barrier="gate")
    graph = build_graph(b.build(), CAR)
    turn = arc(graph, segment(graph, a, x), segment(graph, x, z))
    assert turn >= 0
    assert int(graph.arc_turn_ms[turn]) == 60_000


@pytest.mark.parametrize("access", [{"motorcar": "yes"}, {"access": "permissive"},
                                    {"access": "private"}], ids=lambda t: str(t))
def test_a_gate_with_access_tags_open_to_the_car_costs_nothing(access: dict[str, str]) -> None:
    # OSRM reads a node's access tags first: a gate they let the car through is no obstacle
    b, a, x, z, _ = _through_node(barrier="gate", **access)
    graph = build_graph(b.build(), CAR)
    turn = arc(graph, segment(graph, a, x), segment(graph, x, z))
    assert turn >= 0
    assert int(graph.arc_turn_ms[turn]) == 0


def test_a_gate_closed_to_cars_is_a_place_to_turn_back_without_the_gate_delay() -> None:
    b, a, x, z, _ = _through_node(barrier="gate", access="no")
    graph = build_graph(b.build(), CAR)
    assert not turn_allowed(graph, a, x, z)
    back = arc(graph, segment(graph, a, x), segment(graph, x, a))
    assert back >= 0
    assert int(graph.arc_turn_ms[back]) == round(CAR.u_turn_seconds * 1000)


@pytest.mark.parametrize(("tags", "along_ms", "against_ms"), [
    ({"traffic_signals:direction": "forward"}, 2_000, 0),
    ({"traffic_signals:direction": "backward"}, 0, 2_000),
    ({"direction": "forward"}, 2_000, 0),
    ({"traffic_signals:direction": "backward", "direction": "forward"}, 0, 2_000),
    ({"direction": "154"}, 2_000, 2_000),
], ids=lambda v: str(v))
def test_a_signal_for_one_direction_holds_up_only_that_direction(
        tags: dict[str, str], along_ms: int, against_ms: int) -> None:
    # Through Street is drawn a -> x -> z: forward is the way a to z
    b, a, x, z, _ = _through_node(highway="traffic_signals", **tags)
    graph = build_graph(b.build(), CAR)
    along = arc(graph, segment(graph, a, x), segment(graph, x, z))
    against = arc(graph, segment(graph, z, x), segment(graph, x, a))
    assert int(graph.arc_turn_ms[along]) == along_ms
    assert int(graph.arc_turn_ms[against]) == against_ms


def test_a_one_direction_signal_at_a_way_end_is_judged_by_the_arriving_way() -> None:
    # x ends West Street (drawn a -> x) and starts East Street (drawn x -> z): "forward"
    # holds up traffic from a (along West Street), not from z (against East Street)
    b = NetworkBuilder()
    a, x, z = b.node(0, 0), b.node(0, 100, highway="traffic_signals",
                                   **{"traffic_signals:direction": "forward"}), b.node(0, 200)
    b.way([a, x], name="West Street")
    b.way([x, z], name="East Street")
    b.way([a, b.node(150, 100), z], name="Detour")
    graph = build_graph(b.build(), CAR)
    assert int(graph.arc_turn_ms[arc(graph, segment(graph, a, x), segment(graph, x, z))]) == 2_000
    assert int(graph.arc_turn_ms[arc(graph, segment(graph, z, x), segment(graph, x, a))]) == 0


def test_a_give_way_sign_for_one_direction_holds_up_only_that_direction() -> None:
    b, a, x, z, _ = _through_node(highway="give_way", direction="backward")
    graph = build_graph(b.build(), CAR)
    assert int(graph.arc_turn_ms[arc(graph, segment(graph, a, x), segment(graph, x, z))]) == 0
    assert int(graph.arc_turn_ms[arc(graph, segment(graph, z, x),
                                     segment(graph, x, a))]) == 1_000


@pytest.mark.parametrize("profile", [CAR, BIKE, FOOT], ids=lambda p: p.name)
def test_traffic_signals_cost_2_seconds(profile: Profile) -> None:
    b, a, x, z, _ = _through_node(highway="traffic_signals")
    graph = build_graph(b.build(), profile)
    turn = arc(graph, segment(graph, a, x), segment(graph, x, z))
    assert int(graph.arc_turn_ms[turn]) == 2_000


def test_a_plain_node_costs_nothing() -> None:
    b, a, x, z, _ = _through_node()
    graph = build_graph(b.build(), CAR)
    turn = arc(graph, segment(graph, a, x), segment(graph, x, z))
    assert int(graph.arc_turn_ms[turn]) == 0


# -- turn restrictions ------------------------------------------------------------------------

def test_car_obeys_a_no_left_turn() -> None:
    x = crossroads()
    x.builder.restrict(x.south_way, x.centre, x.west_way, "no_left_turn")
    graph = build_graph(x.builder.build(), CAR)
    assert not turn_allowed(graph, x.south, x.centre, x.west)
    assert turn_allowed(graph, x.south, x.centre, x.east)
    assert turn_allowed(graph, x.south, x.centre, x.north)
    assert turn_allowed(graph, x.north, x.centre, x.west)


def test_car_obeys_an_only_straight_on() -> None:
    x = crossroads()
    x.builder.restrict(x.south_way, x.centre, x.north_way, "only_straight_on")
    graph = build_graph(x.builder.build(), CAR)
    assert turn_allowed(graph, x.south, x.centre, x.north)
    assert not turn_allowed(graph, x.south, x.centre, x.west)
    assert not turn_allowed(graph, x.south, x.centre, x.east)
    assert turn_allowed(graph, x.east, x.centre, x.west)


@pytest.mark.parametrize(("tags", "turn_allowed_for_car"), [
    ({"restriction": "no_left_turn", "except": "bicycle;motorcar"}, True),
    ({"restriction:motorcar": "no_left_turn"}, False),
    ({"restriction:bicycle": "no_left_turn"}, True),
], ids=["excepts-motorcars", "for-motorcars", "for-bicycles-only"])
def test_car_obeys_the_restrictions_meant_for_it(tags: dict[str, str],
                                                 turn_allowed_for_car: bool) -> None:
    x = crossroads()
    x.builder.restrict(x.south_way, x.centre, x.west_way, "no_left_turn", tags)
    graph = build_graph(x.builder.build(), CAR)
    assert turn_allowed(graph, x.south, x.centre, x.west) is turn_allowed_for_car


def test_bicycle_obeys_only_restrictions_for_bicycles() -> None:
    general = crossroads()
    general.builder.restrict(general.south_way, general.centre, general.west_way,
                             "no_left_turn")
    graph = build_graph(general.builder.build(), BIKE)
    assert turn_allowed(graph, general.south, general.centre, general.west)
    own = crossroads()
    own.builder.restrict(own.south_way, own.centre, own.west_way, "no_left_turn",
                         {"restriction:bicycle": "no_left_turn"})
    graph = build_graph(own.builder.build(), BIKE)
    assert not turn_allowed(graph, own.south, own.centre, own.west)
    assert turn_allowed(graph, own.south, own.centre, own.east)


def test_pedestrian_ignores_turn_restrictions() -> None:
    x = crossroads()
    x.builder.restrict(x.south_way, x.centre, x.west_way, "no_left_turn",
                       {"restriction": "no_left_turn", "restriction:foot": "no_left_turn"})
    assert turn_allowed(build_graph(x.builder.build(), FOOT), x.south, x.centre, x.west)


def test_no_u_turn_restriction_forbids_only_turning_back() -> None:
    b = NetworkBuilder()
    a, v, z, side = b.node(0, 0), b.node(0, 100), b.node(0, 200), b.node(100, 100)
    main = b.way([a, v, z])
    b.way([v, side])
    b.way([z, b.node(100, 200), side])  # a block, so v is no dead end
    b.restrict(main, v, main, "no_u_turn")
    graph = build_graph(b.build(), CAR)
    assert turn_allowed(graph, a, v, z)


# -- turn costs --------------------------------------------------------------------------------

def test_osrm_turn_cost_is_near_zero_straight_on() -> None:
    cost = osrm_turn_seconds(np.array([0.0]), 7.5, 1.075)
    assert float(cost[0]) == pytest.approx(0.0, abs=0.01)


def test_osrm_turn_cost_matches_osrm_for_right_and_left_turns() -> None:
    right, left = osrm_turn_seconds(np.array([90.0, -90.0]), 7.5, 1.075)
    assert float(right) == pytest.approx(2.1, abs=0.05)
    assert float(left) == pytest.approx(7.3, abs=0.05)


def test_osrm_turn_cost_rises_with_the_angle() -> None:
    angles = np.linspace(0, 180, 19)
    for sign in (1.0, -1.0):
        costs = osrm_turn_seconds(sign * angles, 7.5, 1.075)
        assert np.all(np.diff(costs) > 0)
    assert float(osrm_turn_seconds(np.array([180.0]), 7.5, 1.075)[0]) <= 7.5


def test_car_turn_costs_at_a_junction_follow_the_side_of_the_turn() -> None:
    x = crossroads()
    graph = build_graph(x.builder.build(), CAR)
    inbound = segment(graph, x.south, x.centre)

    def cost(to: int) -> int:
        return int(graph.arc_turn_ms[arc(graph, inbound, segment(graph, x.centre, to))])

    assert cost(x.north) < 50
    assert cost(x.east) == pytest.approx(2_105, abs=30)   # right
    assert cost(x.west) == pytest.approx(7_320, abs=30)   # left, across traffic


def _ring(**ring_tags: str) -> tuple[int, NetworkBuilder, int, int, int]:
    """A ring driven anticlockwise north -> west -> south -> east -> north, with a two-way
    spur out of its north and south points (so those are junctions)."""
    b = NetworkBuilder()
    north, west, south, east = b.node(50, 0), b.node(0, -50), b.node(-50, 0), b.node(0, 50)
    b.way([north, west, south, east, north], {"highway": "residential", "oneway": "yes",
                                               **ring_tags})
    b.way([north, b.node(150, 0)])
    b.way([south, b.node(-150, 0)])
    return north, b, east, west, south


def test_going_round_a_roundabout_pays_no_oncoming_traffic_term() -> None:
    # at the north point the ring bends 90 degrees left: across oncoming traffic on a
    # street, not on a roundabout (OSRM: neither leg may be a roundabout for that term)
    costs = {}
    for tags in ({"junction": "roundabout"}, {}):
        north, b, east, west, _ = _ring(**tags)
        graph = build_graph(b.build(), CAR)
        turn = arc(graph, segment(graph, east, north), segment(graph, north, west))
        costs[bool(tags)] = int(graph.arc_turn_ms[turn])
    left = float(osrm_turn_seconds(np.array([-90.0]), 7.5, 1.075,
                                   np.array([True]))[0])
    assert costs[True] == pytest.approx(left * 1000, abs=1)
    assert costs[False] - costs[True] == pytest.approx(1_925, abs=30)


def test_bicycle_turns_cost_more_to_the_left_than_to_the_right() -> None:
    right, left = BIKE.turn_seconds(np.array([90.0, -90.0]))
    assert 0 < float(right) < float(left)


def test_pedestrian_turns_are_free() -> None:
    assert np.all(FOOT.turn_seconds(np.array([0.0, 90.0, -135.0])) == 0)


@pytest.mark.parametrize(("profile", "ms"), [(CAR, 27_455), (BIKE, 20_000), (FOOT, 2_000)],
                         ids=["car", "bicycle", "foot"])
def test_a_u_turn_at_a_dead_end_costs_the_profile_u_turn_time(profile: Profile,
                                                              ms: int) -> None:
    x = crossroads()
    graph = build_graph(x.builder.build(), profile)
    turn = arc(graph, segment(graph, x.centre, x.east), segment(graph, x.east, x.centre))
    assert turn >= 0
    assert int(graph.arc_turn_ms[turn]) == ms


def test_a_car_u_turn_costs_osrm_u_turn_penalty_on_top_of_its_hairpin_turn_cost() -> None:
    hairpin = float(osrm_turn_seconds(np.array([180.0]), 7.5, 1.075)[0])
    assert CAR.u_turn_seconds == pytest.approx(20.0 + hairpin)
    assert CAR.u_turn_seconds == pytest.approx(27.45, abs=0.01)


@pytest.mark.parametrize(("tags", "two_way", "factor"), [
    ({"highway": "service", "service": "parking_aisle"}, True, 0.5),
    ({"highway": "service", "service": "driveway"}, False, 0.5),
    ({"highway": "service"}, True, 1.0),
    ({"highway": "residential", "width": "2.5"}, True, 0.5),
    ({"highway": "residential", "width": "4.5"}, True, 0.75),
    ({"highway": "residential", "width": "2.5"}, False, 1.0),
    ({"highway": "residential", "lanes": "1"}, True, 0.5),
    ({"highway": "residential", "lanes": "1"}, False, 1.0),
    ({"highway": "residential", "lane_markings": "no"}, True, 0.75),
    ({"highway": "residential", "lane_markings": "no", "width": "7"}, True, 0.75),
    ({"highway": "residential", "width": "3,5"}, True, 0.6),
    ({"highway": "residential", "side_road": "yes"}, True, 0.8),
    ({"highway": "residential", "oneway": "alternating"}, True, 0.4),
    ({"highway": "primary"}, True, 1.0),
], ids=lambda v: str(v))
def test_car_rate_factors_follow_osrm(tags: dict[str, str], two_way: bool,
                                      factor: float) -> None:
    assert car_rate_factor(tags, two_way=two_way) == pytest.approx(factor)


def test_a_parking_aisle_weighs_twice_its_time_but_drives_at_its_speed() -> None:
    rule = CAR.way({"highway": "service", "service": "parking_aisle"}, "")
    assert rule is not None
    assert rule.forward_kmh == pytest.approx(15.0) and rule.weight_factor == pytest.approx(2.0)
