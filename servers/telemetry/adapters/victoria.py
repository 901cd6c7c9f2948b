"""A :class:`~..tsdb.api.Storage` on a VictoriaMetrics single-node server, so the telemetry
service keeps its API (gRPC, the Prometheus HTTP API and our PromQL engine) on a store
that scales out: :func:`open_victoria` checks the server and reads its limits.

How each call maps (all over HTTP with the standard library, one connection per call;
``timeout_s`` bounds each socket operation, not a whole call):

- ``append``: the batch is validated as the local store validates it (the same
  :meth:`~..tsdb.head.Head.prepare`: label rules, integer timestamps, numeric values, an
  exact duplicate inside the batch dropped and reported, another value at a timestamp
  the batch already has rejected), then against what VictoriaMetrics would drop
  *silently* (it answers 204 all the same): a timestamp before 1970, before
  ``-retentionPeriod`` or more than two days ahead, more labels than
  ``-maxLabelsPerTimeseries``, a value longer than ``-maxLabelValueLen``. A rejected
  batch is :class:`~..tsdb.errors.SampleRejected` and nothing is sent. The rest is one
  remote-write 1.0 request (the ``RemoteWriteRequest`` protobuf the HTTP API decodes,
  snappy-compressed) to ``/api/v1/write``; it returns once VictoriaMetrics answered 2xx.
  Stale markers (:data:`~..tsdb.chunks.STALE_NAN`) go through as they are.
- Read-after-write: VictoriaMetrics acknowledges a write once the rows are in its
  in-memory buffers and searches them only once they are flushed: about a second later
  for a known series, 10 s and more for a new one on 1.79.5 (the new series' index
  entries, and the tag-filter cache that remembered it absent). So each append ends
  with ``/internal/force_flush`` (present in 1.79.5; with ``-forceFlushAuthKey`` set,
  pass ``flush_auth_key``), which makes the buffers searchable parts: written to disk
  before 1.85, kept in memory for ``-inmemoryDataFlushInterval`` (5 s; the flag does
  not exist in 1.79.5) from 1.85 on. Each flush makes a small part to merge: at hundreds
  of appends a second, send larger batches or pass ``force_flush=False`` and accept the
  delay. ``-search.latencyOffset`` (30 s) hides the newest samples from VictoriaMetrics'
  own ``/api/v1/query`` only, and ``-search.cacheTimestampOffset`` governs its
  ``query_range`` response cache: ``/api/v1/export``, all ``select`` reads, is affected
  by neither, so no flag is needed for this adapter.
- ``select``: ``/api/v1/export`` (JSON lines of raw samples, ``[start, end]`` inclusive
  as ours) with one ``match[]`` rendered from the matchers; a series split over several
  lines is joined, and samples sharing a timestamp are collapsed to one (the stale
  marker if there is one, else the largest value, as recent VictoriaMetrics releases
  deduplicate; 1.79.5 keeps the first written). Exact in time, like the local store.
- ``series``, ``label_names``, ``label_values``: ``/api/v1/series``, ``/api/v1/labels``
  and ``/api/v1/label/<name>/values``. VictoriaMetrics finds series through a per-day
  (UTC) index, so these answer with every series that has samples on the *days* the
  range touches, a superset of the local store's exact answer for ranges shorter than a
  day. Without a range they ask from 1970 on (VictoriaMetrics' own default is the last
  day, or the last five minutes for series). VictoriaMetrics lists ``__name__`` for any
  ``match[]``, even one selecting nothing; ``label_names`` asks for its values to tell.
- ``stats``: VictoriaMetrics has no head, WAL or blocks, so: ``head_series`` is
  ``totalSeries`` of ``/api/v1/status/tsdb`` for today (UTC); ``head_samples`` is
  ``vm_pending_rows{type="storage"}`` (rows received, not yet in a part); the head's
  time span is unknown (None) and ``wal_bytes`` is 0; one :class:`BlockStats`
  ``victoriametrics`` sums the whole store: ``series`` is ``totalSeries`` over all time
  (``date=1970-01-01``), ``samples`` the ``vm_rows{type="storage/..."}``, ``bytes`` all
  ``vm_data_size_bytes`` (index included), its times 0 (VictoriaMetrics does not
  expose its span). Its parts and merges map to nothing here. VictoriaMetrics refreshes
  those ``/metrics`` figures about once a second (all of them read 0 for the first
  second after it starts), so ``stats`` reads them until
  ``vm_rows_added_to_storage_total`` counts every row this adapter had acknowledged
  since its last ``stats`` (at most ``STATS_SETTLE_S``; then it answers with what it read,
  as after a VictoriaMetrics restart, whose counters start again at 0).

Errors: a server that does not answer, times out, or answers 429 or 5xx is
:class:`Unavailable`; a 400 or 422 is :class:`InvalidArgument` with VictoriaMetrics'
message (``field`` ``samples`` for a write, ``matchers`` for a read); any other status
(auth, a wrong path) is :class:`FailedPrecondition`.

Limits, where this store is not the local one:

- Out-of-order: there is no window. Any timestamp inside the retention and up to two
  days ahead is accepted, in any order; the local store's TOO_OLD and OUT_OF_BOUNDS
  (against its blocks) do not happen.
- Duplicates across batches: VictoriaMetrics stores a resent sample again (1.79.5
  without ``-dedup.minScrapeInterval``) and accepts another value at a stored timestamp
  where the local store rejects it (DUPLICATE_TIMESTAMP); ``select`` collapses them as
  above, so reads show one sample per timestamp. The result counts them as appended.
  ``-dedup.minScrapeInterval=1ms`` makes VictoriaMetrics drop them itself, without
  thinning; a larger interval thins the samples and changes every answer (a warning
  is logged at open).
- Values: VictoriaMetrics keeps a value as a decimal of about 12 significant digits
  with an exponent shared by a block of a series, so values differ from the float64
  written by up to ~1e-12 relative, more for small values in a series that also holds
  values many orders of magnitude larger. A NaN other than the stale marker is not
  stored at all. Infinities are kept.
- Exemplars, native histograms and metadata are not written (the local store keeps none).
- A batch is one request: VictoriaMetrics refuses a body over ``-maxInsertRequestSize``
  (32 MB compressed) with 400. A write that times out, or whose flush fails, may have
  been stored: sending it again is safe (reads collapse the copies).
- Single-node only: the cluster's paths carry a tenant (``/insert/<id>/prometheus/...``,
  ``/select/<id>/prometheus/...``) and its ``force_flush`` is on each vmstorage.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.client import HTTPResponse
from typing import Any

import numpy as np
import pysnappy

from geoplex import __version__
from geoplex.servers._runtime.errors import (FailedPrecondition, GeoplexError, InvalidArgument,
                                             Unavailable)
from geoplex.telemetry.v1.remote_write_pb2 import (RemoteLabel, RemoteSample,
                                                   RemoteTimeSeries, RemoteWriteRequest)

from ..tsdb.api import AppendResult, BlockStats, Series, StoreStats
from ..tsdb.chunks import STALE_NAN, STALE_NAN_BITS, Float64s, Int64s
from ..tsdb.errors import RejectReason, SampleRejected
from ..tsdb.head import INT64_MAX, Head, SampleInput, SeriesInput
from ..tsdb.labels import METRIC_NAME, Labels, Matcher, validate_label_name

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000
MAX_FUTURE_MS = 2 * DAY_MS  # VictoriaMetrics drops samples further ahead of its clock
MAX_TIME_MS = 9_223_372_036_854  # the last millisecond Go's time.Time holds (year 2262)
MONTH_MS = 31 * DAY_MS  # -retentionPeriod without a suffix counts months of 31 days
_RETENTION_UNITS = {"h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS, "y": 365 * DAY_MS}
_ERROR_PREFIX = re.compile(r'^remoteAddr: "[^"]*"; requestURI: [^;]*; ')
_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_METRIC_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_INFINITIES = {"+Inf": "Infinity", "-Inf": "-Infinity", "Inf": "Infinity"}
_INFINITY_TOKEN = re.compile(r"[+-]?Inf")
_MAX_MESSAGE = 1000


@dataclass(frozen=True)
class VictoriaLimits:
    """What the server drops without an error, read from its flags at open (the
    defaults of VictoriaMetrics where its ``/metrics`` does not say)."""

    retention_ms: int = MONTH_MS
    max_labels: int = 30
    max_label_value_bytes: int = 16 * 1024
    dedup_interval: str = "0s"


def _message(raw: bytes) -> str:
    text = _ERROR_PREFIX.sub("", raw.decode(errors="replace").strip())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


def _seconds(ms: int) -> str:
    """A non-negative millisecond time as VictoriaMetrics reads it: seconds, 3 decimals."""
    return f"{ms // 1000}.{ms % 1000:03d}"


def _quote(value: str) -> str:
    """A label value as a MetricsQL string literal (quotes, backslashes and control
    characters escaped; Go's strconv.Unquote reads JSON's escapes)."""
    return json.dumps(value, ensure_ascii=False)


def selector(matchers: Sequence[Matcher]) -> str:
    """``{name="value",...}`` for VictoriaMetrics' ``match[]``; no matcher: every series
    with a name (VictoriaMetrics refuses an empty selector)."""
    if not matchers:
        return '{__name__!=""}'
    return "{" + ",".join(f"{m.name}{m.op.value}{_quote(m.value)}" for m in matchers) + "}"


def parse_retention(raw: str) -> int:
    """``-retentionPeriod`` in milliseconds: a number with ``h``, ``d``, ``w`` or ``y``, or
    of months (31 days) without a suffix."""
    raw = raw.strip()
    unit = _RETENTION_UNITS.get(raw[-1:]) if raw else None
    number = raw[:-1] if unit is not None else raw
    try:
        value = float(number)
    except ValueError:
        raise FailedPrecondition(f"VictoriaMetrics reports -retentionPeriod={raw!r}, "
                                 "which is not a duration") from None
    return round(value * (unit if unit is not None else MONTH_MS))


def _export_line(line: bytes) -> tuple[Labels, Int64s, Float64s] | None:
    """One line of ``/api/v1/export``: the labels, the timestamps and the values (a
    ``null`` is a stale marker; VictoriaMetrics writes infinities as bare ``+Inf``)."""
    text = line.decode()
    if not text.strip():
        return None
    cut = text.rfind('"values":')  # after it only numbers, null and infinities
    if cut < 0:
        raise ValueError(f"a line without values: {text[:200]!r}")
    text = text[:cut] + _INFINITY_TOKEN.sub(lambda m: _INFINITIES[m.group()], text[cut:])
    record = json.loads(text)
    labels = Labels((str(k), str(v)) for k, v in record["metric"].items())
    values = np.array([STALE_NAN if v is None else float(v) for v in record["values"]],
                      dtype=np.float64)
    timestamps = np.array(record["timestamps"], dtype=np.int64)
    return labels, timestamps, values


def _merge(parts: list[tuple[Int64s, Float64s]]) -> tuple[Int64s, Float64s]:
    """One series' samples ascending, one per timestamp: a stale marker wins, then the
    largest value (VictoriaMetrics' deduplication keeps the largest)."""
    if len(parts) == 1:
        ts, vs = parts[0]
    else:
        ts = np.concatenate([p[0] for p in parts])
        vs = np.concatenate([p[1] for p in parts])
    if len(ts) < 2 or bool(np.all(ts[1:] > ts[:-1])):
        return ts, vs
    stale = vs.view(np.uint64) == np.uint64(STALE_NAN_BITS)
    order = np.lexsort((vs, stale, ts))  # the last key sorts first
    ts, vs = ts[order], vs[order]
    last = np.append(ts[1:] != ts[:-1], True)
    out_ts: Int64s = ts[last]
    out_vs: Float64s = vs[last]
    return out_ts, out_vs


def _metric_values(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """``(name, labels, value)`` for each sample line of a Prometheus text exposition."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        found = _METRIC_LINE.match(line)
        if found is None:
            continue
        name, raw_labels, raw_value = found.groups()
        try:
            value = float(raw_value)
        except ValueError:
            continue
        yield name, dict(_METRIC_LABEL.findall(raw_labels or "")), value


STATS_SETTLE_S = 3.0   # how long stats() waits for VictoriaMetrics' /metrics to catch up
STATS_POLL_S = 0.1


class VictoriaMetricsStorage:
    """The :class:`~..tsdb.api.Storage` protocol on a VictoriaMetrics single-node server at
    ``url`` (e.g. ``http://127.0.0.1:8428``); see the module's docstring for the mapping.
    Thread-safe: it holds no connection, each call opens its own."""

    def __init__(self, url: str, timeout_s: float, *, limits: VictoriaLimits | None = None,
                 force_flush: bool = True, flush_auth_key: str = "") -> None:
        if timeout_s <= 0:
            raise InvalidArgument("timeout_s", "must be > 0")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.limits = limits or VictoriaLimits()
        self.force_flush = force_flush
        self.flush_auth_key = flush_auth_key
        # rows acknowledged that stats() has not seen counted yet, and the count it saw
        self._count_lock = threading.Lock()
        self._rows_unseen = 0
        self._rows_added_seen = 0.0

    def __repr__(self) -> str:
        return f"VictoriaMetricsStorage({self.url!r})"

    # ---- HTTP -----------------------------------------------------------------------

    def _open(self, path: str, *, form: Mapping[str, str | Sequence[str]] | None = None,
              body: bytes | None = None, headers: Mapping[str, str] | None = None,
              field: str = "matchers") -> HTTPResponse:
        """The 2xx response to ``path`` (a POST when there is a form or a body); the
        server's refusal as the runtime's errors."""
        data = body
        all_headers = {"User-Agent": f"geoplex-telemetry/{__version__}", **(headers or {})}
        if form is not None:
            data = urllib.parse.urlencode(form, doseq=True).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        request = urllib.request.Request(self.url + path, data=data, headers=all_headers,
                                         method="POST" if data is not None else "GET")
        try:
            response: HTTPResponse = urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            try:
                message = _message(exc.read())
            except OSError:
                message = exc.reason
            finally:
                exc.close()
            raise self._refused(path, exc.code, message, field) from None
        except (OSError, ValueError) as exc:  # URLError, refused, reset, timed out
            raise self._unreachable(path, exc) from exc
        return response

    def _unreachable(self, path: str, exc: BaseException) -> Unavailable:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return Unavailable(f"VictoriaMetrics at {self.url} is unreachable ({path}): "
                           f"{reason or type(exc).__name__}", reason="VICTORIAMETRICS_UNAVAILABLE",
                           metadata={"url": self.url})

    def _refused(self, path: str, status: int, message: str, field: str) -> GeoplexError:
        if status in (400, 422):
            return InvalidArgument(field, f"VictoriaMetrics refused it: {message}",
                                   reason="VICTORIAMETRICS_REJECTED")
        if status == 429 or status >= 500:
            return Unavailable(f"VictoriaMetrics at {self.url} answered {status} to {path}: "
                               f"{message}", reason="VICTORIAMETRICS_UNAVAILABLE",
                               metadata={"url": self.url, "status": str(status)})
        return FailedPrecondition(
            f"VictoriaMetrics at {self.url} answered {status} to {path}: {message} (a "
            "single-node VictoriaMetrics without HTTP auth is expected)",
            reason="VICTORIAMETRICS_MISCONFIGURED", metadata={"url": self.url})

    def _read(self, path: str, form: Mapping[str, str | Sequence[str]] | None = None,
              field: str = "matchers") -> bytes:
        response = self._open(path, form=form, field=field)
        try:
            with response:
                return response.read()
        except OSError as exc:
            raise self._unreachable(path, exc) from exc

    def _data(self, path: str, form: Mapping[str, str | Sequence[str]],
              field: str = "matchers") -> Any:
        raw = self._read(path, form, field)
        try:
            answer = json.loads(raw)
            if answer.get("status") != "success":
                raise FailedPrecondition(f"VictoriaMetrics answered {path} with "
                                         f"{_message(raw)}")
            return answer["data"]
        except (ValueError, AttributeError, KeyError):
            raise FailedPrecondition(f"VictoriaMetrics at {self.url} sent what is not a "
                                     f"Prometheus API answer to {path}: {_message(raw)}"
                                     ) from None

    # ---- writing --------------------------------------------------------------------

    def append_series(self, batch: Sequence[SeriesInput]) -> AppendResult:
        """See :meth:`~..tsdb.api.Storage.append_series` (flattened into :meth:`append`)."""
        return self.append([(labels, t, v) for labels, ts, vs in batch
                            for t, v in zip(np.asarray(ts).tolist(), np.asarray(vs).tolist())])

    def append(self, samples: Sequence[SampleInput]) -> AppendResult:
        """See :meth:`~..tsdb.api.Storage.append`; ``duplicates`` are the exact duplicates
        inside the batch (VictoriaMetrics cannot say which samples it had already)."""
        if not samples:
            return AppendResult(0)
        prepared = Head(INT64_MAX).prepare(samples)
        if not prepared.ids:
            return AppendResult(0, tuple(prepared.duplicates))
        dropped = set(prepared.duplicates)
        positions = [i for i in range(len(samples)) if i not in dropped]
        labels_of = dict(prepared.new_series)
        self._check_limits(prepared.ids, prepared.timestamps, positions, labels_of)
        body = pysnappy.compress(self._write_request(prepared.ids, prepared.timestamps,
                                                     prepared.bits, labels_of))
        response = self._open("/api/v1/write", body=body, field="samples", headers={
            "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        response.close()
        with self._count_lock:
            self._rows_unseen += len(prepared.ids)
        if self.force_flush:
            self.flush()
        return AppendResult(len(prepared.ids), tuple(prepared.duplicates))

    def _check_limits(self, ids: list[int], timestamps: list[int], positions: list[int],
                      labels_of: Mapping[int, Labels]) -> None:
        """SampleRejected for the first sample VictoriaMetrics would drop silently."""
        now = int(time.time() * 1000)
        oldest = max(0, now - self.limits.retention_ms)
        newest = now + MAX_FUTURE_MS
        checked: set[int] = set()
        for series_id, t, index in zip(ids, timestamps, positions):
            if t < oldest:
                raise SampleRejected(
                    RejectReason.OUT_OF_BOUNDS, index,
                    f"timestamp {t} is before {oldest}, the oldest VictoriaMetrics keeps "
                    "(1970, or its -retentionPeriod before now)")
            if t > newest:
                raise SampleRejected(
                    RejectReason.OUT_OF_BOUNDS, index,
                    f"timestamp {t} is more than two days ahead of now ({now}); "
                    "VictoriaMetrics drops such samples")
            if series_id in checked:
                continue
            checked.add(series_id)
            labels = labels_of[series_id]
            if len(labels) > self.limits.max_labels:
                raise SampleRejected(
                    RejectReason.INVALID_LABELS, index,
                    f"{labels!r} has {len(labels)} labels; VictoriaMetrics keeps at most "
                    f"{self.limits.max_labels} (-maxLabelsPerTimeseries) and drops the rest")
            for name, value in labels.pairs:
                if len(value.encode()) > self.limits.max_label_value_bytes:
                    raise SampleRejected(
                        RejectReason.INVALID_LABELS, index,
                        f"label {name!r} is longer than {self.limits.max_label_value_bytes} "
                        "bytes, which VictoriaMetrics truncates (-maxLabelValueLen)")

    @staticmethod
    def _write_request(ids: list[int], timestamps: list[int], bits: list[int],
                       labels_of: Mapping[int, Labels]) -> bytes:
        """A remote-write 1.0 WriteRequest: a time series per label set, samples in time
        order, values with their exact bits (the stale marker's NaN payload kept)."""
        values = np.array(bits, np.uint64).view(np.float64).tolist()
        grouped: dict[int, list[tuple[int, float]]] = {}
        for series_id, t, v in zip(ids, timestamps, values):
            grouped.setdefault(series_id, []).append((t, v))
        request = RemoteWriteRequest(timeseries=[
            RemoteTimeSeries(
                labels=[RemoteLabel(name=n, value=v) for n, v in labels_of[sid].pairs],
                samples=[RemoteSample(value=v, timestamp=t) for t, v in sorted(points)])
            for sid, points in grouped.items()])
        return request.SerializeToString()

    def flush(self) -> None:
        """Make everything acknowledged so far searchable (``/internal/force_flush``)."""
        form = {"authKey": self.flush_auth_key} if self.flush_auth_key else None
        path = "/internal/force_flush"
        if form is not None:
            path += "?" + urllib.parse.urlencode(form)
        self._read(path, field="flush")

    # ---- reading --------------------------------------------------------------------

    def select(self, matchers: Sequence[Matcher], mint_ms: int,
               maxt_ms: int) -> Iterator[Series]:
        """See :meth:`~..tsdb.api.Storage.select`: exact in time, one sample per timestamp."""
        mint, maxt = max(mint_ms, 0), min(maxt_ms, MAX_TIME_MS)
        if maxt < mint:
            return iter(())
        path = "/api/v1/export"
        response = self._open(path, form={"match[]": selector(matchers),
                                          "start": _seconds(mint), "end": _seconds(maxt)})
        found: dict[Labels, list[tuple[Int64s, Float64s]]] = {}
        try:
            with response:
                for line in response:
                    parsed = _export_line(line)
                    if parsed is not None and len(parsed[1]):
                        found.setdefault(parsed[0], []).append((parsed[1], parsed[2]))
        except OSError as exc:
            raise self._unreachable(path, exc) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise FailedPrecondition(f"VictoriaMetrics at {self.url} sent an export line "
                                     f"that does not parse: {exc}") from None
        return iter([Series(labels, *_merge(found[labels])) for labels in sorted(found)])

    @staticmethod
    def _range(mint_ms: int | None, maxt_ms: int | None) -> tuple[int, int]:
        """The range for the index endpoints: from 1 ms (VictoriaMetrics reads a start of
        0 as none given, and then looks back a day or five minutes only)."""
        mint = 1 if mint_ms is None else max(mint_ms, 1)
        maxt = MAX_TIME_MS if maxt_ms is None else min(maxt_ms, MAX_TIME_MS)
        return mint, maxt

    def _index_form(self, matchers: Sequence[Matcher], mint: int,
                    maxt: int) -> dict[str, str | Sequence[str]]:
        form: dict[str, str | Sequence[str]] = {"start": _seconds(mint), "end": _seconds(maxt)}
        if matchers:
            form["match[]"] = selector(matchers)
        return form

    def series(self, matchers: Sequence[Matcher], mint_ms: int, maxt_ms: int) -> list[Labels]:
        """The selected series with samples on the UTC days the range touches."""
        mint, maxt = self._range(mint_ms, maxt_ms)
        if maxt < mint:
            return []
        data = self._data("/api/v1/series", {**self._index_form(matchers, mint, maxt),
                                             "match[]": selector(matchers)})
        return sorted({Labels((str(k), str(v)) for k, v in one.items()) for one in data})

    def label_names(self, matchers: Sequence[Matcher] = (), mint_ms: int | None = None,
                    maxt_ms: int | None = None) -> list[str]:
        mint, maxt = self._range(mint_ms, maxt_ms)
        if maxt < mint:
            return []
        form = self._index_form(matchers, mint, maxt)
        names = {str(name) for name in self._data("/api/v1/labels", form)}
        if matchers and METRIC_NAME in names:
            # VictoriaMetrics names __name__ for any match[], even one selecting nothing
            if not self._data(f"/api/v1/label/{METRIC_NAME}/values", form):
                names.discard(METRIC_NAME)
        return sorted(names)

    def label_values(self, name: str, matchers: Sequence[Matcher] = (),
                     mint_ms: int | None = None, maxt_ms: int | None = None) -> list[str]:
        validate_label_name(name, internal=True)
        mint, maxt = self._range(mint_ms, maxt_ms)
        if maxt < mint:
            return []
        data = self._data(f"/api/v1/label/{urllib.parse.quote(name)}/values",
                          self._index_form(matchers, mint, maxt))
        return sorted(str(value) for value in data if value)

    def stats(self) -> StoreStats:
        """See the module's docstring for what maps to what."""
        today = self._data("/api/v1/status/tsdb", {"topN": "1"})
        overall = self._data("/api/v1/status/tsdb", {"topN": "1", "date": "1970-01-01"})
        rows, size, pending = self._storage_counts()
        store = BlockStats(id="victoriametrics", min_time=0, max_time=0,
                           series=int(overall.get("totalSeries", 0)), samples=int(rows),
                           bytes=int(size), level=0, encoding="victoriametrics")
        return StoreStats(head_series=int(today.get("totalSeries", 0)),
                          head_samples=int(pending), head_min_time=None, head_max_time=None,
                          wal_bytes=0, blocks=(store,))


    def _storage_counts(self) -> tuple[float, float, float]:
        """Rows in parts, bytes, pending rows from ``/metrics``, once they count what this
        adapter had acknowledged (see the module's docstring)."""
        with self._count_lock:
            unseen, target = self._rows_unseen, self._rows_added_seen + self._rows_unseen
        deadline = time.monotonic() + STATS_SETTLE_S
        while True:
            rows = size = pending = added = 0.0
            for name, labels, value in _metric_values(self._read("/metrics").decode()):
                kind = labels.get("type", "")
                if name == "vm_rows" and kind.startswith("storage/"):
                    rows += value
                elif name == "vm_data_size_bytes":
                    size += value
                elif name == "vm_pending_rows" and kind == "storage":
                    pending += value
                elif name == "vm_rows_added_to_storage_total":
                    added = value
            if added >= target or time.monotonic() >= deadline:
                break
            time.sleep(STATS_POLL_S)
        with self._count_lock:
            self._rows_unseen -= unseen
            self._rows_added_seen = added
        return rows, size, pending


def read_limits(storage: VictoriaMetricsStorage) -> VictoriaLimits:
    """The server's flags that make it drop samples silently, from its ``/metrics``
    (``flag{name=..., value=...}``); VictoriaMetrics' defaults for what it does not list."""
    flags = {labels["name"]: labels.get("value", "")
             for name, labels, _ in _metric_values(storage._read("/metrics").decode())
             if name == "flag" and "name" in labels}
    defaults = VictoriaLimits()

    def integer(flag: str, default: int) -> int:
        try:
            return int(flags[flag])
        except (KeyError, ValueError):
            return default

    retention = flags.get("retentionPeriod")
    return VictoriaLimits(
        retention_ms=parse_retention(retention) if retention else defaults.retention_ms,
        max_labels=integer("maxLabelsPerTimeseries", defaults.max_labels),
        max_label_value_bytes=integer("maxLabelValueLen", defaults.max_label_value_bytes),
        dedup_interval=flags.get("dedup.minScrapeInterval", defaults.dedup_interval))


def open_victoria(url: str, timeout_s: float, *, force_flush: bool = True,
                  flush_auth_key: str = "") -> VictoriaMetricsStorage:
    """A storage on the VictoriaMetrics single-node server at ``url``, once its
    ``/health`` answers ``OK``: Unavailable when it does not answer, FailedPrecondition
    when something else does. Its limits are read from ``/metrics``."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidArgument("url", f"{url!r} is not an http(s) URL of a VictoriaMetrics "
                              "server (e.g. http://127.0.0.1:8428)")
    storage = VictoriaMetricsStorage(url, timeout_s, force_flush=force_flush,
                                     flush_auth_key=flush_auth_key)
    health = storage._read("/health", field="url").decode(errors="replace").strip()
    if health != "OK":
        raise FailedPrecondition(f"{url} answered /health with {health[:200]!r}, not "
                                 "VictoriaMetrics' 'OK'", reason="VICTORIAMETRICS_MISCONFIGURED")
    try:
        storage.limits = read_limits(storage)
    except GeoplexError as exc:  # /metrics behind -metricsAuthKey: keep the defaults
        logger.warning("VictoriaMetrics at %s: cannot read its flags (%s); assuming its "
                       "default limits", url, exc.message)
    if storage.limits.dedup_interval not in ("0s", "0", "1ms", ""):
        logger.warning("VictoriaMetrics at %s thins samples to one per %s "
                       "(-dedup.minScrapeInterval): answers differ from the local store's",
                       url, storage.limits.dedup_interval)
    return storage
