"""Leader epochs: which leader epoch wrote which offsets (Kafka's ``LeaderEpochFileCache``).

An ordered list of (epoch, start offset) entries, epochs and start offsets both strictly
increasing: epoch ``E`` covers the offsets from its start up to the next entry's start
(the last one, up to the log end). A leader starting epoch ``E`` adds (E, log end); a
follower adds one when a replicated batch's header carries a newer epoch. A follower asks
the leader for the end of the epoch of its own last batch to find where the two logs
diverge (:meth:`LeaderEpochCache.end_offset_for`).

Kept in ``leader-epochs`` in the partition directory, written whole (a temporary file,
fsync, rename, directory fsync) after every change, as text::

    0            <- format version
    2            <- entries
    0 0          <- epoch, start offset
    3 1200

The log rebuilds the list from the batch headers (each carries ``leader_epoch``) when the
file is missing, damaged, or does not match the last batch; see ``partition.py``.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import NamedTuple

EPOCHS_FILE = "leader-epochs"
FORMAT_VERSION = 0
MAX_EPOCH = (1 << 31) - 1  # the frame header's field is an i32
NO_EPOCH = -1


class StaleLeaderEpoch(ValueError):
    """A leader epoch below the newest the log knows (epochs only increase)."""

    def __init__(self, epoch: int, latest: int) -> None:
        super().__init__(f"leader_epoch: {epoch} is below the log's latest epoch {latest}")
        self.epoch = epoch
        self.latest = latest


class EpochEntry(NamedTuple):
    epoch: int
    start_offset: int


def encode(entries: Iterable[EpochEntry]) -> bytes:
    rows = [f"{epoch} {start}" for epoch, start in entries]
    return "\n".join([str(FORMAT_VERSION), str(len(rows)), *rows, ""]).encode()


def decode(data: bytes) -> list[EpochEntry] | None:
    """The entries a file holds, or None when it is not a well-formed epochs file."""
    try:
        lines = data.decode("ascii").split("\n")
        if lines[-1] != "" or int(lines[0]) != FORMAT_VERSION or int(lines[1]) != len(lines) - 3:
            return None
        entries = []
        for line in lines[2:-1]:
            epoch, start = line.split(" ")
            entries.append(EpochEntry(int(epoch), int(start)))
    except (UnicodeDecodeError, ValueError, IndexError):
        return None
    for before, after in zip(entries, entries[1:]):
        if after.epoch <= before.epoch or after.start_offset <= before.start_offset:
            return None
    if entries and (entries[0].epoch < 0 or entries[-1].epoch > MAX_EPOCH
                    or entries[0].start_offset < 0):
        return None
    return entries


class LeaderEpochCache:
    """The entries in memory and the file that holds them.

    Changes are made on the event loop; :meth:`saver` hands out a job writing the state
    as of that call (for a group commit, in a thread) and :meth:`save` writes the current
    one. A write never replaces a newer state already on disk, whichever thread runs it.
    """

    def __init__(self, path: Path, persist: Callable[[Path, bytes], None],
                 entries: Iterable[EpochEntry] = (), saved: bool = True) -> None:
        self.path = path
        self._persist = persist
        self._entries: list[EpochEntry] = list(entries)
        self._version = 0 if saved else 1  # bumped by every change
        self._saved = 0  # the version on disk
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LeaderEpochCache({self._entries})"

    @property
    def entries(self) -> tuple[EpochEntry, ...]:
        return tuple(self._entries)

    @property
    def latest_epoch(self) -> int:
        return self._entries[-1].epoch if self._entries else NO_EPOCH

    @property
    def dirty(self) -> bool:
        """Whether the file is behind the entries in memory."""
        return self._saved < self._version

    def epoch_at(self, offset: int) -> int:
        """The epoch of the entry covering ``offset`` (NO_EPOCH when none starts at or below it)."""
        i = bisect_right(self._entries, offset, key=_start) - 1
        return self._entries[i].epoch if i >= 0 else NO_EPOCH

    def accepts(self, epoch: int, start_offset: int) -> bool:
        """Whether a batch of ``epoch`` may start at ``start_offset``: no entry starting
        below it has a newer epoch (entries starting at or after it cover no batch yet
        and give way)."""
        i = bisect_left(self._entries, start_offset, key=_start) - 1
        return 0 <= epoch <= MAX_EPOCH and (i < 0 or self._entries[i].epoch <= epoch)

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that ``epoch`` begins at ``start_offset`` (the log end): entries starting
        there or later go (they cover no batch), then the entry is added unless the latest
        one is that epoch already. Returns whether anything changed. Raises
        StaleLeaderEpoch when an entry starting below has a newer epoch."""
        if not self.accepts(epoch, start_offset):
            raise StaleLeaderEpoch(epoch, self.latest_epoch)
        keep = bisect_left(self._entries, start_offset, key=_start)
        changed = keep < len(self._entries)
        del self._entries[keep:]
        if not self._entries or self._entries[-1].epoch != epoch:
            self._entries.append(EpochEntry(epoch, start_offset))
            changed = True
        if changed:
            self._version += 1
        return changed

    def truncate_from_end(self, end_offset: int) -> bool:
        """Drop the entries starting at or after ``end_offset`` (the log was cut there)."""
        keep = bisect_left(self._entries, end_offset, key=_start)
        if keep == len(self._entries):
            return False
        del self._entries[keep:]
        self._version += 1
        return True

    def truncate_from_start(self, start_offset: int) -> bool:
        """The log now starts at ``start_offset``: the entries wholly below it go and the
        one covering it starts there."""
        first = bisect_right(self._entries, start_offset, key=_start) - 1
        if first < 0 or (first == 0 and self._entries[0].start_offset == start_offset):
            return False
        epoch = self._entries[first].epoch
        self._entries[:first + 1] = [EpochEntry(epoch, start_offset)]
        self._version += 1
        return True

    def end_offset_for(self, epoch: int, log_start: int, log_end: int) -> tuple[int, int]:
        """(the largest known epoch <= ``epoch``, its end offset: the next entry's start,
        the log end for the latest); (NO_EPOCH, ``log_start``) when none is <= ``epoch``."""
        i = bisect_right(self._entries, epoch, key=_epoch) - 1
        if i < 0:
            return NO_EPOCH, log_start
        if i == len(self._entries) - 1:
            return self._entries[i].epoch, log_end
        return self._entries[i].epoch, self._entries[i + 1].start_offset

    # ---- the file -----------------------------------------------------------------

    def saver(self) -> Callable[[], None]:
        """A job writing the file as the entries are now (run it off the event loop)."""
        return partial(self._save, self._version, encode(self._entries))

    def save(self) -> None:
        """Write the file now if it is behind (while nothing else uses the cache: at open)."""
        if self.dirty:
            self._save(self._version, encode(self._entries))

    def _save(self, version: int, data: bytes) -> None:
        with self._lock:
            if version > self._saved:
                self._persist(self.path, data)
                self._saved = version


def _start(entry: EpochEntry) -> int:
    return entry.start_offset


def _epoch(entry: EpochEntry) -> int:
    return entry.epoch
