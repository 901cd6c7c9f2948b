"""What the routing app needs from a shortest-path kernel.

An :class:`Engine` is built once per graph (the metric-independent part:
RoutingKit's nested-dissection order, or nothing for the baselines);
:meth:`Engine.customize` turns one set of arc weights into a :class:`Metric`
that answers queries. A metric is immutable once made, so a query running
while traffic changes sees the old metric or the new one, never a mix.

Nodes here are the graph's segments and arcs are its turns (see ``graph.py``);
a distance is the sum of the arc weights from the end of the source segment to
the end of the target segment, in milliseconds.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

I32 = npt.NDArray[np.int32]
U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]

UNREACHABLE = 2**31 - 1  # the distance of a pair with no path


class Metric(Protocol):
    def query(self, source: int, target: int) -> tuple[int, I32]:
        """Shortest distance and the arc ids of one shortest path (empty if none or s == t)."""
        ...

    def many_to_many(self, sources: I32, targets: I32) -> I64:
        """``len(sources) x len(targets)`` distances, UNREACHABLE where there is no path."""
        ...


class Engine(Protocol):
    name: str

    def customize(self, weights: U32) -> Metric:
        """A metric for these arc weights (one per arc of the graph, in arc order)."""
        ...
