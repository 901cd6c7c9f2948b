"""The life of one Connect stream in this process: open, serve, let go.

Opening listens for the user's changes, reads their friends and settings, follows
the friends' channels and shows where they are; a location update is published
(see Fanout.publish). Letting go stops following what no other stream here needs
and, after the user's last stream anywhere, tells friends the user went.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from geoplex.servers._runtime.errors import Unavailable

from . import domain
from .domain import Event, Fix, Gone, HubConfig, LocationsUnavailable, Rejection, Session
from .fanout import Fanout
from .ports import LocationBus, PresenceStore
from .sessions import LocalSessions, Waker, show_if_newer


@dataclass(eq=False)
class Streams:
    local: LocalSessions
    store: PresenceStore
    bus: LocationBus
    fanout: Fanout
    config: HubConfig
    clock: Callable[[], float]
    closing: bool = field(default=False, init=False)
    _releasing: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    # (user, withdraw, counted) of stream ends Redis could not take when they happened
    _unfinished_ends: list[tuple[str, bool, bool]] = field(default_factory=list, init=False)

    def ensure_serving(self) -> None:
        """UNAVAILABLE once this server is shutting down: clients reconnect elsewhere."""
        if self.closing:
            raise Unavailable("server is shutting down; reconnect", reason="SHUTTING_DOWN")

    def validate(self, lat: float, lon: float, t: float | None, field: str) -> Fix:
        now = self.clock()
        return domain.validate_fix(lat, lon, now if t is None else t, field, now,
                                   self.config.future_tolerance_s)

    async def open(self, user: str, fix: Fix) -> Session:
        # Listen for the user's changes before reading them, and note what was heard: a
        # change published between the read and the session's registration is caught up.
        control = [self.bus.control(user)]
        await self.fanout.listen(control)
        heard = self.local.heard_from(user)
        try:
            settings = await self.store.settings(user, self.config.default_radius_m)
            friends = await self.store.friends(user)
        except BaseException:
            if user not in self.local.by_user:
                await self.fanout.unlisten(control)
            raise
        session = Session(user, fix, settings.radius_m, settings.sharing, friends)
        session.wakeup = Waker()
        self.local.add(session)
        if self.local.heard_from(user) != heard:
            self.local.behind.set()
        try:
            await self.fanout.listen([self.bus.channel(friend) for friend in friends])
            try:
                await self.bus.stream_opened(user)
            except LocationsUnavailable:
                pass
            active_since = self.clock() - self.config.inactive_after_s
            try:
                located = await self.bus.shared_locations(sorted(friends))
            except LocationsUnavailable:
                located = {}
            for friend, ffix in located.items():
                show_if_newer([session], friend, ffix, active_since)
            await self.fanout.publish(session, fix)
        except BaseException:
            self.release(session)  # nothing of a failed open stays behind
            raise
        return session

    async def outputs(self, session: Session, reader: asyncio.Task[None]
                      ) -> AsyncIterator[tuple[list[Rejection], list[Event]]]:
        """What the session has to send, each time it has some, until the client's side
        (``reader``) ends; UNAVAILABLE when this server shuts down."""
        wakeup = session.wakeup
        if not isinstance(wakeup, Waker):
            raise TypeError("outputs() of a session these streams did not open")
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
        await self.fanout.publish(session, fix)

    def release(self, session: Session) -> asyncio.Task[None]:
        """Let go of a stream's session: started once, however often it is asked for, and
        run as its own task so a cancelled caller cannot cut it short (friends would never
        see the user go)."""
        if session.release is None:
            task = asyncio.get_running_loop().create_task(self._close(session))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)
            session.release = task
        return session.release

    async def close(self, session: Session) -> None:
        await asyncio.shield(self.release(session))

    async def _close(self, session: Session) -> None:
        user = session.user_id
        unwatched, last_here = self.local.remove(session)
        gone = [self.bus.channel(friend) for friend in unwatched]
        if last_here:
            gone.append(self.bus.control(user))
        await self._stream_ended(user, session.sharing and not self.closing)
        await self.fanout.unlisten(gone)

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
                await self.bus.withdraw(user, Gone.DISCONNECTED)
        except LocationsUnavailable:
            self._unfinished_ends.append((user, withdraw, counted))

    async def finish_ends(self) -> None:
        """Again, the ends of streams that Redis could not take when they happened."""
        unfinished, self._unfinished_ends = self._unfinished_ends, []
        for user, withdraw, counted in unfinished:
            await self._stream_ended(user, withdraw, counted)

    async def sweep(self) -> None:
        """Forever: friends not heard of for the inactivity limit are gone (INACTIVE)."""
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            self.local.sweep(self.clock(), self.config.inactive_after_s)

    def shutdown(self) -> None:
        """Every stream ends (UNAVAILABLE) so clients reconnect elsewhere."""
        self.closing = True
        for session in self.local:
            session._wake()

    async def stop(self) -> None:
        """No new streams; wait for the ones letting go."""
        self.closing = True
        await asyncio.gather(*self._releasing, return_exceptions=True)
