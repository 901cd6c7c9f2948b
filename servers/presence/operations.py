"""The unary operations: friends, settings, and who is nearby now.

A change is stored first (MongoDB), then told to the processes holding the user's
streams (Redis); those that miss it catch up when their subscriptions are back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from geoplex.servers._runtime import paging
from geoplex.servers._runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from geoplex.servers._runtime.geo import haversine_m
from geoplex.servers._runtime.validate import is_id

from . import domain
from .domain import (
    Change,
    FriendAdded,
    FriendRemoved,
    Gone,
    HubConfig,
    LocationsUnavailable,
    RadiusChanged,
    Seen,
    SharingChanged,
)
from .ports import LocationBus, PresenceStore

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Operations:
    store: PresenceStore
    bus: LocationBus
    config: HubConfig
    clock: Callable[[], float]

    async def add_friend(self, user: str, friend: str) -> None:
        _check_other_user(user, friend)
        await self.store.add_friendship(user, friend)
        await self._tell(FriendAdded(user, friend))
        await self._tell(FriendAdded(friend, user))

    async def remove_friend(self, user: str, friend: str) -> None:
        _check_other_user(user, friend)
        if await self.store.remove_friendship(user, friend) == 0:
            raise NotFound(f"{friend!r} is not a friend of the caller",
                           reason="NOT_A_FRIEND", metadata={"user_id": friend})
        await self._tell(FriendRemoved(user, friend))
        await self._tell(FriendRemoved(friend, user))

    async def set_sharing(self, user: str, sharing: bool) -> bool:
        await self.store.set_sharing(user, sharing)
        try:
            if not sharing:
                try:
                    await self.bus.withdraw(user, Gone.STOPPED_SHARING)
                except LocationsUnavailable:
                    # stored, but the last shared location may still be readable: say so
                    raise Unavailable("sharing is off, but the location cache could not "
                                      "be cleared yet; retry",
                                      reason="CACHE_UNAVAILABLE") from None
        finally:
            await self._tell(SharingChanged(user, sharing))  # the streams stop now
        return sharing

    async def set_radius(self, user: str, radius_m: float) -> float:
        radius_m = domain.validate_radius(radius_m, self.config.min_radius_m,
                                          self.config.max_radius_m)
        await self.store.set_radius(user, radius_m)
        await self._tell(RadiusChanged(user, radius_m))
        return radius_m

    async def _tell(self, change: Change) -> None:
        """Tell the processes holding ``change.user_id``'s streams about a change already
        stored. Best effort: if Redis cannot take it now, those processes catch up from
        MongoDB when their subscriptions are back (see CatchUp)."""
        try:
            await self.bus.tell(change)
        except LocationsUnavailable as exc:
            log.warning("could not notify live streams of a %s (%s); they catch up when "
                        "Redis is back", type(change).__name__, type(exc).__name__)

    async def settings(self, user: str) -> tuple[bool, float]:
        s = await self.store.settings(user, self.config.default_radius_m)
        return s.sharing, s.radius_m

    async def list_friends(self, user: str, page_size: int, token: str) -> tuple[list[str], str]:
        size = paging.page_size(page_size, 100, 1000)
        after = paging.decode_cursor(token, user)[1] if token else ""
        items = await self.store.friends_page(user, size + 1, after)
        next_token = paging.encode_cursor(0.0, items[size - 1], user) if len(items) > size else ""
        return items[:size], next_token

    async def nearby(self, user: str, page_size: int, token: str
                     ) -> tuple[list[Seen], str, float]:
        size = paging.page_size(page_size, 20, 100)
        after = paging.decode_cursor(token, user) if token else None
        me = await self.bus.own_location(user)
        if me is None:
            raise FailedPrecondition("no recent location for the caller: connect and send a "
                                     "location first", reason="NO_RECENT_LOCATION")
        settings = await self.store.settings(user, self.config.default_radius_m)
        friends = await self.store.friends(user)
        located = await self.bus.shared_locations(sorted(friends))
        now = self.clock()
        seen = []
        for friend, fix in located.items():
            if fix.t < now - self.config.inactive_after_s:
                continue
            d = haversine_m(me.lat, me.lon, fix.lat, fix.lon)
            if d <= settings.radius_m and (after is None or (d, friend) > after):
                seen.append(Seen(friend, fix, d))
        seen.sort(key=lambda s: (s.distance_m, s.user_id))
        page = seen[:size]
        next_token = paging.encode_cursor(page[-1].distance_m, page[-1].user_id, user) \
            if len(seen) > size else ""
        return page, next_token, settings.radius_m


def _check_other_user(caller: str, other: str) -> None:
    if not is_id(other):
        raise InvalidArgument("user_id", "must be 1..128 printable characters",
                              reason="INVALID_USER_ID")
    if other == caller:
        raise InvalidArgument("user_id", "must be another user, not the caller",
                              reason="SELF_FRIENDSHIP")
