"""What the dispatcher needs from the world: delivery channels, and the state the
notifier nodes share (silences, claims on notifications, the notification log).

``adapters/etcd_state.py`` is the shared state on etcd; ``channels/`` the channels.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .domain import Silence
from .notification import Kind, Notification


class Channel(Protocol):
    """One integration of one receiver (``channels.build_channels`` makes them).

    A channel may also have ``send_resolved: bool`` (Alertmanager's per-config flag; the
    dispatcher reads it, default True) and drops resolved alerts itself when it is false.
    """

    integration: str  # "email" | "pagerduty" | "webhook"

    async def send(self, n: Notification) -> None:
        """Deliver ``n``; raises DeliveryError(retryable=...) when it cannot."""
        ...

    async def close(self) -> None:
        """Release the channel's client; idempotent."""
        ...


class ChannelFactory(Protocol):
    def __call__(self, receiver: Mapping[str, Any], *,
                 external_url: str = "") -> Sequence[Channel]: ...


class DeliveryState(enum.Enum):
    DELIVERED = "delivered"
    RETRYING = "retrying"  # an attempt failed; another follows after a backoff
    FAILED = "failed"  # given up (attempts exhausted, or an error a retry cannot help)


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    """One notification to one integration of a receiver, as the log shows it."""

    id: str  # time-ordered: newer ids sort after older ones
    receiver: str
    integration: str
    group_key: str
    kind: Kind
    fingerprints: tuple[str, ...]
    created_at: float
    state: DeliveryState
    attempts: int
    error: str
    node: str


@dataclass(frozen=True, slots=True)
class StoredSilence:
    silence: Silence
    revision: int  # etcd's mod revision: a replace must name the one it read


class SilenceStore(Protocol):
    async def create_silence(self, silence: Silence) -> None:
        """Store a new silence (its id is new); Unavailable when the store is down."""
        ...

    async def get_silence(self, silence_id: str) -> StoredSilence | None: ...

    async def replace_silence(self, silence: Silence, revision: int) -> bool:
        """Store ``silence`` over the one read at ``revision``; False when it changed."""
        ...

    async def delete_silence(self, silence_id: str, revision: int) -> bool: ...

    def follow_silences(self) -> AsyncGenerator[list[tuple[str, Silence | None]], None]:
        """Every silence first (one batch), then each change ((id, None): deleted); runs
        until closed, waiting while the store is down and listing again after."""
        ...


class ClaimStore(Protocol):
    async def claim(self, key: str, node: str, now: float, ttl: float,
                    reclaim_after: float | None) -> str | None:
        """Claim the notification ``key`` for ``node``: None when this node may send it,
        else the node that holds it. A claim lasts ``ttl`` seconds; one older than
        ``reclaim_after`` (a repeat of the same notification) may be taken again."""
        ...

    async def release(self, key: str, node: str) -> None:
        """Give a claim back (its notification was not delivered), if still ours."""
        ...


class NotificationLog(Protocol):
    async def record(self, record: NotificationRecord) -> None: ...

    async def records(self) -> list[NotificationRecord]:
        """Every record kept, newest first."""
        ...

    async def trim(self, keep: int) -> int:
        """Drop all but the newest ``keep`` records; how many were dropped."""
        ...


class SharedState(SilenceStore, ClaimStore, NotificationLog, Protocol):
    """What the nodes share (one etcd adapter implements it all)."""

    async def ping(self) -> None: ...
