"""What the notifier's dispatcher hands a channel: one notification for one group of
alerts and one receiver (Alertmanager's model; the webhook channel sends it as
Alertmanager's webhook payload, version 4). Pure data: no gRPC, no I/O.

The dispatcher (routing tree, grouping, inhibition, silences, the notification log)
builds these; channels (:mod:`.channels`: email, pagerduty, webhook) deliver them and
raise :class:`DeliveryError` when they cannot, saying whether a retry may help.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field


class Kind(enum.Enum):
    FIRING = "firing"
    RESOLVED = "resolved"
    # a silence expired while alerts it muted still fire (alertmanager#730)
    SILENCE_EXPIRED = "silence_expired"


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable hex hash of a label set (sorted pairs; not Alertmanager's FNV, but as
    stable)."""
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(labels):
        h.update(name.encode())
        h.update(b"\xff")
        h.update(labels[name].encode())
        h.update(b"\xff")
    return h.hexdigest()


@dataclass(frozen=True)
class NotifiedAlert:
    """One alert as notified: ``status`` "firing" or "resolved"; times in seconds since
    the epoch (``ends_at`` None while it fires)."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    status: str
    starts_at: float
    ends_at: float | None
    generator_url: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)


@dataclass(frozen=True)
class Notification:
    """One message to one receiver about one group of alerts.

    ``status`` is "firing" when any alert of the group fires, else "resolved" (the
    webhook payload's ``status``); ``kind`` says why it is sent. ``group_key`` identifies
    the group (route path + group labels), ``idempotency_key`` this notification: the
    same group, kind and alert states give the same key, so a receiver (and the notifier
    nodes among themselves) can drop a repeat.
    """

    receiver: str
    kind: Kind
    status: str
    group_key: str
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    alerts: tuple[NotifiedAlert, ...]
    external_url: str = ""
    truncated_alerts: int = 0
    # for SILENCE_EXPIRED: the silence that ended, and who made it and why
    silence: Mapping[str, str] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{self.receiver}\x00{self.group_key}\x00{self.kind.value}\x00".encode())
        for alert in sorted(self.alerts, key=lambda a: a.fingerprint):
            h.update(f"{alert.fingerprint}:{alert.status}:{alert.starts_at}\x00".encode())
        h.update(self.silence.get("id", "").encode())
        return h.hexdigest()


class DeliveryError(Exception):
    """A channel could not deliver; ``retryable`` False when a retry cannot help (a
    receiver that refuses the message as malformed, a bad address)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
