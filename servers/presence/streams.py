"""The life of one Connect stream in this process: open, serve, let go.

Opening listens for the user's changes, reads their friends and settings, follows
the friends' channels and shows where they are; a location update is published
(see Fanout.publish), unless it is older than the user's latest. Letting go stops
following what no other stream here needs and, after the user's last stream anywhere,
tells friends the user went.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from geoplex.servers._runtime.errors import InvalidArgument, Unavailable

from . import domain
from .domain import Event, Fix, Gone, HubConfig, LocationsUnavailable, Rejection, Session
from .fanout import Fanout
from .ports import LocationBus, PresenceStore
from .sessions import LocalSessions, Waker

T = TypeVar("T")


@dataclass(eq=False)
class Streams:
    local: LocalSessions
    store: PresenceStore
    bus: LocationBus
    fanout: Fanout
    config: HubConfig
    clock: Callable[[], float]
    _closing: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _releasing: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    # (user, withdraw, counted) of stream ends Redis could not take when they happened
    _unfinished_ends: list[tuple[str, bool, bool]] = field(default_factory=list, init=False)

    @property
    def closing(self) -> bool:
        """This server is shutting down: no new streams, the open ones end."""
        return self._closing.is_set()

    def ensure_serving(self) -> None:
        """UNAVAILABLE once this server is shutting down: clients reconnect elsewhere."""
        if self.closing:
            raise _shutting_down()

    async def unless_closing(self, awaitable: Awaitable[T]) -> T:
        """What ``awaitable`` gives, unless this server shuts down first: then UNAVAILABLE
        at once, without waiting for it (a client that keeps its side of a stream open
        and sends nothing is not waited for)."""
        waiting = asyncio.ensure_future(awaitable)
        closed = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait((waiting, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not waiting.done():
                waiting.cancel()
        if waiting.done() and not waiting.cancelled():
            return waiting.result()
        raise _shutting_down()

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
            with contextlib.suppress(LocationsUnavailable):
                await self.bus.stream_opened(user)
            await self.fanout.follow([session], sorted(friends))  # and show where they are
            try:
                await self._record(session, fix, "hello")
            except InvalidArgument as exc:
                # the stream opens all the same, told its Hello was not taken as the
                # user's location (too old, or another device sent a newer one)
                session.reject(Rejection.of(exc))
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

    async def update(self, session: Session, fix: Fix, field: str, sequence: int = 0
                     ) -> None:
        """Record the stream's new location and move its session there; InvalidArgument
        (``field``.time), with nothing changed, for an update that is too old or older
        than the user's latest (see _record). With a ``sequence``, the session tells the
        client once the update is kept (UpdateAccepted)."""
        await self._record(session, fix, field, sequence)
        session.moved(fix)

    async def _record(self, session: Session, fix: Fix, field: str, sequence: int = 0
                      ) -> None:
        """Record the user's location: cached, and published if they share. Refused with
        InvalidArgument, nothing recorded, when older than the inactivity limit
        (TIME_TOO_OLD: friends would treat it as gone) or than the user's latest location,
        known on this stream or recorded by another (OUT_OF_ORDER)."""
        domain.check_recent(fix.t, field, self.clock(), self.config.inactive_after_s,
                            session.fix.t)
        kept = (lambda: session.accept(sequence)) if sequence else None
        if not await self.fanout.publish(session, fix, kept):
            raise domain.out_of_order(field)

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
        self._closing.set()
        for session in self.local:
            session._wake()

    async def stop(self) -> None:
        """No new streams; wait for the ones letting go."""
        self._closing.set()
        await asyncio.gather(*self._releasing, return_exceptions=True)


def _shutting_down() -> Unavailable:
    return Unavailable("server is shutting down; reconnect", reason="SHUTTING_DOWN")
