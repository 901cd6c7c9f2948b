"""Node-exporter-like synthetic series: what the chunk encodings are measured on.

One "host" scraped every 15 s (every series of a target shares the scrape's timestamp,
with a few milliseconds of jitter, as Prometheus's scrape loop gives), its series drawn
from the kinds a real ``node_exporter`` exposes, in roughly its proportions:

- constants (35 %): ``*_errs_total`` that stay 0, ``node_filesystem_size_bytes``,
  ``node_boot_time_seconds``, ``*_info`` gauges at 1;
- integer counters (25 %): bytes, packets and operations at steady rates with bursts,
  each with a small chance of a reset (a reboot) in the window;
- CPU-seconds counters (10 %): ``node_cpu_seconds_total``, hundredths of a second;
- page-granular gauges (15 %): ``node_memory_*_bytes``, multiples of 4096 drifting, not
  changing at every scrape;
- two-decimal gauges (5 %): ``node_load1``-style;
- noisy float gauges (10 %): ``node_scrape_collector_duration_seconds``, every bit noisy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .chunks import Float64s, Int64s

SCRAPE_MS = 15_000
KINDS = (("constant", 0.40), ("int_counter", 0.22), ("cpu_counter", 0.10),
         ("page_gauge", 0.12), ("decimal_gauge", 0.08), ("noisy_gauge", 0.08))


@dataclass(frozen=True)
class SyntheticSeries:
    labels: dict[str, str]
    kind: str
    timestamps: Int64s
    values: Float64s


def scrape_times(rng: np.random.Generator, samples: int, start_ms: int,
                 jitter_ms: float = 2.0) -> Int64s:
    jitter = np.rint(rng.normal(0.0, jitter_ms, samples)).astype(np.int64)
    stamps = start_ms + np.arange(samples, dtype=np.int64) * SCRAPE_MS + jitter
    return np.maximum.accumulate(stamps)  # still ascending


def _values(rng: np.random.Generator, kind: str, samples: int) -> Float64s:
    if kind == "constant":
        return np.full(samples, float(rng.choice([0, 0, 1, 1_000_204_886_016, 1.7e9])))
    if kind == "int_counter":
        rate = rng.lognormal(6, 2)
        steps = rng.poisson(rate, samples).astype(np.float64)
        steps[rng.random(samples) < 0.02] *= 20  # bursts
        values = _floats(float(rng.integers(0, 1 << 40)) + np.cumsum(steps))
        if rng.random() < 0.05:  # a reset
            at = int(rng.integers(1, samples))
            values[at:] -= values[at - 1] - steps[at:at + 1].sum()
        return values
    if kind == "cpu_counter":
        busy = rng.uniform(0, 15)
        steps = np.clip(rng.normal(busy, busy / 5 + 0.01, samples), 0, 15).round(2)
        return _floats((rng.uniform(1e3, 1e7) + np.cumsum(steps)).round(2))
    if kind == "page_gauge":
        base = float(rng.integers(1 << 10, 1 << 22)) * 4096
        moves = rng.integers(-64, 65, samples) * 4096 * (rng.random(samples) < 0.4)
        return _floats(np.maximum(base + np.cumsum(moves), 0))
    if kind == "decimal_gauge":
        walk = np.abs(rng.normal(1.5, 0.3) + np.cumsum(rng.normal(0, 0.05, samples)))
        return _floats(walk.round(2))
    return _floats(rng.lognormal(-8, 1, samples))


def _floats(values: object) -> Float64s:
    return np.asarray(values, np.float64)


def node_exporter_like(series: int, samples: int, seed: int = 0,
                       start_ms: int = 1_700_000_000_000) -> Iterator[SyntheticSeries]:
    """``series`` series of ``samples`` scrapes each (one host, one timestamp sequence)."""
    rng = np.random.default_rng(seed)
    timestamps = scrape_times(rng, samples, start_ms)
    names = [kind for kind, _ in KINDS]
    weights = np.array([weight for _, weight in KINDS])
    for i in range(series):
        kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        labels = {"__name__": f"node_{kind}", "instance": "host-1:9100", "job": "node",
                  "n": str(i)}
        yield SyntheticSeries(labels, kind, timestamps, _values(rng, kind, samples))
