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

from typing import NamedTuple

import numpy as np

from .graph import F64, I32, U32, Bools, RoadGraph, turn_angles
from .planner import Path, driven

DEPART, TURN, NEW_NAME, CONTINUE, ROUNDABOUT, ARRIVE = (
    "depart", "turn", "new name", "continue", "roundabout", "arrive")


class Maneuver(NamedTuple):  # a tuple: built ~16 times a route, 3x cheaper than a dataclass
    type: str
    modifier: str          # "" where none applies (depart, arrive)
    bearing_before: int    # degrees 0..359 (0 for depart)
    bearing_after: int     # degrees 0..359 (0 for arrive)
    lat: float
    lon: float
    exit: int = 0          # roundabouts: which exit to take (1 = the first)


class Step(NamedTuple):
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


class Guide:
    """What steps need of every turn and segment of a graph, worked out once when the
    graph loads, so a route's steps cost a few array lookups and a loop over the places
    where something happens (~16 on a city route), not over its ~250 segments."""

    def __init__(self, graph: RoadGraph) -> None:
        self.graph = graph
        tail, head = graph.arc_tail, graph.arc_head
        self.arc_angle: F64 = turn_angles(graph.seg_bearing[tail], graph.seg_bearing[head])
        round_in, round_out = graph.seg_roundabout[tail], graph.seg_roundabout[head]
        label_in = graph.way_label[graph.seg_way[tail]]
        label_out = graph.way_label[graph.seg_way[head]]
        straight = np.abs(self.arc_angle) < 20
        self.arc_enters: Bools = round_out & ~round_in
        # a new street name, but not straight on into an unnamed link (not worth a step)
        self.arc_renamed: Bools = ((label_out != label_in) & ~round_out
                                   & ~(straight & (label_out == 0)))
        # keeping its street, a sharp bend at a real junction
        bends = (~self.arc_renamed & ~round_out & graph.intersection[graph.seg_tail[head]]
                 & (np.abs(self.arc_angle) >= 45))
        self.arc_event: Bools = self.arc_enters | self.arc_renamed | bends
        self.bearing: I32 = (np.round(graph.seg_bearing) % 360).astype(np.int32)
        # a roundabout segment from which some turn leaves the roundabout: an exit
        self.seg_exit = np.zeros(graph.seg_count, dtype=bool)
        self.seg_exit[tail[~round_out]] = True

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.arc_angle, self.arc_enters, self.arc_renamed,
                                       self.arc_event, self.bearing, self.seg_exit))

    def steps(self, seg_ms: U32, path: Path, start: tuple[float, float],
              end: tuple[float, float]) -> list[Step]:
        graph = self.graph
        segs, arcs = path.segments, path.arcs
        n = int(segs.size)
        lengths = driven(graph.seg_length_m, path)
        durations = driven(seg_ms, path)
        durations[1:] += graph.arc_turn_ms[arcs]
        bearing = self.bearing
        # segment i follows arc i - 1: where something happens, as segment positions;
        # then every number the loop needs, gathered for all of them at once
        at = np.flatnonzero(self.arc_event[arcs])
        events = (at + 1).tolist()
        ev_arcs = arcs[at]
        ev_in, ev_out = segs[at], segs[at + 1]
        nodes = graph.seg_tail[ev_out]
        ev_lat, ev_lon = graph.node_lat[nodes].tolist(), graph.node_lon[nodes].tolist()
        ev_before, ev_after = bearing[ev_in].tolist(), bearing[ev_out].tolist()
        ev_angle = self.arc_angle[ev_arcs].tolist()
        ev_enters = self.arc_enters[ev_arcs].tolist()
        ev_renamed = self.arc_renamed[ev_arcs].tolist()
        rounds: list[bool] = graph.seg_roundabout[segs].tolist() if any(ev_enters) else []

        starts: list[int] = [0]
        maneuvers: list[Maneuver] = [Maneuver(DEPART, "", 0, int(bearing[segs[0]]),
                                              start[0], start[1])]
        skip_until = 0
        for k, i in enumerate(events):
            if i < skip_until:
                continue
            here = (ev_lat[k], ev_lon[k])
            before, after, angle = ev_before[k], ev_after[k], ev_angle[k]
            starts.append(i)
            if ev_enters[k]:
                j = i
                while j < n and rounds[j]:
                    j += 1
                if j < n:  # the way out against the way in: "take the third exit, left"
                    angle = float(turn_angles(graph.seg_bearing[segs[i - 1]],
                                              graph.seg_bearing[segs[j]]))
                exits = int(self.seg_exit[segs[i:j]].sum())
                maneuvers.append(Maneuver(ROUNDABOUT, modifier_for(angle), before, after,
                                          *here, exit=max(exits, 1)))
                skip_until = j + 1  # the road after the roundabout is the roundabout's step
            elif ev_renamed[k]:
                kind = NEW_NAME if abs(angle) < 20 else TURN
                maneuvers.append(Maneuver(kind, modifier_for(angle), before, after, *here))
            else:
                maneuvers.append(Maneuver(CONTINUE, modifier_for(angle), before, after, *here))

        # a roundabout step is named after the road it leaves by
        bounds = [*starts, n]
        label_at = [bounds[k + 1] - 1 if m.type == ROUNDABOUT else first
                    for k, (first, m) in enumerate(zip(starts, maneuvers))]
        label_at.append(n - 1)
        ways = graph.seg_way[segs[label_at]].tolist()
        names, refs = graph.way_names, graph.way_refs
        step_lengths = np.add.reduceat(lengths, starts).tolist()
        step_durations = (np.add.reduceat(durations, starts) / 1000.0).tolist()
        steps = [Step(names[w], refs[w], step_lengths[k], step_durations[k], maneuvers[k])
                 for k, w in enumerate(ways[:-1])]
        last = ways[-1]
        steps.append(Step(names[last], refs[last], 0.0, 0.0,
                          Maneuver(ARRIVE, "", int(bearing[segs[-1]]), 0, end[0], end[1])))
        return steps


def steps_for(graph: RoadGraph, seg_ms: U32, path: Path, start: tuple[float, float],
              end: tuple[float, float]) -> list[Step]:
    """The steps of one path (a server keeps a :class:`Guide` per graph instead)."""
    return Guide(graph).steps(seg_ms, path, start, end)
