"""Telemetry's storage engine: a local time-series store, pure Python and numpy.

Series keyed by their label sets with an inverted index (``labels``, ``index``), a head
block in memory behind a CRC32C-framed, segmented write-ahead log (``head``, ``wal``),
immutable compressed blocks on disk and their compaction (``blocks``, ``chunks``), the
store tying them together (``db``) behind the :class:`~.api.Storage` protocol, and the
downsampling rollups (``rollup``).
"""

from .api import AppendResult, BlockStats, Series, Storage, StoreStats
from .chunks import STALE_NAN, STALE_NAN_BITS, ChunkEncoding, CorruptChunk
from .db import TSDB, TSDBOptions
from .errors import RejectReason, SampleRejected
from .labels import InvalidLabels, Labels, Matcher, MatchOp, labels_of
from .wal import FsyncMode, FsyncPolicy

__all__ = ["AppendResult", "BlockStats", "ChunkEncoding", "CorruptChunk", "FsyncMode",
           "FsyncPolicy", "InvalidLabels", "Labels", "MatchOp", "Matcher", "RejectReason",
           "STALE_NAN", "STALE_NAN_BITS", "SampleRejected", "Series", "Storage", "StoreStats",
           "TSDB", "TSDBOptions", "labels_of"]
