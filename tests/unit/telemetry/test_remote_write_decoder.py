"""The remote-write decoder that reads samples at numpy speed, held to the generated
protobuf parser on any request (odd layouts, negative and huge timestamps, NaN payloads,
fields it skips), and refusing what is not a WriteRequest."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers.telemetry.remote_write import (
    MalformedWriteRequest,
    decode_write_request,
)
from geoplex.telemetry.v1.remote_write_pb2 import RemoteWriteRequest

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
samples = st.lists(st.tuples(st.integers(-(1 << 63), (1 << 63) - 1),
                             st.floats(allow_nan=True, allow_infinity=True)), max_size=30)
series = st.tuples(st.lists(st.tuples(names, names), max_size=4), samples,
                   st.booleans())   # labels after the samples: another layout


def build(spec: list[tuple[list[tuple[str, str]], list[tuple[int, float]], bool]]) -> bytes:
    request = RemoteWriteRequest()
    for labels, points, labels_last in spec:
        ts = request.timeseries.add()
        if not labels_last:
            for name, value in labels:
                ts.labels.add(name=name, value=value)
        for t, v in points:
            ts.samples.add(timestamp=t, value=v)
        if labels_last:
            for name, value in labels:
                ts.labels.add(name=name, value=value)
    return request.SerializeToString()


def expected(data: bytes) -> list[tuple[list[tuple[str, str]], list[int], bytes]]:
    request = RemoteWriteRequest.FromString(data)
    return [([(lb.name, lb.value) for lb in ts.labels], [s.timestamp for s in ts.samples],
             np.array([s.value for s in ts.samples], np.float64).tobytes())
            for ts in request.timeseries]


def got(data: bytes) -> list[tuple[list[tuple[str, str]], list[int], bytes]]:
    return [(list(labels), ts.tolist(), vs.tobytes())
            for labels, ts, vs in decode_write_request(data).series()]


@settings(max_examples=300, deadline=None)
@given(st.lists(series, max_size=6))
def test_it_answers_as_the_protobuf_parser(spec: list[tuple[list[tuple[str, str]],
                                                              list[tuple[int, float]],
                                                              bool]]) -> None:
    data = build(spec)
    assert got(data) == expected(data)


def test_a_sender_like_body_takes_the_fast_path_and_keeps_nan_payloads() -> None:
    stale = np.array([0x7FF0000000000002], np.uint64).view(np.float64)[0]
    points = [(1_700_000_000_000 + 15_000 * k, float(k)) for k in range(100)]
    points[7] = (points[7][0], stale)
    data = build([([("__name__", "up"), ("job", "a")], points, False)] * 3)
    decoded = decode_write_request(data)
    assert len(decoded) == 3 and decoded.offsets.tolist() == [0, 100, 200, 300]
    assert decoded.values[7:8].view(np.uint64)[0] == 0x7FF0000000000002
    assert math.isnan(decoded.values[7]) and got(data) == expected(data)


@pytest.mark.parametrize("data", [b"\x0a\x05\x0a\x03ab", b"\x0a", b"\x0f\x00",
                                  b"\x0a\x04\x12\x09\x09\x00"])
def test_what_is_not_a_write_request_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedWriteRequest):
        decode_write_request(data)
