"""Matchers as Alertmanager 0.22+ writes them, and Prometheus durations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geoplex.servers.notifier.domain import (
    Matcher,
    MatcherError,
    MatchType,
    format_duration,
    parse_duration,
    parse_matcher,
    parse_matchers,
)


@pytest.mark.parametrize(("text", "name", "kind", "value"), [
    ('severity="page"', "severity", MatchType.EQUAL, "page"),
    ("severity=page", "severity", MatchType.EQUAL, "page"),
    ('  job != "api" ', "job", MatchType.NOT_EQUAL, "api"),
    ('service=~"api|maps"', "service", MatchType.REGEX, "api|maps"),
    ('instance!~"web-.*"', "instance", MatchType.NOT_REGEX, "web-.*"),
    ('msg="say \\"hi\\", then go"', "msg", MatchType.EQUAL, 'say "hi", then go'),
    ('env=""', "env", MatchType.EQUAL, ""),
])
def test_a_matcher_parses_each_operator_quoted_or_not(text: str, name: str, kind: MatchType,
                                                      value: str) -> None:
    assert parse_matcher(text) == Matcher(name, kind, value)


def test_a_list_of_matchers_in_braces_splits_at_commas_outside_quotes() -> None:
    found = parse_matchers('{alertname="A", service=~"x,y" , msg="a,b",}')
    assert [str(m) for m in found] == ['alertname="A"', 'service=~"x,y"', 'msg="a,b"']
    assert parse_matchers("") == [] and parse_matchers("{}") == []


def test_regexes_are_anchored_and_a_missing_label_is_empty() -> None:
    api = parse_matcher('service=~"api"')
    assert api.matches({"service": "api"})
    assert not api.matches({"service": "api-2"}) and not api.matches({"service": "my-api"})
    assert parse_matcher('service!~"api|maps"').matches({"service": "routing"})
    assert not parse_matcher('service!~"api|maps"').matches({"service": "maps"})
    assert parse_matcher('env=""').matches({})
    assert parse_matcher('env!="prod"').matches({})
    assert parse_matcher('env=~".*"').matches_empty
    assert not parse_matcher('env=~".+"').matches_empty


@pytest.mark.parametrize(("text", "problem"), [
    ('service=~"("', "not a regular expression"),
    ('severity="page', "quote is not closed"),
    ("1abc=x", "not a matcher"),
    ("severity", "not a matcher"),
    ('a="1",,b="2"', "empty matcher"),
    ('{a="1"', "closing brace"),
    ('a=x"y"', "quoted as a whole"),
    ('a="\\q"', "bad escape"),
])
def test_a_bad_matcher_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(MatcherError, match=problem):
        parse_matchers(text)


@given(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True),
       st.sampled_from(["=", "!="]),
       st.text(st.characters(codec="utf-8"), max_size=12))
def test_a_matcher_printed_parses_back_to_itself(name: str, op: str, value: str) -> None:
    matcher = Matcher.of(name, op, value)
    assert parse_matcher(str(matcher)) == matcher
    assert parse_matchers(f"{{{matcher}, {matcher}}}") == [matcher, matcher]


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("1h30m", 5400), ("200ms", 0.2), ("1d", 86_400),
    ("1w", 604_800), ("1y", 31_536_000), ("0", 0), ("2h0m5s", 7205)])
def test_durations_are_prometheus_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "1m1h", "1.5h", "-1m", "h"])
def test_a_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_a_duration_prints_back() -> None:
    assert [format_duration(s) for s in (0, 0.2, 90, 5400, 86_400 + 1)] == [
        "0s", "200ms", "1m30s", "1h30m", "1d1s"]
