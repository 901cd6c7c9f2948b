"""What the command modules (``cli``, ``presence_cli``, ``proximity_cli``) share: a group
of subcommands, and one call through an SDK client from a synchronous command."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeAlias, TypeVar

C = TypeVar("C")
T = TypeVar("T")

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def command_group(sub: Subcommands, name: str, *, help: str,
                  description: str) -> Subcommands:
    """``geoplex NAME SUBCOMMAND``: the parser of NAME, which needs a subcommand
    (stored as ``NAME_command``); returns where the subcommands are added."""
    group = sub.add_parser(name, help=help, description=description)
    return group.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", required=True)


def call(connect: Callable[[], AbstractAsyncContextManager[C]],
         op: Callable[[C], Awaitable[T]]) -> T:
    """Open a client with ``connect()`` (inside the event loop, where its channel must be
    made), await ``op(client)``, close the client and return what ``op`` returned."""

    async def run() -> T:
        async with connect() as client:
            return await op(client)

    return asyncio.run(run())
