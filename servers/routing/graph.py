"""The routable graph of one region for one travel mode, in flat numpy arrays.

The graph is *edge-based*, as OSRM's is: a search node is a directed road
segment (two consecutive OSM nodes of a way, in the direction of travel), and a
search arc is a turn from one segment onto the next. That is what makes turn
restrictions, U-turn rules and turn costs exact: they are properties of a pair
of segments, which a node-based graph cannot express.

- ``seg_*`` arrays: one entry per directed segment (the search nodes).
- ``arc_*`` arrays: one entry per allowed turn ``arc_tail -> arc_head`` (both
  segment ids), sorted by tail (CSR: ``arc_first``). Its weight under a metric
  is ``seg_ms[arc_head] + arc_turn_ms``: reaching the end of the next segment.
- Everything is restricted to the largest strongly connected component of the
  turn graph, so any two snapped points of a region have a route.

Durations are integer milliseconds (uint32), so the shortest-path kernel, the
baselines and the tests agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from geoplex.servers._runtime.geo import EARTH_RADIUS_M, haversine_pairs

from .network import RawNetwork
from .profiles import CLASS_RESTRICTED, LOCAL_ACCESS_PENALTY_S, Profile

I32 = npt.NDArray[np.int32]
U32 = npt.NDArray[np.uint32]
U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
Bools = npt.NDArray[np.bool_]

MAX_MS = np.uint32(2**31 - 2)  # below the kernel's INF_WEIGHT (2**31 - 1)


@dataclass(frozen=True, slots=True)
class RoadGraph:
    profile: str
    node_lat: F64          # base (OSM) nodes
    node_lon: F64
    seg_tail: I32          # base node the segment leaves
    seg_head: I32          # base node it reaches
    seg_length_m: F64
    seg_ms: U32            # free-flow duration, milliseconds
    seg_way: I32           # index into way_names / way_refs / way_ids
    seg_classes: U8        # ROAD_CLASS_* bits of its way (toll, motorway, ferry)
    seg_roundabout: Bools
    seg_reverse: I32       # the opposite segment of the same way pair, or -1
    seg_bearing: F64       # compass bearing of the segment, degrees 0..360
    seg_weight_factor: F32  # >= 1: weight per ms of duration (WayRule.weight_factor)
    arc_first: I32         # CSR over arc_tail, length seg_count + 1
    arc_tail: I32
    arc_head: I32
    arc_turn_ms: U32       # turn cost + node delay (signals) of the turn
    arc_penalty_ms: U32    # weight only, never duration: entering a local-access-only road
    way_ids: npt.NDArray[np.int64]
    way_names: tuple[str, ...]
    way_refs: tuple[str, ...]
    way_label: I32         # per way: one id per (name, ref); 0 for an unnamed way
    intersection: Bools    # per base node: three or more neighbours (a real junction)

    @property
    def seg_count(self) -> int:
        return int(self.seg_tail.shape[0])

    @property
    def arc_count(self) -> int:
        return int(self.arc_tail.shape[0])

    def seg_weight(self, seg_ms: U32 | None = None) -> U32:
        """Each segment's weight under durations ``seg_ms``: its duration times its
        weight factor (the two are equal on an ordinary street)."""
        ms = self.seg_ms if seg_ms is None else seg_ms
        weight = np.ceil(ms * self.seg_weight_factor.astype(np.float64))
        result: U32 = np.minimum(weight, MAX_MS).astype(np.uint32)
        return result

    def arc_weights(self, seg_ms: U32 | None = None, *, fastest: bool = False) -> U32:
        """The weight of every arc under segment durations ``seg_ms`` (default free flow):
        the next segment's weight, the turn's duration, and any penalty the route should
        avoid; ``fastest``: durations alone (no weight factors, no penalties)."""
        ms = self.seg_ms if seg_ms is None else seg_ms
        if fastest:
            total = ms[self.arc_head].astype(np.uint64) + self.arc_turn_ms
        else:
            total = (self.seg_weight(ms)[self.arc_head].astype(np.uint64) + self.arc_turn_ms
                     + self.arc_penalty_ms)
        weights: U32 = np.minimum(total, MAX_MS).astype(np.uint32)
        return weights

    def seg_mid(self) -> tuple[F64, F64]:
        """Latitude and longitude of every segment's midpoint."""
        return ((self.node_lat[self.seg_tail] + self.node_lat[self.seg_head]) * 0.5,
                (self.node_lon[self.seg_tail] + self.node_lon[self.seg_head]) * 0.5)

    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self)
                   if isinstance(getattr(self, f.name), np.ndarray))

    # -- persistence ----------------------------------------------------------------

    def save(self, path: Path) -> None:
        arrays = {f.name: getattr(self, f.name) for f in fields(self)
                  if isinstance(getattr(self, f.name), np.ndarray)}
        arrays["way_names"] = np.array(self.way_names, dtype=object)
        arrays["way_refs"] = np.array(self.way_refs, dtype=object)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, profile=np.array(self.profile), **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> RoadGraph:
        with np.load(path, allow_pickle=True) as d:
            return cls(
                profile=str(d["profile"]), node_lat=d["node_lat"], node_lon=d["node_lon"],
                seg_tail=d["seg_tail"], seg_head=d["seg_head"],
                seg_length_m=d["seg_length_m"], seg_ms=d["seg_ms"], seg_way=d["seg_way"],
                seg_classes=d["seg_classes"], seg_roundabout=d["seg_roundabout"],
                seg_reverse=d["seg_reverse"], seg_bearing=d["seg_bearing"],
                seg_weight_factor=d["seg_weight_factor"],
                arc_first=d["arc_first"],
                arc_tail=d["arc_tail"], arc_head=d["arc_head"],
                arc_turn_ms=d["arc_turn_ms"], arc_penalty_ms=d["arc_penalty_ms"],
                way_ids=d["way_ids"],
                way_names=tuple(str(s) for s in d["way_names"]),
                way_refs=tuple(str(s) for s in d["way_refs"]), way_label=d["way_label"],
                intersection=d["intersection"])


def bearings(lat1: F64, lon1: F64, lat2: F64, lon2: F64) -> F64:
    """Initial compass bearing (degrees, 0 = north, clockwise) from point 1 to point 2."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(lon2 - lon1)
    x = np.sin(dl) * np.cos(p2)
    y = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    result: F64 = (np.degrees(np.arctan2(x, y)) + 360.0) % 360.0
    return result


def turn_angles(in_bearing: F64, out_bearing: F64) -> F64:
    """Signed turn angle in degrees, -180..180: negative is a left turn, positive a right."""
    angle: F64 = (out_bearing - in_bearing + 540.0) % 360.0 - 180.0
    return angle


def build_graph(network: RawNetwork, profile: Profile) -> RoadGraph:
    """Apply ``profile`` to ``network``: segments, allowed turns, the largest SCC."""
    tails: list[I32] = []
    heads: list[I32] = []
    speeds: list[F64] = []
    ways_of: list[I32] = []
    classes_of: list[U8] = []
    factor_of: list[F32] = []
    round_of: list[Bools] = []
    along_of: list[Bools] = []  # drawn in the way's own direction (for directional delays)
    way_ids: list[int] = []
    way_names: list[str] = []
    way_refs: list[str] = []
    for way in network.ways:
        rule = profile.way(way.tags, network.country)
        if rule is None or (rule.forward_kmh <= 0 and rule.backward_kmh <= 0):
            continue
        w = len(way_ids)
        way_ids.append(way.way_id)
        way_names.append(rule.name)
        way_refs.append(rule.ref)
        a, b = way.nodes[:-1], way.nodes[1:]
        keep = a != b
        a, b = a[keep], b[keep]
        for on, src, dst, kmh, along in ((rule.forward_kmh > 0, a, b, rule.forward_kmh, True),
                                         (rule.backward_kmh > 0, b[::-1], a[::-1],
                                          rule.backward_kmh, False)):
            if not on or src.size == 0:
                continue
            tails.append(src)
            heads.append(dst)
            speeds.append(np.full(src.size, kmh))
            ways_of.append(np.full(src.size, w, dtype=np.int32))
            classes_of.append(np.full(src.size, rule.classes, dtype=np.uint8))
            factor_of.append(np.full(src.size, rule.weight_factor, dtype=np.float32))
            round_of.append(np.full(src.size, rule.roundabout))
            along_of.append(np.full(src.size, along))
    if not tails:
        raise ValueError(f"no road in this network is usable by {profile.name}")
    tail = np.concatenate(tails).astype(np.int32)
    head = np.concatenate(heads).astype(np.int32)
    speed = np.concatenate(speeds)
    seg_way = np.concatenate(ways_of)
    seg_classes = np.concatenate(classes_of)
    seg_factor = np.concatenate(factor_of)
    seg_round = np.concatenate(round_of)
    seg_along = np.concatenate(along_of)
    lat, lon = network.lat, network.lon
    length = haversine_pairs(lat[tail], lon[tail], lat[head], lon[head])
    # rounded up: an arc never costs less than its length at the speed, which keeps A*
    # potentials (straight-line distance at the top speed) consistent
    ms = np.maximum(np.ceil(length / (speed / 3.6) * 1000.0), 1).astype(np.uint32)

    # a junction: a base node with three or more distinct neighbours among usable roads
    n_nodes = network.node_count
    pair_a = np.concatenate([tail, head])
    pair_b = np.concatenate([head, tail])
    pairs = np.unique(pair_a.astype(np.int64) * n_nodes + pair_b)
    degree = np.bincount((pairs // n_nodes).astype(np.int64), minlength=n_nodes)
    intersection = degree >= 3

    arc_tail, arc_head, arc_turn = _turns(network, profile, tail, head, seg_way, seg_along,
                                          seg_round, np.asarray(way_ids, dtype=np.int64),
                                          degree)

    # the largest strongly connected component of the turn graph
    n_seg = tail.size
    matrix = csr_matrix((np.ones(arc_tail.size, dtype=np.int8), (arc_tail, arc_head)),
                        shape=(n_seg, n_seg))
    _, labels = connected_components(matrix, directed=True, connection="strong")
    biggest = np.bincount(labels).argmax()
    keep_seg = labels == biggest
    new_id = np.full(n_seg, -1, dtype=np.int64)
    new_id[keep_seg] = np.arange(int(keep_seg.sum()))
    keep_arc = keep_seg[arc_tail] & keep_seg[arc_head]
    arc_tail = new_id[arc_tail[keep_arc]].astype(np.int32)
    arc_head = new_id[arc_head[keep_arc]].astype(np.int32)
    arc_turn = arc_turn[keep_arc]
    order = np.lexsort((arc_head, arc_tail))
    arc_tail, arc_head, arc_turn = arc_tail[order], arc_head[order], arc_turn[order]
    tail, head = tail[keep_seg], head[keep_seg]
    n_kept = tail.size
    arc_first = np.zeros(n_kept + 1, dtype=np.int32)
    np.cumsum(np.bincount(arc_tail, minlength=n_kept), out=arc_first[1:])

    # the opposite segment (same two base nodes, other direction), for U-turns and snapping
    key = tail.astype(np.int64) * n_nodes + head
    rkey = head.astype(np.int64) * n_nodes + tail
    korder = np.argsort(key)
    pos = np.searchsorted(key[korder], rkey)
    pos = np.minimum(pos, n_kept - 1)
    found = key[korder][pos] == rkey
    reverse = np.where(found, korder[pos], -1).astype(np.int32)

    classes_kept = seg_classes[keep_seg]
    local = (classes_kept & CLASS_RESTRICTED) != 0
    entering = local[arc_head] & ~local[arc_tail]
    penalty = np.where(entering, round(LOCAL_ACCESS_PENALTY_S * 1000), 0).astype(np.uint32)

    return RoadGraph(
        profile=profile.name, node_lat=lat, node_lon=lon,
        seg_tail=tail, seg_head=head, seg_length_m=length[keep_seg], seg_ms=ms[keep_seg],
        seg_way=seg_way[keep_seg], seg_classes=classes_kept,
        seg_roundabout=seg_round[keep_seg], seg_reverse=reverse,
        seg_bearing=bearings(lat[tail], lon[tail], lat[head], lon[head]),
        seg_weight_factor=seg_factor[keep_seg],
        arc_first=arc_first, arc_tail=arc_tail, arc_head=arc_head,
        arc_turn_ms=arc_turn.astype(np.uint32), arc_penalty_ms=penalty,
        way_ids=np.asarray(way_ids, dtype=np.int64), way_names=tuple(way_names),
        way_refs=tuple(way_refs), way_label=_labels(way_names, way_refs),
        intersection=intersection)


def _labels(names: list[str], refs: list[str]) -> I32:
    ids: dict[tuple[str, str], int] = {("", ""): 0}
    return np.asarray([ids.setdefault(key, len(ids)) for key in zip(names, refs)],
                      dtype=np.int32)


def _turns(network: RawNetwork, profile: Profile, tail: I32, head: I32, seg_way: I32,
           seg_along: Bools, seg_round: Bools, way_ids: npt.NDArray[np.int64],
           degree: npt.NDArray[np.int64]) -> tuple[I32, I32, U32]:
    """Every allowed turn (segment -> next segment) and its cost in milliseconds; a node's
    delay (signals, gates) is paid by the turns through it that arrive in a direction it
    holds up (``Profile.delay_direction``, judged by the arriving segment's own way)."""
    n_nodes = network.node_count
    out_order = np.argsort(tail, kind="stable")
    out_count = np.bincount(tail, minlength=n_nodes)
    out_start = np.zeros(n_nodes + 1, dtype=np.int64)
    np.cumsum(out_count, out=out_start[1:])
    seg_ids = np.arange(tail.size, dtype=np.int64)
    fan = out_count[head]                       # turns possible at each segment's end
    e = np.repeat(seg_ids, fan)
    first = np.repeat(out_start[head], fan)
    offset = np.arange(e.size, dtype=np.int64) - np.repeat(np.cumsum(fan) - fan, fan)
    f = out_order[first + offset]
    via = head[e]

    lat, lon = network.lat, network.lon
    in_bearing = bearings(lat[tail[e]], lon[tail[e]], lat[via], lon[via])
    out_bearing = bearings(lat[via], lon[via], lat[head[f]], lon[head[f]])
    angle = turn_angles(in_bearing, out_bearing)

    u_turn = head[f] == tail[e]
    dead_end = degree[via] <= 1
    # a barrier the profile cannot pass: drive up to it and turn back (as at a dead end)
    blocked = np.zeros(n_nodes, dtype=bool)
    for node, tags in network.node_tags.items():
        blocked[node] = profile.blocks(tags)
    dead_end |= blocked[via]
    allowed = np.where(blocked[via], u_turn, ~u_turn | dead_end)
    allowed &= _restrictions_allow(network, profile, e, f, via, tail, head, seg_way, way_ids)

    junction = degree[via] >= 3
    turn_s = np.where(junction, profile.turn_seconds(angle, seg_round[e] | seg_round[f]), 0.0)
    turn_s = np.where(u_turn, profile.u_turn_seconds, turn_s)
    delay = np.zeros(n_nodes)
    holds = np.zeros(n_nodes, dtype=np.int8)  # +1 / -1: only arrivals along / against
    for node, tags in network.node_tags.items():
        delay[node] = profile.node_delay_seconds(tags)
        holds[node] = profile.delay_direction(tags)
    side = holds[via]
    held = (side == 0) | (seg_along[e] == (side > 0))
    turn_s = turn_s + np.where(held, delay[via], 0.0)
    turn_ms = np.rint(turn_s * 1000.0).astype(np.uint32)
    return (e[allowed].astype(np.int32), f[allowed].astype(np.int32), turn_ms[allowed])


def _restrictions_allow(network: RawNetwork, profile: Profile, e: npt.NDArray[np.int64],
                        f: npt.NDArray[np.int64], via: I32, seg_tail: I32, seg_head: I32,
                        seg_way: I32, way_ids: npt.NDArray[np.int64]) -> Bools:
    """False for the turns a turn restriction relation forbids for this profile."""
    allowed = np.ones(e.size, dtype=bool)
    rules = [r for r in network.restrictions if profile.restriction_applies(r.tags)]
    if not rules:
        return allowed
    e_way = way_ids[seg_way[e]]
    f_way = way_ids[seg_way[f]]
    tail_of_e = seg_tail[e]
    head_of_f = seg_head[f]
    order = np.argsort(via, kind="stable")
    sorted_via = via[order]
    for rule in rules:
        lo = np.searchsorted(sorted_via, rule.via_node, side="left")
        hi = np.searchsorted(sorted_via, rule.via_node, side="right")
        if lo == hi:
            continue
        at = order[lo:hi]
        from_here = e_way[at] == rule.from_way
        if rule.from_way == rule.to_way:
            # from and to the same way: only turning back on it (no_u_turn) is meant, not
            # carrying straight on where the way runs through the via node
            from_here &= head_of_f[at] == tail_of_e[at]
        if rule.only:
            allowed[at[from_here & (f_way[at] != rule.to_way)]] = False
        else:
            allowed[at[from_here & (f_way[at] == rule.to_way)]] = False
    return allowed


def local_xy(lat: F64, lon: F64, lat0: float, lon0: float) -> tuple[F64, F64]:
    """Equirectangular metres around (lat0, lon0): exact enough within a city region."""
    k = np.pi / 180.0 * EARTH_RADIUS_M
    x: F64 = (lon - lon0) * k * np.cos(np.radians(lat0))
    y: F64 = (lat - lat0) * k
    return x, y
