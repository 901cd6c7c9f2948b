"""Label sets, matchers and the inverted index, held to a brute-force filter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers.telemetry.tsdb.index import MemPostings, select_postings
from geoplex.servers.telemetry.tsdb.labels import (
    InvalidLabels,
    Labels,
    Matcher,
    MatchOp,
    labels_of,
    matches_all,
)


def test_label_sets_are_keyed_by_their_sorted_pairs() -> None:
    a = labels_of({"job": "node", "__name__": "up", "instance": "h:1"})
    b = labels_of([("instance", "h:1"), ("__name__", "up"), ("job", "node")])
    assert a == b and hash(a) == hash(b)
    assert a.pairs == (("__name__", "up"), ("instance", "h:1"), ("job", "node"))
    assert a.name == "up" and a["job"] == "node"


def test_an_empty_value_is_the_same_as_no_label() -> None:
    assert labels_of({"__name__": "up", "env": ""}) == labels_of({"__name__": "up"})


@pytest.mark.parametrize("name", ["1abc", "a-b", "", "é", "__reserved"])
def test_bad_or_reserved_label_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidLabels):
        labels_of({"__name__": "up", name: "x"})


def test_a_series_needs_a_metric_name_and_unique_label_names() -> None:
    with pytest.raises(InvalidLabels, match="__name__"):
        labels_of({"job": "x"})
    with pytest.raises(InvalidLabels, match="twice"):
        labels_of([("__name__", "up"), ("a", "1"), ("a", "2")])


def test_values_may_be_any_utf8() -> None:
    labels = labels_of({"__name__": "up", "path": "/ünï/\n\"quoted\" 🚀"})
    assert labels["path"] == "/ünï/\n\"quoted\" 🚀"


def test_a_value_that_is_not_utf8_is_rejected() -> None:
    with pytest.raises(InvalidLabels, match="UTF-8"):
        labels_of({"__name__": "up", "path": "\udc80"})


def test_regex_matchers_are_fully_anchored_and_dot_matches_newline() -> None:
    m = Matcher("a", MatchOp.RE, "b.*")
    assert m.matches("bcd") and not m.matches("abc")
    assert Matcher("a", MatchOp.RE, "x.y").matches("x\ny")
    assert Matcher("a", MatchOp.NRE, "b|c").matches("bc")


def test_an_invalid_regex_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="invalid regex"):
        Matcher("a", MatchOp.RE, "(")


def series_set() -> dict[int, Labels]:
    raw = [{"__name__": "up", "job": "node", "env": "prod"},
           {"__name__": "up", "job": "node"},
           {"__name__": "up", "job": "api", "env": "dev"},
           {"__name__": "cpu", "job": "api", "env": "prod", "mode": "idle"}]
    return {i + 1: labels_of(r) for i, r in enumerate(raw)}


def selected(matchers: list[Matcher]) -> list[int]:
    postings = MemPostings()
    for series_id, labels in series_set().items():
        postings.add(series_id, labels)
    return select_postings(postings, matchers).tolist()


def test_a_matcher_matching_empty_also_selects_series_without_the_label() -> None:
    assert selected([Matcher("env", MatchOp.EQ, "")]) == [2]
    assert selected([Matcher("env", MatchOp.NE, "prod")]) == [2, 3]
    assert selected([Matcher("env", MatchOp.RE, "|dev")]) == [2, 3]
    assert selected([Matcher("env", MatchOp.NRE, "p.*")]) == [2, 3]


def test_not_equal_empty_means_the_label_exists() -> None:
    assert selected([Matcher("env", MatchOp.NE, "")]) == [1, 3, 4]
    assert selected([Matcher("mode", MatchOp.RE, ".+")]) == [4]


def test_matchers_intersect() -> None:
    assert selected([Matcher("__name__", MatchOp.EQ, "up"),
                     Matcher("job", MatchOp.EQ, "node")]) == [1, 2]
    assert selected([Matcher("__name__", MatchOp.EQ, "up"), Matcher("env", MatchOp.EQ, "")]) == [2]
    assert selected([Matcher("__name__", MatchOp.EQ, "nope")]) == []
    assert selected([Matcher("nolabel", MatchOp.EQ, "")]) == [1, 2, 3, 4]


def test_removed_series_leave_the_index() -> None:
    postings = MemPostings()
    labels = series_set()
    for series_id, ls in labels.items():
        postings.add(series_id, ls)
    postings.remove({1, 4}, [labels[1], labels[4]])
    assert select_postings(postings, [Matcher("env", MatchOp.NE, "")]).tolist() == [3]
    assert postings.values_of("mode") == []
    assert "mode" not in postings.label_names()


VALUES = ["", "a", "b", "ab", "a\nb", "ü"]
NAMES = ["__name__", "x", "y"]

label_sets = st.lists(st.fixed_dictionaries({}, optional={n: st.sampled_from(VALUES)
                                                           for n in NAMES}), max_size=25)
matchers = st.lists(st.builds(Matcher, st.sampled_from(NAMES + ["z"]), st.sampled_from(list(MatchOp)),
                              st.sampled_from(VALUES + ["a.*", ".*", ".+", "a|b", "[ab]+", "|a"])),
                    max_size=3)


@settings(max_examples=300, deadline=None)
@given(label_sets, matchers)
def test_index_selection_equals_the_brute_force_filter(raw: list[dict[str, str]],
                                                       chosen: list[Matcher]) -> None:
    postings = MemPostings()
    sets = {}
    for i, r in enumerate(raw, 1):
        labels = Labels(r.items())
        sets[i] = labels
        postings.add(i, labels)
    expected = [i for i, labels in sets.items() if matches_all(labels, chosen)]
    got = select_postings(postings, chosen)
    assert got.dtype == np.int64
    assert got.tolist() == expected


def test_regex_matchers_take_prometheus_re2_syntax_as_the_parser_does() -> None:
    # POSIX classes and \z are RE2 (Go), not Python: the store translates them
    assert Matcher("code", MatchOp.RE, "[[:digit:]]+").matches("503")
    assert not Matcher("code", MatchOp.RE, "[[:digit:]]+").matches("5x3")
    assert Matcher("job", MatchOp.RE, "api\\z").matches("api")
