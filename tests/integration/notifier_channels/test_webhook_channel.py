"""The webhook channel against a real aiohttp receiver that verifies the HMAC signature
(with the shipped ``verify_signature``), checks Alertmanager's v4 payload and records
idempotency keys."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from channel_receivers import WebhookReceiver, alert, notification
from geoplex.infra.local import free_port
from geoplex.servers.notifier.channels import build_channels, verify_signature
from geoplex.servers.notifier.channels.webhook import WebhookChannel
from geoplex.servers.notifier.notification import DeliveryError, Kind

SECRET = "whsec-0123456789"

EXPECTED_V4 = """
{
  "receiver": "ops",
  "status": "firing",
  "alerts": [
    {
      "status": "firing",
      "labels": {"alertname": "HighErrorRatio", "instance": "a", "service": "api"},
      "annotations": {"summary": "5xx ratio above 5% on a"},
      "startsAt": "2023-11-14T22:13:20.25Z",
      "endsAt": "0001-01-01T00:00:00Z",
      "generatorURL": "http://prometheus:9090/graph?instance=a",
      "fingerprint": "7beafddecbad3b9a"
    },
    {
      "status": "resolved",
      "labels": {"alertname": "HighErrorRatio", "instance": "b", "service": "api"},
      "annotations": {"summary": "5xx ratio above 5% on b"},
      "startsAt": "2023-11-14T22:13:20.25Z",
      "endsAt": "2023-11-14T22:23:20Z",
      "generatorURL": "http://prometheus:9090/graph?instance=b",
      "fingerprint": "d60c0479470bb8a0"
    }
  ],
  "groupLabels": {"alertname": "HighErrorRatio"},
  "commonLabels": {"alertname": "HighErrorRatio", "service": "api"},
  "commonAnnotations": {},
  "externalURL": "http://notifier:9093",
  "version": "4",
  "groupKey": "{}:{alertname=\\"HighErrorRatio\\"}",
  "truncatedAlerts": 0
}
"""


def webhook_channel(url: str, *, secret: str = SECRET, **fields: Any) -> WebhookChannel:
    config: dict[str, Any] = {"url": url, **fields}
    if secret:
        config["http_config"] = {"hmac_secret": secret, "headers": {"X-Source": "geoplex"}}
    (channel,) = build_channels({"name": "ops", "webhook_configs": [config]})
    assert isinstance(channel, WebhookChannel)
    return channel


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    server = await WebhookReceiver(secret=SECRET).start()
    yield server
    await server.stop()


async def test_webhook_payload_is_alertmanager_v4_exactly(receiver: WebhookReceiver) -> None:
    channel = webhook_channel(receiver.url)
    n = notification(alert("a"), alert("b", "resolved"))
    await channel.send(n)
    await channel.close()

    (delivery,) = receiver.deliveries
    assert delivery.signature_ok
    assert delivery.payload == json.loads(EXPECTED_V4)
    assert list(delivery.payload) == list(json.loads(EXPECTED_V4))  # Alertmanager's order
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["Idempotency-Key"] == n.idempotency_key
    assert delivery.headers["X-Source"] == "geoplex"
    assert delivery.headers["X-Geoplex-Signature"].startswith("sha256=")
    assert delivery.headers["X-Geoplex-Timestamp"].isdigit()


async def test_webhook_tampered_body_fails_verification(receiver: WebhookReceiver) -> None:
    channel = webhook_channel(receiver.url)
    body, headers = channel.request(notification(), notification().idempotency_key)
    await channel.close()
    assert verify_signature(SECRET, body, headers)
    tampered = body.replace(b'"status":"firing"', b'"status":"resolved"', 1)
    assert tampered != body
    assert not verify_signature(SECRET, tampered, headers)

    async with aiohttp.ClientSession() as session:  # the receiver refuses it too
        async with session.post(receiver.url, data=tampered, headers=headers) as response:
            assert response.status == 401
        async with session.post(receiver.url, data=body, headers=headers) as response:
            assert response.status == 200
    assert receiver.refused == [tampered]
    assert len(receiver.deliveries) == 1


async def test_webhook_wrong_secret_is_refused_and_not_retryable(
        receiver: WebhookReceiver) -> None:
    channel = webhook_channel(receiver.url, secret="someone-elses")
    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())
    await channel.close()
    assert caught.value.retryable is False  # 401
    assert receiver.deliveries == []


async def test_webhook_repeat_carries_the_same_idempotency_key(
        receiver: WebhookReceiver) -> None:
    channel = webhook_channel(receiver.url)
    first = notification()
    await channel.send(first)
    await channel.send(notification())  # the same notification again
    await channel.send(notification(alert("a"), alert("b", "resolved")))
    await channel.close()
    keys = receiver.idempotency_keys
    assert keys[0] == keys[1] == first.idempotency_key
    assert keys[2] != keys[0]


async def test_webhook_max_alerts_truncates_and_counts(receiver: WebhookReceiver) -> None:
    channel = webhook_channel(receiver.url, max_alerts=2)
    await channel.send(notification(alert("a"), alert("b"), alert("c")))
    await channel.close()
    (delivery,) = receiver.deliveries
    assert [a["labels"]["instance"] for a in delivery.payload["alerts"]] == ["a", "b"]
    assert delivery.payload["truncatedAlerts"] == 1
    assert delivery.payload["status"] == "firing"


async def test_webhook_without_secret_sends_no_signature(receiver: WebhookReceiver) -> None:
    plain = await WebhookReceiver().start()
    try:
        channel = webhook_channel(plain.url, secret="")
        await channel.send(notification())
        await channel.close()
    finally:
        await plain.stop()
    (delivery,) = plain.deliveries
    assert "X-Geoplex-Signature" not in delivery.headers
    assert "X-Geoplex-Timestamp" not in delivery.headers


@pytest.mark.parametrize(("status", "retryable"),
                         [(500, True), (502, True), (429, True), (400, False), (404, False)])
async def test_webhook_status_decides_retry(receiver: WebhookReceiver, status: int,
                                            retryable: bool) -> None:
    receiver.statuses = [status]
    channel = webhook_channel(receiver.url)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())
    assert caught.value.retryable is retryable
    assert f"HTTP {status}" in str(caught.value)
    await channel.send(notification())  # then 200
    await channel.close()
    assert len(receiver.idempotency_keys) == 2


async def test_webhook_unreachable_is_retryable() -> None:
    channel = webhook_channel(f"http://127.0.0.1:{free_port()}/hook?token=abc")
    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())
    await channel.close()
    assert caught.value.retryable is True
    assert "token" not in str(caught.value)


async def test_webhook_send_resolved_false_drops_resolved_alerts(
        receiver: WebhookReceiver) -> None:
    channel = webhook_channel(receiver.url, send_resolved=False)
    await channel.send(notification(alert("a", "resolved"), kind=Kind.RESOLVED))
    await channel.send(notification(alert("a"), alert("b", "resolved")))
    await channel.close()
    (delivery,) = receiver.deliveries
    assert [a["status"] for a in delivery.payload["alerts"]] == ["firing"]
