"""NotifierService over gRPC: convert, await the dispatcher, convert back."""

from __future__ import annotations

import grpc
import grpc.aio

from geoplex.notifier.v1 import notifier_pb2 as pb
from geoplex.notifier.v1 import notifier_pb2_grpc

from . import convert
from .dispatcher import Dispatcher

Context = grpc.aio.ServicerContext


class NotifierServicer(notifier_pb2_grpc.NotifierServiceServicer):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def PostAlerts(self, request: pb.PostAlertsRequest,
                         context: Context[pb.PostAlertsRequest, pb.PostAlertsResponse]
                         ) -> pb.PostAlertsResponse:
        accepted = self.dispatcher.post_alerts(convert.posted_alerts(request))
        return pb.PostAlertsResponse(accepted=accepted)

    async def ListAlerts(self, request: pb.ListAlertsRequest,
                         context: Context[pb.ListAlertsRequest, pb.ListAlertsResponse]
                         ) -> pb.ListAlertsResponse:
        found = self.dispatcher.list_alerts(convert.filter_matchers(request.filter),
                                            include_suppressed=request.include_suppressed,
                                            include_resolved=request.include_resolved)
        return convert.alerts_page(request, found)

    async def CreateSilence(self, request: pb.CreateSilenceRequest,
                            context: Context[pb.CreateSilenceRequest, pb.CreateSilenceResponse]
                            ) -> pb.CreateSilenceResponse:
        given = request.silence
        silence = await self.dispatcher.create_silence(
            convert.matcher_inputs(given.matchers),
            convert.seconds(given.starts_at) if given.HasField("starts_at") else None,
            convert.seconds(given.ends_at) if given.HasField("ends_at") else None,
            given.created_by, given.comment)
        return pb.CreateSilenceResponse(
            silence=convert.silence_to_pb(silence, self.dispatcher.clock()))

    async def GetSilence(self, request: pb.GetSilenceRequest,
                         context: Context[pb.GetSilenceRequest, pb.GetSilenceResponse]
                         ) -> pb.GetSilenceResponse:
        silence = await self.dispatcher.get_silence(convert.silence_id(request.id))
        return pb.GetSilenceResponse(
            silence=convert.silence_to_pb(silence, self.dispatcher.clock()))

    async def ListSilences(self, request: pb.ListSilencesRequest,
                           context: Context[pb.ListSilencesRequest, pb.ListSilencesResponse]
                           ) -> pb.ListSilencesResponse:
        found = self.dispatcher.list_silences(convert.filter_matchers(request.filter),
                                              include_expired=request.include_expired)
        return convert.silences_page(request, found, self.dispatcher.clock())

    async def ExpireSilence(self, request: pb.ExpireSilenceRequest,
                            context: Context[pb.ExpireSilenceRequest, pb.ExpireSilenceResponse]
                            ) -> pb.ExpireSilenceResponse:
        silence = await self.dispatcher.expire_silence(convert.silence_id(request.id),
                                                       request.expired_by, request.comment)
        return pb.ExpireSilenceResponse(
            silence=convert.silence_to_pb(silence, self.dispatcher.clock()))

    async def ListNotifications(
            self, request: pb.ListNotificationsRequest,
            context: Context[pb.ListNotificationsRequest, pb.ListNotificationsResponse]
    ) -> pb.ListNotificationsResponse:
        receiver = convert.receiver_filter(request.receiver)
        return convert.notifications_page(request,
                                          await self.dispatcher.list_notifications(receiver))


def add_to_server(servicer: NotifierServicer, server: grpc.aio.Server) -> None:
    notifier_pb2_grpc.add_NotifierServiceServicer_to_server(servicer, server)
