"""What a service declares about itself, once, for everything that runs or calls it.

Each service package has a ``service.py`` holding one :class:`ServiceDeclaration`
named ``SERVICE``; :mod:`geoplex.servers.catalog` finds them all. ``geoplex up``
(processes, ports, printed examples), the server's health names, the test
fixtures, the CLI (each service's commands) and the layering test read it.

Which methods are safe to retry is declared where the method is: in the proto,
with protobuf's standard ``option idempotency_level`` (``NO_SIDE_EFFECTS`` for
reads, ``IDEMPOTENT`` for writes that may be repeated). The declaration reads
it from the generated descriptors (:attr:`ServiceDeclaration.retryable_methods`)
and so does the SDK's retry policy, which must not import ``geoplex.servers``.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions

RETRYABLE_LEVELS = frozenset({MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT})


def is_retryable(method: MethodDescriptor) -> bool:
    """A unary method whose proto says it may be repeated."""
    if method.client_streaming or method.server_streaming:
        return False
    return method.GetOptions().idempotency_level in RETRYABLE_LEVELS


@dataclass(frozen=True, slots=True)
class ExampleCall:
    """A call ``geoplex up`` prints as a grpcurl command line."""

    method: str  # a method of the declaration's first gRPC service
    body: str    # the request as JSON


@dataclass(frozen=True, slots=True)
class ServiceDeclaration:
    name: str                  # short name: GEOPLEX_<NAME>_* variables, process names, CLI
    summary: str               # one line, for listings
    module: str                # ``python -m <module>`` serves it
    grpc_services: tuple[ServiceDescriptor, ...]  # from the generated *_pb2 modules
    default_port: int
    processes: int             # processes sharing the port (grpc.so_reuseport) in ``geoplex up``
    example: ExampleCall
    needs_token: bool = False  # calls need a bearer token (``geoplex auth dev-token``)
    client: str = ""           # "module:Class" of its typed SDK client
    cli: str = ""              # module with ``add_commands(subparsers)`` for ``geoplex <name>``
    # nodes of a cluster in ``geoplex up``: node i (1..n) listens on default_port + 100 (i - 1)
    # and gets GEOPLEX_<NAME>_ID=i and GEOPLEX_<NAME>_DATA_DIR=<state dir>/<name>-<i>
    nodes: int = 1
    # datasets (``geoplex data fetch`` names) its server reads at start; ``geoplex up``
    # fetches them first, into the data directory the server's defaults point at
    datasets: tuple[str, ...] = ()
    # an HTTP endpoint beside gRPC (``GEOPLEX_<NAME>_HTTP_PORT``): (what it serves, port)
    http: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        if not self.grpc_services:
            raise ValueError(f"service {self.name!r} declares no gRPC service")
        first = self.grpc_services[0]
        if first.methods_by_name.get(self.example.method) is None:
            raise ValueError(f"service {self.name!r}: example method {self.example.method!r} "
                             f"is not a method of {first.full_name}")

    @property
    def grpc_service_names(self) -> tuple[str, ...]:
        """Full names (``geoplex.x.v1.XService``): health, reflection, grpcurl."""
        return tuple(s.full_name for s in self.grpc_services)

    @property
    def env_prefix(self) -> str:
        return f"GEOPLEX_{self.name.upper()}_"

    @property
    def retryable_methods(self) -> dict[str, tuple[str, ...]]:
        """gRPC service name -> the methods its proto marks as safe to repeat."""
        return {s.full_name: tuple(m.name for m in s.methods if is_retryable(m))
                for s in self.grpc_services}
