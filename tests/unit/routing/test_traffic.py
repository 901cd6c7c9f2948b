"""TrafficState: speed factors that hold until valid_until, then fade back to free flow."""

from __future__ import annotations

import numpy as np
import pytest

from geoplex.servers.routing.graph import MAX_MS
from geoplex.servers.routing.traffic import MAX_FACTOR, MIN_FACTOR, TrafficState

FREE = np.array([1_000, 2_000, 3_000, 4_000], dtype=np.uint32)


def _state(fade: float = 100.0) -> TrafficState:
    return TrafficState(FREE.copy(), fade)


def _apply(state: TrafficState, segments: list[int], factors: list[float], valid_until: float,
           now: float = 0.0) -> int:
    return state.apply(np.array(segments, dtype=np.int64), np.array(factors, dtype=np.float64),
                       valid_until, now)


def test_a_new_state_is_free_flowing() -> None:
    state = _state()
    assert np.array_equal(state.effective(0.0), np.ones(4))
    assert np.array_equal(state.seg_ms(0.0), FREE)
    assert state.version == 0 and state.active_segments(0.0) == 0
    assert state.segment_count == 4


def test_an_observation_holds_until_it_expires() -> None:
    state = _state()
    assert _apply(state, [1, 3], [0.5, 0.25], valid_until=100.0, now=10.0) == 2
    for now in (10.0, 50.0, 100.0):
        assert state.effective(now).tolist() == [1.0, 0.5, 1.0, 0.25]
    assert state.updated_at == 10.0
    assert state.active_segments(50.0) == 2


def test_an_expired_observation_fades_linearly_back_to_free_flow() -> None:
    state = _state(fade=100.0)
    _apply(state, [0], [0.5], valid_until=100.0)
    assert state.effective(125.0)[0] == pytest.approx(0.625)
    assert state.effective(150.0)[0] == pytest.approx(0.75)
    assert state.effective(175.0)[0] == pytest.approx(0.875)
    assert state.effective(200.0)[0] == 1.0
    assert state.effective(10_000.0)[0] == 1.0
    assert state.active_segments(200.0) == 0


def test_without_a_fade_an_observation_ends_at_once() -> None:
    state = _state(fade=0.0)
    _apply(state, [0], [0.5], valid_until=100.0)
    assert state.effective(100.0)[0] == 0.5
    assert state.effective(100.001)[0] == 1.0


@pytest.mark.parametrize(("factor", "kept"), [
    (0.0, MIN_FACTOR), (0.001, MIN_FACTOR), (-3.0, MIN_FACTOR), (0.02, 0.02), (1.0, 1.0),
    (1.5, 1.5), (2.0, MAX_FACTOR), (100.0, MAX_FACTOR),
])
def test_factors_are_clipped_to_two_percent_and_one_and_a_half(factor: float,
                                                               kept: float) -> None:
    state = _state()
    _apply(state, [2], [factor], valid_until=100.0)
    assert state.effective(0.0)[2] == pytest.approx(kept)
    assert (MIN_FACTOR, MAX_FACTOR) == (0.02, 1.5)


def test_segment_durations_are_free_flow_over_the_factor_rounded_up() -> None:
    state = _state()
    _apply(state, [0, 1, 2, 3], [0.5, 1.5, 0.3, 0.001], valid_until=100.0)
    ms = state.seg_ms(50.0)
    assert ms.dtype == np.uint32
    assert ms.tolist() == [2_000, 1_334, 10_000, 200_000]
    assert np.array_equal(ms, np.ceil(FREE / state.effective(50.0)).astype(np.uint32))


def test_segment_durations_while_fading() -> None:
    state = _state(fade=100.0)
    _apply(state, [1], [0.5], valid_until=100.0)
    assert state.seg_ms(150.0)[1] == int(np.ceil(2_000 / 0.75))
    assert np.array_equal(state.seg_ms(300.0), FREE)


def test_segment_durations_stay_below_the_kernel_limit() -> None:
    state = TrafficState(np.array([MAX_MS, 1], dtype=np.uint32), 10.0)
    _apply(state, [0, 1], [0.02, 0.02], valid_until=100.0)
    ms = state.seg_ms(0.0)
    assert ms.tolist() == [int(MAX_MS), 50]


def test_every_apply_bumps_the_version_and_an_empty_one_does_not() -> None:
    state = _state()
    _apply(state, [0], [0.5], valid_until=10.0)
    _apply(state, [0, 0, 1], [0.5, 0.6, 0.7], valid_until=10.0)
    assert state.version == 2
    assert _apply(state, [], [], valid_until=10.0, now=99.0) == 0
    assert state.version == 2 and state.updated_at == 0.0


def test_apply_counts_distinct_segments() -> None:
    assert _apply(_state(), [0, 0, 1], [0.5, 0.6, 0.7], valid_until=10.0) == 2


def test_a_newer_observation_replaces_an_older_one() -> None:
    state = _state()
    _apply(state, [0], [0.5], valid_until=100.0)
    _apply(state, [0], [0.8], valid_until=300.0)
    assert state.effective(200.0)[0] == pytest.approx(0.8)


def test_nothing_changes_without_observations() -> None:
    assert not _state().changed_between(0.0, 1_000.0)


def test_nothing_changes_while_an_observation_is_still_valid() -> None:
    state = _state(fade=50.0)
    _apply(state, [0], [0.5], valid_until=100.0)
    assert not state.changed_between(0.0, 90.0)
    assert not state.changed_between(90.0, 100.0)


def test_a_window_ending_or_fading_in_the_interval_is_a_change() -> None:
    state = _state(fade=50.0)
    _apply(state, [0], [0.5], valid_until=100.0)
    assert state.changed_between(90.0, 110.0)
    assert state.changed_between(120.0, 130.0)
    assert state.changed_between(140.0, 200.0)


def test_nothing_changes_once_an_observation_has_faded_out() -> None:
    state = _state(fade=50.0)
    _apply(state, [0], [0.5], valid_until=100.0)
    assert not state.changed_between(150.0, 400.0)
    assert not state.changed_between(160.0, 170.0)


def test_a_faded_out_segment_is_free_flowing_again_after_seg_ms() -> None:
    state = _state(fade=50.0)
    _apply(state, [0], [0.5], valid_until=100.0)
    state.seg_ms(500.0)
    assert not state.changed_between(0.0, 1_000.0)
    assert state.effective(0.0)[0] == 1.0
