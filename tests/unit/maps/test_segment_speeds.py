"""SegmentSpeeds: medians over a window, robust to one outlier, a replay counted once."""

from __future__ import annotations

import pytest

from geoplex.servers.maps.traffic import SegmentSpeeds, SpeedObservation


def _obs(segment: int, kmh: float, t: float, metres: float = 50.0) -> SpeedObservation:
    return SpeedObservation("helsinki", segment, kmh, metres, t)


def test_the_speed_is_the_median_of_the_drivers_so_one_standing_car_does_not_jam_a_road(
        ) -> None:
    speeds = SegmentSpeeds(window_s=300)
    speeds.add("a", "1", [_obs(7, 40.0, 100)])
    speeds.add("b", "1", [_obs(7, 44.0, 101)])
    speeds.add("c", "1", [_obs(7, 2.0, 102)])     # waiting at a light
    assert speeds.current(110) == {"helsinki": {7: 40.0}}


def test_a_batch_delivered_again_replaces_its_own_observations() -> None:
    speeds = SegmentSpeeds()
    speeds.add("a", "b-1", [_obs(3, 10.0, 100)])
    speeds.add("b", "b-9", [_obs(3, 30.0, 100)])
    speeds.add("a", "b-1", [_obs(3, 10.0, 100)])  # the consumer saw it twice
    assert speeds.current(101)["helsinki"][3] == pytest.approx(20.0)


def test_observations_age_out_of_the_window() -> None:
    speeds = SegmentSpeeds(window_s=60)
    speeds.add("a", "1", [_obs(1, 20.0, 100), _obs(2, 30.0, 150)])
    assert speeds.current(155) == {"helsinki": {1: 20.0, 2: 30.0}}
    assert speeds.current(180) == {"helsinki": {2: 30.0}}
    assert speeds.current(300) == {}


def test_a_few_metres_say_nothing_about_a_segment() -> None:
    speeds = SegmentSpeeds(min_metres=5.0)
    assert speeds.add("a", "1", [_obs(1, 3.0, 100, metres=1.5)]) == 0
    assert speeds.current(100) == {}


def test_a_busy_segment_keeps_only_its_latest_observations() -> None:
    speeds = SegmentSpeeds(window_s=1000, max_per_segment=3)
    for i, speed in enumerate([5.0, 5.0, 5.0, 50.0, 52.0, 54.0]):
        speeds.add(f"u{i}", "1", [_obs(9, speed, 100 + i)])
    assert speeds.current(110) == {"helsinki": {9: 52.0}}   # the median of the last three


def test_observations_added_after_a_flush_count_in_the_next() -> None:
    speeds = SegmentSpeeds(window_s=1000)
    speeds.add("a", "1", [_obs(4, 30.0, 100)])
    first = speeds.current(101)
    speeds.add("b", "1", [_obs(4, 50.0, 102)])
    assert first == {"helsinki": {4: 30.0}}
    assert speeds.current(103) == {"helsinki": {4: 40.0}}
