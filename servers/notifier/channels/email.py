"""The email channel: one message per notification over SMTP (aiosmtplib), with
STARTTLS and AUTH as Alertmanager's ``notify/email`` does them.

Fields (Alertmanager's ``email_configs``): ``to`` (comma-separated), ``from``,
``smarthost``, ``hello`` (default "localhost"), ``auth_username``, ``auth_password`` |
``auth_password_file``, ``require_tls`` (default true), ``tls_config`` (ca_file,
cert_file, key_file, insecure_skip_verify), ``headers``, ``text`` / ``html`` (switches,
below), ``send_resolved`` (default false, as Alertmanager); ours: ``timeout`` (default
"30s").

- ``smarthost`` "host:port"; port 465 means TLS from the first byte (SMTPS), any other
  a plain connection upgraded with STARTTLS when ``require_tls`` (the default, as in
  Alertmanager; a server that does not offer STARTTLS is then refused).
- AUTH (the best of CRAM-MD5, PLAIN, LOGIN the server offers) when ``auth_username``
  is set, with ``auth_password`` or ``auth_password_file``.
- Subject: Alertmanager's default, ``[FIRING:2] HighErrorRatio (api)``; for an expired
  silence, which silence ended and that its alerts still fire. A ``headers`` entry
  replaces a default header (``Subject`` included).
- Body: text (``text: true``, the default) and/or a simple HTML part (``html: true``);
  both make a multipart/alternative message. (In Alertmanager these are templates; we
  have none, so they are switches.)
- ``Message-ID: <idempotency key@sender's domain>``: a repeat of one notification has
  the same id, so mail clients show it once.

A connection opens per message and closes after it (SMTP servers drop idle ones;
Alertmanager does the same), so :meth:`EmailChannel.close` only stops later sends.

Outcomes: connection errors, timeouts and 4xx (temporary) replies retryable; 5xx
(permanent) replies, refused AUTH and a missing STARTTLS not retryable. When the
server refuses some recipients and accepts others the message counts as delivered (a
retry would send it again to those who got it) and the refusal is logged.
"""

from __future__ import annotations

import logging
import ssl
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, parseaddr

import aiosmtplib

from ..notification import DeliveryError, Notification
from .base import BaseChannel
from .config import Section, tls_context
from .render import html_body, subject, text_body

logger = logging.getLogger(__name__)

SMTPS_PORT = 465
DEFAULT_TIMEOUT_S = 30.0
_PROTECTED = ("message-id", "date", "mime-version", "content-type",
              "content-transfer-encoding")


def parse_smarthost(value: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"``; ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(value)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 < number < 65536 or not host or " " in host:
        raise ValueError(value)
    return host, number


def _addresses(section: Section, key: str, value: str) -> list[str]:
    found = [address for _, address in getaddresses([value])]
    if not found or any("@" not in address for address in found):
        raise section.error(key, f"expected email addresses, got {value!r}")
    return found


class EmailChannel(BaseChannel):
    """Mails each notification to ``to``."""

    integration = "email"

    def __init__(self, receiver: str, index: int, *, to: str, sender: str, smarthost: str,
                 hello: str = "localhost", auth_username: str = "", auth_password: str = "",
                 require_tls: bool = True, tls: ssl.SSLContext | None = None,
                 headers: dict[str, str] | None = None, text: bool = True,
                 html: bool = False, send_resolved: bool = False, external_url: str = "",
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(receiver, index, send_resolved=send_resolved)
        self.host, self.port = parse_smarthost(smarthost)
        self.to = to
        self.sender = sender
        self.recipients = [address for _, address in getaddresses([to])]
        self.envelope_from = parseaddr(sender)[1]
        self.hello = hello
        self.auth_username = auth_username
        self.auth_password = auth_password
        self.require_tls = require_tls
        self.tls = tls
        self.headers = dict(headers or {})
        self.text = text
        self.html = html
        self.external_url = external_url
        self.timeout_s = timeout_s

    @classmethod
    def from_config(cls, section: Section, *, external_url: str = "") -> EmailChannel:
        to = section.string("to", required=True)
        _addresses(section, "to", to)
        sender = section.string("from", required=True)
        if len(_addresses(section, "from", sender)) != 1:
            raise section.error("from", "expected one address")
        smarthost = section.string("smarthost", required=True)
        try:
            parse_smarthost(smarthost)
        except ValueError:
            raise section.error("smarthost", f'expected "host:port", got {smarthost!r}') from None
        username = section.string("auth_username", template_free=False)
        password = section.secret("auth_password", "auth_password_file")
        if password and not username:
            raise section.error("auth_username", "is required with a password")
        section.forbid("auth_secret", "CRAM-MD5 secrets are not supported; use auth_password")
        section.forbid("auth_secret_file", "CRAM-MD5 secrets are not supported")
        section.forbid("auth_identity", "not supported")
        headers = section.string_map("headers")
        for name in headers:
            if name.lower() in _PROTECTED:
                raise section.error(f"headers.{name}", "is set by the channel itself")
        text = section.boolean("text", True)
        html = section.boolean("html", False)
        if not text and not html:
            raise section.error("text", "text and html are both false: nothing to send")
        channel = cls(
            section.receiver, section.index or 0, to=to, sender=sender, smarthost=smarthost,
            hello=section.string("hello", "localhost"), auth_username=username,
            auth_password=password, require_tls=section.boolean("require_tls", True),
            tls=tls_context(section.section("tls_config")), headers=headers, text=text,
            html=html, send_resolved=section.boolean("send_resolved", False),
            external_url=external_url, timeout_s=section.duration("timeout", DEFAULT_TIMEOUT_S))
        section.finish()
        return channel

    def message(self, n: Notification, idempotency_key: str) -> EmailMessage:
        """The message for ``n``."""
        message = EmailMessage()
        domain = self.envelope_from.rpartition("@")[2] or "geoplex.notifier"
        defaults = {"From": self.sender, "To": self.to, "Subject": subject(n)}
        for name, value in defaults.items():
            if not any(name.lower() == given.lower() for given in self.headers):
                message[name] = value
        for name, value in self.headers.items():
            message[name] = value
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = f"<{idempotency_key}@{domain}>"
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
        if self.text:
            message.set_content(text_body(n, self.external_url))
            if self.html:
                message.add_alternative(html_body(n, self.external_url), subtype="html")
        else:
            message.set_content(html_body(n, self.external_url), subtype="html")
        return message

    async def deliver(self, n: Notification, idempotency_key: str) -> None:
        message = self.message(n, idempotency_key)
        smtp = aiosmtplib.SMTP(hostname=self.host, port=self.port, local_hostname=self.hello,
                               timeout=self.timeout_s, use_tls=self.port == SMTPS_PORT,
                               start_tls=False, tls_context=self.tls)
        try:
            await smtp.connect()
            if self.require_tls and self.port != SMTPS_PORT:
                await smtp.ehlo()
                if not smtp.supports_extension("starttls"):
                    raise DeliveryError(
                        f"SMTP server {self.host}:{self.port} does not offer STARTTLS and "
                        "require_tls is true", retryable=False)
                await smtp.starttls()
            if self.auth_username:
                await smtp.login(self.auth_username, self.auth_password)
            refused, _ = await smtp.send_message(message, sender=self.envelope_from,
                                                 recipients=self.recipients)
            if refused:
                logger.warning("notify receiver=%s integration=email[%d]: %d of %d "
                               "recipients refused (%s)", self.receiver, self.index,
                               len(refused), len(self.recipients),
                               ", ".join(str(r.code) for r in refused.values()))
            await smtp.quit()
        except DeliveryError:
            raise
        except aiosmtplib.SMTPRecipientsRefused as err:
            codes = [refusal.code for refusal in err.recipients]
            raise DeliveryError(f"SMTP server refused every recipient ({codes})",
                                retryable=any(400 <= code < 500 for code in codes)) from err
        except aiosmtplib.SMTPResponseException as err:
            raise DeliveryError(f"SMTP {type(err).__name__}: {err.code} {err.message}",
                                retryable=400 <= err.code < 500) from err
        except aiosmtplib.SMTPNotSupported as err:
            raise DeliveryError(f"SMTP: {err}", retryable=False) from err
        except ssl.SSLCertVerificationError as err:
            raise DeliveryError(f"SMTP: TLS certificate refused: {err.verify_message}",
                                retryable=False) from err
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
            raise DeliveryError(f"SMTP {self.host}:{self.port}: {type(err).__name__}: {err}",
                                retryable=True) from err
        finally:
            smtp.close()

