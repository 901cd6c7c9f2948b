"""Which navigation fixes are accepted: ranges, times, duplicates and impossible jumps."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.maps import locations as loc
from geoplex.servers.maps.locations import Fix, LastFixes, check, hour_of

NOW = 1_800_000_000.0
HELSINKI = (60.1699, 24.9384)
# ~111 m of latitude per 0.001 degree
STEP = 0.001


def _fix(i: int, *, dt: float = 5.0) -> Fix:
    values: dict[str, float | None] = {"lat": HELSINKI[0] + i * STEP * 0.1,
                                       "lon": HELSINKI[1], "time": NOW - 100 + i * dt}
    return Fix(lat=values["lat"], lon=values["lon"], time=values["time"])


def test_a_plausible_trip_is_accepted_whole_in_time_order() -> None:
    fixes = [_fix(i) for i in (3, 0, 2, 1)]
    accepted, rejected = check(fixes, NOW)
    assert rejected == []
    assert [i for i, _ in accepted] == [1, 3, 2, 0]  # by time


@pytest.mark.parametrize(("fix", "reason"), [
    (Fix(None, None, NOW), loc.MISSING_LOCATION),
    (Fix(91.0, 0.0, NOW), loc.OUT_OF_RANGE),
    (Fix(0.0, -180.5, NOW), loc.OUT_OF_RANGE),
    (Fix(math.nan, 0.0, NOW), loc.OUT_OF_RANGE),
    (Fix(*HELSINKI, None), loc.MISSING_TIME),
    (Fix(*HELSINKI, NOW + 61), loc.IN_THE_FUTURE),
    (Fix(*HELSINKI, NOW - 8 * 86_400), loc.TOO_OLD),
    (Fix(*HELSINKI, NOW, accuracy_m=-1), loc.BAD_ACCURACY),
    (Fix(*HELSINKI, NOW, speed_mps=150), loc.BAD_SPEED),
    (Fix(*HELSINKI, NOW, heading_deg=400), loc.BAD_HEADING),
])
def test_a_bad_fix_is_rejected_with_its_reason_and_the_rest_kept(fix: Fix, reason: str) -> None:
    good = Fix(*HELSINKI, NOW - 30)
    accepted, rejected = check([good, fix], NOW)
    assert [i for i, _ in accepted] == [0]
    assert rejected == [loc.Rejected(1, reason)]


def test_a_fix_at_the_same_time_as_another_is_a_duplicate() -> None:
    accepted, rejected = check([_fix(0), _fix(0)], NOW)
    assert len(accepted) == 1 and rejected == [loc.Rejected(1, loc.DUPLICATE_TIME)]


def test_a_jump_faster_than_any_vehicle_is_rejected() -> None:
    a = Fix(*HELSINKI, NOW - 10)
    far = Fix(HELSINKI[0] + 0.1, HELSINKI[1], NOW - 9)   # 11 km in a second
    b = Fix(HELSINKI[0] + 0.0001, HELSINKI[1], NOW - 8)  # 11 m in 2 s
    accepted, rejected = check([a, far, b], NOW)
    assert [i for i, _ in accepted] == [0, 2]
    assert rejected == [loc.Rejected(1, loc.IMPOSSIBLE_JUMP)]


def test_the_jump_test_starts_from_the_users_last_fix() -> None:
    last = Fix(*HELSINKI, NOW - 60)
    teleported = Fix(HELSINKI[0] - 1.0, HELSINKI[1], NOW - 59)  # 111 km in a second
    accepted, rejected = check([teleported], NOW, last)
    assert accepted == [] and rejected[0].reason == loc.IMPOSSIBLE_JUMP
    assert check([teleported], NOW, None)[1] == []


def test_poor_accuracy_explains_a_jump() -> None:
    a = Fix(*HELSINKI, NOW - 10, accuracy_m=2000)
    b = Fix(HELSINKI[0] + 0.02, HELSINKI[1], NOW - 9, accuracy_m=1000)  # 2.2 km, 3 km error
    assert check([a, b], NOW)[1] == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-100, 100), st.floats(-200, 200),
                          st.floats(NOW - 9 * 86_400, NOW + 120)), max_size=20))
def test_every_fix_is_either_accepted_or_rejected_once(
        raw: list[tuple[float, float, float]]) -> None:
    fixes = [Fix(a, b, t) for a, b, t in raw]
    accepted, rejected = check(fixes, NOW)
    indices = sorted([i for i, _ in accepted] + [r.index for r in rejected])
    assert indices == list(range(len(fixes)))
    times = [f.time for _, f in accepted if f.time is not None]
    assert len(times) == len(accepted) and times == sorted(times)
    for (_, a), (_, b) in zip(accepted, accepted[1:]):
        assert not loc._jump(a, b)


def test_hour_buckets() -> None:
    assert hour_of(7200.0) == 7200 and hour_of(10_799.9) == 7200


def test_last_fixes_keep_the_newest_and_forget_the_least_recent_user() -> None:
    last = LastFixes(capacity=2)
    last.put("a", Fix(0, 0, 10))
    last.put("a", Fix(0, 0, 5))        # an older batch arriving late
    assert last.get("a") == Fix(0, 0, 10)
    last.put("b", Fix(0, 0, 1))
    last.put("c", Fix(0, 0, 1))
    assert last.get("a") is None and last.get("c") is not None
