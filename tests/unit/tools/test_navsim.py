"""The navigation simulator's logic without servers: driving along a polyline at the
route's speed, GPS noise, batching, the time line and the summary of a run."""

from __future__ import annotations

import math
import random

import pytest

from geoplex.tools.navsim import (Driver, Line, Phase, SpeedProfile, StepInfo, Tick, Timeline,
                                  Trip, GpsNoise, advance_along, coverage, named_stretches,
                                  profile_from_segments, profile_from_steps, stretches_along,
                                  summarize, table_ticks)
from geoplex.tools.navsim.geometry import distance_m
from geoplex.tools.navsim.run import on_route

ORIGIN = (57.7000, 11.9500)
M_PER_DEG_LAT = 111_195.0


def _east(metres: float, north: float = 0.0) -> tuple[float, float]:
    """A point ``metres`` east (and ``north``) of ORIGIN."""
    return (ORIGIN[0] + north / M_PER_DEG_LAT,
            ORIGIN[1] + metres / (M_PER_DEG_LAT * math.cos(math.radians(ORIGIN[0]))))


def _straight(length_m: float, speeds: list[tuple[float, float]]) -> Trip:
    """A straight road east, driven at (piece length, m/s) pieces."""
    line = Line([_east(0.0), _east(length_m / 2), _east(length_m)])
    steps = [StepInfo("road", d, d / v, "Road") for d, v in speeds]
    return Trip(line, profile_from_steps(steps, line.length_m), [], length_m / 10)


# -- driving along a polyline ----------------------------------------------------------

def test_line_measures_and_interpolates_in_metres() -> None:
    line = Line([_east(0.0), _east(300.0), _east(300.0, north=400.0)])
    assert line.length_m == pytest.approx(700.0, rel=1e-3)
    assert distance_m(line.at(150.0), _east(150.0)) < 0.5
    assert distance_m(line.at(500.0), _east(300.0, north=200.0)) < 0.5
    assert line.at(-5.0) == pytest.approx(line.points[0])   # clamped to the ends
    assert distance_m(line.at(1e6), line.points[-1]) < 0.01


def test_a_car_covers_speed_times_seconds_and_changes_speed_at_step_ends() -> None:
    # 100 m at 10 m/s, then 300 m at 20 m/s
    trip = _straight(400.0, [(100.0, 10.0), (300.0, 20.0)])
    at, left = advance_along(0.0, 5.0, trip.profile.speed_at, trip.breaks(), 400.0)
    assert at == pytest.approx(50.0, rel=1e-3) and left == 0.0
    # 5 s more: 50 m to the step end (5 s) ... exactly there
    at, _ = advance_along(at, 5.0, trip.profile.speed_at, trip.breaks(), 400.0)
    assert at == pytest.approx(100.0, rel=1e-3)
    # 2 s into the faster step
    at, _ = advance_along(95.0, 2.5, trip.profile.speed_at, trip.breaks(), 400.0)
    assert at == pytest.approx(100.0 + 2.0 * 20.0, rel=1e-3)
    # past the end: it stops there with the rest of the time left over
    at, left = advance_along(380.0, 10.0, trip.profile.speed_at, trip.breaks(), 400.0)
    assert at == pytest.approx(400.0) and left == pytest.approx(9.0, rel=1e-3)


def test_a_driver_crawls_on_the_arterial_only_while_congested() -> None:
    trip = _straight(1000.0, [(1000.0, 10.0)])
    trip.slowed = [(200.0, 600.0)]
    free = Driver(0, True, random.Random(1))
    free.start("u", trip, 300.0, 0.0)
    free.advance(10.0, congested=False, fraction=0.25)
    assert free.along_m == pytest.approx(400.0, rel=1e-3)
    jammed = Driver(1, True, random.Random(1))
    jammed.start("v", trip, 300.0, 0.0)
    jammed.advance(10.0, congested=True, fraction=0.25)
    assert jammed.along_m == pytest.approx(325.0, rel=1e-3)
    assert jammed.on_arterial
    # leaving the jam: 575 -> 600 at 2.5 m/s takes 10 s, then 10 m/s for the other 10
    jammed.along_m = 575.0
    jammed.advance(20.0, congested=True, fraction=0.25)
    assert jammed.along_m == pytest.approx(700.0, rel=1e-3)
    assert not jammed.on_arterial


def test_a_driver_arrives_at_the_end_of_its_route() -> None:
    trip = _straight(100.0, [(100.0, 10.0)])
    d = Driver(0, False, random.Random(1))
    d.start("u", trip, 0.0, 0.0)
    assert not d.advance(9.0, False, 0.25)
    assert d.advance(2.0, False, 0.25)
    assert d.along_m == pytest.approx(trip.line.length_m)


def test_speed_profile_scales_steps_onto_the_polyline() -> None:
    steps = [StepInfo("A", 100.0, 10.0, "A street"), StepInfo("", 0.0, 0.0),
             StepInfo("B", 100.0, 5.0, "B street")]
    profile = profile_from_steps(steps, 220.0)   # the polyline is 10 % longer
    assert profile.ends == pytest.approx((110.0, 220.0))
    assert profile.speed_at(50.0) == pytest.approx(10.0)
    assert profile.speed_at(111.0) == pytest.approx(20.0)
    assert profile.label_at(150.0) == "B street"
    assert isinstance(profile, SpeedProfile)


def test_each_segment_is_driven_at_its_own_free_flow_speed_not_the_steps_average() -> None:
    # one step of one street, 200 m in 19.2 s: 100 m at 50 km/h, then 100 m at 30 km/h;
    # at the step's average (37.5 km/h) a car would be 25 % slow on the first part and
    # 25 % fast on the second, and live traffic would (rightly) report both
    steps = [StepInfo("A", 200.0, 19.2, "A street"), StepInfo("A", 0.0, 0.0, "A street")]
    profile = profile_from_segments([60.0, 40.0, 100.0], [50.0, 50.0, 30.0], steps, 220.0)
    assert profile.ends == pytest.approx((66.0, 110.0, 220.0))   # scaled onto the line
    assert profile.speed_at(30.0) == pytest.approx(50 / 3.6)
    assert profile.speed_at(100.0) == pytest.approx(50 / 3.6)
    assert profile.speed_at(150.0) == pytest.approx(30 / 3.6)
    assert {profile.label_at(x) for x in (10.0, 100.0, 200.0)} == {"A street"}
    # driven: each piece at its own speed
    line = Line([_east(0.0), _east(220.0)])
    trip = Trip(line, profile, [], 16.0)
    d = Driver(0, False, random.Random(1))
    d.start("u", trip, 0.0, 0.0)
    d.advance(66.0 / (50 / 3.6) + 44.0 / (50 / 3.6) + 2.0, False, 0.25)
    assert d.along_m == pytest.approx(110.0 + 2.0 * 30 / 3.6)


def test_segments_are_labelled_with_the_street_of_their_step() -> None:
    steps = [StepInfo("A", 100.0, 10.0, "A street"), StepInfo("B", 100.0, 5.0, "B street")]
    profile = profile_from_segments([50.0, 50.0, 30.0, 70.0], [36.0, 36.0, 72.0, 72.0],
                                    steps, 200.0)
    assert [profile.label_at(x) for x in (25.0, 75.0, 115.0, 165.0)] == \
        ["A street", "A street", "B street", "B street"]


def test_a_route_without_segments_is_driven_step_by_step() -> None:
    steps = [StepInfo("A", 100.0, 10.0, "A street")]
    assert profile_from_segments([], [], steps, 100.0) == profile_from_steps(steps, 100.0)


# -- GPS noise -------------------------------------------------------------------------

def test_gps_error_is_a_few_metres_never_beyond_its_bound_and_drifts() -> None:
    noise = GpsNoise(random.Random(7), sigma_m=3.0, max_m=9.0, tau_s=10.0)
    errors = [noise.step(1.0) for _ in range(20000)]
    radial = [math.hypot(e, n) for e, n in errors]
    assert max(radial) <= 9.0 + 1e-9
    rms = math.sqrt(sum(r * r for r in radial) / len(radial))
    assert 3.0 < rms < 5.0      # sqrt(2) x sigma for two axes, a little less once capped
    east = [e for e, _ in errors]
    lag1 = sum(a * b for a, b in zip(east, east[1:])) / sum(a * a for a in east)
    assert lag1 == pytest.approx(math.exp(-1.0 / 10.0), abs=0.03)   # a second apart
    white = GpsNoise(random.Random(7), sigma_m=3.0, max_m=9.0, tau_s=0.0)
    east = [white.step(1.0)[0] for _ in range(20000)]
    assert abs(sum(a * b for a, b in zip(east, east[1:])) / sum(a * a for a in east)) < 0.03
    moved = GpsNoise(random.Random(3), 3.0, 9.0).apply(ORIGIN, 1.0)
    assert distance_m(ORIGIN, moved) <= 9.0 + 1e-3
    assert moved == GpsNoise(random.Random(3), 3.0, 9.0).apply(ORIGIN, 1.0)   # seeded


# -- batching --------------------------------------------------------------------------

def test_fixes_are_batched_every_batch_period_under_one_id_each() -> None:
    trip = _straight(2000.0, [(2000.0, 10.0)])
    d = Driver(0, False, random.Random(2), batch_s=5.0)
    d.start("car-1", trip, 0.0, now=1000.0)
    assert 1000.0 <= d.next_batch_at < 1005.0     # staggered over the first period
    batches = []
    for k in range(1, 31):
        now = 1000.0 + k
        d.advance(1.0, False, 0.25)
        d.take_fix(now)
        due = d.due_batch(now)
        if due is not None:
            batches.append(due)
    assert len(batches) == 6
    assert sum(len(fixes) for _, fixes in batches) + len(d.pending) == 30
    assert all(len(fixes) == 5 for _, fixes in batches[1:])
    assert len({batch_id for batch_id, _ in batches}) == 6
    assert all(batch_id.startswith("car-1-") for batch_id, _ in batches)
    times = [f.time for _, fixes in batches for f in fixes]
    assert times == sorted(times) and len(set(times)) == len(times)
    # the end of a trip sends what is left at once, due or not
    d.take_fix(1030.5)
    left = len(d.pending)
    final = d.due_batch(1030.5, final=True)
    assert final is not None and len(final[1]) == left and not d.pending
    assert d.due_batch(1030.6, final=True) is None     # nothing held: nothing to send


def test_a_driver_records_where_it_really_was_for_each_fix() -> None:
    trip = _straight(500.0, [(500.0, 10.0)])
    d = Driver(0, False, random.Random(5))
    d.start("u", trip, 0.0, 0.0)
    for k in range(10):
        d.advance(1.0, False, 0.25)
        d.take_fix(float(k))
    truth = list(d.recent)
    assert len(truth) == 10
    assert all(distance_m(t.true, t.noisy) <= 9.0 + 1e-3 for t in truth)
    assert all(on_route(t.true, trip.line, t.along_m, 1.0) for t in truth)
    assert not on_route(_east(50.0, north=30.0), trip.line, 50.0, 5.0)


# -- where a route runs along the arterial ---------------------------------------------

def test_stretches_along_find_the_shared_part_in_the_same_direction_only() -> None:
    arterial = Line([_east(200.0), _east(800.0)])
    route = Line([_east(0.0), _east(1000.0), _east(1000.0, north=500.0)])
    (start, end), = stretches_along(route, arterial, tol_m=12.0, every_m=5.0)
    # from where the route comes within 12 m of it, to 5 m steps
    assert start == pytest.approx(200.0, abs=17.0) and end == pytest.approx(800.0, abs=17.0)
    assert coverage(route, arterial) == pytest.approx(1.0)
    backwards = Line([_east(1000.0), _east(0.0)])
    assert stretches_along(backwards, arterial) == []
    assert coverage(backwards, arterial) == 0.0
    beside = Line([_east(0.0, north=40.0), _east(1000.0, north=40.0)])   # a parallel street
    assert coverage(beside, arterial) == 0.0
    half = Line([_east(0.0), _east(500.0), _east(500.0, north=600.0)])
    assert coverage(half, arterial) == pytest.approx(0.5, abs=0.05)


def test_named_stretches_join_consecutive_steps_of_one_road_longest_first() -> None:
    steps = [StepInfo("Avenyn", 200.0, 20.0), StepInfo("E 45", 800.0, 50.0),
             StepInfo("E 45", 700.0, 45.0), StepInfo("", 100.0, 10.0),
             StepInfo("Avenyn", 300.0, 30.0)]
    found = named_stretches(steps, 2100.0)
    assert [(s.label, s.start_m, s.end_m, s.seconds) for s in found] == [
        ("E 45", 200.0, 1700.0, 95.0), ("Avenyn", 1800.0, 2100.0, 30.0),
        ("Avenyn", 0.0, 200.0, 20.0)]


# -- the time line and the summary -----------------------------------------------------

def test_timeline_phases() -> None:
    t = Timeline(congestion_start_s=30.0, congestion_s=40.0, duration_s=120.0)
    assert [t.phase(x) for x in (0.0, 29.9, 30.0, 69.9, 70.0, 200.0)] == [
        Phase.WARMUP, Phase.WARMUP, Phase.CONGESTION, Phase.CONGESTION, Phase.RECOVERY,
        Phase.RECOVERY]
    assert t.congested(45.0) and not t.congested(75.0)
    with pytest.raises(ValueError, match="ends before"):
        Timeline(30.0, 40.0, 60.0)


def _tick(t: float, ratio: float, coverage_: float, timeline: Timeline) -> Tick:
    return Tick(t=t, phase=timeline.phase(t).value, probe_eta_s=100.0 * ratio,
                probe_free_s=100.0, trip_eta_s=500.0, trip_coverage=coverage_, fixes=0,
                batches=0, rejected=0, failed=0, on_arterial=0, metric_version=0)


def test_summary_times_the_rise_the_detour_and_the_recovery() -> None:
    tl = Timeline(congestion_start_s=10.0, congestion_s=30.0, duration_s=100.0)
    series = {  # t: (probe ETA / free flow, share of the arterial the trip drives)
        0: (1.0, 1.0), 5: (1.01, 1.0), 10: (1.0, 1.0), 15: (1.1, 1.0), 22: (1.5, 1.0),
        27: (2.5, 0.0), 40: (2.5, 0.0), 45: (1.3, 0.0), 50: (1.04, 1.0),
        55: (1.2, 1.0),    # a relapse: not normal for good yet
        63: (1.03, 0.95), 70: (1.0, 1.0), 80: (1.0, 1.0)}
    ticks = [_tick(float(t), r, c, tl) for t, (r, c) in series.items()]
    s = summarize(ticks, tl, rise=0.2, normal=0.05)
    assert s.eta_rise_s == 12.0          # 22 - 10
    assert s.detour_s == 17.0            # 27 - 10
    assert s.recovery_s == 23.0          # 63 - 40: the first tick normal for good
    assert s.peak_ratio == 2.5 and s.detour_seen


def test_summary_says_when_nothing_happened() -> None:
    tl = Timeline(10.0, 20.0, 40.0)
    ticks = [_tick(float(t), 1.0, 1.0, tl) for t in range(0, 40, 2)]
    ticks[-1] = _tick(38.0, 1.0, 0.7, tl)   # not quite the arterial route: not recovered
    s = summarize(ticks, tl)
    assert s.eta_rise_s is None and s.detour_s is None and not s.detour_seen
    assert s.recovery_s is None


def test_the_table_keeps_phase_changes_detours_and_one_row_in_ten_seconds() -> None:
    tl = Timeline(10.0, 10.0, 40.0)
    ticks = [_tick(float(t), 1.0, 0.0 if 14 <= t < 22 else 1.0, tl) for t in range(40)]
    shown = [k.t for k in table_ticks(ticks, every_s=10.0)]
    assert shown == [0.0, 10.0, 14.0, 20.0, 22.0, 32.0, 39.0]


# -- the command -----------------------------------------------------------------------

def test_maps_simulate_takes_its_options() -> None:
    from geoplex.tools.cli import build_parser

    args = build_parser().parse_args([
        "maps", "simulate", "--maps", "m:1", "--routing", "r:2", "--drivers", "12",
        "--congestion-start", "30", "--congestion-seconds", "40", "--fraction", "0.3",
        "--duration", "150", "--seed", "9", "--out", "run.json"])
    assert (args.maps, args.routing, args.drivers, args.congestion_start,
            args.congestion_seconds, args.fraction, args.duration, args.seed, str(args.out)) \
        == ("m:1", "r:2", 12, 30.0, 40.0, 0.3, 150.0, 9, "run.json")
    assert args.func.__name__ == "cmd_simulate"


@pytest.mark.parametrize("argv, message", [
    (["--fraction", "1.5"], "--fraction"),
    (["--drivers", "0"], "--drivers"),
    (["--duration", "100", "--congestion-start", "60", "--congestion-seconds", "60"],
     "ends before"),
])
def test_maps_simulate_refuses_a_run_that_cannot_work_before_calling_anything(
        capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    from geoplex.tools.cli import main

    code = main(["maps", "simulate", "--maps", "127.0.0.1:1", "--routing", "127.0.0.1:1",
                 *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("geoplex: error: ") and message in err
