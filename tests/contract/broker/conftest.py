"""A real broker process over the session's real etcd, called through raw gRPC stubs.

One broker serves every test of this folder; each test makes its own topics and groups
(random names), and the broker keeps its metadata under its own etcd prefix, so nothing
is shared with another run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest

from broker_calls import Stub, broker_env
from geoplex.broker.v1 import broker_pb2_grpc
from geoplex.clients.broker import BrokerClient
from geoplex.infra.local import BackendUrls

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


@pytest.fixture(scope="session")
def broker(backends: BackendUrls, server_factory: Callable[..., ServerProcess],
           tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    data = tmp_path_factory.mktemp("broker-data")
    return server_factory("broker", broker_env(backends, data), "broker")


@pytest.fixture
async def stub(broker: ServerProcess) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(broker.address) as channel:
        yield broker_pb2_grpc.BrokerServiceStub(channel)


@pytest.fixture
def broker_address(broker: ServerProcess) -> str:
    return broker.address


@pytest.fixture
async def client(broker_address: str) -> AsyncIterator[BrokerClient]:
    """The typed SDK client on the session's broker."""
    async with BrokerClient(broker_address) as broker:
        yield broker
