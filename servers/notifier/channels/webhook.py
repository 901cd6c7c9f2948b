"""The webhook channel: Alertmanager's webhook payload, version "4", POSTed as JSON.

Fields (Alertmanager's ``webhook_configs``): ``url`` | ``url_file``, ``send_resolved``
(default true), ``max_alerts`` (default 0: all), ``timeout`` (default "10s"),
``http_config`` (see :mod:`.httpclient`) with our ``hmac_secret`` | ``hmac_secret_file``.

Payload (Alertmanager's ``notify/webhook`` Message)::

    {"receiver", "status", "alerts": [{"status", "labels", "annotations", "startsAt",
     "endsAt", "generatorURL", "fingerprint"}], "groupLabels", "commonLabels",
     "commonAnnotations", "externalURL", "version": "4", "groupKey", "truncatedAlerts"}

Times are RFC 3339 in UTC; ``endsAt`` of an alert still firing is Go's zero time,
``"0001-01-01T00:00:00Z"``. With ``max_alerts`` only the first alerts are sent and
``truncatedAlerts`` counts the rest (plus any the dispatcher already left out).

Headers: ``Content-Type: application/json``, ``Idempotency-Key: <key>`` (the same for a
repeat of the same notification: a receiver that remembers keys can drop repeats), and,
when ``http_config.hmac_secret`` (or ``hmac_secret_file``) is set, a signature.

Signature scheme (like Stripe's, GitHub's ``X-Hub-Signature-256``)::

    X-Geoplex-Timestamp: <unix seconds when sent>
    X-Geoplex-Signature: sha256=<hex HMAC-SHA256(secret, signed)>
    signed = "<timestamp>.<idempotency key>." + <the exact request body bytes>

The secret is the UTF-8 bytes of the configured string. A receiver recomputes the HMAC
over the raw body it read (before parsing the JSON), compares in constant time, and
refuses a timestamp more than five minutes from its clock: a captured request cannot be
replayed later, and within the window the signed idempotency key makes a replay a
repeat it drops. The signature header may hold several comma-separated ``sha256=``
values (a secret being rotated); one matching is enough. :func:`verify_signature` does
all of this.

Outcomes: 2xx delivered; 429, 5xx, connection errors and timeouts retryable; any other
answer (4xx, an unfollowed redirect) not retryable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from ..notification import Notification
from .base import BaseChannel
from .config import Section
from .httpclient import HttpClient, HttpConfig, parse_http_config, status_error
from .render import rfc3339

VERSION = "4"
SIGNATURE_HEADER = "X-Geoplex-Signature"
TIMESTAMP_HEADER = "X-Geoplex-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_TOLERANCE_S = 300.0
_RESERVED = ("Content-Type", IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER)


def payload(n: Notification, *, max_alerts: int = 0, external_url: str = "") -> dict[str, Any]:
    """Alertmanager's webhook message, version 4 (keys in the order Alertmanager writes
    them; label maps sorted by name, as Go writes maps)."""
    alerts = n.alerts if max_alerts <= 0 else n.alerts[:max_alerts]
    return {
        "receiver": n.receiver,
        "status": n.status,
        "alerts": [{
            "status": alert.status,
            "labels": _sorted(alert.labels),
            "annotations": _sorted(alert.annotations),
            "startsAt": rfc3339(alert.starts_at),
            "endsAt": rfc3339(alert.ends_at),
            "generatorURL": alert.generator_url,
            "fingerprint": alert.fingerprint,
        } for alert in alerts],
        "groupLabels": _sorted(n.group_labels),
        "commonLabels": _sorted(n.common_labels),
        "commonAnnotations": _sorted(n.common_annotations),
        "externalURL": n.external_url or external_url,
        "version": VERSION,
        "groupKey": n.group_key,
        "truncatedAlerts": n.truncated_alerts + len(n.alerts) - len(alerts),
    }


def _sorted(labels: Mapping[str, str]) -> dict[str, str]:
    """Keys in order, as Go's encoding/json writes a map."""
    return {name: labels[name] for name in sorted(labels)}


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def _signed(timestamp: str, idempotency_key: str, body: bytes) -> bytes:
    return f"{timestamp}.{idempotency_key}.".encode() + body


def signature(secret: str | bytes, timestamp: str, idempotency_key: str, body: bytes) -> str:
    """The ``X-Geoplex-Signature`` value: ``sha256=<hex>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, _signed(timestamp, idempotency_key, body), hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def sign(secret: str | bytes, idempotency_key: str, body: bytes,
         now: float | None = None) -> dict[str, str]:
    """The timestamp and signature headers for ``body``."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(secret, timestamp, idempotency_key, body)}


def verify_signature(secret: str | bytes, body: bytes, headers: Mapping[str, str], *,
                     tolerance_s: float = SIGNATURE_TOLERANCE_S,
                     now: float | None = None) -> bool:
    """True when ``headers`` (any mapping, names in any case) carry a valid signature of
    the raw ``body`` by ``secret``, made within ``tolerance_s`` of ``now``."""
    found = {name.lower(): value for name, value in headers.items()}
    timestamp = found.get(TIMESTAMP_HEADER.lower(), "").strip()
    given = found.get(SIGNATURE_HEADER.lower(), "")
    key = found.get(IDEMPOTENCY_HEADER.lower(), "").strip()
    if not timestamp.isdigit() or not given:
        return False
    clock = time.time() if now is None else now
    if abs(clock - int(timestamp)) > tolerance_s:
        return False
    expected = signature(secret, timestamp, key, body)
    matched = False
    for candidate in given.split(","):
        # no early exit: every candidate is compared
        matched |= hmac.compare_digest(candidate.strip().encode(), expected.encode())
    return matched


class WebhookChannel(BaseChannel):
    """POSTs Alertmanager's v4 payload to ``url``."""

    integration = "webhook"

    def __init__(self, receiver: str, index: int, *, url: str, send_resolved: bool = True,
                 max_alerts: int = 0, http: HttpConfig | None = None,
                 external_url: str = "") -> None:
        super().__init__(receiver, index, send_resolved=send_resolved)
        self.url = url
        self.max_alerts = max_alerts
        self.external_url = external_url
        self.http = http if http is not None else HttpConfig()
        self._client = HttpClient(self.http, "webhook")

    @classmethod
    def from_config(cls, section: Section, *, external_url: str = "") -> WebhookChannel:
        url = section.secret("url", "url_file")  # a webhook URL often embeds a token
        if not url:
            raise section.error("url", "is required")
        section.check_url("url_file" if section.has("url_file") else "url", url)
        send_resolved = section.boolean("send_resolved", True)
        max_alerts = section.integer("max_alerts", 0)
        timeout_s = section.duration("timeout", 10.0)
        http = parse_http_config(section.section("http_config"), reserved=_RESERVED,
                                 allow_hmac=True, timeout_s=timeout_s)
        section.finish()
        return cls(section.receiver, section.index or 0, url=url, send_resolved=send_resolved,
                   max_alerts=max_alerts, http=http, external_url=external_url)

    def request(self, n: Notification, idempotency_key: str,
                now: float | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and the headers this channel sends for ``n``."""
        body = encode(payload(n, max_alerts=self.max_alerts, external_url=self.external_url))
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: idempotency_key}
        if self.http.hmac_secret:
            headers.update(sign(self.http.hmac_secret, idempotency_key, body, now))
        return body, headers

    async def deliver(self, n: Notification, idempotency_key: str) -> None:
        body, headers = self.request(n, idempotency_key)
        status, _ = await self._client.post(self.url, body, headers)
        if not 200 <= status < 300:
            raise status_error("webhook", status)

    async def release(self) -> None:
        await self._client.close()
