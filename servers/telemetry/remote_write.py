"""A remote-write 1.0 ``WriteRequest`` decoded straight into arrays.

The generated protobuf classes build a Python object per sample; a remote-write body
holds thousands, so decoding them one by one is most of an ingest's cost. This reads the
wire format itself: a loop over the series (labels are few), and each series' samples at
numpy speed when they have the layout every sender writes — each ``Sample`` the same
length, ``value`` (field 1, fixed64) then ``timestamp`` (field 2, varint) — falling back
to a plain loop over the records otherwise. Fields it does not use (metadata, exemplars,
native histograms) are skipped, as a protobuf parser skips unknown fields.

It answers what :class:`~geoplex.telemetry.v1.remote_write_pb2.RemoteWriteRequest` would
(a test holds it to that), and raises :class:`MalformedWriteRequest` for a body that is
not one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tsdb.chunks import Float64s, Int64s

Decoded = tuple[tuple[tuple[str, str], ...], Int64s, Float64s]

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class MalformedWriteRequest(ValueError):
    pass


def _varint(data: bytes, at: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if at >= end or shift > 63:
            raise MalformedWriteRequest("a varint runs past its field")
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, at
        shift += 7


def _skip(data: bytes, at: int, end: int, wire: int) -> int:
    if wire == _VARINT:
        return _varint(data, at, end)[1]
    if wire == _I64:
        at += 8
    elif wire == _I32:
        at += 4
    elif wire == _LEN:
        size, at = _varint(data, at, end)
        at += size
    else:
        raise MalformedWriteRequest(f"wire type {wire} is not supported")
    if at > end:
        raise MalformedWriteRequest("a field runs past its message")
    return at


def _label(data: bytes, at: int, end: int) -> tuple[str, str]:
    name = value = b""
    while at < end:
        key, at = _varint(data, at, end)
        number, wire = key >> 3, key & 7
        if wire == _LEN and number in (1, 2):
            size, at = _varint(data, at, end)
            if at + size > end:
                raise MalformedWriteRequest("a label runs past its message")
            if number == 1:
                name = data[at:at + size]
            else:
                value = data[at:at + size]
            at += size
        else:
            at = _skip(data, at, end, wire)
    try:
        return name.decode(), value.decode()
    except UnicodeDecodeError as error:
        raise MalformedWriteRequest("a label is not valid UTF-8") from error


def _sample(data: bytes, at: int, end: int) -> tuple[int, float]:
    timestamp = 0
    value = 0.0
    while at < end:
        key, at = _varint(data, at, end)
        number, wire = key >> 3, key & 7
        if number == 1 and wire == _I64:
            if at + 8 > end:
                raise MalformedWriteRequest("a sample's value runs past its message")
            value = float(np.frombuffer(data, np.float64, 1, at)[0])
            at += 8
        elif number == 2 and wire == _VARINT:
            raw, at = _varint(data, at, end)
            timestamp = raw - (1 << 64) if raw >= 1 << 63 else raw
        else:
            at = _skip(data, at, end, wire)
    return timestamp, value


def _series(data: bytes, at: int, end: int) -> tuple[list[tuple[str, str]],
                                                    list[tuple[int, float]]]:
    """The plain loop over one series: its labels and samples, any layout."""
    labels: list[tuple[str, str]] = []
    samples: list[tuple[int, float]] = []
    while at < end:
        key, at = _varint(data, at, end)
        number, wire = key >> 3, key & 7
        if wire == _LEN and number in (1, 2):
            size, at = _varint(data, at, end)
            if at + size > end:
                raise MalformedWriteRequest("a field runs past its series")
            if number == 1:
                labels.append(_label(data, at, at + size))
            else:
                samples.append(_sample(data, at, at + size))
            at += size
        else:
            at = _skip(data, at, end, wire)
    return labels, samples


@dataclass(frozen=True, eq=False)
class DecodedRequest:
    """The request's series: ``labels[i]`` (as sent) and their samples
    ``timestamps[offsets[i]:offsets[i + 1]]`` / ``values[...]``."""

    labels: list[tuple[tuple[str, str], ...]]
    timestamps: Int64s
    values: Float64s
    offsets: Int64s

    def __len__(self) -> int:
        return len(self.labels)

    def series(self) -> list[Decoded]:
        cut = self.offsets.tolist()
        return [(labels, self.timestamps[cut[i]:cut[i + 1]], self.values[cut[i]:cut[i + 1]])
                for i, labels in enumerate(self.labels)]


_LABELS_CACHE: dict[bytes, tuple[tuple[str, str], ...]] = {}
_LABELS_CACHE_MAX = 1 << 18


def _labels_of(data: bytes, at: int, end: int) -> tuple[tuple[tuple[str, str], ...], int]:
    """The labels at the head of a series (field 1 records) and where they end; the same
    bytes decode to the same labels, so they are remembered."""
    start = at
    while at + 1 < end and data[at] == 0x0A and data[at + 1] < 0x80:
        at += 2 + data[at + 1]
    key = data[start:at]
    found = _LABELS_CACHE.get(key)
    if found is None:
        pairs = []
        i = start
        while i < at:
            size = data[i + 1]
            pairs.append(_label(data, i + 2, i + 2 + size))
            i += 2 + size
        if i != at:
            raise MalformedWriteRequest("a label runs past its series")
        found = tuple(pairs)
        if len(_LABELS_CACHE) >= _LABELS_CACHE_MAX:
            _LABELS_CACHE.clear()
        _LABELS_CACHE[key] = found
    return found, at


def decode_write_request(data: bytes) -> DecodedRequest:
    """Every time series of the request with its samples. Each series is cut in plain
    Python (its labels, where its samples start); the samples of every series whose
    samples are one run of equal records — what senders write — are then read in one
    numpy pass over the whole request; any other series goes through the plain loop."""
    array = np.frombuffer(data, np.uint8)
    labels: list[tuple[tuple[str, str], ...]] = []
    starts: list[int] = []      # per series: the first sample record (-1: the slow path)
    counts: list[int] = []
    lengths: list[int] = []
    bounds: list[tuple[int, int]] = []
    slow: dict[int, list[tuple[int, float]]] = {}
    at, end = 0, len(data)
    while at < end:
        key, at = _varint(data, at, end)
        number, wire = key >> 3, key & 7
        if not (number == 1 and wire == _LEN):
            at = _skip(data, at, end, wire)
            continue
        size, at = _varint(data, at, end)
        series_end = at + size
        if series_end > end:
            raise MalformedWriteRequest("a series runs past the request")
        bounds.append((at, series_end))
        found, first = _labels_of(data, at, series_end)
        length = data[first + 1] if first + 1 < series_end else 0
        stride = length + 2
        if (first < series_end and data[first] == 0x12 and 11 <= length < 0x80
                and (series_end - first) % stride == 0):
            labels.append(found)
            starts.append(first)
            counts.append((series_end - first) // stride)
            lengths.append(length)
        else:
            plain_labels, samples = _series(data, at, series_end)
            slow[len(labels)] = samples
            labels.append(tuple(plain_labels))
            starts.append(-1)
            counts.append(0)
            lengths.append(0)
        at = series_end
    return _gather(array, labels, starts, counts, lengths, slow, data, bounds)


def _gather(array: np.ndarray, labels: list[tuple[tuple[str, str], ...]], starts: list[int],
            counts: list[int], lengths: list[int], slow: dict[int, list[tuple[int, float]]],
            data: bytes, bounds: list[tuple[int, int]]) -> DecodedRequest:
    n = len(labels)
    count = np.array(counts, np.int64)
    total = int(count.sum())
    first = np.repeat(np.array(starts, np.int64), count)
    length = np.repeat(np.array(lengths, np.int64), count)
    begin = np.zeros(n + 1, np.int64)
    np.cumsum(count, out=begin[1:])
    pos = first + (length + 2) * (np.arange(total, dtype=np.int64) - np.repeat(begin[:-1], count))
    good = np.ones(total, bool)
    if total:
        good = ((array[pos + 1] == length) & (array[pos + 2] == 0x09)
                & (array[pos + 11] == 0x10) & (array[pos] == 0x12))
    width = length - 10
    values = np.empty(total, np.float64)
    timestamps = np.zeros(total, np.uint64)
    if total:
        values = np.ascontiguousarray(array[pos[:, None] + 3 + np.arange(8)]).view(
            np.float64).reshape(-1)
        for k in range(int(width.max())):
            inside = k < width
            byte = array[np.where(inside, pos + 12 + k, 0)]
            last = k == width - 1
            good &= ~inside | np.where(last, byte < 0x80, byte >= 0x80)
            timestamps |= np.where(inside, (byte & 0x7F).astype(np.uint64), 0) << np.uint64(7 * k)
    signed = timestamps.view(np.int64)
    if total and not good.all():  # a series not of the layout after all: the plain loop
        for i in np.unique(np.searchsorted(begin, np.flatnonzero(~good), side="right") - 1):
            slow[int(i)] = _series(data, *bounds[int(i)])[1]
    if not slow:
        return DecodedRequest(labels, signed, values, begin)
    ts_parts: list[Int64s] = []
    vs_parts: list[Float64s] = []
    offsets = [0]
    cut = begin.tolist()
    for i in range(n):
        if i in slow:
            ts_parts.append(np.array([t for t, _ in slow[i]], np.int64))
            vs_parts.append(np.array([v for _, v in slow[i]], np.float64))
        else:
            ts_parts.append(signed[cut[i]:cut[i + 1]])
            vs_parts.append(values[cut[i]:cut[i + 1]])
        offsets.append(offsets[-1] + len(ts_parts[-1]))
    return DecodedRequest(labels, np.concatenate(ts_parts) if ts_parts else signed,
                          np.concatenate(vs_parts) if vs_parts else values,
                          np.array(offsets, np.int64))
