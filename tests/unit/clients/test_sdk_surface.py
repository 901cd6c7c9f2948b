"""The SDK's shape: explicit constructors, a timeout on every call, pure gRPC imports."""

from __future__ import annotations

import inspect
import pkgutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import message_factory

import geoplex.clients
from geoplex.broker.v1 import broker_pb2
from geoplex.clients.broker import BrokerClient
from geoplex.clients.channel import BaseClient, ChannelOptions
from geoplex.clients.errors import GeoplexError, GeoplexRpcError, SessionClosedError
from geoplex.clients.mesh import MeshClient
from geoplex.clients.presence import PresenceClient, SessionState
from geoplex.clients.proximity import ProximityClient
from geoplex.mesh.v1 import mesh_pb2
from geoplex.presence.v1 import presence_pb2
from geoplex.proximity.v1 import proximity_pb2

CLIENTS = {MeshClient: mesh_pb2, PresenceClient: presence_pb2, ProximityClient: proximity_pb2,
           BrokerClient: broker_pb2}
NO_DEADLINE = {"live", "subscribe", "producer", "consumer"}  # streams, and factories of them
# every public call of every client, with arguments that make one request each
CALLS: dict[type[BaseClient], dict[str, Callable[[Any, float | None], Any]]] = {
    MeshClient: {
        "server_info": lambda c, t: c.server_info(timeout=t),
        "ping": lambda c, t: c.ping(8, timeout=t),
    },
    PresenceClient: {
        "add_friend": lambda c, t: c.add_friend("bob", timeout=t),
        "remove_friend": lambda c, t: c.remove_friend("bob", timeout=t),
        "list_friends": lambda c, t: c.list_friends(10, timeout=t),
        "set_sharing": lambda c, t: c.set_sharing(True, timeout=t),
        "set_radius": lambda c, t: c.set_radius(1000, timeout=t),
        "settings": lambda c, t: c.settings(timeout=t),
        "nearby": lambda c, t: c.nearby(10, timeout=t),
    },
    BrokerClient: {
        "create_topic": lambda c, t: c.create_topic("t", 3, retention=60, timeout=t),
        "delete_topic": lambda c, t: c.delete_topic("t", timeout=t),
        "list_topics": lambda c, t: c.list_topics(timeout=t),
        "get_topic": lambda c, t: c.get_topic("t", timeout=t),
        "list_offsets": lambda c, t: c.list_offsets("t", time_ms=0, timeout=t),
        "produce": lambda c, t: c.produce("t", [broker_pb2.Record(value=b"v")], partition=0, timeout=t),
        "fetch": lambda c, t: c.fetch("t", 0, 0, timeout=t),
        "read": lambda c, t: _first(c.read("t", 0, 0, until_end=True, timeout=t)),
        "join_group": lambda c, t: c.join_group("g", ["t"], timeout=t),
        "sync_group": lambda c, t: c.sync_group("g", "m", 1, timeout=t),
        "heartbeat": lambda c, t: c.heartbeat("g", "m", 1, timeout=t),
        "leave_group": lambda c, t: c.leave_group("g", "m", timeout=t),
        "commit_offsets": lambda c, t: c.commit_offsets("g", {("t", 0): 1}, timeout=t),
        "get_committed_offsets": lambda c, t: c.get_committed_offsets("g", timeout=t),
        "reset_offsets": lambda c, t: c.reset_offsets("g", "t", "earliest", timeout=t),
        "describe_group": lambda c, t: c.describe_group("g", timeout=t),
        "list_groups": lambda c, t: c.list_groups(timeout=t),
        "nack": lambda c, t: c.nack("g", "m", 1, "t", 0, 5, delay=1.5, timeout=t),
        "get_metadata": lambda c, t: c.get_metadata(["t"], group="g", timeout=t),
        "describe_replicas": lambda c, t: c.describe_replicas(["t"], timeout=t),
    },
    ProximityClient: {
        "search": lambda c, t: c.search(60.0, 24.0, timeout=t),
        "search_all": lambda c, t: _consume(c.search_all(60.0, 24.0, timeout=t)),
        "get": lambda c, t: c.get("b1", timeout=t),
        "batch_get": lambda c, t: c.batch_get(["b1"], timeout=t),
        "create": lambda c, t: c.create(proximity_pb2.Business(name="x"), timeout=t),
        "update": lambda c, t: c.update(proximity_pb2.Business(id="b1"), ["name"], timeout=t),
        "delete": lambda c, t: c.delete("b1", timeout=t),
        "list_own": lambda c, t: c.list_own(timeout=t),
    },
}


async def _consume(items: Any) -> None:
    async for _ in items:
        pass


async def _first(items: Any) -> None:
    async for _ in items:
        break


class RecordingStub:
    """Stands in for a generated stub: records each call's deadline, answers an empty reply."""

    def __init__(self, module: Any) -> None:
        # the SDK's services (ReplicaService is broker to broker)
        (service,) = [s for s in module.DESCRIPTOR.services_by_name.values()
                      if not s.name.startswith("Replica")]
        self._methods = service.methods_by_name
        self.deadlines: list[tuple[str, float | None]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        reply = message_factory.GetMessageClass(self._methods[name].output_type)

        async def call(request: Any, *, timeout: float | None = None,
                       metadata: Any = ()) -> Any:
            self.deadlines.append((name, timeout))
            return reply()
        return call


def public_methods(cls: type) -> list[str]:
    return sorted(name for name, member in inspect.getmembers(cls, inspect.isfunction)
                  if not name.startswith("_") and not hasattr(BaseClient, name))


@pytest.mark.parametrize("cls", list(CLIENTS), ids=lambda c: c.__name__)
def test_constructors_take_target_options_and_interceptors_explicitly(cls):
    params = inspect.signature(cls.__init__).parameters
    assert list(params) == ["self", "target", "options", "interceptors"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params.values())


@pytest.mark.parametrize("cls", list(CLIENTS), ids=lambda c: c.__name__)
def test_every_call_takes_a_timeout_keyword(cls):
    assert public_methods(cls) == sorted([*CALLS[cls], *(NO_DEADLINE & set(dir(cls)))])
    for name in CALLS[cls]:
        timeout = inspect.signature(getattr(cls, name)).parameters.get("timeout")
        assert timeout is not None and timeout.kind is timeout.KEYWORD_ONLY, name
        assert timeout.default is None, name


@pytest.mark.parametrize("cls", list(CLIENTS), ids=lambda c: c.__name__)
async def test_every_call_passes_its_timeout_or_the_default_deadline_to_grpc(cls):
    async with cls("127.0.0.1:9", ChannelOptions(timeout=7.0)) as client:
        stub = RecordingStub(CLIENTS[cls])
        client.stub = stub
        for name, call in CALLS[cls].items():
            await call(client, 2.5)
            await call(client, None)
            assert stub.deadlines[-2:] == [(stub.deadlines[-2][0], 2.5),
                                           (stub.deadlines[-1][0], 7.0)], name


def test_the_sdk_has_one_root_error():
    assert issubclass(GeoplexRpcError, GeoplexError)
    assert issubclass(SessionClosedError, GeoplexError)
    assert not issubclass(SessionClosedError, GeoplexRpcError)  # no status code to give


async def test_a_session_guards_every_call_after_close():
    async with PresenceClient("127.0.0.1:9") as client:
        live = client.live(60.0, 24.0)
        state = live.state  # a copy: mypy would keep live.state narrowed past close()
        assert state is SessionState.IDLE
        await live.update(60.1, 24.1)  # before opening: the Hello's location
        assert live.location[:2] == (60.1, 24.1)
        await live.close()
        await live.close()  # again: nothing more happens
        assert live.state is SessionState.CLOSED
        with pytest.raises(SessionClosedError):
            await live.update(60.2, 24.2)
        with pytest.raises(SessionClosedError):
            await live.send(presence_pb2.ConnectRequest())
        with pytest.raises(SessionClosedError):
            await live.next(1.0)
        with pytest.raises(SessionClosedError):
            await anext(aiter(live))
        with pytest.raises(SessionClosedError):
            await live.__aenter__()


def _sdk_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(geoplex.clients.__path__,
                                                      "geoplex.clients."))


def test_the_sdk_imports_nothing_from_servers_infra_or_tools():
    probe = (f"import sys\nfor m in {_sdk_modules()!r}: __import__(m)\n"
             "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
             "(['geoplex', 'servers'], ['geoplex', 'infra'], ['geoplex', 'tools'])))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
    assert {"geoplex.clients.presence", "geoplex.clients.mesh"} <= set(_sdk_modules())
