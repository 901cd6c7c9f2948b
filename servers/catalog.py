"""The services of the mesh that are implemented, and how ``geoplex up`` runs them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    name: str           # short name, used in GEOPLEX_<NAME>_* variables
    module: str         # python -m <module>
    full_name: str      # the gRPC service name, for grpcurl
    default_port: int
    processes: int      # processes sharing the port (grpc.so_reuseport)
    example: str        # a grpcurl call: "Method|JSON body"
    needs_token: bool = False


SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry("proximity", "geoplex.servers.proximity",
                 "geoplex.proximity.v1.ProximityService", 50051, 2,
                 "SearchNearbyBusinesses|"
                 '{"location":{"latitude":60.1704,"longitude":24.9522},"radius_meters":500}'),
    ServiceEntry("presence", "geoplex.servers.presence",
                 "geoplex.presence.v1.PresenceService", 50052, 2, "GetSettings|{}",
                 needs_token=True),
)
