"""Navigation simulator (``geoplex maps simulate``): drivers on real routes, a congestion.

    config = NavConfig(maps="127.0.0.1:50055", routing="127.0.0.1:50054",
                       auth_secret=auth_secret(), drivers=40, seed=1)
    result = asyncio.run(simulate(config, classes=road_classes(network_file)))
    print(result.summary.eta_rise_s, result.summary.detour_s, result.summary.recovery_s)

What it models, on the Gothenburg region of routing (car):

- **Scenario** (:mod:`.scenario`): an arterial (a 0.7..3 km stretch of one trunk, primary
  or secondary road) on the best route of a trip A -> B, chosen by seed, such that a
  detour exists that the router must prefer while the arterial is slowed; a probe
  route drives the arterial end to end.
- **Drivers** (:mod:`.drive`): N cars on routes from ComputeRoute, driven in real time at
  each road segment's free-flow speed, a fix every second with a few metres of GPS error
  (drifting, as a receiver's does), a
  batch every few seconds through ``ReportLocationBatch`` (token: the driver). A share
  drives through the arterial; the others go between random points. During the
  congestion, cars on the arterial drive at ``fraction`` of their speed there.
- **Time line** (:mod:`.results`): warm-up, congestion from ``congestion_start_s`` for
  ``congestion_s``, recovery. Every tick the simulator asks routing for the probe's ETA
  (traffic-aware) and whether the trip's best route still drives the arterial.
- **Results**: every tick, the summary (seconds from the congestion's start to the ETA
  rising and to the detour, from its end to normal again), counters, and how well
  MatchTrace put a few drivers' fixes on the roads they know they drove.

Nothing the simulator logs or writes holds a driver's position.
"""

from .drive import (Driver, SpeedProfile, Trip, advance_along, profile_from_segments,
                    profile_from_steps)
from .geometry import GpsNoise, Line, coverage, stretches_along
from .results import (Accuracy, Counters, Phase, Summary, Tick, Timeline, summarize,
                      summary_rows, table_ticks, tick_row)
from .run import NavConfig, NavResult, NavSim, simulate
from .scenario import NoScenario, Scenario, StepInfo, choose_scenario, named_stretches, road_classes

__all__ = [
    "Accuracy",
    "Counters",
    "Driver",
    "GpsNoise",
    "Line",
    "NavConfig",
    "NavResult",
    "NavSim",
    "NoScenario",
    "Phase",
    "Scenario",
    "SpeedProfile",
    "StepInfo",
    "Summary",
    "Tick",
    "Timeline",
    "Trip",
    "advance_along",
    "choose_scenario",
    "coverage",
    "named_stretches",
    "profile_from_segments",
    "profile_from_steps",
    "road_classes",
    "simulate",
    "stretches_along",
    "summarize",
    "summary_rows",
    "table_ticks",
    "tick_row",
]
