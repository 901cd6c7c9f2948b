"""What the tests of the flows through the broker share: a one-node broker on a port it
keeps across restarts, reading a topic from its start, and a process's descendants."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from geoplex.clients.broker import BrokerClient
from geoplex.infra.local import BackendUrls, free_port

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


def start_broker(server_factory: Callable[..., ServerProcess], backends: BackendUrls,
                 data: Path, name: str) -> ServerProcess:
    """A one-node broker on its own etcd prefix and a fixed port (a restart keeps it)."""
    return server_factory("broker", {
        **backends.env(), "GEOPLEX_BROKER_PORT": str(free_port()),
        "GEOPLEX_BROKER_DATA_DIR": str(data),
        "GEOPLEX_BROKER_ETCD_PREFIX": f"/geoplex-test/{uuid.uuid4().hex[:12]}"}, name)


async def read_topic(brokers: Sequence[str], topic: str, idle_s: float = 3.0) -> list[bytes]:
    """Every record value of ``topic``, read from the start by a group of its own, until
    nothing more comes for ``idle_s``."""
    out: list[bytes] = []
    async with BrokerClient(list(brokers)) as client:
        async with client.consumer(f"check-{uuid.uuid4().hex[:8]}", [topic],
                                   auto_offset_reset="earliest") as consumer:
            while True:
                try:
                    record = await asyncio.wait_for(consumer.__anext__(), idle_s)
                except TimeoutError:
                    return out
                out.append(record.value)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, theirs...), from ps."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True)
    children: dict[int, list[int]] = {}
    for line in out.stdout.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
