"""``geoplex presence ...`` commands: friends, sharing, nearby friends, and the load simulator."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

from geoplex.clients.channel import ChannelOptions
from geoplex.clients.presence import PresenceClient

from .commands import Subcommands, call, command_group
from .output import print_error, print_next_page, print_table, printable

DEFAULT_TARGET = os.environ.get("GEOPLEX_PRESENCE_TARGET", "127.0.0.1:50052")


def _connect(args: argparse.Namespace) -> Callable[[], PresenceClient]:
    """What opens the client of the user of --token (or GEOPLEX_TOKEN), at --target."""
    token = args.token or os.environ.get("GEOPLEX_TOKEN")
    if not token:
        raise SystemExit("geoplex: error: these calls act for a user: pass --token or set "
                         "GEOPLEX_TOKEN (geoplex auth dev-token USER)")
    return partial(PresenceClient, args.target, ChannelOptions(token=token))


# -- friends, sharing, nearby ------------------------------------------------------

def cmd_friends_add(args: argparse.Namespace) -> int:
    call(_connect(args), lambda presence: presence.add_friend(args.user_id))
    print(f"now friends with {printable(args.user_id)}")
    return 0


def cmd_friends_remove(args: argparse.Namespace) -> int:
    call(_connect(args), lambda presence: presence.remove_friend(args.user_id))
    print(f"no longer friends with {printable(args.user_id)}")
    return 0


def cmd_friends_list(args: argparse.Namespace) -> int:
    page = call(_connect(args), lambda presence: presence.list_friends(
        page_size=args.limit, page_token=args.page_token))
    for user_id in page.user_ids:
        print(printable(user_id))
    if not page.user_ids:
        print("no friends yet (geoplex presence friends add USER_ID)")
    print_next_page(page.next_page_token)
    return 0


def cmd_share(args: argparse.Namespace) -> int:
    sharing = call(_connect(args),
                   lambda presence: presence.set_sharing(args.state == "on"))
    print("sharing your location with friends" if sharing else
          "not sharing your location (friends no longer see you)")
    return 0


def cmd_nearby(args: argparse.Namespace) -> int:
    page = call(_connect(args), lambda presence: presence.nearby(
        page_size=args.limit, page_token=args.page_token))
    print_table(("distance", "friend", "location", "updated"),
                [(f"{f.distance_meters:,.0f} m", f.user_id,
                  f"{f.location.latitude:.5f}, {f.location.longitude:.5f}",
                  f.update_time.ToDatetime().isoformat(timespec="seconds") + "Z")
                 for f in page.friends])
    if not page.friends:
        print(f"no friends sharing within {page.radius_meters:,.0f} m")
    print_next_page(page.next_page_token)
    return 0


# -- simulate ----------------------------------------------------------------------

def cmd_simulate(args: argparse.Namespace) -> int:
    from geoplex.servers._runtime.auth import auth_secret
    from geoplex.servers._runtime.config import ConfigError

    from . import simulator as sim

    if not args.mongo_uri:
        return print_error("--mongo-uri (or GEOPLEX_MONGO_URI) is needed to load the friend "
                           "graph: use the one `geoplex up` prints")
    if args.users < 2:
        return print_error("--users must be at least 2")
    try:
        secret = auth_secret()
    except ConfigError as exc:
        return print_error(exc)
    config = sim.SimConfig(
        targets=tuple(args.target or [DEFAULT_TARGET]), users=args.users,
        interval_s=args.interval, sim_interval_s=args.sim_interval, speed_mps=args.speed,
        duration_s=args.duration, warmup_s=args.warmup, radius_m=args.radius,
        processes=args.processes, users_per_channel=args.users_per_channel,
        prefix=args.prefix or sim.new_prefix(), seed=args.seed, auth_secret=secret)
    print("road network: Gothenburg (geoplex data fetch gothenburg)...", flush=True)
    net = sim.RoadNetwork.gothenburg(progress=lambda m: print(f"  {m}", flush=True))
    ns, ew = net.extent_m()
    print(f"  {net.nodes:,} junctions, {net.edges:,} road segments, "
          f"{ns / 1000:.0f} x {ew / 1000:.0f} km", flush=True)
    graph = sim.FriendGraph.power_law(args.users, args.friends, seed=args.seed)
    g = graph.summary()
    print(f"friend graph: {g['users']:,} users, {g['pairs']:,} friendships, mean degree "
          f"{g['avg_degree']:.1f} (target {g['target_avg_degree']:.1f}), max "
          f"{g['max_degree']}", flush=True)
    seconds = asyncio.run(sim.load_graph(args.mongo_uri, args.database, config, graph,
                                         progress=lambda m: print(f"  {m}", flush=True)))
    print(f"  loaded in {seconds:.1f} s; connecting {args.users:,} users to "
          f"{', '.join(config.targets)} (user ids {config.prefix}0..)", flush=True)
    try:
        result = sim.Simulator(config, net, graph).run(
            progress=lambda line: print(line, flush=True))
    finally:
        if not args.keep:
            asyncio.run(sim.unload_graph(args.mongo_uri, args.database, config.prefix))
    print()
    print_table(("measure", "value"), sim.result_rows(result))
    if args.json:
        args.json.write_text(json.dumps(result.as_dict(), indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    return 0 if result.connected == result.users and not result.errors else 1


def add_commands(sub: Subcommands) -> None:
    from . import simulator as sim

    pr_sub = command_group(
        sub, "presence", help="nearby friends: friends, sharing, and a load simulator",
        description="Call PresenceService: manage friends and location sharing, list nearby "
        "friends (these act for the user of --token or GEOPLEX_TOKEN; see geoplex auth "
        "dev-token), or drive many simulated users against the servers.")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--target", default=DEFAULT_TARGET,
                       help="host:port of the presence service (default: %(default)s; "
                            "$GEOPLEX_PRESENCE_TARGET)")
        p.add_argument("--token", help="bearer token of the user (default: $GEOPLEX_TOKEN)")

    f_sub = command_group(pr_sub, "friends", help="add, remove or list friends",
                          description="Friendships are mutual: adding makes both users "
                          "friends at once, removing ends it for both.")
    for name, func, summary, description in (
            ("add", cmd_friends_add, "become friends with a user",
             "Make the token's user and USER_ID friends (both ways); their live streams "
             "start following each other."),
            ("remove", cmd_friends_remove, "end a friendship",
             "End the friendship both ways; live streams of both users see FriendGone "
             "(UNFRIENDED).")):
        change = f_sub.add_parser(name, help=summary, description=description)
        change.add_argument("user_id", help="the other user's id")
        common(change)
        change.set_defaults(func=func)
    fl = f_sub.add_parser("list", help="your friends, by user id",
                          description="List the token's user's friends in user id order.")
    fl.add_argument("--limit", type=int, default=100, help="per page, 1..1000 "
                                                           "(default: %(default)s)")
    fl.add_argument("--page-token", default="", help="from a previous page")
    common(fl)
    fl.set_defaults(func=cmd_friends_list)

    share = pr_sub.add_parser("share", help="turn location sharing on or off",
                              description="Turn sharing your location with friends on or off; "
                              "off removes you from every friend's view at once.")
    share.add_argument("state", choices=("on", "off"), help="on or off")
    common(share)
    share.set_defaults(func=cmd_share)

    nearby = pr_sub.add_parser("nearby", help="friends near you now, nearest first",
                               description="List friends who share their location and are "
                               "within your radius, from your last location (connect a live "
                               "stream or run the simulator first).")
    nearby.add_argument("--limit", type=int, default=20, help="per page, 1..100 "
                                                              "(default: %(default)s)")
    nearby.add_argument("--page-token", default="", help="from a previous page")
    common(nearby)
    nearby.set_defaults(func=cmd_nearby)

    s = pr_sub.add_parser(
        "simulate", help="drive N moving, streaming users and measure fan-out and latency",
        description="Load a power-law friend graph (mean degree min(400, (N-1)/2)) straight "
        "into the servers' MongoDB, then connect N users (one live stream each) that move "
        "along the roads of Gothenburg and send an update every --interval seconds; friends "
        "measure the latency from update to receipt. Prints progress each second and a "
        "summary; deletes its users' friendships and settings afterwards unless --keep.")
    s.add_argument("--target", action="append",
                   help="host:port of a presence server, repeatable; streams are spread "
                        "evenly over the processes behind the targets (default: "
                        f"{DEFAULT_TARGET})")
    s.add_argument("--users", type=int, default=100,
                   help="simulated users, one stream each (default: %(default)s)")
    s.add_argument("--interval", type=float, default=1.0,
                   help="real seconds between two updates of one user, jittered +-10%% "
                        "(default: %(default)s)")
    s.add_argument("--sim-interval", type=float, default=30.0,
                   help="simulated seconds of movement each update stands for "
                        "(default: %(default)s)")
    s.add_argument("--speed", type=float, default=10.0,
                   help="metres per simulated second (default: %(default)s)")
    s.add_argument("--duration", type=float, default=20.0,
                   help="seconds measured (default: %(default)s)")
    s.add_argument("--warmup", type=float, default=3.0,
                   help="seconds before measuring (default: %(default)s)")
    s.add_argument("--friends", type=float, default=None,
                   help="mean friends per user (default: min(400, (users-1)/2))")
    s.add_argument("--radius", type=float, default=sim.DEFAULT_RADIUS_M,
                   help="nearby radius written to every user's settings, metres "
                        "(default: 5 miles)")
    s.add_argument("--processes", type=int, default=1,
                   help="client worker processes (default: %(default)s; 2+ only helps when "
                        "one client core saturates and another core is idle)")
    s.add_argument("--users-per-channel", type=int, default=50,
                   help="users sharing one gRPC channel (connection) (default: %(default)s)")
    s.add_argument("--mongo-uri", default=os.environ.get("GEOPLEX_MONGO_URI"),
                   help="MongoDB of the servers (default: $GEOPLEX_MONGO_URI)")
    s.add_argument("--database", default=os.environ.get("GEOPLEX_PRESENCE_DATABASE", "geoplex"),
                   help="the servers' GEOPLEX_PRESENCE_DATABASE (default: %(default)s)")
    s.add_argument("--prefix", default="", help="user id prefix (default: a fresh sim-xxxxxx-)")
    s.add_argument("--seed", type=int, default=1,
                   help="seed of the graph and the walks (default: %(default)s)")
    s.add_argument("--keep", action="store_true",
                   help="leave the simulated friendships and settings in the database")
    s.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    s.set_defaults(func=cmd_simulate)
