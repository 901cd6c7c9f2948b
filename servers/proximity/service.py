"""The proximity service's declaration (see :mod:`geoplex.servers._runtime.declaration`)."""

from __future__ import annotations

from geoplex.proximity.v1 import proximity_pb2
from geoplex.servers._runtime.declaration import ExampleCall, ServiceDeclaration

SERVICE = ServiceDeclaration(
    name="proximity",
    summary="businesses nearest first within 0.5-20 km; owners create, update, delete",
    module="geoplex.servers.proximity",
    grpc_services=(proximity_pb2.DESCRIPTOR.services_by_name["ProximityService"],),
    default_port=50051,
    processes=2,
    example=ExampleCall(
        "SearchNearbyBusinesses",
        '{"location":{"latitude":60.1704,"longitude":24.9522},"radius_meters":500}'),
    client="geoplex.clients.proximity:ProximityClient",
    cli="geoplex.tools.proximity_cli",
)
