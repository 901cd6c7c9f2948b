"""The partition logs on local disk: segmented, indexed, CRC-checked, recovered at open.

Pure Python plus ``google_crc32c`` (no gRPC, no generated messages): the servicer turns
the stored payloads, which are serialised ``RecordBatch`` messages, into responses.
"""

from .epochs import EpochEntry, StaleLeaderEpoch
from .partition import DiskPartitionLog, FramesRead, ReplicaMismatch
from .policy import FsyncPolicy
from .store import DiskLogStore

__all__ = ["DiskLogStore", "DiskPartitionLog", "EpochEntry", "FramesRead", "FsyncPolicy",
           "ReplicaMismatch", "StaleLeaderEpoch"]
