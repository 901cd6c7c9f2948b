"""The Redis message format of presence: one place encodes and decodes it, and it is the
format servers of the previous release publish (a mesh is upgraded one process at a time)."""

from __future__ import annotations

import json

import pytest

from geoplex.servers.presence.adapters.redis_bus import (
    decode_message,
    encode_change,
    encode_fix,
    encode_located,
    encode_withdrawn,
)
from geoplex.servers.presence.domain import (
    Change,
    Fix,
    FriendAdded,
    FriendRemoved,
    Gone,
    Located,
    RadiusChanged,
    SharingChanged,
    Withdrawn,
)


def test_a_location_message_decodes_to_located() -> None:
    raw = encode_located(encode_fix(Fix(51.5, -0.12, 1_700_000_000.25)))
    assert raw == '{"k":"loc","f":[51.5,-0.12,1700000000.25]}'
    assert decode_message("ch", "bob", raw.encode()) == Located(
        "bob", Fix(51.5, -0.12, 1_700_000_000.25))


@pytest.mark.parametrize("reason", list(Gone))
def test_a_withdrawal_decodes_with_its_reason(reason: Gone) -> None:
    raw = encode_withdrawn(reason)
    assert json.loads(raw) == {"k": "gone", "r": reason.value}
    assert decode_message("ch", "bob", raw) == Withdrawn("bob", reason)


def test_a_withdrawal_without_a_reason_means_disconnected() -> None:
    assert decode_message("ch", "bob", b'{"k":"gone"}') == Withdrawn("bob", Gone.DISCONNECTED)


@pytest.mark.parametrize("change,wire", [
    (FriendAdded("alice", "bob"), {"k": "friend+", "f": "bob"}),
    (FriendRemoved("alice", "bob"), {"k": "friend-", "f": "bob"}),
    (SharingChanged("alice", False), {"k": "sharing", "v": False}),
    (RadiusChanged("alice", 2500.0), {"k": "radius", "v": 2500.0}),
])
def test_a_change_goes_over_the_control_channel_and_back(change: Change,
                                                          wire: dict[str, object]) -> None:
    raw = encode_change(change)
    assert json.loads(raw) == wire
    assert decode_message("ctl", "alice", raw) == change


@pytest.mark.parametrize("kind,raw", [("ch", b'{"k":"teleported"}'),
                                      ("ctl", b'{"k":"colour","v":"red"}'),
                                      ("other", b'{"k":"loc","f":[0,0,1]}')])
def test_a_message_this_version_does_not_know_is_ignored(kind: str, raw: bytes) -> None:
    assert decode_message(kind, "alice", raw) is None
