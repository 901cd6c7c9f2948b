"""Timers and the notification log on a clock moved by hand: group_wait, group_interval,
repeat_interval, resolved notifications, resolve timeouts (Alertmanager's DedupStage)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.notifier.domain import (
    NflogEntry,
    NotifierState,
    Planned,
    PostedAlert,
    backoff_delay,
    needs_update,
)
from geoplex.servers.notifier.notification import Kind

from notifier_trees import T0, Clock, alerting

CONFIG = alerting("""
route:
  receiver: ops
  group_by: [alertname]
  group_wait: 2s
  group_interval: 10s
  repeat_interval: 60s
receivers: [{name: ops}]
""")

F = frozenset


@pytest.mark.parametrize(("entry", "firing", "resolved", "send_resolved", "expected"), [
    (None, F({"a"}), F(), True, True),            # never told, something fires
    (None, F(), F({"a"}), True, False),           # never told, only resolved: nothing
    (NflogEntry(F({"a"}), F(), T0), F({"a", "b"}), F(), True, True),   # a new one fires
    (NflogEntry(F({"a", "b"}), F(), T0), F({"a"}), F({"b"}), True, True),   # b resolved
    (NflogEntry(F({"a", "b"}), F(), T0), F({"a"}), F({"b"}), False, False),  # not wanted
    (NflogEntry(F({"a"}), F(), T0), F(), F({"a"}), False, True),  # all resolved: always
    (NflogEntry(F(), F({"a"}), T0), F(), F({"a"}), True, False),  # told already
    (NflogEntry(F({"a"}), F(), T0), F({"a"}), F(), True, False),  # nothing new
])
def test_needs_update_follows_alertmanagers_dedup_stage(
        entry: NflogEntry | None, firing: frozenset[str], resolved: frozenset[str],
        send_resolved: bool, expected: bool) -> None:
    assert needs_update(entry, firing, resolved, T0 + 30, 60.0, send_resolved) is expected


def test_an_unchanged_group_is_told_again_once_repeat_interval_passed() -> None:
    entry = NflogEntry(F({"a"}), F(), T0)
    assert not needs_update(entry, F({"a"}), F(), T0 + 59.9, 60.0, True)
    assert needs_update(entry, F({"a"}), F(), T0 + 60, 60.0, True)


class Run:
    """A state, a clock, and what each flush would send (every send succeeds)."""

    def __init__(self, send_resolved: bool = True, resolve_timeout: float = 300.0) -> None:
        self.clock = Clock()
        self.state = NotifierState(CONFIG.route, resolve_timeout=resolve_timeout,
                                   send_resolved={"ops": send_resolved})
        self.sent: list[Planned] = []

    def post(self, *alerts: PostedAlert) -> None:
        self.state.put(alerts, self.clock())

    def at(self, offset: float, *, deliver: bool = True) -> list[Planned]:
        self.clock.now = T0 + offset
        now = self.clock()
        out = [p for g in self.state.due(now) if (p := self.state.flush(g, now)) is not None]
        for planned in out:
            self.state.done(planned, now, deliver)
        self.sent += out if deliver else []
        return out


def fires(name: str, instance: str, ends_at: float | None = None) -> PostedAlert:
    return PostedAlert({"alertname": name, "instance": instance}, starts_at=T0,
                       ends_at=ends_at)


def test_a_group_notifies_after_group_wait_then_on_change_then_on_repeat() -> None:
    run = Run()
    run.post(fires("A", "1"))
    assert run.at(1.9) == []
    (first,) = run.at(2)
    assert first.notification.kind is Kind.FIRING
    assert [a.labels["instance"] for a in first.notification.alerts] == ["1"]
    assert run.at(12) == []  # group_interval passed, nothing new
    run.post(fires("A", "2"))
    assert run.at(15) == []  # the group's timer, not the post, decides
    (second,) = run.at(22)
    assert [a.labels["instance"] for a in second.notification.alerts] == ["1", "2"]
    assert second.notification.idempotency_key != first.notification.idempotency_key
    assert [run.at(t) for t in (32, 42, 52, 62, 72)] == [[]] * 5
    (repeat,) = run.at(82)  # 60 s after the last notification
    assert repeat.notification.idempotency_key == second.notification.idempotency_key


def test_a_resolution_is_notified_and_all_resolved_ends_the_group() -> None:
    run = Run()
    run.post(fires("A", "1"), fires("A", "2"))
    run.at(2)
    run.post(fires("A", "2", ends_at=T0 + 5))
    (partly,) = run.at(12)
    assert partly.notification.kind is Kind.FIRING
    assert [a.status for a in partly.notification.alerts] == ["firing", "resolved"]
    run.post(fires("A", "1", ends_at=T0 + 15))
    (done,) = run.at(22)
    assert done.notification.kind is Kind.RESOLVED and done.notification.status == "resolved"
    assert [a.labels["instance"] for a in done.notification.alerts] == ["1"]
    assert run.state.groups == {} and run.state.nflog == {}


def test_without_send_resolved_only_the_end_of_the_group_is_notified() -> None:
    run = Run(send_resolved=False)
    run.post(fires("A", "1"), fires("A", "2"))
    run.at(2)
    run.post(fires("A", "2", ends_at=T0 + 5))
    assert run.at(12) == []  # one of two resolved: not news for this receiver
    run.post(fires("A", "1", ends_at=T0 + 15))
    (done,) = run.at(22)
    assert done.notification.kind is Kind.RESOLVED  # the channels drop it; the log forgets


def test_a_firing_alert_not_posted_again_resolves_after_the_resolve_timeout() -> None:
    run = Run(resolve_timeout=30.0)
    run.post(PostedAlert({"alertname": "A"}, starts_at=T0))
    run.at(2)
    run.clock.now = T0 + 20
    run.post(PostedAlert({"alertname": "A"}, starts_at=T0))  # re-posted: ends at +50 now
    assert run.at(42) == []
    (resolved,) = run.at(52)
    assert resolved.notification.kind is Kind.RESOLVED
    assert resolved.notification.alerts[0].ends_at == T0 + 50


def test_an_unsent_notification_is_tried_again_at_the_next_flush() -> None:
    run = Run()
    run.post(fires("A", "1"))
    (failed,) = run.at(2, deliver=False)
    (again,) = run.at(12)
    assert again.notification.idempotency_key == failed.notification.idempotency_key
    assert run.at(22) == []


def test_a_group_in_flight_is_not_flushed_again_until_done() -> None:
    run = Run()
    run.post(fires("A", "1"))
    now = T0 + 2
    (group,) = run.state.due(now)
    planned = run.state.flush(group, now)
    assert planned is not None and run.state.due(now + 30) == []
    run.state.done(planned, now + 30, True)
    assert run.state.due(now + 30) == [group]


def test_an_old_alert_is_flushed_at_once_instead_of_waiting_group_wait() -> None:
    run = Run()
    run.clock.now = T0 + 600
    run.post(PostedAlert({"alertname": "A"}, starts_at=T0))
    assert len(run.at(600)) == 1


def test_merging_keeps_the_earliest_start_and_a_resolution_ends_it() -> None:
    run = Run()
    run.post(PostedAlert({"alertname": "A"}, starts_at=T0 + 3))
    run.post(PostedAlert({"alertname": "A"}, starts_at=T0))
    (alert,) = run.state.alerts.values()
    assert alert.starts_at == T0
    run.clock.now = T0 + 4
    run.post(PostedAlert({"alertname": "A"}, starts_at=T0 + 3, ends_at=T0 + 4))
    (alert,) = run.state.alerts.values()
    assert (alert.starts_at, alert.ends_at, alert.resolved(T0 + 4)) == (T0, T0 + 4, True)


def test_a_resolved_alert_nobody_heard_of_is_dropped() -> None:
    run = Run()
    assert run.state.put([PostedAlert({"alertname": "A"}, starts_at=T0 - 9,
                                      ends_at=T0 - 1)], T0) == 0
    assert run.state.alerts == {}


def test_two_nodes_given_the_same_posts_plan_the_same_notifications() -> None:
    one, two = Run(), Run()
    alerts = (fires("A", "1"), fires("A", "2"), fires("B", "1"))
    one.post(*alerts)
    two.clock.now = T0 + 0.3  # the other node got the post a little later
    two.post(*alerts)
    keys_one = sorted(p.notification.idempotency_key for p in one.at(2.5))
    keys_two = sorted(p.notification.idempotency_key for p in two.at(2.5))
    assert keys_one == keys_two and len(keys_one) == 2


def test_the_backoff_grows_exponentially_with_jitter_up_to_its_cap() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (6, 10.0), (20, 10.0)]:
        delays = [backoff_delay(attempt, 0.5, 10.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not all the same


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.integers(1, 40)),
                min_size=1, max_size=25))
@settings(max_examples=150, deadline=None)
def test_notifications_only_carry_news_or_repeats_and_the_group_ends_resolved(
        events: list[tuple[int, bool, int]]) -> None:
    """Random posts (instance i fires / resolves) at random times, the group looked at
    as the dispatcher does: a notification tells something new, or repeats after
    repeat_interval; once all resolve, the last one says so and the group is gone."""
    run = Run()
    now = 0.0
    last: tuple[frozenset[str], frozenset[str], float] | None = None
    states: dict[int, bool] = {}

    def look(until: float) -> None:
        nonlocal last
        for planned in run.at(until):
            n = planned.notification
            firing = frozenset(a.fingerprint for a in n.alerts if a.status == "firing")
            resolved = frozenset(a.fingerprint for a in n.alerts if a.status == "resolved")
            if last is not None:
                news = not firing <= last[0] or (not firing and last[0]) or \
                    not resolved <= last[1]
                assert news or until - last[2] >= 60.0, (n.kind, firing, last)
            else:
                assert firing
            last = (firing, resolved, until)

    for instance, fire, gap in events:
        now += gap
        look(now)
        ends = None if fire else T0 + now
        if fire or instance in states:
            run.clock.now = T0 + now
            run.post(PostedAlert({"alertname": "A", "instance": str(instance)},
                                 starts_at=T0, ends_at=ends))
            states[instance] = fire
    run.clock.now = T0 + now
    run.post(*[PostedAlert({"alertname": "A", "instance": str(i)}, starts_at=T0,
                           ends_at=T0 + now) for i in states])
    for step in range(1, 4):
        look(now + 10.0 * step)
    assert run.state.groups == {}
    if last is not None:
        assert not last[0]  # the last notification: all resolved
