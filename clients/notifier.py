"""Typed async client for NotifierService.

    async with NotifierClient("127.0.0.1:50057") as nf:
        await nf.post_alerts([alert({"alertname": "HighLatency", "service": "api"},
                                    {"summary": "p99 above 500 ms"})])
        silence = await nf.create_silence([matcher("service", "=", "api")],
                                          ends_at=time.time() + 3600,
                                          created_by="alice", comment="deploying")
        for n in (await nf.list_notifications()).notifications:
            print(n.receiver, n.integration, n.state, n.attempts)

An evaluator posts every alert to every notifier node (one client per node), as
Prometheus posts to every Alertmanager; give each alert its ``starts_at`` so that all
nodes see the same alert.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import TypeAlias

import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from geoplex.notifier.v1 import notifier_pb2 as pb
from geoplex.notifier.v1 import notifier_pb2_grpc

from .channel import BaseClient, ChannelOptions

Alert = pb.Alert
Matcher = pb.Matcher
Silence = pb.Silence
MATCH_OPERATORS = {"=": pb.MATCH_TYPE_EQUAL, "!=": pb.MATCH_TYPE_NOT_EQUAL,
                   "=~": pb.MATCH_TYPE_REGEX, "!~": pb.MATCH_TYPE_NOT_REGEX}
When: TypeAlias = float | datetime.datetime


def timestamp(when: When) -> Timestamp:
    """A Timestamp from seconds since the epoch or an aware datetime."""
    out = Timestamp()
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:
            raise ValueError("a naive datetime is ambiguous: give it a timezone")
        when = when.timestamp()
    out.FromNanoseconds(round(when * 1e9))
    return out


def alert(labels: Mapping[str, str], annotations: Mapping[str, str] | None = None, *,
          starts_at: When | None = None, ends_at: When | None = None,
          generator_url: str = "") -> pb.Alert:
    """An alert to post: ``ends_at`` None while it fires (or a few evaluation intervals
    ahead, as Prometheus sends), in the past once resolved."""
    message = pb.Alert(labels=dict(labels), annotations=dict(annotations or {}),
                       generator_url=generator_url)
    if starts_at is not None:
        message.starts_at.CopyFrom(timestamp(starts_at))
    if ends_at is not None:
        message.ends_at.CopyFrom(timestamp(ends_at))
    return message


def matcher(name: str, op: str, value: str) -> pb.Matcher:
    """A silence matcher: ``op`` is ``=``, ``!=``, ``=~`` or ``!~`` (regexes anchored)."""
    if op not in MATCH_OPERATORS:
        raise ValueError(f"{op!r} is not a match operator (=, !=, =~, !~)")
    return pb.Matcher(name=name, value=value, type=MATCH_OPERATORS[op])


class NotifierClient(BaseClient):
    def __init__(self, target: str | grpc.aio.Channel, options: ChannelOptions | None = None,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> None:
        super().__init__(target, options, interceptors)
        self.stub = notifier_pb2_grpc.NotifierServiceStub(self.channel)

    async def post_alerts(self, alerts: Sequence[pb.Alert], *,
                          timeout: float | None = None) -> int:
        """Post alerts (retried on UNAVAILABLE: a repeat changes nothing); how many the
        node took (a resolved alert it never held is dropped)."""
        response = await self.call(self.stub.PostAlerts,
                                   pb.PostAlertsRequest(alerts=list(alerts)), timeout=timeout)
        return response.accepted

    async def list_alerts(self, filter: str = "", *, include_suppressed: bool = False,
                          include_resolved: bool = False, page_size: int = 0,
                          page_token: str = "", timeout: float | None = None
                          ) -> pb.ListAlertsResponse:
        """One page of the alerts the node holds (``filter``: ``{severity="page"}``)."""
        request = pb.ListAlertsRequest(filter=filter, include_suppressed=include_suppressed,
                                       include_resolved=include_resolved, page_size=page_size,
                                       page_token=page_token)
        return await self.call(self.stub.ListAlerts, request, timeout=timeout)

    async def create_silence(self, matchers: Sequence[pb.Matcher], *, ends_at: When,
                             created_by: str, comment: str, starts_at: When | None = None,
                             timeout: float | None = None) -> pb.Silence:
        """A silence of the alerts all ``matchers`` match, from ``starts_at`` (default
        now) until ``ends_at``. Not retried: a repeat would make a second silence."""
        silence = pb.Silence(matchers=list(matchers), ends_at=timestamp(ends_at),
                             created_by=created_by, comment=comment)
        if starts_at is not None:
            silence.starts_at.CopyFrom(timestamp(starts_at))
        response = await self.call(self.stub.CreateSilence,
                                   pb.CreateSilenceRequest(silence=silence), timeout=timeout)
        return response.silence

    async def get_silence(self, silence_id: str, *, timeout: float | None = None
                          ) -> pb.Silence:
        response = await self.call(self.stub.GetSilence, pb.GetSilenceRequest(id=silence_id),
                                   timeout=timeout)
        return response.silence

    async def list_silences(self, filter: str = "", *, include_expired: bool = False,
                            page_size: int = 0, page_token: str = "",
                            timeout: float | None = None) -> pb.ListSilencesResponse:
        """Active silences first (ending soonest), then pending, then (with
        ``include_expired``) expired ones."""
        request = pb.ListSilencesRequest(filter=filter, include_expired=include_expired,
                                         page_size=page_size, page_token=page_token)
        return await self.call(self.stub.ListSilences, request, timeout=timeout)

    async def expire_silence(self, silence_id: str, *, expired_by: str, comment: str = "",
                             timeout: float | None = None) -> pb.Silence:
        """End a silence now (one expired already is returned unchanged)."""
        request = pb.ExpireSilenceRequest(id=silence_id, expired_by=expired_by,
                                          comment=comment)
        response = await self.call(self.stub.ExpireSilence, request, timeout=timeout)
        return response.silence

    async def list_notifications(self, receiver: str = "", *, page_size: int = 0,
                                 page_token: str = "", timeout: float | None = None
                                 ) -> pb.ListNotificationsResponse:
        """The notification log, newest first (``receiver``: only that receiver's)."""
        request = pb.ListNotificationsRequest(receiver=receiver, page_size=page_size,
                                              page_token=page_token)
        return await self.call(self.stub.ListNotifications, request, timeout=timeout)
