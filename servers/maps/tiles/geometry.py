"""Vectorised geometry on many parts at once: clipping, de-duplication, ring winding.

A set of parts (polylines or rings) is a point array ``pts`` (``(n, 2)``) and offsets
``off`` (``parts + 1``): part ``i`` is ``pts[off[i]:off[i + 1]]``. Rings are stored
open (the first point is not repeated at the end). Every function works on all parts
of a tile in a few numpy passes; nothing loops over points in Python.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


def ranges(starts: I64, lengths: I64) -> I64:
    """The concatenation of ``arange(s, s + n)`` for each start ``s`` and length ``n``."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    return (np.arange(total, dtype=np.int64) - np.repeat(ends - lengths, lengths)
            + np.repeat(starts, lengths))


def part_of_points(off: I64) -> I64:
    """For each point, the index of its part."""
    return np.repeat(np.arange(off.size - 1, dtype=np.int64), np.diff(off))


def clip_lines(pts: F64, off: I64, lo: float, hi: float) -> tuple[F64, I64, I64]:
    """Polylines clipped to the square ``[lo, hi]^2`` (Liang-Barsky on every segment).

    A line leaving and re-entering the square becomes several parts. Returns the
    clipped points, their offsets and, per new part, the index of the part it came from.
    """
    empty = (np.zeros((0, 2)), np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64))
    if pts.shape[0] < 2:
        return empty
    part = part_of_points(off)
    seg = np.flatnonzero(part[:-1] == part[1:])
    if seg.size == 0:
        return empty
    a = pts[seg]
    d = pts[seg + 1] - a
    t0 = np.zeros(seg.size)
    t1 = np.ones(seg.size)
    ok = np.ones(seg.size, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for p, q in ((-d[:, 0], a[:, 0] - lo), (d[:, 0], hi - a[:, 0]),
                     (-d[:, 1], a[:, 1] - lo), (d[:, 1], hi - a[:, 1])):
            ok &= ~((p == 0) & (q < 0))
            r = q / p
            neg, pos = p < 0, p > 0
            t0 = np.where(neg, np.maximum(t0, r), t0)
            t1 = np.where(pos, np.minimum(t1, r), t1)
    ok &= t0 <= t1
    k = np.flatnonzero(ok)
    if k.size == 0:
        return empty
    seg, t0, t1, a, d = seg[k], t0[k], t1[k], a[k], d[k]
    start = np.ones(k.size, dtype=bool)
    start[1:] = ((seg[1:] != seg[:-1] + 1) | (part[seg[1:]] != part[seg[:-1]])
                 | (t1[:-1] < 1.0) | (t0[1:] > 0.0))
    first = a + t0[:, None] * d
    first[t0 == 0.0] = a[t0 == 0.0]
    last = a + t1[:, None] * d
    count = 1 + start.astype(np.int64)
    end_pos = np.cumsum(count) - 1
    out = np.empty((int(count.sum()), 2))
    out[end_pos] = last
    run_first = end_pos[start] - 1
    out[run_first] = first[start]
    new_off = np.concatenate((run_first, [out.shape[0]])).astype(np.int64)
    return out, new_off, part[seg[start]]


def clip_rings(pts: F64, off: I64, lo: float, hi: float) -> tuple[F64, I64]:
    """Rings clipped to the square ``[lo, hi]^2`` (Sutherland-Hodgman, one pass per side
    over all rings). Ring ``i`` stays ring ``i``; one outside the square becomes empty.
    Orientation is kept; a concave ring may gain edges along the square's sides."""
    for axis, bound, keep_above in ((0, lo, True), (0, hi, False), (1, lo, True),
                                    (1, hi, False)):
        n = pts.shape[0]
        if n == 0:
            break
        v = pts[:, axis]
        inside = v >= bound if keep_above else v <= bound
        if bool(inside.all()):
            continue
        lengths = np.diff(off)
        following = np.arange(1, n + 1, dtype=np.int64)
        filled = lengths > 0
        following[off[1:][filled] - 1] = off[:-1][filled]
        nxt = pts[following]
        next_inside = inside[following]
        cross = inside != next_inside
        count = next_inside.astype(np.int64) + cross
        t = np.zeros(n)
        np.divide(bound - v, nxt[:, axis] - v, out=t, where=cross)
        crossing = pts + t[:, None] * (nxt - pts)
        crossing[:, axis] = bound
        end_pos = np.cumsum(count) - 1
        out = np.empty((int(count.sum()), 2))
        out[end_pos[next_inside]] = nxt[next_inside]
        out[end_pos[cross] - next_inside[cross]] = crossing[cross]
        per_ring = np.bincount(part_of_points(off), weights=count,
                               minlength=lengths.size).astype(np.int64)
        off = np.concatenate(([0], np.cumsum(per_ring))).astype(np.int64)
        pts = out
    return pts, off


def drop_repeats(pts: npt.NDArray[np.int64], off: I64,
                 rings: bool) -> tuple[npt.NDArray[np.int64], I64]:
    """Consecutive equal points dropped (for rings also a last point equal to the first)."""
    n = pts.shape[0]
    if n == 0:
        return pts, off
    keep = np.ones(n, dtype=bool)
    keep[1:] = np.any(pts[1:] != pts[:-1], axis=1)
    starts = off[:-1][np.diff(off) > 0]
    keep[starts] = True
    pts, off = _compact(pts, off, keep)
    if rings and pts.shape[0]:
        # the closing point: after the pass above the one before it differs from it
        lengths = np.diff(off)
        closed = lengths > 1
        last = off[1:][closed] - 1
        equal = np.all(pts[last] == pts[off[:-1][closed]], axis=1)
        keep = np.ones(pts.shape[0], dtype=bool)
        keep[last[equal]] = False
        pts, off = _compact(pts, off, keep)
    return pts, off


def _compact(pts: npt.NDArray[np.int64], off: I64,
             keep: Bool) -> tuple[npt.NDArray[np.int64], I64]:
    per_part = np.bincount(part_of_points(off), weights=keep,
                           minlength=off.size - 1).astype(np.int64)
    return pts[keep], np.concatenate(([0], np.cumsum(per_part))).astype(np.int64)


def drop_on_border(pts: npt.NDArray[np.int64], off: I64, lo: int,
                   hi: int) -> tuple[npt.NDArray[np.int64], I64]:
    """Ring points between two neighbours on the same side of the clip square dropped:
    clipping leaves them along the sides, they add nothing to the shape."""
    n = pts.shape[0]
    if n == 0:
        return pts, off
    lengths = np.diff(off)
    idx = np.arange(n, dtype=np.int64)
    part = part_of_points(off)
    start = off[:-1][part]
    length = lengths[part]
    prev = pts[start + (idx - start - 1) % length]
    nxt = pts[start + (idx - start + 1) % length]
    redundant = np.zeros(n, dtype=bool)
    for axis in (0, 1):
        v = pts[:, axis]
        on_side = (v == lo) | (v == hi)
        redundant |= on_side & (prev[:, axis] == v) & (nxt[:, axis] == v)
    redundant &= length > 3
    return _compact(pts, off, ~redundant)


def ring_areas(pts: npt.NDArray[np.int64] | F64, off: I64) -> F64:
    """Twice the signed area of each ring by the surveyor's formula (positive: clockwise
    on screen, with y down)."""
    n = pts.shape[0]
    if n == 0:
        return np.zeros(off.size - 1)
    part = part_of_points(off)
    idx = np.arange(n, dtype=np.int64)
    start = off[:-1][part]
    following = start + (idx - start + 1) % np.diff(off)[part]
    x = pts[:, 0].astype(np.float64)
    y = pts[:, 1].astype(np.float64)
    cross = x * y[following] - x[following] * y
    return np.bincount(part, weights=cross, minlength=off.size - 1).astype(np.float64)


def reverse_parts(pts: npt.NDArray[np.int64], off: I64,
                  which: Bool) -> npt.NDArray[np.int64]:
    """The points with the parts flagged in ``which`` in reverse order."""
    if not bool(which.any()):
        return pts
    part = part_of_points(off)
    idx = np.arange(pts.shape[0], dtype=np.int64)
    flip = which[part]
    start, end = off[:-1][part], off[1:][part]
    idx[flip] = (start + end - 1 - idx)[flip]
    return pts[idx]
