"""Sample notifications for the channel unit tests: one group of HighErrorRatio alerts."""

from __future__ import annotations

from geoplex.servers.notifier.notification import Kind, NotifiedAlert, Notification

STARTS = 1_700_000_000.25  # 2023-11-14T22:13:20.25Z
ENDS = 1_700_000_600.0  # 2023-11-14T22:23:20Z
GROUP_KEY = '{}:{alertname="HighErrorRatio"}'


def alert(instance: str, status: str = "firing") -> NotifiedAlert:
    return NotifiedAlert(
        labels={"alertname": "HighErrorRatio", "service": "api", "instance": instance},
        annotations={"summary": f"5xx ratio above 5% on {instance}"},
        status=status, starts_at=STARTS, ends_at=ENDS if status == "resolved" else None,
        generator_url=f"http://prometheus:9090/graph?instance={instance}")


def notification(*alerts: NotifiedAlert, kind: Kind = Kind.FIRING,
                 silence: dict[str, str] | None = None,
                 group_labels: dict[str, str] | None = None,
                 common_labels: dict[str, str] | None = None) -> Notification:
    chosen = alerts or (alert("a"), alert("b"))
    firing = any(a.status == "firing" for a in chosen)
    return Notification(
        receiver="ops", kind=kind,
        status="firing" if firing and kind is not Kind.RESOLVED else "resolved",
        group_key=GROUP_KEY,
        group_labels={"alertname": "HighErrorRatio"} if group_labels is None else group_labels,
        common_labels=({"alertname": "HighErrorRatio", "service": "api"}
                       if common_labels is None else common_labels),
        common_annotations={}, alerts=tuple(chosen), external_url="http://notifier:9093",
        silence=silence or {})
