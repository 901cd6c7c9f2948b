"""When the partition logs call fsync."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FsyncPolicy:
    """The default is **per batch**: an append returns (and a producer is acknowledged)
    only once the batch is on disk, so nothing acknowledged is lost even to a power cut.
    Group commit keeps it cheap: one fsync, off the event loop, covers every batch written
    before it started, and appends arriving meanwhile share the next one. Consumers see a
    batch once it is synced (the log's high watermark).

    Otherwise (``per_batch=False``) batches are visible once written and a background
    flush syncs every ``interval_ms`` and once ``interval_bytes`` are unsynced (either 0:
    not by that measure; both 0: never, only at a segment roll and at close, leaving the
    rest to the OS's writeback). ``append(sync=True)`` syncs that batch whatever the policy.
    A process crash (``kill -9``) loses nothing under any policy (the page cache has the
    writes); a power cut loses what was not synced.
    """

    per_batch: bool = True
    interval_ms: int = 0
    interval_bytes: int = 0

    def __post_init__(self) -> None:
        if self.interval_ms < 0 or self.interval_bytes < 0:
            raise ValueError("fsync intervals must be >= 0")

    @classmethod
    def every(cls, interval_ms: int = 0, interval_bytes: int = 0) -> FsyncPolicy:
        return cls(per_batch=False, interval_ms=interval_ms, interval_bytes=interval_bytes)

    @classmethod
    def never(cls) -> FsyncPolicy:
        """Only at segment rolls and close (benchmarks' "no fsync" row)."""
        return cls(per_batch=False)

    @property
    def label(self) -> str:
        """How a benchmark row or a log line names it."""
        if self.per_batch:
            return "fsync per batch"
        bounds = [f"{self.interval_ms} ms"] if self.interval_ms else []
        bounds += [f"{self.interval_bytes} bytes"] if self.interval_bytes else []
        return f"fsync every {' or '.join(bounds)}" if bounds else "no fsync (OS writeback)"
