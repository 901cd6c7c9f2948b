"""The maps service's declaration (see :mod:`geoplex.servers._runtime.declaration`)."""

from __future__ import annotations

from geoplex.maps.v1 import maps_pb2
from geoplex.servers._runtime.declaration import ExampleCall, ServiceDeclaration

SERVICE = ServiceDeclaration(
    name="maps",
    summary="geocoding, navigation location batches into live traffic, map tiles and the "
            "map page",
    module="geoplex.servers.maps",
    grpc_services=(maps_pb2.DESCRIPTOR.services_by_name["MapsService"],),
    default_port=50055,
    processes=1,
    example=ExampleCall("Geocode", '{"text":"Mannerheimintie 10, Helsinki"}'),
    client="geoplex.clients.maps:MapsClient",
    cli="geoplex.tools.maps_cli",
    datasets=("helsinki", "monaco", "gothenburg", "geonames", "leaflet"),
    http=("map page, tiles and JSON", 8055),
)
