"""bench.maps_congestion's pure parts: the time-line arithmetic beside the simulator's
summary, the throughput arithmetic, the drive model along a route, scoring matched traces
against the ground truth, the profiles' settings, and the report from a small fake result.
No servers, nothing timed."""

from __future__ import annotations

import argparse
import copy
import math
import random
from collections.abc import Sequence
from typing import Any

import polyline as polyline_codec
import pytest

from bench.maps_congestion import (
    SHORT,
    Drive,
    MatchScore,
    Trace,
    back_for_good,
    cut_traces,
    drive_route,
    noisy_parts,
    parser,
    profiles,
    report,
    throughput,
    timing,
    within,
)
from geoplex.routing.v1 import routing_pb2 as rpb
from geoplex.tools.navsim import Tick, Timeline
from geoplex.tools.navsim.geometry import distance_m

START, LENGTH = 30.0, 120.0
TIMELINE = Timeline(START, LENGTH, 400.0)


def tick(t: float, ratio: float, coverage: float = 1.0) -> Tick:
    return Tick(t=t, phase=TIMELINE.phase(t).value, probe_eta_s=100.0 * ratio,
                probe_free_s=100.0, trip_eta_s=300.0, trip_coverage=coverage, fixes=0,
                batches=0, rejected=0, failed=0, on_arterial=0, metric_version=1)


def test_back_for_good_is_the_first_tick_after_which_all_are_ok() -> None:
    ticks = [tick(t, r) for t, r in ((100, 2.0), (150, 1.0), (160, 1.5), (170, 1.01),
                                     (180, 1.0))]
    assert back_for_good(ticks, 150.0, lambda k: k.probe_ratio <= 1.05) == 20.0


def test_back_for_good_is_none_when_the_last_tick_is_not_ok() -> None:
    ticks = [tick(160, 1.0), tick(170, 1.5)]
    assert back_for_good(ticks, 150.0, lambda k: k.probe_ratio <= 1.05) is None


def test_timing_splits_the_eta_from_the_route_coming_back() -> None:
    ticks = [tick(10, 1.0), tick(60, 2.5, 0.0), tick(155, 1.02, 0.0), tick(165, 1.0, 0.95),
             tick(175, 1.0, 1.0)]
    got = timing(ticks, TIMELINE, normal=0.05)
    assert got["eta_normal_s"] == 5.0    # 155 - 150: the ETA was back first
    assert got["route_back_s"] == 15.0   # the route followed at 165
    assert got["after_end_s"] == 25.0
    assert got["ticks"] == {"warm-up": 1, "congestion": 1, "recovery": 3}


def test_within_keeps_not_seen_apart_from_too_late() -> None:
    assert within(None, 60.0) is None
    assert within(59.0, 60.0) is True
    assert within(61.0, 60.0) is False


def test_throughput_gives_fixes_per_s_and_per_routing_core() -> None:
    cell = {"calls_per_s": 100.0, "cpu": {"server_cpu_pct": 50.0}}
    got = throughput(cell, 6)
    assert got["fixes_per_s"] == 600.0
    assert got["fixes_per_s_per_core"] == pytest.approx(1200.0)  # half a core for 600/s
    assert got["routing_cpu_s_per_mfix"] == pytest.approx(0.5 * 1e6 / 600.0)


def test_throughput_without_cpu_is_nan_not_an_error() -> None:
    got = throughput({"calls_per_s": 10.0, "cpu": {}}, 60)
    assert got["fixes_per_s"] == 600.0
    assert math.isnan(got["fixes_per_s_per_core"])


# -- the drive model and scoring --------------------------------------------------------

EAST = [(57.70, 11.90), (57.70, 11.91), (57.70, 11.92)]  # ~1.2 km due east


def fake_route() -> rpb.Route:
    route = rpb.Route(polyline=polyline_codec.encode(EAST, 5), distance_meters=1190.0)
    route.duration.FromSeconds(119)
    for name in ("First Street", "Second Street"):
        step = route.steps.add(name=name, distance_meters=595.0)
        step.duration.FromSeconds(60)
    route.segment_ids.extend([11, 12])
    return route


def test_drive_route_takes_a_fix_a_second_to_the_end_with_bounded_noise() -> None:
    fixes = drive_route(fake_route(), random.Random(1), 1000.0)
    assert 115 <= len(fixes) <= 125          # ~1,190 m at ~10 m/s
    assert [f.time for f in fixes[:3]] == [1000.0, 1001.0, 1002.0]
    assert fixes[-1].along_m == pytest.approx(fixes[-1].line.length_m)
    assert {f.label for f in fixes} == {"First Street", "Second Street"}
    assert all(distance_m(f.noisy, f.true) <= 9.0 * math.sqrt(2) + 0.1 for f in fixes)
    assert not any(f.slowed for f in fixes)


def _answer(trace: Trace, where: Sequence[tuple[float, float] | None], segment: int
            ) -> rpb.MatchTraceResponse:
    out = rpb.MatchTraceResponse(chains=1)
    for f, at in zip(trace.fixes, where):
        p = out.points.add(matched=at is not None, segment_id=segment)
        p.location.latitude, p.location.longitude = at if at is not None else f.noisy
    return out


def test_match_score_counts_on_the_road_and_on_the_edge_apart() -> None:
    drive = Drive(drive_route(fake_route(), random.Random(2), 0.0), frozenset({11, 12}), 1190.0)
    trace = cut_traces([drive], 4)[10]
    assert len(trace.fixes) == 4
    truth = [f.true for f in trace.fixes]
    far = (truth[3][0] + 0.001, truth[3][1])                 # ~110 m north: another road
    score = MatchScore()
    score.add(trace, _answer(trace, [truth[0], truth[1], None, far], 11))
    score.add(trace, _answer(trace, truth, 99))              # right place, wrong segment
    got = score.as_dict()
    assert (got["traces"], got["fixes"], got["matched"]) == (2, 8, 7)
    assert got["on_road"] == 2 + 4
    assert got["on_edge"] == 2
    assert got["on_edge_share"] == pytest.approx(2 / 8)


def test_cut_traces_drops_a_short_tail() -> None:
    drive = Drive(drive_route(fake_route(), random.Random(3), 0.0), frozenset(), 1190.0)
    traces = cut_traces([drive], 60)
    assert len(traces) == len(drive.fixes) // 60
    assert all(len(t.fixes) == 60 for t in traces)
    assert len(traces[0].request().points) == 60


# -- profiles ---------------------------------------------------------------------------

def test_profiles_pass_the_servers_defaults_and_the_tests_short_settings() -> None:
    args = parser().parse_args([])
    defaults, short = profiles(args)
    assert defaults.maps_env() == {"GEOPLEX_MAPS_TRAFFIC_INTERVAL_SECONDS": "5",
                                   "GEOPLEX_MAPS_TRAFFIC_WINDOW_SECONDS": "300",
                                   "GEOPLEX_MAPS_TRAFFIC_VALID_SECONDS": "120"}
    assert defaults.routing_env()["GEOPLEX_ROUTING_TRAFFIC_FADE_SECONDS"] == "600"
    assert short.traffic == SHORT
    assert short.routing_env() == {"GEOPLEX_ROUTING_TRAFFIC_FADE_SECONDS": "5",
                                   "GEOPLEX_ROUTING_TRAFFIC_REFRESH_SECONDS": "1"}
    assert defaults.after_s == 240.0


# -- the report -------------------------------------------------------------------------

def _run(profile: str, seed: int, recovery: float | None) -> dict[str, Any]:
    return {
        "profile": profile, "seed": seed, "ok": True,
        "scenario": {"road": "E45", "arterial_m": 1800.0, "probe_free_s": 95.0},
        "summary": {"eta_rise_s": 12.0, "detour_s": 14.0, "recovery_s": recovery,
                    "peak_ratio": 3.1},
        "eta_rise_within_claim": True, "eta_normal_s": recovery, "route_back_s": 8.0,
        "after_end_s": 240.0 if recovery is None else recovery + 10.0,
        "counters": {"fixes": 12000, "accepted": 11990, "rejected": 10, "batches": 2400,
                     "failed": 0},
        "accuracy": {"share": 0.97, "fixes": 400, "slowed_share": 0.9, "slowed_fixes": 50,
                     "all_share": 0.96},
        "cpu": {"client_cpu_pct": 40.0, "server_cpu_pct": 90.0, "other_cpu_pct": 5.0},
    }


def fake_result() -> dict[str, Any]:
    args = parser().parse_args([])
    return {
        "machine": {"cpu_model": "Test CPU", "nproc": 2, "python": "3.11.7",
                    "packages": {"grpcio": "1.0"}, "date": "2026-01-01T00:00:00+00:00",
                    "git_commit": "abc1234"},
        "settings": {k: v for k, v in vars(args).items()},
        "profiles": [p.as_dict() for p in profiles(args)],
        "quiet": [{"label": "congestion defaults seed 1", "busy_pct": 10.0, "waited_s": 0.5,
                   "timed_out": False}],
        "runs": [_run("defaults", 1, None), _run("short", 1, 31.0),
                 {"profile": "defaults", "seed": 2, "ok": False,
                  "skipped": "over the time budget"}],
        "matching": {
            "drives": {"count": 12, "fixes": 5000, "distance_m": 42000.0},
            "cells": [{"trace_fixes": 6, "concurrency": 1, "calls_per_s": 400.0,
                       "fixes_per_s": 2400.0, "p50_ms": 2.3, "p99_ms": 7.7,
                       "routing_cpu_pct": 80.0, "routing_cpu_s_per_mfix": 333.0,
                       "fixes_per_s_per_core": 3000.0, "cpu": {"other_cpu_pct": 3.0},
                       "errors": 0}],
            "accuracy": [{"trace_fixes": 6, "traces": 800, "fixes": 4800, "matched_share": 1.0,
                          "on_road_share": 0.99, "on_edge_share": 0.975, "chains": 800},
                         {"trace_fixes": 60, "traces": 80, "fixes": 4800, "matched_share": 1.0,
                          "on_road_share": 0.99, "on_edge_share": 0.9, "chains": 80,
                          "crawling": 900, "crawling_on_road_share": 0.95,
                          "crawling_on_edge_share": 0.8}]},
        "elapsed_s": 660.0,
    }


def test_report_has_the_congestion_and_matching_tables() -> None:
    text = report(fake_result())
    assert "| defaults | 1 | E45 (1,800 m, 95 s) | 12 s | yes | 14 s | not within the run |" \
        in text
    assert "| short | 1 |" in text and "| 31 s |" in text
    assert "- defaults seed 2: over the time budget" in text
    assert "| 6 | 1 | 400 | 2,400 | 2.3 | 7.7 | 80 | 333 | 3,000 | 3 | 0 |" in text
    assert "| 6 | 800 | 4,800 | 100.0% | 99.0% | 97.5% | yes | - | 800 |" in text
    assert "every 5 s" in text and "over 600 s" in text      # the defaults explained
    assert "every 1 s" in text and "over 5 s" in text        # ...and the short settings
    assert "| 60 | 80 | 4,800 | 100.0% | 99.0% | 90.0% | **no** | 95.0% / 80.0% of 900 | 80 |" \
        in text
    assert "Test CPU, 2 cores" in text and "11.0 min" in text
    assert "Noise" not in text


def test_report_notes_the_noise_when_the_quiet_wait_timed_out() -> None:
    result = fake_result()
    result["quiet"].append({"label": "MatchTrace 6 fixes c=4", "busy_pct": 140.0,
                            "waited_s": 10.0, "timed_out": True})
    result["runs"][1]["cpu"]["other_cpu_pct"] = 60.0
    assert noisy_parts(result) == ["MatchTrace 6 fixes c=4 (140% busy after 10 s)",
                                   "congestion short seed 1: other work 60% of a core during "
                                   "the run"]
    assert "Noise: the machine was not idle" in report(result)


def test_report_without_matching_or_runs_still_renders() -> None:
    result = copy.deepcopy(fake_result())
    result["runs"] = []
    result["matching"] = {"error": "ProcessError: routing exited"}
    text = report(result)
    assert "Map-matching throughput not measured: ProcessError: routing exited" in text


def test_parser_defaults_match_the_brief() -> None:
    args: argparse.Namespace = parser().parse_args([])
    assert (args.drivers, args.seeds, args.congestion_start, args.congestion) == \
        (40, [1, 2], 30.0, 120.0)
    assert args.concurrency == [1, 4] and args.trace_fixes == [6, 60]


def test_drive_route_crawls_the_middle_stretch_at_the_jam_fraction() -> None:
    free = drive_route(fake_route(), random.Random(4), 0.0)
    jam = drive_route(fake_route(), random.Random(4), 0.0, crawl_m=300.0)
    crawling = [f for f in jam if f.slowed]
    assert not any(f.slowed for f in free)
    # 300 m at a quarter of ~10 m/s: ~120 fixes, the rest as fast as before
    assert 110 <= len(crawling) <= 130
    assert len(jam) == pytest.approx(len(free) + len(crawling) * 0.75, abs=5)
    assert all(440.0 <= f.along_m <= 750.0 for f in crawling)


def test_match_score_counts_the_crawling_fixes_apart() -> None:
    drive = Drive(drive_route(fake_route(), random.Random(5), 0.0, crawl_m=300.0),
                  frozenset({11}), 1190.0)
    score = MatchScore()
    for trace in cut_traces([drive], 6):
        score.add(trace, _answer(trace, [f.true for f in trace.fixes], 11))
    got = score.as_dict()
    assert got["crawling"] == sum(f.slowed for t in cut_traces([drive], 6) for f in t.fixes)
    assert got["crawling_on_edge_share"] == 1.0 and got["on_edge_share"] == 1.0
