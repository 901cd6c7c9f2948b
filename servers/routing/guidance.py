"""Turn-by-turn steps from a path's geometry, the way a person reads them.

A new step begins where the street changes (its name or ref: a turn, or a new
name when the road carries straight on), where the route
enters a roundabout (one step for the roundabout, with the exit to take), and
where the route turns sharply at a junction while keeping its street. Each
step's maneuver says what to do where it begins: its type, a modifier from the
turn angle (straight under 20 degrees, slight under 60, left/right under 120,
sharp under 170, else a U-turn), the compass bearings before and after, and for
a roundabout the exit number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import U32, RoadGraph, turn_angles
from .planner import Path

DEPART, TURN, NEW_NAME, CONTINUE, ROUNDABOUT, ARRIVE = (
    "depart", "turn", "new name", "continue", "roundabout", "arrive")


@dataclass(frozen=True, slots=True)
class Maneuver:
    type: str
    modifier: str          # "" where none applies (depart, arrive)
    bearing_before: int    # degrees 0..359 (0 for depart)
    bearing_after: int     # degrees 0..359 (0 for arrive)
    lat: float
    lon: float
    exit: int = 0          # roundabouts: which exit to take (1 = the first)


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    ref: str
    distance_m: float
    duration_s: float
    maneuver: Maneuver


def modifier_for(angle: float) -> str:
    a = abs(angle)
    if a < 20:
        return "straight"
    if a >= 170:
        return "uturn"
    side = "left" if angle < 0 else "right"
    if a < 60:
        return f"slight {side}"
    if a < 120:
        return side
    return f"sharp {side}"


def steps_for(graph: RoadGraph, seg_ms: U32, path: Path, start: tuple[float, float],
              end: tuple[float, float]) -> list[Step]:
    segs = path.segments
    n = int(segs.size)
    lat, lon = graph.node_lat, graph.node_lon
    tails = graph.seg_tail[segs]
    seg_bearing = graph.seg_bearing[segs]
    share = np.ones(n)
    if n == 1:
        share[0] = path.end - path.start
    else:
        share[0] = 1 - path.start
        share[-1] = path.end
    lengths = graph.seg_length_m[segs] * share
    durations = seg_ms[segs].astype(np.float64) * share
    if n > 1:
        durations[1:] += graph.arc_turn_ms[path.arcs]
    durations /= 1000.0
    ways = graph.seg_way[segs]
    rounds = graph.seg_roundabout[segs]
    labels = graph.way_label[ways]

    # candidates for a new step, found for the whole path at once; then one pass over them
    angle = np.zeros(n)
    angle[1:] = turn_angles(seg_bearing[:-1], seg_bearing[1:])
    enters = np.zeros(n, dtype=bool)
    enters[1:] = rounds[1:] & ~rounds[:-1]
    renamed = np.zeros(n, dtype=bool)
    renamed[1:] = labels[1:] != labels[:-1]
    straight = np.abs(angle) < 20
    # straight on into an unnamed link is not worth a step
    renamed &= ~rounds & ~(straight & (labels == 0))
    bends = ~renamed & ~rounds & graph.intersection[tails] & (np.abs(angle) >= 45)
    bends[0] = False
    candidates = np.flatnonzero(enters | renamed | bends).tolist()

    starts: list[int] = [0]
    maneuvers: list[Maneuver] = [Maneuver(DEPART, "", 0, round(seg_bearing[0]) % 360,
                                          start[0], start[1])]
    skip_until = 0
    for i in candidates:
        if i < skip_until:
            continue
        node = int(tails[i])
        here = (float(lat[node]), float(lon[node]))
        before, after = round(seg_bearing[i - 1]) % 360, round(seg_bearing[i]) % 360
        modifier = modifier_for(float(angle[i]))
        starts.append(i)
        if enters[i]:
            j = i
            while j < n and rounds[j]:
                j += 1
            if j < n:  # the way out against the way in: "take the third exit, left"
                overall = turn_angles(seg_bearing[i - 1:i], seg_bearing[j:j + 1])
                modifier = modifier_for(float(overall[0]))
            maneuvers.append(Maneuver(ROUNDABOUT, modifier, before, after, *here,
                                      exit=_exit_number(graph, segs, i, j)))
            skip_until = j + 1  # the road after the roundabout belongs to the roundabout's step
        elif renamed[i]:
            kind = NEW_NAME if straight[i] else TURN
            maneuvers.append(Maneuver(kind, modifier, before, after, *here))
        else:
            maneuvers.append(Maneuver(CONTINUE, modifier, before, after, *here))

    steps: list[Step] = []
    bounds = [*starts, n]
    step_lengths = np.add.reduceat(lengths, starts).tolist()
    step_durations = np.add.reduceat(durations, starts).tolist()
    for k, first in enumerate(starts):
        # a roundabout step is named after the road it leaves by
        label_seg = bounds[k + 1] - 1 if maneuvers[k].type == ROUNDABOUT else first
        name, ref = _label(graph, int(ways[label_seg]))
        steps.append(Step(name, ref, step_lengths[k], step_durations[k], maneuvers[k]))
    last_bearing = round(seg_bearing[-1]) % 360
    name, ref = _label(graph, int(ways[-1]))
    steps.append(Step(name, ref, 0.0, 0.0,
                      Maneuver(ARRIVE, "", last_bearing, 0, end[0], end[1])))
    return steps


def _label(graph: RoadGraph, way: int) -> tuple[str, str]:
    return graph.way_names[way], graph.way_refs[way]


def _exit_number(graph: RoadGraph, segs: np.ndarray, first: int, stop: int) -> int:
    """Exits passed on the roundabout from segs[first] to where the route leaves it,
    counting the one it takes."""
    count = 0
    for k in range(first, stop):
        node_seg = int(segs[k])
        lo, hi = int(graph.arc_first[node_seg]), int(graph.arc_first[node_seg + 1])
        if any(not graph.seg_roundabout[int(graph.arc_head[a])] for a in range(lo, hi)):
            count += 1
    return max(count, 1)
