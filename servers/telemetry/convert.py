"""The only place that knows both the telemetry pb2 messages and the store's types."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers._runtime.paging import decode_cursor, encode_cursor, page_size
from geoplex.telemetry.v1 import telemetry_pb2 as pb

from .remote_write import DecodedRequest
from .domain import RAW, TIERS
from .tsdb.api import StoreStats
from .tsdb.chunks import Float64s, Int64s
from .tsdb.head import SeriesInput
from .tsdb.labels import Labels, Matcher

DEFAULT_RANGE_MS = 3_600_000   # series and labels: the last hour unless asked
DEFAULT_SERIES_PAGE = 1000
MAX_SERIES_PAGE = 10_000
MAX_MATCH = 100

SelectorParser = Callable[[str], list[Matcher]]


def write_from_pb(request: pb.WriteRequest, *, max_series: int, max_samples: int,
                  max_future_ms: int, now_ms: int | None = None) -> list[SeriesInput]:
    """Every series of the request with its samples as arrays, in order; the request's
    own bounds checked here (the store checks labels, order and the out-of-order
    window)."""
    if not request.series:
        raise InvalidArgument("series", "is required: at least one series",
                              reason="REQUIRED_FIELD")
    return _columns([([(label.name, label.value) for label in series.labels],
                      [s.timestamp_ms for s in series.samples],
                      [s.value for s in series.samples]) for series in request.series],
                    max_series=max_series, max_samples=max_samples,
                    max_future_ms=max_future_ms, now_ms=now_ms, samples_field="samples",
                    time_field="timestamp_ms")


def _columns(found: Sequence[tuple[list[tuple[str, str]], Sequence[int] | Int64s,
                                   Sequence[float] | Float64s]], *,
             max_series: int, max_samples: int, max_future_ms: int, now_ms: int | None,
             samples_field: str, time_field: str, skip_empty: bool = False
             ) -> list[SeriesInput]:
    if len(found) > max_series:
        raise InvalidArgument("series", f"{len(found)} series in one request",
                              allowed=[f"1..{max_series}"])
    total = sum(len(times) for _, times, _ in found)
    if total > max_samples:
        raise InvalidArgument("series", f"{total} samples in one request",
                              allowed=[f"1..{max_samples}"])
    horizon = (now_ms if now_ms is not None else int(time.time() * 1000)) + max_future_ms
    out: list[SeriesInput] = []
    for i, (labels, times, values) in enumerate(found):
        if not len(times):
            if skip_empty:
                continue
            raise InvalidArgument(f"series[{i}].{samples_field}",
                                  "is required: at least one sample", reason="REQUIRED_FIELD")
        ts = np.asarray(times, np.int64)
        ahead = np.flatnonzero(ts > horizon)
        if len(ahead):
            raise InvalidArgument(f"series[{i}].{samples_field}[{int(ahead[0])}].{time_field}",
                                  f"is more than {max_future_ms // 1000} s ahead of the "
                                  "server's clock", reason="TOO_FAR_IN_FUTURE")
        out.append((labels, ts, np.asarray(values, np.float64)))
    return out


def range_from_pb(start: Timestamp, has_start: bool, end: Timestamp, has_end: bool,
                  now_ms: int | None = None) -> tuple[int, int]:
    """(mint, maxt) in ms, both inclusive; by default the last hour up to now."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    maxt = end.ToMilliseconds() if has_end else now
    mint = start.ToMilliseconds() if has_start else maxt - DEFAULT_RANGE_MS
    if mint > maxt:
        raise InvalidArgument("start", "must not be after end")
    return mint, maxt


def selectors_from_pb(match: Sequence[str], parse: SelectorParser, *,
                      required: bool) -> list[list[Matcher]]:
    """Each ``match[i]`` as its matchers (a PromQL series selector)."""
    if required and not match:
        raise InvalidArgument("match", "is required: at least one series selector, e.g. "
                              "up{job=\"api\"}", reason="REQUIRED_FIELD")
    if len(match) > MAX_MATCH:
        raise InvalidArgument("match", f"{len(match)} selectors", allowed=[f"1..{MAX_MATCH}"])
    out = []
    for i, text in enumerate(match):
        try:
            out.append(parse(text))
        except InvalidArgument as exc:
            raise InvalidArgument(f"match[{i}]", exc.message, reason=exc.reason) from None
    return out


def series_page(request: pb.ListSeriesRequest) -> tuple[int, int]:
    """(page size, offset) of a ListSeries call, the token bound to its selectors and range."""
    size = page_size(request.page_size, DEFAULT_SERIES_PAGE, MAX_SERIES_PAGE)
    offset = 0
    if request.page_token:
        position, _ = decode_cursor(request.page_token, _series_scope(request))
        offset = int(position)
    return size, offset


def _series_scope(request: pb.ListSeriesRequest) -> str:
    return "series|" + "|".join(request.match) + f"|{request.start}|{request.end}"


def series_to_pb(request: pb.ListSeriesRequest, found: Sequence[Labels], size: int,
                 offset: int) -> pb.ListSeriesResponse:
    out = pb.ListSeriesResponse()
    for labels in found[offset:offset + size]:
        out.series.add(labels=[pb.Label(name=n, value=v) for n, v in labels.pairs])
    if len(found) > offset + size:
        out.next_page_token = encode_cursor(float(offset + size), "series",
                                            _series_scope(request))
    return out


def stats_to_pb(stats: StoreStats, retention_ms: Mapping[str, int] | None = None
                ) -> pb.GetStorageInfoResponse:
    """Per tier its blocks, bytes on disk and stored samples (a rollup tier stores six
    component series per source series, one sample per bucket each), and how long it
    keeps data (``retention_ms``, else the design's defaults)."""
    out = pb.GetStorageInfoResponse(head_series=stats.head_series,
                                    head_samples=stats.head_samples,
                                    wal_bytes=stats.wal_bytes)
    for tier in TIERS:
        blocks = stats.blocks if tier is RAW else tuple(
            b for b in stats.tier_blocks if b.resolution == tier.resolution)
        info = out.tiers.add(resolution=tier.resolution, blocks=len(blocks),
                             samples=sum(b.samples for b in blocks),
                             bytes=sum(b.bytes for b in blocks),
                             series=max((b.series for b in blocks), default=0))
        keep_ms = (retention_ms or {}).get(tier.resolution)
        info.retention.FromMilliseconds(keep_ms if keep_ms else tier.retention_s * 1000)
    return out



def instant_from_pb(time_: Timestamp, has_time: bool, now_ms: int | None = None) -> int:
    if not has_time:
        return now_ms if now_ms is not None else int(time.time() * 1000)
    return time_.ToMilliseconds()


def query_range_from_pb(request: pb.QueryRangeRequest) -> tuple[int, int, int]:
    """(start, end, step) in ms, each required; end not before start, step > 0."""
    for name in ("start", "end", "step"):
        if not request.HasField(name):
            raise InvalidArgument(name, "is required", reason="REQUIRED_FIELD")
    start, end = request.start.ToMilliseconds(), request.end.ToMilliseconds()
    step = request.step.ToMilliseconds()
    if end < start:
        raise InvalidArgument("end", "must not be before start")
    if step <= 0:
        raise InvalidArgument("step", "must be a positive duration")
    return start, end, step


def remote_write_series(decoded: DecodedRequest, *, max_series: int, max_samples: int,
                        max_future_ms: int, now_ms: int | None = None) -> list[SeriesInput]:
    """A Prometheus remote-write request's series (those with samples; decoded by
    :func:`~.remote_write.decode_write_request`), checked as Write's are —
    over the whole request's arrays at once."""
    if len(decoded) > max_series:
        raise InvalidArgument("series", f"{len(decoded)} series in one request",
                              allowed=[f"1..{max_series}"])
    if len(decoded.timestamps) > max_samples:
        raise InvalidArgument("series", f"{len(decoded.timestamps)} samples in one request",
                              allowed=[f"1..{max_samples}"])
    horizon = (now_ms if now_ms is not None else int(time.time() * 1000)) + max_future_ms
    if len(decoded.timestamps) and int(decoded.timestamps.max()) > horizon:
        at = int(np.argmax(decoded.timestamps > horizon))
        i = int(np.searchsorted(decoded.offsets, at, side="right")) - 1
        raise InvalidArgument(f"series[{i}].samples[{at - int(decoded.offsets[i])}].timestamp",
                              f"is more than {max_future_ms // 1000} s ahead of the "
                              "server's clock", reason="TOO_FAR_IN_FUTURE")
    return [(labels, ts, vs) for labels, ts, vs in decoded.series() if len(ts)]


