"""The presence hub of one server process: wires its parts and runs their tasks.

- sessions.py   the streams open here, as state (by user, by friend followed)
- streams.py    a stream's life: open, outputs, updates, let go
- fanout.py     own moves published, friends' events handed to sessions, control changes
- catchup.py    after a pub/sub outage, back in line with MongoDB and Redis
- history.py    shared locations written behind to MongoDB, in batches
- operations.py the unary calls: friends, settings, nearby now
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from .catchup import CatchUp
from .domain import Event, Fix, HubConfig, Rejection, Seen, Session
from .fanout import Fanout
from .history import HistoryWriter
from .operations import Operations
from .ports import HistoryStore, LocationBus, PresenceStore
from .sessions import LocalSessions
from .streams import Streams

if TYPE_CHECKING:
    from geoplex.servers._runtime.metrics import ServiceMetrics

T = TypeVar("T")


class PresenceHub:
    def __init__(self, store: PresenceStore, bus: LocationBus, config: HubConfig,
                 clock: Callable[[], float] = time.time,
                 history: HistoryStore | None = None) -> None:
        """``history``: where shared locations go (default ``store``; in a mesh with a
        broker, its history topic)."""
        self.config = config
        self.local = LocalSessions()
        self.history = HistoryWriter(history or store, config)
        self.fanout = Fanout(self.local, bus, self.history, config, clock)
        self.streams = Streams(self.local, store, bus, self.fanout, config, clock)
        self.catch_up = CatchUp(self.local, store, bus, self.fanout, self.streams, config,
                                clock)
        self.operations = Operations(store, bus, config, clock)
        self._tasks: list[asyncio.Task[None]] = []

    def instruments(self, metrics: ServiceMetrics) -> None:
        """The service's metrics (ServiceSpec.instruments): fan-out messages and the
        streams open here, read from the state the hub keeps."""
        local, fanout = self.local, self.fanout
        metrics.counter("geoplex.presence.fanout.messages", lambda: fanout.delivered,
                        unit="{message}",
                        description="Friends' location and gone events handed to the streams "
                                    "open here (one per event and following stream)")
        history = self.history
        metrics.counter("geoplex.presence.history.rows",
                        lambda: [(history.written, {"outcome": "written"}),
                                 (history.dropped, {"outcome": "dropped"})],
                        unit="{row}", description="Shared locations the history writer "
                                                  "handed on (to MongoDB or the broker) or "
                                                  "dropped because its buffer was full")
        metrics.up_down_counter("geoplex.presence.history.buffered",
                                lambda: history.buffered, unit="{row}",
                                description="Shared locations waiting for the history "
                                            "(the store or the broker is slow or away)")
        metrics.up_down_counter("geoplex.presence.streams",
                                lambda: sum(map(len, list(local.by_user.values()))),
                                unit="{stream}", description="Connect streams open here")

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.fanout.feed.run(), name="presence-pubsub"),
                       asyncio.create_task(self.streams.sweep(), name="presence-sweep"),
                       asyncio.create_task(self.history.run(), name="presence-history"),
                       asyncio.create_task(self.catch_up.run(), name="presence-catch-up")]

    async def shutdown(self) -> None:
        """Before the server stops: every stream ends (UNAVAILABLE) so clients reconnect."""
        self.streams.shutdown()

    async def stop(self) -> None:
        await self.streams.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.history.flush()

    # -- streams ----------------------------------------------------------------------

    def ensure_serving(self) -> None:
        self.streams.ensure_serving()

    async def unless_closing(self, awaitable: Awaitable[T]) -> T:
        return await self.streams.unless_closing(awaitable)

    def validate(self, lat: float, lon: float, t: float | None, field: str) -> Fix:
        return self.streams.validate(lat, lon, t, field)

    async def open(self, user: str, fix: Fix) -> Session:
        return await self.streams.open(user, fix)

    def outputs(self, session: Session, reader: asyncio.Task[None]
                ) -> AsyncIterator[tuple[list[Rejection], list[Event]]]:
        return self.streams.outputs(session, reader)

    async def update(self, session: Session, fix: Fix, field: str, sequence: int = 0
                     ) -> None:
        await self.streams.update(session, fix, field, sequence)

    def release(self, session: Session) -> asyncio.Task[None]:
        return self.streams.release(session)

    async def close(self, session: Session) -> None:
        await self.streams.close(session)

    # -- unary operations ---------------------------------------------------------------

    async def add_friend(self, user: str, friend: str) -> None:
        await self.operations.add_friend(user, friend)

    async def remove_friend(self, user: str, friend: str) -> None:
        await self.operations.remove_friend(user, friend)

    async def list_friends(self, user: str, page_size: int, token: str) -> tuple[list[str], str]:
        return await self.operations.list_friends(user, page_size, token)

    async def set_sharing(self, user: str, sharing: bool) -> bool:
        return await self.operations.set_sharing(user, sharing)

    async def set_radius(self, user: str, radius_m: float) -> float:
        return await self.operations.set_radius(user, radius_m)

    async def settings(self, user: str) -> tuple[bool, float]:
        return await self.operations.settings(user)

    async def nearby(self, user: str, page_size: int, token: str
                     ) -> tuple[list[Seen], str, float]:
        return await self.operations.nearby(user, page_size, token)
