"""The production kernel: RoutingKit's customizable contraction hierarchy (pyroutingkit).

A CCH splits preprocessing in two (Dibbelt, Strasser, Wagner 2014): a
metric-independent phase (a nested-dissection order from inertial flow on the
nodes' coordinates, then the contraction of the graph's topology), done once
per graph and cached on disk; and a customization that takes one set of arc
weights and fills in the shortcuts' weights in tens of milliseconds on a city.
Live traffic is a new customization, never a new preprocessing.

pyroutingkit (MIT, C++ via pybind11, a young single-author package) is pinned
and sits behind :class:`~geoplex.servers.routing.ports.Engine`; the property
tests hold it to our own Dijkstra.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
from pyroutingkit import INF_WEIGHT, CCHMetric, CCHTopology

from ..graph import RoadGraph
from ..ports import I32, I64, U32, UNREACHABLE


class CCHEngine:
    name = "cch"

    def __init__(self, graph: RoadGraph, cache_dir: Path | None = None) -> None:
        self.graph = graph
        self.topology = CCHTopology()
        if cache_dir is not None and (cache_dir / "complete").is_file():
            self.topology.load(str(cache_dir))
        else:
            lat, lon = graph.seg_mid()
            self.topology.build(graph.arc_tail.astype(np.uint32), graph.arc_head.astype(np.uint32),
                                lat.astype(np.float32), lon.astype(np.float32), graph.seg_count)
            if cache_dir is not None:
                tmp = cache_dir.with_name(cache_dir.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                self.topology.save(str(tmp))
                (tmp / "complete").write_text("ok\n")
                shutil.rmtree(cache_dir, ignore_errors=True)
                tmp.rename(cache_dir)

    def customize(self, weights: U32) -> CCHRoutingMetric:
        metric = CCHMetric(self.topology)
        metric.customize(np.ascontiguousarray(weights, dtype=np.uint32))
        return CCHRoutingMetric(metric)


class CCHRoutingMetric:
    """One customized metric. Its queries are serialized: the binding keeps one search
    state per metric, and two threads querying one metric at once crash the process
    (seen here: a segfault in ``_core`` under 16 concurrent routes on two threads)."""

    def __init__(self, metric: CCHMetric) -> None:
        self._metric = metric
        self._lock = threading.Lock()

    def query(self, source: int, target: int) -> tuple[int, I32]:
        with self._lock:
            distance, _, arcs = self._metric.query(source, target)
        if distance >= INF_WEIGHT:
            return UNREACHABLE, np.zeros(0, dtype=np.int32)
        return int(distance), np.asarray(arcs, dtype=np.int32)

    def many_to_many(self, sources: I32, targets: I32) -> I64:
        with self._lock:
            matrix = self._metric.distances_many_to_many(sources.astype(np.uint32),
                                                         targets.astype(np.uint32))
        out = np.asarray(matrix, dtype=np.int64)
        out[out >= INF_WEIGHT] = UNREACHABLE
        return out
