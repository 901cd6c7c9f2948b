"""The road graph the simulated users move on, the random walk along it, and the pace
of one user's moves (:func:`scheduled_moves`, shared by the simulator and the floor of
``bench.presence``)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoplex.servers._runtime.geo import haversine_m, haversine_pairs


@dataclass
class RoadNetwork:
    """An undirected road graph in CSR form: node coordinates, neighbours, edge lengths."""

    lat: np.ndarray
    lon: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    length_m: np.ndarray

    @property
    def nodes(self) -> int:
        return len(self.lat)

    @property
    def edges(self) -> int:
        return len(self.indices) // 2

    @classmethod
    def from_geojson(cls, collection: dict[str, Any]) -> RoadNetwork:
        """Build from LineString features; ways meet where they share a coordinate.

        Only the largest connected component is kept, so a walk can reach the
        whole network.
        """
        ids: dict[tuple[float, float], int] = {}
        coords: list[tuple[float, float]] = []
        edges: set[tuple[int, int]] = set()
        for feature in collection.get("features", ()):
            geometry = feature.get("geometry") or {}
            if geometry.get("type") != "LineString":
                continue
            prev = -1
            for lon, lat, *_ in geometry["coordinates"]:
                key = (float(lat), float(lon))
                node = ids.get(key)
                if node is None:
                    node = ids[key] = len(coords)
                    coords.append(key)
                if prev >= 0 and prev != node:
                    edges.add((min(prev, node), max(prev, node)))
                prev = node
        if not edges:
            raise ValueError("the collection has no LineString roads")
        adjacency: list[list[int]] = [[] for _ in coords]
        for a, b in edges:
            adjacency[a].append(b)
            adjacency[b].append(a)
        keep = _largest_component(adjacency)
        renumber = {old: new for new, old in enumerate(keep)}
        lat = np.array([coords[n][0] for n in keep])
        lon = np.array([coords[n][1] for n in keep])
        indptr = np.zeros(len(keep) + 1, dtype=np.int64)
        indices: list[int] = []
        for new, old in enumerate(keep):
            neighbours = [renumber[m] for m in adjacency[old]]
            indices.extend(neighbours)
            indptr[new + 1] = len(indices)
        idx = np.array(indices, dtype=np.int64)
        src = np.repeat(np.arange(len(keep)), np.diff(indptr))
        length = haversine_pairs(lat[src], lon[src], lat[idx], lon[idx])
        return cls(lat, lon, indptr, idx, np.maximum(length, 0.1))

    @classmethod
    def gothenburg(cls, cache_dir: Path | None = None,
                   progress: Callable[[str], None] = lambda _m: None) -> RoadNetwork:
        """The Gothenburg network of ``geoplex data fetch gothenburg`` (fetched if missing)."""
        from geoplex.infra import data

        paths = data.fetch(["gothenburg"], cache_dir, progress=progress)
        return cls.from_geojson(data.read_road_network(paths["gothenburg"]["network"]))

    def extent_m(self) -> tuple[float, float]:
        """(north-south, east-west) size of the bounding box, in metres."""
        mid = float(np.mean(self.lat))
        ns = haversine_m(float(self.lat.min()), 0.0, float(self.lat.max()), 0.0)
        ew = haversine_m(mid, float(self.lon.min()), mid, float(self.lon.max()))
        return ns, ew


def _largest_component(adjacency: list[list[int]]) -> list[int]:
    seen = [False] * len(adjacency)
    best: list[int] = []
    for start in range(len(adjacency)):
        if seen[start] or not adjacency[start]:
            continue
        seen[start] = True
        component, stack = [start], [start]
        while stack:
            for m in adjacency[stack.pop()]:
                if not seen[m]:
                    seen[m] = True
                    component.append(m)
                    stack.append(m)
        if len(component) > len(best):
            best = component
    return sorted(best)


class Walker:
    """A random walk along the roads: ``advance(metres)`` returns the new (lat, lon)."""

    __slots__ = ("net", "rng", "a", "b", "edge_m", "offset_m")

    def __init__(self, net: RoadNetwork, start: int, rng: random.Random) -> None:
        self.net = net
        self.rng = rng
        self.a = start
        self.b, self.edge_m = self._next(start, -1)
        self.offset_m = 0.0

    def _next(self, node: int, came_from: int) -> tuple[int, float]:
        lo, hi = int(self.net.indptr[node]), int(self.net.indptr[node + 1])
        choices = [k for k in range(lo, hi) if int(self.net.indices[k]) != came_from]
        k = self.rng.choice(choices) if choices else lo  # dead end: turn back
        return int(self.net.indices[k]), float(self.net.length_m[k])

    def position(self) -> tuple[float, float]:
        f = self.offset_m / self.edge_m
        net = self.net
        return (float(net.lat[self.a] + (net.lat[self.b] - net.lat[self.a]) * f),
                float(net.lon[self.a] + (net.lon[self.b] - net.lon[self.a]) * f))

    def advance(self, meters: float) -> tuple[float, float]:
        self.offset_m += meters
        while self.offset_m >= self.edge_m:
            self.offset_m -= self.edge_m
            nxt, length = self._next(self.b, self.a)
            self.a, self.b, self.edge_m = self.b, nxt, length
        return self.position()


async def scheduled_moves(walker: Walker, step_m: float, interval_s: float,
                          rng: random.Random, go: float, end: float
                          ) -> AsyncIterator[tuple[float, float, float]]:
    """One user's moves between ``go`` and ``end`` (``time.time()`` values): the first at
    a random point of the first interval, then one every ``interval_s`` seconds,
    jittered +-10 %; each advances ``walker`` by ``step_m`` metres and yields
    ``(now, lat, lon)``. A loop that falls behind does not catch up in bursts."""
    due = go + rng.uniform(0.0, interval_s)
    while True:
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.time()
        if now >= end:
            return
        lat, lon = walker.advance(step_m)
        yield now, lat, lon
        due = max(due + interval_s * rng.uniform(0.9, 1.1), now - interval_s)
