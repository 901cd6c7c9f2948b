"""The telemetry service's declaration (see :mod:`geoplex.servers._runtime.declaration`)."""

from __future__ import annotations

from geoplex.servers._runtime.declaration import ExampleCall, ServiceDeclaration
from geoplex.telemetry.v1 import telemetry_pb2

SERVICE = ServiceDeclaration(
    name="telemetry",
    summary="metrics: a time-series store with a write-ahead log and compressed blocks",
    module="geoplex.servers.telemetry",
    grpc_services=(telemetry_pb2.DESCRIPTOR.services_by_name["TelemetryService"],),
    default_port=50056,
    processes=1,   # one process owns the store's directory (a lock file says so)
    example=ExampleCall("GetStorageInfo", "{}"),
    client="geoplex.clients.telemetry:TelemetryClient",
    cli="geoplex.tools.telemetry_cli",
    http=("Prometheus HTTP API", 8056),
)
