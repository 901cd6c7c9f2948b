"""``geoplex geocode TEXT``, ``geoplex reverse LAT,LNG``, ``geoplex maps info`` and
``geoplex maps simulate`` (the navigation simulator, :mod:`.navsim`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from collections.abc import Callable
from functools import partial

from geoplex.clients.channel import ChannelOptions
from geoplex.clients.maps import MapsClient
from geoplex.maps.v1 import maps_pb2 as pb

from .commands import Subcommands, call, command_group
from .output import print_next_page, print_table
from .routing_cli import DEFAULT_TARGET as ROUTING_TARGET
from .routing_cli import point

DEFAULT_TARGET = os.environ.get("GEOPLEX_MAPS_TARGET", "127.0.0.1:50055")


def _connect(args: argparse.Namespace) -> Callable[[], MapsClient]:
    return partial(MapsClient, args.target, ChannelOptions())


def kind_name(kind: pb.PlaceKind.ValueType) -> str:
    return pb.PlaceKind.Name(kind).removeprefix("PLACE_KIND_").lower()


def cmd_geocode(args: argparse.Namespace) -> int:
    answer = call(_connect(args), lambda maps: maps.geocode(
        args.text, bias=args.near, page_size=args.limit, page_token=args.page_token))
    if not answer.candidates:
        print("nothing matches")
        return 0
    print_table(("#", "label", "kind", "lat", "lng", "confidence"),
                [(i + 1, c.label + (" (interpolated)" if c.interpolated else ""),
                  kind_name(c.kind), f"{c.location.latitude:.5f}",
                  f"{c.location.longitude:.5f}", f"{c.confidence:.2f}")
                 for i, c in enumerate(answer.candidates)])
    print_next_page(answer.next_page_token)
    return 0


def cmd_reverse(args: argparse.Namespace) -> int:
    answer = call(_connect(args), lambda maps: maps.reverse(
        args.location, max_distance_m=args.max_distance))
    print(f"{answer.label}  ({kind_name(answer.kind)}, {answer.distance_meters:.0f} m away)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    info = call(_connect(args), lambda maps: maps.info())
    print_table(("kind", "features"), [(kind_name(c.kind), f"{c.count:,}") for c in info.counts])
    print(f"memory {info.memory_bytes / 1e6:.0f} MB; built from {', '.join(info.sources)}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from .navsim.cli import run_simulate  # numpy and the simulator: only when asked

    return run_simulate(args)


def add_commands(sub: Subcommands) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--target", default=DEFAULT_TARGET,
                       help="host:port of the maps service (default: %(default)s)")

    g = sub.add_parser("geocode", help="find an address, street, place or point of interest",
                       description="Geocode TEXT (\"Mannerheimintie 10, Helsinki\"): ranked "
                       "candidates with their coordinates; typos and missing accents are fine.")
    g.add_argument("text", help="what to look for, e.g. \"Aleksanterinkatu 52, Helsinki\"")
    g.add_argument("--near", type=point, metavar="LAT,LNG",
                   help="prefer candidates near this point")
    g.add_argument("--limit", type=int, default=5, help="candidates per page (1..50)")
    g.add_argument("--page-token", default="", help="the next page of an earlier geocode")
    common(g)
    g.set_defaults(func=cmd_geocode)

    r = sub.add_parser("reverse", help="the address or street at a point",
                       description="Reverse-geocode LAT,LNG: the nearest address within "
                       "--max-distance metres, else the street, else the place.")
    r.add_argument("location", type=point, metavar="LAT,LNG", help="the point")
    r.add_argument("--max-distance", type=float, default=0.0,
                   help="metres an address may be away (1..1000; default the server's 100)")
    common(r)
    r.set_defaults(func=cmd_reverse)

    m = command_group(sub, "maps", help="the maps service: its gazetteer, a navigation "
                      "simulator",
                      description="Call MapsService: gazetteer contents (geocoding itself is "
                      "`geoplex geocode` / `geoplex reverse`), or drive simulated cars "
                      "against it (`simulate`).")
    i = m.add_parser("info", help="features per kind and memory",
                     description="How many addresses, streets, POIs and places the "
                     "gazetteer holds, its memory and its data files.")
    common(i)
    i.set_defaults(func=cmd_info)

    s = m.add_parser(
        "simulate", help="drive simulated cars on Gothenburg and jam an arterial",
        description="Navigation simulator: --drivers cars follow real routes on the "
        "Gothenburg graph, each sending a GPS fix a second in batches (ReportLocationBatch) "
        "to maps, whose traffic feed map-matches them and updates routing. A seeded "
        "arterial with a detour is slowed to --fraction of its speed from "
        "--congestion-start for --congestion-seconds; every second the ETA of a route "
        "through it and whether the router prefers the detour are recorded. Prints a line "
        "per tick, then a table and a summary (seconds to the ETA rising, to the detour, "
        "back to normal); --out writes everything as JSON. How fast it recovers depends on "
        "maps' GEOPLEX_MAPS_TRAFFIC_* and routing's GEOPLEX_ROUTING_TRAFFIC_FADE_SECONDS.")
    s.add_argument("--maps", default=DEFAULT_TARGET,
                   help="host:port of the maps service (default: %(default)s)")
    s.add_argument("--routing", default=ROUTING_TARGET,
                   help="host:port of the routing service (default: %(default)s)")
    s.add_argument("--drivers", type=int, default=40, help="cars (default: %(default)s)")
    s.add_argument("--congestion-start", type=float, default=60.0, metavar="SECONDS",
                   help="when the jam starts, seconds into the run (default: %(default)s)")
    s.add_argument("--congestion-seconds", type=float, default=120.0, metavar="SECONDS",
                   help="how long it lasts (default: %(default)s)")
    s.add_argument("--fraction", type=float, default=0.25,
                   help="share of its speed the arterial keeps (default: %(default)s)")
    s.add_argument("--duration", type=float, default=360.0, metavar="SECONDS",
                   help="length of the whole run (default: %(default)s)")
    s.add_argument("--stop-after-recovery", type=float, default=None, metavar="SECONDS",
                   help="end early once back to normal for this long")
    s.add_argument("--stop-after-rise", type=float, default=None, metavar="SECONDS",
                   help="end early once the probe's ETA has risen for this long (a smoke "
                        "check that live traffic reaches the router)")
    s.add_argument("--seed", type=int, default=1,
                   help="seed of the scenario, the trips and the noise (default: %(default)s)")
    s.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    s.set_defaults(func=cmd_simulate)
