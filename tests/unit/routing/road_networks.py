"""Small synthetic road networks for the routing unit tests, built in metres.

Points are given as (north, east) offsets in metres from a fixed origin in central
Helsinki and turned into latitude and longitude, so a test can say "a street 100 m
long running east" and know its length and bearing. Way ids are 1, 2, 3... in the
order given unless a test passes its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from geoplex.servers._runtime.geo import EARTH_RADIUS_M
from geoplex.servers.routing.engines.baselines import DijkstraEngine
from geoplex.servers.routing.graph import RoadGraph
from geoplex.servers.routing.network import RawNetwork, RawWay, Restriction
from geoplex.servers.routing.planner import Weighting
from geoplex.servers.routing.ports import Engine

LAT0 = 60.17
LON0 = 24.94
RESIDENTIAL = {"highway": "residential"}

Tags = Mapping[str, str]


def latlon(north_m: float, east_m: float) -> tuple[float, float]:
    """The point ``north_m`` north and ``east_m`` east of the origin."""
    k = math.pi / 180.0 * EARTH_RADIUS_M
    return LAT0 + north_m / k, LON0 + east_m / (k * math.cos(math.radians(LAT0)))


@dataclass
class NetworkBuilder:
    """Nodes in metres, ways with tags, node tags and restrictions -> a RawNetwork."""

    points: list[tuple[float, float]] = field(default_factory=list)   # (north, east) m
    ways: list[RawWay] = field(default_factory=list)
    node_tags: dict[int, Tags] = field(default_factory=dict)
    restrictions: list[Restriction] = field(default_factory=list)
    country: str = ""

    def node(self, north_m: float, east_m: float, **tags: str) -> int:
        self.points.append((north_m, east_m))
        index = len(self.points) - 1
        if tags:
            self.node_tags[index] = dict(tags)
        return index

    def way(self, nodes: Sequence[int], tags: Tags | None = None, way_id: int | None = None,
            **more: str) -> int:
        """A way through ``nodes`` with ``tags`` (default a residential street) plus ``more``."""
        merged = dict(RESIDENTIAL if tags is None else tags)
        merged.update(more)
        wid = len(self.ways) + 1 if way_id is None else way_id
        self.ways.append(RawWay(wid, np.asarray(nodes, dtype=np.int32), merged))
        return wid

    def restrict(self, from_way: int, via_node: int, to_way: int, restriction: str,
                 tags: Tags | None = None) -> None:
        """A restriction relation ``restriction`` (``no_left_turn``, ``only_straight_on``...);
        its tags default to ``type=restriction`` and ``restriction=<restriction>``."""
        relation = {"type": "restriction",
                    **({"restriction": restriction} if tags is None else tags)}
        self.restrictions.append(Restriction(from_way, via_node, to_way,
                                             restriction.startswith("only_"), relation))

    def build(self) -> RawNetwork:
        coords = [latlon(n, e) for n, e in self.points]
        lat = np.array([c[0] for c in coords], dtype=np.float64)
        lon = np.array([c[1] for c in coords], dtype=np.float64)
        return RawNetwork(lat, lon, list(self.ways), dict(self.node_tags),
                          list(self.restrictions), self.country)


def grid(rows: int, cols: int, spacing_m: float = 100.0,
         tags_for: Callable[[int, int], Tags | None] | None = None) -> NetworkBuilder:
    """A ``rows`` x ``cols`` grid of nodes (node ``r * cols + c`` at row r north, column c
    east), one way per block between neighbours, drawn south->north and west->east.
    ``tags_for(a, b)`` gives a block's tags (None leaves the block out)."""
    builder = NetworkBuilder()
    for r in range(rows):
        for c in range(cols):
            builder.node(r * spacing_m, c * spacing_m)
    for r in range(rows):
        for c in range(cols):
            a = r * cols + c
            for b, ok in ((a + 1, c + 1 < cols), (a + cols, r + 1 < rows)):
                if not ok:
                    continue
                tags = RESIDENTIAL if tags_for is None else tags_for(a, b)
                if tags is not None:
                    builder.way([a, b], tags)
    return builder


def segment(graph: RoadGraph, tail: int, head: int) -> int:
    """The id of the directed segment from base node ``tail`` to ``head`` (or -1)."""
    found = np.flatnonzero((graph.seg_tail == tail) & (graph.seg_head == head))
    return int(found[0]) if found.size else -1


def arc(graph: RoadGraph, tail_seg: int, head_seg: int) -> int:
    """The id of the turn ``tail_seg -> head_seg`` (or -1 when it is not allowed)."""
    lo, hi = int(graph.arc_first[tail_seg]), int(graph.arc_first[tail_seg + 1])
    for a in range(lo, hi):
        if int(graph.arc_head[a]) == head_seg:
            return a
    return -1


def turn_allowed(graph: RoadGraph, a: int, via: int, b: int) -> bool:
    """Whether a route may come from node ``a`` to ``via`` and go on to node ``b``."""
    e, f = segment(graph, a, via), segment(graph, via, b)
    return e >= 0 and f >= 0 and arc(graph, e, f) >= 0


def free_flow(graph: RoadGraph, engine: Engine | None = None) -> Weighting:
    """The free-flow weighting of ``graph`` on ``engine`` (default Dijkstra)."""
    weights = graph.arc_weights()
    chosen: Engine = DijkstraEngine(graph) if engine is None else engine
    return Weighting(chosen.customize(weights), graph.seg_ms, graph.seg_weight(), weights, 0)


@dataclass(frozen=True)
class Crossroads:
    """Four arms of ``arm_m`` meeting at ``centre``, each arm its own way (named after it)."""

    builder: NetworkBuilder
    centre: int
    south: int
    north: int
    east: int
    west: int
    south_way: int
    north_way: int
    east_way: int
    west_way: int


def crossroads(arm_m: float = 100.0, tags: Tags | None = None,
               centre_tags: Mapping[str, str] | None = None) -> Crossroads:
    """A four-way junction; every arm is drawn from the centre outwards."""
    b = NetworkBuilder()
    centre = b.node(0, 0, **dict(centre_tags or {}))
    south, north = b.node(-arm_m, 0), b.node(arm_m, 0)
    east, west = b.node(0, arm_m), b.node(0, -arm_m)
    base = dict(RESIDENTIAL if tags is None else tags)
    ways = [b.way([centre, end], {**base, "name": name})
            for end, name in ((south, "South Street"), (north, "North Street"),
                              (east, "East Street"), (west, "West Street"))]
    return Crossroads(b, centre, south, north, east, west, *ways)
