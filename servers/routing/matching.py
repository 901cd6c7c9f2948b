"""Map matching: which roads a trace of GPS fixes drove, and how fast, by a hidden Markov
model (Newson & Krumm, "Hidden Markov map matching through noise and sparseness", 2009;
the model OSRM's and Valhalla's matchers use).

- States: for each fix, every directed segment within ``radius_m`` (each two-way road
  twice), at the point nearest the fix (``SegmentIndex.near``).
- Emission: a Gaussian in the distance from the fix to that point, with sigma the fix's
  accuracy (at least ``sigma_min_m``; Newson & Krumm measured 4.07 m).
- Transition: exponential in | route distance between the two candidates - great-circle
  distance between the two fixes | with scale ``beta_m``: drivers take the short way, so
  the two distances nearly agree on the true pair. Route distances come from one
  many-to-many per step on a metric of segment lengths (decimetres), customized once per
  graph. A transition longer than ``max_speed_mps`` allows, or far longer than the fixes'
  distance, is impossible.
- Viterbi over the fixes; where no transition is possible (a gap, a fix off the map) the
  trace breaks there and a new chain starts.

From the matched chain, each step between two matched fixes is unpacked into its
segments; the time between the fixes is spread over them by length, giving per-segment
traversals (metres, seconds): the speed observations live traffic is made of.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from geoplex.servers._runtime.geo import haversine_m

from .graph import F64, MAX_MS, RoadGraph
from .planner import Weighting, driven, path_from
from .ports import UNREACHABLE, Engine, Metric
from .snapping import SegmentIndex, Snap

NEG = -math.inf


@dataclass(frozen=True, slots=True)
class TracePoint:
    lat: float
    lon: float
    time: float            # seconds since the epoch
    accuracy_m: float = 0.0


@dataclass(frozen=True, slots=True)
class MatchedFix:
    index: int             # into the trace
    segment: int           # -1: not matched (no road near, or a break with no chain)
    fraction: float
    lat: float             # the matched point on the road (the fix itself if unmatched)
    lon: float
    distance_m: float      # from the fix to the matched point


@dataclass(frozen=True, slots=True)
class Traversal:
    segment: int
    metres: float          # driven on it within the trace
    seconds: float

    @property
    def speed_mps(self) -> float:
        return self.metres / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class MatchResult:
    fixes: list[MatchedFix]
    traversals: list[Traversal]
    segments: list[int]    # the matched path, in driving order (chains concatenated)
    chains: int            # pieces the trace broke into
    confidence: float      # 0..1


@dataclass(frozen=True, slots=True)
class MatchParams:
    radius_m: float = 45.0
    max_candidates: int = 8
    sigma_min_m: float = 5.0
    beta_m: float = 5.0
    max_speed_mps: float = 60.0
    # a fix this far behind the one before on the same segment is GPS noise (a car
    # crawling in a jam), not a drive around the block: the step counts as standing still
    backtrack_m: float = 10.0


@dataclass
class _Candidate:
    segment: int
    fraction: float
    snap: Snap
    emission: float


@dataclass
class DistanceMetric:
    """The graph's segment lengths as a metric (decimetres), customized on first use."""

    graph: RoadGraph
    engine: Engine
    _made: Weighting | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def weighting(self) -> Weighting:
        with self._lock:
            if self._made is None:
                dm = np.minimum(np.ceil(self.graph.seg_length_m * 10.0), MAX_MS).astype(np.uint32)
                arcs = dm[self.graph.arc_head]
                self._made = Weighting(self.engine.customize(arcs), self.graph.seg_ms, dm,
                                       arcs, 0)
            return self._made


def match(graph: RoadGraph, index: SegmentIndex, distances: Weighting,
          trace: Sequence[TracePoint], params: MatchParams = MatchParams()) -> MatchResult:
    """The most likely roads under ``trace`` (fixes in time order)."""
    dm = distances.seg_weight.astype(np.float64)          # segment lengths, decimetres
    metric = distances.metric
    candidates = [_candidates(graph, index, p, params) for p in trace]
    # Viterbi: per fix, best log-probability per candidate and where it came from
    score: list[np.ndarray] = []
    back: list[np.ndarray] = []
    chain_start: list[bool] = []
    prev: int | None = None                               # last fix with candidates
    for t, cands in enumerate(candidates):
        emis = np.array([c.emission for c in cands])
        if not cands:
            score.append(emis)
            back.append(np.zeros(0, dtype=np.int64))
            chain_start.append(False)
            continue
        if prev is None:
            score.append(emis)
            back.append(np.full(len(cands), -1))
            chain_start.append(True)
            prev = t
            continue
        trans = _transitions(metric, dm, candidates[prev], cands, trace[prev], trace[t],
                             params)
        total = score[prev][:, None] + trans               # prev x cur
        best_prev = total.argmax(axis=0)
        best = total[best_prev, np.arange(len(cands))]
        if not np.isfinite(best).any():                   # nothing connects: a new chain
            score.append(emis)
            back.append(np.full(len(cands), -1))
            chain_start.append(True)
        else:
            score.append(best + emis)
            back.append(np.where(np.isfinite(best), best_prev, -1))
            chain_start.append(False)
        back[-1] = back[-1].astype(np.int64)
        prev = t
    chosen = _backtrack(candidates, score, back, chain_start)
    return _result(graph, distances, trace, candidates, chosen, chain_start)


def _candidates(graph: RoadGraph, index: SegmentIndex, point: TracePoint,
                params: MatchParams) -> list[_Candidate]:
    sigma = max(point.accuracy_m, params.sigma_min_m)
    out: list[_Candidate] = []
    ways: set[int] = set()
    # the nearest link of each way: the way's other links near the fix are only nearer
    # their shared ends, and would crowd out other roads
    for snap in index.near(point.lat, point.lon, params.radius_m, 4 * params.max_candidates):
        seg = snap.forward if snap.forward >= 0 else snap.backward
        way = int(graph.seg_way[seg])
        if way in ways:
            continue
        ways.add(way)
        if len(ways) > params.max_candidates:
            break
        emission = -0.5 * (snap.distance_m / sigma) ** 2
        for segment, fraction in snap.candidates():
            out.append(_Candidate(segment, fraction, snap, emission))
    return out


def _transitions(metric: Metric, dm: F64, a: list[_Candidate], b: list[_Candidate],
                 pa: TracePoint, pb: TracePoint, params: MatchParams) -> F64:
    src = np.array([c.segment for c in a], dtype=np.int32)
    dst = np.array([c.segment for c in b], dtype=np.int32)
    table = metric.many_to_many(src, dst).astype(np.float64)
    lead = np.array([(1 - c.fraction) * dm[c.segment] for c in a])
    tail = np.array([(1 - c.fraction) * dm[c.segment] for c in b])
    route = (lead[:, None] + table - tail[None, :]) / 10.0   # metres
    route[table >= UNREACHABLE] = np.inf
    same = src[:, None] == dst[None, :]
    if same.any():
        ahead = (np.array([c.fraction for c in b])[None, :]
                 - np.array([c.fraction for c in a])[:, None]) * dm[src][:, None] / 10.0
        # on one segment: forward along it; a little behind is noise (standing still);
        # farther behind is not possible in one step
        route = np.where(same, np.where(ahead >= -params.backtrack_m, np.maximum(ahead, 0.0),
                                        np.inf), route)
    great = haversine_m(pa.lat, pa.lon, pb.lat, pb.lon)
    dt = max(pb.time - pa.time, 1.0)
    limit = max(params.max_speed_mps * dt, great + 2 * params.radius_m)
    logp: F64 = -np.abs(route - great) / params.beta_m
    logp[~np.isfinite(route) | (route > limit)] = NEG
    return logp


def _backtrack(candidates: list[list[_Candidate]], score: list[np.ndarray],
               back: list[np.ndarray], chain_start: list[bool]) -> list[int]:
    """The chosen candidate per fix (-1: unmatched), chain by chain from the end."""
    chosen = [-1] * len(candidates)
    t = len(candidates) - 1
    while t >= 0:
        if not candidates[t]:
            t -= 1
            continue
        j = int(score[t].argmax())
        while True:  # follow this chain back to its start
            chosen[t] = j
            if chain_start[t]:
                break
            j = int(back[t][j])
            t -= 1
            while not candidates[t]:
                t -= 1
        t -= 1
    return chosen


def _result(graph: RoadGraph, distances: Weighting, trace: Sequence[TracePoint],
            candidates: list[list[_Candidate]], chosen: list[int],
            chain_start: list[bool]) -> MatchResult:
    fixes: list[MatchedFix] = []
    for i, (p, cands, j) in enumerate(zip(trace, candidates, chosen)):
        if j < 0:
            fixes.append(MatchedFix(i, -1, 0.0, p.lat, p.lon, 0.0))
        else:
            c = cands[j]
            fixes.append(MatchedFix(i, c.segment, c.fraction, c.snap.lat, c.snap.lon,
                                    c.snap.distance_m))
    metres: dict[int, float] = {}
    seconds: dict[int, float] = {}
    segments: list[int] = []
    chains = 0
    matched = [f for f in fixes if f.segment >= 0]
    previous: MatchedFix | None = None
    for f in matched:
        if previous is None or chain_start[f.index]:
            chains += 1
            segments.append(f.segment)
            previous = f
            continue
        if f.segment == previous.segment and f.fraction <= previous.fraction:
            continue  # standing (or within a fix's noise of it): nothing driven
        path = path_from(graph, distances, previous.segment, previous.fraction, f.segment,
                         f.fraction)
        if path is None:  # cannot happen on one strongly connected graph; be safe
            chains += 1
            segments.append(f.segment)
            previous = f
            continue
        lengths = driven(graph.seg_length_m, path)
        total = float(lengths.sum())
        dt = trace[f.index].time - trace[previous.index].time
        if total > 0 and dt > 0:
            for seg, m in zip(path.segments.tolist(), lengths.tolist()):
                if m > 0:
                    metres[seg] = metres.get(seg, 0.0) + m
                    seconds[seg] = seconds.get(seg, 0.0) + dt * m / total
        segments.extend(s for s in path.segments.tolist()[1:])
        previous = f
    traversals = [Traversal(s, metres[s], seconds[s]) for s in metres]
    share = len(matched) / len(fixes) if fixes else 0.0
    confidence = share / max(chains, 1)
    return MatchResult(fixes, traversals, segments, chains, confidence)
