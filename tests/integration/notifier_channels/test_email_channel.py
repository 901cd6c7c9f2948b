"""The email channel against a real SMTP server (aiosmtpd in this process): plain, and
with STARTTLS + AUTH over a certificate made by openssl; refusals and a server that is
down map to retryable or not as SMTP's reply classes say."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from channel_receivers import SmtpServer, alert, make_certificate, notification
from geoplex.infra.local import free_port
from geoplex.servers.notifier.channels import build_channels
from geoplex.servers.notifier.channels.email import EmailChannel
from geoplex.servers.notifier.notification import DeliveryError, Kind

USER, PASSWORD = "notifier", "s3cret-pass"


def email_channel(port: int, **fields: Any) -> EmailChannel:
    config = {"to": "oncall@example.org, lead@example.org", "from": "Geoplex <alerts@geoplex.dev>",
              "smarthost": f"127.0.0.1:{port}", "require_tls": False, **fields}
    (channel,) = build_channels({"name": "ops", "email_configs": [config]},
                                external_url="http://notifier:9093")
    assert isinstance(channel, EmailChannel)
    return channel


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    server = await SmtpServer().start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
async def smtp_tls(certificate: tuple[Path, Path]) -> AsyncIterator[SmtpServer]:
    server = await SmtpServer(tls=certificate, user=USER, password=PASSWORD).start()
    yield server
    await server.stop()


async def test_email_arrives_with_alertmanager_subject_body_and_headers(
        smtp: SmtpServer) -> None:
    channel = email_channel(smtp.port, headers={"X-Team": "platform"})
    n = notification()
    await channel.send(n)
    await channel.close()

    (got,) = smtp.received
    assert got.mail_from == "alerts@geoplex.dev"
    assert got.rcpt_tos == ["oncall@example.org", "lead@example.org"]
    assert not got.tls
    message = got.message
    assert message["Subject"] == "[FIRING:2] HighErrorRatio (api)"
    assert message["From"] == "Geoplex <alerts@geoplex.dev>"
    assert message["To"] == "oncall@example.org, lead@example.org"
    assert message["Message-ID"] == f"<{n.idempotency_key}@geoplex.dev>"
    assert message["X-Team"] == "platform"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"]
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    assert body.startswith("[FIRING:2] HighErrorRatio (api)\n")
    assert "Firing (2)" in body
    for instance in ("a", "b"):
        assert f" - instance = {instance}" in body
        assert f" - summary = 5xx ratio above 5% on {instance}" in body
        assert f"Source: http://prometheus:9090/graph?instance={instance}" in body
    assert "Started: 2023-11-14T22:13:20.25Z" in body
    assert "http://notifier:9093" in body


async def test_email_with_html_is_multipart_alternative(smtp: SmtpServer) -> None:
    channel = email_channel(smtp.port, html=True, send_resolved=True)
    await channel.send(notification(alert("a"), alert("b", "resolved")))
    await channel.close()
    (got,) = smtp.received
    assert got.message.get_content_type() == "multipart/alternative"
    text = got.message.get_body(("plain",))
    html = got.message.get_body(("html",))
    assert text is not None and html is not None
    assert "Resolved (1)" in text.get_content()
    assert "Ended: 2023-11-14T22:23:20Z" in text.get_content()
    assert "<h3>Firing (1)</h3>" in html.get_content()
    assert "5xx ratio above 5% on b" in html.get_content()


async def test_email_for_expired_silence_names_the_silence(smtp: SmtpServer) -> None:
    channel = email_channel(smtp.port)
    silence = {"id": "7d1c0f2e", "created_by": "alice", "comment": "deploying api v2"}
    await channel.send(notification(kind=Kind.SILENCE_EXPIRED, silence=silence))
    await channel.close()
    (got,) = smtp.received
    assert got.message["Subject"] == ("[SILENCE EXPIRED] HighErrorRatio (api): silence "
                                      "7d1c0f2e ended, 2 alerts still firing")
    body = got.message.get_content()
    assert "Silence 7d1c0f2e expired." in body
    assert "Created by: alice" in body
    assert "Comment: deploying api v2" in body
    assert "still fire" in body


async def test_email_over_starttls_with_auth(smtp_tls: SmtpServer,
                                             certificate: tuple[Path, Path]) -> None:
    channel = email_channel(smtp_tls.port, require_tls=True, auth_username=USER,
                            auth_password=PASSWORD,
                            tls_config={"ca_file": str(certificate[0])})
    await channel.send(notification())
    await channel.close()
    (got,) = smtp_tls.received
    assert got.tls and got.authenticated
    assert smtp_tls.auth_attempts  # AUTH happened, after STARTTLS (the server requires it)
    assert got.message["Subject"] == "[FIRING:2] HighErrorRatio (api)"


async def test_email_password_from_file(smtp_tls: SmtpServer, certificate: tuple[Path, Path],
                                        tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n")
    channel = email_channel(smtp_tls.port, require_tls=True, auth_username=USER,
                            auth_password_file=str(secret),
                            tls_config={"insecure_skip_verify": True})
    await channel.send(notification())
    await channel.close()
    assert len(smtp_tls.received) == 1


async def test_email_wrong_password_is_not_retryable(smtp_tls: SmtpServer,
                                                     certificate: tuple[Path, Path]) -> None:
    channel = email_channel(smtp_tls.port, require_tls=True, auth_username=USER,
                            auth_password="wrong", tls_config={"ca_file": str(certificate[0])})
    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())
    await channel.close()
    assert caught.value.retryable is False
    assert "535" in str(caught.value)
    assert smtp_tls.received == []


async def test_email_untrusted_certificate_is_not_retryable(smtp_tls: SmtpServer) -> None:
    channel = email_channel(smtp_tls.port, require_tls=True, auth_username=USER,
                            auth_password=PASSWORD)  # system trust: the self-signed fails
    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())
    await channel.close()
    assert caught.value.retryable is False
    assert "certificate" in str(caught.value)


async def test_email_require_tls_refuses_server_without_starttls(smtp: SmtpServer) -> None:
    channel = email_channel(smtp.port, require_tls=True)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())
    await channel.close()
    assert caught.value.retryable is False
    assert "STARTTLS" in str(caught.value)
    assert smtp.received == []


async def test_email_smtp_down_is_retryable() -> None:
    channel = email_channel(free_port())  # nothing listens there
    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())
    await channel.close()
    assert caught.value.retryable is True


async def test_email_permanent_rejection_is_not_retryable(smtp: SmtpServer) -> None:
    smtp.handler.rcpt_reply = "550 5.1.1 mailbox unavailable"
    channel = email_channel(smtp.port)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())
    await channel.close()
    assert caught.value.retryable is False
    assert "550" in str(caught.value)


async def test_email_temporary_rejection_is_retryable(smtp: SmtpServer) -> None:
    smtp.handler.data_reply = "451 4.3.0 try again later"
    channel = email_channel(smtp.port)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())
    await channel.close()
    assert caught.value.retryable is True
    assert "451" in str(caught.value)


async def test_email_drops_resolved_only_notification_by_default(smtp: SmtpServer) -> None:
    channel = email_channel(smtp.port)  # send_resolved defaults to false, as Alertmanager
    await channel.send(notification(alert("a", "resolved"), kind=Kind.RESOLVED))
    await channel.send(notification(alert("a"), alert("b", "resolved")))
    await channel.close()
    (got,) = smtp.received
    assert got.message["Subject"] == "[FIRING:1] HighErrorRatio (api)"
    assert "Resolved" not in got.message.get_content()


async def test_email_closed_channel_refuses_to_send(smtp: SmtpServer) -> None:
    channel = email_channel(smtp.port)
    await channel.close()
    await channel.close()  # idempotent
    with pytest.raises(DeliveryError):
        await channel.send(notification())
    assert smtp.received == []
