"""The stored frame: its payload is a valid ``RecordBatch``, its CRC covers what it must."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.servers.broker.log import frame
from geoplex.servers.broker.log.frame import HEADER_SIZE, MAGIC, read_header


def _blob(*values: bytes) -> bytes:
    records = [pb.Record(key=b"k%d" % i, value=value, timestamp_ms=1_700_000_000_000 + i,
                         headers=[pb.Header(key="h", value=b"v")])
               for i, value in enumerate(values)]
    return pb.RecordBatch(records=records).SerializeToString()


def test_the_payload_parses_as_a_record_batch_with_every_field() -> None:
    blob = _blob(b"one", b"two")
    header, prefix, fields = frame.encode(base_offset=1234, count=2, max_timestamp_ms=1_700_000_000_001,
                                  append_time_ms=1_700_000_000_500,
                                  producer_id=(1 << 64) - 5, base_sequence=77,
                                  records_blob=blob)
    batch = pb.RecordBatch.FromString(prefix + blob)
    assert batch.base_offset == 1234
    assert batch.append_time_ms == 1_700_000_000_500
    assert batch.max_timestamp_ms == 1_700_000_000_001
    assert batch.producer_id == (1 << 64) - 5
    assert batch.base_sequence == 77
    assert [r.value for r in batch.records] == [b"one", b"two"]
    assert batch.records[1].headers[0].value == b"v"
    assert fields == read_header(header)
    assert (fields.magic, fields.length, fields.base_offset, fields.records) == (
        MAGIC, len(prefix) + len(blob), 1234, 2)
    assert (fields.producer_id, fields.base_sequence, fields.leader_epoch) == ((1 << 64) - 5, 77, 0)


@given(base_offset=st.integers(0, (1 << 63) - 1), append=st.integers(-(1 << 63), (1 << 63) - 1),
       max_ts=st.integers(-(1 << 63), (1 << 63) - 1), producer=st.integers(0, (1 << 64) - 1),
       sequence=st.integers(0, (1 << 31) - 1))
def test_hand_encoded_fields_equal_what_protobuf_writes(base_offset: int, append: int,
                                                        max_ts: int, producer: int,
                                                        sequence: int) -> None:
    ours = frame.payload_prefix(base_offset, append, max_ts, producer, sequence)
    theirs = pb.RecordBatch(base_offset=base_offset, append_time_ms=append,
                            max_timestamp_ms=max_ts, producer_id=producer,
                            base_sequence=sequence).SerializeToString()
    assert ours == theirs


def test_a_negative_int32_is_a_ten_byte_varint_as_protobuf_reads_it() -> None:
    prefix = frame.payload_prefix(0, 0, 0, 0, -1)
    assert len(prefix) == 11
    assert pb.RecordBatch.FromString(prefix).base_sequence == -1


@pytest.mark.parametrize("flip", [frame.CRC_FROM, HEADER_SIZE - 1, HEADER_SIZE + 3, -1])
def test_the_crc_covers_the_header_after_it_and_the_payload(flip: int) -> None:
    blob = _blob(b"x" * 100)
    header, prefix, _ = frame.encode(5, 1, 10, 20, 3, 4, blob)
    stored = header + prefix + blob
    assert frame.intact(stored, 0, read_header(stored))
    damaged = bytearray(stored)
    damaged[flip] ^= 0x01
    assert not frame.intact(bytes(damaged), 0, read_header(bytes(damaged)))
