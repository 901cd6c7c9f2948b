"""The dispatcher in this process over the session's real etcd, delivering through an
in-test channel (a receiver of ours that records what it gets and fails when told):
retries with backoff, errors a retry cannot help, attempts exhausted, the claim that lets
one of two dispatchers send, channels without send_resolved, the counters."""

from __future__ import annotations

import random
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from geoplex.infra.local import BackendUrls
from geoplex.servers.notifier.adapters.etcd_state import EtcdState
from geoplex.servers.notifier.config import NotifierConfig, parse_alerting_text
from geoplex.servers.notifier.dispatcher import Dispatcher
from geoplex.servers.notifier.domain import PostedAlert
from geoplex.servers.notifier.notification import DeliveryError, Kind, Notification
from geoplex.servers.notifier.ports import Channel, DeliveryState, NotificationRecord

from polling import eventually

pytestmark = pytest.mark.timeout(60)
Starter = Callable[..., Awaitable[Dispatcher]]

ALERTING = parse_alerting_text(textwrap.dedent("""\
    route:
      receiver: rec
      group_by: [alertname]
      group_wait: 100ms
      group_interval: 200ms
      repeat_interval: 1h
    receivers: [{name: rec}]
    """), "test")


class RecordingChannel:
    """Records every notification; raises the queued errors first, one per attempt."""

    integration = "webhook"

    def __init__(self, errors: Sequence[DeliveryError] = (), *, send_resolved: bool = True,
                 always: DeliveryError | None = None) -> None:
        self.errors = list(errors)
        self.always = always
        self.send_resolved = send_resolved
        self.attempts = 0
        self.delivered: list[Notification] = []
        self.closed = False

    async def send(self, n: Notification) -> None:
        self.attempts += 1
        if self.always is not None:
            raise self.always
        if self.errors:
            raise self.errors.pop(0)
        self.delivered.append(n)

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
async def shared(backends: BackendUrls) -> AsyncIterator[EtcdState]:
    assert backends.etcd_endpoints
    state = EtcdState(backends.etcd_endpoints, f"/geoplex-test/{uuid.uuid4().hex[:12]}")
    await state.connect()
    yield state
    await state.aclose()


@pytest.fixture
async def dispatchers(shared: EtcdState) -> AsyncIterator[Starter]:
    started: list[Dispatcher] = []

    async def start(channel: Channel, node_id: int = 1, **options: float) -> Dispatcher:
        config = NotifierConfig(node_id=node_id, etcd_endpoints=(), etcd_prefix=shared.prefix,
                                alerting=ALERTING, retry_attempts=int(options.get(
                                    "retry_attempts", 4)),
                                retry_base_s=0.02, retry_max_s=0.05, send_timeout_s=2.0)
        dispatcher = Dispatcher(config, {"rec": [channel]}, shared,
                                rng=random.Random(node_id))
        await dispatcher.start()
        started.append(dispatcher)
        return dispatcher

    yield start
    for dispatcher in started:
        await dispatcher.stop()


def firing(name: str, **labels: str) -> PostedAlert:
    return PostedAlert({"alertname": name, **labels}, starts_at=time.time())


async def final_records(d: Dispatcher, count: int = 1) -> list[NotificationRecord]:
    async def done() -> list[NotificationRecord]:
        found = [r for r in await d.list_notifications("rec")
                 if r.state is not DeliveryState.RETRYING]
        return found if len(found) >= count else []

    return await eventually(done, 15, what=f"{count} finished deliveries")


async def test_a_retryable_failure_is_retried_until_delivered(
        dispatchers: Starter) -> None:
    channel = RecordingChannel([DeliveryError("503 from receiver"),
                                DeliveryError("connection reset")])
    d = await dispatchers(channel)
    d.post_alerts([firing("Retried")])
    (record,) = await final_records(d)
    assert (record.state, record.attempts, record.error) == (DeliveryState.DELIVERED, 3, "")
    assert (record.kind, record.integration, record.node) == (Kind.FIRING, "webhook",
                                                             "notifier-1")
    assert len(channel.delivered) == 1 and channel.attempts == 3
    counters = d.counters
    labels = {"integration": "webhook", "receiver": "rec"}
    assert counters.get("geoplex_notifier_notifications_total", **labels) == 1
    assert counters.get("geoplex_notifier_notification_requests_total", **labels) == 3
    assert counters.get("geoplex_notifier_notification_requests_failed_total", **labels) == 2
    names = {sample.name for sample in d.metrics()}
    assert {"geoplex_notifier_notifications_total", "geoplex_notifier_alerts",
            "geoplex_notifier_silences", "geoplex_notifier_alerts_received_total"} <= names


async def test_an_error_a_retry_cannot_help_fails_at_once_and_the_next_flush_tries_again(
        dispatchers: Starter) -> None:
    channel = RecordingChannel([DeliveryError("400 malformed", retryable=False)])
    d = await dispatchers(channel)
    d.post_alerts([firing("Refused")])
    records = await final_records(d, 2)  # the failure, then the next flush delivered
    oldest, newest = records[-1], records[0]
    assert (oldest.state, oldest.attempts, oldest.error) == (DeliveryState.FAILED, 1,
                                                            "400 malformed")
    assert (newest.state, newest.attempts) == (DeliveryState.DELIVERED, 1)
    assert d.counters.get("geoplex_notifier_notifications_failed_total", integration="webhook",
                          receiver="rec", reason="not_retryable") == 1


async def test_attempts_are_bounded(dispatchers: Starter) -> None:
    channel = RecordingChannel(always=DeliveryError("timeout"))
    d = await dispatchers(channel, retry_attempts=3)
    d.post_alerts([firing("Unreachable")])
    record = (await final_records(d))[-1]
    assert (record.state, record.attempts, record.error) == (DeliveryState.FAILED, 3, "timeout")
    assert d.counters.get("geoplex_notifier_notifications_failed_total", integration="webhook",
                          receiver="rec", reason="attempts_exhausted") >= 1


async def test_of_two_dispatchers_given_the_same_alerts_one_sends(
        dispatchers: Starter) -> None:
    one, two = RecordingChannel(), RecordingChannel()
    first = await dispatchers(one, 1)
    second = await dispatchers(two, 2)
    batch = [firing("Shared", instance="a"), firing("Shared", instance="b")]
    first.post_alerts(batch)
    second.post_alerts(batch)

    def lost() -> float:
        return sum(d.counters.get("geoplex_notifier_notifications_claimed_elsewhere_total",
                                  receiver="rec") for d in (first, second))

    await eventually(lambda: lost() == 1, 10, what="one dispatcher losing the claim")
    assert len(one.delivered) + len(two.delivered) == 1
    (record,) = await final_records(first)
    assert record.node in ("notifier-1", "notifier-2")


async def test_a_channel_without_send_resolved_gets_no_resolution(
        dispatchers: Starter) -> None:
    quiet = RecordingChannel(send_resolved=False)
    d_quiet = await dispatchers(quiet, 1)
    alert = firing("Flapping")
    d_quiet.post_alerts([alert])
    await eventually(lambda: quiet.delivered, 10, what="the firing notification")
    d_quiet.post_alerts([PostedAlert(alert.labels, starts_at=alert.starts_at,
                                     ends_at=time.time())])
    await eventually(lambda: not d_quiet.state.groups, 10, what="the group to end")
    assert [n.kind for n in quiet.delivered] == [Kind.FIRING]


async def test_stopping_closes_the_channels(shared: EtcdState) -> None:
    channel = RecordingChannel()
    config = NotifierConfig(node_id=3, etcd_endpoints=(), etcd_prefix=shared.prefix,
                            alerting=ALERTING)
    d = Dispatcher(config, {"rec": [channel]}, shared)
    await d.start()
    await d.stop()
    assert channel.closed


async def test_a_claim_is_won_once_taken_again_for_a_repeat_and_given_back(
        shared: EtcdState) -> None:
    key, now = uuid.uuid4().hex, time.time()
    assert await shared.claim(key, "notifier-1", now, 60, reclaim_after=30) is None
    assert await shared.claim(key, "notifier-2", now + 1, 60, reclaim_after=30) == "notifier-1"
    # a repeat, half a repeat interval later: claimed again, once
    assert await shared.claim(key, "notifier-2", now + 31, 60, reclaim_after=30) is None
    assert await shared.claim(key, "notifier-1", now + 31.5, 60, reclaim_after=30) == \
        "notifier-2"
    await shared.release(key, "notifier-1")  # not its claim: nothing happens
    assert await shared.claim(key, "notifier-1", now + 32, 60, None) == "notifier-2"
    await shared.release(key, "notifier-2")
    assert await shared.claim(key, "notifier-1", now + 33, 60, None) is None
    notice = uuid.uuid4().hex  # never taken again (a silence's expiry notice)
    assert await shared.claim(notice, "notifier-1", now, 60, None) is None
    assert await shared.claim(notice, "notifier-2", now + 10_000, 60, None) == "notifier-1"


async def test_the_log_keeps_the_newest_records(shared: EtcdState) -> None:
    base = time.time()
    for i in range(15):
        await shared.record(NotificationRecord(
            f"{int((base + i) * 1e9):020d}-notifier-1-{i:06d}", "rec", "webhook", "{}:{}",
            Kind.FIRING, ("f",), base + i, DeliveryState.DELIVERED, 1, "", "notifier-1"))
    assert await shared.trim(10) == 5
    kept = await shared.records()
    assert [r.created_at for r in kept] == [base + i for i in range(14, 4, -1)]
    assert await shared.trim(10) == 0


async def test_email_while_the_smtp_server_is_down_is_retried_then_delivered(
        shared: EtcdState, tmp_path: Path) -> None:
    """The real email channel to a port nothing listens on yet: attempts fail and are
    retried with backoff; once a real SMTP server (aiosmtpd, geoplex up's sink) listens
    there, the email arrives and the log says it took more than one attempt."""
    from geoplex.infra.local import free_port
    from geoplex.servers.notifier.channels import build_channels
    from geoplex.tools.mail_sink import MailSink

    port = free_port()
    channels = build_channels({"name": "rec", "email_configs": [{
        "to": "oncall@localhost", "from": "notifier@localhost",
        "smarthost": f"127.0.0.1:{port}", "require_tls": False}]})
    config = NotifierConfig(node_id=1, etcd_endpoints=(), etcd_prefix=shared.prefix,
                            alerting=ALERTING, retry_attempts=200, retry_base_s=0.05,
                            retry_max_s=0.2, send_timeout_s=2.0)
    d = Dispatcher(config, {"rec": list(channels)}, shared, rng=random.Random(1))
    await d.start()
    received: list[str] = []
    sink: MailSink | None = None
    try:
        d.post_alerts([firing("SmtpWasDown")])

        async def failed_once() -> bool:
            return d.counters.get("geoplex_notifier_notification_requests_failed_total",
                                  integration="email", receiver="rec") >= 1
        await eventually(failed_once, 15, what="a failed attempt while SMTP is down")
        sink = MailSink(tmp_path / "mail", announce=received.append, port=port).start()
        (record,) = await final_records(d)
        assert record.state is DeliveryState.DELIVERED and record.attempts > 1
        assert len(received) == 1 and "SmtpWasDown" in received[0]
    finally:
        await d.stop()
        if sink is not None:
            sink.stop()


async def test_a_restarted_notifier_does_not_page_again_for_a_firing_alert(
        shared: EtcdState) -> None:
    """The alert is re-posted by the evaluator after the notifier restarts (same start,
    as the evaluator restores it); the claim in etcd says it was sent: no second page."""
    alert = firing("StillFiring")
    first = RecordingChannel()
    config = NotifierConfig(node_id=1, etcd_endpoints=(), etcd_prefix=shared.prefix,
                            alerting=ALERTING)
    d = Dispatcher(config, {"rec": [first]}, shared, rng=random.Random(1))
    await d.start()
    d.post_alerts([alert])
    await final_records(d)
    await d.stop()
    assert len(first.delivered) == 1

    again = RecordingChannel()
    d = Dispatcher(config, {"rec": [again]}, shared, rng=random.Random(2))
    await d.start()
    try:
        d.post_alerts([alert])

        async def flushed() -> bool:
            return d.counters.get("geoplex_notifier_notifications_claimed_elsewhere_total",
                                  receiver="rec") >= 1 or bool(again.delivered)
        await eventually(flushed, 15, what="the restarted node's first flush")
        assert again.delivered == []
    finally:
        await d.stop()
