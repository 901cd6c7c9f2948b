"""Locations out and in: a stream's own moves published, friends' moves handed to the
sessions following them, and the control protocol (friend and settings changes of users
with streams here).

One multiplexed subscription (the feed) per process carries the channel of every friend
of every user connected here, plus one control channel per connected user. A change to
the same friend replaces the one still waiting in a session (see domain.Session).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .domain import (Change, FeedEvent, Fix, FriendAdded, FriendRemoved, Gone, HubConfig,
                     Located, LocationsUnavailable, RadiusChanged, Session, SharingChanged,
                     Withdrawn)
from .history import HistoryWriter
from .ports import Feed, LocationBus
from .sessions import LocalSessions, show_if_newer


@dataclass(eq=False)
class Fanout:
    local: LocalSessions
    bus: LocationBus
    history: HistoryWriter
    config: HubConfig
    clock: Callable[[], float]
    feed: Feed = field(init=False)  # this process's one subscription, to every channel
    # friends' events handed to the sessions here, one per event and session (metrics)
    delivered: int = field(default=0, init=False)
    _applying: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.feed = self.bus.feed(self.dispatch, self.local.behind.set)

    async def listen(self, channels: Sequence[str]) -> None:
        await self.feed.add(channels)

    async def unlisten(self, channels: Sequence[str]) -> None:
        await self.feed.remove(channels)

    async def unfollow(self, friends: Sequence[str]) -> None:
        await self.unlisten([self.bus.channel(friend) for friend in friends])

    # -- out ---------------------------------------------------------------------------

    async def publish(self, session: Session, fix: Fix,
                      on_kept: Callable[[], None] | None = None) -> bool:
        """Cache the stream's location in Redis with a TTL and, if the user shares, publish
        it to their friends' servers and keep it in the history (kept there even while Redis
        is away). False, with nothing done, if the user already has a newer location (sent
        by another of their streams). ``on_kept`` is called once the update is durable: in
        the history when the user shares (when the writer's store took it), else once
        recorded in Redis; never if neither happens."""
        try:
            if not await self.bus.record(session.user_id, fix, session.sharing):
                return False
        except LocationsUnavailable:
            # not shared live (Redis is away: friends see the next one), but kept in the
            # history, which does not go through Redis
            if session.sharing:
                self.history.append(session.user_id, fix, on_kept)
            return True
        if session.sharing:
            self.history.append(session.user_id, fix, on_kept)
        elif on_kept is not None:
            on_kept()
        return True

    # -- in ----------------------------------------------------------------------------

    def dispatch(self, event: FeedEvent) -> None:
        """Hand one event heard on the feed to the sessions it concerns."""
        if isinstance(event, Located):
            watching = self.local.watchers.get(event.user_id, ())
            for session in watching:
                session.friend_moved(event.user_id, event.fix)
            self.delivered += len(watching)
        elif isinstance(event, Withdrawn):
            watching = self.local.watchers.get(event.user_id, ())
            for session in watching:
                session.friend_gone(event.user_id, event.reason)
            self.delivered += len(watching)
        else:
            user = event.user_id
            self.local.heard[user] = self.local.heard_from(user) + 1
            task = asyncio.create_task(self.apply(event))
            self._applying.add(task)
            task.add_done_callback(self._applying.discard)

    async def apply(self, change: Change) -> None:
        """Bring the user's sessions here in line with a change stored meanwhile."""
        sessions = self.local.of(change.user_id)
        if not sessions:
            return
        match change:
            case FriendAdded(friend_id=friend):
                self.local.add_friend_now(sessions, friend)
                await self.follow(sessions, [friend])
            case FriendRemoved(friend_id=friend):
                if self.local.remove_friend_now(sessions, friend):
                    await self.unfollow([friend])
            case SharingChanged(sharing=sharing):
                await self.set_sharing(sessions, sharing)
            case RadiusChanged(radius_m=radius_m):
                for session in sessions:
                    session.set_radius(radius_m)

    async def follow(self, sessions: list[Session], friends: list[str]) -> None:
        """Subscribe to new friends' channels and show where they are now."""
        await self.listen([self.bus.channel(f) for f in friends])
        try:
            located = await self.bus.shared_locations(friends)
        except LocationsUnavailable:
            return
        active_since = self.clock() - self.config.inactive_after_s
        for friend, fix in located.items():
            show_if_newer(sessions, friend, fix, active_since)

    async def set_sharing(self, sessions: list[Session], sharing: bool) -> None:
        for session in sessions:
            session.sharing = sharing
        if sharing:
            for session in sessions:
                await self.publish(session, session.fix)
        elif sessions:
            # again from here: an update recorded between the caller's withdraw and this
            # message would otherwise leave the location shared until its TTL
            try:
                await self.bus.withdraw(sessions[0].user_id, Gone.STOPPED_SHARING)
            except LocationsUnavailable:
                pass
