"""The notifier's own metrics (``ServiceSpec.instruments``): what the dispatcher counts
(alerts received, notifications and delivery attempts, failures, claims another node won)
and what it holds (alerts by state, silences by state, aggregation groups), read from
:meth:`~.dispatcher.Dispatcher.metrics` on the export thread. The failure counters feed
the default rule that alerts on failing deliveries."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .dispatcher import Dispatcher

if TYPE_CHECKING:
    from geoplex.servers._runtime.metrics import Readings, ServiceMetrics

# exported name (OpenTelemetry style; a counter gains `_total`) -> the dispatcher's name
COUNTERS = {
    "geoplex.notifier.alerts_received": "geoplex_notifier_alerts_received_total",
    "geoplex.notifier.notifications": "geoplex_notifier_notifications_total",
    "geoplex.notifier.notifications_failed": "geoplex_notifier_notifications_failed_total",
    "geoplex.notifier.notification_requests": "geoplex_notifier_notification_requests_total",
    "geoplex.notifier.notification_requests_failed":
        "geoplex_notifier_notification_requests_failed_total",
    "geoplex.notifier.notifications_claimed_elsewhere":
        "geoplex_notifier_notifications_claimed_elsewhere_total",
}
GAUGES = {
    "geoplex.notifier.alerts": "geoplex_notifier_alerts",
    "geoplex.notifier.silences": "geoplex_notifier_silences",
    "geoplex.notifier.aggregation_groups": "geoplex_notifier_aggregation_groups",
}


def register(dispatcher: Dispatcher) -> Callable[[ServiceMetrics], None]:
    def reader(name: str) -> Callable[[], Readings]:
        def read() -> Readings:
            return [(s.value, dict(s.labels)) for s in dispatcher.metrics() if s.name == name]
        return read

    def hook(metrics: ServiceMetrics) -> None:
        for exported, name in COUNTERS.items():
            metrics.counter(exported, reader(name), unit="{count}",
                            description=f"the notifier's {name.removesuffix('_total')}")
        for exported, name in GAUGES.items():
            metrics.gauge(exported, reader(name), unit="{count}",
                          description=f"what the notifier holds now: {name}")
    return hook
