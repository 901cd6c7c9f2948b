"""What one simulator run is asked to do."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from geoplex.servers.presence.domain import DEFAULT_RADIUS_M


@dataclass(frozen=True, slots=True)
class SimConfig:
    targets: tuple[str, ...]
    users: int
    interval_s: float = 1.0
    """Real seconds between two updates of one user (jittered +-10 %)."""
    sim_interval_s: float = 30.0
    """Simulated seconds one update interval stands for (acceleration = this / interval_s)."""
    speed_mps: float = 10.0
    duration_s: float = 20.0
    warmup_s: float = 3.0
    radius_m: float = DEFAULT_RADIUS_M
    processes: int = 1
    users_per_channel: int = 50
    connect_concurrency: int = 32
    connect_timeout_s: float = 120.0
    prefix: str = "sim-"
    seed: int = 1
    auth_secret: str = ""

    @property
    def acceleration(self) -> float:
        return self.sim_interval_s / self.interval_s

    def user_id(self, index: int) -> str:
        return f"{self.prefix}{index}"


def new_prefix() -> str:
    """A user id prefix of its own for one run, so runs never share friendships."""
    return f"sim-{uuid.uuid4().hex[:6]}-"
