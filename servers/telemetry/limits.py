"""Per-tenant ingestion limits: samples per second, as a token bucket per tenant.

The tenant is the ``X-Scope-OrgID`` header (HTTP) or ``x-scope-orgid`` metadata (gRPC),
the convention Cortex, Mimir and Loki use; without one a write counts for ``default``.
A write that would take a tenant over its rate is refused whole with RESOURCE_EXHAUSTED
naming the limit, and nothing of it is stored. Active series are limited by the store
itself (GEOPLEX_TELEMETRY_MAX_SERIES).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

from geoplex.servers._runtime.errors import InvalidArgument, ResourceExhausted
from geoplex.servers._runtime.validate import is_id

TENANT_HEADER = "x-scope-orgid"
DEFAULT_TENANT = "default"
MAX_TENANTS = 10_000         # buckets kept; the least recently used go first
LIMIT_NAME = "GEOPLEX_TELEMETRY_MAX_SAMPLES_PER_SECOND"


def tenant_of(value: str | None) -> str:
    """The tenant a write counts for; InvalidArgument for an id that is not one."""
    if not value:
        return DEFAULT_TENANT
    if not is_id(value):
        raise InvalidArgument(TENANT_HEADER, "must be a tenant id of 1..128 printable "
                              "characters")
    return value


def tenant_in(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The tenant of a gRPC call, from its ``x-scope-orgid`` metadata."""
    value = next((v for k, v in metadata or () if k == TENANT_HEADER and isinstance(v, str)),
                 None)
    return tenant_of(value)


class SampleRateLimit:
    """``rate`` samples per second per tenant, with a burst of ``burst_s`` seconds' worth
    (a batch larger than the burst is refused outright); ``rate`` 0 means no limit."""

    def __init__(self, rate: float, burst_s: float = 2.0) -> None:
        self.rate = rate
        self.capacity = rate * burst_s
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    def take(self, tenant: str, samples: int, now: float | None = None) -> None:
        if self.rate <= 0 or samples <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.pop(tenant, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if samples > tokens:
                self._buckets[tenant] = (tokens, now)
                raise ResourceExhausted(
                    f"tenant {tenant!r} is over its limit of {self.rate:g} samples per "
                    f"second ({LIMIT_NAME}); this write of {samples} samples was refused, "
                    "retry later", reason="SAMPLE_RATE_LIMIT",
                    metadata={"limit": LIMIT_NAME, "samples_per_second": f"{self.rate:g}"})
            self._buckets[tenant] = (tokens - samples, now)
            while len(self._buckets) > MAX_TENANTS:
                self._buckets.popitem(last=False)
