"""What the registry tests share."""

from __future__ import annotations

from geoplex.infra.local import BackendUrls


def etcd(urls: BackendUrls) -> tuple[str, ...]:
    """The etcd endpoints of ``urls`` (which the registry tests need)."""
    assert urls.etcd_endpoints, "these tests need etcd (LocalInfra starts one)"
    return urls.etcd_endpoints
