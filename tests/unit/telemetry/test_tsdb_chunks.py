"""Chunk encodings: exact round trips of any ascending int64 timestamps and any float64
bits (NaN payloads, the stale marker, ±Inf, -0.0), and what they compress to."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.telemetry.tsdb import chunks
from geoplex.servers.telemetry.tsdb.chunks import CorruptChunk
from geoplex.servers.telemetry.tsdb.workload import node_exporter_like

CODECS = {"columnar": (chunks.encode_columnar, chunks.decode_columnar),
          "gorilla": (chunks.encode_gorilla, chunks.decode_gorilla)}

timestamps = st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=200, unique=True).map(
    lambda xs: np.array(sorted(xs), np.int64))
bit_patterns = st.integers(0, (1 << 64) - 1)
special_bits = st.sampled_from([chunks.STALE_NAN_BITS, 0x7FF8000000000000, 0xFFF8000000000001,
                                0x7FF0000000000000, 0xFFF0000000000000, 1 << 63, 0,
                                0x7FF4000000000000])


def as_floats(bits: list[int]) -> np.ndarray:
    return np.array(bits, np.uint64).view(np.float64)


def assert_same(got: tuple[np.ndarray, np.ndarray], ts: np.ndarray, vs: np.ndarray) -> None:
    assert got[0].dtype == np.int64 and got[1].dtype == np.float64
    assert got[0].tolist() == ts.tolist()
    assert got[1].view(np.uint64).tolist() == vs.view(np.uint64).tolist()


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), ts=timestamps)
def test_any_timestamps_and_value_bits_round_trip(codec: str, data: st.DataObject,
                                                  ts: np.ndarray) -> None:
    bits = data.draw(st.lists(st.one_of(bit_patterns, special_bits), min_size=len(ts),
                              max_size=len(ts)))
    encode, decode = CODECS[codec]
    vs = as_floats(bits)
    assert_same(decode(encode(ts, vs)), ts, vs)


decimals = st.lists(st.tuples(st.integers(-(10 ** 9), 10 ** 9), st.integers(0, 6)), max_size=150)


@settings(max_examples=150, deadline=None)
@given(values=decimals, specials=st.lists(st.tuples(st.integers(0, 149), special_bits),
                                          max_size=5))
def test_decimal_values_with_specials_round_trip(values: list[tuple[int, int]],
                                                 specials: list[tuple[int, int]]) -> None:
    vs = np.array([m / 10.0 ** e for m, e in values], np.float64)
    for at, bits in specials:
        if at < len(vs):
            vs.view(np.uint64)[at] = bits
    ts = np.arange(len(vs), dtype=np.int64) * 15_000
    assert_same(chunks.decode_columnar(chunks.encode_columnar(ts, vs)), ts, vs)


def test_the_stale_marker_survives_bit_for_bit() -> None:
    stale = struct.unpack("<d", struct.pack("<Q", chunks.STALE_NAN_BITS))[0]
    ts = np.array([0, 15_000, 30_000, 45_000], np.int64)
    vs = np.array([1.0, stale, 2.5, stale], np.float64)
    for encode, decode in CODECS.values():
        got_ts, got_vs = decode(encode(ts, vs))
        assert chunks.is_stale(got_vs).tolist() == [False, True, False, True]
        assert got_vs.view(np.uint64)[1] == chunks.STALE_NAN_BITS


def test_gorilla_matches_its_bucket_edges() -> None:
    # dods at each bucket's edges, both signs
    dods = [0, 1, -1, 8191, 8192, -8191, -8192, 65536, -65535, 524288, -524287, 524289,
            -(1 << 40)]
    deltas = np.cumsum([15_000] + dods)
    ts = np.concatenate([[0], np.cumsum(deltas)]).astype(np.int64)
    vs = np.linspace(0, 1, len(ts))
    assert_same(chunks.decode_gorilla(chunks.encode_gorilla(ts, vs)), ts, vs)


def test_varints_round_trip_at_every_length() -> None:
    values = np.array([0, 1, 127, 128, 16383, 16384, (1 << 63), (1 << 64) - 1], np.uint64)
    encoded = chunks.uvarint_encode(values)
    decoded, used = chunks.uvarint_decode(encoded, len(values))
    assert decoded.tolist() == values.tolist() and used == len(encoded)


def test_a_damaged_chunk_is_reported_not_served() -> None:
    ts = np.arange(10, dtype=np.int64)
    data = bytearray(chunks.encode_columnar(ts, ts.astype(np.float64)))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(CorruptChunk):
        chunks.decode_columnar(bytes(data))
    with pytest.raises(CorruptChunk):
        chunks.unpack(chunks.pack(ts, ts.astype(np.float64))[:-3])


def test_columnar_pages_beat_gorillas_figure_on_node_exporter_like_data() -> None:
    """The aim is Gorilla's 1.37 bytes/sample; pages of packed chunks get there."""
    data = list(node_exporter_like(300, 480, seed=7))
    samples = sum(len(s.timestamps) for s in data)
    page = b"".join(chunks.pack(s.timestamps, s.values) for s in data)
    assert len(chunks.compress_page(page)) / samples <= 1.37
    gorilla = sum(len(chunks.encode_gorilla(s.timestamps, s.values)) for s in data)
    assert len(chunks.compress_page(page)) < gorilla
