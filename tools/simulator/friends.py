"""The friend graph: a Chung-Lu random graph with power-law expected degrees."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_AVG_DEGREE = 400.0


def default_avg_degree(users: int) -> float:
    """400, or (N - 1) / 2 when N is too small for that (at most N - 1 friends each)."""
    return min(MAX_AVG_DEGREE, (users - 1) * 0.5)


@dataclass
class FriendGraph:
    """An undirected friend graph over users 0..n-1 in CSR form (``indices`` sorted per row)."""

    n: int
    indptr: np.ndarray
    indices: np.ndarray
    target_avg_degree: float
    exponent: float
    seed: int

    @property
    def degrees(self) -> np.ndarray:
        return np.diff(self.indptr)

    @property
    def pairs(self) -> int:
        return len(self.indices) // 2

    def friends(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user]:self.indptr[user + 1]]

    def edge_list(self) -> list[tuple[int, int]]:
        src = np.repeat(np.arange(self.n), self.degrees)
        keep = src < self.indices
        return list(zip(src[keep].tolist(), self.indices[keep].tolist()))

    def summary(self) -> dict[str, Any]:
        d = self.degrees
        return {"users": self.n, "pairs": self.pairs, "target_avg_degree": self.target_avg_degree,
                "avg_degree": float(d.mean()) if self.n else 0.0,
                "median_degree": float(np.median(d)) if self.n else 0.0,
                "p99_degree": float(np.percentile(d, 99)) if self.n else 0.0,
                "max_degree": int(d.max()) if self.n else 0,
                "min_degree": int(d.min()) if self.n else 0,
                "exponent": self.exponent, "seed": self.seed}

    @classmethod
    def power_law(cls, n: int, avg_degree: float | None = None, *, exponent: float = 2.5,
                  seed: int = 1) -> FriendGraph:
        """Chung-Lu graph whose expected degrees follow a power law of ``exponent``.

        Weights ``w_i ~ (i + 1) ** (-1 / (exponent - 1))`` are capped at n - 1 and scaled
        so that the expected mean degree (with each pair's probability capped at 1) is
        ``avg_degree`` (default :func:`default_avg_degree`); edges are drawn with the
        Miller-Hagberg skipping method in O(n + edges). User ids are a random permutation
        of the weight order, so hubs are spread over servers and worker processes.
        """
        if n < 2:
            return cls(n, np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64), 0.0,
                       exponent, seed)
        target = default_avg_degree(n) if avg_degree is None else min(avg_degree, n - 1.0)
        rng = np.random.default_rng(seed)
        raw = (np.arange(n) + 1.0) ** (-1.0 / (exponent - 1.0))
        weights = _calibrate(raw, target, n - 1.0)
        total = float(weights.sum())
        us, vs = _miller_hagberg(weights, total, rng)
        perm = rng.permutation(n)
        us, vs = perm[us], perm[vs]
        src = np.concatenate([us, vs])
        dst = np.concatenate([vs, us])
        order = np.lexsort((dst, src))
        src, dst = src[order], dst[order]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.add.at(indptr, src + 1, 1)
        return cls(n, np.cumsum(indptr), dst.astype(np.int64), target, exponent, seed)


def _expected_mean_degree(w: np.ndarray, total: float) -> float:
    """Mean over i of sum_j min(1, w_i w_j / total), for w sorted descending."""
    asc = w[::-1]
    prefix = np.concatenate([[0.0], np.cumsum(asc)])
    # for each i, the j with w_j >= total / w_i have probability 1
    cut = np.searchsorted(asc, total / w, side="left")  # asc[cut:] are the capped ones
    capped = len(w) - cut
    partial = w * prefix[cut] / total
    return float(np.mean(capped + partial - np.minimum(1.0, w * w / total)))


def _calibrate(raw: np.ndarray, target: float, cap: float) -> np.ndarray:
    lo, hi = 0.0, cap / raw[-1] * 4
    for _ in range(60):
        mid = (lo + hi) / 2
        w = np.minimum(raw * mid, cap)
        if _expected_mean_degree(w, float(w.sum())) < target:
            lo = mid
        else:
            hi = mid
    return np.minimum(raw * hi, cap)


def _miller_hagberg(w: np.ndarray, total: float, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Edges (u < v) of a Chung-Lu graph with weights ``w`` sorted descending."""
    n = len(w)
    us: list[int] = []
    vs: list[int] = []
    wl = w.tolist()
    draws = iter(rng.random(1 << 16).tolist())

    def uniform() -> float:
        nonlocal draws
        try:
            return next(draws)
        except StopIteration:
            draws = iter(rng.random(1 << 16).tolist())
            return next(draws)

    for u in range(n - 1):
        wu = wl[u]
        v = u + 1
        p = min(wu * wl[v] / total, 1.0)
        while v < n and p > 0:
            if p < 1.0:
                r = uniform()
                v += int(math.floor(math.log(r or 1e-300) / math.log1p(-p)))
            if v < n:
                q = min(wu * wl[v] / total, 1.0)
                if uniform() < q / p:
                    us.append(u)
                    vs.append(v)
                p = q
                v += 1
    return np.array(us, dtype=np.int64), np.array(vs, dtype=np.int64)
