"""Load a region's graphs (one per travel mode) from its data file, through a disk cache.

A graph and its CCH topology are cached under ``<cache>/<region>-<sha>-<mode>-v<N>``:
the data file's sha256 prefix, the mode and :data:`CODE_VERSION` (raise it whenever
what ``profiles.py`` or ``graph.py`` produce changes), so a restart loads in well
under a second and a changed file or code can never reuse a stale graph.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from geoplex.servers._runtime.files import file_checksum

from .adapters.geojson_roads import read_geojson
from .adapters.osm_pbf import read_pbf
from .adapters.routingkit_cch import CCHEngine
from .config import RegionSource
from .domain import AVOID_FERRIES, AVOID_MOTORWAYS, AVOID_TOLLS
from .encoded_polyline import ChainEncoder
from .graph import RoadGraph, build_graph
from .guidance import Guide
from .matching import DistanceMetric
from .network import RawNetwork
from .planner import Weighting
from .ports import UNREACHABLE, Engine
from .profiles import CLASS_FERRY, CLASS_MOTORWAY, CLASS_TOLL, PROFILES
from .snapping import SegmentIndex
from .traffic import TrafficState

logger = logging.getLogger(__name__)

CODE_VERSION = 7
AVOID_CLASSES = ((AVOID_TOLLS, CLASS_TOLL), (AVOID_MOTORWAYS, CLASS_MOTORWAY),
                 (AVOID_FERRIES, CLASS_FERRY))


class RegionLoadError(Exception):
    """A region's data cannot be read or built; the message says which and why."""


@dataclass
class ModeGraph:
    """One travel mode's graph of a region, its kernel and its live metrics."""

    mode: str
    graph: RoadGraph
    index: SegmentIndex
    guide: Guide           # per-turn facts for steps
    encoder: ChainEncoder  # per-segment polyline pieces
    distances: DistanceMetric  # segment lengths as a metric, for map matching
    engine: Engine
    traffic: TrafficState
    free: Weighting
    current: Weighting
    metric_time: float
    node_count: int        # road nodes this mode's segments use
    _derived: dict[tuple[int, bool, int, bool], Weighting] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _traffic_lock: threading.Lock = field(default_factory=threading.Lock)
    _by_way: dict[int, npt.NDArray[np.int64]] | None = None
    # metrics customized since start: live traffic ones, and ones leaving road classes out
    # or of plain durations (counted under the locks that guard each kind)
    traffic_customizations: int = 0
    derived_customizations: int = 0

    def weighting(self, traffic: bool, avoid: int = 0, *, fastest: bool = False) -> Weighting:
        """The metric for a query: free flow or live, with some road classes left out, or
        (``fastest``) plain durations without weight factors and penalties.

        Such a metric is customized on first use (tens of milliseconds) and kept until
        the next traffic change."""
        base = self.current if traffic else self.free
        if not avoid and not fastest:
            return base
        key = (avoid, traffic, base.version, fastest)
        with self._lock:
            found = self._derived.get(key)
            if found is not None:
                return found
        if fastest:
            weights = self.graph.arc_weights(base.seg_ms, fastest=True)
            seg_weight = base.seg_ms
        else:
            weights = base.arc_weights.copy()
            seg_weight = base.seg_weight
        blocked = np.zeros(self.graph.seg_count, dtype=bool)
        for bit, road_class in AVOID_CLASSES:
            if avoid & bit:
                blocked |= (self.graph.seg_classes & road_class) != 0
        weights[blocked[self.graph.arc_head]] = UNREACHABLE
        made = Weighting(self.engine.customize(weights), base.seg_ms, seg_weight, weights,
                         base.version)
        with self._lock:
            self._derived = {k: v for k, v in self._derived.items() if k[2] == base.version}
            self._derived[key] = made
            self.derived_customizations += 1
        return made

    def apply_traffic(self, segments: npt.NDArray[np.int64], factors: npt.NDArray[np.float64],
                      valid_until: float, now: float) -> tuple[int, int]:
        """Record observations and put a live metric made from them in use; returns the
        segments touched and the new metric's version. Updates and refreshes of one mode
        run one at a time, so a metric never replaces a newer one."""
        with self._traffic_lock:
            touched = self.traffic.apply(segments, factors, valid_until, now)
            self._remake(now)
            return touched, self.current.version

    def refresh_traffic(self, now: float) -> bool:
        """Make the live metric again if traffic moved since it was made (observations
        fading back to free flow, a validity window ended); True if it did."""
        with self._traffic_lock:
            if not self.traffic.changed_between(self.metric_time, now):
                return False
            self._remake(now)
            return True

    def _remake(self, now: float) -> None:
        seg_ms = self.traffic.seg_ms(now)
        weights = self.graph.arc_weights(seg_ms)
        self.current = Weighting(self.engine.customize(weights), seg_ms,
                                 self.graph.seg_weight(seg_ms), weights, self.traffic.version)
        self.metric_time = now
        self.traffic_customizations += 1

    def segments_of_way(self, way_id: int) -> npt.NDArray[np.int64] | None:
        """This mode's segments (both directions) of one OSM way, or None."""
        if self._by_way is None:
            way_of_seg = self.graph.way_ids[self.graph.seg_way]
            order = np.argsort(way_of_seg, kind="stable")
            ids, starts = np.unique(way_of_seg[order], return_index=True)
            bounds = [*starts.tolist(), order.size]
            self._by_way = {int(w): order[bounds[k]:bounds[k + 1]].astype(np.int64)
                            for k, w in enumerate(ids.tolist())}
        return self._by_way.get(way_id)


@dataclass
class Region:
    name: str
    checksum: str
    low: tuple[float, float]
    high: tuple[float, float]
    modes: dict[str, ModeGraph]

    def covers(self, lat: float, lon: float, margin_deg: float) -> bool:
        return (self.low[0] - margin_deg <= lat <= self.high[0] + margin_deg
                and self.low[1] - margin_deg <= lon <= self.high[1] + margin_deg)


def read_network(path: Path) -> RawNetwork:
    if path.name.endswith(".pbf"):
        network, skipped = read_pbf(path)
        if skipped:
            logger.info("%s: %d turn restrictions skipped (via ways or malformed)",
                        path.name, skipped)
        return network
    if path.suffix in (".json", ".geojson"):
        return read_geojson(path)
    raise RegionLoadError(f"{path.name}: expected an .osm.pbf or a .json/.geojson road network")


def load_region(source: RegionSource, modes: tuple[str, ...], cache_dir: Path,
                traffic_fade_s: float,
                progress: Callable[[str], None] = logger.info) -> Region:
    """Every mode's graph of one region, built or read from the cache."""
    path = source.path
    if not path.is_file():
        raise RegionLoadError(f"region {source.name}: {path} is missing; run "
                              f"`geoplex data fetch {source.name}` (or set "
                              "GEOPLEX_ROUTING_REGIONS)")
    try:
        checksum = file_checksum(path)[:16]
        cache_dir.mkdir(parents=True, exist_ok=True)
        network: RawNetwork | None = None
        graphs: dict[str, ModeGraph] = {}
        for mode in modes:
            started = time.monotonic()
            stem = cache_dir / f"{source.name}-{checksum}-{mode}-v{CODE_VERSION}"
            graph_file = stem.with_name(stem.name + ".npz")
            if graph_file.is_file():
                graph = RoadGraph.load(graph_file)
                how = "loaded"
            else:
                if network is None:
                    network = read_network(path)
                graph = build_graph(network, PROFILES[mode])
                graph.save(graph_file)
                how = "built"
            engine = CCHEngine(graph, stem.with_name(stem.name + ".cch"))
            graphs[mode] = _mode_graph(mode, graph, engine, traffic_fade_s)
            progress(f"region {source.name} {mode}: {how} {graph.seg_count:,} segments, "
                     f"{graph.arc_count:,} turns in {time.monotonic() - started:.1f} s")
    except RegionLoadError:
        raise
    except Exception as exc:  # a broken file: one clear line, not a traceback
        raise RegionLoadError(f"region {source.name}: cannot load {path}: "
                              f"{type(exc).__name__}: {exc}") from exc
    any_graph = next(iter(graphs.values())).graph
    lat, lon = any_graph.node_lat, any_graph.node_lon
    return Region(source.name, checksum, (float(lat.min()), float(lon.min())),
                  (float(lat.max()), float(lon.max())), graphs)


def _mode_graph(mode: str, graph: RoadGraph, engine: Engine, fade_s: float) -> ModeGraph:
    weights = graph.arc_weights()
    free = Weighting(engine.customize(weights), graph.seg_ms, graph.seg_weight(), weights, 0)
    now = time.time()
    nodes = int(np.unique(np.concatenate([graph.seg_tail, graph.seg_head])).size)
    return ModeGraph(mode, graph, SegmentIndex(graph), Guide(graph),
                     ChainEncoder(graph.node_lat, graph.node_lon, graph.seg_tail, graph.seg_head),
                     DistanceMetric(graph, engine), engine,
                     TrafficState(graph.seg_ms, fade_s), free, free, now, nodes)

