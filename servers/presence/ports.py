"""What the presence hub needs from its backends (adapters/ implements them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from .domain import Change, FeedEvent, Fix, Gone, HistoryRow, Settings


class HistoryStore(Protocol):
    async def append_history(self, rows: Sequence[HistoryRow]) -> None:
        """Rows, oldest first; a row whose id is already stored is not stored again (the
        same rows may come twice: a retry after a lost answer, a replayed record)."""


class PresenceStore(HistoryStore, Protocol):
    """System of record: settings, friendships, location history (MongoDB)."""

    async def settings(self, user: str, default_radius_m: float) -> Settings: ...
    async def set_sharing(self, user: str, sharing: bool) -> None: ...
    async def set_radius(self, user: str, radius_m: float) -> None: ...
    async def friends(self, user: str) -> set[str]: ...
    async def friends_page(self, user: str, limit: int, after: str) -> list[str]: ...
    async def add_friendship(self, a: str, b: str) -> None: ...
    async def remove_friendship(self, a: str, b: str) -> int: ...


class Feed(Protocol):
    """This process's subscriptions to channels (see LocationBus.feed)."""

    async def add(self, channels: Sequence[str]) -> None: ...
    async def remove(self, channels: Sequence[str]) -> None: ...
    async def run(self) -> None: ...


class LocationBus(Protocol):
    """Latest locations with a TTL and per-user channels (Redis). Every call raises
    domain.LocationsUnavailable when the backend cannot be reached."""

    def channel(self, user: str) -> str:
        """Where the user's Located and Withdrawn events are published."""

    def control(self, user: str) -> str:
        """Where Changes for the user's streams are published."""

    def feed(self, on_event: Callable[[FeedEvent], None],
             on_resubscribe: Callable[[], None]) -> Feed:
        """Subscriptions whose messages reach ``on_event`` decoded; ``on_resubscribe`` after
        an outage of the subscriptions (what was published meanwhile is lost)."""

    async def record(self, user: str, fix: Fix, sharing: bool) -> bool:
        """Cache the user's location and, if ``sharing``, publish it (Located); in one step,
        False with nothing done if the user's latest location (from any of their streams,
        on any server) is newer than ``fix``."""

    async def stream_opened(self, user: str) -> None: ...
    async def stream_closed(self, user: str) -> int: ...
    async def withdraw(self, user: str, reason: Gone) -> None:
        """Forget the user's shared location and publish Withdrawn."""

    async def shared_locations(self, users: Sequence[str]) -> dict[str, Fix]: ...
    async def own_location(self, user: str) -> Fix | None: ...
    async def tell(self, change: Change) -> None:
        """Publish a stored change to the servers holding ``change.user_id``'s streams."""


class FixValidator(Protocol):
    """Turns a client's location and optional time into a Fix (InvalidArgument naming
    ``field`` otherwise); the hub is one."""

    def validate(self, lat: float, lon: float, t: float | None, field: str) -> Fix: ...
