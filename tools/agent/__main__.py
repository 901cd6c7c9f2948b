"""``python -m geoplex.tools.agent [OPTIONS]``: ``geoplex agent`` without the rest of the
``geoplex`` command (it loads no other service's declaration or commands)."""

from __future__ import annotations

import argparse
import sys

from . import add_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geoplex")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["agent", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
