"""The presence service's declaration (see :mod:`geoplex.servers._runtime.declaration`)."""

from __future__ import annotations

from geoplex.presence.v1 import presence_pb2
from geoplex.servers._runtime.declaration import ExampleCall, ServiceDeclaration

SERVICE = ServiceDeclaration(
    name="presence",
    summary="nearby friends: a live stream of friends' locations within a radius",
    module="geoplex.servers.presence",
    grpc_services=(presence_pb2.DESCRIPTOR.services_by_name["PresenceService"],),
    default_port=50052,
    processes=2,
    example=ExampleCall("GetSettings", "{}"),
    needs_token=True,
    client="geoplex.clients.presence:PresenceClient",
    cli="geoplex.tools.presence_cli",
)
