"""Silences: their states, what a new one must have, what they mute, and the notice
sent when one expires over alerts that still fire (alertmanager#730)."""

from __future__ import annotations

import pytest

from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers.notifier.domain import (
    AlertState,
    MatcherInput,
    MatchType,
    NotifierState,
    PostedAlert,
    Silence,
    SilenceState,
    new_silence,
    parse_matchers,
    silence_filter_matches,
    silence_from_json,
    silence_to_json,
)
from geoplex.servers.notifier.notification import Kind

from notifier_trees import T0, alerting

CONFIG = alerting("""
route:
  receiver: ops
  group_by: [alertname]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
  routes:
    - matchers: ['team="db"']
      receiver: dba
      continue: true
    - receiver: ops   # everything else, and db alerts too
receivers: [{name: ops}, {name: dba}]
""")

EQ = MatchType.EQUAL


def silence(sid: str, *matchers: tuple[str, MatchType, str], starts: float = T0,
            ends: float = T0 + 60, by: str = "alice", why: str = "maintenance") -> Silence:
    return new_silence(sid, [MatcherInput(n, v, t) for n, t, v in matchers], starts, ends,
                       by, why, T0)


def test_a_silence_is_pending_then_active_then_expired() -> None:
    s = silence("s1", ("alertname", EQ, "A"), starts=T0 + 10, ends=T0 + 20)
    assert [s.state(t) for t in (T0, T0 + 10, T0 + 19.9, T0 + 20)] == [
        SilenceState.PENDING, SilenceState.ACTIVE, SilenceState.ACTIVE, SilenceState.EXPIRED]


def test_expiring_ends_an_active_one_now_and_a_pending_one_before_it_starts() -> None:
    active = silence("s1", ("alertname", EQ, "A")).expire(T0 + 5, "bob", "done early")
    assert (active.starts_at, active.ends_at, active.expired_by) == (T0, T0 + 5, "bob")
    assert active.state(T0 + 5) is SilenceState.EXPIRED
    pending = silence("s2", ("alertname", EQ, "A"), starts=T0 + 30).expire(T0 + 5, "bob", "")
    assert pending.starts_at == pending.ends_at == T0 + 5
    assert active.expire(T0 + 9, "carol", "again") is active  # expired already: unchanged


@pytest.mark.parametrize(("matchers", "field", "reason"), [
    ([], "silence.matchers", "REQUIRED_FIELD"),
    ([MatcherInput("env", "", MatchType.EQUAL)], "silence.matchers", "MATCHES_EVERYTHING"),
    ([MatcherInput("env", ".*", MatchType.REGEX), MatcherInput("x", "y", MatchType.NOT_EQUAL)],
     "silence.matchers", "MATCHES_EVERYTHING"),
    ([MatcherInput("env", "(", MatchType.REGEX)], "silence.matchers[0].value", "INVALID_REGEX"),
    ([MatcherInput("a", "b", EQ), MatcherInput("", "b", EQ)], "silence.matchers[1].name",
     "REQUIRED_FIELD"),
    ([MatcherInput("a", "b", None)], "silence.matchers[0].type", "INVALID_ARGUMENT"),
])
def test_bad_matchers_are_refused_naming_the_field(matchers: list[MatcherInput], field: str,
                                                   reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        new_silence("s", matchers, None, T0 + 60, "alice", "why", T0)
    assert (caught.value.field, caught.value.reason) == (field, reason)


def test_an_unspecified_match_type_lists_the_allowed_ones() -> None:
    with pytest.raises(InvalidArgument) as caught:
        new_silence("s", [MatcherInput("a", "b", None)], None, T0 + 60, "alice", "why", T0)
    assert "MATCH_TYPE_EQUAL" in caught.value.metadata["allowed"]
    assert "MATCH_TYPE_NOT_REGEX" in str(caught.value)


@pytest.mark.parametrize(("starts", "ends", "by", "why", "field"), [
    (None, None, "alice", "why", "silence.ends_at"),
    (T0 + 100, T0 + 50, "alice", "why", "silence.ends_at"),
    (T0 - 100, T0 - 50, "alice", "why", "silence.ends_at"),
    (None, T0 + 60, "  ", "why", "silence.created_by"),
    (None, T0 + 60, "alice", "", "silence.comment"),
    (None, T0 + 60, "alice\x1b[2J", "why", "silence.created_by"),
])
def test_bad_times_and_a_missing_author_or_comment_are_refused(
        starts: float | None, ends: float | None, by: str, why: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        new_silence("s", [MatcherInput("a", "b", EQ)], starts, ends, by, why, T0)
    assert caught.value.field == field


def test_a_silence_mutes_what_its_matchers_match_while_active() -> None:
    state = NotifierState(CONFIG.route)
    state.set_silence(silence("s1", ("alertname", EQ, "A"), ("env", MatchType.REGEX, "prod|stg"),
                              ends=T0 + 30), T0)
    state.put([PostedAlert({"alertname": "A", "env": "prod"}, starts_at=T0),
               PostedAlert({"alertname": "A", "env": "dev"}, starts_at=T0)], T0)
    listed = {a.alert.labels["env"]: a for a in state.listed(T0 + 1, include_suppressed=True)}
    assert listed["prod"].state is AlertState.SUPPRESSED
    assert listed["prod"].silenced_by == ("s1",)
    assert listed["dev"].state is AlertState.ACTIVE
    (group,) = state.due(T0 + 1)
    planned = state.flush(group, T0 + 1)
    assert planned is not None
    assert [a.labels["env"] for a in planned.notification.alerts] == ["dev"]
    later = {a.alert.labels["env"]: a.state for a in state.listed(T0 + 31)}
    assert later == {"prod": AlertState.ACTIVE, "dev": AlertState.ACTIVE}  # it ended


def test_an_expired_silence_over_firing_alerts_tells_their_receivers_once() -> None:
    state = NotifierState(CONFIG.route, external_url="http://nf")
    state.set_silence(silence("s1", ("alertname", EQ, "A"), ends=T0 + 30, by="alice",
                              why="disk swap"), T0)
    state.put([PostedAlert({"alertname": "A", "team": "db"}, starts_at=T0)], T0)
    flushed = [state.flush(g, T0 + 1) for g in state.due(T0 + 1)]
    assert flushed == [None, None]  # muted: nothing to say
    assert state.silence_notices(T0 + 29) == []
    notices = state.silence_notices(T0 + 30)
    assert sorted(p.receiver for p in notices) == ["dba", "ops"]  # both of its routes
    n = notices[0].notification
    assert n.kind is Kind.SILENCE_EXPIRED and n.status == "firing"
    assert (n.silence["id"], n.silence["created_by"], n.silence["comment"]) == (
        "s1", "alice", "disk swap")
    assert [a.labels["alertname"] for a in n.alerts] == ["A"]
    assert notices[0].reclaim_after is None
    assert state.silence_notices(T0 + 31) == []  # once
    # the notice was the news: the groups' next flushes do not send it again as FIRING
    assert [state.flush(g, T0 + 36) for g in state.due(T0 + 36)] == [None, None]


def test_no_notice_when_the_muted_alerts_resolved_or_are_still_muted() -> None:
    state = NotifierState(CONFIG.route)
    state.set_silence(silence("s1", ("alertname", EQ, "A"), ends=T0 + 30), T0)
    state.set_silence(silence("s2", ("alertname", EQ, "B"), ends=T0 + 30), T0)
    state.set_silence(silence("s3", ("alertname", EQ, "B"), ends=T0 + 90), T0)
    state.put([PostedAlert({"alertname": "A"}, starts_at=T0, ends_at=T0 + 20),
               PostedAlert({"alertname": "B"}, starts_at=T0)], T0)
    assert state.silence_notices(T0 + 30) == []  # A resolved; B still muted by s3
    (notice,) = state.silence_notices(T0 + 90)
    assert notice.notification.silence["id"] == "s3"


def test_an_expired_silence_that_never_muted_anything_sends_nothing() -> None:
    state = NotifierState(CONFIG.route)
    state.set_silence(silence("s1", ("alertname", EQ, "A"), starts=T0 + 10, ends=T0 + 20), T0)
    state.put([PostedAlert({"alertname": "B"}, starts_at=T0)], T0)
    assert state.silence_notices(T0 + 25) == []


def test_a_pending_silence_that_becomes_active_is_noticed_when_it_ends() -> None:
    state = NotifierState(CONFIG.route)
    state.put([PostedAlert({"alertname": "A"}, starts_at=T0)], T0)
    state.set_silence(silence("s1", ("alertname", EQ, "A"), starts=T0 + 10, ends=T0 + 20), T0)
    assert state.next_deadline(T0 + 2) <= T0 + 10
    assert state.silence_notices(T0 + 12) == []  # active now, remembers what it mutes
    assert [p.notification.silence["id"] for p in state.silence_notices(T0 + 20)] == ["s1"]


def test_expiring_early_notifies_like_the_end_passing() -> None:
    state = NotifierState(CONFIG.route)
    s = silence("s1", ("alertname", EQ, "A"), ends=T0 + 3600)
    state.set_silence(s, T0)
    state.put([PostedAlert({"alertname": "A"}, starts_at=T0)], T0)
    state.set_silence(s.expire(T0 + 5, "bob", "fixed"), T0 + 5)
    (notice,) = state.silence_notices(T0 + 5)
    assert notice.notification.silence["expired_by"] == "bob"


def test_a_silence_is_stored_and_read_back_and_filtered_by_its_matchers() -> None:
    s = silence("s1", ("service", EQ, "api"), ("env", MatchType.NOT_REGEX, "dev|test"))
    assert silence_from_json(silence_to_json(s)) == s
    assert silence_filter_matches(s, parse_matchers('{service="api"}'))
    assert not silence_filter_matches(s, parse_matchers('{service="maps"}'))
    assert silence_filter_matches(s, [])


def test_a_silence_starting_in_the_past_starts_now() -> None:
    s = new_silence("s", [MatcherInput("a", "b", EQ)], T0 - 3600, T0 + 60, "alice", "why", T0)
    assert (s.starts_at, s.state(T0)) == (T0, SilenceState.ACTIVE)
