"""The road network as read from a data file, before any profile is applied.

A reader (``adapters/osm_pbf.py``, ``adapters/geojson_roads.py``) turns a file into a
:class:`RawNetwork`: node coordinates in flat arrays, each way as its node indexes and
tags, the node tags that matter for routing (signals, barriers) and the turn
restrictions. Profiles then decide, per travel mode, which of it is a road.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Int32s = npt.NDArray[np.int32]
Int64s = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class RawWay:
    way_id: int            # the OSM way id (a synthetic id for GeoJSON features)
    nodes: Int32s          # indexes into RawNetwork.lat / lon, in drawing order
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Restriction:
    """A turn restriction relation: from a way, through a node, onto a way."""

    from_way: int
    via_node: int          # node index
    to_way: int
    only: bool             # only_* (every other turn is forbidden) vs no_*
    tags: Mapping[str, str]  # the relation's tags: restriction:<mode>, except, ...


@dataclass(slots=True)
class RawNetwork:
    lat: Floats
    lon: Floats
    ways: list[RawWay]
    node_tags: dict[int, Mapping[str, str]] = field(default_factory=dict)  # index -> tags
    restrictions: list[Restriction] = field(default_factory=list)
    country: str = ""      # ISO 3166-1 alpha-2 of the region, for default speed limits

    @property
    def node_count(self) -> int:
        return int(self.lat.shape[0])
