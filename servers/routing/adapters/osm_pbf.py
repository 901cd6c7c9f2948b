"""Read an OpenStreetMap PBF extract with pyosmium into a :class:`RawNetwork`.

Only what routing uses is kept: ways tagged ``highway`` (or ``route=ferry``), the
locations of their nodes, the tags of nodes that are signals, barriers or crossings,
and ``type=restriction`` relations with a from way, a via node and a to way (via-way
restrictions are rare and skipped; the count is returned so the caller can say so).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import osmium

from ..network import RawNetwork, RawWay, Restriction

NODE_KEYS = ("highway", "barrier", "crossing", "railway")


def read_pbf(path: Path, country: str = "") -> tuple[RawNetwork, int]:
    """The routable part of ``path``, and how many restrictions were skipped."""
    index: dict[int, int] = {}
    lats: list[float] = []
    lons: list[float] = []
    ways: list[RawWay] = []
    tagged_nodes: dict[int, Mapping[str, str]] = {}
    relations: list[tuple[int, int, int, bool, dict[str, str]]] = []
    skipped = 0
    processor = osmium.FileProcessor(str(path)).with_locations()
    for obj in processor:
        if isinstance(obj, osmium.osm.Node):
            tags = obj.tags
            if any(k in tags for k in NODE_KEYS):
                tagged_nodes[obj.id] = {t.k: t.v for t in tags}
        elif isinstance(obj, osmium.osm.Way):
            tags = obj.tags
            if "highway" not in tags and tags.get("route") != "ferry":
                continue
            refs: list[int] = []
            for n in obj.nodes:
                if not n.location.valid():
                    continue
                i = index.get(n.ref)
                if i is None:
                    i = index[n.ref] = len(lats)
                    lats.append(n.location.lat)
                    lons.append(n.location.lon)
                refs.append(i)
            if len(refs) >= 2:
                ways.append(RawWay(obj.id, np.asarray(refs, dtype=np.int32),
                                   {t.k: t.v for t in tags}))
        elif isinstance(obj, osmium.osm.Relation):
            tags = obj.tags
            if tags.get("type") != "restriction":
                continue
            kind = next((v for k, v in ((t.k, t.v) for t in tags)
                         if k == "restriction" or k.startswith("restriction:")), "")
            frm = [m.ref for m in obj.members if m.role == "from" and m.type == "w"]
            via = [m.ref for m in obj.members if m.role == "via"]
            via_nodes = [m.ref for m in obj.members if m.role == "via" and m.type == "n"]
            to = [m.ref for m in obj.members if m.role == "to" and m.type == "w"]
            if (len(frm) != 1 or len(to) != 1 or len(via) != 1 or len(via_nodes) != 1
                    or not kind.startswith(("no_", "only_"))):
                skipped += 1
                continue
            relations.append((frm[0], via_nodes[0], to[0], kind.startswith("only_"),
                              {t.k: t.v for t in tags}))
    restrictions = []
    for frm_way, via_ref, to_way, only, rtags in relations:
        via_index = index.get(via_ref)
        if via_index is None:
            skipped += 1
            continue
        restrictions.append(Restriction(frm_way, via_index, to_way, only, rtags))
    node_tags = {index[ref]: tags for ref, tags in tagged_nodes.items() if ref in index}
    network = RawNetwork(np.asarray(lats, dtype=np.float64), np.asarray(lons, dtype=np.float64),
                         ways, node_tags, restrictions, country)
    return network, skipped
