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


def cmd_events(args: argparse.Namespace) -> int:
    """Follow the business-events topic as a consumer group, a line per event (each id
    once: a relay's resend after a crash is shown once)."""
    import asyncio
    import json

    from geoplex.clients.broker import BrokerClient
    from geoplex.clients.errors import GeoplexError

    seen: set[str] = set()
    shown = 0

    async def run() -> None:
        nonlocal shown
        async with BrokerClient([a for a in args.broker.split(",") if a]) as broker:
            async with broker.consumer(args.group, [args.topic],
                                       auto_offset_reset=args.start) as consumer:
                print(f"{'at':<24}  {'event':<8}  {'business':<22}  name", flush=True)
                while args.limit <= 0 or shown < args.limit:
                    try:
                        record = await asyncio.wait_for(consumer.__anext__(),
                                                        args.idle if args.idle > 0 else None)
                    except (TimeoutError, StopAsyncIteration):
                        return
                    try:
                        event = json.loads(record.value)
                        event_id = str(event["id"])
                    except (ValueError, KeyError, TypeError):
                        continue
                    if event_id in seen:
                        continue
                    seen.add(event_id)
                    shown += 1
                    name = (event.get("business") or {}).get("name", "")
                    print(f"{printable(event.get('at', '')):<24}  "
                          f"{printable(event.get('kind', '')):<8}  "
                          f"{printable(event.get('business_id', '')):<22}  {printable(name)}",
                          flush=True)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except GeoplexError as exc:
        from .output import print_error
        return print_error(exc)
    print(f"{shown} event(s)")
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

    ev = px_sub.add_parser(
        "events", help="follow business edits as they are published (created, updated, "
                       "deleted)",
        description="Read the business-events topic from the broker as a consumer group "
                    "(the proximity service publishes one event per committed edit) and "
                    "print each event once, until Ctrl-C, --limit or --idle.")
    ev.add_argument("--broker", default=os.environ.get("GEOPLEX_BROKER_TARGET",
                                                       "127.0.0.1:50053"),
                    help="broker host:port[,...] (default: %(default)s, or "
                         "$GEOPLEX_BROKER_TARGET)")
    ev.add_argument("--topic", default="business-events", help="default: %(default)s")
    ev.add_argument("--group", default="geoplex-cli-events",
                    help="consumer group: it remembers what it has shown (default: "
                         "%(default)s)")
    ev.add_argument("--from", dest="start", choices=("earliest", "latest"),
                    default="earliest", help="where a new group starts (default: "
                                             "%(default)s)")
    ev.add_argument("--limit", type=int, default=0, help="stop after this many (0: never)")
    ev.add_argument("--idle", type=float, default=0.0,
                    help="stop after this many seconds without an event (0: never)")
    ev.set_defaults(func=cmd_events)
