"""What a run measured (:class:`SimResult`), latency percentiles, and the table printed."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class SimResult:
    """What one run measured in its window (after warm-up)."""

    users: int
    connected: int
    processes: int
    interval_s: float
    acceleration: float
    window_s: float
    connect_s: float
    graph: dict[str, Any]
    updates_sent: int = 0
    updates_rejected: int = 0
    deliveries: int = 0
    expected_deliveries: int = 0
    refreshes: int = 0
    gone_events: int = 0
    reconnects: int = 0
    errors: int = 0
    first_error: str | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    client_cpu_pct: float = math.nan
    sessions_per_server: dict[str, int] = field(default_factory=dict)
    progress: list[dict[str, Any]] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list, repr=False)

    @property
    def updates_per_s(self) -> float:
        return self.updates_sent / self.window_s if self.window_s else math.nan

    @property
    def accepted_per_s(self) -> float:
        return (self.updates_sent - self.updates_rejected) / self.window_s \
            if self.window_s else math.nan

    @property
    def deliveries_per_s(self) -> float:
        return self.deliveries / self.window_s if self.window_s else math.nan

    @property
    def expected_per_s(self) -> float:
        return self.expected_deliveries / self.window_s if self.window_s else math.nan

    @property
    def delivery_ratio(self) -> float:
        return self.deliveries / self.expected_deliveries if self.expected_deliveries \
            else math.nan

    @property
    def nearby_fraction(self) -> float:
        """Of each update's friends, the share within the radius (what fans out)."""
        degree = self.graph.get("avg_degree", 0.0)
        if not self.updates_sent or not degree:
            return math.nan
        return self.expected_deliveries / self.updates_sent / degree

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["latencies_s"]
        data.update(updates_per_s=self.updates_per_s, accepted_per_s=self.accepted_per_s,
                    deliveries_per_s=self.deliveries_per_s,
                    expected_deliveries_per_s=self.expected_per_s,
                    delivery_ratio=self.delivery_ratio, nearby_fraction=self.nearby_fraction)
        return data


def latency_summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    if not len(values_s):
        return {k: math.nan for k in ("p50", "p90", "p99", "p999", "max", "mean")}
    a = np.asarray(values_s) * 1e3
    p50, p90, p99, p999 = np.percentile(a, [50, 90, 99, 99.9])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "p999": float(p999),
            "max": float(a.max()), "mean": float(a.mean())}


def result_rows(result: SimResult) -> list[tuple[str, str]]:
    g = result.graph
    lat = result.latency_ms
    return [
        ("users (streams open)", f"{result.users:,} ({result.connected:,})"),
        ("friends per user", f"mean {g['avg_degree']:.1f} (target {g['target_avg_degree']:.1f}),"
                             f" median {g['median_degree']:.0f}, max {g['max_degree']}"),
        ("client processes", str(result.processes)),
        ("interval", f"{result.interval_s:g} s real = {result.interval_s * result.acceleration:g}"
                     f" s simulated (x{result.acceleration:g})"),
        ("streams per server process", json.dumps(result.sessions_per_server)),
        ("connect time", f"{result.connect_s:.1f} s"),
        ("window", f"{result.window_s:g} s"),
        ("updates/s sent / accepted", f"{result.updates_per_s:,.1f} / "
                                      f"{result.accepted_per_s:,.1f}"),
        ("nearby fraction of friends", f"{result.nearby_fraction:.1%}"),
        ("fan-out deliveries/s", f"{result.deliveries_per_s:,.0f} of {result.expected_per_s:,.0f}"
                                 f" expected ({result.delivery_ratio:.1%})"),
        ("refresh events/s (own moves)", f"{result.refreshes / result.window_s:,.0f}"),
        ("update -> friend latency", f"p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, "
                                     f"p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms"),
        ("client CPU", f"{result.client_cpu_pct:.0f} % of one core"),
        ("reconnects / errors", f"{result.reconnects} / {result.errors}"
                                + (f" ({result.first_error})" if result.first_error else "")),
    ]
