"""The PagerDuty channel: PagerDuty Events API v2 (``POST /v2/enqueue``), as
Alertmanager's ``notify/pagerduty`` sends it.

Fields (Alertmanager's ``pagerduty_configs``, values literal: no templates):
``routing_key`` | ``routing_key_file``, ``url`` (default the Events API),
``send_resolved`` (default true), ``severity``, ``client`` (default "Geoplex notifier"),
``client_url`` (default the notification's external URL), ``source``, ``class``,
``component``, ``group``, ``details``, ``links`` [{href, text}], ``images`` [{src, alt,
href}], ``http_config`` (see :mod:`.httpclient`; no HMAC); ours: ``timeout`` (default
"10s"). ``service_key`` (Events API v1) is refused.

The event::

    {"routing_key", "dedup_key", "event_action": "trigger" | "resolve",
     "payload": {"summary", "source", "severity", "timestamp", "class", "component",
                 "group", "custom_details"},
     "client", "client_url", "images", "links"}

- ``dedup_key`` is the SHA-256 hex of the group key (Alertmanager's ``Key.Hash()``), so
  every notification of one group lands on one incident, and the resolve closes it.
- ``event_action`` is "resolve" when the group's status is resolved, else "trigger"
  (an expired silence whose alerts still fire triggers, its summary says so).
- ``summary`` is the email subject (``[FIRING:2] HighErrorRatio (api)``), at most 1024
  characters; ``severity`` the configured one, else the group's common ``severity``
  label when it is one of PagerDuty's (critical, error, warning, info), else "error";
  ``source`` the configured one, else ``client``; ``timestamp`` when the earliest firing
  alert started (for a resolve, when the last one ended).
- ``custom_details``: Alertmanager's defaults ``firing``, ``resolved`` (the alerts as
  text), ``num_firing``, ``num_resolved``, the silence for an expired one, and the
  configured ``details`` over them. An event over PagerDuty's 512 kB limit has its
  details replaced by a note, as Alertmanager does.
- ``links``: the configured ones, then each firing alert's generator URL (at most 10).
  Fields left empty are left out (Alertmanager's ``omitempty``).

Outcomes: 2xx (202 Accepted) delivered; 429 and 5xx retryable (PagerDuty's retry
guidance); 400 not retryable, with PagerDuty's message and errors; other 4xx not
retryable; connection errors and timeouts retryable.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..notification import Kind, Notification
from .base import BaseChannel
from .config import Section
from .httpclient import HttpClient, HttpConfig, parse_http_config, status_error
from .render import alerts_text, firing, resolved, rfc3339, subject, truncate

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_CLIENT = "Geoplex notifier"
SEVERITIES = ("critical", "error", "warning", "info")
MAX_SUMMARY = 1024
MAX_EVENT_BYTES = 512_000
MAX_ALERT_LINKS = 10


def dedup_key(group_key: str) -> str:
    """Alertmanager's ``notify.Key.Hash()``: SHA-256 hex of the group key."""
    return hashlib.sha256(group_key.encode()).hexdigest()


class PagerDutyChannel(BaseChannel):
    """Sends each notification as one Events API v2 event."""

    integration = "pagerduty"

    def __init__(self, receiver: str, index: int, *, routing_key: str, url: str = DEFAULT_URL,
                 send_resolved: bool = True, severity: str = "", client: str = DEFAULT_CLIENT,
                 client_url: str = "", source: str = "", component: str = "", group: str = "",
                 event_class: str = "", details: dict[str, str] | None = None,
                 links: list[dict[str, str]] | None = None,
                 images: list[dict[str, str]] | None = None,
                 http: HttpConfig | None = None, external_url: str = "") -> None:
        super().__init__(receiver, index, send_resolved=send_resolved)
        self.external_url = external_url
        self.routing_key = routing_key
        self.url = url
        self.severity = severity
        self.client = client
        self.client_url = client_url
        self.source = source
        self.component = component
        self.group = group
        self.event_class = event_class
        self.details = dict(details or {})
        self.links = list(links or [])
        self.images = list(images or [])
        self._client = HttpClient(http if http is not None else HttpConfig(), "PagerDuty")

    @classmethod
    def from_config(cls, section: Section, *, external_url: str = "") -> PagerDutyChannel:
        section.forbid("service_key", "the Events API v1 is not supported; use routing_key")
        section.forbid("service_key_file",
                       "the Events API v1 is not supported; use routing_key_file")
        routing_key = section.secret("routing_key", "routing_key_file")
        if not routing_key:
            raise section.error("routing_key", "is required")
        url = section.url("url", DEFAULT_URL)
        links = []
        for item in section.sections("links"):
            href = item.string("href", required=True)
            item.check_url("href", href)
            links.append({"href": href, "text": item.string("text")})
            item.finish()
        images = []
        for item in section.sections("images"):
            src = item.string("src", required=True)
            item.check_url("src", src)
            image = {"src": src, "alt": item.string("alt"), "href": item.string("href")}
            if image["href"]:
                item.check_url("href", image["href"])
            images.append(image)
            item.finish()
        channel = cls(
            section.receiver, section.index or 0, routing_key=routing_key, url=url,
            send_resolved=section.boolean("send_resolved", True),
            severity=section.choice("severity", SEVERITIES),
            client=section.string("client", DEFAULT_CLIENT),
            client_url=section.url("client_url"), external_url=external_url,
            source=section.string("source"), component=section.string("component"),
            group=section.string("group"), event_class=section.string("class"),
            details=section.string_map("details"), links=links, images=images,
            http=parse_http_config(section.section("http_config"), reserved=("Content-Type",),
                                   allow_hmac=False,
                                   timeout_s=section.duration("timeout", 10.0)))
        section.finish()
        return channel

    def event(self, n: Notification) -> dict[str, Any]:
        """The Events API v2 event for ``n``."""
        on, off = firing(n), resolved(n)
        action = "resolve" if n.status == "resolved" else "trigger"
        severity = self.severity
        if not severity:
            label = n.common_labels.get("severity", "")
            severity = label if label in SEVERITIES else "error"
        if action == "trigger":
            started = [alert.starts_at for alert in on] or [a.starts_at for a in n.alerts]
            moment = min(started) if started else None
        else:
            ended = [alert.ends_at for alert in n.alerts if alert.ends_at is not None]
            moment = max(ended) if ended else None
        details = {"firing": alerts_text(on), "resolved": alerts_text(off),
                   "num_firing": str(len(on)), "num_resolved": str(len(off))}
        if n.kind is Kind.SILENCE_EXPIRED:
            details.update({f"silence_{name}": value for name, value in n.silence.items()})
        details.update(self.details)
        body: dict[str, Any] = {
            "routing_key": self.routing_key,
            "dedup_key": dedup_key(n.group_key),
            "event_action": action,
            "payload": _without_empty({
                "summary": truncate(subject(n), MAX_SUMMARY)[0],
                "source": self.source or self.client,
                "severity": severity,
                "timestamp": rfc3339(moment) if moment is not None else "",
                "class": self.event_class,
                "component": self.component,
                "group": self.group,
                "custom_details": details,
            }, keep=("summary", "source", "severity")),
        }
        links = list(self.links)
        sources: list[str] = []
        for alert in on:
            url = alert.generator_url
            if url and url not in sources and len(sources) < MAX_ALERT_LINKS:
                sources.append(url)
                name = alert.labels.get("alertname", "alert")
                links.append({"href": url, "text": f"Source: {name}"})
        client_url = self.client_url or n.external_url or self.external_url
        body.update(_without_empty({"client": self.client, "client_url": client_url,
                                    "images": list(self.images), "links": links}))
        return body

    @staticmethod
    def encode(event: dict[str, Any]) -> bytes:
        data = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        if len(data) > MAX_EVENT_BYTES:
            note = (f"Custom details have been removed because the original event exceeds "
                    f"the maximum size of {MAX_EVENT_BYTES // 1000} kB")
            event = {**event, "payload": {**event["payload"], "custom_details": {"error": note}}}
            data = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        return data

    async def deliver(self, n: Notification, idempotency_key: str) -> None:
        body = self.encode(self.event(n))
        status, answer = await self._client.post(self.url, body,
                                                 {"Content-Type": "application/json"})
        if 200 <= status < 300:
            return
        raise status_error("PagerDuty", status, _pagerduty_message(answer) if status == 400 else "")

    async def release(self) -> None:
        await self._client.close()


def _without_empty(fields: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value or name in keep}


def _pagerduty_message(answer: bytes) -> str:
    """PagerDuty's 400 body, ``{"status", "message", "errors": [...]}``, as
    ``message: error, error`` (Alertmanager's errDetails)."""
    try:
        parsed = json.loads(answer)
    except ValueError:
        return answer[:200].decode(errors="replace")
    if not isinstance(parsed, dict):
        return ""
    message = str(parsed.get("message", ""))
    errors = parsed.get("errors")
    if isinstance(errors, list) and errors:
        message += ": " + ", ".join(str(error) for error in errors)
    return message
