"""The streams open in this process, as state: who streams here, whom they follow.

No I/O here: the hub's parts (streams, fanout, catch-up) change this state and do the
subscribing and publishing that follows from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator

from .domain import Fix, Session


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


class LocalSessions:
    """The sessions of this process by user, and by friend followed: a friend's channel
    stays subscribed while ``watchers`` has sessions for them."""

    def __init__(self) -> None:
        self.by_user: dict[str, set[Session]] = {}
        self.watchers: dict[str, set[Session]] = {}
        self.heard: dict[str, int] = {}  # control messages heard, per user with streams
        # set when this process may have missed changes (a pub/sub outage, a change
        # published while a stream opened): the catch-up reads them again
        self.behind = asyncio.Event()

    def __iter__(self) -> Iterator[Session]:
        for sessions in list(self.by_user.values()):
            yield from list(sessions)

    def of(self, user: str) -> list[Session]:
        return list(self.by_user.get(user, ()))

    def live(self, user: str) -> list[Session]:
        """The user's sessions that are not ending."""
        return [s for s in self.by_user.get(user, ()) if s.release is None]

    def heard_from(self, user: str) -> int:
        return self.heard.get(user, 0)

    def add(self, session: Session) -> None:
        self.by_user.setdefault(session.user_id, set()).add(session)
        for friend in session.friends:
            self.watchers.setdefault(friend, set()).add(session)

    def remove(self, session: Session) -> tuple[list[str], bool]:
        """Forget the session: the friends no session here follows any more, and whether it
        was its user's last session here."""
        user = session.user_id
        mine = self.by_user.get(user, set())
        mine.discard(session)
        unwatched = []
        for friend in session.friends | set(session.friend_fixes):
            watching = self.watchers.get(friend)
            if watching is not None:
                watching.discard(session)
                if not watching:
                    del self.watchers[friend]
                    unwatched.append(friend)
        if mine:
            return unwatched, False
        self.by_user.pop(user, None)
        self.heard.pop(user, None)
        return unwatched, True

    def add_friend_now(self, sessions: Iterable[Session], friend: str) -> None:
        for session in sessions:
            if session.release is None:  # (a stream that ended meanwhile stays ended)
                session.add_friend(friend)
                self.watchers.setdefault(friend, set()).add(session)

    def remove_friend_now(self, sessions: Iterable[Session], friend: str) -> bool:
        """Drop the friend from the sessions; True when no session here follows them any
        more (their channel can go)."""
        for session in sessions:
            session.remove_friend(friend)
            watching = self.watchers.get(friend)
            if watching is not None:
                watching.discard(session)
        if friend in self.watchers and not self.watchers[friend]:
            del self.watchers[friend]
            return True
        return False

    def sweep(self, now: float, inactive_after_s: float) -> None:
        """Friends not heard of for ``inactive_after_s`` are gone (INACTIVE)."""
        for session in self:
            session.sweep(now, inactive_after_s)


def show_if_newer(sessions: Iterable[Session], friend: str, fix: Fix,
                  active_since: float) -> None:
    """Show the sessions where ``friend`` is, unless that is stale or older than what they
    know (ignored by a session that no longer has the friend)."""
    if fix.t < active_since:
        return
    for session in sessions:
        known = session.friend_fixes.get(friend)
        if known is None or fix.t > known.t:
            session.friend_moved(friend, fix)
