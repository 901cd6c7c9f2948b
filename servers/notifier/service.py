"""The notifier's declaration (see :mod:`geoplex.servers._runtime.declaration`)."""

from __future__ import annotations

from geoplex.notifier.v1 import notifier_pb2
from geoplex.servers._runtime.declaration import ExampleCall, ServiceDeclaration

SERVICE = ServiceDeclaration(
    name="notifier",
    summary="alert notifications as Alertmanager sends them: routing, grouping, inhibition, "
            "silences, deduplication; email, PagerDuty and webhook receivers",
    module="geoplex.servers.notifier",
    grpc_services=(notifier_pb2.DESCRIPTOR.services_by_name["NotifierService"],),
    default_port=50057,
    # one process per node: a node holds every alert in memory (evaluators post to all)
    processes=1,
    # two nodes for availability: they share silences and claim each notification in etcd,
    # so one notification is sent once
    nodes=2,
    example=ExampleCall("ListSilences", '{"page_size":10}'),
    client="geoplex.clients.notifier:NotifierClient",
    cli="geoplex.tools.notifier_cli",
)
