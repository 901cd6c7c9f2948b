"""The write-ahead log: every acknowledged append batch is a record here first.

Files, in ``<db>/wal/``: segments ``%08d`` (numbered in order, a new one past
``segment_bytes``, and a new one at every open: nothing is ever appended after a tail
that recovery cut) and at most one ``checkpoint.%08d``, the head as it stood when segment
``%08d`` began (written once a head range has become a block; the older segments and
checkpoints are deleted then).

A record on disk is ``length u32 | crc32c u32 | payload`` (little-endian); the CRC32C
covers the length field and the payload, so a torn or garbled length is caught too.
Replay reads the checkpoint, then every later segment; the first record that is torn or
fails its CRC ends the log there: the segment is cut at that point (a torn tail: the
batch was never acknowledged, its fsync had not returned) and any later segment is
deleted (damage in the middle: what follows could name series the lost record defined;
logged as an error with how many bytes went).

Durability is the :class:`FsyncPolicy`'s: ``append`` writes (the bytes are in the page
cache, so a ``kill -9`` loses nothing written) and ``commit`` returns once an fsync
covering that record has returned (so a power cut loses nothing acknowledged either).
"""

from __future__ import annotations

import enum
import logging
import os
import re
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

from geoplex.servers._runtime.errors import DataLoss, Unavailable

from .chunks import Float64s, Int64s
from .labels import Labels

logger = logging.getLogger(__name__)

FRAME = struct.Struct("<II")
MAX_RECORD = (1 << 31) - 1
_SEGMENT = re.compile(r"\d{8}")
_CHECKPOINT = re.compile(r"checkpoint\.(\d{8})")


class FsyncMode(enum.Enum):
    ALWAYS = "always"
    INTERVAL = "interval"


@dataclass(frozen=True)
class FsyncPolicy:
    """When the WAL calls fsync; an append is acknowledged only after one covers it.

    ``always`` (the default): each append batch waits for an fsync of its record. The
    fsync runs outside the DB's lock and covers every record written before it started,
    so concurrent appenders share one (group commit) and a lone appender pays one fsync
    per batch, no more. It needs no tuning and its latency is one fsync, which is why it
    is the default (the broker's choice for the same reasons).

    ``interval``: a background thread fsyncs every ``interval_ms`` while records are
    unsynced, and each append waits for the fsync that covers it: at most one fsync per
    interval whatever the append rate, for up to ``interval_ms`` more latency per batch.
    Worth it for many small batches from a single writer.
    """

    mode: FsyncMode = FsyncMode.ALWAYS
    interval_ms: int = 10

    def __post_init__(self) -> None:
        if self.mode is FsyncMode.INTERVAL and self.interval_ms <= 0:
            raise ValueError("an interval fsync policy needs interval_ms > 0")

    @classmethod
    def always(cls) -> FsyncPolicy:
        return cls(FsyncMode.ALWAYS)

    @classmethod
    def interval(cls, interval_ms: int) -> FsyncPolicy:
        return cls(FsyncMode.INTERVAL, interval_ms)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def frame(payload: bytes) -> bytes:
    if len(payload) > MAX_RECORD:
        raise ValueError(f"a WAL record of {len(payload)} bytes is over {MAX_RECORD}")
    length = struct.pack("<I", len(payload))
    crc = int(google_crc32c.extend(google_crc32c.value(length), payload))
    return length + struct.pack("<I", crc) + payload


def read_frames(data: bytes) -> tuple[list[bytes], int]:
    """The intact records from the start of ``data``, and where the first bad one is
    (``len(data)`` when all are intact)."""
    records = []
    position = 0
    while position < len(data):
        if position + FRAME.size > len(data):
            break
        length, crc = FRAME.unpack_from(data, position)
        end = position + FRAME.size + length
        if end > len(data):
            break
        payload = data[position + FRAME.size:end]
        if int(google_crc32c.extend(google_crc32c.value(data[position:position + 4]),
                                    payload)) != crc:
            break
        records.append(payload)
        position = end
    return records, position


def _segments(directory: Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if _SEGMENT.fullmatch(p.name))


def _checkpoints(directory: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in directory.iterdir()
                  if (m := _CHECKPOINT.fullmatch(p.name)))


def replay(directory: Path) -> Iterator[bytes]:
    """Every record, oldest first, repairing the log as it goes (see the module's doc)."""
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.glob("*.tmp"):
        leftover.unlink()
    checkpoints = _checkpoints(directory)
    start = 0
    if checkpoints:
        start = checkpoints[-1]
        path = directory / f"checkpoint.{start:08d}"
        data = path.read_bytes()
        records, good = read_frames(data)
        if good != len(data):
            raise DataLoss(f"WAL checkpoint {path} is damaged at byte {good}")
        yield from records
    segments = [n for n in _segments(directory) if n >= start]
    for i, number in enumerate(segments):
        path = directory / f"{number:08d}"
        data = path.read_bytes()
        records, good = read_frames(data)
        yield from records
        if good == len(data):
            continue
        later = segments[i + 1:]
        if later:
            lost = sum((directory / f"{n:08d}").stat().st_size for n in later)
            logger.error("WAL segment %s is damaged at byte %d of %d; cutting it there and "
                         "deleting %d later segments (%d bytes)", path, good, len(data),
                         len(later), lost)
        else:
            logger.warning("WAL segment %s: a torn tail of %d bytes cut at byte %d", path,
                           len(data) - good, good)
        with path.open("r+b") as f:
            f.truncate(good)
            os.fsync(f.fileno())
        for n in later:
            (directory / f"{n:08d}").unlink()
        fsync_dir(directory)
        return


class WAL:
    """The writer. ``append`` is called under the DB's lock (one writer at a time);
    ``commit`` outside it, from any thread."""

    def __init__(self, directory: Path, policy: FsyncPolicy = FsyncPolicy(),
                 segment_bytes: int = 32 << 20) -> None:
        self.directory = directory
        self.policy = policy
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        existing = _segments(directory) + _checkpoints(directory)
        self.segment = max(existing, default=-1) + 1
        self._fd = self._open_segment(self.segment)
        self._size = 0
        self.written = 0  # bytes appended since open, over every segment
        self.synced = 0  # of them, the bytes an fsync has covered
        self.fsyncs = 0
        self._sync_lock = threading.Lock()  # one fsync (or segment switch) at a time
        self._cond = threading.Condition()
        self._failed: OSError | None = None
        self._closed = False
        self._stopping = threading.Event()
        self._syncer: threading.Thread | None = None
        if policy.mode is FsyncMode.INTERVAL:
            self._syncer = threading.Thread(target=self._sync_loop, name="tsdb-wal-fsync",
                                            daemon=True)
            self._syncer.start()

    def _open_segment(self, number: int) -> int:
        fd = os.open(self.directory / f"{number:08d}", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o644)
        fsync_dir(self.directory)
        return fd

    def _check(self) -> None:
        if self._closed:
            raise Unavailable("the WAL is closed")
        if self._failed is not None:
            raise Unavailable(f"the WAL failed ({self._failed}); the store takes no more "
                              "writes until it is reopened")

    def append(self, payload: bytes) -> int:
        """Write one record; returns the token to :meth:`commit` it with."""
        self._check()
        record = frame(payload)
        if self._size and self._size + len(record) > self.segment_bytes:
            self._switch()
        view = memoryview(record)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as error:
            self._failed = error
            raise Unavailable(f"writing the WAL failed: {error}") from error
        self._size += len(record)
        self.written += len(record)
        return self.written

    def _switch(self) -> int:
        """Start the next segment (the last one synced and closed first)."""
        with self._sync_lock:
            os.fsync(self._fd)
            self.fsyncs += 1
            os.close(self._fd)
            self.segment += 1
            self._fd = self._open_segment(self.segment)
            self._size = 0
            self._mark_synced(self.written)
        return self.segment

    def _mark_synced(self, upto: int) -> None:
        with self._cond:
            self.synced = max(self.synced, upto)
            self._cond.notify_all()

    def _sync_once(self) -> None:
        with self._sync_lock:
            target = self.written
            if target <= self.synced:
                return
            try:
                os.fsync(self._fd)
            except OSError as error:
                self._failed = error
                with self._cond:
                    self._cond.notify_all()
                raise Unavailable(f"fsync of the WAL failed: {error}") from error
            self.fsyncs += 1
            self._mark_synced(target)

    def commit(self, token: int) -> None:
        """Return once the record ``append`` returned ``token`` for is on disk."""
        if self.policy.mode is FsyncMode.ALWAYS:
            if self.synced < token:
                self._sync_once()
            return
        with self._cond:
            self._cond.notify_all()  # the syncer may be idle
            while self.synced < token:
                if self._failed is not None:
                    raise Unavailable(f"the WAL failed ({self._failed})")
                self._cond.wait()

    def _sync_loop(self) -> None:
        interval = self.policy.interval_ms / 1000
        while True:
            with self._cond:
                while not self._closed and self.written <= self.synced:
                    self._cond.wait()
                if self._closed:
                    return
            if self._stopping.wait(interval):  # what arrives meanwhile shares this fsync
                return
            try:
                self._sync_once()
            except Unavailable:
                logger.exception("the WAL's fsync failed")
                return

    def checkpoint(self, records: Iterable[bytes]) -> None:
        """Write ``records`` (the head now) as the checkpoint of a fresh segment and drop
        every older segment and checkpoint. Called under the DB's lock."""
        self._check()
        number = self._switch()
        path = self.directory / f"checkpoint.{number:08d}"
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("wb") as f:
            for record in records:
                f.write(frame(record))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
        fsync_dir(self.directory)
        for old in _segments(self.directory):
            if old < number:
                (self.directory / f"{old:08d}").unlink()
        for old in _checkpoints(self.directory):
            if old < number:
                (self.directory / f"checkpoint.{old:08d}").unlink()
        fsync_dir(self.directory)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    def close(self) -> None:
        if self._closed:
            return
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._stopping.set()
        if self._syncer is not None:
            self._syncer.join()
        with self._sync_lock:
            if self._failed is None:
                os.fsync(self._fd)
            os.close(self._fd)
        self._mark_synced(self.written)


# ---- the records ---------------------------------------------------------------------

RECORD_BATCH = 1
_COUNT = struct.Struct("<I")
_SERIES = struct.Struct("<QH")


@dataclass(frozen=True)
class BatchRecord:
    """New series (id, labels) first seen in the batch, then its samples."""

    series: Sequence[tuple[int, Labels]]
    ids: Int64s
    timestamps: Int64s
    values: Float64s


def _string(text: str) -> bytes:
    data = text.encode()
    return _COUNT.pack(len(data)) + data


def encode_batch(series: Sequence[tuple[int, Labels]], ids: Int64s, timestamps: Int64s,
                 values: Float64s) -> bytes:
    parts = [bytes([RECORD_BATCH]), _COUNT.pack(len(series))]
    for series_id, labels in series:
        parts.append(_SERIES.pack(series_id, len(labels)))
        for name, value in labels.pairs:
            parts += (_string(name), _string(value))
    parts.append(_COUNT.pack(len(ids)))
    parts.append(np.ascontiguousarray(ids, "<i8").tobytes())
    parts.append(np.ascontiguousarray(timestamps, "<i8").tobytes())
    parts.append(np.ascontiguousarray(values, np.float64).view(np.uint64).astype("<u8")
                 .tobytes())
    return b"".join(parts)


def decode_batch(payload: bytes) -> BatchRecord:
    if not payload or payload[0] != RECORD_BATCH:
        raise DataLoss(f"unknown WAL record type {payload[:1]!r}")
    at = 1
    (count,) = _COUNT.unpack_from(payload, at)
    at += _COUNT.size
    series = []
    for _ in range(count):
        series_id, pairs = _SERIES.unpack_from(payload, at)
        at += _SERIES.size
        labels = []
        for _ in range(pairs):
            texts = []
            for _ in range(2):
                (length,) = _COUNT.unpack_from(payload, at)
                at += _COUNT.size
                texts.append(payload[at:at + length].decode())
                at += length
            labels.append((texts[0], texts[1]))
        series.append((int(series_id), Labels(labels)))
    (samples,) = _COUNT.unpack_from(payload, at)
    at += _COUNT.size
    arrays = []
    for dtype in ("<i8", "<i8", "<u8"):
        arrays.append(np.frombuffer(payload, dtype, samples, at))
        at += 8 * samples
    if at != len(payload):
        raise DataLoss("a WAL batch record's length does not match its contents")
    return BatchRecord(series, arrays[0].astype(np.int64), arrays[1].astype(np.int64),
                       arrays[2].astype(np.uint64).view(np.float64))
