"""Inhibition: a firing source alert mutes the targets whose ``equal`` labels agree."""

from __future__ import annotations

from geoplex.servers.notifier.domain import (
    Alert,
    AlertState,
    Inhibitor,
    NotifierState,
    PostedAlert,
)

from notifier_trees import T0, alerting

CONFIG = alerting("""
route:
  receiver: ops
  group_by: [alertname]
  group_wait: 1s
receivers: [{name: ops}]
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [cluster]
  - source_matchers: ['alertname="NodeDown"']
    target_matchers: ['alertname=~"Node.*"']
    equal: [node]
""")


def firing(**labels: str) -> Alert:
    return Alert(labels, {}, T0, T0 + 300)


def test_a_firing_source_mutes_a_target_with_equal_labels_equal() -> None:
    source = firing(alertname="ClusterDown", severity="critical", cluster="eu")
    inhibitor = Inhibitor(CONFIG.inhibit_rules, [source])
    assert inhibitor.inhibited_by({"alertname": "Slow", "severity": "warning",
                                   "cluster": "eu"}) == [source.fingerprint]
    assert inhibitor.inhibited_by({"alertname": "Slow", "severity": "warning",
                                   "cluster": "us"}) == []
    assert inhibitor.inhibited_by({"alertname": "Slow", "severity": "info",
                                   "cluster": "eu"}) == []


def test_an_equal_label_missing_on_both_sides_counts_as_equal() -> None:
    source = firing(alertname="ClusterDown", severity="critical")
    inhibitor = Inhibitor(CONFIG.inhibit_rules, [source])
    assert inhibitor.inhibited_by({"severity": "warning"}) == [source.fingerprint]
    assert inhibitor.inhibited_by({"severity": "warning", "cluster": "eu"}) == []


def test_an_alert_on_both_sides_is_muted_by_a_pure_source_but_not_by_its_like() -> None:
    node_down = firing(alertname="NodeDown", node="n1")  # matches source and target
    other_down = firing(alertname="NodeDown", node="n1", instance="b")
    inhibitor = Inhibitor(CONFIG.inhibit_rules, [node_down, other_down])
    # no mutual muting: two NodeDown alerts do not silence each other (nor themselves)
    assert inhibitor.inhibited_by(node_down.labels, node_down.fingerprint) == []
    assert inhibitor.inhibited_by({"alertname": "NodeDiskFull", "node": "n1"}) == sorted(
        [node_down.fingerprint, other_down.fingerprint])


def test_a_resolved_source_mutes_nothing_and_the_target_is_notified() -> None:
    state = NotifierState(CONFIG.route, CONFIG.inhibit_rules)
    state.put([PostedAlert({"alertname": "ClusterDown", "severity": "critical", "cluster": "eu"},
                           starts_at=T0, ends_at=T0 + 5),
               PostedAlert({"alertname": "Slow", "severity": "warning", "cluster": "eu"},
                           starts_at=T0)], T0)
    muted = {listed.alert.labels["alertname"]: listed for listed in state.listed(
        T0 + 1, include_suppressed=True)}
    assert muted["Slow"].state is AlertState.SUPPRESSED
    assert list(muted["Slow"].inhibited_by) == [muted["ClusterDown"].alert.fingerprint]
    assert [a.alert.labels["alertname"] for a in state.listed(T0 + 1)] == ["ClusterDown"]
    # once the source resolved the target is active again
    after = {a.alert.labels["alertname"]: a.state for a in state.listed(
        T0 + 6, include_suppressed=True, include_resolved=True)}
    assert after == {"ClusterDown": AlertState.RESOLVED, "Slow": AlertState.ACTIVE}


def test_an_inhibited_alert_is_left_out_of_its_groups_notification() -> None:
    state = NotifierState(CONFIG.route, CONFIG.inhibit_rules)
    state.put([PostedAlert({"alertname": "Slow", "severity": "critical", "cluster": "eu",
                            "instance": "a"}, starts_at=T0),
               PostedAlert({"alertname": "Slow", "severity": "warning", "cluster": "eu",
                            "instance": "b"}, starts_at=T0)], T0)
    (group,) = state.due(T0 + 1)
    planned = state.flush(group, T0 + 1)
    assert planned is not None
    assert [a.labels["instance"] for a in planned.notification.alerts] == ["a"]


def test_a_group_whose_alerts_are_all_inhibited_sends_nothing() -> None:
    state = NotifierState(CONFIG.route, CONFIG.inhibit_rules)
    state.put([PostedAlert({"alertname": "Down", "severity": "critical", "cluster": "eu"},
                           starts_at=T0),
               PostedAlert({"alertname": "Slow", "severity": "warning", "cluster": "eu"},
                           starts_at=T0)], T0)
    plans = [state.flush(g, T0 + 1) for g in state.due(T0 + 1)]
    sent = [p.notification.common_labels["alertname"] for p in plans if p is not None]
    assert sent == ["Down"]
