"""Catching up after a pub/sub outage: what was published while this process's
subscriptions were down (friend and settings changes, moves, departures) is lost, so
every live session is brought back in line with the system of record: friends and
settings from MongoDB, friends' latest locations from Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .domain import Gone, HubConfig
from .fanout import Fanout
from .ports import LocationBus, PresenceStore
from .sessions import LocalSessions, show_if_newer
from .streams import Streams

log = logging.getLogger(__name__)


@dataclass(eq=False)
class CatchUp:
    local: LocalSessions
    store: PresenceStore
    bus: LocationBus
    fanout: Fanout
    streams: Streams
    config: HubConfig
    clock: Callable[[], float]

    async def run(self) -> None:
        """Forever: catch up each time ``local.behind`` is set; retried with a backoff."""
        backoff = 0.5
        wanted = self.local.behind
        while True:
            await wanted.wait()
            wanted.clear()
            try:
                await self.catch_up()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - MongoDB or Redis down: again later
                log.warning("catching up after a pub/sub outage failed (%s); retrying",
                            type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                wanted.set()

    async def catch_up(self) -> None:
        await self.streams.finish_ends()
        for user in list(self.local.by_user):
            await self._user(user)
        await self._locations()

    async def _user(self, user: str) -> None:
        for _ in range(5):
            heard = self.local.heard_from(user)
            settings = await self.store.settings(user, self.config.default_radius_m)
            friends = await self.store.friends(user)
            if self.local.heard_from(user) != heard:
                continue  # a change arrived while reading: read again
            live = self.local.live(user)
            if not live:
                return
            # every session change at once, with no await in between: a control message
            # handled after this point is newer than what was read, and wins
            known = set().union(*(s.friends for s in live))
            added = sorted(friends - known)
            for friend in added:
                self.local.add_friend_now(live, friend)
            dropped = [friend for friend in sorted(known - friends)
                       if self.local.remove_friend_now(live, friend)]
            sharing_changed = any(s.sharing != settings.sharing for s in live)
            for session in live:
                if session.radius_m != settings.radius_m:
                    session.set_radius(settings.radius_m)
            await self.fanout.unfollow(dropped)
            if added:
                await self.fanout.follow(live, added)
            if sharing_changed:
                await self.fanout.set_sharing(live, settings.sharing)
            return

    async def _locations(self) -> None:
        """Moves and departures of watched friends published while subscriptions were down."""
        watched = sorted(self.local.watchers)
        located = await self.bus.shared_locations(watched)
        active_since = self.clock() - self.config.inactive_after_s
        for friend in watched:
            fix = located.get(friend)
            sessions = list(self.local.watchers.get(friend, ()))
            if fix is not None:  # (a location gone stale is the sweeper's)
                show_if_newer(sessions, friend, fix, active_since)
                continue
            shown = [s for s in sessions if friend in s.friend_fixes]
            if not shown:
                continue
            # no shared location any more: expired, sharing turned off, or the friend left
            sharing = (await self.store.settings(friend, 0.0)).sharing
            for session in shown:
                last = session.friend_fixes.get(friend)
                if last is None:
                    continue
                reason = (Gone.INACTIVE if last.t < active_since else
                          Gone.DISCONNECTED if sharing else Gone.STOPPED_SHARING)
                session.friend_gone(friend, reason)
