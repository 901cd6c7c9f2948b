"""The presence session's view of friends: pure logic, no network."""

from __future__ import annotations

import pytest

from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers.presence.domain import (
    Fix,
    Gone,
    Session,
    check_recent,
    validate_fix,
    validate_radius,
)

M = 1 / 111_194.93  # degrees of latitude per metre


def session(radius: float = 1000.0, friends: tuple[str, ...] = ("bob", "carol")) -> Session:
    return Session("alice", Fix(0.0, 0.0, 100.0), radius, True, set(friends))


def kinds(s: Session) -> list[tuple[str, str]]:
    _, events = s.drain()
    return [(e.kind, e.user_id) for e in events]


def test_a_friend_inside_the_radius_is_nearby_then_moved():
    s = session()
    s.friend_moved("bob", Fix(500 * M, 0, 101))
    assert kinds(s) == [("nearby", "bob")]
    s.friend_moved("bob", Fix(600 * M, 0, 102))
    assert kinds(s) == [("moved", "bob")]


def test_the_boundary_is_inclusive_and_leaving_it_sends_gone():
    s = session(radius=1000)
    s.friend_moved("bob", Fix(999.9 * M, 0, 101))
    assert kinds(s) == [("nearby", "bob")]
    s.friend_moved("bob", Fix(1000.1 * M, 0, 102))
    _, events = s.drain()
    assert [(e.kind, e.reason) for e in events] == [("gone", Gone.LEFT_RADIUS)]


def test_a_friend_never_shown_produces_no_gone():
    s = session(radius=1000)
    s.friend_moved("bob", Fix(5000 * M, 0, 101))
    s.friend_gone("carol", Gone.DISCONNECTED)
    assert kinds(s) == []


def test_many_changes_coalesce_to_the_newest_per_friend():
    s = session(radius=1e7)
    for n in range(10_000):
        s.friend_moved("bob", Fix(n * M, 0, 101 + n))
        s.friend_moved("carol", Fix(n * 2 * M, 0, 101 + n))
    assert len(s.pending) == 2  # memory bounded by the number of friends
    _, events = s.drain()
    assert [(e.kind, e.user_id) for e in events] == [("nearby", "bob"), ("nearby", "carol")]
    assert events[0].seen is not None and events[0].seen.fix.t == 101 + 9_999
    assert s.coalesced == 2 * 10_000 - 2


def test_nearby_then_gone_before_delivery_sends_nothing():
    s = session()
    s.friend_moved("bob", Fix(10 * M, 0, 101))
    s.friend_gone("bob", Gone.STOPPED_SHARING)
    assert kinds(s) == []


def test_own_movement_and_radius_change_reevaluate_friends():
    s = session(radius=1000)
    s.friend_moved("bob", Fix(900 * M, 0, 101))
    s.drain()
    s.moved(Fix(-200 * M, 0, 102))  # now 1100 m apart
    assert kinds(s) == [("gone", "bob")]
    s.set_radius(2000)
    assert kinds(s) == [("nearby", "bob")]


def test_inactive_friends_are_swept():
    s = session()
    s.friend_moved("bob", Fix(10 * M, 0, 100))
    s.friend_moved("carol", Fix(20 * M, 0, 650))
    s.drain()
    s.sweep(now=701, inactive_after_s=600)
    _, events = s.drain()
    assert [(e.user_id, e.reason) for e in events] == [("bob", Gone.INACTIVE)]


def test_updates_from_strangers_are_ignored_and_unfriending_removes():
    s = session()
    s.friend_moved("mallory", Fix(1 * M, 0, 101))
    s.friend_moved("bob", Fix(1 * M, 0, 101))
    assert kinds(s) == [("nearby", "bob")]
    s.remove_friend("bob")
    _, events = s.drain()
    assert [(e.user_id, e.reason) for e in events] == [("bob", Gone.UNFRIENDED)]


def test_snapshot_is_nearest_first():
    s = session(radius=5000, friends=("a", "b", "c"))
    for name, metres in (("a", 3000), ("b", 1000), ("c", 9000)):
        s.friend_moved(name, Fix(metres * M, 0, 101))
    assert [x.user_id for x in s.snapshot()] == ["b", "a"]
    assert kinds(s) == []


@pytest.mark.parametrize("lat,lon,t,field", [(91, 0, 100, "u.location.latitude"),
                                             (0, 181, 100, "u.location.longitude"),
                                             (0, 0, 10_000, "u.time")])
def test_bad_fixes_name_the_field(lat, lon, t, field):
    with pytest.raises(InvalidArgument) as err:
        validate_fix(lat, lon, t, "u", now=100, future_tolerance_s=60)
    assert err.value.field == field


def test_radius_bounds():
    assert validate_radius(100, 100, 50_000) == 100
    with pytest.raises(InvalidArgument):
        validate_radius(99.9, 100, 50_000)


def test_a_friends_older_location_does_not_replace_a_newer_one():
    s = session()
    s.friend_moved("bob", Fix(500 * M, 0, 105))
    assert kinds(s) == [("nearby", "bob")]
    s.friend_moved("bob", Fix(900 * M, 0, 104))  # stamped before the one shown
    assert kinds(s) == []
    assert s.friend_fixes["bob"].t == 105
    s.friend_moved("bob", Fix(600 * M, 0, 105))  # the same time: taken
    assert kinds(s) == [("moved", "bob")]


@pytest.mark.parametrize("t,reason", [(399.9, "TIME_TOO_OLD"), (949.5, "OUT_OF_ORDER")])
def test_an_update_too_old_or_older_than_the_latest_is_refused(t, reason):
    with pytest.raises(InvalidArgument) as err:
        check_recent(t, "u", now=1000, max_age_s=600, latest_t=950)
    assert (err.value.field, err.value.reason) == ("u.time", reason)
    assert "949" not in err.value.message and "950" not in err.value.message


@pytest.mark.parametrize("t,latest", [(400, 0), (950, 950), (950.5, 950), (1060, 950)])
def test_an_update_as_new_as_the_latest_and_within_the_limit_is_taken(t, latest):
    check_recent(t, "u", now=1000, max_age_s=600, latest_t=latest)


def test_the_same_location_heard_twice_sends_nothing_the_second_time():
    """A friend's location read when the stream opens may also arrive on their channel."""
    s = session()
    s.friend_moved("bob", Fix(500 * M, 0, 105))
    assert [x.user_id for x in s.snapshot()] == ["bob"]
    s.friend_moved("bob", Fix(500 * M, 0, 105))
    assert kinds(s) == []
