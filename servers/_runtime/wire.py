"""Protobuf wire-format pieces for servers that assemble answers from stored bytes.

A protobuf message is the concatenation of its fields, so a handler can answer with
pre-serialised parts joined behind their tags (proximity's search pages, the broker's
fetches). This is the one encoder of the base-128 varints those tags and lengths need.
"""

from __future__ import annotations

_SMALL = [bytes((i,)) for i in range(0x80)]


def varint(n: int) -> bytes:
    """A protobuf varint of a non-negative integer."""
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
