"""Chunk encodings: how one series' samples are stored in a block.

Two schemes, both bit-exact for every float64 (NaN payloads and Prometheus's stale
marker ``0x7ff0000000000002`` included) and every ascending int64 timestamp sequence:

**columnar** (the default, chosen by measurement: ``python -m
geoplex.servers.telemetry.tsdb.measure``, 1.11 bytes/sample on node-exporter-like data
against gorilla's 4.30). numpy all the way, no per-sample Python. ``pack`` lays a chunk
out as

    u8 version | uvarint count | i64 first timestamp
    | uvarints: zig-zag(first delta), zig-zag(delta of delta)...    (count - 1 of them)
    | u8 value mode, then the values as one of:
      0 XOR: the bits XORed with the previous value's, byte-transposed (8 planes of
        ``count`` bytes, least significant first): works for anything;
      1/2 decimal: every finite value is ``m / 10**e`` exactly for one e <= 15 (what
        parsing the text exposition gives): uvarint e, zig-zag m[0], uvarint g, then
        zig-zag varints of the deltas (1) or deltas of deltas (2) of m divided by their
        common divisor g (the smaller of the two is kept); then the exceptions (NaN, ±Inf,
        -0.0: uvarint count, position gaps, raw bits), where m repeats its previous value;

and a block compresses a *page* of packed chunks (many series, ~256 KiB) with zstd
(:func:`compress_page`): zero runs (transposed high bytes, repeated small deltas) and the
timestamp streams that every series of a target shares compress away across the page.
Arithmetic on timestamps wraps modulo 2**64, so any ascending int64 sequence
round-trips; the decimal mode is only used when decoding reproduces every value's bits.

**gorilla**: Facebook's Gorilla / Prometheus's XOR chunk, bit for bit the same layout as
Prometheus ``chunkenc/xor.go`` (delta-of-delta timestamps in 1/14/17/20/64-bit buckets,
XORed values with leading/trailing-zero windows), in plain Python: kept for comparison.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import zstandard

from geoplex.servers._runtime.errors import DataLoss

Int64s = npt.NDArray[np.int64]
Float64s = npt.NDArray[np.float64]
UInt64s = npt.NDArray[np.uint64]
Bytes = npt.NDArray[np.uint8]

STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN: float = float(np.array([STALE_NAN_BITS], np.uint64).view(np.float64)[0])
COLUMNAR_VERSION = 1
ZSTD_LEVEL = 3
_U64 = np.uint64
_ONE = _U64(1)
_ZERO = _U64(0)


class ChunkEncoding(enum.Enum):
    COLUMNAR = "columnar-v1"
    GORILLA = "gorilla-xor"


class CorruptChunk(DataLoss):
    """A chunk whose bytes do not decode (a block file damaged on disk)."""


def is_stale(values: Float64s) -> npt.NDArray[np.bool_]:
    """Which values are the stale marker, by their bits (NaN != NaN)."""
    stale: npt.NDArray[np.bool_] = values.view(np.uint64) == _U64(STALE_NAN_BITS)
    return stale


# ---- varints, vectorised ------------------------------------------------------------

_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], np.uint64)
_VARINT_SHIFTS = (7 * np.arange(10)).astype(np.uint64)
_VARINT_COLUMNS = np.arange(10)


def uvarint_encode(values: UInt64s) -> Bytes:
    """Base-128 varints (LEB128, as protobuf and Go's ``binary.PutUvarint``): every
    value's bytes laid out in a row of a (count, widest) matrix, then the rows' used
    bytes taken in order — a few numpy calls whatever the count."""
    count = len(values)
    if not count:
        return np.empty(0, np.uint8)
    sizes = np.searchsorted(_VARINT_LIMITS, values, side="right") + 1
    width = int(sizes.max())
    groups = (values[:, None] >> _VARINT_SHIFTS[:width]) & _U64(0x7F)
    columns = _VARINT_COLUMNS[:width]
    more = columns < (sizes[:, None] - 1)
    matrix = groups.astype(np.uint8) | (more.astype(np.uint8) << np.uint8(7))
    out: Bytes = matrix[columns < sizes[:, None]]
    return out


def uvarint_decode(data: Bytes, count: int) -> tuple[UInt64s, int]:
    """``count`` varints from the start of ``data``, and the bytes they took."""
    if not count:
        return np.empty(0, np.uint64), 0
    ends = np.flatnonzero(data < 0x80)[:count]
    if len(ends) < count:
        raise CorruptChunk("a chunk ends inside its varints")
    used = int(ends[-1]) + 1
    starts = np.empty(count, np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    sizes = ends - starts + 1
    if int(sizes.max()) > 10:
        raise CorruptChunk("a varint longer than 10 bytes")
    shifts = (np.arange(used, dtype=np.int64) - np.repeat(starts, sizes)) * 7
    parts = (data[:used] & np.uint8(0x7F)).astype(np.uint64) << shifts.astype(np.uint64)
    return np.bitwise_or.reduceat(parts, starts), used


def zigzag(values: UInt64s) -> UInt64s:
    """Signed (as two's complement in uint64) to unsigned, small magnitudes small."""
    return (values << _ONE) ^ (_ZERO - (values >> _U64(63)))


def unzigzag(values: UInt64s) -> UInt64s:
    return (values >> _ONE) ^ (_ZERO - (values & _ONE))


# ---- columnar -----------------------------------------------------------------------

def pack(timestamps: Int64s, values: Float64s) -> bytes:
    """One chunk, uncompressed (see the module's docstring for the layout)."""
    count = len(timestamps)
    if count != len(values):
        raise ValueError("timestamps and values differ in length")
    head = bytes([COLUMNAR_VERSION]) + uvarint_encode(np.array([count], np.uint64)).tobytes()
    if not count:
        return head
    stamps = np.ascontiguousarray(timestamps, np.int64).view(np.uint64)
    deltas = np.diff(stamps)  # wraps modulo 2**64, as unpacking does
    dods = np.empty_like(deltas)
    if len(deltas):
        dods[0] = deltas[0]
        dods[1:] = np.diff(deltas)
    values = np.ascontiguousarray(values, np.float64)
    return b"".join((head, stamps[:1].astype("<u8").tobytes(),
                     uvarint_encode(zigzag(dods)).tobytes(), _pack_values(values)))


def unpack(data: bytes | memoryview) -> tuple[Int64s, Float64s]:
    raw = np.frombuffer(data, np.uint8)
    if not len(raw) or raw[0] != COLUMNAR_VERSION:
        raise CorruptChunk("not a columnar chunk (version byte)")
    (count_arr, used) = uvarint_decode(raw[1:], 1)
    count = int(count_arr[0])
    at = 1 + used
    if not count:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    if len(raw) < at + 8:
        raise CorruptChunk("a chunk ends before its first timestamp")
    first = raw[at:at + 8].view("<u8").astype(np.uint64)
    at += 8
    dods, used = uvarint_decode(raw[at:], count - 1)
    at += used
    stamps = np.empty(count, np.uint64)
    stamps[0] = first[0]
    if count > 1:
        stamps[1:] = first[0] + np.cumsum(np.cumsum(unzigzag(dods)))
    return stamps.view(np.int64), _unpack_values(raw[at:], count)


# value sections: a mode byte, then
_XOR = 0  # the bits XORed with the previous value's, 8 byte planes (anything)
_DECIMAL_DELTA = 1  # decimal mantissas m (value = m / 10**e), their deltas (gauges)
_DECIMAL_DOD = 2  # the same, delta of deltas (counters at a steady rate)
_MAX_EXPONENT = 15
_MAX_MANTISSA = float(1 << 53)
_POWERS = [10.0 ** e for e in range(_MAX_EXPONENT + 1)]


def _from_decimal(mantissas: Int64s, exponent: int) -> Float64s:
    floats = mantissas.astype(np.float64)
    return floats / _POWERS[exponent] if exponent else floats


def _decimal(values: Float64s) -> tuple[int, Int64s, npt.NDArray[np.intp]] | None:
    """(e, m, exception positions) with ``m / 10**e`` equal bit for bit to every value but
    the exceptions (the non-finite ones and -0.0), or None when no e <= 15 does."""
    bits = values.view(np.uint64)
    special = ~np.isfinite(values) | (bits == _U64(1 << 63))
    exceptions = np.flatnonzero(special)
    plain = values[~special] if len(exceptions) else values
    plain_bits = plain.view(np.uint64)
    for exponent in range(_MAX_EXPONENT + 1):
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = np.rint(plain * _POWERS[exponent]) if exponent else np.rint(plain)
        if len(scaled) and not float(np.max(np.abs(scaled))) < _MAX_MANTISSA:
            return None  # larger exponents only make it larger
        mantissas = scaled.astype(np.int64)
        if np.array_equal(_from_decimal(mantissas, exponent).view(np.uint64), plain_bits):
            if not len(exceptions):
                return exponent, mantissas, exceptions
            full = np.zeros(len(values), np.int64)
            full[~special] = mantissas
            # an exception repeats the previous mantissa (a zero delta)
            keep = np.where(special, 0, np.arange(len(values)))
            full = full[np.maximum.accumulate(keep)]
            return exponent, full, exceptions
    return None


def _uvarints(*values: int) -> bytes:
    return uvarint_encode(np.array(values, np.uint64)).tobytes()


def _pack_values(values: Float64s) -> bytes:
    count = len(values)
    found = _decimal(values)
    if found is not None:
        exponent, mantissas, exceptions = found
        deltas = np.diff(mantissas)
        dods = np.diff(deltas, prepend=np.int64(0))
        candidates = []
        for mode, series in ((_DECIMAL_DELTA, deltas), (_DECIMAL_DOD, dods)):
            divisor = int(np.gcd.reduce(series)) if len(series) else 0
            divisor = max(divisor, 1)
            packed = uvarint_encode(zigzag((series // divisor).view(np.uint64))).tobytes()
            candidates.append((len(packed), mode, divisor, packed))
        _, mode, divisor, packed = min(candidates)
        first = int(zigzag(mantissas[:1].view(np.uint64))[0])
        gaps = np.diff(exceptions, prepend=0).astype(np.uint64)
        return b"".join((bytes([mode]), _uvarints(exponent, first, divisor), packed,
                         _uvarints(len(exceptions)), uvarint_encode(gaps).tobytes(),
                         values.view(np.uint64)[exceptions].astype("<u8").tobytes()))
    bits = values.view(np.uint64)
    xored = bits.copy()
    xored[1:] ^= bits[:-1]
    planes = xored.astype("<u8").view(np.uint8).reshape(count, 8).T
    return bytes([_XOR]) + planes.tobytes()


def _unpack_values(raw: Bytes, count: int) -> Float64s:
    if not len(raw):
        raise CorruptChunk("a chunk ends before its values")
    mode = int(raw[0])
    raw = raw[1:]
    if mode == _XOR:
        if len(raw) != 8 * count:
            raise CorruptChunk(f"a chunk of {count} samples has {len(raw)} value bytes")
        xored = np.ascontiguousarray(raw.reshape(8, count).T).view("<u8").reshape(count)
        return np.bitwise_xor.accumulate(xored.astype(np.uint64)).view(np.float64)
    if mode not in (_DECIMAL_DELTA, _DECIMAL_DOD):
        raise CorruptChunk(f"unknown value mode {mode}")
    header, at = uvarint_decode(raw, 3)
    exponent, first, divisor = (int(x) for x in header)
    if exponent > _MAX_EXPONENT:
        raise CorruptChunk(f"decimal exponent {exponent} over {_MAX_EXPONENT}")
    series, used = uvarint_decode(raw[at:], count - 1)
    at += used
    steps = unzigzag(series).view(np.int64) * np.int64(divisor)
    if mode == _DECIMAL_DOD:
        steps = np.cumsum(steps)
    mantissas = np.empty(count, np.int64)
    mantissas[0] = unzigzag(np.array([first], np.uint64)).view(np.int64)[0]
    mantissas[1:] = mantissas[0] + np.cumsum(steps)
    values = _from_decimal(mantissas, exponent)
    (exceptions_arr, used) = uvarint_decode(raw[at:], 1)
    at += used
    exceptions = int(exceptions_arr[0])
    gaps, used = uvarint_decode(raw[at:], exceptions)
    at += used
    if len(raw) != at + 8 * exceptions:
        raise CorruptChunk("a chunk's exception list does not fit its bytes")
    positions = np.cumsum(gaps.astype(np.int64))
    if exceptions and (positions[-1] >= count):
        raise CorruptChunk("a chunk's exception lies past its end")
    bits = values.view(np.uint64)
    bits[positions] = raw[at:].view("<u8").astype(np.uint64)
    return values


def compress_page(packed: bytes, level: int = ZSTD_LEVEL) -> bytes:
    return zstandard.ZstdCompressor(level=level, write_checksum=True).compress(packed)


def decompress_page(data: bytes | memoryview) -> bytes:
    try:
        return zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as error:
        raise CorruptChunk(f"a chunk page fails to decompress: {error}") from error


def encode_columnar(timestamps: Int64s, values: Float64s) -> bytes:
    """One chunk on its own: packed, then zstd (a block compresses pages of many)."""
    return compress_page(pack(timestamps, values))


def decode_columnar(data: bytes | memoryview) -> tuple[Int64s, Float64s]:
    return unpack(decompress_page(data))


# ---- gorilla ------------------------------------------------------------------------

_M64 = (1 << 64) - 1


def _signed(value: int) -> int:
    value &= _M64
    return value - (1 << 64) if value >> 63 else value


class _BitWriter:
    __slots__ = ("out", "acc", "bits")

    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.bits = 0

    def write(self, value: int, bits: int) -> None:
        self.acc = (self.acc << bits) | (value & ((1 << bits) - 1))
        self.bits += bits
        if self.bits >= 64:
            spare = self.bits - 64
            self.out += (self.acc >> spare).to_bytes(8, "big")
            self.acc &= (1 << spare) - 1
            self.bits = spare

    def getvalue(self) -> bytes:
        pad = -self.bits % 8
        tail = (self.acc << pad).to_bytes((self.bits + pad) // 8, "big") if self.bits else b""
        return bytes(self.out) + tail


class _BitReader:
    __slots__ = ("data", "pos", "limit")

    def __init__(self, data: bytes) -> None:
        self.data = data + b"\0" * 9
        self.pos = 0
        self.limit = len(data) * 8

    def read(self, bits: int) -> int:
        if self.pos + bits > self.limit:
            raise CorruptChunk("a gorilla chunk ends early")
        byte, skip = divmod(self.pos, 8)
        window = int.from_bytes(self.data[byte:byte + 9], "big")
        self.pos += bits
        return (window >> (72 - skip - bits)) & ((1 << bits) - 1)


def _write_uvarint(out: _BitWriter, value: int) -> None:
    value &= _M64
    while value >= 0x80:
        out.write((value & 0x7F) | 0x80, 8)
        value >>= 7
    out.write(value, 8)


def _read_uvarint(reader: _BitReader) -> int:
    value = shift = 0
    while True:
        byte = reader.read(8)
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise CorruptChunk("a varint longer than 10 bytes")


# (prefix, prefix bits, value bits) for delta-of-delta buckets, after Prometheus
_DOD_BUCKETS = ((0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20))


def encode_gorilla(timestamps: Int64s, values: Float64s) -> bytes:
    out = _BitWriter()
    count = len(timestamps)
    if count < 0xFFFF:
        out.write(count, 16)
    else:
        out.write(0xFFFF, 16)
        _write_uvarint(out, count)
    stamps = [int(t) for t in np.asarray(timestamps, np.int64)]
    bits = [int(b) for b in np.asarray(values, np.float64).view(np.uint64)]
    leading, trailing = 0xFF, 0
    delta = 0
    for i in range(count):
        t, v = stamps[i], bits[i]
        if i == 0:
            _write_uvarint(out, zigzag_int(t))
            out.write(v, 64)
            continue
        if i == 1:
            delta = (t - stamps[0]) & _M64
            _write_uvarint(out, delta)
        else:
            new_delta = (t - stamps[i - 1]) & _M64
            dod = _signed(new_delta - delta)
            delta = new_delta
            if dod == 0:
                out.write(0, 1)
            else:
                for prefix, prefix_bits, value_bits in _DOD_BUCKETS:
                    if -(1 << (value_bits - 1)) < dod <= (1 << (value_bits - 1)):
                        out.write(prefix, prefix_bits)
                        out.write(dod, value_bits)
                        break
                else:
                    out.write(0b1111, 4)
                    out.write(dod, 64)
        xor = v ^ bits[i - 1]
        if xor == 0:
            out.write(0, 1)
            continue
        out.write(1, 1)
        new_leading = min(64 - xor.bit_length(), 31)
        new_trailing = (xor & -xor).bit_length() - 1
        if leading != 0xFF and new_leading >= leading and new_trailing >= trailing:
            out.write(0, 1)
            out.write(xor >> trailing, 64 - leading - trailing)
        else:
            leading, trailing = new_leading, new_trailing
            significant = 64 - leading - trailing
            out.write(1, 1)
            out.write(leading, 5)
            out.write(significant & 63, 6)  # 64 significant bits is written as 0
            out.write(xor >> trailing, significant)
    return out.getvalue()


def zigzag_int(value: int) -> int:
    value = _signed(value)
    return ((value << 1) ^ (value >> 63)) & _M64


def decode_gorilla(data: bytes) -> tuple[Int64s, Float64s]:
    reader = _BitReader(bytes(data))
    count = reader.read(16)
    if count == 0xFFFF:
        count = _read_uvarint(reader)
    stamps = [0] * count
    bits = [0] * count
    leading = trailing = 0
    delta = 0
    for i in range(count):
        if i == 0:
            raw = _read_uvarint(reader)
            stamps[0] = _signed((raw >> 1) ^ -(raw & 1))
            bits[0] = reader.read(64)
            continue
        if i == 1:
            delta = _read_uvarint(reader)
        else:
            dod = 0
            if reader.read(1):
                for _, _, value_bits in _DOD_BUCKETS:
                    if not reader.read(1):
                        dod = _signed_bits(reader.read(value_bits), value_bits)
                        break
                else:
                    dod = _signed(reader.read(64))
            delta = (delta + dod) & _M64
        stamps[i] = _signed(stamps[i - 1] + delta)
        if not reader.read(1):
            bits[i] = bits[i - 1]
            continue
        if reader.read(1):
            leading = reader.read(5)
            significant = reader.read(6) or 64
            trailing = 64 - leading - significant
        significant = 64 - leading - trailing
        bits[i] = bits[i - 1] ^ (reader.read(significant) << trailing)
    return (np.array(stamps, np.int64),
            np.array(bits, np.uint64).view(np.float64))


def _signed_bits(value: int, bits: int) -> int:
    return value - (1 << bits) if value > (1 << (bits - 1)) else value


@dataclass(frozen=True)
class EncodedSize:
    """What :func:`measure` reports for one scheme over a data set."""

    encoding: str
    samples: int
    bytes: int

    @property
    def bytes_per_sample(self) -> float:
        return self.bytes / self.samples if self.samples else 0.0
