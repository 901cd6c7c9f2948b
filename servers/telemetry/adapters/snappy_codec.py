"""Snappy block decompression for remote write (pysnappy: Cython over Google's C++
snappy, MIT; python-snappy 0.7 needs cramjam, built in Rust)."""

from __future__ import annotations

import pysnappy

from geoplex.servers._runtime.errors import InvalidArgument


def uncompress(data: bytes, max_bytes: int) -> bytes:
    """A snappy block's bytes; InvalidArgument for a body that is not snappy or that
    would expand past ``max_bytes`` (read from the block's length preamble before any
    decompression, so a small body cannot make the server allocate gigabytes)."""
    length = _preamble(data)
    if length > max_bytes:
        raise InvalidArgument("body", f"decompresses to {length} bytes",
                              allowed=[f"at most {max_bytes}"])
    try:
        out: bytes = pysnappy.uncompress(data)
    except Exception:  # noqa: BLE001 - the library raises a bare Exception
        raise InvalidArgument("body", "is not a snappy block (remote write sends "
                              "Content-Encoding: snappy)", reason="BAD_SNAPPY") from None
    return out


def _preamble(data: bytes) -> int:
    """The uncompressed length a snappy block starts with (a little-endian base-128
    varint of at most 5 bytes)."""
    length = shift = 0
    for i, byte in enumerate(data[:5]):
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length
        shift += 7
        if i == 4:
            break
    raise InvalidArgument("body", "is not a snappy block (remote write sends "
                          "Content-Encoding: snappy)", reason="BAD_SNAPPY")
