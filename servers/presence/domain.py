"""Presence domain: one live session's view of its friends, with coalescing.

Pure logic, no network. A session knows its user's location and radius, the
latest location of each friend that shares, and which friends the client has
been told are nearby. Changes become *pending* per friend: a newer change for
the same friend replaces an older one still waiting (a slow client gets the
newest state, never a backlog), so memory is bounded by the number of friends.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Protocol

from geoplex.servers._runtime.errors import InvalidArgument, Unavailable
from geoplex.servers._runtime.geo import haversine_m, validate_location

MILE_M = 1609.344
DEFAULT_RADIUS_M = 5 * MILE_M


@dataclass(frozen=True, slots=True)
class HubConfig:
    """The presence hub's limits and periods (PresenceConfig reads them from the environment)."""

    default_radius_m: float = DEFAULT_RADIUS_M
    min_radius_m: float = 100.0
    max_radius_m: float = 50_000.0
    inactive_after_s: float = 600.0
    sweep_interval_s: float = 30.0
    future_tolerance_s: float = 60.0
    history_batch: int = 1000
    history_flush_s: float = 1.0
    history_buffer_max: int = 200_000


class Gone(Enum):
    LEFT_RADIUS = 1
    INACTIVE = 2
    STOPPED_SHARING = 3
    UNFRIENDED = 4
    DISCONNECTED = 5


class LocationsUnavailable(Unavailable):
    """The shared location cache and channels (Redis) cannot be reached right now."""

    def __init__(self) -> None:
        super().__init__("live locations are unavailable for a moment; retry",
                         reason="LOCATIONS_UNAVAILABLE")


@dataclass(frozen=True, slots=True)
class Settings:
    sharing: bool
    radius_m: float


@dataclass(frozen=True, slots=True)
class Fix:
    """A located point in time (seconds since the epoch)."""

    lat: float
    lon: float
    t: float


class HistoryRow(NamedTuple):
    """One accepted location update on its way to the history."""

    id: str      # made from the update (history.row_id): stored once however often sent
    user: str
    fix: Fix


@dataclass(frozen=True, slots=True)
class Seen:
    """A friend the client should show: where, how far, since when."""

    user_id: str
    fix: Fix
    distance_m: float


@dataclass(frozen=True, slots=True)
class Event:
    """What to send for one friend: kind is 'nearby', 'moved' or 'gone'."""

    kind: str
    user_id: str
    seen: Seen | None = None
    reason: Gone | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    field: str
    reason: str
    message: str
    sequence: int = 0  # the refused update's LocationUpdate.sequence

    @classmethod
    def of(cls, error: InvalidArgument, sequence: int = 0) -> Rejection:
        """What the client is told about an update refused with ``error``."""
        return cls(error.field, error.reason, error.message, sequence)


# -- what the server processes tell each other (LocationBus.feed hears it) ---------------
# On a user's channel, for the servers of the user's friends: Located and Withdrawn. On
# the user's control channel, for the servers holding the user's streams: a Change,
# already stored in the system of record.

@dataclass(frozen=True, slots=True)
class Located:
    """A sharing user is here now."""

    user_id: str
    fix: Fix


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """A user's location is no longer shared, and why."""

    user_id: str
    reason: Gone


@dataclass(frozen=True, slots=True)
class FriendAdded:
    user_id: str
    friend_id: str


@dataclass(frozen=True, slots=True)
class FriendRemoved:
    user_id: str
    friend_id: str


@dataclass(frozen=True, slots=True)
class SharingChanged:
    user_id: str
    sharing: bool


@dataclass(frozen=True, slots=True)
class RadiusChanged:
    user_id: str
    radius_m: float


Change = FriendAdded | FriendRemoved | SharingChanged | RadiusChanged
FeedEvent = Located | Withdrawn | Change


def validate_fix(lat: float, lon: float, t: float, field: str, now: float,
                 future_tolerance_s: float) -> Fix:
    validate_location(lat, lon, f"{field}.location")
    if not math.isfinite(t) or t <= 0:
        raise InvalidArgument(f"{field}.time", "must be a valid timestamp", reason="INVALID_TIME")
    if t > now + future_tolerance_s:
        raise InvalidArgument(f"{field}.time", f"must not be more than "
                              f"{future_tolerance_s:.0f} s in the future",
                              reason="TIME_IN_FUTURE")
    return Fix(lat, lon, t)


def check_recent(t: float, field: str, now: float, max_age_s: float, latest_t: float) -> None:
    """An update must be at most ``max_age_s`` old (TIME_TOO_OLD) and not older than the
    user's latest location (OUT_OF_ORDER, see :func:`out_of_order`). One at the same time
    as the latest is taken: a client stamping in whole seconds may send several."""
    if t < now - max_age_s:
        raise InvalidArgument(f"{field}.time", f"must not be more than {max_age_s:.0f} s "
                              f"in the past", reason="TIME_TOO_OLD")
    if t < latest_t:
        raise out_of_order(field)


def out_of_order(field: str) -> InvalidArgument:
    return InvalidArgument(f"{field}.time", "must not be older than the latest location "
                           "already received for the user (from this stream or another "
                           "device)", reason="OUT_OF_ORDER")


def validate_radius(radius_m: float, lo: float, hi: float) -> float:
    if not math.isfinite(radius_m) or not lo <= radius_m <= hi:
        raise InvalidArgument("radius_meters", f"must be in {lo:g}..{hi:g} metres",
                              reason="INVALID_RADIUS")
    return radius_m


class Wakeup(Protocol):
    """What a session pokes when it has something to send (the hub's Waker)."""

    def set(self) -> None: ...


class Session:
    """One open stream of one user. Not thread-safe; lives on the event loop."""

    def __init__(self, user_id: str, fix: Fix, radius_m: float, sharing: bool,
                 friends: set[str], max_rejections: int = 16) -> None:
        self.user_id = user_id
        self.fix = fix
        self.radius_m = radius_m
        self.sharing = sharing
        self.friends = set(friends)
        self.friend_fixes: dict[str, Fix] = {}
        self.shown: set[str] = set()        # what the client has been told is nearby
        self.pending: OrderedDict[str, Seen | Gone] = OrderedDict()
        self.rejections: list[Rejection] = []
        self.max_rejections = max_rejections
        self.accepted: list[int] = []       # sequences of updates kept, not sent yet
        self.coalesced = 0                  # changes replaced before the client read them
        self.wakeup: Wakeup | None = None   # set by the hub
        self.release: asyncio.Task[None] | None = None  # set by the hub: the task letting go

    # -- inputs --------------------------------------------------------------------

    def distance_to(self, fix: Fix) -> float:
        return haversine_m(self.fix.lat, self.fix.lon, fix.lat, fix.lon)

    def friend_moved(self, friend: str, fix: Fix) -> None:
        """The friend is at ``fix`` now. Ignored if that is older than what is known of
        them (a server of an earlier release published old updates as they came), or the
        very same fix again (read when the stream opened, then heard on their channel)."""
        if friend not in self.friends:
            return
        known = self.friend_fixes.get(friend)
        if known is not None and (fix.t < known.t or fix.t == known.t and fix == known):
            return
        self.friend_fixes[friend] = fix
        self._evaluate(friend, fix)

    def friend_gone(self, friend: str, reason: Gone) -> None:
        self.friend_fixes.pop(friend, None)
        self._set(friend, reason)

    def moved(self, fix: Fix) -> None:
        self.fix = fix
        self._evaluate_all()

    def set_radius(self, radius_m: float) -> None:
        self.radius_m = radius_m
        self._evaluate_all()

    def add_friend(self, friend: str) -> None:
        self.friends.add(friend)

    def remove_friend(self, friend: str) -> None:
        self.friends.discard(friend)
        self.friend_gone(friend, Gone.UNFRIENDED)

    def sweep(self, now: float, inactive_after_s: float) -> None:
        stale = [f for f, fix in self.friend_fixes.items() if fix.t < now - inactive_after_s]
        for friend in stale:
            self.friend_gone(friend, Gone.INACTIVE)

    def accept(self, sequence: int) -> None:
        """The update numbered ``sequence`` is kept: tell the client."""
        self.accepted.append(sequence)
        self._wake()

    def take_accepted(self) -> list[int]:
        accepted, self.accepted = self.accepted, []
        return accepted

    def reject(self, rejection: Rejection) -> None:
        if len(self.rejections) >= self.max_rejections:
            return  # the client has not read the ones waiting yet
        self.rejections.append(rejection)
        self._wake()

    def _seen(self, friend: str, fix: Fix) -> Seen | None:
        """The friend as the client should show them, or None outside the radius (the
        boundary is inside)."""
        distance = self.distance_to(fix)
        return Seen(friend, fix, distance) if distance <= self.radius_m else None

    def _evaluate(self, friend: str, fix: Fix) -> None:
        self._set(friend, self._seen(friend, fix) or Gone.LEFT_RADIUS)

    def _evaluate_all(self) -> None:
        for friend, fix in self.friend_fixes.items():
            self._evaluate(friend, fix)

    def _set(self, friend: str, state: Seen | Gone) -> None:
        if isinstance(state, Gone) and friend not in self.shown and friend not in self.pending:
            return  # nothing shown, nothing to take back
        if friend in self.pending:
            self.coalesced += 1
            del self.pending[friend]
        self.pending[friend] = state
        self._wake()

    def _wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup.set()

    # -- outputs -------------------------------------------------------------------

    def snapshot(self) -> list[Seen]:
        """Every visible friend now, nearest first; marks them shown, clears pending."""
        self.pending.clear()
        out = [seen for friend, fix in self.friend_fixes.items()
               if (seen := self._seen(friend, fix)) is not None]
        self.shown = {s.user_id for s in out}
        out.sort(key=lambda s: (s.distance_m, s.user_id))
        return out

    def drain(self, limit: int = 256) -> tuple[list[Rejection], list[Event]]:
        """Take what is waiting, oldest change first, at most ``limit`` events."""
        rejections, self.rejections = self.rejections, []
        events: list[Event] = []
        while self.pending and len(events) < limit:
            friend, state = self.pending.popitem(last=False)
            if isinstance(state, Seen):
                kind = "moved" if friend in self.shown else "nearby"
                self.shown.add(friend)
                events.append(Event(kind, friend, seen=state))
            elif friend in self.shown:
                self.shown.discard(friend)
                events.append(Event("gone", friend, reason=state))
        return rejections, events

    @property
    def has_output(self) -> bool:
        return bool(self.pending or self.rejections or self.accepted)
