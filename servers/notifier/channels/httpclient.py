"""The HTTP side of the PagerDuty and webhook channels: ``http_config`` (Prometheus's
names where there is one) and one aiohttp session per channel.

``http_config`` fields: ``headers`` (extra request headers), ``tls_config`` (ca_file,
cert_file, key_file, insecure_skip_verify), ``basic_auth`` (username, password |
password_file), ``authorization`` (type, default Bearer; credentials |
credentials_file), ``follow_redirects`` (default true), and for webhooks only
``hmac_secret`` | ``hmac_secret_file`` (ours: see :mod:`.webhook`).

Errors never carry the URL: webhook URLs often embed a token (Alertmanager redacts
them too).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

import aiohttp

from ..notification import DeliveryError
from .config import Section, tls_context

MAX_RESPONSE_BYTES = 64 * 1024
DEFAULT_TIMEOUT_S = 10.0
USER_AGENT = "Geoplex-Notifier/1"


@dataclass(frozen=True)
class HttpConfig:
    headers: dict[str, str] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None
    basic_auth: tuple[str, str] | None = None
    authorization: str = ""  # the whole header value, "Bearer <token>"
    follow_redirects: bool = True
    hmac_secret: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S


def parse_http_config(section: Section | None, *, reserved: tuple[str, ...],
                      allow_hmac: bool, timeout_s: float = DEFAULT_TIMEOUT_S) -> HttpConfig:
    """``http_config`` read from ``section`` (defaults when None). ``reserved`` are the
    headers the channel sets itself, which ``headers`` may not override."""
    if section is None:
        return HttpConfig(timeout_s=timeout_s)
    headers = section.string_map("headers")
    taken = {name.lower() for name in reserved} | {"content-length", "host"}
    for name in headers:
        if name.lower() in taken:
            raise section.error(f"headers.{name}", "is set by the channel itself")
    tls = tls_context(section.section("tls_config"))
    basic: tuple[str, str] | None = None
    if (auth := section.section("basic_auth")) is not None:
        username = auth.string("username", required=True)
        password = auth.secret("password", "password_file")
        auth.finish()
        basic = (username, password)
    authorization = ""
    if (authz := section.section("authorization")) is not None:
        kind = authz.string("type", "Bearer")
        credentials = authz.secret("credentials", "credentials_file")
        authz.finish()
        if not credentials:
            raise authz.error("credentials", "is required")
        if kind.lower() == "basic":
            raise authz.error("type", "use basic_auth for Basic authentication")
        authorization = f"{kind} {credentials}"
    if basic is not None and authorization:
        raise section.error("authorization", "set only one of basic_auth and authorization")
    if any(name.lower() == "authorization" for name in headers) and (basic or authorization):
        raise section.error("headers.Authorization", "conflicts with the configured auth")
    follow = section.boolean("follow_redirects", True)
    secret = ""
    if allow_hmac:
        secret = section.secret("hmac_secret", "hmac_secret_file")
    else:
        section.forbid("hmac_secret", "only webhook receivers sign their requests")
        section.forbid("hmac_secret_file", "only webhook receivers sign their requests")
    for unsupported in ("proxy_url", "oauth2", "bearer_token", "bearer_token_file"):
        section.forbid(unsupported, "not supported")
    section.finish()
    return HttpConfig(headers=headers, tls=tls, basic_auth=basic, authorization=authorization,
                      follow_redirects=follow, hmac_secret=secret, timeout_s=timeout_s)


class HttpClient:
    """One aiohttp session, made on first use (it needs the running loop) and closed by
    :meth:`close`."""

    def __init__(self, config: HttpConfig, what: str) -> None:
        self.config = config
        self.what = what  # "PagerDuty", "webhook": for error messages
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            config = self.config
            headers = {"User-Agent": USER_AGENT, **config.headers}
            if config.authorization:
                headers["Authorization"] = config.authorization
            auth = aiohttp.BasicAuth(*config.basic_auth) if config.basic_auth else None
            connector = aiohttp.TCPConnector(ssl=config.tls if config.tls is not None else True)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=headers, auth=auth, trust_env=False,
                timeout=aiohttp.ClientTimeout(total=config.timeout_s))
        return self._session

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST ``body``; (status, the start of the response body). Connection failures
        and timeouts raise a retryable DeliveryError; a certificate the configured trust
        refuses a non-retryable one (a retry will not change it)."""
        session = self._open()
        try:
            async with session.post(url, data=body, headers=headers,
                                    allow_redirects=self.config.follow_redirects) as response:
                data = await response.content.read(MAX_RESPONSE_BYTES)
                return response.status, data
        except aiohttp.ClientConnectorCertificateError as err:
            raise DeliveryError(f"{self.what}: TLS certificate refused: {err.certificate_error}",
                                retryable=False) from err
        except (TimeoutError, asyncio.TimeoutError) as err:
            raise DeliveryError(f"{self.what}: no answer within {self.config.timeout_s:g}s",
                                retryable=True) from err
        except (aiohttp.ClientError, OSError) as err:
            raise DeliveryError(f"{self.what}: {type(err).__name__}: {err}",
                                retryable=True) from err

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def status_error(what: str, status: int, detail: str = "") -> DeliveryError:
    """The DeliveryError for a non-2xx answer: 429 and 5xx are retryable, the rest not."""
    retryable = status == 429 or status >= 500
    message = f"{what} answered HTTP {status}"
    if detail:
        message += f": {detail}"
    return DeliveryError(message, retryable=retryable)
