"""``geoplex route FROM TO`` and ``geoplex routing ...``: routes, regions, snapping, traffic."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from functools import partial

from geoplex.clients.channel import ChannelOptions
from geoplex.clients.routing import MODES, RoutingClient, observation
from geoplex.routing.v1 import routing_pb2 as pb

from .commands import Subcommands, call, command_group
from .output import print_table

DEFAULT_TARGET = os.environ.get("GEOPLEX_ROUTING_TARGET", "127.0.0.1:50054")
MODE_NAMES = {pb.TRAVEL_MODE_DRIVE: "car", pb.TRAVEL_MODE_BICYCLE: "bicycle",
              pb.TRAVEL_MODE_WALK: "foot"}


def _connect(args: argparse.Namespace) -> Callable[[], RoutingClient]:
    token = getattr(args, "token", None) or os.environ.get("GEOPLEX_TOKEN")
    return partial(RoutingClient, args.target, ChannelOptions(token=token))


def point(text: str) -> tuple[float, float]:
    """``LAT,LNG`` -> (lat, lng), for argparse."""
    try:
        lat_text, lng_text = text.split(",")
        lat, lng = float(lat_text), float(lng_text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected LAT,LNG in degrees, e.g. 60.1686,24.9414"
                                         ) from None
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        raise argparse.ArgumentTypeError("latitude must be in -90..90, longitude in -180..180")
    return lat, lng


def distance(metres: float) -> str:
    return f"{metres / 1000:.1f} km" if metres >= 1000 else f"{metres:.0f} m"


def minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def instruction(step: pb.Step) -> str:
    """A step as a person reads it: "Turn left onto Kaivokatu"."""
    m = step.maneuver
    road = step.name or step.ref or "the road"
    modifier = pb.Maneuver.Modifier.Name(m.modifier).removeprefix("MODIFIER_").lower()
    modifier = modifier.replace("_", " ")
    if m.type == pb.Maneuver.TYPE_DEPART:
        return f"Head {compass(m.bearing_after)} on {road}"
    if m.type == pb.Maneuver.TYPE_ARRIVE:
        return "Arrive at your destination"
    if m.type == pb.Maneuver.TYPE_ROUNDABOUT:
        return f"At the roundabout, take exit {m.exit} onto {road}"
    if m.type == pb.Maneuver.TYPE_NEW_NAME:
        return f"Continue onto {road}"
    if m.type == pb.Maneuver.TYPE_CONTINUE:
        return "Make a U-turn" if modifier == "uturn" else f"Keep {modifier} on {road}"
    if modifier == "uturn":
        return f"Make a U-turn onto {road}"
    return f"Turn {modifier} onto {road}"


def compass(bearing: int) -> str:
    names = ("north", "northeast", "east", "southeast", "south", "southwest", "west",
             "northwest")
    return names[int((bearing % 360 + 22.5) // 45) % 8]


def cmd_route(args: argparse.Namespace) -> int:
    answer = call(_connect(args), lambda rt: rt.route(
        args.origin, args.destination, mode=args.mode, traffic_aware=args.traffic,
        alternatives=args.alternatives, avoid_tolls=args.avoid_tolls,
        avoid_motorways=args.avoid_motorways, avoid_ferries=args.avoid_ferries))
    for n, route in enumerate(answer.routes):
        title = "Route" if n == 0 else f"Alternative {n}"
        traffic = route.duration.ToTimedelta().total_seconds()
        static = route.static_duration.ToTimedelta().total_seconds()
        extra = f" ({minutes(static)} without traffic)" if abs(traffic - static) >= 1 else ""
        print(f"{title}: {distance(route.distance_meters)}, {minutes(traffic)}{extra}"
              f"{' via ' + route.summary if route.summary else ''}  [{answer.region}]")
        if n == 0 or args.alternatives_steps:
            print_table(("", "instruction", "distance", "time"),
                        [(i + 1, instruction(s), distance(s.distance_meters) if s.distance_meters
                          else "", minutes(s.duration.ToTimedelta().total_seconds())
                          if s.distance_meters else "")
                         for i, s in enumerate(route.steps)])
        print()
    print(f"start snapped {answer.origin.distance_meters:.0f} m to "
          f"{answer.origin.name or 'an unnamed road'}; end snapped "
          f"{answer.destination.distance_meters:.0f} m to "
          f"{answer.destination.name or 'an unnamed road'}")
    return 0


def cmd_regions(args: argparse.Namespace) -> int:
    regions = call(_connect(args), lambda rt: rt.regions())
    rows = []
    for r in regions:
        for g in r.graphs:
            rows.append((r.name, MODE_NAMES.get(g.travel_mode, "?"), f"{g.segment_count:,}",
                         f"{g.turn_count:,}", f"{g.memory_bytes / 1e6:.1f} MB",
                         g.metric_version, f"{g.traffic_segments:,}"))
    print_table(("region", "mode", "segments", "turns", "memory", "metric", "in traffic"),
                rows)
    return 0


def cmd_snap(args: argparse.Namespace) -> int:
    answer = call(_connect(args), lambda rt: rt.snap(args.points, mode=args.mode))
    print_table(("#", "road", "way", "distance", "segments"),
                [(i + 1, p.name or "(unnamed)", p.way_id, f"{p.distance_meters:.1f} m",
                  ", ".join(str(s) for s in p.segment_ids))
                 for i, p in enumerate(answer.points)])
    return 0


def cmd_matrix(args: argparse.Namespace) -> int:
    answer = call(_connect(args), lambda rt: rt.matrix(args.origins, args.destinations,
                                                       mode=args.mode,
                                                       durations_only=args.durations_only))
    status = {pb.MatrixCell.STATUS_OK: "", pb.MatrixCell.STATUS_NO_ROAD_NEARBY: "no road",
              pb.MatrixCell.STATUS_NO_ROUTE: "no route"}
    print_table(("from", "to", "distance", "time"),
                [(c.origin_index + 1, c.destination_index + 1,
                  ("-" if args.durations_only else distance(c.distance_meters))
                  if c.status == pb.MatrixCell.STATUS_OK else status.get(c.status, "?"),
                  minutes(c.duration.ToTimedelta().total_seconds())
                  if c.status == pb.MatrixCell.STATUS_OK else "")
                 for c in answer.cells])
    return 0


def cmd_traffic(args: argparse.Namespace) -> int:
    obs = observation(way_id=args.way, speed_factor=args.factor, speed_kmh=args.kmh)
    answer = call(_connect(args), lambda rt: rt.update_traffic(
        args.region, [obs], mode=args.mode, valid_for_s=args.minutes * 60))
    print(f"{answer.segments_updated} segments updated; metric {answer.metric_version} in use "
          f"after {answer.apply_time.ToTimedelta().total_seconds() * 1000:.0f} ms")
    return 0


def add_commands(sub: Subcommands) -> None:
    def common(p: argparse.ArgumentParser, token: bool = False) -> None:
        p.add_argument("--target", default=DEFAULT_TARGET,
                       help="host:port of the routing service (default: %(default)s)")
        if token:
            p.add_argument("--token", help="bearer token (default: $GEOPLEX_TOKEN)")

    def mode(p: argparse.ArgumentParser) -> None:
        p.add_argument("--mode", default="car", choices=sorted(MODES),
                       help="travel mode (default: car)")

    r = sub.add_parser("route", help="the fastest route between two points, step by step",
                       description="Route from FROM to TO (each LAT,LNG) and print the "
                       "distance, the time and the turn-by-turn steps.")
    r.add_argument("origin", metavar="FROM", type=point, help="start, LAT,LNG")
    r.add_argument("destination", metavar="TO", type=point, help="end, LAT,LNG")
    mode(r)
    r.add_argument("--traffic", action="store_true", help="use live traffic")
    r.add_argument("--alternatives", type=int, default=0, choices=(0, 1, 2),
                   help="alternative routes to add")
    r.add_argument("--alternatives-steps", action="store_true",
                   help="print the alternatives' steps too")
    r.add_argument("--avoid-tolls", action="store_true", help="no toll roads")
    r.add_argument("--avoid-motorways", action="store_true", help="no motorways")
    r.add_argument("--avoid-ferries", action="store_true", help="no ferries")
    common(r)
    r.set_defaults(func=cmd_route)

    rt_sub = command_group(
        sub, "routing", help="routing regions, snapping, matrices and live traffic",
        description="Call RoutingService: the loaded regions, snapping to roads, route "
        "matrices, and traffic updates (these need an admin --token).")
    g = rt_sub.add_parser("regions", help="loaded regions and their graphs",
                          description="List the loaded regions, per travel mode: graph size, "
                          "memory, traffic metric version and segments in traffic.")
    common(g)
    g.set_defaults(func=cmd_regions)

    s = rt_sub.add_parser("snap", help="the nearest road to points",
                          description="Snap each LAT,LNG to the nearest road usable by the mode.")
    s.add_argument("points", nargs="+", type=point, metavar="LAT,LNG")
    mode(s)
    common(s)
    s.set_defaults(func=cmd_snap)

    m = rt_sub.add_parser("matrix", help="travel times between sets of points",
                          description="Durations and distances from every origin to every "
                          "destination (each list LAT,LNG separated by spaces).")
    m.add_argument("--origins", nargs="+", type=point, required=True, metavar="LAT,LNG")
    m.add_argument("--destinations", nargs="+", type=point, required=True, metavar="LAT,LNG")
    m.add_argument("--durations-only", action="store_true",
                   help="skip the distances (each costs a path; much faster for large matrices)")
    mode(m)
    common(m)
    m.set_defaults(func=cmd_matrix)

    t = rt_sub.add_parser("traffic", help="set the speed of an OpenStreetMap way (admin)",
                          description="Apply a traffic observation to every segment of one "
                          "OpenStreetMap way: a share of free-flow speed or a speed in km/h.")
    t.add_argument("region")
    t.add_argument("way", type=int, help="OpenStreetMap way id (see `geoplex routing snap`)")
    speed = t.add_mutually_exclusive_group(required=True)
    speed.add_argument("--factor", type=float, help="share of free-flow speed, 0.02..1.5")
    speed.add_argument("--kmh", type=float, help="observed speed, km/h")
    t.add_argument("--minutes", type=float, default=10.0,
                   help="how long it holds before fading back (default 10)")
    mode(t)
    common(t, token=True)
    t.set_defaults(func=cmd_traffic)
