"""Rule evaluation over a real store in tmp_path, driven by an injected clock: the
``for`` / ``keep_firing_for`` state machine, what is sent and when, recording rules, the
``ALERTS`` / ``ALERTS_FOR_STATE`` series, and the state restored after a restart."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from multidict import MultiDict
from polling import eventually

from geoplex.servers.telemetry.promql.engine import Engine
from geoplex.servers.telemetry.rules import (AlertState, EvalOptions, Health, OutgoingAlert,
                                              RuleManager)
from geoplex.servers.telemetry.rules import api as rules_api
from geoplex.servers.telemetry.rules.evaluator import AlertingRule, go_time
from geoplex.servers.telemetry.tsdb import STALE_NAN_BITS, TSDB, TSDBOptions
from geoplex.servers.telemetry.tsdb.labels import eq

T0 = 1_700_000_000_000  # ms; every test's time starts here
S, MIN = 1000, 60_000


class Clock:
    """The injected wall clock (seconds), moved by the test."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TSDB]:
    with TSDB.open(tmp_path / "db", TSDBOptions()) as db:
        yield db


def write(store: TSDB, name: str, t_ms: int, value: float, **labels: str) -> None:
    store.append([({"__name__": name, **labels}, t_ms, value)])


def series(store: TSDB, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...],
                                                         list[tuple[int, float | str]]]:
    """Every series of ``name`` with those labels: labels (no __name__) to samples, a
    staleness marker shown as "stale"."""
    out = {}
    matchers = [eq("__name__", name), *(eq(k, v) for k, v in labels.items())]
    for found in store.select(matchers, 0, 1 << 62):
        bits = found.values.view(np.uint64).tolist()
        out[found.labels.without("__name__").pairs] = [
            (t, "stale" if b == STALE_NAN_BITS else v)
            for t, v, b in zip(found.timestamps.tolist(), found.values.tolist(), bits)]
    return out


async def manager_with(store: TSDB, clock: Clock, text: str, *,
                       options: EvalOptions | None = None) -> RuleManager:
    manager = RuleManager(store, Engine(store), clock=clock, interval_s=15.0,
                          options=options)
    await manager.set_group("rules.yml", textwrap.dedent(text))
    return manager


async def at(manager: RuleManager, clock: Clock, ms: int) -> list[OutgoingAlert]:
    """Move the clock to ``ms`` and evaluate every group at its slot for that time."""
    clock.ms = ms
    return await manager.evaluate_once()


def only_rule(manager: RuleManager) -> AlertingRule:
    rule = manager.rules()[0]
    assert isinstance(rule, AlertingRule)
    return rule


HOT = """\
    groups:
      - name: rooms
        rules:
          - alert: RoomTooHot
            expr: temperature > 50
            for: 1m
            keep_firing_for: 30s
            labels:
              severity: page
              room_upper: "{{ $labels.room | toUpper }}"
            annotations:
              summary: "{{ $labels.room }} is at {{ $value }}°C"
    """


async def test_an_alert_is_pending_for_its_for_duration_then_fires_and_is_sent(
        store: TSDB) -> None:
    clock = Clock(T0)
    manager = await manager_with(store, clock, HOT)
    group = manager.groups()[0]
    t = group.eval_timestamp(T0 + 15 * S)   # the group's slots, 15 s apart
    write(store, "temperature", t - 1000, 61.5, room="a")

    assert await at(manager, clock, t) == []                 # pending: nothing sent
    rule = only_rule(manager)
    [alert] = rule.alerts()
    assert (alert.state, alert.active_at_ms, alert.value) == (AlertState.PENDING, t, 61.5)
    assert dict(alert.labels) == {"alertname": "RoomTooHot", "room": "a", "room_upper": "A",
                                  "severity": "page"}
    assert alert.annotations == {"summary": "a is at 61.5°C"}

    write(store, "temperature", t + 44 * S, 62.0, room="a")
    assert await at(manager, clock, t + 45 * S) == []        # 45 s < for: still pending
    assert rule.alerts()[0].state is AlertState.PENDING

    [sent] = await at(manager, clock, t + 60 * S)            # for has passed: firing
    assert rule.alerts()[0].state is AlertState.FIRING
    assert sent.starts_at_ms == t + 60 * S
    assert sent.ends_at_ms == t + 60 * S + 4 * 60 * S        # 4 x max(interval, resend 1m)
    assert dict(sent.labels) == dict(alert.labels)
    assert sent.annotations == {"summary": "a is at 62°C"}
    assert sent.generator_url == "/graph?g0.expr=temperature+%3E+50&g0.tab=1"
    assert rule.state is AlertState.FIRING and rule.health is Health.OK


async def test_a_firing_alert_is_resent_after_the_resend_delay_and_kept_firing_for(
        store: TSDB) -> None:
    clock = Clock(T0)
    manager = await manager_with(store, clock, HOT)
    t = manager.groups()[0].eval_timestamp(T0 + 15 * S)
    for step in range(0, 9):                    # hot from t to t + 120 s
        write(store, "temperature", t + step * 15 * S - 1, 70.0, room="a")
    await at(manager, clock, t)
    fired = await at(manager, clock, t + 60 * S)
    assert [a.starts_at_ms for a in fired] == [t + 60 * S]
    assert await at(manager, clock, t + 75 * S) == []          # sent 15 s ago
    assert await at(manager, clock, t + 105 * S) == []         # 45 s ago
    again = await at(manager, clock, t + 135 * S)              # 75 s > the 1 m delay
    assert [a.starts_at_ms for a in again] == [t + 60 * S]     # the same alert
    assert again[0].ends_at_ms == t + 135 * S + 240 * S

    write(store, "temperature", t + 140 * S, 20.0, room="a")  # cool again
    assert await at(manager, clock, t + 150 * S) == []
    rule = only_rule(manager)
    [alert] = rule.alerts()
    assert (alert.state, alert.keep_firing_since_ms) == (AlertState.FIRING, t + 150 * S)
    assert await at(manager, clock, t + 165 * S) == []         # 15 s < keep_firing_for
    [resolved] = await at(manager, clock, t + 180 * S)         # 30 s: resolved, sent once
    assert (resolved.starts_at_ms, resolved.ends_at_ms) == (t + 60 * S, t + 180 * S)
    assert rule.alerts() == [] and rule.state is AlertState.INACTIVE
    assert await at(manager, clock, t + 195 * S) == []
    # kept 15 minutes, sent as resolved every resend delay, then forgotten
    assert [a.ends_at_ms for a in await at(manager, clock, t + 255 * S)] == [t + 180 * S]
    await at(manager, clock, t + 180 * S + 16 * MIN)
    assert rule.active == {}


async def test_an_alert_that_clears_while_pending_is_dropped_without_a_send(
        store: TSDB) -> None:
    clock = Clock(T0)
    manager = await manager_with(store, clock, HOT)
    t = manager.groups()[0].eval_timestamp(T0 + 15 * S)
    write(store, "temperature", t - 1, 70.0, room="a")
    await at(manager, clock, t)
    write(store, "temperature", t + 10 * S, 20.0, room="a")
    assert await at(manager, clock, t + 15 * S) == []
    assert only_rule(manager).active == {}
    key = (("alertname", "RoomTooHot"), ("alertstate", "pending"), ("room", "a"),
           ("room_upper", "A"), ("severity", "page"))
    assert series(store, "ALERTS") == {key: [(t, 1.0), (t + 15 * S, "stale")]}


async def test_alerts_and_for_state_series_are_written_as_prometheus_writes_them(
        store: TSDB) -> None:
    clock = Clock(T0)
    manager = await manager_with(store, clock, """\
        groups:
          - name: g
            rules:
              - alert: Hot
                expr: temperature > 50
                for: 30s
        """)
    t = manager.groups()[0].eval_timestamp(T0 + 15 * S)
    for step in range(4):
        write(store, "temperature", t + step * 15 * S - 1, 70.0, room="a")
    for step in range(4):
        await at(manager, clock, t + step * 15 * S)
    write(store, "temperature", t + 50 * S, 10.0, room="a")
    await at(manager, clock, t + 60 * S)

    room = (("alertname", "Hot"), ("room", "a"))
    assert series(store, "ALERTS") == {
        (room[0], ("alertstate", "pending"), room[1]): [(t, 1.0), (t + 15 * S, 1.0),
                                                        (t + 30 * S, "stale")],
        (room[0], ("alertstate", "firing"), room[1]): [(t + 30 * S, 1.0), (t + 45 * S, 1.0),
                                                       (t + 60 * S, "stale")]}
    assert series(store, "ALERTS_FOR_STATE") == {room: [
        (t, t / 1000), (t + 15 * S, t / 1000), (t + 30 * S, t / 1000),
        (t + 45 * S, t / 1000), (t + 60 * S, "stale")]}


async def test_recording_rules_write_their_series_which_later_rules_read(
        store: TSDB) -> None:
    clock = Clock(T0)
    manager = await manager_with(store, clock, """\
        groups:
          - name: rec
            rules:
              - record: job:temperature:max
                expr: max by (job) (temperature)
                labels: {source: rules}
              - alert: JobHot
                expr: job:temperature:max > 50
        """)
    t = manager.groups()[0].eval_timestamp(T0 + 15 * S)
    write(store, "temperature", t - 1, 60.0, job="a", room="1")
    write(store, "temperature", t - 1, 30.0, job="a", room="2")
    write(store, "temperature", t - 1, 10.0, job="b", room="3")
    [fired] = await at(manager, clock, t)          # for 0: fires in the same iteration
    assert dict(fired.labels) == {"alertname": "JobHot", "job": "a", "source": "rules"}
    assert series(store, "job:temperature:max") == {
        (("job", "a"), ("source", "rules")): [(t, 60.0)],
        (("job", "b"), ("source", "rules")): [(t, 10.0)]}
    write(store, "temperature", t + 10 * S, 62.0, job="a", room="1")  # b goes quiet
    await at(manager, clock, t + 5 * MIN)           # a within the 5 m lookback, b not
    assert series(store, "job:temperature:max") == {
        (("job", "a"), ("source", "rules")): [(t, 60.0), (t + 5 * MIN, 62.0)],
        (("job", "b"), ("source", "rules")): [(t, 10.0), (t + 5 * MIN, "stale")]}


async def test_a_failing_rule_reports_its_error_and_the_group_goes_on(store: TSDB) -> None:
    clock = Clock(T0)
    manager = await manager_with(store, clock, """\
        groups:
          - name: g
            limit: 1
            rules:
              - record: clash
                expr: '{__name__=~"temperature|humidity"}'
              - alert: TooMany
                expr: temperature > 0
              - record: fine:count
                expr: count(temperature)
        """)
    t = manager.groups()[0].eval_timestamp(T0 + 15 * S)
    for room in ("a", "b"):
        write(store, "temperature", t - 1, 20.0, room=room)
        write(store, "humidity", t - 1, 40.0, room=room)
    await at(manager, clock, t)
    clash, too_many, fine = manager.rules()
    assert (clash.health, clash.last_error) == (
        Health.ERR, "vector contains metrics with the same labelset after applying rule labels")
    assert (too_many.health, too_many.last_error) == (
        Health.ERR, "exceeded limit of 1 with 2 alerts")
    assert (fine.health, fine.last_error) == (Health.OK, "")
    assert series(store, "fine:count") == {(): [(t, 2.0)]}
    metrics = manager.metrics()
    key = '{rule_group="rules.yml;g"}'
    assert metrics[f"geoplex_telemetry_rule_evaluations_total{key}"] == 3
    assert metrics[f"geoplex_telemetry_rule_evaluation_failures_total{key}"] == 2
    assert metrics[f"geoplex_telemetry_rule_group_rules{key}"] == 3
    assert metrics[f"geoplex_telemetry_rule_group_iterations_total{key}"] == 1
    assert metrics["geoplex_telemetry_rule_evaluation_duration_seconds_count"] == 3
    assert metrics["geoplex_telemetry_rule_evaluation_duration_seconds_sum"] > 0


async def test_external_labels_are_sent_and_seen_by_templates(store: TSDB) -> None:
    clock = Clock(T0)
    manager = await manager_with(store, clock, """\
        groups:
          - name: g
            rules:
              - alert: Hot
                expr: temperature > 50
                annotations: {where: "{{ $externalLabels.cluster }}/{{ $labels.room }}"}
        """, options=EvalOptions(external_labels={"cluster": "eu-1"},
                                 external_url="https://prom.example.com"))
    t = manager.groups()[0].eval_timestamp(T0 + 15 * S)
    write(store, "temperature", t - 1, 70.0, room="a")
    [sent] = await at(manager, clock, t)
    assert dict(sent.labels) == {"alertname": "Hot", "cluster": "eu-1", "room": "a"}
    assert sent.annotations == {"where": "eu-1/a"}
    assert sent.generator_url.startswith("https://prom.example.com/graph?g0.expr=")


async def test_replacing_a_group_keeps_its_alerts_and_marks_removed_rules_stale(
        store: TSDB) -> None:
    clock = Clock(T0)
    manager = await manager_with(store, clock, """\
        groups:
          - name: g
            rules:
              - alert: Hot
                expr: temperature > 50
                for: 5m
              - record: t:max
                expr: max(temperature)
        """)
    t = manager.groups()[0].eval_timestamp(T0 + 15 * S)
    write(store, "temperature", t - 1, 70.0, room="a")
    await at(manager, clock, t)
    clock.ms = t + 5 * S
    await manager.set_group("rules.yml", textwrap.dedent("""\
        groups:
          - name: g
            rules:
              - alert: Hot
                expr: temperature > 55
                for: 5m
        """))
    [alert] = only_rule(manager).alerts()
    assert (alert.state, alert.active_at_ms) == (AlertState.PENDING, t)   # carried over
    assert series(store, "t:max") == {(): [(t, 70.0), (t + 5 * S, "stale")]}


async def restart_evaluation(tmp_path: Path, text: str, times: list[int],
                             restart_at: int, *, hot_until: int, hot_after: bool = True
                             ) -> tuple[list[list[OutgoingAlert]], RuleManager, TSDB, Clock]:
    """Evaluate at ``times`` (hot samples up to ``hot_until``, cool ones after), close
    the store, reopen it and evaluate once at ``restart_at`` (hot unless ``hot_after`` is
    false) with a new manager."""
    sent: list[list[OutgoingAlert]] = []
    with TSDB.open(tmp_path / "db", TSDBOptions()) as store:
        clock = Clock(times[0])
        manager = await manager_with(store, clock, text)
        for ms in times:
            write(store, "temperature", ms - 1, 70.0 if ms <= hot_until else 20.0, room="a")
            sent.append(await at(manager, clock, ms))
        await manager.stop()
    store = TSDB.open(tmp_path / "db", TSDBOptions())
    write(store, "temperature", restart_at - 1, 70.0 if hot_after else 20.0, room="a")
    clock = Clock(restart_at)
    manager = await manager_with(store, clock, text)
    sent.append(await at(manager, clock, restart_at))
    return sent, manager, store, clock


def slots(start: int, count: int, step: int = 15 * S) -> list[int]:
    return [start + i * step for i in range(count)]


async def test_a_firing_alert_is_firing_after_a_restart_with_its_start_unchanged(
        tmp_path: Path) -> None:
    with TSDB.open(tmp_path / "probe", TSDBOptions()) as probe:
        first = (await manager_with(probe, Clock(T0), HOT)).groups()[0].eval_timestamp(T0)
    times = slots(first, 6)                                    # fires at first + 60 s
    restart = first + 6 * 15 * S + 40 * S
    sent, manager, store, _clock = await restart_evaluation(tmp_path, HOT, times, restart,
                                                            hot_until=times[-1])
    with store:
        assert [a.starts_at_ms for a in sent[4]] == [first + 60 * S]
        [after] = sent[-1]                       # re-sent at once after the restart...
        assert after.starts_at_ms == first + 60 * S          # ...as the same alert
        [alert] = only_rule(manager).alerts()
        assert (alert.state, alert.active_at_ms, alert.fired_at_ms) == (
            AlertState.FIRING, first, first + 60 * S)
        data = rules_api.alerts_data(manager)
        assert [(a["state"], a["activeAt"]) for a in data["alerts"]] == [
            ("firing", go_time(first))]


async def test_an_alert_gone_while_the_evaluator_was_down_is_resolved_at_its_restart(
        tmp_path: Path) -> None:
    """Firing when the evaluator stopped, cool when it starts: the resolution is sent at
    its first evaluation, as the same alert (Prometheus forgets it, and the notifier
    resolves it only when its ends_at passes, minutes later)."""
    text = HOT.replace("            keep_firing_for: 30s\n", "")
    with TSDB.open(tmp_path / "probe", TSDBOptions()) as probe:
        first = (await manager_with(probe, Clock(T0), text)).groups()[0].eval_timestamp(T0)
    times = slots(first, 6)                                    # fires at first + 60 s
    restart = first + 6 * 15 * S + 45 * S                      # a slot: the cool sample is in
    sent, manager, store, _clock = await restart_evaluation(
        tmp_path, text, times, restart, hot_until=times[-1], hot_after=False)
    with store:
        assert [a.starts_at_ms for a in sent[4]] == [first + 60 * S]
        [resolved] = sent[-1]
        slot = manager.groups()[0].eval_timestamp(restart)
        assert (resolved.starts_at_ms, resolved.ends_at_ms) == (first + 60 * S, slot)
        assert resolved.labels["room_upper"] == "A"
        assert only_rule(manager).alerts() == []               # nothing pending or firing
        assert await at(manager, _clock, slot + 15 * S) == []  # sent once


async def test_a_pending_alert_keeps_its_wait_across_a_restart(tmp_path: Path) -> None:
    """for: 20m (over the 10 m grace period): pending 5 min, down 5 min -> active-since
    shifted by the outage, so 15 more minutes to wait."""
    text = """\
        groups:
          - name: g
            rules:
              - alert: Hot
                expr: temperature > 50
                for: 20m
        """
    with TSDB.open(tmp_path / "probe", TSDBOptions()) as probe:
        first = (await manager_with(probe, Clock(T0), text)).groups()[0].eval_timestamp(T0)
    times = slots(first, 21)                                   # 5 minutes of slots
    restart = times[-1] + 5 * MIN
    _sent, manager, store, _ = await restart_evaluation(tmp_path, text, times, restart,
                                                        hot_until=times[-1])
    with store:
        [alert] = only_rule(manager).alerts()
        assert (alert.state, alert.active_at_ms) == (AlertState.PENDING, first + 5 * MIN)


async def test_a_pending_alert_close_to_firing_waits_the_grace_period_after_a_restart(
        tmp_path: Path) -> None:
    text = """\
        groups:
          - name: g
            rules:
              - alert: Hot
                expr: temperature > 50
                for: 20m
        """
    with TSDB.open(tmp_path / "probe", TSDBOptions()) as probe:
        first = (await manager_with(probe, Clock(T0), text)).groups()[0].eval_timestamp(T0)
    times = slots(first, 16, MIN)                              # 15 minutes pending
    restart = times[-1] + MIN
    _sent, manager, store, _ = await restart_evaluation(tmp_path, text, times, restart,
                                                        hot_until=times[-1])
    with store:
        [alert] = only_rule(manager).alerts()
        slot = manager.groups()[0].eval_timestamp(restart)
        assert alert.active_at_ms == slot + 10 * MIN - 20 * MIN   # fires 10 min from now


async def test_a_pending_alert_of_a_short_for_waits_it_again_after_a_restart(
        tmp_path: Path) -> None:
    """for: 1m, under the grace period: Prometheus does not restore it; it waits 1 m."""
    with TSDB.open(tmp_path / "probe", TSDBOptions()) as probe:
        first = (await manager_with(probe, Clock(T0), HOT)).groups()[0].eval_timestamp(T0)
    times = slots(first, 3)                                    # pending 30 s
    restart = times[-1] + 30 * S
    _sent, manager, store, _ = await restart_evaluation(tmp_path, HOT, times, restart,
                                                        hot_until=times[-1])
    with store:
        [alert] = only_rule(manager).alerts()
        slot = manager.groups()[0].eval_timestamp(restart)
        assert (alert.state, alert.active_at_ms) == (AlertState.PENDING, slot)


async def test_an_alert_resolved_before_a_restart_starts_afresh(tmp_path: Path) -> None:
    with TSDB.open(tmp_path / "probe", TSDBOptions()) as probe:
        first = (await manager_with(probe, Clock(T0), HOT)).groups()[0].eval_timestamp(T0)
    times = slots(first, 12)
    restart = times[-1] + 30 * S
    _sent, manager, store, _ = await restart_evaluation(
        tmp_path, HOT, times, restart, hot_until=times[5])    # cool, resolved before
    with store:
        [alert] = only_rule(manager).alerts()
        slot = manager.groups()[0].eval_timestamp(restart)
        assert (alert.state, alert.active_at_ms) == (AlertState.PENDING, slot)


async def test_the_manager_runs_its_groups_in_the_background_until_stopped(
        store: TSDB, tmp_path: Path) -> None:
    rules = tmp_path / "fast.yml"
    rules.write_text("groups:\n- name: fast\n  interval: 50ms\n  rules:\n"
                     "  - record: count:up\n    expr: count(up)\n")
    write(store, "up", int(time.time() * 1000), 1.0, job="x")
    manager = RuleManager(store, Engine(store), rule_files=[rules])
    async with manager:
        group = manager.groups()[0]
        await eventually(lambda: group.metrics.iterations >= 3, 10,
                         what="three iterations", every=0.02)
    done = group.metrics.iterations
    assert series(store, "count:up")                     # written by the loop
    key = '{rule_group="%s;fast"}' % rules
    assert manager.metrics()[f"geoplex_telemetry_rule_group_iterations_total{key}"] == done
    assert all(task is None for task in (r.task for r in manager.groups_running()))


async def test_the_rules_api_lists_groups_rules_and_alerts_in_prometheus_shapes(
        store: TSDB) -> None:
    clock = Clock(T0)
    manager = await manager_with(store, clock, HOT.rstrip(" ") + """\
          - record: t:max
            expr: max(temperature)
    """)
    t = manager.groups()[0].eval_timestamp(T0 + 15 * S)
    write(store, "temperature", t - 1, 61.0, room="a")
    await at(manager, clock, t)
    data, warnings = rules_api.rules_data(manager, MultiDict())
    assert warnings == []
    [group] = data["groups"]
    assert (group["name"], group["file"], group["interval"], group["limit"]) == (
        "rooms", "rules.yml", 15.0, 0)
    assert group["lastEvaluation"] == go_time(t)
    alerting, recording = group["rules"]
    assert {k: alerting[k] for k in ("name", "query", "duration", "keepFiringFor", "health",
                                     "lastError", "type", "state")} == {
        "name": "RoomTooHot", "query": "temperature > 50", "duration": 60.0,
        "keepFiringFor": 30.0, "health": "ok", "lastError": "", "type": "alerting",
        "state": "pending"}
    assert alerting["labels"] == {"severity": "page", "room_upper": "{{ $labels.room | toUpper }}"}
    assert alerting["alerts"] == [{
        "labels": {"alertname": "RoomTooHot", "room": "a", "room_upper": "A",
                   "severity": "page"},
        "annotations": {"summary": "a is at 61°C"}, "state": "pending",
        "activeAt": go_time(t), "value": "6.1e+01"}]
    assert (recording["name"], recording["type"], recording["health"]) == (
        "t:max", "recording", "ok")
    only_alerts, _ = rules_api.rules_data(manager, MultiDict(type="alert",
                                                             exclude_alerts="true"))
    assert [[r["name"] for r in g["rules"]] for g in only_alerts["groups"]] == [["RoomTooHot"]]
    assert "alerts" not in only_alerts["groups"][0]["rules"][0]
    none, _ = rules_api.rules_data(manager, MultiDict([("rule_name[]", "nope")]))
    assert none == {"groups": []}
    assert [a["state"] for a in rules_api.alerts_data(manager)["alerts"]] == ["pending"]
