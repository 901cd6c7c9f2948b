"""The only module that knows both the broker's protobuf messages and its domain types.

Requests are checked here, before anything reaches the app: a bad field is
INVALID_ARGUMENT naming it and what is allowed. The produce path builds each
partition's ``records_blob`` from the request's own bytes (:func:`record_spans`); the
fetch path assembles ``FetchResponse`` bytes from stored batches by concatenation, so
neither decodes or re-encodes a record (the produce path reads each record's timestamp,
and its key when no partition is given).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import google_crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers._runtime.paging import decode_cursor, encode_cursor, page_size
from geoplex.servers._runtime.validate import check_id
from geoplex.servers._runtime.wire import varint

from .domain import (
    BrokerInfo,
    ClusterMetadata,
    LedPartition,
    ReplicaChunk,
    ReplicaFetch,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_RETENTION_MS,
    DEFAULT_SEGMENT_AGE_MS,
    DEFAULT_SEGMENT_BYTES,
    INTERNAL_PREFIX,
    MAX_BATCH_RECORDS,
    MAX_PARTITIONS,
    MAX_REPLICATION_FACTOR,
    Appended,
    CleanupPolicy,
    FetchQuery,
    Join,
    NackQuery,
    PartitionBatch,
    PartitionLag,
    PartitionState,
    ProducePlan,
    ReadResult,
    Reset,
    TopicConfig,
    TopicSpec,
    UnknownPartition,
    check_name,
)
from .groups import GroupView

MAX_FETCH_WAIT_MS = 30_000
DEFAULT_FETCH_BYTES = 1 << 20
# the server accepts messages up to 8 MiB (the runtime's max_receive_message_length)
MAX_RECORD_BYTES = 8 << 20
MAX_SEGMENT_BYTES = 1 << 40
MAX_SESSION_TIMEOUT_MS = 300_000
DEFAULT_SESSION_TIMEOUT_MS = 10_000
MAX_NACK_DELAY_MS = 86_400_000
MAX_ERROR_CHARS = 1000
DEFAULT_MAX_DELIVERIES = 5
MAX_DELIVERIES = 1000
MAX_CLIENT_ID_CHARS = 256

ACKS: dict[int, str] = {pb.ACKS_UNSPECIFIED: "UNSPECIFIED", pb.ACKS_NONE: "NONE", pb.ACKS_LEADER: "LEADER",
        pb.ACKS_ALL: "ALL"}
ASSIGNORS: dict[int, str] = {pb.ASSIGNOR_UNSPECIFIED: "sticky", pb.ASSIGNOR_STICKY: "sticky",
             pb.ASSIGNOR_RANGE: "range", pb.ASSIGNOR_ROUND_ROBIN: "round_robin"}
CLEANUP: dict[int, str] = {pb.CLEANUP_POLICY_UNSPECIFIED: "DELETE",
                           pb.CLEANUP_POLICY_DELETE: "DELETE"}
RESET_TO: dict[int, str] = {pb.RESET_TO_EARLIEST: "earliest", pb.RESET_TO_LATEST: "latest",
            pb.RESET_TO_TIME: "time", pb.RESET_TO_OFFSET: "offset"}


# ---- wire helpers ----------------------------------------------------------------------






def _ms(duration: Duration) -> int:
    return duration.seconds * 1000 + duration.nanos // 1_000_000


def _duration_ms(request: Message, field: str, low_ms: int, high_ms: int, rule: str
                 ) -> int | None:
    """An optional Duration field in milliseconds (None when unset), within
    ``low_ms..high_ms``; INVALID_ARGUMENT naming the field and ``rule`` otherwise."""
    if not request.HasField(field):
        return None
    ms = _ms(getattr(request, field))
    if not low_ms <= ms <= high_ms:
        raise InvalidArgument(field, f"must be in {rule}")
    return ms


def _duration(ms: int) -> Duration:
    out = Duration()
    out.FromMilliseconds(ms)
    return out


def _timestamp(ms: int) -> Timestamp:
    out = Timestamp()
    out.FromMilliseconds(ms)
    return out


def _enum_value(field: str, value: int, allowed: dict[int, str]) -> str:
    name = allowed.get(value)
    if name is None:
        raise InvalidArgument(field, f"unknown value {value}",
                              allowed=sorted(set(allowed.values())))
    return name


def _non_negative(field: str, value: int) -> int:
    if value < 0:
        raise InvalidArgument(field, f"must be >= 0 (got {value})")
    return value


def topic_name(field: str, name: str) -> str:
    """A topic name as requests give it (internal ``__`` names included)."""
    if not name:
        raise InvalidArgument(field, "is required", reason="REQUIRED_FIELD")
    return check_name(field, name)


MAX_GROUP_CHARS = 191  # so that its internal topics (__replay.<group>, the longest) are names


def group_name(field: str, name: str) -> str:
    if not name:
        raise InvalidArgument(field, "is required", reason="REQUIRED_FIELD")
    if len(name) > MAX_GROUP_CHARS:
        raise InvalidArgument(field, f"must be at most {MAX_GROUP_CHARS} characters (its retry "
                              "and dead-letter topics are named after it)")
    return check_name(field, name)


def _partition(field: str, value: int) -> int:
    if not 0 <= value < MAX_PARTITIONS:
        raise InvalidArgument(field, f"must be in 0..{MAX_PARTITIONS - 1} (got {value})")
    return value


# ---- topics ----------------------------------------------------------------------------


def topic_from_pb(message: pb.Topic, now_ms: int) -> TopicSpec:
    """A CreateTopic request's topic, checked, with the defaults filled in."""
    name = topic_name("topic.name", message.name)
    if name.startswith(INTERNAL_PREFIX):
        raise InvalidArgument("topic.name", f"names starting {INTERNAL_PREFIX!r} are the "
                              "broker's internal topics (retries, delays, dead letters)",
                              reason="INTERNAL_TOPIC_NAME")
    if not 1 <= message.partitions <= MAX_PARTITIONS:
        raise InvalidArgument("topic.partitions",
                              f"must be in 1..{MAX_PARTITIONS} (got {message.partitions})")
    config = message.config
    retention_ms = DEFAULT_RETENTION_MS
    if config.HasField("retention"):
        retention_ms = _ms(config.retention)
        if retention_ms <= 0:
            raise InvalidArgument("topic.config.retention",
                                  "must be positive (unset: 14 days)")
    max_message = config.max_message_bytes or DEFAULT_MAX_MESSAGE_BYTES
    if not 0 < max_message <= MAX_RECORD_BYTES:
        raise InvalidArgument("topic.config.max_message_bytes",
                              f"must be in 1..{MAX_RECORD_BYTES} (0: 1 MiB)")
    policy = _enum_value("topic.config.cleanup_policy", config.cleanup_policy, CLEANUP)
    segment_bytes = config.segment_bytes or DEFAULT_SEGMENT_BYTES
    if not 0 < segment_bytes <= MAX_SEGMENT_BYTES:
        raise InvalidArgument("topic.config.segment_bytes",
                              f"must be in 1..{MAX_SEGMENT_BYTES} (0: 64 MiB)")
    segment_age_ms = DEFAULT_SEGMENT_AGE_MS
    if config.HasField("segment_age"):
        segment_age_ms = _ms(config.segment_age)
        if segment_age_ms <= 0:
            raise InvalidArgument("topic.config.segment_age", "must be positive (unset: 1 day)")
    return TopicSpec(
        name=name, partitions=message.partitions,
        config=TopicConfig(
            retention_ms=retention_ms,
            retention_bytes=_non_negative("topic.config.retention_bytes",
                                          config.retention_bytes),
            max_message_bytes=max_message, cleanup_policy=CleanupPolicy[policy],
            segment_bytes=segment_bytes, segment_age_ms=segment_age_ms,
            min_insync_replicas=_non_negative("topic.config.min_insync_replicas",
                                              config.min_insync_replicas)),
        create_time_ms=now_ms,
        replication_factor=_replication_factor(message.replication_factor,
                                               config.min_insync_replicas))


def _replication_factor(factor: int, min_insync: int) -> int:
    """0 stays 0 (the app fills in the cluster's default)."""
    if not 0 <= factor <= MAX_REPLICATION_FACTOR:
        raise InvalidArgument("topic.replication_factor",
                              f"must be in 0..{MAX_REPLICATION_FACTOR} (0: min(3, brokers alive))")
    if factor and min_insync > factor:
        raise InvalidArgument("topic.config.min_insync_replicas",
                              f"must be at most the replication factor {factor} (0: min(2, it))")
    return factor


def topic_to_pb(spec: TopicSpec) -> pb.Topic:
    config = spec.config
    return pb.Topic(
        name=spec.name, partitions=spec.partitions,
        config=pb.TopicConfig(
            retention=_duration(config.retention_ms), retention_bytes=config.retention_bytes,
            max_message_bytes=config.max_message_bytes,
            cleanup_policy=pb.CLEANUP_POLICY_DELETE, segment_bytes=config.segment_bytes,
            segment_age=_duration(config.segment_age_ms),
            min_insync_replicas=spec.min_insync),
        create_time=_timestamp(spec.create_time_ms),
        replication_factor=spec.replication_factor)


def partition_to_pb(state: PartitionState) -> pb.PartitionInfo:
    return pb.PartitionInfo(partition=state.partition, log_start_offset=state.log_start_offset,
                            log_end_offset=state.log_end_offset, size_bytes=state.size_bytes,
                            segments=state.segments)


@dataclass(frozen=True, slots=True)
class Page:
    """Where a name-ordered list resumes and how many items it returns."""

    size: int
    after: str  # the last name of the previous page; "" for the first


def page_from_pb(size: int, token: str, scope: str) -> Page:
    after = decode_cursor(token, scope)[1] if token else ""
    return Page(page_size(size, 100, 1000), after)


def paged(names: Sequence[str], page: Page, scope: str) -> tuple[list[str], str]:
    """One page of sorted ``names`` and the token of the next ("" at the end)."""
    rest = [n for n in names if n > page.after]
    items = rest[:page.size]
    token = encode_cursor(0.0, items[-1], scope) if len(rest) > page.size else ""
    return items, token


# ---- produce ---------------------------------------------------------------------------


def key_partition(key: bytes, partitions: int) -> int:
    """Where a keyed record goes: crc32c(key) mod partitions (documented in the proto)."""
    return int(google_crc32c.value(key)) % partitions


# The records of a produce request, as the client's bytes: the request parsed as a message
# whose field 3 is ``repeated bytes`` (a type made here, in a private pool), so each record
# is a slice of the request, never a message object. A record is field 3 of a
# ProduceRequest and field 6 of a RecordBatch: the blob is each record's bytes behind the
# field-6 tag and its length. Byte for byte what
# ``RecordBatch(records=request.records).SerializeToString()`` gives, at a fraction of the
# cost (that copies every record into a new message first; a test checks they agree).
def _bytes_message(name: str, field: str, number: int, repeated: bool) -> type[Message]:
    """A message type, built at run time, whose one field ``number`` is read as bytes:
    parsing a request with it yields a sub-message's serialised form without decoding it."""
    kind = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name=f"geoplex/broker/internal/{name}.proto", package="geoplex.broker.internal",
        syntax="proto3")
    file.message_type.add(name=name).field.add(
        name=field, number=number, type=kind.TYPE_BYTES,
        label=kind.LABEL_REPEATED if repeated else kind.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"geoplex.broker.internal.{name}"))


_RECORD_SPANS = _bytes_message("RecordSpans", "records",
                               pb.ProduceRequest.RECORDS_FIELD_NUMBER, repeated=True)
_RECORD_TAG = bytes(((pb.RecordBatch.RECORDS_FIELD_NUMBER << 3) | 2,))
_TAGGED: dict[int, bytes] = {}  # record length -> the tag and length before it (< 16 KiB)


def record_spans(raw_request: bytes) -> Sequence[bytes]:
    """The serialised records of a serialised ProduceRequest, in order."""
    records: Sequence[bytes] = getattr(_RECORD_SPANS.FromString(raw_request), "records")
    return records


def _tagged(length: int) -> bytes:
    head = _TAGGED.get(length)
    if head is None:
        head = _RECORD_TAG + varint(length)
        if length < 16384:
            _TAGGED[length] = head
    return head


def records_blob(spans: Iterable[bytes]) -> bytes:
    """``repeated Record records = 6`` of a RecordBatch, from serialised records."""
    parts: list[bytes] = []
    add, known = parts.append, _TAGGED.get
    for span in spans:
        add(known(len(span)) or _tagged(len(span)))
        add(span)
    return b"".join(parts)


class RawProduce:
    """A ProduceRequest as the servicer receives it: parsed, and its records' bytes."""

    __slots__ = ("request", "spans")

    def __init__(self, raw: bytes) -> None:
        self.request = pb.ProduceRequest.FromString(raw)
        self.spans = record_spans(raw)

    @classmethod
    def of(cls, request: pb.ProduceRequest) -> RawProduce:
        return cls(request.SerializeToString())


_RAW_STREAM_REQUEST = _bytes_message("RawProduceStreamRequest", "produce",
                                     pb.ProduceStreamRequest.PRODUCE_FIELD_NUMBER,
                                     repeated=False)


def raw_stream_produce(raw: bytes) -> RawProduce:
    """A ProduceStreamRequest's ``produce``, as :class:`RawProduce`."""
    inner: bytes = getattr(_RAW_STREAM_REQUEST.FromString(raw), "produce")
    return RawProduce(inner)


def produce_plan(incoming: RawProduce, spec: TopicSpec, sticky: Callable[[], int],
                 now_ms: int) -> ProducePlan:
    """A checked produce request, split per partition. ``sticky()`` gives the partition of
    this request's keyless records (called at most once)."""
    request, spans = incoming.request, incoming.spans
    records = request.records
    count = len(spans)
    if not 1 <= count <= MAX_BATCH_RECORDS:
        raise InvalidArgument("records", f"must hold 1..{MAX_BATCH_RECORDS} records "
                              f"(got {count})")
    acks = _enum_value("acks", request.acks, ACKS)
    explicit = request.HasField("partition")
    if explicit and not 0 <= request.partition < spec.partitions:
        raise UnknownPartition(spec.name, request.partition, spec.partitions)
    if request.producer_id:
        if not explicit:
            raise InvalidArgument("partition", "is required with producer_id (an "
                                  "idempotent producer's sequence is per partition)",
                                  reason="REQUIRED_FIELD")
        _non_negative("base_sequence", request.base_sequence)
    elif request.base_sequence:
        raise InvalidArgument("base_sequence", "needs producer_id (0: not idempotent)")
    stamps = [r.timestamp_ms for r in records]
    lowest = min(stamps)
    if lowest < 0:
        index = stamps.index(lowest)
        raise InvalidArgument(f"records[{index}].timestamp_ms",
                              "must be >= 0 milliseconds since the epoch (0: the append time)")
    blob = records_blob(spans)
    if len(blob) > spec.config.max_message_bytes:
        _check_record_sizes(spans, spec.config.max_message_bytes)
    if explicit:
        partition = request.partition
    elif spec.partitions == 1:
        partition = 0
    else:
        keys = [r.key for r in records]
        if any(keys):
            batches = _split_by_key(spans, keys, stamps, spec.partitions, sticky, now_ms)
            if len(batches) > 1:
                return ProducePlan(spec.name, batches, acks == "NONE", acks_all=acks == "ALL")
            partition = batches[0].partition
        else:
            partition = sticky()
    return ProducePlan(spec.name,
                       [PartitionBatch(partition, blob, count,
                                       _max_timestamp(stamps, lowest, now_ms))],
                       acks == "NONE", request.producer_id, request.base_sequence,
                       acks_all=acks == "ALL")


def _max_timestamp(stamps: Sequence[int], lowest: int, now_ms: int) -> int:
    highest = max(stamps)
    return max(highest, now_ms) if lowest == 0 else highest


def _check_record_sizes(spans: Sequence[bytes], limit: int) -> None:
    for index, span in enumerate(spans):
        if len(span) > limit:
            raise InvalidArgument(
                f"records[{index}]", f"is {len(span)} bytes; the topic's max_message_bytes is "
                f"{limit} (key + value + headers); nothing from this batch was written",
                reason="RECORD_TOO_LARGE")


def _split_by_key(spans: Sequence[bytes], keys: Sequence[bytes], stamps: Sequence[int],
                  partitions: int, sticky: Callable[[], int], now_ms: int
                  ) -> list[PartitionBatch]:
    keyless = -1
    groups: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        if key:
            part = int(google_crc32c.value(key)) % partitions
        else:
            if keyless < 0:
                keyless = sticky()
            part = keyless
        groups.setdefault(part, []).append(index)
    if len(groups) == 1:
        (part,) = groups
        return [PartitionBatch(part, b"", len(spans), 0)]  # the caller uses the whole blob
    out = []
    for part in sorted(groups):
        indexes = groups[part]
        chosen = [stamps[i] for i in indexes]
        out.append(PartitionBatch(part, records_blob(spans[i] for i in indexes), len(indexes),
                                  _max_timestamp(chosen, min(chosen), now_ms)))
    return out


def produce_response(results: Sequence[Appended]) -> pb.ProduceResponse:
    return pb.ProduceResponse(results=[
        pb.PartitionResult(partition=r.partition, base_offset=r.base_offset,
                           record_count=r.count, duplicate=r.duplicate) for r in results])


# ---- fetch -----------------------------------------------------------------------------


def fetch_from_pb(request: pb.FetchRequest) -> FetchQuery:
    max_wait_ms = _duration_ms(request, "max_wait", 0, MAX_FETCH_WAIT_MS,
                               "0..30 s (0: answer at once)") or 0
    return FetchQuery(topic_name("topic", request.topic),
                      _partition("partition", request.partition),
                      _non_negative("offset", request.offset),
                      _fetch_bytes(request.max_bytes), max_wait_ms / 1000)


def subscribe_from_pb(request: pb.SubscribeRequest) -> FetchQuery:
    return FetchQuery(topic_name("topic", request.topic),
                      _partition("partition", request.partition),
                      _non_negative("offset", request.offset),
                      _fetch_bytes(request.max_bytes), 0.0)


def _fetch_bytes(value: int) -> int:
    if value < 0:
        raise InvalidArgument("max_bytes", f"must be >= 0 (0: {DEFAULT_FETCH_BYTES} bytes)")
    return value or DEFAULT_FETCH_BYTES


def fetch_bytes(partition: int, result: ReadResult) -> bytes:
    """The wire form of a FetchResponse: each stored batch as field 1 (length-delimited,
    the stored bytes untouched), then partition (2), log_end_offset (3) and
    log_start_offset (4)."""
    parts = []
    for batch in result.batches:
        parts.append(b"\x0a")
        parts.append(varint(len(batch)))
        parts.append(batch)
    parts.append(b"\x10" + varint(partition) + b"\x18" + varint(result.log_end_offset)
                 + b"\x20" + varint(result.log_start_offset))
    return b"".join(parts)


def subscribe_bytes(partition: int, result: ReadResult) -> bytes:
    """The wire form of a SubscribeResponse: the FetchResponse as its field 1."""
    inner = fetch_bytes(partition, result)
    return b"\x0a" + varint(len(inner)) + inner


# ---- offsets ---------------------------------------------------------------------------


def offsets_from_pb(offsets: Sequence[pb.PartitionOffset], field: str = "offsets"
                    ) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for index, item in enumerate(offsets):
        key = (topic_name(f"{field}[{index}].topic", item.topic),
               _partition(f"{field}[{index}].partition", item.partition))
        out[key] = _non_negative(f"{field}[{index}].offset", item.offset)
    if not out:
        raise InvalidArgument(field, "must hold at least one offset", reason="REQUIRED_FIELD")
    return out


def offsets_to_pb(offsets: dict[tuple[str, int], int]) -> list[pb.PartitionOffset]:
    return [pb.PartitionOffset(topic=t, partition=p, offset=o)
            for (t, p), o in sorted(offsets.items())]


def partitions_from_pb(values: Sequence[int], field: str = "partitions") -> list[int]:
    return sorted({_partition(f"{field}[{i}]", v) for i, v in enumerate(values)})


def time_ms(value: Timestamp) -> int:
    return value.seconds * 1000 + value.nanos // 1_000_000


def reset_from_pb(request: pb.ResetOffsetsRequest) -> Reset:
    to = _enum_value("to", request.to, RESET_TO)
    if to == "time" and not request.HasField("time"):
        raise InvalidArgument("time", "is required with to=RESET_TO_TIME",
                              reason="REQUIRED_FIELD")
    return Reset(group_name("group", request.group), topic_name("topic", request.topic),
                 partitions_from_pb(request.partitions), to,
                 time_ms(request.time) if to == "time" else 0,
                 _non_negative("offset", request.offset))


# ---- groups ----------------------------------------------------------------------------


def join_from_pb(request: pb.JoinGroupRequest) -> Join:
    group = group_name("group", request.group)
    member = check_id("member_id", request.member_id) if request.member_id else ""
    if not request.topics:
        raise InvalidArgument("topics", "must name at least one topic", reason="REQUIRED_FIELD")
    topics = sorted({topic_name(f"topics[{i}]", t) for i, t in enumerate(request.topics)})
    ms = _duration_ms(request, "session_timeout", 1000, MAX_SESSION_TIMEOUT_MS,
                      "1..300 s (unset: 10 s)")
    timeout = None if ms is None else ms / 1000
    client_id = request.client_id
    if len(client_id) > MAX_CLIENT_ID_CHARS or not client_id.isprintable():
        raise InvalidArgument("client_id", f"must be at most {MAX_CLIENT_ID_CHARS} printable "
                              "characters")
    return Join(group, member, topics, timeout,
                _enum_value("assignor", request.assignor, ASSIGNORS), client_id)


def member_id(value: str) -> str:
    return check_id("member_id", value)


def duration(seconds: float) -> Duration:
    return _duration(round(seconds * 1000))


def assignment_to_pb(assignment: dict[str, list[int]]) -> list[pb.TopicPartitions]:
    return [pb.TopicPartitions(topic=t, partitions=sorted(ps))
            for t, ps in sorted(assignment.items())]


def timestamp(ms: int) -> Timestamp:
    return _timestamp(ms)


def nack_from_pb(request: pb.NackRequest) -> NackQuery:
    delay_ms = _duration_ms(request, "delay", 0, MAX_NACK_DELAY_MS,
                            "0..1 day (unset: at once)") or 0
    if len(request.error) > MAX_ERROR_CHARS:
        raise InvalidArgument("error", f"must be at most {MAX_ERROR_CHARS} characters "
                              f"(got {len(request.error)})")
    if not 0 <= request.max_deliveries <= MAX_DELIVERIES:
        raise InvalidArgument("max_deliveries",
                              f"must be in 1..{MAX_DELIVERIES} (0: {DEFAULT_MAX_DELIVERIES})")
    return NackQuery(group_name("group", request.group), member_id(request.member_id),
                     request.generation, topic_name("topic", request.topic),
                     _partition("partition", request.partition),
                     _non_negative("offset", request.offset), delay_ms, request.error,
                     request.max_deliveries or DEFAULT_MAX_DELIVERIES)


def group_to_pb(view: GroupView) -> pb.DescribeGroupResponse:
    info = view.info
    return pb.DescribeGroupResponse(
        group=info.group, generation=info.generation, state=info.state.value,
        members=[pb.GroupMember(member_id=m.member_id, client_id=m.client_id,
                                assignment=assignment_to_pb(m.assignment),
                                last_heartbeat_time=_timestamp(view.heartbeat_ms[m.member_id]))
                 for m in info.members],
        lag=[pb.PartitionLag(topic=x.topic, partition=x.partition,
                             committed_offset=x.committed, log_end_offset=x.log_end,
                             lag=x.lag, member_id=x.member_id) for x in view.lag],
        dead_letter_topic=view.dead_letter_topic)


# ---- the cluster ----------------------------------------------------------------------


def _node(broker: BrokerInfo) -> pb.BrokerNode:
    return pb.BrokerNode(id=broker.id, address=broker.address)


def metadata_to_pb(meta: ClusterMetadata) -> pb.GetMetadataResponse:
    out = pb.GetMetadataResponse(brokers=[_node(b) for b in meta.brokers],
                                 answered_by=meta.answered_by)
    if meta.controller is not None:
        out.controller_id = meta.controller.id
        out.controller_epoch = meta.controller.epoch
    for spec, assignments in meta.topics:
        topic = out.topics.add(name=spec.name, replication_factor=spec.replication_factor,
                               min_insync_replicas=spec.min_insync)
        for a in assignments:
            topic.partitions.add(partition=a.partition, leader_id=a.leader,
                                 leader_epoch=a.leader_epoch, replicas=a.replicas, isr=a.isr)
    if meta.coordinator is not None:
        out.coordinator.CopyFrom(_node(meta.coordinator))
    return out


def replicas_to_pb(broker: int, led: Sequence[LedPartition]) -> pb.DescribeReplicasResponse:
    out = pb.DescribeReplicasResponse(broker_id=broker)
    for part in led:
        entry = out.partitions.add(topic=part.topic, partition=part.partition,
                                   leader_epoch=part.leader_epoch,
                                   high_watermark=part.high_watermark,
                                   log_end_offset=part.log_end_offset)
        for r in part.replicas:
            view = entry.replicas.add(broker_id=r.broker_id, log_end_offset=r.log_end_offset,
                                      lag=r.lag, in_sync=r.in_sync)
            if r.caught_up_ms:
                view.caught_up_time.CopyFrom(_timestamp(r.caught_up_ms))
    return out


def replica_fetch_from_pb(request: pb.ReplicaFetchRequest) -> ReplicaFetch:
    if request.fetch_offset < 0:
        raise InvalidArgument("fetch_offset", "must be >= 0")
    return ReplicaFetch(request.replica_id, topic_name("topic", request.topic),
                        request.partition, request.fetch_offset, request.last_fetched_epoch,
                        request.leader_epoch, max(0, request.max_bytes),
                        min(max(0, request.max_wait_ms), MAX_FETCH_WAIT_MS),
                        request.replica_incarnation)


def chunk_to_pb(chunk: ReplicaChunk) -> pb.ReplicaFetchResponse:
    out = pb.ReplicaFetchResponse(frames=chunk.frames, high_watermark=chunk.high_watermark,
                                  log_start_offset=chunk.log_start_offset,
                                  log_end_offset=chunk.log_end_offset)
    if chunk.diverging_epoch >= 0:
        out.diverging_epoch = chunk.diverging_epoch
        out.diverging_end_offset = chunk.diverging_end_offset
    return out
