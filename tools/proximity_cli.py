"""``geoplex proximity ...`` commands: search, details and owner edits from a terminal."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from functools import partial

from geoplex.clients.channel import ChannelOptions
from geoplex.clients.proximity import RADII_M, ProximityClient

from .commands import Subcommands, call, command_group
from .output import print_next_page, print_table, printable

DEFAULT_TARGET = os.environ.get("GEOPLEX_PROXIMITY_TARGET", "127.0.0.1:50051")


def _connect(args: argparse.Namespace) -> Callable[[], ProximityClient]:
    """What opens a client at --target, with the --token (or GEOPLEX_TOKEN) if any."""
    token = getattr(args, "token", None) or os.environ.get("GEOPLEX_TOKEN")
    return partial(ProximityClient, args.target, ChannelOptions(token=token))


def cmd_search(args: argparse.Namespace) -> int:
    page = call(_connect(args), lambda px: px.search(
        args.lat, args.lng, args.radius, category=args.category, keyword=args.keyword,
        page_size=args.limit, page_token=args.page_token))
    print_table(("distance", "name", "category", "address", "id"),
                [(f"{h.distance_meters:,.0f} m", h.business.name, h.business.category,
                  h.business.address, h.business.id) for h in page.businesses])
    if not page.businesses:
        print(f"no businesses within {args.radius} m")
    print_next_page(page.next_page_token)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    b = call(_connect(args), lambda px: px.get(args.id))
    print_table(("field", "value"), [
        ("id", b.id), ("name", b.name), ("category", b.category),
        ("location", f"{b.location.latitude:.6f}, {b.location.longitude:.6f}"),
        ("address", b.address), ("phone", b.phone), ("website", b.website),
        ("opening hours", b.opening_hours), ("owner", b.owner or "-"), ("source", b.source),
        ("updated", b.update_time.ToDatetime().isoformat(timespec="seconds") + "Z")])
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    from geoplex.proximity.v1 import proximity_pb2 as pb
    from geoplex.type.v1.geo_pb2 import LatLng

    b = call(_connect(args), lambda px: px.create(pb.Business(
        name=args.name, category=args.category, address=args.address,
        location=LatLng(latitude=args.lat, longitude=args.lng))))
    print(f"created {printable(b.id)} ({printable(b.name)})")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    call(_connect(args), lambda px: px.delete(args.id))
    print(f"deleted {printable(args.id)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    page = call(_connect(args), lambda px: px.list_own(page_size=args.limit))
    print_table(("id", "name", "category", "address"),
                [(b.id, b.name, b.category, b.address) for b in page.businesses])
    return 0


def add_commands(sub: Subcommands) -> None:
    px_sub = command_group(
        sub, "proximity", help="search nearby businesses and manage your own",
        description="Call ProximityService: nearby search, details, and owner edits (these "
        "need --token or GEOPLEX_TOKEN; see geoplex auth dev-token).")

    def common(p: argparse.ArgumentParser, token: bool = False) -> None:
        p.add_argument("--target", default=DEFAULT_TARGET,
                       help="host:port of the proximity service (default: %(default)s)")
        if token:
            p.add_argument("--token", help="bearer token (default: $GEOPLEX_TOKEN)")

    s = px_sub.add_parser("search", help="businesses near a point, nearest first",
                          description="List businesses within a radius of a point, nearest "
                          "first, with their distance.")
    s.add_argument("lat", type=float, help="latitude, -90..90")
    s.add_argument("lng", type=float, help="longitude, -180..180")
    s.add_argument("--radius", type=int, default=1000, choices=RADII_M, help="metres")
    s.add_argument("--category", default="", help="exact category, e.g. cafe")
    s.add_argument("--keyword", default="", help="substring of the name")
    s.add_argument("--limit", type=int, default=20, help="results per page, 1..100")
    s.add_argument("--page-token", default="", help="from a previous page")
    common(s)
    s.set_defaults(func=cmd_search)

    g = px_sub.add_parser("get", help="one business's details", description="Show a business.")
    g.add_argument("id")
    common(g)
    g.set_defaults(func=cmd_get)

    c = px_sub.add_parser("create", help="create a business you own",
                          description="Create a business owned by the token's subject.")
    c.add_argument("name")
    c.add_argument("lat", type=float)
    c.add_argument("lng", type=float)
    c.add_argument("--category", default="")
    c.add_argument("--address", default="")
    common(c, token=True)
    c.set_defaults(func=cmd_create)

    d = px_sub.add_parser("delete", help="delete a business you own",
                          description="Delete a business owned by the token's subject.")
    d.add_argument("id")
    common(d, token=True)
    d.set_defaults(func=cmd_delete)

    ls = px_sub.add_parser("list", help="your own businesses",
                           description="List the businesses the token's subject owns.")
    ls.add_argument("--limit", type=int, default=20)
    common(ls, token=True)
    ls.set_defaults(func=cmd_list)
