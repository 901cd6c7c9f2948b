"""The broker's request checks and its hand-assembled wire forms, without a network."""

from __future__ import annotations

from collections.abc import Callable

import google_crc32c
import pytest
from google.protobuf.duration_pb2 import Duration
from hypothesis import given
from hypothesis import strategies as st

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers._runtime.wire import varint
from geoplex.servers.broker import convert
from geoplex.servers.broker.domain import (
    ProducePlan,
    DEFAULT_RETENTION_MS,
    ReadResult,
    TopicConfig,
    TopicSpec,
    UnknownPartition,
)

NOW = 1_700_000_000_000


def spec(partitions: int = 4, max_message_bytes: int = 1 << 20) -> TopicSpec:
    return TopicSpec("orders", partitions, TopicConfig(max_message_bytes=max_message_bytes))


def counter() -> Callable[[], int]:
    turns = iter(range(1000))
    return lambda: next(turns)


def plan(request: pb.ProduceRequest, topic: TopicSpec | None = None) -> ProducePlan:
    return convert.produce_plan(convert.RawProduce.of(request), topic or spec(), counter(), NOW)


def field_of(excinfo: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return excinfo.value.field


# ---- wire forms ------------------------------------------------------------------------

@given(st.integers(min_value=1, max_value=(1 << 63) - 1))
def test_varint_is_protobufs(n: int) -> None:
    assert varint(n) == pb.PartitionOffset(offset=n).SerializeToString()[1:]


records_strategy = st.lists(
    st.builds(pb.Record, key=st.binary(max_size=20), value=st.binary(max_size=300),
              timestamp_ms=st.integers(min_value=0, max_value=1 << 42)),
    min_size=1, max_size=20)


@given(st.lists(records_strategy, max_size=5), st.integers(min_value=0, max_value=1023),
       st.integers(min_value=0, max_value=1 << 40), st.integers(min_value=0, max_value=1 << 40))
def test_fetch_bytes_parse_as_the_fetch_response_of_the_stored_batches(
        batches: list[list[pb.Record]], partition: int, start: int, extra: int) -> None:
    stored = [pb.RecordBatch(base_offset=start + 100 * i, append_time_ms=NOW,
                             records=records).SerializeToString()
              for i, records in enumerate(batches)]
    result = ReadResult(stored, start, start + extra)

    parsed = pb.FetchResponse.FromString(convert.fetch_bytes(partition, result))

    assert parsed == pb.FetchResponse(
        batches=[pb.RecordBatch.FromString(b) for b in stored], partition=partition,
        log_start_offset=start, log_end_offset=start + extra)
    wrapped = pb.SubscribeResponse.FromString(convert.subscribe_bytes(partition, result))
    assert wrapped.fetch == parsed


def test_a_stored_payload_made_of_hand_encoded_fields_and_the_records_blob_parses() -> None:
    records = [pb.Record(key=b"k", value=b"v" * 10), pb.Record(value=b"w")]
    blob = plan(pb.ProduceRequest(topic="orders", partition=1,
                                  records=records)).batches[0].records_blob
    prefix = b"\x08" + varint(42) + b"\x10" + varint(NOW)

    batch = pb.RecordBatch.FromString(prefix + blob)

    assert batch.base_offset == 42 and batch.append_time_ms == NOW
    assert list(batch.records) == records


# ---- produce ---------------------------------------------------------------------------

full_records = st.lists(
    st.builds(pb.Record, key=st.binary(max_size=20), value=st.binary(max_size=20_000),
              headers=st.lists(st.builds(pb.Header, key=st.text(max_size=10),
                                         value=st.binary(max_size=30)), max_size=3),
              timestamp_ms=st.integers(min_value=0, max_value=1 << 60)),
    min_size=1, max_size=30)


@given(full_records, st.text(max_size=30), st.integers(min_value=0, max_value=3),
       st.integers(min_value=0, max_value=1 << 63))
def test_the_records_blob_is_what_protobuf_writes_for_the_records(
        records: list[pb.Record], topic: str, partition: int, producer: int) -> None:
    request = pb.ProduceRequest(topic=topic, partition=partition, records=records,
                                acks=pb.ACKS_ALL, producer_id=producer, base_sequence=7)
    raw = request.SerializeToString()

    assert convert.records_blob(convert.record_spans(raw)) == \
        pb.RecordBatch(records=records).SerializeToString()
    stream = pb.ProduceStreamRequest(produce=request).SerializeToString()
    assert convert.raw_stream_produce(stream).request == request



def test_an_explicit_partition_takes_the_whole_request_as_one_blob() -> None:
    records = [pb.Record(key=b"a", value=b"1"), pb.Record(key=b"b", value=b"2")]

    result = plan(pb.ProduceRequest(topic="orders", partition=2, records=records))

    assert [(b.partition, b.count) for b in result.batches] == [(2, 2)]
    assert result.batches[0].records_blob == pb.RecordBatch(records=records).SerializeToString()


def test_keyed_records_go_to_crc32c_of_the_key_mod_partitions_in_order() -> None:
    records = [pb.Record(key=f"user-{i % 7}".encode(), value=str(i).encode())
               for i in range(50)]

    result = plan(pb.ProduceRequest(topic="orders", records=records))

    seen: dict[int, list[bytes]] = {}
    for batch in result.batches:
        parsed = pb.RecordBatch.FromString(batch.records_blob).records
        assert len(parsed) == batch.count
        for record in parsed:
            assert google_crc32c.value(record.key) % 4 == batch.partition
        seen[batch.partition] = [r.value for r in parsed]
    for partition, values in seen.items():
        expected = [r.value for r in records
                    if google_crc32c.value(r.key) % 4 == partition]
        assert values == expected  # the request's order within each partition
    assert sum(b.count for b in result.batches) == 50


def test_keyless_records_stick_to_one_partition_per_request_round_robin() -> None:
    turns = counter()
    sticky = lambda: turns() % 4  # noqa: E731 - as the app's sticky() turns
    records = [pb.Record(value=b"x")] * 5
    request = convert.RawProduce.of(pb.ProduceRequest(topic="orders", records=records))
    chosen = [convert.produce_plan(request, spec(), sticky, NOW).batches for _ in range(5)]

    assert [[(b.partition, b.count) for b in batches] for batches in chosen] == [
        [(0, 5)], [(1, 5)], [(2, 5)], [(3, 5)], [(0, 5)]]


def test_the_max_timestamp_counts_unset_ones_as_the_append_time() -> None:
    given_times = [pb.Record(value=b"a", timestamp_ms=NOW - 10), pb.Record(value=b"b",
                                                                         timestamp_ms=NOW - 5)]
    assert plan(pb.ProduceRequest(topic="orders", partition=0, records=given_times)
                ).batches[0].max_timestamp_ms == NOW - 5
    with_unset = [*given_times, pb.Record(value=b"c")]
    assert plan(pb.ProduceRequest(topic="orders", partition=0, records=with_unset)
                ).batches[0].max_timestamp_ms == NOW


@pytest.mark.parametrize("count", [0, 10_001])
def test_a_request_needs_1_to_10000_records(count: int) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        plan(pb.ProduceRequest(topic="orders", records=[pb.Record()] * count))
    assert field_of(excinfo) == "records" and "1..10000" in excinfo.value.message


def test_an_oversize_record_is_refused_by_its_index() -> None:
    records = [pb.Record(value=b"x" * 100), pb.Record(value=b"y" * 2000)]
    with pytest.raises(InvalidArgument) as excinfo:
        plan(pb.ProduceRequest(topic="orders", records=records), spec(max_message_bytes=1000))
    assert field_of(excinfo) == "records[1]" and excinfo.value.reason == "RECORD_TOO_LARGE"


def test_a_batch_larger_than_the_limit_of_small_records_is_accepted() -> None:
    records = [pb.Record(value=b"x" * 600)] * 3
    result = plan(pb.ProduceRequest(topic="orders", partition=0, records=records),
                  spec(max_message_bytes=1000))
    assert result.batches[0].count == 3


def test_a_partition_outside_the_topic_is_not_found() -> None:
    with pytest.raises(UnknownPartition):
        plan(pb.ProduceRequest(topic="orders", partition=4, records=[pb.Record()]))


def test_an_idempotent_producer_needs_a_partition() -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        plan(pb.ProduceRequest(topic="orders", producer_id=7, records=[pb.Record()]))
    assert field_of(excinfo) == "partition"
    with pytest.raises(InvalidArgument) as excinfo:
        plan(pb.ProduceRequest(topic="orders", partition=0, producer_id=7, base_sequence=-1,
                               records=[pb.Record()]))
    assert field_of(excinfo) == "base_sequence"


def test_a_negative_timestamp_names_its_record() -> None:
    records = [pb.Record(), pb.Record(timestamp_ms=-5)]
    with pytest.raises(InvalidArgument) as excinfo:
        plan(pb.ProduceRequest(topic="orders", records=records))
    assert field_of(excinfo) == "records[1].timestamp_ms"


def test_an_unknown_acks_value_lists_the_allowed_ones() -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        plan(pb.ProduceRequest(topic="orders", acks=pb.Acks.ValueType(9),
                                records=[pb.Record()]))
    assert field_of(excinfo) == "acks"
    assert "NONE" in excinfo.value.message and "LEADER" in excinfo.value.message


def test_acks_all_is_carried_in_the_plan() -> None:
    made = plan(pb.ProduceRequest(topic="orders", acks=pb.ACKS_ALL, records=[pb.Record()]))
    assert made.acks_all and not made.acks_none


def test_a_replication_factor_out_of_range_names_the_field() -> None:
    with pytest.raises(InvalidArgument, match="topic.replication_factor"):
        convert.topic_from_pb(pb.Topic(name="orders", partitions=1, replication_factor=17), NOW)
    with pytest.raises(InvalidArgument, match="topic.config.min_insync_replicas"):
        convert.topic_from_pb(pb.Topic(name="orders", partitions=1, replication_factor=2,
                                       config=pb.TopicConfig(min_insync_replicas=3)), NOW)


def test_acks_none_is_carried_in_the_plan() -> None:
    assert plan(pb.ProduceRequest(topic="orders", acks=pb.ACKS_NONE,
                                  records=[pb.Record()])).acks_none


# ---- topics ----------------------------------------------------------------------------

def test_a_topic_gets_the_documented_defaults() -> None:
    made = convert.topic_from_pb(pb.Topic(name="orders", partitions=3), NOW)
    # replication 0: the cluster's default, min(3, brokers alive), filled in by the app
    assert made == TopicSpec("orders", 3, TopicConfig(), NOW, replication_factor=0)
    assert made.config.retention_ms == DEFAULT_RETENTION_MS
    assert convert.topic_to_pb(made).config.retention.ToMilliseconds() == DEFAULT_RETENTION_MS


@pytest.mark.parametrize(("topic", "field"), [
    (pb.Topic(name="orders", partitions=0), "topic.partitions"),
    (pb.Topic(name="orders", partitions=-1), "topic.partitions"),
    (pb.Topic(name="orders", partitions=1025), "topic.partitions"),
    (pb.Topic(name="", partitions=1), "topic.name"),
    (pb.Topic(name="a b", partitions=1), "topic.name"),
    (pb.Topic(name="x" * 201, partitions=1), "topic.name"),
    (pb.Topic(name="__retry.g", partitions=1), "topic.name"),
    (pb.Topic(name="o", partitions=1, config=pb.TopicConfig(retention=Duration(seconds=0))),
     "topic.config.retention"),
    (pb.Topic(name="o", partitions=1, config=pb.TopicConfig(retention_bytes=-1)),
     "topic.config.retention_bytes"),
    (pb.Topic(name="o", partitions=1, config=pb.TopicConfig(max_message_bytes=-1)),
     "topic.config.max_message_bytes"),
    (pb.Topic(name="o", partitions=1, config=pb.TopicConfig(segment_bytes=-1)),
     "topic.config.segment_bytes"),
    (pb.Topic(name="o", partitions=1, config=pb.TopicConfig(segment_age=Duration(seconds=-1))),
     "topic.config.segment_age"),
    (pb.Topic(name="o", partitions=1, config=pb.TopicConfig(
        cleanup_policy=pb.CleanupPolicy.ValueType(7))),
     "topic.config.cleanup_policy"),
])
def test_bad_topics_name_the_field(topic: pb.Topic, field: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        convert.topic_from_pb(topic, NOW)
    assert field_of(excinfo) == field


def test_a_zero_partition_count_says_the_allowed_range() -> None:
    with pytest.raises(InvalidArgument, match=r"topic.partitions: must be in 1..1024"):
        convert.topic_from_pb(pb.Topic(name="orders", partitions=0), NOW)


# ---- fetch and offsets -----------------------------------------------------------------

@pytest.mark.parametrize(("request_", "field"), [
    (pb.FetchRequest(topic="orders", offset=-1), "offset"),
    (pb.FetchRequest(topic="orders", partition=-1), "partition"),
    (pb.FetchRequest(topic="orders", max_bytes=-1), "max_bytes"),
    (pb.FetchRequest(topic="orders", max_wait=Duration(seconds=31)), "max_wait"),
    (pb.FetchRequest(topic="orders", max_wait=Duration(seconds=-1)), "max_wait"),
    (pb.FetchRequest(topic=""), "topic"),
])
def test_bad_fetches_name_the_field(request_: pb.FetchRequest, field: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        convert.fetch_from_pb(request_)
    assert field_of(excinfo) == field


def test_a_fetch_defaults_to_a_mebibyte_and_no_wait() -> None:
    query = convert.fetch_from_pb(pb.FetchRequest(topic="orders", offset=5))
    assert (query.offset, query.max_bytes, query.max_wait_s) == (5, 1 << 20, 0.0)
    waited = convert.fetch_from_pb(pb.FetchRequest(topic="orders",
                                                   max_wait=Duration(seconds=10)))
    assert waited.max_wait_s == 10.0


def test_commit_offsets_name_the_bad_entry() -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        convert.offsets_from_pb([pb.PartitionOffset(topic="orders", partition=0, offset=3),
                                 pb.PartitionOffset(topic="orders", partition=1, offset=-2)])
    assert field_of(excinfo) == "offsets[1].offset"
    with pytest.raises(InvalidArgument) as excinfo:
        convert.offsets_from_pb([])
    assert field_of(excinfo) == "offsets"


def test_a_reset_needs_a_known_target() -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        convert.reset_from_pb(pb.ResetOffsetsRequest(group="g", topic="orders"))
    assert field_of(excinfo) == "to" and "earliest" in excinfo.value.message
    with pytest.raises(InvalidArgument) as excinfo:
        convert.reset_from_pb(pb.ResetOffsetsRequest(group="g", topic="orders",
                                                     to=pb.RESET_TO_TIME))
    assert field_of(excinfo) == "time"


@pytest.mark.parametrize(("request_", "field"), [
    (pb.JoinGroupRequest(group="", topics=["orders"]), "group"),
    (pb.JoinGroupRequest(group="g" * 192, topics=["orders"]), "group"),  # __replay.<g> > 200
    (pb.JoinGroupRequest(group="g", topics=[]), "topics"),
    (pb.JoinGroupRequest(group="g", topics=["bad name"]), "topics[0]"),
    (pb.JoinGroupRequest(group="g", topics=["orders"], session_timeout=Duration(seconds=0,
                                                                                nanos=5)),
     "session_timeout"),
    (pb.JoinGroupRequest(group="g", topics=["orders"], assignor=pb.Assignor.ValueType(9)),
     "assignor"),
    (pb.JoinGroupRequest(group="g", topics=["orders"], client_id="a\nb"), "client_id"),
])
def test_bad_joins_name_the_field(request_: pb.JoinGroupRequest, field: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        convert.join_from_pb(request_)
    assert field_of(excinfo) == field


def test_the_longest_group_still_names_its_internal_topics() -> None:
    group = "g" * convert.MAX_GROUP_CHARS
    assert convert.join_from_pb(pb.JoinGroupRequest(group=group, topics=["orders"])).group == group
    for prefix in ("__delay.", "__retry.", "__dlq.", "__replay."):
        assert convert.topic_name("topic", prefix + group)


def test_a_join_defaults_to_the_sticky_assignor() -> None:
    join = convert.join_from_pb(pb.JoinGroupRequest(group="g", topics=["b", "a", "b"]))
    assert (join.assignor, join.topics, join.session_timeout_s) == ("sticky", ["a", "b"], None)


@pytest.mark.parametrize(("request_", "field"), [
    (pb.NackRequest(group="g", member_id="m", topic="t", delay=Duration(seconds=86_401)),
     "delay"),
    (pb.NackRequest(group="g", member_id="m", topic="t", error="e" * 1001), "error"),
    (pb.NackRequest(group="g", member_id="m", topic="t", max_deliveries=-1), "max_deliveries"),
    (pb.NackRequest(group="g", member_id="m", topic="t", offset=-1), "offset"),
    (pb.NackRequest(group="g", member_id="", topic="t"), "member_id"),
])
def test_bad_nacks_name_the_field(request_: pb.NackRequest, field: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        convert.nack_from_pb(request_)
    assert field_of(excinfo) == field


def test_pages_resume_after_the_last_name_and_refuse_foreign_tokens() -> None:
    names = [f"t{i:02d}" for i in range(25)]
    first, token = convert.paged(names, convert.page_from_pb(10, "", "x"), "x")
    assert first == names[:10] and token
    second, token2 = convert.paged(names, convert.page_from_pb(10, token, "x"), "x")
    assert second == names[10:20]
    last, end = convert.paged(names, convert.page_from_pb(10, token2, "x"), "x")
    assert last == names[20:] and end == ""
    with pytest.raises(InvalidArgument):
        convert.page_from_pb(10, token, "other scope")
