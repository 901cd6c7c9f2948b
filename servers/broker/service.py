"""The broker's declaration (see :mod:`geoplex.servers._runtime.declaration`)."""

from __future__ import annotations

from geoplex.broker.v1 import broker_pb2
from geoplex.servers._runtime.declaration import ExampleCall, ServiceDeclaration

SERVICE = ServiceDeclaration(
    name="broker",
    summary="a message queue: topics and partitions on a write-ahead log, consumer groups, "
            "retries and dead letters",
    module="geoplex.servers.broker",
    grpc_services=(broker_pb2.DESCRIPTOR.services_by_name["BrokerService"],
                   broker_pb2.DESCRIPTOR.services_by_name["ReplicaService"]),
    default_port=50053,
    # one process: a node owns its data directory (its partition logs and their locks)
    processes=1,
    # three brokers: each partition's replicas on different ones (docs/architecture.md §7)
    nodes=3,
    example=ExampleCall("ListTopics", '{"page_size":10}'),
    client="geoplex.clients.broker:BrokerClient",
    cli="geoplex.tools.broker_cli",
)
