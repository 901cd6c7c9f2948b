"""One segment: ``%020d.log`` (frames, named by the base offset) and its two indexes.

A segment knows its size, next offset and timestamps in memory; its index is in memory
while it is active and loaded on demand once it is closed (``partition.py`` keeps a few
closed segments' files open and indexes loaded, least recently read first to go).
"""

from __future__ import annotations

import errno
import logging
import os
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from pathlib import Path

import google_crc32c

from ..domain import CorruptBatch, StorageFull
from . import frame
from .frame import CRC_FROM, HEADER, HEADER_SIZE, MAGIC, MAX_PAYLOAD, FrameHeader, read_header
from .index import INTERVAL, SegmentIndex, last_entries, read_files, write_files

logger = logging.getLogger(__name__)

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
MAX_SEGMENT_BYTES = (1 << 32) - 1  # positions are u32 in the index
MAX_SEGMENT_RECORDS = (1 << 32) - 1  # relative offsets too
MIN_TIMESTAMP = -(1 << 63)
_SCAN_CHUNK = 4 << 20  # reading a whole segment to check CRCs
_HEADER_CHUNK = 64 << 10  # reading headers only
LOG_SUFFIX = ".log"


def segment_name(base: int) -> str:
    return f"{base:020d}"


class _Window:
    """Reads a file through one buffer, ``chunk`` bytes at a time."""

    def __init__(self, fd: int, end: int, chunk: int) -> None:
        self.fd = fd
        self.end = end
        self.chunk = chunk
        self.buf = b""
        self.at = 0

    def span(self, position: int, size: int) -> int:
        """Make the buffer hold ``[position, position + size)``; returns where ``position``
        is in it, or -1 when the file ends before."""
        if position + size > self.end:
            return -1
        if self.at <= position and position + size <= self.at + len(self.buf):
            return position - self.at
        self.buf = os.pread(self.fd, max(size, min(self.chunk, self.end - position)), position)
        self.at = position
        return 0 if len(self.buf) >= size else -1


class Segment:
    __slots__ = ("directory", "base", "size", "next_offset", "first_append_ms",
                 "last_append_ms", "max_timestamp_ms", "last_pos", "last_rel", "index", "fd",
                 "synced", "syncing", "damaged", "damaged_at")

    def __init__(self, directory: Path, base: int) -> None:
        self.directory = directory
        self.base = base
        self.fd: int | None = None
        self.index: SegmentIndex | None = None
        self.synced = True  # False: written since its last fsync
        self.syncing = 0  # fsyncs running on its fd now (it stays open meanwhile)
        self._reset()

    def _reset(self) -> None:
        self.size = 0  # bytes of whole frames
        self.next_offset = self.base
        self.first_append_ms = 0
        self.last_append_ms = 0
        self.max_timestamp_ms = MIN_TIMESTAMP
        self.last_pos = 0  # the last batch's position and relative offset
        self.last_rel = 0
        self.damaged = False  # a scan found a batch failing its CRC and kept it
        self.damaged_at = -1  # the first such batch's base offset

    def __repr__(self) -> str:
        return f"Segment({self.log_path})"

    @property
    def log_path(self) -> Path:
        return self.directory / (segment_name(self.base) + LOG_SUFFIX)

    @property
    def index_path(self) -> Path:
        return self.directory / (segment_name(self.base) + ".index")

    @property
    def time_path(self) -> Path:
        return self.directory / (segment_name(self.base) + ".timeindex")

    @property
    def empty(self) -> bool:
        return self.size == 0

    @classmethod
    def create(cls, directory: Path, base: int) -> Segment:
        segment = cls(directory, base)
        try:
            segment.fd = os.open(segment.log_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if segment.log_path.stat().st_size:
                raise
            segment.fd = os.open(segment.log_path, os.O_RDWR)
        except OSError as error:
            if error.errno in FULL_ERRNOS:
                raise StorageFull() from error
            raise
        segment.index = SegmentIndex()
        return segment

    def open_fd(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.log_path, os.O_RDWR)
        return self.fd

    def release(self) -> None:
        """Close the file and drop the index (a closed segment reopens them when read)."""
        if self.syncing:
            return
        self.close()
        self.index = None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def remove_files(self) -> None:
        for path in (self.log_path, self.index_path, self.time_path):
            path.unlink(missing_ok=True)

    def remove_index_files(self) -> None:
        self.index_path.unlink(missing_ok=True)
        self.time_path.unlink(missing_ok=True)

    # ---- writing ------------------------------------------------------------------

    def append(self, parts: Sequence[bytes], header_fields: FrameHeader) -> None:
        """Write one frame at the end: ``parts`` concatenated are its bytes (header, then
        payload). On any failure the file is cut back to where it was (nothing of the
        batch remains); a full disk raises StorageFull."""
        fd = self.fd
        assert fd is not None and self.index is not None
        position = self.size
        total = header_fields.size
        try:
            written = os.pwritev(fd, parts, position)
            if written < total:  # a short write: the rest, or the error that stopped it
                rest = memoryview(b"".join(parts))
                while written < total:
                    written += os.pwrite(fd, rest[written:], position + written)
        except OSError as error:
            self._cut_back(position)
            if error.errno in FULL_ERRNOS:
                raise StorageFull() from error
            raise
        self._account(position, header_fields)
        self.synced = False

    def _cut_back(self, position: int) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, position)

    def _account(self, position: int, header: FrameHeader) -> None:
        """Take a frame written (or found) at ``position`` into the bookkeeping."""
        assert self.index is not None
        rel = header.base_offset - self.base
        if header.max_timestamp_ms > self.max_timestamp_ms:
            self.max_timestamp_ms = header.max_timestamp_ms
        if self.index.wants(position):
            self.index.add(rel, position, self.max_timestamp_ms)
        if not self.size:
            self.first_append_ms = header.append_time_ms
        self.last_append_ms = header.append_time_ms
        self.last_pos = position
        self.last_rel = rel
        self.size = position + header.size
        self.next_offset = header.next_offset

    def fits(self, frame_size: int, count: int, segment_bytes: int) -> bool:
        if self.empty:
            return True
        return (self.size + frame_size <= min(segment_bytes, MAX_SEGMENT_BYTES)
                and self.next_offset + count - self.base <= MAX_SEGMENT_RECORDS)

    def seal(self) -> None:
        """Give the last batch an index entry (a closed segment's last entries are its
        last batch: its summary at open reads just those)."""
        index = self.ensure_index()
        if not self.empty and index.rel[-1] != self.last_rel:
            index.add(self.last_rel, self.last_pos, self.max_timestamp_ms)

    def index_bytes(self) -> tuple[bytes, bytes]:
        return self.ensure_index().encode()

    def write_index(self, fsync: bool = True) -> None:
        offsets, times = self.index_bytes()
        write_files(self.index_path, self.time_path, offsets, times, fsync)

    # ---- reading ------------------------------------------------------------------

    def ensure_index(self) -> SegmentIndex:
        if self.index is None:
            index = read_files(self.index_path, self.time_path)
            if index is not None and index.pos[-1] == self.last_pos:
                self.index = index
            else:
                logger.warning("%s: its index is missing or damaged; rebuilding it", self)
                self.rebuild(verify=False)
                self.seal()
                self.write_index(fsync=False)
        assert self.index is not None
        return self.index

    def read(self, offset: int, budget: int, limit: int, out: list[bytes],
             where: str, whole: bool = False) -> tuple[int, bool, int]:
        """Add to ``out`` the payloads of the batches from the one holding ``offset`` on
        (those starting below ``limit``), while they fit in ``budget`` bytes (the first one
        always when ``out`` is empty); ``whole``: the frames (header and payload) instead.
        Returns the bytes added, whether the segment was read to its end, and the offset
        after the last batch added (-1: none). A batch failing its CRC ends the read; it
        raises CorruptBatch when it would be the first."""
        fd = self.open_fd()
        _, position = self.ensure_index().floor(max(offset - self.base, 0))
        end = self.size
        used = 0
        after = -1
        buf = b""
        at = position
        unpack, value, extend = HEADER.unpack_from, google_crc32c.value, google_crc32c.extend
        while position < end:  # the fetch path: plain locals, no header objects
            i = position - at
            if i + HEADER_SIZE > len(buf):
                buf = os.pread(fd, min(end - position, budget - used + INTERVAL + HEADER_SIZE),
                               position)
                at, i = position, 0
                if len(buf) < HEADER_SIZE:
                    return (*self._stop(out, used, where, position), after)
            fields = unpack(buf, i)
            length, base_offset, records = fields[1], fields[3], fields[4]
            size = HEADER_SIZE + length
            if fields[0] != MAGIC or records < 1 or length > MAX_PAYLOAD:
                return (*self._stop(out, used, where, position), after)
            if base_offset >= limit:
                return used, False, after
            if base_offset + records <= offset:
                position += size
                continue
            cost = size if whole else length
            if out and used + cost > budget:
                return used, False, after
            if i + size > len(buf):
                buf = os.pread(fd, min(end - position, max(size, budget - used + HEADER_SIZE)),
                               position)
                at, i = position, 0
                if len(buf) < size:
                    return (*self._stop(out, used, where, position), after)
            payload = buf[i + HEADER_SIZE:i + size]
            if extend(value(buf[i + CRC_FROM:i + HEADER_SIZE]), payload) != fields[2]:
                if out:
                    return used, False, after
                raise CorruptBatch(f"{where} offset {base_offset}")
            out.append(buf[i:i + size] if whole else payload)
            after = base_offset + records
            used += cost
            position += size
            if used >= budget:
                return used, position >= end, after
        return used, True, after

    def _stop(self, out: list[bytes], used: int, where: str, position: int) -> tuple[int, bool]:
        """A frame that cannot be read where one should be: what came before is served,
        else the damage is reported."""
        if out:
            return used, False
        raise CorruptBatch(f"{where} {self.log_path.name} position {position}")

    def headers(self, start: int = 0) -> Iterator[tuple[int, FrameHeader]]:
        """(position, header) of every frame from ``start`` on, reading headers only."""
        window = _Window(self.open_fd(), self.size, _HEADER_CHUNK)
        position = start
        while position < self.size:
            i = window.span(position, HEADER_SIZE)
            if i < 0:
                return
            header = read_header(window.buf, i)
            if not header.plausible():
                return
            yield position, header
            position += header.size

    def offset_for_time(self, timestamp_ms: int) -> int:
        """The first batch whose max timestamp is >= ``timestamp_ms``, or the next offset."""
        start = self.ensure_index().time_start(timestamp_ms)
        if start is None:
            return self.base
        for position, header in self.headers(start):
            if position != start and header.max_timestamp_ms >= timestamp_ms:
                return header.base_offset
        return self.next_offset

    # ---- opening and recovery -----------------------------------------------------

    def summarize(self, active: bool = False) -> bool:
        """Take size, next offset and timestamps from the index files' last entry (the
        last batch, see ``seal``) and that batch's header, without reading the rest.
        ``active``: load the whole index too (it stays in memory). False when the files
        are missing, damaged or stale (they do not end at the file's last batch)."""
        entries = last_entries(self.index_path, self.time_path)
        if entries is None:
            return False
        _, rel, pos, max_timestamp_ms = entries
        fd = self.open_fd()
        file_size = os.fstat(fd).st_size
        data = os.pread(fd, HEADER_SIZE, pos)
        if len(data) < HEADER_SIZE:
            return False
        header = read_header(data)
        if (not header.plausible() or header.base_offset != self.base + rel
                or pos + header.size != file_size):
            return False
        first = read_header(os.pread(fd, HEADER_SIZE, 0)) if pos else header
        if active:
            index = read_files(self.index_path, self.time_path)
            if index is None or index.pos[-1] != pos:
                return False
            self.index = index
        self.size = file_size
        self.next_offset = header.next_offset
        self.first_append_ms = first.append_time_ms
        self.last_append_ms = header.append_time_ms
        self.max_timestamp_ms = max_timestamp_ms
        self.last_pos = pos
        self.last_rel = rel
        return True

    def rebuild(self, verify: bool) -> str | None:
        """Scan the file, rebuilding the bookkeeping and the index; ``verify``: check every
        CRC too. Returns what stopped the scan before the file's end (the caller truncates
        there), or None. A batch failing its CRC that is followed by an intact one is kept
        (the damage is in the middle, not a torn tail: the later batches were acknowledged)
        and reported; reads of it raise CorruptBatch."""
        fd = self.open_fd()
        file_size = os.fstat(fd).st_size
        self._reset()
        self.index = SegmentIndex()
        window = _Window(fd, file_size, _SCAN_CHUNK if verify else _HEADER_CHUNK)
        position = 0
        while position < file_size:
            i = window.span(position, HEADER_SIZE)
            if i < 0:
                return "a torn header"
            header = read_header(window.buf, i)
            if not header.plausible() or header.base_offset != self.next_offset:
                return "a damaged header"
            end = position + header.size
            if end > file_size:
                return "a torn batch"
            if verify:
                i = window.span(position, header.size)
                if not frame.intact(window.buf, i, header):
                    if not self._intact_at(window, end, header.next_offset):
                        return "a batch failing its CRC"
                    logger.error("%s: the batch at offset %d fails its CRC but later batches "
                                 "are intact; it is kept and reported when read", self,
                                 header.base_offset)
                    if not self.damaged:
                        self.damaged_at = header.base_offset
                    self.damaged = True
            self._account(position, header)
            position = end
        return None

    def _intact_at(self, window: _Window, position: int, expected_offset: int) -> bool:
        i = window.span(position, HEADER_SIZE)
        if i < 0:
            return False
        header = read_header(window.buf, i)
        if not header.plausible() or header.base_offset != expected_offset:
            return False
        i = window.span(position, header.size)
        return i >= 0 and frame.intact(window.buf, i, header)

    def truncate(self, size: int) -> int:
        """Cut the file to ``size`` bytes; returns how many went."""
        fd = self.open_fd()
        dropped = os.fstat(fd).st_size - size
        if dropped > 0:
            os.ftruncate(fd, size)
            os.fsync(fd)
        return max(dropped, 0)

    def cut(self, offset: int) -> int:
        """Remove the batch holding ``offset`` and every later one: from the file (not
        synced here), the in-memory index and the summary. Returns the new next offset
        (the segment's own when ``offset`` is at or past it)."""
        if offset >= self.next_offset:
            return self.next_offset
        index = self.ensure_index()
        # scan from the index entry before the one at or below the cut, so that the batch
        # just before the cut is seen even when the cut is at an indexed batch
        entry = max(bisect_right(index.rel, max(offset - self.base, 0)) - 2, 0)
        position = index.pos[entry] if index else 0
        running = index.ts[entry] if index else MIN_TIMESTAMP
        previous: tuple[int, FrameHeader] | None = None
        cut_at, next_offset = self.size, self.next_offset
        for at, header in self.headers(position):
            if header.next_offset > offset:
                cut_at, next_offset = at, header.base_offset
                break
            running = max(running, header.max_timestamp_ms)
            previous = at, header
        os.ftruncate(self.open_fd(), cut_at)
        self.synced = False
        keep = bisect_left(index.pos, cut_at)
        del index.rel[keep:], index.pos[keep:], index.ts[keep:]
        if previous is None:
            self._reset()
            return self.next_offset
        at, header = previous
        self.size = cut_at
        self.next_offset = next_offset
        if self.damaged and self.damaged_at >= next_offset:  # the bad batch is gone
            self.damaged, self.damaged_at = False, -1
        self.last_append_ms = header.append_time_ms
        self.max_timestamp_ms = running
        self.last_pos = at
        self.last_rel = header.base_offset - self.base
        return next_offset
