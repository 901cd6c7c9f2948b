"""Google's encoded polyline format, vectorised with numpy.

The `polyline` package encodes one coordinate at a time in Python: ~300 µs for a
250-point route here, as much as the route's search. This does the same
arithmetic on whole arrays (~20 µs). Rounding is half away from zero, as the
format's reference and the `polyline` package do; the unit tests hold the two
byte-for-byte equal.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
_SHIFTS = np.arange(7, dtype=np.int64)[:, None] * 5  # 7 chunks of 5 bits hold 35 bits


def encode(lats: F64, lons: F64, precision: int = 5) -> str:
    if lats.size == 0:
        return ""
    factor = 10.0 ** precision
    scaled = np.column_stack([lats, lons]) * factor
    ints = (np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)).astype(np.int64)
    deltas = np.diff(ints, axis=0, prepend=np.zeros((1, 2), dtype=np.int64)).ravel()
    values = np.where(deltas < 0, ~(deltas << 1), deltas << 1)  # zig-zag: sign in bit 0
    chunks = (values[None, :] >> _SHIFTS) & 0x1F                 # 7 x n, low bits first
    count = 1 + ((values[None, :] >> _SHIFTS[1:]) > 0).sum(axis=0)  # chunks per value
    k = np.arange(7)[:, None]
    codes = chunks + 63 + np.where(k < count[None, :] - 1, 0x20, 0)  # 0x20: more follow
    keep = k < count[None, :]
    text: str = codes.T[keep.T].astype(np.uint8).tobytes().decode("ascii")
    return text
