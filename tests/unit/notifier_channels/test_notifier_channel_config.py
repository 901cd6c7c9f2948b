"""build_channels reads Alertmanager receivers strictly: every error names the receiver,
the config list and index, and the field; defaults are Alertmanager's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from geoplex.servers.notifier.channels import (ChannelConfigError, EmailChannel,
                                               PagerDutyChannel, WebhookChannel,
                                               build_channels)
from geoplex.servers.notifier.channels.config import parse_duration
from geoplex.servers.notifier.channels.pagerduty import DEFAULT_URL

EMAIL = {"to": "oncall@example.org", "from": "alerts@geoplex.dev",
         "smarthost": "smtp.example.org:587"}
PAGERDUTY = {"routing_key": "0123456789abcdef0123456789abcdef"}
WEBHOOK = {"url": "https://hooks.example.org/alerts"}


def config_error(receiver: dict[str, Any]) -> ChannelConfigError:
    with pytest.raises(ChannelConfigError) as caught:
        build_channels(receiver)
    return caught.value


def where(error: ChannelConfigError) -> tuple[str, str, int | None, str]:
    return error.receiver, error.config, error.index, error.field


def test_builds_channels_in_order_with_alertmanager_defaults() -> None:
    channels = build_channels({"name": "ops", "webhook_configs": [WEBHOOK],
                               "email_configs": [EMAIL, {**EMAIL, "to": "b@example.org"}],
                               "pagerduty_configs": [PAGERDUTY]})
    assert [(c.integration, getattr(c, "index")) for c in channels] == [
        ("email", 0), ("email", 1), ("pagerduty", 0), ("webhook", 0)]
    email, _, pagerduty, webhook = channels
    assert isinstance(email, EmailChannel)
    assert email.require_tls is True and email.send_resolved is False
    assert (email.host, email.port, email.hello) == ("smtp.example.org", 587, "localhost")
    assert email.text is True and email.html is False
    assert isinstance(pagerduty, PagerDutyChannel)
    assert pagerduty.url == DEFAULT_URL and pagerduty.send_resolved is True
    assert isinstance(webhook, WebhookChannel)
    assert webhook.send_resolved is True and webhook.max_alerts == 0
    assert webhook.http.hmac_secret == ""
    assert all(c.receiver == "ops" for c in channels if isinstance(c, EmailChannel))


def test_receiver_without_integrations_has_no_channels() -> None:
    assert build_channels({"name": "blackhole"}) == []


def test_unknown_field_names_receiver_index_and_field() -> None:
    error = config_error({"name": "ops", "webhook_configs": [WEBHOOK,
                                                              {**WEBHOOK, "max_alert": 5}]})
    assert where(error) == ("ops", "webhook_configs", 1, "max_alert")
    assert str(error) == ("receiver 'ops': webhook_configs[1].max_alert: unknown field "
                          "(did you mean max_alerts?)")


def test_bad_smarthost_is_named() -> None:
    error = config_error({"name": "mail", "email_configs": [{**EMAIL, "smarthost": "smtp"}]})
    assert where(error) == ("mail", "email_configs", 0, "smarthost")
    assert 'expected "host:port"' in str(error)


@pytest.mark.parametrize("missing", ["to", "from", "smarthost"])
def test_email_required_fields(missing: str) -> None:
    config = {k: v for k, v in EMAIL.items() if k != missing}
    error = config_error({"name": "ops", "email_configs": [config]})
    assert where(error) == ("ops", "email_configs", 0, missing)
    assert "is required" in str(error)


@pytest.mark.parametrize(("fields", "field", "reason"), [
    ({"require_tls": "yes"}, "require_tls", "expected true or false"),
    ({"to": "not an address"}, "to", "expected email addresses"),
    ({"auth_password": "pw"}, "auth_username", "is required with a password"),
    ({"auth_username": "u", "auth_password": "pw", "auth_password_file": "/x"},
     "auth_password_file", "set only one"),
    ({"tls_config": {"insecure_skip_verify": 1}}, "tls_config.insecure_skip_verify",
     "expected true or false"),
    ({"tls_config": {"ca_file": "/nonexistent/ca.pem"}}, "tls_config.ca_file", "cannot load"),
    ({"tls_config": {"server_nam": "x"}}, "tls_config.server_nam", "unknown field"),
    ({"headers": {"Message-ID": "<x@y>"}}, "headers.Message-ID", "set by the channel"),
    ({"headers": {"Subject": "{{ .CommonLabels.alertname }}"}}, "headers.Subject",
     "Go templates are not supported"),
    ({"text": False}, "text", "nothing to send"),
    ({"auth_secret": "s"}, "auth_secret", "not supported"),
])
def test_email_bad_values(fields: dict[str, Any], field: str, reason: str) -> None:
    error = config_error({"name": "ops", "email_configs": [{**EMAIL, **fields}]})
    assert where(error) == ("ops", "email_configs", 0, field)
    assert reason in str(error)


@pytest.mark.parametrize(("fields", "field", "reason"), [
    ({"routing_key": None}, "routing_key", "is required"),
    ({"severity": "high"}, "severity", "expected one of critical, error, warning, info"),
    ({"url": "ftp://events"}, "url", "http:// or https://"),
    ({"service_key": "abc"}, "service_key", "Events API v1 is not supported"),
    ({"links": [{"text": "no href"}]}, "links[0].href", "is required"),
    ({"details": {"n": 1}}, "details.n", "expected a string"),
    ({"http_config": {"hmac_secret": "s"}}, "http_config.hmac_secret",
     "only webhook receivers sign"),
    ({"timeout": "soon"}, "timeout", 'expected a duration like "10s"'),
])
def test_pagerduty_bad_values(fields: dict[str, Any], field: str, reason: str) -> None:
    config = {k: v for k, v in {**PAGERDUTY, **fields}.items() if v is not None}
    error = config_error({"name": "pd", "pagerduty_configs": [config]})
    assert where(error) == ("pd", "pagerduty_configs", 0, field)
    assert reason in str(error)


@pytest.mark.parametrize(("fields", "field", "reason"), [
    ({"url": None}, "url", "is required"),
    ({"url": "hooks.example.org"}, "url", "http:// or https://"),
    ({"max_alerts": -1}, "max_alerts", "at least 0"),
    ({"max_alerts": "5"}, "max_alerts", "expected an integer"),
    ({"send_resolved": "true"}, "send_resolved", "expected true or false"),
    ({"http_config": {"hmac_secret": "a", "hmac_secret_file": "/x"}},
     "http_config.hmac_secret_file", "set only one"),
    ({"http_config": {"hmac_secret_file": "/nonexistent/secret"}},
     "http_config.hmac_secret_file", "cannot read"),
    ({"http_config": {"headers": {"Idempotency-Key": "x"}}},
     "http_config.headers.Idempotency-Key", "set by the channel"),
    ({"http_config": {"headers": {"x-geoplex-signature": "x"}}},
     "http_config.headers.x-geoplex-signature", "set by the channel"),
    ({"http_config": {"proxy_url": "http://proxy"}}, "http_config.proxy_url", "not supported"),
    ({"http_config": {"basic_auth": {"password": "p"}}}, "http_config.basic_auth.username",
     "is required"),
    ({"http_config": {"basic_auth": {"username": "u"}, "authorization": {"credentials": "t"}}},
     "http_config.authorization", "set only one"),
])
def test_webhook_bad_values(fields: dict[str, Any], field: str, reason: str) -> None:
    config = {k: v for k, v in {**WEBHOOK, **fields}.items() if v is not None}
    error = config_error({"name": "hooks", "webhook_configs": [config]})
    assert where(error) == ("hooks", "webhook_configs", 0, field)
    assert reason in str(error)


def test_webhook_url_is_not_echoed_in_errors() -> None:
    error = config_error({"name": "hooks", "webhook_configs": [{"url": "slack/T0/B0/sekrit"}]})
    assert "sekrit" not in str(error)


def test_secrets_read_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "hmac"
    secret.write_text("  s3cret\n")
    key = tmp_path / "routing"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    url = tmp_path / "url"
    url.write_text("https://hooks.example.org/T0/sekrit\n")
    pagerduty, webhook = build_channels({"name": "ops", "pagerduty_configs": [
        {"routing_key_file": str(key)}], "webhook_configs": [
        {"url_file": str(url), "http_config": {"hmac_secret_file": str(secret)}}]})
    assert isinstance(webhook, WebhookChannel) and isinstance(pagerduty, PagerDutyChannel)
    assert webhook.http.hmac_secret == "s3cret"
    assert webhook.url == "https://hooks.example.org/T0/sekrit"
    assert pagerduty.routing_key == "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(("receiver", "expected"), [
    ({"email_configs": []}, ("", "", None, "name")),
    ({"name": "ops", "slack_configs": [{}]}, ("ops", "", None, "slack_configs")),
    ({"name": "ops", "email_config": [EMAIL]}, ("ops", "", None, "email_config")),
    ({"name": "ops", "email_configs": EMAIL}, ("ops", "email_configs", None, "")),
    ({"name": "ops", "email_configs": [None]}, ("ops", "email_configs", 0, "")),
])
def test_receiver_level_errors(receiver: dict[str, Any],
                               expected: tuple[str, str, int | None, str]) -> None:
    assert where(config_error(receiver)) == expected


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ChannelConfigError, ValueError)


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10.0), ("1m30s", 90.0),
                                               ("500ms", 0.5), ("2h", 7200.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "s", "10 s", "1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
