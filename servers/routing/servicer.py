"""RoutingService over gRPC: convert, await the application, convert back."""

from __future__ import annotations

import grpc
import grpc.aio

from geoplex.routing.v1 import routing_pb2 as pb
from geoplex.routing.v1 import routing_pb2_grpc
from geoplex.servers._runtime.auth import TokenVerifier
from geoplex.servers._runtime.errors import PermissionDenied

from . import convert
from .app import RoutingApp

Context = grpc.aio.ServicerContext


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    def __init__(self, app: RoutingApp, verifier: TokenVerifier,
                 admins: frozenset[str]) -> None:
        self.app = app
        self.verifier = verifier
        self.admins = admins

    async def ComputeRoute(self, request: pb.ComputeRouteRequest,
                           context: Context[pb.ComputeRouteRequest, pb.ComputeRouteResponse]
                           ) -> pb.ComputeRouteResponse:
        answer = await self.app.route(convert.route_query_from_pb(request))
        return convert.route_answer_to_pb(answer)

    async def ComputeRouteMatrix(self, request: pb.ComputeRouteMatrixRequest,
                                 context: Context[pb.ComputeRouteMatrixRequest,
                                                  pb.ComputeRouteMatrixResponse]
                                 ) -> pb.ComputeRouteMatrixResponse:
        origins, destinations = convert.matrix_points(request, self.app.config.matrix_max)
        answer = await self.app.matrix(origins, destinations,
                                       convert.mode_from_pb(request.travel_mode),
                                       request.traffic_aware, request.durations_only)
        return convert.matrix_to_pb(answer)

    async def SnapToRoads(self, request: pb.SnapToRoadsRequest,
                          context: Context[pb.SnapToRoadsRequest, pb.SnapToRoadsResponse]
                          ) -> pb.SnapToRoadsResponse:
        points = convert.points(list(request.points), "points", convert.MAX_SNAP_POINTS)
        region, snapped = await self.app.snap(points, convert.mode_from_pb(request.travel_mode))
        return pb.SnapToRoadsResponse(points=[convert.snapped_to_pb(s) for s in snapped],
                                      region=region)

    async def MatchTrace(self, request: pb.MatchTraceRequest,
                         context: Context[pb.MatchTraceRequest, pb.MatchTraceResponse]
                         ) -> pb.MatchTraceResponse:
        trace = convert.trace_from_pb(request)
        region, result, graph = await self.app.match_trace(
            trace, convert.mode_from_pb(request.travel_mode))
        return convert.match_to_pb(region, result, graph.graph)

    async def ListRegions(self, request: pb.ListRegionsRequest,
                          context: Context[pb.ListRegionsRequest, pb.ListRegionsResponse]
                          ) -> pb.ListRegionsResponse:
        return convert.regions_to_pb(self.app.list_regions())

    async def UpdateTraffic(self, request: pb.UpdateTrafficRequest,
                            context: Context[pb.UpdateTrafficRequest, pb.UpdateTrafficResponse]
                            ) -> pb.UpdateTrafficResponse:
        caller = self.verifier.subject(tuple(context.invocation_metadata() or ()))
        if caller not in self.admins:
            raise PermissionDenied("UpdateTraffic is for traffic administrators "
                                   "(GEOPLEX_ROUTING_ADMINS)", reason="NOT_AN_ADMIN")
        observations, valid_for = convert.observations_from_pb(request)
        touched, version, took = await self.app.update_traffic(
            request.region, convert.mode_from_pb(request.travel_mode), observations,
            valid_for if valid_for is not None else self.app.config.traffic_valid_s)
        response = pb.UpdateTrafficResponse(segments_updated=touched, metric_version=version)
        response.apply_time.FromNanoseconds(int(took * 1e9))
        return response

    async def GetTraffic(self, request: pb.GetTrafficRequest,
                         context: Context[pb.GetTrafficRequest, pb.GetTrafficResponse]
                         ) -> pb.GetTrafficResponse:
        answer = await self.app.traffic(convert.traffic_query_from_pb(request))
        return convert.traffic_to_pb(answer)


def add_to_server(servicer: RoutingServicer, server: grpc.aio.Server) -> None:
    routing_pb2_grpc.add_RoutingServiceServicer_to_server(servicer, server)
