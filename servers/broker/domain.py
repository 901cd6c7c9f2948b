"""The broker's domain: topics, batches as stored, and the errors it raises.

Pure Python (no grpc, pb2, etcd): the log, the coordinator and the app share these types.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from enum import Enum

from geoplex.servers._runtime.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
)

DAY_MS = 86_400_000
DEFAULT_RETENTION_MS = 14 * DAY_MS
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_SEGMENT_AGE_MS = DAY_MS
MAX_PARTITIONS = 1024
MAX_BATCH_RECORDS = 10_000
INTERNAL_PREFIX = "__"
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,200}")
NAME_RULE = "1..200 characters of A-Z a-z 0-9 . _ -"


class CleanupPolicy(Enum):
    DELETE = "delete"


@dataclass(frozen=True)
class TopicConfig:
    retention_ms: int = DEFAULT_RETENTION_MS
    retention_bytes: int = 0  # per partition; 0: no limit by size
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    cleanup_policy: CleanupPolicy = CleanupPolicy.DELETE
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    segment_age_ms: int = DEFAULT_SEGMENT_AGE_MS


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: TopicConfig = field(default_factory=TopicConfig)
    create_time_ms: int = 0

    @property
    def internal(self) -> bool:
        return self.name.startswith(INTERNAL_PREFIX)


@dataclass(frozen=True)
class AppendResult:
    base_offset: int
    count: int
    duplicate: bool = False


@dataclass(frozen=True)
class ReadResult:
    """Stored batches (each a serialised ``RecordBatch``) and the log's bounds."""

    batches: list[bytes]
    log_start_offset: int
    log_end_offset: int
    next_offset: int = -1  # the offset after the last batch (-1: no batches)


def check_name(field_name: str, name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidArgument(field_name, f"must be {NAME_RULE}")
    return name


# ---- a topic's stored form (etcd, and the broker's local copy) ---------------------


def spec_to_dict(spec: TopicSpec) -> dict[str, Any]:
    config = asdict(spec.config)
    config["cleanup_policy"] = spec.config.cleanup_policy.value
    return {"name": spec.name, "partitions": spec.partitions,
            "create_time_ms": spec.create_time_ms, "config": config}


def spec_from_dict(doc: object) -> TopicSpec:
    """A stored spec; fields it lacks take their defaults, fields it does not know are
    ignored (an older or newer broker wrote it). ValueError when it is not a spec."""
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    config: dict[str, Any] = dict(doc.get("config") or {})
    known = TopicConfig.__dataclass_fields__
    values: dict[str, Any] = {k: int(v) for k, v in config.items()
                              if k in known and k != "cleanup_policy"}
    if "cleanup_policy" in config:
        values["cleanup_policy"] = CleanupPolicy(config["cleanup_policy"])
    return TopicSpec(name=str(doc["name"]), partitions=int(doc["partitions"]),
                     config=TopicConfig(**values),
                     create_time_ms=int(doc.get("create_time_ms", 0)))


def encode_spec(spec: TopicSpec) -> bytes:
    return json.dumps(spec_to_dict(spec), sort_keys=True, separators=(",", ":")).encode()


def decode_spec(raw: bytes) -> TopicSpec:
    return spec_from_dict(json.loads(raw))


# ---- what the app is asked and answers (convert.py maps them to and from pb) --------


@dataclass(frozen=True, slots=True)
class PartitionState:
    partition: int
    log_start_offset: int
    log_end_offset: int
    size_bytes: int
    segments: int


@dataclass(frozen=True, slots=True)
class PartitionBatch:
    """One partition's share of a produce request, ready to append."""

    partition: int
    records_blob: bytes  # the serialised ``repeated Record records = 6``
    count: int
    max_timestamp_ms: int


@dataclass(frozen=True, slots=True)
class ProducePlan:
    topic: str
    batches: list[PartitionBatch]
    acks_none: bool
    producer_id: int = 0
    base_sequence: int = 0


@dataclass(frozen=True, slots=True)
class Appended:
    partition: int
    base_offset: int  # -1 when acks is NONE
    count: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class FetchQuery:
    topic: str
    partition: int
    offset: int
    max_bytes: int
    max_wait_s: float


@dataclass(frozen=True, slots=True)
class Reset:
    group: str
    topic: str
    partitions: list[int]
    to: str  # earliest | latest | time | offset
    time_ms: int
    offset: int


@dataclass(frozen=True, slots=True)
class Join:
    group: str
    member_id: str
    topics: list[str]
    session_timeout_s: float | None  # None: the broker's default
    assignor: str
    client_id: str


@dataclass(frozen=True, slots=True)
class NackQuery:
    group: str
    member_id: str
    generation: int
    topic: str
    partition: int
    offset: int
    delay_ms: int
    error: str
    max_deliveries: int


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int  # -1: nothing committed
    log_end: int
    lag: int
    member_id: str


# ---- errors -------------------------------------------------------------------------


class UnknownTopic(NotFound):
    default_reason = "UNKNOWN_TOPIC"

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} does not exist", metadata={"topic": topic})


class UnknownPartition(NotFound):
    default_reason = "UNKNOWN_PARTITION"

    def __init__(self, topic: str, partition: int, partitions: int) -> None:
        super().__init__(f"partition: topic {topic!r} has partitions 0..{partitions - 1}",
                         metadata={"topic": topic, "partitions": str(partitions)})


class TopicExists(AlreadyExists):
    default_reason = "TOPIC_EXISTS"

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} already exists", metadata={"topic": topic})


class OffsetOutOfRange(OutOfRange):
    default_reason = "OFFSET_OUT_OF_RANGE"

    def __init__(self, offset: int, log_start: int, log_end: int) -> None:
        super().__init__(
            f"offset: {offset} is outside the log ({log_start}..{log_end})",
            metadata={"offset": str(offset), "log_start_offset": str(log_start),
                      "log_end_offset": str(log_end)})
        self.offset = offset
        self.log_start_offset = log_start
        self.log_end_offset = log_end


class CorruptBatch(DataLoss):
    default_reason = "CORRUPT_BATCH"

    def __init__(self, where: str) -> None:
        super().__init__(f"a stored batch failed its CRC check ({where}); it is not served")


class StorageFull(ResourceExhausted):
    default_reason = "STORAGE_FULL"

    def __init__(self) -> None:
        super().__init__("the broker's disk is full; nothing from this batch was written")


class OutOfSequence(FailedPrecondition):
    default_reason = "OUT_OF_ORDER_SEQUENCE"

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"base_sequence: expected {expected}, got {got}",
                         metadata={"expected": str(expected), "got": str(got)})


class LogClosed(Unavailable):
    default_reason = "LOG_CLOSED"

    def __init__(self) -> None:
        super().__init__("the partition log is closed (deleted or shutting down)")


class MetadataUnavailable(Unavailable):
    default_reason = "METADATA_UNAVAILABLE"

    def __init__(self, what: str = "the metadata store (etcd) cannot be reached") -> None:
        super().__init__(what)


class StaleGeneration(FailedPrecondition):
    default_reason = "STALE_GENERATION"

    def __init__(self, given: int, current: int) -> None:
        super().__init__(f"generation: {given} is not the group's current generation {current}",
                         metadata={"generation": str(current)})


class UnknownMember(FailedPrecondition):
    default_reason = "UNKNOWN_MEMBER"

    def __init__(self, member: str) -> None:
        super().__init__("member_id: not a member of the group (its session ended); join again")
