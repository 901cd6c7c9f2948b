"""The storage engine's errors (a :class:`GeoplexError` each, mapped once to a status)."""

from __future__ import annotations

import enum

from geoplex.servers._runtime.errors import GeoplexError


class RejectReason(enum.Enum):
    INVALID_LABELS = "INVALID_LABELS"
    INVALID_SAMPLE = "INVALID_SAMPLE"  # a timestamp outside int64, a value not a float
    OUT_OF_BOUNDS = "OUT_OF_BOUNDS"  # before the head's range: that time is in a block
    TOO_OLD = "TOO_OLD"  # further behind the head's max time than the out-of-order window
    DUPLICATE_TIMESTAMP = "DUPLICATE_TIMESTAMP"  # same timestamp, another value
    SERIES_LIMIT = "SERIES_LIMIT"  # the head's active series limit


class SampleRejected(GeoplexError):
    """A sample of an append batch that cannot be stored; **nothing of the batch was
    stored** (every sample is validated before any is written). ``index`` is the
    sample's position in the batch."""

    code = "INVALID_ARGUMENT"

    def __init__(self, reason: RejectReason, index: int, detail: str) -> None:
        super().__init__(f"sample {index}: {detail}", reason=reason.value,
                         metadata={"index": str(index)})
        self.reject_reason = reason
        self.index = index
        self.detail = detail
        if reason is RejectReason.SERIES_LIMIT:
            self.code = "RESOURCE_EXHAUSTED"
