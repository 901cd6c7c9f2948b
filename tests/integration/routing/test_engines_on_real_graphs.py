"""The production kernel against the design's algorithms, on the real extracts.

For every region (Monaco and Helsinki PBFs, the Gothenburg GeoJSON network) and
every travel mode, RoutingKit's CCH must return exactly our Dijkstra's distance
(and bidirectional A*'s) for random pairs, under free flow and after random
traffic; and the graphs must keep OpenStreetMap's oneways and turn restrictions.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoplex.servers.routing.config import MODES, RegionSource
from geoplex.servers.routing.engines.baselines import BidirectionalAStarEngine, DijkstraEngine
from geoplex.servers.routing.graph import RoadGraph
from geoplex.servers.routing.ports import UNREACHABLE
from geoplex.servers.routing.profiles import PROFILES
from geoplex.servers.routing.regions import Region, read_network

GRAPHS = [(region, mode) for region in ("monaco", "helsinki", "gothenburg") for mode in MODES]
SETTINGS = settings(max_examples=6, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _pairs(data: st.DataObject, graph: RoadGraph, count: int) -> list[tuple[int, int]]:
    ids = st.integers(0, graph.seg_count - 1)
    return [(data.draw(ids), data.draw(ids)) for _ in range(count)]


@pytest.mark.parametrize(("region", "mode"), GRAPHS)
@SETTINGS
@given(data=st.data())
def test_cch_returns_exactly_the_dijkstra_distance(routing_regions: dict[str, Region],
                                                   region: str, mode: str,
                                                   data: st.DataObject) -> None:
    g = routing_regions[region].modes[mode]
    weights = g.graph.arc_weights()
    dijkstra = DijkstraEngine(g.graph).customize(weights)
    astar = BidirectionalAStarEngine(g.graph).customize(weights)
    for source, target in _pairs(data, g.graph, 2):
        expected, _ = dijkstra.query(source, target)
        got, arcs = g.free.metric.query(source, target)
        assert got == expected < UNREACHABLE  # one strongly connected component
        assert astar.query(source, target)[0] == expected
        assert int(weights[arcs].astype(np.int64).sum()) == got
        if arcs.size:
            assert g.graph.arc_tail[arcs[0]] == source and g.graph.arc_head[arcs[-1]] == target


@pytest.mark.parametrize(("region", "mode"), GRAPHS)
@SETTINGS
@given(data=st.data())
def test_cch_matches_dijkstra_after_random_traffic(routing_regions: dict[str, Region],
                                                   region: str, mode: str,
                                                   data: st.DataObject) -> None:
    g = routing_regions[region].modes[mode]
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    touched = rng.random(g.graph.seg_count) < data.draw(st.sampled_from([0.01, 0.1, 0.5]))
    seg_ms = g.graph.seg_ms.copy()
    factor = rng.uniform(0.02, 1.5, size=int(touched.sum()))
    seg_ms[touched] = np.ceil(seg_ms[touched] / factor).astype(np.uint32)
    weights = g.graph.arc_weights(seg_ms)
    metric = g.engine.customize(weights)
    dijkstra = DijkstraEngine(g.graph).customize(weights)
    for source, target in _pairs(data, g.graph, 2):
        assert metric.query(source, target)[0] == dijkstra.query(source, target)[0]


def test_many_to_many_equals_single_queries(routing_regions: dict[str, Region]) -> None:
    g = routing_regions["gothenburg"].modes["car"]
    rng = np.random.default_rng(7)
    sources = rng.integers(0, g.graph.seg_count, 12).astype(np.int32)
    targets = rng.integers(0, g.graph.seg_count, 9).astype(np.int32)
    table = g.free.metric.many_to_many(sources, targets)
    for i, s in enumerate(sources.tolist()):
        for j, t in enumerate(targets.tolist()):
            assert table[i, j] == g.free.metric.query(s, t)[0]


def _source(routing_sources: tuple[RegionSource, ...], name: str) -> RegionSource:
    return next(s for s in routing_sources if s.name == name)


def test_oneways_hold_for_car_and_bicycle_and_not_for_foot(
        routing_regions: dict[str, Region], routing_sources: tuple[RegionSource, ...]) -> None:
    network = read_network(_source(routing_sources, "gothenburg").path)
    oneways = [w for w in network.ways
               if w.tags.get("oneway") == "yes" and w.tags.get("highway") == "residential"
               and not any(k.startswith(("oneway:", "cycleway")) for k in w.tags)][:50]
    assert len(oneways) >= 20
    checked = 0
    for mode, against_allowed in (("car", False), ("foot", True)):
        graph = routing_regions["gothenburg"].modes[mode].graph
        directed = set(zip(graph.seg_tail.tolist(), graph.seg_head.tolist()))
        for way in oneways:
            pairs = list(zip(way.nodes[:-1].tolist(), way.nodes[1:].tolist()))
            if not any(p in directed for p in pairs):
                continue  # not in this mode's largest component
            against = [(b, a) in directed for a, b in pairs]
            assert all(against) if against_allowed else not any(against), way.way_id
            checked += 1
    bike = routing_regions["gothenburg"].modes["bicycle"].graph
    ridden = bike.seg_length_m / (bike.seg_ms / 1000.0) * 3.6
    by_pair = dict(zip(zip(bike.seg_tail.tolist(), bike.seg_head.tolist()), ridden.tolist()))
    for way in oneways:
        for a, b in zip(way.nodes[:-1].tolist(), way.nodes[1:].tolist()):
            if (b, a) in by_pair:  # against the oneway a bicycle is only pushed
                assert by_pair[(b, a)] <= PROFILES["bicycle"].top_speed_kmh
                assert by_pair[(b, a)] < 4.1
    assert checked >= 20


def test_car_graph_has_no_turn_a_restriction_forbids(
        routing_regions: dict[str, Region], routing_sources: tuple[RegionSource, ...]) -> None:
    network = read_network(_source(routing_sources, "monaco").path)
    graph = routing_regions["monaco"].modes["car"].graph
    car = PROFILES["car"]
    way_of = graph.way_ids[graph.seg_way]
    turns = set(zip(graph.arc_tail.tolist(), graph.arc_head.tolist()))
    no_rules = only_rules = 0
    for rule in network.restrictions:
        if not car.restriction_applies(rule.tags) or rule.from_way == rule.to_way:
            continue
        into = np.flatnonzero((way_of == rule.from_way) & (graph.seg_head == rule.via_node))
        out = np.flatnonzero((way_of == rule.to_way) & (graph.seg_tail == rule.via_node))
        for e in into.tolist():
            if rule.only:  # every turn from here goes onto the to way
                nexts = graph.arc_head[graph.arc_first[e]:graph.arc_first[e + 1]]
                assert nexts.size and set(way_of[nexts].tolist()) == {rule.to_way}
                only_rules += 1
            else:
                for f in out.tolist():
                    assert (e, f) not in turns
                    no_rules += 1
    # Monaco has both kinds on roads a car may use
    assert only_rules >= 20 and no_rules >= 2
