"""Each service's one declaration is complete, and what reads it agrees with it."""

from __future__ import annotations

import importlib
import inspect
import json

import pytest
from google.protobuf import json_format
from google.protobuf.message_factory import GetMessageClass

from geoplex.clients.channel import BaseClient, idempotent_methods
from geoplex.mesh.v1 import mesh_pb2
from geoplex.servers._runtime.declaration import ServiceDeclaration
from geoplex.servers.catalog import service, service_packages, services
from geoplex.tools.cli import build_parser

DECLARED = services()


def test_every_service_package_has_a_declaration() -> None:
    assert [d.module for d in DECLARED] == sorted(service_packages(),
                                                   key=lambda m: service(m.rsplit(".", 1)[1])
                                                   .default_port)


def test_names_and_ports_are_unique() -> None:
    assert len({d.name for d in DECLARED}) == len(DECLARED)
    assert len({d.default_port for d in DECLARED}) == len(DECLARED)
    assert len({n for d in DECLARED for n in d.grpc_service_names}) == sum(
        len(d.grpc_services) for d in DECLARED)


def test_an_unknown_service_name_lists_the_declared_ones() -> None:
    with pytest.raises(KeyError, match="proximity"):
        service("nosuch")


@pytest.mark.parametrize("declared", DECLARED, ids=lambda d: d.name)
def test_the_example_call_is_a_valid_request(declared: ServiceDeclaration) -> None:
    method = declared.grpc_services[0].methods_by_name[declared.example.method]
    request = GetMessageClass(method.input_type)()
    json_format.Parse(declared.example.body, request)  # raises on an unknown field
    assert json.loads(declared.example.body) is not None


@pytest.mark.parametrize("declared", DECLARED, ids=lambda d: d.name)
def test_the_client_is_a_typed_sdk_client_with_an_explicit_constructor(declared: ServiceDeclaration) -> None:
    module, _, name = declared.client.partition(":")
    client = getattr(importlib.import_module(module), name)
    assert issubclass(client, BaseClient)
    kinds = {p.kind for p in inspect.signature(client.__init__).parameters.values()}
    assert inspect.Parameter.VAR_POSITIONAL not in kinds
    assert inspect.Parameter.VAR_KEYWORD not in kinds


@pytest.mark.parametrize("declared", DECLARED, ids=lambda d: d.name)
def test_the_cli_hooks_in_its_commands(declared: ServiceDeclaration,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert callable(importlib.import_module(declared.cli).add_commands)
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([declared.name, "--help"])
    assert exited.value.code == 0
    assert f"geoplex {declared.name}" in capsys.readouterr().out


def test_the_sdk_retries_exactly_what_the_declarations_mark_retryable() -> None:
    mesh = mesh_pb2.DESCRIPTOR.services_by_name["MeshService"].full_name
    declared = {name: methods for d in DECLARED for name, methods in d.retryable_methods.items()
                if methods}
    assert {k: v for k, v in idempotent_methods().items() if k != mesh} == declared
    assert idempotent_methods()[mesh] == ("GetServerInfo", "Ping")
    # reads are retried, creates are not
    assert "SearchNearbyBusinesses" in declared["geoplex.proximity.v1.ProximityService"]
    assert "CreateBusiness" not in declared["geoplex.proximity.v1.ProximityService"]
    assert "Connect" not in declared["geoplex.presence.v1.PresenceService"]
