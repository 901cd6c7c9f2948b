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
MAX_REPLICATION_FACTOR = 16
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
    min_insync_replicas: int = 0  # acks=ALL needs this many in sync; 0: min(2, replication)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: TopicConfig = field(default_factory=TopicConfig)
    create_time_ms: int = 0
    replication_factor: int = 1  # copies of each partition (stored: always >= 1)

    @property
    def internal(self) -> bool:
        return self.name.startswith(INTERNAL_PREFIX)

    @property
    def min_insync(self) -> int:
        """In-sync replicas acks=ALL needs (the configured number, else min(2, copies))."""
        wanted = self.config.min_insync_replicas or min(2, self.replication_factor)
        return min(wanted, self.replication_factor)


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
            "create_time_ms": spec.create_time_ms, "config": config,
            "replication_factor": spec.replication_factor}


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
                     create_time_ms=int(doc.get("create_time_ms", 0)),
                     replication_factor=max(1, int(doc.get("replication_factor", 1))))


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
    acks_all: bool = False  # every in-sync replica has it (at least min_insync_replicas)


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


@dataclass(frozen=True, slots=True)
class OffsetsView:
    """What the broker's metrics show: the end offset (high watermark) of each partition
    this broker leads, and each consumer group's position on those partitions."""

    ends: tuple[tuple[str, int, int], ...] = ()  # (topic, partition, end offset)
    groups: tuple[tuple[str, PartitionLag], ...] = ()  # (group, where it is on a partition)


# ---- the cluster (etcd keys in adapters/etcd_cluster.py) ---------------------------

NO_LEADER = -1


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """A broker alive in the cluster: registered under its own etcd lease."""

    id: int
    address: str  # host:port that clients and other brokers dial
    incarnation: str  # new for every process start: a restart is seen even within a lease
    started_ms: int = 0


@dataclass(frozen=True, slots=True)
class ControllerInfo:
    id: int
    epoch: int  # grows with every election; fences writes of a deposed controller
    incarnation: str = ""


@dataclass(frozen=True, slots=True)
class PartitionAssignment:
    """Where a partition lives and who leads it, as stored in etcd.

    ``version`` is the etcd revision of the stored value (0: not stored yet); every
    change is a compare-and-swap on it.
    """

    topic: str
    partition: int
    replicas: tuple[int, ...]
    leader: int  # NO_LEADER while no in-sync replica is alive
    leader_epoch: int
    isr: tuple[int, ...]
    controller_epoch: int = 0
    leader_incarnation: str = ""  # the leader's process when elected: a restart is no leader
    version: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (self.topic, self.partition)


def assignment_to_dict(a: PartitionAssignment) -> dict[str, Any]:
    return {"replicas": list(a.replicas), "leader": a.leader, "leader_epoch": a.leader_epoch,
            "isr": list(a.isr), "controller_epoch": a.controller_epoch,
            "leader_incarnation": a.leader_incarnation}


def assignment_from_dict(topic: str, partition: int, doc: object,
                         version: int = 0) -> PartitionAssignment:
    """ValueError when ``doc`` is not a stored assignment."""
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return PartitionAssignment(
        topic, partition, tuple(int(r) for r in doc["replicas"]), int(doc["leader"]),
        int(doc["leader_epoch"]), tuple(int(r) for r in doc["isr"]),
        int(doc.get("controller_epoch", 0)), str(doc.get("leader_incarnation", "")), version)


@dataclass(frozen=True, slots=True)
class ReplicaFetch:
    """A follower's fetch from its partition's leader."""

    replica_id: int
    topic: str
    partition: int
    fetch_offset: int  # the follower's log end: all below it is on its disk
    last_fetched_epoch: int  # the leader epoch of its last batch; -1: empty log
    leader_epoch: int  # the epoch the follower believes current
    max_bytes: int
    max_wait_ms: int
    replica_incarnation: str


@dataclass(frozen=True, slots=True)
class ReplicaChunk:
    """The leader's answer: stored frames, its bounds, or where the follower diverges."""

    frames: bytes
    high_watermark: int
    log_start_offset: int
    log_end_offset: int
    diverging_epoch: int = -1  # >= 0: truncate to min(end, own end of that epoch)
    diverging_end_offset: int = -1


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica of a partition as its leader sees it."""

    broker_id: int
    log_end_offset: int
    lag: int
    in_sync: bool
    caught_up_ms: int  # wall time it last had all the leader had; 0: never seen


@dataclass(frozen=True, slots=True)
class LedPartition:
    topic: str
    partition: int
    leader_epoch: int
    high_watermark: int
    log_end_offset: int
    replicas: list[ReplicaView]


@dataclass(frozen=True, slots=True)
class ClusterMetadata:
    brokers: list[BrokerInfo]
    controller: ControllerInfo | None
    topics: list[tuple[TopicSpec, list[PartitionAssignment]]]
    coordinator: BrokerInfo | None
    answered_by: int


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



class NotLeader(FailedPrecondition):
    """This broker does not lead the partition: the client asks the one named."""

    default_reason = "NOT_LEADER"

    def __init__(self, topic: str, partition: int, leader: int, address: str,
                 epoch: int) -> None:
        super().__init__(
            f"broker is not the leader of {topic}-{partition}; its leader is broker {leader}",
            metadata={"topic": topic, "partition": str(partition), "leader_id": str(leader),
                      "leader_address": address, "leader_epoch": str(epoch)})


class LeaderNotAvailable(Unavailable):
    default_reason = "LEADER_NOT_AVAILABLE"

    def __init__(self, topic: str, partition: int) -> None:
        super().__init__(f"{topic}-{partition} has no leader alive right now (an election "
                         "is under way, or none of its in-sync replicas is up); retry",
                         metadata={"topic": topic, "partition": str(partition)})


class Fenced(Unavailable):
    """The broker may have lost its etcd lease: another may lead now."""

    default_reason = "FENCED"

    def __init__(self, topic: str, partition: int) -> None:
        super().__init__(f"{topic}-{partition}: this broker cannot renew its lease in etcd, so "
                         "another broker may lead the partition now; nothing was acknowledged; "
                         "refresh the metadata and retry",
                         metadata={"topic": topic, "partition": str(partition)})


class NotEnoughReplicas(Unavailable):
    default_reason = "NOT_ENOUGH_REPLICAS"

    def __init__(self, topic: str, partition: int, in_sync: int, needed: int,
                 written: bool = False) -> None:
        what = ("the batch was written but is not acknowledged (a retry with the same "
                "producer sequence is written once)" if written else "nothing was written")
        super().__init__(f"{topic}-{partition}: {in_sync} replicas in sync, acks=ALL needs "
                         f"{needed} (min_insync_replicas); {what}",
                         metadata={"topic": topic, "partition": str(partition),
                                   "in_sync": str(in_sync), "needed": str(needed),
                                   "written": "true" if written else "false"})


class NotCoordinator(FailedPrecondition):
    default_reason = "NOT_COORDINATOR"

    def __init__(self, group: str, coordinator: int, address: str) -> None:
        super().__init__(f"group {group!r} is coordinated by broker {coordinator}",
                         metadata={"group": group, "coordinator_id": str(coordinator),
                                   "coordinator_address": address})


class TooFewBrokers(FailedPrecondition):
    default_reason = "INVALID_REPLICATION_FACTOR"

    def __init__(self, replication_factor: int, alive: int) -> None:
        super().__init__(f"replication_factor: {replication_factor} copies need as many "
                         f"brokers, and {alive} are alive",
                         metadata={"replication_factor": str(replication_factor),
                                   "brokers_alive": str(alive)})


class StaleAssignment(Exception):
    """A compare-and-swap on a partition's assignment lost: someone changed it first."""

    def __init__(self, current: PartitionAssignment | None) -> None:
        super().__init__("the partition assignment changed meanwhile")
        self.current = current


class FencedLeaderEpoch(FailedPrecondition):
    """A follower knows a newer leader epoch than this leader: this broker no longer leads."""

    default_reason = "FENCED_LEADER_EPOCH"

    def __init__(self, mine: int, theirs: int) -> None:
        super().__init__(f"leader_epoch: {theirs} is newer than this leader's {mine}",
                         metadata={"leader_epoch": str(mine)})


class UnknownLeaderEpoch(Unavailable):
    default_reason = "UNKNOWN_LEADER_EPOCH"

    def __init__(self, mine: int, theirs: int) -> None:
        super().__init__(f"leader_epoch: {theirs} is older than the leader's {mine}; "
                         "read the assignment again", metadata={"leader_epoch": str(mine)})
