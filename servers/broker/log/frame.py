"""A stored batch: a fixed binary header, then the payload.

The payload is the serialised ``RecordBatch`` message, built without decoding a record:
its scalar fields 1..5 hand-encoded as protobuf varints, then ``records_blob`` (field 6
only, as the producer's records arrived), so the concatenation is one valid message that
a fetch serves as it is.

The header, little-endian, 56 bytes::

    magic u32 | length u32 | crc32c u32 | base_offset i64 | count u32 | max_timestamp_ms i64
    | append_time_ms i64 | producer_id u64 | base_sequence i32 | leader_epoch i32

``length`` is the payload's; the CRC32C covers the header from ``base_offset`` on and the
payload. ``leader_epoch`` is 0 until replication (part 2) gives it a meaning; it is in
the header now so that part 2 needs no new format.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import google_crc32c

MAGIC = 0x31425047  # b"GPB1" little-endian
HEADER = struct.Struct("<IIIqIqqQii")
HEADER_SIZE = HEADER.size
CRC_FROM = 12  # the CRC covers the header from here on, then the payload
MAX_PAYLOAD = (1 << 31) - 1
_HEAD = struct.Struct("<III")
_TAIL = struct.Struct("<qIqqQii")
_MASK64 = (1 << 64) - 1


class FrameHeader(NamedTuple):
    magic: int
    length: int
    crc: int
    base_offset: int
    records: int
    max_timestamp_ms: int
    append_time_ms: int
    producer_id: int
    base_sequence: int
    leader_epoch: int

    @property
    def size(self) -> int:
        """The whole frame's bytes on disk."""
        return HEADER_SIZE + self.length

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.records

    def plausible(self) -> bool:
        """Whether these bytes can be a header at all (the CRC decides the rest)."""
        return self.magic == MAGIC and self.records >= 1 and self.length <= MAX_PAYLOAD


def read_header(buffer: bytes, position: int = 0) -> FrameHeader:
    return FrameHeader._make(HEADER.unpack_from(buffer, position))


def payload_prefix(base_offset: int, append_time_ms: int, max_timestamp_ms: int,
                   producer_id: int, base_sequence: int) -> bytes:
    """``RecordBatch`` fields 1..5 as protobuf writes them (zeros left out, as proto3 does):
    a tag byte, then the value as a base-128 varint (a negative one as its 64-bit two's
    complement, ten bytes), inlined here because it runs for every batch."""
    out = bytearray()
    for tag, value in ((0x08, base_offset), (0x10, append_time_ms), (0x18, max_timestamp_ms),
                       (0x20, producer_id), (0x28, base_sequence)):
        if value:
            out.append(tag)
            value &= _MASK64
            while value >= 0x80:
                out.append((value & 0x7F) | 0x80)
                value >>= 7
            out.append(value)
    return bytes(out)


def crc_of(header_tail: bytes, *chunks: bytes) -> int:
    crc = int(google_crc32c.value(header_tail))
    for chunk in chunks:
        crc = int(google_crc32c.extend(crc, chunk))
    return crc


def encode(base_offset: int, count: int, max_timestamp_ms: int, append_time_ms: int,
           producer_id: int, base_sequence: int, records_blob: bytes,
           leader_epoch: int = 0) -> tuple[bytes, bytes, FrameHeader]:
    """The header, the payload's prefix and the header's fields; the frame is
    ``header + prefix + records_blob`` (written with one ``pwritev``, never concatenated)."""
    prefix = payload_prefix(base_offset, append_time_ms, max_timestamp_ms, producer_id,
                            base_sequence)
    tail = _TAIL.pack(base_offset, count, max_timestamp_ms, append_time_ms, producer_id,
                      base_sequence, leader_epoch)
    length = len(prefix) + len(records_blob)
    if length > MAX_PAYLOAD:
        raise ValueError(f"a batch of {length} bytes is over the frame limit {MAX_PAYLOAD}")
    crc = int(google_crc32c.extend(google_crc32c.value(tail + prefix), records_blob))
    fields = FrameHeader(MAGIC, length, crc, base_offset, count, max_timestamp_ms,
                         append_time_ms, producer_id, base_sequence, leader_epoch)
    return _HEAD.pack(MAGIC, length, crc) + tail, prefix, fields


def intact(buffer: bytes, position: int, header: FrameHeader) -> bool:
    """Whether the whole frame at ``position`` in ``buffer`` matches its CRC."""
    start = position + HEADER_SIZE
    return crc_of(buffer[position + CRC_FROM:start],
                  buffer[start:start + header.length]) == header.crc
