"""Typed async client for TelemetryService.

    async with TelemetryClient("127.0.0.1:50056") as tm:
        now_ms = int(time.time() * 1000)
        await tm.write([series({"__name__": "up", "job": "api"}, [(now_ms, 1.0)])])
        for labels in (await tm.list_series(['up{job="api"}'])).series:
            print(label_dict(labels))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import grpc.aio

from geoplex.telemetry.v1 import telemetry_pb2 as pb
from geoplex.telemetry.v1 import telemetry_pb2_grpc

from .channel import BaseClient, ChannelOptions

TimeSeries = pb.TimeSeries


def series(labels: Mapping[str, str], samples: Iterable[tuple[int, float]]) -> pb.TimeSeries:
    """One series (its labels, ``__name__`` included) with (timestamp ms, value) samples."""
    return pb.TimeSeries(labels=[pb.Label(name=k, value=v) for k, v in labels.items()],
                         samples=[pb.Sample(timestamp_ms=t, value=v) for t, v in samples])


def label_dict(labels: pb.LabelSet) -> dict[str, str]:
    """A listed series' labels as a dict."""
    return {label.name: label.value for label in labels.labels}


def _set_range(request: pb.ListSeriesRequest | pb.ListLabelsRequest, start_s: float | None,
               end_s: float | None) -> None:
    if start_s is not None:
        request.start.FromNanoseconds(int(start_s * 1e9))
    if end_s is not None:
        request.end.FromNanoseconds(int(end_s * 1e9))


class TelemetryClient(BaseClient):
    def __init__(self, target: str | grpc.aio.Channel, options: ChannelOptions | None = None,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> None:
        super().__init__(target, options, interceptors)
        self.stub = telemetry_pb2_grpc.TelemetryServiceStub(self.channel)

    async def write(self, batch: Sequence[pb.TimeSeries], *,
                    timeout: float | None = None) -> pb.WriteResponse:
        """Store samples; answers once they are in the write-ahead log (retried safely:
        a repeated sample is dropped)."""
        return await self.call(self.stub.Write, pb.WriteRequest(series=list(batch)),
                               timeout=timeout)

    async def list_series(self, match: Sequence[str], *, start_s: float | None = None,
                          end_s: float | None = None, page_size: int = 0, page_token: str = "",
                          timeout: float | None = None) -> pb.ListSeriesResponse:
        """The label sets of the series matching any of the selectors (``up{job="api"}``)
        with samples between ``start_s`` and ``end_s`` (seconds; default the last hour)."""
        request = pb.ListSeriesRequest(match=list(match), page_size=page_size,
                                       page_token=page_token)
        _set_range(request, start_s, end_s)
        return await self.call(self.stub.ListSeries, request, timeout=timeout)

    async def list_labels(self, name: str = "", *, match: Sequence[str] = (),
                          start_s: float | None = None, end_s: float | None = None,
                          timeout: float | None = None) -> list[str]:
        """The label names (``name`` empty) or the values of label ``name``."""
        request = pb.ListLabelsRequest(name=name, match=list(match))
        _set_range(request, start_s, end_s)
        return list((await self.call(self.stub.ListLabels, request, timeout=timeout)).values)

    async def query(self, query: str, *, at_s: float | None = None, resolution: str = "",
                    timeout: float | None = None) -> pb.QueryResponse:
        """A PromQL query at one instant (``at_s`` seconds since the epoch; default now),
        served from the tier ``resolution`` ("raw", "1m", "1h"; default the finest that
        holds the range: the answer's ``resolution`` says which)."""
        request = pb.QueryRequest(query=query, resolution=resolution)
        if at_s is not None:
            request.time.FromNanoseconds(int(at_s * 1e9))
        return await self.call(self.stub.Query, request, timeout=timeout)

    async def query_range(self, query: str, start_s: float, end_s: float, step_s: float, *,
                          resolution: str = "", timeout: float | None = None
                          ) -> pb.QueryRangeResponse:
        """A PromQL query from ``start_s`` to ``end_s``, a point every ``step_s`` seconds
        (``resolution`` as for :meth:`query`)."""
        request = pb.QueryRangeRequest(query=query, resolution=resolution)
        request.start.FromNanoseconds(int(start_s * 1e9))
        request.end.FromNanoseconds(int(end_s * 1e9))
        request.step.FromNanoseconds(int(step_s * 1e9))
        return await self.call(self.stub.QueryRange, request, timeout=timeout)

    async def storage_info(self, *, timeout: float | None = None) -> pb.GetStorageInfoResponse:
        return await self.call(self.stub.GetStorageInfo, pb.GetStorageInfoRequest(),
                               timeout=timeout)
