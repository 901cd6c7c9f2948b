"""Subjects, bodies and times the channels share: Alertmanager's default subject, the
expired-silence wording, RFC 3339 as Go writes it; and the channels' pure request
builders (webhook payload and signature, PagerDuty event)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json

import pytest

from channel_samples import GROUP_KEY, alert, notification
from geoplex.servers.notifier.channels import build_channels, verify_signature
from geoplex.servers.notifier.channels.email import EmailChannel, parse_smarthost
from geoplex.servers.notifier.channels.pagerduty import (MAX_EVENT_BYTES, PagerDutyChannel,
                                                         dedup_key)
from geoplex.servers.notifier.channels.render import (html_body, rfc3339, subject,
                                                      text_body, truncate)
from geoplex.servers.notifier.channels.webhook import WebhookChannel, payload, sign
from geoplex.servers.notifier.notification import Kind, NotifiedAlert

SECRET = "whsec-test"
NOW = 1_700_000_100.0


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "0001-01-01T00:00:00Z"),
    (0.0, "1970-01-01T00:00:00Z"),
    (1_700_000_000.25, "2023-11-14T22:13:20.25Z"),
    (1_700_000_000.000001, "2023-11-14T22:13:20.000001Z"),
])
def test_rfc3339_as_go_writes_it(seconds: float | None, text: str) -> None:
    assert rfc3339(seconds) == text


def test_subject_is_alertmanagers_default() -> None:
    assert subject(notification()) == "[FIRING:2] HighErrorRatio (api)"
    assert subject(notification(alert("a"), alert("b", "resolved"))) == \
        "[FIRING:1] HighErrorRatio (api)"
    assert subject(notification(alert("a", "resolved"), kind=Kind.RESOLVED)) == \
        "[RESOLVED] HighErrorRatio (api)"


def test_subject_sorts_values_by_label_name_and_omits_empty_parentheses() -> None:
    n = notification(group_labels={"service": "api", "alertname": "HighErrorRatio"},
                     common_labels={"service": "api", "alertname": "HighErrorRatio"})
    assert subject(n) == "[FIRING:2] HighErrorRatio api"
    n = notification(group_labels={}, common_labels={"zone": "eu", "alertname": "X"})
    assert subject(n) == "[FIRING:2] (X eu)"


def test_expired_silence_says_which_and_that_alerts_still_fire() -> None:
    silence = {"id": "7d1c0f2e", "created_by": "alice", "comment": "deploy",
               "ends_at": "2023-11-14T22:00:00Z"}
    n = notification(alert("a"), kind=Kind.SILENCE_EXPIRED, silence=silence)
    assert subject(n) == ("[SILENCE EXPIRED] HighErrorRatio (api): silence 7d1c0f2e ended, "
                          "1 alert still firing")
    body = text_body(n)
    for line in ("Silence 7d1c0f2e expired.", "Created by: alice", "Comment: deploy",
                 "Ends at: 2023-11-14T22:00:00Z", "Firing (1)"):
        assert line in body
    assert "still fire" in body
    assert "Silence 7d1c0f2e expired." in html_body(n)


def test_html_body_escapes_label_values() -> None:
    evil = NotifiedAlert({"alertname": "<script>"}, {"x": "a&b"}, "firing", 1.0, None,
                         'http://x/"onmouseover')
    page = html_body(notification(evil))
    assert "<script>" not in page.split("<body>", 1)[1]
    assert "&lt;script&gt;" in page and "a&amp;b" in page and "&quot;onmouseover" in page


def test_truncate_marks_the_cut() -> None:
    assert truncate("abc", 3) == ("abc", False)
    assert truncate("abcd", 3) == ("ab…", True)


@pytest.mark.parametrize(("text", "host", "port"), [
    ("smtp.example.org:587", "smtp.example.org", 587), ("[::1]:25", "::1", 25)])
def test_smarthost(text: str, host: str, port: int) -> None:
    assert parse_smarthost(text) == (host, port)


def test_email_message_id_follows_the_idempotency_key() -> None:
    (channel,) = build_channels({"name": "ops", "email_configs": [{
        "to": "a@example.org", "from": "alerts@geoplex.dev", "smarthost": "localhost:25",
        "headers": {"subject": "custom"}}]})
    assert isinstance(channel, EmailChannel)
    n = notification()
    message = channel.message(n, n.idempotency_key)
    assert message["Message-ID"] == f"<{n.idempotency_key}@geoplex.dev>"
    assert message.get_all("Subject") == ["custom"]  # a configured header replaces ours


# --- webhook: payload and signature ---------------------------------------------------


def webhook(**fields: object) -> WebhookChannel:
    (channel,) = build_channels({"name": "ops", "webhook_configs": [
        {"url": "http://hooks.example.org/alerts", "http_config": {"hmac_secret": SECRET},
         **fields}]})
    assert isinstance(channel, WebhookChannel)
    return channel


def test_webhook_payload_v4_fields_and_zero_end_time() -> None:
    message = payload(notification(alert("a"), alert("b", "resolved")))
    assert list(message) == ["receiver", "status", "alerts", "groupLabels", "commonLabels",
                             "commonAnnotations", "externalURL", "version", "groupKey",
                             "truncatedAlerts"]
    assert message["version"] == "4" and message["groupKey"] == GROUP_KEY
    first, second = message["alerts"]
    assert list(first) == ["status", "labels", "annotations", "startsAt", "endsAt",
                           "generatorURL", "fingerprint"]
    assert first["endsAt"] == "0001-01-01T00:00:00Z"
    assert second["endsAt"] == "2023-11-14T22:23:20Z"
    assert first["fingerprint"] == alert("a").fingerprint


def test_webhook_truncation_adds_to_dispatcher_truncation() -> None:
    n = dataclasses.replace(notification(alert("a"), alert("b"), alert("c")),
                            truncated_alerts=4)
    message = payload(n, max_alerts=1)
    assert len(message["alerts"]) == 1 and message["truncatedAlerts"] == 6


def test_signature_is_hmac_sha256_of_timestamp_key_and_body() -> None:
    channel = webhook()
    n = notification()
    body, headers = channel.request(n, n.idempotency_key, now=NOW)
    assert headers["X-Geoplex-Timestamp"] == "1700000100"
    signed = b"1700000100." + n.idempotency_key.encode() + b"." + body
    expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert headers["X-Geoplex-Signature"] == f"sha256={expected}"
    assert json.loads(body) == payload(n)


def test_verify_signature_accepts_only_the_exact_signed_request() -> None:
    channel = webhook()
    n = notification()
    body, headers = channel.request(n, n.idempotency_key, now=NOW)
    assert verify_signature(SECRET, body, headers, now=NOW)
    assert verify_signature(SECRET.encode(), body, {k.lower(): v for k, v in headers.items()},
                            now=NOW + 299)
    assert not verify_signature(SECRET, body + b" ", headers, now=NOW)  # tampered body
    assert not verify_signature("other", body, headers, now=NOW)  # wrong secret
    assert not verify_signature(SECRET, body, headers, now=NOW + 301)  # replayed later
    assert not verify_signature(SECRET, body, headers, now=NOW - 301)
    assert not verify_signature(SECRET, body, {**headers, "Idempotency-Key": "x"}, now=NOW)
    later = {**headers, "X-Geoplex-Timestamp": str(int(NOW) + 10)}
    assert not verify_signature(SECRET, body, later, now=NOW)  # timestamp is signed
    missing = {k: v for k, v in headers.items() if k != "X-Geoplex-Signature"}
    assert not verify_signature(SECRET, body, missing, now=NOW)
    assert not verify_signature(SECRET, body, {**headers, "X-Geoplex-Timestamp": "soon"},
                                now=NOW)


def test_verify_signature_accepts_any_of_several_during_rotation() -> None:
    body = b'{"version":"4"}'
    old = sign("old-secret", "k", body, now=NOW)
    new = sign(SECRET, "k", body, now=NOW)
    both = {**new, "Idempotency-Key": "k",
            "X-Geoplex-Signature": f"{old['X-Geoplex-Signature']}, "
                                   f"{new['X-Geoplex-Signature']}"}
    assert verify_signature(SECRET, body, both, now=NOW)
    assert verify_signature("old-secret", body, both, now=NOW)
    assert not verify_signature("third", body, both, now=NOW)


# --- PagerDuty: the event -------------------------------------------------------------


def pagerduty(**fields: object) -> PagerDutyChannel:
    (channel,) = build_channels({"name": "ops", "pagerduty_configs": [
        {"routing_key": "0123456789abcdef0123456789abcdef", **fields}]},
        external_url="http://notifier.example.org")
    assert isinstance(channel, PagerDutyChannel)
    return channel


def test_dedup_key_is_sha256_of_group_key() -> None:
    assert dedup_key(GROUP_KEY) == hashlib.sha256(GROUP_KEY.encode()).hexdigest()
    assert pagerduty().event(notification())["dedup_key"] == dedup_key(GROUP_KEY)


def test_pagerduty_client_url_prefers_config_then_notification() -> None:
    assert pagerduty(client_url="https://ui.example.org").event(notification())[
        "client_url"] == "https://ui.example.org"
    assert pagerduty().event(notification())["client_url"] == "http://notifier:9093"


def test_pagerduty_oversized_event_drops_custom_details() -> None:
    huge = NotifiedAlert({"alertname": "X"}, {"description": "x" * MAX_EVENT_BYTES},
                         "firing", 1.0, None)
    channel = pagerduty()
    body = channel.encode(channel.event(notification(huge)))
    assert len(body) < MAX_EVENT_BYTES
    details = json.loads(body)["payload"]["custom_details"]
    assert list(details) == ["error"] and "maximum size" in details["error"]
