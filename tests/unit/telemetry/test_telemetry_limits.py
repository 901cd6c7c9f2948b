"""The per-tenant samples-per-second bucket."""

from __future__ import annotations

import pytest

from geoplex.servers._runtime.errors import InvalidArgument, ResourceExhausted
from geoplex.servers.telemetry.limits import DEFAULT_TENANT, SampleRateLimit, tenant_of


def test_a_tenant_may_burst_then_refills_at_its_rate() -> None:
    limit = SampleRateLimit(100.0, burst_s=2.0)         # 200 at once, then 100/s
    limit.take("a", 200, now=0.0)
    with pytest.raises(ResourceExhausted) as caught:
        limit.take("a", 1, now=0.0)
    assert caught.value.metadata["limit"] == "GEOPLEX_TELEMETRY_MAX_SAMPLES_PER_SECOND"
    limit.take("a", 50, now=0.5)                        # 50 refilled in half a second
    with pytest.raises(ResourceExhausted):
        limit.take("a", 10, now=0.5)


def test_tenants_have_their_own_buckets_and_zero_means_no_limit() -> None:
    limit = SampleRateLimit(10.0, burst_s=1.0)
    limit.take("a", 10, now=0.0)
    limit.take("b", 10, now=0.0)
    SampleRateLimit(0.0).take("a", 10**9, now=0.0)


def test_a_refused_write_takes_nothing() -> None:
    limit = SampleRateLimit(10.0, burst_s=1.0)
    with pytest.raises(ResourceExhausted):
        limit.take("a", 11, now=0.0)
    limit.take("a", 10, now=0.0)


def test_tenant_ids() -> None:
    assert tenant_of(None) == tenant_of("") == DEFAULT_TENANT
    assert tenant_of("team-a") == "team-a"
    with pytest.raises(InvalidArgument):
        tenant_of("bad\ttenant")
