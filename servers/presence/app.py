"""The presence hub of one server process: sessions, channel fan-in, fan-out.

One multiplexed Redis pub/sub connection per process carries the channels of
every friend of every user connected here (reference counted), plus one
control channel per connected user. A location update: cache it in Redis with
a TTL, publish it on the user's channel, append it to the history (written
behind in batches). A message on a friend's channel is turned, for each local
session following that friend, into a pending change (coalesced per friend).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from geoplex.servers._runtime import paging
from geoplex.servers._runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)

from . import domain
from .ports import LocationBus, PresenceStore
from .domain import Event, Fix, Gone, LocationsUnavailable, Rejection, Seen, Session

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HubConfig:
    default_radius_m: float = domain.DEFAULT_RADIUS_M
    min_radius_m: float = 100.0
    max_radius_m: float = 50_000.0
    inactive_after_s: float = 600.0
    sweep_interval_s: float = 30.0
    future_tolerance_s: float = 60.0
    history_batch: int = 1000
    history_flush_s: float = 1.0
    history_buffer_max: int = 200_000


@dataclass
class Counters:
    updates: int = 0
    updates_lost: int = 0
    messages_in: int = 0
    history_written: int = 0
    history_dropped: int = 0
    resubscribes: int = 0


class Waker:
    """Wakes one waiting stream: an asyncio.Event cut to what a stream needs. The stream
    awaits one plain future; no task or asyncio.wait per wake-up, which every fan-out
    message would otherwise pay for."""

    __slots__ = ("_future", "_is_set")

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None
        self._is_set = False

    def set(self) -> None:
        self._is_set = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self) -> None:
        """Return once set() was called since the last wait() returned."""
        if not self._is_set:
            self._future = asyncio.get_running_loop().create_future()
            try:
                await self._future
            finally:
                self._future = None
        self._is_set = False


class PresenceHub:
    def __init__(self, store: PresenceStore, bus: LocationBus, config: HubConfig,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.bus = bus
        self.config = config
        self.clock = clock
        self.sessions: dict[str, set[Session]] = {}
        self.watchers: dict[str, set[Session]] = {}
        self.closing = False
        self.counters = Counters()
        self.feed = bus.feed(self._dispatch, self._resubscribed)
        self._tasks: list[asyncio.Task[None]] = []
        self._releasing: set[asyncio.Task[None]] = set()
        self._catch_up_wanted = asyncio.Event()
        self._ctl_heard: dict[str, int] = {}  # control messages heard, per user with streams
        self._unfinished_ends: list[tuple[str, bool, bool]] = []  # Redis was down at the end
        self._history: list[dict[str, Any]] = []
        self._history_kick = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.feed.run(), name="presence-pubsub"),
                       asyncio.create_task(self._sweeper(), name="presence-sweep"),
                       asyncio.create_task(self._history_writer(), name="presence-history"),
                       asyncio.create_task(self._catch_up_loop(), name="presence-catch-up")]

    async def shutdown(self) -> None:
        """Before the server stops: every stream ends (UNAVAILABLE) so clients reconnect."""
        self.closing = True
        for sessions in self.sessions.values():
            for session in sessions:
                session._wake()

    async def stop(self) -> None:
        self.closing = True
        await asyncio.gather(*self._releasing, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush_history()

    # -- sessions --------------------------------------------------------------------

    def ensure_serving(self) -> None:
        """UNAVAILABLE once this server is shutting down: clients reconnect elsewhere."""
        if self.closing:
            raise Unavailable("server is shutting down; reconnect", reason="SHUTTING_DOWN")

    async def open(self, user: str, fix: Fix) -> Session:
        # Listen for the user's changes before reading them, and note what was heard: a
        # change published between the read and the session's registration is caught up.
        await self._subscribe([self.bus.control(user)])
        heard = self._ctl_heard.get(user, 0)
        try:
            settings = await self.store.settings(user, self.config.default_radius_m)
            friends = await self.store.friends(user)
        except BaseException:
            if user not in self.sessions:
                await self._unsubscribe([self.bus.control(user)])
            raise
        session = Session(user, fix, settings.radius_m, settings.sharing, friends)
        session.wakeup = Waker()
        self.sessions.setdefault(user, set()).add(session)
        if self._ctl_heard.get(user, 0) != heard:
            self._catch_up_wanted.set()
        try:
            for friend in friends:
                self.watchers.setdefault(friend, set()).add(session)
            await self._subscribe([self.bus.channel(friend) for friend in friends])
            try:
                await self.bus.stream_opened(user)
            except LocationsUnavailable:
                pass
            now = self.clock()
            try:
                located = await self.bus.shared_locations(sorted(friends))
            except LocationsUnavailable:
                located = {}
            for friend, ffix in located.items():
                if ffix.t >= now - self.config.inactive_after_s:
                    session.friend_moved(friend, ffix)
            await self._record(session, fix)
        except BaseException:
            self.release(session)  # nothing of a failed open stays behind
            raise
        return session

    def release(self, session: Session) -> asyncio.Task[None]:
        """Let go of a stream's session: started once, however often it is asked for, and
        run as its own task so a cancelled caller cannot cut it short (friends would never
        see the user go)."""
        if session.release is None:
            task = asyncio.get_running_loop().create_task(self._close(session))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)
            session.release = task
        return session.release  # type: ignore[return-value]

    async def close(self, session: Session) -> None:
        await asyncio.shield(self.release(session))

    async def _close(self, session: Session) -> None:
        user = session.user_id
        mine = self.sessions.get(user, set())
        mine.discard(session)
        gone = []
        for friend in session.friends | set(session.friend_fixes):
            watching = self.watchers.get(friend)
            if watching is not None:
                watching.discard(session)
                if not watching:
                    del self.watchers[friend]
                    gone.append(self.bus.channel(friend))
        if not mine:
            self.sessions.pop(user, None)
            self._ctl_heard.pop(user, None)
            gone.append(self.bus.control(user))
        await self._stream_ended(user, session.sharing and not self.closing)
        await self._unsubscribe(gone)

    async def _stream_ended(self, user: str, withdraw: bool, counted: bool = False) -> None:
        """Count one stream of ``user`` less; after the last one anywhere, friends see the user
        go (``withdraw``; not on a shutdown, where clients reconnect elsewhere at once). If
        Redis cannot take it now, it is done again after the next catch-up."""
        try:
            if not counted:
                left = await self.bus.stream_closed(user)
                counted = True
                if left > 0:
                    return
            if withdraw:
                await self.bus.withdraw(user, Gone.DISCONNECTED.value)
        except LocationsUnavailable:
            self._unfinished_ends.append((user, withdraw, counted))

    async def outputs(self, session: Session, reader: asyncio.Task[None]
                      ) -> AsyncIterator[tuple[list[Rejection], list[Event]]]:
        """What the session has to send, each time it has some, until the client's side
        (``reader``) ends; UNAVAILABLE when this server shuts down."""
        wakeup: Waker = session.wakeup  # type: ignore[assignment]
        reader.add_done_callback(lambda _task: wakeup.set())
        while True:
            self.ensure_serving()
            if session.has_output:
                yield session.drain()
                continue
            if reader.done():
                reader.result()  # re-raise a reader failure
                return  # the client closed its side
            await wakeup.wait()

    async def update(self, session: Session, fix: Fix) -> None:
        session.moved(fix)
        await self._record(session, fix)

    async def _record(self, session: Session, fix: Fix) -> None:
        self.counters.updates += 1
        try:
            await self.bus.record(session.user_id, fix, session.sharing)
        except LocationsUnavailable:
            self.counters.updates_lost += 1  # a few lost updates are acceptable
            return
        if session.sharing:
            self._history_append(session.user_id, fix)

    def validate(self, lat: float, lon: float, t: float | None, field: str) -> Fix:
        now = self.clock()
        return domain.validate_fix(lat, lon, now if t is None else t, field, now,
                                   self.config.future_tolerance_s)

    # -- pub/sub ------------------------------------------------------------------------

    async def _subscribe(self, channels: list[str]) -> None:
        await self.feed.add(channels)

    async def _unsubscribe(self, channels: list[str]) -> None:
        await self.feed.remove(channels)

    def _dispatch(self, channel: str, raw: bytes) -> None:
        kind, user = self.bus.user_of(channel)
        data = json.loads(raw)
        self.counters.messages_in += 1
        if kind == "ch":
            watching = self.watchers.get(user)
            if not watching:
                return
            if data.get("k") == "loc":
                lat, lon, t = data["f"]
                fix = Fix(float(lat), float(lon), float(t))
                for session in watching:
                    session.friend_moved(user, fix)
            elif data.get("k") == "gone":
                reason = Gone(int(data.get("r", Gone.DISCONNECTED.value)))
                for session in watching:
                    session.friend_gone(user, reason)
        elif kind == "ctl":
            self._ctl_heard[user] = self._ctl_heard.get(user, 0) + 1
            asyncio.create_task(self._control(user, data))

    async def _control(self, user: str, data: dict[str, Any]) -> None:
        sessions = list(self.sessions.get(user, ()))
        if not sessions:
            return
        k = data.get("k")
        if k == "friend+":
            await self._befriend(sessions, str(data["f"]))
        elif k == "friend-":
            await self._unfriend(sessions, str(data["f"]))
        elif k == "sharing":
            await self._set_sharing(sessions, bool(data["v"]))
        elif k == "radius":
            for session in sessions:
                session.set_radius(float(data["v"]))

    async def _befriend(self, sessions: list[Session], friend: str) -> None:
        self._add_friend_now(sessions, friend)
        await self._follow(sessions, [friend])

    def _add_friend_now(self, sessions: list[Session], friend: str) -> None:
        for session in sessions:
            if session.release is None:  # (a stream that ended meanwhile stays ended)
                session.add_friend(friend)
                self.watchers.setdefault(friend, set()).add(session)

    async def _follow(self, sessions: list[Session], friends: list[str]) -> None:
        """Subscribe to new friends' channels and show where they are now."""
        await self._subscribe([self.bus.channel(f) for f in friends])
        try:
            located = await self.bus.shared_locations(friends)
        except LocationsUnavailable:
            return
        active_since = self.clock() - self.config.inactive_after_s
        for friend, fix in located.items():
            if fix.t >= active_since:
                for session in sessions:
                    known = session.friend_fixes.get(friend)
                    if known is None or fix.t > known.t:
                        session.friend_moved(friend, fix)  # ignored if unfriended meanwhile

    async def _unfriend(self, sessions: list[Session], friend: str) -> None:
        await self._unsubscribe(self._remove_friend_now(sessions, friend))

    def _remove_friend_now(self, sessions: list[Session], friend: str) -> list[str]:
        """Drop the friend from the sessions; the channels no local stream needs any more."""
        for session in sessions:
            session.remove_friend(friend)
            watching = self.watchers.get(friend)
            if watching is not None:
                watching.discard(session)
        if friend in self.watchers and not self.watchers[friend]:
            del self.watchers[friend]
            return [self.bus.channel(friend)]
        return []

    async def _set_sharing(self, sessions: list[Session], sharing: bool) -> None:
        for session in sessions:
            session.sharing = sharing
        if sharing:
            for session in sessions:
                await self._record(session, session.fix)
        elif sessions:
            # again from here: an update recorded between the caller's withdraw and this
            # message would otherwise leave the location shared until its TTL
            try:
                await self.bus.withdraw(sessions[0].user_id, Gone.STOPPED_SHARING.value)
            except LocationsUnavailable:
                pass

    # -- catching up after a pub/sub outage ----------------------------------------------

    def _resubscribed(self) -> None:
        """The feed is subscribed again after an outage: whatever was published meanwhile
        (friend and settings changes, moves, departures) is lost; catch up once more."""
        self.counters.resubscribes += 1
        self._catch_up_wanted.set()

    async def _catch_up_loop(self) -> None:
        backoff = 0.5
        while True:
            await self._catch_up_wanted.wait()
            self._catch_up_wanted.clear()
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
                self._catch_up_wanted.set()

    async def catch_up(self) -> None:
        """Bring every live session in this process back in line with the system of record:
        friends and settings from MongoDB, friends' latest locations from Redis."""
        unfinished, self._unfinished_ends = self._unfinished_ends, []
        for user, withdraw, counted in unfinished:
            await self._stream_ended(user, withdraw, counted)
        for user in list(self.sessions):
            await self._catch_up_user(user)
        await self._catch_up_locations()

    async def _catch_up_user(self, user: str) -> None:
        for _ in range(5):
            heard = self._ctl_heard.get(user, 0)
            settings = await self.store.settings(user, self.config.default_radius_m)
            friends = await self.store.friends(user)
            if self._ctl_heard.get(user, 0) != heard:
                continue  # a change arrived while reading: read again
            live = [s for s in self.sessions.get(user, ()) if s.release is None]
            if not live:
                return
            # every session change at once, with no await in between: a control message
            # handled after this point is newer than what was read, and wins
            known = set().union(*(s.friends for s in live))
            added = sorted(friends - known)
            for friend in added:
                self._add_friend_now(live, friend)
            dropped = [c for friend in sorted(known - friends)
                       for c in self._remove_friend_now(live, friend)]
            sharing_changed = any(s.sharing != settings.sharing for s in live)
            for session in live:
                if session.radius_m != settings.radius_m:
                    session.set_radius(settings.radius_m)
            await self._unsubscribe(dropped)
            if added:
                await self._follow(live, added)
            if sharing_changed:
                await self._set_sharing(live, settings.sharing)
            return

    async def _catch_up_locations(self) -> None:
        """Moves and departures of watched friends published while subscriptions were down."""
        watched = sorted(self.watchers)
        located = await self.bus.shared_locations(watched)
        now = self.clock()
        active_since = now - self.config.inactive_after_s
        for friend in watched:
            fix = located.get(friend)
            sessions = list(self.watchers.get(friend, ()))
            if fix is not None:  # (a location gone stale is the sweeper's)
                if fix.t >= active_since:
                    for session in sessions:
                        known = session.friend_fixes.get(friend)
                        if known is None or fix.t > known.t:
                            session.friend_moved(friend, fix)
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

    # -- inactivity and history -------------------------------------------------------

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            now = self.clock()
            for sessions in list(self.sessions.values()):
                for session in sessions:
                    session.sweep(now, self.config.inactive_after_s)

    def _history_append(self, user: str, fix: Fix) -> None:
        if len(self._history) >= self.config.history_buffer_max:
            self._history.pop(0)
            self.counters.history_dropped += 1
        self._history.append({"user": user, "lat": fix.lat, "lon": fix.lon,
                              "t": datetime.fromtimestamp(fix.t, UTC)})
        if len(self._history) >= self.config.history_batch:
            self._history_kick.set()

    async def _history_writer(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._history_kick.wait(), self.config.history_flush_s)
            except TimeoutError:
                pass
            self._history_kick.clear()
            await self._flush_history()

    async def _flush_history(self) -> None:
        while self._history:
            batch = self._history[:self.config.history_batch]
            try:
                await self.store.append_history(batch)
            except Exception as exc:  # noqa: BLE001 - keep the rows, retry next tick
                log.warning("history write failed (%s); will retry", type(exc).__name__)
                return
            del self._history[:len(batch)]
            self.counters.history_written += len(batch)

    # -- unary operations -------------------------------------------------------------------

    def _check_user_id(self, caller: str, other: str) -> None:
        if not other or len(other) > 128 or not other.isprintable():
            raise InvalidArgument("user_id", "must be 1..128 printable characters",
                                  reason="INVALID_USER_ID")
        if other == caller:
            raise InvalidArgument("user_id", "must be another user, not the caller",
                                  reason="SELF_FRIENDSHIP")

    async def add_friend(self, user: str, friend: str) -> None:
        self._check_user_id(user, friend)
        await self.store.add_friendship(user, friend)
        await self._tell(user, {"k": "friend+", "f": friend})
        await self._tell(friend, {"k": "friend+", "f": user})

    async def remove_friend(self, user: str, friend: str) -> None:
        self._check_user_id(user, friend)
        if await self.store.remove_friendship(user, friend) == 0:
            raise NotFound(f"{friend!r} is not a friend of the caller",
                           reason="NOT_A_FRIEND", metadata={"user_id": friend})
        await self._tell(user, {"k": "friend-", "f": friend})
        await self._tell(friend, {"k": "friend-", "f": user})

    async def set_sharing(self, user: str, sharing: bool) -> bool:
        await self.store.set_sharing(user, sharing)
        try:
            if not sharing:
                try:
                    await self.bus.withdraw(user, Gone.STOPPED_SHARING.value)
                except LocationsUnavailable:
                    # stored, but the last shared location may still be readable: say so
                    raise Unavailable("sharing is off, but the location cache could not "
                                      "be cleared yet; retry",
                                      reason="CACHE_UNAVAILABLE") from None
        finally:
            await self._tell(user, {"k": "sharing", "v": sharing})  # the streams stop now
        return sharing

    async def set_radius(self, user: str, radius_m: float) -> float:
        radius_m = domain.validate_radius(radius_m, self.config.min_radius_m,
                                          self.config.max_radius_m)
        await self.store.set_radius(user, radius_m)
        await self._tell(user, {"k": "radius", "v": radius_m})
        return radius_m

    async def _tell(self, user: str, message: dict[str, Any]) -> None:
        """Tell the processes holding ``user``'s streams about a change already stored. Best
        effort: if Redis cannot take it now, those processes catch up from MongoDB when
        their subscriptions are back (see catch_up)."""
        try:
            await self.bus.tell(user, message)
        except LocationsUnavailable as exc:
            log.warning("could not notify live streams of a %s change (%s); they catch up "
                        "when Redis is back", message.get("k"), type(exc).__name__)

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
            d = domain.haversine_m(me.lat, me.lon, fix.lat, fix.lon)
            if d <= settings.radius_m and (after is None or (d, friend) > after):
                seen.append(Seen(friend, fix, d))
        seen.sort(key=lambda s: (s.distance_m, s.user_id))
        page = seen[:size]
        next_token = paging.encode_cursor(page[-1].distance_m, page[-1].user_id, user) \
            if len(seen) > size else ""
        return page, next_token, settings.radius_m
