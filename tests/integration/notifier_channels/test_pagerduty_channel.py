"""The PagerDuty channel against a local Events API v2 endpoint that checks the request
field by field and answers as PagerDuty does (202, 400 with its error body, 429, 500)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channel_receivers import ROUTING_KEY, PagerDutyServer, alert, notification
from geoplex.infra.local import free_port
from geoplex.servers.notifier.channels import build_channels
from geoplex.servers.notifier.channels.pagerduty import PagerDutyChannel
from geoplex.servers.notifier.notification import DeliveryError, Kind, NotifiedAlert

GROUP_KEY = '{}:{alertname="HighErrorRatio"}'
DEDUP_KEY = hashlib.sha256(GROUP_KEY.encode()).hexdigest()  # Alertmanager's Key.Hash()


def listing(instance: str, *, ended: bool = False) -> str:
    text = ("Labels:\n - alertname = HighErrorRatio\n"
            f" - instance = {instance}\n - service = api\n"
            f"Annotations:\n - summary = 5xx ratio above 5% on {instance}\n"
            "Started: 2023-11-14T22:13:20.25Z\n")
    if ended:
        text += "Ended: 2023-11-14T22:23:20Z\n"
    return text + f"Source: http://prometheus:9090/graph?instance={instance}\n"


def pagerduty_channel(url: str, **fields: Any) -> PagerDutyChannel:
    config = {"routing_key": ROUTING_KEY, "url": url, "component": "api",
              "group": "platform", "class": "availability",
              "details": {"runbook": "https://runbooks.example.org/high-error-ratio"},
              "links": [{"href": "https://grafana.example.org/d/api", "text": "Dashboard"}],
              **fields}
    (channel,) = build_channels({"name": "ops", "pagerduty_configs": [config]})
    assert isinstance(channel, PagerDutyChannel)
    return channel


@pytest.fixture
async def pagerduty() -> AsyncIterator[PagerDutyServer]:
    server = await PagerDutyServer().start()
    yield server
    await server.stop()


async def test_pagerduty_trigger_event_is_exactly_events_api_v2(
        pagerduty: PagerDutyServer) -> None:
    channel = pagerduty_channel(pagerduty.url)
    await channel.send(notification())
    await channel.close()

    (event,) = pagerduty.events
    assert pagerduty.content_types == ["application/json"]
    assert event == {
        "routing_key": ROUTING_KEY,
        "dedup_key": DEDUP_KEY,
        "event_action": "trigger",
        "payload": {
            "summary": "[FIRING:2] HighErrorRatio (api)",
            "source": "Geoplex notifier",
            "severity": "error",
            "timestamp": "2023-11-14T22:13:20.25Z",
            "class": "availability",
            "component": "api",
            "group": "platform",
            "custom_details": {
                "firing": listing("a") + "\n" + listing("b"),
                "resolved": "",
                "num_firing": "2",
                "num_resolved": "0",
                "runbook": "https://runbooks.example.org/high-error-ratio",
            },
        },
        "client": "Geoplex notifier",
        "client_url": "http://notifier:9093",
        "links": [
            {"href": "https://grafana.example.org/d/api", "text": "Dashboard"},
            {"href": "http://prometheus:9090/graph?instance=a", "text": "Source: HighErrorRatio"},
            {"href": "http://prometheus:9090/graph?instance=b", "text": "Source: HighErrorRatio"},
        ],
    }
    # Alertmanager's field order
    assert list(event) == ["routing_key", "dedup_key", "event_action", "payload", "client",
                           "client_url", "links"]


async def test_pagerduty_resolve_event_closes_the_same_incident(
        pagerduty: PagerDutyServer) -> None:
    channel = pagerduty_channel(pagerduty.url, severity="critical", source="prod-eu")
    await channel.send(notification())
    await channel.send(notification(alert("a", "resolved"), alert("b", "resolved"),
                                    kind=Kind.RESOLVED))
    await channel.close()

    trigger, resolve = pagerduty.events
    assert trigger["dedup_key"] == resolve["dedup_key"] == DEDUP_KEY
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "dedup_key": DEDUP_KEY,
        "event_action": "resolve",
        "payload": {
            "summary": "[RESOLVED] HighErrorRatio (api)",
            "source": "prod-eu",
            "severity": "critical",
            "timestamp": "2023-11-14T22:23:20Z",
            "class": "availability",
            "component": "api",
            "group": "platform",
            "custom_details": {
                "firing": "",
                "resolved": listing("a", ended=True) + "\n" + listing("b", ended=True),
                "num_firing": "0",
                "num_resolved": "2",
                "runbook": "https://runbooks.example.org/high-error-ratio",
            },
        },
        "client": "Geoplex notifier",
        "client_url": "http://notifier:9093",
        "links": [{"href": "https://grafana.example.org/d/api", "text": "Dashboard"}],
    }


async def test_pagerduty_expired_silence_triggers_with_the_silence(
        pagerduty: PagerDutyServer) -> None:
    channel = pagerduty_channel(pagerduty.url)
    silence = {"id": "7d1c0f2e", "created_by": "alice", "comment": "deploying api v2"}
    await channel.send(notification(kind=Kind.SILENCE_EXPIRED, silence=silence))
    await channel.close()
    (event,) = pagerduty.events
    assert event["event_action"] == "trigger"
    assert event["payload"]["summary"] == ("[SILENCE EXPIRED] HighErrorRatio (api): silence "
                                           "7d1c0f2e ended, 2 alerts still firing")
    details = event["payload"]["custom_details"]
    assert details["silence_id"] == "7d1c0f2e"
    assert details["silence_created_by"] == "alice"
    assert details["silence_comment"] == "deploying api v2"


async def test_pagerduty_severity_follows_common_label_and_summary_is_capped(
        pagerduty: PagerDutyServer) -> None:
    channel = pagerduty_channel(pagerduty.url)
    long = "x" * 2000
    labels = {"alertname": long, "severity": "warning"}
    n = dataclasses.replace(notification(NotifiedAlert(labels, {}, "firing", 1.0, None)),
                            group_labels={"alertname": long}, common_labels=labels)
    await channel.send(n)
    await channel.close()
    (event,) = pagerduty.events
    assert event["payload"]["severity"] == "warning"
    summary = event["payload"]["summary"]
    assert len(summary) == 1024 and summary.endswith("…")


async def test_pagerduty_400_is_not_retryable_and_carries_pagerdutys_message(
        pagerduty: PagerDutyServer) -> None:
    channel = pagerduty_channel(pagerduty.url, routing_key="too-short")
    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())
    await channel.close()
    assert caught.value.retryable is False
    assert str(caught.value) == (
        "PagerDuty answered HTTP 400: Event object is invalid: Length of 'routing_key' is "
        "incorrect (should be 32 characters)")


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_pagerduty_throttling_and_server_errors_are_retryable(
        pagerduty: PagerDutyServer, status: int) -> None:
    pagerduty.statuses = [status]
    channel = pagerduty_channel(pagerduty.url)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())
    assert caught.value.retryable is True
    assert f"HTTP {status}" in str(caught.value)
    await channel.send(notification())  # the retry, answered 202
    await channel.close()
    assert len(pagerduty.events) == 2


async def test_pagerduty_unreachable_is_retryable() -> None:
    channel = pagerduty_channel(f"http://127.0.0.1:{free_port()}/v2/enqueue")
    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())
    await channel.close()
    assert caught.value.retryable is True
    assert "/v2/enqueue" not in str(caught.value)  # URLs stay out of errors


async def test_pagerduty_send_resolved_false_sends_no_resolve(
        pagerduty: PagerDutyServer) -> None:
    channel = pagerduty_channel(pagerduty.url, send_resolved=False)
    await channel.send(notification(alert("a", "resolved"), kind=Kind.RESOLVED))
    await channel.close()
    assert pagerduty.events == []
