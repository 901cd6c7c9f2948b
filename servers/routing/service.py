"""The routing service's declaration (see :mod:`geoplex.servers._runtime.declaration`)."""

from __future__ import annotations

from geoplex.routing.v1 import routing_pb2
from geoplex.servers._runtime.declaration import ExampleCall, ServiceDeclaration

SERVICE = ServiceDeclaration(
    name="routing",
    summary="routes with ETA on OpenStreetMap road graphs, live traffic, matrices",
    module="geoplex.servers.routing",
    grpc_services=(routing_pb2.DESCRIPTOR.services_by_name["RoutingService"],),
    default_port=50054,
    processes=1,
    example=ExampleCall(
        "ComputeRoute",
        '{"origin":{"latitude":60.1699,"longitude":24.9384},'
        '"destination":{"latitude":60.1756,"longitude":24.9316},"travel_mode":"TRAVEL_MODE_DRIVE"}'),
    client="geoplex.clients.routing:RoutingClient",
    cli="geoplex.tools.routing_cli",
    datasets=("monaco", "helsinki", "gothenburg"),
)
