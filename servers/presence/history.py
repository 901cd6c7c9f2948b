"""The location history, written behind: shared locations are buffered and written in
batches (every ``history_flush_s``, or sooner once a batch is full), to MongoDB or, in a
mesh with a broker, to the broker's history topic (adapters/broker_history.py).

Each row's id is made from what it says (:func:`row_id`: the user, the fix's time and
place), so the history stores it once however often it comes: a batch retried after an
answer was lost, a record a consumer group replays, and the same update sent again by the
client — its Hello after a reconnect repeats its latest location with that location's
time, and an update not acknowledged is sent again. (Two updates of one user at the same
instant and place are one row.)

The buffer is bounded by ``history_buffer_max``: while the store cannot keep up (or is
down), the oldest rows not yet written give way to new ones. Those are counted and
logged (how many, never whose or where).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from collections import deque
from collections.abc import Callable

from .domain import Fix, HistoryRow, HubConfig
from .ports import HistoryStore

log = logging.getLogger(__name__)


def row_id(user: str, fix: Fix) -> str:
    """The id of a user's fix: the same for the same update however often it is sent."""
    digest = hashlib.blake2b(user.encode(), digest_size=16, person=b"geoplex-history")
    digest.update(struct.pack("<ddd", fix.t, fix.lat, fix.lon))
    return digest.hexdigest()


class HistoryWriter:
    def __init__(self, store: HistoryStore, config: HubConfig) -> None:
        self.store = store
        self.config = config
        self.dropped = 0  # rows given up because the buffer was full
        self._dropped_reported = 0
        self.written = 0  # rows the store took
        self._rows: deque[HistoryRow] = deque(maxlen=config.history_buffer_max)
        self._batch: list[HistoryRow] = []  # taken from the buffer, not written yet
        self._kick = asyncio.Event()
        self._waiters: dict[str, list[Callable[[], None]]] = {}  # row id -> on_written

    @property
    def buffered(self) -> int:
        """Rows accepted and not written yet."""
        return len(self._rows) + len(self._batch)

    def append(self, user: str, fix: Fix, on_written: Callable[[], None] | None = None
               ) -> None:
        """Buffer a row; ``on_written`` is called once the store has taken it (never,
        if the row is dropped or the process stops first)."""
        if len(self._rows) == self._rows.maxlen:
            self.dropped += 1  # the oldest row goes, unacknowledged
            self._waiters.pop(self._rows[0].id, None)
        row = HistoryRow(row_id(user, fix), user, fix)
        self._rows.append(row)
        if on_written is not None:
            self._waiters.setdefault(row.id, []).append(on_written)
        if len(self._rows) >= self.config.history_batch:
            self._kick.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), self.config.history_flush_s)
            except TimeoutError:
                pass
            self._kick.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything buffered, a batch at a time; a batch that fails stays first in
        line for the next round."""
        self._report_dropped()
        while self._batch or self._rows:
            if not self._batch:
                take = min(len(self._rows), self.config.history_batch)
                self._batch = [self._rows.popleft() for _ in range(take)]
            try:
                await self.store.append_history(self._batch)
            except Exception as exc:  # noqa: BLE001 - keep the rows, retry next tick
                log.warning("history write failed (%s); will retry", type(exc).__name__)
                return
            self.written += len(self._batch)
            batch, self._batch = self._batch, []
            if self._waiters:
                for row in batch:
                    for waiter in self._waiters.pop(row.id, ()):
                        waiter()

    def _report_dropped(self) -> None:
        new = self.dropped - self._dropped_reported
        if new:
            self._dropped_reported = self.dropped
            log.warning("history buffer full (%d rows): %d oldest rows dropped (%d since "
                        "start); the store is not keeping up", self.config.history_buffer_max,
                        new, self.dropped)
