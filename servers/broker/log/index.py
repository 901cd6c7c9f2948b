"""A segment's sparse indexes, kept in memory and written whole when the segment closes.

An entry is made for the segment's first batch and then for the first batch starting at
least :data:`INTERVAL` bytes after the previous entry, and one for the last batch when
the segment is sealed. The two files hold the same batches, in lockstep:

- ``.index``: ``relative offset u32 | file position u32`` (8 bytes an entry);
- ``.timeindex``: ``max timestamp i64 | relative offset u32`` (12 bytes an entry), the
  timestamp being the largest record timestamp of the segment up to and including that
  batch (so the column never decreases and can be bisected).

The active segment's indexes live only in memory: after a crash the recovery scan of the
last segment rebuilds them, and a clean shutdown writes them (see ``partition.py``).
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from itertools import chain
from pathlib import Path

INTERVAL = 4096
TIME_ENTRY = struct.Struct("<qI")
OFFSET_ENTRY_SIZE = 8


class SegmentIndex:
    __slots__ = ("rel", "pos", "ts")

    def __init__(self) -> None:
        self.rel = array("I")  # relative offset of the batch
        self.pos = array("I")  # its position in the .log file
        self.ts = array("q")  # the segment's max timestamp up to and including it

    def __len__(self) -> int:
        return len(self.rel)

    def add(self, rel: int, pos: int, max_timestamp_ms: int) -> None:
        self.rel.append(rel)
        self.pos.append(pos)
        self.ts.append(max_timestamp_ms)

    def wants(self, position: int) -> bool:
        """Whether a batch starting at ``position`` gets an entry."""
        return not self.pos or position - self.pos[-1] >= INTERVAL

    def floor(self, rel: int) -> tuple[int, int]:
        """The entry at or before relative offset ``rel``: (its rel, its position)."""
        i = bisect_right(self.rel, rel) - 1
        if i < 0:
            return 0, 0
        return self.rel[i], self.pos[i]

    def time_start(self, timestamp_ms: int) -> int | None:
        """Where to scan from for the first batch whose max timestamp is >= ``timestamp_ms``:
        None when the segment's first batch is it, else the position of the last indexed
        batch whose running max is below it (the answer comes after that batch)."""
        i = bisect_left(self.ts, timestamp_ms)
        if i == 0:
            return None
        return self.pos[i - 1]

    # ---- files --------------------------------------------------------------------

    def encode(self) -> tuple[bytes, bytes]:
        pairs = array("I", chain.from_iterable(zip(self.rel, self.pos)))
        if sys.byteorder != "little":
            pairs.byteswap()
        times = b"".join(TIME_ENTRY.pack(t, r) for t, r in zip(self.ts, self.rel))
        return pairs.tobytes(), times

    @classmethod
    def decode(cls, offsets: bytes, times: bytes) -> SegmentIndex | None:
        """The index the two files hold, or None when they are damaged or disagree."""
        if (len(offsets) % OFFSET_ENTRY_SIZE or len(times) % TIME_ENTRY.size
                or len(offsets) // OFFSET_ENTRY_SIZE != len(times) // TIME_ENTRY.size
                or not offsets):
            return None
        pairs = array("I")
        pairs.frombytes(offsets)
        if sys.byteorder != "little":
            pairs.byteswap()
        index = cls()
        index.rel = pairs[0::2]
        index.pos = pairs[1::2]
        for i, (t, r) in enumerate(TIME_ENTRY.iter_unpack(times)):
            if r != index.rel[i]:
                return None
            index.ts.append(t)
        if index.rel[0] != 0 or index.pos[0] != 0:
            return None
        for i in range(1, len(index.rel)):
            if (index.rel[i] <= index.rel[i - 1] or index.pos[i] <= index.pos[i - 1]
                    or index.ts[i] < index.ts[i - 1]):
                return None
        return index


def write_files(index_path: Path, time_path: Path, offsets: bytes, times: bytes,
                fsync: bool = True) -> None:
    """Write both files whole (and fsync them: then run it off the event loop)."""
    for path, data in ((index_path, offsets), (time_path, times)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)


def last_entries(index_path: Path, time_path: Path) -> tuple[int, int, int, int] | None:
    """(entries, rel, position, max timestamp) of the files' last entry, without reading
    the rest; None when the files are missing or their sizes disagree."""
    try:
        with open(index_path, "rb") as offsets, open(time_path, "rb") as times:
            offsets_size = os.fstat(offsets.fileno()).st_size
            times_size = os.fstat(times.fileno()).st_size
            entries = offsets_size // OFFSET_ENTRY_SIZE
            if (not entries or offsets_size % OFFSET_ENTRY_SIZE or times_size % TIME_ENTRY.size
                    or times_size // TIME_ENTRY.size != entries):
                return None
            rel, pos = struct.unpack("<II", os.pread(offsets.fileno(), OFFSET_ENTRY_SIZE,
                                                     offsets_size - OFFSET_ENTRY_SIZE))
            ts, time_rel = TIME_ENTRY.unpack(os.pread(times.fileno(), TIME_ENTRY.size,
                                                      times_size - TIME_ENTRY.size))
    except (FileNotFoundError, struct.error):
        return None
    if time_rel != rel:
        return None
    return entries, rel, pos, ts


def read_files(index_path: Path, time_path: Path) -> SegmentIndex | None:
    try:
        return SegmentIndex.decode(index_path.read_bytes(), time_path.read_bytes())
    except FileNotFoundError:
        return None
