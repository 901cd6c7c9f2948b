"""The downsampled tiers: 1-minute and 1-hour rollups kept as blocks of their own.

A rollup block has the raw block's layout (:mod:`.blocks`) with ``resolution`` "1m" or
"1h" in its ``meta.json``; each source series is stored as six series, its label set plus
``__rollup__`` = ``min``, ``max``, ``sum``, ``count``, ``last`` or ``increase``
(:mod:`.rollup`), one sample per bucket stamped at the bucket's last millisecond (so a
bucket is never seen before all of its samples could have been). The reserved label
cannot be written by users (names starting ``__`` are refused) and is taken off again
when a rollup is read.

Tiers live in ``<db>/rollup-1m/`` and ``<db>/rollup-1h/``. The 1-minute tier is made from
each raw block once it is cut (with the last value of the 1-minute block before it, so a
counter step across the boundary is counted once); the 1-hour tier from the 1-minute
blocks of a whole aligned window (``rollup_window_ms``, a day by default) once raw data
has passed its end. A read of a tier (:func:`read_rollups`) takes the tier's blocks where
they cover the range and rolls the finer data up on the fly where they do not, so a
query served from a tier is never missing the newest hours.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .api import RollupSeries, Series
from .blocks import Block, SeriesData
from .chunks import Float64s, Int64s
from .labels import Labels, Matcher, MatchOp
from .rollup import COMPONENTS, Rollup, coarsen, concat, rollup, unread

ROLLUP_LABEL = "__rollup__"
RESOLUTION_MS = {"1m": 60_000, "1h": 3_600_000}
FINER = {"1h": "1m", "1m": "raw"}
TIER_DIRS = {"1m": "rollup-1m", "1h": "rollup-1h"}


def component_series(labels: Labels, r: Rollup, resolution_ms: int) -> list[SeriesData]:
    """The six stored series of one series' rollup."""
    times = r.start + resolution_ms - 1
    values = {"min": r.min, "max": r.max, "sum": r.sum, "count": r.count.astype(np.float64),
              "last": r.last, "increase": r.increase}
    return [(Labels(labels.pairs + ((ROLLUP_LABEL, name),)), times, values[name])
            for name in COMPONENTS]


def sorted_components(rollups: Iterable[tuple[Labels, Rollup]],
                      resolution_ms: int) -> list[SeriesData]:
    """A rollup block's input: every component series, sorted by label set."""
    out = [item for labels, r in rollups if len(r.start)
           for item in component_series(labels, r, resolution_ms)]
    out.sort(key=lambda item: item[0])
    return out


def block_rollups(block: Block, matchers: Sequence[Matcher], mint: int,
                  maxt: int, components: Sequence[str] = COMPONENTS) -> dict[Labels, Rollup]:
    """The rollups a tier block holds for the selected series, buckets whose point time is
    in ``[mint, maxt]``; only ``components`` are read (the others are NaN)."""
    resolution_ms = RESOLUTION_MS[block.meta.resolution]
    parts: dict[Labels, dict[str, npt.NDArray[Any]]] = {}
    times: dict[Labels, Int64s] = {}
    for name in components:
        selector = [*matchers, Matcher(ROLLUP_LABEL, MatchOp.EQ, name)]
        for labels, ts, vs in block.select(selector, mint, maxt):
            base = labels.without(ROLLUP_LABEL)
            parts.setdefault(base, {})[name] = vs
            times[base] = ts
    out = {}
    nans, zeros = unread(max((len(t) for t in times.values()), default=0))
    for labels, values in parts.items():
        if len(values) != len(components):
            continue  # a user matcher on __rollup__ itself: not a whole rollup
        n = len(times[labels])
        for name in COMPONENTS:
            if name not in values:
                values[name] = zeros[:n] if name == "count" else nans[:n]
        out[labels] = Rollup(start=times[labels] - resolution_ms + 1, min=values["min"],
                             max=values["max"], sum=values["sum"],
                             count=values["count"].astype(np.int64, copy=False),
                             last=values["last"], increase=values["increase"])
    return out


def uncovered(mint: int, maxt: int, spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[mint, maxt]`` no ``[start, end)`` span covers, as inclusive ranges."""
    gaps = []
    at = mint
    for start, end in sorted(spans):
        if end <= at:
            continue
        if start > maxt:
            break
        if start > at:
            gaps.append((at, start - 1))
        at = max(at, end)
        if at > maxt:
            break
    if at <= maxt:
        gaps.append((at, maxt))
    return gaps


def raw_rollups(series: Iterator[Series], resolution_ms: int,
                from_ms: int) -> dict[Labels, Rollup]:
    """Raw series (selected from a little before ``from_ms``, so the first step has the
    value before it) rolled up, buckets from ``from_ms`` on."""
    out = {}
    for s in series:
        r = rollup(s.timestamps, s.values, resolution_ms)
        keep = r.start >= from_ms
        if keep.any():
            out[s.labels] = Rollup(start=r.start[keep], min=r.min[keep], max=r.max[keep],
                                   sum=r.sum[keep], count=r.count[keep], last=r.last[keep],
                                   increase=r.increase[keep])
    return out


def coarsened(found: dict[Labels, Rollup], resolution_ms: int) -> dict[Labels, Rollup]:
    return {labels: coarsen(r, resolution_ms) for labels, r in found.items()}


def merge_rollups(parts: Iterable[dict[Labels, Rollup]],
                  components: Sequence[str] = COMPONENTS) -> dict[Labels, Rollup]:
    gathered: dict[Labels, list[Rollup]] = {}
    for part in parts:
        for labels, r in part.items():
            gathered.setdefault(labels, []).append(r)
    wanted = tuple(components)
    return {labels: concat(rs, wanted) for labels, rs in gathered.items()}
