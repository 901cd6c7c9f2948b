"""Real receivers for the notifier's channels, in this process on free ports: an SMTP
server (aiosmtpd, optionally STARTTLS + AUTH with a certificate made by the ``openssl``
command line), a PagerDuty Events API v2 endpoint that checks every field of the
request, and a webhook receiver that verifies the HMAC signature. Plus sample
notifications."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from geoplex.infra.local import free_port
from geoplex.servers.notifier.channels.webhook import verify_signature
from geoplex.servers.notifier.notification import Kind, NotifiedAlert, Notification

STARTS = 1_700_000_000.25  # 2023-11-14T22:13:20.25Z
ENDS = 1_700_000_600.0  # 2023-11-14T22:23:20Z


def alert(instance: str, status: str = "firing", *, generator_url: str = "") -> NotifiedAlert:
    return NotifiedAlert(
        labels={"alertname": "HighErrorRatio", "service": "api", "instance": instance},
        annotations={"summary": f"5xx ratio above 5% on {instance}"},
        status=status, starts_at=STARTS, ends_at=ENDS if status == "resolved" else None,
        generator_url=generator_url or f"http://prometheus:9090/graph?instance={instance}")


def notification(*alerts: NotifiedAlert, kind: Kind = Kind.FIRING, receiver: str = "ops",
                 silence: dict[str, str] | None = None) -> Notification:
    chosen = alerts or (alert("a"), alert("b"))
    status = "firing" if any(a.status == "firing" for a in chosen) else "resolved"
    if kind is Kind.RESOLVED:
        status = "resolved"
    return Notification(
        receiver=receiver, kind=kind, status=status,
        group_key='{}:{alertname="HighErrorRatio"}',
        group_labels={"alertname": "HighErrorRatio"},
        common_labels={"alertname": "HighErrorRatio", "service": "api"},
        common_annotations={}, alerts=tuple(chosen), external_url="http://notifier:9093",
        silence=silence or {})


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key, by openssl."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                    "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key),
                    "-out", str(cert), "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


# --- SMTP ----------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    authenticated: bool


@dataclass
class SmtpHandler:
    """Records each message; ``rcpt_reply`` / ``data_reply`` answer instead of 250."""

    received: list[Received] = field(default_factory=list)
    rcpt_reply: str = ""
    data_reply: str = ""

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        content = (envelope.original_content or b"").replace(b"\r\n", b"\n")
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos),
                                      parsed, session.ssl is not None,
                                      bool(session.authenticated)))
        return "250 OK: queued"


class SmtpServer:
    """aiosmtpd's SMTP protocol served by this loop on a free port. With ``tls`` it
    offers STARTTLS and requires it, and requires AUTH (``user`` / ``password``)."""

    def __init__(self, *, tls: tuple[Path, Path] | None = None, user: str = "",
                 password: str = "") -> None:
        self.handler = SmtpHandler()
        self.port = free_port()
        self.user = user
        self.password = password
        self.auth_attempts: list[str] = []
        self._tls: ssl.SSLContext | None = None
        if tls is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(str(tls[0]), str(tls[1]))
        self._server: asyncio.Server | None = None

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, auth_data: object) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.auth_attempts.append(mechanism)
        ok = (auth_data.login.decode() == self.user
              and auth_data.password.decode() == self.password)
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 235 / 535

    def _protocol(self) -> SMTP:
        loop = asyncio.get_running_loop()
        if self._tls is None:
            return SMTP(self.handler, hostname="localhost", loop=loop)
        return SMTP(self.handler, hostname="localhost", loop=loop, tls_context=self._tls,
                    require_starttls=True, auth_required=True, auth_require_tls=True,
                    authenticator=self._authenticate)

    async def start(self) -> SmtpServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


# --- PagerDuty -----------------------------------------------------------------------

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # PagerDuty's are 32 characters
_EVENT_KEYS = {"routing_key", "dedup_key", "event_action", "payload", "client", "client_url",
               "links", "images"}
_PAYLOAD_KEYS = {"summary", "source", "severity", "timestamp", "component", "group",
                 "class", "custom_details"}
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def pagerduty_problems(event: object) -> list[str]:
    """What is wrong with ``event`` as an Events API v2 request (empty when nothing)."""
    if not isinstance(event, dict):
        return ["the body is not a JSON object"]
    problems = [f"unknown field {name}" for name in sorted(set(event) - _EVENT_KEYS)]
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        problems.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    if event.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        problems.append("'event_action' is invalid")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not 0 < len(dedup) <= 255):
        problems.append("'dedup_key' must be a string of 1 to 255 characters")
    if event.get("event_action") == "trigger" or "payload" in event:
        problems += _payload_problems(event.get("payload"))
    for name in ("client", "client_url"):
        if name in event and not isinstance(event[name], str):
            problems.append(f"'{name}' must be a string")
    for link in event.get("links", []):
        if not isinstance(link, dict) or set(link) - {"href", "text"} or "href" not in link:
            problems.append("'links' entries are {href, text}")
    for image in event.get("images", []):
        if not isinstance(image, dict) or set(image) - {"src", "href", "alt"} \
                or "src" not in image:
            problems.append("'images' entries are {src, href, alt}")
    return problems


def _payload_problems(payload: object) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    problems = [f"unknown payload field {name}" for name in sorted(set(payload) - _PAYLOAD_KEYS)]
    summary = payload.get("summary")
    if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
        problems.append("'payload.summary' must be 1 to 1024 characters")
    if not isinstance(payload.get("source"), str) or not payload.get("source"):
        problems.append("'payload.source' is missing")
    if payload.get("severity") not in ("critical", "error", "warning", "info"):
        problems.append("'payload.severity' is invalid")
    timestamp = payload.get("timestamp")
    if timestamp is not None and not (isinstance(timestamp, str)
                                      and _TIMESTAMP.match(timestamp)):
        problems.append("'payload.timestamp' is not ISO 8601")
    for name in ("component", "group", "class"):
        if name in payload and not isinstance(payload[name], str):
            problems.append(f"'payload.{name}' must be a string")
    details = payload.get("custom_details")
    if details is not None and not isinstance(details, dict):
        problems.append("'payload.custom_details' must be an object")
    return problems


class PagerDutyServer:
    """POST /v2/enqueue as PagerDuty answers it: 400 with PagerDuty's error body for an
    invalid event, else the next of ``statuses`` (202 once they run out)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v2/enqueue"
        self.events: list[dict[str, Any]] = []
        self.content_types: list[str] = []
        self.statuses: list[int] = []
        self._runner: web.AppRunner | None = None

    async def _enqueue(self, request: web.Request) -> web.Response:
        self.content_types.append(request.headers.get("Content-Type", ""))
        try:
            event = json.loads(await request.read())
        except ValueError:
            return web.json_response({"status": "invalid event", "message": "Event object is invalid",
                                      "errors": ["body is not JSON"]}, status=400)
        problems = pagerduty_problems(event)
        if problems:
            return web.json_response({"status": "invalid event",
                                      "message": "Event object is invalid",
                                      "errors": problems}, status=400)
        self.events.append(event)
        status = self.statuses.pop(0) if self.statuses else 202
        if status == 202:
            return web.json_response({"status": "success", "message": "Event processed",
                                      "dedup_key": event.get("dedup_key", "")}, status=202)
        if status == 429:
            return web.json_response({"status": "throttle event",
                                      "message": "Requests for this service are arriving too "
                                                 "quickly. Please retry later."}, status=429)
        return web.Response(status=status, text="internal error")

    async def start(self) -> PagerDutyServer:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self._enqueue)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# --- webhook -------------------------------------------------------------------------


@dataclass
class Delivery:
    body: bytes
    payload: dict[str, Any]
    headers: dict[str, str]
    signature_ok: bool


class WebhookReceiver:
    """POST /hook: verifies the signature with ``secret`` (401 when it fails), records
    the idempotency keys, and answers the next of ``statuses`` (200 when none left)."""

    def __init__(self, secret: str = "") -> None:
        self.secret = secret
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.deliveries: list[Delivery] = []
        self.refused: list[bytes] = []
        self.idempotency_keys: list[str] = []
        self.statuses: list[int] = []
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        ok = verify_signature(self.secret, body, request.headers) if self.secret else True
        if not ok:
            self.refused.append(body)
            return web.Response(status=401, text="bad signature")
        self.idempotency_keys.append(request.headers.get("Idempotency-Key", ""))
        self.deliveries.append(Delivery(body, json.loads(body), headers, ok))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
